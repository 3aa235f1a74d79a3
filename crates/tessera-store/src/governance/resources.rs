//! Resources: the things inside an application that roles give access to.

use serde_json::json;
use tessera_domain::directory::{InvalidInput, fold};
use tessera_domain::governance::rules::{ItemFacts, RuleTarget, apply_actions};
use tessera_domain::governance::settings::{self, EffectiveSettings};
use tessera_domain::governance::{
    DurationPolicy, MAX_RESOURCE_DEPTH, Resource, SettingOverrides, normalize_tags,
    validate_description, validate_external_id, validate_name, validate_resource_overrides,
    validate_resource_type,
};
use tessera_domain::ids::new_id;

use super::applications::{self, GrantScope, has_live_grants, live_grants};
use super::roles::{RoleSet, check_not_required_outside};
use super::{check_principals, check_version, from_json, principal_from, to_json};
use crate::directory::MAX_PAGE;
use crate::sql::{Arg, Sql, bind_args};
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(sqlx::FromRow)]
struct ResourceRow {
    id: String,
    application_id: String,
    parent_id: Option<String>,
    name: String,
    resource_type: String,
    description: Option<String>,
    external_id: Option<String>,
    tags: String,
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<String>,
    owner_kind: Option<String>,
    owner_id: Option<String>,
    maintainers: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, application_id, parent_id, name, resource_type, description, \
     external_id, tags, requestable, workflow_id, durations, owner_kind, owner_id, maintainers, \
     version, created_at, updated_at";

impl TryFrom<ResourceRow> for Resource {
    type Error = StoreError;
    fn try_from(r: ResourceRow) -> StoreResult<Self> {
        Ok(Resource {
            tags: from_json("resources.tags", &r.tags)?,
            overrides: overrides_from_columns(
                r.requestable,
                r.workflow_id,
                r.durations.as_deref(),
                r.owner_kind,
                r.owner_id,
                r.maintainers.as_deref(),
            )?,
            id: r.id,
            application_id: r.application_id,
            parent_id: r.parent_id,
            name: r.name,
            resource_type: r.resource_type,
            description: r.description,
            external_id: r.external_id,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A resource's own settings from its columns (JSON for durations and maintainers).
pub(crate) fn overrides_from_columns(
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<&str>,
    owner_kind: Option<String>,
    owner_id: Option<String>,
    maintainers: Option<&str>,
) -> StoreResult<SettingOverrides> {
    Ok(SettingOverrides {
        requestable,
        workflow_id,
        durations: durations
            .map(|d| from_json::<DurationPolicy>("resources.durations", d))
            .transpose()?,
        owner: principal_from("resources.owner", owner_kind, owner_id)?,
        maintainers: maintainers
            .map(|m| from_json("resources.maintainers", m))
            .transpose()?,
    })
}

#[derive(Debug, Clone)]
pub struct NewResource {
    pub application_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub resource_type: String,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub tags: Vec<String>,
    pub overrides: SettingOverrides,
}

fn validate(r: &mut Resource) -> StoreResult<()> {
    r.name = r.name.trim().to_owned();
    validate_name(&r.name)?;
    validate_resource_type(&r.resource_type)?;
    validate_description(r.description.as_deref())?;
    validate_external_id(r.external_id.as_deref())?;
    r.tags = normalize_tags(&r.tags)?;
    validate_resource_overrides(&r.overrides)?;
    Ok(())
}

async fn check_references(tx: &mut Tx, r: &Resource) -> StoreResult<()> {
    check_principals(tx, "owner", r.overrides.owner.iter()).await?;
    check_principals(tx, "maintainers", r.overrides.maintainers.iter().flatten()).await
}

fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "a resource named {name:?} already exists at this place in the application"
    ))
}

async fn write_tags(tx: &mut Tx, r: &Resource) -> StoreResult<()> {
    with_conn!(tx, |conn| {
        sqlx::query("DELETE FROM resource_tags WHERE resource_id = $1")
            .bind(&r.id)
            .execute(&mut *conn)
            .await?;
        for tag in &r.tags {
            sqlx::query("INSERT INTO resource_tags (resource_id, tag_lower) VALUES ($1, $2)")
                .bind(&r.id)
                .bind(fold(tag))
                .execute(&mut *conn)
                .await?;
        }
    });
    Ok(())
}

pub async fn create(tx: &mut Tx, ctx: &ChangeContext, new: NewResource) -> StoreResult<Resource> {
    applications::get_in(tx, &new.application_id).await?;
    let mut resource = Resource {
        id: new_id(),
        application_id: new.application_id,
        parent_id: new.parent_id,
        name: new.name,
        resource_type: new.resource_type,
        description: new.description,
        external_id: new.external_id,
        tags: new.tags,
        overrides: new.overrides,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    validate(&mut resource)?;
    // Rules give defaults for what the creator left unset.
    let (defaults, rule_ids) = super::rules::defaults_for_new(
        tx,
        RuleTarget::Resources,
        &ItemFacts {
            application_id: &resource.application_id,
            resource_type: &resource.resource_type,
            name: &resource.name,
            tags: &resource.tags,
        },
    )
    .await?;
    apply_actions(&mut resource.overrides, &defaults, true);
    if let Some(parent_id) = &resource.parent_id {
        if !tessera_domain::ids::is_valid_id(parent_id) {
            return Err(InvalidInput::new("parent_id", "must be a resource id").into());
        }
        let chain = chain_in(tx, parent_id).await.map_err(|e| match e {
            StoreError::NotFound { .. } => {
                InvalidInput::new("parent_id", format!("there is no resource {parent_id}")).into()
            }
            other => other,
        })?;
        if chain[0].application_id != resource.application_id {
            return Err(
                InvalidInput::new("parent_id", "the parent is in another application").into(),
            );
        }
        if chain.len() >= MAX_RESOURCE_DEPTH {
            return Err(InvalidInput::new(
                "parent_id",
                format!("resources nest at most {MAX_RESOURCE_DEPTH} deep"),
            )
            .into());
        }
    }
    check_references(tx, &resource).await?;
    let r = &resource;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO resources (id, application_id, parent_id, name, name_lower, resource_type, \
             description, external_id, tags, requestable, workflow_id, durations, owner_kind, \
             owner_id, maintainers, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(&r.id)
        .bind(&r.application_id)
        .bind(&r.parent_id)
        .bind(&r.name)
        .bind(fold(&r.name))
        .bind(&r.resource_type)
        .bind(&r.description)
        .bind(&r.external_id)
        .bind(to_json(&r.tags))
        .bind(r.overrides.requestable)
        .bind(&r.overrides.workflow_id)
        .bind(r.overrides.durations.as_ref().map(to_json))
        .bind(r.overrides.owner.as_ref().map(|p| p.kind.as_str()))
        .bind(r.overrides.owner.as_ref().map(|p| p.id.as_str()))
        .bind(r.overrides.maintainers.as_ref().map(to_json))
        .bind(r.version)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&resource.name));
        }
        other => other?,
    };
    write_tags(tx, &resource).await?;
    audit::record(
        tx,
        ctx.event("resource.create", "resource", Some(&resource.id))
            .with_details(json!({ "after": resource, "rules": rule_ids })),
    )
    .await?;
    Ok(resource)
}

