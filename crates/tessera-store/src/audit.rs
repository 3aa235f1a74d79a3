//! The audit log: one `record` path for every state change, and chain verification.

use tessera_domain::audit::{AuditEntry, AuditEvent, ChainBreak, ChainSummary, ChainVerifier};
use tessera_domain::ids::new_id;

use crate::{Db, StoreError, StoreResult, Tx, with_conn, with_pool};

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    id: String,
    occurred_at: i64,
    actor_kind: String,
    actor_id: Option<String>,
    action: String,
    entity_kind: String,
    entity_id: Option<String>,
    data_source_id: Option<String>,
    request_id: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

impl From<EntryRow> for AuditEntry {
    fn from(r: EntryRow) -> Self {
        AuditEntry {
            seq: r.seq,
            id: r.id,
            occurred_at: r.occurred_at,
            actor_kind: r.actor_kind,
            actor_id: r.actor_id,
            action: r.action,
            entity_kind: r.entity_kind,
            entity_id: r.entity_id,
            data_source_id: r.data_source_id,
            request_id: r.request_id,
            details: r.details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

const ENTRY_COLUMNS: &str = "seq, id, occurred_at, actor_kind, actor_id, action, entity_kind, entity_id, \
     data_source_id, request_id, details, prev_hash, hash";

/// Appends an entry in the caller's transaction, so the change and its record commit together.
///
/// Advancing the head row first takes its row lock (PostgreSQL) or relies on the write lock
/// (SQLite), so concurrent writers append one after another and the chain stays linear.
pub async fn record(tx: &mut Tx, event: AuditEvent) -> StoreResult<AuditEntry> {
    let now = tx.now();
    with_conn!(tx, |conn| {
        let (seq, prev_hash): (i64, String) =
            sqlx::query_as("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut *conn)
                .await?;
        let entry = AuditEntry::seal(&event, seq, new_id(), now, prev_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, id, occurred_at, actor_kind, actor_id, action, entity_kind, \
             entity_id, data_source_id, request_id, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(entry.seq)
        .bind(&entry.id)
        .bind(entry.occurred_at)
        .bind(&entry.actor_kind)
        .bind(&entry.actor_id)
        .bind(&entry.action)
        .bind(&entry.entity_kind)
        .bind(&entry.entity_id)
        .bind(&entry.data_source_id)
        .bind(&entry.request_id)
        .bind(&entry.details)
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&entry.hash)
            .execute(&mut *conn)
            .await?;
        Ok(entry)
    })
}

/// Entries with `seq` greater than `after`, oldest first.
pub async fn list_after(db: &Db, after: i64, limit: i64) -> StoreResult<Vec<AuditEntry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
    let rows: Vec<EntryRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// Entries with `after < seq <= up_to`, oldest first.
async fn list_range(db: &Db, after: i64, up_to: i64, limit: i64) -> StoreResult<Vec<AuditEntry>> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
    );
    let rows: Vec<EntryRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(up_to)
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// The recorded end of the chain: (last sequence number, its hash).
pub async fn head(db: &Db) -> StoreResult<(i64, String)> {
    Ok(with_pool!(db, |pool| {
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(pool)
            .await?
    }))
}

/// Why verification did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("audit chain broken: {0}")]
    Broken(#[from] ChainBreak),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Walks the chain in pages (constant memory) up to the head read at the start, and compares
/// its end with that head. Entries appended while it runs (by a live server) are not part of
/// the chain it checks, so they never look like tampering.
pub async fn verify(db: &Db) -> Result<ChainSummary, VerifyError> {
    const PAGE: i64 = 1000;
    let (head_seq, head_hash) = head(db).await?;
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        // Read by position in the table rather than by expected seq, so a missing entry shows up
        // as a gap and an extra one as a link break.
        let page = list_range(db, after, head_seq, PAGE).await?;
        for entry in &page {
            verifier.check(entry)?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.seq,
            _ => break,
        }
    }
    let summary = verifier.finish(head_seq, &head_hash)?;
    // Rows outside 1..=head were not written through `record` (which moves the head in the
    // same transaction as each insert). One statement sees one snapshot, so live appends, which
    // commit row and head together, never trip this.
    let (foreign, first): (i64, Option<i64>) = with_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT COUNT(*), MIN(COALESCE(seq, 0)) FROM audit_log \
             WHERE seq IS NULL OR seq < 1 OR seq > (SELECT seq FROM audit_head WHERE id = 1)",
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::from)?
    });
    if foreign > 0 {
        return Err(ChainBreak::Foreign {
            count: foreign,
            first: first.unwrap_or(0),
        }
        .into());
    }
    Ok(summary)
}
