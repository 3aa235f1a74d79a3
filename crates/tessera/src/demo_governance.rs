//! The demo's governed applications: one of each connector kind, with nested resources, roles
//! (prerequisites, sensitive roles, duration limits), accounts and memberships, some of them
//! ending soon so the expiry loop can be watched at work, and group mappings (platform roles
//! and application roles from the HR groups), and a rule.

use std::collections::HashMap;

use tessera_domain::audit::Actor;
use tessera_domain::directory::{DataSourceKind, MatchingKey};
use tessera_domain::governance::group_mapping::PlatformRole;
use tessera_domain::governance::rules::{ItemFilter, RuleTarget};
use tessera_domain::governance::{
    ApplicationSettings, ConnectorKind, DurationPolicy, ManagementMode, Principal, PrincipalKind,
    SettingOverrides,
};
use tessera_store::governance::accounts::{self, NewAccount};
use tessera_store::governance::applications::{self, NewApplication};
use tessera_store::governance::grants::{self, GrantRequest};
use tessera_store::governance::group_mappings::{self, NewGroupMapping};
use tessera_store::governance::resources::{self, NewResource};
use tessera_store::governance::roles::{self, NewRole};
use tessera_store::governance::rules::{self, NewRule};
use tessera_store::{ChangeContext, Db, Tx, directory};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn limit(max_days: i64, default_days: Option<i64>) -> Option<DurationPolicy> {
    Some(DurationPolicy {
        max_seconds: Some(max_days * DAY),
        default_seconds: default_days.map(|d| d * DAY),
    })
}

fn person(id: &str) -> Principal {
    Principal {
        kind: PrincipalKind::Identity,
        id: id.to_owned(),
    }
}

fn group(id: &str) -> Principal {
    Principal {
        kind: PrincipalKind::Group,
        id: id.to_owned(),
    }
}

struct Loader<'a> {
    tx: Tx,
    ctx: ChangeContext,
    people: &'a HashMap<&'static str, String>,
    roles: HashMap<&'static str, String>,
}

impl Loader<'_> {
    async fn app(
        &mut self,
        name: &str,
        kind: ConnectorKind,
        mode: ManagementMode,
        owner: &str,
        maintainers: Vec<Principal>,
        settings: ApplicationSettings,
    ) -> anyhow::Result<String> {
        let app = applications::create(
            &mut self.tx,
            &self.ctx,
            NewApplication {
                name: name.into(),
                description: None,
                icon: None,
                connector_kind: kind,
                management_mode: mode,
                owner: Some(person(&self.people[owner])),
                maintainers,
                default_workflow_id: None,
                settings,
                member_format: Default::default(),
            },
        )
        .await?;
        Ok(app.id)
    }

    async fn resource(
        &mut self,
        app: &str,
        parent: Option<&str>,
        name: &str,
        kind: &str,
        tags: &[&str],
        overrides: SettingOverrides,
    ) -> anyhow::Result<String> {
        let r = resources::create(
            &mut self.tx,
            &self.ctx,
            NewResource {
                application_id: app.into(),
                parent_id: parent.map(str::to_owned),
                name: name.into(),
                resource_type: kind.into(),
                description: None,
                external_id: None,
                tags: tags.iter().map(|t| t.to_string()).collect(),
                overrides,
            },
        )
        .await?;
        Ok(r.id)
    }

    /// A role, remembered under `key` for grants and prerequisites.
    async fn role(
        &mut self,
        key: &'static str,
        resource: &str,
        name: &str,
        sensitive: bool,
        durations: Option<DurationPolicy>,
        prerequisites: &[&str],
    ) -> anyhow::Result<()> {
        let role = roles::create(
            &mut self.tx,
            &self.ctx,
            NewRole {
                resource_id: resource.into(),
                name: name.into(),
                description: None,
                external_id: None,
                sensitive,
                overrides: SettingOverrides {
                    durations,
                    ..Default::default()
                },
                prerequisite_role_ids: prerequisites
                    .iter()
                    .map(|p| self.roles[p].clone())
                    .collect(),
            },
        )
        .await?;
        self.roles.insert(key, role.id);
        Ok(())
    }

    /// Grants `role` to the person with employee number `who`, ending `ends_in` seconds from
    /// now (`None`: the role's standard duration).
    async fn grant(
        &mut self,
        role: &str,
        who: &str,
        ends_in: Option<i64>,
        reason: &str,
    ) -> anyhow::Result<()> {
        let ends_at = ends_in.map(|s| self.tx.now() + s * 1000);
        grants::grant_in(
            &mut self.tx,
            &self.ctx,
            GrantRequest {
                role_id: self.roles[role].clone(),
                identity_id: self.people[who].clone(),
                starts_at: None,
                ends_at,
                reason: Some(reason.into()),
            },
        )
        .await?;
        Ok(())
    }
}

