//! Who exists: data sources, the identities and groups they bring, and group membership.

pub mod user_upload;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::governance::group_mapping::PlatformRoleDecision;

string_enum! {
    /// Lifecycle state of an identity. Suspended identities (SCIM `active=false`, a leaver)
    /// keep their record and history; deleted ones are kept as tombstones for the audit trail.
    IdentityStatus { Active => "active", Suspended => "suspended", Deleted => "deleted" }
}

string_enum! {
    IdentityKind { Person => "person", Service => "service" }
}

string_enum! {
    /// Where identities come from.
    DataSourceKind { Scim => "scim", Csv => "csv", Hr => "hr", Directory => "directory" }
}

string_enum! {
    /// The attribute that matches an incoming record to an existing identity.
    MatchingKey { UserName => "user_name", Email => "email", EmployeeNumber => "employee_number" }
}

string_enum! {
    /// Groups contain identities and other groups.
    MemberKind { Identity => "identity", Group => "group" }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    pub id: String,
    pub name: String,
    pub kind: DataSourceKind,
    pub matching_key: MatchingKey,
    pub settings: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The attributes of an identity that a data source supplies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IdentityAttributes {
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub email: Option<String>,
    pub employee_number: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub manager_id: Option<String>,
    /// The full record the source sent (for SCIM, the normalised resource), kept so that it
    /// can be returned as it was given.
    pub source_doc: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub id: String,
    pub data_source_id: String,
    pub kind: IdentityKind,
    pub status: IdentityStatus,
    #[serde(flatten)]
    pub attributes: IdentityAttributes,
    /// The platform role the identity's mapped groups give; `None`: it is in no group mapped to
    /// a platform role, so its data source's default applies.
    pub platform_role: Option<PlatformRoleDecision>,
    /// Bumped on every change; the basis of SCIM `meta.version` ETags.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupAttributes {
    pub display_name: String,
    pub external_id: Option<String>,
    pub description: Option<String>,
    /// The full record the source sent (for SCIM, the normalised resource without members).
    pub source_doc: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub data_source_id: String,
    #[serde(flatten)]
    pub attributes: GroupAttributes,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub group_id: String,
    pub member_kind: MemberKind,
    pub member_id: String,
    pub added_at: i64,
}

/// Input that breaks a rule of the model, named by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

pub const MAX_NAME_LEN: usize = 256;

pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.trim().is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

impl IdentityAttributes {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        check_name("userName", &self.user_name)?;
        if let Some(email) = &self.email
            && (!email.contains('@')
                || email.len() > MAX_NAME_LEN
                || email.chars().any(char::is_control))
        {
            return Err(InvalidInput::new("email", "must be an e-mail address"));
        }
        Ok(())
    }
}

impl GroupAttributes {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        check_name("displayName", &self.display_name)
    }
}

/// Validates a data source name.
pub fn validate_data_source_name(name: &str) -> Result<(), InvalidInput> {
    check_name("name", name)
}

/// The case-folded form used for case-insensitive uniqueness and matching.
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text() {
        for s in IdentityStatus::ALL {
            assert_eq!(IdentityStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(DataSourceKind::parse("scim"), Some(DataSourceKind::Scim));
        assert_eq!(MatchingKey::parse("nope"), None);
        assert_eq!(
            serde_json::to_string(&MemberKind::Group).unwrap(),
            "\"group\""
        );
    }

    #[test]
    fn validation_names_the_field() {
        let bad = IdentityAttributes {
            user_name: " ".into(),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "userName");
        let bad = IdentityAttributes {
            user_name: "a".into(),
            email: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "email");
        let long = GroupAttributes {
            display_name: "x".repeat(300),
            ..Default::default()
        };
        assert!(long.validate().is_err());
        assert!(validate_data_source_name("HR").is_ok());
        assert_eq!(fold("ÄBC"), "äbc");
    }
}
