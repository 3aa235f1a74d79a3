//! Groups → roles: what a data source's groups give their members.
//!
//! A *group mapping* ties one group to a platform role (what the person may do in Tessera
//! itself) and to application roles (granted with source `group_mapping`). Membership counts
//! through nested groups. The rules here are pure: the store feeds them what an identity is a
//! member of and what it holds, and writes what they decide.
//!
//! - **Platform role** (single-valued; active identities only): among the mapped groups that name one, the data
//!   source's precedence decides: `priority` (lowest number wins) or `most_recent` (the group
//!   the person joined last wins, Apty's rule). Ties fall to the lower priority, then to the
//!   older mapping, so the outcome never depends on row order. In no such group, the data
//!   source's default role applies.
//! - **Application roles**: an active identity holds the union of its groups' mapped roles; a
//!   suspended or deleted one holds none. Leaving the last group that gives a role ends it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::directory::{IdentityStatus, InvalidInput};

string_enum! {
    /// What a person may do in Tessera itself: `admin` everything, `auditor` read everything,
    /// `approver` decide requests routed to them, `requester` ask for access.
    PlatformRole { Admin => "admin", Auditor => "auditor", Approver => "approver", Requester => "requester" }
}

string_enum! {
    /// How a data source picks one platform role among several mapped groups.
    PlatformRolePrecedence { Priority => "priority", MostRecent => "most_recent" }
}

/// Priorities run from 0 (first) to this.
pub const MAX_PRIORITY: i64 = 1_000_000;
/// The priority of a mapping created without one.
pub const DEFAULT_PRIORITY: i64 = 100;
/// Application roles one mapping may give.
pub const MAX_MAPPED_ROLES: usize = 100;
/// How deep group nesting is followed when working out who is a member of a mapped group.
pub const MAX_GROUP_DEPTH: i64 = 8;

/// A group mapping as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMapping {
    pub id: String,
    pub data_source_id: String,
    pub group_id: String,
    pub platform_role: Option<PlatformRole>,
    /// Lower comes first under `priority` precedence.
    pub priority: i64,
    /// Application role ids, sorted.
    pub role_ids: Vec<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Checks a mapping's content and puts its role list in canonical order.
pub fn validate(mapping: &mut GroupMapping) -> Result<(), InvalidInput> {
    if !(0..=MAX_PRIORITY).contains(&mapping.priority) {
        return Err(InvalidInput::new(
            "priority",
            format!("must be between 0 and {MAX_PRIORITY}"),
        ));
    }
    if mapping.role_ids.len() > MAX_MAPPED_ROLES {
        return Err(InvalidInput::new(
            "role_ids",
            format!("at most {MAX_MAPPED_ROLES} roles per mapping"),
        ));
    }
    for id in &mapping.role_ids {
        if !crate::ids::is_valid_id(id) {
            return Err(InvalidInput::new(
                "role_ids",
                format!("{id:?} is not a Tessera id"),
            ));
        }
    }
    mapping.role_ids.sort();
    mapping.role_ids.dedup();
    if mapping.platform_role.is_none() && mapping.role_ids.is_empty() {
        return Err(InvalidInput::new(
            "platform_role",
            "a mapping gives a platform role, application roles, or both",
        ));
    }
    Ok(())
}

/// One mapped group an identity is a member of (directly or through nested groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedMembership {
    pub mapping_id: String,
    pub platform_role: Option<PlatformRole>,
    pub priority: i64,
    /// When the identity became a member (through nesting: when the last link of its earliest
    /// path was added).
    pub joined_at: i64,
}

/// The platform role an identity has and the mapping it comes from; `None` for the mapping
/// means the data source's default applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformRoleDecision {
    pub role: PlatformRole,
    pub mapping_id: Option<String>,
}

