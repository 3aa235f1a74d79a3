//! CSV data sources in the store: the identities a user list is compared with, and applying
//! its plan (see `tessera_domain::directory::user_upload`).
//!
//! The source's identities are loaded in one query; changes are written in transactions of
//! at most [`APPLY_BATCH`] identities, each change with its audit entry. Managers are set once
//! everyone exists, so a list may name a manager on a later line.

use std::collections::HashMap;

use serde_json::json;
use tessera_domain::directory::user_upload::{
    HeldIdentity, MissingUsers, UserCounts, UserPlan, UserRow, fold_key,
};
use tessera_domain::directory::{
    DataSource, DataSourceKind, Identity, IdentityKind, IdentityStatus, MatchingKey,
};

use crate::directory::{self, IDENTITY_COLUMNS, IdentityRow};
use crate::{ChangeContext, Db, StoreError, StoreResult, audit, with_pool};

/// Identities written per transaction.
pub const APPLY_BATCH: usize = 1000;

/// The data source, if it takes user lists, and what it does with users a list lacks.
pub async fn csv_data_source(db: &Db, id: &str) -> StoreResult<(DataSource, MissingUsers)> {
    let source = directory::get_data_source(db, id).await?;
    if source.kind != DataSourceKind::Csv {
        return Err(StoreError::Conflict(format!(
            "data source {:?} is a {} source; user lists are uploaded to CSV data sources",
            source.name, source.kind
        )));
    }
    let missing = missing_users(&source);
    Ok((source, missing))
}

/// The data source's `missing_users` setting (default: suspend).
pub fn missing_users(source: &DataSource) -> MissingUsers {
    source
        .settings
        .get("missing_users")
        .and_then(|v| v.as_str())
        .and_then(MissingUsers::parse)
        .unwrap_or(MissingUsers::Suspend)
}

/// The source's identities that are not deleted, read in pages so that only one page of raw
/// rows is in memory beside the result.
pub async fn held_identities(db: &Db, data_source_id: &str) -> StoreResult<Vec<HeldIdentity>> {
    const PAGE: i64 = 5000;
    let sql = format!(
        "SELECT {IDENTITY_COLUMNS} FROM identities WHERE data_source_id = $1 \
         AND status <> 'deleted' AND id > $2 ORDER BY id LIMIT $3"
    );
    let mut held = Vec::new();
    let mut after = String::new();
    loop {
        let rows: Vec<IdentityRow> = with_pool!(db, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(data_source_id)
                .bind(&after)
                .bind(PAGE)
                .fetch_all(pool)
                .await?
        });
        let full = rows.len() as i64 == PAGE;
        for row in rows {
            let i = Identity::try_from(row)?;
            held.push(HeldIdentity {
                id: i.id,
                status: i.status,
                attributes: i.attributes,
                version: i.version,
            });
        }
        match held.last() {
            Some(last) if full => after = last.id.clone(),
            _ => break,
        }
    }
    Ok(held)
}

