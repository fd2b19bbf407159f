//! `threadline run`: the node's services over one data folder.

use std::future::Future;

use tokio::net::TcpListener;
use tracing::{error, info};

use std::sync::Arc;
use std::time::Duration;

use threadline_bridges::sdk::{Bridge, BridgeIdentity};
use threadline_bridges::webchat::{RateLimit, Webchat};
use threadline_protocol::event::ThreadKind;
use threadline_protocol::{channel::Handle, ChannelKind, ScopeId, ThreadId};
use tracing::warn;

use crate::admin;
use crate::api::{self, webchat::WebchatHost};
use crate::bridge_host::LocalLink;
use crate::config::Config;
use crate::data_dir::{DataDir, LoadError};
use crate::ingest::{self, IngestError};
use crate::presence::Typing;
use crate::store::StoreError;
use crate::store::UNUSED_BLOB_GRACE;

/// The node stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data folder could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ingest pipeline could not start.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The built-in bridges could not be set up.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// Replication could not start (a listen address in use, say).
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    /// Serving HTTP failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    /// The store failed to commit, so the node stopped (nothing uncommitted was
    /// acknowledged; a restart recovers from what is on disk).
    #[error("the store failed to commit and the node stopped: {0} (check the disk, then start the node again: it recovers from what is on disk; `threadline check` says whether the store is whole)")]
    StoreFailed(String),
}

/// Runs the node on `listener` until `shutdown` resolves, then stops cleanly: stops taking
/// requests, finishes the ones in flight (live streams end), lets the writer drain its queue,
/// and flushes the store.
pub async fn run(
    data_dir: &DataDir,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_with(data_dir, config, listener, None, shutdown).await
}

/// [`run`], with the email bridge's SMTP listener when `[email] address` is set (bound by the
/// caller, so it can say where before the node runs).
pub async fn run_with(
    data_dir: &DataDir,
    config: &Config,
    listener: TcpListener,
    smtp: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve(open(data_dir)?, config, listener, smtp, shutdown).await
}

/// A data folder opened for [`serve`]: the node's identity read and its store open. sled lets
/// one process at a time hold a store, so a folder that a running node (or an admin command)
/// holds fails here with [`StoreError::InUse`]: `threadline run` opens before it binds or
/// prints a listening address.
#[derive(Debug)]
pub struct Opened {
    data_dir: DataDir,
    identity: crate::identity::Identity,
    store: crate::store::Store,
}

/// Opens `data_dir` for [`serve`].
pub fn open(data_dir: &DataDir) -> Result<Opened, ServerError> {
    let identity = data_dir.load_identity()?;
    let store = admin::open_store(data_dir)?;
    Ok(Opened {
        data_dir: data_dir.clone(),
        identity,
        store,
    })
}

