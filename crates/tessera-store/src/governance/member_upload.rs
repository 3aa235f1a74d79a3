//! CSV applications in the store: what an upload is compared with, and applying its plan.
//!
//! The comparison loads the application's accounts and live grants in one query each (an
//! application with 100,000 members is two sequential scans of an index range), matches new
//! user keys to identities in batches, and leaves the diff to
//! `tessera_domain::governance::member_upload`. Changes are applied in transactions of at
//! most [`APPLY_BATCH`] changes, each with its audit entries, so a large upload never holds the
//! writer for long; an interrupted upload is completed by uploading the same file again.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use tessera_domain::directory::{MatchingKey, fold};
use tessera_domain::governance::member_upload::{
    HeldAccount, HeldGrant, MemberPlan, MemberRow, RoleIndex, diff_members,
};
use tessera_domain::governance::{Application, ConnectorKind, GrantSource, GrantStatus};
use tessera_domain::ids::new_id;

use super::actor_ref;
use super::applications;
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

/// Changes written per transaction.
pub const APPLY_BATCH: usize = 1000;
/// User keys looked up per identity query.
const MATCH_BATCH: usize = 500;

/// The application, if it takes member uploads.
pub async fn csv_application(db: &Db, id: &str) -> StoreResult<Application> {
    let app = applications::get(db, id).await?;
    if app.connector_kind != ConnectorKind::Csv {
        return Err(StoreError::Conflict(format!(
            "application {:?} is a {} application; member lists are uploaded to CSV applications",
            app.name, app.connector_kind
        )));
    }
    Ok(app)
}

/// The application's roles by the names a member file may use.
pub async fn role_index(db: &Db, application_id: &str) -> StoreResult<RoleIndex> {
    let rows: Vec<(String, String, String)> = with_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT re.name, ro.name, ro.id FROM roles ro JOIN resources re ON re.id = ro.resource_id \
             WHERE ro.application_id = $1",
        )
        .bind(application_id)
        .fetch_all(pool)
        .await?
    });
    Ok(RoleIndex::new(rows.iter().map(|(res, role, id)| {
        (res.as_str(), role.as_str(), id.as_str())
    })))
}

async fn held_accounts(db: &Db, application_id: &str) -> StoreResult<Vec<HeldAccount>> {
    let rows: Vec<(String, String, Option<String>)> = with_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, user_key, identity_id FROM accounts WHERE application_id = $1 ORDER BY id",
        )
        .bind(application_id)
        .fetch_all(pool)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|(id, user_key, identity_id)| HeldAccount {
            id,
            user_key,
            identity_id,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct HeldGrantRow {
    id: String,
    role_id: String,
    identity_id: Option<String>,
    account_id: Option<String>,
    source: String,
    status: String,
    ends_at: Option<i64>,
    version: i64,
}

async fn held_grants(db: &Db, application_id: &str) -> StoreResult<Vec<HeldGrant>> {
    let rows: Vec<HeldGrantRow> = with_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, role_id, identity_id, account_id, source, status, ends_at, version FROM grants \
             WHERE application_id = $1 AND status IN ('scheduled', 'active') ORDER BY id",
        )
        .bind(application_id)
        .fetch_all(pool)
        .await?
    });
    rows.into_iter()
        .map(|r| {
            Ok(HeldGrant {
                source: GrantSource::parse(&r.source).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown grant source {:?}", r.source))
                })?,
                active: r.status == GrantStatus::Active.as_str(),
                id: r.id,
                role_id: r.role_id,
                identity_id: r.identity_id,
                account_id: r.account_id,
                ends_at: r.ends_at,
                version: r.version,
            })
        })
        .collect()
}

