//! `/api/v1/applications`: the governed systems.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::member_upload::MemberFormat;
use tessera_domain::governance::{
    Application, ApplicationSettings, ConnectorKind, DurationPolicy, ManagementMode, Principal,
};
use tessera_store::governance::applications::{self, ApplicationFilter, NewApplication};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    ApiId, ApiJson, ApiQuery, IfMatch, Page, check_limit, created, page, versioned,
};
use super::{AdminCaller, ApiError, change_context, check_workflow_id, nullable};
use crate::{AppState, rfc3339};

#[derive(Serialize, ToSchema)]
pub struct ApplicationView {
    id: String,
    name: String,
    description: Option<String>,
    icon: Option<String>,
    connector_kind: ConnectorKind,
    management_mode: ManagementMode,
    owner: Option<Principal>,
    maintainers: Vec<Principal>,
    default_workflow_id: Option<String>,
    settings: ApplicationSettings,
    /// CSV applications: the member file's columns and how user keys match identities.
    member_format: MemberFormat,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<Application> for ApplicationView {
    fn from(a: Application) -> Self {
        ApplicationView {
            id: a.id,
            name: a.name,
            description: a.description,
            icon: a.icon,
            connector_kind: a.connector_kind,
            management_mode: a.management_mode,
            owner: a.owner,
            maintainers: a.maintainers,
            default_workflow_id: a.default_workflow_id,
            settings: a.settings,
            member_format: a.member_format,
            version: a.version,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

/// Application settings to change; absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    read_only: Option<bool>,
    requestable: Option<bool>,
    requestable_by_default: Option<bool>,
    allow_creating_accounts: Option<bool>,
    allow_changing_account_permissions: Option<bool>,
    notify_external_changes: Option<bool>,
    durations: Option<DurationPolicy>,
    auto_assign_recommended_owners: Option<bool>,
    auto_assign_recommended_maintainers: Option<bool>,
}

impl SettingsPatch {
    fn apply(self, s: &mut ApplicationSettings) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { s.$field = v; } )* };
        }
        set!(
            read_only,
            requestable,
            requestable_by_default,
            allow_creating_accounts,
            allow_changing_account_permissions,
            notify_external_changes,
            durations,
            auto_assign_recommended_owners,
            auto_assign_recommended_maintainers
        );
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationCreate {
    name: String,
    description: Option<String>,
    /// An image URL or a short text (e.g. an emoji) shown beside the name.
    icon: Option<String>,
    connector_kind: ConnectorKind,
    /// `managed` (default): Tessera enforces grants. `observed`: it only reports.
    management_mode: Option<ManagementMode>,
    owner: Option<Principal>,
    #[serde(default)]
    maintainers: Vec<Principal>,
    default_workflow_id: Option<String>,
    /// Settings to change from the defaults.
    #[serde(default)]
    settings: SettingsPatch,
    /// CSV applications: the member file's layout (defaults: `user`, `role`, `end_date`,
    /// matched by user name).
    member_format: Option<MemberFormat>,
}

/// A JSON merge patch (RFC 7396): absent fields keep their value, `null` clears.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationPatch {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    icon: Option<Option<String>>,
    connector_kind: Option<ConnectorKind>,
    management_mode: Option<ManagementMode>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Principal>)]
    owner: Option<Option<Principal>>,
    maintainers: Option<Vec<Principal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    default_workflow_id: Option<Option<String>>,
    settings: Option<SettingsPatch>,
    member_format: Option<MemberFormat>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApplicationQuery {
    connector_kind: Option<ConnectorKind>,
    /// Names starting with this, ignoring case.
    name_prefix: Option<String>,
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists applications, oldest first.
#[utoipa::path(get, path = "/api/v1/applications", tag = "applications",
    params(ApplicationQuery),
    responses((status = 200, description = "A page of applications", body = Page<ApplicationView>)))]
pub async fn list_applications(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ApplicationQuery>,
) -> Result<axum::Json<Page<ApplicationView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let filter = ApplicationFilter {
        connector_kind: q.connector_kind,
        name_prefix: q.name_prefix,
    };
    let items = applications::list(&state.db, &filter, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |a| a.id.clone(),
        ApplicationView::from,
    )))
}

/// Creates an application.
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications",
    request_body = ApplicationCreate,
    responses((status = 201, description = "Created", body = ApplicationView,
        headers(("ETag" = String), ("Location" = String)))))]
pub async fn create_application(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ApplicationCreate>,
) -> Result<Response, ApiError> {
    check_workflow_id(body.default_workflow_id.as_deref())?;
    let mut settings = ApplicationSettings::default();
    body.settings.apply(&mut settings);
    let new = NewApplication {
        name: body.name,
        description: body.description,
        icon: body.icon,
        connector_kind: body.connector_kind,
        management_mode: body.management_mode.unwrap_or(ManagementMode::Managed),
        owner: body.owner,
        maintainers: body.maintainers,
        default_workflow_id: body.default_workflow_id,
        settings,
        member_format: body.member_format.unwrap_or_default(),
    };
    let mut tx = state.db.begin().await?;
    let app = applications::create(&mut tx, &change_context(&caller), new).await?;
    tx.commit().await?;
    let location = format!("/api/v1/applications/{}", app.id);
    Ok(created(&location, app.version, &ApplicationView::from(app)))
}

/// Reads an application.
#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    responses((status = 200, description = "The application", body = ApplicationView,
        headers(("ETag" = String)))))]
pub async fn get_application(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let app = applications::get(&state.db, &id).await?;
    Ok(versioned(
        StatusCode::OK,
        app.version,
        &ApplicationView::from(app),
    ))
}

/// Changes an application (JSON merge patch). Send `If-Match` to refuse lost updates.
#[utoipa::path(patch, path = "/api/v1/applications/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = ApplicationPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed application", body = ApplicationView,
        headers(("ETag" = String)))))]
pub async fn update_application(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiJson(patch): ApiJson<ApplicationPatch>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    if let Some(Some(w)) = &patch.default_workflow_id {
        check_workflow_id(Some(w))?;
    }
    let mut tx = state.db.begin().await?;
    let app = applications::update(&mut tx, &change_context(&caller), &id, version, |a| {
        if let Some(v) = patch.name {
            a.name = v;
        }
        if let Some(v) = patch.description {
            a.description = v;
        }
        if let Some(v) = patch.icon {
            a.icon = v;
        }
        if let Some(v) = patch.connector_kind {
            a.connector_kind = v;
        }
        if let Some(v) = patch.management_mode {
            a.management_mode = v;
        }
        if let Some(v) = patch.owner {
            a.owner = v;
        }
        if let Some(v) = patch.maintainers {
            a.maintainers = v;
        }
        if let Some(v) = patch.default_workflow_id {
            a.default_workflow_id = v;
        }
        if let Some(s) = patch.settings {
            s.apply(&mut a.settings);
        }
        if let Some(f) = patch.member_format {
            a.member_format = f;
        }
        Ok(())
    })
    .await?;
    tx.commit().await?;
    Ok(versioned(
        StatusCode::OK,
        app.version,
        &ApplicationView::from(app),
    ))
}

/// Deletes an application with its resources, roles and accounts. Refused (409) while any
/// membership in it is live.
#[utoipa::path(delete, path = "/api/v1/applications/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_application(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    applications::delete(&mut tx, &change_context(&caller), &id, version).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
