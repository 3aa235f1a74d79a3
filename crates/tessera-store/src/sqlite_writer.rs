//! Group commit for SQLite: this process's writers share one connection and one transaction.
//!
//! SQLite has one writer at a time, and on `synchronous=FULL` every commit is an fsync plus a
//! WAL frame for every page it touched. Committing each write alone spends most of a write's
//! time there, and a pooled connection that another connection wrote behind starts each
//! transaction by dropping its page cache. So writers take turns on one dedicated connection
//! (in arrival order: the mutex is fair), each inside a savepoint of a shared transaction, and
//! the transaction commits once for all of them: when the first writer that finished comes
//! round the queue again, or when the batch is full. Every writer is answered only after that
//! commit, so an acknowledged write is as durable as before; if the commit fails, every writer
//! of the batch gets the error and none of their writes remains.
//!
//! A writer that gives up (its transaction is dropped without commit, or its request is
//! cancelled) leaves its savepoint to be rolled back by the next holder of the turn, and a task
//! is spawned to do so at once, so an abandoned transaction never holds SQLite's write lock.

use std::sync::{Arc, OnceLock};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{StoreError, StoreResult};

/// Writes per shared transaction at most: bounds how long the first of them waits.
const MAX_BATCH: usize = 64;

pub(crate) struct SqliteWriter {
    state: Arc<Mutex<WriterState>>,
    options: SqliteConnectOptions,
}

struct WriterState {
    /// Opened on first use.
    conn: Option<SqliteConnection>,
    /// The open shared transaction, if any.
    batch: Option<Batch>,
    /// The last turn ended without commit or rollback: its savepoint is still open.
    abandoned: bool,
    /// [`SqliteWriter::close`] was called: no more turns.
    closed: bool,
}

struct Batch {
    /// Writers whose savepoint was released into this transaction and who wait for its commit.
    members: usize,
    outcome: Arc<OnceLock<Result<(), String>>>,
}

/// Once the WAL holds this many pages, the committing writer checkpoints what the background
/// checkpointer has not yet copied, while it still holds this process's write turn (so no
/// writer of this process adds pages meanwhile), and the next transaction restarts the WAL
/// from its beginning. The background checkpointer
/// alone never catches up with continuous writes, and the WAL would grow without end. A WAL
/// file grown past the size limit is cut back when it restarts.
const WAL_LIMITS: &str = "PRAGMA wal_autocheckpoint = 4096; PRAGMA journal_size_limit = 67108864";

const SAVEPOINT: &str = "SAVEPOINT tessera_write";
const RELEASE: &str = "RELEASE tessera_write";
const ROLLBACK_TO: &str = "ROLLBACK TO tessera_write";

impl SqliteWriter {
    pub fn new(options: SqliteConnectOptions) -> Self {
        SqliteWriter {
            state: Arc::new(Mutex::new(WriterState {
                conn: None,
                batch: None,
                abandoned: false,
                closed: false,
            })),
            options,
        }
    }

    /// Waits for this process's write turn and opens a savepoint for the caller.
    pub async fn begin(&self) -> StoreResult<WriteTurn> {
        // Statements run on sqlx's connection thread whether or not their future is polled to
        // the end, so a cancelled request must not stop half-way through this bookkeeping (a
        // `BEGIN` executed but not recorded would fail every later turn). A spawned task runs
        // to the end; if nobody takes its turn, the turn is dropped and rolled back.
        let state = self.state.clone();
        let options = self.options.clone();
        tokio::spawn(take_turn(state, options))
            .await
            .map_err(|e| StoreError::CommitFailed(format!("the write turn task failed: {e}")))?
    }

    pub async fn close(&self) {
        let mut guard = self.state.lock().await;
        guard.closed = true;
        if guard.conn.is_some() {
            // Writers whose savepoints are released wait for this batch: commit it for them.
            settle(&mut guard).await;
            if guard.batch.as_ref().is_some_and(|b| b.members > 0) {
                commit_batch(&mut guard).await;
            }
            end_empty_batch(&mut guard).await;
        }
        if let Some(conn) = guard.conn.take() {
            let _ = conn.close().await;
        }
    }
}

async fn take_turn(
    state: Arc<Mutex<WriterState>>,
    options: SqliteConnectOptions,
) -> StoreResult<WriteTurn> {
    let mut guard = state.clone().lock_owned().await;
    settle(&mut guard).await;
    if guard.closed {
        return Err(sqlx::Error::PoolClosed.into());
    }
    if guard.conn.is_none() {
        let mut conn = options.connect().await?;
        register_functions(&mut conn).await?;
        // Checkpoints mostly run in the background (see `sqlite_checkpoint`); the writer only
        // finishes one, rarely, so that the WAL restarts from its beginning.
        conn.execute(WAL_LIMITS).await?;
        guard.conn = Some(conn);
    }
    if guard.batch.is_none() {
        // IMMEDIATE takes the write lock now, so no statement fails later on an upgrade;
        // other processes' writers wait on busy_timeout.
        conn_of(&mut guard).execute("BEGIN IMMEDIATE").await?;
        guard.batch = Some(Batch {
            members: 0,
            outcome: Arc::new(OnceLock::new()),
        });
    }
    if let Err(e) = conn_of(&mut guard).execute(SAVEPOINT).await {
        end_empty_batch(&mut guard).await;
        return Err(e.into());
    }
    Ok(WriteTurn {
        guard: Some(guard),
        state,
    })
}