/// Identities (of any data source, not deleted) whose `match_by` attribute equals one of
/// `keys`, ignoring case for user names and e-mails. A key several identities share matches
/// none of them.
async fn match_identities(
    db: &Db,
    match_by: MatchingKey,
    keys: &[String],
) -> StoreResult<HashMap<String, String>> {
    let column = match match_by {
        MatchingKey::UserName => "user_name_lower",
        MatchingKey::Email => "email_lower",
        MatchingKey::EmployeeNumber => "employee_number",
    };
    let mut found: HashMap<String, Option<String>> = HashMap::new();
    for chunk in keys.chunks(MATCH_BATCH) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {column}, id FROM identities WHERE {column} IN ({}) AND status <> 'deleted'",
            placeholders.join(", ")
        );
        let rows: Vec<(String, String)> = with_pool!(db, |pool| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for key in chunk {
                q = q.bind(key);
            }
            q.fetch_all(pool).await?
        });
        for (value, id) in rows {
            found
                .entry(fold(&value))
                .and_modify(|e| *e = None)
                .or_insert(Some(id));
        }
    }
    Ok(found
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// Compares checked rows with what Tessera holds for the application.
pub async fn plan(db: &Db, app: &Application, rows: &[MemberRow]) -> StoreResult<MemberPlan> {
    let accounts = held_accounts(db, &app.id).await?;
    let grants = held_grants(db, &app.id).await?;
    let matched: HashSet<String> = accounts
        .iter()
        .filter(|a| a.identity_id.is_some())
        .map(|a| fold(&a.user_key))
        .collect();
    let mut wanted: Vec<String> = rows
        .iter()
        .map(|r| fold(&r.user_key))
        .filter(|k| !matched.contains(k))
        .collect();
    wanted.sort();
    wanted.dedup();
    let lookup: Vec<String> = match app.member_format.match_by {
        // Employee numbers are compared as written; others folded.
        MatchingKey::EmployeeNumber => rows
            .iter()
            .filter(|r| !matched.contains(&fold(&r.user_key)))
            .map(|r| r.user_key.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect(),
        _ => wanted,
    };
    let identities = match_identities(db, app.member_format.match_by, &lookup).await?;
    Ok(diff_members(rows, &accounts, &grants, &identities))
}

/// What was applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub changes: usize,
    pub transactions: usize,
}

enum Step<'a> {
    AddAccount(&'a str, Option<&'a str>),
    MatchAccount(&'a HeldAccount, &'a str),
    EndGrant(&'a HeldGrant),
    RemoveAccount(&'a HeldAccount),
    AddGrant(&'a str, &'a str, Option<i64>),
    ChangeGrant(&'a HeldGrant, Option<i64>),
}

/// Applies a plan: accounts first (so new grants find them), then grants; external grants of
/// removed accounts end before the accounts go. A concurrent change to the same rows makes the
/// step fail with a conflict; uploading again finishes the job.
pub async fn apply(
    db: &Db,
    ctx: &ChangeContext,
    app: &Application,
    plan: &MemberPlan,
    rows: &[MemberRow],
) -> StoreResult<Applied> {
    let mut steps: Vec<Step> = Vec::new();
    steps.extend(
        plan.accounts_added
            .iter()
            .map(|(k, i)| Step::AddAccount(k, i.as_deref())),
    );
    steps.extend(
        plan.accounts_matched
            .iter()
            .map(|(a, i)| Step::MatchAccount(a, i)),
    );
    steps.extend(plan.grants_removed.iter().map(Step::EndGrant));
    steps.extend(plan.accounts_removed.iter().map(Step::RemoveAccount));
    steps.extend(plan.grants_added.iter().map(|&i| {
        let row = &rows[i];
        Step::AddGrant(&row.user_key, &row.role_id, row.ends_at)
    }));
    steps.extend(
        plan.grants_changed
            .iter()
            .map(|(g, e)| Step::ChangeGrant(g, *e)),
    );
    let mut applied = Applied::default();
    let mut account_ids: HashMap<String, (String, Option<String>)> = HashMap::new();
    for batch in steps.chunks(APPLY_BATCH) {
        let mut tx = db.begin().await?;
        for step in batch {
            apply_step(&mut tx, ctx, app, step, &mut account_ids).await?;
        }
        tx.commit().await?;
        applied.changes += batch.len();
        applied.transactions += 1;
    }
    let mut tx = db.begin().await?;
    audit::record(
        &mut tx,
        ctx.event("application.member_upload", "application", Some(&app.id))
            .with_details(json!({
                "rows": rows.len(),
                "accounts_added": plan.accounts_added.len(),
                "accounts_matched": plan.accounts_matched.len(),
                "accounts_removed": plan.accounts_removed.len(),
                "grants_added": plan.grants_added.len(),
                "grants_removed": plan.grants_removed.len(),
                "grants_changed": plan.grants_changed.len(),
                "unauthorised": plan.unauthorised.len(),
                "missing": plan.missing.len(),
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(applied)
}

fn changed_meanwhile() -> StoreError {
    StoreError::Conflict(
        "the application's members changed while the upload was applied; upload the file again"
            .into(),
    )
}

async fn apply_step(
    tx: &mut Tx,
    ctx: &ChangeContext,
    app: &Application,
    step: &Step<'_>,
    account_ids: &mut HashMap<String, (String, Option<String>)>,
) -> StoreResult<()> {
    let now = tx.now();
    match step {
        Step::AddAccount(user_key, identity) => {
            let id = new_id();
            let inserted = with_conn!(tx, |conn| {
                sqlx::query(
                    "INSERT INTO accounts (id, application_id, identity_id, user_key, \
                     user_key_lower, display_name, status, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, NULL, 'active', 1, $6, $6)",
                )
                .bind(&id)
                .bind(&app.id)
                .bind(identity)
                .bind(user_key)
                .bind(fold(user_key))
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            });
            match inserted {
                Err(sqlx::Error::Database(e))
                    if e.is_unique_violation() || e.is_foreign_key_violation() =>
                {
                    return Err(changed_meanwhile());
                }
                other => other?,
            };
            audit::record(
                tx,
                ctx.event("account.create", "account", Some(&id)).with_details(json!({
                    "after": {"application_id": app.id, "user_key": user_key, "identity_id": identity},
                    "reason": "member upload",
                })),
            )
            .await?;
            account_ids.insert(fold(user_key), (id, identity.map(str::to_owned)));
        }
        Step::MatchAccount(account, identity) => {
            let updated = with_conn!(tx, |conn| {
                sqlx::query(
                    "UPDATE accounts SET identity_id = $1, version = version + 1, updated_at = $2 \
                     WHERE id = $3 AND identity_id IS NULL",
                )
                .bind(identity)
                .bind(now)
                .bind(&account.id)
                .execute(&mut *conn)
                .await?
                .rows_affected()
            });
            if updated == 0 {
                return Err(changed_meanwhile());
            }
            link_account_grants(tx, ctx, &account.id, identity).await?;
            audit::record(
                tx,
                ctx.event("account.update", "account", Some(&account.id))
                    .with_details(json!({
                        "before": {"identity_id": null},
                        "after": {"identity_id": identity},
                        "reason": "member upload matched the account",
                    })),
            )
            .await?;
        }
        Step::EndGrant(g) => {
            let updated = with_conn!(tx, |conn| {
                sqlx::query(
                    "UPDATE grants SET status = $1, ended_at = $2, ended_by = $3, end_reason = $4, \
                     version = version + 1, updated_at = $2 WHERE id = $5 AND version = $6",
                )
                .bind(GrantStatus::Revoked.as_str())
                .bind(now)
                .bind(actor_ref(ctx))
                .bind("absent from the member upload")
                .bind(&g.id)
                .bind(g.version)
                .execute(&mut *conn)
                .await?
                .rows_affected()
            });
            if updated == 0 {
                return Err(changed_meanwhile());
            }
            audit::record(
                tx,
                ctx.event("membership.external_end", "membership", Some(&g.id))
                    .with_details(json!({
                        "before": {"status": "active", "role_id": g.role_id, "account_id": g.account_id},
                        "after": {"status": "revoked"},
                        "reason": "absent from the member upload",
                    })),
            )
            .await?;
        }
        Step::RemoveAccount(account) => {
            let deleted = with_conn!(tx, |conn| {
                sqlx::query("DELETE FROM accounts WHERE id = $1")
                    .bind(&account.id)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            });
            if deleted == 0 {
                return Err(changed_meanwhile());
            }
            audit::record(
                tx,
                ctx.event("account.delete", "account", Some(&account.id))
                    .with_details(json!({
                        "before": {"application_id": app.id, "user_key": account.user_key, "identity_id": account.identity_id},
                        "reason": "absent from the member upload",
                    })),
            )
            .await?;
        }
        Step::AddGrant(user_key, role_id, ends_at) => {
            let key = fold(user_key);
            let (account_id, identity_id) = match account_ids.get(&key) {
                Some(found) => found.clone(),
                None => {
                    let found: Option<(String, Option<String>)> = with_conn!(tx, |conn| {
                        sqlx::query_as(
                            "SELECT id, identity_id FROM accounts \
                             WHERE application_id = $1 AND user_key_lower = $2",
                        )
                        .bind(&app.id)
                        .bind(&key)
                        .fetch_optional(&mut *conn)
                        .await?
                    });
                    let found = found.ok_or_else(changed_meanwhile)?;
                    account_ids.insert(key, found.clone());
                    found
                }
            };
            let id = new_id();
            let inserted = with_conn!(tx, |conn| {
                sqlx::query(
                    "INSERT INTO grants (id, role_id, application_id, identity_id, account_id, \
                     source, status, starts_at, ends_at, granted_by, reason, version, created_at, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, 'external', 'active', $6, $7, $8, \
                     'found in the member upload', 1, $6, $6)",
                )
                .bind(&id)
                .bind(role_id)
                .bind(&app.id)
                .bind(&identity_id)
                .bind(&account_id)
                .bind(now)
                .bind(ends_at)
                .bind(actor_ref(ctx))
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            });
            match inserted {
                Err(sqlx::Error::Database(e))
                    if e.is_unique_violation() || e.is_foreign_key_violation() =>
                {
                    return Err(changed_meanwhile());
                }
                other => other?,
            };
            audit::record(
                tx,
                ctx.event("membership.external_add", "membership", Some(&id))
                    .with_details(json!({
                        "after": {"role_id": role_id, "account_id": account_id, "identity_id": identity_id,
                                  "source": "external", "ends_at": ends_at},
                        "reason": "found in the member upload",
                    })),
            )
            .await?;
        }
        Step::ChangeGrant(g, ends_at) => {
            let updated = with_conn!(tx, |conn| {
                sqlx::query(
                    "UPDATE grants SET ends_at = $1, version = version + 1, updated_at = $2 \
                     WHERE id = $3 AND version = $4",
                )
                .bind(ends_at)
                .bind(now)
                .bind(&g.id)
                .bind(g.version)
                .execute(&mut *conn)
                .await?
                .rows_affected()
            });
            if updated == 0 {
                return Err(changed_meanwhile());
            }
            audit::record(
                tx,
                ctx.event("membership.external_change", "membership", Some(&g.id))
                    .with_details(json!({
                        "before": {"ends_at": g.ends_at},
                        "after": {"ends_at": ends_at},
                        "reason": "end date changed in the member upload",
                    })),
            )
            .await?;
        }
    }
    Ok(())
}

/// An account now matched to an identity: its live grants (recorded while it was unmatched)
/// belong to that identity too, so reviews and lists by identity see them.
pub(crate) async fn link_account_grants(
    tx: &mut Tx,
    ctx: &ChangeContext,
    account_id: &str,
    identity_id: &str,
) -> StoreResult<()> {
    let now = tx.now();
    let linked: Vec<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "UPDATE grants SET identity_id = $1, version = version + 1, updated_at = $2 \
             WHERE account_id = $3 AND identity_id IS NULL \
             AND status IN ('scheduled', 'active') RETURNING id",
        )
        .bind(identity_id)
        .bind(now)
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?
    });
    for id in linked {
        audit::record(
            tx,
            ctx.event("membership.update", "membership", Some(&id))
                .with_details(json!({
                    "before": {"identity_id": null},
                    "after": {"identity_id": identity_id},
                    "reason": "its account was matched to the identity",
                })),
        )
        .await?;
    }
    Ok(())
}
