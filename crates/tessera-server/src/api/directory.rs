//! `/api/v1/whoami`, `/api/v1/identities` and `/api/v1/groups`: who exists, as the data
//! sources brought them.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tessera_domain::directory::{
    Group, GroupMember, Identity, IdentityKind, IdentityStatus, MemberKind,
};
use tessera_domain::governance::group_mapping::PlatformRole;
use tessera_store::directory;
use tessera_store::governance::group_access::default_platform_role;
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiId, ApiQuery, Page, check_limit, page};
use super::{AdminCaller, ApiError};
use crate::{AppState, rfc3339};

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    kind: &'static str,
    id: String,
    label: String,
}

/// The authenticated caller. Cheap and side-effect free: also the benchmark's authenticated route.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "directory",
    responses((status = 200, description = "The caller", body = WhoAmI)))]
pub async fn whoami(AdminCaller(token): AdminCaller) -> Json<WhoAmI> {
    Json(WhoAmI {
        kind: "admin_token",
        id: token.id,
        label: token.label,
    })
}

#[derive(Serialize, ToSchema)]
pub struct IdentityView {
    id: String,
    data_source_id: String,
    kind: IdentityKind,
    status: IdentityStatus,
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
    /// What the person may do in Tessera: from a group mapping, or the data source's default.
    platform_role: PlatformRole,
    /// The group mapping the platform role comes from; `null`: the data source's default.
    platform_role_mapping_id: Option<String>,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl IdentityView {
    /// The view, with `default` as the platform role of an identity in no mapped group.
    fn new(i: Identity, default: PlatformRole) -> Self {
        let a = i.attributes;
        let (platform_role, platform_role_mapping_id) = match i.platform_role {
            Some(d) => (d.role, d.mapping_id),
            None => (default, None),
        };
        IdentityView {
            platform_role,
            platform_role_mapping_id,
            id: i.id,
            data_source_id: i.data_source_id,
            kind: i.kind,
            status: i.status,
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

/// Keyset paging over a directory list, optionally within one data source.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DirectoryQuery {
    data_source_id: Option<String>,
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists identities (not deleted), oldest first.
#[utoipa::path(get, path = "/api/v1/identities", tag = "directory", params(DirectoryQuery),
    responses((status = 200, description = "A page of identities", body = Page<IdentityView>)))]
pub async fn list_identities(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DirectoryQuery>,
) -> Result<Json<Page<IdentityView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let items = directory::list_identities(
        &state.db,
        q.data_source_id.as_deref(),
        q.after.as_deref(),
        limit,
    )
    .await?;
    // The default platform role of each data source on the page (usually one or two).
    let mut defaults: HashMap<String, PlatformRole> = HashMap::new();
    for i in &items {
        if !defaults.contains_key(&i.data_source_id) {
            let source = directory::get_data_source(&state.db, &i.data_source_id).await?;
            defaults.insert(source.id, default_platform_role(&source.settings));
        }
    }
    Ok(Json(page(
        items,
        limit,
        |i| i.id.clone(),
        |i| {
            let default = defaults
                .get(&i.data_source_id)
                .copied()
                .unwrap_or(PlatformRole::Requester);
            IdentityView::new(i, default)
        },
    )))
}

/// Reads an identity.
#[utoipa::path(get, path = "/api/v1/identities/{id}", tag = "directory",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity", body = IdentityView)))]
pub async fn get_identity(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Json<IdentityView>, ApiError> {
    let identity = directory::get_identity(&state.db, &id).await?;
    let source = directory::get_data_source(&state.db, &identity.data_source_id).await?;
    Ok(Json(IdentityView::new(
        identity,
        default_platform_role(&source.settings),
    )))
}

#[derive(Serialize, ToSchema)]
pub struct GroupView {
    id: String,
    data_source_id: String,
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    description: Option<String>,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
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

/// Lists groups, oldest first.
#[utoipa::path(get, path = "/api/v1/groups", tag = "directory", params(DirectoryQuery),
    responses((status = 200, description = "A page of groups", body = Page<GroupView>)))]
pub async fn list_groups(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DirectoryQuery>,
) -> Result<Json<Page<GroupView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let items = directory::list_groups(
        &state.db,
        q.data_source_id.as_deref(),
        q.after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(page(items, limit, |g| g.id.clone(), GroupView::from)))
}

/// Reads a group.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "directory",
    params(("id" = String, Path, description = "Group id")),
    responses((status = 200, description = "The group", body = GroupView)))]
pub async fn get_group(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(directory::get_group(&state.db, &id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MemberPageQuery {
    /// `kind:id` of the last member of the previous page (its `next_after`).
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    kind: MemberKind,
    id: String,
    #[schema(format = DateTime)]
    added_at: String,
}

/// Lists a group's direct members.
#[utoipa::path(get, path = "/api/v1/groups/{id}/members", tag = "directory",
    params(("id" = String, Path, description = "Group id"), MemberPageQuery),
    responses((status = 200, description = "A page of members", body = Page<MemberView>)))]
pub async fn list_group_members(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    ApiQuery(q): ApiQuery<MemberPageQuery>,
) -> Result<Json<Page<MemberView>>, ApiError> {
    let limit = check_limit(q.limit)?;
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
