//! `/api/v1/memberships`: grant, extend, renew and revoke roles (Apporetum's App Membership
//! Write), and read grants of every source.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::{Grant, GrantSource, GrantStatus};
use tessera_store::governance::grants::{self, Change, GrantFilter, GrantRequest};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    ApiId, ApiJson, ApiQuery, IfMatch, Page, check_limit, created, page, parse_time, versioned,
};
use super::{AdminCaller, ApiError, change_context};
use crate::{AppState, rfc3339};

#[derive(Serialize, ToSchema)]
pub struct MembershipView {
    id: String,
    role_id: String,
    application_id: String,
    /// `null` for an account no identity matched.
    identity_id: Option<String>,
    account_id: Option<String>,
    source: GrantSource,
    status: GrantStatus,
    #[schema(format = DateTime)]
    starts_at: String,
    /// `null`: until revoked.
    #[schema(format = DateTime)]
    ends_at: Option<String>,
    /// The actor that granted it, as `kind:id`.
    granted_by: Option<String>,
    reason: Option<String>,
    #[schema(format = DateTime)]
    ended_at: Option<String>,
    ended_by: Option<String>,
    end_reason: Option<String>,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<Grant> for MembershipView {
    fn from(g: Grant) -> Self {
        MembershipView {
            id: g.id,
            role_id: g.role_id,
            application_id: g.application_id,
            identity_id: g.identity_id,
            account_id: g.account_id,
            source: g.source,
            status: g.status,
            starts_at: rfc3339(g.starts_at),
            ends_at: g.ends_at.map(rfc3339),
            granted_by: g.granted_by,
            reason: g.reason,
            ended_at: g.ended_at.map(rfc3339),
            ended_by: g.ended_by,
            end_reason: g.end_reason,
            version: g.version,
            created_at: rfc3339(g.created_at),
            updated_at: rfc3339(g.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipCreate {
    role_id: String,
    identity_id: String,
    /// When access starts (default: now). A later start schedules the membership.
    #[schema(format = DateTime)]
    starts_at: Option<String>,
    /// When access ends (default: the role's standard duration, or never if it has none).
    #[schema(format = DateTime)]
    ends_at: Option<String>,
    /// Why (recorded in the audit log).
    reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipExtend {
    /// The new end, later than the current one and within the role's maximum duration.
    #[schema(format = DateTime)]
    ends_at: String,
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipRenew {
    reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MembershipQuery {
    application_id: Option<String>,
    role_id: Option<String>,
    identity_id: Option<String>,
    account_id: Option<String>,
    status: Option<GrantStatus>,
    source: Option<GrantSource>,
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// Why (recorded in the audit log).
    reason: Option<String>,
}

/// Lists memberships of every source, oldest first.
#[utoipa::path(get, path = "/api/v1/memberships", tag = "memberships",
    params(MembershipQuery),
    responses((status = 200, description = "A page of memberships", body = Page<MembershipView>)))]
pub async fn list_memberships(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<MembershipQuery>,
) -> Result<axum::Json<Page<MembershipView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let filter = GrantFilter {
        application_id: q.application_id,
        role_id: q.role_id,
        identity_id: q.identity_id,
        account_id: q.account_id,
        status: q.status,
        source: q.source,
    };
    let items = grants::list(&state.db, &filter, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |g| g.id.clone(),
        MembershipView::from,
    )))
}

/// Grants a role to an identity. Refused (422, with a problem type naming the rule) when the
/// identity is not active, the application is observed, the duration is beyond the role's
/// maximum, or a prerequisite role is not held.
#[utoipa::path(post, path = "/api/v1/memberships", tag = "memberships",
    request_body = MembershipCreate,
    responses((status = 201, description = "Granted", body = MembershipView,
        headers(("ETag" = String), ("Location" = String)))))]
pub async fn grant_membership(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MembershipCreate>,
) -> Result<Response, ApiError> {
    let request = GrantRequest {
        role_id: body.role_id,
        identity_id: body.identity_id,
        starts_at: body
            .starts_at
            .as_deref()
            .map(|s| parse_time("starts_at", s))
            .transpose()?,
        ends_at: body
            .ends_at
            .as_deref()
            .map(|s| parse_time("ends_at", s))
            .transpose()?,
        reason: body.reason,
    };
    let grant = grants::grant(&state.db, &change_context(&caller), request).await?;
    let location = format!("/api/v1/memberships/{}", grant.id);
    Ok(created(
        &location,
        grant.version,
        &MembershipView::from(grant),
    ))
}

/// Reads a membership.
#[utoipa::path(get, path = "/api/v1/memberships/{id}", tag = "memberships",
    params(("id" = String, Path, description = "Membership id")),
    responses((status = 200, description = "The membership", body = MembershipView,
        headers(("ETag" = String)))))]
pub async fn get_membership(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let grant = grants::get(&state.db, &id).await?;
    Ok(versioned(
        StatusCode::OK,
        grant.version,
        &MembershipView::from(grant),
    ))
}

async fn apply(
    state: &AppState,
    caller: &tessera_store::admin_tokens::AdminToken,
    id: &str,
    version: Option<i64>,
    change: Change,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let grant = grants::change(
        &mut tx,
        &change_context(caller),
        id,
        version,
        change,
        reason,
    )
    .await?;
    tx.commit().await?;
    Ok(versioned(
        StatusCode::OK,
        grant.version,
        &MembershipView::from(grant),
    ))
}

/// Moves a live membership's end later, within the role's maximum duration.
#[utoipa::path(post, path = "/api/v1/memberships/{id}/extend", tag = "memberships",
    params(("id" = String, Path, description = "Membership id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body = MembershipExtend,
    responses((status = 200, description = "Extended", body = MembershipView,
        headers(("ETag" = String)))))]
pub async fn extend_membership(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiJson(body): ApiJson<MembershipExtend>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    let ends_at = parse_time("ends_at", &body.ends_at)?;
    apply(
        &state,
        &caller,
        &id,
        version,
        Change::Extend { ends_at },
        body.reason,
    )
    .await
}

/// A JSON body that may be left out entirely.
fn optional_json<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Sets a live membership's end to now plus the role's standard duration (never earlier than
/// its current end). The body is optional.
#[utoipa::path(post, path = "/api/v1/memberships/{id}/renew", tag = "memberships",
    params(("id" = String, Path, description = "Membership id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = Option<MembershipRenew>, description = "Optional"),
    responses((status = 200, description = "Renewed", body = MembershipView,
        headers(("ETag" = String)))))]
pub async fn renew_membership(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    body: Bytes,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    let body: MembershipRenew = optional_json(&body)?;
    apply(&state, &caller, &id, version, Change::Renew, body.reason).await
}

/// Ends a live membership now. Memberships kept by a group mapping or birthright policy are
/// changed at their source instead (422).
#[utoipa::path(delete, path = "/api/v1/memberships/{id}", tag = "memberships",
    params(("id" = String, Path, description = "Membership id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read"), RevokeQuery),
    responses((status = 200, description = "Revoked", body = MembershipView,
        headers(("ETag" = String)))))]
pub async fn revoke_membership(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiQuery(q): ApiQuery<RevokeQuery>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    apply(&state, &caller, &id, version, Change::Revoke, q.reason).await
}
