//! The email bridge's understanding of a mail (issue 6, in progress): what an inbound mail
//! says, read with a maintained MIME parser (`mail-parser`: quoted-printable, base64,
//! charsets, multipart), and the facts threading needs.
//!
//! Threading (done by the node, which knows threads and contacts) uses, in this order: the
//! `In-Reply-To` and `References` ids (our outbound mails' Message-IDs name their thread), then
//! a reply token in the address the customer wrote to (`support+TOKEN@domain`), then the
//! sender's handle. A token or an id only ever attaches mail to its own thread, and only from a
//! handle linked to that thread's contact; anything else is a new thread for the real sender.
//!
//! Automated mail (auto-replies, bounces, delivery reports, lists) is recognised so that two
//! robots never answer each other.

pub mod imap;
pub mod smtp;

use mail_parser::{MessageParser, MimeHeaders as _, PartType};
use threadline_protocol::{channel::Handle, name::ExternalId, EventId};

/// The largest mail taken (the SMTP listener says so in its `SIZE`).
pub const MAX_MAIL_BYTES: usize = 10 << 20;
/// The most text kept from one mail (the protocol's limit on a message's text).
pub const MAX_TEXT_BYTES: usize = threadline_protocol::limits::MAX_TEXT_BYTES;

/// A mail could not be understood; nothing is stored for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// Over [`MAX_MAIL_BYTES`].
    #[error("the mail is {0} bytes; at most {MAX_MAIL_BYTES}")]
    TooLarge(usize),
    /// Not a mail.
    #[error("not an RFC 5322 mail")]
    Unparseable,
    /// No usable sender address.
    #[error("the mail has no valid From address")]
    NoSender,
}

/// Why a mail is automated (and must never be answered automatically).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Automated {
    /// `Auto-Submitted` other than `no` (RFC 3834).
    AutoSubmitted,
    /// A null reverse path (`Return-Path: <>`): a bounce.
    NullReturnPath,
    /// A delivery status notification (`multipart/report`, RFC 3464).
    DeliveryReport,
    /// `Precedence: bulk`, `junk`, `list` or `auto_reply`, or an `X-Autoreply`/`X-Autorespond`.
    BulkOrAutoReply,
}

/// An inbound mail, as the bridge uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMail {
    /// The sender's handle (`email:address`, lowercased).
    pub from: Handle,
    /// The sender's display name, if any.
    pub from_name: Option<String>,
    /// Its Message-ID (without angle brackets), if it has one.
    pub message_id: Option<String>,
    /// The ids it answers (`In-Reply-To`, then `References` from newest), without brackets.
    pub answers: Vec<String>,
    /// Every recipient address (To, Cc), lowercased.
    pub recipients: Vec<String>,
    /// The subject.
    pub subject: Option<String>,
    /// The whole text (plain part, or the HTML part made plain), at most [`MAX_TEXT_BYTES`].
    pub text: String,
    /// The text without the quoted history below it, for display.
    pub new_text: String,
    /// Attachments (inline parts with a file name too).
    pub attachments: Vec<crate::sdk::InboundAttachment>,
    /// Why it is automated, if it is.
    pub automated: Option<Automated>,
    /// The `Authentication-Results` headers, topmost (the last MX's) first, unfolded.
    pub authentication_results: Vec<String>,
}

impl InboundMail {
    /// Reads a mail (the bytes of the SMTP `DATA`).
    pub fn parse(bytes: &[u8]) -> Result<InboundMail, MailError> {
        if bytes.len() > MAX_MAIL_BYTES {
            return Err(MailError::TooLarge(bytes.len()));
        }
        let repaired = with_header_end(bytes);
        let message = MessageParser::default()
            .parse(repaired.as_ref())
            .ok_or(MailError::Unparseable)?;
        let sender = message
            .from()
            .and_then(|from| from.first())
            .ok_or(MailError::NoSender)?;
        let address = sender
            .address()
            .map(|a| a.trim().to_lowercase())
            .ok_or(MailError::NoSender)?;
        let from: Handle = format!("email:{address}")
            .parse()
            .map_err(|_| MailError::NoSender)?;
        let from_name = sender
            .name()
            .map(|name| without_nul(name.trim()))
            .filter(|name| !name.is_empty());
        let mut answers: Vec<String> = Vec::new();
        let mut push_ids = |list: Option<&[std::borrow::Cow<'_, str>]>, newest_first: bool| {
            let mut ids: Vec<String> = list
                .unwrap_or(&[])
                .iter()
                .map(|id| strip_brackets(id))
                .filter(|id| !id.is_empty())
                .collect();
            if newest_first {
                ids.reverse();
            }
            for id in ids {
                if !answers.contains(&id) {
                    answers.push(id);
                }
            }
        };
        push_ids(message.in_reply_to().as_text_list(), false);
        push_ids(message.references().as_text_list(), true);
        let mut recipients = Vec::new();
        for list in [message.to(), message.cc()].into_iter().flatten() {
            for addr in list.iter() {
                if let Some(address) = addr.address() {
                    recipients.push(address.trim().to_lowercase());
                }
            }
        }
        let text = every_text_part(&message);
        let text = truncate(text.trim_end(), MAX_TEXT_BYTES);
        let new_text = trim_quoted(&text);
        let attachments = message
            .attachments()
            .filter(|part| !is_unnamed_text(part))
            .map(|part| crate::sdk::InboundAttachment {
                name: part_name(part),
                media_type: media_type(part),
                bytes: part.contents().to_vec(),
            })
            .collect();
        let automated = automated(&message);
        let authentication_results = raw_headers(bytes, "authentication-results");
        Ok(InboundMail {
            from,
            from_name,
            message_id: message.message_id().map(strip_brackets),
            answers,
            recipients,
            subject: message.subject().map(without_nul),
            text,
            new_text,
            attachments,
            automated,
            authentication_results,
        })
    }

    /// The DMARC result the MX named `authserv_id` recorded (`pass`, `fail`, `none`...): from
    /// the topmost of its `Authentication-Results` headers that has one. Every header with its
    /// id is its own (an MX removes such headers that came from outside, RFC 8601 §5), and its
    /// filters may write one each (SPF, DKIM, DMARC). `None` if it recorded none.
    pub fn dmarc_result(&self, authserv_id: &str) -> Option<String> {
        self.authentication_results
            .iter()
            .filter(|value| {
                value
                    .split(';')
                    .next()
                    .and_then(|id| id.split_whitespace().next())
                    .is_some_and(|id| id.eq_ignore_ascii_case(authserv_id))
            })
            .find_map(|header| {
                // What a sender controls (quoted strings, comments) can hold `;dmarc=pass`.
                let header = without_comments_and_quotes(header);
                header.split(';').skip(1).find_map(|method| {
                    let result = method.trim().strip_prefix("dmarc")?.trim_start();
                    let result = result.strip_prefix('=')?.trim_start();
                    let word: String = result
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    (!word.is_empty()).then(|| word.to_ascii_lowercase())
                })
            })
    }

