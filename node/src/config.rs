//! The node's configuration: `config.toml` in the data folder, then environment variables,
//! then command-line flags (each overriding the one before). Validated when loaded.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The file `init` writes.
pub const DEFAULT_CONFIG: &str = "\
# Threadline node configuration.
# THREADLINE_API_LISTEN and `threadline run --listen` override what is set here.

[api]
# Where the HTTP API listens. Loopback only by default: put a TLS-terminating proxy in front
# of it to serve customers and agents from elsewhere.
listen = \"127.0.0.1:7420\"

[webchat]
# The node's own web chat bridge (the widget and its WebSocket). Turn it off when a standalone
# web chat bridge serves this org's web chat queue instead (two would share one queue).
builtin = true
# New chat connections allowed per client address per minute. Behind a proxy every visitor
# has the proxy's address: raise it there.
connections_per_minute = 120
# Websites allowed to embed the chat widget (their origins, like \"https://shop.example\").
# Pages served by the node itself are always allowed.
allowed_origins = []
# How the widget looks: its title, what the empty chat says, its colour and its corner.
# title = \"Chat with us\"
# greeting = \"Ask us anything. We usually answer within minutes; if we are away, we will answer here later.\"
# color = \"#2563eb\"
# position = \"right\"   # or \"left\"

