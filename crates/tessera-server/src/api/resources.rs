//! `/api/v1/applications/{id}/resources` and `/api/v1/resources/{id}`.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::{
    DurationPolicy, EffectiveSettings, Principal, Resource, SettingOverrides,
};
use tessera_store::governance::applications;
use tessera_store::governance::resources::{self, NewResource, ResourceFilter};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    ApiId, ApiJson, ApiQuery, IfMatch, Page, check_limit, created, page, versioned,
};
use super::{AdminCaller, ApiError, change_context, check_workflow_id, nullable};
use crate::{AppState, rfc3339};

/// What a resource sets for itself; `null` inherits from its parent or application.
#[derive(Serialize, ToSchema)]
pub struct ResourceOverrides {
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<DurationPolicy>,
    owner: Option<Principal>,
    maintainers: Option<Vec<Principal>>,
}

#[derive(Serialize, ToSchema)]
pub struct ResourceView {
    id: String,
    application_id: String,
    parent_id: Option<String>,
    name: String,
    resource_type: String,
    description: Option<String>,
    external_id: Option<String>,
    tags: Vec<String>,
    overrides: ResourceOverrides,
    /// The settings in force and where each comes from (single-resource reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    effective: Option<EffectiveSettings>,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl ResourceView {
    fn new(r: Resource, effective: Option<EffectiveSettings>) -> Self {
        let o = r.overrides;
        ResourceView {
            id: r.id,
            application_id: r.application_id,
            parent_id: r.parent_id,
            name: r.name,
            resource_type: r.resource_type,
            description: r.description,
            external_id: r.external_id,
            tags: r.tags,
            overrides: ResourceOverrides {
                requestable: o.requestable,
                workflow_id: o.workflow_id,
                durations: o.durations,
                owner: o.owner,
                maintainers: o.maintainers,
            },
            effective,
            version: r.version,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceCreate {
    /// A resource of the same application to nest under.
    parent_id: Option<String>,
    name: String,
    /// What the resource is: `group`, `repository`, `database`, `app`, … (a-z, 0-9, `_-.`).
    resource_type: String,
    description: Option<String>,
    /// The resource's id in the application's system.
    external_id: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<DurationPolicy>,
    owner: Option<Principal>,
    maintainers: Option<Vec<Principal>>,
}

/// A JSON merge patch: absent fields keep their value, `null` clears (an override then
/// inherits again).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    name: Option<String>,
    resource_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    external_id: Option<Option<String>>,
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    requestable: Option<Option<bool>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    workflow_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DurationPolicy>)]
    durations: Option<Option<DurationPolicy>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Principal>)]
    owner: Option<Option<Principal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<Principal>>)]
    maintainers: Option<Option<Vec<Principal>>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResourceQuery {
    /// Only resources nested directly under this one; `root` for top-level resources.
    parent_id: Option<String>,
    resource_type: Option<String>,
    /// Only resources carrying this tag (ignoring case).
    tag: Option<String>,
    /// Names starting with this, ignoring case.
    name_prefix: Option<String>,
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists an application's resources, oldest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/resources", tag = "resources",
    params(("id" = String, Path, description = "Application id"), ResourceQuery),
    responses((status = 200, description = "A page of resources", body = Page<ResourceView>)))]
pub async fn list_resources(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(app_id): ApiId,
    ApiQuery(q): ApiQuery<ResourceQuery>,
) -> Result<axum::Json<Page<ResourceView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    applications::get(&state.db, &app_id).await?;
    let filter = ResourceFilter {
        application_id: Some(app_id),
        parent_id: q.parent_id.map(|p| (p != "root").then_some(p)),
        resource_type: q.resource_type,
        tag: q.tag,
        name_prefix: q.name_prefix,
    };
    let items = resources::list(&state.db, &filter, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |r| r.id.clone(),
        |r| ResourceView::new(r, None),
    )))
}

