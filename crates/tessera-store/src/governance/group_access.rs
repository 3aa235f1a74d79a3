//! What group mappings give, kept true: whenever an identity's groups or status change, or a
//! mapping or its data source's precedence changes, the identities concerned are re-evaluated
//! in the same transaction as the change (rules in `tessera_domain::governance::group_mapping`).
//!
//! Work is batched: one query per batch of [`EVALUATE_BATCH`] identities for each of their
//! statuses, their mapped groups (nested groups followed by a recursive query), the roles those
//! groups give and the `group_mapping` grants they hold.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tessera_domain::directory::IdentityStatus;
use tessera_domain::governance::group_mapping::{
    HeldGroupGrant, MAX_GROUP_DEPTH, MappedMembership, PlatformRole, PlatformRoleDecision,
    PlatformRolePrecedence, decide_platform_role, plan_group_grants,
};
use tessera_domain::governance::{Grant, GrantSource, GrantStatus};
use tessera_domain::ids::new_id;

use super::actor_ref;
use super::grants::{self, GrantRow};
use crate::sql::{Arg, Sql, bind_args};
use crate::{Backend, ChangeContext, StoreError, StoreResult, Tx, audit, with_conn};

/// Identities re-evaluated per round of queries.
pub const EVALUATE_BATCH: usize = 500;

/// A data source's rule for picking one platform role (default: priority).
pub fn platform_role_precedence(settings: &Value) -> PlatformRolePrecedence {
    settings
        .get("platform_role_precedence")
        .and_then(Value::as_str)
        .and_then(PlatformRolePrecedence::parse)
        .unwrap_or(PlatformRolePrecedence::Priority)
}

/// The platform role of a data source's identities in no mapped group (default: requester).
pub fn default_platform_role(settings: &Value) -> PlatformRole {
    settings
        .get("default_platform_role")
        .and_then(Value::as_str)
        .and_then(PlatformRole::parse)
        .unwrap_or(PlatformRole::Requester)
}

/// Whether anything about the identities may concern group mappings: their data source has
/// a mapping, or they still hold something one gave.
async fn concerned(tx: &mut Tx, data_source_id: &str, ids: &[String]) -> StoreResult<bool> {
    let found: Option<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT id FROM group_mappings WHERE data_source_id = $1 LIMIT 1")
            .bind(data_source_id)
            .fetch_optional(&mut *conn)
            .await?
    });
    if found.is_some() {
        return Ok(true);
    }
    for chunk in ids.chunks(EVALUATE_BATCH) {
        let mut sql = Sql::new(tx.backend());
        sql.push("SELECT id FROM identities WHERE platform_role IS NOT NULL AND id IN (");
        sql.text_list(chunk);
        sql.push(
            ") UNION ALL SELECT id FROM grants WHERE source = 'group_mapping' \
             AND status IN ('scheduled', 'active') AND identity_id IN (",
        );
        sql.text_list(chunk);
        sql.push(") LIMIT 1");
        let held: Option<String> = with_conn!(tx, |conn| {
            bind_args!(
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.text.clone())),
                &sql.args
            )
            .fetch_optional(&mut *conn)
            .await?
        });
        if held.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// On PostgreSQL, serialises a data source's mapping changes against its member changes:
