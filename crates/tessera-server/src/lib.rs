//! Tessera's HTTP server: the routers of every surface, authentication, request logging,
//! metrics and the mapping of errors to each surface's own response format.
//!
//! Layout: [`observe`] is the one middleware every request passes (request id, tracing span,
//! panic capture, metrics, request log); [`surface`] decides which protocol's error format a path
//! speaks; [`api`] holds the `/api/v1` handlers; [`ops`] the health, readiness and metrics routes;
//! [`request_log`] queues log rows and writes them in batches off the request path.

pub mod api;
mod config;
pub mod context;
mod metrics;
mod observe;
mod ops;
mod panic_capture;
pub mod request_log;
pub mod scim;
pub mod surface;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tessera_store::Db;

pub use config::{BodyCapture, RequestLogConfig, ServerConfig, normalize_public_url};
pub use metrics::Metrics;
pub use request_log::{RequestLogSink, RequestLogWriter};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    pub request_log: RequestLogSink,
}

impl AppState {
    /// Builds the state and the request-log writer that drains its queue. Run the writer
    /// (`RequestLogWriter::run`) on its own task and stop it after the server has stopped.
    pub fn new(db: Db, config: ServerConfig) -> (AppState, RequestLogWriter) {
        let metrics = Arc::new(Metrics::new());
        let (sink, writer) = request_log::channel(db.clone(), &config.request_log, metrics.clone());
        let state = AppState {
            db,
            config: Arc::new(config),
            metrics,
            request_log: sink,
        };
        (state, writer)
    }
}

/// Every route of every surface, without middleware (tests add routes before [`with_middleware`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(ops::routes())
        .merge(api::routes())
        .merge(scim::routes())
        .fallback(surface::not_found)
        .method_not_allowed_fallback(surface::method_not_allowed)
}

/// Wraps routes in the middleware every request passes, and binds the state.
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    panic_capture::install();
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// The complete application.
pub fn app(state: AppState) -> Router {
    with_middleware(routes(), state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// RFC 3339 text of an epoch-millisecond UTC timestamp, as every API response shows time.
pub fn rfc3339(epoch_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(epoch_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
