//! The engine's scheduled work against a real store: memberships end on time through the
//! recurring `grants.due` job, including when the process was down at the moment they ended.

use std::sync::Arc;
use std::time::Duration;

use tessera_domain::ManualClock;
use tessera_domain::audit::Actor;
use tessera_domain::directory::{DataSourceKind, IdentityAttributes, IdentityKind, MatchingKey};
use tessera_domain::governance::{
    ApplicationSettings, ConnectorKind, GrantStatus, ManagementMode, SettingOverrides,
};
use tessera_engine::{Engine, EngineConfig};
use tessera_store::governance::applications::{self, NewApplication};
use tessera_store::governance::grants::{self, GrantRequest};
use tessera_store::governance::resources::{self, NewResource};
use tessera_store::governance::roles::{self, NewRole};
use tessera_store::{ChangeContext, Db, directory};
use tessera_testkit::TestDb;

const MINUTE: i64 = 60 * 1000;

async fn grant_ending_at(db: &Db, ends_at: i64) -> String {
    let ctx = ChangeContext::new(Actor::cli());
    let mut tx = db.begin().await.unwrap();
    let app = applications::create(
        &mut tx,
        &ctx,
        NewApplication {
            name: "Jira".into(),
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
        &ctx,
        NewResource {
            application_id: app.id,
            parent_id: None,
            name: "PROJ".into(),
            resource_type: "project".into(),
            description: None,
            external_id: None,
            tags: vec![],
            overrides: SettingOverrides::default(),
        },
    )
    .await
    .unwrap();
    let role = roles::create(
        &mut tx,
        &ctx,
        NewRole {
            resource_id: resource.id,
            name: "developer".into(),
            description: None,
            external_id: None,
            sensitive: false,
            overrides: SettingOverrides::default(),
            prerequisite_role_ids: vec![],
        },
    )
    .await
    .unwrap();
    let source = directory::create_data_source(
        &mut tx,
        &ctx,
        "hr",
        DataSourceKind::Csv,
        MatchingKey::UserName,
    )
    .await
    .unwrap();
    let identity = directory::create_identity(
        &mut tx,
        &ctx,
        &source.id,
        IdentityKind::Person,
        IdentityAttributes {
            user_name: "frank".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let grant = grants::grant_in(
        &mut tx,
        &ctx,
        GrantRequest {
            role_id: role.id,
            identity_id: identity.id,
            starts_at: None,
            ends_at: Some(ends_at),
            reason: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    grant.id
}

#[tokio::test]
async fn the_recurring_job_expires_memberships_within_its_interval_after_a_restart() {
    let start = 1_900_000_000_000;
    let clock = ManualClock::new(start);
    for t in TestDb::all_with_clock(Arc::new(clock.clone())).await {
        clock.set(start);
        let grant_id = grant_ending_at(&t.db, start + 10 * MINUTE).await;
        let config = EngineConfig {
            grants_due_interval: Duration::from_secs(15),
            ..EngineConfig::default()
        };
        let engine = Engine::new(t.db.clone(), config.clone());
        engine.schedule_recurring().await.unwrap();
        assert!(engine.run_due().await.unwrap() >= 1);
        assert_eq!(
            grants::get(&t.db, &grant_id).await.unwrap().status,
            GrantStatus::Active
        );

        // The process stops; time passes beyond the end; a new process starts.
        drop(engine);
        t.db.close().await;
        clock.set(start + 10 * MINUTE + 1);
        let db = Db::open_existing(&t.target, Arc::new(clock.clone()))
            .await
            .unwrap();
        let engine = Engine::new(db.clone(), config);
        engine.schedule_recurring().await.unwrap();
        // The job is due again 15 s after its last run, which was 10 minutes ago.
        assert!(engine.run_due().await.unwrap() >= 1);
        assert_eq!(
            grants::get(&db, &grant_id).await.unwrap().status,
            GrantStatus::Expired
        );
        db.close().await;
    }
}
