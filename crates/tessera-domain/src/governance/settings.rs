//! Settings inheritance: application → resource (→ nested resource …) → role.
//!
//! Every level may override a setting; the nearest override wins, and the effective value
//! carries the level it came from so the API can show why a role is, say, not requestable.

use serde::{Deserialize, Serialize};

use super::{Application, Principal, Resource, Role};
use crate::directory::InvalidInput;

/// Shortest and longest duration a policy may name: one minute and ten years.
pub const MIN_DURATION_SECS: i64 = 60;
pub const MAX_DURATION_SECS: i64 = 10 * 366 * 24 * 3600;

/// How long grants may last.
///
/// `max_seconds: None` allows any duration, permanent included. `default_seconds` is the
/// standard duration: what a grant without an end gets, and what a renewal adds; when absent
/// it is `max_seconds` (and with neither, grants are permanent by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DurationPolicy {
    #[serde(default)]
    pub max_seconds: Option<i64>,
    #[serde(default)]
    pub default_seconds: Option<i64>,
}

impl DurationPolicy {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        for (field, v) in [
            ("durations.max_seconds", self.max_seconds),
            ("durations.default_seconds", self.default_seconds),
        ] {
            if let Some(v) = v
                && !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&v)
            {
                return Err(InvalidInput::new(
                    field,
                    format!("must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS} seconds"),
                ));
            }
        }
        if let (Some(max), Some(default)) = (self.max_seconds, self.default_seconds)
            && default > max
        {
            return Err(InvalidInput::new(
                "durations.default_seconds",
                "must not exceed max_seconds",
            ));
        }
        Ok(())
    }

    /// The standard duration in seconds; `None` means permanent.
    pub fn standard_seconds(&self) -> Option<i64> {
        self.default_seconds.or(self.max_seconds)
    }

    /// Whether a grant of this length (`None`: permanent) is allowed.
    pub fn allows(&self, seconds: Option<i64>) -> bool {
        match (self.max_seconds, seconds) {
            (None, _) => true,
            (Some(max), Some(s)) => s <= max,
            (Some(_), None) => false,
        }
    }
}

string_enum! {
    SettingLevel { Application => "application", Resource => "resource", Role => "role" }
}

/// The level a setting's effective value was taken from, and that item's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingSource {
    pub level: SettingLevel,
    pub id: String,
}

