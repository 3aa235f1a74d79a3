//! Test-only helpers shared by the crates' integration tests.
//!
//! - [`TestDb`]: a fresh, migrated database on SQLite (a temporary file) and, when
//!   `TEST_PG_URL` names a PostgreSQL server, on PostgreSQL (a new database per test).
//!   Set `TESSERA_TEST_REQUIRE_PG=1` (the CI script does) to make a missing PostgreSQL a failure.
//! - [`TestServer`]: the real HTTP server on a free loopback port over such a database.

use std::sync::Arc;

use tessera_domain::{Clock, SystemClock};
use tessera_store::{Backend, Db, DbTarget};

mod server;
pub use server::TestServer;

/// A fresh database that lives as long as this value.
pub struct TestDb {
    pub db: Db,
    pub target: DbTarget,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// A migrated SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        Self::sqlite_with_clock(Arc::new(SystemClock)).await
    }

    pub async fn sqlite_with_clock(clock: Arc<dyn Clock>) -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let target = DbTarget::SqliteFile(dir.path().join("tessera.db"));
        let db = Db::open_and_migrate(&target, clock)
            .await
            .expect("migrate SQLite");
        TestDb {
            db,
            target,
            _dir: Some(dir),
        }
    }

    /// A migrated database of its own on the PostgreSQL server at `TEST_PG_URL`, or `None` when
    /// no server is configured (and `TESSERA_TEST_REQUIRE_PG` is not set).
    pub async fn postgres() -> Option<TestDb> {
        Self::postgres_with_clock(Arc::new(SystemClock)).await
    }

    pub async fn postgres_with_clock(clock: Arc<dyn Clock>) -> Option<TestDb> {
        let target = fresh_postgres_database().await?;
        let db = Db::open_and_migrate(&target, clock)
            .await
            .expect("migrate PostgreSQL");
        Some(TestDb {
            db,
            target,
            _dir: None,
        })
    }

    /// An empty (unmigrated) database target on each available backend.
    pub async fn empty_targets() -> Vec<(DbTarget, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut targets = vec![(
            DbTarget::SqliteFile(dir.path().join("tessera.db")),
            Some(dir),
        )];
        if let Some(pg) = fresh_postgres_database().await {
            targets.push((pg, None));
        }
        targets
    }

    /// One fresh database per available backend: SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<TestDb> {
        Self::all_with_clock(Arc::new(SystemClock)).await
    }

    pub async fn all_with_clock(clock: Arc<dyn Clock>) -> Vec<TestDb> {
        let mut dbs = vec![Self::sqlite_with_clock(clock.clone()).await];
        if let Some(pg) = Self::postgres_with_clock(clock).await {
            dbs.push(pg);
        }
        dbs
    }
}

fn pg_required() -> bool {
    std::env::var("TESSERA_TEST_REQUIRE_PG").is_ok_and(|v| v == "1")
}

/// Creates `t_<uuid>` on the server at `TEST_PG_URL` and returns its URL.
async fn fresh_postgres_database() -> Option<DbTarget> {
    let admin_url = match std::env::var("TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if pg_required() => panic!("TESSERA_TEST_REQUIRE_PG=1 but TEST_PG_URL is not set"),
        _ => return None,
    };
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at TEST_PG_URL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url.as_str(), String::new()),
    };
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    Some(DbTarget::Postgres(format!("{prefix}/{name}{query}")))
}
