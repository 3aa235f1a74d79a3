//! Request-log write throughput: how many API events (each with its details row) the store
//! writes per second in the batches the server's writer uses. Run with
//! `cargo bench -p tessera-store --bench request_log` (SQLite; PostgreSQL too when
//! `TEST_PG_URL` is set).

use std::time::Instant;

use tessera_store::request_log::{self, ApiEvent, ApiEventDetail, Batch};
use tessera_testkit::TestDb;

const EVENTS: usize = 100_000;
const BATCH: usize = 500;

fn batch(start: usize) -> Batch {
    let mut b = Batch::default();
    for i in start..start + BATCH {
        let id = tessera_domain::ids::new_id();
        b.details.push(ApiEventDetail {
            api_event_id: id.clone(),
            request_headers: r#"{"accept":"*/*","authorization":"[REDACTED]","host":"127.0.0.1:8080","user-agent":"wrk"}"#.into(),
            request_body: None,
            request_body_truncated: false,
            response_headers: r#"{"content-type":"application/json","x-request-id":"01a20622-4156-7669-9378-7db03a0837f8"}"#.into(),
            response_body: Some(r#"{"status":"ok"}"#.into()),
            response_body_truncated: false,
        });
        b.api_events.push(ApiEvent {
            id,
            occurred_at: 1_700_000_000_000 + i as i64,
            request_id: tessera_domain::ids::new_id(),
            surface: "api".into(),
            method: "GET".into(),
            route: Some("/api/v1/whoami".into()),
            path: "/api/v1/whoami".into(),
            status: 200,
            latency_us: 150,
            caller_kind: Some("admin_token".into()),
            caller_id: Some("01a20622-3580-73b1-84de-26fc0d904a28".into()),
            remote_addr: Some("127.0.0.1:40000".into()),
            user_agent: Some("wrk".into()),
        });
    }
    b
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for t in TestDb::all().await {
            let batches: Vec<Batch> = (0..EVENTS / BATCH).map(|i| batch(i * BATCH)).collect();
            let started = Instant::now();
            for b in &batches {
                request_log::write_batch(&t.db, b).await.unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "request_log/{}: {EVENTS} events + {EVENTS} details in batches of {BATCH}: {:.2} s, {:.0} events/s, {:.1} µs/event",
                t.backend().as_str(),
                secs,
                EVENTS as f64 / secs,
                secs * 1e6 / EVENTS as f64
            );
        }
    });
}
