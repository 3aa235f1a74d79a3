//! Group commit on SQLite: writers queued behind each other share one transaction, each is
//! acknowledged only after it commits, one writer's rollback leaves the others' writes, and a
//! failed commit fails every writer of the batch and keeps none of their writes.

use std::time::Duration;

use tessera_store::{Db, StoreError, Tx, with_conn};
use tessera_testkit::TestDb;

async fn exec(tx: &mut Tx, sql: &'static str) {
    with_conn!(tx, |conn| {
        sqlx::query(sql).execute(&mut *conn).await.unwrap();
    });
}

async fn setup(db: &Db, sql: &'static [&'static str]) {
    let mut tx = db.begin().await.unwrap();
    for statement in sql {
        exec(&mut tx, statement).await;
    }
    tx.commit().await.unwrap();
}

async fn names(db: &Db, table: &str) -> Vec<String> {
    let sql = format!("SELECT name FROM {table} ORDER BY name");
    tessera_store::with_pool!(db, |pool| {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(pool)
            .await
            .unwrap()
    })
}

/// Polls `future` at most `polls` times, then drops it: a request cancelled at an await point.
async fn poll_at_most<F: std::future::Future>(polls: usize, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut polled = 0;
    std::future::poll_fn(|cx| {
        polled += 1;
        match future.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
            std::task::Poll::Pending if polled >= polls => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// Lets spawned writers queue for the write turn. On the tests' current-thread runtime the
/// spawned tasks run (up to waiting on the turn) before the sleeping task is woken, whatever
/// the machine's load, so the order does not depend on the duration.
const QUEUE_UP: Duration = Duration::from_millis(150);

#[tokio::test]
async fn a_writer_that_rolls_back_leaves_the_other_writes_of_its_batch() {
    let t = TestDb::sqlite().await;
    let db = t.db.clone();
    setup(&db, &["CREATE TABLE gc_rows (name TEXT PRIMARY KEY)"]).await;

    let mut first = db.begin().await.unwrap();
    exec(&mut first, "INSERT INTO gc_rows VALUES ('first')").await;
    let abandoned = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            exec(&mut tx, "INSERT INTO gc_rows VALUES ('abandoned')").await;
            drop(tx);
        }
    });
    let last = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            exec(&mut tx, "INSERT INTO gc_rows VALUES ('last')").await;
            tx.commit().await
        }
    });
    tokio::time::sleep(QUEUE_UP).await;
    first.commit().await.unwrap();
    last.await.unwrap().unwrap();
    abandoned.await.unwrap();
    assert_eq!(names(&db, "gc_rows").await, ["first", "last"]);
}

#[tokio::test]
async fn a_failed_group_commit_fails_every_writer_of_the_batch_and_keeps_nothing() {
    let t = TestDb::sqlite().await;
    let db = t.db.clone();
    // A deferred foreign key is checked only at COMMIT: one writer's bad row makes the shared
    // commit fail after every writer has released its savepoint.
    setup(
        &db,
        &[
            "CREATE TABLE gc_parent (name TEXT PRIMARY KEY)",
            "CREATE TABLE gc_child (name TEXT PRIMARY KEY, parent TEXT \
             REFERENCES gc_parent (name) DEFERRABLE INITIALLY DEFERRED)",
        ],
    )
    .await;

    let mut good = db.begin().await.unwrap();
    exec(&mut good, "INSERT INTO gc_parent VALUES ('good')").await;
    let bad = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            exec(&mut tx, "INSERT INTO gc_child VALUES ('orphan', 'missing')").await;
            tx.commit().await
        }
    });
    tokio::time::sleep(QUEUE_UP).await;
    let good_result = good.commit().await;
    let bad_result = bad.await.unwrap();
    assert!(
        matches!(good_result, Err(StoreError::CommitFailed(_))),
        "the writer queued first shared the failed commit: {good_result:?}"
    );
    assert!(
        matches!(bad_result, Err(StoreError::CommitFailed(_))),
        "{bad_result:?}"
    );
    assert!(names(&db, "gc_parent").await.is_empty());
    assert!(names(&db, "gc_child").await.is_empty());

    // The writer recovers: the next transaction commits on its own.
    setup(&db, &["INSERT INTO gc_parent VALUES ('after')"]).await;
    assert_eq!(names(&db, "gc_parent").await, ["after"]);
}

#[tokio::test]
async fn every_acknowledged_write_of_many_concurrent_writers_is_visible() {
    let t = TestDb::sqlite().await;
    let db = t.db.clone();
    setup(&db, &["CREATE TABLE gc_rows (name TEXT PRIMARY KEY)"]).await;
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                with_conn!(tx, |conn| {
                    sqlx::query("INSERT INTO gc_rows VALUES ($1)")
                        .bind(format!("w{i:03}"))
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                });
                tx.commit().await.unwrap();
                // Acknowledged means committed: a fresh pooled connection sees it at once.
                let seen: i64 = tessera_store::with_pool!(db, |pool| {
                    sqlx::query_scalar("SELECT COUNT(*) FROM gc_rows WHERE name = $1")
                        .bind(format!("w{i:03}"))
                        .fetch_one(pool)
                        .await
                        .unwrap()
                });
                assert_eq!(seen, 1);
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(names(&db, "gc_rows").await.len(), 200);
}

