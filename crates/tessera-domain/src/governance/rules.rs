//! Rules and bulk actions (Entitle's): a filter over resources or roles plus settings to set on
//! what it matches.
//!
//! - A **rule** is kept: it sets its settings on everything it matches when it is created or
//!   changed, and gives newly created items its settings as defaults (a value the creator gave
//!   explicitly stays). When several enabled rules match an item, each setting comes from the
//!   matching rule with the lowest `priority` number that sets it (ties: the older rule).
//! - A **bulk action** is the same filter and settings applied once (or previewed).
//!
//! The store narrows candidates with SQL on indexed columns; [`matches`] decides, so the two
//! cannot disagree about what a filter means.

use serde::{Deserialize, Serialize};

use super::{
    MAX_DESCRIPTION_LEN, SettingOverrides, normalize_tags, validate_resource_overrides,
    validate_resource_type, validate_role_overrides,
};
use crate::directory::{InvalidInput, check_name, fold};

string_enum! {
    /// What a rule or bulk action applies to.
    RuleTarget { Resources => "resources", Roles => "roles" }
}

/// Priorities run from 0 (first) to this.
pub const MAX_RULE_PRIORITY: i64 = 1_000_000;
pub const DEFAULT_RULE_PRIORITY: i64 = 100;
pub const MAX_PATTERN_LEN: usize = 256;

/// Which resources or roles a rule matches. Every criterion given must hold; none given
/// matches everything of the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ItemFilter {
    pub application_id: Option<String>,
    /// The resource's type (for roles: their resource's).
    pub resource_type: Option<String>,
    /// The item's name, ignoring case: `*` matches any run of characters, `?` one character.
    pub name_pattern: Option<String>,
    /// Tags the resource (for roles: their resource) carries, all of them (ignoring case).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What a filter is matched against.
#[derive(Debug, Clone, Copy)]
pub struct ItemFacts<'a> {
    pub application_id: &'a str,
    pub resource_type: &'a str,
    pub name: &'a str,
    pub tags: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub target: RuleTarget,
    pub filter: ItemFilter,
    /// The settings it sets; `None` fields are left alone.
    pub actions: SettingOverrides,
    pub priority: i64,
    pub enabled: bool,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn validate_filter(filter: &mut ItemFilter) -> Result<(), InvalidInput> {
    if let Some(id) = &filter.application_id
        && !crate::ids::is_valid_id(id)
    {
        return Err(InvalidInput::new(
            "filter.application_id",
            format!("{id:?} is not a Tessera id"),
        ));
    }
    if let Some(t) = &filter.resource_type {
        validate_resource_type(t)
            .map_err(|e| InvalidInput::new("filter.resource_type", e.reason))?;
    }
    if let Some(p) = &filter.name_pattern
        && (p.is_empty() || p.chars().count() > MAX_PATTERN_LEN || p.chars().any(char::is_control))
    {
        return Err(InvalidInput::new(
            "filter.name_pattern",
            format!("must be 1-{MAX_PATTERN_LEN} printable characters"),
        ));
    }
    filter.tags =
        normalize_tags(&filter.tags).map_err(|e| InvalidInput::new("filter.tags", e.reason))?;
    Ok(())
}

/// The settings must set something, and roles take no owner or maintainers.
pub fn validate_actions(
    target: RuleTarget,
    actions: &SettingOverrides,
) -> Result<(), InvalidInput> {
    if *actions == SettingOverrides::default() {
        return Err(InvalidInput::new(
            "actions",
            "set at least one of owner, maintainers, requestable, workflow_id, durations",
        ));
    }
    if let Some(w) = &actions.workflow_id
        && !crate::ids::is_valid_id(w)
    {
        return Err(InvalidInput::new(
            "actions.workflow_id",
            "must be a Tessera id",
        ));
    }
    let checked = match target {
        RuleTarget::Resources => validate_resource_overrides(actions),
        RuleTarget::Roles => validate_role_overrides(actions),
    };
    checked.map_err(|e| InvalidInput::new(prefixed(e.field), e.reason))
}

fn prefixed(field: &str) -> &'static str {
    match field {
        "owner" => "actions.owner",
        "maintainers" => "actions.maintainers",
        "durations" => "actions.durations",
        _ => "actions",
    }
}

