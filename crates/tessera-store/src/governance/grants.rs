//! Grants (memberships): granting, extending, renewing, revoking, and ending them on time.
//!
//! The rules live in `tessera_domain::governance::membership`; here they are fed what the
//! transaction reads, and their decisions are written with an audit entry each.

use std::sync::Arc;

use serde_json::json;
use tessera_domain::directory::{IdentityStatus, InvalidInput};
use tessera_domain::governance::membership::{self, Refusal};
use tessera_domain::governance::{
    Grant, GrantSource, GrantStatus, MAX_RESOURCE_DEPTH, validate_reason,
};
use tessera_domain::ids::new_id;

use super::roles;
use super::{actor_ref, check_version};
use crate::directory::MAX_PAGE;
use crate::sql::{Arg, Sql, bind_args};
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(sqlx::FromRow)]
pub(crate) struct GrantRow {
    id: String,
    role_id: String,
    application_id: String,
    identity_id: Option<String>,
    account_id: Option<String>,
    source: String,
    status: String,
    starts_at: i64,
    ends_at: Option<i64>,
    granted_by: Option<String>,
    reason: Option<String>,
    ended_at: Option<i64>,
    ended_by: Option<String>,
    end_reason: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const COLUMNS: &str = "id, role_id, application_id, identity_id, account_id, source, status, \
     starts_at, ends_at, granted_by, reason, ended_at, ended_by, end_reason, version, created_at, \
     updated_at";

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(r: GrantRow) -> StoreResult<Self> {
        Ok(Grant {
            source: GrantSource::parse(&r.source).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown grant source {:?}", r.source))
            })?,
            status: GrantStatus::parse(&r.status).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown grant status {:?}", r.status))
            })?,
            id: r.id,
            role_id: r.role_id,
            application_id: r.application_id,
            identity_id: r.identity_id,
            account_id: r.account_id,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            granted_by: r.granted_by,
            reason: r.reason,
            ended_at: r.ended_at,
            ended_by: r.ended_by,
            end_reason: r.end_reason,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A membership asked for through the API.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub role_id: String,
    pub identity_id: String,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub reason: Option<String>,
}

async fn identity_status(tx: &mut Tx, identity_id: &str) -> StoreResult<IdentityStatus> {
    let status: Option<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT status FROM identities WHERE id = $1")
            .bind(identity_id)
            .fetch_optional(&mut *conn)
            .await?
    });
    let status = status.ok_or_else(|| {
        StoreError::from(InvalidInput::new(
            "identity_id",
            format!("there is no identity {identity_id}"),
        ))
    })?;
    IdentityStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown identity status {status:?}")))
}

/// The prerequisites of `role_id` that the identity does not hold through an active grant.
async fn missing_prerequisites(
    tx: &mut Tx,
    role_id: &str,
    identity_id: &str,
) -> StoreResult<Vec<String>> {
    Ok(with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT p.prerequisite_role_id FROM role_prerequisites p WHERE p.role_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.role_id = p.prerequisite_role_id \
             AND g.identity_id = $2 AND g.status = 'active') ORDER BY p.prerequisite_role_id",
        )
        .bind(role_id)
        .bind(identity_id)
        .fetch_all(&mut *conn)
        .await?
    }))
}

async fn get_in(tx: &mut Tx, id: &str) -> StoreResult<Grant> {
    let sql = format!("SELECT {COLUMNS} FROM grants WHERE id = $1");
    let row: Option<GrantRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("membership", id))?
        .try_into()
}

fn check_ids(req: &GrantRequest) -> StoreResult<()> {
    validate_reason(req.reason.as_deref())?;
    for (field, id) in [("role_id", &req.role_id), ("identity_id", &req.identity_id)] {
        if !tessera_domain::ids::is_valid_id(id) {
            return Err(InvalidInput::new(field, format!("{id:?} is not a Tessera id")).into());
        }
    }
    Ok(())
}

fn no_such_role(req: &GrantRequest) -> impl Fn(StoreError) -> StoreError + '_ {
    move |e| match e {
        StoreError::NotFound { .. } => {
            InvalidInput::new("role_id", format!("there is no role {}", req.role_id)).into()
        }
        other => other,
    }
}

