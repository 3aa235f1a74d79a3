//! Groups → roles in the store: platform role precedence (priority, most recent, default),
//! application roles granted on joining and ended on leaving or suspension, nested groups, and
//! the mapping's own lifecycle.

use std::sync::Arc;

use tessera_domain::ManualClock;
use tessera_domain::audit::Actor;
use tessera_domain::directory::{
    DataSourceKind, GroupAttributes, IdentityAttributes, IdentityKind, IdentityStatus, MatchingKey,
    MemberKind,
};
use tessera_domain::governance::group_mapping::PlatformRole::{self, *};
use tessera_domain::governance::membership::Refusal;
use tessera_domain::governance::{
    ApplicationSettings, ConnectorKind, GrantSource, GrantStatus, ManagementMode, SettingOverrides,
};
use tessera_store::governance::applications::{self, NewApplication};
use tessera_store::governance::grants::{self, Change, GrantFilter};
use tessera_store::governance::group_mappings::{self, NewGroupMapping};
use tessera_store::governance::resources::{self, NewResource};
use tessera_store::governance::roles::{self, NewRole};
use tessera_store::{ChangeContext, Db, StoreError, directory};
use tessera_testkit::TestDb;

fn ctx() -> ChangeContext {
    ChangeContext::new(Actor::cli())
}

struct World {
    source: String,
    person: String,
    roles: Vec<String>,
}

