//! `/api/v1/resources/{id}/roles` and `/api/v1/roles/{id}`.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::{DurationPolicy, EffectiveSettings, Role, SettingOverrides};
use tessera_store::governance::resources;
use tessera_store::governance::roles::{self, NewRole, RoleFilter};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    ApiId, ApiJson, ApiQuery, IfMatch, Page, check_limit, created, page, versioned,
};
use super::{AdminCaller, ApiError, change_context, check_workflow_id, nullable};
use crate::{AppState, rfc3339};

/// What a role sets for itself; `null` inherits from its resource.
#[derive(Serialize, ToSchema)]
pub struct RoleOverrides {
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<DurationPolicy>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleView {
    id: String,
    resource_id: String,
    application_id: String,
    name: String,
    description: Option<String>,
    external_id: Option<String>,
    /// Sensitive roles are highlighted in reviews and requests.
    sensitive: bool,
    overrides: RoleOverrides,
    /// Roles an identity must hold before it may be granted this one.
    prerequisite_role_ids: Vec<String>,
    /// The settings in force and where each comes from (single-role reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    effective: Option<EffectiveSettings>,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl RoleView {
    fn new(r: Role, effective: Option<EffectiveSettings>) -> Self {
        RoleView {
            id: r.id,
            resource_id: r.resource_id,
            application_id: r.application_id,
            name: r.name,
            description: r.description,
            external_id: r.external_id,
            sensitive: r.sensitive,
            overrides: RoleOverrides {
                requestable: r.overrides.requestable,
                workflow_id: r.overrides.workflow_id,
                durations: r.overrides.durations,
            },
            prerequisite_role_ids: r.prerequisite_role_ids,
            effective,
            version: r.version,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleCreate {
    name: String,
    description: Option<String>,
    external_id: Option<String>,
    #[serde(default)]
    sensitive: bool,
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<DurationPolicy>,
    #[serde(default)]
    prerequisite_role_ids: Vec<String>,
}

/// A JSON merge patch: absent fields keep their value, `null` clears (an override then
/// inherits again).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    external_id: Option<Option<String>>,
    sensitive: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    requestable: Option<Option<bool>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    workflow_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DurationPolicy>)]
    durations: Option<Option<DurationPolicy>>,
    prerequisite_role_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RoleQuery {
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists a resource's roles, oldest first.
#[utoipa::path(get, path = "/api/v1/resources/{id}/roles", tag = "roles",
    params(("id" = String, Path, description = "Resource id"), RoleQuery),
    responses((status = 200, description = "A page of roles", body = Page<RoleView>)))]
pub async fn list_roles(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(resource_id): ApiId,
    ApiQuery(q): ApiQuery<RoleQuery>,
) -> Result<axum::Json<Page<RoleView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    resources::get(&state.db, &resource_id).await?;
    let filter = RoleFilter {
        application_id: None,
        resource_id: Some(resource_id),
    };
    let items = roles::list(&state.db, &filter, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |r| r.id.clone(),
        |r| RoleView::new(r, None),
    )))
}

/// Creates a role on a resource.
#[utoipa::path(post, path = "/api/v1/resources/{id}/roles", tag = "roles",
    params(("id" = String, Path, description = "Resource id")),
    request_body = RoleCreate,
    responses((status = 201, description = "Created", body = RoleView,
        headers(("ETag" = String), ("Location" = String)))))]
pub async fn create_role(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(resource_id): ApiId,
    ApiJson(body): ApiJson<RoleCreate>,
) -> Result<Response, ApiError> {
    check_workflow_id(body.workflow_id.as_deref())?;
    let new = NewRole {
        resource_id,
        name: body.name,
        description: body.description,
        external_id: body.external_id,
        sensitive: body.sensitive,
        overrides: SettingOverrides {
            requestable: body.requestable,
            workflow_id: body.workflow_id,
            durations: body.durations,
            owner: None,
            maintainers: None,
        },
        prerequisite_role_ids: body.prerequisite_role_ids,
    };
    let mut tx = state.db.begin().await?;
    let role = roles::create(&mut tx, &change_context(&caller), new).await?;
    let effective = roles::effective_settings_in(&mut tx, &role.id).await?;
    tx.commit().await?;
    let location = format!("/api/v1/roles/{}", role.id);
    Ok(created(
        &location,
        role.version,
        &RoleView::new(role, Some(effective)),
    ))
}

/// Reads a role with its effective settings.
#[utoipa::path(get, path = "/api/v1/roles/{id}", tag = "roles",
    params(("id" = String, Path, description = "Role id")),
    responses((status = 200, description = "The role", body = RoleView,
        headers(("ETag" = String)))))]
pub async fn get_role(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let ctx = roles::context(&state.db, &id).await?;
    let effective = ctx.effective_settings();
    Ok(versioned(
        StatusCode::OK,
        ctx.role.version,
        &RoleView::new(ctx.role, Some(effective)),
    ))
}

/// Changes a role (JSON merge patch). Send `If-Match` to refuse lost updates.
#[utoipa::path(patch, path = "/api/v1/roles/{id}", tag = "roles",
    params(("id" = String, Path, description = "Role id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = RolePatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed role", body = RoleView,
        headers(("ETag" = String)))))]
pub async fn update_role(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiJson(patch): ApiJson<RolePatch>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    if let Some(Some(w)) = &patch.workflow_id {
        check_workflow_id(Some(w))?;
    }
    let mut tx = state.db.begin().await?;
    let role = roles::update(&mut tx, &change_context(&caller), &id, version, |r| {
        if let Some(v) = patch.name {
            r.name = v;
        }
        if let Some(v) = patch.description {
            r.description = v;
        }
        if let Some(v) = patch.external_id {
            r.external_id = v;
        }
        if let Some(v) = patch.sensitive {
            r.sensitive = v;
        }
        if let Some(v) = patch.requestable {
            r.overrides.requestable = v;
        }
        if let Some(v) = patch.workflow_id {
            r.overrides.workflow_id = v;
        }
        if let Some(v) = patch.durations {
            r.overrides.durations = v;
        }
        if let Some(v) = patch.prerequisite_role_ids {
            r.prerequisite_role_ids = v;
        }
        Ok(())
    })
    .await?;
    let effective = roles::effective_settings_in(&mut tx, &role.id).await?;
    tx.commit().await?;
    Ok(versioned(
        StatusCode::OK,
        role.version,
        &RoleView::new(role, Some(effective)),
    ))
}

/// Deletes a role. Refused (409) while any of its memberships is live or another role
/// requires it.
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "roles",
    params(("id" = String, Path, description = "Role id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_role(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    roles::delete(&mut tx, &change_context(&caller), &id, version).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
