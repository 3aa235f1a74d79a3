//! SCIM writes: create, replace (PUT), patch and delete, each one transaction with its audit
//! entries, the data source as actor (through the caller's [`ChangeContext`]).

use serde_json::{Map, Value, json};
use tessera_domain::directory::{InvalidInput, MAX_NAME_LEN, MemberKind};
use tessera_domain::ids::new_id;
use tessera_scim::criteria::fold;
use tessera_scim::patch::{MemberChange, PatchOperation, apply_patch, member_ids};
use tessera_scim::schema::{ENTERPRISE_USER_SCHEMA, ResourceKind, ResourceType};
use tessera_scim::{ScimError, ScimType};

use super::query::{Arg, Sql, bind_args};
use super::{Row, ScimRecord, from_row, get, resource_name, select_one};
use crate::governance::{group_access, group_mappings};
use crate::{Backend, ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn};

/// Most member ids per statement (well under both backends' parameter limits).
const MEMBER_CHUNK: usize = 500;

fn text<'a>(doc: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    doc.get(key).and_then(Value::as_str)
}

fn sub_text<'a>(doc: &'a Map<String, Value>, key: &str, sub: &str) -> Option<&'a str> {
    doc.get(key)?.get(sub)?.as_str()
}

/// The typed columns an identity keeps beside its document.
struct UserColumns<'a> {
    active: bool,
    user_name: &'a str,
    external_id: Option<&'a str>,
    display_name: Option<&'a str>,
    given_name: Option<&'a str>,
    family_name: Option<&'a str>,
    email: Option<&'a str>,
    employee_number: Option<&'a str>,
    department: Option<&'a str>,
    job_title: Option<&'a str>,
    manager: Option<&'a str>,
}

/// The projected columns, bound as `$1`–`$12` by [`user_args`] in both INSERT and UPDATE.
const USER_COLUMNS: &str = "status, user_name, user_name_lower, external_id, display_name, given_name, \
     family_name, email, email_lower, employee_number, department, job_title";

/// `manager_id`: the manager's id (`$13`) if it is a live identity of the data source (`$14`)
/// other than the identity itself (`$15`).
const MANAGER: &str = "(SELECT m.id FROM identities m WHERE m.id = $13 AND m.data_source_id = $14 \
     AND m.status <> 'deleted' AND m.id <> $15)";

/// Arguments `$1`–`$17` shared by the identity INSERT and UPDATE: the projected columns, then
/// manager, data source, id, document and time.
fn user_args(
    c: &UserColumns<'_>,
    data_source_id: &str,
    id: &str,
    doc: &Map<String, Value>,
    now: i64,
) -> Vec<Arg> {
    let text = |s: &str| Arg::Text(s.to_owned());
    let maybe = |s: Option<&str>| Arg::MaybeText(s.map(str::to_owned));
    vec![
        text(status(c.active)),
        text(c.user_name),
        Arg::Text(fold(c.user_name)),
        maybe(c.external_id),
        maybe(c.display_name),
        maybe(c.given_name),
        maybe(c.family_name),
        maybe(c.email),
        Arg::MaybeText(c.email.map(fold)),
        maybe(c.employee_number),
        maybe(c.department),
        maybe(c.job_title),
        maybe(c.manager),
        text(data_source_id),
        text(id),
        Arg::Text(stored_doc(doc)),
        Arg::Int(now),
    ]
}

fn user_columns(doc: &Map<String, Value>) -> StoreResult<UserColumns<'_>> {
    let user_name = text(doc, "userName").unwrap_or_default();
    if user_name.trim().is_empty()
        || user_name.chars().count() > MAX_NAME_LEN
        || user_name.chars().any(char::is_control)
    {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("userName must be 1 to {MAX_NAME_LEN} printable characters"),
        )
        .into());
    }
    let emails = doc.get("emails").and_then(Value::as_array);
    let email = emails.and_then(|items| {
        let primary = items
            .iter()
            .find(|e| e.get("primary") == Some(&Value::Bool(true)));
        let work = items
            .iter()
            .find(|e| e.get("type").and_then(Value::as_str) == Some("work"));
        primary.or(work).or(items.first())?.get("value")?.as_str()
    });
    let ext = doc.get(ENTERPRISE_USER_SCHEMA).and_then(Value::as_object);
    Ok(UserColumns {
        active: doc.get("active") != Some(&Value::Bool(false)),
        user_name,
        external_id: text(doc, "externalId"),
        display_name: text(doc, "displayName"),
        given_name: sub_text(doc, "name", "givenName"),
        family_name: sub_text(doc, "name", "familyName"),
        email,
        employee_number: ext.and_then(|e| text(e, "employeeNumber")),
        department: ext.and_then(|e| text(e, "department")),
        job_title: text(doc, "title"),
        manager: ext.and_then(|e| sub_text(e, "manager", "value")),
    })
}

