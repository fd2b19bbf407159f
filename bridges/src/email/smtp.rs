//! The email bridge's SMTP listener: the node receives mail for its support address.
//!
//! A small RFC 5321 server: `EHLO`/`HELO`, `MAIL FROM` (with `SIZE=`), `RCPT TO` (the support
//! address, or `support+TOKEN@domain`), `DATA` (dot-unstuffed, at most
//! [`super::MAX_MAIL_BYTES`]), `RSET`, `NOOP`, `QUIT`. A mail is answered `250` only once the
//! sink has it durably; whatever is refused gets a clear SMTP error and changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Sessions served at once; more are told to come back later (`421`).
pub const MAX_SESSIONS: usize = 256;
/// Sessions served at once from one remote address, so one sender cannot take them all.
/// Loopback is not counted: it is the MX on the same host relaying everyone's mail.
pub const MAX_SESSIONS_PER_ADDRESS: usize = 16;
/// A session silent this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a session may last, whatever it does.
pub const SESSION_DEADLINE: Duration = Duration::from_secs(1800);
/// Recipients per mail.
pub const MAX_RECIPIENTS: usize = 100;
/// The longest command line (RFC 5321: 512 with the CRLF; some clients send a little more).
const MAX_LINE: usize = 2048;

/// What the listener needs to know.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The support address (`support@shop.example`): mail for it, or for `support+TOKEN@…`, is
    /// taken; any other recipient is refused.
    pub address: String,
    /// The largest mail taken.
    pub max_bytes: usize,
}

/// A mail as received: the envelope and the bytes.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM` (empty for a bounce).
    pub reverse_path: String,
    /// `RCPT TO`s.
    pub recipients: Vec<String>,
    /// The message.
    pub data: Vec<u8>,
}

/// Why a mail was refused: an SMTP reply code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `4xx` (try later) or `5xx` (never).
    pub code: u16,
    /// The enhanced status and text (`5.6.0 not a mail`).
    pub text: String,
}

/// Takes a received mail; resolves once it is durable (`Ok`) or refused.
pub type MailSink = Arc<
    dyn Fn(ReceivedMail) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>> + Send + Sync,
>;

/// Sessions open per remote address (not loopback's), up to a cap.
#[derive(Debug, Default, Clone)]
pub struct PerAddress {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted session; uncounted when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    address: Option<IpAddr>,
}

impl PerAddress {
    /// A slot for a session from `address`, unless it has `cap` open already.
    pub fn enter(&self, address: IpAddr, cap: usize) -> Option<AddressSlot> {
        // `::ffff:127.0.0.1` on a dual-stack listener is 127.0.0.1.
        let address = address.to_canonical();
        if address.is_loopback() {
            return Some(AddressSlot {
                open: Arc::clone(&self.open),
                address: None,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(address).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            open: Arc::clone(&self.open),
            address: Some(address),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(address) = self.address else {
            return;
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&address);
            }
        }
    }
}

/// Serves SMTP on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, settings: SmtpSettings, sink: MailSink) {
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    let per_address = PerAddress::default();
    let settings = Arc::new(settings);
    loop {
        let Ok((socket, peer)) = listener.accept().await else {
            // Out of file descriptors, say: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let permit = Arc::clone(&sessions).try_acquire_owned();
        let slot = per_address.enter(peer.ip(), MAX_SESSIONS_PER_ADDRESS);
        let settings = Arc::clone(&settings);
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let (reader, mut writer) = socket.into_split();
            let Ok(permit) = permit else {
                let _ = writer
                    .write_all(b"421 4.3.2 too busy, try again later\r\n")
                    .await;
                return;
            };
            let Some(slot) = slot else {
                tracing::info!(%peer, "too many SMTP sessions from one address");
                let _ = writer
                    .write_all(b"421 4.7.0 too many connections from your address\r\n")
                    .await;
                return;
            };
            let result =
                tokio::time::timeout(SESSION_DEADLINE, session(reader, writer, &settings, &sink))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the session lasted too long",
                        ))
                    });
            if let Err(err) = result {
                tracing::debug!(%peer, cause = %err, "SMTP session ended");
            }
            drop((permit, slot));
        });
    }
}

