//! Resource bodies: checking and normalising what clients send, rendering what Tessera returns,
//! and `attributes`/`excludedAttributes` selection.
//!
//! A stored resource is its *attribute document*: a JSON object with canonical attribute names
//! (as the schema spells them), extension attributes under their schema URN, values of the
//! schema's types, and no empty values (`null`, `""`, `[]`, `{}` all mean "unassigned",
//! RFC 7643 §2.5). Group `members` are held apart from the document, as rows.

use serde_json::{Map, Value};

use crate::criteria::{format_millis, parse_millis, resolve};
use crate::filter::AttrPath;
use crate::schema::{AttrDef, AttrType, Mutability, ResourceType, Returned};
use crate::{ScimError, ScimType};

/// Longest string value accepted, in characters.
pub const MAX_STRING_CHARS: usize = 4096;

fn invalid_value(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

fn invalid_syntax(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidSyntax, detail)
}

/// Whether a key names a schema (`urn:…`) rather than an attribute.
fn is_urn(key: &str) -> bool {
    key.len() > 4 && key[..4].eq_ignore_ascii_case("urn:")
}

/// Checks and normalises a resource body (POST or PUT) into an attribute document.
///
/// Read-only attributes (`id`, `meta`, `groups`, …) are ignored, as RFC 7643 §2.2 asks. A
/// `password` stays in the document for the store to hash and remove. Schema URIs listed in `schemas` that Tessera
/// does not know are ignored (Entra lists a Microsoft one on every group), but attributes under
/// an unknown schema, and unknown attributes, are refused rather than silently dropped.
pub fn normalize_resource(
    rt: &ResourceType,
    body: &Value,
) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(body) = body else {
        return Err(invalid_syntax(format!(
            "the body must be a JSON object (a {})",
            rt.id
        )));
    };
    let mut doc = Map::new();
    for (key, value) in body {
        if key.eq_ignore_ascii_case("schemas") {
            check_schemas(rt, value)?;
            continue;
        }
        if is_urn(key) {
            let ext = rt.extension(key).ok_or_else(|| {
                invalid_value(format!("'{key}' is not a schema extension of {}", rt.id))
            })?;
            if value.is_null() {
                continue;
            }
            let Value::Object(attrs) = value else {
                return Err(invalid_value(format!(
                    "'{key}' must be an object of its attributes"
                )));
            };
            let mut ext_doc = Map::new();
            for (name, v) in attrs {
                let def = ext.attr(name).ok_or_else(|| {
                    invalid_value(format!("'{name}' is not an attribute of {}", ext.id))
                })?;
                if let Some(v) = normalize_value(def, v, name)? {
                    ext_doc.insert(def.name.to_owned(), v);
                }
            }
            if !ext_doc.is_empty() {
                doc.insert(ext.id.to_owned(), Value::Object(ext_doc));
            }
            continue;
        }
        let def = resolve(rt, &AttrPath::new(key))
            .filter(|t| t.extension.is_none())
            .map(|t| t.attr)
            .ok_or_else(|| invalid_syntax(format!("'{key}' is not an attribute of {}", rt.id)))?;
        if def.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(v) = normalize_value(def, value, def.name)? {
            doc.insert(def.name.to_owned(), v);
        }
    }
    check_required(rt, &doc)?;
    Ok(doc)
}

fn check_schemas(rt: &ResourceType, value: &Value) -> Result<(), ScimError> {
    let Value::Array(items) = value else {
        return Err(invalid_syntax("'schemas' must be an array of schema URIs"));
    };
    for item in items {
        let Some(uri) = item.as_str() else {
            return Err(invalid_syntax("'schemas' must be an array of schema URIs"));
        };
        // Every URN in the SCIM namespace is one Tessera knows; anything else a client lists
        // (such as Microsoft's ADSCIM group URI) carries no data Tessera would lose.
        let ietf = uri.len() >= 21 && uri[..21].eq_ignore_ascii_case("urn:ietf:params:scim:");
        if ietf && rt.schema_by_urn(uri).is_none() {
            return Err(invalid_value(format!(
                "'{uri}' is not a schema of {}",
                rt.id
            )));
        }
    }
    Ok(())
}

