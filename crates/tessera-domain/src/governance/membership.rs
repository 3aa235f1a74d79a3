//! The rules for memberships (grants made through the API): grant, extend, renew, revoke.
//!
//! Each function takes what the store read and decides; nothing here reads or writes. A refusal
//! names one reason, with a stable code the API turns into its problem type.

use super::{Application, DurationPolicy, Grant, GrantSource, GrantStatus, ManagementMode};
use crate::directory::IdentityStatus;

/// A start this far in the past is taken as "now" (clock skew between caller and server).
pub const START_SKEW_MS: i64 = 5 * 60 * 1000;
/// A grant may be scheduled to start at most this far ahead.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 366 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the identity is {status}, not active")]
    IdentityNotActive { status: IdentityStatus },
    #[error("{0}")]
    NotGrantable(String),
    #[error("{}", duration_message(*.requested_seconds, *.max_seconds))]
    DurationNotAllowed {
        /// `None`: a permanent grant was asked for.
        requested_seconds: Option<i64>,
        max_seconds: i64,
    },
    #[error("{0}")]
    InvalidPeriod(String),
    #[error("the identity does not hold the prerequisite roles {}", .role_ids.join(", "))]
    MissingPrerequisites { role_ids: Vec<String> },
    #[error("the membership has ended ({status}); grant a new one instead")]
    NotLive { status: GrantStatus },
    #[error("the role's grants are permanent by default, so there is nothing to renew")]
    NoStandardDuration,
    #[error("this membership comes from a {managed_by}; change that instead of revoking it here")]
    ManagedElsewhere { managed_by: GrantSource },
}

fn duration_message(requested: Option<i64>, max: i64) -> String {
    match requested {
        Some(s) => {
            format!("a membership of {s} seconds exceeds the role's maximum of {max} seconds")
        }
        None => format!(
            "the role does not allow permanent memberships; give an end within {max} seconds"
        ),
    }
}

impl Refusal {
    /// The stable code behind the API's problem type.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::IdentityNotActive { .. } => "identity-not-active",
            Refusal::NotGrantable(_) => "role-not-grantable",
            Refusal::DurationNotAllowed { .. } => "duration-not-allowed",
            Refusal::InvalidPeriod(_) => "invalid-period",
            Refusal::MissingPrerequisites { .. } => "prerequisite-missing",
            Refusal::NotLive { .. } => "membership-ended",
            Refusal::NoStandardDuration => "no-standard-duration",
            Refusal::ManagedElsewhere { .. } => "membership-managed-elsewhere",
        }
    }
}

/// When a new grant runs, and whether it has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantPeriod {
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub status: GrantStatus,
}

/// Whether Tessera may grant roles of this application at all.
pub fn check_grantable(app: &Application) -> Result<(), Refusal> {
    match app.management_mode {
        ManagementMode::Managed => Ok(()),
        ManagementMode::Observed => Err(Refusal::NotGrantable(format!(
            "application {:?} is observed: Tessera reports its access but grants nothing in it",
            app.name
        ))),
    }
}

fn check_identity(status: IdentityStatus) -> Result<(), Refusal> {
    match status {
        IdentityStatus::Active => Ok(()),
        status => Err(Refusal::IdentityNotActive { status }),
    }
}

/// Whole seconds from `from` to `to` (milliseconds), rounded up.
fn seconds_between(from: i64, to: i64) -> i64 {
    (to - from + 999).div_euclid(1000)
}