[replication]
# Where this node listens for its org's other nodes (libp2p multiaddrs). Loopback only by
# default: give a routable address (\"/ip4/0.0.0.0/tcp/7430\") for nodes on other machines.
# THREADLINE_P2P_LISTEN and `threadline run --p2p-listen` override it.
listen = [\"/ip4/127.0.0.1/tcp/7430\"]
# Peers to stay connected to, each ending in /p2p/<PeerId> (`threadline peer add` adds more,
# in the data folder's `peers` file).
peers = []
# Find the org's nodes on the local network with mDNS.
mdns = false
# Partner orgs (org ids) whose nodes may connect to get the threads shared with them
# (`threadline partner add` adds more, in the data folder's `partners` file).
partners = []

[email]
# The support address customers write to. The built-in email bridge is on when it is set.
# address = \"support@shop.example\"
# Where the node takes mail for it (SMTP; THREADLINE_SMTP_LISTEN and `run --smtp-listen`
# override it). Put it behind your MX, or point the MX at it.
smtp_listen = \"127.0.0.1:2525\"
# Where replies are sent from: an SMTP relay URL (smtp://host:port; ?tls=required for STARTTLS;
# smtps:// for TLS; user:password@ for AUTH). THREADLINE_SMTP_RELAY overrides it (keep the
# password there rather than here). No relay: replies wait in the email queue.
# relay = \"smtp://127.0.0.1:587?tls=required\"
# A certificate (PEM file) to trust for the relay, besides the usual web roots: the private
# CA that signed the relay's certificate, or a self-signed one made as a server certificate
# (CA:FALSE; one made as a CA is refused as a server's own certificate).
# relay_ca = \"/etc/threadline/relay-ca.pem\"
# The name replies are signed with (From: NAME <address>); by default the address's domain.
# name = \"Shop\"
# The authserv-id of your MX (RFC 8601). When set, only mail whose Authentication-Results
# from that MX says dmarc=pass is taken: the sender is who the From: says. Other mail is
# refused (550 5.7.1). Unset, the From: is taken on trust: only do that behind an MX that
# rejects mail failing DMARC.
# authserv_id = \"mx.shop.example\"
# An existing mailbox to take mail from as well, polled over IMAP (imaps://user:password@host/
# MAILBOX; imap:// is plain, for a server on this host). THREADLINE_IMAP overrides it (keep
# the password there). Taken mail is marked with the keyword $Threadline, never deleted.
# imap = \"imaps://support%40shop.example:PASSWORD@imap.shop.example/INBOX\"
# How often the mailbox is polled, in seconds.
imap_poll_seconds = 30

# Meta's channels. Each is on when its id is set. Meta calls the node's webhook at
# https://<your host>/webhooks/<channel> (behind your TLS proxy); subscribe the app to
# messages, messaging_postbacks, messaging_referrals, message_deliveries and message_reads
# (Messenger, Instagram) or messages (WhatsApp). Keep tokens and secrets in the environment:
# THREADLINE_<CHANNEL>_ACCESS_TOKEN and THREADLINE_<CHANNEL>_APP_SECRET override what is here.
[whatsapp]
# The WhatsApp Cloud API's id of the business's number, and the number itself (digits, for
# the web chat's \"continue on WhatsApp\" link).
# phone_number_id = \"106540352242922\"
# number = \"15550783881\"
# access_token = \"\"
# app_secret = \"\"
# verify_token = \"a long random string you also give Meta\"

[messenger]
# The Facebook page's id, and its username (for the m.me link of \"continue on Messenger\").
# page_id = \"682498302938465\"
# link_name = \"shop.example\"
# Whether Meta granted the page the HUMAN_AGENT tag (agents may then answer for 7 days).
# human_agent = false
# access_token = \"\"
# app_secret = \"\"
# verify_token = \"\"

[instagram]
# The Instagram professional account's id, and its username (for ig.me links).
# account_id = \"17841400000000000\"
# link_name = \"shop.example\"
# human_agent = false
# access_token = \"\"
# app_secret = \"\"
# verify_token = \"\"

[telegram]
# The Telegram bridge: customers write to your bot (from @BotFather) in a private chat. On
# when `bot_token` is set. Point the bot's webhook at https://<your host>/webhooks/telegram
# with `setWebhook` and the same `secret_token`. THREADLINE_TELEGRAM_BOT_TOKEN and
# THREADLINE_TELEGRAM_SECRET_TOKEN override what is here.
# bot_token = \"123456789:AA…\"
# secret_token = \"16 to 256 of A-Z a-z 0-9 _ -\"
# The bot's username, for the web chat's \"continue on Telegram\" link (t.me/<username>).
# bot_username = \"shop_support_bot\"

[slack]
# The Slack bridge: customers in Slack write to your app (a direct message, or a Slack Connect
# channel the app is in). On when `bot_token` is set. Give Slack the Events API request URL
# https://<your host>/webhooks/slack and subscribe to message.im and message.channels.
# THREADLINE_SLACK_BOT_TOKEN and THREADLINE_SLACK_SIGNING_SECRET override what is here.
# bot_token = \"xoxb-…\"
# signing_secret = \"\"
# The app's bot user (U…), whose own posts are never a customer's.
# bot_user = \"U0123456789\"
# Your workspace (T…): in a Slack Connect channel, its members are your people, not customers.
# team_id = \"T0123456789\"
# For the web chat's \"continue on Slack\": https://slack.com/app_redirect?app=<app id>&team=<team id>
# app_link = \"https://slack.com/app_redirect?app=A0123456789\"

[sms]
# The SMS bridge, on Twilio Programmable Messaging: customers text your Twilio number. On when
# `account_sid` is set. In the Twilio console, set the number's (or Messaging Service's)
# \"A message comes in\" webhook to <public_url>/webhooks/sms (HTTP POST). Twilio signs every
# request over that URL with the auth token, so `public_url` must be exactly where Twilio
# reaches this node (behind a proxy too). THREADLINE_SMS_AUTH_TOKEN overrides what is here.
# account_sid = \"AC…\"
# auth_token = \"\"
# public_url = \"https://chat.example.com\"
# Replies come from this number (E.164), or from a Messaging Service (MG…).
# from = \"+15005550006\"
# messaging_service_sid = \"MG…\"
# The number a web chat visitor texts to continue there (the `from` number unless set).
# continue_number = \"+15005550006\"

[xmpp]
# The XMPP bridge: the support address is an external component (XEP-0114) of your XMPP
# server; customers on any XMPP account write to it. On when `component` is set. Declare the
# component in the server (Prosody: `Component \"support.shop.example\"` with a
# `component_secret`) and keep its port on a private link (the stream is not encrypted).
# THREADLINE_XMPP_SECRET overrides the secret.
# component = \"support.shop.example\"
# server = \"127.0.0.1:5347\"
# secret = \"\"
# The server's own domain (pinged to confirm deliveries); by default the component's
# domain without its first label.
# server_domain = \"shop.example\"
# The upload service (XEP-0363) the agents' files go to.
# upload_service = \"upload.shop.example\"
# Hosts whose file links customers send are fetched into the conversation (your upload
# service's HTTP host); links elsewhere stay as text.
# media_hosts = [\"upload.shop.example\"]
# Each customer may send this many messages at once, then this many a second; more are
# refused with \"wait\" (a client sends what it queued during an outage all at once).
# customer_burst = 30
# customer_per_second = 4

[matrix]
# The Matrix bridge: an application service of your homeserver; its bot user is the business
# on Matrix and customers open a direct chat with it. On when `homeserver` is set. Run
# `threadline bridge matrix registration --url <this node's URL as the homeserver reaches it>`
# and give the file it writes to the homeserver (Synapse: app_service_config_files). The
# tokens are made then and kept in keys/matrix-tokens; THREADLINE_MATRIX_AS_TOKEN and
# THREADLINE_MATRIX_HS_TOKEN override them.
# homeserver = \"https://matrix.shop.example\"
# server_name = \"shop.example\"
# bot = \"support\"

[retention]
# How long the org keeps what customers wrote (days; unset: for ever). Applied at start and
# every hour, as erasures the node signs, so every node of the org (and a partner, for a
# thread shared with it) erases the same. `threadline retention` shows what they would erase
# now; set them on one node of the org.
# Erase a contact once none of its conversations has had activity for this long.
# erase_inactive_contacts_after_days = 730
# Erase messages with files (the message goes with its files) this long after they came.
# erase_attachments_after_days = 180
# Erase a resolved conversation's contents this long after its last activity.
# erase_resolved_threads_after_days = 365

[business_hours]
# When the team answers, in the org's time zone: each day's hours as \"HH:MM-HH:MM\" (unset
# or empty: closed). A customer who writes outside them gets away_message once, as the node's
# own reply. Unset timezone: no business hours (no automatic reply).
# timezone = \"Europe/Berlin\"
# monday = \"09:00-17:00\"
# tuesday = \"09:00-17:00\"
# wednesday = \"09:00-17:00\"
# thursday = \"09:00-17:00\"
# friday = \"09:00-17:00\"
# saturday = \"\"
# sunday = \"\"
# away_message = \"Thanks for your message! We are away now and answer from 9:00.\"

[sla]
# Service level targets, in minutes; each unset one is no target. The inbox shows each
# conversation's timers and marks the ones past due; reports count the breaches.
# How soon a customer's message is to be answered, the first and every later one alike:
# reply_within_minutes = 60
# Or apart (each wins over reply_within_minutes):
# first_response_minutes = 30
# next_response_minutes = 60
# How soon a conversation is to be resolved, from its start:
# resolution_minutes = 1440

[assignment]
# Assign each new conversation that comes in on this node to one of the agents with the inbox
# open, in turn (round robin), skipping those with max_open_per_agent open conversations
# already (0: no cap). With nobody free it stays unassigned.
auto = false
max_open_per_agent = 0

[csat]
# After an agent resolves a conversation, ask the customer on their channel to rate it from 1
# to 5; a reply that is just the number is recorded on the conversation (label csat-<n>) and
# counted in reports.
ask = false
question = \"How did we do? Reply with a number from 1 (poor) to 5 (great).\"
thanks = \"Thank you for your rating!\"

# Automation rules, as many as wanted, each run in turn on every customer's message that comes
# in on this node. `on`: \"new_conversation\" (a conversation's first message) or \"message\"
# (every one). Conditions, all optional: `channel`, `text_contains` (any of the texts, case
# aside), `label` (the conversation has it). Actions, at least one: `add_labels`, `assign` (an
# agent id, `threadline agent list`), `team` (a team's name, made in the inbox), `status`
# (open, pending, resolved), `reply` (a text).
# [[automation]]
# name = \"refunds to billing\"
# on = \"message\"
# text_contains = [\"refund\", \"chargeback\"]
# add_labels = [\"billing\"]
# status = \"pending\"
";

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the HTTP API listens.
    pub api_listen: SocketAddr,
    /// Origins (`scheme://host[:port]`) allowed to open the web chat, besides the node's own.
    pub webchat_origins: Vec<String>,
    /// Whether the node runs its own web chat bridge.
    pub webchat_builtin: bool,
    /// The secret websites sign their logged-in users' identities with, if any.
    pub webchat_identity_secret: Option<String>,
    /// New chat connections allowed per client address per minute.
    pub webchat_connections_per_minute: u32,
    /// `[webchat]` title, greeting, color and position: how the widget looks.
    pub webchat_look: crate::api::webchat::WidgetLook,
    /// Where replication listens.
    pub replication_listen: Vec<libp2p::Multiaddr>,
    /// Peers to stay connected to.
    pub replication_peers: Vec<libp2p::Multiaddr>,
    /// Whether to find peers on the LAN with mDNS.
    pub replication_mdns: bool,
    /// Partner orgs whose nodes may connect.
    pub replication_partners: Vec<threadline_protocol::OrgId>,
    /// The support address of the built-in email bridge (off when `None`).
    pub email_address: Option<String>,
    /// Where the email bridge takes mail (SMTP).
    pub email_smtp_listen: SocketAddr,
    /// The SMTP relay replies go through (a lettre URL), if any.
    pub email_relay: Option<String>,
    /// The name replies are signed with.
    pub email_name: Option<String>,
    /// The MX whose `Authentication-Results` must say `dmarc=pass` (any From: is taken on
    /// trust when `None`).
    pub email_authserv_id: Option<String>,
    /// A certificate file to trust for the relay.
    pub email_relay_ca: Option<std::path::PathBuf>,
    /// An existing mailbox to poll over IMAP too.
    pub email_imap: Option<threadline_bridges::email::imap::MailboxUrl>,
    /// How often it is polled.
    pub email_imap_poll: std::time::Duration,
    /// The WhatsApp Cloud API number, if configured.
    pub whatsapp: Option<MetaConfig>,
    /// The Messenger page, if configured.
    pub messenger: Option<MetaConfig>,
    /// The Instagram account, if configured.
    pub instagram: Option<MetaConfig>,
    /// The Telegram bot, if configured.
    pub telegram: Option<TelegramConfig>,
    /// The Slack app, if configured.
    pub slack: Option<SlackConfig>,
    /// The Twilio account for SMS, if configured.
    pub sms: Option<SmsConfig>,
    /// The XMPP component, if configured.
    pub xmpp: Option<XmppConfig>,
    /// The Matrix application service, if configured.
    pub matrix: Option<MatrixConfig>,
    /// Events of threads the writer keeps in memory (headers only, ~0.5 KiB each).
    pub thread_cache_events: usize,
    /// How long the org keeps what (`[retention]`).
    pub retention: crate::retention::Policy,
    /// Who new conversations go to (`[assignment]`).
    pub assignment: crate::assignment::Policy,
    /// When the team answers and what a customer is told outside (`[business_hours]`).
    pub business_hours: Option<crate::business_hours::BusinessHours>,
    /// Service level targets (`[sla]`).
    pub sla: crate::sla::SlaPolicy,
    /// Automation rules (`[[automation]]`), in order.
    pub automation: Vec<crate::automation::Rule>,
    /// The satisfaction survey (`[csat]`), if asked.
    pub csat: Option<crate::csat::Survey>,
}