/// `userName` (User) or `displayName` (Group) must be present.
pub fn check_required(rt: &ResourceType, doc: &Map<String, Value>) -> Result<(), ScimError> {
    for def in rt.schema.attributes.iter().filter(|a| a.required) {
        if !doc.contains_key(def.name) {
            return Err(invalid_value(format!("{} requires '{}'", rt.id, def.name)));
        }
    }
    Ok(())
}

/// Checks and normalises one attribute's value. `Ok(None)` means unassigned.
pub fn normalize_value(
    def: &AttrDef,
    value: &Value,
    name: &str,
) -> Result<Option<Value>, ScimError> {
    if def.multi {
        let items: Vec<&Value> = match value {
            Value::Null => return Ok(None),
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = normalize_single(def, item, name)?
                && !out.contains(&v)
            {
                out.push(v);
            }
        }
        let primaries = out
            .iter()
            .filter(|v| v.get("primary") == Some(&Value::Bool(true)))
            .count();
        if primaries > 1 {
            return Err(invalid_value(format!(
                "at most one of '{name}' may be primary"
            )));
        }
        return Ok((!out.is_empty()).then_some(Value::Array(out)));
    }
    match value {
        // Entra sends single-valued complex attributes (manager) as one-element arrays.
        Value::Array(items) if def.ty == AttrType::Complex => match items.as_slice() {
            [] => Ok(None),
            [one] => normalize_single(def, one, name),
            _ => Err(invalid_value(format!("'{name}' is single-valued"))),
        },
        other => normalize_single(def, other, name),
    }
}