/// Applies a plan: what happens to the missing, updates, creates, then the managers.
pub async fn apply(
    db: &Db,
    ctx: &ChangeContext,
    source: &DataSource,
    identities: &[HeldIdentity],
    rows: &[UserRow],
    plan: &UserPlan,
) -> StoreResult<UserCounts> {
    let key: MatchingKey = source.matching_key;
    let by_id: HashMap<&str, &HeldIdentity> =
        identities.iter().map(|i| (i.id.as_str(), i)).collect();
    // Matching key → identity id, for managers; new identities are added as they are created.
    let mut id_of_key: HashMap<String, String> = identities
        .iter()
        .filter_map(|i| {
            let value = match key {
                MatchingKey::UserName => Some(i.attributes.user_name.as_str()),
                MatchingKey::Email => i.attributes.email.as_deref(),
                MatchingKey::EmployeeNumber => i.attributes.employee_number.as_deref(),
            };
            value.map(|v| (fold_key(key, v), i.id.clone()))
        })
        .collect();
    let mut counts = UserCounts::default();
    let ctx = ctx.clone();
    let ctx = &ctx;

    // Identities the list lacks go first (a deleted one frees its user name), then updates
    // (a renamed identity frees its old name), then creates.
    let status = match plan.missing_action {
        Some(MissingUsers::Suspend) => Some(IdentityStatus::Suspended),
        Some(MissingUsers::Delete) => Some(IdentityStatus::Deleted),
        _ => None,
    };
    if let Some(status) = status {
        for batch in plan.missing.chunks(APPLY_BATCH) {
            let mut tx = db.begin().await?;
            for held in batch {
                directory::set_identity_status(&mut tx, ctx, &held.id, status).await?;
                match status {
                    IdentityStatus::Deleted => counts.deleted += 1,
                    _ => counts.suspended += 1,
                }
            }
            tx.commit().await?;
        }
    }
    for batch in plan.update.chunks(APPLY_BATCH) {
        let mut tx = db.begin().await?;
        for (held, i) in batch {
            let before = by_id
                .get(held.id.as_str())
                .ok_or_else(|| StoreError::not_found("identity", &held.id))?;
            let row = &rows[*i];
            let mut attrs = row.attributes.clone();
            attrs.manager_id = before.attributes.manager_id.clone();
            attrs.source_doc = before.attributes.source_doc.clone();
            if before.status != IdentityStatus::Active
                || attrs.user_name != before.attributes.user_name
                || without_manager(&attrs) != without_manager(&before.attributes)
            {
                directory::update_identity(&mut tx, ctx, &source.id, before, &attrs)
                    .await
                    .map_err(changed_meanwhile)?;
                counts.updated += 1;
            }
        }
        tx.commit().await?;
    }
    for batch in plan.create.chunks(APPLY_BATCH) {
        let mut tx = db.begin().await?;
        for &i in batch {
            let row = &rows[i];
            let created = directory::create_identity(
                &mut tx,
                ctx,
                &source.id,
                IdentityKind::Person,
                row.attributes.clone(),
            )
            .await?;
            id_of_key.insert(row.key.clone(), created.id);
            counts.created += 1;
        }
        tx.commit().await?;
    }
    // Managers, for every listed user whose manager differs from the one held.
    let mut manager_changes: Vec<(String, Option<String>)> = Vec::new();
    for row in rows {
        let Some(id) = id_of_key.get(&row.key) else {
            continue;
        };
        let wanted = row
            .manager_key
            .as_ref()
            .and_then(|m| id_of_key.get(m).cloned());
        let held = by_id
            .get(id.as_str())
            .and_then(|i| i.attributes.manager_id.clone());
        if wanted != held {
            manager_changes.push((id.clone(), wanted));
        }
    }
    for batch in manager_changes.chunks(APPLY_BATCH) {
        let mut tx = db.begin().await?;
        for (id, manager) in batch {
            directory::set_manager(&mut tx, ctx, id, manager.as_deref()).await?;
        }
        tx.commit().await?;
    }
    let mut tx = db.begin().await?;
    audit::record(
        &mut tx,
        ctx.event("data_source.user_upload", "data_source", Some(&source.id))
            .with_data_source(&source.id)
            .with_details(json!({ "rows": rows.len(), "counts": counts })),
    )
    .await?;
    tx.commit().await?;
    Ok(counts)
}

fn without_manager(
    a: &tessera_domain::directory::IdentityAttributes,
) -> tessera_domain::directory::IdentityAttributes {
    tessera_domain::directory::IdentityAttributes {
        manager_id: None,
        source_doc: None,
        ..a.clone()
    }
}

fn changed_meanwhile(e: StoreError) -> StoreError {
    match e {
        StoreError::VersionMismatch { .. } => StoreError::Conflict(
            "the data source's identities changed while the list was applied; upload it again"
                .into(),
        ),
        other => other,
    }
}