pub fn validate_rule(rule: &mut Rule) -> Result<(), InvalidInput> {
    rule.name = rule.name.trim().to_owned();
    check_name("name", &rule.name)?;
    if let Some(d) = &rule.description
        && (d.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(InvalidInput::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    if !(0..=MAX_RULE_PRIORITY).contains(&rule.priority) {
        return Err(InvalidInput::new(
            "priority",
            format!("must be between 0 and {MAX_RULE_PRIORITY}"),
        ));
    }
    validate_filter(&mut rule.filter)?;
    validate_actions(rule.target, &rule.actions)
}

/// Whether a name matches a glob (`*`, `?`), ignoring case.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = fold(pattern).chars().collect();
    let n: Vec<char> = fold(name).chars().collect();
    // Iterative wildcard matching with one backtrack point: linear in practice, never
    // exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The glob as a SQL `LIKE` pattern over folded names (escape character `\`).
pub fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 2);
    for c in fold(glob).chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

pub fn matches(filter: &ItemFilter, item: &ItemFacts<'_>) -> bool {
    filter
        .application_id
        .as_ref()
        .is_none_or(|a| a == item.application_id)
        && filter
            .resource_type
            .as_ref()
            .is_none_or(|t| t == item.resource_type)
        && filter
            .name_pattern
            .as_ref()
            .is_none_or(|p| glob_matches(p, item.name))
        && filter
            .tags
            .iter()
            .all(|t| item.tags.iter().any(|have| fold(have) == fold(t)))
}

/// The settings the matching rules set, each from the first rule (by priority, then id) that
/// sets it; and the ids of the rules that contributed.
pub fn merged_actions<'a>(
    rules: impl IntoIterator<Item = &'a Rule>,
) -> (SettingOverrides, Vec<String>) {
    let mut ordered: Vec<&Rule> = rules.into_iter().filter(|r| r.enabled).collect();
    ordered.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
    let mut merged = SettingOverrides::default();
    let mut used = Vec::new();
    for rule in ordered {
        let a = &rule.actions;
        let mut contributed = false;
        macro_rules! take {
            ($field:ident) => {
                if merged.$field.is_none() && a.$field.is_some() {
                    merged.$field = a.$field.clone();
                    contributed = true;
                }
            };
        }
        take!(requestable);
        take!(workflow_id);
        take!(durations);
        take!(owner);
        take!(maintainers);
        if contributed {
            used.push(rule.id.clone());
        }
    }
    (merged, used)
}

/// The settings of `actions` that `rule` sets: applying one rule touches only its own
/// settings, with the values precedence gives them.
pub fn restricted_to(actions: &SettingOverrides, rule: &SettingOverrides) -> SettingOverrides {
    SettingOverrides {
        requestable: rule.requestable.and(actions.requestable),
        workflow_id: rule.workflow_id.as_ref().and(actions.workflow_id.clone()),
        durations: rule.durations.as_ref().and(actions.durations),
        owner: rule.owner.as_ref().and(actions.owner.clone()),
        maintainers: rule.maintainers.as_ref().and(actions.maintainers.clone()),
    }
}

