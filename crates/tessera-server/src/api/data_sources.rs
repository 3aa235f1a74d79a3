//! `/api/v1/data-sources`: where identities come from, and user list uploads to CSV data
//! sources (Apporetum's *Update Data Source Users*).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_domain::directory::user_upload::{
    self, MissingUsers, RawUser, UserCounts, check_user_names, check_users, diff_users,
};
use tessera_domain::directory::{DataSource, DataSourceKind, MatchingKey};
use tessera_domain::governance::group_mapping::{PlatformRole, PlatformRolePrecedence};
use tessera_store::governance::group_access::{default_platform_role, platform_role_precedence};
use tessera_store::{directory, user_upload as store};
use utoipa::ToSchema;

use axum::response::IntoResponse;

use super::extract::{ApiId, ApiJson, ApiQuery, is_json, json_body, media_type};
use super::uploads::{REPORT_ITEMS, UploadQuery, invalid_rows, read_upload};
use super::{AdminCaller, ApiError, change_context};
use crate::{AppState, rfc3339};

#[derive(Serialize, ToSchema)]
pub struct DataSourceView {
    id: String,
    name: String,
    kind: DataSourceKind,
    matching_key: MatchingKey,
    /// CSV sources: what a user list upload does to identities it lacks.
    missing_users: MissingUsers,
    /// How one platform role is picked for a person in several mapped groups.
    platform_role_precedence: PlatformRolePrecedence,
    /// The platform role of identities in no group mapped to one.
    default_platform_role: PlatformRole,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<DataSource> for DataSourceView {
    fn from(d: DataSource) -> Self {
        DataSourceView {
            missing_users: store::missing_users(&d),
            platform_role_precedence: platform_role_precedence(&d.settings),
            default_platform_role: default_platform_role(&d.settings),
            id: d.id,
            name: d.name,
            kind: d.kind,
            matching_key: d.matching_key,
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DataSourceList {
    items: Vec<DataSourceView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSourceCreate {
    name: String,
    kind: DataSourceKind,
    /// How incoming users find existing identities.
    matching_key: MatchingKey,
    /// CSV sources: suspend (default), delete or ignore identities a user list lacks.
    missing_users: Option<MissingUsers>,
    /// `priority` (default): the mapping with the lowest priority wins; `most_recent`: the
    /// group the person joined last wins.
    platform_role_precedence: Option<PlatformRolePrecedence>,
    /// Default `requester`.
    default_platform_role: Option<PlatformRole>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSourcePatch {
    name: Option<String>,
    missing_users: Option<MissingUsers>,
    platform_role_precedence: Option<PlatformRolePrecedence>,
    default_platform_role: Option<PlatformRole>,
}

fn set_settings(
    d: &mut DataSource,
    missing_users: Option<MissingUsers>,
    precedence: Option<PlatformRolePrecedence>,
    default_role: Option<PlatformRole>,
) {
    if let Some(v) = missing_users {
        d.settings["missing_users"] = json!(v);
    }
    if let Some(v) = precedence {
        d.settings["platform_role_precedence"] = json!(v);
    }
    if let Some(v) = default_role {
        d.settings["default_platform_role"] = json!(v);
    }
}

/// Lists the data sources (at most 1000, by name).
#[utoipa::path(get, path = "/api/v1/data-sources", tag = "directory",
    responses((status = 200, description = "The data sources", body = DataSourceList)))]
pub async fn list_data_sources(
    _: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<DataSourceList>, ApiError> {
    let sources = directory::list_data_sources(&state.db).await?;
    Ok(Json(DataSourceList {
        items: sources.into_iter().map(DataSourceView::from).collect(),
    }))
}

/// Creates a data source (a SCIM source gets its tokens from `tessera scim-token create`).
#[utoipa::path(post, path = "/api/v1/data-sources", tag = "directory",
    request_body = DataSourceCreate,
    responses((status = 201, description = "Created", body = DataSourceView,
        headers(("Location" = String)))))]
pub async fn create_data_source(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DataSourceCreate>,
) -> Result<Response, ApiError> {
    let ctx = change_context(&caller);
    let mut tx = state.db.begin().await?;
    let mut source =
        directory::create_data_source(&mut tx, &ctx, &body.name, body.kind, body.matching_key)
            .await?;
    if body.missing_users.is_some()
        || body.platform_role_precedence.is_some()
        || body.default_platform_role.is_some()
    {
        source = directory::update_data_source(&mut tx, &ctx, &source.id, |d| {
            set_settings(
                d,
                body.missing_users,
                body.platform_role_precedence,
                body.default_platform_role,
            );
            Ok(())
        })
        .await?;
    }
    tx.commit().await?;
    let location = format!("/api/v1/data-sources/{}", source.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        Json(DataSourceView::from(source)),
    )
        .into_response())
}

/// Reads a data source.
#[utoipa::path(get, path = "/api/v1/data-sources/{id}", tag = "directory",
    params(("id" = String, Path, description = "Data source id")),
    responses((status = 200, description = "The data source", body = DataSourceView)))]
pub async fn get_data_source(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Json<DataSourceView>, ApiError> {
    Ok(Json(
        directory::get_data_source(&state.db, &id).await?.into(),
    ))
}

/// Renames a data source or changes its settings: what user lists do to the users they lack,
/// and how group mappings pick platform roles (a new precedence re-evaluates everyone in a
/// mapped group at once).
#[utoipa::path(patch, path = "/api/v1/data-sources/{id}", tag = "directory",
    params(("id" = String, Path, description = "Data source id")),
    request_body(content = DataSourcePatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed data source", body = DataSourceView)))]
pub async fn update_data_source(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    ApiJson(patch): ApiJson<DataSourcePatch>,
) -> Result<Json<DataSourceView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let source = directory::update_data_source(&mut tx, &change_context(&caller), &id, |d| {
        if let Some(name) = patch.name {
            d.name = name;
        }
        set_settings(
            d,
            patch.missing_users,
            patch.platform_role_precedence,
            patch.default_platform_role,
        );
        Ok(())
    })
    .await?;
    tx.commit().await?;
    Ok(Json(DataSourceView::from(source)))
}

/// The JSON form of a user list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserList {
    users: Vec<UserEntry>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    user_name: Option<String>,
    email: Option<String>,
    employee_number: Option<String>,
    external_id: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    department: Option<String>,
    job_title: Option<String>,
    /// The manager's matching key value (another user of the list).
    manager: Option<String>,
}

