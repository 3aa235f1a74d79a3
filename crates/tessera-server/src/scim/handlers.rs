//! The `/scim/v2` handlers: discovery, and create/read/list/search/replace/patch/delete for
//! Users and Groups.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tessera_scim::criteria::{Criteria, compile, sort_target};
use tessera_scim::filter::{FilterLimits, parse_filter};
use tessera_scim::patch::parse_patch;
use tessera_scim::resource::{Meta, Selection, normalize_resource};
use tessera_scim::schema::{
    GROUP_TYPE, RESOURCE_TYPES, ResourceKind, ResourceType, SCHEMAS,
    SERVICE_PROVIDER_CONFIG_SCHEMA, USER_TYPE,
};
use tessera_scim::{ScimError, ScimType};
use tessera_store::scim::{self, ListQuery, ScimRecord};

use super::{ScimBody, ScimCaller, ScimHttpError, etag_versions, if_match, scim_json};
use crate::AppState;

pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// Most resources in one page (advertised as `filter.maxResults`).
pub const MAX_RESULTS: i64 = 1000;

/// The SCIM base URL as the client reached it (for `meta.location` and `$ref`).
/// The SCIM base URL that `meta.location` and `$ref` values are built on: the configured
/// `public_url`, or else the request's `Host` (and `X-Forwarded-Proto: https`).
pub fn base_url(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(public) = public_url {
        return format!("{}/scim/v2", public.trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/scim/v2")
}

/// [`base_url`] as an extractor.
pub struct ScimBase(pub String);

impl FromRequestParts<AppState> for ScimBase {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ScimBase(base_url(
            state.config.public_url.as_deref(),
            &parts.headers,
        )))
    }
}

fn list_response(resources: Vec<Value>, total: i64, start_index: i64) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "itemsPerPage": resources.len(),
        "startIndex": start_index,
        "Resources": resources,
    })
}

// ---------------------------------------------------------------------------------------------
// Discovery

pub async fn service_provider_config(
    _: ScimCaller,
    State(state): State<AppState>,
    ScimBase(base): ScimBase,
) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
            "documentationUri": "https://github.com/tessera-iga/tessera/blob/main/docs/scim.md",
            "patch": {"supported": true},
            "bulk": {
                "supported": true,
                "maxOperations": super::bulk::MAX_OPERATIONS,
                "maxPayloadSize": state.config.max_body_bytes,
            },
            "filter": {"supported": true, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A SCIM token of one data source (tessera scim-token create), sent as Authorization: Bearer",
                "primary": true,
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/ServiceProviderConfig"),
            },
        }),
    )
}

pub async fn resource_types(_: ScimCaller, ScimBase(base): ScimBase) -> Response {
    let items: Vec<Value> = RESOURCE_TYPES.iter().map(|rt| rt.to_json(&base)).collect();
    let total = items.len() as i64;
    scim_json(StatusCode::OK, &list_response(items, total, 1))
}

pub async fn resource_type(
    _: ScimCaller,
    ScimBase(base): ScimBase,
    Path(id): Path<String>,
) -> Result<Response, ScimHttpError> {
    let rt = RESOURCE_TYPES
        .iter()
        .find(|rt| rt.id == id)
        .ok_or_else(|| ScimError::not_found(format!("no resource type {id}")))?;
    Ok(scim_json(StatusCode::OK, &rt.to_json(&base)))
}

pub async fn schemas(_: ScimCaller, ScimBase(base): ScimBase) -> Response {
    let items: Vec<Value> = SCHEMAS.iter().map(|s| s.to_json(&base)).collect();
    let total = items.len() as i64;
    scim_json(StatusCode::OK, &list_response(items, total, 1))
}

pub async fn schema(
    _: ScimCaller,
    ScimBase(base): ScimBase,
    Path(id): Path<String>,
) -> Result<Response, ScimHttpError> {
    let schema = SCHEMAS
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ScimError::not_found(format!("no schema {id}")))?;
    Ok(scim_json(StatusCode::OK, &schema.to_json(&base)))
}

