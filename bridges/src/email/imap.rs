//! Polling an existing mailbox over IMAP: for a support address whose mail lands at a provider
//! (or any IMAP server) rather than at the node's SMTP listener.
//!
//! Every poll logs in, selects the mailbox and takes each message not yet marked with the
//! keyword [`TAKEN_KEYWORD`], oldest first: its bytes go to the same sink as mail received by
//! SMTP, and only once the sink has it durably (or refused it for good) is it marked. A crash
//! in between takes it again, and the node stores it once (by its Message-ID). Nothing is
//! deleted or marked read: people may use the mailbox too. A server that does not keep
//! keywords gets `\Seen` instead (then do not read that mailbox by hand).

use std::time::Duration;

use async_imap::types::Flag;
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::smtp::{MailSink, ReceivedMail, Refusal};

/// The keyword a taken message gets.
pub const TAKEN_KEYWORD: &str = "$Threadline";
/// Messages taken per poll at most (the rest wait for the next one).
const PER_POLL: usize = 100;
/// A server that does not answer within this long is given up until the next poll.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Polls a message may fail in (it cannot be fetched, or the server chokes on it) before it
/// is marked as refused and skipped, so one bad message never stops the mailbox.
const FAILURES_ALLOWED: u32 = 3;

/// Messages that failed, by UID, across polls (kept by [`poll_forever`]).
pub type Failures = std::collections::HashMap<u32, u32>;

/// Where the mailbox is: `imap://user:password@host:143/MAILBOX` (plain, for a server on the
/// same host or network) or `imaps://…:993/…` (TLS, checked against the usual web roots). The
/// mailbox defaults to `INBOX`; user and password are percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct MailboxUrl {
    tls: bool,
    host: String,
    port: u16,
    user: String,
    password: String,
    mailbox: String,
}

impl std::fmt::Debug for MailboxUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for MailboxUrl {
    /// The URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "imaps" } else { "imap" };
        write!(
            f,
            "{scheme}://{}@{}:{}/{}",
            self.user, self.host, self.port, self.mailbox
        )
    }
}

/// An IMAP URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the IMAP mailbox URL is not usable ({0}); expected imap[s]://user:password@host[:port][/MAILBOX]")]
pub struct UrlError(&'static str);

impl std::str::FromStr for MailboxUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("imaps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("imap://") {
            (false, rest)
        } else {
            return Err(UrlError("the scheme is not imap or imaps"));
        };
        let (authority, mailbox) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, address) = authority
            .rsplit_once('@')
            .ok_or(UrlError("no user:password@"))?;
        let (user, password) = credentials.split_once(':').ok_or(UrlError("no password"))?;
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| UrlError("the port is not a number"))?,
            ),
            None => (address, if tls { 993 } else { 143 }),
        };
        if host.is_empty() || user.is_empty() {
            return Err(UrlError("no host or no user"));
        }
        let mailbox = percent_decode(mailbox).ok_or(UrlError("a bad %-escape"))?;
        Ok(MailboxUrl {
            tls,
            host: host.to_owned(),
            port,
            user: percent_decode(user).ok_or(UrlError("a bad %-escape"))?,
            password: percent_decode(password).ok_or(UrlError("a bad %-escape"))?,
            mailbox: if mailbox.is_empty() {
                "INBOX".to_owned()
            } else {
                mailbox
            },
        })
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why a poll stopped early (the next one tries again).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Connecting, TLS or the connection failed.
    #[error("cannot reach {url}: {detail}")]
    Connect {
        /// The mailbox, without its password.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The server refused or failed a command.
    #[error("IMAP {command} failed: {detail}")]
    Imap {
        /// The command.
        command: &'static str,
        /// What the server said.
        detail: String,
    },
    /// The server took too long.
    #[error("the IMAP server did not answer within {0:?}")]
    Timeout(Duration),
}

/// What a poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    /// Messages stored (or already stored: a duplicate).
    pub taken: usize,
    /// Messages refused for good (not a mail, too large, not authenticated): marked, logged.
    pub refused: usize,
    /// Messages left for the next poll (the node could not store them now).
    pub left: usize,
}

/// Polls the mailbox every `interval` until the future is dropped.
pub async fn poll_forever(url: MailboxUrl, interval: Duration, max_bytes: usize, sink: MailSink) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = Failures::new();
    loop {
        tick.tick().await;
        match poll_once(&url, max_bytes, &sink, &mut failures).await {
            Ok(polled) if polled == Polled::default() => {}
            Ok(polled) => tracing::info!(mailbox = %url, ?polled, "IMAP poll"),
            Err(err) => tracing::warn!(cause = %err, "IMAP poll failed; trying again later"),
        }
    }
}