/// [`run_with`] on a data folder already [`open`]ed.
pub async fn serve(
    opened: Opened,
    config: &Config,
    listener: TcpListener,
    smtp: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Opened {
        data_dir,
        identity,
        store,
    } = opened;
    let data_dir = &data_dir;
    // Before the pipeline starts: a new built-in bridge's certificate goes straight to the store.
    let webchat_key = if config.webchat_builtin {
        admin::builtin_bridge_key(data_dir, &store, ChannelKind::Webchat, crate::clock::now())?
    } else {
        info!("web chat: the built-in bridge is off ([webchat] builtin = false)");
        None
    };
    let email_key = match &config.email_address {
        Some(_) => {
            admin::builtin_bridge_key(data_dir, &store, ChannelKind::Email, crate::clock::now())?
        }
        None => None,
    };
    let mut meta_keys = Vec::new();
    for (channel, configured) in [
        (ChannelKind::Whatsapp, &config.whatsapp),
        (ChannelKind::Messenger, &config.messenger),
        (ChannelKind::Instagram, &config.instagram),
    ] {
        if let Some(configured) = configured {
            match admin::builtin_bridge_key(data_dir, &store, channel, crate::clock::now())? {
                Some(key) => meta_keys.push((channel, configured.clone(), key)),
                None => warn!("{channel} off: this node has no {channel} bridge key and no org key to make one (run `threadline bridge add {channel}` where the org key is, and copy the key to keys/bridge-{channel}.key)"),
            }
        }
    }
    let key_if = |configured: bool, channel: ChannelKind| match configured {
        true => admin::builtin_bridge_key(data_dir, &store, channel, crate::clock::now()),
        false => Ok(None),
    };
    let telegram_key = key_if(config.telegram.is_some(), ChannelKind::Telegram)?;
    let slack_key = key_if(config.slack.is_some(), ChannelKind::Slack)?;
    let sms_key = key_if(config.sms.is_some(), ChannelKind::Sms)?;
    let xmpp_key = match &config.xmpp {
        Some(_) => {
            admin::builtin_bridge_key(data_dir, &store, ChannelKind::Xmpp, crate::clock::now())?
        }
        None => None,
    };
    let matrix_key = match &config.matrix {
        Some(configured) => {
            let tokens = crate::matrix::tokens(data_dir, configured)
                .map_err(|err| ServerError::Admin(admin::AdminError::Event(err)))?;
            admin::builtin_bridge_key(data_dir, &store, ChannelKind::Matrix, crate::clock::now())?
                .map(|key| (key, tokens))
        }
        None => None,
    };
    let (ingest, running) = ingest::start_with_cache(
        store.clone(),
        identity,
        crate::clock::now,
        config.thread_cache_events,
    )?;
    let mut meta = crate::meta::start(&ingest, meta_keys)
        .map_err(|err| ServerError::Admin(admin::AdminError::Event(err)))?;
    let started = |err: String| ServerError::Admin(admin::AdminError::Event(err));
    match (&config.telegram, telegram_key) {
        (Some(configured), Some(key)) => {
            meta.telegram =
                Some(crate::telegram::start(&ingest, configured, key).map_err(started)?);
        }
        (Some(_), None) => no_key(ChannelKind::Telegram),
        _ => {}
    }
    match (&config.slack, slack_key) {
        (Some(configured), Some(key)) => {
            meta.slack = Some(crate::slack::start(&ingest, configured, key).map_err(started)?);
        }
        (Some(_), None) => no_key(ChannelKind::Slack),
        _ => {}
    }
    match (&config.sms, sms_key) {
        (Some(configured), Some(key)) => {
            meta.sms = Some(crate::sms::start(&ingest, configured, key).map_err(started)?);
        }
        (Some(_), None) => no_key(ChannelKind::Sms),
        _ => {}
    }
    let xmpp = match (&config.xmpp, xmpp_key) {
        (Some(configured), Some(key)) => Some(
            crate::xmpp::start(&ingest, configured, key)
                .map_err(|err| ServerError::Admin(admin::AdminError::Event(err)))?,
        ),
        (Some(_), None) => {
            warn!("xmpp off: this node has no xmpp bridge key and no org key to make one (run `threadline bridge add xmpp` where the org key is, and copy the key to keys/bridge-xmpp.key)");
            None
        }
        _ => None,
    };
    let matrix = match (&config.matrix, matrix_key) {
        (Some(configured), Some((key, tokens))) => Some(
            crate::matrix::start(&ingest, configured, &tokens, key)
                .map_err(|err| ServerError::Admin(admin::AdminError::Event(err)))?,
        ),
        (Some(_), None) => {
            warn!("matrix off: this node has no matrix bridge key and no org key to make one (run `threadline bridge add matrix` where the org key is, and copy the key to keys/bridge-matrix.key)");
            None
        }
        _ => None,
    };
    match (&config.email_address, email_key, smtp) {
        (Some(address), Some(key), Some(smtp)) => {
            match &config.email_relay {
                Some(url) => {
                    let name = config.email_name.clone().unwrap_or_else(|| {
                        address
                            .split_once('@')
                            .map(|(_, domain)| domain.to_owned())
                            .unwrap_or_default()
                    });
                    let fail = |text: String| ServerError::Admin(admin::AdminError::Event(text));
                    let ca = match &config.email_relay_ca {
                        Some(path) => Some(std::fs::read(path).map_err(|err| {
                            fail(format!(
                                "email.relay_ca: cannot read {}: {err}",
                                path.display()
                            ))
                        })?),
                        None => None,
                    };
                    let outbound = threadline_bridges::email::EmailOutbound::new(
                        url,
                        address,
                        &name,
                        ca.as_deref(),
                    )
                    .map_err(|err| fail(err.to_string()))?;
                    let outbound = Arc::new(outbound);
                    ingest.email_verification().set_mail(Arc::clone(&outbound));
                    let bridge = Bridge::new(
                        BridgeIdentity::new(key.clone(), ChannelKind::Email),
                        LocalLink::builtin(ingest.clone(), ChannelKind::Email),
                        crate::clock::now,
                    );
                    tokio::spawn(deliver_email(Arc::new(bridge), outbound));
                }
                None => warn!("email: no [email] relay: replies wait in the email queue"),
            }
            let bridge = Bridge::new(
                BridgeIdentity::new(key, ChannelKind::Email),
                LocalLink::builtin(ingest.clone(), ChannelKind::Email),
                crate::clock::now,
            );
            let mut inbound = threadline_bridges::email::EmailInbound::new(bridge, address.clone());
            if let Some(authserv_id) = &config.email_authserv_id {
                info!(%authserv_id, "email: only mail that passed DMARC at this MX is taken");
                inbound = inbound.requiring_dmarc_from(authserv_id.clone());
            }
            let inbound = Arc::new(inbound);
            let settings = threadline_bridges::email::smtp::SmtpSettings {
                address: address.clone(),
                max_bytes: threadline_bridges::email::MAX_MAIL_BYTES,
            };
            if let Some(mailbox) = &config.email_imap {
                let (mailbox, sink, closing) =
                    (mailbox.clone(), Arc::clone(&inbound).sink(), ingest.clone());
                let every = config.email_imap_poll;
                info!(%mailbox, ?every, "email: polling the mailbox over IMAP");
                tokio::spawn(async move {
                    tokio::select! {
                        () = threadline_bridges::email::imap::poll_forever(
                            mailbox,
                            every,
                            threadline_bridges::email::MAX_MAIL_BYTES,
                            sink,
                        ) => {}
                        () = closing.closing() => {}
                    }
                });
            }
            let closing = ingest.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = threadline_bridges::email::smtp::serve(smtp, settings, inbound.sink()) => {}
                    () = closing.closing() => {}
                }
            });
            info!(%address, "email: taking mail for the support address over SMTP");
        }
        (Some(_), None, _) => {
            warn!("email off: this node has no email bridge key and no org key to make one (run `threadline bridge add email` where the org key is, and copy the key to keys/bridge-email.key)");
        }
        _ => {}
    }
    let webchat = match webchat_key {
        Some(key) => {
            let bridge = Bridge::new(
                BridgeIdentity::new(key, ChannelKind::Webchat),
                LocalLink::builtin(ingest.clone(), ChannelKind::Webchat),
                crate::clock::now,
            );
            let secret = config
                .webchat_identity_secret
                .as_ref()
                .map(|secret| secret.as_bytes().to_vec());
            let webchat = Arc::new(
                Webchat::new(bridge, RateLimit::default(), secret).continuing_on(continue_on(
                    &meta,
                    xmpp.as_ref(),
                    matrix.as_ref(),
                )),
            );
            tokio::spawn(deliver_webchat(Arc::clone(&webchat)));
            tokio::spawn(relay_presence(Arc::clone(&webchat)));
            info!("web chat on: /webchat/demo, widget at /webchat/widget.js");
            let (close_sockets, closing) = tokio::sync::watch::channel(false);
            let ingest_closing = ingest.clone();
            tokio::spawn(async move {
                ingest_closing.closing().await;
                close_sockets.send_replace(true);
            });
            Some(WebchatHost {
                webchat,
                allowed_origins: Arc::new(crate::api::webchat::Origins::new(
                    config.webchat_origins.clone(),
                )),
                closing,
                connections: Arc::new(crate::api::webchat::ConnectionLimit::new(
                    config.webchat_connections_per_minute,
                )),
                look: Arc::new(config.webchat_look.clone()),
            })
        }
        None if !config.webchat_builtin => None,
        None => {
            warn!("web chat off: this node has no web chat bridge key and no org key to make one (run `threadline bridge add webchat` where the org key is, and copy the key to keys/bridge-webchat.key)");
            None
        }
    };
    let replication = crate::replication::service::start(
        ingest.clone(),
        data_dir.clone(),
        crate::replication::service::Settings {
            listen: config.replication_listen.clone(),
            peers: config.replication_peers.clone(),
            peers_file: Some(data_dir.peers_path()),
            mdns: config.replication_mdns,
            partners: config.replication_partners.clone(),
            partners_file: Some(data_dir.partners_path()),
        },
    )?;
    tokio::spawn(replication);
    tokio::spawn(sweep_unused_blobs(ingest.clone()));
    tokio::spawn(wake_snoozed(ingest.clone()));
    tokio::spawn(crate::message_search::run(ingest.clone()));
    tokio::spawn(crate::outbound_webhooks::run(ingest.clone()));

    if config.retention.is_set() {
        tokio::spawn(apply_retention(ingest.clone(), config.retention));
    }
    ingest.set_sla(config.sla);
    if let Some(hours) = &config.business_hours {
        tokio::spawn(crate::business_hours::run(ingest.clone(), hours.clone()));
    }
    if config.assignment.auto || !config.automation.is_empty() {
        tokio::spawn(crate::automation::run(
            ingest.clone(),
            config.automation.clone(),
            config.assignment,
        ));
    }
    if let Some(survey) = &config.csat {
        tokio::spawn(crate::csat::run(ingest.clone(), survey.clone()));
    }
    tokio::spawn(serve_backup_requests(ingest.clone(), data_dir.clone()));
    tokio::spawn(crate::admin_requests::serve(
        ingest.clone(),
        data_dir.clone(),
    ));
    let app = api::router(ingest.clone(), webchat)
        .merge(api::webhooks::router(&meta))
        .merge(api::matrix::router(matrix.clone()));
    let closing = running.closing();
    let store_failure = running.store_failure();
    let result = crate::http::serve(listener, app, async move {
        tokio::select! {
            () = shutdown => info!("shutting down"),
            cause = store_failure => error!(%cause, "the store failed: shutting down"),
        }
        closing.close();
    })
    .await;
    // Every holder of the pipeline lets go, or the writer waits for them forever.
    drop(meta);
    drop(xmpp);
    drop(matrix);
    drop(ingest);
    if let Some(cause) = running.join() {
        // Never dropped: sled flushes when its last handle goes, and on a disk that fails,
        // that flush panics inside sled. The process is about to exit anyway.
        std::mem::forget(store);
        return Err(ServerError::StoreFailed(cause));
    }
    store.flush()?;
    info!("stopped");
    result.map_err(ServerError::Http)
}