    /// The id that makes this mail idempotent: the hash of its bytes, so a copy of the same
    /// mail sent again is the same message, and another mail that reuses a Message-ID (clients
    /// do) is not. The Message-ID goes in front (`<id> sha256:…`), for replies to name it in
    /// `In-Reply-To`, when the two fit [`ExternalId`]'s limit.
    pub fn external_id(&self, raw: &[u8]) -> ExternalId {
        let hash = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw))
        );
        self.message_id
            .as_ref()
            .and_then(|id| ExternalId::new(format!("<{id}> {hash}")).ok())
            .unwrap_or_else(|| ExternalId::new(hash).expect("a SHA-256 in hex fits an external id"))
    }

    /// The reply tokens in the addresses this mail was sent to: `TOKEN` in
    /// `local+TOKEN@domain` for the support address `local@domain`.
    pub fn reply_tokens(&self, support_address: &str) -> Vec<String> {
        let support = support_address.to_lowercase();
        let Some((local, domain)) = support.split_once('@') else {
            return Vec::new();
        };
        self.recipients
            .iter()
            .filter_map(|recipient| {
                let (rlocal, rdomain) = recipient.split_once('@')?;
                let token = rlocal.strip_prefix(local)?.strip_prefix('+')?;
                (rdomain == domain && !token.is_empty()).then(|| token.to_owned())
            })
            .collect()
    }
}

/// A header value without its comments (`(…)`, nested) and quoted strings (`"…"`), each
/// replaced by a space (RFC 5322 §3.2.2 and §3.2.4).
fn without_comments_and_quotes(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if depth > 0 || quoted => escaped = true,
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(' ');
            }
            '(' if !quoted => {
                depth += 1;
                out.push(' ');
            }
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 || quoted => {}
            c => out.push(c),
        }
    }
    out
}

/// The values of the header `name` (lowercase) in a mail's header section, in order,
/// unfolded.
fn raw_headers(bytes: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let mut values: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(value) = current.as_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        values.extend(current.take());
        current = line
            .split_once(':')
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned());
    }
    values.extend(current);
    values
}

/// A reply's subject: `Re:` and the subject of the customer's latest mail in the thread (as
/// mail clients answer), or "Your conversation with {name}" when they never wrote one.
fn reply_subject(before: &[&crate::sdk::ThreadMessage], name: &str) -> String {
    let latest = before
        .iter()
        .rev()
        .filter(|m| m.inbound && m.channel == Some(threadline_protocol::ChannelKind::Email))
        .find_map(|m| m.subject.as_deref());
    match latest {
        Some(subject)
            if subject
                .get(..3)
                .is_some_and(|re| re.eq_ignore_ascii_case("re:")) =>
        {
            subject.to_owned()
        }
        Some(subject) => format!("Re: {subject}"),
        None => format!("Your conversation with {name}"),
    }
}

/// The email bridge's inbound side: turns received mail into the bridge's inbound messages.
#[derive(Debug)]
pub struct EmailInbound<L> {
    bridge: crate::sdk::Bridge<L>,
    address: String,
    /// The MX whose DMARC verdict a mail needs (none: the From: is taken on trust).
    authserv_id: Option<String>,
    /// The external ids of recent mails by sender and Message-ID, to say in the log when a
    /// Message-ID comes again with other content (stored as another message all the same).
    recent: std::sync::Mutex<std::collections::HashMap<(Handle, String), ExternalId>>,
}

/// How many recent Message-IDs [`EmailInbound`] remembers to notice one reused; forgotten
/// all at once when full, and on restart (the log line is a courtesy, dedup is the node's).
const RECENT_MESSAGE_IDS: usize = 10_000;

impl<L: crate::sdk::NodeLink + 'static> EmailInbound<L> {
    /// The inbound side of an email bridge for the support `address`.
    pub fn new(bridge: crate::sdk::Bridge<L>, address: String) -> Self {
        EmailInbound {
            bridge,
            address: address.to_lowercase(),
            authserv_id: None,
            recent: std::sync::Mutex::default(),
        }
    }

    /// Takes only mail that the MX named `authserv_id` found to pass DMARC (so its From: is
    /// its sender); other mail is refused with `550 5.7.1`. Bounces to replies are taken
    /// still: they only mark a reply failed, and only with the reply's own Message-ID.
    pub fn requiring_dmarc_from(mut self, authserv_id: String) -> Self {
        self.authserv_id = Some(authserv_id);
        self
    }

    /// Takes one received mail: parses it, finds the thread it answers (only as a hint: the
    /// node checks it is the sender's) and stores it. `Ok` once it is durable.
    pub async fn take(&self, mail: smtp::ReceivedMail) -> Result<(), smtp::Refusal> {
        let parsed = InboundMail::parse(&mail.data).map_err(|err| match err {
            MailError::TooLarge(_) => smtp::Refusal {
                code: 552,
                text: format!("5.3.4 {err}"),
            },
            _ => smtp::Refusal {
                code: 554,
                text: format!("5.6.0 {err}"),
            },
        })?;
        let external_id = parsed.external_id(&mail.data);
        let text = parsed.text.clone();
        // A bounce has a null envelope sender; headers alone prove nothing (anyone can write
        // them), so only that makes a report mark a reply failed.
        if mail.reverse_path.is_empty()
            && matches!(
                parsed.automated,
                Some(Automated::DeliveryReport | Automated::NullReturnPath)
            )
        {
            if let Some((thread, event)) = bounced_reply(&mail.data, &self.address) {
                return self.record_bounce(thread, event, &parsed).await;
            }
        }
        if let Some(authserv_id) = &self.authserv_id {
            let result = parsed.dmarc_result(authserv_id);
            if result.as_deref() != Some("pass") {
                tracing::info!(from = %parsed.from, ?result, "mail refused: the sender is not authenticated");
                return Err(smtp::Refusal {
                    code: 550,
                    text: format!(
                        "5.7.1 the sender is not authenticated: {authserv_id} found dmarc={}",
                        result.as_deref().unwrap_or("nothing")
                    ),
                });
            }
        }
        if let Some(reason) = parsed.automated {
            tracing::info!(from = %parsed.from, ?reason, "automated mail: stored, never answered automatically");
        }
        let message = crate::sdk::InboundMessage {
            handle: parsed.from.clone(),
            external_id,
            text,
            thread_hint: thread_hint(&parsed, &self.address),
            attachments: parsed.attachments.clone(),
            stored: Vec::new(),
            sender_name: parsed.from_name.clone(),
            automatic: parsed.automated.is_some(),
            subject: parsed.subject.clone(),
            original: Some(crate::sdk::InboundAttachment {
                name: "original.eml".to_owned(),
                media_type: "message/rfc822".to_owned(),
                bytes: mail.data.clone(),
            }),
            reply_to: None,
        };
        match self.bridge.receive(&message).await {
            Ok(crate::sdk::Submitted::Stored(event)) => {
                self.note_message_id(&parsed, &message.external_id, event);
                Ok(())
            }
            Ok(crate::sdk::Submitted::Duplicate(_)) => Ok(()),
            Err(
                err @ (crate::sdk::BridgeError::Refused(_) | crate::sdk::BridgeError::Event(_)),
            ) => Err(smtp::Refusal {
                code: 554,
                text: format!("5.6.0 refused: {err}"),
            }),
            Err(err) => Err(smtp::Refusal {
                code: 451,
                text: format!("4.3.0 not stored, try again later: {err}"),
            }),
        }
    }

    /// Remembers a stored mail's Message-ID, and says so when the same sender used it before
    /// for a mail with other bytes: clients reuse or break Message-IDs, so it is kept as
    /// another message, not dropped as a duplicate.
    fn note_message_id(&self, parsed: &InboundMail, external_id: &ExternalId, event: EventId) {
        let Some(message_id) = &parsed.message_id else {
            return;
        };
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= RECENT_MESSAGE_IDS {
            recent.clear();
        }
        let key = (parsed.from.clone(), message_id.clone());
        if let Some(before) = recent.insert(key, external_id.clone()) {
            if &before != external_id {
                tracing::warn!(
                    from = %parsed.from,
                    message_id = %message_id,
                    %event,
                    "a mail reuses a Message-ID with other content: stored as another message"
                );
            }
        }
    }

    /// A bounce of one of our replies: a failed receipt under that reply (the agents see it),
    /// not a message from the mailer.
    async fn record_bounce(
        &self,
        thread: threadline_protocol::ThreadId,
        event: threadline_protocol::EventId,
        parsed: &InboundMail,
    ) -> Result<(), smtp::Refusal> {
        let later = |err: String| smtp::Refusal {
            code: 451,
            text: format!("4.3.0 not stored, try again later: {err}"),
        };
        let messages = match self.bridge.link().thread_messages(thread).await {
            Ok(messages) => messages,
            // The thread moved to another channel since: nothing to mark here.
            Err(crate::sdk::LinkError::Refused { .. }) => return Ok(()),
            Err(err) => return Err(later(err.to_string())),
        };
        let Some(reply) = messages.iter().find(|m| m.event == event && !m.inbound) else {
            return Ok(());
        };
        let reason = format!(
            "bounced: {}",
            parsed
                .subject
                .clone()
                .unwrap_or_else(|| "undeliverable".to_owned())
        );
        self.bridge
            .receipt(
                thread,
                event,
                reply.depth,
                threadline_protocol::event::ReceiptKind::Failed,
                Some(reason),
            )
            .await
            .map(|_| ())
            .map_err(|err| later(err.to_string()))
    }

    /// The SMTP listener's sink for this bridge.
    pub fn sink(self: std::sync::Arc<Self>) -> smtp::MailSink
    where
        L: 'static,
    {
        std::sync::Arc::new(move |mail| {
            let inbound = std::sync::Arc::clone(&self);
            Box::pin(async move { inbound.take(mail).await })
        })
    }
}