fn normalize_single(def: &AttrDef, value: &Value, name: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if def.ty != AttrType::Complex {
        return normalize_simple(def, value, name);
    }
    let object = match value {
        Value::Object(object) => object,
        // A bare value for a complex attribute with a `value` sub-attribute: Entra's manager.
        Value::String(_) | Value::Number(_) | Value::Bool(_) if def.sub_attr("value").is_some() => {
            let sub = def.sub_attr("value").expect("checked");
            return Ok(normalize_simple(sub, value, name)?.map(|v| {
                let mut m = Map::new();
                m.insert("value".into(), v);
                Value::Object(m)
            }));
        }
        _ => return Err(invalid_value(format!("'{name}' must be an object"))),
    };
    let mut out = Map::new();
    for (key, v) in object {
        let sub = def
            .sub_attr(key)
            .ok_or_else(|| invalid_value(format!("'{key}' is not a sub-attribute of '{name}'")))?;
        if sub.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(v) = normalize_simple(sub, v, &format!("{name}.{key}"))? {
            out.insert(sub.name.to_owned(), v);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

fn normalize_simple(def: &AttrDef, value: &Value, name: &str) -> Result<Option<Value>, ScimError> {
    let wrong = |what: &str| invalid_value(format!("'{name}' must be {what}"));
    Ok(match (def.ty, value) {
        (_, Value::Null) => None,
        (AttrType::Boolean, Value::Bool(b)) => Some(Value::Bool(*b)),
        // Entra's default dialect sends "True"/"False".
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => {
            Some(Value::Bool(true))
        }
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
            Some(Value::Bool(false))
        }
        (AttrType::Boolean, _) => return Err(wrong("true or false")),
        (AttrType::Integer, Value::Number(n)) if n.is_i64() => Some(value.clone()),
        (AttrType::Integer, _) => return Err(wrong("an integer")),
        (AttrType::Decimal, Value::Number(_)) => Some(value.clone()),
        (AttrType::Decimal, _) => return Err(wrong("a number")),
        (AttrType::DateTime, Value::String(s)) if parse_millis(s).is_some() => Some(value.clone()),
        (AttrType::DateTime, _) => return Err(wrong("an RFC 3339 time")),
        (AttrType::Complex, _) => return Err(wrong("an object")),
        (_, Value::String(s)) => {
            if s.chars().count() > MAX_STRING_CHARS {
                return Err(wrong(&format!("at most {MAX_STRING_CHARS} characters")));
            }
            (!s.is_empty()).then(|| value.clone())
        }
        // Numbers and booleans sent for strings are kept as their text.
        (_, Value::Number(n)) => Some(Value::String(n.to_string())),
        (_, Value::Bool(b)) => Some(Value::String(b.to_string())),
        (_, _) => return Err(wrong("a string")),
    })
}

/// Server-assigned metadata of a stored resource.
#[derive(Debug, Clone)]
pub struct Meta {
    pub created_ms: i64,
    pub last_modified_ms: i64,
    pub version: i64,
}

impl Meta {
    /// The weak entity tag for `meta.version`, `ETag`, `If-Match` and `If-None-Match`.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// Renders a stored resource as returned: `schemas`, `id`, the attributes and `meta`.
pub fn render(
    rt: &ResourceType,
    base_url: &str,
    id: &str,
    mut attributes: Map<String, Value>,
    meta: &Meta,
) -> Map<String, Value> {
    let mut schemas = vec![Value::String(rt.schema.id.to_owned())];
    for ext in rt.extensions {
        if attributes.contains_key(ext.id) {
            schemas.push(Value::String(ext.id.to_owned()));
        }
    }
    attributes.insert("schemas".into(), Value::Array(schemas));
    attributes.insert("id".into(), Value::String(id.to_owned()));
    let mut m = Map::new();
    m.insert("resourceType".into(), Value::String(rt.id.to_owned()));
    m.insert(
        "created".into(),
        Value::String(format_millis(meta.created_ms)),
    );
    m.insert(
        "lastModified".into(),
        Value::String(format_millis(meta.last_modified_ms)),
    );
    m.insert(
        "location".into(),
        Value::String(format!("{base_url}{}/{id}", rt.endpoint)),
    );
    m.insert("version".into(), Value::String(meta.etag()));
    attributes.insert("meta".into(), Value::Object(m));
    attributes
}

/// One entry of `attributes` or `excludedAttributes`: an attribute, a sub-attribute, or a whole
/// extension.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    extension: Option<&'static str>,
    attr: Option<&'static str>,
    sub: Option<&'static str>,
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5). Names that are not attributes of
/// the resource type are ignored.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    only: Option<Vec<Selector>>,
    excluded: Vec<Selector>,
}

fn parse_selectors(rt: &ResourceType, list: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(ext) = rt.extension(item) {
            out.push(Selector {
                extension: Some(ext.id),
                attr: None,
                sub: None,
            });
            continue;
        }
        let Ok(path) = crate::filter::parse_path(item, Default::default()) else {
            continue;
        };
        if path.filter.is_some() {
            continue;
        }
        if let Some(t) = resolve(rt, &path.attr) {
            out.push(Selector {
                extension: t.extension,
                attr: Some(t.attr.name),
                sub: t.sub.map(|s| s.name),
            });
        }
    }
    out
}

impl Selection {
    pub fn new(rt: &ResourceType, attributes: Option<&str>, excluded: Option<&str>) -> Self {
        Selection {
            only: attributes
                .map(|a| parse_selectors(rt, a))
                .filter(|s| !s.is_empty()),
            excluded: excluded.map(|e| parse_selectors(rt, e)).unwrap_or_default(),
        }
    }

    /// Whether the top-level core attribute `name` will be returned (so the store can skip
    /// loading group members nobody asked for).
    pub fn wants(&self, name: &str) -> bool {
        let named = |s: &Selector| s.extension.is_none() && s.attr == Some(name);
        match &self.only {
            Some(only) => only.iter().any(named),
            None => !self.excluded.iter().any(|s| named(s) && s.sub.is_none()),
        }
    }