/// Replies queued for web chat visitors go out as soon as they are stored (the live stream
/// says when), and at least every second (for what a first attempt could not send). Ends when
/// the node closes.
async fn deliver_webchat(webchat: Arc<Webchat<LocalLink>>) {
    const BATCH: usize = 256;
    let ingest = webchat.bridge().link().ingest().clone();
    let mut changes = ingest.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.kind == "thread.read" => {
                    tell_read(&webchat, &ingest, change.scope, change.event);
                }
                Ok(change) if change.kind == "thread.hand_off" => {
                    tell_moved(&webchat, &ingest, change.scope, change.event);
                    continue;
                }
                Ok(change) if change.kind != "thread.message.outbound" => continue,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {}
            () = ingest.closing() => break,
        }
        loop {
            match webchat.deliver(BATCH).await {
                Ok(n) if n == BATCH => continue,
                Ok(_) => break,
                Err(err) => {
                    warn!(cause = %err, "web chat deliveries failed; retrying in a second");
                    break;
                }
            }
        }
    }
}

/// Answers `threadline backup` while the node runs: every half second, each
/// `backup-requests/<name>.request` (the folder to back up into) is carried out (the folder's
/// files, then the store, copied by the writer between batches) and answered in
/// `<name>.done` (`ok <bytes>`, or `error: <why>`). Ends when the node closes.
async fn serve_backup_requests(ingest: crate::ingest::Ingest, data_dir: DataDir) {
    let requests = data_dir.backup_requests_path();
    crate::admin_requests::serve_requests(&ingest, &requests, |to| {
        let (ingest, data_dir) = (ingest.clone(), data_dir.clone());
        async move {
            let to = std::path::PathBuf::from(to.trim());
            info!(to = %to.display(), "backing up");
            let answer = backup(&ingest, &data_dir, &to)
                .await
                .map(|bytes| bytes.to_string());
            info!(answer = ?answer, "backup request answered");
            answer
        }
    })
    .await;
}

