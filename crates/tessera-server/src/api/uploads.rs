//! Uploads of member lists to CSV applications (`PUT /api/v1/applications/{id}/members`).
//!
//! The body (CSV or JSON, up to `max_upload_bytes`) is checked whole first: one bad row and
//! nothing is applied, and every bad row is named. Then it is compared with what Tessera holds,
//! and the difference is applied (or, with `dry_run=true`, only reported).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::member_upload::{
    self, MemberPlan, MemberRow, RawMember, RowErrors, check_rows, read_csv,
};
use tessera_store::governance::member_upload as store;
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiId, ApiQuery, is_json, json_body, media_type};
use super::{AdminCaller, ApiError, change_context};
use crate::{AppState, rfc3339};

/// Items listed per kind of change in a report; the counts are always complete.
pub const REPORT_ITEMS: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Report what would change, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The JSON form of a member list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberList {
    members: Vec<MemberEntry>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    user_key: String,
    /// The role's name, or `resource/role`.
    role: String,
    /// A date (`2026-12-31`: access ends when that day ends, UTC) or an RFC 3339 date-time.
    end_date: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UploadCounts {
    accounts_added: usize,
    accounts_matched: usize,
    accounts_removed: usize,
    grants_added: usize,
    grants_removed: usize,
    grants_changed: usize,
    unauthorised: usize,
    missing: usize,
}

#[derive(Serialize, ToSchema)]
pub struct AccountItem {
    user_key: String,
    identity_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccessItem {
    user_key: Option<String>,
    role_id: String,
    /// The membership concerned, when Tessera holds one.
    membership_id: Option<String>,
    identity_id: Option<String>,
    #[schema(format = DateTime)]
    ends_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UploadItems {
    accounts_added: Vec<AccountItem>,
    accounts_matched: Vec<AccountItem>,
    accounts_removed: Vec<AccountItem>,
    grants_added: Vec<AccessItem>,
    grants_removed: Vec<AccessItem>,
    grants_changed: Vec<AccessItem>,
    /// In the file, but no live membership granted by Tessera explains it.
    unauthorised: Vec<AccessItem>,
    /// Granted by Tessera, but not in the file.
    missing: Vec<AccessItem>,
}

/// What an upload changed (or, in a dry run, would change), and the drift it shows.
#[derive(Serialize, ToSchema)]
pub struct MemberUploadReport {
    dry_run: bool,
    /// Rows in the file.
    rows: usize,
    /// Whether anything was (or would be) written.
    changed: bool,
    counts: UploadCounts,
    /// The changes and drift, at most 1000 items of each kind.
    items: UploadItems,
    /// Whether some list in `items` was cut at 1000.
    truncated: bool,
}

/// Reads a body of any size up to the upload limit.
pub async fn read_upload(state: &AppState, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = state.config.max_upload_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::bad_request("the upload could not be read")
        }
    })
}

/// Every row error (up to 1000) as a problem.
pub fn invalid_rows(errors: RowErrors) -> ApiError {
    ApiError::InvalidRows {
        count: errors.total,
        errors: serde_json::to_value(&errors.errors).unwrap_or_default(),
    }
}

