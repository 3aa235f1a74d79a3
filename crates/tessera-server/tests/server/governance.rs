//! `/api/v1` governance routes over real HTTP: the OpenAPI document and its coverage,
//! applications → resources → roles with inherited settings, accounts, and memberships with
//! every refusal, on SQLite and PostgreSQL.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_domain::audit::Actor;
use tessera_domain::directory::{
    DataSourceKind, IdentityAttributes, IdentityKind, IdentityStatus, MatchingKey,
};
use tessera_server::ServerConfig;
use tessera_store::{ChangeContext, audit, directory};
use tessera_testkit::{TestDb, TestServer};

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: Value,
}

impl Reply {
    pub(super) fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
    pub(super) fn etag(&self) -> String {
        self.headers["etag"].to_str().unwrap().to_owned()
    }
    pub(super) fn id(&self) -> String {
        self.body["id"].as_str().unwrap().to_owned()
    }
}

pub(super) struct Api<'a> {
    server: &'a TestServer,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    pub(super) fn new(server: &'a TestServer) -> Self {
        Api {
            server,
            http: reqwest::Client::new(),
        }
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, self.server.url(path))
            .bearer_auth(&self.server.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub(super) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, None).await
    }
    pub(super) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), None).await
    }
    pub(super) async fn patch(&self, path: &str, body: Value, if_match: Option<&str>) -> Reply {
        self.send(Method::PATCH, path, Some(body), if_match).await
    }
    pub(super) async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, None).await
    }

    /// Creates and asserts 201.
    pub(super) async fn create(&self, path: &str, body: Value) -> Value {
        let r = self.post(path, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.body);
        assert!(r.headers.contains_key("location"));
        r.body
    }
}

