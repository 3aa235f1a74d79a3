//! The PATCH engine (RFC 7644 §3.5.2), tolerant of what Entra ID and Okta really send:
//! - `op` in any case (`Add`, `Replace`, `REMOVE`);
//! - booleans as strings (`"False"`), a manager as a bare id, one-element arrays for
//!   single-valued complex attributes;
//! - add/replace without a path whose value has plain, dotted (`name.givenName`) and
//!   URN-prefixed keys (Entra's `aadOptscim062020` form, Okta's `{"active": false}`);
//! - add/replace on `emails[type eq "work"].value` when no such email exists creates it, and
//!   several operations on the same filter update that one element;
//! - remove on a filtered sub-attribute *with* a value removes it (it never sets it);
//! - group members removed by `members[value eq "id"]` or by `path: members` with a value array.
//!
//! It works on a resource's attribute document. Group `members` never enter the document:
//! membership operations come back as [`MemberChange`]s, so a group of any size is changed
//! without loading its members.

use serde_json::{Map, Value};

use crate::criteria::{Cmp, Compiler, Criteria, Operand, Target, resolve};
use crate::filter::{AttrPath, Filter, FilterLimits, PatchPath, parse_path};
use crate::resource::{check_required, normalize_value};
use crate::schema::{AttrDef, AttrType, Mutability, ResourceKind, ResourceType};
use crate::{ScimError, ScimType};

pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Most operations in one PATCH request.
pub const MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone)]
pub struct PatchOperation {
    pub op: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// A change to a group's members, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Add(Vec<String>),
    Remove(Vec<String>),
    /// The members become exactly these.
    Replace(Vec<String>),
}

fn syntax(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidSyntax, detail)
}

fn invalid_path(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidPath, detail)
}

fn invalid_value(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

/// Reads a PatchOp body.
pub fn parse_patch(body: &Value) -> Result<Vec<PatchOperation>, ScimError> {
    let Value::Object(body) = body else {
        return Err(syntax("the body must be a PatchOp JSON object"));
    };
    let field = |name: &str| {
        body.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if let Some(schemas) = field("schemas") {
        let listed = schemas.as_array().is_some_and(|s| {
            s.iter().any(|u| {
                u.as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
            })
        });
        if !listed {
            return Err(syntax(format!("'schemas' must contain {PATCH_OP_SCHEMA}")));
        }
    }
    let Some(Value::Array(ops)) = field("Operations") else {
        return Err(syntax("a PatchOp needs an 'Operations' array"));
    };
    if ops.is_empty() {
        return Err(syntax("'Operations' is empty"));
    }
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::bad_request(
            ScimType::TooMany,
            format!("at most {MAX_OPERATIONS} operations per PATCH"),
        ));
    }
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let Value::Object(op) = op else {
                return Err(syntax(format!("operation {} is not an object", i + 1)));
            };
            let get = |name: &str| {
                op.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            };
            let kind = match get("op")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("add") => OpKind::Add,
                Some("remove") => OpKind::Remove,
                Some("replace") => OpKind::Replace,
                _ => {
                    return Err(syntax(format!(
                        "operation {}: 'op' must be add, remove or replace",
                        i + 1
                    )));
                }
            };
            let path = match get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(p.clone()),
                Some(_) => {
                    return Err(invalid_path(format!(
                        "operation {}: 'path' must be a string",
                        i + 1
                    )));
                }
            };
            Ok(PatchOperation {
                op: kind,
                path,
                value: get("value").cloned(),
            })
        })
        .collect()
}

/// Applies operations to an attribute document, all or nothing: on error the document is
/// unchanged. Returns the member changes (groups only).
pub fn apply_patch(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    ops: &[PatchOperation],
) -> Result<Vec<MemberChange>, ScimError> {
    let mut work = doc.clone();
    let mut members = Vec::new();
    for op in ops {
        apply_one(rt, &mut work, op, &mut members)?;
    }
    check_required(rt, &work).map_err(|e| {
        ScimError::bad_request(
            ScimType::Mutability,
            format!("{}: it cannot be removed", e.detail),
        )
    })?;
    *doc = work;
    Ok(members)
}

