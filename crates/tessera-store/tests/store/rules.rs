//! Rules and bulk actions in the store: what a filter matches, precedence among rules, defaults
//! for new items (explicit values kept), previews that write nothing, idempotence.

use tessera_domain::audit::Actor;
use tessera_domain::governance::rules::{ItemFilter, RuleTarget};
use tessera_domain::governance::{
    ApplicationSettings, ConnectorKind, DurationPolicy, ManagementMode, Principal, PrincipalKind,
    Resource, SettingOverrides,
};
use tessera_store::governance::applications::{self, NewApplication};
use tessera_store::governance::resources::{self, NewResource};
use tessera_store::governance::roles::{self, NewRole};
use tessera_store::governance::rules::{self, NewBulkAction, NewRule};
use tessera_store::{ChangeContext, Db, StoreError, directory};
use tessera_testkit::TestDb;

fn ctx() -> ChangeContext {
    ChangeContext::new(Actor::cli())
}

async fn app(db: &Db, name: &str) -> String {
    let mut tx = db.begin().await.unwrap();
    let a = applications::create(
        &mut tx,
        &ctx(),
        NewApplication {
            name: name.into(),
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
    tx.commit().await.unwrap();
    a.id
}

async fn resource(
    db: &Db,
    app: &str,
    name: &str,
    kind: &str,
    tags: &[&str],
    overrides: SettingOverrides,
) -> Resource {
    let mut tx = db.begin().await.unwrap();
    let r = resources::create(
        &mut tx,
        &ctx(),
        NewResource {
            application_id: app.into(),
            parent_id: None,
            name: name.into(),
            resource_type: kind.into(),
            description: None,
            external_id: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            overrides,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    r
}

async fn owner_group(db: &Db) -> Principal {
    let mut tx = db.begin().await.unwrap();
    let source = directory::create_data_source(
        &mut tx,
        &ctx(),
        "idp",
        tessera_domain::directory::DataSourceKind::Scim,
        tessera_domain::directory::MatchingKey::UserName,
    )
    .await
    .unwrap();
    let g = directory::create_group(
        &mut tx,
        &ctx(),
        &source.id,
        tessera_domain::directory::GroupAttributes {
            display_name: "DBAs".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Principal {
        kind: PrincipalKind::Group,
        id: g.id,
    }
}

async fn rule(
    db: &Db,
    name: &str,
    target: RuleTarget,
    filter: ItemFilter,
    actions: SettingOverrides,
    priority: i64,
) -> Result<(String, Option<rules::ApplyReport>), StoreError> {
    let mut tx = db.begin().await?;
    let (r, report) = rules::create(
        &mut tx,
        &ctx(),
        NewRule {
            name: name.into(),
            description: None,
            target,
            filter,
            actions,
            priority: Some(priority),
            enabled: true,
        },
        true,
    )
    .await?;
    tx.commit().await?;
    Ok((r.id, report))
}

#[tokio::test]
async fn rules_set_what_they_match_by_precedence_and_default_new_items() {
    for t in TestDb::all().await {
        let db = &t.db;
        let a = app(db, "Databases").await;
        let b = app(db, "Other").await;
        let dbas = owner_group(db).await;
        let none = SettingOverrides::default;
        let orders = resource(db, &a, "prod-orders", "database", &["PCI", "prod"], none()).await;
        let dev = resource(db, &a, "dev-orders", "database", &["dev"], none()).await;
        let elsewhere = resource(db, &b, "prod-x", "database", &["prod"], none()).await;

        let prod = ItemFilter {
            application_id: Some(a.clone()),
            tags: vec!["prod".into()],
            ..Default::default()
        };
        let (_, report) = rule(
            db,
            "prod databases",
            RuleTarget::Resources,
            prod.clone(),
            SettingOverrides {
                owner: Some(dbas.clone()),
                requestable: Some(false),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
        let report = report.unwrap();
        assert_eq!((report.matched, report.changed), (1, 1));
        assert_eq!(report.items[0].id, orders.id);
        let got = resources::get(db, &orders.id).await.unwrap();
        assert_eq!(got.overrides.owner.as_ref(), Some(&dbas));
        assert_eq!(got.overrides.requestable, Some(false));
        for untouched in [&dev, &elsewhere] {
            let r = resources::get(db, &untouched.id).await.unwrap();
            assert_eq!(r.version, 1, "{}", r.name);
        }

        // A rule with a lower priority number decides the settings it shares with others.
        let (_, report) = rule(
            db,
            "prod-* requestable",
            RuleTarget::Resources,
            ItemFilter {
                name_pattern: Some("PROD-*".into()),
                ..Default::default()
            },
            SettingOverrides {
                requestable: Some(true),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
        assert_eq!(report.unwrap().matched, 2);
        let got = resources::get(db, &orders.id).await.unwrap();
        assert_eq!(got.overrides.requestable, Some(true));
        assert_eq!(got.overrides.owner.as_ref(), Some(&dbas));

        // New items get the rules' settings as defaults; explicit values stay.
        let fresh = resource(
            db,
            &a,
            "prod-ledger",
            "database",
            &["prod"],
            SettingOverrides {
                requestable: Some(false),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(fresh.overrides.requestable, Some(false));
        assert_eq!(fresh.overrides.owner.as_ref(), Some(&dbas));

        // Role rules: by their resource's type.
        let mut tx = db.begin().await.unwrap();
        let reader = roles::create(
            &mut tx,
            &ctx(),
            NewRole {
                resource_id: dev.id.clone(),
                name: "reader".into(),
                description: None,
                external_id: None,
                sensitive: false,
                overrides: SettingOverrides::default(),
                prerequisite_role_ids: vec![],
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let week = DurationPolicy {
            max_seconds: Some(7 * 86400),
            default_seconds: None,
        };
        let (_, report) = rule(
            db,
            "database roles",
            RuleTarget::Roles,
            ItemFilter {
                resource_type: Some("database".into()),
                ..Default::default()
            },
            SettingOverrides {
                durations: Some(week),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
        assert_eq!(report.unwrap().changed, 1);
        assert_eq!(
            roles::get(db, &reader.id)
                .await
                .unwrap()
                .overrides
                .durations,
            Some(week)
        );
        // Roles take no owner; nothing is created.
        let err = rule(
            db,
            "bad",
            RuleTarget::Roles,
            ItemFilter::default(),
            SettingOverrides {
                owner: Some(dbas.clone()),
                ..Default::default()
            },
            1,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert_eq!(
            rules::list(db, Some(RuleTarget::Roles), None, None, 100)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn bulk_actions_preview_apply_once_and_are_idempotent() {
    for t in TestDb::all().await {
        let db = &t.db;
        let a = app(db, "Files").await;
        let none = SettingOverrides::default;
        let mut ids = Vec::new();
        for i in 0..7 {
            let tags: &[&str] = if i % 2 == 0 { &["finance"] } else { &[] };
            ids.push(
                resource(db, &a, &format!("share-{i}"), "share", tags, none())
                    .await
                    .id,
            );
        }
        let new = || NewBulkAction {
            target: RuleTarget::Resources,
            filter: ItemFilter {
                tags: vec!["FINANCE".into()],
                ..Default::default()
            },
            actions: SettingOverrides {
                requestable: Some(false),
                ..Default::default()
            },
            reason: Some("audit finding 12".into()),
        };
        let mut tx = db.begin().await.unwrap();
        let preview = rules::preview_bulk(&mut tx, &mut new()).await.unwrap();
        drop(tx);
        assert_eq!((preview.matched, preview.changed), (4, 4));
        for id in &ids {
            assert_eq!(resources::get(db, id).await.unwrap().version, 1);
        }
        let mut tx = db.begin().await.unwrap();
        let run = rules::run_bulk(&mut tx, &ctx(), new()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(run.report, preview);
        for (i, id) in ids.iter().enumerate() {
            let r = resources::get(db, id).await.unwrap();
            let expected = if i % 2 == 0 { Some(false) } else { None };
            assert_eq!(r.overrides.requestable, expected);
        }
        let mut tx = db.begin().await.unwrap();
        let again = rules::run_bulk(&mut tx, &ctx(), new()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!((again.report.matched, again.report.changed), (4, 0));
        let kept = rules::list_bulk(db, None, 10).await.unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(rules::get_bulk(db, &run.id).await.unwrap(), run);
    }
}