/// The grant row the rules planned, before it is written.
fn planned(
    tx: &Tx,
    ctx: &ChangeContext,
    role: &roles::RoleContext,
    req: &GrantRequest,
    period: membership::GrantPeriod,
) -> Grant {
    Grant {
        id: new_id(),
        role_id: req.role_id.clone(),
        application_id: role.application.id.clone(),
        identity_id: Some(req.identity_id.clone()),
        account_id: None,
        source: GrantSource::Api,
        status: period.status,
        starts_at: period.starts_at,
        ends_at: period.ends_at,
        granted_by: Some(actor_ref(ctx)),
        reason: req.reason.clone(),
        ended_at: None,
        ended_by: None,
        end_reason: None,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    }
}

/// Grants a role to an identity (source `api`), after the membership rules agree, in its own
/// transaction.
///
/// Fast path: the role's settings are read before the write transaction (off the writer on
/// SQLite, and kept in the store's role cache for the next grant), and the transaction only runs one guarded `INSERT`, which holds if the identity is
/// still active, every prerequisite is still held, and the role and application are at the
/// versions that were read. If any guard fails, the transaction re-reads everything and decides
/// exactly ([`grant_in`]), so a refusal always names its reason.
pub async fn grant(db: &Db, ctx: &ChangeContext, req: GrantRequest) -> StoreResult<Grant> {
    check_ids(&req)?;
    let role = match db.role_cache().get(&req.role_id) {
        Some(cached) => cached,
        None => {
            let read = Arc::new(
                roles::context(db, &req.role_id)
                    .await
                    .map_err(no_such_role(&req))?,
            );
            db.role_cache().put(read.clone());
            read
        }
    };
    let durations = role.effective_settings().durations.value;
    // The identity's status and prerequisites are checked by the guard; here the period is
    // planned. A refusal may come from stale settings, so it is decided again exactly.
    let planned_period = membership::plan_grant(
        db.now_ms(),
        IdentityStatus::Active,
        &role.application,
        &durations,
        Vec::new(),
        req.starts_at,
        req.ends_at,
    );
    let mut tx = db.begin().await?;
    let fast = match planned_period {
        Ok(period) => {
            let mut grant = planned(&tx, ctx, &role, &req, period);
            // The turn came after the plan: a start that has passed meanwhile has begun.
            if grant.status == GrantStatus::Scheduled && grant.starts_at <= tx.now() {
                grant.status = GrantStatus::Active;
            }
            guarded_insert(&mut tx, &grant, &role)
                .await
                .map_err(duplicate_membership)?
                .map(|account_id| Grant {
                    account_id,
                    ..grant
                })
        }
        Err(_) => None,
    };
    let grant = match fast {
        Some(grant) => {
            audit_grant(&mut tx, ctx, &grant).await?;
            grant
        }
        None => {
            // Something changed since the role was read, or the rules refuse: decide again
            // from what the transaction sees, which also names the reason.
            db.role_cache().remove(&req.role_id);
            grant_in(&mut tx, ctx, req).await?
        }
    };
    tx.commit().await?;
    Ok(grant)
}

/// Grants a role to an identity (source `api`) inside the caller's transaction, reading
/// everything the rules need in it.
pub async fn grant_in(tx: &mut Tx, ctx: &ChangeContext, req: GrantRequest) -> StoreResult<Grant> {
    check_ids(&req)?;
    let role = roles::context_in(tx, &req.role_id)
        .await
        .map_err(no_such_role(&req))?;
    let identity = identity_status(tx, &req.identity_id).await?;
    let missing = missing_prerequisites(tx, &req.role_id, &req.identity_id).await?;
    let durations = role.effective_settings().durations.value;
    let period = membership::plan_grant(
        tx.now(),
        identity,
        &role.application,
        &durations,
        missing,
        req.starts_at,
        req.ends_at,
    )
    .map_err(StoreError::Refused)?;
    let mut grant = planned(tx, ctx, &role, &req, period);
    grant.account_id = with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT id FROM accounts WHERE application_id = $1 AND identity_id = $2 \
             ORDER BY id LIMIT 1",
        )
        .bind(&grant.application_id)
        .bind(&req.identity_id)
        .fetch_optional(&mut *conn)
        .await?
    });
    insert(tx, &grant).await.map_err(duplicate_membership)?;
    audit_grant(tx, ctx, &grant).await?;
    Ok(grant)
}