/// Loads the applications. `people` maps employee numbers, `groups` group names, to ids.
pub async fn load(
    db: &Db,
    people: &HashMap<&'static str, String>,
    groups: &HashMap<&str, String>,
) -> anyhow::Result<()> {
    let mut l = Loader {
        tx: db.begin().await?,
        ctx: ChangeContext::new(Actor::system()),
        people,
        roles: HashMap::new(),
    };
    let it = || vec![group(&groups["IT Admins"])];
    let capped = |max_days| ApplicationSettings {
        durations: DurationPolicy {
            max_seconds: Some(max_days * DAY),
            default_seconds: Some(30 * DAY),
        },
        ..Default::default()
    };

    // Microsoft Entra ID: security groups and a directory role.
    let entra = l
        .app(
            "Microsoft Entra ID",
            ConnectorKind::Entra,
            ManagementMode::Managed,
            "E1007",
            it(),
            ApplicationSettings::default(),
        )
        .await?;
    let eng = l
        .resource(
            &entra,
            None,
            "sg-engineering",
            "group",
            &["security-group"],
            Default::default(),
        )
        .await?;
    l.role("entra.eng", &eng, "member", false, None, &[])
        .await?;
    let readers = l
        .resource(
            &entra,
            None,
            "Global Reader",
            "directory-role",
            &["privileged"],
            SettingOverrides {
                requestable: Some(false),
                ..Default::default()
            },
        )
        .await?;
    l.role(
        "entra.reader",
        &readers,
        "assigned",
        true,
        limit(7, Some(1)),
        &[],
    )
    .await?;

    // GitHub over SCIM: an organisation with repositories, roles that build on each other.
    let github = l
        .app(
            "GitHub",
            ConnectorKind::Scim,
            ManagementMode::Managed,
            "E1002",
            vec![group(&groups["Platform Team"])],
            capped(365),
        )
        .await?;
    let org = l
        .resource(
            &github,
            None,
            "northwind",
            "organization",
            &[],
            Default::default(),
        )
        .await?;
    l.role("gh.org", &org, "member", false, None, &[]).await?;
    let firmware = l
        .resource(
            &github,
            Some(&org),
            "robot-firmware",
            "repository",
            &["prod", "robotics"],
            SettingOverrides {
                owner: Some(person(&people["E1014"])),
                ..Default::default()
            },
        )
        .await?;
    l.role("gh.fw.read", &firmware, "read", false, None, &["gh.org"])
        .await?;
    l.role(
        "gh.fw.write",
        &firmware,
        "write",
        false,
        limit(90, None),
        &["gh.fw.read"],
    )
    .await?;
    l.role(
        "gh.fw.admin",
        &firmware,
        "admin",
        true,
        limit(7, Some(1)),
        &["gh.fw.write"],
    )
    .await?;
    let infra = l
        .resource(
            &github,
            Some(&org),
            "platform-infra",
            "repository",
            &["prod", "platform"],
            Default::default(),
        )
        .await?;
    l.role("gh.infra.write", &infra, "write", false, None, &["gh.org"])
        .await?;

    // The office directory over LDAP.
    let ldap = l
        .app(
            "Corporate LDAP",
            ConnectorKind::Ldap,
            ManagementMode::Managed,
            "E1007",
            it(),
            ApplicationSettings::default(),
        )
        .await?;
    let vpn = l
        .resource(
            &ldap,
            None,
            "cn=vpn-users",
            "group",
            &[],
            Default::default(),
        )
        .await?;
    l.role("ldap.vpn", &vpn, "member", false, None, &[]).await?;
    let ssh = l
        .resource(
            &ldap,
            None,
            "cn=prod-ssh",
            "group",
            &["prod", "privileged"],
            Default::default(),
        )
        .await?;
    l.role(
        "ldap.ssh",
        &ssh,
        "member",
        true,
        limit(1, Some(1)),
        &["ldap.vpn"],
    )
    .await?;

    // Payroll has no API: its members come as CSV uploads.
    let payroll = l
        .app(
            "Payroll",
            ConnectorKind::Csv,
            ManagementMode::Managed,
            "E1005",
            vec![person(&people["E1040"])],
            capped(180),
        )
        .await?;
    let payroll_app = l
        .resource(
            &payroll,
            None,
            "Payroll",
            "app",
            &["finance", "sox"],
            Default::default(),
        )
        .await?;
    l.role("payroll.viewer", &payroll_app, "viewer", false, None, &[])
        .await?;
    l.role(
        "payroll.approver",
        &payroll_app,
        "approver",
        true,
        limit(90, None),
        &["payroll.viewer"],
    )
    .await?;
    accounts::create(
        &mut l.tx,
        &l.ctx,
        NewAccount {
            application_id: payroll,
            identity_id: Some(people["E1041"].clone()),
            user_key: "icosta".into(),
            display_name: Some("Isabella Costa".into()),
            status: tessera_domain::governance::AccountStatus::Active,
        },
    )
    .await?;

    // Physical access, granted by hand.
    let badge = l
        .app(
            "Datacenter Badge",
            ConnectorKind::Manual,
            ManagementMode::Managed,
            "E1007",
            it(),
            capped(30),
        )
        .await?;
    let room = l
        .resource(
            &badge,
            None,
            "Server room B2",
            "door",
            &["physical"],
            Default::default(),
        )
        .await?;
    l.role(
        "badge.room",
        &room,
        "access",
        false,
        limit(30, Some(7)),
        &[],
    )
    .await?;

    // Observed only: Tessera reports Salesforce access but grants nothing there.
    let sfdc = l
        .app(
            "Salesforce",
            ConnectorKind::Scim,
            ManagementMode::Observed,
            "E1004",
            vec![],
            ApplicationSettings::default(),
        )
        .await?;
    let crm = l
        .resource(&sfdc, None, "Northwind CRM", "app", &[], Default::default())
        .await?;
    l.role("sfdc.user", &crm, "Standard User", false, None, &[])
        .await?;
    accounts::create(
        &mut l.tx,
        &l.ctx,
        NewAccount {
            application_id: sfdc,
            identity_id: None,
            user_key: "integration.bot@northwind.example".into(),
            display_name: Some("Integration bot (no owner)".into()),
            status: tessera_domain::governance::AccountStatus::Active,
        },
    )
    .await?;

    // Group mappings: platform roles by priority (IT Admins first), and the "Engineering"
    // group (with its nested teams) giving its members the engineering group and the VPN.
    for (name, platform_role, priority, role_keys) in [
        ("IT Admins", Some(PlatformRole::Admin), 1, &[][..]),
        (
            "Finance Approvers",
            Some(PlatformRole::Approver),
            10,
            &[][..],
        ),
        ("Managers", Some(PlatformRole::Approver), 20, &[][..]),
        ("People", Some(PlatformRole::Auditor), 30, &[][..]),
        ("Engineering", None, 100, &["entra.eng", "ldap.vpn"][..]),
    ] {
        group_mappings::create(
            &mut l.tx,
            &l.ctx,
            NewGroupMapping {
                group_id: groups[name].clone(),
                platform_role,
                priority: Some(priority),
                role_ids: role_keys.iter().map(|k| l.roles[k].clone()).collect(),
            },
        )
        .await?;
    }

    // A rule: IT Admins maintain every privileged resource, today's and future ones.
    rules::create(
        &mut l.tx,
        &l.ctx,
        NewRule {
            name: "Privileged resources are maintained by IT Admins".into(),
            description: Some("Applies to new privileged resources as they appear".into()),
            target: RuleTarget::Resources,
            filter: ItemFilter {
                tags: vec!["privileged".into()],
                ..Default::default()
            },
            actions: SettingOverrides {
                maintainers: Some(it()),
                ..Default::default()
            },
            priority: Some(10),
            enabled: true,
        },
        true,
    )
    .await?;

    // Memberships: standing access, and some ending soon.
    for who in [
        "E1010", "E1011", "E1012", "E1013", "E1014", "E1015", "E1016", "E1017",
    ] {
        l.grant("gh.org", who, None, "engineering joiner").await?;
    }
    for who in ["E1014", "E1015", "E1016", "E1017"] {
        l.grant("gh.fw.read", who, None, "robotics team").await?;
    }
    l.grant("gh.fw.write", "E1015", Some(60 * DAY), "firmware owner")
        .await?;
    l.grant("gh.fw.write", "E1016", Some(2 * DAY), "release 4.2 hotfix")
        .await?;
    l.grant("gh.infra.write", "E1011", None, "platform on-call")
        .await?;
    l.grant(
        "ldap.ssh",
        "E1013",
        Some(HOUR),
        "INC-2041: production incident",
    )
    .await?;
    l.grant(
        "entra.reader",
        "E1060",
        Some(20 * HOUR),
        "quarterly licence audit",
    )
    .await?;
    l.grant("payroll.viewer", "E1040", None, "financial controller")
        .await?;
    l.grant("payroll.viewer", "E1041", None, "monthly payroll run")
        .await?;
    l.grant(
        "payroll.approver",
        "E1040",
        Some(90 * DAY),
        "payroll approver FY27",
    )
    .await?;
    l.grant("badge.room", "E1060", None, "rack installation")
        .await?;
    l.grant("badge.room", "E1013", Some(3 * DAY), "hardware swap")
        .await?;
    l.tx.commit().await?;

    // A CSV data source for contractors, matched by e-mail (uploads arrive with the CSV work).
    let mut tx = db.begin().await?;
    directory::create_data_source(
        &mut tx,
        &ChangeContext::new(Actor::system()),
        "Contractors (CSV)",
        DataSourceKind::Csv,
        MatchingKey::Email,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
