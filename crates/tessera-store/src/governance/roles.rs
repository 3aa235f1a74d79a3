//! Roles: the grantable levels of access on a resource, and their prerequisites.

use serde_json::json;
use tessera_domain::directory::{InvalidInput, fold};
use tessera_domain::governance::rules::{ItemFacts, RuleTarget, apply_actions};
use tessera_domain::governance::settings::{self, EffectiveSettings};
use tessera_domain::governance::{
    Application, DurationPolicy, MAX_PREREQUISITES, Resource, Role, SettingOverrides,
    validate_description, validate_external_id, validate_name, validate_role_overrides,
};
use tessera_domain::ids::new_id;

use super::applications::{self, GrantScope, has_live_grants, live_grants};
use super::resources;
use super::{check_version, from_json, to_json};
use crate::directory::MAX_PAGE;
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(sqlx::FromRow)]
struct RoleRow {
    id: String,
    resource_id: String,
    application_id: String,
    name: String,
    description: Option<String>,
    external_id: Option<String>,
    sensitive: bool,
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, resource_id, application_id, name, description, external_id, \
     sensitive, requestable, workflow_id, durations, version, created_at, updated_at";

impl RoleRow {
    fn into_role(self, prerequisite_role_ids: Vec<String>) -> StoreResult<Role> {
        Ok(Role {
            overrides: SettingOverrides {
                requestable: self.requestable,
                workflow_id: self.workflow_id,
                durations: self
                    .durations
                    .as_deref()
                    .map(|d| from_json::<DurationPolicy>("roles.durations", d))
                    .transpose()?,
                owner: None,
                maintainers: None,
            },
            prerequisite_role_ids,
            id: self.id,
            resource_id: self.resource_id,
            application_id: self.application_id,
            name: self.name,
            description: self.description,
            external_id: self.external_id,
            sensitive: self.sensitive,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewRole {
    pub resource_id: String,
    pub name: String,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub sensitive: bool,
    pub overrides: SettingOverrides,
    pub prerequisite_role_ids: Vec<String>,
}

fn validate(role: &mut Role) -> StoreResult<()> {
    role.name = role.name.trim().to_owned();
    validate_name(&role.name)?;
    validate_description(role.description.as_deref())?;
    validate_external_id(role.external_id.as_deref())?;
    validate_role_overrides(&role.overrides)?;
    if let Some(bad) = role
        .prerequisite_role_ids
        .iter()
        .find(|id| !tessera_domain::ids::is_valid_id(id))
    {
        return Err(InvalidInput::new(
            "prerequisite_role_ids",
            format!("{bad:?} is not a role id"),
        )
        .into());
    }
    if role.prerequisite_role_ids.len() > MAX_PREREQUISITES {
        return Err(InvalidInput::new(
            "prerequisite_role_ids",
            format!("at most {MAX_PREREQUISITES} prerequisites are allowed"),
        )
        .into());
    }
    role.prerequisite_role_ids.sort();
    role.prerequisite_role_ids.dedup();
    if role.prerequisite_role_ids.contains(&role.id) {
        return Err(
            InvalidInput::new("prerequisite_role_ids", "a role cannot require itself").into(),
        );
    }
    Ok(())
}

/// Fails unless every prerequisite exists and none of them (through its own prerequisites)
/// requires `role_id`, which would make the role impossible to grant.
async fn check_prerequisites(
    tx: &mut Tx,
    role_id: &str,
    prerequisites: &[String],
) -> StoreResult<()> {
    for p in prerequisites {
        let found: i64 = with_conn!(tx, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM roles WHERE id = $1")
                .bind(p)
                .fetch_one(&mut *conn)
                .await?
        });
        if found == 0 {
            return Err(InvalidInput::new(
                "prerequisite_role_ids",
                format!("there is no role {p}"),
            )
            .into());
        }
        let cycle: i64 = with_conn!(tx, |conn| {
            sqlx::query_scalar(
                "WITH RECURSIVE needs (id, depth) AS ( \
                 SELECT prerequisite_role_id, 1 FROM role_prerequisites WHERE role_id = $1 \
                 UNION SELECT p.prerequisite_role_id, n.depth + 1 FROM role_prerequisites p \
                 JOIN needs n ON p.role_id = n.id WHERE n.depth < 64) \
                 SELECT COUNT(*) FROM needs WHERE id = $2",
            )
            .bind(p)
            .bind(role_id)
            .fetch_one(&mut *conn)
            .await?
        });
        if cycle > 0 {
            return Err(InvalidInput::new(
                "prerequisite_role_ids",
                format!("role {p} already requires this role, directly or through others"),
            )
            .into());
        }
    }
    Ok(())
}

async fn write_prerequisites(tx: &mut Tx, role: &Role) -> StoreResult<()> {
    with_conn!(tx, |conn| {
        sqlx::query("DELETE FROM role_prerequisites WHERE role_id = $1")
            .bind(&role.id)
            .execute(&mut *conn)
            .await?;
        for p in &role.prerequisite_role_ids {
            sqlx::query(
                "INSERT INTO role_prerequisites (role_id, prerequisite_role_id) VALUES ($1, $2)",
            )
            .bind(&role.id)
            .bind(p)
            .execute(&mut *conn)
            .await?;
        }
    });
    Ok(())
}

fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!("the resource already has a role named {name:?}"))
}

pub async fn create(tx: &mut Tx, ctx: &ChangeContext, new: NewRole) -> StoreResult<Role> {
    let resource = resources::chain_in(tx, &new.resource_id)
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found("resource", &new.resource_id))?;
    // Rules give defaults for what the creator left unset.
    let (defaults, rule_ids) = super::rules::defaults_for_new(
        tx,
        RuleTarget::Roles,
        &ItemFacts {
            application_id: &resource.application_id,
            resource_type: &resource.resource_type,
            name: new.name.trim(),
            tags: &resource.tags,
        },
    )
    .await?;
    let mut overrides = new.overrides;
    apply_actions(&mut overrides, &defaults, true);
    let mut role = Role {
        id: new_id(),
        resource_id: resource.id,
        application_id: resource.application_id,
        name: new.name,
        description: new.description,
        external_id: new.external_id,
        sensitive: new.sensitive,
        overrides,
        prerequisite_role_ids: new.prerequisite_role_ids,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    validate(&mut role)?;
    check_prerequisites(tx, &role.id, &role.prerequisite_role_ids).await?;
    let r = &role;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO roles (id, resource_id, application_id, name, name_lower, description, \
             external_id, sensitive, requestable, workflow_id, durations, version, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&r.id)
        .bind(&r.resource_id)
        .bind(&r.application_id)
        .bind(&r.name)
        .bind(fold(&r.name))
        .bind(&r.description)
        .bind(&r.external_id)
        .bind(r.sensitive)
        .bind(r.overrides.requestable)
        .bind(&r.overrides.workflow_id)
        .bind(r.overrides.durations.as_ref().map(to_json))
        .bind(r.version)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&role.name));
        }
        other => other?,
    };
    write_prerequisites(tx, &role).await?;
    audit::record(
        tx,
        ctx.event("role.create", "role", Some(&role.id))
            .with_details(json!({ "after": role, "rules": rule_ids })),
    )
    .await?;
    Ok(role)
}