/// Picks the platform role among an identity's mapped groups. Only active identities hold
/// one from a mapping; a suspended or deleted one falls back to the default.
pub fn decide_platform_role(
    status: IdentityStatus,
    precedence: PlatformRolePrecedence,
    default: PlatformRole,
    memberships: &[MappedMembership],
) -> PlatformRoleDecision {
    let memberships = match status {
        IdentityStatus::Active => memberships,
        _ => &[],
    };
    let candidates = memberships
        .iter()
        .filter_map(|m| m.platform_role.map(|role| (m, role)));
    let winner = match precedence {
        PlatformRolePrecedence::Priority => candidates
            .min_by(|(a, _), (b, _)| (a.priority, &a.mapping_id).cmp(&(b.priority, &b.mapping_id))),
        PlatformRolePrecedence::MostRecent => candidates.min_by(|(a, _), (b, _)| {
            (std::cmp::Reverse(a.joined_at), a.priority, &a.mapping_id).cmp(&(
                std::cmp::Reverse(b.joined_at),
                b.priority,
                &b.mapping_id,
            ))
        }),
    };
    match winner {
        Some((m, role)) => PlatformRoleDecision {
            role,
            mapping_id: Some(m.mapping_id.clone()),
        },
        None => PlatformRoleDecision {
            role: default,
            mapping_id: None,
        },
    }
}

/// A live `group_mapping` grant an identity holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldGroupGrant {
    pub grant_id: String,
    pub role_id: String,
}

/// What re-evaluating one identity's application roles decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupGrantPlan {
    /// Role ids to grant, each with the mapping that gives it (the first, by id, if several do).
    pub grant: BTreeMap<String, String>,
    /// Grants to end.
    pub end: Vec<String>,
    /// Why they end (the identity is no longer active, or left the groups).
    pub end_reason: &'static str,
}

impl GroupGrantPlan {
    pub fn is_empty(&self) -> bool {
        self.grant.is_empty() && self.end.is_empty()
    }
}

