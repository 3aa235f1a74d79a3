//! Group mappings: what a data source's group gives its members. Every change re-evaluates the
//! group's members in the same transaction (see [`super::group_access`]).

use serde_json::json;
use tessera_domain::directory::InvalidInput;
use tessera_domain::governance::group_mapping::{
    self, DEFAULT_PRIORITY, GroupMapping, PlatformRole,
};
use tessera_domain::ids::{is_valid_id, new_id};

use super::group_access;
use crate::directory::MAX_PAGE;
use crate::sql::{Arg, Sql, bind_args};
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(sqlx::FromRow)]
struct MappingRow {
    id: String,
    data_source_id: String,
    group_id: String,
    platform_role: Option<String>,
    priority: i64,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str =
    "id, data_source_id, group_id, platform_role, priority, version, created_at, updated_at";

fn from_row(r: MappingRow, role_ids: Vec<String>) -> StoreResult<GroupMapping> {
    Ok(GroupMapping {
        platform_role: match r.platform_role {
            Some(p) => Some(PlatformRole::parse(&p).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown platform role {p:?} in group_mappings"))
            })?),
            None => None,
        },
        id: r.id,
        data_source_id: r.data_source_id,
        group_id: r.group_id,
        priority: r.priority,
        role_ids,
        version: r.version,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// A mapping to create.
#[derive(Debug, Clone)]
pub struct NewGroupMapping {
    pub group_id: String,
    pub platform_role: Option<PlatformRole>,
    pub priority: Option<i64>,
    pub role_ids: Vec<String>,
}

/// Fails unless every role exists in an application Tessera manages.
async fn check_roles(tx: &mut Tx, role_ids: &[String]) -> StoreResult<()> {
    if role_ids.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(tx.backend());
    sql.push(
        "SELECT r.id, a.name, a.management_mode FROM roles r \
         JOIN applications a ON a.id = r.application_id WHERE r.id IN (",
    );
    sql.text_list(role_ids).push(")");
    let found: Vec<(String, String, String)> = with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(&mut *conn)
        .await?
    });
    for id in role_ids {
        match found.iter().find(|(r, _, _)| r == id) {
            None => {
                return Err(InvalidInput::new("role_ids", format!("there is no role {id}")).into());
            }
            Some((_, app, mode)) if mode != "managed" => {
                return Err(InvalidInput::new(
                    "role_ids",
                    format!(
                        "role {id} is in {app:?}, an observed application: Tessera grants nothing there"
                    ),
                )
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn role_ids_of(tx: &mut Tx, mapping_id: &str) -> StoreResult<Vec<String>> {
    Ok(with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT role_id FROM group_mapping_roles WHERE mapping_id = $1 ORDER BY role_id",
        )
        .bind(mapping_id)
        .fetch_all(&mut *conn)
        .await?
    }))
}

async fn write_roles(tx: &mut Tx, m: &GroupMapping) -> StoreResult<()> {
    with_conn!(tx, |conn| {
        sqlx::query("DELETE FROM group_mapping_roles WHERE mapping_id = $1")
            .bind(&m.id)
            .execute(&mut *conn)
            .await?;
    });
    if m.role_ids.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(tx.backend());
    sql.push("INSERT INTO group_mapping_roles (mapping_id, role_id) VALUES ");
    for (i, role) in m.role_ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(").arg(Arg::Text(m.id.clone())).push(", ");
        sql.arg(Arg::Text(role.clone())).push(")");
    }
    with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Re-evaluates everyone in the mapping's group (nested groups included).
async fn reevaluate_group(tx: &mut Tx, ctx: &ChangeContext, m: &GroupMapping) -> StoreResult<()> {
    let members = group_access::identities_within(tx, std::slice::from_ref(&m.group_id)).await?;
    group_access::reevaluate_always(tx, ctx, &m.data_source_id, &members).await
}

/// Maps a group; its members get what it gives before this returns.
pub async fn create(
    tx: &mut Tx,
    ctx: &ChangeContext,
    new: NewGroupMapping,
) -> StoreResult<GroupMapping> {
    if !is_valid_id(&new.group_id) {
        return Err(InvalidInput::new(
            "group_id",
            format!("{:?} is not a Tessera id", new.group_id),
        )
        .into());
    }
    // Locks are taken in one order everywhere: group, then data source, then identities (a
    // SCIM member change holds its group while it waits for the data source).
    let group_sql = match tx.backend() {
        crate::Backend::Postgres => "SELECT data_source_id FROM groups WHERE id = $1 FOR KEY SHARE",
        crate::Backend::Sqlite => "SELECT data_source_id FROM groups WHERE id = $1",
    };
    let data_source_id: Option<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar(group_sql)
            .bind(&new.group_id)
            .fetch_optional(&mut *conn)
            .await?
    });
    let data_source_id = data_source_id.ok_or_else(|| {
        StoreError::from(InvalidInput::new(
            "group_id",
            format!("there is no group {}", new.group_id),
        ))
    })?;
    let now = tx.now();
    let mut mapping = GroupMapping {
        id: new_id(),
        data_source_id,
        group_id: new.group_id,
        platform_role: new.platform_role,
        priority: new.priority.unwrap_or(DEFAULT_PRIORITY),
        role_ids: new.role_ids,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    group_mapping::validate(&mut mapping)?;
    check_roles(tx, &mapping.role_ids).await?;
    let m = &mapping;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO group_mappings (id, data_source_id, group_id, platform_role, priority, \
             version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&m.id)
        .bind(&m.data_source_id)
        .bind(&m.group_id)
        .bind(m.platform_role.map(PlatformRole::as_str))
        .bind(m.priority)
        .bind(m.version)
        .bind(m.created_at)
        .bind(m.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(StoreError::Conflict(
                "the group already has a mapping; change that one instead".into(),
            ));
        }
        other => other?,
    };
    write_roles(tx, &mapping).await?;
    audit::record(
        tx,
        ctx.event("group_mapping.create", "group_mapping", Some(&mapping.id))
            .with_data_source(&mapping.data_source_id)
            .with_details(json!({ "after": mapping })),
    )
    .await?;
    reevaluate_group(tx, ctx, &mapping).await?;
    Ok(mapping)
}

async fn get_in(tx: &mut Tx, id: &str) -> StoreResult<GroupMapping> {
    let sql = format!("SELECT {COLUMNS} FROM group_mappings WHERE id = $1");
    let row: Option<MappingRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    let row = row.ok_or_else(|| StoreError::not_found("group mapping", id))?;
    let roles = role_ids_of(tx, id).await?;
    from_row(row, roles)
}

pub async fn get(db: &Db, id: &str) -> StoreResult<GroupMapping> {
    let filter = MappingFilter {
        id: Some(id.to_owned()),
        ..MappingFilter::default()
    };
    list(db, &filter, None, 1)
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found("group mapping", id))
}

