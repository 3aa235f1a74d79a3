//! `/api/v1/accounts`: identities' accounts in applications, and accounts no identity matched.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::{Account, AccountStatus};
use tessera_store::governance::accounts::{self, AccountFilter, NewAccount};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    ApiId, ApiJson, ApiQuery, IfMatch, Page, check_limit, created, page, versioned,
};
use super::{AdminCaller, ApiError, change_context, nullable};
use crate::{AppState, rfc3339};

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    id: String,
    application_id: String,
    /// `null`: no identity matched this account.
    identity_id: Option<String>,
    /// The account's key in the application (user name, e-mail or employee number).
    user_key: String,
    display_name: Option<String>,
    status: AccountStatus,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            id: a.id,
            application_id: a.application_id,
            identity_id: a.identity_id,
            user_key: a.user_key,
            display_name: a.display_name,
            status: a.status,
            version: a.version,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountCreate {
    application_id: String,
    identity_id: Option<String>,
    user_key: String,
    display_name: Option<String>,
    /// Default `active`.
    status: Option<AccountStatus>,
}

/// A JSON merge patch: absent fields keep their value, `null` clears.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    identity_id: Option<Option<String>>,
    user_key: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    display_name: Option<Option<String>>,
    status: Option<AccountStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    application_id: Option<String>,
    identity_id: Option<String>,
    /// `false`: only accounts no identity matched; `true`: only matched ones.
    matched: Option<bool>,
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists accounts, oldest first.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts",
    params(AccountQuery),
    responses((status = 200, description = "A page of accounts", body = Page<AccountView>)))]
pub async fn list_accounts(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<axum::Json<Page<AccountView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let filter = AccountFilter {
        application_id: q.application_id,
        identity_id: q.identity_id,
        matched: q.matched,
    };
    let items = accounts::list(&state.db, &filter, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |a| a.id.clone(),
        AccountView::from,
    )))
}

/// Records an account in an application.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts",
    request_body = AccountCreate,
    responses((status = 201, description = "Created", body = AccountView,
        headers(("ETag" = String), ("Location" = String)))))]
pub async fn create_account(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AccountCreate>,
) -> Result<Response, ApiError> {
    if !tessera_domain::ids::is_valid_id(&body.application_id) {
        return Err(ApiError::bad_request("application_id must be a Tessera id"));
    }
    let new = NewAccount {
        application_id: body.application_id,
        identity_id: body.identity_id,
        user_key: body.user_key,
        display_name: body.display_name,
        status: body.status.unwrap_or(AccountStatus::Active),
    };
    let mut tx = state.db.begin().await?;
    let account = accounts::create(&mut tx, &change_context(&caller), new)
        .await
        .map_err(|e| match e {
            tessera_store::StoreError::NotFound { entity, id } => ApiError::BadRequest {
                detail: format!("there is no {entity} {id}"),
                errors: Some(
                    serde_json::json!([{"field": "application_id", "reason": "not found"}]),
                ),
            },
            other => other.into(),
        })?;
    tx.commit().await?;
    let location = format!("/api/v1/accounts/{}", account.id);
    Ok(created(
        &location,
        account.version,
        &AccountView::from(account),
    ))
}

/// Reads an account.
#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The account", body = AccountView,
        headers(("ETag" = String)))))]
pub async fn get_account(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let account = accounts::get(&state.db, &id).await?;
    Ok(versioned(
        StatusCode::OK,
        account.version,
        &AccountView::from(account),
    ))
}

/// Changes an account (JSON merge patch), e.g. matches it to an identity.
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = AccountPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed account", body = AccountView,
        headers(("ETag" = String)))))]
pub async fn update_account(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiJson(patch): ApiJson<AccountPatch>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    let account = accounts::update(&mut tx, &change_context(&caller), &id, version, |a| {
        if let Some(v) = patch.identity_id {
            a.identity_id = v;
        }
        if let Some(v) = patch.user_key {
            a.user_key = v;
        }
        if let Some(v) = patch.display_name {
            a.display_name = v;
        }
        if let Some(v) = patch.status {
            a.status = v;
        }
        Ok(())
    })
    .await?;
    tx.commit().await?;
    Ok(versioned(
        StatusCode::OK,
        account.version,
        &AccountView::from(account),
    ))
}

/// Deletes an account. Refused (409) while a live membership is held through it.
#[utoipa::path(delete, path = "/api/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_account(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    accounts::delete(&mut tx, &change_context(&caller), &id, version).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
