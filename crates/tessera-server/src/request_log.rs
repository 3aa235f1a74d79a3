//! The request log's queue and writer.
//!
//! The middleware hands each finished request to [`RequestLogSink::submit`], which never waits:
//! it puts the raw row on a bounded queue. A full queue drops the row; a queue holding more body
//! bytes than its budget keeps the row but not its bodies; both are counted in
//! `tessera_request_log_dropped_total`. The [`RequestLogWriter`] task redacts headers and bodies
//! (on a blocking thread, off the async workers), then writes whatever has accumulated in one
//! transaction, so under load each database round trip carries many rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tessera_domain::redact;
use tessera_store::request_log::{self, ApiEvent, ApiEventDetail, Batch, LogEvent};
use tessera_store::{Db, StoreError};
use tokio::sync::{mpsc, watch};

use crate::config::RequestLogConfig;
use crate::metrics::Metrics;

/// What the middleware saw of a request and its response, before redaction.
pub struct RawDetail {
    pub request_headers: HeaderMap,
    pub request_body: Option<Bytes>,
    pub response_headers: HeaderMap,
    pub response_body: Option<Bytes>,
}

impl RawDetail {
    fn body_bytes(&self) -> usize {
        self.request_body.as_ref().map_or(0, Bytes::len)
            + self.response_body.as_ref().map_or(0, Bytes::len)
    }
}

pub enum LogRecord {
    Api(Box<(ApiEvent, RawDetail)>),
    Log(Box<LogEvent>),
}

/// Stored in place of bodies shed because the queue was over its memory budget.
const BODIES_SHED: &str = "[body not kept: the request log queue was over its memory budget]";

#[derive(Clone)]
pub struct RequestLogSink {
    tx: mpsc::Sender<LogRecord>,
    metrics: Arc<Metrics>,
    queued_body_bytes: Arc<AtomicUsize>,
    max_body_bytes: usize,
}

impl RequestLogSink {
    /// Queues a record without waiting.
    pub fn submit(&self, mut record: LogRecord) {
        if let LogRecord::Api(boxed) = &mut record {
            let detail = &mut boxed.1;
            let bytes = detail.body_bytes();
            let queued = self.queued_body_bytes.fetch_add(bytes, Ordering::Relaxed);
            if bytes > 0 && queued + bytes > self.max_body_bytes {
                self.queued_body_bytes.fetch_sub(bytes, Ordering::Relaxed);
                let shed = Bytes::from_static(BODIES_SHED.as_bytes());
                detail.request_body = detail.request_body.as_ref().map(|_| shed.clone());
                detail.response_body = detail.response_body.as_ref().map(|_| shed.clone());
                self.queued_body_bytes
                    .fetch_add(detail.body_bytes(), Ordering::Relaxed);
                self.metrics.request_log_dropped(1);
            }
        }
        if let Err(e) = self.tx.try_send(record) {
            let (mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) = &e;
            release(&self.queued_body_bytes, r);
            self.metrics.request_log_dropped(1);
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!("request log queue is full; a row was dropped");
            }
        }
    }
}

/// Gives back the body bytes a record held in the queue's budget.
fn release(queued: &AtomicUsize, record: &LogRecord) {
    if let LogRecord::Api(boxed) = record {
        queued.fetch_sub(boxed.1.body_bytes(), Ordering::Relaxed);
    }
}

pub struct RequestLogWriter {
    db: Db,
    rx: mpsc::Receiver<LogRecord>,
    metrics: Arc<Metrics>,
    body_capture_bytes: usize,
    queued_body_bytes: Arc<AtomicUsize>,
}

