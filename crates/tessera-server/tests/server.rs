//! HTTP tests: the real server on a loopback port, over SQLite and (when configured) PostgreSQL.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Json;
use axum::routing::{get, post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_domain::audit::Actor;
use tessera_domain::directory::{
    DataSourceKind, GroupAttributes, IdentityAttributes, IdentityKind, MatchingKey, MemberKind,
};
use tessera_server::ServerConfig;
use tessera_server::api::ApiError;
use tessera_store::{ChangeContext, Db, admin_tokens, directory, request_log, with_pool};
use tessera_testkit::{TestDb, TestServer};

// ---------------------------------------------------------------------------------------------
// Process log capture: every test in this binary logs (at TRACE) into one buffer, so a test can
// check that its secrets never reached a log line.

#[derive(Clone)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn process_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = SharedBuf(buf.clone());
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .init();
        buf
    })
}

fn captured_logs() -> String {
    String::from_utf8_lossy(&process_logs().lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn start(t: TestDb) -> TestServer {
    start_config(t, ServerConfig::default()).await
}

async fn start_config(t: TestDb, config: ServerConfig) -> TestServer {
    process_logs();
    TestServer::start_with(t, config, |routes| {
        routes
            .route("/api/v1/test/panic", get(panics))
            .route(
                "/api/v1/test/internal",
                get(|| async {
                    Err::<Json<Value>, _>(ApiError::Internal(
                        "database exploded: detail only for logs".into(),
                    ))
                }),
            )
            .route(
                "/api/v1/test/echo",
                post(|body: String| async move {
                    (
                        [
                            ("set-cookie", "session=echo-cookie-secret-5f1c; HttpOnly"),
                            ("content-type", "application/json"),
                        ],
                        body,
                    )
                }),
            )
    })
    .await
}

async fn panics() -> &'static str {
    panic!("deliberate test panic")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get_json(
    server: &TestServer,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = client()
        .get(server.url(path))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Every text stored in the three log tables, concatenated.
async fn log_tables_text(db: &Db) -> String {
    let rows: Vec<String> = with_pool!(db, |pool| {
        let mut all: Vec<String> = sqlx::query_scalar(
            "SELECT id || '|' || request_id || '|' || surface || '|' || method || '|' || COALESCE(route, '') || '|' \
             || path || '|' || COALESCE(caller_kind, '') || '|' || COALESCE(caller_id, '') || '|' \
             || COALESCE(remote_addr, '') || '|' || COALESCE(user_agent, '') FROM api_events",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        all.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT request_headers || '|' || COALESCE(request_body, '') || '|' || response_headers || '|' \
                 || COALESCE(response_body, '') FROM api_event_details",
            )
            .fetch_all(pool)
            .await
            .unwrap(),
        );
        all.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT message || '|' || COALESCE(detail, '') || '|' || COALESCE(path, '') FROM log_events",
            )
            .fetch_all(pool)
            .await
            .unwrap(),
        );
        all
    });
    rows.join("\n")
}

fn problem(headers: &reqwest::header::HeaderMap, body: &Value, status: u16) {
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tessera:problem:")
    );
    assert_eq!(
        body["request_id"].as_str().unwrap(),
        headers["x-request-id"].to_str().unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Operations

#[tokio::test]
async fn health_readiness_and_request_ids() {
    for t in TestDb::all().await {
        let server = start(t).await;
        let r = client().get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(tessera_domain::ids::is_valid_id(&id));
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));

        let r = client()
            .get(server.url("/readyz"))
            .header("x-request-id", "trace-abc.1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-request-id"],
            "trace-abc.1",
            "a plain incoming id is kept"
        );
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");

        server.test_db.db.close().await;
        let r = client().get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "not_ready");
    }
}

