//! What access exists: applications, their resources and roles, accounts and grants.
//!
//! An *application* is a governed system; *resources* inside it (optionally nested) carry
//! grantable *roles*. Settings (requestable, workflow, allowed durations, owner, maintainers)
//! are set on the application and may be overridden on a resource or a role; [`settings`]
//! resolves the effective value and says where it came from. [`membership`] holds the rules
//! for granting, extending, renewing and revoking.

pub mod group_mapping;
pub mod member_upload;
pub mod membership;
pub mod rules;
pub mod settings;

use serde::{Deserialize, Serialize};

use crate::directory::{InvalidInput, check_name};
pub use settings::{DurationPolicy, Effective, EffectiveSettings, SettingLevel, SettingSource};

string_enum! {
    /// How Tessera talks to an application's system.
    ConnectorKind { Scim => "scim", Entra => "entra", Ldap => "ldap", Csv => "csv", Manual => "manual" }
}

string_enum! {
    /// `managed`: Tessera enforces grants in the target. `observed`: Tessera only reports what
    /// the target holds, and grants nothing there.
    ManagementMode { Managed => "managed", Observed => "observed" }
}

string_enum! {
    /// Who may be an owner or maintainer.
    PrincipalKind { Identity => "identity", Group => "group" }
}

string_enum! {
    /// Why a grant exists.
    GrantSource {
        Request => "request",
        Api => "api",
        Birthright => "birthright",
        GroupMapping => "group_mapping",
        External => "external",
        Review => "review",
    }
}

string_enum! {
    /// Where a grant is in its life. `scheduled` grants start later; `expired` ones reached
    /// their end; `revoked` ones were ended early.
    GrantStatus { Scheduled => "scheduled", Active => "active", Expired => "expired", Revoked => "revoked" }
}

impl GrantStatus {
    /// Whether the grant still gives, or will give, access.
    pub fn is_live(self) -> bool {
        matches!(self, GrantStatus::Scheduled | GrantStatus::Active)
    }
}

string_enum! {
    /// An account in an application: `active`, or `disabled` in the target.
    AccountStatus { Active => "active", Disabled => "disabled" }
}

/// An identity or a group, named as owner or maintainer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
}

/// At most this many maintainers on one item.
pub const MAX_MAINTAINERS: usize = 50;
/// At most this many tags on a resource, each at most [`MAX_TAG_LEN`] characters.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_LEN: usize = 64;
/// Resources nest at most this deep (an application's top-level resources are at depth 1).
pub const MAX_RESOURCE_DEPTH: usize = 8;
/// At most this many prerequisite roles on one role.
pub const MAX_PREREQUISITES: usize = 16;
pub const MAX_DESCRIPTION_LEN: usize = 4096;
pub const MAX_ICON_LEN: usize = 2048;
pub const MAX_REASON_LEN: usize = 2048;

/// The application-wide settings (Entitle's integration settings). Resources and roles
/// inherit `requestable_by_default` (as their `requestable`), `durations`, the workflow, owner
/// and maintainers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplicationSettings {
    /// Tessera cannot write to the target: grants become manual tasks for its maintainers.
    pub read_only: bool,
    /// Whether anything in the application may be requested at all.
    pub requestable: bool,
    /// Whether resources and roles are requestable unless they say otherwise.
    pub requestable_by_default: bool,
    pub allow_creating_accounts: bool,
    pub allow_changing_account_permissions: bool,
    /// Tell the owner when a sync finds permissions changed outside Tessera.
    pub notify_external_changes: bool,
    pub durations: DurationPolicy,
    pub auto_assign_recommended_owners: bool,
    pub auto_assign_recommended_maintainers: bool,
}

