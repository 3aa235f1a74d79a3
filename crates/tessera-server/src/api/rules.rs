//! `/api/v1/rules` and `/api/v1/bulk-actions`: settings for many resources or roles at once,
//! kept (rules, which also give new items their defaults) or applied once (bulk actions, with a
//! preview).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_domain::governance::rules::{ItemFilter, Rule, RuleTarget};
use tessera_domain::governance::{DurationPolicy, Principal, SettingOverrides};
use tessera_store::governance::rules::{
    self as store, ApplyReport, BulkAction, ItemChange, NewBulkAction, NewRule,
};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    ApiId, ApiJson, ApiQuery, IfMatch, Page, check_limit, created, page, versioned,
};
use super::uploads::UploadQuery;
use super::{AdminCaller, ApiError, change_context, nullable};
use crate::{AppState, rfc3339};

/// Settings to set; absent ones are left as they are. Roles take no owner or maintainers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleActions {
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<Principal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintainers: Option<Vec<Principal>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requestable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    durations: Option<DurationPolicy>,
}

impl From<RuleActions> for SettingOverrides {
    fn from(a: RuleActions) -> Self {
        SettingOverrides {
            requestable: a.requestable,
            workflow_id: a.workflow_id,
            durations: a.durations,
            owner: a.owner,
            maintainers: a.maintainers,
        }
    }
}

impl From<SettingOverrides> for RuleActions {
    fn from(o: SettingOverrides) -> Self {
        RuleActions {
            owner: o.owner,
            maintainers: o.maintainers,
            requestable: o.requestable,
            workflow_id: o.workflow_id,
            durations: o.durations,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ItemChangeView {
    id: String,
    application_id: String,
    name: String,
    /// The item's own settings before and after (`null`/absent: inherited).
    before: RuleActions,
    after: RuleActions,
}

/// What applying did (or, for a preview, would do).
#[derive(Serialize, ToSchema)]
pub struct ApplyReportView {
    /// Items the filter matched.
    matched: u64,
    /// Items whose settings changed.
    changed: u64,
    /// The first 100 changed items.
    items: Vec<ItemChangeView>,
}

impl From<ApplyReport> for ApplyReportView {
    fn from(r: ApplyReport) -> Self {
        ApplyReportView {
            matched: r.matched,
            changed: r.changed,
            items: r
                .items
                .into_iter()
                .map(|i: ItemChange| ItemChangeView {
                    id: i.id,
                    application_id: i.application_id,
                    name: i.name,
                    before: i.before.into(),
                    after: i.after.into(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RuleView {
    id: String,
    name: String,
    description: Option<String>,
    target: RuleTarget,
    filter: ItemFilter,
    actions: RuleActions,
    /// Lower comes first when rules set the same setting on one item.
    priority: i64,
    enabled: bool,
    /// Create and update only: what applying the rule to existing items did.
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<ApplyReportView>,
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl RuleView {
    fn new(r: Rule, applied: Option<ApplyReport>) -> Self {
        RuleView {
            id: r.id,
            name: r.name,
            description: r.description,
            target: r.target,
            filter: r.filter,
            actions: r.actions.into(),
            priority: r.priority,
            enabled: r.enabled,
            applied: applied.map(Into::into),
            version: r.version,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCreate {
    name: String,
    description: Option<String>,
    target: RuleTarget,
    /// Absent: everything of the target.
    #[serde(default)]
    filter: ItemFilter,
    actions: RuleActions,
    /// 0 to 1,000,000; default 100.
    priority: Option<i64>,
    /// Default `true`.
    enabled: Option<bool>,
    /// Set the rule's settings on the items it matches now (default `true`); new items get
    /// them as defaults either way.
    apply_to_existing: Option<bool>,
}

/// A JSON merge patch; `filter` and `actions` are replaced whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    filter: Option<ItemFilter>,
    actions: Option<RuleActions>,
    priority: Option<i64>,
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RuleQuery {
    target: Option<RuleTarget>,
    enabled: Option<bool>,
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists rules, oldest first.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", params(RuleQuery),
    responses((status = 200, description = "A page of rules", body = Page<RuleView>)))]
pub async fn list_rules(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RuleQuery>,
) -> Result<axum::Json<Page<RuleView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let items = store::list(&state.db, q.target, q.enabled, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |r| r.id.clone(),
        |r| RuleView::new(r, None),
    )))
}

/// Creates a rule; by default it is applied at once to what it matches (`applied` says what
/// changed), and it gives newly created items its settings as defaults.
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", request_body = RuleCreate,
    responses((status = 201, description = "Created", body = RuleView,
        headers(("ETag" = String), ("Location" = String)))))]
pub async fn create_rule(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RuleCreate>,
) -> Result<Response, ApiError> {
    let new = NewRule {
        name: body.name,
        description: body.description,
        target: body.target,
        filter: body.filter,
        actions: body.actions.into(),
        priority: body.priority,
        enabled: body.enabled.unwrap_or(true),
    };
    let mut tx = state.db.begin().await?;
    let (rule, applied) = store::create(
        &mut tx,
        &change_context(&caller),
        new,
        body.apply_to_existing.unwrap_or(true),
    )
    .await?;
    tx.commit().await?;
    let location = format!("/api/v1/rules/{}", rule.id);
    Ok(created(
        &location,
        rule.version,
        &RuleView::new(rule, applied),
    ))
}

/// Reads a rule.
#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The rule", body = RuleView,
        headers(("ETag" = String)))))]
pub async fn get_rule(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<Response, ApiError> {
    let rule = store::get(&state.db, &id).await?;
    Ok(versioned(
        StatusCode::OK,
        rule.version,
        &RuleView::new(rule, None),
    ))
}

/// Changes a rule (JSON merge patch). An enabled rule whose filter, settings, priority or
/// state changed is applied again to what it matches.
#[utoipa::path(patch, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "Rule id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = RulePatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The changed rule", body = RuleView,
        headers(("ETag" = String)))))]
