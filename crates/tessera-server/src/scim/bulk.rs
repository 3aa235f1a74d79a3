//! `POST /Bulk` (RFC 7644 §3.7): operations in order, `bulkId` references to resources created
//! earlier in the same request, `failOnErrors`, and the advertised `maxOperations` enforced.
//! Each operation is its own transaction, as the RFC allows.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use tessera_scim::patch::parse_patch;
use tessera_scim::resource::normalize_resource;
use tessera_scim::schema::{ResourceKind, ResourceType};
use tessera_scim::{ScimError, ScimType};
use tessera_store::scim;

use super::handlers::base_url;
use super::{ScimBody, ScimCaller, ScimHttpError, etag_versions, scim_json};
use crate::AppState;

pub const MAX_OPERATIONS: usize = 1000;
const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

fn syntax(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidSyntax, detail)
}

fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

pub async fn bulk(
    caller: ScimCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimHttpError> {
    let Value::Object(body) = &body else {
        return Err(syntax("a BulkRequest must be a JSON object").into());
    };
    let listed = field(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter().any(|u| {
                u.as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(BULK_REQUEST_SCHEMA))
            })
        });
    if !listed {
        return Err(syntax(format!("'schemas' must contain {BULK_REQUEST_SCHEMA}")).into());
    }
    let Some(Value::Array(operations)) = field(body, "Operations") else {
        return Err(syntax("a BulkRequest needs an 'Operations' array").into());
    };
    if operations.len() > MAX_OPERATIONS {
        return Err(ScimError::new(
            413,
            Some(ScimType::TooMany),
            format!(
                "a BulkRequest may hold at most {MAX_OPERATIONS} operations; this one has {}",
                operations.len()
            ),
        )
        .into());
    }
    let fail_on_errors = match field(body, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            ScimError::bad_request(
                ScimType::InvalidValue,
                "failOnErrors must be a positive integer",
            )
        })?),
    };
    let base = base_url(state.config.public_url.as_deref(), &headers);
    let mut created: HashMap<String, String> = HashMap::new();
    let mut results = Vec::with_capacity(operations.len());
    let mut errors = 0u64;
    for operation in operations {
        if fail_on_errors.is_some_and(|limit| errors >= limit) {
            break;
        }
        let (bulk_id, method, outcome) = run_one(&state, &caller, operation, &created).await;
        let mut result = Map::new();
        result.insert("method".into(), json!(method));
        if let Some(id) = &bulk_id {
            result.insert("bulkId".into(), json!(id));
        }
        match outcome {
            Ok((status, record)) => {
                if let Some(record) = record {
                    let rt = ResourceType::of(record.kind);
                    result.insert(
                        "location".into(),
                        json!(format!("{base}{}/{}", rt.endpoint, record.id)),
                    );
                    result.insert("version".into(), json!(record.meta().etag()));
                    if let (Some(bulk_id), StatusCode::CREATED) = (&bulk_id, status) {
                        created.insert(bulk_id.clone(), record.id.clone());
                    }
                }
                result.insert("status".into(), json!(status.as_u16().to_string()));
            }
            Err(ScimHttpError::Scim(e)) => {
                errors += 1;
                result.insert("status".into(), json!(e.status.to_string()));
                result.insert("response".into(), e.to_json());
            }
            Err(other) => return Err(other),
        }
        results.push(Value::Object(result));
    }
    Ok(scim_json(
        StatusCode::OK,
        &json!({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": results}),
    ))
}

type Outcome = Result<(StatusCode, Option<scim::ScimRecord>), ScimHttpError>;

/// Replaces `bulkId:<id>` strings with the ids of resources created earlier in the request.
fn resolve_refs(value: &mut Value, created: &HashMap<String, String>) -> Result<(), ScimError> {
    match value {
        Value::String(s) => {
            if let Some(reference) = s.strip_prefix("bulkId:") {
                let id = created.get(reference).ok_or_else(|| {
                    ScimError::new(
                        409,
                        Some(ScimType::InvalidValue),
                        format!("bulkId '{reference}' does not name a resource created earlier in this request"),
                    )
                })?;
                *s = id.clone();
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| resolve_refs(v, created)),
        Value::Object(object) => object
            .values_mut()
            .try_for_each(|v| resolve_refs(v, created)),
        _ => Ok(()),
    }
}

async fn run_one(
    state: &AppState,
    caller: &ScimCaller,
    operation: &Value,
    created: &HashMap<String, String>,
) -> (Option<String>, String, Outcome) {
    let Value::Object(op) = operation else {
        return (
            None,
            String::new(),
            Err(syntax("each operation must be an object").into()),
        );
    };
    let bulk_id = field(op, "bulkId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let method = field(op, "method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let outcome = execute(state, caller, op, &method, bulk_id.as_deref(), created).await;
    (bulk_id, method, outcome)
}

async fn execute(
    state: &AppState,
    caller: &ScimCaller,
    op: &Map<String, Value>,
    method: &str,
    bulk_id: Option<&str>,
    created: &HashMap<String, String>,
) -> Outcome {
    let mut path = Value::String(
        field(op, "path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    );
    resolve_refs(&mut path, created)?;
    let path = path
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let (endpoint, id) = match path.split_once('/') {
        Some((endpoint, id)) => (endpoint, Some(id)),
        None => (path.as_str(), None),
    };
    let kind = match endpoint {
        "Users" => ResourceKind::User,
        "Groups" => ResourceKind::Group,
        _ => {
            return Err(ScimError::bad_request(
                ScimType::InvalidPath,
                format!("'{path}' is not /Users or /Groups"),
            )
            .into());
        }
    };
    let rt = ResourceType::of(kind);
    let mut data = field(op, "data").cloned().unwrap_or(Value::Null);
    resolve_refs(&mut data, created)?;
    let versions = field(op, "version")
        .and_then(Value::as_str)
        .map(etag_versions);
    let ctx = caller.change_context();
    let ds = caller.data_source_id.as_str();
    match (method, id) {
        ("POST", None) => {
            if bulk_id.is_none() {
                return Err(ScimError::bad_request(ScimType::InvalidValue, "POST operations need a bulkId").into());
            }
            let doc = normalize_resource(rt, &data)?;
            let record = scim::create(&state.db, &ctx, kind, ds, doc).await?;
            Ok((StatusCode::CREATED, Some(record)))
        }
        ("PUT", Some(id)) => {
            let doc = normalize_resource(rt, &data)?;
            let record = scim::replace(&state.db, &ctx, kind, ds, id, doc, versions.as_deref()).await?;
            Ok((StatusCode::OK, Some(record)))
        }
        ("PATCH", Some(id)) => {
            let ops = parse_patch(&data)?;
            let record = scim::patch(&state.db, &ctx, kind, ds, id, &ops, versions.as_deref()).await?;
            Ok((StatusCode::OK, Some(record)))
        }
        ("DELETE", Some(id)) => {
            scim::delete(&state.db, &ctx, kind, ds, id, versions.as_deref()).await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        _ => Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("'{method} /{path}' is not a Bulk operation (POST /Users, PUT|PATCH|DELETE /Users/id, and the same for Groups)"),
        )
        .into()),
    }
}