/// member changes share the data source row's lock, mapping changes hold it alone. Without
/// it, a member added while a mapping is created (or a role dropped from it) could be missed
/// by both. (SQLite has one writer at a time.)
pub(crate) async fn lock_source(tx: &mut Tx, data_source_id: &str, alone: bool) -> StoreResult<()> {
    if tx.backend() != Backend::Postgres {
        return Ok(());
    }
    let sql = match alone {
        true => "SELECT id FROM data_sources WHERE id = $1 FOR NO KEY UPDATE",
        false => "SELECT id FROM data_sources WHERE id = $1 FOR SHARE",
    };
    with_conn!(tx, |conn| {
        sqlx::query_scalar::<_, String>(sql)
            .bind(data_source_id)
            .fetch_optional(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Whether `group_id` or a group it is (transitively) a member of has a mapping: only then can
/// a change of its members change what anyone holds.
pub(crate) async fn mapped_at_or_above(tx: &mut Tx, group_id: &str) -> StoreResult<bool> {
    let found: Option<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "WITH RECURSIVE above (group_id, depth) AS (SELECT $1, 0 \
             UNION ALL SELECT gm.group_id, a.depth + 1 FROM above a JOIN group_members gm \
             ON gm.member_kind = 'group' AND gm.member_id = a.group_id WHERE a.depth < $2) \
             SELECT id FROM group_mappings WHERE group_id IN (SELECT group_id FROM above) LIMIT 1",
        )
        .bind(group_id)
        .bind(MAX_GROUP_DEPTH)
        .fetch_optional(&mut *conn)
        .await?
    });
    Ok(found.is_some())
}

/// The identities among `member_ids` and every identity (transitively) in the groups among
/// them: whose mapped memberships change when these members join or leave a group.
pub(crate) async fn identities_within(
    tx: &mut Tx,
    member_ids: &[String],
) -> StoreResult<Vec<String>> {
    let mut found = BTreeSet::new();
    for chunk in member_ids.chunks(EVALUATE_BATCH) {
        let mut sql = Sql::new(tx.backend());
        sql.push(
            "WITH RECURSIVE below (group_id, depth) AS (SELECT id, 0 FROM groups WHERE id IN (",
        );
        sql.text_list(chunk);
        sql.push(
            ") UNION ALL SELECT gm.member_id, b.depth + 1 FROM below b JOIN group_members gm \
             ON gm.group_id = b.group_id AND gm.member_kind = 'group' WHERE b.depth < ",
        );
        sql.arg(Arg::Int(MAX_GROUP_DEPTH));
        sql.push(") SELECT id FROM identities WHERE id IN (");
        sql.text_list(chunk);
        sql.push(
            ") UNION SELECT gm.member_id FROM group_members gm JOIN below b ON gm.group_id = b.group_id \
             WHERE gm.member_kind = 'identity'",
        );
        let ids: Vec<String> = with_conn!(tx, |conn| {
            bind_args!(
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.text.clone())),
                &sql.args
            )
            .fetch_all(&mut *conn)
            .await?
        });
        found.extend(ids);
    }
    Ok(found.into_iter().collect())
}

/// Re-evaluates the identities of a group whose members changed (`changed`: the identities
/// and groups that joined or left), if the group or one above it is mapped.
pub(crate) async fn after_member_change(
    tx: &mut Tx,
    ctx: &ChangeContext,
    group_id: &str,
    changed: &[String],
) -> StoreResult<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let data_source_id: String = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT data_source_id FROM groups WHERE id = $1")
            .bind(group_id)
            .fetch_one(&mut *conn)
            .await?
    });
    lock_source(tx, &data_source_id, false).await?;
    if !mapped_at_or_above(tx, group_id).await? {
        return Ok(());
    }
    let identities = identities_within(tx, changed).await?;
    reevaluate_always(tx, ctx, &data_source_id, &identities).await
}

/// Re-evaluates identities whose status changed, if their data source has a group mapping or
/// they hold something one gave. (A concurrent mapping change is safe: it locks the identities
/// it evaluates, so it waits for this status change and then sees it.)
pub async fn reevaluate(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    identity_ids: &[String],
) -> StoreResult<()> {
    if identity_ids.is_empty() || !concerned(tx, data_source_id, identity_ids).await? {
        return Ok(());
    }
    reevaluate_always(tx, ctx, data_source_id, identity_ids).await
}

/// Re-evaluates identities of one data source, whatever its mappings.
pub(crate) async fn reevaluate_always(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    identity_ids: &[String],
) -> StoreResult<()> {
    if identity_ids.is_empty() {
        return Ok(());
    }
    let settings: String = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT settings FROM data_sources WHERE id = $1")
            .bind(data_source_id)
            .fetch_one(&mut *conn)
            .await?
    });
    let settings: Value = super::from_json("data_sources.settings", &settings)?;
    let rules = Rules {
        precedence: platform_role_precedence(&settings),
        default: default_platform_role(&settings),
    };
    for chunk in identity_ids.chunks(EVALUATE_BATCH) {
        evaluate_batch(tx, ctx, data_source_id, rules, chunk).await?;
    }
    Ok(())
}

