//! Authentication of `/api` callers.

use axum::extract::FromRequestParts;
use http::request::Parts;
use tessera_store::admin_tokens::{self, AdminToken};

use super::ApiError;
use crate::AppState;
use crate::context::{self, Caller};

/// A caller holding a valid admin token (every permission). Looked up in the store on every
/// request, so a token revoked by any process stops working at once.
pub struct AdminCaller(pub AdminToken);

/// The token of an `Authorization: Bearer <token>` header, if well-formed.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096)
        .then_some(token)
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or(ApiError::Unauthorized)?;
        let found = admin_tokens::authenticate(&state.db, token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if let Some(ctx) = context::current() {
            ctx.set_caller(Caller {
                kind: "admin_token",
                id: found.id.clone(),
            });
        }
        Ok(AdminCaller(found))
    }
}