fn duplicate_membership(e: StoreError) -> StoreError {
    match e {
        StoreError::Conflict(_) => StoreError::Conflict(
            "the identity already holds this role through a live membership granted here; \
             extend or renew it instead"
                .into(),
        ),
        other => other,
    }
}

async fn audit_grant(tx: &mut Tx, ctx: &ChangeContext, grant: &Grant) -> StoreResult<()> {
    audit::record(
        tx,
        ctx.event("membership.grant", "membership", Some(&grant.id))
            .with_details(json!({ "after": grant, "reason": grant.reason })),
    )
    .await?;
    Ok(())
}

/// Inserts an identity's grant only if the identity is active, it holds every prerequisite of
/// the role, and the role, its application and its resources are still at the versions the
/// plan was made from (versions only grow, so an unchanged sum over the resource chain means
/// none of them changed). Returns `None` when a guard failed (nothing written), else the
/// account the grant was linked to.
async fn guarded_insert(
    tx: &mut Tx,
    g: &Grant,
    role: &roles::RoleContext,
) -> StoreResult<Option<Option<String>>> {
    let mut chain_ids: Vec<&str> = role.chain.iter().map(|r| r.id.as_str()).collect();
    if chain_ids.len() > MAX_RESOURCE_DEPTH {
        return Ok(None);
    }
    chain_ids.resize(MAX_RESOURCE_DEPTH, "");
    let chain_versions: i64 = role.chain.iter().map(|r| r.version).sum();
    let inserted = with_conn!(tx, |conn| {
        let mut q = sqlx::query_as::<_, (Option<String>,)>(
            "INSERT INTO grants (id, role_id, application_id, identity_id, account_id, source, \
             status, starts_at, ends_at, granted_by, reason, version, created_at, updated_at) \
             SELECT $1, $2, $3, $4, \
               (SELECT a.id FROM accounts a WHERE a.application_id = $3 AND a.identity_id = $4 \
                ORDER BY a.id LIMIT 1), \
               $5, $6, $7, $8, $9, $10, $11, $12, $13 \
             WHERE EXISTS (SELECT 1 FROM identities WHERE id = $4 AND status = 'active') \
             AND EXISTS (SELECT 1 FROM roles WHERE id = $2 AND version = $14) \
             AND EXISTS (SELECT 1 FROM applications WHERE id = $3 AND version = $15) \
             AND (SELECT COALESCE(SUM(version), 0) FROM resources \
                  WHERE id IN ($16, $17, $18, $19, $20, $21, $22, $23)) = $24 \
             AND NOT EXISTS (SELECT 1 FROM role_prerequisites p WHERE p.role_id = $2 \
               AND NOT EXISTS (SELECT 1 FROM grants h WHERE h.role_id = p.prerequisite_role_id \
                 AND h.identity_id = $4 AND h.status = 'active')) \
             RETURNING account_id",
        )
        .bind(&g.id)
        .bind(&g.role_id)
        .bind(&g.application_id)
        .bind(&g.identity_id)
        .bind(g.source.as_str())
        .bind(g.status.as_str())
        .bind(g.starts_at)
        .bind(g.ends_at)
        .bind(&g.granted_by)
        .bind(&g.reason)
        .bind(g.version)
        .bind(g.created_at)
        .bind(g.updated_at)
        .bind(role.role.version)
        .bind(role.application.version);
        for id in &chain_ids {
            q = q.bind(*id);
        }
        q.bind(chain_versions).fetch_optional(&mut *conn).await
    });
    match inserted {
        Ok(row) => Ok(row.map(|(account,)| account)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
            "a live grant of this role to this holder already exists".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Writes a new grant row; a live duplicate (same role, holder and source) is a conflict.
pub(crate) async fn insert(tx: &mut Tx, g: &Grant) -> StoreResult<()> {
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO grants (id, role_id, application_id, identity_id, account_id, source, \
             status, starts_at, ends_at, granted_by, reason, ended_at, ended_by, end_reason, \
             version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&g.id)
        .bind(&g.role_id)
        .bind(&g.application_id)
        .bind(&g.identity_id)
        .bind(&g.account_id)
        .bind(g.source.as_str())
        .bind(g.status.as_str())
        .bind(g.starts_at)
        .bind(g.ends_at)
        .bind(&g.granted_by)
        .bind(&g.reason)
        .bind(g.ended_at)
        .bind(&g.ended_by)
        .bind(&g.end_reason)
        .bind(g.version)
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
            "a live grant of this role to this holder already exists".into(),
        )),
        other => other.map(|_| ()).map_err(StoreError::from),
    }
}