/// Every identity in a mapped group of the data source (when its precedence changes).
pub(crate) async fn mapped_identities(
    tx: &mut Tx,
    data_source_id: &str,
) -> StoreResult<Vec<String>> {
    let groups: Vec<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT group_id FROM group_mappings WHERE data_source_id = $1")
            .bind(data_source_id)
            .fetch_all(&mut *conn)
            .await?
    });
    identities_within(tx, &groups).await
}

#[derive(Debug, Clone, Copy)]
struct Rules {
    precedence: PlatformRolePrecedence,
    default: PlatformRole,
}

struct Current {
    status: IdentityStatus,
    platform_role: Option<(String, Option<String>)>,
}

async fn evaluate_batch(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    rules: Rules,
    ids: &[String],
) -> StoreResult<()> {
    // The identities, locked on PostgreSQL so that a concurrent status change waits for this
    // evaluation (and then sees its grants) rather than missing them.
    let mut sql = Sql::new(tx.backend());
    sql.push(
        "SELECT id, status, platform_role, platform_role_mapping_id FROM identities \
         WHERE data_source_id = ",
    )
    .text_arg(data_source_id)
    .push(" AND id IN (");
    sql.text_list(ids);
    sql.push(") ORDER BY id");
    if sql.backend == Backend::Postgres {
        sql.push(" FOR UPDATE");
    }
    let rows: Vec<(String, String, Option<String>, Option<String>)> = with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(&mut *conn)
        .await?
    });
    let mut current: BTreeMap<String, Current> = BTreeMap::new();
    for (id, status, role, mapping) in rows {
        let status = IdentityStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown identity status {status:?}")))?;
        current.insert(
            id,
            Current {
                status,
                platform_role: role.map(|r| (r, mapping)),
            },
        );
    }
    let ids: Vec<String> = current.keys().cloned().collect();
    if ids.is_empty() {
        return Ok(());
    }
    let memberships = mapped_memberships(tx, &ids).await?;
    let mapping_ids: BTreeSet<String> = memberships
        .values()
        .flatten()
        .map(|m| m.mapping_id.clone())
        .collect();
    let mapped_roles = mapped_roles(tx, &mapping_ids).await?;
    let mut held: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
    for grant in held_grants(tx, &ids).await? {
        if let Some(identity) = grant.identity_id.clone() {
            held.entry(identity).or_default().push(grant);
        }
    }
    for (id, now) in &current {
        let mine = memberships.get(id).map(Vec::as_slice).unwrap_or_default();
        let decision = decide_platform_role(now.status, rules.precedence, rules.default, mine);
        write_platform_role(tx, ctx, data_source_id, id, now, &decision).await?;

        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in mine {
            for (role_id, _) in mapped_roles.get(&m.mapping_id).into_iter().flatten() {
                wanted
                    .entry(role_id.clone())
                    .or_default()
                    .insert(m.mapping_id.clone());
            }
        }
        let held_here = held.remove(id).unwrap_or_default();
        let held_view: Vec<HeldGroupGrant> = held_here
            .iter()
            .map(|g| HeldGroupGrant {
                grant_id: g.id.clone(),
                role_id: g.role_id.clone(),
            })
            .collect();
        let plan = plan_group_grants(now.status, &wanted, &held_view);
        for grant in held_here.iter().filter(|g| plan.end.contains(&g.id)) {
            end_grant(tx, ctx, grant, plan.end_reason).await?;
        }
        for (role_id, mapping_id) in &plan.grant {
            let application_id = mapped_roles
                .get(mapping_id)
                .and_then(|roles| roles.iter().find(|(r, _)| r == role_id))
                .map(|(_, app)| app.clone())
                .ok_or_else(|| StoreError::Corrupt("a mapped role lost its application".into()))?;
            grant_role(tx, ctx, id, role_id, &application_id, mapping_id).await?;
        }
    }
    Ok(())
}

