//! The governance repositories: grants ending and starting on time (across a restart, with
//! the clock moved), prerequisite cycles, and deletes refused while access is live.

use std::sync::Arc;

use tessera_domain::audit::Actor;
use tessera_domain::directory::{DataSourceKind, IdentityAttributes, IdentityKind, MatchingKey};
use tessera_domain::governance::{
    ApplicationSettings, ConnectorKind, DurationPolicy, GrantStatus, ManagementMode,
    SettingOverrides,
};
use tessera_domain::{Clock, ManualClock};
use tessera_store::governance::applications::{self, NewApplication};
use tessera_store::governance::grants::{self, DueOutcome, GrantRequest};
use tessera_store::governance::resources::{self, NewResource};
use tessera_store::governance::roles::{self, NewRole};
use tessera_store::{ChangeContext, Db, StoreError, audit, directory};
use tessera_testkit::TestDb;

const HOUR: i64 = 3600 * 1000;

fn ctx() -> ChangeContext {
    ChangeContext::new(Actor::cli())
}

/// An application with one resource and one role allowing grants of up to a day; and an
/// identity. Returns (role id, identity id).
async fn fixture(db: &Db) -> (String, String) {
    let mut tx = db.begin().await.unwrap();
    let app = applications::create(
        &mut tx,
        &ctx(),
        NewApplication {
            name: "Vault".into(),
            description: None,
            icon: None,
            connector_kind: ConnectorKind::Manual,
            management_mode: ManagementMode::Managed,
            owner: None,
            maintainers: vec![],
            default_workflow_id: None,
            settings: ApplicationSettings::default(),
            member_format: Default::default(),
        },
    )
    .await
    .unwrap();
    let resource = resources::create(
        &mut tx,
        &ctx(),
        NewResource {
            application_id: app.id,
            parent_id: None,
            name: "secrets".into(),
            resource_type: "vault".into(),
            description: None,
            external_id: None,
            tags: vec![],
            overrides: SettingOverrides::default(),
        },
    )
    .await
    .unwrap();
    let role = new_role(&mut tx, &resource.id, "reader", vec![]).await;
    let source = directory::create_data_source(
        &mut tx,
        &ctx(),
        "people",
        DataSourceKind::Csv,
        MatchingKey::UserName,
    )
    .await
    .unwrap();
    let identity = directory::create_identity(
        &mut tx,
        &ctx(),
        &source.id,
        IdentityKind::Person,
        IdentityAttributes {
            user_name: "erin".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (role.id, identity.id)
}

async fn new_role(
    tx: &mut tessera_store::Tx,
    resource_id: &str,
    name: &str,
    prerequisites: Vec<String>,
) -> tessera_domain::governance::Role {
    roles::create(
        tx,
        &ctx(),
        NewRole {
            resource_id: resource_id.into(),
            name: name.into(),
            description: None,
            external_id: None,
            sensitive: false,
            overrides: SettingOverrides {
                durations: Some(DurationPolicy {
                    max_seconds: Some(24 * 3600),
                    default_seconds: None,
                }),
                ..Default::default()
            },
            prerequisite_role_ids: prerequisites,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn grants_end_and_start_on_time_also_after_a_restart() {
    let start = 1_900_000_000_000;
    let clock = ManualClock::new(start);
    for t in TestDb::all_with_clock(Arc::new(clock.clone())).await {
        clock.set(start);
        let (role_id, identity_id) = fixture(&t.db).await;
        let mut tx = t.db.begin().await.unwrap();
        let now_grant = grants::grant_in(
            &mut tx,
            &ctx(),
            GrantRequest {
                role_id: role_id.clone(),
                identity_id: identity_id.clone(),
                starts_at: None,
                ends_at: Some(start + HOUR),
                reason: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let mut tx = t.db.begin().await.unwrap();
        // A second grant of the same role from the same source would be a duplicate while the
        // first is live, so schedule it through another role.
        let resource_id = roles::get(&t.db, &role_id).await.unwrap().resource_id;
        let later_role = new_role(&mut tx, &resource_id, "writer", vec![]).await;
        let later = grants::grant_in(
            &mut tx,
            &ctx(),
            GrantRequest {
                role_id: later_role.id,
                identity_id: identity_id.clone(),
                starts_at: Some(start + 2 * HOUR),
                ends_at: Some(start + 3 * HOUR),
                reason: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(now_grant.status, GrantStatus::Active);
        assert_eq!(later.status, GrantStatus::Scheduled);

        // Nothing is due yet.
        let system = ChangeContext::new(Actor::system());
        assert_eq!(
            grants::end_due(&t.db, &system, 100).await.unwrap(),
            DueOutcome::default()
        );

        // "Restart": close the store, move the clock past the first end, open it again.
        t.db.close().await;
        clock.set(start + 90 * 60 * 1000);
        let db = Db::open_existing(&t.target, Arc::new(clock.clone()))
            .await
            .unwrap();
        let done = grants::end_due(&db, &system, 100).await.unwrap();
        assert_eq!(
            done,
            DueOutcome {
                expired: 1,
                started: 0
            }
        );
        let ended = grants::get(&db, &now_grant.id).await.unwrap();
        assert_eq!(ended.status, GrantStatus::Expired);
        assert_eq!(ended.ended_at, Some(clock.now_ms()));
        assert_eq!(ended.ended_by.as_deref(), Some("system"));
        // Running again changes nothing.
        assert_eq!(
            grants::end_due(&db, &system, 100).await.unwrap(),
            DueOutcome::default()
        );

        clock.set(start + 2 * HOUR + 1);
        let done = grants::end_due(&db, &system, 100).await.unwrap();
        assert_eq!(
            done,
            DueOutcome {
                expired: 0,
                started: 1
            }
        );
        clock.set(start + 3 * HOUR);
        let done = grants::end_due(&db, &system, 100).await.unwrap();
        assert_eq!(
            done,
            DueOutcome {
                expired: 1,
                started: 0
            }
        );
        assert_eq!(
            grants::get(&db, &later.id).await.unwrap().status,
            GrantStatus::Expired
        );

        let entries = audit::list_after(&db, 0, 1000).await.unwrap();
        let expiries: Vec<_> = entries
            .iter()
            .filter(|e| e.action == "membership.expire")
            .collect();
        assert_eq!(expiries.len(), 2);
        assert!(expiries.iter().all(|e| e.actor_kind == "system"));
        assert!(entries.iter().any(|e| e.action == "membership.start"));
        audit::verify(&db).await.unwrap();
        db.close().await;
    }
}

#[tokio::test]
async fn prerequisite_cycles_are_refused() {
    for t in TestDb::all().await {
        let (role_id, _) = fixture(&t.db).await;
        let resource_id = roles::get(&t.db, &role_id).await.unwrap().resource_id;
        let mut tx = t.db.begin().await.unwrap();
        let b = new_role(&mut tx, &resource_id, "b", vec![role_id.clone()]).await;
        let c = new_role(&mut tx, &resource_id, "c", vec![b.id.clone()]).await;
        tx.commit().await.unwrap();
        // reader → c would close reader → c → b → reader.
        let mut tx = t.db.begin().await.unwrap();
        let err = roles::update(&mut tx, &ctx(), &role_id, None, |r| {
            r.prerequisite_role_ids = vec![c.id.clone()];
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::Invalid(i) if i.field == "prerequisite_role_ids"),
            "{err:?}"
        );
        drop(tx);
        // A role another requires cannot be deleted.
        let mut tx = t.db.begin().await.unwrap();
        let err = roles::delete(&mut tx, &ctx(), &b.id, None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    }
}

#[tokio::test]
async fn deletes_are_refused_while_access_is_live_and_cascade_once_it_ended() {
    for t in TestDb::all().await {
        let (role_id, identity_id) = fixture(&t.db).await;
        let role = roles::get(&t.db, &role_id).await.unwrap();
        let mut tx = t.db.begin().await.unwrap();
        let grant = grants::grant_in(
            &mut tx,
            &ctx(),
            GrantRequest {
                role_id: role_id.clone(),
                identity_id,
                starts_at: None,
                ends_at: None,
                reason: Some("on call".into()),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        for attempt in 0..2 {
            let mut tx = t.db.begin().await.unwrap();
            let err = if attempt == 0 {
                resources::delete(&mut tx, &ctx(), &role.resource_id, None).await
            } else {
                applications::delete(&mut tx, &ctx(), &role.application_id, None).await
            }
            .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        }
        let mut tx = t.db.begin().await.unwrap();
        grants::change(
            &mut tx,
            &ctx(),
            &grant.id,
            Some(grant.version),
            grants::Change::Revoke,
            None,
        )
        .await
        .unwrap();
        applications::delete(&mut tx, &ctx(), &role.application_id, None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(
            roles::get(&t.db, &role_id)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            grants::get(&t.db, &grant.id)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}

async fn another_identity(db: &Db, user_name: &str) -> String {
    let source = directory::find_data_source_by_name(db, "people")
        .await
        .unwrap()
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    let identity = directory::create_identity(
        &mut tx,
        &ctx(),
        &source.id,
        IdentityKind::Person,
        IdentityAttributes {
            user_name: user_name.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    identity.id
}

/// The grant fast path plans from role settings it read earlier (and caches); a settings
/// change in between must neither let a grant through that the new settings refuse, nor
/// refuse one they allow.
#[tokio::test]
async fn grants_follow_settings_changed_after_the_role_was_read() {
    for t in TestDb::all().await {
        let db = &t.db;
        let (role_id, first) = fixture(db).await;
        let request = |identity_id: &str, days: i64| GrantRequest {
            role_id: role_id.clone(),
            identity_id: identity_id.to_owned(),
            starts_at: None,
            ends_at: Some(db.now_ms() + days * 24 * HOUR),
            reason: None,
        };
        // Reads and caches the role (maximum one day).
        grants::grant(db, &ctx(), request(&first, 1)).await.unwrap();

        // Widen to 30 days: a 10-day grant is now allowed.
        let set_max = |days: i64| {
            move |r: &mut tessera_domain::governance::Role| {
                r.overrides.durations = Some(DurationPolicy {
                    max_seconds: Some(days * 24 * 3600),
                    default_seconds: None,
                });
                Ok(())
            }
        };
        let mut tx = db.begin().await.unwrap();
        roles::update(&mut tx, &ctx(), &role_id, None, set_max(30))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let second = another_identity(db, "second").await;
        let g = grants::grant(db, &ctx(), request(&second, 10))
            .await
            .unwrap();
        assert_eq!(g.status, GrantStatus::Active);

        // Narrow to 2 days: a 10-day grant is refused, though the cache said 30.
        let mut tx = db.begin().await.unwrap();
        roles::update(&mut tx, &ctx(), &role_id, None, set_max(2))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let third = another_identity(db, "third").await;
        let err = grants::grant(db, &ctx(), request(&third, 10))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Refused(r) if r.code() == "duration-not-allowed"),
            "{err:?}"
        );
        let listed = grants::list(
            db,
            &grants::GrantFilter {
                identity_id: Some(third.clone()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
        assert!(listed.is_empty(), "a refused grant writes nothing");
    }
}
