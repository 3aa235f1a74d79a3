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

use serde_json::{Map, Value};
use tessera_scim::criteria::{Criteria, Target};
use tessera_scim::resource::{Meta, render};
use tessera_scim::schema::{ResourceKind, ResourceType};

pub use write::{create, delete, patch, replace};

use self::query::{Arg, Sql, Translator, bind_args};
use crate::{Backend, Db, StoreError, StoreResult};

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
        self.clone().into_rendered(base_url)
    }

    /// [`ScimRecord::render`], reusing the document rather than copying it.
    pub fn into_rendered(self, base_url: &str) -> Map<String, Value> {
        let rt = ResourceType::of(self.kind);
        let meta = self.meta();
        let mut attrs = self.doc;
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
        render(rt, base_url, &self.id, attrs, &meta)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    source_doc: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    /// Members or groups as a JSON array of `[kind or id, id or display]` pairs, when asked.
    refs: Option<String>,
}

impl Row {
    /// From the columns of [`select_columns`], in order.
    fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            id: r.get(0)?,
            source_doc: r.get(1)?,
            version: r.get(2)?,
            created_at: r.get(3)?,
            updated_at: r.get(4)?,
            refs: r.get(5)?,
        })
    }
}

/// A list row: a resource and the number of rows matching the query.
#[derive(sqlx::FromRow)]
struct ListRow {
    #[sqlx(flatten)]
    row: Row,
    total: i64,
}

impl ListRow {
    fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<ListRow> {
        Ok(ListRow {
            row: Row::from_sqlite(r)?,
            total: r.get(6)?,
        })
    }
}