/// Each identity's mapped groups, nested groups followed.
async fn mapped_memberships(
    tx: &mut Tx,
    ids: &[String],
) -> StoreResult<BTreeMap<String, Vec<MappedMembership>>> {
    let mut sql = Sql::new(tx.backend());
    // `joined_at` along a nested path is the later of its links' times; over several paths to
    // one group, the earliest.
    sql.push(
        "WITH RECURSIVE member_of (identity_id, group_id, joined_at, depth) AS ( \
         SELECT member_id, group_id, added_at, 1 FROM group_members \
         WHERE member_kind = 'identity' AND member_id IN (",
    );
    sql.text_list(ids);
    sql.push(
        ") UNION ALL SELECT m.identity_id, gm.group_id, \
         CASE WHEN gm.added_at > m.joined_at THEN gm.added_at ELSE m.joined_at END, m.depth + 1 \
         FROM member_of m JOIN group_members gm \
         ON gm.member_kind = 'group' AND gm.member_id = m.group_id WHERE m.depth < ",
    );
    sql.arg(Arg::Int(MAX_GROUP_DEPTH));
    sql.push(
        ") SELECT m.identity_id, g.id, g.platform_role, g.priority, MIN(m.joined_at) \
         FROM member_of m JOIN group_mappings g ON g.group_id = m.group_id \
         GROUP BY m.identity_id, g.id, g.platform_role, g.priority",
    );
    let rows: Vec<(String, String, Option<String>, i64, i64)> = with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(&mut *conn)
        .await?
    });
    let mut out: BTreeMap<String, Vec<MappedMembership>> = BTreeMap::new();
    for (identity, mapping_id, role, priority, joined_at) in rows {
        let platform_role = match role {
            Some(r) => Some(PlatformRole::parse(&r).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown platform role {r:?} in group_mappings"))
            })?),
            None => None,
        };
        out.entry(identity).or_default().push(MappedMembership {
            mapping_id,
            platform_role,
            priority,
            joined_at,
        });
    }
    Ok(out)
}

/// The roles each mapping gives, with their applications; roles of observed applications are
/// left out (Tessera grants nothing there).
async fn mapped_roles(
    tx: &mut Tx,
    mapping_ids: &BTreeSet<String>,
) -> StoreResult<BTreeMap<String, Vec<(String, String)>>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let ids: Vec<String> = mapping_ids.iter().cloned().collect();
    for chunk in ids.chunks(EVALUATE_BATCH) {
        let mut sql = Sql::new(tx.backend());
        sql.push(
            "SELECT m.mapping_id, m.role_id, r.application_id FROM group_mapping_roles m \
             JOIN roles r ON r.id = m.role_id JOIN applications a ON a.id = r.application_id \
             WHERE a.management_mode = 'managed' AND m.mapping_id IN (",
        );
        sql.text_list(chunk);
        sql.push(")");
        let rows: Vec<(String, String, String)> = with_conn!(tx, |conn| {
            bind_args!(
                sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
                &sql.args
            )
            .fetch_all(&mut *conn)
            .await?
        });
        for (mapping, role, app) in rows {
            out.entry(mapping).or_default().push((role, app));
        }
    }
    Ok(out)
}

async fn held_grants(tx: &mut Tx, ids: &[String]) -> StoreResult<Vec<Grant>> {
    let mut sql = Sql::new(tx.backend());
    sql.push(&format!(
        "SELECT {} FROM grants WHERE source = 'group_mapping' \
         AND status IN ('scheduled', 'active') AND identity_id IN (",
        grants::COLUMNS
    ));
    sql.text_list(ids);
    sql.push(")");
    let rows: Vec<GrantRow> = with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(&mut *conn)
        .await?
    });
    rows.into_iter().map(Grant::try_from).collect()
}

