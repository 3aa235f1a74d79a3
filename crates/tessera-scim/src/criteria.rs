//! Filters checked against a resource type's schema and reduced to [`Criteria`]: attribute
//! names resolved to their definitions, comparison values converted to the attribute's type
//! (and case-folded where the schema says matching ignores case), `ne` and `null` rewritten.
//!
//! The store translates `Criteria` to SQL and [`Criteria::matches`] evaluates it in memory over
//! the resource JSON; a property test keeps the two in agreement, so every rule of comparison
//! lives here once:
//! - a multi-valued attribute matches when any of its values does;
//! - `a ne v` is `a pr and not (a eq v)`; `a eq null` is `not (a pr)`, `a ne null` is `a pr`;
//! - case-insensitive text is compared after [`fold`]; ordering is by code point;
//! - `co`, `sw`, `ew` with an empty value match whenever the attribute is present;
//! - dateTime values compare as instants (milliseconds), booleans only with `eq`/`ne`;
//! - an absent `primary` is `false` (RFC 7643 §2.4): present, and equal to `false`.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::schema::{AttrDef, AttrType, COMMON_ATTRIBUTES, ResourceKind, ResourceType, find_attr};
use crate::{ScimError, ScimType};

/// The case-folded form used wherever a schema says matching ignores case.
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Where a value lives: `attr`, `attr.sub`, or the same under an extension schema.
/// Inside [`Criteria::Any`], `attr` is a sub-attribute of the multi-valued attribute.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub extension: Option<&'static str>,
    pub attr: &'static AttrDef,
    pub sub: Option<&'static AttrDef>,
}

impl Target {
    pub fn def(&self) -> &'static AttrDef {
        self.sub.unwrap_or(self.attr)
    }

    /// The attribute's dotted name, for messages and mapping to columns.
    pub fn name(&self) -> String {
        match self.sub {
            Some(sub) => format!("{}.{}", self.attr.name, sub.name),
            None => self.attr.name.to_owned(),
        }
    }

    fn lookup<'a>(&self, doc: &'a Map<String, Value>) -> Option<&'a Value> {
        let container = match self.extension {
            Some(urn) => doc.get(urn)?.as_object()?,
            None => doc,
        };
        let value = container.get(self.attr.name)?;
        match self.sub {
            Some(sub) => value.as_object()?.get(sub.name),
            None => Some(value),
        }
    }
}

/// Comparisons after rewriting (`ne` is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A comparison value in the attribute's own type. Text is already folded when the attribute
/// ignores case.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Text(String),
    Bool(bool),
    Number(f64),
    /// A dateTime as milliseconds since the Unix epoch.
    Millis(i64),
}

#[derive(Debug, Clone)]
pub enum Criteria {
    Present(Target),
    Compare(Target, Cmp, Operand),
    /// Some value of the multi-valued `attr` (under `extension`) satisfies the inner criteria,
    /// whose targets name sub-attributes.
    Any {
        extension: Option<&'static str>,
        attr: &'static AttrDef,
        inner: Box<Criteria>,
    },
    Not(Box<Criteria>),
    And(Vec<Criteria>),
    Or(Vec<Criteria>),
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::invalid_filter(detail)
}

/// Resolves an attribute path against a resource type: common attributes, the core schema,
/// then extensions by URN.
pub fn resolve(rt: &ResourceType, path: &AttrPath) -> Option<Target> {
    let (extension, attrs): (Option<&'static str>, &'static [AttrDef]) = match &path.uri {
        None => (None, rt.schema.attributes),
        Some(uri) if uri.eq_ignore_ascii_case(rt.schema.id) => (None, rt.schema.attributes),
        Some(uri) => {
            let ext = rt.extension(uri)?;
            (Some(ext.id), ext.attributes)
        }
    };
    let attr = match extension {
        None => find_attr(COMMON_ATTRIBUTES, &path.name).or_else(|| find_attr(attrs, &path.name)),
        Some(_) => find_attr(attrs, &path.name),
    }?;
    let sub = match &path.sub {
        None => None,
        Some(name) => Some(attr.sub_attr(name)?),
    };
    Some(Target {
        extension,
        attr,
        sub,
    })
}