async fn prerequisites_of(db: &Db, role_ids: &[String]) -> StoreResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    // Pages list at most MAX_PAGE roles; look their prerequisites up in slices of 100.
    for slice in role_ids.chunks(100) {
        let placeholders: Vec<String> = (1..=slice.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT role_id, prerequisite_role_id FROM role_prerequisites WHERE role_id IN ({}) \
             ORDER BY role_id, prerequisite_role_id",
            placeholders.join(", ")
        );
        let rows: Vec<(String, String)> = with_pool!(db, |pool| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for id in slice {
                q = q.bind(id);
            }
            q.fetch_all(pool).await?
        });
        out.extend(rows);
    }
    Ok(out)
}

async fn with_prerequisites(db: &Db, rows: Vec<RoleRow>) -> StoreResult<Vec<Role>> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let pairs = prerequisites_of(db, &ids).await?;
    rows.into_iter()
        .map(|r| {
            let prereqs = pairs
                .iter()
                .filter(|(role, _)| *role == r.id)
                .map(|(_, p)| p.clone())
                .collect();
            r.into_role(prereqs)
        })
        .collect()
}

pub async fn get(db: &Db, id: &str) -> StoreResult<Role> {
    let sql = format!("SELECT {COLUMNS} FROM roles WHERE id = $1");
    let row: Option<RoleRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    let row = row.ok_or_else(|| StoreError::not_found("role", id))?;
    with_prerequisites(db, vec![row])
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found("role", id))
}

