//! The OpenAPI 3.1 document of `/api/v1`.
//!
//! Operations and schemas come from the handlers' `#[utoipa::path]` attributes, registered
//! together with their routes (see [`super::api_router`]), so a route cannot be served without
//! being described. This module adds what every operation shares: the bearer scheme, and the
//! problem responses each kind of operation can give.

use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{Modify, ToSchema};

/// An error, as `application/problem+json` (RFC 9457).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `urn:tessera:problem:<kind>`; stable, for programs to branch on.
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// The request's id, also in the `X-Request-Id` header and the request log.
    request_id: Option<String>,
    /// Per-field (or, for uploads, per-row) reasons, when the request was invalid.
    errors: Option<Vec<FieldError>>,
    /// Uploads: how many rows were invalid (`errors` lists at most the first 1000).
    error_count: Option<u64>,
}

/// One reason a request was refused: a field of the body or query, or a row of an upload
/// (`line`, and `column` when one cell is at fault).
#[derive(Serialize, ToSchema)]
pub struct FieldError {
    field: Option<String>,
    line: Option<u64>,
    column: Option<String>,
    reason: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin token (`tessera admin-token create`)."))
                    .build(),
            ),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tessera API",
        description = "Tessera's REST API: applications, resources, roles, accounts, memberships \
                       and the directory. Errors are `application/problem+json` with a stable \
                       `type`. Lists page with `after` and `limit`; updates accept `If-Match`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "directory", description = "Data sources, identities and groups"),
        (name = "applications", description = "Governed systems and their settings"),
        (name = "resources", description = "What access is given to, inside an application"),
        (name = "roles", description = "Grantable levels of access on a resource"),
        (name = "accounts", description = "Identities' accounts in applications"),
        (name = "memberships", description = "Grants: grant, extend, renew, revoke"),
        (name = "group-mappings", description = "What groups give their members: a platform role, application roles"),
        (name = "rules", description = "Settings for many resources or roles: rules (kept) and bulk actions (once)"),
    )
)]
pub struct ApiDoc;

/// Adds the problem responses an operation can give, by what it does.
pub fn document(mut api: OpenApi) -> OpenApi {
    for (path, item) in api.paths.paths.iter_mut() {
        let has_id = path.contains('{');
        for (method, op) in [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
        ] {
            if let Some(op) = op {
                add_problems(op, &method, has_id);
            }
        }
    }
    api
}

fn add_problems(op: &mut Operation, method: &HttpMethod, has_id: bool) {
    let writes = !matches!(method, HttpMethod::Get);
    let has_body = op.request_body.is_some();
    let mut statuses: Vec<(&str, &str)> = vec![
        ("400", "The request is malformed (query, path or body)."),
        ("401", "No valid bearer token."),
        (
            "500",
            "An unexpected error; the request id finds it in the logs.",
        ),
    ];
    if has_id {
        statuses.push(("404", "Nothing with that id."));
    }
    if writes {
        statuses.push(("409", "The change conflicts with what exists."));
        statuses.push(("412", "`If-Match` names an older version."));
        statuses.push((
            "422",
            "A governance rule refused the change; `type` names it.",
        ));
    }
    if has_body {
        statuses.push(("413", "The body is too large."));
        statuses.push(("415", "The body is not JSON."));
    }
    for (status, description) in statuses {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}