impl UserEntry {
    fn into_raw(self) -> RawUser {
        let u = self;
        [
            ("user_name", u.user_name),
            ("email", u.email),
            ("employee_number", u.employee_number),
            ("external_id", u.external_id),
            ("display_name", u.display_name),
            ("given_name", u.given_name),
            ("family_name", u.family_name),
            ("department", u.department),
            ("job_title", u.job_title),
            ("manager", u.manager),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (k, v))
        })
        .collect()
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserItem {
    /// The identity, when it exists already.
    id: Option<String>,
    user_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserUploadItems {
    created: Vec<UserItem>,
    updated: Vec<UserItem>,
    /// Identities the list lacks (suspended or deleted as `missing_action` says).
    missing: Vec<UserItem>,
}

#[derive(Serialize, ToSchema)]
pub struct UserUploadCounts {
    created: usize,
    updated: usize,
    missing: usize,
}

/// What a user list changed (or, in a dry run, would change).
#[derive(Serialize, ToSchema)]
pub struct UserUploadReport {
    dry_run: bool,
    rows: usize,
    changed: bool,
    missing_action: MissingUsers,
    /// What the plan holds.
    counts: UserUploadCounts,
    /// What was written (all zero in a dry run).
    applied: AppliedCounts,
    items: UserUploadItems,
    truncated: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AppliedCounts {
    created: usize,
    updated: usize,
    suspended: usize,
    deleted: usize,
}

impl From<UserCounts> for AppliedCounts {
    fn from(c: UserCounts) -> Self {
        AppliedCounts {
            created: c.created,
            updated: c.updated,
            suspended: c.suspended,
            deleted: c.deleted,
        }
    }
}

/// Uploads the full user list of a CSV data source: `text/csv` (columns `user_name`, `email`,
/// `employee_number`, `external_id`, `display_name`, `given_name`, `family_name`,
/// `department`, `job_title`, `manager`; the matching key's column is required) or JSON.
/// Identities are created or updated by the matching key; those the list lacks are suspended,
/// deleted or left alone, as the source's `missing_users` says.
#[utoipa::path(put, path = "/api/v1/data-sources/{id}/users", tag = "directory",
    params(("id" = String, Path, description = "Data source id"), UploadQuery),
    request_body(content(
        (UserList = "application/json"),
        (String = "text/csv", example = "user_name,email,manager\nann,ann@example.org,\n"),
    )),
    responses((status = 200, description = "What changed", body = UserUploadReport)))]
pub async fn upload_users(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UserUploadReport>, ApiError> {
    let media = media_type(&headers).unwrap_or_default();
    let is_csv = media == "text/csv";
    if !is_csv && !is_json(&media) {
        return Err(ApiError::UnsupportedMediaType(
            "a user list is text/csv or application/json".into(),
        ));
    }
    let (source, missing_action) = store::csv_data_source(&state.db, &id).await?;
    let body = read_upload(&state, body).await?;
    let raw: Vec<(u64, RawUser)> = if is_csv {
        user_upload::read_csv(&body, source.matching_key).map_err(invalid_rows)?
    } else {
        let list: UserList = json_body(&body)?;
        list.users
            .into_iter()
            .enumerate()
            .map(|(i, u)| (i as u64 + 1, u.into_raw()))
            .collect()
    };
    let rows = check_users(raw, source.matching_key).map_err(invalid_rows)?;
    let held = store::held_identities(&state.db, &source.id).await?;
    let plan = diff_users(&rows, &held, source.matching_key, missing_action);
    check_user_names(&rows, &held, &plan).map_err(invalid_rows)?;
    let applied = if q.dry_run || plan.changes_nothing() {
        UserCounts::default()
    } else {
        store::apply(
            &state.db,
            &change_context(&caller),
            &source,
            &held,
            &rows,
            &plan,
        )
        .await?
    };
    let mut truncated = false;
    let mut cap = |n: usize| {
        truncated |= n > REPORT_ITEMS;
        n.min(REPORT_ITEMS)
    };
    let items = UserUploadItems {
        created: plan.create[..cap(plan.create.len())]
            .iter()
            .map(|&i| UserItem {
                id: None,
                user_name: rows[i].attributes.user_name.clone(),
            })
            .collect(),
        updated: plan.update[..cap(plan.update.len())]
            .iter()
            .map(|(h, i)| UserItem {
                id: Some(h.id.clone()),
                user_name: rows[*i].attributes.user_name.clone(),
            })
            .collect(),
        missing: plan.missing[..cap(plan.missing.len())]
            .iter()
            .map(|h| UserItem {
                id: Some(h.id.clone()),
                user_name: h.attributes.user_name.clone(),
            })
            .collect(),
    };
    Ok(Json(UserUploadReport {
        dry_run: q.dry_run,
        rows: rows.len(),
        changed: !plan.changes_nothing(),
        missing_action,
        counts: UserUploadCounts {
            created: plan.create.len(),
            updated: plan.update.len(),
            missing: plan.missing.len(),
        },
        applied: applied.into(),
        items,
        truncated,
    }))
}
