//! Admin commands on a running node. `threadline agent add|list|revoke`, `bridge add`,
//! `contact show|export`, `erase contact`, `retention` and `audit` work on a stopped node's
//! data folder directly (the record commands with a pipeline of their own over its store,
//! [`crate::operator`]); a running node holds its store
//! (sled lets one process open it), so the command leaves a request in the data folder and the
//! node carries it out through its pipeline, with the same checks, and answers: the folder is
//! the channel, and who may write in it may run these commands either way.
//!
//! The exchange is a file each way in a requests folder: `<name>.request` (written whole: as
//! `<name>.writing`, then renamed), answered in `<name>.done` (written whole the same way) with
//! `ok <text>` or `error: <why>`. The node looks every half second. `threadline backup` uses the same exchange.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use threadline_protocol::{AgentId, ChannelKind, Timestamp};
use tracing::{info, warn};

use crate::admin::{self, AdminError, NewAgent, NewBridge};
use crate::data_dir::DataDir;
use crate::ingest::{self, DirectoryAction, Ingest};
use crate::operator::{self, RecordCommand};
use crate::store::{AgentRole, StoreError};

/// An admin command that works whether the node runs or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// `threadline agent add <name> [--admin]`.
    AddAgent {
        /// The agent's name.
        name: String,
        /// What the agent may do.
        role: AgentRole,
    },
    /// `threadline agent list`.
    ListAgents,
    /// `threadline agent revoke <id>`.
    RevokeAgent {
        /// The agent.
        id: AgentId,
    },
    /// `threadline agent token <id>`: a new token, the old ones revoked.
    ResetToken {
        /// The agent.
        id: AgentId,
    },
    /// `threadline agent role <id> admin|agent`.
    SetRole {
        /// The agent.
        id: AgentId,
        /// The new role.
        role: AgentRole,
    },
    /// `threadline bridge add <channel>`.
    AddBridge {
        /// The channel.
        channel: ChannelKind,
    },
    /// A command on customers' records.
    Records(RecordCommand),
}

/// How long the CLI waits for a running node's answer to an admin command.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How often a running node looks for requests.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Carries out `command` on the node of `data_dir`: directly if it is stopped, through the
/// node if it runs. Answers what to print.
pub fn carry_out(
    data_dir: &DataDir,
    command: &AdminCommand,
    now: Timestamp,
) -> Result<String, AdminError> {
    match carry_out_stopped(data_dir, command, now) {
        Err(AdminError::Store(StoreError::InUse { .. })) => {
            let body = serde_json::to_string(command)
                .map_err(|err| AdminError::Event(format!("cannot write the request: {err}")))?;
            ask(&data_dir.admin_requests_path(), &body, ANSWER_WITHIN).map_err(AdminError::Event)
        }
        other => other,
    }
}

fn carry_out_stopped(
    data_dir: &DataDir,
    command: &AdminCommand,
    now: Timestamp,
) -> Result<String, AdminError> {
    Ok(match command {
        AdminCommand::AddAgent { name, role } => {
            describe_agent(&admin::add_agent(data_dir, name, *role, now)?)
        }
        AdminCommand::ListAgents => describe_agents(&admin::list_agents(data_dir)?),
        AdminCommand::RevokeAgent { id } => {
            admin::revoke_agent(data_dir, *id)?;
            describe_revoked(*id)
        }
        AdminCommand::ResetToken { id } => {
            let token = admin::change_stopped(data_dir, |store| {
                admin::reset_token_records(store, *id, now)
            })?;
            describe_token(*id, &token)
        }
        AdminCommand::SetRole { id, role } => {
            admin::change_stopped(data_dir, |store| {
                Ok(((), admin::role_records(store, *id, *role)?))
            })?;
            describe_role(*id, *role)
        }
        AdminCommand::AddBridge { channel } => {
            describe_bridge(&admin::add_bridge(data_dir, *channel, now)?)?
        }
        AdminCommand::Records(command) => with_stopped_node(data_dir, |ingest| async move {
            Ok(operator::carry_out(&ingest, data_dir, command, now).await?)
        })?,
    })
}

