//! The REST API's one error type and its mapping to `application/problem+json` (RFC 9457).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tessera_store::StoreError;

use crate::context;

/// Everything an `/api` handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Option<Value>,
    },
    #[error("{0}")]
    Conflict(String),
    /// An upload with invalid rows: every error (up to 1000) and their count.
    #[error("{count} rows are invalid")]
    InvalidRows { count: usize, errors: Value },
    /// The `If-Match` version is not the current one.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is over the route's limit (in bytes).
    #[error("the request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// A governance rule refused the change; `code` is the stable problem type.
    #[error("{detail}")]
    Refused { code: &'static str, detail: String },
    /// Anything unexpected: logged in full, answered with a bare 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            detail: detail.into(),
            errors: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, id } => {
                ApiError::NotFound(format!("{entity} {id} was not found"))
            }
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            StoreError::VersionMismatch { current } => ApiError::PreconditionFailed(format!(
                "the resource has changed since that ETag: it is now at W/\"{current}\""
            )),
            StoreError::Refused(refusal) => ApiError::Refused {
                code: refusal.code(),
                detail: refusal.to_string(),
            },
            StoreError::Invalid(invalid) => ApiError::BadRequest {
                detail: invalid.to_string(),
                errors: Some(json!([{"field": invalid.field, "reason": invalid.reason}])),
            },
            other => ApiError::Internal(format!("{other:?}")),
        }
    }
}

/// Builds a problem document. `kind` becomes the `type` URN (`urn:tessera:problem:<kind>`).
pub fn problem(
    status: StatusCode,
    kind: &str,
    detail: &str,
    request_id: Option<&str>,
    errors: Option<Value>,
) -> Response {
    problem_response(
        status,
        problem_body(status, kind, detail, request_id, errors),
    )
}

fn problem_body(
    status: StatusCode,
    kind: &str,
    detail: &str,
    request_id: Option<&str>,
    errors: Option<Value>,
) -> Value {
    let mut body = json!({
        "type": format!("urn:tessera:problem:{kind}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(id) = request_id {
        body["request_id"] = json!(id);
    }
    if let Some(errors) = errors {
        body["errors"] = errors;
    }
    body
}

fn problem_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ctx = context::current();
        let request_id = ctx.as_ref().map(|c| c.request_id.clone());
        let rid = request_id.as_deref();
        match self {
            ApiError::Unauthorized => {
                let mut r = problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "A valid bearer token is required.",
                    rid,
                    None,
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tessera\""),
                );
                r
            }
            ApiError::Forbidden(d) => problem(StatusCode::FORBIDDEN, "forbidden", &d, rid, None),
            ApiError::NotFound(d) => problem(StatusCode::NOT_FOUND, "not-found", &d, rid, None),
            ApiError::BadRequest { detail, errors } => {
                problem(StatusCode::BAD_REQUEST, "bad-request", &detail, rid, errors)
            }
            ApiError::Conflict(d) => problem(StatusCode::CONFLICT, "conflict", &d, rid, None),
            ApiError::InvalidRows { count, errors } => {
                let detail =
                    format!("{count} row(s) of the upload are invalid; nothing was applied");
                let mut body = problem_body(
                    StatusCode::BAD_REQUEST,
                    "invalid-rows",
                    &detail,
                    rid,
                    Some(errors),
                );
                body["error_count"] = json!(count);
                problem_response(StatusCode::BAD_REQUEST, body)
            }
            ApiError::PreconditionFailed(d) => problem(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                &d,
                rid,
                None,
            ),
            ApiError::PayloadTooLarge(limit) => problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                &format!("The request body exceeds {limit} bytes."),
                rid,
                None,
            ),
            ApiError::UnsupportedMediaType(d) => problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                &d,
                rid,
                None,
            ),
            ApiError::Refused { code, detail } => {
                problem(StatusCode::UNPROCESSABLE_ENTITY, code, &detail, rid, None)
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %tessera_domain::redact::redact_text(&detail), "internal error");
                match &ctx {
                    Some(c) => {
                        c.set_internal_error(detail);
                        c.surface.internal_error(&c.request_id)
                    }
                    None => crate::surface::Surface::Api.internal_error(""),
                }
            }
        }
    }
}