// ---------------------------------------------------------------------------------------------
// List and search parameters

/// `filter`, `sortBy`, `sortOrder`, `startIndex`, `count`, `attributes`, `excludedAttributes`,
/// from a query string or a SearchRequest.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub descending: bool,
    pub start_index: i64,
    pub count: i64,
    pub attributes: Option<String>,
    pub excluded: Option<String>,
}

fn invalid_value(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

fn parse_int(name: &str, text: &str) -> Result<i64, ScimError> {
    text.trim()
        .parse()
        .map_err(|_| invalid_value(format!("{name} must be an integer, not '{text}'")))
}

fn sort_order(text: &str) -> Result<bool, ScimError> {
    match text.to_ascii_lowercase().as_str() {
        "ascending" => Ok(false),
        "descending" => Ok(true),
        _ => Err(invalid_value(format!(
            "sortOrder must be ascending or descending, not '{text}'"
        ))),
    }
}

impl ListParams {
    /// From query parameters. Names match case-insensitively; unknown ones (such as Entra's
    /// `aadOptscim062020`) are ignored.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, ScimError> {
        let mut p = ListParams {
            start_index: 1,
            count: MAX_RESULTS,
            ..Default::default()
        };
        for (key, value) in pairs {
            match key.to_ascii_lowercase().as_str() {
                "filter" => p.filter = Some(value.clone()),
                "sortby" => p.sort_by = Some(value.clone()),
                "sortorder" => p.descending = sort_order(value)?,
                "startindex" => p.start_index = parse_int("startIndex", value)?,
                "count" => p.count = parse_int("count", value)?,
                "attributes" => p.attributes = Some(value.clone()),
                "excludedattributes" => p.excluded = Some(value.clone()),
                _ => {}
            }
        }
        Ok(p.clamped())
    }

    /// From a SearchRequest body (RFC 7644 §3.4.3).
    pub fn from_search(body: &Value) -> Result<Self, ScimError> {
        let Value::Object(body) = body else {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                "a SearchRequest must be a JSON object",
            ));
        };
        let mut p = ListParams {
            start_index: 1,
            count: MAX_RESULTS,
            ..Default::default()
        };
        let list = |v: &Value, name: &str| -> Result<String, ScimError> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.join(","))
                    .ok_or_else(|| {
                        invalid_value(format!("{name} must be an array of attribute names"))
                    }),
                _ => Err(invalid_value(format!(
                    "{name} must be an array of attribute names"
                ))),
            }
        };
        let int = |v: &Value, name: &str| -> Result<i64, ScimError> {
            v.as_i64()
                .ok_or_else(|| invalid_value(format!("{name} must be an integer")))
        };
        let string = |v: &Value, name: &str| -> Result<String, ScimError> {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid_value(format!("{name} must be a string")))
        };
        for (key, value) in body {
            if value.is_null() {
                continue;
            }
            match key.to_ascii_lowercase().as_str() {
                "schemas" => {
                    let ok = value.as_array().is_some_and(|s| {
                        s.iter().any(|u| {
                            u.as_str()
                                .is_some_and(|u| u.eq_ignore_ascii_case(SEARCH_REQUEST_SCHEMA))
                        })
                    });
                    if !ok {
                        return Err(ScimError::bad_request(
                            ScimType::InvalidSyntax,
                            format!("'schemas' must contain {SEARCH_REQUEST_SCHEMA}"),
                        ));
                    }
                }
                "filter" => p.filter = Some(string(value, "filter")?),
                "sortby" => p.sort_by = Some(string(value, "sortBy")?),
                "sortorder" => p.descending = sort_order(&string(value, "sortOrder")?)?,
                "startindex" => p.start_index = int(value, "startIndex")?,
                "count" => p.count = int(value, "count")?,
                "attributes" => p.attributes = Some(list(value, "attributes")?),
                "excludedattributes" => p.excluded = Some(list(value, "excludedAttributes")?),
                _ => {}
            }
        }
        Ok(p.clamped())
    }

    /// RFC 7644 §3.4.2.4: startIndex below 1 means 1, a negative count means 0; the count is
    /// capped at the advertised maximum.
    fn clamped(mut self) -> Self {
        self.start_index = self.start_index.max(1);
        self.count = self.count.clamp(0, MAX_RESULTS);
        self
    }

    fn selection(&self, rt: &ResourceType) -> Selection {
        Selection::new(rt, self.attributes.as_deref(), self.excluded.as_deref())
    }
}