fn apply_one(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    op: &PatchOperation,
    members: &mut Vec<MemberChange>,
) -> Result<(), ScimError> {
    let Some(path) = &op.path else {
        if op.op == OpKind::Remove {
            return Err(ScimError::bad_request(
                ScimType::NoTarget,
                "remove needs a 'path'",
            ));
        }
        let Some(Value::Object(values)) = &op.value else {
            return Err(invalid_value(
                "add or replace without a 'path' needs an object 'value' of attributes",
            ));
        };
        for (key, value) in values {
            // A whole extension: `{"urn:…:enterprise:2.0:User": {"department": "x"}}`.
            if let Some(ext) = rt.extension(key) {
                let Value::Object(attrs) = value else {
                    return Err(invalid_value(format!(
                        "'{key}' must be an object of its attributes"
                    )));
                };
                for (name, v) in attrs
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("schemas"))
                {
                    apply_path(
                        rt,
                        doc,
                        op.op,
                        &format!("{}:{name}", ext.id),
                        Some(v),
                        members,
                        true,
                    )?;
                }
                continue;
            }
            apply_path(rt, doc, op.op, key, Some(value), members, true)?;
        }
        return Ok(());
    };
    apply_path(rt, doc, op.op, path, op.value.as_ref(), members, false)
}

/// Applies one operation at a path. `from_object` marks a key of a path-less value, where
/// read-only attributes (Okta sends `id` there) are skipped rather than refused.
fn apply_path(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    op: OpKind,
    path_text: &str,
    value: Option<&Value>,
    members: &mut Vec<MemberChange>,
    from_object: bool,
) -> Result<(), ScimError> {
    let path = parse_path(path_text, FilterLimits::default())?;
    // A whole extension as the path.
    let whole_ext = path
        .attr
        .uri
        .as_ref()
        .and_then(|uri| rt.extension(&format!("{uri}:{}", path.attr.name)));
    if let Some(ext) = whole_ext {
        if path.filter.is_some() || path.attr.sub.is_some() {
            return Err(invalid_path(format!("'{path_text}' is not a valid path")));
        }
        return match (op, value) {
            (OpKind::Remove, _) => {
                doc.remove(ext.id);
                Ok(())
            }
            (_, Some(Value::Object(attrs))) => {
                for (name, v) in attrs
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("schemas"))
                {
                    apply_path(
                        rt,
                        doc,
                        op,
                        &format!("{}:{name}", ext.id),
                        Some(v),
                        members,
                        true,
                    )?;
                }
                Ok(())
            }
            _ => Err(invalid_value(format!(
                "'{path_text}' needs an object value"
            ))),
        };
    }
    if is_readonly_key(&path.attr) {
        return if from_object {
            Ok(())
        } else {
            Err(mutability(path_text))
        };
    }
    let target = resolve(rt, &path.attr)
        .ok_or_else(|| invalid_path(format!("'{path_text}' is not an attribute of {}", rt.id)))?;
    if rt.kind == ResourceKind::Group && target.attr.name == "members" {
        return member_change(op, &path, value, members);
    }
    let def = target.def();
    if target.attr.mutability == Mutability::ReadOnly || def.mutability == Mutability::ReadOnly {
        return if from_object {
            Ok(())
        } else {
            Err(mutability(path_text))
        };
    }
    if op != OpKind::Remove && value.is_none() {
        return Err(invalid_value(format!(
            "'{path_text}': add and replace need a 'value'"
        )));
    }
    let container = container_mut(doc, target.extension);
    let result = match (&path.filter, target.attr.multi) {
        (Some(filter), true) => apply_filtered(
            rt,
            container,
            op,
            &target,
            filter,
            path.sub.as_deref(),
            value,
            path_text,
        ),
        (Some(_), false) => Err(invalid_path(format!(
            "'{path_text}': a value filter needs a multi-valued attribute"
        ))),
        (None, true) => apply_multi(container, op, &target, value, path_text),
        (None, false) => apply_single(container, op, &target, value, path_text),
    };
    if let Some(ext) = target.extension
        && doc
            .get(ext)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        doc.remove(ext);
    }
    result
}

