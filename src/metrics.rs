//! Prometheus metrics, in a registry the application owns (`Metrics`, one
//! per running service, so two services in one process — as in the tests —
//! count apart): requests by route and status with their latency, task
//! durations by source and status, bytes downloaded, retries, bytes the
//! mirror served, and webhook attempts. Tasks by status and source, and
//! the notices waiting in the webhook outbox, are read from the store when
//! `/metrics` is scraped. Plain atomics and small locks; `render` writes
//! the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::{Source, TaskStatus};

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
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

/// Observations of a duration, in Prometheus' cumulative buckets.
#[derive(Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], seconds: f64) {
        self.buckets.resize(bounds.len(), 0);
        for (bucket, bound) in self.buckets.iter_mut().zip(bounds) {
            if seconds <= *bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }

    /// `{name}_bucket`, `_sum` and `_count` lines; `labels` is `k="v",…`.
    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        for (bound, n) in bounds.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Request latency bounds, in seconds.
const REQUEST_BOUNDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Task duration bounds (creation to end), in seconds.
const TASK_BOUNDS: [f64; 10] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 43200.0, 86400.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

/// Every metric this service counts itself.
#[derive(Default)]
pub struct Metrics {
    /// Bytes received from upstreams by downloads.
    pub bytes_downloaded: Counter,
    /// Attempts scheduled again after a transient failure.
    pub retries: Counter,
    /// File bytes the mirror has sent to clients.
    pub bytes_served: Counter,
    /// Webhook notices a receiver took (2xx).
    pub webhook_delivered: Counter,
    /// Webhook attempts that failed (another status, timeout, no connection).
    pub webhook_failed: Counter,
    /// Webhook notices given up after a day of failed attempts.
    pub webhook_abandoned: Counter,
    requests: Mutex<BTreeMap<&'static str, RouteStats>>,
    task_durations: Mutex<BTreeMap<(Source, TaskStatus), Histogram>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What the store tells at a scrape.
pub struct StoreGauges {
    /// Tasks by source and status.
    pub tasks: Vec<(Source, TaskStatus, u64)>,
    /// Notices waiting in the webhook outbox.
    pub pending_webhooks: u64,
}

impl Metrics {
    /// Records one answered request; `route` is its operation id.
    pub fn observe_request(&self, route: &'static str, status: u16, latency: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let stats = requests.entry(route).or_default();
        *stats.by_status.entry(status).or_default() += 1;
        stats
            .latency
            .observe(&REQUEST_BOUNDS, latency.as_secs_f64());
    }

    /// Records a task this node saw end, with the time from its creation.
    pub fn observe_task(&self, source: Source, status: TaskStatus, duration: Duration) {
        let mut durations = self
            .task_durations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let histogram = durations.entry((source, status)).or_default();
        histogram.observe(&TASK_BOUNDS, duration.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self, gauges: &StoreGauges) -> String {
        let mut out = String::new();
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        header(
            &mut out,
            "vectorize_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        for (route, stats) in requests.iter() {
            for (status, n) in &stats.by_status {
                let _ = writeln!(
                    out,
                    "vectorize_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let name = "vectorize_http_request_duration_seconds";
        header(&mut out, name, "histogram", "Time to answer a request.");
        for (route, stats) in requests.iter() {
            stats.latency.render(
                &mut out,
                name,
                &format!("route=\"{route}\""),
                &REQUEST_BOUNDS,
            );
        }
        drop(requests);
        header(
            &mut out,
            "vectorize_tasks",
            "gauge",
            "Upload tasks by source and status.",
        );
        for (source, status, n) in &gauges.tasks {
            let _ = writeln!(
                out,
                "vectorize_tasks{{source=\"{}\",status=\"{}\"}} {n}",
                source.as_str(),
                status.as_str()
            );
        }
        let name = "vectorize_task_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time from a task's creation to its end, for tasks that ended on this node.",
        );
        let durations = self
            .task_durations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for ((source, status), histogram) in durations.iter() {
            let labels = format!(
                "source=\"{}\",status=\"{}\"",
                source.as_str(),
                status.as_str()
            );
            histogram.render(&mut out, name, &labels, &TASK_BOUNDS);
        }
        drop(durations);
        let counters = [
            (
                "vectorize_downloaded_bytes_total",
                "Bytes received from upstreams.",
                &self.bytes_downloaded,
            ),
            (
                "vectorize_retries_total",
                "Attempts retried after a transient failure.",
                &self.retries,
            ),
            (
                "vectorize_mirror_served_bytes_total",
                "File bytes the mirror has sent.",
                &self.bytes_served,
            ),
            (
                "vectorize_webhook_deliveries_total",
                "Webhook notices a receiver took.",
                &self.webhook_delivered,
            ),
            (
                "vectorize_webhook_failures_total",
                "Webhook attempts that failed.",
                &self.webhook_failed,
            ),
            (
                "vectorize_webhook_abandoned_total",
                "Webhook notices given up after a day.",
                &self.webhook_abandoned,
            ),
        ];
        for (name, help, counter) in counters {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", counter.get());
        }
        header(
            &mut out,
            "vectorize_webhook_pending",
            "gauge",
            "Webhook notices waiting to be delivered.",
        );
        let _ = writeln!(out, "vectorize_webhook_pending {}", gauges.pending_webhooks);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two registries count apart, and a histogram's buckets are cumulative.
    #[test]
    fn each_registry_counts_its_own() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.retries.inc();
        a.observe_task(Source::Github, TaskStatus::Done, Duration::from_secs(3));
        let gauges = StoreGauges {
            tasks: vec![],
            pending_webhooks: 0,
        };
        let text = a.render(&gauges);
        assert!(text.contains("vectorize_retries_total 1\n"), "{text}");
        assert!(text.contains(
            "vectorize_task_duration_seconds_bucket{source=\"GITHUB\",status=\"DONE\",le=\"1\"} 0\n"
        ));
        assert!(text.contains(
            "vectorize_task_duration_seconds_bucket{source=\"GITHUB\",status=\"DONE\",le=\"5\"} 1\n"
        ));
        assert!(b.render(&gauges).contains("vectorize_retries_total 0\n"));
    }
}