    /// Applies the selection to a rendered resource.
    pub fn apply(&self, rt: &ResourceType, resource: &mut Map<String, Value>) {
        let always = |key: &str| {
            key == "schemas"
                || key == "id"
                || rt
                    .schema
                    .attr(key)
                    .is_some_and(|d| d.returned == Returned::Always)
        };
        if let Some(only) = &self.only {
            let keys: Vec<String> = resource.keys().cloned().collect();
            for key in keys {
                if always(&key) {
                    continue;
                }
                let ext = rt.extension(&key).map(|e| e.id);
                let picks: Vec<&Selector> = only
                    .iter()
                    .filter(|s| match ext {
                        Some(e) => s.extension == Some(e),
                        None => s.extension.is_none() && s.attr == Some(key.as_str()),
                    })
                    .collect();
                if picks.is_empty() {
                    resource.remove(&key);
                    continue;
                }
                let value = resource.get_mut(&key).expect("key exists");
                match ext {
                    Some(_) if picks.iter().any(|s| s.attr.is_none()) => {}
                    Some(_) => {
                        if let Value::Object(ext_doc) = value {
                            let names: Vec<String> = ext_doc.keys().cloned().collect();
                            for name in names {
                                let subs: Vec<&str> = picks
                                    .iter()
                                    .filter(|s| s.attr == Some(name.as_str()))
                                    .filter_map(|s| s.sub)
                                    .collect();
                                let whole = picks
                                    .iter()
                                    .any(|s| s.attr == Some(name.as_str()) && s.sub.is_none());
                                if whole {
                                    continue;
                                }
                                if subs.is_empty() {
                                    ext_doc.remove(&name);
                                } else if let Some(v) = ext_doc.get_mut(&name) {
                                    keep_subs(v, &subs);
                                }
                            }
                        }
                    }
                    None => {
                        if picks.iter().any(|s| s.sub.is_none()) {
                            continue;
                        }
                        let subs: Vec<&str> = picks.iter().filter_map(|s| s.sub).collect();
                        keep_subs(value, &subs);
                    }
                }
            }
        }
        for s in &self.excluded {
            match (s.extension, s.attr, s.sub) {
                (Some(ext), None, _) => {
                    resource.remove(ext);
                }
                (ext, Some(attr), sub) => {
                    if ext.is_none() && always(attr) {
                        continue;
                    }
                    let container = match ext {
                        Some(e) => resource.get_mut(e).and_then(Value::as_object_mut),
                        None => Some(&mut *resource),
                    };
                    let Some(container) = container else { continue };
                    match sub {
                        None => {
                            container.remove(attr);
                        }
                        Some(sub) => {
                            if let Some(v) = container.get_mut(attr) {
                                drop_sub(v, sub);
                            }
                        }
                    }
                }
                (None, None, _) => {}
            }
        }
        // Keep `schemas` true to what remains.
        for ext in rt.extensions {
            if resource
                .get(ext.id)
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                resource.remove(ext.id);
            }
        }
        let present: Vec<Value> = std::iter::once(rt.schema.id)
            .chain(
                rt.extensions
                    .iter()
                    .map(|e| e.id)
                    .filter(|e| resource.contains_key(*e)),
            )
            .map(|s| Value::String(s.to_owned()))
            .collect();
        resource.insert("schemas".into(), Value::Array(present));
    }
}

fn keep_subs(value: &mut Value, subs: &[&str]) {
    let keep = |object: &mut Map<String, Value>| object.retain(|k, _| subs.contains(&k.as_str()));
    match value {
        Value::Object(object) => keep(object),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(keep),
        _ => {}
    }
}