fn mutability(path: &str) -> ScimError {
    ScimError::bad_request(ScimType::Mutability, format!("'{path}' is read-only"))
}

/// `id`, `meta` and `schemas` (the last is no attribute at all but clients send it).
fn is_readonly_key(path: &AttrPath) -> bool {
    path.uri.is_none()
        && ["id", "meta", "schemas"]
            .iter()
            .any(|k| path.name.eq_ignore_ascii_case(k))
}

fn container_mut<'a>(
    doc: &'a mut Map<String, Value>,
    extension: Option<&str>,
) -> &'a mut Map<String, Value> {
    match extension {
        None => doc,
        Some(ext) => doc
            .entry(ext.to_owned())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("extension values are objects"),
    }
}

/// A single-valued attribute, or a sub-attribute of a single-valued complex one.
fn apply_single(
    container: &mut Map<String, Value>,
    op: OpKind,
    target: &Target,
    value: Option<&Value>,
    path: &str,
) -> Result<(), ScimError> {
    let attr = target.attr;
    match (op, target.sub) {
        (OpKind::Remove, None) => {
            container.remove(attr.name);
        }
        (OpKind::Remove, Some(sub)) => {
            if let Some(Value::Object(object)) = container.get_mut(attr.name) {
                object.remove(sub.name);
                if object.is_empty() {
                    container.remove(attr.name);
                }
            }
        }
        (_, Some(sub)) => {
            let v = normalize_value(sub, value.unwrap_or(&Value::Null), path)?;
            let object = container
                .entry(attr.name.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(object) = object else {
                return Err(invalid_path(format!(
                    "'{path}': {} is not complex",
                    attr.name
                )));
            };
            set_or_remove(object, sub.name, v);
            if object.is_empty() {
                container.remove(attr.name);
            }
        }
        (_, None) => {
            let v = normalize_value(attr, value.unwrap_or(&Value::Null), path)?;
            match (attr.ty, v, container.get_mut(attr.name)) {
                // Add and replace on a complex attribute set the given sub-attributes and leave
                // the others (RFC 7644 §3.5.2.1, §3.5.2.3).
                (AttrType::Complex, Some(Value::Object(new)), Some(Value::Object(existing))) => {
                    existing.extend(new);
                }
                (_, v, _) => set_or_remove(container, attr.name, v),
            }
        }
    }
    Ok(())
}

fn set_or_remove(object: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            object.insert(key.to_owned(), v);
        }
        None => {
            object.remove(key);
        }
    }
}

/// A multi-valued attribute without a value filter.
fn apply_multi(
    container: &mut Map<String, Value>,
    op: OpKind,
    target: &Target,
    value: Option<&Value>,
    path: &str,
) -> Result<(), ScimError> {
    let attr = target.attr;
    if let Some(sub) = target.sub {
        // `emails.type`: applies to every value.
        let v = match op {
            OpKind::Remove => None,
            _ => normalize_value(sub, value.unwrap_or(&Value::Null), path)?,
        };
        let items = values_mut(container, attr)?;
        if items.is_empty() && v.is_some() {
            items.push(Value::Object(Map::new()));
        }
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            set_or_remove(item, sub.name, v.clone());
        }
        items.retain(|i| i.as_object().is_some_and(|o| !o.is_empty()));
        if items.is_empty() {
            container.remove(attr.name);
        }
        return check_primary(container, attr, path);
    }
    let new = normalize_value(attr, value.unwrap_or(&Value::Null), path)?;
    let new_items = match new {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    match op {
        OpKind::Replace => set_or_remove(
            container,
            attr.name,
            (!new_items.is_empty()).then_some(Value::Array(new_items)),
        ),
        OpKind::Add => {
            let adds_primary = new_items.iter().any(is_primary);
            let items = values_mut(container, attr)?;
            if adds_primary {
                items
                    .iter_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(|o| {
                        o.remove("primary");
                    });
            }
            for item in new_items {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            if items.is_empty() {
                container.remove(attr.name);
            }
        }
        OpKind::Remove => {
            if value.is_none() || new_items.is_empty() {
                container.remove(attr.name);
            } else if let Some(Value::Array(items)) = container.get_mut(attr.name) {
                // Remove with a value array: drop the values named (by `value`, or whole).
                items.retain(|existing| {
                    !new_items
                        .iter()
                        .any(|gone| match (gone.get("value"), existing.get("value")) {
                            (Some(a), Some(b)) => a == b,
                            _ => gone == existing,
                        })
                });
                if items.is_empty() {
                    container.remove(attr.name);
                }
            }
        }
    }
    check_primary(container, attr, path)
}

/// The values of a multi-valued attribute, as a (possibly new, empty) array.
fn values_mut<'a>(
    container: &'a mut Map<String, Value>,
    attr: &AttrDef,
) -> Result<&'a mut Vec<Value>, ScimError> {
    match container
        .entry(attr.name.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(items) => Ok(items),
        _ => Err(invalid_value(format!(
            "'{}' holds a single value, not a list",
            attr.name
        ))),
    }
}