/// The stored document: everything but group `members` (rows of their own).
fn stored_doc(doc: &Map<String, Value>) -> String {
    let mut stored = doc.clone();
    stored.remove("members");
    Value::Object(stored).to_string()
}

fn status(active: bool) -> &'static str {
    if active { "active" } else { "suspended" }
}

fn taken(kind: ResourceKind, doc: &Map<String, Value>) -> StoreError {
    let (attr, value) = match kind {
        ResourceKind::User => ("userName", text(doc, "userName")),
        ResourceKind::Group => ("displayName", text(doc, "displayName")),
    };
    StoreError::Scim(ScimError::new(
        409,
        Some(ScimType::Uniqueness),
        format!(
            "{attr} {:?} is already taken in this data source",
            value.unwrap_or_default()
        ),
    ))
}

/// Maps a unique-index violation to a SCIM `uniqueness` conflict.
fn map_unique<T>(
    result: Result<T, sqlx::Error>,
    kind: ResourceKind,
    doc: &Map<String, Value>,
) -> StoreResult<T> {
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(taken(kind, doc)),
        other => Ok(other?),
    }
}

/// Passwords a change may set, hashed before the write turn is taken: Argon2id is slow on
/// purpose, and on SQLite every writer sharing a commit would otherwise wait for it.
#[derive(Default)]
struct Prehashed(Vec<(String, String)>);

impl Prehashed {
    /// Hashes each candidate (off the async workers).
    async fn of(candidates: Vec<String>) -> StoreResult<Prehashed> {
        let mut hashed = Vec::with_capacity(candidates.len());
        for password in candidates {
            let hash = hash_password(password.clone()).await?;
            hashed.push((password, hash));
        }
        Ok(Prehashed(hashed))
    }
}

async fn hash_password(password: String) -> StoreResult<String> {
    tokio::task::spawn_blocking(move || tessera_domain::secret::hash_password(&password))
        .await
        .map_err(|e| StoreError::Config(format!("password hashing stopped: {e}")))?
        .map_err(|e| StoreError::Config(e.to_string()))
}

/// The string values a document or PATCH operations could set `password` to.
fn password_candidates(kind: ResourceKind, change: &Change<'_>) -> Vec<String> {
    if kind != ResourceKind::User {
        return Vec::new();
    }
    let named = |map: &Map<String, Value>| {
        map.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("password"))
            .filter_map(|(_, v)| v.as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    match change {
        Change::Replace(doc) => named(doc),
        Change::Patch(ops) => ops
            .iter()
            .flat_map(|op| match (op.path.as_deref(), op.value.as_ref()) {
                (Some(path), Some(Value::String(v)))
                    if path.trim().eq_ignore_ascii_case("password") =>
                {
                    vec![v.clone()]
                }
                (None, Some(Value::Object(map))) => named(map),
                _ => Vec::new(),
            })
            .collect(),
    }
}

/// Takes a `password` out of a user's document and returns its hash: the one computed before
/// the turn, or (for a form not foreseen) one computed now. The plain text never reaches the
/// database or a log.
async fn take_password(
    doc: &mut Map<String, Value>,
    prehashed: &Prehashed,
) -> StoreResult<Option<String>> {
    let Some(Value::String(password)) = doc.remove("password") else {
        return Ok(None);
    };
    match prehashed.0.iter().find(|(plain, _)| *plain == password) {
        Some((_, hash)) => Ok(Some(hash.clone())),
        None => Ok(Some(hash_password(password).await?)),
    }
}

/// Whether a PATCH removes the password.
fn removes_password(ops: &[PatchOperation]) -> bool {
    ops.iter().any(|op| {
        op.op == tessera_scim::patch::OpKind::Remove
            && op
                .path
                .as_deref()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("password"))
    })
}

