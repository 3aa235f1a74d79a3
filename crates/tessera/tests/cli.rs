//! End-to-end tests of the `tessera` binary: configuration, bootstrap, CLI commands against a
//! running server, the demo, audit verification, graceful shutdown and process-log redaction.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

fn tessera(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // Keep the tests independent of the developer's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("TESSERA_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("TESSERA_LOG__FORMAT", "json");
    cmd
}

/// A running `tessera` process whose output is collected line by line.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tessera");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for lines in [&self.stdout, &self.stderr] {
                if let Some(line) = lines.lock().unwrap().iter().find(|l| pred(l)) {
                    return line.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the "listening" log line and returns the base URL.
    fn base_url(&self) -> String {
        let line = self.wait_for("listening", |l| l.contains("\"listening\""));
        let v: Value = serde_json::from_str(&line).unwrap();
        v["fields"]["address"].as_str().unwrap().to_owned()
    }

    fn output(&self) -> String {
        format!(
            "{}\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(mut self) -> (i32, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "tessera did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        (status.code().unwrap_or(-1), self.output())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn serve(data_dir: &Path, extra_env: &[(&str, &str)]) -> Running {
    let mut cmd = tessera(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Running::start(cmd)
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run tessera");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs raw SQL on a SQLite store, as someone with access to the file could.
fn exec_sqlite(path: &Path, statements: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let target = tessera_store::DbTarget::SqliteFile(path.to_owned());
        let db = tessera_store::Db::connect(&target, Arc::new(tessera_domain::SystemClock))
            .await
            .unwrap();
        for sql in statements {
            tessera_store::with_pool!(db, |pool| {
                sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(pool)
                    .await
                    .unwrap();
            });
        }
        db.close().await;
    });
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or("").to_owned()
}

fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut req = reqwest::Client::new().get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
}

#[test]
fn first_start_prints_a_working_admin_token_once_and_cli_tokens_work_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let base = server.base_url();
    let token_line = server.wait_for("bootstrap token", |l| l.starts_with("tsr_adm_"));
    assert_eq!(
        get(&format!("{base}/api/v1/whoami"), Some(&token_line)).0,
        200
    );

    // A token created by the CLI, while the server runs, works at once; revoked, it stops.
    let data_dir = dir.path().to_str().unwrap();
    let (code, stdout, _) = run(&mut tessera(&[
        "admin-token",
        "create",
        "--label",
        "ci",
        "--data-dir",
        data_dir,
    ]));
    assert_eq!(code, 0);
    let cli_token = last_line(&stdout);
    assert!(cli_token.starts_with("tsr_adm_"), "{stdout}");
    let (status, who) = get(&format!("{base}/api/v1/whoami"), Some(&cli_token));
    assert_eq!((status, who["label"].as_str()), (200, Some("ci")));
    let (code, list, _) = run(&mut tessera(&[
        "admin-token",
        "list",
        "--data-dir",
        data_dir,
    ]));
    assert_eq!(code, 0);
    assert!(
        list.contains("bootstrap") && list.contains("ci") && !list.contains("tsr_adm_"),
        "{list}"
    );
    let id = who["id"].as_str().unwrap();
    let (code, _, _) = run(&mut tessera(&[
        "admin-token",
        "revoke",
        id,
        "--data-dir",
        data_dir,
    ]));
    assert_eq!(code, 0);
    assert_eq!(
        get(&format!("{base}/api/v1/whoami"), Some(&cli_token)).0,
        401
    );
    let (code, _, stderr) = run(&mut tessera(&[
        "admin-token",
        "revoke",
        "no-such-id",
        "--data-dir",
        data_dir,
    ]));
    assert_eq!(code, 1, "{stderr}");
    let (code, _) = server.terminate();
    assert_eq!(code, 0);

    // The second start creates nothing and prints no token.
    let again = serve(dir.path(), &[]);
    again.base_url();
    let (code, output) = again.terminate();
    assert_eq!(code, 0);
    assert!(!output.contains("tsr_adm_"), "{output}");
    let (code, stdout, _) = run(&mut tessera(&["audit", "verify", "--data-dir", data_dir]));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("intact: 3 entries"),
        "create, create, revoke: {stdout}"
    );
}

