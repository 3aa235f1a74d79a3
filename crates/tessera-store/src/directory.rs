//! Data sources, identities, groups and group membership.

use serde_json::{Value, json};
use tessera_domain::directory::user_upload::HeldIdentity;
use tessera_domain::directory::{
    DataSource, DataSourceKind, Group, GroupAttributes, GroupMember, Identity, IdentityAttributes,
    IdentityKind, IdentityStatus, MatchingKey, MemberKind, fold, validate_data_source_name,
};
use tessera_domain::governance::group_mapping::{PlatformRole, PlatformRoleDecision};
use tessera_domain::ids::new_id;

use crate::governance::group_access;
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

/// Largest page any list returns.
pub const MAX_PAGE: i64 = 1000;

// ---------------------------------------------------------------------------------------------
// Data sources

#[derive(sqlx::FromRow)]
struct DataSourceRow {
    id: String,
    name: String,
    kind: String,
    matching_key: String,
    settings: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<DataSourceRow> for DataSource {
    type Error = StoreError;
    fn try_from(r: DataSourceRow) -> StoreResult<Self> {
        Ok(DataSource {
            kind: DataSourceKind::parse(&r.kind)
                .ok_or_else(|| corrupt("data_sources.kind", &r.kind))?,
            matching_key: MatchingKey::parse(&r.matching_key)
                .ok_or_else(|| corrupt("data_sources.matching_key", &r.matching_key))?,
            settings: parse_json(&r.settings)?,
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn corrupt(column: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown value {value:?} in {column}"))
}

fn parse_json(text: &str) -> StoreResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("invalid JSON in a column: {e}")))
}

const DATA_SOURCE_COLUMNS: &str = "id, name, kind, matching_key, settings, created_at, updated_at";

pub async fn create_data_source(
    tx: &mut Tx,
    ctx: &ChangeContext,
    name: &str,
    kind: DataSourceKind,
    matching_key: MatchingKey,
) -> StoreResult<DataSource> {
    validate_data_source_name(name)?;
    let ds = DataSource {
        id: new_id(),
        name: name.trim().to_owned(),
        kind,
        matching_key,
        settings: json!({}),
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO data_sources (id, name, name_lower, kind, matching_key, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&ds.id)
        .bind(&ds.name)
        .bind(fold(&ds.name))
        .bind(ds.kind.as_str())
        .bind(ds.matching_key.as_str())
        .bind(ds.settings.to_string())
        .bind(ds.created_at)
        .bind(ds.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(StoreError::Conflict(format!(
                "a data source named {:?} already exists",
                ds.name
            )));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("data_source.create", "data_source", Some(&ds.id))
            .with_data_source(&ds.id)
            .with_details(
                json!({"name": ds.name, "kind": ds.kind, "matching_key": ds.matching_key}),
            ),
    )
    .await?;
    Ok(ds)
}

/// Settings that are present must hold a value this version understands.
fn validate_data_source_settings(settings: &Value) -> StoreResult<()> {
    use tessera_domain::governance::group_mapping::{PlatformRole, PlatformRolePrecedence};
    let check = |key: &'static str, known: &dyn Fn(&str) -> bool| match settings.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(v)) if known(v) => Ok(()),
        Some(other) => Err(StoreError::from(
            tessera_domain::directory::InvalidInput::new(
                key,
                format!("{other} is not a known value"),
            ),
        )),
    };
    check("platform_role_precedence", &|v| {
        PlatformRolePrecedence::parse(v).is_some()
    })?;
    check("default_platform_role", &|v| {
        PlatformRole::parse(v).is_some()
    })
}

/// Renames a data source and/or replaces its settings, with an audit entry.
pub async fn update_data_source(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    change: impl FnOnce(&mut DataSource) -> StoreResult<()>,
) -> StoreResult<DataSource> {
    let sql = format!("SELECT {DATA_SOURCE_COLUMNS} FROM data_sources WHERE id = $1");
    let row: Option<DataSourceRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    let before: DataSource = row
        .ok_or_else(|| StoreError::not_found("data source", id))?
        .try_into()?;
    let mut after = before.clone();
    change(&mut after)?;
    after.name = after.name.trim().to_owned();
    validate_data_source_settings(&after.settings)?;
    validate_data_source_name(&after.name)?;
    if after == before {
        return Ok(before);
    }
    after.updated_at = tx.now();
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE data_sources SET name = $1, name_lower = $2, settings = $3, updated_at = $4 \
             WHERE id = $5 AND updated_at = $6",
        )
        .bind(&after.name)
        .bind(fold(&after.name))
        .bind(after.settings.to_string())
        .bind(after.updated_at)
        .bind(id)
        .bind(before.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match updated {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(StoreError::Conflict(format!(
                "a data source named {:?} already exists",
                after.name
            )));
        }
        Ok(0) => {
            return Err(StoreError::Conflict(
                "the data source changed meanwhile; read it and try again".into(),
            ));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("data_source.update", "data_source", Some(id))
            .with_data_source(id)
            .with_details(json!({
                "before": {"name": before.name, "settings": before.settings},
                "after": {"name": after.name, "settings": after.settings},
            })),
    )
    .await?;
    // A new precedence may pick other roles for people in several mapped groups. (A new
    // default needs nothing: identities in no mapped group store none and follow it.)
    if group_access::platform_role_precedence(&after.settings)
        != group_access::platform_role_precedence(&before.settings)
    {
        let mapped = group_access::mapped_identities(tx, id).await?;
        group_access::reevaluate_always(tx, ctx, id, &mapped).await?;
    }
    Ok(after)
}

pub async fn get_data_source(db: &Db, id: &str) -> StoreResult<DataSource> {
    let sql = format!("SELECT {DATA_SOURCE_COLUMNS} FROM data_sources WHERE id = $1");
    let row: Option<DataSourceRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("data source", id))?
        .try_into()
}

pub async fn find_data_source_by_name(db: &Db, name: &str) -> StoreResult<Option<DataSource>> {
    let sql = format!("SELECT {DATA_SOURCE_COLUMNS} FROM data_sources WHERE name_lower = $1");
    let row: Option<DataSourceRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(fold(name.trim()))
            .fetch_optional(pool)
            .await?
    });
    row.map(DataSource::try_from).transpose()
}