fn is_primary(v: &Value) -> bool {
    v.get("primary") == Some(&Value::Bool(true))
}

fn check_primary(
    container: &Map<String, Value>,
    attr: &AttrDef,
    path: &str,
) -> Result<(), ScimError> {
    let count = container
        .get(attr.name)
        .and_then(Value::as_array)
        .map_or(0, |items| items.iter().filter(|v| is_primary(v)).count());
    if count > 1 {
        return Err(invalid_value(format!(
            "'{path}': at most one value may be primary"
        )));
    }
    Ok(())
}

/// `emails[type eq "work"]` or `emails[type eq "work"].value`.
#[allow(clippy::too_many_arguments)]
fn apply_filtered(
    rt: &ResourceType,
    container: &mut Map<String, Value>,
    op: OpKind,
    target: &Target,
    filter: &Filter,
    sub_name: Option<&str>,
    value: Option<&Value>,
    path: &str,
) -> Result<(), ScimError> {
    let attr = target.attr;
    if target.sub.is_some() {
        return Err(invalid_path(format!(
            "'{path}': a value filter follows an attribute"
        )));
    }
    let criteria = Compiler::within(rt, target.extension, attr)
        .compile(filter)
        .map_err(|e| invalid_path(format!("'{path}': {}", e.detail)))?;
    let sub = match sub_name {
        None => None,
        Some(name) => Some(attr.sub_attr(name).ok_or_else(|| {
            invalid_path(format!(
                "'{path}': '{name}' is not a sub-attribute of {}",
                attr.name
            ))
        })?),
    };
    if sub.is_some_and(|s| s.mutability == Mutability::ReadOnly) {
        return Err(mutability(path));
    }
    let new_value = match (op, sub) {
        (OpKind::Remove, _) => None,
        (_, Some(sub)) => normalize_value(sub, value.unwrap_or(&Value::Null), path)?,
        (_, None) => {
            let single = AttrDef {
                multi: false,
                ..*attr
            };
            normalize_value(&single, value.unwrap_or(&Value::Null), path)?
        }
    };
    let items = values_mut(container, attr)?;
    let matching: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, v)| v.as_object().is_some_and(|o| criteria.matches(o)))
        .map(|(i, _)| i)
        .collect();
    match op {
        OpKind::Remove => {
            for &i in matching.iter().rev() {
                match sub {
                    None => {
                        items.remove(i);
                    }
                    Some(sub) => {
                        if let Some(o) = items[i].as_object_mut() {
                            o.remove(sub.name);
                            if o.is_empty() {
                                items.remove(i);
                            }
                        }
                    }
                }
            }
        }
        OpKind::Add | OpKind::Replace => {
            if matching.is_empty() {
                // Entra expects `emails[type eq "work"].value` to create the work email.
                let Some(mut element) = element_from(&criteria) else {
                    return Err(ScimError::bad_request(
                        ScimType::NoTarget,
                        format!(
                            "'{path}' matches no value, and its filter does not describe a new one"
                        ),
                    ));
                };
                merge_into(&mut element, sub, new_value.clone(), op);
                if !element.is_empty() {
                    items.push(Value::Object(element));
                }
            } else {
                for &i in matching.iter().rev() {
                    let Some(element) = items[i].as_object_mut() else {
                        continue;
                    };
                    merge_into(element, sub, new_value.clone(), op);
                    if element.is_empty() {
                        items.remove(i);
                    }
                }
            }
        }
    }
    if items.is_empty() {
        container.remove(attr.name);
    }
    check_primary(container, attr, path)
}