/// Attributes that are computed when a resource is read, and so cannot be filtered on.
fn filterable(kind: ResourceKind, target: &Target, within: Option<&AttrDef>) -> bool {
    let outer = within.map_or(target.attr.name, |w| w.name);
    let inner = match within {
        Some(_) => Some(target.attr.name),
        None => target.sub.map(|s| s.name),
    };
    match (kind, outer, inner) {
        (_, "meta", Some("resourceType" | "location" | "version")) => false,
        (ResourceKind::Group, "members", Some("display" | "$ref")) => false,
        (ResourceKind::User, "groups", Some(sub)) => sub == "value",
        (ResourceKind::User, "manager", Some("displayName")) => false,
        // Never returned, so never matched on either: a filter must not reveal it.
        (ResourceKind::User, "password", _) => false,
        _ => true,
    }
}

/// Checks a parsed filter against a resource type and converts it to [`Criteria`].
pub fn compile(rt: &ResourceType, filter: &Filter) -> Result<Criteria, ScimError> {
    Compiler { rt, within: None }.compile(filter)
}

/// Compiles filters, at the top level of a resource or inside a multi-valued attribute.
pub struct Compiler<'a> {
    rt: &'a ResourceType,
    /// The multi-valued attribute whose value filter is being compiled.
    within: Option<(Option<&'static str>, &'static AttrDef)>,
}

impl<'a> Compiler<'a> {
    /// A compiler for a value filter on the multi-valued `attr` (as in a PATCH path).
    pub fn within(
        rt: &'a ResourceType,
        extension: Option<&'static str>,
        attr: &'static AttrDef,
    ) -> Self {
        Compiler {
            rt,
            within: Some((extension, attr)),
        }
    }