/// Creates a resource in an application.
#[utoipa::path(post, path = "/api/v1/applications/{id}/resources", tag = "resources",
    params(("id" = String, Path, description = "Application id")),
    request_body = ResourceCreate,
    responses((status = 201, description = "Created", body = ResourceView,
        headers(("ETag" = String), ("Location" = String)))))]
pub async fn create_resource(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(app_id): ApiId,
    ApiJson(body): ApiJson<ResourceCreate>,
) -> Result<Response, ApiError> {
    check_workflow_id(body.workflow_id.as_deref())?;
    let new = NewResource {
        application_id: app_id,
        parent_id: body.parent_id,
        name: body.name,
        resource_type: body.resource_type,
        description: body.description,
        external_id: body.external_id,
        tags: body.tags,
        overrides: SettingOverrides {
            requestable: body.requestable,
            workflow_id: body.workflow_id,
            durations: body.durations,
            owner: body.owner,
            maintainers: body.maintainers,
        },
    };
    let mut tx = state.db.begin().await?;
    let resource = resources::create(&mut tx, &change_context(&caller), new).await?;
    let effective = resources::effective_settings_in(&mut tx, &resource).await?;
    tx.commit().await?;
    let location = format!("/api/v1/resources/{}", resource.id);
    Ok(created(
        &location,
        resource.version,
        &ResourceView::new(resource, Some(effective)),
    ))
}

/// Reads a resource with its effective settings.
#[utoipa::path(get, path = "/api/v1/resources/{id}", tag = "resources",
    params(("id" = String, Path, description = "Resource id")),
    responses((status = 200, description = "The resource", body = ResourceView,
        headers(("ETag" = String)))))]
pub async fn get_resource(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let resource = resources::get(&state.db, &id).await?;
    let effective = resources::effective_settings(&state.db, &resource).await?;
    Ok(versioned(
        StatusCode::OK,
        resource.version,
        &ResourceView::new(resource, Some(effective)),
    ))
}

/// Changes a resource (JSON merge patch). Send `If-Match` to refuse lost updates.
#[utoipa::path(patch, path = "/api/v1/resources/{id}", tag = "resources",
    params(("id" = String, Path, description = "Resource id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = ResourcePatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed resource", body = ResourceView,
        headers(("ETag" = String)))))]
pub async fn update_resource(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiJson(patch): ApiJson<ResourcePatch>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    if let Some(Some(w)) = &patch.workflow_id {
        check_workflow_id(Some(w))?;
    }
    let mut tx = state.db.begin().await?;
    let resource = resources::update(&mut tx, &change_context(&caller), &id, version, |r| {
        if let Some(v) = patch.name {
            r.name = v;
        }
        if let Some(v) = patch.resource_type {
            r.resource_type = v;
        }
        if let Some(v) = patch.description {
            r.description = v;
        }
        if let Some(v) = patch.external_id {
            r.external_id = v;
        }
        if let Some(v) = patch.tags {
            r.tags = v;
        }
        let o = &mut r.overrides;
        if let Some(v) = patch.requestable {
            o.requestable = v;
        }
        if let Some(v) = patch.workflow_id {
            o.workflow_id = v;
        }
        if let Some(v) = patch.durations {
            o.durations = v;
        }
        if let Some(v) = patch.owner {
            o.owner = v;
        }
        if let Some(v) = patch.maintainers {
            o.maintainers = v;
        }
        Ok(())
    })
    .await?;
    let effective = resources::effective_settings_in(&mut tx, &resource).await?;
    tx.commit().await?;
    Ok(versioned(
        StatusCode::OK,
        resource.version,
        &ResourceView::new(resource, Some(effective)),
    ))
}

/// Deletes a resource with its nested resources and roles. Refused (409) while any membership
/// under it is live, or a role elsewhere requires one of its roles.
#[utoipa::path(delete, path = "/api/v1/resources/{id}", tag = "resources",
    params(("id" = String, Path, description = "Resource id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_resource(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    resources::delete(&mut tx, &change_context(&caller), &id, version).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