async fn identity(server: &TestServer, user_name: &str) -> String {
    let db = &server.test_db.db;
    let ctx = ChangeContext::new(Actor::cli());
    let source = match directory::find_data_source_by_name(db, "hr").await.unwrap() {
        Some(s) => s,
        None => {
            let mut tx = db.begin().await.unwrap();
            let s = directory::create_data_source(
                &mut tx,
                &ctx,
                "hr",
                DataSourceKind::Csv,
                MatchingKey::UserName,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            s
        }
    };
    let mut tx = db.begin().await.unwrap();
    let identity = directory::create_identity(
        &mut tx,
        &ctx,
        &source.id,
        IdentityKind::Person,
        IdentityAttributes {
            user_name: user_name.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    identity.id
}

pub(super) async fn servers() -> Vec<TestServer> {
    let mut out = Vec::new();
    for t in TestDb::all().await {
        out.push(TestServer::start(t, ServerConfig::default()).await);
    }
    out
}

const DAY: i64 = 24 * 3600;

fn in_days(days: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(days * DAY);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_every_operation_is_served() {
    let server = TestServer::start(TestDb::sqlite().await, ServerConfig::default()).await;
    let spec: Value = reqwest::get(server.url("/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let api = Api::new(&server);
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "patch", "delete", "put"] {
            let Some(op) = item.get(method) else { continue };
            operations += 1;
            for status in ["400", "401", "500"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} lacks {status}"
                );
            }
            let concrete = path.replace("{id}", "0190a000-0000-7000-8000-000000000000");
            let body = matches!(method, "post" | "patch").then(|| json!({}));
            let r = api
                .send(
                    method.to_uppercase().parse().unwrap(),
                    &concrete,
                    body,
                    None,
                )
                .await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(
                r.body["detail"], "No such resource.",
                "{method} {path} is not routed"
            );
            assert!(r.status.as_u16() < 500, "{method} {path}: {}", r.body);
        }
    }
    // Routes and documentation are registered together (utoipa_axum::routes!), so every
    // handler with a #[utoipa::path] is an operation; the only route added by hand is the
    // document itself.
    let sources = [
        include_str!("../../src/api/mod.rs"),
        include_str!("../../src/api/directory.rs"),
        include_str!("../../src/api/applications.rs"),
        include_str!("../../src/api/resources.rs"),
        include_str!("../../src/api/roles.rs"),
        include_str!("../../src/api/accounts.rs"),
        include_str!("../../src/api/memberships.rs"),
        include_str!("../../src/api/uploads.rs"),
        include_str!("../../src/api/data_sources.rs"),
        include_str!("../../src/api/group_mappings.rs"),
        include_str!("../../src/api/rules.rs"),
    ];
    let annotated: usize = sources
        .iter()
        .map(|s| s.matches("#[utoipa::path(").count())
        .sum();
    assert_eq!(
        annotated, operations,
        "every annotated handler is in the document"
    );
    let hand_routes: BTreeSet<&str> = sources
        .iter()
        .flat_map(|s| {
            s.match_indices(".route(\"")
                .map(move |(i, _)| &s[i..i + 30])
        })
        .collect();
    assert_eq!(hand_routes.len(), 1, "{hand_routes:?}");
    assert!(hand_routes.iter().all(|r| r.contains("/api/v1/openapi")));
    server.stop().await;
}

#[tokio::test]
async fn settings_inherit_from_application_to_resource_to_role_with_provenance() {
    for server in servers().await {
        let api = Api::new(&server);
        let owner = identity(&server, "owner").await;
        let app = api
            .create(
                "/api/v1/applications",
                json!({
                    "name": "GitHub", "connector_kind": "scim",
                    "owner": {"kind": "identity", "id": owner},
                    "settings": {"durations": {"max_seconds": 30 * DAY, "default_seconds": 7 * DAY}}
                }),
            )
            .await;
        let app_id = app["id"].as_str().unwrap();
        assert_eq!(app["management_mode"], "managed");
        assert_eq!(app["settings"]["requestable"], true);

        let org = api
            .create(
                &format!("/api/v1/applications/{app_id}/resources"),
                json!({"name": "acme", "resource_type": "organization", "requestable": false,
                       "tags": ["prod", "PROD", "pci"]}),
            )
            .await;
        assert_eq!(org["tags"], json!(["prod", "pci"]));
        let repo = api
            .create(
                &format!("/api/v1/applications/{app_id}/resources"),
                json!({"name": "payments", "resource_type": "repository", "parent_id": org["id"],
                       "durations": {"max_seconds": 14 * DAY}}),
            )
            .await;
        let repo_id = repo["id"].as_str().unwrap();
        let role = api
            .create(
                &format!("/api/v1/resources/{repo_id}/roles"),
                json!({"name": "admin", "sensitive": true, "durations": {"max_seconds": DAY}}),
            )
            .await;
        let eff = &role["effective"];
        assert_eq!(eff["durations"]["value"]["max_seconds"], DAY);
        assert_eq!(
            eff["durations"]["source"],
            json!({"level": "role", "id": role["id"]})
        );
        assert_eq!(eff["requestable"]["value"], false);
        assert_eq!(eff["requestable"]["source"]["id"], org["id"]);
        assert_eq!(eff["owner"]["value"]["id"], owner.as_str());
        assert_eq!(eff["owner"]["source"]["level"], "application");

        // Clearing the role's override (merge patch null) falls back to the repository's.
        let role_path = format!("/api/v1/roles/{}", role["id"].as_str().unwrap());
        let current = api.get(&role_path).await;
        let r = api
            .patch(
                &role_path,
                json!({"durations": null}),
                Some(&current.etag()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["overrides"]["durations"], Value::Null);
        assert_eq!(
            r.body["effective"]["durations"]["value"]["max_seconds"],
            14 * DAY
        );
        assert_eq!(r.body["effective"]["durations"]["source"]["id"], repo["id"]);
        assert_eq!(r.body["version"], 2);

        // A stale ETag is refused and changes nothing.
        let stale = api
            .patch(&role_path, json!({"name": "owner"}), Some(&current.etag()))
            .await;
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(
            stale.problem_type(),
            "urn:tessera:problem:precondition-failed"
        );
        assert_eq!(api.get(&role_path).await.body["name"], "admin");

        // Lists filter in the database: by tag, by parent, by kind.
        let tagged = api
            .get(&format!("/api/v1/applications/{app_id}/resources?tag=PCI"))
            .await;
        assert_eq!(tagged.body["items"].as_array().unwrap().len(), 1);
        let top = api
            .get(&format!(
                "/api/v1/applications/{app_id}/resources?parent_id=root"
            ))
            .await;
        assert_eq!(top.body["items"][0]["id"], org["id"]);
        let scim_apps = api.get("/api/v1/applications?connector_kind=scim").await;
        assert_eq!(scim_apps.body["items"].as_array().unwrap().len(), 1);
        assert_eq!(
            api.get("/api/v1/applications?connector_kind=ldap")
                .await
                .body["items"],
            json!([])
        );

        // Every change is audited with before and after.
        let entries = audit::list_after(&server.test_db.db, 0, 1000)
            .await
            .unwrap();
        let update = entries
            .iter()
            .find(|e| e.action == "role.update")
            .expect("role.update audited");
        let details: Value = serde_json::from_str(&update.details).unwrap();
        assert_eq!(
            details["before"]["overrides"]["durations"]["max_seconds"],
            DAY
        );
        assert_eq!(details["after"]["overrides"]["durations"], Value::Null);
        assert_eq!(update.actor_kind, "admin_token");

        // Bad input: a clear problem, nothing changed.
        let bad = api
            .post(
                &format!("/api/v1/applications/{app_id}/resources"),
                json!({"name": "x", "resource_type": "Not Valid"}),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.body["errors"][0]["field"], "resource_type");
        let dup = api
            .post(
                "/api/v1/applications",
                json!({"name": "github", "connector_kind": "csv"}),
            )
            .await;
        assert_eq!(dup.status, StatusCode::CONFLICT);
        let unknown = api
            .post(
                "/api/v1/applications",
                json!({"name": "x", "connector_kind": "csv", "colour": 1}),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        server.stop().await;
    }
}

#[tokio::test]
async fn memberships_grant_extend_renew_revoke_and_every_refusal() {
    for server in servers().await {
        let api = Api::new(&server);
        let alice = identity(&server, "alice").await;
        let bob = identity(&server, "bob").await;
        let app = api
            .create(
                "/api/v1/applications",
                json!({"name": "Payroll", "connector_kind": "manual"}),
            )
            .await;
        let res = api
            .create(
                &format!(
                    "/api/v1/applications/{}/resources",
                    app["id"].as_str().unwrap()
                ),
                json!({"name": "payroll", "resource_type": "app"}),
            )
            .await;
        let roles_path = format!("/api/v1/resources/{}/roles", res["id"].as_str().unwrap());
        let viewer = api
            .create(
                &roles_path,
                json!({"name": "viewer", "durations": {"max_seconds": 30 * DAY, "default_seconds": 7 * DAY}}),
            )
            .await;
        let approver = api
            .create(
                &roles_path,
                json!({"name": "approver", "prerequisite_role_ids": [viewer["id"]],
                       "durations": {"max_seconds": 30 * DAY}}),
            )
            .await;

        // Grant with the standard duration.
        let granted = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": viewer["id"], "identity_id": alice, "reason": "ticket 42"}),
            )
            .await;
        assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
        assert_eq!(granted.body["status"], "active");
        assert_eq!(granted.body["source"], "api");
        assert_eq!(granted.body["reason"], "ticket 42");
        let m_path = format!("/api/v1/memberships/{}", granted.id());

        // The same role again is a conflict.
        let again = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": viewer["id"], "identity_id": alice}),
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT);

        // Extend within the maximum; beyond it is refused.
        let extended = api
            .post(&format!("{m_path}/extend"), json!({"ends_at": in_days(20)}))
            .await;
        assert_eq!(extended.status, StatusCode::OK, "{}", extended.body);
        assert_eq!(extended.body["version"], 2);
        let too_long = api
            .post(&format!("{m_path}/extend"), json!({"ends_at": in_days(45)}))
            .await;
        assert_eq!(too_long.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            too_long.problem_type(),
            "urn:tessera:problem:duration-not-allowed"
        );

        // Renew never shortens (20 days left > 7 days standard): unchanged, still 200.
        let renewed = api
            .send(Method::POST, &format!("{m_path}/renew"), None, None)
            .await;
        assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
        assert_eq!(renewed.body["ends_at"], extended.body["ends_at"]);

        // Refusals, each with its own problem type; none creates anything.
        let before = api.get("/api/v1/memberships").await.body["items"]
            .as_array()
            .unwrap()
            .len();
        let missing = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": approver["id"], "identity_id": bob}),
            )
            .await;
        assert_eq!(
            missing.problem_type(),
            "urn:tessera:problem:prerequisite-missing"
        );
        let beyond = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": viewer["id"], "identity_id": bob, "ends_at": in_days(31)}),
            )
            .await;
        assert_eq!(
            beyond.problem_type(),
            "urn:tessera:problem:duration-not-allowed"
        );
        let permanent = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": approver["id"], "identity_id": alice, "ends_at": null}),
            )
            .await;
        // No end given: the standard duration (here the maximum) applies, so this is granted.
        assert_eq!(permanent.status, StatusCode::CREATED, "{}", permanent.body);
        let bad_date = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": viewer["id"], "identity_id": bob, "ends_at": "tomorrow"}),
            )
            .await;
        assert_eq!(bad_date.status, StatusCode::BAD_REQUEST);
        {
            let db = &server.test_db.db;
            let mut tx = db.begin().await.unwrap();
            directory::set_identity_status(
                &mut tx,
                &ChangeContext::new(Actor::cli()),
                &bob,
                IdentityStatus::Suspended,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        let inactive = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": viewer["id"], "identity_id": bob}),
            )
            .await;
        assert_eq!(inactive.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            inactive.problem_type(),
            "urn:tessera:problem:identity-not-active"
        );
        let app_path = format!("/api/v1/applications/{}", app["id"].as_str().unwrap());
        let observed = api
            .patch(&app_path, json!({"management_mode": "observed"}), None)
            .await;
        assert_eq!(observed.status, StatusCode::OK);
        let carol = identity(&server, "carol").await;
        let not_grantable = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": viewer["id"], "identity_id": carol}),
            )
            .await;
        assert_eq!(
            not_grantable.problem_type(),
            "urn:tessera:problem:role-not-grantable"
        );
        let after = api.get("/api/v1/memberships").await.body["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(after, before + 1, "only the permitted grant was added");

        // A role with live memberships cannot be deleted; a prerequisite cannot either.
        let viewer_path = format!("/api/v1/roles/{}", viewer["id"].as_str().unwrap());
        assert_eq!(api.delete(&viewer_path).await.status, StatusCode::CONFLICT);

        // Revoke ends it now; revoking again is refused.
        let revoked = api
            .delete(&format!("{m_path}?reason=left%20the%20team"))
            .await;
        assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
        assert_eq!(revoked.body["status"], "revoked");
        assert_eq!(revoked.body["end_reason"], "left the team");
        assert!(
            revoked.body["ended_by"]
                .as_str()
                .unwrap()
                .starts_with("admin_token:")
        );
        let twice = api.delete(&m_path).await;
        assert_eq!(twice.problem_type(), "urn:tessera:problem:membership-ended");

        // Filters.
        let active = api
            .get(&format!(
                "/api/v1/memberships?identity_id={alice}&status=active"
            ))
            .await;
        assert_eq!(active.body["items"].as_array().unwrap().len(), 1);

        let entries = audit::list_after(&server.test_db.db, 0, 1000)
            .await
            .unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        for action in ["membership.grant", "membership.extend", "membership.revoke"] {
            assert!(actions.contains(&action), "{action} audited");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn accounts_can_be_recorded_matched_and_deleted() {
    for server in servers().await {
        let api = Api::new(&server);
        let dana = identity(&server, "dana").await;
        let app = api
            .create(
                "/api/v1/applications",
                json!({"name": "Legacy", "connector_kind": "csv"}),
            )
            .await;
        let account = api
            .create(
                "/api/v1/accounts",
                json!({"application_id": app["id"], "user_key": "DANA01"}),
            )
            .await;
        assert_eq!(account["identity_id"], Value::Null);
        let unmatched = api
            .get(&format!(
                "/api/v1/accounts?application_id={}&matched=false",
                app["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(unmatched.body["items"].as_array().unwrap().len(), 1);
        let path = format!("/api/v1/accounts/{}", account["id"].as_str().unwrap());
        let matched = api.patch(&path, json!({"identity_id": dana}), None).await;
        assert_eq!(matched.status, StatusCode::OK, "{}", matched.body);
        assert_eq!(matched.body["identity_id"], dana.as_str());
        let dup = api
            .post(
                "/api/v1/accounts",
                json!({"application_id": app["id"], "user_key": "dana01"}),
            )
            .await;
        assert_eq!(dup.status, StatusCode::CONFLICT);
        assert_eq!(api.delete(&path).await.status, StatusCode::NO_CONTENT);
        assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
        server.stop().await;
    }
}

/// Found by schemathesis on PostgreSQL, which cannot store NUL: such input is a 400 on every
/// backend, and the request log still records the request.
#[tokio::test]
async fn nul_characters_in_queries_and_bodies_are_bad_requests() {
    for server in servers().await {
        let api = Api::new(&server);
        let r = api.get("/api/v1/groups?data_source_id=%00x&after=a").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let r = api
            .post(
                "/api/v1/applications",
                json!({"name": "a\u{0}b", "connector_kind": "csv"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let r = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": "x", "identity_id": "y"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "role_id");
        let raw = reqwest::Client::new()
            .post(server.url("/api/v1/applications"))
            .bearer_auth(&server.admin_token)
            .header("content-type", "text/plain")
            .body("a\0b")
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let t = server.stop().await;
        let logged = tessera_store::request_log::recent_api_events(&t.db, 100)
            .await
            .unwrap();
        assert_eq!(logged.len(), 4, "every request is in the request log");
        for event in &logged {
            let detail = tessera_store::request_log::api_event_detail(&t.db, &event.id)
                .await
                .unwrap();
            assert!(detail.is_some(), "details kept for {}", event.path);
        }
    }
}

async fn upload(api: &Api<'_>, app_id: &str, csv: &str, dry_run: bool) -> Reply {
    let r = api
        .http
        .put(api.server.url(&format!(
            "/api/v1/applications/{app_id}/members?dry_run={dry_run}"
        )))
        .bearer_auth(&api.server.admin_token)
        .header("content-type", "text/csv; charset=utf-8")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    Reply {
        status,
        headers,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn csv_member_uploads_record_access_report_drift_and_are_idempotent() {
    for server in servers().await {
        let api = Api::new(&server);
        let alice = identity(&server, "alice").await;
        identity(&server, "bob").await;
        let app = api
            .create(
                "/api/v1/applications",
                json!({"name": "Payroll", "connector_kind": "csv"}),
            )
            .await;
        let app_id = app["id"].as_str().unwrap().to_owned();
        let res = api
            .create(
                &format!("/api/v1/applications/{app_id}/resources"),
                json!({"name": "Payroll", "resource_type": "app"}),
            )
            .await;
        let roles_path = format!("/api/v1/resources/{}/roles", res["id"].as_str().unwrap());
        let viewer = api.create(&roles_path, json!({"name": "viewer"})).await;
        api.create(&roles_path, json!({"name": "approver"})).await;
        // Tessera granted alice the viewer role.
        let granted = api
            .post(
                "/api/v1/memberships",
                json!({"role_id": viewer["id"], "identity_id": alice}),
            )
            .await;
        assert_eq!(granted.status, StatusCode::CREATED);

        let file = "\u{feff}user,role,end_date\r\nALICE,viewer,\r\nbob,approver,2031-01-01\r\n\"ghost, the\",viewer,\r\n";
        let dry = upload(&api, &app_id, file, true).await;
        assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
        assert_eq!(dry.body["dry_run"], true);
        assert_eq!(dry.body["counts"]["accounts_added"], 3);
        assert_eq!(dry.body["counts"]["grants_added"], 2);
        assert_eq!(dry.body["counts"]["unauthorised"], 2);
        assert_eq!(dry.body["counts"]["missing"], 0);
        let accounts = api
            .get(&format!("/api/v1/accounts?application_id={app_id}"))
            .await;
        assert_eq!(
            accounts.body["items"],
            json!([]),
            "a dry run changes nothing"
        );

        let applied = upload(&api, &app_id, file, false).await;
        assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
        assert_eq!(applied.body["changed"], true);
        assert_eq!(applied.body["counts"], dry.body["counts"]);
        let accounts = api
            .get(&format!("/api/v1/accounts?application_id={app_id}"))
            .await;
        let accounts = accounts.body["items"].as_array().unwrap().clone();
        assert_eq!(accounts.len(), 3);
        let ghost = accounts
            .iter()
            .find(|a| a["user_key"] == "ghost, the")
            .unwrap();
        assert_eq!(
            ghost["identity_id"],
            Value::Null,
            "no identity is called ghost"
        );
        let external = api
            .get(&format!(
                "/api/v1/memberships?application_id={app_id}&source=external"
            ))
            .await;
        assert_eq!(external.body["items"].as_array().unwrap().len(), 2);

        // The same file again changes nothing (and still reports the drift).
        let again = upload(&api, &app_id, file, false).await;
        assert_eq!(again.body["changed"], false, "{}", again.body);
        assert_eq!(again.body["counts"]["unauthorised"], 2);
        // Matching the unmatched account later gives its access to the identity.
        let ghost_identity = identity(&server, "ghost").await;
        let ghost_path = format!("/api/v1/accounts/{}", ghost["id"].as_str().unwrap());
        let matched = api
            .patch(&ghost_path, json!({"identity_id": ghost_identity}), None)
            .await;
        assert_eq!(matched.status, StatusCode::OK, "{}", matched.body);
        let ghost_access = api
            .get(&format!("/api/v1/memberships?identity_id={ghost_identity}"))
            .await;
        assert_eq!(ghost_access.body["items"].as_array().unwrap().len(), 1);
        // External memberships are the application's to change, not the API's.
        let ext_id = ghost_access.body["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let refused = api.delete(&format!("/api/v1/memberships/{ext_id}")).await;
        assert_eq!(
            refused.problem_type(),
            "urn:tessera:problem:membership-managed-elsewhere"
        );
        let audit_before = audit::list_after(&server.test_db.db, 0, 10_000)
            .await
            .unwrap()
            .len();

        // Bob and alice leave the file: bob's access ends, alice's grant is missing there.
        let later = upload(
            &api,
            &app_id,
            "user,role\nghost; the,viewer\n\"ghost, the\",viewer\n",
            false,
        )
        .await;
        assert_eq!(later.status, StatusCode::OK, "{}", later.body);
        assert_eq!(later.body["counts"]["grants_removed"], 1);
        assert_eq!(later.body["counts"]["missing"], 1);
        assert_eq!(
            later.body["items"]["missing"][0]["membership_id"],
            granted.id().as_str()
        );
        assert_eq!(later.body["counts"]["accounts_removed"], 2);
        assert!(
            audit::list_after(&server.test_db.db, 0, 10_000)
                .await
                .unwrap()
                .len()
                > audit_before
        );

        // Bad rows: every one named, nothing applied.
        let bad = upload(
            &api,
            &app_id,
            "user,role,end_date\n,viewer,\nx,nope,\ny,viewer,someday\n",
            false,
        )
        .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.problem_type(), "urn:tessera:problem:invalid-rows");
        assert_eq!(bad.body["error_count"], 3);
        let lines: Vec<i64> = bad.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["line"].as_i64().unwrap())
            .collect();
        assert_eq!(lines, vec![2, 3, 4]);
        let accounts = api
            .get(&format!("/api/v1/accounts?application_id={app_id}"))
            .await;
        assert_eq!(accounts.body["items"].as_array().unwrap().len(), 2);

        // The JSON form.
        let json_upload = api
            .send(
                Method::PUT,
                &format!("/api/v1/applications/{app_id}/members?dry_run=true"),
                Some(json!({"members": [{"user_key": "bob", "role": "Payroll/approver"}]})),
                None,
            )
            .await;
        assert_eq!(json_upload.status, StatusCode::OK, "{}", json_upload.body);
        assert_eq!(json_upload.body["counts"]["accounts_added"], 1);

        // Only CSV applications take member lists.
        let other = api
            .create(
                "/api/v1/applications",
                json!({"name": "GitHub", "connector_kind": "scim"}),
            )
            .await;
        let refused = upload(&api, other["id"].as_str().unwrap(), "user,role\n", false).await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
        server.stop().await;
    }
}

async fn put_users(api: &Api<'_>, source: &str, csv: &str, dry_run: bool) -> Reply {
    let r = api
        .http
        .put(api.server.url(&format!(
            "/api/v1/data-sources/{source}/users?dry_run={dry_run}"
        )))
        .bearer_auth(&api.server.admin_token)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    Reply {
        status,
        headers,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn csv_data_source_user_lists_create_update_and_suspend_identities() {
    for server in servers().await {
        let api = Api::new(&server);
        let source = api
            .create(
                "/api/v1/data-sources",
                json!({"name": "Contractors", "kind": "csv", "matching_key": "email"}),
            )
            .await;
        assert_eq!(source["missing_users"], "suspend");
        let id = source["id"].as_str().unwrap().to_owned();
        let list = "email,user_name,department,manager\r\n\
                    boss@x.org,boss,Ops,\r\n\
                    ann@x.org,ann,Ops,BOSS@x.org\r\n\
                    cy@x.org,cy,Lab,ann@x.org\r\n";
        let dry = put_users(&api, &id, list, true).await;
        assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
        assert_eq!(dry.body["counts"]["created"], 3);
        assert_eq!(dry.body["applied"]["created"], 0);
        let people_path = format!("/api/v1/identities?data_source_id={id}");
        let people = || api.get(&people_path);
        assert_eq!(
            people().await.body["items"],
            json!([]),
            "a dry run changes nothing"
        );

        let done = put_users(&api, &id, list, false).await;
        assert_eq!(done.body["applied"]["created"], 3, "{}", done.body);
        let items = people().await.body["items"].as_array().unwrap().clone();
        let by_name = |n: &str| items.iter().find(|i| i["user_name"] == n).unwrap().clone();
        assert_eq!(by_name("ann")["manager_id"], by_name("boss")["id"]);
        assert_eq!(by_name("cy")["manager_id"], by_name("ann")["id"]);

        let again = put_users(&api, &id, list, false).await;
        assert_eq!(again.body["changed"], false, "{}", again.body);

        // Ann moves to Lab; cy leaves the list and is suspended.
        let next = "email,user_name,department,manager\nboss@x.org,boss,Ops,\nann@x.org,ann,Lab,boss@x.org\n";
        let moved = put_users(&api, &id, next, false).await;
        assert_eq!(moved.body["applied"]["updated"], 1, "{}", moved.body);
        assert_eq!(moved.body["applied"]["suspended"], 1);
        let items = people().await.body["items"].as_array().unwrap().clone();
        let cy = items.iter().find(|i| i["user_name"] == "cy").unwrap();
        assert_eq!(cy["status"], "suspended");
        let ann = items.iter().find(|i| i["user_name"] == "ann").unwrap();
        assert_eq!(ann["department"], "Lab");

        // Back on the list: active again.
        let back = put_users(&api, &id, list, false).await;
        assert_eq!(back.body["applied"]["updated"], 2, "{}", back.body);

        // Every bad row named, nothing applied.
        let bad = put_users(
            &api,
            &id,
            "email,user_name\nnot-an-email,x\nz@x.org,boss\n,y\n",
            false,
        )
        .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.problem_type(), "urn:tessera:problem:invalid-rows");
        assert_eq!(bad.body["error_count"], 2, "{}", bad.body);
        let taken = put_users(&api, &id, "email,user_name\nnew@x.org,boss\n", false).await;
        assert_eq!(taken.status, StatusCode::BAD_REQUEST, "{}", taken.body);
        assert_eq!(taken.body["errors"][0]["column"], "user_name");

        // Deleting instead of suspending.
        let r = api
            .patch(
                &format!("/api/v1/data-sources/{id}"),
                json!({"missing_users": "delete"}),
                None,
            )
            .await;
        assert_eq!(r.body["missing_users"], "delete");
        let gone = put_users(&api, &id, "email,user_name\nboss@x.org,boss\n", false).await;
        assert_eq!(gone.body["applied"]["deleted"], 2, "{}", gone.body);
        assert_eq!(people().await.body["items"].as_array().unwrap().len(), 1);

        // SCIM sources take no user lists.
        let scim = api
            .create(
                "/api/v1/data-sources",
                json!({"name": "Entra", "kind": "scim", "matching_key": "user_name"}),
            )
            .await;
        let refused = put_users(&api, scim["id"].as_str().unwrap(), "user_name\nx\n", false).await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
        server.stop().await;
    }
}