pub async fn get(db: &Db, id: &str) -> StoreResult<Resource> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE id = $1");
    let row: Option<ResourceRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("resource", id))?
        .try_into()
}

const CHAIN_SQL: &str = "WITH RECURSIVE chain (id, depth) AS ( \
     SELECT id, 0 FROM resources WHERE id = $1 \
     UNION ALL SELECT r.parent_id, c.depth + 1 FROM resources r JOIN chain c ON r.id = c.id \
     WHERE r.parent_id IS NOT NULL AND c.depth < 32) ";

/// Orders the rows of a resource and its ancestors outermost first.
fn order_chain(id: &str, rows: Vec<ResourceRow>) -> StoreResult<Vec<Resource>> {
    let mut by_id: std::collections::HashMap<String, Resource> = rows
        .into_iter()
        .map(|r| Resource::try_from(r).map(|r| (r.id.clone(), r)))
        .collect::<StoreResult<_>>()?;
    let mut chain = Vec::with_capacity(by_id.len());
    let mut next = Some(id.to_owned());
    while let Some(current) = next {
        let r = by_id
            .remove(&current)
            .ok_or_else(|| StoreError::not_found("resource", current.clone()))?;
        next = r.parent_id.clone();
        chain.push(r);
    }
    chain.reverse();
    Ok(chain)
}

/// The resource and its ancestors, outermost first.
pub async fn chain(db: &Db, id: &str) -> StoreResult<Vec<Resource>> {
    let sql =
        format!("{CHAIN_SQL}SELECT {COLUMNS} FROM resources WHERE id IN (SELECT id FROM chain)");
    let rows: Vec<ResourceRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(pool)
            .await?
    });
    order_chain(id, rows)
}

pub(crate) async fn chain_in(tx: &mut Tx, id: &str) -> StoreResult<Vec<Resource>> {
    let sql =
        format!("{CHAIN_SQL}SELECT {COLUMNS} FROM resources WHERE id IN (SELECT id FROM chain)");
    let rows: Vec<ResourceRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
    });
    order_chain(id, rows)
}

/// A resource's effective settings, each with the level it came from.
pub async fn effective_settings(db: &Db, resource: &Resource) -> StoreResult<EffectiveSettings> {
    let app = applications::get(db, &resource.application_id).await?;
    let chain = chain(db, &resource.id).await?;
    Ok(settings::resolve(&app, &chain, None))
}

/// The same, read inside a write transaction (so a response shows what that transaction wrote).
pub async fn effective_settings_in(
    tx: &mut Tx,
    resource: &Resource,
) -> StoreResult<EffectiveSettings> {
    let app = applications::get_in(tx, &resource.application_id).await?;
    let chain = chain_in(tx, &resource.id).await?;
    Ok(settings::resolve(&app, &chain, None))
}

#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub application_id: Option<String>,
    /// `Some(None)`: top-level resources only.
    pub parent_id: Option<Option<String>>,
    pub resource_type: Option<String>,
    /// Resources carrying this tag (ignoring case).
    pub tag: Option<String>,
    pub name_prefix: Option<String>,
}