/// One SMTP session over a connection.
pub async fn session<R, W>(
    reader: R,
    mut writer: W,
    settings: &SmtpSettings,
    sink: &MailSink,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let domain = settings
        .address
        .split_once('@')
        .map(|(_, domain)| domain.to_owned())
        .unwrap_or_else(|| "localhost".to_owned());
    let mut reader = BufReader::new(reader);
    reply(&mut writer, &format!("220 {domain} Threadline ESMTP ready")).await?;
    let mut greeted = false;
    let mut reverse_path: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    loop {
        let Some(line) = read_line(&mut reader, MAX_LINE).await? else {
            return Ok(());
        };
        let Ok(line) = String::from_utf8(line) else {
            reply(&mut writer, "500 5.5.2 commands are ASCII").await?;
            continue;
        };
        let (verb, rest) = match line.split_once(' ') {
            Some((verb, rest)) => (verb.to_ascii_uppercase(), rest.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" => {
                greeted = true;
                reverse_path = None;
                recipients.clear();
                let text = format!(
                    "250-{domain}\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES",
                    settings.max_bytes
                );
                reply(&mut writer, &text).await?;
            }
            "HELO" => {
                greeted = true;
                reverse_path = None;
                recipients.clear();
                reply(&mut writer, &format!("250 {domain}")).await?;
            }
            "MAIL" if !greeted => reply(&mut writer, "503 5.5.1 say EHLO first").await?,
            "MAIL" => match parse_path(rest, "FROM:") {
                Some((path, params)) => {
                    let size = params
                        .iter()
                        .find_map(|p| p.to_ascii_uppercase().strip_prefix("SIZE=")?.parse().ok())
                        .unwrap_or(0usize);
                    if size > settings.max_bytes {
                        reply(
                            &mut writer,
                            "552 5.3.4 the mail is larger than the SIZE limit",
                        )
                        .await?;
                    } else {
                        reverse_path = Some(path);
                        recipients.clear();
                        reply(&mut writer, "250 2.1.0 OK").await?;
                    }
                }
                None => reply(&mut writer, "501 5.5.4 syntax: MAIL FROM:<address>").await?,
            },
            "RCPT" if reverse_path.is_none() => {
                reply(&mut writer, "503 5.5.1 MAIL FROM first").await?;
            }
            "RCPT" => match parse_path(rest, "TO:") {
                Some((path, _)) if recipients.len() >= MAX_RECIPIENTS => {
                    let _ = path;
                    reply(&mut writer, "452 4.5.3 too many recipients").await?;
                }
                Some((path, _)) if is_ours(&path, &settings.address) => {
                    recipients.push(path.to_lowercase());
                    reply(&mut writer, "250 2.1.5 OK").await?;
                }
                Some((path, _)) => {
                    reply(
                        &mut writer,
                        &format!("550 5.1.1 <{path}>: no such mailbox here"),
                    )
                    .await?;
                }
                None => reply(&mut writer, "501 5.5.4 syntax: RCPT TO:<address>").await?,
            },
            "DATA" if recipients.is_empty() => {
                reply(&mut writer, "503 5.5.1 RCPT TO first").await?;
            }
            "DATA" => {
                reply(&mut writer, "354 end the mail with <CRLF>.<CRLF>").await?;
                let data = read_data(&mut reader, settings.max_bytes).await?;
                let answer = match data {
                    None => Err(Refusal {
                        code: 552,
                        text: format!("5.3.4 the mail is larger than {} bytes", settings.max_bytes),
                    }),
                    Some(data) => {
                        let mail = ReceivedMail {
                            reverse_path: reverse_path.take().unwrap_or_default(),
                            recipients: std::mem::take(&mut recipients),
                            data,
                        };
                        sink(mail).await
                    }
                };
                reverse_path = None;
                recipients.clear();
                match answer {
                    Ok(()) => reply(&mut writer, "250 2.0.0 OK: stored").await?,
                    Err(refusal) => {
                        reply(&mut writer, &format!("{} {}", refusal.code, refusal.text)).await?;
                    }
                }
            }
            "RSET" => {
                reverse_path = None;
                recipients.clear();
                reply(&mut writer, "250 2.0.0 OK").await?;
            }
            "NOOP" => reply(&mut writer, "250 2.0.0 OK").await?,
            "VRFY" => reply(&mut writer, "252 2.5.0 cannot verify, send it").await?,
            "QUIT" => {
                reply(&mut writer, "221 2.0.0 bye").await?;
                return Ok(());
            }
            "STARTTLS" => reply(&mut writer, "502 5.5.1 not offered here").await?,
            _ => reply(&mut writer, "500 5.5.2 unknown command").await?,
        }
    }
}