async fn write_platform_role(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    id: &str,
    now: &Current,
    decision: &PlatformRoleDecision,
) -> StoreResult<()> {
    // Stored only when a mapping gives it: NULL follows the data source's default.
    let wanted = decision
        .mapping_id
        .as_ref()
        .map(|m| (decision.role.as_str().to_owned(), Some(m.clone())));
    if wanted == now.platform_role {
        return Ok(());
    }
    let (role, mapping) = match &wanted {
        Some((role, mapping)) => (Some(role.as_str()), mapping.as_deref()),
        None => (None, None),
    };
    with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE identities SET platform_role = $1, platform_role_mapping_id = $2 WHERE id = $3",
        )
        .bind(role)
        .bind(mapping)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    });
    let view = |r: &Option<(String, Option<String>)>| match r {
        Some((role, mapping)) => json!({"role": role, "mapping_id": mapping}),
        None => json!({"role": null, "mapping_id": null, "default": true}),
    };
    audit::record(
        tx,
        ctx.event("identity.platform_role", "identity", Some(id))
            .with_data_source(data_source_id)
            .with_details(json!({
                "before": view(&now.platform_role),
                "after": view(&wanted),
                "effective": decision.role,
            })),
    )
    .await?;
    Ok(())
}

async fn end_grant(
    tx: &mut Tx,
    ctx: &ChangeContext,
    before: &Grant,
    reason: &str,
) -> StoreResult<()> {
    let now = tx.now();
    let mut after = before.clone();
    after.status = GrantStatus::Revoked;
    after.ended_at = Some(now);
    after.ended_by = Some(actor_ref(ctx));
    after.end_reason = Some(reason.to_owned());
    after.version += 1;
    after.updated_at = now;
    grants::write_change(tx, &after, before.version).await?;
    audit::record(
        tx,
        ctx.event("membership.revoke", "membership", Some(&after.id))
            .with_details(json!({ "before": before, "after": after, "reason": reason })),
    )
    .await?;
    Ok(())
}

async fn grant_role(
    tx: &mut Tx,
    ctx: &ChangeContext,
    identity_id: &str,
    role_id: &str,
    application_id: &str,
    mapping_id: &str,
) -> StoreResult<()> {
    let now = tx.now();
    let mut grant = Grant {
        id: new_id(),
        role_id: role_id.to_owned(),
        application_id: application_id.to_owned(),
        identity_id: Some(identity_id.to_owned()),
        account_id: None,
        source: GrantSource::GroupMapping,
        status: GrantStatus::Active,
        starts_at: now,
        ends_at: None,
        granted_by: Some(actor_ref(ctx)),
        reason: Some(format!("group mapping {mapping_id}")),
        ended_at: None,
        ended_by: None,
        end_reason: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let g = &grant;
    // `WHERE TRUE` keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
    let inserted: Option<(Option<String>,)> = with_conn!(tx, |conn| {
        sqlx::query_as(
            "INSERT INTO grants (id, role_id, application_id, identity_id, account_id, source, \
             status, starts_at, ends_at, granted_by, reason, version, created_at, updated_at) \
             SELECT $1, $2, $3, $4, \
               (SELECT a.id FROM accounts a WHERE a.application_id = $3 AND a.identity_id = $4 \
                ORDER BY a.id LIMIT 1), \
               $5, $6, $7, NULL, $8, $9, 1, $7, $7 WHERE TRUE \
             ON CONFLICT DO NOTHING RETURNING account_id",
        )
        .bind(&g.id)
        .bind(&g.role_id)
        .bind(&g.application_id)
        .bind(&g.identity_id)
        .bind(g.source.as_str())
        .bind(g.status.as_str())
        .bind(g.starts_at)
        .bind(&g.granted_by)
        .bind(&g.reason)
        .fetch_optional(&mut *conn)
        .await?
    });
    // Already held (a concurrent evaluation won): nothing to record.
    let Some((account_id,)) = inserted else {
        return Ok(());
    };
    grant.account_id = account_id;
    audit::record(
        tx,
        ctx.event("membership.grant", "membership", Some(&grant.id))
            .with_details(json!({ "after": grant, "reason": grant.reason })),
    )
    .await?;
    Ok(())
}