pub(crate) async fn get_in(tx: &mut Tx, id: &str) -> StoreResult<Role> {
    let sql = format!("SELECT {COLUMNS} FROM roles WHERE id = $1");
    let row: Option<RoleRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    let row = row.ok_or_else(|| StoreError::not_found("role", id))?;
    let prereqs: Vec<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT prerequisite_role_id FROM role_prerequisites WHERE role_id = $1 \
             ORDER BY prerequisite_role_id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
    });
    row.into_role(prereqs)
}

/// What a role is granted within: its application and resource chain (outermost first).
#[derive(Debug, Clone)]
pub struct RoleContext {
    pub role: Role,
    pub application: Application,
    pub chain: Vec<Resource>,
}

impl RoleContext {
    pub fn effective_settings(&self) -> EffectiveSettings {
        settings::resolve(&self.application, &self.chain, Some(&self.role))
    }
}

pub async fn context(db: &Db, id: &str) -> StoreResult<RoleContext> {
    let role = get(db, id).await?;
    let application = applications::get(db, &role.application_id).await?;
    let chain = resources::chain(db, &role.resource_id).await?;
    Ok(RoleContext {
        role,
        application,
        chain,
    })
}

pub(crate) async fn context_in(tx: &mut Tx, id: &str) -> StoreResult<RoleContext> {
    let role = get_in(tx, id).await?;
    let application = applications::get_in(tx, &role.application_id).await?;
    let chain = resources::chain_in(tx, &role.resource_id).await?;
    Ok(RoleContext {
        role,
        application,
        chain,
    })
}

/// A role's effective settings, read inside a write transaction.
pub async fn effective_settings_in(tx: &mut Tx, id: &str) -> StoreResult<EffectiveSettings> {
    Ok(context_in(tx, id).await?.effective_settings())
}

#[derive(Debug, Clone, Default)]
pub struct RoleFilter {
    pub application_id: Option<String>,
    pub resource_id: Option<String>,
}

/// A page of roles in creation order, after the id `after`.
pub async fn list(
    db: &Db,
    filter: &RoleFilter,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Role>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM roles WHERE ($1 IS NULL OR application_id = $1) \
         AND ($2 IS NULL OR resource_id = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
    );
    let rows: Vec<RoleRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.application_id.as_deref())
            .bind(filter.resource_id.as_deref())
            .bind(after)
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    with_prerequisites(db, rows).await
}