/// Runs a query for rows of one shape: on SQLite through the direct read path, on PostgreSQL
/// through the pool.
async fn fetch_rows<R>(
    db: &Db,
    sql: Sql,
    from_sqlite: fn(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
) -> StoreResult<Vec<R>>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + 'static,
{
    match (db.sqlite_readers(), db.pool()) {
        (Some(readers), _) => {
            readers
                .read(move |conn| {
                    let mut stmt = conn.prepare_cached(&sql.text)?;
                    crate::sqlite_read::bind(&mut stmt, &sql.args)?;
                    let mut rows = stmt.raw_query();
                    let mut out = Vec::new();
                    while let Some(row) = rows.next()? {
                        out.push(from_sqlite(row)?);
                    }
                    Ok(out)
                })
                .await
        }
        (None, crate::db_internal::PoolRef::Pg(pool)) => Ok(bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(pool)
        .await?),
        (None, crate::db_internal::PoolRef::Sqlite(_)) => {
            unreachable!("a SQLite database always has its readers")
        }
    }
}

fn from_row(kind: ResourceKind, row: Row, with_refs: bool) -> StoreResult<ScimRecord> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("{what} of {} is not valid JSON", row.id));
    let doc = match row.source_doc.as_deref() {
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(doc)) => doc,
            _ => return Err(corrupt("source_doc")),
        },
        None => Map::new(),
    };
    let refs = if with_refs {
        let pairs: Vec<(String, Option<String>)> = match row.refs.as_deref() {
            Some(text) => serde_json::from_str(text).map_err(|_| corrupt("the references"))?,
            None => Vec::new(),
        };
        Some(
            pairs
                .into_iter()
                .map(|(first, second)| match kind {
                    // A user's groups: [group id, display name].
                    ResourceKind::User => ResourceRef {
                        id: first,
                        kind: ResourceKind::Group,
                        display: second,
                    },
                    // A group's members: [member kind, member id]; no display to look up.
                    ResourceKind::Group => ResourceRef {
                        id: second.unwrap_or_default(),
                        kind: if first == "identity" {
                            ResourceKind::User
                        } else {
                            ResourceKind::Group
                        },
                        display: None,
                    },
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(ScimRecord {
        kind,
        id: row.id,
        doc,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        refs,
    })
}

/// `SELECT` and the columns of a resource row (without `FROM`), with its members or groups
/// aggregated into one JSON column when `with_refs` is set: one query per page, not one per
/// resource.
fn select_columns(backend: Backend, kind: ResourceKind, with_refs: bool) -> String {
    let refs = match (with_refs, kind) {
        (false, _) => "NULL".to_owned(),
        (true, ResourceKind::User) => format!(
            "(SELECT {} FROM group_members gm JOIN groups g2 ON g2.id = gm.group_id \
             WHERE gm.member_kind = 'identity' AND gm.member_id = i.id)",
            json_pairs(backend, "g2.id", "g2.display_name", "g2.id")
        ),
        (true, ResourceKind::Group) => format!(
            "(SELECT {} FROM group_members gm WHERE gm.group_id = g.id)",
            json_pairs(backend, "gm.member_kind", "gm.member_id", "gm.member_id")
        ),
    };
    let alias = table(kind).1;
    format!(
        "SELECT {alias}.id, {alias}.source_doc, {alias}.version, {alias}.created_at, \
         {alias}.updated_at, {refs} AS refs"
    )
}

/// An aggregate of `[first, second]` pairs as JSON text (SQL NULL on PostgreSQL when empty).
fn json_pairs(backend: Backend, first: &str, second: &str, order: &str) -> String {
    match backend {
        Backend::Sqlite => {
            format!("json_group_array(json_array({first}, {second}) ORDER BY {order})")
        }
        Backend::Postgres => {
            format!("json_agg(json_build_array({first}, {second}) ORDER BY {order})::text")
        }
    }
}

/// A resource kind's table and its alias in every query.
fn table(kind: ResourceKind) -> (&'static str, &'static str) {
    match kind {
        ResourceKind::User => ("identities", "i"),
        ResourceKind::Group => ("groups", "g"),
    }
}

/// The data-source scope of a query, with the data source as parameter `$1`.
fn scope(sql: &mut Sql, kind: ResourceKind, data_source_id: &str) {
    sql.push(&format!(" WHERE {}.data_source_id = ", table(kind).1));
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
    let sql = select_one(db.backend(), kind, data_source_id, id, with_refs);
    let row = fetch_rows(db, sql, Row::from_sqlite)
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found(resource_name(kind), id))?;
    from_row(kind, row, with_refs)
}

/// The query for one resource of a data source by id.
fn select_one(
    backend: Backend,
    kind: ResourceKind,
    data_source_id: &str,
    id: &str,
    with_refs: bool,
) -> Sql {
    let (name, alias) = table(kind);
    let mut sql = Sql::new(backend);
    sql.push(&select_columns(backend, kind, with_refs));
    sql.push(&format!(" FROM {name} {alias}"));
    scope(&mut sql, kind, data_source_id);
    sql.push(&format!(" AND {alias}.id = "));
    sql.arg(Arg::Text(id.to_owned()));
    sql
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
    if q.count <= 0 {
        return Ok((count(db, kind, &filter).await?, Vec::new()));
    }
    // The total comes with the page (one query); only a page past the end needs its own count.
    let (name, alias) = table(kind);
    let mut page = Sql {
        backend: filter.backend,
        text: format!(
            "{}, COUNT(*) OVER () AS total FROM {name} {alias}{}",
            select_columns(db.backend(), kind, q.with_refs),
            filter.text
        ),
        args: filter.args.clone(),
    };
    page.push(" ORDER BY ");
    if let Some((target, descending)) = q.sort {
        let expr = translator.sort_expr(kind, target);
        let direction = if descending { "DESC" } else { "ASC" };
        page.push(&format!("{expr} {direction} NULLS LAST, "));
    }
    // Integers written into the text rather than bound: SQLite plans with a bound LIMIT's value
    // and so re-prepares the statement every time one is bound, which cost a fifth of a lookup.
    page.push(&format!(
        "{alias}.id LIMIT {} OFFSET {}",
        q.count,
        q.start_index - 1
    ));
    let rows = fetch_rows(db, page, ListRow::from_sqlite).await?;
    let total = match rows.first() {
        Some(first) => first.total,
        None if q.start_index <= 1 => 0,
        None => count(db, kind, &filter).await?,
    };
    let records = rows
        .into_iter()
        .map(|r| from_row(kind, r.row, q.with_refs))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok((total, records))
}

#[derive(sqlx::FromRow)]
struct Total {
    total: i64,
}

/// The number of a data source's resources matching a `WHERE` clause.
async fn count(db: &Db, kind: ResourceKind, filter: &Sql) -> StoreResult<i64> {
    let (name, alias) = table(kind);
    let sql = Sql {
        backend: filter.backend,
        text: format!(
            "SELECT COUNT(*) AS total FROM {name} {alias}{}",
            filter.text
        ),
        args: filter.args.clone(),
    };
    let counted = fetch_rows(db, sql, |r| Ok(Total { total: r.get(0)? })).await?;
    Ok(counted.first().map_or(0, |c| c.total))
}