async fn register_functions(conn: &mut SqliteConnection) -> StoreResult<()> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is locked for this call and belongs to a live connection.
    let rc = unsafe { crate::sqlite_fold::register(handle.as_raw_handle().as_ptr()) };
    if rc != 0 {
        return Err(StoreError::Config(format!(
            "cannot register tessera_fold (SQLite error {rc})"
        )));
    }
    Ok(())
}

fn conn_of(guard: &mut WriterState) -> &mut SqliteConnection {
    guard
        .conn
        .as_mut()
        .expect("the writer connection is opened before any statement")
}

/// Rolls back the savepoint an abandoned turn left open. If that fails, SQLite has already
/// rolled back the whole transaction: the batch fails.
async fn settle(state: &mut WriterState) {
    if !std::mem::take(&mut state.abandoned) {
        return;
    }
    let Some(conn) = state.conn.as_mut() else {
        return;
    };
    let rolled_back = match conn.execute(ROLLBACK_TO).await {
        Ok(_) => conn.execute(RELEASE).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = rolled_back {
        fail_batch(
            state,
            &format!("rolling back an abandoned write failed: {e}"),
        )
        .await;
    }
}

/// Commits the shared transaction and publishes the outcome to its members.
async fn commit_batch(state: &mut WriterState) {
    let Some(batch) = state.batch.take() else {
        return;
    };
    let result = match conn_of(state).execute("COMMIT").await {
        Ok(_) => Ok(()),
        Err(e) => {
            end_transaction(state).await;
            Err(e.to_string())
        }
    };
    let _ = batch.outcome.set(result);
}

async fn fail_batch(state: &mut WriterState, reason: &str) {
    if let Some(batch) = state.batch.take() {
        end_transaction(state).await;
        let _ = batch.outcome.set(Err(reason.to_owned()));
    }
}

/// Rolls back whatever transaction the connection is in. If it is still in one afterwards
/// (or cannot tell), the connection is closed, which rolls back too, and the next turn opens
/// a fresh one: a connection in a state the bookkeeping does not know would fail every turn.
async fn end_transaction(state: &mut WriterState) {
    let Some(conn) = state.conn.as_mut() else {
        return;
    };
    let _ = conn.execute("ROLLBACK").await;
    if in_transaction(conn).await
        && let Some(conn) = state.conn.take()
    {
        let _ = conn.close().await;
    }
}

/// Whether the connection is inside a transaction (`sqlite3_get_autocommit` is 0); `true`
/// when that cannot be read.
async fn in_transaction(conn: &mut SqliteConnection) -> bool {
    match conn.lock_handle().await {
        // SAFETY: the handle is locked for this call and belongs to a live connection.
        Ok(mut handle) => unsafe {
            libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) == 0
        },
        Err(_) => true,
    }
}

/// Ends a shared transaction that no writer has released anything into.
async fn end_empty_batch(state: &mut WriterState) {
    if state.batch.as_ref().is_some_and(|b| b.members == 0) {
        fail_batch(state, "no writes").await;
    }
}

/// One writer's turn: it holds the connection, inside its own savepoint, until it commits or
/// is dropped.
pub(crate) struct WriteTurn {
    guard: Option<OwnedMutexGuard<WriterState>>,
    state: Arc<Mutex<WriterState>>,
}

impl WriteTurn {
    pub fn conn(&mut self) -> &mut SqliteConnection {
        conn_of(self.guard.as_mut().expect("the turn is held until commit"))
    }

    /// Releases this writer's savepoint into the shared transaction and returns once that has
    /// committed.
    pub async fn commit(mut self) -> StoreResult<()> {
        let guard = self.guard.take().expect("the turn is held until commit");
        let state = self.state.clone();
        // Runs to the end even if this request is cancelled: the batch's other members wait
        // for its commit, and the connection's state must match the bookkeeping.
        tokio::spawn(finish_turn(guard, state))
            .await
            .map_err(|e| StoreError::CommitFailed(format!("the commit task failed: {e}")))?
    }
}

async fn finish_turn(
    mut guard: OwnedMutexGuard<WriterState>,
    state: Arc<Mutex<WriterState>>,
) -> StoreResult<()> {
    if let Err(e) = conn_of(&mut guard).execute(RELEASE).await {
        guard.abandoned = true;
        settle(&mut guard).await;
        end_empty_batch(&mut guard).await;
        return Err(e.into());
    }
    let batch = guard
        .batch
        .as_mut()
        .expect("a turn always runs inside a shared transaction");
    batch.members += 1;
    let outcome = batch.outcome.clone();
    if batch.members < MAX_BATCH {
        // Let the writers already queued add their writes, then commit for everyone unless
        // one of them already has.
        drop(guard);
        guard = state.lock_owned().await;
        settle(&mut guard).await;
    }
    if outcome.get().is_none() {
        commit_batch(&mut guard).await;
    }
    match outcome.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(reason)) => Err(StoreError::CommitFailed(reason.clone())),
        None => Err(StoreError::CommitFailed(
            "the shared transaction ended without an outcome".into(),
        )),
    }
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        guard.abandoned = true;
        // Roll back now rather than at the next write, so the write lock is not held meanwhile.
        // Without a runtime (the process is ending) the next turn settles it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut guard = guard;
                settle(&mut guard).await;
                end_empty_batch(&mut guard).await;
            });
        }
    }
}