/// Creates a user or group from a normalised document (group `members` included).
pub async fn create(
    db: &Db,
    ctx: &ChangeContext,
    kind: ResourceKind,
    data_source_id: &str,
    mut doc: Map<String, Value>,
) -> StoreResult<ScimRecord> {
    // Hashed before the write turn (see `Prehashed`).
    let password_hash = match kind {
        ResourceKind::User => match doc.remove("password") {
            Some(Value::String(password)) => Some(hash_password(password).await?),
            _ => None,
        },
        ResourceKind::Group => None,
    };
    let mut tx = db.begin().await?;
    let id = new_id();
    let now = tx.now();
    match kind {
        ResourceKind::User => {
            let c = user_columns(&doc)?;
            let mut args = user_args(&c, data_source_id, &id, &doc, now);
            args.push(Arg::MaybeText(password_hash));
            let sql = format!(
                "INSERT INTO identities ({USER_COLUMNS}, manager_id, id, data_source_id, source_doc, \
                 created_at, updated_at, version, kind, password_hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {MANAGER}, $15, $14, $16, $17, $17, 1, 'person', $18)"
            );
            let inserted = with_conn!(tx, |conn| {
                bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), &args)
                    .execute(&mut *conn)
                    .await
                    .map(|r| r.rows_affected())
            });
            map_unique(inserted, kind, &doc)?;
            write_emails(&mut tx, &id, data_source_id, &doc).await?;
            audit::record(
                &mut tx,
                ctx.event("identity.create", "identity", Some(&id))
                    .with_data_source(data_source_id)
                    .with_details(
                        json!({"user_name": c.user_name, "active": c.active, "via": "scim"}),
                    ),
            )
            .await?;
        }
        ResourceKind::Group => {
            let members = member_ids(doc.remove("members").as_ref())?;
            let display_name = text(&doc, "displayName").unwrap_or_default().to_owned();
            check_group_name(&display_name)?;
            let inserted = with_conn!(tx, |conn| {
                sqlx::query(
                    "INSERT INTO groups (id, data_source_id, display_name, display_name_lower, external_id, \
                     source_doc, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
                )
                .bind(&id)
                .bind(data_source_id)
                .bind(&display_name)
                .bind(fold(&display_name))
                .bind(text(&doc, "externalId"))
                .bind(stored_doc(&doc))
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            });
            map_unique(inserted, kind, &doc)?;
            audit::record(
                &mut tx,
                ctx.event("group.create", "group", Some(&id))
                    .with_data_source(data_source_id)
                    .with_details(json!({"display_name": display_name, "via": "scim"})),
            )
            .await?;
            if !members.is_empty() {
                apply_member_changes(
                    &mut tx,
                    ctx,
                    data_source_id,
                    &id,
                    &[MemberChange::Add(members)],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    get(db, kind, data_source_id, &id, false).await
}

fn check_group_name(name: &str) -> StoreResult<()> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid(InvalidInput::new(
            "displayName",
            format!("must be 1 to {MAX_NAME_LEN} printable characters"),
        )));
    }
    Ok(())
}

/// Loads the current record for a change, locking its row on PostgreSQL (SQLite transactions
/// already hold the write lock), and checks `If-Match`.
async fn load_for_update(
    tx: &mut Tx,
    kind: ResourceKind,
    data_source_id: &str,
    id: &str,
    if_match: Option<&[i64]>,
) -> StoreResult<ScimRecord> {
    let mut sql = select_one(tx.backend(), kind, data_source_id, id, false);
    if tx.backend() == Backend::Postgres {
        sql.push(" FOR UPDATE");
    }
    let row: Option<Row> = with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_optional(&mut *conn)
        .await?
    });
    let record = from_row(
        kind,
        row.ok_or_else(|| StoreError::not_found(resource_name(kind), id))?,
        false,
    )?;
    if let Some(versions) = if_match
        && !versions.contains(&record.version)
    {
        return Err(StoreError::VersionMismatch {
            current: record.version,
        });
    }
    Ok(record)
}

/// How a resource is being changed.
enum Change<'a> {
    Replace(Map<String, Value>),
    Patch(&'a [PatchOperation]),
}

