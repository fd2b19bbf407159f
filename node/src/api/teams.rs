//! `/api/v1/teams`: the org's teams of agents. A team is a signed directory event
//! (`SetTeam`, naming all its agents), so every node of the org has the same teams; threads
//! are given to a team with `POST /threads/{id}/team`. Admins make and change teams; every
//! agent sees them.

use std::collections::BTreeSet;
use std::sync::PoisonError;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};
use threadline_protocol::{name::TeamName, AgentId, EventId};

use super::auth::{AdminCaller, AgentCaller};
use super::views::parse_field;
use super::ApiError;
use crate::ingest::{DirectoryAction, Ingest};
use crate::limits::MAX_TEAM_NAME_BYTES;

/// One team.
#[derive(Debug, Serialize)]
pub struct Team {
    name: String,
    /// Its agents, in id order.
    members: Vec<AgentId>,
}

#[derive(Debug, Serialize)]
pub struct Teams {
    /// By name.
    teams: Vec<Team>,
}

/// `GET /api/v1/teams`.
pub async fn list(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
) -> Result<Json<Teams>, ApiError> {
    let directory = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let teams = directory
        .state()
        .teams
        .iter()
        .map(|(name, members)| Team {
            name: name.to_string(),
            members: members.iter().copied().collect(),
        })
        .collect();
    Ok(Json(Teams { teams }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    /// Agent ids: at least one (`DELETE` removes a team).
    members: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Done {
    /// The events written: none when the team was that already.
    events: Vec<EventId>,
}

/// `PUT /api/v1/teams/{name}` `{"members": ["<agent id>", ...]}` (admins): makes the team or
/// sets its agents, each an agent of the org that is not revoked (`422 unknown_agent`,
/// `422 agent_revoked`).
pub async fn set(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(name): Path<String>,
    body: Result<Json<SetBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let team = team_name(&name)?;
    if body.members.is_empty() {
        return Err(ApiError::bad_request(
            "a team has at least one agent (DELETE /api/v1/teams/{name} removes a team)",
        ));
    }
    if body.members.len() > threadline_protocol::limits::MAX_TEAM_MEMBERS {
        return Err(ApiError::bad_request(format!(
            "{} agents; a team has at most {}",
            body.members.len(),
            threadline_protocol::limits::MAX_TEAM_MEMBERS
        )));
    }
    // An agent of this node's, or one the team has already (an agent of another node of the
    // org, which this node does not know).
    let current = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .state()
        .teams
        .get(&team)
        .cloned()
        .unwrap_or_default();
    let mut members = BTreeSet::new();
    for text in &body.members {
        let agent: AgentId = parse_field(text, "agent id")?;
        if !current.contains(&agent) {
            super::threads::assignable(&ingest, agent)?;
        }
        members.insert(agent);
    }
    let events = ingest
        .change_directory(DirectoryAction::SetTeam { team, members })
        .await?;
    Ok(Json(Done { events }))
}

/// `DELETE /api/v1/teams/{name}` (admins): removes the team. Threads given to it keep its
/// name until someone gives them to another team.
pub async fn remove(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(name): Path<String>,
) -> Result<Json<Done>, ApiError> {
    let team = known_team(&ingest, &name)
        .map_err(|_| ApiError::not_found(format!("no team `{name}` (see GET /api/v1/teams)")))?;
    let events = ingest
        .change_directory(DirectoryAction::SetTeam {
            team,
            members: BTreeSet::new(),
        })
        .await?;
    Ok(Json(Done { events }))
}

/// `name` as one of the org's teams (`422 unknown_team` when there is none of that name).
pub fn known_team(ingest: &Ingest, name: &str) -> Result<TeamName, ApiError> {
    let team = team_name(name)?;
    let known = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .state()
        .teams
        .contains_key(&team);
    if !known {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_team",
            format!("no team `{name}` (see GET /api/v1/teams)"),
        ));
    }
    Ok(team)
}

/// A team's name: 1 to [`MAX_TEAM_NAME_BYTES`] lower-case letters, digits, `-` and `_`, as a
/// label is written in the inbox.
fn team_name(text: &str) -> Result<TeamName, ApiError> {
    super::views::org_name(text, "team name", MAX_TEAM_NAME_BYTES, |t| TeamName::new(t))
}