/// Decides a new grant's period. `starts_at`/`ends_at` are what the caller asked for;
/// `missing_prerequisites` are the prerequisite roles the identity does not hold now.
pub fn plan_grant(
    now: i64,
    identity: IdentityStatus,
    app: &Application,
    durations: &DurationPolicy,
    missing_prerequisites: Vec<String>,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
) -> Result<GrantPeriod, Refusal> {
    check_identity(identity)?;
    check_grantable(app)?;
    let starts_at = match starts_at {
        None => now,
        Some(s) if s < now - START_SKEW_MS => {
            return Err(Refusal::InvalidPeriod(
                "starts_at must not be in the past".into(),
            ));
        }
        Some(s) if s > now + MAX_SCHEDULE_AHEAD_MS => {
            return Err(Refusal::InvalidPeriod(
                "starts_at may be at most 366 days ahead".into(),
            ));
        }
        Some(s) => s.max(now),
    };
    let ends_at = match ends_at {
        Some(e) if e <= starts_at => {
            return Err(Refusal::InvalidPeriod(
                "ends_at must be later than starts_at".into(),
            ));
        }
        Some(e) => {
            let requested = seconds_between(starts_at, e);
            if !durations.allows(Some(requested)) {
                return Err(Refusal::DurationNotAllowed {
                    requested_seconds: Some(requested),
                    max_seconds: durations.max_seconds.unwrap_or_default(),
                });
            }
            Some(e)
        }
        None => durations.standard_seconds().map(|s| starts_at + s * 1000),
    };
    if !missing_prerequisites.is_empty() {
        return Err(Refusal::MissingPrerequisites {
            role_ids: missing_prerequisites,
        });
    }
    let status = if starts_at > now {
        GrantStatus::Scheduled
    } else {
        GrantStatus::Active
    };
    Ok(GrantPeriod {
        starts_at,
        ends_at,
        status,
    })
}

fn check_live(grant: &Grant) -> Result<(), Refusal> {
    if grant.status.is_live() {
        Ok(())
    } else {
        Err(Refusal::NotLive {
            status: grant.status,
        })
    }
}

/// The new end of an extended grant: later than its current end, within the allowed duration
/// counted from now (or from its start, if it has not started).
pub fn plan_extend(
    now: i64,
    identity: IdentityStatus,
    app: &Application,
    grant: &Grant,
    durations: &DurationPolicy,
    new_end: i64,
) -> Result<i64, Refusal> {
    check_live(grant)?;
    check_changeable_here(grant)?;
    check_identity(identity)?;
    check_grantable(app)?;
    let Some(current_end) = grant.ends_at else {
        return Err(Refusal::InvalidPeriod(
            "the membership is permanent; there is nothing to extend".into(),
        ));
    };
    if new_end <= current_end {
        return Err(Refusal::InvalidPeriod(
            "the new end must be later than the current one".into(),
        ));
    }
    let from = now.max(grant.starts_at);
    let requested = seconds_between(from, new_end);
    if !durations.allows(Some(requested)) {
        return Err(Refusal::DurationNotAllowed {
            requested_seconds: Some(requested),
            max_seconds: durations.max_seconds.unwrap_or_default(),
        });
    }
    Ok(new_end)
}

/// The new end of a renewed grant: the role's standard duration from now (or from its start,
/// if it has not started). Renewing never shortens a grant, so renewing twice is harmless.
pub fn plan_renew(
    now: i64,
    identity: IdentityStatus,
    app: &Application,
    grant: &Grant,
    durations: &DurationPolicy,
) -> Result<Option<i64>, Refusal> {
    check_live(grant)?;
    check_changeable_here(grant)?;
    check_identity(identity)?;
    check_grantable(app)?;
    let Some(current_end) = grant.ends_at else {
        return Err(Refusal::InvalidPeriod(
            "the membership is permanent; there is nothing to renew".into(),
        ));
    };
    let standard = durations
        .standard_seconds()
        .ok_or(Refusal::NoStandardDuration)?;
    let renewed = now.max(grant.starts_at) + standard * 1000;
    Ok(Some(renewed.max(current_end)))
}

/// Whether a grant may be revoked through the memberships API.
pub fn check_revocable(grant: &Grant) -> Result<(), Refusal> {
    check_live(grant)?;
    check_changeable_here(grant)
}