/// A running node's backup into `to`, a folder it creates (one that exists is refused and
/// left alone): the data folder's files, then the store. A failed backup removes what it made.
async fn backup(
    ingest: &crate::ingest::Ingest,
    data_dir: &DataDir,
    to: &std::path::Path,
) -> Result<u64, String> {
    data_dir.claim_backup_folder(to)?;
    let copied = match data_dir.copy_besides_store(to) {
        Ok(()) => ingest
            .backup(to.join("store"))
            .await
            .map_err(|err| err.to_string()),
        Err(err) => Err(format!("cannot copy the data folder's files: {err}")),
    };
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(to);
    }
    copied
}

/// How often snoozed threads are looked at for an ended snooze.
const WAKE_EVERY: Duration = Duration::from_secs(5);

/// Reopens snoozed threads once their time has come (within [`WAKE_EVERY`]), so they are back
/// in the open list. Ends when the node closes.
async fn wake_snoozed(ingest: crate::ingest::Ingest) {
    let mut tick = tokio::time::interval(WAKE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ingest.closing() => break,
        }
        // From the index, in memory: the writer checks each again before it reopens it.
        let due = ingest
            .thread_index()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snoozes_ended(crate::clock::now().as_millis());
        for thread in due {
            match ingest.wake(thread).await {
                Ok(Some(_)) => info!(%thread, "snooze ended: the conversation is open again"),
                Ok(None) => {}
                Err(err) => warn!(%thread, cause = %err, "cannot reopen a snoozed conversation"),
            }
        }
    }
}

