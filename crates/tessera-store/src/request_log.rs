//! Request logs: API events (one row per call), their redacted details, and log events (unhandled
//! errors and panics). Written in batches by the server's log writer, never on the request path.
//! Callers redact before handing rows here; the store writes what it is given.

use serde::Serialize;

use crate::{Db, StoreResult, with_pool};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ApiEvent {
    pub id: String,
    pub occurred_at: i64,
    pub request_id: String,
    pub surface: String,
    pub method: String,
    pub route: Option<String>,
    pub path: String,
    pub status: i32,
    pub latency_us: i64,
    pub caller_kind: Option<String>,
    pub caller_id: Option<String>,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ApiEventDetail {
    pub api_event_id: String,
    /// JSON object of header name to (redacted) value.
    pub request_headers: String,
    pub request_body: Option<String>,
    pub request_body_truncated: bool,
    pub response_headers: String,
    pub response_body: Option<String>,
    pub response_body_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LogEvent {
    pub id: String,
    pub occurred_at: i64,
    pub level: String,
    /// `panic` or `error`.
    pub kind: String,
    pub request_id: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub route: Option<String>,
    pub message: String,
    pub detail: Option<String>,
}

/// One batch for the writer.
#[derive(Debug, Default)]
pub struct Batch {
    pub api_events: Vec<ApiEvent>,
    pub details: Vec<ApiEventDetail>,
    pub log_events: Vec<LogEvent>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.api_events.is_empty() && self.details.is_empty() && self.log_events.is_empty()
    }
}

/// Rows per multi-row INSERT: keeps bind counts far below both backends' limits.
const CHUNK: usize = 200;

/// Writes a batch in one transaction with multi-row INSERTs.
pub async fn write_batch(db: &Db, batch: &Batch) -> StoreResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    crate::with_conn!(tx, |conn| {
        for chunk in batch.api_events.chunks(CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO api_events (id, occurred_at, request_id, surface, method, route, path, status, \
                 latency_us, caller_kind, caller_id, remote_addr, user_agent) ",
            );
            qb.push_values(chunk, |mut row, e| {
                row.push_bind(&e.id)
                    .push_bind(e.occurred_at)
                    .push_bind(&e.request_id)
                    .push_bind(&e.surface)
                    .push_bind(&e.method)
                    .push_bind(&e.route)
                    .push_bind(&e.path)
                    .push_bind(e.status)
                    .push_bind(e.latency_us)
                    .push_bind(&e.caller_kind)
                    .push_bind(&e.caller_id)
                    .push_bind(&e.remote_addr)
                    .push_bind(&e.user_agent);
            });
            qb.build().execute(&mut *conn).await?;
        }
        for chunk in batch.details.chunks(CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO api_event_details (api_event_id, request_headers, request_body, request_body_truncated, \
                 response_headers, response_body, response_body_truncated) ",
            );
            qb.push_values(chunk, |mut row, d| {
                row.push_bind(&d.api_event_id)
                    .push_bind(&d.request_headers)
                    .push_bind(&d.request_body)
                    .push_bind(d.request_body_truncated)
                    .push_bind(&d.response_headers)
                    .push_bind(&d.response_body)
                    .push_bind(d.response_body_truncated);
            });
            qb.build().execute(&mut *conn).await?;
        }
        for chunk in batch.log_events.chunks(CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO log_events (id, occurred_at, level, kind, request_id, method, path, route, message, detail) ",
            );
            qb.push_values(chunk, |mut row, l| {
                row.push_bind(&l.id)
                    .push_bind(l.occurred_at)
                    .push_bind(&l.level)
                    .push_bind(&l.kind)
                    .push_bind(&l.request_id)
                    .push_bind(&l.method)
                    .push_bind(&l.path)
                    .push_bind(&l.route)
                    .push_bind(&l.message)
                    .push_bind(&l.detail);
            });
            qb.build().execute(&mut *conn).await?;
        }
    });
    tx.commit().await
}

/// How many rows a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub api_events: u64,
    pub log_events: u64,
}

/// Deletes request logs older than `cutoff` in bounded batches, so a large backlog never holds a
/// long lock; details go with their events.
pub async fn purge_older_than(db: &Db, cutoff: i64, batch_size: i64) -> StoreResult<Purged> {
    let mut purged = Purged::default();
    loop {
        let mut tx = db.begin().await?;
        let (events, logs) = crate::with_conn!(tx, |conn| {
            sqlx::query(
                "DELETE FROM api_event_details WHERE api_event_id IN \
                 (SELECT id FROM api_events WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2)",
            )
            .bind(cutoff)
            .bind(batch_size)
            .execute(&mut *conn)
            .await?;
            let events = sqlx::query(
                "DELETE FROM api_events WHERE id IN \
                 (SELECT id FROM api_events WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2)",
            )
            .bind(cutoff)
            .bind(batch_size)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            let logs = sqlx::query(
                "DELETE FROM log_events WHERE id IN \
                 (SELECT id FROM log_events WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2)",
            )
            .bind(cutoff)
            .bind(batch_size)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            (events, logs)
        });
        tx.commit().await?;
        purged.api_events += events;
        purged.log_events += logs;
        if (events as i64) < batch_size && (logs as i64) < batch_size {
            return Ok(purged);
        }
    }
}

const API_EVENT_COLUMNS: &str = "id, occurred_at, request_id, surface, method, route, path, status, latency_us, \
     caller_kind, caller_id, remote_addr, user_agent";

/// API events of one request.
pub async fn api_events_for_request(db: &Db, request_id: &str) -> StoreResult<Vec<ApiEvent>> {
    let sql = format!(
        "SELECT {API_EVENT_COLUMNS} FROM api_events WHERE request_id = $1 ORDER BY occurred_at"
    );
    Ok(with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(request_id)
            .fetch_all(pool)
            .await?
    }))
}

/// The newest API events, newest first.
pub async fn recent_api_events(db: &Db, limit: i64) -> StoreResult<Vec<ApiEvent>> {
    let sql = format!(
        "SELECT {API_EVENT_COLUMNS} FROM api_events ORDER BY occurred_at DESC, id DESC LIMIT $1"
    );
    Ok(with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(pool)
            .await?
    }))
}

pub async fn api_event_detail(db: &Db, api_event_id: &str) -> StoreResult<Option<ApiEventDetail>> {
    Ok(with_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT api_event_id, request_headers, request_body, request_body_truncated, response_headers, \
             response_body, response_body_truncated FROM api_event_details WHERE api_event_id = $1",
        )
        .bind(api_event_id)
        .fetch_optional(pool)
        .await?
    }))
}

/// Log events of one request.
pub async fn log_events_for_request(db: &Db, request_id: &str) -> StoreResult<Vec<LogEvent>> {
    Ok(with_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, occurred_at, level, kind, request_id, method, path, route, message, detail \
             FROM log_events WHERE request_id = $1 ORDER BY occurred_at",
        )
        .bind(request_id)
        .fetch_all(pool)
        .await?
    }))
}