/// A page of resources in creation order, after the id `after`.
pub async fn list(
    db: &Db,
    filter: &ResourceFilter,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Resource>> {
    let mut sql = Sql::new(db.backend());
    sql.push(&format!("SELECT {COLUMNS} FROM resources WHERE 1 = 1"));
    if let Some(app) = &filter.application_id {
        sql.push(" AND application_id = ")
            .arg(Arg::Text(app.clone()));
    }
    match &filter.parent_id {
        Some(Some(parent)) => {
            sql.push(" AND parent_id = ").arg(Arg::Text(parent.clone()));
        }
        Some(None) => {
            sql.push(" AND parent_id IS NULL");
        }
        None => {}
    }
    if let Some(t) = &filter.resource_type {
        sql.push(" AND resource_type = ").arg(Arg::Text(t.clone()));
    }
    if let Some(tag) = &filter.tag {
        sql.push(" AND id IN (SELECT resource_id FROM resource_tags WHERE tag_lower = ")
            .arg(Arg::Text(fold(tag.trim())))
            .push(")");
    }
    if let Some(prefix) = &filter.name_prefix {
        sql.push(" AND name_lower LIKE ")
            .arg(Arg::Text(super::prefix_pattern(prefix)))
            .push(" ESCAPE '\\'");
    }
    if let Some(after) = after {
        sql.push(" AND id > ").arg(Arg::Text(after.to_owned()));
    }
    sql.push(" ORDER BY id LIMIT ")
        .arg(Arg::Int(limit.clamp(1, MAX_PAGE)));
    let Sql { text, args, .. } = sql;
    let rows: Vec<ResourceRow> = with_pool!(db, |pool| {
        bind_args!(sqlx::query_as(sqlx::AssertSqlSafe(text.clone())), &args)
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(Resource::try_from).collect()
}

/// Loads the resource, lets `change` edit it, and writes it back with a new version. The
/// application and parent of a resource cannot change.
pub async fn update(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
    change: impl FnOnce(&mut Resource) -> StoreResult<()>,
) -> StoreResult<Resource> {
    let before = chain_in(tx, id)
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found("resource", id))?;
    check_version(expected_version, before.version)?;
    let mut r = before.clone();
    change(&mut r)?;
    if r.application_id != before.application_id || r.parent_id != before.parent_id {
        return Err(InvalidInput::new(
            "parent_id",
            "a resource cannot move to another application or parent",
        )
        .into());
    }
    validate(&mut r)?;
    if r == before {
        return Ok(before);
    }
    check_references(tx, &r).await?;
    r.version = before.version + 1;
    r.updated_at = tx.now();
    let row = &r;
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE resources SET name = $1, name_lower = $2, resource_type = $3, description = $4, \
             external_id = $5, tags = $6, requestable = $7, workflow_id = $8, durations = $9, \
             owner_kind = $10, owner_id = $11, maintainers = $12, version = $13, updated_at = $14 \
             WHERE id = $15 AND version = $16",
        )
        .bind(&row.name)
        .bind(fold(&row.name))
        .bind(&row.resource_type)
        .bind(&row.description)
        .bind(&row.external_id)
        .bind(to_json(&row.tags))
        .bind(row.overrides.requestable)
        .bind(&row.overrides.workflow_id)
        .bind(row.overrides.durations.as_ref().map(to_json))
        .bind(row.overrides.owner.as_ref().map(|p| p.kind.as_str()))
        .bind(row.overrides.owner.as_ref().map(|p| p.id.as_str()))
        .bind(row.overrides.maintainers.as_ref().map(to_json))
        .bind(row.version)
        .bind(row.updated_at)
        .bind(&row.id)
        .bind(before.version)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match updated {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&r.name));
        }
        Ok(0) => return Err(super::lost_race(expected_version, before.version)),
        other => other?,
    };
    if r.tags != before.tags {
        write_tags(tx, &r).await?;
    }
    audit::record(
        tx,
        ctx.event("resource.update", "resource", Some(&r.id))
            .with_details(json!({ "before": before, "after": r })),
    )
    .await?;
    Ok(r)
}

/// Deletes a resource with its nested resources and their roles. Refused while any grant
/// under it is live, or while a role outside it requires one of its roles.
pub async fn delete(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
) -> StoreResult<()> {
    let before = chain_in(tx, id)
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found("resource", id))?;
    check_version(expected_version, before.version)?;
    let live = live_grants(tx, GrantScope::ResourceTree(id)).await?;
    if live > 0 {
        return Err(has_live_grants("the resource", live));
    }
    check_not_required_outside(tx, RoleSet::ResourceTree(id)).await?;
    applications::delete_with_ended_grants(
        tx,
        GrantScope::ResourceTree(id),
        "the resource",
        "DELETE FROM resources WHERE id = $1",
    )
    .await?;
    audit::record(
        tx,
        ctx.event("resource.delete", "resource", Some(id))
            .with_details(json!({ "before": before })),
    )
    .await?;
    Ok(())
}