#[derive(Debug, Clone, Default)]
pub struct MappingFilter {
    pub id: Option<String>,
    pub data_source_id: Option<String>,
    pub group_id: Option<String>,
    /// Mappings that give this application role.
    pub role_id: Option<String>,
    pub platform_role: Option<PlatformRole>,
}

/// A page of mappings in creation order, after the id `after`.
pub async fn list(
    db: &Db,
    filter: &MappingFilter,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<GroupMapping>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM group_mappings WHERE ($1 IS NULL OR data_source_id = $1) \
         AND ($2 IS NULL OR group_id = $2) \
         AND ($3 IS NULL OR id IN (SELECT mapping_id FROM group_mapping_roles WHERE role_id = $3)) \
         AND ($4 IS NULL OR platform_role = $4) \
         AND ($5 IS NULL OR id > $5) AND ($6 IS NULL OR id = $6) ORDER BY id LIMIT $7"
    );
    let rows: Vec<MappingRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.data_source_id.as_deref())
            .bind(filter.group_id.as_deref())
            .bind(filter.role_id.as_deref())
            .bind(filter.platform_role.map(PlatformRole::as_str))
            .bind(after)
            .bind(filter.id.as_deref())
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // The page's roles in one query.
    let mut sql = Sql::new(db.backend());
    sql.push("SELECT mapping_id, role_id FROM group_mapping_roles WHERE mapping_id IN (");
    sql.text_list(rows.iter().map(|r| &r.id))
        .push(") ORDER BY mapping_id, role_id");
    let roles: Vec<(String, String)> = with_pool!(db, |pool| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(pool)
        .await?
    });
    rows.into_iter()
        .map(|r| {
            let mine = roles
                .iter()
                .filter(|(m, _)| *m == r.id)
                .map(|(_, role)| role.clone())
                .collect();
            from_row(r, mine)
        })
        .collect()
}