impl SettingSource {
    fn new(level: SettingLevel, id: &str) -> Self {
        SettingSource {
            level,
            id: id.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Effective<T> {
    pub value: T,
    pub source: SettingSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveSettings {
    pub requestable: Effective<bool>,
    pub workflow_id: Effective<Option<String>>,
    pub durations: Effective<DurationPolicy>,
    pub owner: Effective<Option<Principal>>,
    pub maintainers: Effective<Vec<Principal>>,
}

/// Resolves the settings of a resource (`role: None`) or of a role.
///
/// `chain` is the resource and its ancestors, outermost first, ending with the resource itself
/// (the role's resource when a role is given). An application that is not requestable makes
/// everything in it unrequestable, whatever lower levels say.
pub fn resolve(app: &Application, chain: &[Resource], role: Option<&Role>) -> EffectiveSettings {
    let app_source = SettingSource::new(SettingLevel::Application, &app.id);
    let mut out = EffectiveSettings {
        requestable: Effective {
            value: app.settings.requestable && app.settings.requestable_by_default,
            source: app_source.clone(),
        },
        workflow_id: Effective {
            value: app.default_workflow_id.clone(),
            source: app_source.clone(),
        },
        durations: Effective {
            value: app.settings.durations,
            source: app_source.clone(),
        },
        owner: Effective {
            value: app.owner.clone(),
            source: app_source.clone(),
        },
        maintainers: Effective {
            value: app.maintainers.clone(),
            source: app_source,
        },
    };
    let levels = chain
        .iter()
        .map(|r| {
            (
                SettingSource::new(SettingLevel::Resource, &r.id),
                &r.overrides,
            )
        })
        .chain(role.map(|r| (SettingSource::new(SettingLevel::Role, &r.id), &r.overrides)));
    for (source, o) in levels {
        if let Some(v) = o.requestable
            && app.settings.requestable
        {
            out.requestable = Effective {
                value: v,
                source: source.clone(),
            };
        }
        if let Some(v) = &o.workflow_id {
            out.workflow_id = Effective {
                value: Some(v.clone()),
                source: source.clone(),
            };
        }
        if let Some(v) = o.durations {
            out.durations = Effective {
                value: v,
                source: source.clone(),
            };
        }
        if let Some(v) = &o.owner {
            out.owner = Effective {
                value: Some(v.clone()),
                source: source.clone(),
            };
        }
        if let Some(v) = &o.maintainers {
            out.maintainers = Effective {
                value: v.clone(),
                source,
            };
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::governance::{
        ApplicationSettings, ConnectorKind, ManagementMode, PrincipalKind, SettingOverrides,
    };

    pub(crate) fn app(settings: ApplicationSettings) -> Application {
        Application {
            id: "app".into(),
            name: "App".into(),
            description: None,
            icon: None,
            connector_kind: ConnectorKind::Manual,
            management_mode: ManagementMode::Managed,
            owner: Some(person("alice")),
            maintainers: vec![],
            default_workflow_id: Some("wf-app".into()),
            settings,
            member_format: Default::default(),
            version: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn person(id: &str) -> Principal {
        Principal {
            kind: PrincipalKind::Identity,
            id: id.into(),
        }
    }

    fn resource(id: &str, overrides: SettingOverrides) -> Resource {
        Resource {
            id: id.into(),
            application_id: "app".into(),
            parent_id: None,
            name: id.into(),
            resource_type: "group".into(),
            description: None,
            external_id: None,
            tags: vec![],
            overrides,
            version: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn role(overrides: SettingOverrides) -> Role {
        Role {
            id: "role".into(),
            resource_id: "res".into(),
            application_id: "app".into(),
            name: "member".into(),
            description: None,
            external_id: None,
            sensitive: false,
            overrides,
            prerequisite_role_ids: vec![],
            version: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    const WEEK: i64 = 7 * 24 * 3600;

    #[test]
    fn nothing_overridden_everything_comes_from_the_application() {
        let app = app(ApplicationSettings::default());
        let eff = resolve(&app, &[resource("res", Default::default())], None);
        let from_app = SettingSource::new(SettingLevel::Application, "app");
        assert!(eff.requestable.value);
        assert_eq!(eff.requestable.source, from_app);
        assert_eq!(eff.workflow_id.value.as_deref(), Some("wf-app"));
        assert_eq!(eff.owner.value, Some(person("alice")));
        assert_eq!(eff.durations.source, from_app);
    }

    #[test]
    fn the_nearest_override_wins_and_is_named() {
        let app = app(ApplicationSettings::default());
        let parent = resource(
            "parent",
            SettingOverrides {
                durations: Some(DurationPolicy {
                    max_seconds: Some(4 * WEEK),
                    default_seconds: None,
                }),
                owner: Some(person("bob")),
                requestable: Some(false),
                ..Default::default()
            },
        );
        let child = resource(
            "res",
            SettingOverrides {
                workflow_id: Some("wf-res".into()),
                requestable: Some(true),
                ..Default::default()
            },
        );
        let role = role(SettingOverrides {
            durations: Some(DurationPolicy {
                max_seconds: Some(WEEK),
                default_seconds: Some(3600),
            }),
            ..Default::default()
        });
        let eff = resolve(&app, &[parent, child], Some(&role));
        assert_eq!(eff.durations.value.max_seconds, Some(WEEK));
        assert_eq!(
            eff.durations.source,
            SettingSource::new(SettingLevel::Role, "role")
        );
        assert_eq!(eff.workflow_id.value.as_deref(), Some("wf-res"));
        assert_eq!(
            eff.workflow_id.source,
            SettingSource::new(SettingLevel::Resource, "res")
        );
        assert_eq!(eff.owner.value, Some(person("bob")));
        assert_eq!(
            eff.owner.source,
            SettingSource::new(SettingLevel::Resource, "parent")
        );
        assert!(eff.requestable.value);
        assert_eq!(
            eff.requestable.source,
            SettingSource::new(SettingLevel::Resource, "res")
        );
    }

    #[test]
    fn requestable_by_default_is_what_items_inherit() {
        let app = app(ApplicationSettings {
            requestable_by_default: false,
            ..Default::default()
        });
        let eff = resolve(&app, &[resource("res", Default::default())], None);
        assert!(!eff.requestable.value);
        let opted_in = resource(
            "res",
            SettingOverrides {
                requestable: Some(true),
                ..Default::default()
            },
        );
        assert!(resolve(&app, &[opted_in], None).requestable.value);
    }

    #[test]
    fn an_unrequestable_application_overrides_everything_below() {
        let app = app(ApplicationSettings {
            requestable: false,
            ..Default::default()
        });
        let res = resource(
            "res",
            SettingOverrides {
                requestable: Some(true),
                ..Default::default()
            },
        );
        let eff = resolve(&app, &[res], None);
        assert!(!eff.requestable.value);
        assert_eq!(
            eff.requestable.source,
            SettingSource::new(SettingLevel::Application, "app")
        );
    }

    #[test]
    fn duration_policies() {
        let unlimited = DurationPolicy::default();
        assert!(unlimited.allows(None));
        assert_eq!(unlimited.standard_seconds(), None);
        let capped = DurationPolicy {
            max_seconds: Some(WEEK),
            default_seconds: None,
        };
        assert!(capped.allows(Some(WEEK)));
        assert!(!capped.allows(Some(WEEK + 1)));
        assert!(!capped.allows(None));
        assert_eq!(capped.standard_seconds(), Some(WEEK));
        let bad = DurationPolicy {
            max_seconds: Some(3600),
            default_seconds: Some(WEEK),
        };
        assert_eq!(
            bad.validate().unwrap_err().field,
            "durations.default_seconds"
        );
        let too_short = DurationPolicy {
            max_seconds: Some(1),
            default_seconds: None,
        };
        assert!(too_short.validate().is_err());
    }

    #[test]
    fn sources_serialise_with_their_level() {
        let s = serde_json::to_value(SettingSource::new(SettingLevel::Resource, "r1")).unwrap();
        assert_eq!(s, serde_json::json!({"level": "resource", "id": "r1"}));
    }
}
