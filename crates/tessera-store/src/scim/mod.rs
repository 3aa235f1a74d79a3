//! SCIM resources of a data source, stored as identities and groups: reads, filtered lists in
//! SQL, and the writes in [`write`].
//!
//! A SCIM user is an identity row: typed columns (for governance and indexes) plus the
//! normalised resource document in `source_doc` (the identity is suspended when `active` is
//! false); e-mails are
//! also kept folded in `identity_emails` for indexed matching. A SCIM group is a group row plus
//! `group_members` rows. Every function is scoped to one data source: another data source's
//! resources are simply not found.

pub(crate) mod query;
mod write;

use std::collections::HashMap;

use serde_json::{Map, Value};
use tessera_scim::criteria::{Criteria, Target};
use tessera_scim::resource::{Meta, render};
use tessera_scim::schema::{ResourceKind, ResourceType};

pub use write::{create, delete, patch, replace};

use self::query::{Arg, Sql, Translator, bind_args};
use crate::{Db, StoreError, StoreResult, with_pool};

/// A user's group or a group's member, as listed with the resource. Group members carry no
/// `display`: they are returned exactly as the client wrote them (value, `$ref`, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub id: String,
    pub kind: ResourceKind,
    pub display: Option<String>,
}

/// A stored SCIM resource.
#[derive(Debug, Clone)]
pub struct ScimRecord {
    pub kind: ResourceKind,
    pub id: String,
    /// The attribute document (`active` included as the client set it; the identity is
    /// suspended exactly when it is `false`).
    pub doc: Map<String, Value>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Group members (groups) or direct groups (users), when they were loaded.
    pub refs: Option<Vec<ResourceRef>>,
}

impl ScimRecord {
    pub fn meta(&self) -> Meta {
        Meta {
            created_ms: self.created_at,
            last_modified_ms: self.updated_at,
            version: self.version,
        }
    }

    /// The resource as a client sees it (before `attributes`/`excludedAttributes`).
    pub fn render(&self, base_url: &str) -> Map<String, Value> {
        let rt = ResourceType::of(self.kind);
        let mut attrs = self.doc.clone();
        if let Some(refs) = self.refs.as_ref().filter(|r| !r.is_empty()) {
            let items: Vec<Value> = refs
                .iter()
                .map(|r| {
                    let target = ResourceType::of(r.kind);
                    let mut item = Map::new();
                    item.insert("value".into(), Value::String(r.id.clone()));
                    item.insert(
                        "$ref".into(),
                        Value::String(format!("{base_url}{}/{}", target.endpoint, r.id)),
                    );
                    if let Some(display) = &r.display {
                        item.insert("display".into(), Value::String(display.clone()));
                    }
                    let kind = match (self.kind, r.kind) {
                        (ResourceKind::User, _) => "direct",
                        (_, ResourceKind::User) => "User",
                        (_, ResourceKind::Group) => "Group",
                    };
                    item.insert("type".into(), Value::String(kind.into()));
                    Value::Object(item)
                })
                .collect();
            let name = match self.kind {
                ResourceKind::User => "groups",
                ResourceKind::Group => "members",
            };
            attrs.insert(name.into(), Value::Array(items));
        }
        render(rt, base_url, &self.id, attrs, &self.meta())
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    source_doc: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

fn from_row(kind: ResourceKind, row: Row) -> StoreResult<ScimRecord> {
    let doc = match row.source_doc.as_deref() {
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(doc)) => doc,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "source_doc of {} is not a JSON object",
                    row.id
                )));
            }
        },
        None => Map::new(),
    };
    Ok(ScimRecord {
        kind,
        id: row.id,
        doc,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        refs: None,
    })
}

fn select_columns(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => {
            "SELECT i.id, i.source_doc, i.version, i.created_at, i.updated_at FROM identities i"
        }
        ResourceKind::Group => {
            "SELECT g.id, g.source_doc, g.version, g.created_at, g.updated_at FROM groups g"
        }
    }
}

/// The data-source scope of a query, with the data source as parameter `$1`.
fn scope(sql: &mut Sql, kind: ResourceKind, data_source_id: &str) {
    match kind {
        ResourceKind::User => sql.push(" WHERE i.data_source_id = "),
        ResourceKind::Group => sql.push(" WHERE g.data_source_id = "),
    };
    sql.arg(Arg::Text(data_source_id.to_owned()));
    if kind == ResourceKind::User {
        sql.push(" AND i.status <> 'deleted'");
    }
}