/// Sets every setting `actions` names (`fill_only`: only those `current` leaves unset).
pub fn apply_actions(current: &mut SettingOverrides, actions: &SettingOverrides, fill_only: bool) {
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = &actions.$field
                && (!fill_only || current.$field.is_none())
            {
                current.$field = Some(v.clone());
            }
        };
    }
    set!(requestable);
    set!(workflow_id);
    set!(durations);
    set!(owner);
    set!(maintainers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::{DurationPolicy, Principal, PrincipalKind};
    use proptest::prelude::*;

    #[test]
    fn globs() {
        assert!(glob_matches("prod-*", "PROD-db"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("*db*", "the-db-1"));
        assert!(!glob_matches("*db", "the-db-1"));
        assert!(glob_matches("100%", "100%"));
        assert!(glob_matches("ä*", "Ärger"));
        assert_eq!(like_pattern("Prod_*%?\\"), "prod\\_%\\%_\\\\");
    }

    /// A reference matcher (plain recursion) for the property test.
    fn reference(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => reference(&p[1..], n) || (!n.is_empty() && reference(p, &n[1..])),
            (Some('?'), Some(_)) => reference(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => reference(&p[1..], &n[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_reference(p in "[ab*?]{0,8}", n in "[ab]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let nc: Vec<char> = n.chars().collect();
            prop_assert_eq!(glob_matches(&p, &n), reference(&pc, &nc));
        }
    }

    fn facts<'a>(tags: &'a [String]) -> ItemFacts<'a> {
        ItemFacts {
            application_id: "app1",
            resource_type: "database",
            name: "prod-orders",
            tags,
        }
    }

    #[test]
    fn every_given_criterion_must_hold() {
        let tags = vec!["PCI".to_string(), "prod".to_string()];
        let f = |app: Option<&str>, t: Option<&str>, p: Option<&str>, tags: &[&str]| ItemFilter {
            application_id: app.map(str::to_owned),
            resource_type: t.map(str::to_owned),
            name_pattern: p.map(str::to_owned),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        };
        assert!(matches(&ItemFilter::default(), &facts(&tags)));
        assert!(matches(
            &f(Some("app1"), Some("database"), Some("prod-*"), &["pci"]),
            &facts(&tags)
        ));
        assert!(!matches(&f(Some("app2"), None, None, &[]), &facts(&tags)));
        assert!(!matches(&f(None, Some("group"), None, &[]), &facts(&tags)));
        assert!(!matches(&f(None, None, Some("dev-*"), &[]), &facts(&tags)));
        assert!(!matches(
            &f(None, None, None, &["pci", "gdpr"]),
            &facts(&tags)
        ));
    }

    fn rule(id: &str, priority: i64, actions: SettingOverrides) -> Rule {
        Rule {
            id: id.into(),
            name: id.into(),
            description: None,
            target: RuleTarget::Resources,
            filter: ItemFilter::default(),
            actions,
            priority,
            enabled: true,
            version: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn each_setting_comes_from_the_first_rule_that_sets_it() {
        let owner = Principal {
            kind: PrincipalKind::Group,
            id: "g".into(),
        };
        let a = rule(
            "a",
            50,
            SettingOverrides {
                requestable: Some(false),
                ..Default::default()
            },
        );
        let b = rule(
            "b",
            10,
            SettingOverrides {
                requestable: Some(true),
                owner: Some(owner.clone()),
                ..Default::default()
            },
        );
        let mut c = rule(
            "c",
            1,
            SettingOverrides {
                durations: Some(DurationPolicy {
                    max_seconds: Some(60),
                    default_seconds: None,
                }),
                ..Default::default()
            },
        );
        c.enabled = false;
        let (merged, used) = merged_actions([&a, &b, &c]);
        assert_eq!(merged.requestable, Some(true));
        assert_eq!(merged.owner, Some(owner));
        assert_eq!(merged.durations, None, "disabled rules do not count");
        assert_eq!(used, vec!["b".to_string()]);

        let mut current = SettingOverrides {
            requestable: Some(false),
            ..Default::default()
        };
        apply_actions(&mut current, &merged, true);
        assert_eq!(current.requestable, Some(false), "explicit values stay");
        assert!(current.owner.is_some());
        apply_actions(&mut current, &merged, false);
        assert_eq!(current.requestable, Some(true));

        // Applying rule a alone touches only what a sets, with the value b's precedence gives.
        let only_a = restricted_to(&merged, &a.actions);
        assert_eq!(only_a.requestable, Some(true));
        assert_eq!(only_a.owner, None);
    }

    #[test]
    fn validation_names_fields() {
        assert_eq!(
            validate_actions(RuleTarget::Resources, &SettingOverrides::default())
                .unwrap_err()
                .field,
            "actions"
        );
        let owner = SettingOverrides {
            owner: Some(Principal {
                kind: PrincipalKind::Identity,
                id: crate::ids::new_id(),
            }),
            ..Default::default()
        };
        validate_actions(RuleTarget::Resources, &owner).unwrap();
        assert_eq!(
            validate_actions(RuleTarget::Roles, &owner)
                .unwrap_err()
                .field,
            "actions.owner"
        );
        let mut f = ItemFilter {
            resource_type: Some("Not Valid".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_filter(&mut f).unwrap_err().field,
            "filter.resource_type"
        );
        let mut f = ItemFilter {
            tags: vec!["a".into(), "A".into()],
            ..Default::default()
        };
        validate_filter(&mut f).unwrap();
        assert_eq!(f.tags, vec!["a".to_string()]);
    }
}