fn criteria(rt: &ResourceType, filter: Option<&str>) -> Result<Option<Criteria>, ScimError> {
    filter
        .filter(|f| !f.trim().is_empty())
        .map(|f| parse_filter(f, FilterLimits::default()).and_then(|ast| compile(rt, &ast)))
        .transpose()
}

fn wants_refs(kind: ResourceKind, selection: &Selection) -> bool {
    selection.wants(match kind {
        ResourceKind::User => "groups",
        ResourceKind::Group => "members",
    })
}

fn rendered(record: ScimRecord, base: &str, selection: &Selection) -> Value {
    let rt = ResourceType::of(record.kind);
    let mut resource = record.into_rendered(base);
    selection.apply(rt, &mut resource);
    Value::Object(resource)
}

/// Which resource type a route serves: the handlers below are generic over it.
pub trait Endpoint: Send + Sync + 'static {
    const KIND: ResourceKind;
}

pub struct Users;
pub struct Groups;

impl Endpoint for Users {
    const KIND: ResourceKind = ResourceKind::User;
}

impl Endpoint for Groups {
    const KIND: ResourceKind = ResourceKind::Group;
}

type QueryResult = Result<QueryPairs, axum::extract::rejection::QueryRejection>;

pub async fn list<E: Endpoint>(
    caller: ScimCaller,
    State(state): State<AppState>,
    ScimBase(base): ScimBase,
    pairs: QueryResult,
) -> Result<Response, ScimHttpError> {
    let params = query_params(pairs)?;
    list_resources(&state, &caller, E::KIND, &params, &base).await
}