pub async fn list_data_sources(db: &Db) -> StoreResult<Vec<DataSource>> {
    let sql = format!(
        "SELECT {DATA_SOURCE_COLUMNS} FROM data_sources ORDER BY name_lower LIMIT {MAX_PAGE}"
    );
    let rows: Vec<DataSourceRow> = with_pool!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?);
    rows.into_iter().map(DataSource::try_from).collect()
}

// ---------------------------------------------------------------------------------------------
// Identities

#[derive(sqlx::FromRow)]
pub(crate) struct IdentityRow {
    id: String,
    data_source_id: String,
    kind: String,
    status: String,
    user_name: String,
    external_id: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    email: Option<String>,
    employee_number: Option<String>,
    department: Option<String>,
    job_title: Option<String>,
    manager_id: Option<String>,
    source_doc: Option<String>,
    platform_role: Option<String>,
    platform_role_mapping_id: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const IDENTITY_COLUMNS: &str = "id, data_source_id, kind, status, user_name, external_id, display_name, \
     given_name, family_name, email, employee_number, department, job_title, manager_id, source_doc, \
     platform_role, platform_role_mapping_id, version, created_at, updated_at";

impl TryFrom<IdentityRow> for Identity {
    type Error = StoreError;
    fn try_from(r: IdentityRow) -> StoreResult<Self> {
        Ok(Identity {
            kind: IdentityKind::parse(&r.kind)
                .ok_or_else(|| corrupt("identities.kind", &r.kind))?,
            status: IdentityStatus::parse(&r.status)
                .ok_or_else(|| corrupt("identities.status", &r.status))?,
            attributes: IdentityAttributes {
                user_name: r.user_name,
                external_id: r.external_id,
                display_name: r.display_name,
                given_name: r.given_name,
                family_name: r.family_name,
                email: r.email,
                employee_number: r.employee_number,
                department: r.department,
                job_title: r.job_title,
                manager_id: r.manager_id,
                source_doc: r.source_doc.as_deref().map(parse_json).transpose()?,
            },
            platform_role: match r.platform_role {
                Some(role) => Some(PlatformRoleDecision {
                    role: PlatformRole::parse(&role)
                        .ok_or_else(|| corrupt("identities.platform_role", &role))?,
                    mapping_id: r.platform_role_mapping_id,
                }),
                None => None,
            },
            id: r.id,
            data_source_id: r.data_source_id,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn user_name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "userName {name:?} is already taken in this data source"
    ))
}

pub async fn create_identity(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    kind: IdentityKind,
    attrs: IdentityAttributes,
) -> StoreResult<Identity> {
    attrs.validate()?;
    let identity = Identity {
        id: new_id(),
        data_source_id: data_source_id.to_owned(),
        kind,
        status: IdentityStatus::Active,
        attributes: attrs,
        platform_role: None,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    let a = &identity.attributes;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO identities (id, data_source_id, kind, status, user_name, user_name_lower, external_id, \
             display_name, given_name, family_name, email, email_lower, employee_number, department, job_title, \
             manager_id, source_doc, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(&identity.id)
        .bind(&identity.data_source_id)
        .bind(identity.kind.as_str())
        .bind(identity.status.as_str())
        .bind(&a.user_name)
        .bind(fold(&a.user_name))
        .bind(&a.external_id)
        .bind(&a.display_name)
        .bind(&a.given_name)
        .bind(&a.family_name)
        .bind(&a.email)
        .bind(a.email.as_deref().map(fold))
        .bind(&a.employee_number)
        .bind(&a.department)
        .bind(&a.job_title)
        .bind(&a.manager_id)
        .bind(a.source_doc.as_ref().map(Value::to_string))
        .bind(identity.version)
        .bind(identity.created_at)
        .bind(identity.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(user_name_taken(&a.user_name));
        }
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            return Err(StoreError::not_found(
                "data source or manager",
                data_source_id,
            ));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("identity.create", "identity", Some(&identity.id))
            .with_data_source(data_source_id)
            .with_details(json!({"user_name": a.user_name, "kind": identity.kind})),
    )
    .await?;
    Ok(identity)
}

/// Replaces the attributes a data source supplies (not the manager or the stored source
/// document) and makes the identity active, if it is still at `version`.
pub async fn update_identity(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    before: &HeldIdentity,
    attrs: &IdentityAttributes,
) -> StoreResult<()> {
    attrs.validate()?;
    let now = tx.now();
    let a = attrs;
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE identities SET status = 'active', user_name = $1, user_name_lower = $2, \
             external_id = $3, display_name = $4, given_name = $5, family_name = $6, email = $7, \
             email_lower = $8, employee_number = $9, department = $10, job_title = $11, \
             version = version + 1, updated_at = $12 WHERE id = $13 AND version = $14",
        )
        .bind(&a.user_name)
        .bind(fold(&a.user_name))
        .bind(&a.external_id)
        .bind(&a.display_name)
        .bind(&a.given_name)
        .bind(&a.family_name)
        .bind(&a.email)
        .bind(a.email.as_deref().map(fold))
        .bind(&a.employee_number)
        .bind(&a.department)
        .bind(&a.job_title)
        .bind(now)
        .bind(&before.id)
        .bind(before.version)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match updated {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(user_name_taken(&a.user_name));
        }
        Ok(0) => {
            return Err(StoreError::VersionMismatch {
                current: before.version + 1,
            });
        }
        other => other?,
    };
    let view = |status: IdentityStatus, a: &IdentityAttributes| {
        json!({"status": status, "user_name": a.user_name, "external_id": a.external_id,
               "display_name": a.display_name, "given_name": a.given_name,
               "family_name": a.family_name, "email": a.email,
               "employee_number": a.employee_number, "department": a.department,
               "job_title": a.job_title})
    };
    audit::record(
        tx,
        ctx.event("identity.update", "identity", Some(&before.id))
            .with_data_source(data_source_id)
            .with_details(json!({
                "before": view(before.status, &before.attributes),
                "after": view(IdentityStatus::Active, attrs),
            })),
    )
    .await?;
    if before.status != IdentityStatus::Active {
        group_access::reevaluate(tx, ctx, data_source_id, std::slice::from_ref(&before.id)).await?;
    }
    Ok(())
}

/// Sets the manager of an identity (kept apart from creation because managers may be loaded
/// after the people who report to them).
pub async fn set_manager(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    manager_id: Option<&str>,
) -> StoreResult<()> {
    let now = tx.now();
    let updated = with_conn!(tx, |conn| {
        // The manager must be a live identity of the same data source (or none).
        sqlx::query(
            "UPDATE identities SET manager_id = $1, version = version + 1, updated_at = $2 \
             WHERE id = $3 AND status <> 'deleted' AND ($1 IS NULL OR EXISTS (SELECT 1 FROM identities m \
             WHERE m.id = $1 AND m.data_source_id = identities.data_source_id AND m.status <> 'deleted'))",
        )
        .bind(manager_id)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    if updated == 0 {
        return Err(StoreError::not_found("identity or manager", id));
    }
    audit::record(
        tx,
        ctx.event("identity.set_manager", "identity", Some(id))
            .with_details(json!({"manager_id": manager_id})),
    )
    .await?;
    Ok(())
}

/// Changes an identity's status (suspend, restore, delete).
pub async fn set_identity_status(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    status: IdentityStatus,
) -> StoreResult<()> {
    let now = tx.now();
    let data_source_id: Option<String> = with_conn!(tx, |conn| {
        sqlx::query_scalar(
            "UPDATE identities SET status = $1, version = version + 1, updated_at = $2 \
             WHERE id = $3 AND status <> 'deleted' AND status <> $1 RETURNING data_source_id",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    });
    let Some(data_source_id) = data_source_id else {
        return Ok(());
    };
    audit::record(
        tx,
        ctx.event("identity.set_status", "identity", Some(id))
            .with_data_source(&data_source_id)
            .with_details(json!({"status": status})),
    )
    .await?;
    // What group mappings gave ends with suspension and comes back with restoration.
    group_access::reevaluate(tx, ctx, &data_source_id, &[id.to_owned()]).await
}

pub async fn get_identity(db: &Db, id: &str) -> StoreResult<Identity> {
    let sql =
        format!("SELECT {IDENTITY_COLUMNS} FROM identities WHERE id = $1 AND status <> 'deleted'");
    let row: Option<IdentityRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("identity", id))?
        .try_into()
}

/// A page of identities ordered by id (creation order), after the id `after` when given.
pub async fn list_identities(
    db: &Db,
    data_source_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Identity>> {
    let sql = format!(
        "SELECT {IDENTITY_COLUMNS} FROM identities WHERE status <> 'deleted' \
         AND ($1 IS NULL OR data_source_id = $1) AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
    );
    let rows: Vec<IdentityRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(data_source_id)
            .bind(after)
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(Identity::try_from).collect()
}

pub async fn count_identities(db: &Db) -> StoreResult<i64> {
    Ok(with_pool!(db, |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM identities WHERE status <> 'deleted'")
            .fetch_one(pool)
            .await?
    }))
}

// ---------------------------------------------------------------------------------------------
// Groups

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: String,
    data_source_id: String,
    display_name: String,
    external_id: Option<String>,
    description: Option<String>,
    source_doc: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

const GROUP_COLUMNS: &str = "id, data_source_id, display_name, external_id, description, source_doc, version, created_at, updated_at";

impl TryFrom<GroupRow> for Group {
    type Error = StoreError;
    fn try_from(r: GroupRow) -> StoreResult<Self> {
        Ok(Group {
            attributes: GroupAttributes {
                display_name: r.display_name,
                external_id: r.external_id,
                description: r.description,
                source_doc: r.source_doc.as_deref().map(parse_json).transpose()?,
            },
            id: r.id,
            data_source_id: r.data_source_id,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub async fn create_group(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    attrs: GroupAttributes,
) -> StoreResult<Group> {
    attrs.validate()?;
    let group = Group {
        id: new_id(),
        data_source_id: data_source_id.to_owned(),
        attributes: attrs,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    let a = &group.attributes;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO groups (id, data_source_id, display_name, display_name_lower, external_id, description, \
             source_doc, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&group.id)
        .bind(&group.data_source_id)
        .bind(&a.display_name)
        .bind(fold(&a.display_name))
        .bind(&a.external_id)
        .bind(&a.description)
        .bind(a.source_doc.as_ref().map(Value::to_string))
        .bind(group.version)
        .bind(group.created_at)
        .bind(group.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(StoreError::Conflict(format!(
                "a group named {:?} already exists in this data source",
                a.display_name
            )));
        }
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            return Err(StoreError::not_found("data source", data_source_id));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("group.create", "group", Some(&group.id))
            .with_data_source(data_source_id)
            .with_details(json!({"display_name": a.display_name})),
    )
    .await?;
    Ok(group)
}

pub async fn get_group(db: &Db, id: &str) -> StoreResult<Group> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = $1");
    let row: Option<GroupRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("group", id))?
        .try_into()
}

pub async fn list_groups(
    db: &Db,
    data_source_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Group>> {
    let sql = format!(
        "SELECT {GROUP_COLUMNS} FROM groups WHERE ($1 IS NULL OR data_source_id = $1) \
         AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
    );
    let rows: Vec<GroupRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(data_source_id)
            .bind(after)
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(Group::try_from).collect()
}

/// Adds a member; adding one already there changes nothing and records nothing.
/// Returns whether the member was added.
pub async fn add_group_member(
    tx: &mut Tx,
    ctx: &ChangeContext,
    group_id: &str,
    member_kind: MemberKind,
    member_id: &str,
) -> StoreResult<bool> {
    if member_kind == MemberKind::Group && member_id == group_id {
        return Err(StoreError::Conflict(
            "a group cannot be a member of itself".into(),
        ));
    }
    let now = tx.now();
    let (member_table, live) = match member_kind {
        MemberKind::Identity => ("identities", " AND m.status <> 'deleted'"),
        MemberKind::Group => ("groups", ""),
    };
    // The member must exist in the same data source as the group: sources never mix.
    let sql = format!(
        "INSERT INTO group_members (group_id, member_kind, member_id, added_at) \
         SELECT g.id, $2, m.id, $4 FROM groups g JOIN {member_table} m ON m.data_source_id = g.data_source_id \
         WHERE g.id = $1 AND m.id = $3{live} ON CONFLICT DO NOTHING"
    );
    let added = with_conn!(tx, |conn| {
        let added = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(group_id)
            .bind(member_kind.as_str())
            .bind(member_id)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if added == 0 {
            let present: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND member_kind = $2 AND member_id = $3",
            )
            .bind(group_id)
            .bind(member_kind.as_str())
            .bind(member_id)
            .fetch_one(&mut *conn)
            .await?;
            if present == 0 {
                return Err(StoreError::not_found(
                    "group or member",
                    format!("{group_id}/{member_id}"),
                ));
            }
        } else {
            sqlx::query("UPDATE groups SET version = version + 1, updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(group_id)
                .execute(&mut *conn)
                .await?;
        }
        added
    });
    if added == 0 {
        return Ok(false);
    }
    audit::record(
        tx,
        ctx.event("group.add_member", "group", Some(group_id))
            .with_details(json!({"member_kind": member_kind, "member_id": member_id})),
    )
    .await?;
    group_access::after_member_change(tx, ctx, group_id, &[member_id.to_owned()]).await?;
    Ok(true)
}

/// Removes a member; returns whether it was there.
pub async fn remove_group_member(
    tx: &mut Tx,
    ctx: &ChangeContext,
    group_id: &str,
    member_kind: MemberKind,
    member_id: &str,
) -> StoreResult<bool> {
    let now = tx.now();
    let removed = with_conn!(tx, |conn| {
        let removed = sqlx::query(
            "DELETE FROM group_members WHERE group_id = $1 AND member_kind = $2 AND member_id = $3",
        )
        .bind(group_id)
        .bind(member_kind.as_str())
        .bind(member_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if removed > 0 {
            sqlx::query("UPDATE groups SET version = version + 1, updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(group_id)
                .execute(&mut *conn)
                .await?;
        }
        removed
    });
    if removed == 0 {
        return Ok(false);
    }
    audit::record(
        tx,
        ctx.event("group.remove_member", "group", Some(group_id))
            .with_details(json!({"member_kind": member_kind, "member_id": member_id})),
    )
    .await?;
    group_access::after_member_change(tx, ctx, group_id, &[member_id.to_owned()]).await?;
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    group_id: String,
    member_kind: String,
    member_id: String,
    added_at: i64,
}

/// A page of a group's direct members, ordered by (kind, id).
pub async fn list_group_members(
    db: &Db,
    group_id: &str,
    after: Option<(MemberKind, &str)>,
    limit: i64,
) -> StoreResult<Vec<GroupMember>> {
    let (after_kind, after_id) = after.map_or((None, None), |(k, id)| (Some(k.as_str()), Some(id)));
    let rows: Vec<MemberRow> = with_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT group_id, member_kind, member_id, added_at FROM group_members WHERE group_id = $1 \
             AND ($2 IS NULL OR member_kind > $2 OR (member_kind = $2 AND member_id > $3)) \
             ORDER BY member_kind, member_id LIMIT $4",
        )
        .bind(group_id)
        .bind(after_kind)
        .bind(after_id)
        .bind(limit.clamp(1, MAX_PAGE))
        .fetch_all(pool)
        .await?
    });
    rows.into_iter()
        .map(|r| {
            Ok(GroupMember {
                member_kind: MemberKind::parse(&r.member_kind)
                    .ok_or_else(|| corrupt("group_members.member_kind", &r.member_kind))?,
                group_id: r.group_id,
                member_id: r.member_id,
                added_at: r.added_at,
            })
        })
        .collect()
}