/// Loads the role, lets `change` edit it, and writes it back with a new version. A role stays
/// on its resource.
pub async fn update(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
    change: impl FnOnce(&mut Role) -> StoreResult<()>,
) -> StoreResult<Role> {
    let before = get_in(tx, id).await?;
    check_version(expected_version, before.version)?;
    let mut role = before.clone();
    change(&mut role)?;
    if role.resource_id != before.resource_id {
        return Err(
            InvalidInput::new("resource_id", "a role cannot move to another resource").into(),
        );
    }
    validate(&mut role)?;
    if role == before {
        return Ok(before);
    }
    if role.prerequisite_role_ids != before.prerequisite_role_ids {
        check_prerequisites(tx, &role.id, &role.prerequisite_role_ids).await?;
    }
    role.version = before.version + 1;
    role.updated_at = tx.now();
    let r = &role;
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE roles SET name = $1, name_lower = $2, description = $3, external_id = $4, \
             sensitive = $5, requestable = $6, workflow_id = $7, durations = $8, version = $9, \
             updated_at = $10 WHERE id = $11 AND version = $12",
        )
        .bind(&r.name)
        .bind(fold(&r.name))
        .bind(&r.description)
        .bind(&r.external_id)
        .bind(r.sensitive)
        .bind(r.overrides.requestable)
        .bind(&r.overrides.workflow_id)
        .bind(r.overrides.durations.as_ref().map(to_json))
        .bind(r.version)
        .bind(r.updated_at)
        .bind(&r.id)
        .bind(before.version)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match updated {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&role.name));
        }
        Ok(0) => return Err(super::lost_race(expected_version, before.version)),
        other => other?,
    };
    if role.prerequisite_role_ids != before.prerequisite_role_ids {
        write_prerequisites(tx, &role).await?;
    }
    audit::record(
        tx,
        ctx.event("role.update", "role", Some(&role.id))
            .with_details(json!({ "before": before, "after": role })),
    )
    .await?;
    Ok(role)
}

/// A set of roles about to be deleted together.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RoleSet<'a> {
    Application(&'a str),
    ResourceTree(&'a str),
    Role(&'a str),
}

/// Refuses to delete roles that roles outside the deleted set still require: deleting them
/// would silently drop a prerequisite.
pub(crate) async fn check_not_required_outside(tx: &mut Tx, set: RoleSet<'_>) -> StoreResult<()> {
    const TREE: &str = "WITH RECURSIVE tree (id) AS (SELECT id FROM resources WHERE id = $1 \
         UNION ALL SELECT r.id FROM resources r JOIN tree t ON r.parent_id = t.id) ";
    let (sql, id) = match set {
        RoleSet::Application(id) => (
            "SELECT p.role_id FROM role_prerequisites p \
             JOIN roles req ON req.id = p.prerequisite_role_id JOIN roles r ON r.id = p.role_id \
             WHERE req.application_id = $1 AND r.application_id <> $1 LIMIT 1"
                .to_owned(),
            id,
        ),
        RoleSet::ResourceTree(id) => (
            format!(
                "{TREE}SELECT p.role_id FROM role_prerequisites p \
                 JOIN roles req ON req.id = p.prerequisite_role_id JOIN roles r ON r.id = p.role_id \
                 WHERE req.resource_id IN (SELECT id FROM tree) \
                 AND r.resource_id NOT IN (SELECT id FROM tree) LIMIT 1"
            ),
            id,
        ),
        RoleSet::Role(id) => (
            "SELECT role_id FROM role_prerequisites WHERE prerequisite_role_id = $1 LIMIT 1"
                .to_owned(),
            id,
        ),
    };
    let dependent: Option<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    match dependent {
        Some(role) => Err(StoreError::Conflict(format!(
            "role {role} requires a role being deleted; remove that prerequisite first"
        ))),
        None => Ok(()),
    }
}

/// Deletes a role and its ended grants. Refused while any of its grants is live or another
/// role requires it.
pub async fn delete(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
) -> StoreResult<()> {
    let before = get_in(tx, id).await?;
    check_version(expected_version, before.version)?;
    let live = live_grants(tx, GrantScope::Role(id)).await?;
    if live > 0 {
        return Err(has_live_grants("the role", live));
    }
    check_not_required_outside(tx, RoleSet::Role(id)).await?;
    applications::delete_with_ended_grants(
        tx,
        GrantScope::Role(id),
        "the role",
        "DELETE FROM roles WHERE id = $1",
    )
    .await?;
    audit::record(
        tx,
        ctx.event("role.delete", "role", Some(id))
            .with_details(json!({ "before": before })),
    )
    .await?;
    Ok(())
}