pub async fn search<E: Endpoint>(
    caller: ScimCaller,
    State(state): State<AppState>,
    ScimBase(base): ScimBase,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimHttpError> {
    let params = ListParams::from_search(&body)?;
    list_resources(&state, &caller, E::KIND, &params, &base).await
}

pub async fn read<E: Endpoint>(
    caller: ScimCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    pairs: QueryResult,
) -> Result<Response, ScimHttpError> {
    get_resource(&state, &caller, E::KIND, &id, &headers, pairs).await
}

pub async fn create<E: Endpoint>(
    caller: ScimCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    pairs: QueryResult,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimHttpError> {
    create_resource(&state, &caller, E::KIND, &body, &headers, pairs).await
}

pub async fn replace<E: Endpoint>(
    caller: ScimCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    pairs: QueryResult,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimHttpError> {
    replace_resource(&state, &caller, E::KIND, &id, &body, &headers, pairs).await
}

pub async fn patch<E: Endpoint>(
    caller: ScimCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    pairs: QueryResult,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimHttpError> {
    patch_resource(&state, &caller, E::KIND, &id, &body, &headers, pairs).await
}

pub async fn delete<E: Endpoint>(
    caller: ScimCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimHttpError> {
    delete_resource(&state, &caller, E::KIND, &id, &headers).await
}

async fn list_resources(
    state: &AppState,
    caller: &ScimCaller,
    kind: ResourceKind,
    params: &ListParams,
    base: &str,
) -> Result<Response, ScimHttpError> {
    let rt = ResourceType::of(kind);
    let criteria = criteria(rt, params.filter.as_deref())?;
    let sort = params
        .sort_by
        .as_deref()
        .map(|s| sort_target(rt, s))
        .transpose()?;
    let selection = params.selection(rt);
    let query = ListQuery {
        criteria: criteria.as_ref(),
        sort: sort.as_ref().map(|t| (t, params.descending)),
        start_index: params.start_index,
        count: params.count,
        with_refs: wants_refs(kind, &selection),
    };
    let (total, records) = scim::list(&state.db, kind, &caller.data_source_id, &query).await?;
    let resources = records
        .into_iter()
        .map(|r| rendered(r, base, &selection))
        .collect();
    Ok(scim_json(
        StatusCode::OK,
        &list_response(resources, total, params.start_index),
    ))
}

type QueryPairs = Query<Vec<(String, String)>>;

fn query_params(pairs: QueryResult) -> Result<ListParams, ScimError> {
    let Query(pairs) = pairs
        .map_err(|e| invalid_value(format!("the query string is malformed: {}", e.body_text())))?;
    ListParams::from_query(&pairs)
}

/// `POST /.search` at the root: Users, then Groups, paged as one list. A filter that names an
/// attribute one resource type lacks matches nothing of that type; `sortBy` applies within
/// each type.
pub async fn search_all(
    caller: ScimCaller,
    State(state): State<AppState>,
    ScimBase(base): ScimBase,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimHttpError> {
    let params = ListParams::from_search(&body)?;
    let filter = params
        .filter
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| parse_filter(f, FilterLimits::default()))
        .transpose()?;
    let mut compiled = Vec::new();
    let mut last_error = None;
    for rt in [&USER_TYPE, &GROUP_TYPE] {
        match &filter {
            None => compiled.push((rt, None)),
            Some(ast) => match compile(rt, ast) {
                Ok(c) => compiled.push((rt, Some(c))),
                Err(e) => last_error = Some(e),
            },
        }
    }
    if compiled.is_empty() {
        return Err(last_error.expect("a filter failed for every type").into());
    }
    let mut total = 0;
    let mut resources = Vec::new();
    let mut skip = params.start_index - 1;
    for (rt, criteria) in compiled {
        let sort = params
            .sort_by
            .as_deref()
            .and_then(|s| sort_target(rt, s).ok());
        let selection = params.selection(rt);
        let remaining = (params.count - resources.len() as i64).max(0);
        let query = ListQuery {
            criteria: criteria.as_ref(),
            sort: sort.as_ref().map(|t| (t, params.descending)),
            start_index: skip + 1,
            count: remaining,
            with_refs: wants_refs(rt.kind, &selection),
        };
        let (type_total, records) =
            scim::list(&state.db, rt.kind, &caller.data_source_id, &query).await?;
        total += type_total;
        skip = (skip - type_total).max(0);
        resources.extend(records.into_iter().map(|r| rendered(r, &base, &selection)));
    }
    Ok(scim_json(
        StatusCode::OK,
        &list_response(resources, total, params.start_index),
    ))
}

// ---------------------------------------------------------------------------------------------
// Single resources

fn with_etag(mut response: Response, meta: &Meta) -> Response {
    if let Ok(v) = HeaderValue::from_str(&meta.etag()) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

fn selection_from(rt: &ResourceType, pairs: QueryResult) -> Result<(Selection, bool), ScimError> {
    let params = query_params(pairs)?;
    let asked = params.attributes.is_some() || params.excluded.is_some();
    Ok((params.selection(rt), asked))
}

async fn get_resource(
    state: &AppState,
    caller: &ScimCaller,
    kind: ResourceKind,
    id: &str,
    headers: &HeaderMap,
    pairs: QueryResult,
) -> Result<Response, ScimHttpError> {
    let rt = ResourceType::of(kind);
    let (selection, _) = selection_from(rt, pairs)?;
    let record = scim::get(
        &state.db,
        kind,
        &caller.data_source_id,
        id,
        wants_refs(kind, &selection),
    )
    .await?;
    if let Some(tags) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && (tags.trim() == "*" || etag_versions(tags).contains(&record.version))
    {
        return Ok(with_etag(
            StatusCode::NOT_MODIFIED.into_response(),
            &record.meta(),
        ));
    }
    let meta = record.meta();
    let body = rendered(
        record,
        &base_url(state.config.public_url.as_deref(), headers),
        &selection,
    );
    Ok(with_etag(scim_json(StatusCode::OK, &body), &meta))
}

/// Renders a written resource for the response, loading members or groups if they are wanted.
async fn written(
    state: &AppState,
    caller: &ScimCaller,
    record: ScimRecord,
    status: StatusCode,
    headers: &HeaderMap,
    selection: &Selection,
) -> Result<Response, ScimHttpError> {
    let record = if wants_refs(record.kind, selection) {
        scim::get(
            &state.db,
            record.kind,
            &caller.data_source_id,
            &record.id,
            true,
        )
        .await?
    } else {
        record
    };
    let base = base_url(state.config.public_url.as_deref(), headers);
    let meta = record.meta();
    let location = format!(
        "{base}{}/{}",
        ResourceType::of(record.kind).endpoint,
        record.id
    );
    let body = rendered(record, &base, selection);
    let mut response = with_etag(scim_json(status, &body), &meta);
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&location)
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn create_resource(
    state: &AppState,
    caller: &ScimCaller,
    kind: ResourceKind,
    body: &Value,
    headers: &HeaderMap,
    pairs: QueryResult,
) -> Result<Response, ScimHttpError> {
    let rt = ResourceType::of(kind);
    let (selection, _) = selection_from(rt, pairs)?;
    let doc = normalize_resource(rt, body)?;
    let record = scim::create(
        &state.db,
        &caller.change_context(),
        kind,
        &caller.data_source_id,
        doc,
    )
    .await?;
    written(
        state,
        caller,
        record,
        StatusCode::CREATED,
        headers,
        &selection,
    )
    .await
}

async fn replace_resource(
    state: &AppState,
    caller: &ScimCaller,
    kind: ResourceKind,
    id: &str,
    body: &Value,
    headers: &HeaderMap,
    pairs: QueryResult,
) -> Result<Response, ScimHttpError> {
    let rt = ResourceType::of(kind);
    let (selection, _) = selection_from(rt, pairs)?;
    let doc = normalize_resource(rt, body)?;
    let versions = if_match(headers);
    let record = scim::replace(
        &state.db,
        &caller.change_context(),
        kind,
        &caller.data_source_id,
        id,
        doc,
        versions.as_deref(),
    )
    .await?;
    written(state, caller, record, StatusCode::OK, headers, &selection).await
}

/// PATCH answers 200 with the resource for users, and 204 for groups (as Entra ID expects;
/// a group's member list can be large) unless `attributes` or `excludedAttributes` ask for a
/// body.
async fn patch_resource(
    state: &AppState,
    caller: &ScimCaller,
    kind: ResourceKind,
    id: &str,
    body: &Value,
    headers: &HeaderMap,
    pairs: QueryResult,
) -> Result<Response, ScimHttpError> {
    let rt = ResourceType::of(kind);
    let (selection, asked) = selection_from(rt, pairs)?;
    let ops = parse_patch(body)?;
    let versions = if_match(headers);
    let record = scim::patch(
        &state.db,
        &caller.change_context(),
        kind,
        &caller.data_source_id,
        id,
        &ops,
        versions.as_deref(),
    )
    .await?;
    if kind == ResourceKind::Group && !asked {
        return Ok(with_etag(
            StatusCode::NO_CONTENT.into_response(),
            &record.meta(),
        ));
    }
    written(state, caller, record, StatusCode::OK, headers, &selection).await
}

async fn delete_resource(
    state: &AppState,
    caller: &ScimCaller,
    kind: ResourceKind,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, ScimHttpError> {
    let versions = if_match(headers);
    scim::delete(
        &state.db,
        &caller.change_context(),
        kind,
        &caller.data_source_id,
        id,
        versions.as_deref(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
