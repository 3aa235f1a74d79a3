//! SCIM [`Criteria`] → SQL, for both backends.
//!
//! Written by hand rather than with a query builder: nearly every leaf is a backend-specific
//! JSON or text expression (`json_extract`/`json_each` against `#>>`/`jsonb_array_elements`,
//! `instr` against `strpos`, collations), so a builder would only wrap raw fragments. Safety
//! does not depend on it either: every value is a bound parameter, and the only identifiers
//! written into the text are fixed column names chosen here.
//!
//! Attributes Tessera keeps in columns (`id`, `userName`, `externalId`, group `displayName`,
//! `active`, `meta.created`, `meta.lastModified`) and in side tables (e-mails, memberships)
//! use their indexes; all others are read from the stored document. Every leaf yields TRUE or
//! FALSE, never NULL, so `not` agrees with the in-memory evaluator.

use std::fmt::Write as _;

use tessera_scim::criteria::{Cmp, Criteria, Operand, Target, defaults_to_false};
use tessera_scim::schema::{AttrDef, AttrType, ResourceKind};

use crate::Backend;

pub(crate) use crate::sql::{Arg, Sql, bind_args};

/// A value to compare, as SQL.
#[derive(Debug, Clone)]
enum Expr {
    /// A text expression already case-folded (a `_lower`/`_folded` column or a folded CASE).
    Folded(String),
    /// A text expression as stored; folded here when the attribute ignores case.
    Raw(String),
    /// A JSON path into a document column: (document expression, keys).
    Json(String, Vec<&'static str>),
    /// Epoch milliseconds.
    Millis(String),
    /// A boolean column expression.
    Bool(String),
}

/// Which row a criteria applies to: the resource itself, or one element of a multi-valued
/// attribute.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    Resource(ResourceKind),
    Email,
    UserGroup,
    GroupMember,
    /// An element of a multi-valued attribute held in the document: its SQL expression.
    JsonElement(&'a str),
}

pub(crate) struct Translator {
    pub backend: Backend,
    pub data_source_param: usize,
}

impl Translator {
    /// Appends the SQL condition for `criteria` on the resource row (`i` for identities, `g`
    /// for groups).
    pub fn condition(&self, sql: &mut Sql, kind: ResourceKind, criteria: &Criteria) {
        self.cond(sql, Scope::Resource(kind), criteria);
    }

    fn cond(&self, sql: &mut Sql, scope: Scope<'_>, criteria: &Criteria) {
        match criteria {
            Criteria::And(items) | Criteria::Or(items) => {
                let joiner = if matches!(criteria, Criteria::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                sql.push("(");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        sql.push(joiner);
                    }
                    self.cond(sql, scope, item);
                }
                sql.push(")");
            }
            Criteria::Not(inner) => {
                sql.push("NOT (");
                self.cond(sql, scope, inner);
                sql.push(")");
            }
            Criteria::Present(target) => {
                if defaults_to_false(target.def()) {
                    // An element's `primary` always has a value: false when not given.
                    sql.push("1 = 1");
                } else if target.attr.multi && target.sub.is_none() {
                    // `emails pr`: some value exists.
                    self.any(sql, scope, target.extension, target.attr, None);
                } else {
                    let expr = self.expr(scope, target);
                    self.present(sql, &expr);
                }
            }
            Criteria::Compare(target, cmp, operand) => {
                let expr = self.expr(scope, target);
                self.compare(sql, &expr, target.def(), *cmp, operand);
            }
            Criteria::Any {
                extension,
                attr,
                inner,
            } => self.any(sql, scope, *extension, attr, Some(inner)),
        }
    }

    /// Some element of a multi-valued attribute (satisfies `inner`).
    fn any(
        &self,
        sql: &mut Sql,
        scope: Scope<'_>,
        extension: Option<&'static str>,
        attr: &'static AttrDef,
        inner: Option<&Criteria>,
    ) {
        let ds = self.data_source_param;
        let (element_scope, open) = match (scope, extension, attr.name) {
            (Scope::Resource(ResourceKind::User), None, "emails") => (
                Scope::Email,
                format!("i.id IN (SELECT e.identity_id FROM identity_emails e WHERE e.data_source_id = ${ds}"),
            ),
            (Scope::Resource(ResourceKind::User), None, "groups") => (
                Scope::UserGroup,
                "i.id IN (SELECT gm.member_id FROM group_members gm WHERE gm.member_kind = 'identity'".to_owned(),
            ),
            (Scope::Resource(ResourceKind::Group), None, "members") => (
                Scope::GroupMember,
                "g.id IN (SELECT gm.group_id FROM group_members gm WHERE 1 = 1".to_owned(),
            ),
            (Scope::Resource(kind), ext, name) => {
                let doc = doc_column(kind);
                let mut keys: Vec<&'static str> = ext.into_iter().collect();
                keys.push(name);
                let open = match self.backend {
                    Backend::Sqlite => {
                        format!("EXISTS (SELECT 1 FROM json_each({doc}, {}) je WHERE 1 = 1", sqlite_path_literal(&keys))
                    }
                    Backend::Postgres => format!(
                        "EXISTS (SELECT 1 FROM jsonb_array_elements(({doc})::jsonb #> {}) je(v) WHERE 1 = 1",
                        pg_path_literal(&keys)
                    ),
                };
                let element = match self.backend {
                    Backend::Sqlite => Scope::JsonElement("je.value"),
                    Backend::Postgres => Scope::JsonElement("je.v"),
                };
                (element, open)
            }
            // Multi-valued attributes are never nested in SCIM.
            _ => {
                sql.push("1 = 0");
                return;
            }
        };
        sql.push(&open);
        if let Some(inner) = inner {
            sql.push(" AND ");
            self.cond(sql, element_scope, inner);
        }
        sql.push(")");
    }

