//! Store tests. Every test runs on SQLite and, when `TEST_PG_URL` is set, on PostgreSQL.

use std::sync::Arc;

use serde_json::json;
use tessera_domain::audit::{Actor, ActorKind, ChainBreak};
use tessera_domain::directory::{
    DataSourceKind, GroupAttributes, IdentityAttributes, IdentityKind, IdentityStatus, MatchingKey,
    MemberKind,
};
use tessera_domain::{Clock, ManualClock};
use tessera_store::jobs::{self, NewJob};
use tessera_store::request_log::{self, ApiEvent, ApiEventDetail, Batch, LogEvent};
use tessera_store::{
    Backend, ChangeContext, Db, StoreError, admin_tokens, audit, directory, with_pool,
};
use tessera_testkit::TestDb;

fn ctx() -> ChangeContext {
    ChangeContext::new(Actor::cli()).with_request_id("req-1")
}

fn person(user_name: &str) -> IdentityAttributes {
    IdentityAttributes {
        user_name: user_name.into(),
        display_name: Some(format!("{user_name} display")),
        email: Some(format!("{user_name}@example.org")),
        employee_number: Some(format!("E-{user_name}")),
        ..Default::default()
    }
}

async fn exec(db: &Db, sql: &str) {
    with_pool!(db, |pool| {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

// ---------------------------------------------------------------------------------------------
// Migrations and schema

#[tokio::test]
async fn migrations_run_from_empty_and_are_idempotent() {
    for (target, _dir) in TestDb::empty_targets().await {
        let db = Db::connect(&target, Arc::new(tessera_domain::SystemClock))
            .await
            .unwrap();
        let before = db.schema_state().await.unwrap();
        assert_eq!(before.applied, None, "{target:?}");
        assert!(db.ensure_schema_current().await.is_err());
        let after = db.migrate().await.unwrap();
        assert!(after.is_current(), "{target:?}: {after:?}");
        assert_eq!(after.known, Db::known_schema_version());
        let again = db.migrate().await.unwrap();
        assert_eq!(again, after);
        db.ensure_schema_current().await.unwrap();
        db.ping().await.unwrap();
    }
}

#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused() {
    for t in TestDb::all().await {
        exec(
            &t.db,
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (9999, 'from the future', CURRENT_TIMESTAMP, TRUE, X'00', 0)"
                .replace("X'00'", if t.backend() == Backend::Postgres { "'\\x00'::bytea" } else { "X'00'" })
                .as_str(),
        )
        .await;
        let err = t.db.migrate().await.unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("newer than this Tessera build"),
            "{err}"
        );
        assert!(t.db.ensure_schema_current().await.is_err());
        let reopened = Db::open_and_migrate(&t.target, Arc::new(tessera_domain::SystemClock)).await;
        assert!(matches!(reopened, Err(StoreError::SchemaTooNew { .. })));
    }
}

/// The two migration sets must describe the same tables and columns.
#[tokio::test]
async fn sqlite_and_postgres_schemas_are_in_lockstep() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let names = |d: &str| {
        let mut v: Vec<String> = std::fs::read_dir(format!("{dir}/migrations/{d}"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names("sqlite"),
        names("postgres"),
        "migration files differ between backends"
    );

    let sqlite = TestDb::sqlite().await;
    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    let sqlite_columns: Vec<(String, String)> = with_pool!(sqlite.db, |pool| {
        sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations' ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    });
    let pg_columns: Vec<(String, String)> = with_pool!(pg.db, |pool| {
        sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    });
    assert!(!sqlite_columns.is_empty());
    assert_eq!(sqlite_columns, pg_columns);
}

// ---------------------------------------------------------------------------------------------
// Directory round trips

#[tokio::test]
async fn data_sources_round_trip_and_names_are_unique_case_insensitively() {
    for t in TestDb::all().await {
        let db = &t.db;
        let mut tx = db.begin().await.unwrap();
        let ds = directory::create_data_source(
            &mut tx,
            &ctx(),
            "Entra ID",
            DataSourceKind::Scim,
            MatchingKey::UserName,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(directory::get_data_source(db, &ds.id).await.unwrap(), ds);
        assert_eq!(
            directory::find_data_source_by_name(db, "entra id")
                .await
                .unwrap(),
            Some(ds.clone())
        );
        assert_eq!(directory::list_data_sources(db).await.unwrap(), vec![ds]);

        let mut tx = db.begin().await.unwrap();
        let dup = directory::create_data_source(
            &mut tx,
            &ctx(),
            "ENTRA ID",
            DataSourceKind::Csv,
            MatchingKey::Email,
        )
        .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        drop(tx);
        let mut tx = db.begin().await.unwrap();
        let bad = directory::create_data_source(
            &mut tx,
            &ctx(),
            "  ",
            DataSourceKind::Csv,
            MatchingKey::Email,
        )
        .await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))));
        assert!(
            directory::get_data_source(db, "nope")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}

#[tokio::test]
async fn identities_round_trip_with_status_manager_and_paging() {
    for t in TestDb::all().await {
        let db = &t.db;
        let mut tx = db.begin().await.unwrap();
        let ds = directory::create_data_source(
            &mut tx,
            &ctx(),
            "HR",
            DataSourceKind::Hr,
            MatchingKey::EmployeeNumber,
        )
        .await
        .unwrap();
        let mut attrs = person("Alice");
        attrs.source_doc = Some(json!({"costCenter": "42"}));
        attrs.department = Some("Finance".into());
        let alice =
            directory::create_identity(&mut tx, &ctx(), &ds.id, IdentityKind::Person, attrs)
                .await
                .unwrap();
        let bob = directory::create_identity(
            &mut tx,
            &ctx(),
            &ds.id,
            IdentityKind::Service,
            person("bob"),
        )
        .await
        .unwrap();
        directory::set_manager(&mut tx, &ctx(), &bob.id, Some(&alice.id))
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let got = directory::get_identity(db, &alice.id).await.unwrap();
        assert_eq!(got, alice);
        let got_bob = directory::get_identity(db, &bob.id).await.unwrap();
        assert_eq!(
            got_bob.attributes.manager_id.as_deref(),
            Some(alice.id.as_str())
        );
        assert_eq!(got_bob.kind, IdentityKind::Service);
        assert_eq!(got_bob.version, 2);

        // userName is unique per data source, case-insensitively.
        let mut tx = db.begin().await.unwrap();
        let dup = directory::create_identity(
            &mut tx,
            &ctx(),
            &ds.id,
            IdentityKind::Person,
            person("ALICE"),
        )
        .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        drop(tx);

        // Suspend keeps the identity visible; delete hides it and frees the userName.
        let mut tx = db.begin().await.unwrap();
        directory::set_identity_status(&mut tx, &ctx(), &alice.id, IdentityStatus::Suspended)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            directory::get_identity(db, &alice.id).await.unwrap().status,
            IdentityStatus::Suspended
        );
        let mut tx = db.begin().await.unwrap();
        directory::set_identity_status(&mut tx, &ctx(), &alice.id, IdentityStatus::Deleted)
            .await
            .unwrap();
        let again = directory::create_identity(
            &mut tx,
            &ctx(),
            &ds.id,
            IdentityKind::Person,
            person("alice"),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(
            directory::get_identity(db, &alice.id)
                .await
                .unwrap_err()
                .is_not_found()
        );

        let page1 = directory::list_identities(db, Some(&ds.id), None, 1)
            .await
            .unwrap();
        assert_eq!(page1.len(), 1);
        let page2 = directory::list_identities(db, Some(&ds.id), Some(&page1[0].id), 10)
            .await
            .unwrap();
        let all: Vec<String> = page1
            .iter()
            .chain(page2.iter())
            .map(|i| i.id.clone())
            .collect();
        assert_eq!(all, vec![bob.id.clone(), again.id.clone()]);
        assert_eq!(directory::count_identities(db).await.unwrap(), 2);
        assert!(
            directory::list_identities(db, Some("other"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn groups_and_members_round_trip() {
    for t in TestDb::all().await {
        let db = &t.db;
        let mut tx = db.begin().await.unwrap();
        let ds = directory::create_data_source(
            &mut tx,
            &ctx(),
            "Okta",
            DataSourceKind::Scim,
            MatchingKey::UserName,
        )
        .await
        .unwrap();
        let other = directory::create_data_source(
            &mut tx,
            &ctx(),
            "Other",
            DataSourceKind::Scim,
            MatchingKey::UserName,
        )
        .await
        .unwrap();
        let eng = directory::create_group(
            &mut tx,
            &ctx(),
            &ds.id,
            GroupAttributes {
                display_name: "Engineering".into(),
                description: Some("d".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let team = directory::create_group(
            &mut tx,
            &ctx(),
            &ds.id,
            GroupAttributes {
                display_name: "Platform".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let alice = directory::create_identity(
            &mut tx,
            &ctx(),
            &ds.id,
            IdentityKind::Person,
            person("alice"),
        )
        .await
        .unwrap();
        let stranger = directory::create_identity(
            &mut tx,
            &ctx(),
            &other.id,
            IdentityKind::Person,
            person("carol"),
        )
        .await
        .unwrap();
        assert!(
            directory::add_group_member(&mut tx, &ctx(), &eng.id, MemberKind::Identity, &alice.id)
                .await
                .unwrap()
        );
        assert!(
            !directory::add_group_member(&mut tx, &ctx(), &eng.id, MemberKind::Identity, &alice.id)
                .await
                .unwrap()
        );
        assert!(
            directory::add_group_member(&mut tx, &ctx(), &eng.id, MemberKind::Group, &team.id)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();

        // A member from another data source is never mixed in.
        let mut tx = db.begin().await.unwrap();
        let cross = directory::add_group_member(
            &mut tx,
            &ctx(),
            &eng.id,
            MemberKind::Identity,
            &stranger.id,
        )
        .await;
        assert!(
            matches!(cross, Err(StoreError::NotFound { .. })),
            "{cross:?}"
        );
        let foreign_manager =
            directory::set_manager(&mut tx, &ctx(), &alice.id, Some(&stranger.id)).await;
        assert!(
            matches!(foreign_manager, Err(StoreError::NotFound { .. })),
            "{foreign_manager:?}"
        );
        let selfish =
            directory::add_group_member(&mut tx, &ctx(), &eng.id, MemberKind::Group, &eng.id).await;
        assert!(matches!(selfish, Err(StoreError::Conflict(_))));
        let dup = directory::create_group(
            &mut tx,
            &ctx(),
            &ds.id,
            GroupAttributes {
                display_name: "engineering".into(),
                ..Default::default()
            },
        )
        .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))));
        drop(tx);

        let got = directory::get_group(db, &eng.id).await.unwrap();
        assert_eq!(got.attributes, eng.attributes);
        assert_eq!(got.version, 3, "each membership change bumps the version");
        let members = directory::list_group_members(db, &eng.id, None, 10)
            .await
            .unwrap();
        let ids: Vec<(MemberKind, String)> = members
            .iter()
            .map(|m| (m.member_kind, m.member_id.clone()))
            .collect();
        assert_eq!(
            ids,
            vec![
                (MemberKind::Group, team.id.clone()),
                (MemberKind::Identity, alice.id.clone())
            ]
        );
        let next =
            directory::list_group_members(db, &eng.id, Some((MemberKind::Group, &team.id)), 10)
                .await
                .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].member_id, alice.id);

        let mut tx = db.begin().await.unwrap();
        assert!(
            directory::remove_group_member(
                &mut tx,
                &ctx(),
                &eng.id,
                MemberKind::Identity,
                &alice.id
            )
            .await
            .unwrap()
        );
        assert!(
            !directory::remove_group_member(
                &mut tx,
                &ctx(),
                &eng.id,
                MemberKind::Identity,
                &alice.id
            )
            .await
            .unwrap()
        );
        tx.commit().await.unwrap();
        assert_eq!(
            directory::list_group_members(db, &eng.id, None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // A deleted identity cannot join a group.
        let mut tx = db.begin().await.unwrap();
        directory::set_identity_status(&mut tx, &ctx(), &alice.id, IdentityStatus::Deleted)
            .await
            .unwrap();
        let gone =
            directory::add_group_member(&mut tx, &ctx(), &eng.id, MemberKind::Identity, &alice.id)
                .await;
        assert!(matches!(gone, Err(StoreError::NotFound { .. })), "{gone:?}");
        drop(tx);
        assert_eq!(
            directory::list_groups(db, Some(&ds.id), None, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            directory::list_groups(db, Some(&ds.id), Some(&eng.id), 10)
                .await
                .unwrap()[0]
                .id,
            team.id
        );
    }
}

#[tokio::test]
async fn a_rolled_back_change_leaves_neither_row_nor_audit_entry() {
    for t in TestDb::all().await {
        let mut tx = t.db.begin().await.unwrap();
        directory::create_data_source(
            &mut tx,
            &ctx(),
            "Gone",
            DataSourceKind::Csv,
            MatchingKey::Email,
        )
        .await
        .unwrap();
        drop(tx);
        assert!(
            directory::list_data_sources(&t.db)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(audit::list_after(&t.db, 0, 10).await.unwrap().is_empty());
        audit::verify(&t.db).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Admin tokens

#[tokio::test]
async fn admin_tokens_authenticate_until_revoked() {
    for t in TestDb::all().await {
        let db = &t.db;
        let mut tx = db.begin().await.unwrap();
        let (token, value) = admin_tokens::create(&mut tx, &ctx(), "ops").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            admin_tokens::authenticate(db, &value).await.unwrap(),
            Some(token.clone())
        );
        assert_eq!(
            admin_tokens::authenticate(db, "tsr_adm_wrong")
                .await
                .unwrap(),
            None
        );
        // Only the digest is stored.
        let stored: Vec<String> = with_pool!(db, |pool| {
            sqlx::query_scalar("SELECT token_digest FROM admin_tokens")
                .fetch_all(pool)
                .await
                .unwrap()
        });
        assert_eq!(stored, vec![tessera_domain::secret::digest(&value)]);

        let mut tx = db.begin().await.unwrap();
        let revoked = admin_tokens::revoke(&mut tx, &ctx(), &token.id)
            .await
            .unwrap();
        admin_tokens::revoke(&mut tx, &ctx(), &token.id)
            .await
            .unwrap();
        assert!(
            admin_tokens::revoke(&mut tx, &ctx(), "missing")
                .await
                .unwrap_err()
                .is_not_found()
        );
        tx.commit().await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(admin_tokens::authenticate(db, &value).await.unwrap(), None);
        assert_eq!(admin_tokens::list(db).await.unwrap().len(), 1);
        let actions: Vec<String> = audit::list_after(db, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            ["admin_token.create", "admin_token.revoke"],
            "a repeated revoke records nothing"
        );
    }
}

#[tokio::test]
async fn bootstrap_creates_one_token_only_when_none_is_active() {
    for t in TestDb::all().await {
        let db = &t.db;
        let sys = ChangeContext::new(Actor::system());
        let short = admin_tokens::bootstrap(db, &sys, Some("short")).await;
        assert!(matches!(short, Err(StoreError::Invalid(_))));
        let supplied = "a-supplied-bootstrap-token-0123456789";
        match admin_tokens::bootstrap(db, &sys, Some(supplied))
            .await
            .unwrap()
        {
            admin_tokens::Bootstrap::StoredSupplied(_) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            admin_tokens::authenticate(db, supplied)
                .await
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            admin_tokens::bootstrap(db, &sys, None).await.unwrap(),
            admin_tokens::Bootstrap::AlreadyPresent
        ));

        // Once revoked, the supplied token is not stored again at the next start.
        let id = admin_tokens::list(db).await.unwrap()[0].id.clone();
        let mut tx = db.begin().await.unwrap();
        admin_tokens::revoke(&mut tx, &sys, &id).await.unwrap();
        tx.commit().await.unwrap();
        let again = admin_tokens::bootstrap(db, &sys, Some(supplied)).await;
        assert!(
            matches!(&again, Err(StoreError::Conflict(m)) if m.contains("revoked")),
            "{again:?}"
        );
        assert!(
            admin_tokens::authenticate(db, supplied)
                .await
                .unwrap()
                .is_none()
        );

        // Concurrent starts over an empty token table create exactly one token.
        let fresh = TestDb::all()
            .await
            .into_iter()
            .find(|f| f.backend() == t.backend())
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let db = fresh.db.clone();
                tokio::spawn(async move {
                    admin_tokens::bootstrap(&db, &ChangeContext::new(Actor::system()), None).await
                })
            })
            .collect();
        let mut generated = 0;
        for task in tasks {
            if let admin_tokens::Bootstrap::Generated(_, value) = task.await.unwrap().unwrap() {
                assert!(
                    admin_tokens::authenticate(&fresh.db, &value)
                        .await
                        .unwrap()
                        .is_some()
                );
                generated += 1;
            }
        }
        assert_eq!(generated, 1);
        assert_eq!(admin_tokens::list(&fresh.db).await.unwrap().len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Audit chain

async fn seed_audit(db: &Db, n: usize) {
    for i in 0..n {
        let mut tx = db.begin().await.unwrap();
        directory::create_data_source(
            &mut tx,
            &ctx(),
            &format!("ds{i}"),
            DataSourceKind::Csv,
            MatchingKey::Email,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

/// Drops the append-only triggers, as an attacker with database access could.
async fn allow_tampering(db: &Db) {
    match db.backend() {
        Backend::Sqlite => {
            exec(db, "DROP TRIGGER audit_log_no_update").await;
            exec(db, "DROP TRIGGER audit_log_no_delete").await;
        }
        Backend::Postgres => {
            exec(db, "DROP TRIGGER audit_log_no_update ON audit_log").await;
            exec(db, "DROP TRIGGER audit_log_no_delete ON audit_log").await;
        }
    }
}

#[tokio::test]
async fn audit_entries_carry_the_change_and_the_chain_verifies() {
    for t in TestDb::all().await {
        seed_audit(&t.db, 5).await;
        let entries = audit::list_after(&t.db, 0, 100).await.unwrap();
        assert_eq!(entries.len(), 5);
        let first = &entries[0];
        assert_eq!(first.seq, 1);
        assert_eq!(first.action, "data_source.create");
        assert_eq!(first.actor_kind, ActorKind::Cli.as_str());
        assert_eq!(first.request_id.as_deref(), Some("req-1"));
        assert_eq!(
            first.details,
            r#"{"kind":"csv","matching_key":"email","name":"ds0"}"#
        );
        assert_eq!(first.prev_hash, tessera_domain::audit::GENESIS_HASH);
        assert_eq!(entries[1].prev_hash, first.hash);
        let summary = audit::verify(&t.db).await.unwrap();
        assert_eq!(summary.entries, 5);
        assert_eq!(
            audit::head(&t.db).await.unwrap(),
            (5, entries[4].hash.clone())
        );
    }
}

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes() {
    for t in TestDb::all().await {
        seed_audit(&t.db, 1).await;
        let update = with_pool!(t.db, |pool| {
            sqlx::query("UPDATE audit_log SET action = 'x'")
                .execute(pool)
                .await
                .map(|_| ())
        });
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = with_pool!(t.db, |pool| sqlx::query("DELETE FROM audit_log")
            .execute(pool)
            .await
            .map(|_| ()));
        assert!(delete.unwrap_err().to_string().contains("append-only"));
    }
}

#[tokio::test]
async fn verify_names_an_edited_entry() {
    for t in TestDb::all().await {
        seed_audit(&t.db, 5).await;
        allow_tampering(&t.db).await;
        exec(
            &t.db,
            "UPDATE audit_log SET details = '{\"name\":\"forged\"}' WHERE seq = 3",
        )
        .await;
        let err = audit::verify(&t.db).await.unwrap_err();
        assert!(
            matches!(
                err,
                audit::VerifyError::Broken(ChainBreak::Altered { seq: 3 })
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn verify_names_a_deleted_entry() {
    for t in TestDb::all().await {
        seed_audit(&t.db, 5).await;
        allow_tampering(&t.db).await;
        exec(&t.db, "DELETE FROM audit_log WHERE seq = 2").await;
        let err = audit::verify(&t.db).await.unwrap_err();
        assert!(
            matches!(
                err,
                audit::VerifyError::Broken(ChainBreak::Missing {
                    expected: 2,
                    found: 3
                })
            ),
            "{err:?}"
        );

        // Removing the newest entry is caught by the head.
        let t2 = TestDb::all()
            .await
            .into_iter()
            .find(|x| x.backend() == t.backend())
            .unwrap();
        seed_audit(&t2.db, 3).await;
        allow_tampering(&t2.db).await;
        exec(&t2.db, "DELETE FROM audit_log WHERE seq = 3").await;
        let err = audit::verify(&t2.db).await.unwrap_err();
        assert!(matches!(
            err,
            audit::VerifyError::Broken(ChainBreak::HeadMismatch {
                last_seq: 2,
                head_seq: 3
            })
        ));
    }
}

#[tokio::test]
async fn verify_names_a_reordered_entry() {
    for t in TestDb::all().await {
        seed_audit(&t.db, 5).await;
        allow_tampering(&t.db).await;
        // Swap entries 2 and 4 by renumbering them.
        exec(&t.db, "UPDATE audit_log SET seq = -2 WHERE seq = 2").await;
        exec(&t.db, "UPDATE audit_log SET seq = 2 WHERE seq = 4").await;
        exec(&t.db, "UPDATE audit_log SET seq = 4 WHERE seq = -2").await;
        let err = audit::verify(&t.db).await.unwrap_err();
        assert!(
            matches!(
                err,
                audit::VerifyError::Broken(ChainBreak::Unlinked { seq: 2 })
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_writers_keep_the_chain_linear() {
    for t in TestDb::all().await {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let db = t.db.clone();
                tokio::spawn(async move {
                    let mut tx = db.begin().await.unwrap();
                    directory::create_data_source(
                        &mut tx,
                        &ctx(),
                        &format!("c{i}"),
                        DataSourceKind::Csv,
                        MatchingKey::Email,
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(audit::verify(&t.db).await.unwrap().entries, 16);
    }
}

// ---------------------------------------------------------------------------------------------
// Request logs

fn api_event(id: &str, at: i64) -> ApiEvent {
    ApiEvent {
        id: id.into(),
        occurred_at: at,
        request_id: format!("r-{id}"),
        surface: "api".into(),
        method: "GET".into(),
        route: Some("/api/v1/whoami".into()),
        path: "/api/v1/whoami?x=1".into(),
        status: 200,
        latency_us: 1234,
        caller_kind: Some("admin_token".into()),
        caller_id: Some("tok".into()),
        remote_addr: Some("127.0.0.1:5555".into()),
        user_agent: Some("test".into()),
    }
}

#[tokio::test]
async fn request_logs_round_trip_and_purge_by_age() {
    for t in TestDb::all().await {
        let db = &t.db;
        let mut batch = Batch::default();
        for i in 0..450 {
            batch.api_events.push(api_event(
                &format!("e{i:03}"),
                if i < 300 { 1_000 } else { 5_000 },
            ));
        }
        batch.details.push(ApiEventDetail {
            api_event_id: "e000".into(),
            request_headers: r#"{"accept":"*/*"}"#.into(),
            request_body: Some("{}".into()),
            request_body_truncated: true,
            response_headers: "{}".into(),
            response_body: None,
            response_body_truncated: false,
        });
        batch.log_events.push(LogEvent {
            id: "l1".into(),
            occurred_at: 1_000,
            level: "error".into(),
            kind: "panic".into(),
            request_id: Some("r-e000".into()),
            method: Some("GET".into()),
            path: Some("/x".into()),
            route: None,
            message: "boom".into(),
            detail: Some("backtrace".into()),
        });
        // Characters that delimiters and escapes in any wire format could trip over.
        batch.api_events[1].user_agent = Some("tab\there\nnew\\line\r\\N \u{e9}\u{1f600}".into());
        request_log::write_batch(db, &batch).await.unwrap();
        let tricky = request_log::api_events_for_request(db, "r-e001")
            .await
            .unwrap();
        assert_eq!(
            tricky[0].user_agent,
            batch.api_events[1].user_agent,
            "{}",
            t.backend().as_str()
        );

        assert_eq!(
            request_log::api_events_for_request(db, "r-e000")
                .await
                .unwrap(),
            vec![batch.api_events[0].clone()]
        );
        assert_eq!(
            request_log::api_event_detail(db, "e000").await.unwrap(),
            Some(batch.details[0].clone())
        );
        assert_eq!(
            request_log::log_events_for_request(db, "r-e000")
                .await
                .unwrap(),
            batch.log_events
        );
        assert_eq!(
            request_log::recent_api_events(db, 1).await.unwrap()[0].occurred_at,
            5_000
        );

        let purged = request_log::purge_older_than(db, 2_000, 100).await.unwrap();
        assert_eq!(
            purged,
            request_log::Purged {
                api_events: 300,
                log_events: 1
            }
        );
        assert_eq!(
            request_log::recent_api_events(db, 1000)
                .await
                .unwrap()
                .len(),
            150
        );
        assert_eq!(
            request_log::api_event_detail(db, "e000").await.unwrap(),
            None
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs

fn job(
    kind: &str,
    key: Option<&'static str>,
    run_at: i64,
    interval_ms: Option<i64>,
) -> NewJob<'static> {
    NewJob {
        kind: Box::leak(kind.to_owned().into_boxed_str()),
        dedupe_key: key,
        payload: json!({"k": kind}),
        run_at,
        interval_ms,
        max_attempts: 2,
    }
}

#[tokio::test]
async fn jobs_are_claimed_under_leases_and_retried() {
    let clock = ManualClock::new(1_000_000);
    for t in TestDb::all_with_clock(Arc::new(clock.clone())).await {
        let db = &t.db;
        clock.set(1_000_000);
        let a = jobs::enqueue(db, job("a", Some("only"), 1_000_000, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            jobs::enqueue(db, job("a", Some("only"), 1_000_000, None))
                .await
                .unwrap(),
            None,
            "deduplicated"
        );
        jobs::enqueue(db, job("later", None, 2_000_000, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(jobs::queued_count(db).await.unwrap(), 2);

        let claimed = jobs::claim_due(db, "w1", 60_000, 10).await.unwrap();
        assert_eq!(
            claimed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            [a.as_str()]
        );
        assert_eq!(claimed[0].attempts, 1);
        assert_eq!(claimed[0].payload, r#"{"k":"a"}"#);
        assert!(
            jobs::claim_due(db, "w2", 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "leased to w1"
        );

        // A worker that dies loses its lease; another picks the job up.
        clock.advance(60_001);
        let reclaimed = jobs::claim_due(db, "w2", 60_000, 10).await.unwrap();
        assert_eq!(reclaimed.len(), 1);
        assert!(
            !jobs::complete(db, &claimed[0], "w1").await.unwrap(),
            "w1 no longer holds it"
        );
        assert!(
            jobs::fail(db, &reclaimed[0], "w2", "boom", 1_000)
                .await
                .unwrap()
        );
        let after_fail = jobs::get(db, &a).await.unwrap().unwrap();
        assert_eq!(
            (after_fail.status.as_str(), after_fail.attempts),
            (jobs::FAILED, 2),
            "max_attempts reached"
        );
        assert_eq!(after_fail.last_error.as_deref(), Some("boom"));

        // Recurring jobs return to the queue after completing.
        let r = jobs::enqueue(
            db,
            job("recurring", Some("r"), clock.now_ms(), Some(3_600_000)),
        )
        .await
        .unwrap()
        .unwrap();
        let claimed = jobs::claim_due(db, "w3", 60_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(jobs::complete(db, &claimed[0], "w3").await.unwrap());
        let requeued = jobs::get(db, &r).await.unwrap().unwrap();
        assert_eq!(requeued.status, jobs::QUEUED);
        assert_eq!(requeued.run_at, clock.now_ms() + 3_600_000);
        assert_eq!(requeued.attempts, 0);
    }
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_job() {
    for t in TestDb::all().await {
        for i in 0..40 {
            jobs::enqueue(&t.db, job(&format!("k{i}"), None, 0, None))
                .await
                .unwrap();
        }
        let tasks: Vec<_> = (0..4)
            .map(|w| {
                let db = t.db.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = jobs::claim_due(&db, &format!("w{w}"), 60_000, 3)
                            .await
                            .unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|j| j.id));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!((n, all.len()), (40, 40));
    }
}

#[tokio::test]
async fn verify_flags_entries_beyond_the_head_but_not_live_appends() {
    for t in TestDb::all().await {
        seed_audit(&t.db, 3).await;
        // Appends while verification runs never look like tampering.
        let writer = {
            let db = t.db.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let mut tx = db.begin().await.unwrap();
                    directory::create_data_source(
                        &mut tx,
                        &ctx(),
                        &format!("live{i}"),
                        DataSourceKind::Csv,
                        MatchingKey::Email,
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        };
        for _ in 0..20 {
            audit::verify(&t.db).await.unwrap();
        }
        writer.await.unwrap();
        assert_eq!(audit::verify(&t.db).await.unwrap().entries, 43);

        // A row slipped in past the head, bypassing `record`, is named.
        exec(
            &t.db,
            "INSERT INTO audit_log (seq, id, occurred_at, actor_kind, action, entity_kind, details, prev_hash, hash) \
             SELECT seq + 1, 'forged', 0, 'cli', 'x', 'y', '{}', hash, 'h' FROM audit_head",
        )
        .await;
        let err = audit::verify(&t.db).await.unwrap_err();
        assert!(
            matches!(
                err,
                audit::VerifyError::Broken(ChainBreak::Foreign {
                    count: 1,
                    first: 44
                })
            ),
            "{err:?}"
        );
    }
}

#[path = "store/governance.rs"]
mod governance;

#[path = "store/group_mappings.rs"]
mod group_mappings;

#[path = "store/rules.rs"]
mod rules;