/// Loads the mapping, lets `change` edit it, writes it back and re-evaluates the group's
/// members. The group (and so the data source) cannot change.
pub async fn update(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
    change: impl FnOnce(&mut GroupMapping) -> StoreResult<()>,
) -> StoreResult<GroupMapping> {
    let before = get_in(tx, id).await?;
    super::check_version(expected_version, before.version)?;
    let mut mapping = before.clone();
    change(&mut mapping)?;
    if mapping.group_id != before.group_id {
        return Err(InvalidInput::new(
            "group_id",
            "a mapping stays with its group; delete it and map the other group",
        )
        .into());
    }
    group_mapping::validate(&mut mapping)?;
    if mapping == before {
        return Ok(before);
    }
    if mapping.role_ids != before.role_ids {
        check_roles(tx, &mapping.role_ids).await?;
    }
    mapping.version = before.version + 1;
    mapping.updated_at = tx.now();
    let m = &mapping;
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE group_mappings SET platform_role = $1, priority = $2, version = $3, \
             updated_at = $4 WHERE id = $5 AND version = $6",
        )
        .bind(m.platform_role.map(PlatformRole::as_str))
        .bind(m.priority)
        .bind(m.version)
        .bind(m.updated_at)
        .bind(&m.id)
        .bind(before.version)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    if updated == 0 {
        return Err(super::lost_race(expected_version, before.version));
    }
    if mapping.role_ids != before.role_ids {
        write_roles(tx, &mapping).await?;
    }
    audit::record(
        tx,
        ctx.event("group_mapping.update", "group_mapping", Some(id))
            .with_data_source(&mapping.data_source_id)
            .with_details(json!({ "before": before, "after": mapping })),
    )
    .await?;
    reevaluate_group(tx, ctx, &mapping).await?;
    Ok(mapping)
}

/// Deletes a mapping; what it gave is taken back (unless another mapping gives it too).
pub async fn delete(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
) -> StoreResult<()> {
    let before = get_in(tx, id).await?;
    super::check_version(expected_version, before.version)?;
    let members =
        group_access::identities_within(tx, std::slice::from_ref(&before.group_id)).await?;
    remove(tx, ctx, &before, "group_mapping.delete").await?;
    group_access::reevaluate_always(tx, ctx, &before.data_source_id, &members).await
}

async fn remove(
    tx: &mut Tx,
    ctx: &ChangeContext,
    before: &GroupMapping,
    action: &str,
) -> StoreResult<()> {
    with_conn!(tx, |conn| {
        sqlx::query("DELETE FROM group_mappings WHERE id = $1")
            .bind(&before.id)
            .execute(&mut *conn)
            .await?;
    });
    audit::record(
        tx,
        ctx.event(action, "group_mapping", Some(&before.id))
            .with_data_source(&before.data_source_id)
            .with_details(json!({ "before": before })),
    )
    .await?;
    Ok(())
}

/// Deletes the mapping of a group that is being deleted (its members are re-evaluated by the
/// caller once the group is gone).
pub(crate) async fn delete_for_group(
    tx: &mut Tx,
    ctx: &ChangeContext,
    group_id: &str,
) -> StoreResult<()> {
    let id: Option<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT id FROM group_mappings WHERE group_id = $1")
            .bind(group_id)
            .fetch_optional(&mut *conn)
            .await?
    });
    if let Some(id) = id {
        let before = get_in(tx, &id).await?;
        remove(tx, ctx, &before, "group_mapping.delete_with_group").await?;
    }
    Ok(())
}
