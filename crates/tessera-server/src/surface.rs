//! Which protocol a path belongs to, and how that protocol spells an error the middleware itself
//! must answer (a panic, an oversized body, an unknown route). Handler errors of each surface
//! go through that surface's own error type (e.g. [`crate::api::ApiError`]), which uses the same
//! builders, so each surface has one error format.

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::api::error::problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    /// `/api/...`: the REST API, errors as `application/problem+json`.
    Api,
    /// `/scim/...`: SCIM 2.0, errors as SCIM error JSON.
    Scim,
    /// `/oauth2/...` and `/.well-known/...`: errors as RFC 6749 JSON.
    OAuth,
    /// `/ui/...`: the admin console, errors as HTML.
    Ui,
    /// Health, readiness, metrics and everything else.
    Ops,
}

impl Surface {
    pub fn of(path: &str) -> Surface {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "api" => Surface::Api,
            "scim" => Surface::Scim,
            "oauth2" | ".well-known" => Surface::OAuth,
            "ui" => Surface::Ui,
            _ => Surface::Ops,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Api => "api",
            Surface::Scim => "scim",
            Surface::OAuth => "oauth",
            Surface::Ui => "ui",
            Surface::Ops => "ops",
        }
    }

    /// An error answered by the middleware, in this surface's format.
    pub fn error(self, status: StatusCode, detail: &str, request_id: &str) -> Response {
        match self {
            Surface::Api | Surface::Ops => {
                let kind = match status {
                    StatusCode::NOT_FOUND => "not-found",
                    StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
                    StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
                    StatusCode::BAD_REQUEST => "bad-request",
                    _ => "internal",
                };
                problem(status, kind, detail, Some(request_id), None)
            }
            Surface::Scim => {
                // No scimType: RFC 7644 §3.12 defines none for a body that is too large.
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "status": status.as_u16().to_string(),
                    "detail": format!("{detail} (request id {request_id})"),
                });
                let mut response = (status, Json(body)).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/scim+json"),
                );
                response
            }
            Surface::OAuth => {
                let error = if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request"
                };
                let mut response = (
                    status,
                    Json(json!({"error": error, "error_description": format!("{detail} (request id {request_id})")})),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Surface::Ui => {
                let html = format!(
                    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tessera: {code}</title></head>\
                     <body><h1>{code} {reason}</h1><p>{detail}</p><p>Request id: <code>{request_id}</code></p></body></html>",
                    code = status.as_u16(),
                    reason = status.canonical_reason().unwrap_or(""),
                    detail = html_escape(detail),
                    request_id = html_escape(request_id),
                );
                (
                    status,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    html,
                )
                    .into_response()
            }
        }
    }

    /// The answer to an unhandled error or a panic: nothing internal, only the request id.
    pub fn internal_error(self, request_id: &str) -> Response {
        self.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error occurred. It has been logged; quote the request id when reporting it.",
            request_id,
        )
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The fallback for unknown routes, in the format of the surface the path belongs to.
pub async fn not_found(request: Request) -> Response {
    let surface = Surface::of(request.uri().path());
    let request_id = crate::context::current_request_id().unwrap_or_default();
    surface.error(StatusCode::NOT_FOUND, "No such resource.", &request_id)
}

/// The answer to a known path with a method it does not take.
pub async fn method_not_allowed(request: Request) -> Response {
    let surface = Surface::of(request.uri().path());
    let request_id = crate::context::current_request_id().unwrap_or_default();
    let detail = format!("{} is not allowed on this resource.", request.method());
    surface.error(StatusCode::METHOD_NOT_ALLOWED, &detail, &request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_surfaces() {
        assert_eq!(Surface::of("/api/v1/whoami"), Surface::Api);
        assert_eq!(Surface::of("/scim/v2/Users"), Surface::Scim);
        assert_eq!(Surface::of("/oauth2/token"), Surface::OAuth);
        assert_eq!(Surface::of("/.well-known/jwks.json"), Surface::OAuth);
        assert_eq!(Surface::of("/ui"), Surface::Ui);
        assert_eq!(Surface::of("/healthz"), Surface::Ops);
        assert_eq!(Surface::of("/apis"), Surface::Ops);
    }
}