/// Reads one resource of a data source; `with_refs` also loads its members or groups.
pub async fn get(
    db: &Db,
    kind: ResourceKind,
    data_source_id: &str,
    id: &str,
    with_refs: bool,
) -> StoreResult<ScimRecord> {
    let mut sql = Sql::new(db.backend());
    sql.push(select_columns(kind));
    scope(&mut sql, kind, data_source_id);
    sql.push(match kind {
        ResourceKind::User => " AND i.id = ",
        ResourceKind::Group => " AND g.id = ",
    });
    sql.arg(Arg::Text(id.to_owned()));
    let row: Option<Row> = with_pool!(db, |pool| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_optional(pool)
        .await?
    });
    let row = row.ok_or_else(|| StoreError::not_found(resource_name(kind), id))?;
    let mut record = from_row(kind, row)?;
    if with_refs {
        let mut refs = load_refs(db, kind, std::slice::from_ref(&record.id)).await?;
        record.refs = Some(refs.remove(&record.id).unwrap_or_default());
    }
    Ok(record)
}

pub(crate) fn resource_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "User",
        ResourceKind::Group => "Group",
    }
}

/// What a list asks for.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    pub criteria: Option<&'a Criteria>,
    /// `sortBy` and whether descending.
    pub sort: Option<(&'a Target, bool)>,
    /// 1-based, as SCIM's `startIndex`.
    pub start_index: i64,
    pub count: i64,
    pub with_refs: bool,
}

/// Lists a data source's resources matching the criteria: the total and one page, in a stable
/// order (the sort key if any, then id).
pub async fn list(
    db: &Db,
    kind: ResourceKind,
    data_source_id: &str,
    q: &ListQuery<'_>,
) -> StoreResult<(i64, Vec<ScimRecord>)> {
    let translator = Translator {
        backend: db.backend(),
        data_source_param: 1,
    };
    let mut filter = Sql::new(db.backend());
    scope(&mut filter, kind, data_source_id);
    if let Some(criteria) = q.criteria {
        filter.push(" AND ");
        translator.condition(&mut filter, kind, criteria);
    }
    let table = match kind {
        ResourceKind::User => "SELECT COUNT(*) FROM identities i",
        ResourceKind::Group => "SELECT COUNT(*) FROM groups g",
    };
    let count_sql = format!("{table}{}", filter.text);
    let total: i64 = with_pool!(db, |pool| {
        bind_args!(
            sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql.clone())),
            &filter.args
        )
        .fetch_one(pool)
        .await?
    });
    if q.count <= 0 || total < q.start_index {
        return Ok((total, Vec::new()));
    }
    let id_column = match kind {
        ResourceKind::User => "i.id",
        ResourceKind::Group => "g.id",
    };
    let mut page = filter;
    page.text = format!("{}{}", select_columns(kind), page.text);
    page.push(" ORDER BY ");
    if let Some((target, descending)) = q.sort {
        let expr = translator.sort_expr(kind, target);
        let direction = if descending { "DESC" } else { "ASC" };
        page.push(&format!("{expr} {direction} NULLS LAST, "));
    }
    page.push(&format!("{id_column} LIMIT "));
    page.arg(Arg::Int(q.count));
    page.push(" OFFSET ");
    page.arg(Arg::Int(q.start_index - 1));
    let rows: Vec<Row> = with_pool!(db, |pool| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(page.text.clone())),
            &page.args
        )
        .fetch_all(pool)
        .await?
    });
    let mut records = rows
        .into_iter()
        .map(|r| from_row(kind, r))
        .collect::<StoreResult<Vec<_>>>()?;
    if q.with_refs && !records.is_empty() {
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let mut refs = load_refs(db, kind, &ids).await?;
        for record in &mut records {
            record.refs = Some(refs.remove(&record.id).unwrap_or_default());
        }
    }
    Ok((total, records))
}

/// Group members (for groups) or direct groups (for users) of several resources at once.
async fn load_refs(
    db: &Db,
    kind: ResourceKind,
    ids: &[String],
) -> StoreResult<HashMap<String, Vec<ResourceRef>>> {
    let mut sql = Sql::new(db.backend());
    match kind {
        ResourceKind::Group => sql.push(
            // Members are returned as written (value, $ref, type): no display to look up.
            "SELECT gm.group_id AS owner, gm.member_kind AS kind, gm.member_id AS id, NULL AS display \
             FROM group_members gm WHERE gm.group_id IN (",
        ),
        ResourceKind::User => sql.push(
            "SELECT gm.member_id AS owner, 'group' AS kind, g.id AS id, g.display_name AS display \
             FROM group_members gm JOIN groups g ON g.id = gm.group_id \
             WHERE gm.member_kind = 'identity' AND gm.member_id IN (",
        ),
    };
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.arg(Arg::Text(id.clone()));
    }
    sql.push(") ORDER BY 1, 3");
    #[derive(sqlx::FromRow)]
    struct RefRow {
        owner: String,
        kind: String,
        id: String,
        display: Option<String>,
    }
    let rows: Vec<RefRow> = with_pool!(db, |pool| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(pool)
        .await?
    });
    let mut out: HashMap<String, Vec<ResourceRef>> = HashMap::new();
    for row in rows {
        out.entry(row.owner).or_default().push(ResourceRef {
            id: row.id,
            kind: if row.kind == "identity" {
                ResourceKind::User
            } else {
                ResourceKind::Group
            },
            display: row.display,
        });
    }
    Ok(out)
}