async fn reply<W: AsyncWrite + Unpin>(writer: &mut W, text: &str) -> std::io::Result<()> {
    writer.write_all(text.as_bytes()).await?;
    writer.write_all(b"\r\n").await?;
    writer.flush().await
}

/// One line without its line ending; `None` at the end of the stream. A longer line than
/// `max` is cut (the rest is read and dropped) so a client cannot grow memory.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(IDLE_TIMEOUT, async {
        loop {
            let buffer = reader.fill_buf().await?;
            if buffer.is_empty() {
                return Ok::<_, std::io::Error>(!line.is_empty());
            }
            let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => (&buffer[..=at], true),
                None => (buffer, false),
            };
            let n = chunk.len();
            if line.len() < max {
                line.extend_from_slice(&chunk[..n.min(max - line.len())]);
            }
            reader.consume(n);
            if done {
                return Ok(true);
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
    if !read {
        return Ok(None);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// The mail after `DATA`, dot-unstuffed, up to a line that is exactly `.` CRLF; `None` if it was
/// over `max` (read to its end all the same, so the session can go on, but never held: memory
/// stays bounded by `max` whatever the client sends). A bare LF never ends the mail (no SMTP
/// smuggling through a different end-of-data than an upstream server sees).
async fn read_data<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_large = false;
    // The line being read: only its first bytes are kept (enough to see `.` CRLF and a
    // leading dot); the rest goes straight into `data` or is dropped.
    let mut at_line_start = true;
    let mut head: Vec<u8> = Vec::new();
    loop {
        let buffer = tokio::time::timeout(IDLE_TIMEOUT, reader.fill_buf())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
        if buffer.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed during DATA",
            ));
        }
        let (chunk, line_done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..=at], true),
            None => (buffer, false),
        };
        let n = chunk.len();
        let mut piece: &[u8] = chunk;
        if at_line_start {
            // Hold the first 3 bytes of a line to recognise `.` CRLF and dot-stuffing.
            let want = 3usize.saturating_sub(head.len()).min(piece.len());
            head.extend_from_slice(&piece[..want]);
            piece = &piece[want..];
            if head.len() < 3 && !line_done {
                reader.consume(n);
                continue;
            }
            if head == b".\r\n" {
                reader.consume(n);
                return Ok((!too_large).then_some(data));
            }
            let held = match head.strip_prefix(b".") {
                Some(rest) => rest.to_vec(),
                None => std::mem::take(&mut head),
            };
            head.clear();
            at_line_start = false;
            append(&mut data, &held, max, &mut too_large);
        }
        append(&mut data, piece, max, &mut too_large);
        reader.consume(n);
        if line_done {
            at_line_start = true;
        }
    }
}

fn append(data: &mut Vec<u8>, bytes: &[u8], max: usize, too_large: &mut bool) {
    if *too_large {
        return;
    }
    if data.len() + bytes.len() > max {
        *too_large = true;
        *data = Vec::new();
        return;
    }
    data.extend_from_slice(bytes);
}

/// `<address> PARAM=…` after `FROM:`/`TO:`; the address without brackets.
fn parse_path(rest: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let upper = rest.to_ascii_uppercase();
    if !upper.starts_with(prefix) {
        return None;
    }
    let rest = rest[prefix.len()..].trim_start();
    let (path, params) = if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        (&inner[..end], &inner[end + 1..])
    } else {
        match rest.split_once(' ') {
            Some((path, params)) => (path, params),
            None => (rest, ""),
        }
    };
    let params = params.split_whitespace().map(str::to_owned).collect();
    Some((path.trim().to_owned(), params))
}