/// The email bridge's outbound side: sends agents' replies through an SMTP relay (lettre:
/// STARTTLS or TLS, AUTH), threaded so mail clients keep the conversation together.
pub struct EmailOutbound {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    address: String,
    name: String,
}

impl std::fmt::Debug for EmailOutbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailOutbound")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The relay could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the SMTP relay `{url}` is not usable: {reason}")]
pub struct RelayError {
    url: String,
    reason: String,
}

impl EmailOutbound {
    /// Sends through the relay at `url` (`smtp://host:port` plain, `smtp://…?tls=required`
    /// for STARTTLS, `smtps://…` for TLS; `user:password@` for AUTH), from `name <address>`.
    /// `ca_pem`: a certificate (PEM) to trust for the relay besides the usual web roots (a
    /// relay with a private CA or a self-signed certificate).
    pub fn new(
        url: &str,
        address: &str,
        name: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, RelayError> {
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let error = |reason: String| RelayError {
            url: redact(url),
            reason,
        };
        let mut builder = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|err| error(err.to_string()))?
            .timeout(Some(std::time::Duration::from_secs(30)));
        if let Some(pem) = ca_pem {
            if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(error("relay_ca holds no PEM certificate".to_owned()));
            }
            let host = relay_host(url).ok_or_else(|| error("no host".to_owned()))?;
            let parameters = TlsParameters::builder(host)
                .add_root_certificate(
                    Certificate::from_pem(pem).map_err(|err| error(format!("relay_ca: {err}")))?,
                )
                .build_rustls()
                .map_err(|err| error(err.to_string()))?;
            builder = builder.tls(if url.starts_with("smtps://") {
                Tls::Wrapper(parameters)
            } else if url.contains("tls=required") {
                Tls::Required(parameters)
            } else if url.contains("tls=opportunistic") {
                Tls::Opportunistic(parameters)
            } else {
                return Err(error(
                    "relay_ca is for a TLS relay: use smtps:// or ?tls=required".to_owned(),
                ));
            });
        }
        let transport = builder.build();
        Ok(EmailOutbound {
            transport,
            address: address.to_lowercase(),
            name: name.to_owned(),
        })
    }

    /// Sends one reply. Transient failures (the relay is down, `4xx`) stay queued; permanent
    /// ones (`5xx`: no such address) become a failed receipt.
    pub async fn send(
        &self,
        delivery: &crate::sdk::Delivery,
        history: &[crate::sdk::ThreadMessage],
        files: &[(threadline_protocol::event::Attachment, Vec<u8>)],
    ) -> Result<(), crate::sdk::SendError> {
        let message = compose(delivery, history, files, &self.address, &self.name)
            .map_err(crate::sdk::SendError::Permanent)?;
        match lettre::AsyncTransport::send(&self.transport, message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => {
                Err(crate::sdk::SendError::Permanent(err.to_string()))
            }
            Err(err) => Err(crate::sdk::SendError::Retry(err.to_string())),
        }
    }

    /// Sends `to` a one-time `code` that proves the address is theirs (the node's "verify
    /// this email"), good for `lifetime`.
    pub async fn send_code(
        &self,
        to: &str,
        code: &str,
        lifetime: std::time::Duration,
    ) -> Result<(), crate::sdk::SendError> {
        let message = compose_code(to, code, lifetime, &self.address, &self.name)
            .map_err(crate::sdk::SendError::Permanent)?;
        match lettre::AsyncTransport::send(&self.transport, message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => {
                Err(crate::sdk::SendError::Permanent(err.to_string()))
            }
            Err(err) => Err(crate::sdk::SendError::Retry(err.to_string())),
        }
    }
}

/// The mail with a verification code: plain text, from the support address.
fn compose_code(
    to: &str,
    code: &str,
    lifetime: std::time::Duration,
    address: &str,
    name: &str,
) -> Result<lettre::Message, String> {
    use lettre::message::{header::ContentType, Mailbox};
    let from = Mailbox::new(
        Some(name.to_owned()),
        address
            .parse()
            .map_err(|err| format!("`{address}`: {err}"))?,
    );
    let to: Mailbox = to.parse().map_err(|err| format!("`{to}`: {err}"))?;
    let minutes = lifetime.as_secs() / 60;
    let body = format!(
        "Your code is {code}\n\nGive it to the person you are talking with at {name} to confirm \
         that this address is yours. It works once, within {minutes} minutes.\n\nIf you did \
         not ask for it, ignore this mail: nothing changes.\n"
    );
    lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(format!("Your code for {name}: {code}"))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|err| err.to_string())
}

