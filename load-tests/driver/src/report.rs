//! Latency histograms and the JSON line every scenario prints (the same
//! fields as `load-tests/lua/report.lua`).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies of one measured phase, in microseconds.
pub struct Latencies {
    histogram: Histogram<u64>,
    errors: u64,
}

impl Latencies {
    /// An empty record (1 µs to 60 s, three significant digits).
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
        })
    }

    /// Records one successful request.
    pub fn ok(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    /// Records one failed request.
    pub fn error(&mut self) {
        self.errors += 1;
    }

    /// Successful requests recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Failed requests recorded.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The `q`-quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// Mean in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.histogram.mean() / 1000.0
    }

    /// The report of a phase that lasted `elapsed`.
    pub fn report(&self, elapsed: Duration) -> Value {
        let requests = self.count() + self.errors;
        json!({
            "requests": requests,
            "throughput": round(self.count() as f64 / elapsed.as_secs_f64(), 1),
            "p50_ms": round(self.quantile_ms(0.50), 3),
            "p95_ms": round(self.quantile_ms(0.95), 3),
            "p99_ms": round(self.quantile_ms(0.99), 3),
            "errors": self.errors,
        })
    }
}

/// `value` rounded to `digits` decimals.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}