/// `Created SCIM token <id> for …` → the id.
fn scim_token_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Created SCIM token "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token id in {stdout}"))
        .to_owned()
}

#[test]
fn scim_tokens_are_created_listed_rotated_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let server = serve(dir.path(), &[]);
    let base = server.base_url();
    let users = format!("{base}/scim/v2/Users?count=0");
    let create = |label: &str| {
        run(&mut tessera(&[
            "scim-token",
            "create",
            "--data-source",
            "Entra ID",
            "--label",
            label,
            "--data-dir",
            data_dir,
        ]))
    };

    // The first token creates the data source; the token alone is the last stdout line.
    let (code, first_out, stderr) = create("first");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        first_out.contains("Created SCIM data source \"Entra ID\""),
        "{first_out}"
    );
    let first = last_line(&first_out);
    assert!(first.starts_with("tsr_scim_"), "{first_out}");
    assert_eq!(get(&users, Some(&first)).0, 200);

    // A second token for rotation: same data source, both valid at once.
    let (code, second_out, _) = create("rotation");
    assert_eq!(code, 0);
    assert!(
        !second_out.contains("Created SCIM data source"),
        "{second_out}"
    );
    let second = last_line(&second_out);
    assert_ne!(first, second);
    assert_eq!(get(&users, Some(&second)).0, 200);

    let (code, list, _) = run(&mut tessera(&[
        "scim-token",
        "list",
        "--data-dir",
        data_dir,
    ]));
    assert_eq!(code, 0);
    assert!(
        list.contains("first") && list.contains("rotation") && list.contains("Entra ID"),
        "{list}"
    );
    assert!(!list.contains("tsr_scim_"), "list shows no secrets: {list}");

    // Revoking the first leaves the second working; an unknown id fails.
    let (code, _, stderr) = run(&mut tessera(&[
        "scim-token",
        "revoke",
        &scim_token_id(&first_out),
        "--data-dir",
        data_dir,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (status, body) = get(&users, Some(&first));
    assert_eq!(status, 401, "{body}");
    assert_eq!(get(&users, Some(&second)).0, 200);
    let (_, list, _) = run(&mut tessera(&[
        "scim-token",
        "list",
        "--data-dir",
        data_dir,
    ]));
    assert!(list.contains("revoked"), "{list}");
    let (code, _, stderr) = run(&mut tessera(&[
        "scim-token",
        "revoke",
        "no-such-id",
        "--data-dir",
        data_dir,
    ]));
    assert_eq!(code, 1, "{stderr}");
    let (code, _) = server.terminate();
    assert_eq!(code, 0);
}

#[test]
fn the_bootstrap_token_can_be_supplied() {
    let dir = tempfile::tempdir().unwrap();
    let supplied = "supplied-bootstrap-token-abcdefghijklmnop";
    let server = serve(dir.path(), &[("TESSERA_BOOTSTRAP_TOKEN", supplied)]);
    let base = server.base_url();
    assert_eq!(get(&format!("{base}/api/v1/whoami"), Some(supplied)).0, 200);
    let (_, output) = server.terminate();
    assert!(
        !output.contains("tsr_adm_") && !output.contains(supplied),
        "neither printed nor logged"
    );
}

#[test]
fn flags_win_over_env_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tessera.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"{}\"\n[log]\nlevel = \"info\"\n",
            data.display()
        ),
    )
    .unwrap();
    // env beats file: port 0 (any) instead of the file's port 1, which would fail to bind.
    let mut cmd = tessera(&["serve", "--config", config.to_str().unwrap()]);
    cmd.env("TESSERA_LISTEN", "127.0.0.1:0");
    let server = Running::start(cmd);
    server.base_url();
    assert!(
        data.join("tessera.db").exists(),
        "the file's data_dir was used"
    );
    server.terminate();

    // flag beats env.
    let mut cmd = tessera(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    cmd.env("TESSERA_LISTEN", "127.0.0.1:1");
    let server = Running::start(cmd);
    server.base_url();
    server.terminate();
}