/// The host of a relay URL (`smtp://user:pw@host:port/name?tls=…` → `host`).
fn relay_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Messages quoted below a reply at most.
const QUOTED_MESSAGES: usize = 20;

/// The mail for a reply: From the support address, Reply-To its reply-token address, a
/// Message-ID that names the thread, In-Reply-To and References to the customer's mails, the
/// reply as plain text, and the conversation before it quoted below (whatever channel it was on:
/// a chat handed off to email keeps its context; earlier files are named, not sent again).
/// The text comes as plain text and as HTML (`multipart/alternative`); `files` are the reply's
/// attachments with their bytes: the mail is `multipart/mixed` then.
pub fn compose(
    delivery: &crate::sdk::Delivery,
    history: &[crate::sdk::ThreadMessage],
    files: &[(threadline_protocol::event::Attachment, Vec<u8>)],
    address: &str,
    name: &str,
) -> Result<lettre::Message, String> {
    use lettre::message::{header::ContentType, Attachment, Mailbox, MultiPart};
    if delivery.handle.channel() != threadline_protocol::ChannelKind::Email {
        return Err(format!("{} is not an email address", delivery.handle));
    }
    let domain = address
        .split_once('@')
        .map(|(_, d)| d.to_owned())
        .ok_or_else(|| format!("`{address}` is not an address"))?;
    let local = address.split_once('@').map(|(l, _)| l).unwrap_or(address);
    let mailbox = |addr: String| -> Result<Mailbox, String> {
        Ok(Mailbox::new(
            Some(name.to_owned()),
            addr.parse().map_err(|err| format!("`{addr}`: {err}"))?,
        ))
    };
    let to: Mailbox = delivery
        .handle
        .address()
        .parse()
        .map_err(|err| format!("`{}`: {err}", delivery.handle))?;
    let before: Vec<&crate::sdk::ThreadMessage> = history
        .iter()
        .take_while(|m| m.event != delivery.event)
        .collect();
    let customer_ids: Vec<&str> = before
        .iter()
        .filter(|m| m.inbound && m.channel == Some(threadline_protocol::ChannelKind::Email))
        .filter_map(|m| m.external_id.as_deref().and_then(message_id_of))
        .collect();
    let mut body = delivery.text.clone();
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body>\n<div>{}</div>\n",
        html_text(&delivery.text)
    );
    let quoted: Vec<&&crate::sdk::ThreadMessage> = before
        .iter()
        .rev()
        .take(QUOTED_MESSAGES)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if !quoted.is_empty() {
        body.push_str("\n\n--- Earlier in this conversation ---\n");
        html.push_str("<p style=\"color:#666;margin-top:2em\">Earlier in this conversation</p>\n");
        for message in quoted {
            let who = match (message.inbound, message.channel) {
                (true, Some(channel)) => format!("You ({channel})"),
                (true, None) => "You".to_owned(),
                (false, _) => name.to_owned(),
            };
            // A mail's own quoted history is not quoted again.
            let text = match (&message.text, message.channel) {
                (Some(text), Some(threadline_protocol::ChannelKind::Email)) => trim_quoted(text),
                (Some(text), _) => text.clone(),
                (None, _) => "(erased)".to_owned(),
            };
            body.push_str(&format!("\n{who}:\n"));
            for line in text.lines() {
                body.push_str(&format!("> {line}\n"));
            }
            let mut files = String::new();
            for file in &message.attachments {
                let file = format!(
                    "[attachment: {}, {}]",
                    file.name.as_str(),
                    human_size(file.size)
                );
                body.push_str(&format!("> {file}\n"));
                files.push_str(&format!("<br><i>{}</i>", html_text(&file)));
            }
            html.push_str(&format!(
                "<p style=\"margin:1em 0 0.2em\"><b>{}</b></p>\n<blockquote style=\"margin:0;padding-left:1em;border-left:3px solid #ccc;color:#444\">{}{files}</blockquote>\n",
                html_text(&who),
                html_text(&text)
            ));
        }
    }
    html.push_str("</body></html>\n");
    let text_and_html = MultiPart::alternative_plain_html(body, html);
    let mut builder = lettre::Message::builder()
        .from(mailbox(address.to_owned())?)
        .reply_to(mailbox(format!(
            "{local}+{}@{domain}",
            reply_token(&delivery.thread)
        ))?)
        .to(to)
        .subject(reply_subject(&before, name))
        .message_id(Some(message_id(&delivery.thread, &delivery.event, &domain)));
    if let Some(last) = customer_ids.last() {
        builder = builder.in_reply_to((*last).to_owned());
        builder = builder.references(
            customer_ids
                .iter()
                .rev()
                .take(10)
                .rev()
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if files.is_empty() {
        return builder
            .multipart(text_and_html)
            .map_err(|err| err.to_string());
    }
    let mut parts = MultiPart::mixed().multipart(text_and_html);
    for (file, bytes) in files {
        let media_type = ContentType::parse(file.media_type.as_str())
            .or_else(|_| ContentType::parse("application/octet-stream"))
            .map_err(|err| err.to_string())?;
        parts = parts.singlepart(
            Attachment::new(file.name.as_str().to_owned()).body(bytes.clone(), media_type),
        );
    }
    builder.multipart(parts).map_err(|err| err.to_string())
}

/// Text as HTML: escaped, line breaks kept.
fn html_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A size for people: `532 bytes`, `12 KB`, `3.4 MB`.
fn human_size(bytes: u64) -> String {
    match bytes {
        0..=999 => format!("{bytes} bytes"),
        1_000..=999_999 => format!("{} KB", bytes / 1_000),
        _ => format!("{:.1} MB", bytes as f64 / 1_000_000.0),
    }
}

/// The Message-ID of an outbound mail: `<THREAD.EVENT@domain>`, so a reply's `In-Reply-To`
/// names its thread.
pub fn message_id(
    thread: &threadline_protocol::ThreadId,
    event: &threadline_protocol::EventId,
    domain: &str,
) -> String {
    format!("<{thread}.{event}@{domain}>")
}

/// The reply a bounce (a delivery report, or mail with a null reverse path) is about: the first
/// of our Message-IDs (`<THREAD.EVENT@domain>`) anywhere in it (the returned headers).
pub fn bounced_reply(
    raw: &[u8],
    address: &str,
) -> Option<(threadline_protocol::ThreadId, threadline_protocol::EventId)> {
    let domain = address.split_once('@')?.1.to_lowercase();
    let text = raw.to_ascii_lowercase();
    let suffix = format!("@{domain}>").into_bytes();
    // 64 hex, a dot, 64 hex before the '@' (bytes: whatever else the mail holds, no slicing
    // inside a character).
    text.windows(suffix.len())
        .enumerate()
        .filter(|(_, window)| *window == suffix.as_slice())
        .filter_map(|(end, _)| text.get(end.checked_sub(129)?..end))
        .find_map(|local| {
            let local = std::str::from_utf8(local).ok()?;
            let (thread, event) = local.split_once('.')?;
            Some((thread.parse().ok()?, event.parse().ok()?))
        })
}

/// The reply token of a thread: the first 16 bytes of its id in lowercase base32 (26
/// characters), for `support+TOKEN@domain`.
pub fn reply_token(thread: &threadline_protocol::ThreadId) -> String {
    base32(&thread.as_bytes()[..crate::sdk::REPLY_TOKEN_BYTES])
}

/// The thread a mail names: one of our Message-IDs it answers first, else a reply token in the
/// address it was sent to.
pub fn thread_hint(mail: &InboundMail, address: &str) -> Option<crate::sdk::ThreadHint> {
    let domain = address.split_once('@').map(|(_, d)| d.to_lowercase())?;
    for id in &mail.answers {
        let Some((local, id_domain)) = id.rsplit_once('@') else {
            continue;
        };
        if !id_domain.eq_ignore_ascii_case(&domain) {
            continue;
        }
        let thread = local.split_once('.').map(|(thread, _)| thread);
        if let Some(thread) = thread.and_then(|t| t.parse::<threadline_protocol::ThreadId>().ok()) {
            return Some(crate::sdk::ThreadHint::Thread(thread));
        }
    }
    mail.reply_tokens(address).iter().find_map(|token| {
        let bytes = unbase32(token)?;
        let token = <[u8; crate::sdk::REPLY_TOKEN_BYTES]>::try_from(bytes).ok()?;
        Some(crate::sdk::ThreadHint::Token(token))
    })
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = BASE32.iter().position(|&b| b == c.to_ascii_lowercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn strip_brackets(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Robots, in the order that tells them apart: a delivery report first (it often carries
/// `Auto-Submitted` too, and must mark the reply it bounces, not pass for an auto-reply), then a
/// null return path, then auto-replies and bulk mail.
fn automated(message: &mail_parser::Message<'_>) -> Option<Automated> {
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|value| value.trim().to_ascii_lowercase())
    };
    let is_type = |part: &mail_parser::MessagePart<'_>, ctype: &str, subtype: &str| {
        part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case(ctype)
                && ct
                    .subtype()
                    .is_some_and(|sub| sub.eq_ignore_ascii_case(subtype))
        })
    };
    let is_report = message.parts.iter().any(|part| {
        is_type(part, "multipart", "report") || is_type(part, "message", "delivery-status")
    });
    if is_report {
        return Some(Automated::DeliveryReport);
    }
    if message
        .header_raw("Return-Path")
        .is_some_and(|value| value.trim() == "<>")
    {
        return Some(Automated::NullReturnPath);
    }
    if header("Auto-Submitted").is_some_and(|value| !value.starts_with("no")) {
        return Some(Automated::AutoSubmitted);
    }
    let bulk = header("Precedence")
        .is_some_and(|value| matches!(value.as_str(), "bulk" | "junk" | "list" | "auto_reply"));
    let suppressing = header("X-Auto-Response-Suppress")
        .is_some_and(|value| !value.is_empty() && value != "none");
    if bulk || suppressing || header("X-Autoreply").is_some() || header("X-Autorespond").is_some() {
        return Some(Automated::BulkOrAutoReply);
    }
    None
}

