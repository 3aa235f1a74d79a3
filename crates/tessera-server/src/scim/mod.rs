//! `/scim/v2`: the SCIM 2.0 service provider that Entra ID and Okta provision into.
//!
//! Handlers are thin: authenticate the data source ([`ScimCaller`]), parse with
//! `tessera-scim`, call one store function, render. [`ScimHttpError`] is the surface's one
//! error-to-response mapping; every response is `application/scim+json`.

mod bulk;
mod handlers;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;
use tessera_domain::audit::{Actor, ActorKind};
use tessera_scim::{ScimError, ScimType};
use tessera_store::scim_tokens;
use tessera_store::{ChangeContext, StoreError};

use crate::AppState;
use crate::context::{self, Caller};

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

pub fn routes() -> Router<AppState> {
    use handlers::*;
    Router::new()
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/scim/v2/ResourceTypes", get(resource_types))
        .route("/scim/v2/ResourceTypes/{id}", get(resource_type))
        .route("/scim/v2/Schemas", get(schemas))
        .route("/scim/v2/Schemas/{id}", get(schema))
        .merge(resource_routes::<Users>("/scim/v2/Users"))
        .merge(resource_routes::<Groups>("/scim/v2/Groups"))
        .route("/scim/v2/.search", post(search_all))
        .route("/scim/v2/Bulk", post(bulk::bulk))
        .route("/scim/v2/Me", any(me))
        .route("/scim/v2/Me/{*rest}", any(me))
}

/// The routes of one resource type's endpoint.
fn resource_routes<E: handlers::Endpoint>(endpoint: &str) -> Router<AppState> {
    use handlers::*;
    Router::new()
        .route(endpoint, get(list::<E>).post(create::<E>))
        .route(&format!("{endpoint}/.search"), post(search::<E>))
        .route(
            &format!("{endpoint}/{{id}}"),
            get(read::<E>)
                .put(replace::<E>)
                .patch(patch::<E>)
                .delete(delete::<E>),
        )
}

/// The surface's one error type: a SCIM error, or something unexpected.
#[derive(Debug)]
pub enum ScimHttpError {
    Scim(ScimError),
    Unauthorized,
    Internal(String),
}

impl From<ScimError> for ScimHttpError {
    fn from(e: ScimError) -> Self {
        ScimHttpError::Scim(e)
    }
}

impl From<StoreError> for ScimHttpError {
    fn from(e: StoreError) -> Self {
        ScimHttpError::Scim(match e {
            StoreError::NotFound { entity, id } => {
                ScimError::not_found(format!("{entity} {id} was not found"))
            }
            StoreError::Scim(e) => e,
            StoreError::VersionMismatch { current } => ScimError::new(
                412,
                None,
                format!(
                    "the resource has changed (it is now at version W/\"{current}\"); read it again"
                ),
            ),
            StoreError::Conflict(msg) => ScimError::new(409, Some(ScimType::Uniqueness), msg),
            StoreError::Invalid(invalid) => {
                ScimError::bad_request(ScimType::InvalidValue, invalid.to_string())
            }
            other => return ScimHttpError::Internal(format!("{other:?}")),
        })
    }
}

/// A response with the SCIM media type.
pub fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    response
}

impl IntoResponse for ScimHttpError {
    fn into_response(self) -> Response {
        let ctx = context::current();
        match self {
            ScimHttpError::Scim(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                scim_json(status, &e.to_json())
            }
            ScimHttpError::Unauthorized => {
                let e = ScimError::new(401, None, "a valid SCIM bearer token is required");
                let mut r = scim_json(StatusCode::UNAUTHORIZED, &e.to_json());
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tessera-scim\""),
                );
                r
            }
            ScimHttpError::Internal(detail) => {
                tracing::error!(error = %tessera_domain::redact::redact_text(&detail), "internal error");
                match &ctx {
                    Some(c) => {
                        c.set_internal_error(detail);
                        c.surface.internal_error(&c.request_id)
                    }
                    None => crate::surface::Surface::Scim.internal_error(""),
                }
            }
        }
    }
}

/// A SCIM client, authenticated by a token of one data source.
pub struct ScimCaller {
    pub data_source_id: String,
}

impl ScimCaller {
    /// The audit actor: the data source, as DESIGN says every SCIM change is recorded.
    pub fn change_context(&self) -> ChangeContext {
        let ctx = ChangeContext::new(Actor::new(ActorKind::DataSource, &self.data_source_id));
        match context::current() {
            Some(c) => ctx.with_request_id(c.request_id.clone()),
            None => ctx,
        }
    }
}

impl FromRequestParts<AppState> for ScimCaller {
    type Rejection = ScimHttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = crate::api::bearer_token(parts).ok_or(ScimHttpError::Unauthorized)?;
        let found = scim_tokens::authenticate(&state.db, token)
            .await?
            .ok_or(ScimHttpError::Unauthorized)?;
        if let Some(ctx) = context::current() {
            ctx.set_caller(Caller {
                kind: "scim_token",
                id: found.id.clone(),
            });
        }
        Ok(ScimCaller {
            data_source_id: found.data_source_id,
        })
    }
}

/// A JSON request body, with SCIM errors for a body too large (413) or not JSON (400).
pub struct ScimBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = ScimHttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ScimError::new(
                    413,
                    None,
                    "the request body is larger than this server accepts",
                )
            } else {
                ScimError::bad_request(ScimType::InvalidSyntax, e.body_text())
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        Ok(ScimBody(value))
    }
}

/// The versions named by `If-Match` (`None`: no header, or `*`). An unparseable tag matches
/// no version, so the request fails with 412 rather than overwriting blindly.
pub fn if_match(headers: &HeaderMap) -> Option<Vec<i64>> {
    let value = headers.get(header::IF_MATCH)?.to_str().ok()?;
    if value.trim() == "*" {
        return None;
    }
    Some(etag_versions(value))
}

pub fn etag_versions(value: &str) -> Vec<i64> {
    value
        .split(',')
        .filter_map(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.trim_matches('"').parse().ok()
        })
        .collect()
}

/// `/Me` is for a user authenticating as itself; SCIM clients here are data sources.
async fn me() -> ScimHttpError {
    ScimHttpError::Scim(ScimError::new(
        501,
        None,
        "/Me is not supported: SCIM callers authenticate as a data source, not as a user",
    ))
}