/// One poll: takes what is new in the mailbox. `failures` counts the messages that could not
/// be fetched, across polls.
pub async fn poll_once(
    url: &MailboxUrl,
    max_bytes: usize,
    sink: &MailSink,
    failures: &mut Failures,
) -> Result<Polled, PollError> {
    let connect_error = |detail: String| PollError::Connect {
        url: url.to_string(),
        detail,
    };
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| PollError::Timeout(TIMEOUT))?
        .map_err(|err| connect_error(err.to_string()))?;
    if !url.tls {
        return session(url, tcp, max_bytes, sink, failures).await;
    }
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| connect_error(err.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|err| connect_error(err.to_string()))?;
    let tls = tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| PollError::Timeout(TIMEOUT))?
    .map_err(|err| connect_error(err.to_string()))?;
    session(url, tls, max_bytes, sink, failures).await
}

async fn session<S>(
    url: &MailboxUrl,
    stream: S,
    max_bytes: usize,
    sink: &MailSink,
    failures: &mut Failures,
) -> Result<Polled, PollError>
where
    S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let imap = |command: &'static str| {
        move |err: async_imap::error::Error| PollError::Imap {
            command,
            detail: err.to_string(),
        }
    };
    let mut client = async_imap::Client::new(stream);
    within(client.read_response())
        .await?
        .map_err(|err| imap("greeting")(err.into()))?;
    let mut session = within(client.login(&url.user, &url.password))
        .await?
        .map_err(|(err, _)| imap("LOGIN")(err))?;
    let mailbox = within(session.select(&url.mailbox))
        .await?
        .map_err(imap("SELECT"))?;
    // Keywords if the server keeps them (`\*` or ours among the permanent flags; none named
    // means every flag is permanent, RFC 3501 §7.1).
    let keywords = mailbox.permanent_flags.is_empty()
        || mailbox.permanent_flags.iter().any(|flag| {
            matches!(flag, Flag::MayCreate)
                || matches!(flag, Flag::Custom(name) if name.as_ref() == TAKEN_KEYWORD)
        });
    let (search, mark) = if keywords {
        (
            format!("UNKEYWORD {TAKEN_KEYWORD}"),
            format!("+FLAGS.SILENT ({TAKEN_KEYWORD})"),
        )
    } else {
        ("UNSEEN".to_owned(), "+FLAGS.SILENT (\\Seen)".to_owned())
    };
    let mut uids: Vec<u32> = within(session.uid_search(&search))
        .await?
        .map_err(imap("UID SEARCH"))?
        .into_iter()
        .collect();
    uids.sort_unstable();
    let mut polled = Polled {
        left: uids.len().saturating_sub(PER_POLL),
        ..Polled::default()
    };
    for uid in uids.into_iter().take(PER_POLL) {
        let refused = |text: String| Refusal { code: 552, text };
        let failed = failures.get(&uid).copied().unwrap_or(0);
        let outcome = if failed >= FAILURES_ALLOWED {
            Err(refused(format!(
                "5.6.0 it could not be fetched in {failed} polls"
            )))
        } else {
            // Counted as failed until it is through: an error below ends the poll.
            *failures.entry(uid).or_insert(0) += 1;
            // The size first: a message too large is never downloaded.
            let sizes = fetch(&mut session, uid, "(UID RFC822.SIZE)").await?;
            let size = sizes
                .iter()
                .find(|f| f.uid == Some(uid))
                .and_then(|f| f.size)
                .map(|size| size as usize);
            match size {
                // Expunged meanwhile.
                None => {
                    failures.remove(&uid);
                    continue;
                }
                Some(size) if size > max_bytes => {
                    Err(refused(format!("5.3.4 {size} bytes; at most {max_bytes}")))
                }
                Some(_) => {
                    let bodies = fetch(&mut session, uid, "(UID BODY.PEEK[])").await?;
                    match bodies
                        .iter()
                        .find(|f| f.uid == Some(uid))
                        .and_then(|f| f.body())
                    {
                        None => Err(refused("5.6.0 no body".to_owned())),
                        Some(bytes) => within(take(bytes, sink)).await.unwrap_or(Err(Refusal {
                            code: 451,
                            text: "4.3.0 the node took too long".to_owned(),
                        })),
                    }
                }
            }
        };
        failures.remove(&uid);
        match outcome {
            Ok(()) => polled.taken += 1,
            Err(refusal) if (400..500).contains(&refusal.code) => {
                // The node could not store it now: left unmarked, taken next time.
                tracing::warn!(
                    uid,
                    code = refusal.code,
                    reason = refusal.text,
                    "mail left in the mailbox for the next poll"
                );
                polled.left += 1;
                continue;
            }
            Err(refusal) => {
                tracing::warn!(
                    uid,
                    code = refusal.code,
                    reason = refusal.text,
                    "mail in the mailbox refused; marked, not taken"
                );
                polled.refused += 1;
            }
        }
        let marked: Vec<_> = within(async {
            match session.uid_store(uid.to_string(), &mark).await {
                Ok(updates) => Ok(updates.collect::<Vec<_>>().await),
                Err(err) => Err(err),
            }
        })
        .await?
        .map_err(imap("UID STORE"))?;
        marked
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(imap("UID STORE"))?;
        while session.unsolicited_responses.try_recv().is_ok() {}
    }
    // The work is done and marked; a failed goodbye changes nothing.
    let _ = within(session.logout()).await;
    Ok(polled)
}

