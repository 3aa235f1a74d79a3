//! Prometheus metrics: requests and latency by route and status, database pool, job queue and
//! request-log queue.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tessera_store::PoolStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    /// The route template (`/api/v1/groups/{id}`), never the raw path, to bound cardinality.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pool: Family<PoolLabels, Gauge>,
    jobs_queued: Gauge,
    request_log_queued: Gauge,
    request_log_dropped: Counter<u64, AtomicU64>,
    request_log_written: Counter<u64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms up to about 16 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        let jobs_queued = Gauge::default();
        let request_log_queued = Gauge::default();
        let request_log_dropped = Counter::default();
        let request_log_written = Counter::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        registry.register(
            "jobs_queued",
            "Background jobs waiting to run",
            jobs_queued.clone(),
        );
        registry.register(
            "request_log_queued",
            "Request log rows waiting to be written",
            request_log_queued.clone(),
        );
        registry.register(
            "request_log_dropped",
            "Request log rows dropped because the queue was full or the database failed",
            request_log_dropped.clone(),
        );
        registry.register(
            "request_log_written",
            "Request log rows written",
            request_log_written.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            pool,
            jobs_queued,
            request_log_queued,
            request_log_dropped,
            request_log_written,
        }
    }

    pub fn observe_request(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels {
            method,
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    pub fn request_log_dropped(&self, n: u64) {
        self.request_log_dropped.inc_by(n);
    }

    pub fn request_log_written(&self, n: u64) {
        self.request_log_written.inc_by(n);
    }

    pub fn set_request_log_queued(&self, n: usize) {
        self.request_log_queued.set(n as i64);
    }

    /// The OpenMetrics text exposition, with gauges refreshed from the given readings.
    pub fn render(&self, pool: PoolStats, jobs_queued: Option<i64>) -> String {
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(pool.idle as i64);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(pool.size.saturating_sub(pool.idle) as i64);
        self.pool
            .get_or_create(&PoolLabels { state: "max" })
            .set(pool.max as i64);
        if let Some(n) = jobs_queued {
            self.jobs_queued.set(n);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
