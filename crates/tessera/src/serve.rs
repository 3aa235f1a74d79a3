//! `tessera serve`: open the store, bootstrap the first admin token, then run the HTTP server,
//! the request-log writer and the job engine until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tessera_domain::SystemClock;
use tessera_domain::audit::Actor;
use tessera_engine::{Engine, EngineConfig};
use tessera_server::AppState;
use tessera_store::admin_tokens::{self, Bootstrap};
use tessera_store::{ChangeContext, Db, DbTarget};
use tokio::sync::watch;

use crate::config::Config;

/// Opens (and migrates) the configured database.
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let target = DbTarget::from_config(config.database_url.as_deref(), &config.data_dir)?;
    Db::open_and_migrate(&target, Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot open the database {}", target.describe()))
}

/// What to print once the server listens (the demo's guide).
pub type Banner = Box<dyn FnOnce(&str) + Send>;

pub async fn run(config: Config, banner: Option<Banner>) -> anyhow::Result<ExitCode> {
    let db = open_db(&config).await?;
    let target = DbTarget::from_config(config.database_url.as_deref(), &config.data_dir)?;
    tracing::info!(database = %target.describe(), "database ready");

    match admin_tokens::bootstrap(
        &db,
        &ChangeContext::new(Actor::system()),
        config.bootstrap_token.as_deref(),
    )
    .await?
    {
        Bootstrap::AlreadyPresent => {}
        Bootstrap::StoredSupplied(t) => {
            tracing::info!(token_id = %t.id, "stored the bootstrap admin token from configuration")
        }
        Bootstrap::Generated(t, value) => {
            tracing::info!(token_id = %t.id, "created the first admin token (printed once on stdout)");
            println!("No admin token existed, so Tessera created one. It is shown only this once:");
            println!("{value}");
        }
    }

    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let base_url = format!("http://{}", listener.local_addr()?);

    let (state, writer) = AppState::new(db.clone(), config.server_config());
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer_task = tokio::spawn(writer.run(stop_rx.clone()));
    let engine = Engine::new(
        db.clone(),
        EngineConfig {
            request_log_retention_days: config.request_log.retention_days,
            ..EngineConfig::default()
        },
    );
    let engine_task = tokio::spawn(engine.run(stop_rx));

    tracing::info!(address = %base_url, "listening");
    if let Some(banner) = banner {
        banner(&base_url);
    }
    tessera_server::serve(listener, tessera_server::app(state), shutdown).await?;

    tracing::info!("shutting down: finishing background work");
    let _ = stop_tx.send(true);
    let _ = engine_task.await;
    // The writer drains its queue; a database that stopped answering must not hold the exit.
    if tokio::time::timeout(std::time::Duration::from_secs(30), writer_task)
        .await
        .is_err()
    {
        tracing::error!("request log not fully flushed within 30 s; exiting anyway");
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Installs the SIGINT (Ctrl-C) and SIGTERM handlers at once, and returns a future that
/// resolves when either arrives. Installed before the server says it is listening, so a
/// signal sent as soon as that line appears is never missed (the default action would kill
/// the process without draining its work).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutdown signal received");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received");
        })
    }
}