/// `UID FETCH uid query`, whole, within the timeout.
async fn fetch<S>(
    session: &mut async_imap::Session<S>,
    uid: u32,
    query: &str,
) -> Result<Vec<async_imap::types::Fetch>, PollError>
where
    S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let error = |err: async_imap::error::Error| PollError::Imap {
        command: "UID FETCH",
        detail: err.to_string(),
    };
    let fetched = within(async {
        match session.uid_fetch(uid.to_string(), query).await {
            Ok(stream) => Ok(stream.collect::<Vec<_>>().await),
            Err(err) => Err(err),
        }
    })
    .await?
    .map_err(error)?
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(error)?;
    while session.unsolicited_responses.try_recv().is_ok() {}
    Ok(fetched)
}

/// Hands a message to the sink as SMTP would: the envelope sender from its `Return-Path`
/// (the delivering server writes it: `<>` for a bounce).
async fn take(bytes: &[u8], sink: &MailSink) -> Result<(), Refusal> {
    let reverse_path = return_path(bytes).unwrap_or_else(|| "unknown".to_owned());
    let mail = ReceivedMail {
        reverse_path,
        recipients: Vec::new(),
        data: bytes.to_vec(),
    };
    sink(mail).await
}

/// The address in the first `Return-Path:` header: empty only for a literal `<>` (a bounce);
/// `None` for anything else that is not `<address>`.
fn return_path(bytes: &[u8]) -> Option<String> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("return-path") {
            return None;
        }
        let address = value.trim().strip_prefix('<')?.strip_suffix('>')?.trim();
        (address.is_empty() == (value.trim() == "<>")).then(|| address.to_owned())
    })
}

async fn within<T>(work: impl std::future::Future<Output = T>) -> Result<T, PollError> {
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| PollError::Timeout(TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_server_the_account_and_the_mailbox() {
        let url: MailboxUrl = "imaps://support%40shop.example:p%3Ass@imap.example.com/Support"
            .parse()
            .expect("parses");
        assert_eq!(
            (url.tls, url.host.as_str(), url.port),
            (true, "imap.example.com", 993)
        );
        assert_eq!(
            (
                url.user.as_str(),
                url.password.as_str(),
                url.mailbox.as_str()
            ),
            ("support@shop.example", "p:ss", "Support")
        );
        assert!(!url.to_string().contains("p:ss"), "no password in logs");
        let plain: MailboxUrl = "imap://u:p@127.0.0.1:1430".parse().expect("parses");
        assert_eq!(
            (plain.tls, plain.port, plain.mailbox.as_str()),
            (false, 1430, "INBOX")
        );
        for bad in [
            "http://u:p@h",
            "imap://h",
            "imap://u@h",
            "imap://u:p@h:x",
            "imap://u:p@h/%zz",
        ] {
            assert!(bad.parse::<MailboxUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_return_path_is_the_envelope_sender() {
        assert_eq!(
            return_path(b"Return-Path: <alice@example.test>\r\nFrom: a\r\n\r\nbody"),
            Some("alice@example.test".to_owned())
        );
        assert_eq!(
            return_path(b"Return-Path: <>\r\nFrom: MAILER-DAEMON\r\n\r\nbody"),
            Some(String::new())
        );
        assert_eq!(return_path(b"From: a\r\n\r\nReturn-Path: <x>"), None);
        // Only a literal `<>` is a bounce's; an empty or folded value is no sender at all.
        assert_eq!(return_path(b"Return-Path:\r\n <a@b>\r\n\r\nbody"), None);
        assert_eq!(return_path(b"Return-Path: < >\r\n\r\nbody"), None);
    }
}