/// Grants a group mapping or birthright policy keeps would come straight back, and `external`
/// grants record what the application itself holds (its next member list or sync restores
/// them): all are changed at their source, not through the memberships API.
fn check_changeable_here(grant: &Grant) -> Result<(), Refusal> {
    match grant.source {
        managed_by @ (GrantSource::GroupMapping
        | GrantSource::Birthright
        | GrantSource::External) => Err(Refusal::ManagedElsewhere { managed_by }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::settings::tests::app;
    use crate::governance::{ApplicationSettings, ManagementMode};

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;

    fn week_policy() -> DurationPolicy {
        DurationPolicy {
            max_seconds: Some(7 * DAY),
            default_seconds: Some(DAY),
        }
    }

    fn grant(status: GrantStatus, source: GrantSource, ends_at: Option<i64>) -> Grant {
        Grant {
            id: "g".into(),
            role_id: "r".into(),
            application_id: "app".into(),
            identity_id: Some("i".into()),
            account_id: None,
            source,
            status,
            starts_at: NOW - DAY * 1000,
            ends_at,
            granted_by: None,
            reason: None,
            ended_at: None,
            ended_by: None,
            end_reason: None,
            version: 1,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    fn plan(
        identity: IdentityStatus,
        policy: DurationPolicy,
        missing: Vec<String>,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<GrantPeriod, Refusal> {
        let app = app(ApplicationSettings::default());
        plan_grant(NOW, identity, &app, &policy, missing, start, end)
    }

    #[test]
    fn a_grant_without_dates_starts_now_and_gets_the_standard_duration() {
        let p = plan(IdentityStatus::Active, week_policy(), vec![], None, None).unwrap();
        assert_eq!(p.starts_at, NOW);
        assert_eq!(p.ends_at, Some(NOW + DAY * 1000));
        assert_eq!(p.status, GrantStatus::Active);
        let permanent = plan(
            IdentityStatus::Active,
            DurationPolicy::default(),
            vec![],
            None,
            None,
        )
        .unwrap();
        assert_eq!(permanent.ends_at, None);
    }

    #[test]
    fn a_future_start_is_scheduled() {
        let start = NOW + HOUR * 1000;
        let p = plan(
            IdentityStatus::Active,
            week_policy(),
            vec![],
            Some(start),
            Some(start + 7 * DAY * 1000),
        )
        .unwrap();
        assert_eq!(p.status, GrantStatus::Scheduled);
        assert_eq!(p.starts_at, start);
    }

    #[test]
    fn refusals() {
        let r = plan(IdentityStatus::Suspended, week_policy(), vec![], None, None).unwrap_err();
        assert_eq!(r.code(), "identity-not-active");

        let r = plan(
            IdentityStatus::Active,
            week_policy(),
            vec![],
            None,
            Some(NOW + (7 * DAY + 1) * 1000),
        )
        .unwrap_err();
        assert_eq!(
            r,
            Refusal::DurationNotAllowed {
                requested_seconds: Some(7 * DAY + 1),
                max_seconds: 7 * DAY
            }
        );

        let r = plan(
            IdentityStatus::Active,
            week_policy(),
            vec!["p1".into()],
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(r.code(), "prerequisite-missing");
        assert!(r.to_string().contains("p1"));

        let r = plan(
            IdentityStatus::Active,
            week_policy(),
            vec![],
            None,
            Some(NOW),
        )
        .unwrap_err();
        assert_eq!(r.code(), "invalid-period");

        let r = plan(
            IdentityStatus::Active,
            week_policy(),
            vec![],
            Some(NOW - START_SKEW_MS - 1),
            None,
        )
        .unwrap_err();
        assert_eq!(r.code(), "invalid-period");

        let mut observed = app(ApplicationSettings::default());
        observed.management_mode = ManagementMode::Observed;
        let r = plan_grant(
            NOW,
            IdentityStatus::Active,
            &observed,
            &week_policy(),
            vec![],
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(r.code(), "role-not-grantable");
    }

    #[test]
    fn a_slightly_past_start_means_now() {
        let p = plan(
            IdentityStatus::Active,
            week_policy(),
            vec![],
            Some(NOW - 1000),
            None,
        )
        .unwrap();
        assert_eq!(p.starts_at, NOW);
    }

    #[test]
    fn extend_moves_the_end_within_the_maximum() {
        let g = grant(
            GrantStatus::Active,
            GrantSource::Api,
            Some(NOW + HOUR * 1000),
        );
        let policy = week_policy();
        let end = NOW + 7 * DAY * 1000;
        assert_eq!(
            plan_extend(
                NOW,
                IdentityStatus::Active,
                &app(ApplicationSettings::default()),
                &g,
                &policy,
                end
            ),
            Ok(end)
        );
        let r = plan_extend(
            NOW,
            IdentityStatus::Active,
            &app(ApplicationSettings::default()),
            &g,
            &policy,
            end + 1000,
        )
        .unwrap_err();
        assert_eq!(r.code(), "duration-not-allowed");
        let r = plan_extend(
            NOW,
            IdentityStatus::Active,
            &app(ApplicationSettings::default()),
            &g,
            &policy,
            NOW,
        )
        .unwrap_err();
        assert_eq!(r.code(), "invalid-period");
        let expired = grant(GrantStatus::Expired, GrantSource::Api, Some(NOW));
        let r = plan_extend(
            NOW,
            IdentityStatus::Active,
            &app(ApplicationSettings::default()),
            &expired,
            &policy,
            end,
        )
        .unwrap_err();
        assert_eq!(r.code(), "membership-ended");
        let r = plan_extend(
            NOW,
            IdentityStatus::Suspended,
            &app(ApplicationSettings::default()),
            &g,
            &policy,
            end,
        )
        .unwrap_err();
        assert_eq!(r.code(), "identity-not-active");
    }

    #[test]
    fn renew_adds_the_standard_duration_and_never_shortens() {
        let g = grant(
            GrantStatus::Active,
            GrantSource::Api,
            Some(NOW + HOUR * 1000),
        );
        let policy = week_policy();
        assert_eq!(
            plan_renew(
                NOW,
                IdentityStatus::Active,
                &app(ApplicationSettings::default()),
                &g,
                &policy
            ),
            Ok(Some(NOW + DAY * 1000))
        );
        let long = grant(
            GrantStatus::Active,
            GrantSource::Api,
            Some(NOW + 3 * DAY * 1000),
        );
        assert_eq!(
            plan_renew(
                NOW,
                IdentityStatus::Active,
                &app(ApplicationSettings::default()),
                &long,
                &policy
            ),
            Ok(Some(NOW + 3 * DAY * 1000))
        );
        let r = plan_renew(
            NOW,
            IdentityStatus::Active,
            &app(ApplicationSettings::default()),
            &g,
            &DurationPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(r, Refusal::NoStandardDuration);
    }

    #[test]
    fn revoke_refuses_ended_and_externally_managed_grants() {
        assert!(check_revocable(&grant(GrantStatus::Active, GrantSource::Api, None)).is_ok());
        assert!(
            check_revocable(&grant(GrantStatus::Scheduled, GrantSource::Request, None)).is_ok()
        );
        let r = check_revocable(&grant(GrantStatus::Active, GrantSource::GroupMapping, None))
            .unwrap_err();
        assert_eq!(r.code(), "membership-managed-elsewhere");
        let external = grant(
            GrantStatus::Active,
            GrantSource::External,
            Some(NOW + DAY * 1000),
        );
        let r = plan_renew(
            NOW,
            IdentityStatus::Active,
            &app(ApplicationSettings::default()),
            &external,
            &week_policy(),
        )
        .unwrap_err();
        assert_eq!(r.code(), "membership-managed-elsewhere");
        let r =
            check_revocable(&grant(GrantStatus::Active, GrantSource::External, None)).unwrap_err();
        assert_eq!(r.code(), "membership-managed-elsewhere");
        let r = check_revocable(&grant(GrantStatus::Revoked, GrantSource::Api, None)).unwrap_err();
        assert_eq!(r.code(), "membership-ended");
    }
}