fn merge_into(
    element: &mut Map<String, Value>,
    sub: Option<&AttrDef>,
    value: Option<Value>,
    op: OpKind,
) {
    match (sub, value) {
        (Some(sub), v) => set_or_remove(element, sub.name, v),
        (None, Some(Value::Object(new))) if op == OpKind::Add => element.extend(new),
        (None, Some(Value::Object(new))) => {
            // Replace keeps what identifies the element only if the new value says so.
            *element = new;
        }
        (None, _) => element.clear(),
    }
}

/// The element a filter of `eq` comparisons describes: `type eq "work"` → `{"type": "work"}`.
fn element_from(criteria: &Criteria) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    let parts: Vec<&Criteria> = match criteria {
        Criteria::And(items) => items.iter().collect(),
        one => vec![one],
    };
    for part in parts {
        let Criteria::Compare(target, Cmp::Eq, operand) = part else {
            return None;
        };
        let value = match operand {
            Operand::Text(s) => Value::String(s.clone()),
            Operand::Bool(b) => Value::Bool(*b),
            _ => return None,
        };
        out.insert(target.attr.name.to_owned(), value);
    }
    Some(out)
}

/// Member ids from a `members` value: objects with `value`, or bare ids.
pub fn member_ids(value: Option<&Value>) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
    };
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .and_then(|(_, v)| v.as_str())
                .ok_or_else(|| invalid_value("each member needs a 'value' with the member's id"))?,
            _ => {
                return Err(invalid_value(
                    "each member must be an object with a 'value'",
                ));
            }
        };
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

fn member_change(
    op: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
    changes: &mut Vec<MemberChange>,
) -> Result<(), ScimError> {
    if path.attr.sub.is_some() || path.sub.is_some() {
        return Err(invalid_path(
            "members can only be changed whole, not by sub-attribute",
        ));
    }
    match (op, &path.filter) {
        (OpKind::Add, None) => changes.push(MemberChange::Add(member_ids(value)?)),
        (OpKind::Replace, None) => changes.push(MemberChange::Replace(member_ids(value)?)),
        (OpKind::Remove, None) => match value {
            // Entra's default dialect: remove with a value array.
            Some(v) if !v.is_null() => changes.push(MemberChange::Remove(member_ids(Some(v))?)),
            _ => changes.push(MemberChange::Replace(Vec::new())),
        },
        (OpKind::Remove, Some(filter)) => {
            changes.push(MemberChange::Remove(filter_member_ids(filter)?))
        }
        (_, Some(_)) => {
            return Err(invalid_path(
                "members can be added or replaced with 'path': 'members' and a value array",
            ));
        }
    }
    Ok(())
}

/// `members[value eq "a"]`, or several joined with `or`.
fn filter_member_ids(filter: &Filter) -> Result<Vec<String>, ScimError> {
    let unsupported =
        || invalid_path("members can be selected only by 'value eq \"id\"' (joined with 'or')");
    let parts: Vec<&Filter> = match filter {
        Filter::Or(items) => items.iter().collect(),
        one => vec![one],
    };
    parts
        .into_iter()
        .map(|f| match f {
            Filter::Compare(p, crate::filter::CompareOp::Eq, crate::filter::CompValue::Str(id))
                if p.uri.is_none() && p.sub.is_none() && p.name.eq_ignore_ascii_case("value") =>
            {
                Ok(id.clone())
            }
            _ => Err(unsupported()),
        })
        .collect()
}

#[cfg(test)]
mod tests;