/// Deletes attachment files no event refers to (uploads whose message never came, erasures a
/// crash interrupted) once they are older than [`UNUSED_BLOB_GRACE`]: at start, then hourly.
async fn sweep_unused_blobs(ingest: crate::ingest::Ingest) {
    let mut tick = tokio::time::interval(Duration::from_secs(60 * 60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ingest.closing() => break,
        }
        match ingest.sweep_unused_blobs(UNUSED_BLOB_GRACE).await {
            Ok(0) => {}
            Ok(swept) => info!(swept, "deleted attachments no event refers to"),
            Err(err) => warn!(cause = %err, "cannot sweep unused attachments"),
        }
    }
}

/// Applies the retention policy at start, then hourly ([`crate::retention`]): what it erases
/// is erased on every node by the erasure events signed here, and noted in the audit trail.
async fn apply_retention(ingest: crate::ingest::Ingest, policy: crate::retention::Policy) {
    let mut tick = tokio::time::interval(Duration::from_secs(60 * 60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ingest.closing() => break,
        }
        let planner = ingest.clone();
        let planned = tokio::task::spawn_blocking(move || {
            crate::retention::plan(&planner, &policy, crate::clock::now())
        })
        .await;
        let plan = match planned {
            Ok(Ok(plan)) => plan,
            Ok(Err(err)) => {
                warn!(cause = %err, "cannot work out what the retention policy erases");
                continue;
            }
            Err(err) => {
                warn!(cause = %err, "the retention task failed");
                continue;
            }
        };
        if plan.is_empty() {
            continue;
        }
        match crate::retention::apply(&ingest, &plan, crate::clock::now()).await {
            Ok(applied) => info!(
                contacts = applied.contacts,
                resolved_threads = plan.resolved_threads.len(),
                messages_with_files = plan.messages_with_files.len(),
                erasures = applied.events,
                "retention policy applied"
            ),
            Err(err) => warn!(cause = %err, "cannot apply the retention policy"),
        }
    }
}

