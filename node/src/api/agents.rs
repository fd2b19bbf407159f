//! Who the agents are: `GET /api/v1/me` (the caller) and `GET /api/v1/agents` (everyone, for
//! assignment and names in the inbox); managing them, for admins (add, revoke, a new token, a
//! role: the same as `threadline agent …`, through `admin_requests`); and which nodes this one
//! replicates with: `GET /api/v1/replication`.

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};
use threadline_protocol::AgentId;

use super::auth::{AdminCaller, AgentCaller};
use super::views::parse_id;
use super::ApiError;
use crate::admin::AdminError;
use crate::admin_requests;
use crate::ingest::Ingest;
use crate::store::{AgentRecord, AgentRole};

#[derive(Debug, Serialize)]
pub struct AgentView {
    id: AgentId,
    name: String,
    revoked: bool,
    /// `admin` or `agent`.
    role: &'static str,
}

impl From<AgentRecord> for AgentView {
    fn from(record: AgentRecord) -> Self {
        AgentView {
            id: record.id,
            name: record.name,
            revoked: record.revoked,
            role: record.role.name(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgentBody {
    name: String,
    /// `admin` or `agent` (the default).
    role: Option<String>,
}

/// An agent just added or given a new token: the token, shown once.
#[derive(Debug, Serialize)]
pub struct AgentWithToken {
    agent: AgentView,
    token: String,
}

fn role(text: Option<&str>) -> Result<AgentRole, ApiError> {
    match text {
        None => Ok(AgentRole::Agent),
        Some(text) => AgentRole::from_name(text).ok_or_else(|| {
            ApiError::bad_request(format!("unknown role `{text}`: `admin` or `agent`"))
        }),
    }
}

/// Agent `id` as the API shows it.
fn view(ingest: &Ingest, id: AgentId) -> Result<AgentView, ApiError> {
    Ok(crate::admin::agent(ingest.store(), id)
        .map_err(admin_error)?
        .into())
}

fn admin_error(err: AdminError) -> ApiError {
    match err {
        AdminError::UnknownAgent(_) => ApiError::not_found(err.to_string()),
        AdminError::LastAdmin(_) => {
            ApiError::new(StatusCode::CONFLICT, "last_admin", err.to_string())
        }
        AdminError::Event(message) => ApiError::bad_request(message),
        other => ApiError::internal(other.to_string()),
    }
}

/// `POST /api/v1/agents` `{"name", "role"?}` (admins): a new agent and its token.
pub async fn add(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<NewAgentBody>, JsonRejection>,
) -> Result<Json<AgentWithToken>, ApiError> {
    let Json(body) = body?;
    let role = role(body.role.as_deref())?;
    let new = admin_requests::add_agent(&ingest, &body.name, role, crate::clock::now())
        .await
        .map_err(admin_error)?;
    Ok(Json(AgentWithToken {
        agent: new.agent.into(),
        token: new.token,
    }))
}

/// `POST /api/v1/agents/{id}/revoke` (admins): the agent and its tokens stop working at once;
/// not the only admin.
pub async fn revoke(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let id: AgentId = parse_id(&id, "agent")?;
    admin_requests::revoke_agent(&ingest, id)
        .await
        .map_err(admin_error)?;
    Ok(Json(view(&ingest, id)?))
}

/// `POST /api/v1/agents/{id}/token` (admins): a new token for the agent, shown once; its
/// earlier tokens stop working.
pub async fn reset_token(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
) -> Result<Json<AgentWithToken>, ApiError> {
    let id: AgentId = parse_id(&id, "agent")?;
    let token = admin_requests::reset_token(&ingest, id, crate::clock::now())
        .await
        .map_err(admin_error)?;
    Ok(Json(AgentWithToken {
        agent: view(&ingest, id)?,
        token,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: String,
}

/// `POST /api/v1/agents/{id}/role` `{"role": "admin"|"agent"}` (admins); not demoting the only
/// admin.
pub async fn set_role(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<RoleBody>, JsonRejection>,
) -> Result<Json<AgentView>, ApiError> {
    let id: AgentId = parse_id(&id, "agent")?;
    let Json(body) = body?;
    let role = role(Some(&body.role))?;
    admin_requests::set_role(&ingest, id, role)
        .await
        .map_err(admin_error)?;
    Ok(Json(view(&ingest, id)?))
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
    Ok(Json(view(&ingest, agent)?))
}

/// `GET /api/v1/agents`: every agent of the org, revoked ones included (marked).
pub async fn list(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
) -> Result<Json<AgentList>, ApiError> {
    let agents = ingest
        .store()
        .agents()?
        .into_iter()
        .map(AgentView::from)
        .collect();
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
