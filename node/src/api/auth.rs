//! Bearer tokens: `Authorization: Bearer <token>`, stored as SHA-256 hashes.

use axum::{extract::FromRequestParts, http::request::Parts};
use sha2::{Digest as _, Sha256};
use threadline_protocol::{AgentId, ChannelKind};

use super::ApiError;
use crate::ingest::Ingest;
use crate::store::{TokenRecord, TokenRole, TreeName};

/// The SHA-256 of a token: what the store keeps.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn record(parts: &Parts, ingest: &Ingest) -> Result<TokenRecord, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
    let stored = ingest
        .store()
        .tree(TreeName::Tokens)
        .get(token_hash(token.trim()))
        .map_err(|err| ApiError::internal(err.to_string()))?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    let record: TokenRecord = crate::store::decode("tokens", &stored)?;
    if record.revoked {
        return Err(ApiError::unauthorized("revoked token"));
    }
    Ok(record)
}

/// An agent authenticated by its token.
#[derive(Debug, Clone, Copy)]
pub struct AgentCaller(pub AgentId);

impl FromRequestParts<Ingest> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ingest: &Ingest) -> Result<Self, ApiError> {
        match record(parts, ingest)?.role {
            TokenRole::Agent(agent) => Ok(AgentCaller(agent)),
            TokenRole::Bridge(_) => Err(ApiError::forbidden(
                "a bridge token cannot use the agent API",
            )),
        }
    }
}

/// An agent with the admin role, authenticated by its token.
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller(pub AgentId);

impl FromRequestParts<Ingest> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ingest: &Ingest) -> Result<Self, ApiError> {
        let AgentCaller(agent) = AgentCaller::from_request_parts(parts, ingest).await?;
        let admin = crate::admin::agent(ingest.store(), agent)
            .is_ok_and(|record| record.role == crate::store::AgentRole::Admin);
        if !admin {
            return Err(ApiError::forbidden(
                "only an admin may manage agents (`threadline agent role ID admin` makes one)",
            ));
        }
        Ok(AdminCaller(agent))
    }
}

/// A bridge authenticated by its token, for one channel.
#[derive(Debug, Clone, Copy)]
pub struct BridgeCaller(pub ChannelKind);

impl FromRequestParts<Ingest> for BridgeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ingest: &Ingest) -> Result<Self, ApiError> {
        match record(parts, ingest)?.role {
            TokenRole::Bridge(channel) => Ok(BridgeCaller(channel)),
            TokenRole::Agent(_) => Err(ApiError::forbidden(
                "an agent token cannot use the bridge API",
            )),
        }
    }
}
