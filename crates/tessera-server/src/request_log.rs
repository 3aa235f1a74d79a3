//! The request log's queue and writer.
//!
//! The middleware hands each finished request to [`RequestLogSink::submit`], which never waits:
//! it puts the raw row on a bounded queue (a full queue drops the row and counts it in
//! `tessera_request_log_dropped_total`). The [`RequestLogWriter`] task redacts headers and
//! bodies, then writes whatever has accumulated in one transaction, so under load each database
//! round trip carries many rows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tessera_domain::redact;
use tessera_store::Db;
use tessera_store::request_log::{self, ApiEvent, ApiEventDetail, Batch, LogEvent};
use tokio::sync::{mpsc, watch};

use crate::config::RequestLogConfig;
use crate::metrics::Metrics;

/// What the middleware saw, before redaction.
pub struct RawDetail {
    pub request_headers: HeaderMap,
    pub request_body: Option<Bytes>,
    pub response_headers: HeaderMap,
    pub response_body: Option<Bytes>,
}

pub enum LogRecord {
    Api(Box<(ApiEvent, Option<RawDetail>)>),
    Log(Box<LogEvent>),
}

#[derive(Clone)]
pub struct RequestLogSink {
    tx: mpsc::Sender<LogRecord>,
    metrics: Arc<Metrics>,
}

impl RequestLogSink {
    /// Queues a record without waiting.
    pub fn submit(&self, record: LogRecord) {
        if let Err(e) = self.tx.try_send(record) {
            self.metrics.request_log_dropped(1);
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!("request log queue is full; a row was dropped");
            }
        }
    }
}

pub struct RequestLogWriter {
    db: Db,
    rx: mpsc::Receiver<LogRecord>,
    metrics: Arc<Metrics>,
    body_capture_bytes: usize,
}

pub fn channel(
    db: Db,
    config: &RequestLogConfig,
    metrics: Arc<Metrics>,
) -> (RequestLogSink, RequestLogWriter) {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    (
        RequestLogSink {
            tx,
            metrics: metrics.clone(),
        },
        RequestLogWriter {
            db,
            rx,
            metrics,
            body_capture_bytes: config.body_capture_bytes,
        },
    )
}

/// Rows per transaction at most.
const MAX_BATCH: usize = 2000;

/// After the first row of a batch arrives, the writer waits this long for more, so that under
/// load it writes few large transactions and wakes up rarely, instead of once per request.
const LINGER: Duration = Duration::from_millis(25);

/// With this many rows already waiting the writer does not linger: it is behind.
const LINGER_UNLESS_QUEUED: usize = 256;

impl RequestLogWriter {
    /// Writes until `stop` turns true, then drains what is queued and returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let first = tokio::select! {
                record = self.rx.recv() => record,
                _ = stop.changed() => None,
            };
            let Some(first) = first else { break };
            if self.rx.len() < LINGER_UNLESS_QUEUED && !*stop.borrow() {
                tokio::select! {
                    _ = tokio::time::sleep(LINGER) => {}
                    _ = stop.changed() => {}
                }
            }
            let mut records = vec![first];
            while records.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(r) => records.push(r),
                    Err(_) => break,
                }
            }
            self.write(records).await;
            if *stop.borrow() {
                break;
            }
        }
        // Drain: everything acknowledged to the middleware before shutdown is written.
        self.rx.close();
        let mut rest = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            rest.push(r);
            if rest.len() == MAX_BATCH {
                self.write(std::mem::take(&mut rest)).await;
            }
        }
        self.write(rest).await;
    }

    async fn write(&self, records: Vec<LogRecord>) {
        if records.is_empty() {
            return;
        }
        let count = records.len() as u64;
        let batch = self.redact(records);
        let mut attempt = 0;
        loop {
            match request_log::write_batch(&self.db, &batch).await {
                Ok(()) => {
                    self.metrics.request_log_written(count);
                    break;
                }
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "request log write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = count, "request log write failed; rows dropped");
                    self.metrics.request_log_dropped(count);
                    break;
                }
            }
        }
        self.metrics.set_request_log_queued(self.rx.len());
    }

    fn redact(&self, records: Vec<LogRecord>) -> Batch {
        let mut batch = Batch::default();
        for record in records {
            match record {
                LogRecord::Api(boxed) => {
                    let (event, detail) = *boxed;
                    if let Some(d) = detail {
                        batch.details.push(ApiEventDetail {
                            api_event_id: event.id.clone(),
                            request_headers: headers_json(&d.request_headers),
                            request_body: d
                                .request_body
                                .map(|b| self.body_text(&d.request_headers, &b)),
                            request_body_truncated: false,
                            response_headers: headers_json(&d.response_headers),
                            response_body: d
                                .response_body
                                .map(|b| self.body_text(&d.response_headers, &b)),
                            response_body_truncated: false,
                        });
                        let detail = batch.details.last_mut().expect("just pushed");
                        detail.request_body_truncated =
                            truncate(&mut detail.request_body, self.body_capture_bytes);
                        detail.response_body_truncated =
                            truncate(&mut detail.response_body, self.body_capture_bytes);
                    }
                    batch.api_events.push(event);
                }
                LogRecord::Log(event) => batch.log_events.push(*event),
            }
        }
        batch
    }

    fn body_text(&self, headers: &HeaderMap, body: &Bytes) -> String {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        redact::redact_body(content_type, body)
    }
}

/// Headers as a JSON object of redacted values (repeated headers become arrays), written
/// straight into one buffer: this runs for every logged request.
fn headers_json(headers: &HeaderMap) -> String {
    let mut out = Vec::with_capacity(64 * headers.len() + 2);
    out.push(b'{');
    for (i, name) in headers.keys().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, name.as_str());
        out.push(b':');
        let values = headers.get_all(name);
        let repeated = values.iter().nth(1).is_some();
        if repeated {
            out.push(b'[');
        }
        for (j, value) in values.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            let text = String::from_utf8_lossy(value.as_bytes());
            write_json_str(&mut out, &redact::redact_header(name.as_str(), &text));
        }
        if repeated {
            out.push(b']');
        }
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Cuts `text` to at most `max` bytes on a character boundary; returns whether it was cut.
fn truncate(text: &mut Option<String>, max: usize) -> bool {
    let Some(t) = text else { return false };
    if t.len() <= max {
        return false;
    }
    let mut cut = max;
    while !t.is_char_boundary(cut) {
        cut -= 1;
    }
    t.truncate(cut);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut t = Some("aé".to_owned());
        assert!(truncate(&mut t, 2));
        assert_eq!(t.as_deref(), Some("a"));
        let mut short = Some("abc".to_owned());
        assert!(!truncate(&mut short, 3));
    }

    #[test]
    fn headers_are_redacted_and_grouped() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append("set-cookie", "b=2".parse().unwrap());
        h.insert("accept", "text/plain".parse().unwrap());
        let v: serde_json::Value = serde_json::from_str(&headers_json(&h)).unwrap();
        assert_eq!(v["authorization"], redact::REDACTED);
        assert_eq!(
            v["set-cookie"],
            serde_json::json!([redact::REDACTED, redact::REDACTED])
        );
        assert_eq!(v["accept"], "text/plain");
    }
}