fn report(dry_run: bool, rows: &[MemberRow], plan: &MemberPlan) -> MemberUploadReport {
    let mut truncated = false;
    let mut take = |n: usize| {
        truncated |= n > REPORT_ITEMS;
        n.min(REPORT_ITEMS)
    };
    let access = |user_key: Option<&str>,
                  role_id: &str,
                  membership_id: Option<&str>,
                  identity_id: Option<&str>,
                  ends_at: Option<i64>| AccessItem {
        user_key: user_key.map(str::to_owned),
        role_id: role_id.to_owned(),
        membership_id: membership_id.map(str::to_owned),
        identity_id: identity_id.map(str::to_owned),
        ends_at: ends_at.map(rfc3339),
    };
    let items = UploadItems {
        accounts_added: plan.accounts_added[..take(plan.accounts_added.len())]
            .iter()
            .map(|(k, i)| AccountItem {
                user_key: k.clone(),
                identity_id: i.clone(),
            })
            .collect(),
        accounts_matched: plan.accounts_matched[..take(plan.accounts_matched.len())]
            .iter()
            .map(|(a, i)| AccountItem {
                user_key: a.user_key.clone(),
                identity_id: Some(i.clone()),
            })
            .collect(),
        accounts_removed: plan.accounts_removed[..take(plan.accounts_removed.len())]
            .iter()
            .map(|a| AccountItem {
                user_key: a.user_key.clone(),
                identity_id: a.identity_id.clone(),
            })
            .collect(),
        grants_added: plan.grants_added[..take(plan.grants_added.len())]
            .iter()
            .map(|&i| {
                let r = &rows[i];
                access(Some(&r.user_key), &r.role_id, None, None, r.ends_at)
            })
            .collect(),
        grants_removed: plan.grants_removed[..take(plan.grants_removed.len())]
            .iter()
            .map(|g| {
                access(
                    None,
                    &g.role_id,
                    Some(&g.id),
                    g.identity_id.as_deref(),
                    g.ends_at,
                )
            })
            .collect(),
        grants_changed: plan.grants_changed[..take(plan.grants_changed.len())]
            .iter()
            .map(|(g, e)| access(None, &g.role_id, Some(&g.id), g.identity_id.as_deref(), *e))
            .collect(),
        unauthorised: plan.unauthorised[..take(plan.unauthorised.len())]
            .iter()
            .map(|&i| {
                let r = &rows[i];
                access(Some(&r.user_key), &r.role_id, None, None, r.ends_at)
            })
            .collect(),
        missing: plan.missing[..take(plan.missing.len())]
            .iter()
            .map(|(g, k)| {
                access(
                    k.as_deref(),
                    &g.role_id,
                    Some(&g.id),
                    g.identity_id.as_deref(),
                    g.ends_at,
                )
            })
            .collect(),
    };
    MemberUploadReport {
        dry_run,
        rows: rows.len(),
        changed: !plan.changes_nothing(),
        counts: UploadCounts {
            accounts_added: plan.accounts_added.len(),
            accounts_matched: plan.accounts_matched.len(),
            accounts_removed: plan.accounts_removed.len(),
            grants_added: plan.grants_added.len(),
            grants_removed: plan.grants_removed.len(),
            grants_changed: plan.grants_changed.len(),
            unauthorised: plan.unauthorised.len(),
            missing: plan.missing.len(),
        },
        items,
        truncated,
    }
}

/// Uploads the member list of a CSV application: `text/csv` (columns as the application's
/// `member_format` names them) or JSON. Tessera records what the list shows as accounts and
/// `external` memberships, ends external memberships the list no longer shows, and reports
/// drift. The same list twice changes nothing the second time.
#[utoipa::path(put, path = "/api/v1/applications/{id}/members", tag = "applications",
    params(("id" = String, Path, description = "Application id"), UploadQuery),
    request_body(content(
        (MemberList = "application/json"),
        (String = "text/csv", example = "user,role,end_date\nalice,viewer,2026-12-31\n"),
    )),
    responses((status = 200, description = "What changed, and the drift", body = MemberUploadReport)))]
pub async fn upload_members(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MemberUploadReport>, ApiError> {
    let media = media_type(&headers).unwrap_or_default();
    let is_csv = media == "text/csv";
    if !is_csv && !is_json(&media) {
        return Err(ApiError::UnsupportedMediaType(
            "a member list is text/csv or application/json".into(),
        ));
    }
    let app = store::csv_application(&state.db, &id).await?;
    let body = read_upload(&state, body).await?;
    let raw: Vec<(u64, RawMember)> = if is_csv {
        read_csv(&body, &app.member_format).map_err(invalid_rows)?
    } else {
        let list: MemberList = json_body(&body)?;
        list.members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    i as u64 + 1,
                    RawMember {
                        user_key: m.user_key,
                        role: m.role,
                        end_date: m.end_date,
                    },
                )
            })
            .collect()
    };
    if raw.len() > member_upload::MAX_ROWS {
        return Err(ApiError::bad_request(format!(
            "an upload may hold at most {} members",
            member_upload::MAX_ROWS
        )));
    }
    let roles = store::role_index(&state.db, &app.id).await?;
    let rows: Vec<MemberRow> =
        check_rows(raw, &app.member_format, &roles, state.db.now_ms()).map_err(invalid_rows)?;
    let plan = store::plan(&state.db, &app, &rows).await?;
    if !q.dry_run && !plan.changes_nothing() {
        store::apply(&state.db, &change_context(&caller), &app, &plan, &rows).await?;
    }
    Ok(Json(report(q.dry_run, &rows, &plan)))
}