pub fn channel(
    db: Db,
    config: &RequestLogConfig,
    metrics: Arc<Metrics>,
) -> (RequestLogSink, RequestLogWriter) {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let queued_body_bytes = Arc::new(AtomicUsize::new(0));
    (
        RequestLogSink {
            tx,
            metrics: metrics.clone(),
            queued_body_bytes: queued_body_bytes.clone(),
            max_body_bytes: config.queue_max_body_bytes,
        },
        RequestLogWriter {
            db,
            rx,
            metrics,
            body_capture_bytes: config.body_capture_bytes,
            queued_body_bytes,
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
        for r in &records {
            release(&self.queued_body_bytes, r);
        }
        let count = records.len() as u64;
        let capture = self.body_capture_bytes;
        // Redaction parses bodies: keep that CPU work off the async worker threads.
        let batch = match tokio::task::spawn_blocking(move || redact_records(records, capture))
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %redact::redact_text(&e.to_string()), rows = count, "request log redaction failed; rows dropped");
                self.metrics.request_log_dropped(count);
                return;
            }
        };
        match self.write_with_retries(&batch).await {
            Ok(()) => self.metrics.request_log_written(count),
            Err(e) if e.is_rejected_data() && count > 1 => {
                let (written, dropped) = self.write_one_by_one(batch).await;
                tracing::error!(error = %redact::redact_text(&e.to_string()), written, dropped, "request log batch refused; wrote its rows one by one");
                self.metrics.request_log_written(written);
                self.metrics.request_log_dropped(dropped);
            }
            Err(e) => {
                tracing::error!(error = %redact::redact_text(&e.to_string()), rows = count, "request log write failed; rows dropped");
                self.metrics.request_log_dropped(count);
            }
        }
        self.metrics.set_request_log_queued(self.rx.len());
    }

    /// Writes a batch, retrying transient failures. Returns the last error when it gives up.
    async fn write_with_retries(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match request_log::write_batch(&self.db, batch).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 && !e.is_rejected_data() => {
                    tracing::warn!(error = %redact::redact_text(&e.to_string()), attempt, "request log write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the rows of a batch the database refused one at a time, so one bad row does not
    /// take its neighbours with it. Stops at the first failure that is not about the data
    /// (the database is gone: trying row after row would only wait out timeouts).
    async fn write_one_by_one(&self, batch: Batch) -> (u64, u64) {
        let Batch {
            api_events,
            details,
            log_events,
        } = batch;
        let total = (api_events.len() + log_events.len()) as u64;
        let mut details: std::collections::HashMap<String, ApiEventDetail> = details
            .into_iter()
            .map(|d| (d.api_event_id.clone(), d))
            .collect();
        let singles = api_events
            .into_iter()
            .map(|e| Batch {
                details: details.remove(&e.id).into_iter().collect(),
                api_events: vec![e],
                log_events: vec![],
            })
            .chain(log_events.into_iter().map(|l| Batch {
                log_events: vec![l],
                ..Batch::default()
            }));
        let (mut written, mut dropped) = (0, 0);
        for single in singles {
            match request_log::write_batch(&self.db, &single).await {
                Ok(()) => written += 1,
                Err(e) if e.is_rejected_data() => {
                    tracing::error!(error = %redact::redact_text(&e.to_string()), "request log row refused by the database; dropped");
                    dropped += 1;
                }
                Err(e) => {
                    tracing::error!(error = %redact::redact_text(&e.to_string()), "request log database unavailable; rows dropped");
                    return (written, total - written);
                }
            }
        }
        (written, dropped)
    }
}

fn redact_records(records: Vec<LogRecord>, body_capture_bytes: usize) -> Batch {
    let mut batch = Batch::default();
    for record in records {
        match record {
            LogRecord::Api(boxed) => {
                let (event, d) = *boxed;
                let body = |headers: &HeaderMap, bytes: Option<Bytes>| {
                    // PostgreSQL refuses NUL in text; a body may carry one.
                    let mut text = bytes.map(|b| body_text(headers, &b)).map(|t| {
                        if t.contains('\0') {
                            t.replace('\0', "\u{fffd}")
                        } else {
                            t
                        }
                    });
                    let truncated = truncate(&mut text, body_capture_bytes);
                    (text, truncated)
                };
                let (request_body, request_body_truncated) =
                    body(&d.request_headers, d.request_body);
                let (response_body, response_body_truncated) =
                    body(&d.response_headers, d.response_body);
                batch.details.push(ApiEventDetail {
                    api_event_id: event.id.clone(),
                    request_headers: headers_json(&d.request_headers),
                    request_body,
                    request_body_truncated,
                    response_headers: headers_json(&d.response_headers),
                    response_body,
                    response_body_truncated,
                });
                batch.api_events.push(event);
            }
            LogRecord::Log(event) => {
                let mut event = *event;
                // PostgreSQL refuses NUL in text; a panic message could carry one.
                event.message = event.message.replace('\0', "\u{fffd}");
                event.detail = event.detail.map(|d| d.replace('\0', "\u{fffd}"));
                batch.log_events.push(event);
            }
        }
    }
    batch
}

fn body_text(headers: &HeaderMap, body: &Bytes) -> String {
    if body.as_ref() == BODIES_SHED.as_bytes() {
        return BODIES_SHED.to_owned();
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    redact::redact_body(content_type, body)
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