/// Whether `path` is the support address or `local+token@domain` of it.
fn is_ours(path: &str, address: &str) -> bool {
    let path = path.to_lowercase();
    let address = address.to_lowercase();
    if path == address {
        return true;
    }
    let (Some((local, domain)), Some((our_local, our_domain))) =
        (path.split_once('@'), address.split_once('@'))
    else {
        return false;
    };
    domain == our_domain
        && local
            .strip_prefix(our_local)
            .and_then(|rest| rest.strip_prefix('+'))
            .is_some_and(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn settings() -> SmtpSettings {
        SmtpSettings {
            address: "support@shop.test".to_owned(),
            max_bytes: 1000,
        }
    }

    async fn talk(script: &str, sink: MailSink) -> String {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (server_read, server_write) = tokio::io::split(server);
        let settings = settings();
        let served = tokio::spawn(async move {
            session(server_read, server_write, &settings, &sink)
                .await
                .expect("session");
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(script.as_bytes())
            .await
            .expect("write");
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client_read, &mut out)
            .await
            .expect("read");
        served.await.expect("served");
        String::from_utf8(out).expect("utf8")
    }

    fn collecting() -> (MailSink, Arc<Mutex<Vec<ReceivedMail>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&got);
        let sink: MailSink = Arc::new(move |mail| {
            into.lock().expect("lock").push(mail);
            Box::pin(async { Ok(()) })
        });
        (sink, got)
    }

    #[test]
    fn one_remote_address_gets_a_few_sessions_and_loopback_is_not_counted() {
        let per_address = PerAddress::default();
        let remote: IpAddr = "203.0.113.7".parse().expect("ip");
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        let slots: Vec<AddressSlot> = (0..3)
            .map(|_| per_address.enter(remote, 3).expect("a slot"))
            .collect();
        assert!(per_address.enter(remote, 3).is_none(), "the fourth waits");
        assert!(
            per_address.enter(other, 3).is_some(),
            "others are not held up"
        );
        let locals: Vec<AddressSlot> = ["127.0.0.1", "::1", "::ffff:127.0.0.1"]
            .iter()
            .cycle()
            .take(10)
            .map(|ip| {
                let ip: IpAddr = ip.parse().expect("ip");
                per_address.enter(ip, 3).expect("loopback: the local MX")
            })
            .collect();
        drop(slots);
        assert!(per_address.enter(remote, 3).is_some(), "free again");
        drop(locals);
    }

    #[tokio::test]
    async fn a_mail_is_taken_with_its_envelope_and_dots_unstuffed() {
        let (sink, got) = collecting();
        let out = talk(
            "EHLO client\r\nMAIL FROM:<alice@example.test> SIZE=100\r\nRCPT TO:<Support+T1@Shop.test>\r\nRCPT TO:<bob@shop.test>\r\nDATA\r\nSubject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n",
            sink,
        )
        .await;
        assert!(out.starts_with("220 shop.test"), "{out}");
        assert!(out.contains("250-SIZE 1000"), "{out}");
        assert!(out.contains("550 5.1.1 <bob@shop.test>"), "{out}");
        assert!(out.contains("250 2.0.0 OK: stored"), "{out}");
        assert!(out.ends_with("221 2.0.0 bye\r\n"), "{out}");
        let got = got.lock().expect("lock");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reverse_path, "alice@example.test");
        assert_eq!(got[0].recipients, ["support+t1@shop.test"]);
        assert_eq!(got[0].data, b"Subject: hi\r\n\r\n.leading dot\r\n");
    }

    #[tokio::test]
    async fn out_of_order_oversize_and_refused_mail_get_clear_errors() {
        let refusing: MailSink = Arc::new(|_| {
            Box::pin(async {
                Err(Refusal {
                    code: 554,
                    text: "5.6.0 not a mail".to_owned(),
                })
            })
        });
        let big = "x".repeat(1200);
        let out = talk(
            &format!("MAIL FROM:<a@b>\r\nEHLO c\r\nRCPT TO:<support@shop.test>\r\nMAIL FROM:<a@b> SIZE=5000\r\nMAIL FROM:<a@b>\r\nDATA\r\nRCPT TO:<support@shop.test>\r\nDATA\r\n{big}\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<support@shop.test>\r\nDATA\r\nhello\r\n.\r\nFOO\r\nQUIT\r\n"),
            refusing,
        )
        .await;
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"503 5.5.1 say EHLO first"), "{out}");
        assert!(lines.contains(&"503 5.5.1 MAIL FROM first"), "{out}");
        assert!(
            lines.contains(&"552 5.3.4 the mail is larger than the SIZE limit"),
            "{out}"
        );
        assert!(lines.contains(&"503 5.5.1 RCPT TO first"), "{out}");
        assert!(
            lines.contains(&"552 5.3.4 the mail is larger than 1000 bytes"),
            "{out}"
        );
        assert!(lines.contains(&"554 5.6.0 not a mail"), "{out}");
        assert!(lines.contains(&"500 5.5.2 unknown command"), "{out}");
    }
}