/// PUT: replaces every attribute (and, for groups, the members) with the document's.
pub async fn replace(
    db: &Db,
    ctx: &ChangeContext,
    kind: ResourceKind,
    data_source_id: &str,
    id: &str,
    doc: Map<String, Value>,
    if_match: Option<&[i64]>,
) -> StoreResult<ScimRecord> {
    update(
        db,
        ctx,
        kind,
        data_source_id,
        id,
        Change::Replace(doc),
        if_match,
    )
    .await
}

/// PATCH: applies the operations to the stored document, all or nothing.
pub async fn patch(
    db: &Db,
    ctx: &ChangeContext,
    kind: ResourceKind,
    data_source_id: &str,
    id: &str,
    ops: &[PatchOperation],
    if_match: Option<&[i64]>,
) -> StoreResult<ScimRecord> {
    update(
        db,
        ctx,
        kind,
        data_source_id,
        id,
        Change::Patch(ops),
        if_match,
    )
    .await
}

async fn update(
    db: &Db,
    ctx: &ChangeContext,
    kind: ResourceKind,
    data_source_id: &str,
    id: &str,
    change: Change<'_>,
    if_match: Option<&[i64]>,
) -> StoreResult<ScimRecord> {
    let rt = ResourceType::of(kind);
    let prehashed = Prehashed::of(password_candidates(kind, &change)).await?;
    let mut tx = db.begin().await?;
    let current = load_for_update(&mut tx, kind, data_source_id, id, if_match).await?;
    let clears_password = matches!(change, Change::Patch(ops) if removes_password(ops));
    let (mut doc, members) = match change {
        Change::Replace(mut doc) => {
            let members = match kind {
                ResourceKind::Group => vec![MemberChange::Replace(member_ids(
                    doc.remove("members").as_ref(),
                )?)],
                ResourceKind::User => Vec::new(),
            };
            (doc, members)
        }
        Change::Patch(ops) => {
            let mut doc = current.doc.clone();
            let members = apply_patch(rt, &mut doc, ops)?;
            (doc, members)
        }
    };
    // A PUT without a password keeps the stored one; a PATCH may set or remove it.
    let new_password = match kind {
        ResourceKind::User => take_password(&mut doc, &prehashed).await?,
        ResourceKind::Group => None,
    };
    let mut changed: Vec<String> = doc
        .keys()
        .chain(current.doc.keys())
        .filter(|k| doc.get(*k) != current.doc.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if new_password.is_some() || clears_password {
        changed.push("password".into());
        let hash = new_password.clone();
        with_conn!(tx, |conn| {
            sqlx::query("UPDATE identities SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        });
    }
    let mut member_summary = MemberSummary::default();
    if !members.is_empty() {
        member_summary = apply_member_changes(&mut tx, ctx, data_source_id, id, &members).await?;
    }
    if changed.is_empty() && !member_summary.changed() {
        // Nothing to do: the version stays, so ETags stay valid.
        tx.commit().await?;
        return get(db, kind, data_source_id, id, false).await;
    }
    let now = tx.now();
    match kind {
        ResourceKind::User => {
            let c = user_columns(&doc)?;
            let args = user_args(&c, data_source_id, id, &doc, now);
            let assignments: Vec<String> = USER_COLUMNS
                .split(", ")
                .enumerate()
                .map(|(i, column)| format!("{column} = ${}", i + 1))
                .collect();
            let sql = format!(
                "UPDATE identities SET {}, manager_id = {MANAGER}, source_doc = $16, version = version + 1, \
                 updated_at = $17 WHERE id = $15",
                assignments.join(", ")
            );
            let updated = with_conn!(tx, |conn| {
                bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), &args)
                    .execute(&mut *conn)
                    .await
                    .map(|r| r.rows_affected())
            });
            map_unique(updated, kind, &doc)?;
            if doc.get("emails") != current.doc.get("emails") {
                write_emails(&mut tx, id, data_source_id, &doc).await?;
            }
            let was_active = current.doc.get("active") != Some(&Value::Bool(false));
            let action = match (was_active, c.active) {
                (true, false) => "identity.suspend",
                (false, true) => "identity.restore",
                _ => "identity.update",
            };
            audit::record(
                &mut tx,
                ctx.event(action, "identity", Some(id))
                    .with_data_source(data_source_id)
                    .with_details(json!({"changed": changed, "via": "scim"})),
            )
            .await?;
            if was_active != c.active {
                group_access::reevaluate(&mut tx, ctx, data_source_id, &[id.to_owned()]).await?;
            }
        }
        ResourceKind::Group => {
            let display_name = text(&doc, "displayName").unwrap_or_default().to_owned();
            check_group_name(&display_name)?;
            let updated = with_conn!(tx, |conn| {
                sqlx::query(
                    "UPDATE groups SET display_name = $1, display_name_lower = $2, external_id = $3, \
                     source_doc = $4, version = version + 1, updated_at = $5 WHERE id = $6",
                )
                .bind(&display_name)
                .bind(fold(&display_name))
                .bind(text(&doc, "externalId"))
                .bind(stored_doc(&doc))
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            });
            map_unique(updated, kind, &doc)?;
            if !changed.is_empty() {
                audit::record(
                    &mut tx,
                    ctx.event("group.update", "group", Some(id))
                        .with_data_source(data_source_id)
                        .with_details(json!({"changed": changed, "via": "scim"})),
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    get(db, kind, data_source_id, id, false).await
}

/// Replaces an identity's rows in `identity_emails` with its document's e-mails.
async fn write_emails(
    tx: &mut Tx,
    id: &str,
    data_source_id: &str,
    doc: &Map<String, Value>,
) -> StoreResult<()> {
    with_conn!(tx, |conn| {
        sqlx::query("DELETE FROM identity_emails WHERE identity_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    });
    let Some(emails) = doc.get("emails").and_then(Value::as_array) else {
        return Ok(());
    };
    let mut sql = Sql::new(tx.backend());
    sql.push(
        "INSERT INTO identity_emails (identity_id, position, data_source_id, value_folded, type_folded, \
         display_folded, is_primary) VALUES ",
    );
    for (position, email) in emails.iter().enumerate() {
        let folded = |key: &str| email.get(key).and_then(Value::as_str).map(fold);
        if position > 0 {
            sql.push(", ");
        }
        sql.push("(").arg(Arg::Text(id.to_owned())).push(", ");
        sql.arg(Arg::Int(position as i64)).push(", ");
        sql.arg(Arg::Text(data_source_id.to_owned())).push(", ");
        for key in ["value", "type", "display"] {
            match folded(key) {
                Some(v) => sql.arg(Arg::Text(v)),
                None => sql.push("NULL"),
            };
            sql.push(", ");
        }
        let primary = email.get("primary") == Some(&Value::Bool(true));
        sql.push(if primary { "TRUE)" } else { "FALSE)" });
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

#[derive(Debug, Default)]
struct MemberSummary {
    added: Vec<String>,
    removed: Vec<String>,
}

impl MemberSummary {
    fn changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

/// Applies member changes in order, each member checked to be a user or group of the same data
/// source, and bumps the group's version if anything changed.
async fn apply_member_changes(
    tx: &mut Tx,
    ctx: &ChangeContext,
    data_source_id: &str,
    group_id: &str,
    changes: &[MemberChange],
) -> StoreResult<MemberSummary> {
    let mut summary = MemberSummary::default();
    for change in changes {
        match change {
            MemberChange::Add(ids) => {
                let resolved = resolve_members(tx, data_source_id, group_id, ids).await?;
                summary
                    .added
                    .extend(insert_members(tx, group_id, &resolved).await?);
            }
            MemberChange::Remove(ids) => {
                summary
                    .removed
                    .extend(delete_members(tx, group_id, Some(ids)).await?);
            }
            MemberChange::Replace(ids) => {
                // Members who stay keep their row (and so when they joined, which decides
                // "most recent group wins"): only the others leave, only newcomers are added.
                let resolved = resolve_members(tx, data_source_id, group_id, ids).await?;
                let wanted: std::collections::HashSet<&str> =
                    resolved.iter().map(|(id, _)| id.as_str()).collect();
                let current: Vec<String> = with_conn!(tx, |conn| {
                    sqlx::query_scalar("SELECT member_id FROM group_members WHERE group_id = $1")
                        .bind(group_id)
                        .fetch_all(&mut *conn)
                        .await?
                });
                let leaving: Vec<String> = current
                    .into_iter()
                    .filter(|id| !wanted.contains(id.as_str()))
                    .collect();
                summary
                    .removed
                    .extend(delete_members(tx, group_id, Some(&leaving)).await?);
                summary
                    .added
                    .extend(insert_members(tx, group_id, &resolved).await?);
            }
        }
    }
    // A member removed and added back by one request is no change to report.
    let re_added: Vec<String> = summary
        .added
        .iter()
        .filter(|id| summary.removed.contains(id))
        .cloned()
        .collect();
    summary.added.retain(|id| !re_added.contains(id));
    summary.removed.retain(|id| !re_added.contains(id));
    // A member removed and added back did rejoin (its row is new): group mappings see it so.
    let mut changed: Vec<String> = summary
        .added
        .iter()
        .chain(&summary.removed)
        .chain(&re_added)
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    group_access::after_member_change(tx, ctx, group_id, &changed).await?;
    if summary.changed() {
        let now = tx.now();
        with_conn!(tx, |conn| {
            sqlx::query("UPDATE groups SET version = version + 1, updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(group_id)
                .execute(&mut *conn)
                .await?;
        });
        const LISTED: usize = 100;
        audit::record(
            tx,
            ctx.event("group.members", "group", Some(group_id))
                .with_data_source(data_source_id)
                .with_details(json!({
                    "added": summary.added.iter().take(LISTED).collect::<Vec<_>>(),
                    "removed": summary.removed.iter().take(LISTED).collect::<Vec<_>>(),
                    "added_count": summary.added.len(),
                    "removed_count": summary.removed.len(),
                    "via": "scim",
                })),
        )
        .await?;
    }
    Ok(summary)
}

/// Finds which ids are users and which are groups of the data source; any other id is refused.
async fn resolve_members(
    tx: &mut Tx,
    data_source_id: &str,
    group_id: &str,
    ids: &[String],
) -> StoreResult<Vec<(String, MemberKind)>> {
    if ids.iter().any(|id| id == group_id) {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            "a group cannot be a member of itself",
        )
        .into());
    }
    let mut found: Vec<(String, MemberKind)> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MEMBER_CHUNK) {
        let mut sql = Sql::new(tx.backend());
        sql.push("SELECT id, 'identity' AS kind FROM identities WHERE data_source_id = $1 AND status <> 'deleted' AND id IN (");
        sql.args.push(Arg::Text(data_source_id.to_owned()));
        let mut list = String::new();
        for (i, id) in chunk.iter().enumerate() {
            sql.args.push(Arg::Text(id.clone()));
            if i > 0 {
                list.push_str(", ");
            }
            list.push_str(&format!("${}", sql.args.len()));
        }
        sql.push(&format!(
            "{list}) UNION ALL SELECT id, 'group' AS kind FROM groups WHERE data_source_id = $1 AND id IN ({list})"
        ));
        let rows: Vec<(String, String)> = with_conn!(tx, |conn| {
            bind_args!(
                sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
                &sql.args
            )
            .fetch_all(&mut *conn)
            .await?
        });
        for (id, kind) in rows {
            let kind = if kind == "identity" {
                MemberKind::Identity
            } else {
                MemberKind::Group
            };
            found.push((id, kind));
        }
    }
    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|(f, _)| f == *id)) {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("member '{missing}' is not a user or group of this data source"),
        )
        .into());
    }
    Ok(found)
}

/// Inserts members (ignoring ones already there); returns the ids added.
async fn insert_members(
    tx: &mut Tx,
    group_id: &str,
    members: &[(String, MemberKind)],
) -> StoreResult<Vec<String>> {
    let now = tx.now();
    let mut added = Vec::new();
    for chunk in members.chunks(MEMBER_CHUNK) {
        let mut sql = Sql::new(tx.backend());
        sql.push("INSERT INTO group_members (group_id, member_kind, member_id, added_at) VALUES ");
        for (i, (id, kind)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(").arg(Arg::Text(group_id.to_owned())).push(", ");
            sql.arg(Arg::Text(kind.as_str().to_owned())).push(", ");
            sql.arg(Arg::Text(id.clone())).push(", ");
            sql.arg(Arg::Int(now)).push(")");
        }
        sql.push(" ON CONFLICT DO NOTHING RETURNING member_id");
        added.extend(returned_ids(tx, &sql).await?);
    }
    Ok(added)
}

/// The member ids a statement's `RETURNING member_id` gives back.
async fn returned_ids(tx: &mut Tx, sql: &Sql) -> StoreResult<Vec<String>> {
    Ok(with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(&mut *conn)
        .await?
    }))
}

/// Deletes the named members, or all; returns the ids removed.
async fn delete_members(
    tx: &mut Tx,
    group_id: &str,
    ids: Option<&[String]>,
) -> StoreResult<Vec<String>> {
    let mut removed = Vec::new();
    let chunks: Vec<Option<&[String]>> = match ids {
        None => vec![None],
        Some(ids) => ids.chunks(MEMBER_CHUNK).map(Some).collect(),
    };
    for chunk in chunks {
        let mut sql = Sql::new(tx.backend());
        sql.push("DELETE FROM group_members WHERE group_id = ")
            .arg(Arg::Text(group_id.to_owned()));
        if let Some(chunk) = chunk {
            if chunk.is_empty() {
                continue;
            }
            sql.push(" AND member_id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.arg(Arg::Text(id.clone()));
            }
            sql.push(")");
        }
        sql.push(" RETURNING member_id");
        removed.extend(returned_ids(tx, &sql).await?);
    }
    Ok(removed)
}

/// Deletes a resource: a user becomes a tombstone (kept for the audit trail, never returned
/// again, its userName free for reuse) and leaves its groups; a group is removed with its
/// memberships.
pub async fn delete(
    db: &Db,
    ctx: &ChangeContext,
    kind: ResourceKind,
    data_source_id: &str,
    id: &str,
    if_match: Option<&[i64]>,
) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    let current = load_for_update(&mut tx, kind, data_source_id, id, if_match).await?;
    let now = tx.now();
    let member_kind = match kind {
        ResourceKind::User => MemberKind::Identity.as_str(),
        ResourceKind::Group => MemberKind::Group.as_str(),
    };
    // Who loses what a deleted group (or one above it) gave, worked out while it exists.
    let mut losing: Vec<String> = vec![id.to_owned()];
    if kind == ResourceKind::Group {
        group_access::lock_source(&mut tx, data_source_id, true).await?;
        losing = match group_access::mapped_at_or_above(&mut tx, id).await? {
            true => group_access::identities_within(&mut tx, &losing).await?,
            false => Vec::new(),
        };
        group_mappings::delete_for_group(&mut tx, ctx, id).await?;
    }
    with_conn!(tx, |conn| {
        // Groups that lose this member change too.
        sqlx::query(
            "UPDATE groups SET version = version + 1, updated_at = $1 WHERE id IN \
             (SELECT group_id FROM group_members WHERE member_kind = $2 AND member_id = $3)",
        )
        .bind(now)
        .bind(member_kind)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM group_members WHERE member_kind = $1 AND member_id = $2")
            .bind(member_kind)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        match kind {
            ResourceKind::User => {
                sqlx::query("DELETE FROM identity_emails WHERE identity_id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("UPDATE identities SET manager_id = NULL WHERE manager_id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "UPDATE identities SET status = 'deleted', version = version + 1, updated_at = $1 WHERE id = $2",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            ResourceKind::Group => {
                sqlx::query("DELETE FROM groups WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    });
    let (action, entity) = match kind {
        ResourceKind::User => ("identity.delete", "identity"),
        ResourceKind::Group => ("group.delete", "group"),
    };
    let name = match kind {
        ResourceKind::User => text(&current.doc, "userName"),
        ResourceKind::Group => text(&current.doc, "displayName"),
    };
    audit::record(
        &mut tx,
        ctx.event(action, entity, Some(id))
            .with_data_source(data_source_id)
            .with_details(json!({"name": name, "via": "scim"})),
    )
    .await?;
    match kind {
        ResourceKind::User => {
            group_access::reevaluate(&mut tx, ctx, data_source_id, &losing).await?;
        }
        ResourceKind::Group => {
            group_access::reevaluate_always(&mut tx, ctx, data_source_id, &losing).await?;
        }
    }
    tx.commit().await
}