/// Every part a mail client shows as the body, in order: each text part (a plain one, or an
/// HTML one made plain when it has no plain alternative), and where a picture or a file sits
/// between them (Apple Mail's text, photo, text), a line naming it (the file itself is among
/// the attachments). Line ends are `\n`; NUL characters are dropped.
fn every_text_part(message: &mail_parser::Message<'_>) -> String {
    let mut pieces: Vec<String> = Vec::new();
    for (position, &id) in message.text_body.iter().enumerate() {
        let Some(part) = message.part(id) else {
            continue;
        };
        let piece = match &part.body {
            PartType::Text(_) | PartType::Html(_) => message
                .body_text(position)
                .map(|text| without_nul(&text.replace("\r\n", "\n")))
                .unwrap_or_default(),
            PartType::Message(inner) => format!(
                "[forwarded message: {}]",
                inner.subject().map(without_nul).unwrap_or_default()
            ),
            PartType::Binary(_) | PartType::InlineBinary(_) => {
                format!("[{}: {}]", media_type(part), part_name(part))
            }
            PartType::Multipart(_) => continue,
        };
        let piece = piece.trim_matches('\n');
        if !piece.trim().is_empty() {
            pieces.push(piece.to_owned());
        }
    }
    // Text the parser could not type as text (`Content-Type: text` with no subtype, a
    // `multipart/*` with no boundary): a client shows it, so it is text, not a file.
    for part in message.attachments().filter(|part| is_unnamed_text(part)) {
        let text = without_nul(&String::from_utf8_lossy(part.contents()).replace("\r\n", "\n"));
        let text = text.trim_matches('\n');
        if !text.trim().is_empty() {
            pieces.push(text.to_owned());
        }
    }
    pieces.join("\n\n")
}

/// A part the parser left as a file although it is text: no file name, not marked as an
/// attachment, and typed `text` (with or without a subtype) or `multipart` (a broken one).
fn is_unnamed_text(part: &mail_parser::MessagePart<'_>) -> bool {
    let declared_attachment = part
        .content_disposition()
        .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
    let textual = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("text") || ct.ctype().eq_ignore_ascii_case("multipart")
    });
    textual
        && !declared_attachment
        && part.attachment_name().is_none()
        && matches!(
            part.body,
            PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Text(_)
        )
}

/// `bytes`, with the blank line that ends the headers put back where a client left it out:
/// before the first line of the header block that is neither a header nor a continuation (RFC
/// 5322 wants one; some clients send the body straight after the last header).
fn with_header_end(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut at = 0;
    let mut first = true;
    while at < bytes.len() {
        let end = bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |n| at + n + 1);
        let line = &bytes[at..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return std::borrow::Cow::Borrowed(bytes);
        }
        let continuation = matches!(content[0], b' ' | b'\t');
        let field = content
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| {
                colon > 0 && content[..colon].iter().all(|&b| b.is_ascii_graphic())
            });
        let mbox_line = first && content.starts_with(b"From ");
        if !(continuation || field || mbox_line) {
            let mut repaired = Vec::with_capacity(bytes.len() + 2);
            repaired.extend_from_slice(&bytes[..at]);
            repaired.extend_from_slice(b"\r\n");
            repaired.extend_from_slice(&bytes[at..]);
            return std::borrow::Cow::Owned(repaired);
        }
        first = false;
        at = end;
    }
    std::borrow::Cow::Borrowed(bytes)
}

/// A part's file name, or one made from its type.
fn part_name(part: &mail_parser::MessagePart<'_>) -> String {
    match part.attachment_name() {
        Some(name) if !name.trim().is_empty() => without_nul(name.trim()),
        _ if part.is_message() => "message.eml".to_owned(),
        _ => "attachment".to_owned(),
    }
}

/// A part's media type as its headers give it (`message/rfc822` for a forwarded message).
fn media_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None if part.is_message() => "message/rfc822".to_owned(),
        None => "application/octet-stream".to_owned(),
    }
}

fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}

