//! `/api/v1/group-mappings`: what a data source's groups give their members (a platform role,
//! application roles). Each change takes effect for the group's members before it returns.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::group_mapping::{GroupMapping, PlatformRole};
use tessera_store::governance::group_mappings::{self, MappingFilter, NewGroupMapping};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    ApiId, ApiJson, ApiQuery, IfMatch, Page, check_limit, created, page, versioned,
};
use super::{AdminCaller, ApiError, change_context, nullable};
use crate::{AppState, rfc3339};

#[derive(Serialize, ToSchema)]
pub struct GroupMappingView {
    id: String,
    /// The group's data source (mappings only ever concern its identities).
    data_source_id: String,
    group_id: String,
    /// The platform role the group gives; `null`: none (it gives application roles only).
    platform_role: Option<PlatformRole>,
    /// Lower comes first when a person is in several groups that give a platform role and the
    /// data source's precedence is `priority`.
    priority: i64,
    /// Application roles the group's members hold (source `group_mapping`) while members.
    role_ids: Vec<String>,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<GroupMapping> for GroupMappingView {
    fn from(m: GroupMapping) -> Self {
        GroupMappingView {
            id: m.id,
            data_source_id: m.data_source_id,
            group_id: m.group_id,
            platform_role: m.platform_role,
            priority: m.priority,
            role_ids: m.role_ids,
            version: m.version,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMappingCreate {
    group_id: String,
    platform_role: Option<PlatformRole>,
    /// 0 to 1,000,000; default 100.
    priority: Option<i64>,
    /// At most 100 roles, in applications Tessera manages.
    #[serde(default)]
    role_ids: Vec<String>,
}

/// A JSON merge patch: absent fields keep their value, `null` clears the platform role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMappingPatch {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<PlatformRole>)]
    platform_role: Option<Option<PlatformRole>>,
    priority: Option<i64>,
    /// Replaces the whole list.
    role_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GroupMappingQuery {
    data_source_id: Option<String>,
    group_id: Option<String>,
    /// Mappings that give this application role.
    role_id: Option<String>,
    platform_role: Option<PlatformRole>,
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists group mappings, oldest first.
#[utoipa::path(get, path = "/api/v1/group-mappings", tag = "group-mappings",
    params(GroupMappingQuery),
    responses((status = 200, description = "A page of group mappings", body = Page<GroupMappingView>)))]
pub async fn list_group_mappings(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<GroupMappingQuery>,
) -> Result<axum::Json<Page<GroupMappingView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let filter = MappingFilter {
        id: None,
        data_source_id: q.data_source_id,
        group_id: q.group_id,
        role_id: q.role_id,
        platform_role: q.platform_role,
    };
    let items = group_mappings::list(&state.db, &filter, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |m| m.id.clone(),
        GroupMappingView::from,
    )))
}

/// Maps a group to a platform role and/or application roles; its members (nested groups
/// included) get them at once. One mapping per group (409 for a second).
#[utoipa::path(post, path = "/api/v1/group-mappings", tag = "group-mappings",
    request_body = GroupMappingCreate,
    responses((status = 201, description = "Created", body = GroupMappingView,
        headers(("ETag" = String), ("Location" = String)))))]
pub async fn create_group_mapping(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<GroupMappingCreate>,
) -> Result<Response, ApiError> {
    let new = NewGroupMapping {
        group_id: body.group_id,
        platform_role: body.platform_role,
        priority: body.priority,
        role_ids: body.role_ids,
    };
    let mut tx = state.db.begin().await?;
    let mapping = group_mappings::create(&mut tx, &change_context(&caller), new).await?;
    tx.commit().await?;
    let location = format!("/api/v1/group-mappings/{}", mapping.id);
    Ok(created(
        &location,
        mapping.version,
        &GroupMappingView::from(mapping),
    ))
}

/// Reads a group mapping.
#[utoipa::path(get, path = "/api/v1/group-mappings/{id}", tag = "group-mappings",
    params(("id" = String, Path, description = "Group mapping id")),
    responses((status = 200, description = "The group mapping", body = GroupMappingView,
        headers(("ETag" = String)))))]
pub async fn get_group_mapping(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let mapping = group_mappings::get(&state.db, &id).await?;
    Ok(versioned(
        StatusCode::OK,
        mapping.version,
        &GroupMappingView::from(mapping),
    ))
}

/// Changes what a group gives (JSON merge patch); members are re-evaluated at once.
#[utoipa::path(patch, path = "/api/v1/group-mappings/{id}", tag = "group-mappings",
    params(("id" = String, Path, description = "Group mapping id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = GroupMappingPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed group mapping", body = GroupMappingView,
        headers(("ETag" = String)))))]
pub async fn update_group_mapping(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiJson(patch): ApiJson<GroupMappingPatch>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    let mapping = group_mappings::update(&mut tx, &change_context(&caller), &id, version, |m| {
        if let Some(v) = patch.platform_role {
            m.platform_role = v;
        }
        if let Some(v) = patch.priority {
            m.priority = v;
        }
        if let Some(v) = patch.role_ids {
            m.role_ids = v;
        }
        Ok(())
    })
    .await?;
    tx.commit().await?;
    Ok(versioned(
        StatusCode::OK,
        mapping.version,
        &GroupMappingView::from(mapping),
    ))
}

/// Deletes a group mapping: what it gave is taken back from its members (unless another
/// mapping of theirs gives it too).
#[utoipa::path(delete, path = "/api/v1/group-mappings/{id}", tag = "group-mappings",
    params(("id" = String, Path, description = "Group mapping id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_group_mapping(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    group_mappings::delete(&mut tx, &change_context(&caller), &id, version).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