/// Writes the changed lifecycle columns of a grant, if it is still at `before_version`.
pub(crate) async fn write_change(tx: &mut Tx, g: &Grant, before_version: i64) -> StoreResult<()> {
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE grants SET status = $1, ends_at = $2, ended_at = $3, ended_by = $4, \
             end_reason = $5, version = $6, updated_at = $7 WHERE id = $8 AND version = $9",
        )
        .bind(g.status.as_str())
        .bind(g.ends_at)
        .bind(g.ended_at)
        .bind(&g.ended_by)
        .bind(&g.end_reason)
        .bind(g.version)
        .bind(g.updated_at)
        .bind(&g.id)
        .bind(before_version)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            current: before_version + 1,
        });
    }
    Ok(())
}

/// What to do with a live grant.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// A new, later end.
    Extend { ends_at: i64 },
    /// The role's standard duration from now.
    Renew,
    /// End it now.
    Revoke,
}

/// Extends, renews or revokes a membership, after the membership rules agree.
pub async fn change(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
    change: Change,
    reason: Option<String>,
) -> StoreResult<Grant> {
    validate_reason(reason.as_deref())?;
    let before = get_in(tx, id).await?;
    check_version(expected_version, before.version)?;
    let now = tx.now();
    let mut after = before.clone();
    let action = match change {
        Change::Revoke => {
            membership::check_revocable(&before).map_err(StoreError::Refused)?;
            after.status = GrantStatus::Revoked;
            after.ended_at = Some(now);
            after.ended_by = Some(actor_ref(ctx));
            after.end_reason = reason.clone();
            "membership.revoke"
        }
        Change::Extend { .. } | Change::Renew => {
            let identity = match &before.identity_id {
                Some(identity_id) => identity_status(tx, identity_id).await?,
                None => {
                    return Err(StoreError::Refused(Refusal::NotGrantable(
                        "the membership belongs to an account no identity matched".into(),
                    )));
                }
            };
            let role = roles::context_in(tx, &before.role_id).await?;
            let durations = role.effective_settings().durations.value;
            after.ends_at = match change {
                Change::Extend { ends_at } => membership::plan_extend(
                    now,
                    identity,
                    &role.application,
                    &before,
                    &durations,
                    ends_at,
                )
                .map(Some),
                _ => membership::plan_renew(now, identity, &role.application, &before, &durations),
            }
            .map_err(StoreError::Refused)?;
            if matches!(change, Change::Extend { .. }) {
                "membership.extend"
            } else {
                "membership.renew"
            }
        }
    };
    if after == before {
        return Ok(before);
    }
    after.version = before.version + 1;
    after.updated_at = now;
    write_change(tx, &after, before.version)
        .await
        .map_err(|e| match e {
            StoreError::VersionMismatch { .. } => {
                super::lost_race(expected_version, before.version)
            }
            other => other,
        })?;
    audit::record(
        tx,
        ctx.event(action, "membership", Some(id))
            .with_details(json!({ "before": before, "after": after, "reason": reason })),
    )
    .await?;
    Ok(after)
}

