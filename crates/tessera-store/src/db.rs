//! The database handle, transactions, migrations and the schema check.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, SqlitePool, Transaction};
use tessera_domain::Clock;

use crate::sqlite_checkpoint::Checkpointer;
use crate::sqlite_read::SqliteReaders;
use crate::sqlite_writer::{SqliteWriter, WriteTurn};
use crate::{StoreError, StoreResult};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Runs `$body` with `$pool` bound to the backend's pool; the body is compiled once per backend.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.pool() {
            $crate::db_internal::PoolRef::Sqlite($pool) => $body,
            $crate::db_internal::PoolRef::Pg($pool) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the transaction's connection (`&mut Connection`).
#[macro_export]
macro_rules! with_conn {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx.conn() {
            $crate::db_internal::ConnRef::Sqlite($conn) => $body,
            $crate::db_internal::ConnRef::Pg($conn) => $body,
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// The embedded default: a SQLite file (WAL mode), created if missing.
    SqliteFile(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl DbTarget {
    /// Chooses the target from the configured URL, falling back to `<data_dir>/tessera.db`.
    pub fn from_config(
        database_url: Option<&str>,
        data_dir: &std::path::Path,
    ) -> StoreResult<Self> {
        match database_url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(DbTarget::SqliteFile(data_dir.join("tessera.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(DbTarget::Postgres(url.to_owned()))
            }
            Some(url) if url.starts_with("sqlite://") => {
                Ok(DbTarget::SqliteFile(PathBuf::from(&url[9..])))
            }
            Some(_) => Err(StoreError::Config(
                "database_url must start with postgres://, postgresql:// or sqlite://".into(),
            )),
        }
    }

    /// A description safe to log: the PostgreSQL password is never shown.
    pub fn describe(&self) -> String {
        match self {
            DbTarget::SqliteFile(p) => format!("sqlite:{}", p.display()),
            DbTarget::Postgres(url) => match PgConnectOptions::from_str(url) {
                Ok(o) => format!(
                    "postgres://{}@{}:{}/{}",
                    o.get_username(),
                    o.get_host(),
                    o.get_port(),
                    o.get_database().unwrap_or("")
                ),
                Err(_) => "postgres://(unparsable url)".into(),
            },
        }
    }
}

#[derive(Clone)]
enum Pools {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// The database: a pool on one backend plus the clock every write is stamped with.
#[derive(Clone)]
pub struct Db {
    pools: Pools,
    clock: Arc<dyn Clock>,
    /// The SQLite file, when on SQLite (for the migration lock).
    sqlite_path: Option<PathBuf>,
    /// SQLite has one writer at a time. Writers of this process queue here, in arrival order,
    /// rather than in SQLite's busy handler (which polls with growing sleeps and lets a
    /// newcomer overtake a writer that has waited for a second), and commit in groups.
    sqlite_writer: Option<Arc<SqliteWriter>>,
    /// Short hot-path reads on SQLite, without sqlx's thread hand-offs.
    sqlite_readers: Option<Arc<SqliteReaders>>,
    /// Roles with their application and resources, as last read for granting (see
    /// `governance::grants::grant`, which re-checks their versions when it writes).
    role_cache: Arc<crate::governance::role_cache::RoleCache>,
    /// Copies the WAL back into the database file in the background, on SQLite.
    _checkpointer: Option<Arc<Checkpointer>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .finish()
    }
}

#[doc(hidden)]
pub mod internal {
    pub enum PoolRef<'a> {
        Sqlite(&'a sqlx::SqlitePool),
        Pg(&'a sqlx::PgPool),
    }
    pub enum ConnRef<'a> {
        Sqlite(&'a mut sqlx::SqliteConnection),
        Pg(&'a mut sqlx::PgConnection),
    }
}

/// Connection-pool figures for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// Where the database's schema stands relative to this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaState {
    /// Highest migration applied, `None` on an empty database.
    pub applied: Option<i64>,
    /// Highest migration this build carries.
    pub known: i64,
}

impl SchemaState {
    pub fn is_current(&self) -> bool {
        self.applied == Some(self.known)
    }
}

impl Db {
    /// Opens the database without touching its schema.
    pub async fn connect(target: &DbTarget, clock: Arc<dyn Clock>) -> StoreResult<Db> {
        let mut sqlite_writer = None;
        let pools = match target {
            DbTarget::SqliteFile(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StoreError::Config(format!(
                            "cannot create data directory {}: {e}",
                            parent.display()
                        ))
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: an acknowledged write survives power loss, not only a crash.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
                    // Pages are read through a memory map rather than read() copies: every
                    // commit invalidates the other connections' page caches, so reads refill
                    // them constantly.
                    .pragma("mmap_size", "1073741824")
                    // Each write runs in a savepoint (see `sqlite_writer`), whose sub-journal
                    // would otherwise be a temporary file written on every changed page.
                    .pragma("temp_store", "memory");
                sqlite_writer = Some(Arc::new(SqliteWriter::new(options.clone())));
                let pool = SqlitePoolOptions::new()
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            let mut handle = conn.lock_handle().await?;
                            // SAFETY: the handle is locked for this call and belongs to a live connection.
                            let rc = unsafe {
                                crate::sqlite_fold::register(handle.as_raw_handle().as_ptr())
                            };
                            if rc != 0 {
                                return Err(sqlx::Error::Configuration(
                                    format!("cannot register tessera_fold (SQLite error {rc})")
                                        .into(),
                                ));
                            }
                            Ok(())
                        })
                    })
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Pools::Sqlite(pool)
            }
            DbTarget::Postgres(url) => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Pools::Pg(pool)
            }
        };
        let sqlite_path = match target {
            DbTarget::SqliteFile(path) => Some(path.clone()),
            DbTarget::Postgres(_) => None,
        };
        let sqlite_readers = sqlite_path
            .as_deref()
            .map(|path| Arc::new(SqliteReaders::new(path)));
        let checkpointer = match &sqlite_path {
            Some(path) => Some(Arc::new(Checkpointer::start(path).map_err(|e| {
                StoreError::Config(format!("cannot start the WAL checkpoint thread: {e}"))
            })?)),
            None => None,
        };
        Ok(Db {
            pools,
            clock,
            sqlite_path,
            sqlite_writer,
            sqlite_readers,
            role_cache: Arc::default(),
            _checkpointer: checkpointer,
        })
    }

    /// Opens a database that must already exist with the current schema: for commands that
    /// work on a server's store and must neither create one nor change its schema.
    pub async fn open_existing(target: &DbTarget, clock: Arc<dyn Clock>) -> StoreResult<Db> {
        if let DbTarget::SqliteFile(path) = target
            && !path.is_file()
        {
            return Err(StoreError::Config(format!(
                "there is no Tessera database at {}; pass the server's --data-dir or --database-url, \
                     or create it with `tessera migrate`",
                path.display()
            )));
        }
        let db = Db::connect(target, clock).await?;
        db.ensure_schema_current().await?;
        Ok(db)
    }

    /// Opens the database, refuses a schema newer than this build, and applies missing migrations.
    pub async fn open_and_migrate(target: &DbTarget, clock: Arc<dyn Clock>) -> StoreResult<Db> {
        let db = Db::connect(target, clock).await?;
        db.migrate().await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite(_) => Backend::Sqlite,
            Pools::Pg(_) => Backend::Postgres,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    #[doc(hidden)]
    pub fn pool(&self) -> internal::PoolRef<'_> {
        match &self.pools {
            Pools::Sqlite(p) => internal::PoolRef::Sqlite(p),
            Pools::Pg(p) => internal::PoolRef::Pg(p),
        }
    }

    /// Role contexts kept for granting (see `governance::grants::grant`).
    pub(crate) fn role_cache(&self) -> &crate::governance::role_cache::RoleCache {
        &self.role_cache
    }

    /// The direct read path, on SQLite.
    pub(crate) fn sqlite_readers(&self) -> Option<&Arc<SqliteReaders>> {
        self.sqlite_readers.as_ref()
    }

    fn migrator(&self) -> &'static Migrator {
        match self.pools {
            Pools::Sqlite(_) => &SQLITE_MIGRATIONS,
            Pools::Pg(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Highest migration version this build carries (the same on both backends).
    pub fn known_schema_version() -> i64 {
        SQLITE_MIGRATIONS
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0)
    }

    pub async fn schema_state(&self) -> StoreResult<SchemaState> {
        let table_exists: bool = match &self.pools {
            Pools::Sqlite(p) => sqlx::query_scalar(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(p)
            .await?,
            Pools::Pg(p) => {
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(p)
                    .await?
            }
        };
        let applied: Option<i64> = if table_exists {
            crate::with_pool!(self, |pool| {
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                    .fetch_one(pool)
                    .await?
            })
        } else {
            None
        };
        Ok(SchemaState {
            applied,
            known: Self::known_schema_version(),
        })
    }

    /// Applies missing migrations; refuses, touching nothing, a schema newer than this build.
    pub async fn migrate(&self) -> StoreResult<SchemaState> {
        let state = self.schema_state().await?;
        if let Some(found) = state.applied
            && found > state.known
        {
            return Err(StoreError::SchemaTooNew {
                found,
                known: state.known,
            });
        }
        match &self.pools {
            Pools::Sqlite(p) => {
                // sqlx locks migrations on PostgreSQL only; on SQLite two processes starting on a
                // fresh store would both apply the first migration. A lock file serialises them.
                let _lock = match self.sqlite_path.clone() {
                    // Waiting for the lock blocks a thread; keep that off the async workers.
                    Some(path) => Some(
                        tokio::task::spawn_blocking(move || lock_file(&path))
                            .await
                            .map_err(|e| {
                                StoreError::Config(format!("migration lock task failed: {e}"))
                            })??,
                    ),
                    None => None,
                };
                self.migrator().run(p).await?
            }
            Pools::Pg(p) => self.migrator().run(p).await?,
        }
        self.schema_state().await
    }

    /// Fails unless the schema is exactly the one this build knows.
    pub async fn ensure_schema_current(&self) -> StoreResult<()> {
        let state = self.schema_state().await?;
        match state.applied {
            Some(v) if v > state.known => Err(StoreError::SchemaTooNew {
                found: v,
                known: state.known,
            }),
            Some(v) if v == state.known => Ok(()),
            other => Err(StoreError::Config(format!(
                "the database schema is at version {}, this build needs {}; run `tessera migrate`",
                other.unwrap_or(0),
                state.known
            ))),
        }
    }

    /// A trivial round trip, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        crate::with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub fn pool_stats(&self) -> PoolStats {
        crate::with_pool!(self, |pool| PoolStats {
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        })
    }

    /// Begins a write transaction. On SQLite this process's writers take turns in arrival order
    /// on one connection and commit in groups (see `sqlite_writer`); other processes' writers
    /// wait on busy_timeout.
    pub async fn begin(&self) -> StoreResult<Tx> {
        let inner = match (&self.pools, &self.sqlite_writer) {
            (Pools::Sqlite(_), Some(writer)) => TxInner::Sqlite(writer.begin().await?),
            (Pools::Sqlite(_), None) => unreachable!("a SQLite database always has its writer"),
            (Pools::Pg(p), _) => TxInner::Pg(p.begin().await?),
        };
        // Stamped once the write turn is ours, so timestamps follow commit order on SQLite.
        let now = self.clock.now_ms();
        Ok(Tx { inner, now })
    }

    pub async fn close(&self) {
        if let Some(writer) = &self.sqlite_writer {
            writer.close().await;
        }
        if let Some(readers) = &self.sqlite_readers {
            readers.close();
        }
        crate::with_pool!(self, |pool| pool.close().await)
    }
}

/// Takes an exclusive lock on `<db>.migrate-lock`, released when the file is dropped.
fn lock_file(db_path: &std::path::Path) -> StoreResult<std::fs::File> {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".migrate-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| {
            StoreError::Config(format!(
                "cannot open {}: {e}",
                std::path::Path::new(&name).display()
            ))
        })?;
    file.lock()
        .map_err(|e| StoreError::Config(format!("cannot lock the migration lock file: {e}")))?;
    Ok(file)
}

enum TxInner {
    Sqlite(WriteTurn),
    Pg(Transaction<'static, Postgres>),
}

/// A write transaction. `now()` is fixed when it begins, so every row it writes carries the
/// same timestamp. Dropped without `commit`, it rolls back.
pub struct Tx {
    inner: TxInner,
    now: i64,
}

impl Tx {
    pub fn now(&self) -> i64 {
        self.now
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            TxInner::Sqlite(..) => Backend::Sqlite,
            TxInner::Pg(_) => Backend::Postgres,
        }
    }

    #[doc(hidden)]
    pub fn conn(&mut self) -> internal::ConnRef<'_> {
        match &mut self.inner {
            TxInner::Sqlite(t) => internal::ConnRef::Sqlite(t.conn()),
            TxInner::Pg(t) => internal::ConnRef::Pg(t),
        }
    }

    pub async fn commit(self) -> StoreResult<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Pg(t) => t.commit().await?,
        }
        Ok(())
    }
}
