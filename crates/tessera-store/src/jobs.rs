//! The job queue: durable background work claimed through leases, so several Tessera processes
//! sharing one database never run the same job at once, and a crashed worker's job is retried
//! when its lease runs out. Every change goes through [`Db::begin`], so on SQLite it queues
//! with this process's other writers instead of polling for SQLite's write lock.

use serde::Serialize;
use serde_json::Value;
use tessera_domain::ids::new_id;

use crate::{Backend, Db, StoreResult, with_conn, with_pool};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub dedupe_key: Option<String>,
    pub payload: String,
    pub status: String,
    pub run_at: i64,
    pub interval_ms: Option<i64>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub last_error: Option<String>,
}

const JOB_COLUMNS: &str = "id, kind, dedupe_key, payload, status, run_at, interval_ms, attempts, max_attempts, \
     locked_by, locked_until, last_error";

pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    /// At most one queued or running job exists per (kind, key); enqueueing again is a no-op.
    pub dedupe_key: Option<&'a str>,
    pub payload: Value,
    pub run_at: i64,
    /// Recurring jobs go back to the queue this long after each run instead of finishing.
    pub interval_ms: Option<i64>,
    pub max_attempts: i32,
}

/// Enqueues a job; returns its id, or `None` when a live job with the same key exists.
pub async fn enqueue(db: &Db, job: NewJob<'_>) -> StoreResult<Option<String>> {
    let id = new_id();
    let mut tx = db.begin().await?;
    let now = tx.now();
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO jobs (id, kind, dedupe_key, payload, status, run_at, interval_ms, attempts, max_attempts, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6, 0, $7, $8, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(job.kind)
        .bind(job.dedupe_key)
        .bind(job.payload.to_string())
        .bind(job.run_at)
        .bind(job.interval_ms)
        .bind(job.max_attempts.max(1))
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok((inserted > 0).then_some(id))
}

/// Claims up to `limit` due jobs for `worker` until `now + lease_ms`. A job is due when it is
/// queued and its time has come, or running under a lease that has expired (its worker died).
pub async fn claim_due(db: &Db, worker: &str, lease_ms: i64, limit: i64) -> StoreResult<Vec<Job>> {
    let mut tx = db.begin().await?;
    let now = tx.now();
    // PostgreSQL: SKIP LOCKED lets concurrent claimers pass over each other's rows instead of
    // queueing behind them. SQLite serialises writers, so the plain subquery is already safe.
    let lock_clause = match db.backend() {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, \
         updated_at = $3 WHERE id IN (SELECT id FROM jobs WHERE \
         ((status = 'queued' AND run_at <= $3) OR (status = 'running' AND locked_until < $3)) \
         ORDER BY run_at LIMIT $4 {lock_clause}) RETURNING {JOB_COLUMNS}"
    );
    let claimed = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
    });
    tx.commit().await?;
    Ok(claimed)
}

/// Marks a claimed job done: recurring jobs are queued again for their next run.
/// Does nothing if the lease was lost to another worker meanwhile.
pub async fn complete(db: &Db, job: &Job, worker: &str) -> StoreResult<bool> {
    let mut tx = db.begin().await?;
    let now = tx.now();
    let done = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE jobs SET status = CASE WHEN interval_ms IS NULL THEN 'succeeded' ELSE 'queued' END, \
             run_at = CASE WHEN interval_ms IS NULL THEN run_at ELSE $1 + interval_ms END, \
             attempts = CASE WHEN interval_ms IS NULL THEN attempts ELSE 0 END, \
             locked_by = NULL, locked_until = NULL, last_error = NULL, updated_at = $1 \
             WHERE id = $2 AND locked_by = $3 AND status = 'running'",
        )
        .bind(now)
        .bind(&job.id)
        .bind(worker)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok(done > 0)
}

/// Records a failed attempt: retried after `retry_in_ms` until `max_attempts`, then `failed`
/// (recurring jobs instead wait for their next regular run).
pub async fn fail(
    db: &Db,
    job: &Job,
    worker: &str,
    error: &str,
    retry_in_ms: i64,
) -> StoreResult<bool> {
    let mut tx = db.begin().await?;
    let now = tx.now();
    let error: String = error.chars().take(4000).collect();
    let done = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE jobs SET \
             status = CASE WHEN interval_ms IS NOT NULL OR attempts < max_attempts THEN 'queued' ELSE 'failed' END, \
             run_at = CASE WHEN interval_ms IS NOT NULL AND attempts >= max_attempts THEN $1 + interval_ms \
                           ELSE $1 + $2 END, \
             attempts = CASE WHEN interval_ms IS NOT NULL AND attempts >= max_attempts THEN 0 ELSE attempts END, \
             locked_by = NULL, locked_until = NULL, last_error = $3, updated_at = $1 \
             WHERE id = $4 AND locked_by = $5 AND status = 'running'",
        )
        .bind(now)
        .bind(retry_in_ms)
        .bind(&error)
        .bind(&job.id)
        .bind(worker)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok(done > 0)
}

pub async fn get(db: &Db, id: &str) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
    Ok(with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    }))
}

/// Jobs waiting to run now or later (the queue depth), counted on the `jobs_due` index.
pub async fn queued_count(db: &Db) -> StoreResult<i64> {
    Ok(with_pool!(db, |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
            .fetch_one(pool)
            .await?
    }))
}