/// One of Meta's channels, configured.
#[derive(Clone, PartialEq, Eq)]
pub struct MetaConfig {
    /// The phone-number id, page id or Instagram account id.
    pub account_id: String,
    /// The number (WhatsApp) or page/account username, for "continue on …" links.
    pub link_name: Option<String>,
    /// Whether the page has the `HUMAN_AGENT` tag.
    pub human_agent: bool,
    /// The Graph API access token.
    pub access_token: String,
    /// The app secret webhooks are signed with.
    pub app_secret: String,
    /// The token of the webhook subscription handshake.
    pub verify_token: String,
    /// The Graph API's base URL.
    pub graph_url: String,
    /// The Graph API version.
    pub graph_version: String,
}

impl std::fmt::Debug for MetaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaConfig")
            .field("account_id", &self.account_id)
            .field("link_name", &self.link_name)
            .field("human_agent", &self.human_agent)
            .field("graph_url", &self.graph_url)
            .field("graph_version", &self.graph_version)
            .finish_non_exhaustive()
    }
}

/// The Telegram bridge, configured (`[telegram]`).
#[derive(Clone, PartialEq, Eq)]
pub struct TelegramConfig {
    /// The bot's token.
    pub bot_token: String,
    /// The webhook's secret token.
    pub secret_token: String,
    /// The bot's username, for `t.me` links.
    pub bot_username: Option<String>,
    /// The Bot API's base URL.
    pub api_url: String,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("bot_username", &self.bot_username)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl TelegramConfig {
    /// The bridge's settings (the checks the bridge makes, so a bad value stops the node at
    /// start).
    pub fn settings(&self) -> Result<threadline_bridges::telegram::TelegramSettings, String> {
        use threadline_bridges::telegram::{BotApi, BotToken, SecretToken, TelegramSettings};
        let token = BotToken::new(self.bot_token.clone())
            .map_err(|err| format!("telegram.bot_token: {err}"))?;
        Ok(TelegramSettings {
            secret: SecretToken::new(self.secret_token.clone())
                .map_err(|err| format!("telegram.secret_token: {err}"))?,
            bot_username: self.bot_username.clone(),
            api: BotApi::new(&self.api_url, token)
                .map_err(|err| format!("telegram.api_url: {err}"))?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramSection {
    #[serde(default)]
    bot_token: Option<String>,
    #[serde(default)]
    secret_token: Option<String>,
    #[serde(default)]
    bot_username: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
}

impl TelegramSection {
    fn load(self) -> Result<Option<TelegramConfig>, String> {
        let from_env = |name: &str| {
            std::env::var(format!("THREADLINE_TELEGRAM_{name}"))
                .ok()
                .filter(|value| !value.is_empty())
        };
        let Some(bot_token) = from_env("BOT_TOKEN").or(self.bot_token) else {
            return Ok(None);
        };
        let secret_token = from_env("SECRET_TOKEN")
            .or(self.secret_token)
            .ok_or("telegram.secret_token is needed when telegram is on")?;
        let config = TelegramConfig {
            bot_token,
            secret_token,
            bot_username: self
                .bot_username
                .map(|name| name.trim().trim_start_matches('@').to_owned())
                .filter(|name| !name.is_empty()),
            api_url: self
                .api_url
                .unwrap_or_else(|| threadline_bridges::telegram::DEFAULT_API_URL.to_owned()),
        };
        config.settings()?;
        Ok(Some(config))
    }
}

/// The Slack bridge, configured (`[slack]`).
#[derive(Clone, PartialEq, Eq)]
pub struct SlackConfig {
    /// The bot token.
    pub bot_token: String,
    /// The signing secret.
    pub signing_secret: String,
    /// The app's bot user id.
    pub bot_user: Option<String>,
    /// The business's own workspace id.
    pub team_id: Option<String>,
    /// The link that opens the app in Slack.
    pub app_link: Option<String>,
    /// The Web API's base URL.
    pub api_url: String,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("bot_user", &self.bot_user)
            .field("app_link", &self.app_link)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl SlackConfig {
    /// The bridge's settings (the checks the bridge makes, so a bad value stops the node at
    /// start).
    pub fn settings(&self) -> Result<threadline_bridges::slack::SlackSettings, String> {
        use threadline_bridges::slack::{BotToken, SigningSecret, SlackSettings, WebApi};
        let token = BotToken::new(self.bot_token.clone())
            .map_err(|err| format!("slack.bot_token: {err}"))?;
        Ok(SlackSettings {
            signing_secret: SigningSecret::new(self.signing_secret.clone())
                .map_err(|err| format!("slack.signing_secret: {err}"))?,
            bot_user: self.bot_user.clone(),
            own_team: self.team_id.clone(),
            app_link: self.app_link.clone(),
            api: WebApi::new(&self.api_url, token)
                .map_err(|err| format!("slack.api_url: {err}"))?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackSection {
    #[serde(default)]
    bot_token: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    bot_user: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    app_link: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
}

impl SlackSection {
    fn load(self) -> Result<Option<SlackConfig>, String> {
        let from_env = |name: &str| {
            std::env::var(format!("THREADLINE_SLACK_{name}"))
                .ok()
                .filter(|value| !value.is_empty())
        };
        let Some(bot_token) = from_env("BOT_TOKEN").or(self.bot_token) else {
            return Ok(None);
        };
        let signing_secret = from_env("SIGNING_SECRET")
            .or(self.signing_secret)
            .ok_or("slack.signing_secret is needed when slack is on")?;
        let config = SlackConfig {
            bot_token,
            signing_secret,
            bot_user: self.bot_user.filter(|user| !user.trim().is_empty()),
            team_id: self.team_id.filter(|team| !team.trim().is_empty()),
            app_link: self.app_link.filter(|link| !link.trim().is_empty()),
            api_url: self
                .api_url
                .unwrap_or_else(|| threadline_bridges::slack::DEFAULT_API_URL.to_owned()),
        };
        config.settings()?;
        Ok(Some(config))
    }
}

/// The SMS bridge, configured (`[sms]`).
#[derive(Clone, PartialEq, Eq)]
pub struct SmsConfig {
    /// The Account SID.
    pub account_sid: String,
    /// The auth token.
    pub auth_token: String,
    /// Where Twilio reaches the node's webhooks.
    pub public_url: String,
    /// The number replies come from (E.164).
    pub from: Option<String>,
    /// The Messaging Service replies come from.
    pub messaging_service_sid: Option<String>,
    /// The number a web chat visitor texts to continue there.
    pub continue_number: Option<String>,
    /// The REST API's base URL.
    pub api_url: String,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("account_sid", &self.account_sid)
            .field("public_url", &self.public_url)
            .field("from", &self.from)
            .field("messaging_service_sid", &self.messaging_service_sid)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl SmsConfig {
    /// The bridge's settings (the checks the bridge makes, so a bad value stops the node at
    /// start).
    pub fn settings(&self) -> Result<threadline_bridges::sms::SmsSettings, String> {
        use threadline_bridges::sms::twilio::{
            is_sid, AccountSid, AuthToken, MessagesApi, SenderId,
        };
        use threadline_bridges::sms::{text::e164, SmsSettings};
        let account = AccountSid::new(self.account_sid.clone())
            .map_err(|err| format!("sms.account_sid: {err}"))?;
        let token = AuthToken::new(self.auth_token.clone())
            .map_err(|err| format!("sms.auth_token: {err}"))?;
        let number = |field: &str, value: &str| {
            e164(value).ok_or_else(|| {
                format!("sms.{field}: `{value}` is not a phone number in E.164 (+ and the country code)")
            })
        };
        let sender = match (&self.from, &self.messaging_service_sid) {
            (Some(from), None) => SenderId::Number(number("from", from)?),
            (None, Some(service)) if is_sid(service, "MG") => SenderId::Service(service.clone()),
            (None, Some(service)) => {
                return Err(format!(
                    "sms.messaging_service_sid: `{service}` is not MG and 32 hex digits"
                ))
            }
            _ => return Err("sms: set one of `from` and `messaging_service_sid`".to_owned()),
        };
        let public_url = self.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("https://") || public_url.starts_with("http://"))
            || public_url.contains(['?', '#'])
        {
            return Err(format!(
                "sms.public_url: `{public_url}` is not the http(s) URL Twilio reaches this node at"
            ));
        }
        let continue_number = match (&self.continue_number, &sender) {
            (Some(continue_number), _) => Some(number("continue_number", continue_number)?),
            (None, SenderId::Number(from)) => Some(from.clone()),
            (None, SenderId::Service(_)) => None,
        };
        Ok(SmsSettings {
            api: MessagesApi::new(&self.api_url, account, token)
                .map_err(|err| format!("sms.api_url: {err}"))?,
            sender,
            public_url,
            continue_number,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsSection {
    #[serde(default)]
    account_sid: Option<String>,
    #[serde(default)]
    auth_token: Option<String>,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    messaging_service_sid: Option<String>,
    #[serde(default)]
    continue_number: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
}

impl SmsSection {
    fn load(self) -> Result<Option<SmsConfig>, String> {
        let present = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let Some(account_sid) = present(self.account_sid) else {
            return Ok(None);
        };
        let auth_token = std::env::var("THREADLINE_SMS_AUTH_TOKEN")
            .ok()
            .filter(|value| !value.is_empty())
            .or(self.auth_token)
            .ok_or("sms.auth_token is needed when sms is on")?;
        let config = SmsConfig {
            account_sid,
            auth_token,
            public_url: present(self.public_url).ok_or(
                "sms.public_url is needed when sms is on: Twilio signs its requests over it",
            )?,
            from: present(self.from),
            messaging_service_sid: present(self.messaging_service_sid),
            continue_number: present(self.continue_number),
            api_url: present(self.api_url)
                .unwrap_or_else(|| threadline_bridges::sms::twilio::DEFAULT_API_URL.to_owned()),
        };
        config.settings()?;
        Ok(Some(config))
    }
}

/// The XMPP bridge, configured (`[xmpp]`).
#[derive(Clone, PartialEq, Eq)]
pub struct XmppConfig {
    /// The component's address, which customers write to.
    pub component: String,
    /// The server's component port, `host:port`.
    pub server: String,
    /// The component's secret.
    pub secret: String,
    /// The server's own domain.
    pub server_domain: String,
    /// The upload service for agents' files, if any.
    pub upload_service: Option<String>,
    /// Hosts whose file links are fetched.
    pub media_hosts: Vec<String>,
    /// Each customer's allowance of messages.
    pub rate: threadline_bridges::rate::RateLimit,
}

impl std::fmt::Debug for XmppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppConfig")
            .field("component", &self.component)
            .field("server", &self.server)
            .field("server_domain", &self.server_domain)
            .field("upload_service", &self.upload_service)
            .field("media_hosts", &self.media_hosts)
            .finish_non_exhaustive()
    }
}

impl XmppConfig {
    /// The bridge's settings (the checks the bridge makes, so a bad value stops the node at
    /// start).
    pub fn settings(&self) -> Result<threadline_bridges::xmpp::XmppSettings, String> {
        use threadline_bridges::xmpp::xmpp_parsers::jid::BareJid;
        let jid = |key: &str, text: &str| {
            BareJid::new(text.trim())
                .map_err(|err| format!("xmpp.{key}: `{text}` is not a JID: {err}"))
        };
        let component = jid("component", &self.component)?;
        if component.node().is_some() {
            return Err(format!(
                "xmpp.component: `{}` is a user's address; a component is a domain like support.shop.example",
                self.component
            ));
        }
        Ok(threadline_bridges::xmpp::XmppSettings {
            component,
            server: self.server.clone(),
            secret: threadline_bridges::xmpp::ComponentSecret::new(self.secret.clone())
                .map_err(|err| format!("xmpp.secret: {err}"))?,
            server_domain: jid("server_domain", &self.server_domain)?,
            upload_service: self
                .upload_service
                .as_deref()
                .map(|service| jid("upload_service", service))
                .transpose()?,
            media_hosts: self.media_hosts.clone(),
            rate: self.rate,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct XmppSection {
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    server_domain: Option<String>,
    #[serde(default)]
    upload_service: Option<String>,
    #[serde(default)]
    media_hosts: Vec<String>,
    #[serde(default)]
    customer_burst: Option<u32>,
    #[serde(default)]
    customer_per_second: Option<f64>,
}

impl XmppSection {
    /// The bridge's configuration, if its component is set: the secret from the environment
    /// first.
    fn load(self) -> Result<Option<XmppConfig>, String> {
        let Some(component) = self.component.map(|c| c.trim().to_lowercase()) else {
            return Ok(None);
        };
        let secret = std::env::var("THREADLINE_XMPP_SECRET")
            .ok()
            .filter(|secret| !secret.is_empty())
            .or(self.secret)
            .filter(|secret| !secret.trim().is_empty())
            .ok_or("xmpp.secret is needed when xmpp is on (or THREADLINE_XMPP_SECRET)")?;
        let server_domain = match self.server_domain {
            Some(domain) => domain.trim().to_lowercase(),
            None => component
                .split_once('.')
                .map(|(_, parent)| parent.to_owned())
                .filter(|parent| !parent.is_empty())
                .ok_or_else(|| {
                    format!("xmpp.server_domain: set it (`{component}` has no parent domain)")
                })?,
        };
        let default = threadline_bridges::xmpp::CUSTOMER_RATE;
        let per_second = self
            .customer_per_second
            .unwrap_or(1.0 / default.refill.as_secs_f64());
        if !(per_second.is_finite() && per_second > 0.0) || self.customer_burst == Some(0) {
            return Err(
                "xmpp.customer_burst and xmpp.customer_per_second must be above 0".to_owned(),
            );
        }
        let rate = threadline_bridges::rate::RateLimit {
            burst: self.customer_burst.unwrap_or(default.burst),
            refill: std::time::Duration::from_secs_f64(1.0 / per_second),
        };
        let config = XmppConfig {
            rate,
            component,
            server: self.server.unwrap_or_else(|| "127.0.0.1:5347".to_owned()),
            secret,
            server_domain,
            upload_service: self.upload_service.filter(|s| !s.trim().is_empty()),
            media_hosts: self.media_hosts,
        };
        config.settings()?;
        Ok(Some(config))
    }
}

/// The `[xmpp]` section of a standalone bridge's TOML file.
pub fn load_xmpp_section(path: &Path) -> Result<XmppConfig, ConfigError> {
    #[derive(Deserialize)]
    struct BridgeFile {
        #[serde(default)]
        xmpp: XmppSection,
    }
    let file: BridgeFile = read_toml(path)?;
    let bad = |detail: String| ConfigError::BadValue {
        path: path.to_owned(),
        detail,
    };
    file.xmpp
        .load()
        .map_err(bad)?
        .ok_or_else(|| bad("xmpp.component is not set".to_owned()))
}

/// The `[matrix]` section of a standalone bridge's TOML file (its tokens set there or in the
/// environment: a standalone bridge has no data folder to keep them in).
pub fn load_matrix_section(path: &Path) -> Result<MatrixConfig, ConfigError> {
    #[derive(Deserialize)]
    struct BridgeFile {
        #[serde(default)]
        matrix: MatrixSection,
    }
    let file: BridgeFile = read_toml(path)?;
    let bad = |detail: String| ConfigError::BadValue {
        path: path.to_owned(),
        detail,
    };
    let config = file
        .matrix
        .load()
        .map_err(bad)?
        .ok_or_else(|| bad("matrix.homeserver is not set".to_owned()))?;
    if config.tokens.is_none() {
        return Err(bad(
            "matrix: a standalone bridge needs as_token and hs_token (random, at least 16 characters each)".to_owned(),
        ));
    }
    Ok(config)
}

/// A TOML file, read and parsed.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// The Matrix bridge, configured (`[matrix]`).
#[derive(Clone, PartialEq, Eq)]
pub struct MatrixConfig {
    /// The homeserver's client-server API base URL.
    pub homeserver: String,
    /// The homeserver's name.
    pub server_name: String,
    /// The bot's localpart.
    pub bot: String,
    /// The application service's tokens, when set here or in the environment (else the node
    /// reads them from `keys/matrix-tokens`).
    pub tokens: Option<MatrixTokens>,
}

/// The two tokens of an application service registration.
#[derive(Clone, PartialEq, Eq)]
pub struct MatrixTokens {
    /// What the bridge calls the homeserver with.
    pub as_token: String,
    /// What the homeserver calls the bridge with.
    pub hs_token: String,
}

impl std::fmt::Debug for MatrixTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MatrixTokens(…)")
    }
}

impl std::fmt::Debug for MatrixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixConfig")
            .field("homeserver", &self.homeserver)
            .field("server_name", &self.server_name)
            .field("bot", &self.bot)
            .finish_non_exhaustive()
    }
}

impl MatrixConfig {
    /// The bridge's settings with `tokens` (the checks the bridge makes, so a bad value stops
    /// the node at start).
    pub fn settings(
        &self,
        tokens: &MatrixTokens,
    ) -> Result<threadline_bridges::matrix::MatrixSettings, String> {
        use threadline_bridges::matrix::{ruma, AppserviceToken};
        let server_name = ruma::OwnedServerName::try_from(self.server_name.as_str())
            .map_err(|err| format!("matrix.server_name: `{}`: {err}", self.server_name))?;
        let bot = ruma::OwnedUserId::try_from(format!("@{}:{}", self.bot, self.server_name))
            .map_err(|err| format!("matrix.bot: `{}`: {err}", self.bot))?;
        Ok(threadline_bridges::matrix::MatrixSettings {
            homeserver: self.homeserver.clone(),
            server_name,
            bot,
            as_token: AppserviceToken::new(tokens.as_token.clone())
                .map_err(|err| format!("matrix as_token: {err}"))?,
            hs_token: AppserviceToken::new(tokens.hs_token.clone())
                .map_err(|err| format!("matrix hs_token: {err}"))?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixSection {
    #[serde(default)]
    homeserver: Option<String>,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    bot: Option<String>,
    #[serde(default)]
    as_token: Option<String>,
    #[serde(default)]
    hs_token: Option<String>,
}

impl MatrixSection {
    fn load(self) -> Result<Option<MatrixConfig>, String> {
        let Some(homeserver) = self.homeserver.map(|url| url.trim().to_owned()) else {
            return Ok(None);
        };
        let server_name = self
            .server_name
            .map(|name| name.trim().to_owned())
            .ok_or("matrix.server_name is needed when matrix is on")?;
        let from_env = |name: &str| {
            std::env::var(format!("THREADLINE_MATRIX_{name}"))
                .ok()
                .filter(|value| !value.is_empty())
        };
        let tokens = match (
            from_env("AS_TOKEN").or(self.as_token),
            from_env("HS_TOKEN").or(self.hs_token),
        ) {
            (Some(as_token), Some(hs_token)) => Some(MatrixTokens { as_token, hs_token }),
            (None, None) => None,
            _ => return Err("matrix: set both as_token and hs_token, or neither".to_owned()),
        };
        let config = MatrixConfig {
            homeserver,
            server_name,
            bot: self.bot.unwrap_or_else(|| "support".to_owned()),
            tokens,
        };
        let probe = MatrixTokens {
            as_token: "0123456789abcdef0123".to_owned(),
            hs_token: "0123456789abcdef0123".to_owned(),
        };
        let settings = config.settings(config.tokens.as_ref().unwrap_or(&probe))?;
        threadline_bridges::matrix::Homeserver::new(&config.homeserver, settings.as_token)
            .map_err(|err| format!("matrix.homeserver: {err}"))?;
        Ok(Some(config))
    }
}

/// Where the Graph API is, unless configured.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com";
/// The Graph API version the bridges were written against.
pub const DEFAULT_GRAPH_VERSION: &str = "v21.0";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaSection {
    #[serde(default, alias = "phone_number_id", alias = "page_id")]
    account_id: Option<String>,
    #[serde(default, alias = "number")]
    link_name: Option<String>,
    #[serde(default)]
    human_agent: bool,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    app_secret: Option<String>,
    #[serde(default)]
    verify_token: Option<String>,
    #[serde(default)]
    graph_url: Option<String>,
    #[serde(default)]
    graph_version: Option<String>,
}

impl MetaSection {
    /// The channel's configuration, if its id is set: tokens from the environment first.
    fn load(self, channel: &str) -> Result<Option<MetaConfig>, String> {
        let Some(account_id) = self.account_id.map(|id| id.trim().to_owned()) else {
            return Ok(None);
        };
        if account_id.is_empty() || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{channel}: `{account_id}` is not a Meta id (digits)"
            ));
        }
        let upper = channel.to_uppercase();
        let from_env = |name: &str| {
            std::env::var(format!("THREADLINE_{upper}_{name}"))
                .ok()
                .filter(|value| !value.is_empty())
        };
        let required = |value: Option<String>, key: &str| {
            value
                .filter(|value| !value.trim().is_empty())
                .ok_or_else(|| format!("{channel}.{key} is needed when {channel} is on"))
        };
        let access_token = required(
            from_env("ACCESS_TOKEN").or(self.access_token),
            "access_token",
        )?;
        let app_secret = required(from_env("APP_SECRET").or(self.app_secret), "app_secret")?;
        let verify_token = required(self.verify_token, "verify_token")?;
        if verify_token.len() < 16 {
            return Err(format!(
                "{channel}.verify_token has {} bytes; use at least 16 random ones",
                verify_token.len()
            ));
        }
        let graph_url = self
            .graph_url
            .unwrap_or_else(|| DEFAULT_GRAPH_URL.to_owned());
        let graph_version = self
            .graph_version
            .unwrap_or_else(|| DEFAULT_GRAPH_VERSION.to_owned());
        // The same checks the bridge makes, so a bad value stops the node at start.
        let token = threadline_bridges::graph::AccessToken::new(access_token.clone())?;
        threadline_bridges::graph::GraphApi::new(&graph_url, &graph_version, token)
            .map_err(|err| format!("{channel}: {err}"))?;
        Ok(Some(MetaConfig {
            account_id,
            link_name: self.link_name.filter(|name| !name.trim().is_empty()),
            human_agent: self.human_agent,
            access_token,
            app_secret,
            verify_token,
            graph_url,
            graph_version,
        }))
    }
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A value is of the right type but not acceptable.
    #[error("{path} is invalid: {detail}")]
    BadValue {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file is not valid.
    #[error("{path} is invalid: {source}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        #[source]
        source: toml::de::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    api: ApiSection,
    #[serde(default)]
    webchat: WebchatSection,
    #[serde(default)]
    replication: ReplicationSection,
    #[serde(default)]
    email: EmailSection,
    #[serde(default)]
    whatsapp: MetaSection,
    #[serde(default)]
    messenger: MetaSection,
    #[serde(default)]
    instagram: MetaSection,
    #[serde(default)]
    telegram: TelegramSection,
    #[serde(default)]
    slack: SlackSection,
    #[serde(default)]
    sms: SmsSection,
    #[serde(default)]
    xmpp: XmppSection,
    #[serde(default)]
    matrix: MatrixSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    assignment: AssignmentSection,
    #[serde(default)]
    business_hours: BusinessHoursSection,
    #[serde(default)]
    sla: SlaSection,
    #[serde(default)]
    automation: Vec<crate::automation::RuleSection>,
    #[serde(default)]
    csat: CsatSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsatSection {
    #[serde(default)]
    ask: bool,
    question: Option<String>,
    thanks: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlaSection {
    reply_within_minutes: Option<u32>,
    first_response_minutes: Option<u32>,
    next_response_minutes: Option<u32>,
    resolution_minutes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusinessHoursSection {
    timezone: Option<String>,
    monday: Option<String>,
    tuesday: Option<String>,
    wednesday: Option<String>,
    thursday: Option<String>,
    friday: Option<String>,
    saturday: Option<String>,
    sunday: Option<String>,
    away_message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentSection {
    #[serde(default)]
    auto: bool,
    #[serde(default)]
    max_open_per_agent: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    erase_inactive_contacts_after_days: Option<u32>,
    erase_attachments_after_days: Option<u32>,
    erase_resolved_threads_after_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    #[serde(default = "default_thread_cache_events")]
    thread_cache_events: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            thread_cache_events: DEFAULT_THREAD_CACHE_EVENTS,
        }
    }
}

/// The writer's thread cache, in events, unless configured: about 1 GiB.
pub const DEFAULT_THREAD_CACHE_EVENTS: usize = 2_000_000;

fn default_thread_cache_events() -> usize {
    DEFAULT_THREAD_CACHE_EVENTS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailSection {
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "default_smtp_listen")]
    smtp_listen: SocketAddr,
    #[serde(default)]
    relay: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    authserv_id: Option<String>,
    #[serde(default)]
    relay_ca: Option<std::path::PathBuf>,
    #[serde(default)]
    imap: Option<String>,
    #[serde(default = "default_imap_poll_seconds")]
    imap_poll_seconds: u64,
}

fn default_imap_poll_seconds() -> u64 {
    30
}

impl Default for EmailSection {
    fn default() -> Self {
        EmailSection {
            address: None,
            smtp_listen: default_smtp_listen(),
            relay: None,
            name: None,
            authserv_id: None,
            relay_ca: None,
            imap: None,
            imap_poll_seconds: default_imap_poll_seconds(),
        }
    }
}

fn default_smtp_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2525))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicationSection {
    #[serde(default = "default_p2p_listen")]
    listen: Vec<String>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    mdns: bool,
    #[serde(default)]
    partners: Vec<String>,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            listen: default_p2p_listen(),
            peers: Vec::new(),
            mdns: false,
            partners: Vec::new(),
        }
    }
}

/// Where the HTTP API listens unless configured (the default config file says so).
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7420";

/// Where replication listens unless configured.
pub const DEFAULT_P2P_LISTEN: &str = "/ip4/127.0.0.1/tcp/7430";

fn default_p2p_listen() -> Vec<String> {
    vec![DEFAULT_P2P_LISTEN.to_owned()]
}

/// Parses a peer's address: a multiaddr that ends with `/p2p/<PeerId>`.
pub fn peer_address(text: &str) -> Result<libp2p::Multiaddr, String> {
    let address: libp2p::Multiaddr = text
        .trim()
        .parse()
        .map_err(|err| format!("`{text}` is not a multiaddr: {err}"))?;
    if crate::identity::peer_of(&address).is_none() {
        return Err(format!(
            "`{text}` does not end with /p2p/<PeerId> (`threadline identity` prints a node's PeerId)"
        ));
    }
    Ok(address)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebchatSection {
    #[serde(default = "yes")]
    builtin: bool,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    identity_secret: Option<String>,
    #[serde(default = "connections_per_minute")]
    connections_per_minute: u32,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    greeting: Option<String>,
    #[serde(default)]
    color: Option<String>,
    #[serde(default)]
    position: Option<String>,
}

fn connections_per_minute() -> u32 {
    DEFAULT_CONNECTIONS_PER_MINUTE
}

/// New chat connections per client address per minute, unless configured.
pub const DEFAULT_CONNECTIONS_PER_MINUTE: u32 = 120;

impl Default for WebchatSection {
    fn default() -> Self {
        WebchatSection {
            builtin: true,
            allowed_origins: Vec::new(),
            identity_secret: None,
            connections_per_minute: DEFAULT_CONNECTIONS_PER_MINUTE,
            title: None,
            greeting: None,
            color: None,
            position: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: SocketAddr,
}

/// The shortest identity secret accepted: anyone who can guess it can speak for any user.
pub const MIN_IDENTITY_SECRET_BYTES: usize = 16;

/// Checks a web chat identity secret; `None` when none is set (an empty value is none).
pub fn identity_secret(secret: Option<String>) -> Result<Option<String>, String> {
    match secret.filter(|secret| !secret.is_empty()) {
        Some(secret) if secret.len() < MIN_IDENTITY_SECRET_BYTES => Err(format!(
            "the web chat identity secret has {} bytes; use at least {MIN_IDENTITY_SECRET_BYTES} random ones",
            secret.len()
        )),
        secret => Ok(secret),
    }
}

/// Checks an origin for the web chat allow-list (`https://shop.example`, no path).
pub fn check_origin(origin: &str) -> Result<(), String> {
    let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
        && !origin.ends_with('/')
        && origin
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{origin}` is not an origin like `https://shop.example`"
        ))
    }
}

/// The `[whatsapp]`, `[messenger]` or `[instagram]` section of a standalone bridge's TOML
/// file (the same keys as in a node's config.toml).
pub fn load_meta_section(
    path: &Path,
    channel: threadline_protocol::ChannelKind,
) -> Result<MetaConfig, ConfigError> {
    let bad = |detail: String| ConfigError::BadValue {
        path: path.to_owned(),
        detail,
    };
    standalone_section::<MetaSection>(path, channel.as_str())?
        .load(channel.as_str())
        .map_err(bad)?
        .ok_or_else(|| bad(format!("[{channel}] has no account id")))
}

/// A channel's section of a standalone bridge's TOML file, read as `S`.
fn standalone_section<S: serde::de::DeserializeOwned>(
    path: &Path,
    name: &str,
) -> Result<S, ConfigError> {
    let mut table: toml::Table = read_toml(path)?;
    let section = table.remove(name).ok_or_else(|| ConfigError::BadValue {
        path: path.to_owned(),
        detail: format!("no [{name}] section"),
    })?;
    section.try_into().map_err(|source| ConfigError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// The `[telegram]` section of a standalone bridge's TOML file.
pub fn load_telegram_section(path: &Path) -> Result<TelegramConfig, ConfigError> {
    let bad = |detail: String| ConfigError::BadValue {
        path: path.to_owned(),
        detail,
    };
    standalone_section::<TelegramSection>(path, "telegram")?
        .load()
        .map_err(bad)?
        .ok_or_else(|| bad("[telegram] has no bot_token".to_owned()))
}

/// The `[sms]` section of a standalone bridge's TOML file.
pub fn load_sms_section(path: &Path) -> Result<SmsConfig, ConfigError> {
    let bad = |detail: String| ConfigError::BadValue {
        path: path.to_owned(),
        detail,
    };
    standalone_section::<SmsSection>(path, "sms")?
        .load()
        .map_err(bad)?
        .ok_or_else(|| bad("[sms] has no account_sid".to_owned()))
}

/// The `[slack]` section of a standalone bridge's TOML file.
pub fn load_slack_section(path: &Path) -> Result<SlackConfig, ConfigError> {
    let bad = |detail: String| ConfigError::BadValue {
        path: path.to_owned(),
        detail,
    };
    standalone_section::<SlackSection>(path, "slack")?
        .load()
        .map_err(bad)?
        .ok_or_else(|| bad("[slack] has no bot_token".to_owned()))
}

impl Config {
    /// A node with nothing but its API on `api_listen`: replication on an ephemeral loopback
    /// port, no peers, no mDNS, the built-in web chat and every other bridge off. For embedding
    /// a node (benches, tools); a served node loads its file with [`Config::load`].
    pub fn loopback(api_listen: SocketAddr) -> Config {
        Config {
            api_listen,
            webchat_origins: Vec::new(),
            webchat_builtin: false,
            webchat_identity_secret: None,
            webchat_connections_per_minute: 120,
            webchat_look: crate::api::webchat::WidgetLook::default(),
            thread_cache_events: DEFAULT_THREAD_CACHE_EVENTS,
            retention: crate::retention::Policy::default(),
            assignment: crate::assignment::Policy::default(),
            business_hours: None,
            sla: crate::sla::SlaPolicy::default(),
            automation: Vec::new(),
            csat: None,
            replication_listen: vec![libp2p::Multiaddr::from(std::net::Ipv4Addr::LOCALHOST)
                .with(libp2p::multiaddr::Protocol::Tcp(0))],
            replication_peers: Vec::new(),
            replication_mdns: false,
            replication_partners: Vec::new(),
            email_address: None,
            email_smtp_listen: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            email_relay: None,
            email_name: None,
            email_authserv_id: None,
            email_relay_ca: None,
            email_imap: None,
            email_imap_poll: std::time::Duration::from_secs(30),
            whatsapp: None,
            messenger: None,
            instagram: None,
            telegram: None,
            slack: None,
            sms: None,
            xmpp: None,
            matrix: None,
        }
    }

    /// Loads `path`, then applies `listen` (from the environment or the command line) if given.
    pub fn load(path: &Path, listen: Option<SocketAddr>) -> Result<Config, ConfigError> {
        let mut file: File = read_toml(path)?;
        let bad = |detail: String| ConfigError::BadValue {
            path: path.to_owned(),
            detail,
        };
        for origin in &file.webchat.allowed_origins {
            check_origin(origin).map_err(|e| bad(format!("webchat.allowed_origins: {e}")))?;
        }
        let identity_secret = identity_secret(file.webchat.identity_secret)
            .map_err(|e| bad(format!("webchat.identity_secret: {e}")))?;
        let sla = &file.sla;
        let minutes = |key: &str, value: Option<u32>| match value {
            Some(0) => Err(bad(format!(
                "sla.{key} must be 1 or more (leave it out for no target)"
            ))),
            minutes => Ok(minutes.map(|m| u64::from(m) * 60_000)),
        };
        let reply_within = minutes("reply_within_minutes", sla.reply_within_minutes)?;
        let sla = crate::sla::SlaPolicy {
            first_response: minutes("first_response_minutes", sla.first_response_minutes)?
                .or(reply_within),
            next_response: minutes("next_response_minutes", sla.next_response_minutes)?
                .or(reply_within),
            resolution: minutes("resolution_minutes", sla.resolution_minutes)?,
        };
        let automation = std::mem::take(&mut file.automation)
            .into_iter()
            .enumerate()
            .map(|(n, section)| section.rule(n).map_err(&bad))
            .collect::<Result<Vec<_>, _>>()?;
        let text = |key: &str, value: Option<String>| match value {
            Some(text) if text.trim().is_empty() || text.len() > 4096 => Err(bad(format!(
                "csat.{key} must be 1 to 4,096 bytes of text (leave it out for the default)"
            ))),
            text => Ok(text),
        };
        let csat = match file.csat.ask {
            false => None,
            true => Some(crate::csat::Survey {
                question: text("question", file.csat.question.take())?
                    .unwrap_or_else(|| crate::csat::QUESTION.to_owned()),
                thanks: text("thanks", file.csat.thanks.take())?,
            }),
        };
        let hours = &file.business_hours;
        let business_hours = match (&hours.timezone, &hours.away_message) {
            (None, None) => None,
            (Some(timezone), Some(away)) => Some(
                crate::business_hours::BusinessHours::new(
                    timezone,
                    [
                        hours.monday.as_deref(),
                        hours.tuesday.as_deref(),
                        hours.wednesday.as_deref(),
                        hours.thursday.as_deref(),
                        hours.friday.as_deref(),
                        hours.saturday.as_deref(),
                        hours.sunday.as_deref(),
                    ],
                    away,
                )
                .map_err(|e| bad(format!("business_hours: {e}")))?,
            ),
            _ => {
                return Err(bad(
                    "business_hours: set both timezone and away_message (or neither)".to_owned(),
                ))
            }
        };
        let webchat_look = crate::api::webchat::WidgetLook::new(
            file.webchat.title,
            file.webchat.greeting,
            file.webchat.color,
            file.webchat.position,
        )
        .map_err(|e| bad(format!("webchat: {e}")))?;
        let replication_listen = file
            .replication
            .listen
            .iter()
            .map(|text| {
                text.parse::<libp2p::Multiaddr>()
                    .map_err(|err| bad(format!("replication.listen: `{text}`: {err}")))
            })
            .collect::<Result<_, _>>()?;
        let replication_peers = file
            .replication
            .peers
            .iter()
            .map(|text| peer_address(text).map_err(|e| bad(format!("replication.peers: {e}"))))
            .collect::<Result<_, _>>()?;
        let email_address = match file.email.address {
            Some(address) => {
                let address = address.trim().to_lowercase();
                let valid = format!("email:{address}")
                    .parse::<threadline_protocol::Handle>()
                    .is_ok()
                    && !address.contains('+');
                if !valid {
                    return Err(bad(format!(
                        "email.address: `{address}` is not a plain address like support@shop.example"
                    )));
                }
                Some(address)
            }
            None => None,
        };
        let replication_partners = file
            .replication
            .partners
            .iter()
            .map(|text| {
                text.trim()
                    .parse::<threadline_protocol::OrgId>()
                    .map_err(|_| bad(format!("replication.partners: `{text}` is not an org id")))
            })
            .collect::<Result<_, _>>()?;
        let email_imap = std::env::var("THREADLINE_IMAP")
            .ok()
            .filter(|url| !url.is_empty())
            .or(file.email.imap)
            .map(|url| {
                url.parse::<threadline_bridges::email::imap::MailboxUrl>()
                    .map_err(|err| bad(format!("email.imap: {err}")))
            })
            .transpose()?;
        if email_imap.is_some() && email_address.is_none() {
            return Err(bad(
                "email.imap needs email.address (the support address the mail is for)".to_owned(),
            ));
        }
        if file.email.imap_poll_seconds == 0 {
            return Err(bad("email.imap_poll_seconds must be at least 1".to_owned()));
        }
        let retention = &file.retention;
        for (name, days) in [
            (
                "erase_inactive_contacts_after_days",
                retention.erase_inactive_contacts_after_days,
            ),
            (
                "erase_attachments_after_days",
                retention.erase_attachments_after_days,
            ),
            (
                "erase_resolved_threads_after_days",
                retention.erase_resolved_threads_after_days,
            ),
        ] {
            if days == Some(0) {
                return Err(bad(format!(
                    "retention.{name} must be at least 1 (leave it unset to keep for ever)"
                )));
            }
        }
        if file.store.thread_cache_events == 0 {
            return Err(bad(
                "store.thread_cache_events must be at least 1".to_owned()
            ));
        }
        let whatsapp = file.whatsapp.load("whatsapp").map_err(bad)?;
        let messenger = file.messenger.load("messenger").map_err(bad)?;
        let instagram = file.instagram.load("instagram").map_err(bad)?;
        let telegram = file.telegram.load().map_err(bad)?;
        let slack = file.slack.load().map_err(bad)?;
        let sms = file.sms.load().map_err(bad)?;
        let xmpp = file.xmpp.load().map_err(bad)?;
        let matrix = file.matrix.load().map_err(bad)?;
        Ok(Config {
            telegram,
            slack,
            sms,
            xmpp,
            matrix,
            whatsapp,
            messenger,
            instagram,
            replication_partners,
            email_imap,
            email_imap_poll: std::time::Duration::from_secs(file.email.imap_poll_seconds),
            email_address,
            email_smtp_listen: file.email.smtp_listen,
            email_relay: std::env::var("THREADLINE_SMTP_RELAY")
                .ok()
                .filter(|url| !url.is_empty())
                .or(file.email.relay),
            email_name: file.email.name,
            email_authserv_id: file.email.authserv_id.filter(|id| !id.trim().is_empty()),
            email_relay_ca: file.email.relay_ca,
            replication_listen,
            replication_peers,
            replication_mdns: file.replication.mdns,
            api_listen: listen.unwrap_or(file.api.listen),
            webchat_origins: file.webchat.allowed_origins,
            webchat_builtin: file.webchat.builtin,
            webchat_identity_secret: identity_secret,
            webchat_connections_per_minute: file.webchat.connections_per_minute,
            webchat_look,
            thread_cache_events: file.store.thread_cache_events,
            retention: crate::retention::Policy {
                inactive_contacts_days: retention.erase_inactive_contacts_after_days,
                attachments_days: retention.erase_attachments_after_days,
                resolved_threads_days: retention.erase_resolved_threads_after_days,
            },
            assignment: crate::assignment::Policy {
                auto: file.assignment.auto,
                max_open_per_agent: file.assignment.max_open_per_agent,
            },
            business_hours,
            sla,
            automation,
            csat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_loads_and_flags_override_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, DEFAULT_CONFIG).expect("write");
        let config = Config::load(&path, None).expect("loads");
        assert_eq!(config.api_listen, DEFAULT_API_LISTEN.parse().expect("addr"));
        assert_eq!(
            config.replication_listen,
            vec![DEFAULT_P2P_LISTEN
                .parse::<libp2p::Multiaddr>()
                .expect("addr")]
        );
        assert!(config.replication_peers.is_empty() && !config.replication_mdns);
        let other: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            Config::load(&path, Some(other)).expect("loads").api_listen,
            other
        );
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[api]\nlisten = \"nowhere\"\n").expect("write");
        let err = Config::load(&path, None).expect_err("invalid");
        assert!(err.to_string().contains("is invalid"), "{err}");
        std::fs::write(&path, "[api]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").expect("write");
        assert!(Config::load(&path, None).is_err());
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[webchat]\nallowed_origins = [\"shop.example/\"]\n",
        )
        .expect("write");
        let err = Config::load(&path, None).expect_err("invalid origin");
        assert!(err.to_string().contains("shop.example/"), "{err}");
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[replication]\npeers = [\"/ip4/127.0.0.1/tcp/7430\"]\n",
        )
        .expect("write");
        let err = Config::load(&path, None).expect_err("a peer without its PeerId");
        assert!(err.to_string().contains("/p2p/<PeerId>"), "{err}");
    }

    #[test]
    fn xmpp_is_on_with_a_component_and_its_secret_and_bad_values_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let load = |xmpp: &str| {
            std::fs::write(
                &path,
                format!("[api]\nlisten = \"127.0.0.1:1\"\n[xmpp]\n{xmpp}"),
            )
            .expect("write");
            Config::load(&path, None)
        };
        let config =
            load("component = \"support.shop.example\"\nsecret = \"s3cret\"\n").expect("loads");
        let xmpp = config.xmpp.expect("on");
        assert_eq!(xmpp.server, "127.0.0.1:5347");
        assert_eq!(xmpp.server_domain, "shop.example", "the parent domain");
        assert!(
            !format!("{xmpp:?}").contains("s3cret"),
            "the secret never prints"
        );
        assert!(
            load("").expect("loads").xmpp.is_none(),
            "off without a component"
        );
        for (xmpp, named) in [
            ("component = \"support.shop.example\"\n", "xmpp.secret"),
            (
                "component = \"alice@shop.example\"\nsecret = \"s\"\n",
                "a user's address",
            ),
            (
                "component = \"support.shop.example\"\nsecret = \"s\"\nupload_service = \"a@@b\"\n",
                "xmpp.upload_service",
            ),
        ] {
            let err = load(xmpp).expect_err("refused");
            assert!(err.to_string().contains(named), "{err}");
        }
    }

    #[test]
    fn the_thread_cache_is_two_million_events_unless_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, DEFAULT_CONFIG).expect("write");
        let config = Config::load(&path, None).expect("loads");
        assert_eq!(config.thread_cache_events, 2_000_000);
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[store]\nthread_cache_events = 50000\n",
        )
        .expect("write");
        assert_eq!(
            Config::load(&path, None)
                .expect("loads")
                .thread_cache_events,
            50_000
        );
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[store]\nthread_cache_events = 0\n",
        )
        .expect("write");
        let err = Config::load(&path, None).expect_err("no cache");
        assert!(err.to_string().contains("thread_cache_events"), "{err}");
    }

    #[test]
    fn retention_is_read_and_a_zero_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        assert!(!Config::load(
            &{
                std::fs::write(&path, DEFAULT_CONFIG).expect("write");
                path.clone()
            },
            None
        )
        .expect("loads")
        .retention
        .is_set());
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[retention]\nerase_resolved_threads_after_days = 30\n",
        )
        .expect("write");
        let policy = Config::load(&path, None).expect("loads").retention;
        assert_eq!(policy.resolved_threads_days, Some(30));
        assert_eq!(policy.inactive_contacts_days, None);
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[retention]\nerase_attachments_after_days = 0\n",
        )
        .expect("write");
        let err = Config::load(&path, None).expect_err("refused");
        assert!(
            err.to_string().contains("erase_attachments_after_days"),
            "{err}"
        );
    }
}
