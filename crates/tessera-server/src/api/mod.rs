//! `/api/v1`: the REST API for operators, ITSM and automation.
//!
//! Every route is registered through [`api_router`] with `utoipa_axum::routes!`, which takes
//! the path, method and documentation from the handler's `#[utoipa::path]`; the OpenAPI
//! document served at `/api/v1/openapi.json` is therefore the router's own description.

mod accounts;
mod applications;
mod auth;
mod data_sources;
mod directory;
pub mod error;
mod extract;
mod group_mappings;
mod memberships;
pub mod openapi;
mod resources;
mod roles;
mod rules;
mod uploads;

use std::sync::OnceLock;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header;
use serde::{Deserialize, Deserializer};
use tessera_domain::audit::{Actor, ActorKind};
use tessera_store::ChangeContext;
use tessera_store::admin_tokens::AdminToken;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
pub use auth::{AdminCaller, bearer_token};
pub use error::ApiError;

/// The documented routes of `/api/v1`.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(directory::whoami))
        .routes(routes!(
            data_sources::list_data_sources,
            data_sources::create_data_source
        ))
        .routes(routes!(
            data_sources::get_data_source,
            data_sources::update_data_source
        ))
        .routes(routes!(data_sources::upload_users))
        .routes(routes!(directory::list_identities))
        .routes(routes!(directory::get_identity))
        .routes(routes!(directory::list_groups))
        .routes(routes!(directory::get_group))
        .routes(routes!(directory::list_group_members))
        .routes(routes!(
            applications::list_applications,
            applications::create_application
        ))
        .routes(routes!(
            applications::get_application,
            applications::update_application,
            applications::delete_application
        ))
        .routes(routes!(
            resources::list_resources,
            resources::create_resource
        ))
        .routes(routes!(
            resources::get_resource,
            resources::update_resource,
            resources::delete_resource
        ))
        .routes(routes!(roles::list_roles, roles::create_role))
        .routes(routes!(
            roles::get_role,
            roles::update_role,
            roles::delete_role
        ))
        .routes(routes!(accounts::list_accounts, accounts::create_account))
        .routes(routes!(
            accounts::get_account,
            accounts::update_account,
            accounts::delete_account
        ))
        .routes(routes!(
            memberships::list_memberships,
            memberships::grant_membership
        ))
        .routes(routes!(
            memberships::get_membership,
            memberships::revoke_membership
        ))
        .routes(routes!(memberships::extend_membership))
        .routes(routes!(memberships::renew_membership))
        .routes(routes!(uploads::upload_members))
        .routes(routes!(
            group_mappings::list_group_mappings,
            group_mappings::create_group_mapping
        ))
        .routes(routes!(
            group_mappings::get_group_mapping,
            group_mappings::update_group_mapping,
            group_mappings::delete_group_mapping
        ))
        .routes(routes!(rules::list_rules, rules::create_rule))
        .routes(routes!(
            rules::get_rule,
            rules::update_rule,
            rules::delete_rule
        ))
        .routes(routes!(rules::list_bulk_actions, rules::run_bulk_action))
        .routes(routes!(rules::get_bulk_action))
}

pub fn routes() -> Router<AppState> {
    let (router, _) = api_router().split_for_parts();
    router.route("/api/v1/openapi.json", get(openapi_json))
}

/// The OpenAPI document of `/api/v1`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::document(api_router().split_for_parts().1)
}

/// Serves the OpenAPI document (public: it describes the API, it reveals no data).
async fn openapi_json() -> impl IntoResponse {
    static SPEC: OnceLock<String> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        serde_json::to_string(&openapi()).expect("the OpenAPI document serialises")
    });
    ([(header::CONTENT_TYPE, "application/json")], spec.as_str())
}

/// Who changes things through the API, carried into the audit log.
fn change_context(caller: &AdminToken) -> ChangeContext {
    let ctx = ChangeContext::new(Actor::new(ActorKind::AdminToken, &caller.id));
    match crate::context::current_request_id() {
        Some(id) => ctx.with_request_id(id),
        None => ctx,
    }
}

/// Workflows are referenced by id; the reference must at least be one.
fn check_workflow_id(id: Option<&str>) -> Result<(), ApiError> {
    match id {
        Some(w) if !tessera_domain::ids::is_valid_id(w) => Err(ApiError::BadRequest {
            detail: "workflow_id must be a Tessera id".into(),
            errors: Some(serde_json::json!([{"field": "workflow_id", "reason": "not an id"}])),
        }),
        _ => Ok(()),
    }
}

/// For merge patches: a present field (even `null`) is `Some`, an absent one `None`.
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}