/// Runs `body` with an ingest pipeline over the stopped node's store (fails with the store's
/// `InUse` while the node runs).
fn with_stopped_node<F, Fut, T>(data_dir: &DataDir, body: F) -> Result<T, AdminError>
where
    F: FnOnce(Ingest) -> Fut,
    Fut: std::future::Future<Output = Result<T, AdminError>>,
{
    let identity = data_dir.load_identity()?;
    let store = admin::open_store(data_dir)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|err| AdminError::Event(format!("cannot start a runtime: {err}")))?;
    let (ingest, running) = ingest::start(store.clone(), identity, crate::clock::now)
        .map_err(|err| AdminError::Event(err.to_string()))?;
    let result = runtime.block_on(body(ingest));
    running.join();
    store.flush()?;
    result
}

/// Carries out `command` on this running node, through its pipeline.
pub async fn carry_out_running(
    ingest: &Ingest,
    data_dir: &DataDir,
    command: &AdminCommand,
    now: Timestamp,
) -> Result<String, AdminError> {
    let node = |err: crate::ingest::IngestError| AdminError::Event(err.to_string());
    Ok(match command {
        AdminCommand::AddAgent { name, role } => {
            describe_agent(&add_agent(ingest, name, *role, now).await?)
        }
        AdminCommand::ListAgents => describe_agents(&admin::agents(ingest.store())?),
        AdminCommand::RevokeAgent { id } => {
            revoke_agent(ingest, *id).await?;
            describe_revoked(*id)
        }
        AdminCommand::ResetToken { id } => {
            describe_token(*id, &reset_token(ingest, *id, now).await?)
        }
        AdminCommand::SetRole { id, role } => {
            set_role(ingest, *id, *role).await?;
            describe_role(*id, *role)
        }
        AdminCommand::AddBridge { channel } => {
            let (_, new, records) = admin::new_bridge(data_dir, *channel, now)?;
            ingest
                .change_directory(DirectoryAction::Certify(new.certificate.clone()))
                .await
                .map_err(node)?;
            ingest.write_records(records).await.map_err(node)?;
            describe_bridge(&new)?
        }
        AdminCommand::Records(command) => {
            operator::carry_out(ingest, data_dir, command, now).await?
        }
    })
}

/// Adds an agent through the running node's pipeline.
pub async fn add_agent(
    ingest: &Ingest,
    name: &str,
    role: AgentRole,
    now: Timestamp,
) -> Result<NewAgent, AdminError> {
    let (new, records) = admin::agent_records(name, role, now)?;
    ingest.write_records(records).await.map_err(pipeline)?;
    Ok(new)
}

/// Revokes an agent and its tokens through the running node (not the last admin).
pub async fn revoke_agent(ingest: &Ingest, id: AgentId) -> Result<(), AdminError> {
    let _one_at_a_time = ingest.agent_changes().await;
    let records = admin::revoke_records(ingest.store(), id)?;
    ingest.write_records(records).await.map_err(pipeline)?;
    Ok(())
}

/// Gives an agent a new token through the running node, its old ones revoked. Answers the
/// token (shown once).
pub async fn reset_token(
    ingest: &Ingest,
    id: AgentId,
    now: Timestamp,
) -> Result<String, AdminError> {
    let _one_at_a_time = ingest.agent_changes().await;
    let (token, records) = admin::reset_token_records(ingest.store(), id, now)?;
    ingest.write_records(records).await.map_err(pipeline)?;
    Ok(token)
}

/// Changes an agent's role through the running node (not demoting the last admin).
pub async fn set_role(ingest: &Ingest, id: AgentId, role: AgentRole) -> Result<(), AdminError> {
    let _one_at_a_time = ingest.agent_changes().await;
    let records = admin::role_records(ingest.store(), id, role)?;
    ingest.write_records(records).await.map_err(pipeline)?;
    Ok(())
}

fn pipeline(err: crate::ingest::IngestError) -> AdminError {
    AdminError::Event(err.to_string())
}

fn describe_agent(new: &NewAgent) -> String {
    format!(
        "agent: {} ({}, {})\ntoken: {}\nThe token is shown once; the node keeps only its hash.",
        new.agent.id,
        new.agent.name,
        new.agent.role.name(),
        new.token
    )
}

fn describe_token(id: AgentId, token: &str) -> String {
    format!(
        "agent: {id}\ntoken: {token}\nIts earlier tokens are revoked. The token is shown once; the node keeps only its hash."
    )
}