/// Replies routed to email go out through the relay as soon as they are stored, and every few
/// seconds (retries of what the relay did not take). Ends when the node closes.
async fn deliver_email(
    bridge: Arc<Bridge<LocalLink>>,
    outbound: Arc<threadline_bridges::email::EmailOutbound>,
) {
    const BATCH: usize = 64;
    let ingest = bridge.link().ingest().clone();
    let mut changes = ingest.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.kind != "thread.message.outbound" => continue,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {}
            () = ingest.closing() => break,
        }
        let link = bridge.link().clone();
        let sent = bridge
            .deliver_pending(BATCH, |delivery| {
                let link = link.clone();
                let outbound = Arc::clone(&outbound);
                async move {
                    use threadline_bridges::sdk::{NodeLink as _, SendError};
                    let history = link
                        .thread_messages(delivery.thread)
                        .await
                        .unwrap_or_default();
                    let mut files = Vec::with_capacity(delivery.attachments.len());
                    for file in &delivery.attachments {
                        match link.blob(file.blob).await {
                            Ok(Some(bytes)) => files.push((file.clone(), bytes)),
                            // Written on another node of the org: its bytes are on their way.
                            Ok(None) => {
                                return Err(SendError::NotReady(format!(
                                    "attachment {} is not on this node yet",
                                    file.name.as_str()
                                )))
                            }
                            Err(err) => return Err(SendError::NotReady(err.to_string())),
                        }
                    }
                    outbound
                        .send(&delivery, &history, &files)
                        .await
                        .map(|()| threadline_bridges::sdk::Sent::Delivered)
                }
            })
            .await;
        if let Err(err) = sent {
            warn!(cause = %err, "email deliveries failed; retrying");
        }
    }
}

/// Says why a configured bridge is off.
fn no_key(channel: ChannelKind) {
    warn!("{channel} off: this node has no {channel} bridge key and no org key to make one (run `threadline bridge add {channel}` where the org key is, and copy the key to keys/bridge-{channel}.key)");
}

/// The apps a web chat visitor can continue on: Meta's with a link name, and XMPP.
fn continue_on(
    meta: &crate::api::webhooks::WebhookBridges<LocalLink>,
    xmpp: Option<&Arc<threadline_bridges::xmpp::Xmpp<LocalLink>>>,
    matrix: Option<&Arc<threadline_bridges::matrix::Matrix<LocalLink>>>,
) -> Vec<threadline_bridges::webchat::ContinueOn> {
    let mut apps = crate::meta::continue_on(meta);
    if let Some(slack) = meta.slack.clone() {
        let probe = threadline_bridges::sdk::HandoffCode::from_bytes([0; 16]);
        if slack.continue_link(&probe).is_some() {
            apps.push(threadline_bridges::webchat::ContinueOn {
                channel: ChannelKind::Slack,
                link: Arc::new(move |code| slack.continue_link(code)),
            });
        }
    }
    if let Some(sms) = meta.sms.clone() {
        let probe = threadline_bridges::sdk::HandoffCode::from_bytes([0; 16]);
        if sms.continue_link(&probe).is_some() {
            apps.push(threadline_bridges::webchat::ContinueOn {
                channel: ChannelKind::Sms,
                link: Arc::new(move |code| sms.continue_link(code)),
            });
        }
    }
    if let Some(telegram) = meta.telegram.clone() {
        let probe = threadline_bridges::sdk::HandoffCode::from_bytes([0; 16]);
        if telegram.continue_link(&probe).is_some() {
            apps.push(threadline_bridges::webchat::ContinueOn {
                channel: ChannelKind::Telegram,
                link: Arc::new(move |code| telegram.continue_link(code)),
            });
        }
    }
    if let Some(matrix) = matrix {
        let settings = matrix.settings().clone();
        apps.push(threadline_bridges::webchat::ContinueOn {
            channel: ChannelKind::Matrix,
            link: Arc::new(move |code| Some(settings.continue_link(code))),
        });
    }
    if let Some(xmpp) = xmpp {
        let settings = xmpp.settings().clone();
        apps.push(threadline_bridges::webchat::ContinueOn {
            channel: ChannelKind::Xmpp,
            link: Arc::new(move |code| Some(settings.continue_link(code))),
        });
    }
    apps
}