#[tokio::test]
async fn the_wal_is_copied_into_the_database_file_in_the_background() {
    let t = TestDb::sqlite().await;
    let db = t.db.clone();
    let tessera_store::DbTarget::SqliteFile(path) = &t.target else {
        unreachable!()
    };
    let before = std::fs::metadata(path).unwrap().len();
    setup(&db, &["CREATE TABLE gc_blobs (b BLOB)"]).await;
    let mut tx = db.begin().await.unwrap();
    exec(
        &mut tx,
        "INSERT INTO gc_blobs SELECT randomblob(4096) FROM \
         (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 500) SELECT x FROM n)",
    )
    .await;
    tx.commit().await.unwrap();
    // Commits do not checkpoint: the pages reach the database file only through the
    // background checkpointer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(path).unwrap().len();
        if now >= before + 2_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {now} bytes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn writers_cancelled_at_any_point_leave_the_writer_working_and_lose_no_acknowledged_write() {
    let t = TestDb::sqlite().await;
    let db = t.db.clone();
    setup(&db, &["CREATE TABLE gc_rows (name TEXT PRIMARY KEY)"]).await;
    // Requests whose clients go away are dropped wherever they are: waiting for the turn,
    // inside `BEGIN`, between statements, inside the commit.
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..40u64 {
                    let name = format!("w{w:02}-{i:02}");
                    let write = async {
                        let mut tx = db.begin().await?;
                        with_conn!(tx, |conn| {
                            sqlx::query("INSERT INTO gc_rows VALUES ($1)")
                                .bind(&name)
                                .execute(&mut *conn)
                                .await?;
                        });
                        tx.commit().await
                    };
                    // Dropped after a number of polls that walks every await point.
                    let polls = 1 + (w as usize * 7 + i as usize * 3) % 16;
                    if let Some(Ok(())) = poll_at_most(polls, write).await {
                        acknowledged.push(name);
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    // The writer still works, and every acknowledged write is there.
    setup(&db, &["INSERT INTO gc_rows VALUES ('after')"]).await;
    let stored = names(&db, "gc_rows").await;
    assert!(stored.contains(&"after".to_owned()));
    for name in &acknowledged {
        assert!(
            stored.contains(name),
            "{name} was acknowledged but is missing"
        );
    }
}

#[tokio::test]
async fn the_wal_stays_bounded_under_continuous_writes() {
    let t = TestDb::sqlite().await;
    let db = t.db.clone();
    let tessera_store::DbTarget::SqliteFile(path) = &t.target else {
        unreachable!()
    };
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    setup(&db, &["CREATE TABLE gc_blobs (b BLOB)"]).await;
    // About 120 MB through the WAL with always a writer waiting, so the background checkpointer
    // never sees a quiet moment.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..75 {
                    let mut tx = db.begin().await.unwrap();
                    exec(
                        &mut tx,
                        "INSERT INTO gc_blobs SELECT randomblob(4000) FROM \
                         (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100) \
                         SELECT x FROM n)",
                    )
                    .await;
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let wal_bytes = std::fs::metadata(&wal).unwrap().len();
    assert!(
        wal_bytes < 80_000_000,
        "the WAL grew to {wal_bytes} bytes for 120 MB written"
    );
}

/// Audit entries appended by writers of one batch chain in commit order: a rolled-back
/// writer's entries leave no trace and no gap, and the chain verifies across batches.
#[tokio::test]
async fn audit_entries_of_a_batch_chain_and_a_rolled_back_writer_leaves_no_trace() {
    use tessera_domain::audit::{Actor, AuditEvent};
    use tessera_store::audit;
    let event = |action: &str| AuditEvent::new(Actor::cli(), action, "test", None);
    let t = TestDb::sqlite().await;
    let db = t.db.clone();

    let mut first = db.begin().await.unwrap();
    audit::record(&mut first, event("first")).await.unwrap();
    let abandoned = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            audit::record(&mut tx, event("abandoned.1")).await.unwrap();
            audit::record(&mut tx, event("abandoned.2")).await.unwrap();
            drop(tx);
        }
    });
    let last = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            audit::record(&mut tx, event("last")).await.unwrap();
            tx.commit().await
        }
    });
    tokio::time::sleep(QUEUE_UP).await;
    first.commit().await.unwrap();
    last.await.unwrap().unwrap();
    abandoned.await.unwrap();
    let summary = audit::verify(&db).await.unwrap();
    assert_eq!(summary.entries, 2);
    let (seq, _) = audit::head(&db).await.unwrap();
    assert_eq!(seq, 2);
    let actions: Vec<String> = audit::list_after(&db, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["first", "last"]);

    // The next batch reads the head afresh and continues the chain.
    let mut tx = db.begin().await.unwrap();
    audit::record(&mut tx, event("next")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(audit::verify(&db).await.unwrap().entries, 3);
}
