//! Prometheus view of a [`TlsServer`]: computed when scraped.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, Opts};

use crate::TlsServer;

/// `tls_certificate_days_remaining{certificate}` (`server`, and
/// `client_ca` for the first CA to expire) and `tls_reloads_total{result}`
/// (`ok`, `error`); the registry adds the service's prefix.
pub struct TlsMetrics {
    server: TlsServer,
    now: fn() -> i64,
    days: GaugeVec,
    reloads: IntCounterVec,
}

impl std::fmt::Debug for TlsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMetrics")
    }
}

impl TlsMetrics {
    /// Metrics of `server`; `now` gives the Unix time.
    pub fn new(server: TlsServer, now: fn() -> i64) -> Result<Self, prometheus::Error> {
        Ok(Self {
            server,
            now,
            days: GaugeVec::new(
                Opts::new(
                    "tls_certificate_days_remaining",
                    "Days until the served certificate (server) or the first client CA (client_ca) expires",
                ),
                &["certificate"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "tls_reloads_total",
                    "Changed TLS files loaded (ok) or refused (error)",
                ),
                &["result"],
            )?,
        })
    }
}

impl Collector for TlsMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.days
            .desc()
            .into_iter()
            .chain(self.reloads.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let status = self.server.status();
        let now = (self.now)();
        let days = |not_after: i64| (not_after - now) as f64 / 86_400.0;
        self.days
            .with_label_values(&["server"])
            .set(days(status.server_not_after));
        if let Some(ca) = status.client_ca_not_after {
            self.days.with_label_values(&["client_ca"]).set(days(ca));
        }
        for (result, total) in [("ok", status.reloads_ok), ("error", status.reloads_failed)] {
            let counter = self.reloads.with_label_values(&[result]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.days
            .collect()
            .into_iter()
            .chain(self.reloads.collect())
            .collect()
    }
}