pub async fn get(db: &Db, id: &str) -> StoreResult<Grant> {
    let sql = format!("SELECT {COLUMNS} FROM grants WHERE id = $1");
    let row: Option<GrantRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("membership", id))?
        .try_into()
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub application_id: Option<String>,
    pub role_id: Option<String>,
    pub identity_id: Option<String>,
    pub account_id: Option<String>,
    pub status: Option<GrantStatus>,
    pub source: Option<GrantSource>,
}

/// A page of grants in creation order, after the id `after`.
pub async fn list(
    db: &Db,
    filter: &GrantFilter,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Grant>> {
    let mut sql = Sql::new(db.backend());
    sql.push(&format!("SELECT {COLUMNS} FROM grants WHERE 1 = 1"));
    for (column, value) in [
        ("application_id", &filter.application_id),
        ("role_id", &filter.role_id),
        ("identity_id", &filter.identity_id),
        ("account_id", &filter.account_id),
    ] {
        if let Some(v) = value {
            sql.push(&format!(" AND {column} = "))
                .arg(Arg::Text(v.clone()));
        }
    }
    if let Some(s) = filter.status {
        sql.push(" AND status = ").arg(Arg::Text(s.as_str().into()));
    }
    if let Some(s) = filter.source {
        sql.push(" AND source = ").arg(Arg::Text(s.as_str().into()));
    }
    if let Some(after) = after {
        sql.push(" AND id > ").arg(Arg::Text(after.to_owned()));
    }
    sql.push(" ORDER BY id LIMIT ")
        .arg(Arg::Int(limit.clamp(1, MAX_PAGE)));
    let Sql { text, args, .. } = sql;
    let rows: Vec<GrantRow> = with_pool!(db, |pool| {
        bind_args!(sqlx::query_as(sqlx::AssertSqlSafe(text.clone())), &args)
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(Grant::try_from).collect()
}

/// What one pass of [`end_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueOutcome {
    pub expired: usize,
    pub started: usize,
}

/// Ends live grants whose `ends_at` has passed (status `expired`) and starts scheduled grants
/// whose `starts_at` has come, at most `limit` of each, in one transaction with an audit entry
/// per grant. Several processes may run it at once: each grant changes only once.
pub async fn end_due(db: &Db, ctx: &ChangeContext, limit: i64) -> StoreResult<DueOutcome> {
    let mut tx = db.begin().await?;
    let now = tx.now();
    let mut outcome = DueOutcome::default();
    let sql = format!(
        "SELECT {COLUMNS} FROM grants WHERE ends_at IS NOT NULL AND ends_at <= $1 \
         AND status IN ('scheduled', 'active') ORDER BY ends_at LIMIT $2"
    );
    let due: Vec<GrantRow> = with_conn!(&mut tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
    });
    for row in due {
        let before = Grant::try_from(row)?;
        let mut after = before.clone();
        after.status = GrantStatus::Expired;
        after.ended_at = Some(now);
        after.ended_by = Some(actor_ref(ctx));
        after.end_reason = Some("reached its end".into());
        after.version += 1;
        after.updated_at = now;
        match write_change(&mut tx, &after, before.version).await {
            Err(StoreError::VersionMismatch { .. }) => continue,
            other => other?,
        }
        audit::record(
            &mut tx,
            ctx.event("membership.expire", "membership", Some(&after.id))
                .with_details(json!({ "before": before, "after": after })),
        )
        .await?;
        outcome.expired += 1;
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM grants WHERE status = 'scheduled' AND starts_at <= $1 \
         ORDER BY starts_at LIMIT $2"
    );
    let starting: Vec<GrantRow> = with_conn!(&mut tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
    });
    for row in starting {
        let before = Grant::try_from(row)?;
        let mut after = before.clone();
        after.status = GrantStatus::Active;
        after.version += 1;
        after.updated_at = now;
        match write_change(&mut tx, &after, before.version).await {
            Err(StoreError::VersionMismatch { .. }) => continue,
            other => other?,
        }
        audit::record(
            &mut tx,
            ctx.event("membership.start", "membership", Some(&after.id))
                .with_details(json!({ "before": before, "after": after })),
        )
        .await?;
        outcome.started += 1;
    }
    tx.commit().await?;
    Ok(outcome)
}
