//! Tessera's background work: a scheduler that claims due jobs from the store's job queue
//! under a lease and runs them. Several Tessera processes may run it against one database;
//! leases make sure each job runs in one place at a time.

use std::time::Duration;

use serde_json::json;
use tessera_domain::audit::Actor;
use tessera_domain::clock::MS_PER_DAY;
use tessera_store::governance::grants;
use tessera_store::jobs::{self, Job, NewJob};
use tessera_store::{ChangeContext, Db, StoreError, request_log};
use tokio::sync::watch;

/// Job kinds the engine runs.
pub mod kinds {
    /// Deletes request logs (API events, details, log events) past their retention.
    pub const REQUEST_LOG_PURGE: &str = "request_log.purge";
    /// Ends grants past their `ends_at` and starts scheduled ones whose `starts_at` has come.
    pub const GRANTS_DUE: &str = "grants.due";
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Request logs older than this are purged.
    pub request_log_retention_days: i64,
    /// How often the purge runs.
    pub purge_interval: Duration,
    /// How often grants are ended and started on time; a grant ends at most this late.
    pub grants_due_interval: Duration,
    /// How often the queue is polled for due jobs.
    pub poll_interval: Duration,
    /// How long a claimed job is reserved for this worker.
    pub lease: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            request_log_retention_days: 30,
            purge_interval: Duration::from_secs(3600),
            grants_due_interval: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
        }
    }
}

pub struct Engine {
    db: Db,
    config: EngineConfig,
    worker_id: String,
}

/// Jobs claimed per poll.
const CLAIM_BATCH: i64 = 16;
/// Grants ended (and started) per transaction.
const GRANTS_DUE_BATCH: i64 = 500;

impl Engine {
    pub fn new(db: Db, config: EngineConfig) -> Self {
        let worker_id = format!("{}-{}", std::process::id(), tessera_domain::ids::new_id());
        Engine {
            db,
            config,
            worker_id,
        }
    }

    /// Makes sure the recurring jobs exist (a no-op when another process already queued them).
    pub async fn schedule_recurring(&self) -> Result<(), StoreError> {
        for (kind, interval) in [
            (kinds::REQUEST_LOG_PURGE, self.config.purge_interval),
            (kinds::GRANTS_DUE, self.config.grants_due_interval),
        ] {
            jobs::enqueue(
                &self.db,
                NewJob {
                    kind,
                    dedupe_key: Some(kind),
                    payload: json!({}),
                    run_at: self.db.now_ms(),
                    interval_ms: Some(interval.as_millis() as i64),
                    max_attempts: 3,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Claims and runs every due job once; returns how many ran.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let claimed = jobs::claim_due(
            &self.db,
            &self.worker_id,
            self.config.lease.as_millis() as i64,
            CLAIM_BATCH,
        )
        .await?;
        for job in &claimed {
            match self.run_job(job).await {
                Ok(()) => {
                    jobs::complete(&self.db, job, &self.worker_id).await?;
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, kind = %job.kind, attempt = job.attempts, error = %e, "job failed");
                    let backoff_ms = 1000 * 2_i64.pow(job.attempts.clamp(0, 10) as u32);
                    jobs::fail(&self.db, job, &self.worker_id, &e, backoff_ms).await?;
                }
            }
        }
        Ok(claimed.len())
    }

    async fn run_job(&self, job: &Job) -> Result<(), String> {
        match job.kind.as_str() {
            kinds::REQUEST_LOG_PURGE => {
                let cutoff = self.db.now_ms() - self.config.request_log_retention_days * MS_PER_DAY;
                let purged = request_log::purge_older_than(&self.db, cutoff, 5000)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    api_events = purged.api_events,
                    log_events = purged.log_events,
                    retention_days = self.config.request_log_retention_days,
                    "purged request logs past retention"
                );
                Ok(())
            }
            kinds::GRANTS_DUE => {
                let ctx = ChangeContext::new(Actor::system());
                let mut total = grants::DueOutcome::default();
                // Batches keep each transaction short; a backlog (after downtime) drains in turn.
                loop {
                    let done = grants::end_due(&self.db, &ctx, GRANTS_DUE_BATCH)
                        .await
                        .map_err(|e| e.to_string())?;
                    total.expired += done.expired;
                    total.started += done.started;
                    if (done.expired as i64) < GRANTS_DUE_BATCH
                        && (done.started as i64) < GRANTS_DUE_BATCH
                    {
                        break;
                    }
                }
                if total != grants::DueOutcome::default() {
                    tracing::info!(
                        expired = total.expired,
                        started = total.started,
                        "memberships ended and started on time"
                    );
                }
                Ok(())
            }
            other => Err(format!("no handler for job kind {other:?}")),
        }
    }

    /// Polls the queue until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.schedule_recurring().await {
            tracing::error!(error = %e, "cannot schedule recurring jobs");
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Err(e) = self.run_due().await {
                tracing::error!(error = %e, "job queue poll failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::debug!("engine stopped");
    }
}