/// Diffs the roles an identity's mapped groups give (`wanted`: role id → mapping ids) with the
/// `group_mapping` grants it holds.
pub fn plan_group_grants(
    status: IdentityStatus,
    wanted: &BTreeMap<String, BTreeSet<String>>,
    held: &[HeldGroupGrant],
) -> GroupGrantPlan {
    let active = status == IdentityStatus::Active;
    let held_roles: BTreeSet<&str> = held.iter().map(|h| h.role_id.as_str()).collect();
    let grant = if active {
        wanted
            .iter()
            .filter(|(role, _)| !held_roles.contains(role.as_str()))
            .filter_map(|(role, mappings)| mappings.first().map(|m| (role.clone(), m.clone())))
            .collect()
    } else {
        BTreeMap::new()
    };
    let end = held
        .iter()
        .filter(|h| !active || !wanted.contains_key(&h.role_id))
        .map(|h| h.grant_id.clone())
        .collect();
    GroupGrantPlan {
        grant,
        end,
        end_reason: match status {
            IdentityStatus::Active => "no longer a member of a group mapped to the role",
            IdentityStatus::Suspended => "the identity was suspended",
            IdentityStatus::Deleted => "the identity was deleted",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(
        id: &str,
        role: Option<PlatformRole>,
        priority: i64,
        joined_at: i64,
    ) -> MappedMembership {
        MappedMembership {
            mapping_id: id.into(),
            platform_role: role,
            priority,
            joined_at,
        }
    }

    use PlatformRole::*;

    #[test]
    fn priority_lowest_number_wins_whatever_the_order() {
        let ms = [
            member("m1", Some(Requester), 30, 1),
            member("m2", Some(Admin), 10, 2),
            member("m3", Some(Approver), 20, 3),
        ];
        for rotation in 0..3 {
            let mut v = ms.to_vec();
            v.rotate_left(rotation);
            let d = decide_platform_role(
                IdentityStatus::Active,
                PlatformRolePrecedence::Priority,
                Requester,
                &v,
            );
            assert_eq!(d.role, Admin);
            assert_eq!(d.mapping_id.as_deref(), Some("m2"));
        }
    }

    #[test]
    fn equal_priorities_fall_to_the_older_mapping() {
        let ms = [
            member("m2", Some(Admin), 5, 1),
            member("m1", Some(Auditor), 5, 9),
        ];
        let d = decide_platform_role(
            IdentityStatus::Active,
            PlatformRolePrecedence::Priority,
            Requester,
            &ms,
        );
        assert_eq!((d.role, d.mapping_id.as_deref()), (Auditor, Some("m1")));
    }

    #[test]
    fn most_recent_group_wins_and_ties_fall_to_priority() {
        let ms = [
            member("m1", Some(Admin), 1, 100),
            member("m2", Some(Approver), 50, 300),
            member("m3", Some(Auditor), 40, 300),
        ];
        let d = decide_platform_role(
            IdentityStatus::Active,
            PlatformRolePrecedence::MostRecent,
            Requester,
            &ms,
        );
        assert_eq!((d.role, d.mapping_id.as_deref()), (Auditor, Some("m3")));
        let d = decide_platform_role(
            IdentityStatus::Active,
            PlatformRolePrecedence::MostRecent,
            Requester,
            &ms[..1],
        );
        assert_eq!(d.role, Admin);
    }

    #[test]
    fn suspended_identities_hold_no_mapped_platform_role() {
        let ms = [member("m1", Some(Admin), 1, 1)];
        for status in [IdentityStatus::Suspended, IdentityStatus::Deleted] {
            let d = decide_platform_role(status, PlatformRolePrecedence::Priority, Requester, &ms);
            assert_eq!(
                d,
                PlatformRoleDecision {
                    role: Requester,
                    mapping_id: None
                }
            );
        }
    }

    #[test]
    fn no_mapped_group_gives_the_default() {
        let d = decide_platform_role(
            IdentityStatus::Active,
            PlatformRolePrecedence::Priority,
            Approver,
            &[],
        );
        assert_eq!(
            d,
            PlatformRoleDecision {
                role: Approver,
                mapping_id: None
            }
        );
        // Groups that give only application roles do not count.
        let ms = [member("m1", None, 0, 5)];
        let d = decide_platform_role(
            IdentityStatus::Active,
            PlatformRolePrecedence::MostRecent,
            Requester,
            &ms,
        );
        assert_eq!(d.mapping_id, None);
    }

    fn wanted(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut w: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (role, mapping) in pairs {
            w.entry(role.to_string())
                .or_default()
                .insert(mapping.to_string());
        }
        w
    }

    fn held(pairs: &[(&str, &str)]) -> Vec<HeldGroupGrant> {
        pairs
            .iter()
            .map(|(g, r)| HeldGroupGrant {
                grant_id: g.to_string(),
                role_id: r.to_string(),
            })
            .collect()
    }

    #[test]
    fn joining_grants_what_is_not_held_once() {
        let plan = plan_group_grants(
            IdentityStatus::Active,
            &wanted(&[("r1", "m2"), ("r1", "m1"), ("r2", "m1")]),
            &held(&[("g2", "r2")]),
        );
        assert_eq!(
            plan.grant,
            BTreeMap::from([("r1".to_string(), "m1".to_string())])
        );
        assert!(plan.end.is_empty());
    }

    #[test]
    fn leaving_the_last_group_ends_the_role_but_another_group_keeps_it() {
        let plan = plan_group_grants(
            IdentityStatus::Active,
            &wanted(&[("r1", "m2")]),
            &held(&[("g1", "r1"), ("g2", "r2")]),
        );
        assert!(plan.grant.is_empty());
        assert_eq!(plan.end, vec!["g2".to_string()]);
        assert!(plan.end_reason.contains("no longer a member"));
    }

    #[test]
    fn suspension_ends_everything_and_grants_nothing() {
        for status in [IdentityStatus::Suspended, IdentityStatus::Deleted] {
            let plan = plan_group_grants(
                status,
                &wanted(&[("r1", "m1"), ("r3", "m1")]),
                &held(&[("g1", "r1")]),
            );
            assert!(plan.grant.is_empty());
            assert_eq!(plan.end, vec!["g1".to_string()]);
            assert!(plan.end_reason.contains(status.as_str()));
        }
        // Restored: the roles come back.
        let plan = plan_group_grants(IdentityStatus::Active, &wanted(&[("r1", "m1")]), &[]);
        assert_eq!(plan.grant.len(), 1);
    }

    #[test]
    fn validation() {
        let mut m = GroupMapping {
            id: crate::ids::new_id(),
            data_source_id: crate::ids::new_id(),
            group_id: crate::ids::new_id(),
            platform_role: None,
            priority: DEFAULT_PRIORITY,
            role_ids: vec![],
            version: 1,
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(validate(&mut m).unwrap_err().field, "platform_role");
        let r = crate::ids::new_id();
        m.role_ids = vec![r.clone(), r.clone()];
        validate(&mut m).unwrap();
        assert_eq!(m.role_ids, vec![r]);
        m.priority = -1;
        assert_eq!(validate(&mut m).unwrap_err().field, "priority");
        m.priority = 0;
        m.role_ids = vec!["nope".into()];
        assert_eq!(validate(&mut m).unwrap_err().field, "role_ids");
    }
}
