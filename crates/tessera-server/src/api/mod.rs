//! `/api/v1`: the REST API for operators, ITSM and automation.

mod auth;
pub mod error;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_domain::directory::{Group, GroupMember, Identity, MemberKind};
use tessera_store::directory;

use crate::{AppState, rfc3339};
pub use auth::{AdminCaller, bearer_token};
pub use error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/data-sources", get(list_data_sources))
        .route("/api/v1/identities", get(list_identities))
        .route("/api/v1/identities/{id}", get(get_identity))
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{id}", get(get_group))
        .route("/api/v1/groups/{id}/members", get(list_group_members))
}

/// `Query` whose rejection is a problem document rather than axum's plain text.
struct ApiQuery<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `Path` whose rejection (e.g. an undecodable segment) is a problem document.
struct ApiPath<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

#[derive(Serialize)]
struct WhoAmI {
    kind: &'static str,
    id: String,
    label: String,
}

/// The authenticated caller. Cheap and side-effect free: also the benchmark's authenticated route.
async fn whoami(AdminCaller(token): AdminCaller) -> Json<WhoAmI> {
    Json(WhoAmI {
        kind: "admin_token",
        id: token.id,
        label: token.label,
    })
}

/// Keyset paging: `after` is the last id of the previous page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    data_source_id: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

const DEFAULT_PAGE: i64 = 100;

impl PageQuery {
    fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=directory::MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::BadRequest {
                detail: format!("limit must be between 1 and {}", directory::MAX_PAGE),
                errors: Some(serde_json::json!([{"field": "limit", "reason": "out of range"}])),
            }),
        }
    }
}

#[derive(Serialize)]
struct Page<T> {
    items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

fn page<T, V>(
    items: Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> String,
    view: impl Fn(T) -> V,
) -> Page<V> {
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(&id))
        .flatten();
    Page {
        items: items.into_iter().map(view).collect(),
        next_after,
    }
}

#[derive(Serialize)]
struct DataSourceView {
    id: String,
    name: String,
    kind: String,
    matching_key: String,
    created_at: String,
    updated_at: String,
}

async fn list_data_sources(
    _: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let sources = directory::list_data_sources(&state.db).await?;
    let items: Vec<DataSourceView> = sources
        .into_iter()
        .map(|d| DataSourceView {
            id: d.id,
            name: d.name,
            kind: d.kind.to_string(),
            matching_key: d.matching_key.to_string(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

#[derive(Serialize)]
struct IdentityView {
    id: String,
    data_source_id: String,
    kind: String,
    status: String,
    user_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    email: Option<String>,
    employee_number: Option<String>,
    department: Option<String>,
    job_title: Option<String>,
    manager_id: Option<String>,
    version: i64,
    created_at: String,
    updated_at: String,
}

impl From<Identity> for IdentityView {
    fn from(i: Identity) -> Self {
        let a = i.attributes;
        IdentityView {
            id: i.id,
            data_source_id: i.data_source_id,
            kind: i.kind.to_string(),
            status: i.status.to_string(),
            user_name: a.user_name,
            external_id: a.external_id,
            display_name: a.display_name,
            given_name: a.given_name,
            family_name: a.family_name,
            email: a.email,
            employee_number: a.employee_number,
            department: a.department,
            job_title: a.job_title,
            manager_id: a.manager_id,
            version: i.version,
            created_at: rfc3339(i.created_at),
            updated_at: rfc3339(i.updated_at),
        }
    }
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if tessera_domain::ids::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("{id:?} is not a Tessera id")))
    }
}

async fn list_identities(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<IdentityView>>, ApiError> {
    let limit = q.limit()?;
    let items = directory::list_identities(
        &state.db,
        q.data_source_id.as_deref(),
        q.after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(page(
        items,
        limit,
        |i| i.id.clone(),
        IdentityView::from,
    )))
}

async fn get_identity(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IdentityView>, ApiError> {
    check_id(&id)?;
    Ok(Json(directory::get_identity(&state.db, &id).await?.into()))
}

#[derive(Serialize)]
struct GroupView {
    id: String,
    data_source_id: String,
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    description: Option<String>,
    version: i64,
    created_at: String,
    updated_at: String,
}

impl From<Group> for GroupView {
    fn from(g: Group) -> Self {
        GroupView {
            id: g.id,
            data_source_id: g.data_source_id,
            display_name: g.attributes.display_name,
            external_id: g.attributes.external_id,
            description: g.attributes.description,
            version: g.version,
            created_at: rfc3339(g.created_at),
            updated_at: rfc3339(g.updated_at),
        }
    }
}

async fn list_groups(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<GroupView>>, ApiError> {
    let limit = q.limit()?;
    let items = directory::list_groups(
        &state.db,
        q.data_source_id.as_deref(),
        q.after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(page(items, limit, |g| g.id.clone(), GroupView::from)))
}

async fn get_group(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<GroupView>, ApiError> {
    check_id(&id)?;
    Ok(Json(directory::get_group(&state.db, &id).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberPageQuery {
    /// `kind:id` of the last member of the previous page.
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct MemberView {
    kind: MemberKind,
    id: String,
    added_at: String,
}

async fn list_group_members(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MemberPageQuery>,
) -> Result<Json<Page<MemberView>>, ApiError> {
    check_id(&id)?;
    let limit = PageQuery {
        data_source_id: None,
        after: None,
        limit: q.limit,
    }
    .limit()?;
    let after = match q.after.as_deref() {
        None => None,
        Some(cursor) => {
            let parsed = cursor
                .split_once(':')
                .and_then(|(k, id)| MemberKind::parse(k).map(|k| (k, id)))
                .ok_or_else(|| {
                    ApiError::bad_request("after must be a cursor returned as next_after")
                })?;
            Some(parsed)
        }
    };
    directory::get_group(&state.db, &id).await?;
    let members = directory::list_group_members(&state.db, &id, after, limit).await?;
    Ok(Json(page(
        members,
        limit,
        |m: &GroupMember| format!("{}:{}", m.member_kind, m.member_id),
        |m| MemberView {
            kind: m.member_kind,
            id: m.member_id,
            added_at: rfc3339(m.added_at),
        },
    )))
}
