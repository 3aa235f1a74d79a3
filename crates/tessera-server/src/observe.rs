//! The middleware every request passes: it assigns the request id, opens the tracing span that
//! carries it, catches panics, and afterwards records metrics and the request log.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, StatusCode};
use tessera_domain::ids::new_id;
use tessera_domain::redact;
use tessera_store::request_log::{ApiEvent, LogEvent};
use tracing::Instrument;

use crate::AppState;
use crate::context::{self, RequestContext};
use crate::panic_capture;
use crate::request_log::{LogRecord, RawDetail};
use crate::surface::Surface;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Responses larger than this are passed through without keeping their body for the log.
const MAX_RESPONSE_CAPTURE: u64 = 4 * 1024 * 1024;

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let occurred_at = state.db.now_ms();
    let request_id = context::request_id_from(request.headers().get(REQUEST_ID_HEADER));
    let surface = Surface::of(request.uri().path());
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path =
        redact::redact_path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()));

    let log_config = &state.config.request_log;
    let logged = log_config.enabled && (surface != Surface::Ops || log_config.include_ops);
    let capture_bodies = logged && log_config.bodies.for_surface(surface);

    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, path = %path);
    let ctx = Arc::new(RequestContext::new(request_id.clone(), surface));

    // Records a log event (a panic, or an error answered with a bare 500) for this request.
    let log_error = |kind: &str, message: &str, detail: &str| {
        state.request_log.submit(LogRecord::Log(Box::new(LogEvent {
            id: new_id(),
            occurred_at,
            level: "error".into(),
            kind: kind.into(),
            request_id: Some(request_id.clone()),
            method: Some(method.clone()),
            path: Some(path.clone()),
            route: route.clone(),
            message: redact::redact_text(message),
            detail: Some(redact::redact_text(detail)),
        })));
    };

    let request_headers = logged.then(|| request.headers().clone());
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| {
            redact::redact_header("user-agent", &ua.chars().take(512).collect::<String>())
                .into_owned()
        });

    let mut request_body: Option<Bytes> = None;
    let mut response = 'handled: {
        // Refuse a declared oversized body before reading any of it, in the surface's format
        // (a body without Content-Length is cut off by the limit while it is read).
        let limit = state
            .config
            .body_limit(request.method(), request.uri().path());
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            break 'handled too_large(surface, limit, &request_id);
        }
        let request = if capture_bodies {
            let (parts, body) = request.into_parts();
            match axum::body::to_bytes(body, limit).await {
                Ok(bytes) => {
                    request_body = (!bytes.is_empty()).then(|| bytes.clone());
                    Request::from_parts(parts, Body::from(bytes))
                }
                Err(e) => {
                    let over_limit = std::error::Error::source(&e)
                        .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                    break 'handled if over_limit {
                        too_large(surface, limit, &request_id)
                    } else {
                        surface.error(
                            StatusCode::BAD_REQUEST,
                            "The request body could not be read.",
                            &request_id,
                        )
                    };
                }
            }
        } else {
            request
        };
        let outcome = ctx
            .clone()
            .scope(AssertUnwindSafe(next.run(request)).catch_unwind())
            .instrument(span.clone())
            .await;
        match outcome {
            Ok(response) => response,
            Err(payload) => {
                // Same thread as the panic: the hook's report is still in its thread-local.
                let report = panic_capture::take_report(&*payload);
                let message = format!("panic at {}: {}", report.location, report.message);
                log_error("panic", &message, &report.backtrace);
                surface.internal_error(&request_id)
            }
        }
    };

    if let Some(detail) = ctx.take_internal_error() {
        log_error("error", "unhandled error", &detail);
    }

    // Keep the response body only when its exact size is known and modest: a stream, or a
    // body of unknown length, passes through untouched.
    let mut response_body: Option<Bytes> = None;
    let exact_size = response.body().size_hint().exact();
    if capture_bodies && exact_size.is_some_and(|n| n > 0 && n <= MAX_RESPONSE_CAPTURE) {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, MAX_RESPONSE_CAPTURE as usize).await {
            Ok(bytes) => {
                response_body = Some(bytes.clone());
                response = Response::from_parts(parts, Body::from(bytes));
            }
            Err(e) => {
                log_error(
                    "error",
                    "the response body could not be read",
                    &e.to_string(),
                );
                response = surface.internal_error(&request_id);
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.observe_request(
        metric_method(&method),
        route.as_deref().unwrap_or("unmatched"),
        status,
        elapsed.as_secs_f64(),
    );
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::debug!(status, latency_ms, "request");
        }
    });

    if logged {
        let caller = ctx.caller();
        let event = ApiEvent {
            id: new_id(),
            occurred_at,
            request_id,
            surface: surface.as_str().into(),
            method,
            route,
            path,
            status: status.into(),
            latency_us: elapsed.as_micros() as i64,
            caller_kind: caller.as_ref().map(|c| c.kind.to_owned()),
            caller_id: caller.map(|c| c.id),
            remote_addr,
            user_agent,
        };
        let detail = RawDetail {
            request_headers: request_headers.unwrap_or_default(),
            request_body,
            response_headers: response.headers().clone(),
            response_body,
        };
        state
            .request_log
            .submit(LogRecord::Api(Box::new((event, detail))));
    }
    response
}

/// The method as a metric label: standard methods by name, anything else as `other`, so a
/// client cannot grow the label set.
fn metric_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

fn too_large(surface: Surface, limit: usize, request_id: &str) -> Response {
    surface.error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("The request body exceeds {limit} bytes."),
        request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(metric_method("GET"), "GET");
        assert_eq!(metric_method("BREW"), "other");
    }
}
