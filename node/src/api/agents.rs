//! Who the agents are: `GET /api/v1/me` (the caller) and `GET /api/v1/agents` (everyone, for
//! assignment and names in the inbox); and which nodes this one replicates with:
//! `GET /api/v1/replication`.

use axum::{extract::State, Json};
use serde::Serialize;
use threadline_protocol::AgentId;

use super::auth::AgentCaller;
use super::ApiError;
use crate::ingest::Ingest;
use crate::store::{AgentRecord, TreeName};

#[derive(Debug, Serialize)]
pub struct AgentView {
    id: AgentId,
    name: String,
    revoked: bool,
}

impl From<AgentRecord> for AgentView {
    fn from(record: AgentRecord) -> Self {
        AgentView {
            id: record.id,
            name: record.name,
            revoked: record.revoked,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AgentList {
    agents: Vec<AgentView>,
}

/// `GET /api/v1/me`: the calling agent.
pub async fn me(
    AgentCaller(agent): AgentCaller,
    State(ingest): State<Ingest>,
) -> Result<Json<AgentView>, ApiError> {
    let stored = ingest
        .store()
        .tree(TreeName::Agents)
        .get(agent.as_bytes())
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no agent {agent}")))?;
    let record: AgentRecord = crate::store::decode("agents", &stored)?;
    Ok(Json(record.into()))
}

/// `GET /api/v1/agents`: every agent of the org, revoked ones included (marked).
pub async fn list(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
) -> Result<Json<AgentList>, ApiError> {
    let agents = ingest
        .store()
        .tree(TreeName::Agents)
        .iter()
        .map(|entry| {
            let (_, value) = entry.map_err(|e| ApiError::internal(e.to_string()))?;
            let record: AgentRecord = crate::store::decode("agents", &value)?;
            Ok(record.into())
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(AgentList { agents }))
}

/// What `GET /api/v1/replication` shows.
#[derive(Debug, Serialize)]
pub struct ReplicationView {
    #[serde(flatten)]
    status: crate::replication_status::StatusView,
    /// How many logs this node holds (the directory and every thread).
    logs: usize,
    /// The digest of their summaries: equal on two nodes that hold the same events.
    logs_digest: String,
    /// The hash of the contact directory's derived state.
    directory_hash: String,
}

/// `GET /api/v1/replication`: this node's PeerId and addresses, its connected peers, and
/// digests to compare with other nodes of the org.
pub async fn replication(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
) -> Result<Json<ReplicationView>, ApiError> {
    let org = ingest.identity().org;
    let store = ingest.store().clone();
    let summaries = tokio::task::spawn_blocking(move || {
        crate::replication::logs::shared_summaries(&store, org, org)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let directory_hash = ingest
        .directory()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .state()
        .hash()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .to_string();
    Ok(Json(ReplicationView {
        status: ingest.replication().view(),
        logs: summaries.len(),
        logs_digest: threadline_protocol::sync::summaries_digest(&summaries).to_string(),
        directory_hash,
    }))
}
