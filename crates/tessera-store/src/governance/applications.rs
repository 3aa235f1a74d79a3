//! Applications.

use serde_json::json;
use tessera_domain::directory::fold;
use tessera_domain::governance::member_upload::MemberFormat;
use tessera_domain::governance::{
    Application, ApplicationSettings, ConnectorKind, ManagementMode, Principal,
    validate_description, validate_icon, validate_maintainers, validate_name, validate_principal,
};
use tessera_domain::ids::new_id;

use super::{check_principals, check_version, from_json, prefix_pattern, principal_from, to_json};
use crate::directory::MAX_PAGE;
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

#[derive(sqlx::FromRow)]
struct ApplicationRow {
    id: String,
    name: String,
    description: Option<String>,
    icon: Option<String>,
    connector_kind: String,
    management_mode: String,
    owner_kind: Option<String>,
    owner_id: Option<String>,
    maintainers: String,
    default_workflow_id: Option<String>,
    settings: String,
    member_format: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, name, description, icon, connector_kind, management_mode, owner_kind, \
     owner_id, maintainers, default_workflow_id, settings, member_format, version, created_at, updated_at";

impl TryFrom<ApplicationRow> for Application {
    type Error = StoreError;
    fn try_from(r: ApplicationRow) -> StoreResult<Self> {
        Ok(Application {
            connector_kind: ConnectorKind::parse(&r.connector_kind).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown connector kind {:?}", r.connector_kind))
            })?,
            management_mode: ManagementMode::parse(&r.management_mode).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown management mode {:?}", r.management_mode))
            })?,
            owner: principal_from("applications.owner", r.owner_kind, r.owner_id)?,
            maintainers: from_json("applications.maintainers", &r.maintainers)?,
            settings: from_json("applications.settings", &r.settings)?,
            member_format: from_json("applications.member_format", &r.member_format)?,
            id: r.id,
            name: r.name,
            description: r.description,
            icon: r.icon,
            default_workflow_id: r.default_workflow_id,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// What a new application is made of.
#[derive(Debug, Clone)]
pub struct NewApplication {
    pub name: String,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub connector_kind: ConnectorKind,
    pub management_mode: ManagementMode,
    pub owner: Option<Principal>,
    pub maintainers: Vec<Principal>,
    pub default_workflow_id: Option<String>,
    pub settings: ApplicationSettings,
    pub member_format: MemberFormat,
}

fn validate(app: &Application) -> StoreResult<()> {
    validate_name(&app.name)?;
    validate_description(app.description.as_deref())?;
    validate_icon(app.icon.as_deref())?;
    validate_maintainers(&app.maintainers)?;
    if let Some(owner) = &app.owner {
        validate_principal("owner", owner)?;
    }
    app.settings.durations.validate()?;
    app.member_format.validate()?;
    Ok(())
}

async fn check_references(tx: &mut Tx, app: &Application) -> StoreResult<()> {
    check_principals(tx, "owner", app.owner.iter()).await?;
    check_principals(tx, "maintainers", app.maintainers.iter()).await
}

fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!("an application named {name:?} already exists"))
}

pub async fn create(
    tx: &mut Tx,
    ctx: &ChangeContext,
    new: NewApplication,
) -> StoreResult<Application> {
    let app = Application {
        id: new_id(),
        name: new.name.trim().to_owned(),
        description: new.description,
        icon: new.icon,
        connector_kind: new.connector_kind,
        management_mode: new.management_mode,
        owner: new.owner,
        maintainers: new.maintainers,
        default_workflow_id: new.default_workflow_id,
        settings: new.settings,
        member_format: new.member_format,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    validate(&app)?;
    check_references(tx, &app).await?;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO applications (id, name, name_lower, description, icon, connector_kind, \
             management_mode, owner_kind, owner_id, maintainers, default_workflow_id, settings, \
             member_format, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&app.id)
        .bind(&app.name)
        .bind(fold(&app.name))
        .bind(&app.description)
        .bind(&app.icon)
        .bind(app.connector_kind.as_str())
        .bind(app.management_mode.as_str())
        .bind(app.owner.as_ref().map(|p| p.kind.as_str()))
        .bind(app.owner.as_ref().map(|p| p.id.as_str()))
        .bind(to_json(&app.maintainers))
        .bind(&app.default_workflow_id)
        .bind(to_json(&app.settings))
        .bind(to_json(&app.member_format))
        .bind(app.version)
        .bind(app.created_at)
        .bind(app.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&app.name));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("application.create", "application", Some(&app.id))
            .with_details(json!({ "after": app })),
    )
    .await?;
    Ok(app)
}