    fn expr(&self, scope: Scope<'_>, target: &Target) -> Expr {
        let sub = target.sub.map(|s| s.name);
        match (scope, target.extension, target.attr.name, sub) {
            (Scope::Resource(ResourceKind::User), None, "id", None) => Expr::Raw("i.id".into()),
            (Scope::Resource(ResourceKind::User), None, "userName", None) => {
                Expr::Folded("i.user_name_lower".into())
            }
            (Scope::Resource(ResourceKind::User), None, "externalId", None) => {
                Expr::Raw("i.external_id".into())
            }
            (Scope::Resource(ResourceKind::User), None, "meta", Some("created")) => {
                Expr::Millis("i.created_at".into())
            }
            (Scope::Resource(ResourceKind::User), None, "meta", Some("lastModified")) => {
                Expr::Millis("i.updated_at".into())
            }
            (Scope::Resource(ResourceKind::Group), None, "id", None) => Expr::Raw("g.id".into()),
            (Scope::Resource(ResourceKind::Group), None, "displayName", None) => {
                Expr::Folded("g.display_name_lower".into())
            }
            (Scope::Resource(ResourceKind::Group), None, "externalId", None) => {
                Expr::Raw("g.external_id".into())
            }
            (Scope::Resource(ResourceKind::Group), None, "meta", Some("created")) => {
                Expr::Millis("g.created_at".into())
            }
            (Scope::Resource(ResourceKind::Group), None, "meta", Some("lastModified")) => {
                Expr::Millis("g.updated_at".into())
            }
            (Scope::Resource(kind), ext, name, sub) => {
                let mut keys: Vec<&'static str> = ext.into_iter().collect();
                keys.push(name);
                keys.extend(sub);
                Expr::Json(doc_column(kind).to_owned(), keys)
            }
            (Scope::Email, _, "value", _) => Expr::Folded("e.value_folded".into()),
            (Scope::Email, _, "type", _) => Expr::Folded("e.type_folded".into()),
            (Scope::Email, _, "display", _) => Expr::Folded("e.display_folded".into()),
            (Scope::Email, _, "primary", _) => Expr::Bool("e.is_primary".into()),
            (Scope::UserGroup, _, _, _) => Expr::Raw("gm.group_id".into()),
            (Scope::GroupMember, _, "type", _) => Expr::Folded(
                "CASE gm.member_kind WHEN 'identity' THEN 'user' ELSE 'group' END".into(),
            ),
            (Scope::GroupMember, _, _, _) => Expr::Raw("gm.member_id".into()),
            (Scope::JsonElement(element), _, name, _) => Expr::Json(element.to_owned(), vec![name]),
            (Scope::Email, _, _, _) => Expr::Raw("NULL".into()),
        }
    }

    /// The expression's value as SQL text, folded when `fold` is set and it is not already.
    fn text(&self, expr: &Expr, fold: bool) -> String {
        let raw = match expr {
            Expr::Folded(e) => return e.clone(),
            Expr::Raw(e) | Expr::Millis(e) | Expr::Bool(e) => e.clone(),
            Expr::Json(doc, keys) => self.json_text(doc, keys),
        };
        if fold {
            format!("{}({raw})", Sql::new(self.backend).fold())
        } else {
            raw
        }
    }

