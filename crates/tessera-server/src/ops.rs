//! Operations routes: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{StatusCode, header};
use serde_json::json;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Alive: the process answers. Touches nothing else, so it stays cheap under load.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the database answers and its schema is the one this build expects.
async fn readyz(State(state): State<AppState>) -> Response {
    let reason = match state.db.ping().await {
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            Some("database unreachable".to_owned())
        }
        Ok(()) => match state.db.ensure_schema_current().await {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        },
    };
    match reason {
        None => Json(json!({"status": "ready", "database": state.db.backend().as_str()}))
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let queued = tessera_store::jobs::queued_count(&state.db).await.ok();
    let body = state.metrics.render(state.db.pool_stats(), queued);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