pub async fn get(db: &Db, id: &str) -> StoreResult<Application> {
    let sql = format!("SELECT {COLUMNS} FROM applications WHERE id = $1");
    let row: Option<ApplicationRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("application", id))?
        .try_into()
}

/// Reads an application inside a write transaction.
pub(crate) async fn get_in(tx: &mut Tx, id: &str) -> StoreResult<Application> {
    let sql = format!("SELECT {COLUMNS} FROM applications WHERE id = $1");
    let row: Option<ApplicationRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("application", id))?
        .try_into()
}

/// Filters of the application list; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct ApplicationFilter {
    pub connector_kind: Option<ConnectorKind>,
    /// Names starting with this, ignoring case.
    pub name_prefix: Option<String>,
}

/// A page of applications in creation order, after the id `after`.
pub async fn list(
    db: &Db,
    filter: &ApplicationFilter,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Application>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM applications \
         WHERE ($1 IS NULL OR connector_kind = $1) AND ($2 IS NULL OR name_lower LIKE $2 ESCAPE '\\') \
         AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
    );
    let rows: Vec<ApplicationRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.connector_kind.map(|k| k.as_str()))
            .bind(filter.name_prefix.as_deref().map(prefix_pattern))
            .bind(after)
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(Application::try_from).collect()
}

/// Loads the application, lets `change` edit it, and writes it back with a new version.
/// `expected_version` is the caller's `If-Match`, when it sent one.
pub async fn update(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
    change: impl FnOnce(&mut Application) -> StoreResult<()>,
) -> StoreResult<Application> {
    let before = get_in(tx, id).await?;
    check_version(expected_version, before.version)?;
    let mut app = before.clone();
    change(&mut app)?;
    app.name = app.name.trim().to_owned();
    validate(&app)?;
    if app == before {
        return Ok(before);
    }
    if app.management_mode == ManagementMode::Observed
        && before.management_mode != ManagementMode::Observed
    {
        // Group mappings grant these roles; an observed application is granted nothing.
        let mapped: i64 = with_conn!(tx, |conn| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM group_mapping_roles m JOIN roles r ON r.id = m.role_id \
                 WHERE r.application_id = $1",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
        });
        if mapped > 0 {
            return Err(StoreError::Conflict(
                "group mappings give roles of this application; remove them from the mappings \
                 before it becomes observed"
                    .into(),
            ));
        }
    }
    check_references(tx, &app).await?;
    app.version = before.version + 1;
    app.updated_at = tx.now();
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE applications SET name = $1, name_lower = $2, description = $3, icon = $4, \
             connector_kind = $5, management_mode = $6, owner_kind = $7, owner_id = $8, \
             maintainers = $9, default_workflow_id = $10, settings = $11, member_format = $12, \
             version = $13, updated_at = $14 WHERE id = $15 AND version = $16",
        )
        .bind(&app.name)
        .bind(fold(&app.name))
        .bind(&app.description)
        .bind(&app.icon)
        .bind(app.connector_kind.as_str())
        .bind(app.management_mode.as_str())
        .bind(app.owner.as_ref().map(|p| p.kind.as_str()))
        .bind(app.owner.as_ref().map(|p| p.id.as_str()))
        .bind(to_json(&app.maintainers))
        .bind(&app.default_workflow_id)
        .bind(to_json(&app.settings))
        .bind(to_json(&app.member_format))
        .bind(app.version)
        .bind(app.updated_at)
        .bind(&app.id)
        .bind(before.version)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match updated {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&app.name));
        }
        Ok(0) => return Err(super::lost_race(expected_version, before.version)),
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("application.update", "application", Some(&app.id))
            .with_details(json!({ "before": before, "after": app })),
    )
    .await?;
    Ok(app)
}