#[test]
fn invalid_configuration_fails_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (code, _, stderr) =
        run(tessera(&["serve", "--data-dir", data_dir]).env("TESSERA_LISTEN", "not-an-address"));
    assert_eq!(code, 2);
    assert!(stderr.contains("listen:"), "{stderr}");

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[request_log]\nretention_days = \"forever\"\n").unwrap();
    let (code, _, stderr) = run(&mut tessera(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("request_log.retention_days"), "{stderr}");

    let (code, _, stderr) =
        run(tessera(&["serve", "--data-dir", data_dir]).env("TESSERA_MAX_BODY_BYTES", "10"));
    assert_eq!(code, 2);
    assert!(stderr.contains("max_body_bytes"), "{stderr}");

    let (code, _, stderr) = run(&mut tessera(&["serve", "--config", "/no/such/file.toml"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn a_database_newer_than_the_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    assert_eq!(run(&mut tessera(&["migrate", "--data-dir", data_dir])).0, 0);
    exec_sqlite(
        &dir.path().join("tessera.db"),
        &[
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
           VALUES (9999, 'future', CURRENT_TIMESTAMP, TRUE, X'00', 0)",
        ],
    );
    let (code, _, stderr) = run(&mut tessera(&[
        "serve",
        "--data-dir",
        data_dir,
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("newer than this Tessera build"), "{stderr}");
}

#[test]
fn the_demo_serves_is_ready_and_its_audit_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let demo = Running::start(tessera(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        demo_dir.to_str().unwrap(),
    ]));
    let base = demo.base_url();
    let token_line = demo.wait_for("demo banner", |l| l.contains("Admin token:"));
    let token = token_line.split_whitespace().last().unwrap().to_owned();
    assert_eq!(get(&format!("{base}/readyz"), None).0, 200);
    let (status, identities) = get(
        &format!("{base}/api/v1/identities?limit=1000"),
        Some(&token),
    );
    assert_eq!(status, 200);
    let people = identities["items"].as_array().unwrap();
    assert!(people.len() >= 20, "a small organisation: {}", people.len());
    assert!(
        people.iter().any(|p| p["manager_id"].is_string()),
        "with managers"
    );
    assert!(
        people.iter().any(|p| p["status"] == "suspended"),
        "and a leaver"
    );
    let (_, groups) = get(&format!("{base}/api/v1/groups"), Some(&token));
    assert!(groups["items"].as_array().unwrap().len() >= 5);
    // Group mappings gave platform roles and memberships.
    assert!(people.iter().any(|p| p["platform_role"] == "admin"));
    assert!(people.iter().any(|p| p["platform_role"] == "requester"));
    let (_, mapped) = get(
        &format!("{base}/api/v1/memberships?source=group_mapping"),
        Some(&token),
    );
    assert!(!mapped["items"].as_array().unwrap().is_empty());
    let (_, rules) = get(&format!("{base}/api/v1/rules"), Some(&token));
    assert_eq!(rules["items"].as_array().unwrap().len(), 1);
    let (code, _) = demo.terminate();
    assert_eq!(code, 0);

    let (code, stdout, _) = run(&mut tessera(&[
        "audit",
        "verify",
        "--data-dir",
        demo_dir.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("Audit chain intact"), "{stdout}");

    // Tamper with the store directly: verify names the entry and exits 1.
    exec_sqlite(
        &demo_dir.join("tessera.db"),
        &[
            "DROP TRIGGER audit_log_no_update",
            "UPDATE audit_log SET actor_kind = 'identity' WHERE seq = 7",
        ],
    );
    let (code, stdout, _) = run(&mut tessera(&[
        "audit",
        "verify",
        "--data-dir",
        demo_dir.to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    assert!(stdout.contains("BROKEN at entry 7"), "{stdout}");

    // A directory the demo did not create is never wiped.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep").unwrap();
    let (code, _, stderr) = run(&mut tessera(&[
        "demo",
        "--data-dir",
        foreign.to_str().unwrap(),
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("not created by `tessera demo`"), "{stderr}");
    assert!(foreign.join("precious.txt").exists());
}

#[test]
fn sigterm_finishes_and_flushes_the_request_log_and_log_lines_carry_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "planted-process-secret-7d3e";
    let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwcm9jZXNzIn0.c2lnbmF0dXJlLXByb2Nlc3M";
    let server = serve(
        dir.path(),
        &[
            ("RUST_LOG", "trace"),
            (
                "TESSERA_BOOTSTRAP_TOKEN",
                "bootstrap-token-for-the-shutdown-test",
            ),
        ],
    );
    let base = server.base_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request_id = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!(
                "{base}/api/v1/nowhere?client_secret={secret}&assertion={jwt}"
            ))
            .header("authorization", format!("Bearer {secret}"))
            .header("cookie", format!("sid={secret}"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"password":"{secret}","token":"{jwt}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        r.headers()["x-request-id"].to_str().unwrap().to_owned()
    });
    let (code, output) = server.terminate();
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("shutdown signal received"));
    assert!(
        !output.contains(secret) && !output.contains(jwt),
        "secret in process output:\n{output}"
    );
    assert!(!output.contains("bootstrap-token-for-the-shutdown-test"));
    // Every log line emitted while handling the request carries its id.
    let request_lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("/api/v1/nowhere"))
        .collect();
    assert!(!request_lines.is_empty(), "{output}");
    for line in &request_lines {
        assert!(
            line.contains(&request_id),
            "line without the request id: {line}"
        );
    }

    // The request log was flushed before exit.
    rt.block_on(async {
        let target = tessera_store::DbTarget::SqliteFile(dir.path().join("tessera.db"));
        let db = tessera_store::Db::connect(&target, Arc::new(tessera_domain::SystemClock))
            .await
            .unwrap();
        let events = tessera_store::request_log::api_events_for_request(&db, &request_id)
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].status, 404);
        assert!(!events[0].path.contains(secret));
        let detail = tessera_store::request_log::api_event_detail(&db, &events[0].id)
            .await
            .unwrap()
            .unwrap();
        let all = format!("{detail:?}");
        assert!(!all.contains(secret) && !all.contains(jwt), "{all}");
    });
}

#[test]
fn serves_and_verifies_on_postgresql() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(pg) = rt.block_on(tessera_testkit::TestDb::postgres()) else {
        return;
    };
    let tessera_store::DbTarget::Postgres(url) = pg.target.clone() else {
        unreachable!()
    };
    // The test cluster trusts loopback, so any password works: it must never be logged.
    let url = url.replacen(
        "postgres://postgres@",
        "postgres://postgres:pg-password-never-logged@",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    cmd.env("TESSERA_DATABASE_URL", &url);
    let server = Running::start(cmd);
    let base = server.base_url();
    let token = server.wait_for("bootstrap token", |l| l.starts_with("tsr_adm_"));
    assert_eq!(
        get(&format!("{base}/readyz"), None).1["database"],
        "postgres"
    );
    assert_eq!(get(&format!("{base}/api/v1/whoami"), Some(&token)).0, 200);
    let (code, stdout, _) =
        run(tessera(&["admin-token", "create"]).env("TESSERA_DATABASE_URL", &url));
    assert_eq!(code, 0);
    assert_eq!(
        get(&format!("{base}/api/v1/whoami"), Some(&last_line(&stdout))).0,
        200
    );
    let (code, output) = server.terminate();
    assert_eq!(code, 0);
    assert!(output.contains("postgres://postgres@"), "{output}");
    assert!(!output.contains("pg-password-never-logged"), "{output}");
    let (code, stdout, _) = run(&mut tessera(&["audit", "verify", "--database-url", &url]));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("intact: 2 entries"), "{stdout}");
}

#[test]
fn store_commands_refuse_a_missing_database_instead_of_creating_one() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("nothing-here");
    for args in [
        vec!["audit", "verify"],
        vec!["admin-token", "list"],
        vec!["admin-token", "create"],
    ] {
        let mut full = args.clone();
        full.extend(["--data-dir", empty.to_str().unwrap()]);
        let (code, _, stderr) = run(&mut tessera(&full));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("there is no Tessera database"), "{stderr}");
    }
    assert!(!empty.exists(), "nothing was created");
}