    pub fn compile(&self, filter: &Filter) -> Result<Criteria, ScimError> {
        Ok(match filter {
            Filter::Present(path) => self.leaf(path, None)?,
            Filter::Compare(path, op, value) => self.leaf(path, Some((*op, value)))?,
            Filter::ValuePath(path, inner) => {
                let target = self.target(path)?;
                if !target.attr.multi || target.attr.ty != AttrType::Complex || path.sub.is_some() {
                    return Err(invalid(format!(
                        "'{path}[...]' needs a multi-valued complex attribute"
                    )));
                }
                let nested = Compiler {
                    rt: self.rt,
                    within: Some((target.extension, target.attr)),
                };
                Criteria::Any {
                    extension: target.extension,
                    attr: target.attr,
                    inner: Box::new(nested.compile(inner)?),
                }
            }
            Filter::Not(inner) => Criteria::Not(Box::new(self.compile(inner)?)),
            Filter::And(items) => Criteria::And(
                items
                    .iter()
                    .map(|f| self.compile(f))
                    .collect::<Result<_, _>>()?,
            ),
            Filter::Or(items) => Criteria::Or(
                items
                    .iter()
                    .map(|f| self.compile(f))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn target(&self, path: &AttrPath) -> Result<Target, ScimError> {
        let unknown = || invalid(format!("'{path}' is not an attribute of {}", self.rt.id));
        let target = match self.within {
            None => resolve(self.rt, path).ok_or_else(unknown)?,
            Some((_, outer)) => {
                if path.uri.is_some() || path.sub.is_some() {
                    return Err(unknown());
                }
                Target {
                    extension: None,
                    attr: outer.sub_attr(&path.name).ok_or_else(|| {
                        invalid(format!(
                            "'{}' is not a sub-attribute of {}",
                            path, outer.name
                        ))
                    })?,
                    sub: None,
                }
            }
        };
        if !filterable(self.rt.kind, &target, self.within.map(|w| w.1)) {
            return Err(invalid(format!(
                "'{path}' is computed when read and cannot be filtered on"
            )));
        }
        Ok(target)
    }

    /// A comparison or presence test on one path. A multi-valued attribute becomes `Any` over
    /// its values; a complex attribute without a sub-attribute means its `value`.
    fn leaf(
        &self,
        path: &AttrPath,
        comparison: Option<(CompareOp, &CompValue)>,
    ) -> Result<Criteria, ScimError> {
        let make = |t: Target| match comparison {
            None => Ok(Criteria::Present(t)),
            Some((op, value)) => compare(t, op, value),
        };
        let mut target = self.target(path)?;
        if target.attr.ty == AttrType::Complex && target.sub.is_none() && comparison.is_some() {
            target.sub = Some(target.attr.sub_attr("value").ok_or_else(|| {
                invalid(format!(
                    "'{path}' is complex: compare one of its sub-attributes"
                ))
            })?);
        }
        if !target.attr.multi {
            return make(target);
        }
        // Multi-valued: `emails.value eq x` means some value's `value` equals x.
        let element = Target {
            extension: None,
            attr: match target.sub {
                Some(sub) => sub,
                None => {
                    // `emails pr`: some value exists.
                    return Ok(Criteria::Present(target));
                }
            },
            sub: None,
        };
        let outer = (target.extension, target.attr);
        rewrite_any(make(element)?, outer)
    }
}

/// Moves `Not`/`And` produced by a rewritten `ne` outside the `Any`, so that
/// `emails.value ne x` means "has a value, and no value equals x".
fn rewrite_any(
    criteria: Criteria,
    (extension, attr): (Option<&'static str>, &'static AttrDef),
) -> Result<Criteria, ScimError> {
    let any = |inner: Criteria| Criteria::Any {
        extension,
        attr,
        inner: Box::new(inner),
    };
    Ok(match criteria {
        Criteria::And(items) => Criteria::And(
            items
                .into_iter()
                .map(|c| rewrite_any(c, (extension, attr)))
                .collect::<Result<_, _>>()?,
        ),
        Criteria::Not(inner) => Criteria::Not(Box::new(rewrite_any(*inner, (extension, attr))?)),
        other => any(other),
    })
}

fn compare(target: Target, op: CompareOp, value: &CompValue) -> Result<Criteria, ScimError> {
    let def = target.def();
    let name = target.name();
    if matches!(value, CompValue::Null) {
        return match op {
            CompareOp::Eq => Ok(Criteria::Not(Box::new(Criteria::Present(target)))),
            CompareOp::Ne => Ok(Criteria::Present(target)),
            _ => Err(invalid(format!(
                "'{name} {} null' is not a valid comparison",
                op.as_str()
            ))),
        };
    }
    let cmp = match op {
        CompareOp::Eq | CompareOp::Ne => Cmp::Eq,
        CompareOp::Co => Cmp::Co,
        CompareOp::Sw => Cmp::Sw,
        CompareOp::Ew => Cmp::Ew,
        CompareOp::Gt => Cmp::Gt,
        CompareOp::Ge => Cmp::Ge,
        CompareOp::Lt => Cmp::Lt,
        CompareOp::Le => Cmp::Le,
    };
    let not_for = |what: &str| {
        invalid(format!(
            "'{}' cannot be used with {name}, which is {what}",
            op.as_str()
        ))
    };
    let operand = match def.ty {
        t if t.is_textual() => {
            let text = match value {
                CompValue::Str(s) => s.clone(),
                CompValue::Number(n) => n.to_string(),
                CompValue::Bool(b) => b.to_string(),
                CompValue::Null => unreachable!("handled above"),
            };
            Operand::Text(if def.case_exact { text } else { fold(&text) })
        }
        AttrType::Boolean => {
            if cmp != Cmp::Eq {
                return Err(not_for("a boolean"));
            }
            match value {
                CompValue::Bool(b) => Operand::Bool(*b),
                CompValue::Str(s) if s.eq_ignore_ascii_case("true") => Operand::Bool(true),
                CompValue::Str(s) if s.eq_ignore_ascii_case("false") => Operand::Bool(false),
                _ => {
                    return Err(invalid(format!(
                        "{name} is a boolean: compare it with true or false"
                    )));
                }
            }
        }
        AttrType::DateTime => {
            if matches!(cmp, Cmp::Co | Cmp::Sw | Cmp::Ew) {
                return Err(not_for("a dateTime"));
            }
            let CompValue::Str(s) = value else {
                return Err(invalid(format!(
                    "{name} is a dateTime: compare it with a quoted RFC 3339 time"
                )));
            };
            Operand::Millis(parse_millis(s).ok_or_else(|| {
                invalid(format!(
                    "'{s}' is not an RFC 3339 time (such as 2026-01-31T12:00:00Z)"
                ))
            })?)
        }
        AttrType::Integer | AttrType::Decimal => {
            if matches!(cmp, Cmp::Co | Cmp::Sw | Cmp::Ew) {
                return Err(not_for("a number"));
            }
            match value {
                CompValue::Number(n) => Operand::Number(n.as_f64().unwrap_or(f64::NAN)),
                _ => {
                    return Err(invalid(format!(
                        "{name} is a number: compare it with a number"
                    )));
                }
            }
        }
        _ => {
            return Err(invalid(format!(
                "{name} is complex: compare one of its sub-attributes"
            )));
        }
    };
    let comparison = Criteria::Compare(target, cmp, operand);
    Ok(if op == CompareOp::Ne {
        Criteria::And(vec![
            Criteria::Present(target),
            Criteria::Not(Box::new(comparison)),
        ])
    } else {
        comparison
    })
}

/// Parses an RFC 3339 time to milliseconds since the Unix epoch.
pub fn parse_millis(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_millis(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format).unwrap_or_default()
}

fn present(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// RFC 7643 §2.4: "If not specified, the value of `primary` SHALL be assumed to be false".
pub fn defaults_to_false(def: &AttrDef) -> bool {
    def.name == "primary" && def.ty == AttrType::Boolean
}

fn compare_value(value: &Value, def: &AttrDef, cmp: Cmp, operand: &Operand) -> bool {
    match operand {
        Operand::Text(want) => {
            let Some(have) = value.as_str() else {
                return false;
            };
            let have = if def.case_exact {
                std::borrow::Cow::Borrowed(have)
            } else {
                std::borrow::Cow::Owned(fold(have))
            };
            let have = have.as_ref();
            match cmp {
                Cmp::Eq => have == want,
                Cmp::Co => have.contains(want.as_str()),
                Cmp::Sw => have.starts_with(want.as_str()),
                Cmp::Ew => have.ends_with(want.as_str()),
                Cmp::Gt => have > want.as_str(),
                Cmp::Ge => have >= want.as_str(),
                Cmp::Lt => have < want.as_str(),
                Cmp::Le => have <= want.as_str(),
            }
        }
        Operand::Bool(want) => value.as_bool() == Some(*want),
        Operand::Number(want) => value.as_f64().is_some_and(|have| ordered(have, cmp, *want)),
        Operand::Millis(want) => value
            .as_str()
            .and_then(parse_millis)
            .is_some_and(|have| ordered(have, cmp, *want)),
    }
}

fn ordered<T: PartialOrd>(have: T, cmp: Cmp, want: T) -> bool {
    match cmp {
        Cmp::Eq => have == want,
        Cmp::Gt => have > want,
        Cmp::Ge => have >= want,
        Cmp::Lt => have < want,
        Cmp::Le => have <= want,
        Cmp::Co | Cmp::Sw | Cmp::Ew => false,
    }
}

impl Criteria {
    /// Evaluates the criteria against a resource as it is returned (canonical attribute names).
    pub fn matches(&self, doc: &Map<String, Value>) -> bool {
        match self {
            Criteria::Present(target) => {
                defaults_to_false(target.def()) || present(target.lookup(doc))
            }
            Criteria::Compare(target, cmp, operand) => match target.lookup(doc) {
                Some(v) if present(Some(v)) => compare_value(v, target.def(), *cmp, operand),
                _ => defaults_to_false(target.def()) && *operand == Operand::Bool(false),
            },
            Criteria::Any {
                extension,
                attr,
                inner,
            } => {
                let container = match extension {
                    Some(urn) => doc.get(*urn).and_then(Value::as_object),
                    None => Some(doc),
                };
                container
                    .and_then(|c| c.get(attr.name))
                    .and_then(Value::as_array)
                    .is_some_and(|values| {
                        values
                            .iter()
                            .filter_map(Value::as_object)
                            .any(|element| inner.matches(element))
                    })
            }
            Criteria::Not(inner) => !inner.matches(doc),
            Criteria::And(items) => items.iter().all(|c| c.matches(doc)),
            Criteria::Or(items) => items.iter().any(|c| c.matches(doc)),
        }
    }
}

/// `sortBy`: a single-valued attribute that is not complex.
pub fn sort_target(rt: &ResourceType, sort_by: &str) -> Result<Target, ScimError> {
    let bad = |why: &str| {
        ScimError::bad_request(ScimType::InvalidValue, format!("sortBy '{sort_by}' {why}"))
    };
    let path = crate::filter::parse_path(sort_by, Default::default())
        .ok()
        .filter(|p| p.filter.is_none())
        .ok_or_else(|| bad("is not an attribute path"))?
        .attr;
    let target =
        resolve(rt, &path).ok_or_else(|| bad(&format!("is not an attribute of {}", rt.id)))?;
    if target.attr.multi || target.def().ty == AttrType::Complex {
        return Err(bad("must name a single-valued, simple attribute"));
    }
    if !filterable(rt.kind, &target, None) {
        return Err(bad("is computed when read and cannot be sorted on"));
    }
    Ok(target)
}