impl Default for ApplicationSettings {
    fn default() -> Self {
        ApplicationSettings {
            read_only: false,
            requestable: true,
            requestable_by_default: true,
            allow_creating_accounts: false,
            allow_changing_account_permissions: true,
            notify_external_changes: true,
            durations: DurationPolicy::default(),
            auto_assign_recommended_owners: false,
            auto_assign_recommended_maintainers: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub connector_kind: ConnectorKind,
    pub management_mode: ManagementMode,
    pub owner: Option<Principal>,
    pub maintainers: Vec<Principal>,
    pub default_workflow_id: Option<String>,
    pub settings: ApplicationSettings,
    /// CSV applications: how the member file is laid out.
    pub member_format: member_upload::MemberFormat,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Values a resource or role may set for itself; `None` inherits from above.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingOverrides {
    pub requestable: Option<bool>,
    pub workflow_id: Option<String>,
    pub durations: Option<DurationPolicy>,
    /// Resources only: roles take their owner and maintainers from their resource.
    pub owner: Option<Principal>,
    pub maintainers: Option<Vec<Principal>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    pub application_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub resource_type: String,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub tags: Vec<String>,
    pub overrides: SettingOverrides,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub id: String,
    pub resource_id: String,
    pub application_id: String,
    pub name: String,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub sensitive: bool,
    /// Only `requestable`, `workflow_id` and `durations` apply to roles.
    pub overrides: SettingOverrides,
    pub prerequisite_role_ids: Vec<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub application_id: String,
    /// `None`: no identity matched the account (an orphan or a service account).
    pub identity_id: Option<String>,
    /// The account's key in the target (user name, e-mail or employee number).
    pub user_key: String,
    pub display_name: Option<String>,
    pub status: AccountStatus,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A holder of a role: an identity (through its account, when it has one), or an account no
/// identity matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub role_id: String,
    pub application_id: String,
    pub identity_id: Option<String>,
    pub account_id: Option<String>,
    pub source: GrantSource,
    pub status: GrantStatus,
    pub starts_at: i64,
    /// `None`: until revoked.
    pub ends_at: Option<i64>,
    pub granted_by: Option<String>,
    pub reason: Option<String>,
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn validate_name(name: &str) -> Result<(), InvalidInput> {
    check_name("name", name)
}

pub fn validate_description(description: Option<&str>) -> Result<(), InvalidInput> {
    validate_text("description", description, MAX_DESCRIPTION_LEN)
}

pub fn validate_icon(icon: Option<&str>) -> Result<(), InvalidInput> {
    validate_text("icon", icon, MAX_ICON_LEN)
}

pub fn validate_reason(reason: Option<&str>) -> Result<(), InvalidInput> {
    validate_text("reason", reason, MAX_REASON_LEN)
}

fn validate_text(field: &'static str, text: Option<&str>, max: usize) -> Result<(), InvalidInput> {
    match text {
        Some(t) if t.chars().count() > max => Err(InvalidInput::new(
            field,
            format!("must be at most {max} characters"),
        )),
        Some(t) if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => Err(
            InvalidInput::new(field, "must not contain control characters"),
        ),
        _ => Ok(()),
    }
}

/// A resource type names what a resource is (`group`, `repository`, `database`, `app`):
/// lower-case letters, digits, `_`, `-` and `.`, at most 64 characters.
pub fn validate_resource_type(kind: &str) -> Result<(), InvalidInput> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(
            "resource_type",
            "must be 1-64 characters of a-z, 0-9, '_', '-' and '.'",
        ))
    }
}

/// Tags are trimmed, unique (ignoring case) and each at most [`MAX_TAG_LEN`] characters.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>, InvalidInput> {
    if tags.len() > MAX_TAGS {
        return Err(InvalidInput::new(
            "tags",
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim();
        if tag.is_empty() || tag.chars().count() > MAX_TAG_LEN || tag.chars().any(char::is_control)
        {
            return Err(InvalidInput::new(
                "tags",
                format!("each tag must be 1-{MAX_TAG_LEN} printable characters"),
            ));
        }
        if !out
            .iter()
            .any(|t| crate::directory::fold(t) == crate::directory::fold(tag))
        {
            out.push(tag.to_owned());
        }
    }
    Ok(out)
}

/// An owner or maintainer must name an identity or group by its id.
pub fn validate_principal(field: &'static str, p: &Principal) -> Result<(), InvalidInput> {
    if crate::ids::is_valid_id(&p.id) {
        Ok(())
    } else {
        Err(InvalidInput::new(
            field,
            format!("{:?} is not a Tessera id", p.id),
        ))
    }
}

/// An item's id in the application's own system: 1-1024 characters, no control characters.
pub fn validate_external_id(external_id: Option<&str>) -> Result<(), InvalidInput> {
    match external_id {
        Some(e) if e.is_empty() || e.chars().count() > 1024 || e.chars().any(char::is_control) => {
            Err(InvalidInput::new(
                "external_id",
                "must be 1-1024 characters without control characters",
            ))
        }
        _ => Ok(()),
    }
}

pub fn validate_maintainers(maintainers: &[Principal]) -> Result<(), InvalidInput> {
    if maintainers.len() > MAX_MAINTAINERS {
        return Err(InvalidInput::new(
            "maintainers",
            format!("at most {MAX_MAINTAINERS} maintainers are allowed"),
        ));
    }
    for (i, m) in maintainers.iter().enumerate() {
        validate_principal("maintainers", m)?;
        if maintainers[..i].contains(m) {
            return Err(InvalidInput::new(
                "maintainers",
                format!("{} {} is listed twice", m.kind, m.id),
            ));
        }
    }
    Ok(())
}

/// Role overrides may not carry an owner or maintainers: those belong to resources.
pub fn validate_role_overrides(overrides: &SettingOverrides) -> Result<(), InvalidInput> {
    if overrides.owner.is_some() || overrides.maintainers.is_some() {
        return Err(InvalidInput::new(
            "owner",
            "roles take their owner and maintainers from their resource",
        ));
    }
    overrides_durations_valid(overrides)
}

pub fn validate_resource_overrides(overrides: &SettingOverrides) -> Result<(), InvalidInput> {
    if let Some(o) = &overrides.owner {
        validate_principal("owner", o)?;
    }
    if let Some(m) = &overrides.maintainers {
        validate_maintainers(m)?;
    }
    overrides_durations_valid(overrides)
}

fn overrides_durations_valid(overrides: &SettingOverrides) -> Result<(), InvalidInput> {
    match &overrides.durations {
        Some(d) => d.validate(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_and_deduplicated_ignoring_case() {
        let tags = normalize_tags(&[" prod ".into(), "PROD".into(), "pci".into()]).unwrap();
        assert_eq!(tags, vec!["prod", "pci"]);
        assert!(normalize_tags(&["".into()]).is_err());
        assert!(normalize_tags(&vec!["x".to_string(); MAX_TAGS + 1]).is_err());
    }

    #[test]
    fn resource_types_are_restricted() {
        assert!(validate_resource_type("git.repository").is_ok());
        assert!(validate_resource_type("Group").is_err());
        assert!(validate_resource_type("").is_err());
    }

    #[test]
    fn maintainers_must_be_distinct() {
        let m = Principal {
            kind: PrincipalKind::Group,
            id: crate::ids::new_id(),
        };
        assert!(validate_maintainers(std::slice::from_ref(&m)).is_ok());
        let bad = Principal {
            kind: PrincipalKind::Group,
            id: "g".into(),
        };
        assert!(validate_maintainers(&[bad]).is_err());
        let err = validate_maintainers(&[m.clone(), m]).unwrap_err();
        assert_eq!(err.field, "maintainers");
    }

    #[test]
    fn roles_cannot_override_ownership() {
        let o = SettingOverrides {
            owner: Some(Principal {
                kind: PrincipalKind::Identity,
                id: crate::ids::new_id(),
            }),
            ..Default::default()
        };
        assert!(validate_role_overrides(&o).is_err());
        assert!(validate_resource_overrides(&o).is_ok());
    }

    #[test]
    fn grant_status_liveness() {
        assert!(GrantStatus::Scheduled.is_live());
        assert!(GrantStatus::Active.is_live());
        assert!(!GrantStatus::Expired.is_live());
        assert!(!GrantStatus::Revoked.is_live());
    }
}