#[tokio::test]
async fn metrics_expose_requests_pool_and_queue() {
    let server = start(TestDb::sqlite().await).await;
    get_json(&server, "/api/v1/whoami").await;
    client()
        .get(server.url("/api/v1/groups/not-a-route/x/y"))
        .send()
        .await
        .unwrap();
    let r = client().get(server.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            r#"tessera_http_requests_total{method="GET",route="/api/v1/whoami",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"tessera_http_request_duration_seconds_count{method="GET",route="/api/v1/whoami",status="200"} 1"#));
    assert!(
        text.contains(r#"route="unmatched",status="404""#),
        "raw paths never become labels"
    );
    assert!(text.contains("tessera_db_pool_connections{state=\"idle\"}"));
    assert!(text.contains("tessera_jobs_queued 0"));
    assert!(text.contains("tessera_request_log_dropped_total 0"));
}

// ---------------------------------------------------------------------------------------------
// Authentication and errors

#[tokio::test]
async fn admin_tokens_authenticate_and_revocation_applies_at_once() {
    for t in TestDb::all().await {
        let server = start(t).await;
        let (status, headers, body) = get_json(&server, "/api/v1/whoami").await;
        assert_eq!(status, 200);
        assert_eq!(body["kind"], "admin_token");
        assert!(headers.contains_key("x-request-id"));

        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic Zm9vOmJhcg=="),
            Some("Bearer "),
        ] {
            let mut req = client().get(server.url("/api/v1/whoami"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{auth:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"tessera\"");
            let headers = r.headers().clone();
            problem(&headers, &r.json().await.unwrap(), 401);
        }

        // Revoked in the store (as `tessera admin-token revoke` does from another process).
        let id = body["id"].as_str().unwrap().to_owned();
        let mut tx = server.test_db.db.begin().await.unwrap();
        admin_tokens::revoke(&mut tx, &ChangeContext::new(Actor::cli()), &id)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let (status, _, _) = get_json(&server, "/api/v1/whoami").await;
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn unknown_routes_answer_in_their_surface_format() {
    let server = start(TestDb::sqlite().await).await;
    let (status, headers, body) = get_json(&server, "/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    problem(&headers, &body, 404);

    let r = client()
        .get(server.url("/scim/v2/Nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/scim+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert_eq!(body["status"], "404");

    let r = client()
        .post(server.url("/api/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let headers = r.headers().clone();
    problem(&headers, &r.json().await.unwrap(), 405);
    let (status, headers, body) = get_json(&server, "/api/v1/groups/%FF").await;
    assert_eq!(status, 400);
    problem(&headers, &body, 400);

    let r = client()
        .post(server.url("/oauth2/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test]
async fn a_panicking_handler_yields_a_500_a_log_event_and_the_server_keeps_serving() {
    for t in TestDb::all().await {
        let server = start(t).await;
        let (status, headers, body) = get_json(&server, "/api/v1/test/panic").await;
        assert_eq!(status, 500);
        problem(&headers, &body, 500);
        let request_id = body["request_id"].as_str().unwrap().to_owned();
        assert!(
            !body.to_string().contains("deliberate"),
            "nothing internal leaks: {body}"
        );

        for _ in 0..3 {
            assert_eq!(
                get_json(&server, "/api/v1/whoami").await.0,
                200,
                "still serving"
            );
        }
        let (status, headers, body) = get_json(&server, "/api/v1/test/internal").await;
        assert_eq!(status, 500);
        problem(&headers, &body, 500);
        assert!(!body.to_string().contains("exploded"));
        let internal_id = body["request_id"].as_str().unwrap().to_owned();

        let t = server.stop().await;
        let events = request_log::log_events_for_request(&t.db, &request_id)
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, "panic");
        assert!(
            events[0].message.contains("deliberate test panic"),
            "{:?}",
            events[0]
        );
        assert!(
            events[0].message.contains("server.rs"),
            "panic location recorded: {:?}",
            events[0]
        );
        assert!(
            events[0].detail.as_deref().unwrap_or("").contains("server"),
            "backtrace recorded"
        );
        assert_eq!(events[0].route.as_deref(), Some("/api/v1/test/panic"));
        let api = request_log::api_events_for_request(&t.db, &request_id)
            .await
            .unwrap();
        assert_eq!(api[0].status, 500);

        let events = request_log::log_events_for_request(&t.db, &internal_id)
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "error");
        assert!(
            events[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("database exploded")
        );
        assert!(
            captured_logs().contains(&request_id),
            "the panic's log line carries the request id"
        );
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_in_the_surface_format() {
    let config = ServerConfig {
        max_body_bytes: 4096,
        ..ServerConfig::default()
    };
    let server = start_config(TestDb::sqlite().await, config).await;
    let big = "x".repeat(10_000);
    let r = client()
        .post(server.url("/api/v1/test/echo"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let headers = r.headers().clone();
    problem(&headers, &r.json().await.unwrap(), 413);
    let r = client()
        .post(server.url("/scim/v2/Users"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "413");
    assert!(
        body.get("scimType").is_none(),
        "RFC 7644 defines no scimType for 413"
    );
    // A surface that does not capture bodies refuses by the declared length, in its format.
    let r = client()
        .post(server.url("/ui/anything"))
        .body("y".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

// ---------------------------------------------------------------------------------------------
// Request logging

#[tokio::test]
async fn api_events_and_details_record_each_call() {
    for t in TestDb::all().await {
        let server = start(t).await;
        let r = client()
            .post(server.url("/api/v1/test/echo?page=2"))
            .bearer_auth(&server.admin_token)
            .header("user-agent", "tessera-test/1.0")
            .header("content-type", "application/json")
            .body(r#"{"hello":"world"}"#)
            .send()
            .await
            .unwrap();
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        client().get(server.url("/healthz")).send().await.unwrap();
        let t = server.stop().await;

        let events = request_log::api_events_for_request(&t.db, &request_id)
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.surface.as_str(), e.method.as_str()), ("api", "POST"));
        assert_eq!(e.route.as_deref(), Some("/api/v1/test/echo"));
        assert_eq!(e.path, "/api/v1/test/echo?page=2");
        assert_eq!(e.status, 200);
        assert!(e.latency_us > 0);
        assert_eq!(e.user_agent.as_deref(), Some("tessera-test/1.0"));
        assert!(e.remote_addr.as_deref().unwrap().starts_with("127.0.0.1:"));
        let detail = request_log::api_event_detail(&t.db, &e.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail.request_body.as_deref(), Some(r#"{"hello":"world"}"#));
        assert_eq!(
            detail.response_body.as_deref(),
            Some(r#"{"hello":"world"}"#)
        );
        let req_headers: Value = serde_json::from_str(&detail.request_headers).unwrap();
        assert_eq!(req_headers["user-agent"], "tessera-test/1.0");
        assert_eq!(req_headers["authorization"], "[REDACTED]");
        // Probes are not logged by default.
        let all = request_log::recent_api_events(&t.db, 100).await.unwrap();
        assert!(all.iter().all(|e| e.route.as_deref() != Some("/healthz")));
    }
}

#[tokio::test]
async fn the_caller_is_recorded() {
    let server = start(TestDb::sqlite().await).await;
    let (_, headers, body) = get_json(&server, "/api/v1/whoami").await;
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let t = server.stop().await;
    let e = &request_log::api_events_for_request(&t.db, &request_id)
        .await
        .unwrap()[0];
    assert_eq!(e.caller_kind.as_deref(), Some("admin_token"));
    assert_eq!(e.caller_id.as_deref(), body["id"].as_str());
}

#[tokio::test]
async fn bodies_can_be_switched_off_per_surface_and_logging_entirely() {
    let mut config = ServerConfig::default();
    config.request_log.bodies.api = false;
    config.request_log.body_capture_bytes = 8;
    let server = start_config(TestDb::sqlite().await, config).await;
    let r = client()
        .post(server.url("/api/v1/test/echo"))
        .body("0123456789abcdef")
        .send()
        .await
        .unwrap();
    let api_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let r = client()
        .post(server.url("/scim/v2/Users"))
        .body("0123456789abcdef")
        .send()
        .await
        .unwrap();
    let scim_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let t = server.stop().await;
    let api = &request_log::api_events_for_request(&t.db, &api_id)
        .await
        .unwrap()[0];
    let detail = request_log::api_event_detail(&t.db, &api.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        detail.request_body.is_none() && detail.response_body.is_none(),
        "bodies off: {detail:?}"
    );
    assert!(
        detail.request_headers.contains("content-length"),
        "headers are kept: {detail:?}"
    );
    let scim = &request_log::api_events_for_request(&t.db, &scim_id)
        .await
        .unwrap()[0];
    let detail = request_log::api_event_detail(&t.db, &scim.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.request_body.as_deref(), Some("01234567"));
    assert!(detail.request_body_truncated);

    let mut config = ServerConfig::default();
    config.request_log.enabled = false;
    let server = start_config(TestDb::sqlite().await, config).await;
    get_json(&server, "/api/v1/whoami").await;
    let t = server.stop().await;
    assert!(
        request_log::recent_api_events(&t.db, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn many_requests_are_all_logged_in_batches() {
    for t in TestDb::all().await {
        let server = start(t).await;
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let url = server.url("/api/v1/whoami");
                let token = server.admin_token.clone();
                tokio::spawn(async move {
                    client()
                        .get(url)
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap()
                        .status()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 200);
        }
        let metrics = server.state.metrics.clone();
        let t = server.stop().await;
        assert_eq!(
            request_log::recent_api_events(&t.db, 1000)
                .await
                .unwrap()
                .len(),
            200
        );
        let text = metrics.render(t.db.pool_stats(), None);
        assert!(
            text.contains("tessera_request_log_written_total 200"),
            "{text}"
        );
    }
}

/// Secrets planted in every sensitive header, query value and JSON field never reach the three
/// log tables nor the process's log output.
#[tokio::test]
async fn planted_secrets_never_reach_logs() {
    for t in TestDb::all().await {
        let server = start(t).await;
        let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6Imsx9Q.eyJzdWIiOiJwbGFudGVkLXNlY3JldC1qd3QifQ.cGxhbnRlZC1zaWduYXR1cmU";
        let secrets = [
            "hdr-authorization-secret-a91",
            "hdr-cookie-secret-b72",
            "hdr-apikey-secret-c63",
            "hdr-clientsecret-d54",
            "qry-access-token-e45",
            "qry-client-secret-f36",
            "qry-password-g27",
            "body-password-h18",
            "body-client-secret-i09",
            "body-client-assertion-j90",
            "body-refresh-token-k81",
            "body-nested-secret-l72",
            "body-private-key-m63",
            "echo-cookie-secret-5f1c",
            "referer-opaque-token-n54",
            "tsr_adm_PlantedRequestIdSecret0123456789abcdefghij",
            jwt,
        ];
        let body = json!({
            "userName": "visible-user",
            "password": secrets[7],
            "client_secret": secrets[8],
            "client_assertion": secrets[9],
            "refresh_token": secrets[10],
            "settings": {"apiSecret": secrets[11], "list": [{"token": "x"}]},
            "key": format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----", secrets[12]),
            "assertion": jwt,
        });
        let path = format!(
            "/api/v1/test/echo?access_token={}&client_secret={}&password={}&id_token_hint={jwt}&visible=yes",
            secrets[4], secrets[5], secrets[6]
        );
        let mut ids = Vec::new();
        for path in [
            path.as_str(),
            "/scim/v2/Users?token=qry-access-token-e45",
            "/oauth2/token?password=qry-password-g27",
        ] {
            let r = client()
                .post(server.url(path))
                .header("authorization", format!("Bearer {}", secrets[0]))
                .header("cookie", format!("session={}", secrets[1]))
                .header("x-api-key", secrets[2])
                .header("x-client-secret", secrets[3])
                .header("x-forwarded-assertion", jwt)
                .header("user-agent", format!("agent/1.0 (token={jwt})"))
                .header(
                    "referer",
                    "https://app.example/cb?access_token=referer-opaque-token-n54",
                )
                .header(
                    "x-request-id",
                    "tsr_adm_PlantedRequestIdSecret0123456789abcdefghij",
                )
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert!(
                !id.starts_with("tsr_"),
                "a secret-shaped request id is replaced"
            );
            ids.push(id);
        }
        // A form body and a malformed JSON body take the other redaction paths.
        client()
            .post(server.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_secret={}&client_assertion={jwt}",
                secrets[8]
            ))
            .send()
            .await
            .unwrap();
        client()
            .post(server.url("/api/v1/test/echo"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"password": "{}", "client_secret":"{}", broken"#,
                secrets[7], secrets[8]
            ))
            .send()
            .await
            .unwrap();
        // A NUL byte (which PostgreSQL refuses in text) and a SCIM PATCH of a password.
        client()
            .post(server.url("/scim/v2/Users/x"))
            .header("content-type", "application/scim+json")
            .body(format!(
                "{{\"Operations\":[{{\"op\":\"replace\",\"path\":\"password\",\"value\":\"{}\"}}],\"n\":\"a\\u0000b\"}}",
                secrets[7]
            ))
            .send()
            .await
            .unwrap();
        client()
            .post(server.url("/api/v1/test/echo"))
            .body("raw\0nul")
            .send()
            .await
            .unwrap();
        let t = server.stop().await;

        let stored = log_tables_text(&t.db).await;
        assert!(
            stored.contains("visible-user") && stored.contains("visible=yes"),
            "bodies were captured: {stored}"
        );
        assert_eq!(
            request_log::api_events_for_request(&t.db, &ids[0])
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            request_log::recent_api_events(&t.db, 100)
                .await
                .unwrap()
                .len(),
            7,
            "no row lost, NUL included"
        );
        assert!(stored.contains("[REDACTED]"));
        let logs = captured_logs();
        assert!(logs.contains(&ids[0]), "the process log was captured");
        for secret in secrets {
            assert!(
                !stored.contains(secret),
                "{secret} found in the log tables:\n{stored}"
            );
            assert!(
                !logs.contains(secret),
                "{secret} found in the process log output"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Directory API

#[tokio::test]
async fn identities_and_groups_are_listed_with_paging() {
    for t in TestDb::all().await {
        let db = t.db.clone();
        let ctx = ChangeContext::new(Actor::cli());
        let mut tx = db.begin().await.unwrap();
        let ds = directory::create_data_source(
            &mut tx,
            &ctx,
            "HR",
            DataSourceKind::Hr,
            MatchingKey::EmployeeNumber,
        )
        .await
        .unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let attrs = IdentityAttributes {
                user_name: format!("user{i}"),
                ..Default::default()
            };
            ids.push(
                directory::create_identity(&mut tx, &ctx, &ds.id, IdentityKind::Person, attrs)
                    .await
                    .unwrap()
                    .id,
            );
        }
        let group = directory::create_group(
            &mut tx,
            &ctx,
            &ds.id,
            GroupAttributes {
                display_name: "Team".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for id in &ids {
            directory::add_group_member(&mut tx, &ctx, &group.id, MemberKind::Identity, id)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let server = start(t).await;

        let (status, _, page1) = get_json(&server, "/api/v1/identities?limit=3").await;
        assert_eq!(status, 200);
        assert_eq!(page1["items"].as_array().unwrap().len(), 3);
        let after = page1["next_after"].as_str().unwrap();
        let (_, _, page2) = get_json(
            &server,
            &format!("/api/v1/identities?limit=3&after={after}"),
        )
        .await;
        assert_eq!(page2["items"].as_array().unwrap().len(), 2);
        assert!(page2.get("next_after").is_none());
        let user_names: Vec<&str> = page1["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(page2["items"].as_array().unwrap())
            .map(|i| i["user_name"].as_str().unwrap())
            .collect();
        assert_eq!(user_names, ["user0", "user1", "user2", "user3", "user4"]);

        let (status, _, one) = get_json(&server, &format!("/api/v1/identities/{}", ids[0])).await;
        assert_eq!(status, 200);
        assert_eq!(one["status"], "active");
        assert!(one["created_at"].as_str().unwrap().ends_with('Z'));

        let (status, headers, body) = get_json(&server, "/api/v1/identities/not-an-id").await;
        assert_eq!(status, 404);
        problem(&headers, &body, 404);
        let (status, headers, body) =
            get_json(&server, &format!("/api/v1/identities/{}", group.id)).await;
        assert_eq!(status, 404);
        problem(&headers, &body, 404);
        let (status, headers, body) = get_json(&server, "/api/v1/identities?limit=5000").await;
        assert_eq!(status, 400);
        problem(&headers, &body, 400);
        let (status, _, _) = get_json(&server, "/api/v1/identities?bogus=1").await;
        assert_eq!(status, 400);

        let (_, _, groups) = get_json(&server, "/api/v1/groups").await;
        assert_eq!(groups["items"][0]["display_name"], "Team");
        let (_, _, members) = get_json(
            &server,
            &format!("/api/v1/groups/{}/members?limit=2", group.id),
        )
        .await;
        assert_eq!(members["items"].as_array().unwrap().len(), 2);
        let cursor = members["next_after"].as_str().unwrap();
        assert!(cursor.starts_with("identity:"));
        let (_, _, rest) = get_json(
            &server,
            &format!("/api/v1/groups/{}/members?after={cursor}", group.id),
        )
        .await;
        assert_eq!(rest["items"].as_array().unwrap().len(), 3);
        let (status, _, _) = get_json(
            &server,
            &format!("/api/v1/groups/{}/members?after=nonsense", group.id),
        )
        .await;
        assert_eq!(status, 400);
        let (_, _, sources) = get_json(&server, "/api/v1/data-sources").await;
        assert_eq!(sources["items"][0]["name"], "HR");
    }
}

#[tokio::test]
async fn an_unreachable_database_drops_log_rows_promptly_and_shutdown_does_not_hang() {
    let server = start(TestDb::sqlite().await).await;
    server.test_db.db.close().await;
    for _ in 0..5 {
        let r = client()
            .get(server.url("/api/v1/nothing"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let metrics = server.state.metrics.clone();
    let started = std::time::Instant::now();
    let t = server.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = metrics.render(t.db.pool_stats(), None);
    assert!(
        text.contains("tessera_request_log_dropped_total 5"),
        "{text}"
    );
}

#[path = "server/scim.rs"]
mod scim;

#[path = "server/governance.rs"]
mod governance;

#[path = "server/group_mappings.rs"]
mod group_mappings;

#[path = "server/rules.rs"]
mod rules;