fn describe_role(id: AgentId, role: AgentRole) -> String {
    format!("agent {id} is now an {}", role.name())
}

fn describe_agents(agents: &[crate::store::AgentRecord]) -> String {
    agents
        .iter()
        .map(|agent| {
            let state = if agent.revoked { "revoked" } else { "active" };
            format!(
                "{}  {:8}  {:6}  {}",
                agent.id,
                state,
                agent.role.name(),
                agent.name
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_revoked(id: AgentId) -> String {
    format!("revoked agent {id} and its tokens")
}

fn describe_bridge(new: &NewBridge) -> Result<String, AdminError> {
    let certificate = threadline_protocol::codec::encode(&new.certificate)
        .map_err(|err| AdminError::Event(err.to_string()))?;
    Ok(format!(
        "bridge key:  {}\npublic key:  {}\ncertificate: {}\ntoken:       {}\nKeep the key and token secret; they are shown once.",
        hex::encode(new.key.to_seed()),
        new.key.public(),
        hex::encode(certificate),
        new.token
    ))
}

/// Answers admin commands left in the data folder while the node runs, until it closes.
pub async fn serve(ingest: Ingest, data_dir: DataDir) {
    let folder = data_dir.admin_requests_path();
    serve_requests(&ingest, &folder, |body| {
        let (ingest, data_dir) = (ingest.clone(), data_dir.clone());
        async move {
            let command: AdminCommand = serde_json::from_str(&body)
                .map_err(|err| format!("not an admin command: {err}"))?;
            info!(?command, "admin command from the command line");
            carry_out_running(&ingest, &data_dir, &command, crate::clock::now())
                .await
                .map_err(|err| err.to_string())
        }
    })
    .await;
}

/// Carries out each request left in `folder` with `handle` and answers it, every half second,
/// until the node closes.
pub async fn serve_requests<F, Fut>(ingest: &Ingest, folder: &Path, handle: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let mut tick = tokio::time::interval(LOOK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ingest.closing() => break,
        }
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let request = entry.path();
            if request.extension().is_none_or(|ext| ext != "request") {
                continue;
            }
            let answer = match std::fs::read_to_string(&request) {
                Ok(body) => match handle(body).await {
                    Ok(text) => format!("ok {text}"),
                    Err(err) => format!("error: {err}"),
                },
                Err(err) => format!("error: cannot read the request: {err}"),
            };
            // Whole or not at all, as the request: the command reads `.done` as soon as it
            // exists, and a file being written can be empty (it read "error: " with no reason).
            let answering = request.with_extension("answering");
            if let Err(err) = std::fs::write(&answering, answer)
                .and_then(|()| std::fs::rename(&answering, request.with_extension("done")))
            {
                warn!(cause = %err, request = %request.display(), "cannot answer a request");
            }
            let _ = std::fs::remove_file(&request);
        }
    }
}

/// Leaves `body` as a request in `folder` for the running node and waits up to `within` for
/// its answer: the text of an `ok`, or the node's error.
pub fn ask(folder: &Path, body: &str, within: Duration) -> Result<String, String> {
    let io = |err: std::io::Error| {
        format!(
            "cannot ask the running node through {}: {err}",
            folder.display()
        )
    };
    std::fs::create_dir_all(folder).map_err(io)?;
    let name = format!("{}-{}", std::process::id(), crate::clock::now().as_millis());
    let request = folder.join(format!("{name}.request"));
    let done = folder.join(format!("{name}.done"));
    // Whole or not at all: the node reads only `.request` files.
    let writing = folder.join(format!("{name}.writing"));
    std::fs::write(&writing, body).map_err(io)?;
    std::fs::rename(&writing, &request).map_err(io)?;
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(answer) = std::fs::read_to_string(&done) {
            let _ = std::fs::remove_file(&done);
            return match answer.strip_prefix("ok ") {
                Some(text) => Ok(text.to_owned()),
                None => Err(answer.strip_prefix("error: ").unwrap_or(&answer).to_owned()),
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = std::fs::remove_file(&request);
            return Err(format!(
                "the running node did not answer within {} s (is it stuck, or another process holding the data folder?)",
                within.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