    fn json_text(&self, doc: &str, keys: &[&'static str]) -> String {
        match self.backend {
            Backend::Sqlite => format!("json_extract({doc}, {})", sqlite_path_literal(keys)),
            Backend::Postgres => {
                // A document column is TEXT; an element from jsonb_array_elements is already jsonb.
                let doc = if doc.starts_with("je.") {
                    doc.to_owned()
                } else {
                    format!("({doc})::jsonb")
                };
                format!("({doc} #>> {})", pg_path_literal(keys))
            }
        }
    }

    fn present(&self, sql: &mut Sql, expr: &Expr) {
        sql.push(&format!("{} IS NOT NULL", self.text(expr, false)));
    }

    fn compare(&self, sql: &mut Sql, expr: &Expr, def: &AttrDef, cmp: Cmp, operand: &Operand) {
        let pg = self.backend == Backend::Postgres;
        match (expr, operand) {
            (Expr::Bool(col), Operand::Bool(b)) => {
                sql.push(&format!("{col} = {}", if *b { "TRUE" } else { "FALSE" }));
            }
            (Expr::Json(..), Operand::Bool(b)) => {
                let value = self.text(expr, false);
                let want = match (pg, b) {
                    (true, true) => "'true'",
                    (true, false) => "'false'",
                    (false, true) => "1",
                    (false, false) => "0",
                };
                let absent = if defaults_to_false(def) && !b {
                    "IS NULL OR"
                } else {
                    "IS NOT NULL AND"
                };
                sql.push(&format!("({value} {absent} {value} = {want})"));
            }
            (Expr::Millis(col), Operand::Millis(ms)) => {
                sql.push(&format!("{col} {} ", ordering_op(cmp)));
                sql.arg(Arg::Int(*ms));
            }
            (_, Operand::Number(n)) => {
                let value = self.text(expr, false);
                let value = if pg {
                    format!("({value})::float8")
                } else {
                    value
                };
                sql.push(&format!(
                    "({value} IS NOT NULL AND {value} {} ",
                    ordering_op(cmp)
                ));
                sql.arg(Arg::Real(*n));
                sql.push(")");
            }
            (_, Operand::Text(want)) => {
                let value = self.text(expr, def.ty.is_textual() && !def.case_exact);
                if want.is_empty() && matches!(cmp, Cmp::Co | Cmp::Sw | Cmp::Ew) {
                    sql.push(&format!("{value} IS NOT NULL"));
                    return;
                }
                sql.push(&format!("({value} IS NOT NULL AND "));
                match (cmp, pg) {
                    (Cmp::Eq, _) => sql.push(&format!("{value} = ")).text_arg(want),
                    (Cmp::Co, false) => sql
                        .push(&format!("instr({value}, "))
                        .text_arg(want)
                        .push(") > 0"),
                    (Cmp::Co, true) => sql
                        .push(&format!("strpos({value}, "))
                        .text_arg(want)
                        .push(") > 0"),
                    (Cmp::Sw, false) => {
                        let n = want.chars().count() as i64;
                        sql.push(&format!("substr({value}, 1, "))
                            .arg(Arg::Int(n))
                            .push(") = ")
                            .text_arg(want)
                    }
                    (Cmp::Sw, true) => sql
                        .push(&format!("starts_with({value}, "))
                        .text_arg(want)
                        .push(")"),
                    (Cmp::Ew, false) => {
                        let n = want.chars().count() as i64;
                        sql.push(&format!("substr({value}, -"))
                            .arg(Arg::Int(n))
                            .push(") = ")
                            .text_arg(want)
                    }
                    (Cmp::Ew, true) => {
                        let n = want.chars().count() as i64;
                        // right() takes an int, and a bound integer is a bigint.
                        sql.push(&format!("right({value}, "))
                            .arg(Arg::Int(n))
                            .push("::int) = ")
                            .text_arg(want)
                    }
                    (_, false) => sql
                        .push(&format!("{value} {} ", ordering_op(cmp)))
                        .text_arg(want),
                    // Code-point order, as Rust compares strings, whatever the database locale.
                    (_, true) => sql
                        .push(&format!("({value}) COLLATE \"C\" {} ", ordering_op(cmp)))
                        .text_arg(want),
                };
                sql.push(")");
            }
            // Types and operands are matched by the criteria compiler; anything else is no match.
            _ => {
                sql.push("1 = 0");
            }
        }
    }

    /// An ORDER BY expression for `sortBy`.
    pub fn sort_expr(&self, kind: ResourceKind, target: &Target) -> String {
        let expr = self.expr(Scope::Resource(kind), target);
        let def = target.def();
        let text = self.text(&expr, def.ty == AttrType::String && !def.case_exact);
        match (self.backend, def.ty.is_textual()) {
            (Backend::Postgres, true) => format!("({text}) COLLATE \"C\""),
            _ => text,
        }
    }
}

fn ordering_op(cmp: Cmp) -> &'static str {
    match cmp {
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        _ => "=",
    }
}

fn doc_column(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "i.source_doc",
        ResourceKind::Group => "g.source_doc",
    }
}

/// Keys come from the static schema tables (letters, digits, `$`, `:` and `.` in URNs), never
/// from the request, so quoting them into a literal is safe; the assertion keeps it so.
fn checked(key: &str) -> &str {
    assert!(
        key.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '$' | ':' | '.' | '_' | '-')),
        "schema key {key:?} is not safe in a JSON path literal"
    );
    key
}

/// `'$."urn:…:User"."manager"."value"'`
fn sqlite_path_literal(keys: &[&str]) -> String {
    let mut out = String::from("'$");
    for key in keys {
        let _ = write!(out, ".\"{}\"", checked(key));
    }
    out.push('\'');
    out
}

/// `'{"urn:…:User","manager","value"}'`
fn pg_path_literal(keys: &[&str]) -> String {
    let inner: Vec<String> = keys.iter().map(|k| format!("\"{}\"", checked(k))).collect();
    format!("'{{{}}}'::text[]", inner.join(","))
}
