//! Prometheus metrics: requests by route and status, request latency,
//! bytes downloaded, retries and bytes the mirror served. Tasks by status
//! are read from the store when `/metrics` is scraped. Plain atomics and
//! one small lock; rendered in the Prometheus text format by `render`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bytes received from upstreams by downloads.
pub static BYTES_DOWNLOADED: Counter = Counter::new();
/// Attempts scheduled again after a transient failure.
pub static RETRIES: Counter = Counter::new();
/// File bytes the mirror has sent to clients.
pub static BYTES_SERVED: Counter = Counter::new();

const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

static REQUESTS: Mutex<BTreeMap<&'static str, RouteStats>> = Mutex::new(BTreeMap::new());

/// Records one answered request; `route` is its operation id.
pub fn observe_request(route: &'static str, status: u16, latency: Duration) {
    let seconds = latency.as_secs_f64();
    let mut requests = REQUESTS.lock().unwrap_or_else(|p| p.into_inner());
    let stats = requests.entry(route).or_default();
    *stats.by_status.entry(status).or_default() += 1;
    for (bucket, bound) in stats.buckets.iter_mut().zip(BUCKETS) {
        if seconds <= bound {
            *bucket += 1;
        }
    }
    stats.count += 1;
    stats.sum_seconds += seconds;
}

/// The text exposition of every metric; `tasks` is the count per status.
pub fn render(tasks: &[(&str, u64)]) -> String {
    let mut out = String::new();
    let requests = REQUESTS.lock().unwrap_or_else(|p| p.into_inner());
    out.push_str(
        "# HELP vectorize_http_requests_total HTTP requests answered, by route and status.\n",
    );
    out.push_str("# TYPE vectorize_http_requests_total counter\n");
    for (route, stats) in requests.iter() {
        for (status, n) in &stats.by_status {
            let _ = writeln!(
                out,
                "vectorize_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP vectorize_http_request_duration_seconds Time to answer a request.\n");
    out.push_str("# TYPE vectorize_http_request_duration_seconds histogram\n");
    for (route, stats) in requests.iter() {
        for (bound, n) in BUCKETS.iter().zip(stats.buckets) {
            let _ = writeln!(
                out,
                "vectorize_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
            );
        }
        let name = "vectorize_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
            stats.count
        );
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", stats.sum_seconds);
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", stats.count);
    }
    drop(requests);
    out.push_str("# HELP vectorize_tasks Upload tasks by status.\n# TYPE vectorize_tasks gauge\n");
    for (status, n) in tasks {
        let _ = writeln!(out, "vectorize_tasks{{status=\"{status}\"}} {n}");
    }
    out.push_str("# HELP vectorize_downloaded_bytes_total Bytes received from upstreams.\n");
    out.push_str("# TYPE vectorize_downloaded_bytes_total counter\n");
    let _ = writeln!(
        out,
        "vectorize_downloaded_bytes_total {}",
        BYTES_DOWNLOADED.get()
    );
    out.push_str("# HELP vectorize_retries_total Attempts retried after a transient failure.\n");
    out.push_str("# TYPE vectorize_retries_total counter\n");
    let _ = writeln!(out, "vectorize_retries_total {}", RETRIES.get());
    out.push_str("# HELP vectorize_mirror_served_bytes_total File bytes the mirror has sent.\n");
    out.push_str("# TYPE vectorize_mirror_served_bytes_total counter\n");
    let _ = writeln!(
        out,
        "vectorize_mirror_served_bytes_total {}",
        BYTES_SERVED.get()
    );
    out
}
