//! The direct read path on SQLite: short reads on the hot request paths (SCIM token checks,
//! SCIM gets and lookups) through rusqlite connections, on the calling thread.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and hands every statement
//! and every row across threads; for a read that SQLite answers from an index in a few
//! microseconds, those hand-offs were most of its cost (about fifteen context switches per SCIM
//! GET). Here a read runs where it is called, on a connection of a small pool, with its
//! statement prepared once per connection.
//!
//! A read must not hold an async worker for long, and which filters are slow is only known by
//! running them. So every read starts on the calling thread with a budget: SQLite's progress
//! handler interrupts it when the budget is spent, and it is run again from the start on the
//! blocking pool, where it may take as long as it needs. A slow scan costs its caller the
//! budget once; it never stalls the other requests on that worker for longer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::scim::query::Arg;
use crate::{StoreError, StoreResult};

/// How long a read may run on the calling thread before it moves to the blocking pool.
const INLINE_BUDGET: Duration = Duration::from_millis(2);

/// SQLite virtual-machine steps between two checks of the budget (a check reads the clock).
const PROGRESS_STEPS: i32 = 2_000;

/// Idle connections kept for reuse; more are opened under load and closed when not needed.
const MAX_IDLE: usize = 8;

/// Prepared statements kept per connection: lookups differ by filter shape, not by value.
const STATEMENT_CACHE: usize = 128;

pub(crate) struct SqliteReaders {
    path: PathBuf,
    idle: Mutex<Vec<Reader>>,
    closed: AtomicBool,
}

struct Reader {
    conn: Connection,
    /// Nanoseconds since [`epoch`] after which the progress handler interrupts the statement;
    /// `u64::MAX` when unlimited.
    deadline: Arc<AtomicU64>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

impl SqliteReaders {
    pub fn new(path: &Path) -> Self {
        SqliteReaders {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Closes the idle connections and refuses further reads.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle.lock().expect("reader pool lock").clear();
    }

    /// Runs a read: first here, within [`INLINE_BUDGET`], else again on the blocking pool.
    pub async fn read<T, F>(self: &Arc<Self>, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        match self.run(&read, Some(INLINE_BUDGET)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::OperationInterrupted =>
            {
                let readers = self.clone();
                tokio::task::spawn_blocking(move || readers.run(&read, None))
                    .await
                    .map_err(|e| StoreError::Config(format!("a read task failed: {e}")))?
                    .map_err(from_rusqlite)
            }
            other => other.map_err(from_rusqlite),
        }
    }

    fn run<T>(
        &self,
        read: &impl Fn(&Connection) -> rusqlite::Result<T>,
        budget: Option<Duration>,
    ) -> rusqlite::Result<T> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                Some("the database is closed".into()),
            ));
        }
        let idle = self.idle.lock().expect("reader pool lock").pop();
        let reader = match (idle, budget) {
            (Some(reader), _) => reader,
            // Opening a connection (file, pragmas, schema) is not bounded by the budget: it
            // happens on the blocking pool, as if the read had run out of time.
            (None, Some(_)) => return Err(interrupted("no idle reader connection")),
            (None, None) => self.open()?,
        };
        let deadline = budget.map_or(u64::MAX, |b| nanos_since_epoch() + b.as_nanos() as u64);
        reader.deadline.store(deadline, Ordering::Relaxed);
        let result = read(&reader.conn);
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < MAX_IDLE && !self.closed.load(Ordering::Relaxed) {
            idle.push(reader);
        }
        result
    }

    fn open(&self) -> rusqlite::Result<Reader> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(
            "PRAGMA query_only = ON; PRAGMA busy_timeout = 10000; \
             PRAGMA mmap_size = 1073741824; PRAGMA temp_store = MEMORY;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // SAFETY: the handle is this live connection's own, used for this call only.
        let rc = unsafe { crate::sqlite_fold::register(conn.handle()) };
        if rc != 0 {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rc),
                Some("cannot register tessera_fold".into()),
            ));
        }
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let watched = deadline.clone();
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || nanos_since_epoch() > watched.load(Ordering::Relaxed)),
        )?;
        Ok(Reader { conn, deadline })
    }
}

fn interrupted(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
        Some(why.to_owned()),
    )
}

/// Binds [`Arg`]s to a statement written with `$n` placeholders (SQLite numbers named
/// parameters by first appearance, so each is bound by the number in its name).
pub(crate) fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg]) -> rusqlite::Result<()> {
    for index in 1..=stmt.parameter_count() {
        let number = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=args.len()).contains(n))
            .ok_or_else(|| {
                rusqlite::Error::InvalidParameterName(
                    stmt.parameter_name(index).unwrap_or("?").to_owned(),
                )
            })?;
        match &args[number - 1] {
            Arg::Text(s) => stmt.raw_bind_parameter(index, s.as_str())?,
            Arg::MaybeText(s) => stmt.raw_bind_parameter(index, s.as_deref())?,
            Arg::Int(i) => stmt.raw_bind_parameter(index, i)?,
            Arg::Real(f) => stmt.raw_bind_parameter(index, f)?,
        }
    }
    Ok(())
}

fn from_rusqlite(e: rusqlite::Error) -> StoreError {
    StoreError::Read(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A database file removed (with its WAL files) when dropped.
    struct TempDb(PathBuf);

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = self.0.as_os_str().to_owned();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }

    fn temp_db() -> TempDb {
        let path = std::env::temp_dir().join(format!(
            "tessera-read-{}-{}.db",
            std::process::id(),
            nanos_since_epoch()
        ));
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        TempDb(path)
    }

    /// Readers on a fresh database, with one connection already open and idle (the first read
    /// opens it, on the blocking pool).
    async fn warm_readers(db: &TempDb) -> Arc<SqliteReaders> {
        let readers = Arc::new(SqliteReaders::new(&db.0));
        readers
            .read(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await
            .unwrap();
        readers
    }

    /// Runs a one-number query; returns the number, how many times the read ran, and whether
    /// it finished on the calling thread.
    async fn counted_read(readers: &Arc<SqliteReaders>, sql: &'static str) -> (i64, usize, bool) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let caller = std::thread::current().id();
        let (n, thread) = readers
            .read(move |conn| {
                counted.fetch_add(1, Ordering::Relaxed);
                let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
                Ok((n, std::thread::current().id()))
            })
            .await
            .unwrap();
        (n, runs.load(Ordering::Relaxed), thread == caller)
    }

    #[tokio::test]
    async fn a_short_read_runs_once_on_the_calling_thread() {
        let db = temp_db();
        let readers = warm_readers(&db).await;
        let (sum, runs, on_caller) = counted_read(&readers, "SELECT SUM(x) FROM t").await;
        assert_eq!(sum, 3);
        assert_eq!(runs, 1);
        assert!(on_caller);
    }

    #[tokio::test]
    async fn a_read_over_its_budget_is_interrupted_and_finished_on_the_blocking_pool() {
        let db = temp_db();
        let readers = warm_readers(&db).await;
        let (n, runs, on_caller) = counted_read(
            &readers,
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000000) \
             SELECT COUNT(*) FROM n",
        )
        .await;
        assert_eq!(n, 5_000_000, "the second run is not cut short");
        assert_eq!(runs, 2);
        assert!(!on_caller);
    }

    #[tokio::test]
    async fn a_closed_reader_refuses_reads() {
        let db = temp_db();
        let readers = Arc::new(SqliteReaders::new(&db.0));
        readers.close();
        let r = readers
            .read(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await;
        assert!(matches!(r, Err(StoreError::Read(_))), "{r:?}");
    }
}
