//! `/metrics` in Prometheus' text format: requests, tokens, queue depth and busy slots per
//! model (from its engine's counters; models on one base share that engine's slots), and
//! histograms of the time to first token and the
//! time between tokens.

use crate::model::ServedModel;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct Histogram {
    /// Upper bounds of the buckets, in seconds.
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            acc += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

pub struct Metrics {
    pub ttft: Histogram,
    pub itl: Histogram,
    /// HTTP requests answered with an error, by status.
    errors: [AtomicU64; 7],
}

const ERROR_STATUSES: [u16; 7] = [400, 401, 403, 404, 413, 429, 503];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ttft: Histogram::new(&[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            itl: Histogram::new(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            errors: Default::default(),
        }
    }
}

impl Metrics {
    pub fn error(&self, status: u16) {
        if let Some(i) = ERROR_STATUSES.iter().position(|&s| s == status) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, models: &[std::sync::Arc<ServedModel>]) -> String {
        let mut out = String::new();
        type Get = fn(&crate::engine::Counts) -> u64;
        let per_model: [(&str, &str, &str, Get); 7] = [
            (
                "cria_requests_total",
                "counter",
                "Requests the engine started.",
                |s| s.requests.load(Ordering::Relaxed),
            ),
            (
                "cria_prompt_tokens_total",
                "counter",
                "Prompt tokens of finished requests.",
                |s| s.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "cria_completion_tokens_total",
                "counter",
                "Tokens generated.",
                |s| s.completion_tokens.load(Ordering::Relaxed),
            ),
            (
                "cria_cached_prompt_tokens_total",
                "counter",
                "Prompt tokens whose KV came from the prefix cache.",
                |s| s.cached_tokens.load(Ordering::Relaxed),
            ),
            (
                "cria_cancelled_total",
                "counter",
                "Requests whose client went away.",
                |s| s.cancelled.load(Ordering::Relaxed),
            ),
            (
                "cria_queue_depth",
                "gauge",
                "Requests waiting for a slot.",
                |s| s.queued.load(Ordering::Relaxed) as u64,
            ),
            (
                "cria_busy_slots",
                "gauge",
                "Slots running a sequence.",
                |s| s.busy.load(Ordering::Relaxed) as u64,
            ),
        ];
        for (name, kind, help, get) in per_model {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for m in models {
                let v = get(m.counts());
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {v}", escape(&m.id));
            }
        }
        let name = "cria_http_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests answered with an error.\n# TYPE {name} counter"
        );
        for (s, c) in ERROR_STATUSES.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "{name}{{status=\"{s}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        self.ttft.write(
            &mut out,
            "cria_time_to_first_token_seconds",
            "From a request's arrival to its first token.",
        );
        self.itl.write(
            &mut out,
            "cria_inter_token_latency_seconds",
            "Between consecutive tokens of a reply.",
        );
        out
    }
}

/// A label value as Prometheus' text format writes it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