/// Counts the live grants under an application, a resource subtree or a role.
pub(crate) async fn live_grants(tx: &mut Tx, scope: GrantScope<'_>) -> StoreResult<i64> {
    let (sql, id) = match scope {
        GrantScope::Application(id) => (
            "SELECT COUNT(*) FROM grants WHERE application_id = $1 \
             AND status IN ('scheduled', 'active')",
            id,
        ),
        GrantScope::Role(id) => (
            "SELECT COUNT(*) FROM grants WHERE role_id = $1 AND status IN ('scheduled', 'active')",
            id,
        ),
        GrantScope::ResourceTree(id) => (
            "WITH RECURSIVE tree (id) AS (SELECT id FROM resources WHERE id = $1 \
             UNION ALL SELECT r.id FROM resources r JOIN tree t ON r.parent_id = t.id) \
             SELECT COUNT(*) FROM grants g JOIN roles ro ON ro.id = g.role_id \
             WHERE ro.resource_id IN (SELECT id FROM tree) AND g.status IN ('scheduled', 'active')",
            id,
        ),
    };
    Ok(with_conn!(tx, |conn| {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
    }))
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum GrantScope<'a> {
    Application(&'a str),
    ResourceTree(&'a str),
    Role(&'a str),
}

/// Deletes the ended grants of an application, a resource subtree or a role, and then runs
/// `delete` (the statement removing the item itself). A live grant committed meanwhile makes
/// the delete fail on the foreign key: a conflict, never a silent loss.
pub(crate) async fn delete_with_ended_grants(
    tx: &mut Tx,
    scope: GrantScope<'_>,
    what: &str,
    delete: &str,
) -> StoreResult<()> {
    let (ended, id) = match scope {
        GrantScope::Application(id) => (
            "DELETE FROM grants WHERE application_id = $1 AND status NOT IN ('scheduled', 'active')",
            id,
        ),
        GrantScope::Role(id) => (
            "DELETE FROM grants WHERE role_id = $1 AND status NOT IN ('scheduled', 'active')",
            id,
        ),
        GrantScope::ResourceTree(id) => (
            "WITH RECURSIVE tree (id) AS (SELECT id FROM resources WHERE id = $1 \
             UNION ALL SELECT r.id FROM resources r JOIN tree t ON r.parent_id = t.id) \
             DELETE FROM grants WHERE status NOT IN ('scheduled', 'active') AND role_id IN \
             (SELECT ro.id FROM roles ro WHERE ro.resource_id IN (SELECT id FROM tree))",
            id,
        ),
    };
    // Roles a group mapping gives stay until the mapping drops them (no cascade there).
    let mapped = match scope {
        GrantScope::Application(_) => {
            "SELECT COUNT(*) FROM group_mapping_roles m JOIN roles r ON r.id = m.role_id \
             WHERE r.application_id = $1"
        }
        GrantScope::Role(_) => "SELECT COUNT(*) FROM group_mapping_roles WHERE role_id = $1",
        GrantScope::ResourceTree(_) => {
            "WITH RECURSIVE tree (id) AS (SELECT id FROM resources WHERE id = $1 \
             UNION ALL SELECT r.id FROM resources r JOIN tree t ON r.parent_id = t.id) \
             SELECT COUNT(*) FROM group_mapping_roles m JOIN roles ro ON ro.id = m.role_id \
             WHERE ro.resource_id IN (SELECT id FROM tree)"
        }
    };
    let mapped: i64 = with_conn!(tx, |conn| {
        sqlx::query_scalar(mapped)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
    });
    if mapped > 0 {
        return Err(StoreError::Conflict(format!(
            "{what} has roles that group mappings give; remove them from the mappings first"
        )));
    }
    let deleted = with_conn!(tx, |conn| {
        sqlx::query(ended).bind(id).execute(&mut *conn).await?;
        sqlx::query(sqlx::AssertSqlSafe(delete.to_owned()))
            .bind(id)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
    });
    match deleted {
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::Conflict(
            format!("{what} has live memberships; revoke them first"),
        )),
        other => other.map(|_| ()).map_err(StoreError::from),
    }
}

pub(crate) fn has_live_grants(what: &str, count: i64) -> StoreError {
    StoreError::Conflict(format!(
        "{what} still has {count} live membership(s); revoke them first"
    ))
}

/// Deletes an application with its resources, roles, accounts and ended grants. Refused while
/// any grant in it is live, so nobody keeps access that Tessera no longer knows about.
pub async fn delete(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
) -> StoreResult<()> {
    let app = get_in(tx, id).await?;
    check_version(expected_version, app.version)?;
    let live = live_grants(tx, GrantScope::Application(id)).await?;
    if live > 0 {
        return Err(has_live_grants("the application", live));
    }
    let (resources, roles): (i64, i64) = with_conn!(tx, |conn| {
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM resources WHERE application_id = $1), \
             (SELECT COUNT(*) FROM roles WHERE application_id = $1)",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?
    });
    super::roles::check_not_required_outside(tx, super::roles::RoleSet::Application(id)).await?;
    delete_with_ended_grants(
        tx,
        GrantScope::Application(id),
        "the application",
        "DELETE FROM applications WHERE id = $1",
    )
    .await?;
    audit::record(
        tx,
        ctx.event("application.delete", "application", Some(id))
            .with_details(
                json!({ "before": app, "deleted_resources": resources, "deleted_roles": roles }),
            ),
    )
    .await?;
    Ok(())
}