fn drop_sub(value: &mut Value, sub: &str) {
    match value {
        Value::Object(object) => {
            object.remove(sub);
        }
        Value::Array(items) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(|o| {
                o.remove(sub);
            }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, GROUP_TYPE, USER_TYPE};

    #[test]
    fn entra_create_body_is_accepted_and_normalised() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_SCHEMA],
            "externalId": "jyoung",
            "UserName": "jyoung@example.com",
            "active": "True",
            "emails": [{"primary": true, "type": "work", "value": "jyoung@example.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "J Young", "familyName": "Young", "givenName": "J"},
            "roles": [],
            "title": null,
            "addresses": null,
            "password": "hunter2",
            "groups": [],
            ENTERPRISE_USER_SCHEMA: {"manager": "abc", "department": ""}
        });
        let doc = normalize_resource(&USER_TYPE, &body).unwrap();
        assert_eq!(doc["userName"], "jyoung@example.com");
        assert_eq!(doc["active"], true);
        assert!(!doc.contains_key("roles") && !doc.contains_key("title"));
        assert_eq!(doc["password"], "hunter2");
        assert!(!doc.contains_key("meta"));
        assert_eq!(
            doc[ENTERPRISE_USER_SCHEMA],
            json!({"manager": {"value": "abc"}})
        );
    }

    #[test]
    fn unknown_things_are_refused_with_their_names() {
        let e =
            normalize_resource(&USER_TYPE, &json!({"userName": "a", "shoeSize": 9})).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        assert!(e.detail.contains("shoeSize"));
        let e = normalize_resource(
            &USER_TYPE,
            &json!({"userName": "a", "urn:example:x:2.0:User": {"a": 1}}),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = normalize_resource(
            &USER_TYPE,
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Nope"], "userName": "a"}),
        )
        .unwrap_err();
        assert!(e.detail.contains("Nope"));
        let e =
            normalize_resource(&USER_TYPE, &json!({"active": "yes", "userName": "a"})).unwrap_err();
        assert!(e.detail.contains("active"));
        let e = normalize_resource(&USER_TYPE, &json!({"displayName": "a"})).unwrap_err();
        assert!(e.detail.contains("userName"));
        // Microsoft's extra group schema URI is tolerated.
        let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
            "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "displayName": "Sales"});
        assert!(normalize_resource(&GROUP_TYPE, &group).is_ok());
    }

    #[test]
    fn selection_keeps_always_returned_and_drops_excluded() {
        let doc = normalize_resource(
            &USER_TYPE,
            &json!({"userName": "a", "title": "t", "name": {"givenName": "g", "familyName": "f"},
                    ENTERPRISE_USER_SCHEMA: {"department": "d"}}),
        )
        .unwrap();
        let meta = Meta {
            created_ms: 0,
            last_modified_ms: 0,
            version: 3,
        };
        let full = render(&USER_TYPE, "http://h/scim/v2", "id1", doc, &meta);
        assert_eq!(full["meta"]["version"], "W/\"3\"");

        let mut r = full.clone();
        Selection::new(&USER_TYPE, Some("name.givenName,userName"), None).apply(&USER_TYPE, &mut r);
        assert_eq!(
            Value::Object(r.clone()),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "id1", "userName": "a", "name": {"givenName": "g"}})
        );

        let mut r = full.clone();
        Selection::new(
            &USER_TYPE,
            None,
            Some("title,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department,id"),
        )
        .apply(&USER_TYPE, &mut r);
        assert!(r.contains_key("id") && !r.contains_key("title"));
        assert!(!r.contains_key(ENTERPRISE_USER_SCHEMA));
        assert_eq!(
            r["schemas"],
            json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
        );

        let s = Selection::new(&GROUP_TYPE, None, Some("members"));
        assert!(!s.wants("members"));
        assert!(Selection::new(&GROUP_TYPE, None, None).wants("members"));
        assert!(!Selection::new(&GROUP_TYPE, Some("displayName"), None).wants("members"));
    }
}