/// Tells web chat visitors what agents do right now: typing in their thread, and whether any
/// agent is at the inbox. Ends when the node closes.
async fn relay_presence(webchat: Arc<Webchat<LocalLink>>) {
    let ingest = webchat.bridge().link().ingest().clone();
    let mut typing = ingest.presence().subscribe_typing();
    let mut online = ingest.presence().watch_agents();
    let mut agents_online = ingest.presence().agents_online();
    loop {
        tokio::select! {
            signal = typing.recv() => match signal {
                Ok(Typing::Agent(thread)) => {
                    if let Some(handle) = route_handle(&ingest, thread) {
                        if handle.channel() == ChannelKind::Webchat {
                            webchat.agent_typing(&handle);
                        }
                    }
                }
                Ok(Typing::Customer(_)) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            changed = online.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *online.borrow_and_update() > 0;
                if now != agents_online {
                    agents_online = now;
                    webchat.presence_changed(now);
                }
            }
            () = ingest.closing() => break,
        }
    }
}

/// Tells a web chat visitor that an agent read their messages (from the agent's `Read` event).
fn tell_read(
    webchat: &Webchat<LocalLink>,
    ingest: &crate::ingest::Ingest,
    scope: ScopeId,
    event: threadline_protocol::EventId,
) {
    let Some((thread, ThreadKind::Read { up_to })) = thread_event(ingest, scope, event) else {
        return;
    };
    if let Some(handle) = route_handle(ingest, thread) {
        if handle.channel() == ChannelKind::Webchat {
            webchat.agent_read(&handle, up_to);
        }
    }
}

/// Tells a web chat visitor that their thread was handed off to another app (their continue
/// link came back from there), from the `HandOff` event.
fn tell_moved(
    webchat: &Webchat<LocalLink>,
    ingest: &crate::ingest::Ingest,
    scope: ScopeId,
    event: threadline_protocol::EventId,
) {
    let Some((thread, ThreadKind::HandOff { channel })) = thread_event(ingest, scope, event) else {
        return;
    };
    if channel == ChannelKind::Webchat {
        return;
    }
    // The visitor is the handle the thread was opened for.
    let root = threadline_protocol::EventId::from_bytes(*thread.as_bytes());
    let Ok(Some(opened)) = ingest.store().event(&scope, &root) else {
        return;
    };
    if let Some(handle) = opened.content.and_then(|content| content.handle) {
        if handle.channel() == ChannelKind::Webchat {
            webchat.moved(&handle, channel);
        }
    }
}

/// The thread and kind of a stored thread event (`None` for another scope, or if it is gone).
pub(crate) fn thread_event(
    ingest: &crate::ingest::Ingest,
    scope: ScopeId,
    event: threadline_protocol::EventId,
) -> Option<(ThreadId, ThreadKind)> {
    let ScopeId::Thread(thread) = scope else {
        return None;
    };
    let stored = ingest.store().event(&scope, &event).ok()??;
    match stored.signed.header.kind {
        threadline_protocol::EventKind::Thread(kind) => Some((thread, kind)),
        _ => None,
    }
}

/// The handle a thread's replies go to now, if it has one (and it is not erased).
pub(crate) fn route_handle(ingest: &crate::ingest::Ingest, thread: ThreadId) -> Option<Handle> {
    let state = ingest.store().thread_state(&thread).ok()??;
    ingest.store().route_handle(thread, &state).ok()?
}