/// A SCIM-style data source with one person, and an application with three roles (the last
/// in an observed application).
async fn world(db: &Db) -> World {
    let mut tx = db.begin().await.unwrap();
    let source = directory::create_data_source(
        &mut tx,
        &ctx(),
        "entra",
        DataSourceKind::Scim,
        MatchingKey::UserName,
    )
    .await
    .unwrap();
    let person = directory::create_identity(
        &mut tx,
        &ctx(),
        &source.id,
        IdentityKind::Person,
        IdentityAttributes {
            user_name: "ada".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut role_ids = Vec::new();
    for (app_name, mode, names) in [
        ("Jira", ManagementMode::Managed, &["viewer", "editor"][..]),
        ("Legacy", ManagementMode::Observed, &["user"][..]),
    ] {
        let app = applications::create(
            &mut tx,
            &ctx(),
            NewApplication {
                name: app_name.into(),
                description: None,
                icon: None,
                connector_kind: ConnectorKind::Manual,
                management_mode: mode,
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
                name: "site".into(),
                resource_type: "site".into(),
                description: None,
                external_id: None,
                tags: vec![],
                overrides: SettingOverrides::default(),
            },
        )
        .await
        .unwrap();
        for name in names {
            let role = roles::create(
                &mut tx,
                &ctx(),
                NewRole {
                    resource_id: resource.id.clone(),
                    name: (*name).into(),
                    description: None,
                    external_id: None,
                    sensitive: false,
                    overrides: SettingOverrides::default(),
                    prerequisite_role_ids: vec![],
                },
            )
            .await
            .unwrap();
            role_ids.push(role.id);
        }
    }
    tx.commit().await.unwrap();
    World {
        source: source.id,
        person: person.id,
        roles: role_ids,
    }
}

async fn group(db: &Db, source: &str, name: &str) -> String {
    let mut tx = db.begin().await.unwrap();
    let g = directory::create_group(
        &mut tx,
        &ctx(),
        source,
        GroupAttributes {
            display_name: name.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    g.id
}

async fn map(
    db: &Db,
    group_id: &str,
    platform_role: Option<PlatformRole>,
    priority: i64,
    role_ids: &[String],
) -> Result<String, StoreError> {
    let mut tx = db.begin().await?;
    let m = group_mappings::create(
        &mut tx,
        &ctx(),
        NewGroupMapping {
            group_id: group_id.into(),
            platform_role,
            priority: Some(priority),
            role_ids: role_ids.to_vec(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(m.id)
}

async fn join(db: &Db, group_id: &str, kind: MemberKind, member: &str) {
    let mut tx = db.begin().await.unwrap();
    directory::add_group_member(&mut tx, &ctx(), group_id, kind, member)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn leave(db: &Db, group_id: &str, member: &str) {
    let mut tx = db.begin().await.unwrap();
    directory::remove_group_member(&mut tx, &ctx(), group_id, MemberKind::Identity, member)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// The stored platform role and mapping (`None`: the data source's default).
async fn platform_role(db: &Db, id: &str) -> Option<(PlatformRole, Option<String>)> {
    directory::get_identity(db, id)
        .await
        .unwrap()
        .platform_role
        .map(|d| (d.role, d.mapping_id))
}

async fn set_precedence(db: &Db, source: &str, precedence: &str) {
    let mut tx = db.begin().await.unwrap();
    directory::update_data_source(&mut tx, &ctx(), source, |d| {
        d.settings["platform_role_precedence"] = precedence.into();
        Ok(())
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Role ids of the live `group_mapping` grants an identity holds, sorted.
async fn mapped_roles_held(db: &Db, identity: &str) -> Vec<String> {
    let filter = GrantFilter {
        identity_id: Some(identity.into()),
        source: Some(GrantSource::GroupMapping),
        status: Some(GrantStatus::Active),
        ..Default::default()
    };
    let mut roles: Vec<String> = grants::list(db, &filter, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.role_id)
        .collect();
    roles.sort();
    roles
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn platform_role_priority_default_and_change_of_priority() {
    for t in TestDb::all().await {
        let db = &t.db;
        let w = world(db).await;
        let admins = group(db, &w.source, "admins").await;
        let approvers = group(db, &w.source, "approvers").await;
        let m_admin = map(db, &admins, Some(Admin), 10, &[]).await.unwrap();
        let m_approver = map(db, &approvers, Some(Approver), 5, &[]).await.unwrap();

        // In no mapped group: the default (nothing stored).
        assert_eq!(platform_role(db, &w.person).await, None);
        join(db, &admins, MemberKind::Identity, &w.person).await;
        assert_eq!(
            platform_role(db, &w.person).await,
            Some((Admin, Some(m_admin.clone())))
        );
        // A lower priority number wins, whatever the order of joining.
        join(db, &approvers, MemberKind::Identity, &w.person).await;
        assert_eq!(
            platform_role(db, &w.person).await,
            Some((Approver, Some(m_approver.clone())))
        );
        // Reordering the mappings re-evaluates their members at once.
        let mut tx = db.begin().await.unwrap();
        group_mappings::update(&mut tx, &ctx(), &m_admin, Some(1), |m| {
            m.priority = 1;
            Ok(())
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            platform_role(db, &w.person).await,
            Some((Admin, Some(m_admin.clone())))
        );
        // A stale If-Match changes nothing.
        let mut tx = db.begin().await.unwrap();
        let stale = group_mappings::update(&mut tx, &ctx(), &m_admin, Some(1), |m| {
            m.priority = 50;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(matches!(stale, StoreError::VersionMismatch { current: 2 }));
        drop(tx);
        // Leaving every mapped group returns to the default.
        leave(db, &admins, &w.person).await;
        leave(db, &approvers, &w.person).await;
        assert_eq!(platform_role(db, &w.person).await, None);
        // One mapping per group.
        let second = map(db, &admins, Some(Auditor), 1, &[]).await.unwrap_err();
        assert!(matches!(second, StoreError::Conflict(_)), "{second:?}");
    }
}

#[tokio::test]
async fn most_recently_joined_group_wins_when_the_source_says_so() {
    let start = 1_900_000_000_000;
    let clock = ManualClock::new(start);
    for t in TestDb::all_with_clock(Arc::new(clock.clone())).await {
        clock.set(start);
        let db = &t.db;
        let w = world(db).await;
        set_precedence(db, &w.source, "most_recent").await;
        let admins = group(db, &w.source, "admins").await;
        let approvers = group(db, &w.source, "approvers").await;
        let m_admin = map(db, &admins, Some(Admin), 1, &[]).await.unwrap();
        let m_approver = map(db, &approvers, Some(Approver), 50, &[]).await.unwrap();

        join(db, &admins, MemberKind::Identity, &w.person).await;
        clock.advance(60_000);
        join(db, &approvers, MemberKind::Identity, &w.person).await;
        assert_eq!(
            platform_role(db, &w.person).await,
            Some((Approver, Some(m_approver.clone())))
        );
        // Switching the source to priority re-evaluates everyone in a mapped group.
        set_precedence(db, &w.source, "priority").await;
        assert_eq!(
            platform_role(db, &w.person).await,
            Some((Admin, Some(m_admin.clone())))
        );
        set_precedence(db, &w.source, "most_recent").await;
        assert_eq!(
            platform_role(db, &w.person).await,
            Some((Approver, Some(m_approver.clone())))
        );
        // Leaving the newest group falls back to the one joined before.
        leave(db, &approvers, &w.person).await;
        assert_eq!(
            platform_role(db, &w.person).await,
            Some((Admin, Some(m_admin.clone())))
        );
        // Joining again makes approvers the most recent group once more.
        clock.advance(60_000);
        join(db, &approvers, MemberKind::Identity, &w.person).await;
        assert_eq!(platform_role(db, &w.person).await.unwrap().0, Approver);
    }
}

#[tokio::test]
async fn application_roles_follow_membership_nesting_and_status() {
    for t in TestDb::all().await {
        let db = &t.db;
        let w = world(db).await;
        let (viewer, editor, observed) = (&w.roles[0], &w.roles[1], &w.roles[2]);
        let staff = group(db, &w.source, "staff").await;
        let editors = group(db, &w.source, "editors").await;
        let team = group(db, &w.source, "team").await;

        // Roles of observed applications cannot be mapped; nothing is written.
        let err = map(db, &staff, None, 100, std::slice::from_ref(observed))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        let m_staff = map(db, &staff, None, 100, &[viewer.clone(), editor.clone()])
            .await
            .unwrap();
        map(
            db,
            &editors,
            Some(Approver),
            100,
            std::slice::from_ref(editor),
        )
        .await
        .unwrap();

        // Joining grants each role once, with source group_mapping.
        join(db, &staff, MemberKind::Identity, &w.person).await;
        join(db, &editors, MemberKind::Identity, &w.person).await;
        assert_eq!(
            mapped_roles_held(db, &w.person).await,
            sorted(&[viewer, editor])
        );
        // Such a grant is managed by the mapping, not revoked by hand.
        let held = grants::list(
            db,
            &GrantFilter {
                identity_id: Some(w.person.clone()),
                role_id: Some(viewer.clone()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
        let mut tx = db.begin().await.unwrap();
        let refused = grants::change(&mut tx, &ctx(), &held[0].id, None, Change::Revoke, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                StoreError::Refused(Refusal::ManagedElsewhere { .. })
            ),
            "{refused:?}"
        );
        drop(tx);

        // Leaving one group keeps what another still gives.
        leave(db, &staff, &w.person).await;
        assert_eq!(mapped_roles_held(db, &w.person).await, sorted(&[editor]));
        let ended = grants::get(db, &held[0].id).await.unwrap();
        assert_eq!(ended.status, GrantStatus::Revoked);
        assert!(ended.end_reason.unwrap().contains("no longer a member"));

        // Suspension ends them and the mapped platform role; restoration gives them back.
        assert_eq!(platform_role(db, &w.person).await.unwrap().0, Approver);
        let mut tx = db.begin().await.unwrap();
        directory::set_identity_status(&mut tx, &ctx(), &w.person, IdentityStatus::Suspended)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(mapped_roles_held(db, &w.person).await.is_empty());
        assert_eq!(platform_role(db, &w.person).await, None);
        let mut tx = db.begin().await.unwrap();
        directory::set_identity_status(&mut tx, &ctx(), &w.person, IdentityStatus::Active)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(mapped_roles_held(db, &w.person).await, sorted(&[editor]));
        assert_eq!(platform_role(db, &w.person).await.unwrap().0, Approver);

        // Nested: a member of `team`, which is a member of `staff`, holds what staff gives.
        join(db, &team, MemberKind::Identity, &w.person).await;
        join(db, &staff, MemberKind::Group, &team).await;
        assert_eq!(
            mapped_roles_held(db, &w.person).await,
            sorted(&[viewer, editor])
        );
        // Its application cannot become observed while a mapping gives its roles.
        let mut tx = db.begin().await.unwrap();
        let app_id = roles::get(db, viewer).await.unwrap().application_id;
        let err =
            tessera_store::governance::applications::update(&mut tx, &ctx(), &app_id, None, |a| {
                a.management_mode = ManagementMode::Observed;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        drop(tx);
        // A mapped role cannot be deleted from under its mapping.
        let mut tx = db.begin().await.unwrap();
        let err = roles::delete(&mut tx, &ctx(), viewer, None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        drop(tx);
        // Deleting the mapping takes back only what no other mapping gives.
        let mut tx = db.begin().await.unwrap();
        group_mappings::delete(&mut tx, &ctx(), &m_staff, None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(mapped_roles_held(db, &w.person).await, sorted(&[editor]));
    }
}