pub async fn update_rule(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
    ApiJson(patch): ApiJson<RulePatch>,
) -> Result<Response, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    let (rule, applied) = store::update(&mut tx, &change_context(&caller), &id, version, |r| {
        if let Some(v) = patch.name {
            r.name = v;
        }
        if let Some(v) = patch.description {
            r.description = v;
        }
        if let Some(v) = patch.filter {
            r.filter = v;
        }
        if let Some(v) = patch.actions {
            r.actions = v.into();
        }
        if let Some(v) = patch.priority {
            r.priority = v;
        }
        if let Some(v) = patch.enabled {
            r.enabled = v;
        }
        Ok(())
    })
    .await?;
    tx.commit().await?;
    Ok(versioned(
        StatusCode::OK,
        rule.version,
        &RuleView::new(rule, applied),
    ))
}

/// Deletes a rule. What it set stays set; new items no longer get its defaults.
#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "Rule id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_rule(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    let version = if_match.version()?;
    let mut tx = state.db.begin().await?;
    store::delete(&mut tx, &change_context(&caller), &id, version).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct BulkActionView {
    id: String,
    target: RuleTarget,
    filter: ItemFilter,
    actions: RuleActions,
    reason: Option<String>,
    report: ApplyReportView,
    /// Who ran it (`kind:id`).
    actor: String,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<BulkAction> for BulkActionView {
    fn from(b: BulkAction) -> Self {
        BulkActionView {
            id: b.id,
            target: b.target,
            filter: b.filter,
            actions: b.actions.into(),
            reason: b.reason,
            report: b.report.into(),
            actor: b.actor,
            created_at: rfc3339(b.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkActionCreate {
    target: RuleTarget,
    /// Absent: everything of the target.
    #[serde(default)]
    filter: ItemFilter,
    actions: RuleActions,
    reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BulkQuery {
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists the bulk actions run, oldest first.
#[utoipa::path(get, path = "/api/v1/bulk-actions", tag = "rules", params(BulkQuery),
    responses((status = 200, description = "A page of bulk actions", body = Page<BulkActionView>)))]
pub async fn list_bulk_actions(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<BulkQuery>,
) -> Result<axum::Json<Page<BulkActionView>>, ApiError> {
    let limit = check_limit(q.limit)?;
    let items = store::list_bulk(&state.db, q.after.as_deref(), limit).await?;
    Ok(axum::Json(page(
        items,
        limit,
        |b| b.id.clone(),
        BulkActionView::from,
    )))
}

/// Sets settings on every resource or role the filter matches, once, and keeps the record.
/// With `dry_run=true`: answers what would change (200) and changes nothing.
#[utoipa::path(post, path = "/api/v1/bulk-actions", tag = "rules",
    params(UploadQuery), request_body = BulkActionCreate,
    responses(
        (status = 200, description = "Preview: what would change", body = ApplyReportView),
        (status = 201, description = "Applied", body = BulkActionView,
            headers(("Location" = String)))))]
pub async fn run_bulk_action(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    ApiJson(body): ApiJson<BulkActionCreate>,
) -> Result<Response, ApiError> {
    let mut new = NewBulkAction {
        target: body.target,
        filter: body.filter,
        actions: body.actions.into(),
        reason: body.reason,
    };
    let mut tx = state.db.begin().await?;
    if q.dry_run {
        let report = store::preview_bulk(&mut tx, &mut new).await?;
        drop(tx);
        return Ok((StatusCode::OK, axum::Json(ApplyReportView::from(report))).into_response());
    }
    let action = store::run_bulk(&mut tx, &change_context(&caller), new).await?;
    tx.commit().await?;
    let location = format!("/api/v1/bulk-actions/{}", action.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        axum::Json(BulkActionView::from(action)),
    )
        .into_response())
}

/// Reads a bulk action's record.
#[utoipa::path(get, path = "/api/v1/bulk-actions/{id}", tag = "rules",
    params(("id" = String, Path, description = "Bulk action id")),
    responses((status = 200, description = "The bulk action", body = BulkActionView)))]
pub async fn get_bulk_action(
    _: AdminCaller,
    State(state): State<AppState>,
    ApiId(id): ApiId,
) -> Result<axum::Json<BulkActionView>, ApiError> {
    Ok(axum::Json(store::get_bulk(&state.db, &id).await?.into()))
}