/// The Message-ID (with its angle brackets) an external id of a mail starts with, if any.
fn message_id_of(external_id: &str) -> Option<&str> {
    let first = external_id.split(' ').next()?;
    (first.len() > 2 && first.starts_with('<') && first.ends_with('>')).then_some(first)
}

/// The text without the quoted history a mail client puts below a reply: lines quoted with
/// `>`, the attribution line before them ("On … wrote:"), and a forwarded or original-message
/// block. The full text is kept elsewhere; this is for display.
pub fn trim_quoted(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    // Where the closing block of quoted or blank lines starts (one pass from the end).
    let tail = lines
        .iter()
        .rposition(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('>')
        })
        .map_or(0, |last| last + 1);
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let is_marker = trimmed.starts_with("-----Original Message-----")
            || trimmed.starts_with("---------- Forwarded message")
            || (trimmed.starts_with("On ") && trimmed.ends_with("wrote:"))
            || (trimmed.starts_with("Le ") && trimmed.ends_with("a écrit :"));
        let quote_block_starts = i >= tail && trimmed.starts_with('>');
        if is_marker || quote_block_starts {
            end = i;
            break;
        }
    }
    let kept = lines[..end].join("\n");
    let kept = kept.trim_end();
    if kept.is_empty() {
        text.trim().to_owned()
    } else {
        kept.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(headers: &str, body: &str) -> Vec<u8> {
        format!("{headers}\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn a_plain_reply_gives_sender_ids_tokens_and_trimmed_text() {
        let raw = mail(
            "From: Alice Doe <Alice@Example.TEST>\r\nTo: support+t0k3n@shop.test\r\nCc: other@example.test\r\nSubject: Re: your parcel\r\nMessage-ID: <abc@example.test>\r\nIn-Reply-To: <tl.1@shop.test>\r\nReferences: <tl.0@shop.test> <tl.1@shop.test>",
            "Thanks, that works.\r\n\r\nOn Mon, 1 Dec 2026, Shop wrote:\r\n> Your parcel is at the depot.\r\n> Regards\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(parsed.from.to_string(), "email:alice@example.test");
        assert_eq!(parsed.from_name.as_deref(), Some("Alice Doe"));
        assert_eq!(parsed.message_id.as_deref(), Some("abc@example.test"));
        assert_eq!(parsed.answers, ["tl.1@shop.test", "tl.0@shop.test"]);
        assert_eq!(parsed.reply_tokens("support@shop.test"), ["t0k3n"]);
        assert!(parsed.reply_tokens("sales@shop.test").is_empty());
        assert_eq!(parsed.new_text, "Thanks, that works.");
        assert!(parsed.text.contains("> Your parcel is at the depot."));
        assert_eq!(parsed.automated, None);
        let external_id = parsed.external_id(&raw);
        assert!(
            external_id
                .as_str()
                .starts_with("<abc@example.test> sha256:"),
            "{external_id:?}"
        );
    }

    /// A reply's mail: plain text and HTML alternatives, the HTML escaped, the earlier
    /// conversation quoted in both.
    #[test]
    fn a_reply_is_plain_text_and_escaped_html_with_the_conversation_quoted() {
        let thread = threadline_protocol::ThreadId::from_bytes([5; 32]);
        let delivery = crate::sdk::Delivery {
            seq: 1,
            thread,
            event: threadline_protocol::EventId::from_bytes([6; 32]),
            depth: 3,
            handle: "email:alice@example.test".parse().expect("handle"),
            text: "Use <b>code</b> & \"SAVE10\"".to_owned(),
            attachments: Vec::new(),
            template: None,
            reply_to: None,
            opted_out: false,
        };
        let history = vec![crate::sdk::ThreadMessage {
            event: threadline_protocol::EventId::from_bytes([4; 32]),
            depth: 1,
            inbound: true,
            channel: Some(threadline_protocol::ChannelKind::Webchat),
            text: Some("Any discount?".to_owned()),
            at: threadline_protocol::Timestamp::from_millis(1),
            external_id: None,
            attachments: Vec::new(),
            subject: None,
        }];
        let mail =
            compose(&delivery, &history, &[], "support@shop.test", "Shop").expect("composes");
        let raw = String::from_utf8(mail.formatted()).expect("utf-8");
        assert!(
            raw.contains("Subject: Your conversation with Shop"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("Content-Type: text/plain"), "{raw}");
        assert!(raw.contains("Content-Type: text/html"), "{raw}");
        assert!(
            raw.contains("Use <b>code</b> & \"SAVE10\""),
            "plain stays plain: {raw}"
        );
        assert!(
            raw.contains("Use &lt;b&gt;code&lt;/b&gt; &amp; &quot;SAVE10&quot;"),
            "HTML is escaped: {raw}"
        );
        assert!(raw.contains("> Any discount?"), "{raw}");
        assert!(raw.contains("<b>You (webchat)</b>"), "{raw}");
    }

    /// A reply answers the subject of the customer's latest mail, as a mail client does.
    #[test]
    fn a_reply_takes_the_subject_of_the_latest_mail() {
        let message = |subject: Option<&str>, channel| crate::sdk::ThreadMessage {
            event: threadline_protocol::EventId::from_bytes([4; 32]),
            depth: 1,
            inbound: true,
            channel: Some(channel),
            text: Some("text".to_owned()),
            at: threadline_protocol::Timestamp::from_millis(1),
            external_id: None,
            attachments: Vec::new(),
            subject: subject.map(str::to_owned),
        };
        use threadline_protocol::ChannelKind::{Email, Webchat};
        let first = message(Some("Order 1077: broken mug"), Email);
        let again = message(Some("RE: Order 1077: broken mug"), Email);
        let chat = message(None, Webchat);
        assert_eq!(
            reply_subject(&[&first, &chat], "Shop"),
            "Re: Order 1077: broken mug"
        );
        assert_eq!(
            reply_subject(&[&first, &again], "Shop"),
            "RE: Order 1077: broken mug"
        );
        assert_eq!(
            reply_subject(&[&chat], "Shop"),
            "Your conversation with Shop"
        );
    }

    #[test]
    fn the_relay_host_is_read_from_its_url() {
        for (url, host) in [
            ("smtp://u:p@relay.example:587?tls=required", "relay.example"),
            ("smtps://relay.example", "relay.example"),
            ("smtp://localhost:2525/helo.name", "localhost"),
            ("smtp://u:p@[::1]:25", "::1"),
        ] {
            assert_eq!(relay_host(url).as_deref(), Some(host), "{url}");
        }
        assert_eq!(relay_host("smtp://"), None);
    }

    #[test]
    fn trimming_a_huge_quote_is_linear() {
        // Quadratic, this took minutes; linear, milliseconds.
        let text = format!("{}x", ">\n".repeat(60_000));
        assert_eq!(trim_quoted(&text), text.trim());
        let quoted = format!("Answer\n{}", "> old\n".repeat(60_000));
        assert_eq!(trim_quoted(&quoted), "Answer");
    }

    #[test]
    fn the_dmarc_result_is_read_from_the_trusted_mx_header_only() {
        let raw = mail(
            "Authentication-Results: mx.shop.test;\r\n\tspf=pass smtp.mailfrom=example.test;\r\n dmarc=pass (p=reject) header.from=example.test\r\nAuthentication-Results: evil.test; dmarc=fail\r\nFrom: alice@example.test\r\nTo: support@shop.test\r\nSubject: hi",
            "hello\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(parsed.dmarc_result("MX.shop.test").as_deref(), Some("pass"));
        assert_eq!(parsed.dmarc_result("evil.test").as_deref(), Some("fail"));
        assert_eq!(parsed.dmarc_result("other.test"), None);
        // One header per filter of the MX: the DMARC one decides, wherever it is.
        let raw = mail(
            "Authentication-Results: mx.shop.test; dkim=pass header.d=example.test\r\nAuthentication-Results: mx.shop.test; dmarc=fail header.from=example.test\r\nAuthentication-Results: mx.shop.test; spf=pass\r\nFrom: alice@example.test\r\nTo: support@shop.test",
            "hello\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(parsed.dmarc_result("mx.shop.test").as_deref(), Some("fail"));
        let raw = mail(
            "From: alice@example.test\r\nTo: support@shop.test",
            "hi\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(parsed.dmarc_result("mx.shop.test"), None);
        // A sender's address or a comment cannot smuggle a result in.
        let raw = mail(
            "Authentication-Results: mx.shop.test; spf=pass smtp.mailfrom=\"x;dmarc=pass\"@evil.test (sender \\(says\\) ;dmarc=pass);\r\n dmarc=fail header.from=example.test\r\nFrom: alice@example.test\r\nTo: support@shop.test",
            "hi\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(parsed.dmarc_result("mx.shop.test").as_deref(), Some("fail"));
    }

    #[test]
    fn encodings_charsets_and_multipart_are_decoded() {
        let raw = mail(
            "From: bob@example.test\r\nTo: support@shop.test\r\nSubject: =?ISO-8859-1?Q?R=E9clamation?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"",
            "--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nJ'ai re=E7u un colis ab=EEm=E9.\r\n--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>ignored</p>\r\n--b2--\r\n--b1\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"photo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b1--\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(parsed.subject.as_deref(), Some("Réclamation"));
        assert_eq!(parsed.text, "J'ai reçu un colis abîmé.");
        assert_eq!(
            parsed.attachments,
            [crate::sdk::InboundAttachment {
                name: "photo.png".to_owned(),
                media_type: "image/png".to_owned(),
                bytes: b"hello".to_vec()
            }]
        );
        // No Message-ID: the bytes name it.
        assert!(parsed.external_id(&raw).as_str().starts_with("sha256:"));
    }

    #[test]
    fn every_text_part_is_kept_in_order_with_the_picture_between_them_named() {
        // How Apple Mail and iOS Mail send a pasted photo: text, inline image, text.
        let raw = mail(
            "From: Ada <ada@example.test>\r\nTo: support@shop.test\r\nSubject: Broken mug\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"apple\"",
            "--apple\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHere is the box as it arrived:\r\n\r\n--apple\r\nContent-Type: image/jpeg; name=\"box.jpg\"\r\nContent-Disposition: inline; filename=\"box.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--apple\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThe mug is broken. Please refund order 1077.\r\n--apple--\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(
            parsed.text,
            "Here is the box as it arrived:\n\n[image/jpeg: box.jpg]\n\nThe mug is broken. Please refund order 1077."
        );
        assert_eq!(parsed.attachments.len(), 1, "{:?}", parsed.attachments);
        assert_eq!(parsed.attachments[0].name, "box.jpg");
        assert_eq!(parsed.attachments[0].bytes, b"hello");
    }

    #[test]
    fn gmail_and_outlook_layouts_keep_their_text_and_pasted_images() {
        // Gmail and Outlook: multipart/related around the alternatives, the pasted image
        // referenced by its Content-ID from the HTML.
        let related = |text_part: &str| {
            mail(
                "From: ada@example.test\r\nTo: support@shop.test\r\nSubject: Photo\r\nMIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=\"rel\"",
                &format!("--rel\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n{text_part}--alt\r\nContent-Type: text/html; charset=\"UTF-8\"\r\n\r\n<div>The lid is cracked:<br><img src=\"cid:ii_1\" alt=\"lid.png\"><br>Order 1077.</div>\r\n--alt--\r\n--rel\r\nContent-Type: image/png; name=\"lid.png\"\r\nContent-Disposition: inline; filename=\"lid.png\"\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <ii_1>\r\n\r\naGVsbG8=\r\n--rel--\r\n"),
            )
        };
        // Gmail sends a plain alternative; some Outlook builds send the HTML alone.
        for text_part in [
            "--alt\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\nThe lid is cracked:\r\n[image: lid.png]\r\nOrder 1077.\r\n",
            "",
        ] {
            let parsed = InboundMail::parse(&related(text_part)).expect("parses");
            assert!(parsed.text.contains("The lid is cracked:"), "{}", parsed.text);
            assert!(parsed.text.contains("Order 1077."), "{}", parsed.text);
            assert!(
                parsed.attachments.iter().any(|a| a.name == "lid.png" && a.bytes == b"hello"),
                "{:?}",
                parsed.attachments
            );
        }
        // Gmail's forward: inline, in the text, under its marker.
        let forward = mail(
            "From: ada@example.test\r\nTo: support@shop.test\r\nSubject: Fwd: Your order",
            "See below.\r\n\r\n---------- Forwarded message ---------\r\nFrom: Shop <shop@example.test>\r\nSubject: Your order\r\n\r\nShipped on Monday.\r\n",
        );
        let parsed = InboundMail::parse(&forward).expect("parses");
        assert!(
            parsed.text.contains("Shipped on Monday."),
            "{}",
            parsed.text
        );
        // Outlook's reply: the new text above the quoted history, which is kept whole.
        let reply = mail(
            "From: ada@example.test\r\nTo: support@shop.test\r\nSubject: RE: Your order",
            "Thanks, that works.\r\n\r\n-----Original Message-----\r\nFrom: Shop\r\nSent: Monday\r\n\r\nYour parcel is at the depot.\r\n",
        );
        let parsed = InboundMail::parse(&reply).expect("parses");
        assert!(parsed.text.contains("Your parcel is at the depot."));
        assert_eq!(parsed.new_text, "Thanks, that works.");
    }

    #[test]
    fn a_forwarded_message_is_an_attachment_of_type_message_rfc822() {
        let raw = mail(
            "From: ada@example.test\r\nTo: support@shop.test\r\nSubject: Fwd: order\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"f\"",
            "--f\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n--f\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\nFrom: shop@example.test\r\nSubject: Your order\r\n\r\nShipped.\r\n--f--\r\n",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert!(parsed.text.starts_with("See below."), "{}", parsed.text);
        let forwarded = parsed
            .attachments
            .iter()
            .find(|a| a.media_type == "message/rfc822")
            .expect("the forwarded mail is kept");
        assert!(String::from_utf8_lossy(&forwarded.bytes).contains("Shipped."));
    }

    #[test]
    fn a_mail_without_the_blank_line_after_its_headers_keeps_its_body() {
        let raw = b"From: ada@example.test\r\nTo: support@shop.test\r\nSubject: hi\r\nthe body starts here\r\nand goes on\r\n";
        let parsed = InboundMail::parse(raw).expect("parses");
        assert_eq!(parsed.subject.as_deref(), Some("hi"));
        assert_eq!(parsed.text, "the body starts here\nand goes on");
        // A header block that ends properly is left as it is.
        let proper = mail(
            "From: ada@example.test\r\nSubject: hi",
            "body: with a colon",
        );
        assert!(matches!(
            with_header_end(&proper),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn text_the_parser_cannot_type_is_text_not_a_file() {
        // `Content-Type: text` with no subtype, and a multipart with no boundary.
        for content_type in ["text; charset=us-ascii", "multipart/mixed"] {
            let raw = mail(
                &format!("From: ada@example.test\r\nTo: support@shop.test\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}"),
                "Please refund order 1077.",
            );
            let parsed = InboundMail::parse(&raw).expect("parses");
            assert_eq!(parsed.text, "Please refund order 1077.", "{content_type}");
            assert!(
                parsed.attachments.is_empty(),
                "{content_type}: {:?}",
                parsed.attachments
            );
        }
    }

    #[test]
    fn nul_characters_never_reach_the_text_or_the_subject() {
        let raw = mail(
            "From: ada@example.test\r\nTo: support@shop.test\r\nSubject: a\0b",
            "hello\0 world",
        );
        let parsed = InboundMail::parse(&raw).expect("parses");
        assert_eq!(parsed.subject.as_deref(), Some("ab"));
        assert_eq!(parsed.text, "hello world");
    }

    #[test]
    fn the_same_message_id_with_other_content_is_another_message() {
        let first = mail(
            "From: ada@example.test\r\nTo: support@shop.test\r\nMessage-ID: <same@example.test>",
            "first",
        );
        let second = mail(
            "From: ada@example.test\r\nTo: support@shop.test\r\nMessage-ID: <same@example.test>",
            "second",
        );
        let id = |raw: &[u8]| {
            InboundMail::parse(raw)
                .expect("parses")
                .external_id(raw)
                .as_str()
                .to_owned()
        };
        assert_ne!(id(&first), id(&second));
        assert_eq!(id(&first), id(&first.clone()), "a copy is the same message");
        assert_eq!(message_id_of(&id(&first)), Some("<same@example.test>"));
        assert_eq!(message_id_of("sha256:00"), None);
    }

    #[test]
    fn robots_are_recognised() {
        let cases = [
            (
                "Auto-Submitted: auto-replied",
                Some(Automated::AutoSubmitted),
            ),
            ("Auto-Submitted: no", None),
            ("Return-Path: <>", Some(Automated::NullReturnPath)),
            ("Precedence: bulk", Some(Automated::BulkOrAutoReply)),
            ("X-Autoreply: yes", Some(Automated::BulkOrAutoReply)),
            (
                "Content-Type: multipart/report; report-type=delivery-status; boundary=x",
                Some(Automated::DeliveryReport),
            ),
            // A report that says it is auto-replied too is still a report (checked first).
            (
                "Auto-Submitted: auto-replied\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x",
                Some(Automated::DeliveryReport),
            ),
            (
                "X-Auto-Response-Suppress: All",
                Some(Automated::BulkOrAutoReply),
            ),
        ];
        for (header, expected) in cases {
            let raw = mail(
                &format!("From: robot@example.test\r\nTo: support@shop.test\r\n{header}"),
                "--x\r\nContent-Type: text/plain\r\n\r\nOut of office\r\n--x--\r\n",
            );
            let parsed = InboundMail::parse(&raw).expect("parses");
            assert_eq!(parsed.automated, expected, "{header}");
        }
    }

    #[test]
    fn bad_mail_is_a_clear_error() {
        assert_eq!(
            InboundMail::parse(&mail("To: support@shop.test", "no sender")),
            Err(MailError::NoSender)
        );
        let huge = vec![b'a'; MAX_MAIL_BYTES + 1];
        assert_eq!(
            InboundMail::parse(&huge),
            Err(MailError::TooLarge(MAX_MAIL_BYTES + 1))
        );
    }

    #[test]
    fn our_message_ids_and_reply_tokens_name_their_thread() {
        let thread = threadline_protocol::ThreadId::from_bytes([0xab; 32]);
        let event = threadline_protocol::EventId::from_bytes([0xcd; 32]);
        let token = reply_token(&thread);
        assert_eq!(token.len(), 26);
        let by_id = mail(
            &format!(
                "From: a@example.test\r\nTo: support@shop.test\r\nIn-Reply-To: {}",
                message_id(&thread, &event, "shop.test")
            ),
            "yes",
        );
        let parsed = InboundMail::parse(&by_id).expect("parses");
        assert_eq!(
            thread_hint(&parsed, "support@shop.test"),
            Some(crate::sdk::ThreadHint::Thread(thread))
        );
        // Another domain's id names nothing of ours.
        assert_eq!(thread_hint(&parsed, "support@other.test"), None);
        let by_token = mail(
            &format!(
                "From: a@example.test\r\nTo: support+{}@shop.test",
                token.to_uppercase()
            ),
            "yes",
        );
        let parsed = InboundMail::parse(&by_token).expect("parses");
        assert_eq!(
            thread_hint(&parsed, "support@shop.test"),
            Some(crate::sdk::ThreadHint::Token([0xab; 16]))
        );
    }

    #[test]
    fn quoted_history_is_trimmed_for_display_only() {
        assert_eq!(trim_quoted("Yes.\n\n> earlier\n> more"), "Yes.");
        assert_eq!(
            trim_quoted("Fine\n-----Original Message-----\nFrom: shop"),
            "Fine"
        );
        // A reply that is all quote keeps its text rather than showing nothing.
        assert_eq!(trim_quoted("> only a quote"), "> only a quote");
        // Inline answers between quotes are kept.
        assert_eq!(
            trim_quoted("> question one\nanswer one\n> question two\nanswer two"),
            "> question one\nanswer one\n> question two\nanswer two"
        );
    }
}

#[cfg(test)]
mod bounce_tests {
    use super::*;

    #[test]
    fn a_delivery_report_names_the_reply_it_bounces() {
        let thread = threadline_protocol::ThreadId::from_bytes([0x11; 32]);
        let event = threadline_protocol::EventId::from_bytes([0x22; 32]);
        let id = message_id(&thread, &event, "shop.test");
        let raw = format!("From: mailer-daemon@example.test\r\nTo: support@shop.test\r\nSubject: Undelivered\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\nThis is a report.\r\n--x\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n--x\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {id}\r\n--x--\r\n");
        let parsed = InboundMail::parse(raw.as_bytes()).expect("parses");
        assert_eq!(parsed.automated, Some(Automated::DeliveryReport));
        assert_eq!(
            bounced_reply(raw.as_bytes(), "support@shop.test"),
            Some((thread, event))
        );
        assert_eq!(bounced_reply(raw.as_bytes(), "support@other.test"), None);
    }
}
