//! Prometheus metrics shared by the proxy, the controller and the admin server.
//!
//! Per-instance request counts are not counters of their own: [`InstanceCollector`] reads the
//! proxy's meters at scrape time, so a request is counted once, by the proxy's `fetch_add`
//! ([`Meter::forwarded`](crate::proxy::meter::Meter::forwarded), which never goes down).

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::controller::View;

/// Every metric autokill exports, registered in one [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` gathers.
    pub registry: Registry,
    /// Time from a request's arrival to the end of its response body, for forwarded requests.
    pub request_duration: Histogram,
    /// Upstream failures by kind (`connect_refused`, `connect_timeout`, `connect`, `timeout`, `protocol`).
    pub upstream_errors: IntCounterVec,
    /// Requests answered by the proxy itself, by reason (`no_route`, `unavailable`, `exhausted`,
    /// `bad_request`, `method_not_allowed`, `body_timeout`, `client_error`).
    pub refused: IntCounterVec,
    /// Failed accepts by listener (`proxy`, `admin`), e.g. out of file descriptors.
    pub accept_errors: IntCounterVec,
    /// Resources deleted by autokill or autodestroy, by resource and reason.
    pub kills: IntCounterVec,
    /// Kills that a delete lock held back, by resource and reason.
    pub kills_skipped: IntCounterVec,
    /// 1 when the last configuration (re)load succeeded, 0 when it failed.
    pub config_reload_ok: IntGauge,
    /// Unix time of the last successful configuration (re)load.
    pub config_reload_time: Gauge,
    /// Lifecycle timers pending in the timing wheel.
    pub timers_pending: IntGauge,
}

/// The label sets of `autokill_kills_total`: resource kinds.
pub const RESOURCES: [&str; 3] = ["instance", "template", "service_group"];

impl Metrics {
    /// Creates and registers every metric; `view` is what the instance collector reads at scrape time.
    pub fn new(view: Arc<ArcSwap<View>>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "autokill_request_duration_seconds",
                "Time from a forwarded request's arrival to the end of its response body.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "autokill_upstream_errors_total",
                "Requests that failed at the upstream, by kind.",
            ),
            &["kind"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "autokill_proxy_refused_total",
                "Requests the proxy answered itself without forwarding, by reason.",
            ),
            &["reason"],
        )?;
        let accept_errors = IntCounterVec::new(
            Opts::new(
                "autokill_accept_errors_total",
                "Connections a listener failed to accept (e.g. out of file descriptors), by listener.",
            ),
            &["listener"],
        )?;
        let kills = IntCounterVec::new(
            Opts::new(
                "autokill_kills_total",
                "Resources deleted by autokill or autodestroy, by resource and reason.",
            ),
            &["resource", "reason"],
        )?;
        let kills_skipped = IntCounterVec::new(
            Opts::new(
                "autokill_kills_skipped_total",
                "Kills held back by a delete lock, by resource and reason.",
            ),
            &["resource", "reason"],
        )?;
        let config_reload_ok = IntGauge::new(
            "autokill_config_last_reload_successful",
            "1 if the last configuration load or reload succeeded, 0 if it failed.",
        )?;
        let config_reload_time = Gauge::new(
            "autokill_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load or reload.",
        )?;
        let timers_pending = IntGauge::new(
            "autokill_timers_pending",
            "Lifecycle timers pending in the timing wheel.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "autokill_build_info",
                "Always 1; the labels tell the build.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        registry.register(Box::new(kills.clone()))?;
        registry.register(Box::new(kills_skipped.clone()))?;
        registry.register(Box::new(config_reload_ok.clone()))?;
        registry.register(Box::new(config_reload_time.clone()))?;
        registry.register(Box::new(timers_pending.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(InstanceCollector::new(view)?))?;
        Ok(Metrics {
            registry,
            request_duration,
            upstream_errors,
            refused,
            accept_errors,
            kills,
            kills_skipped,
            config_reload_ok,
            config_reload_time,
            timers_pending,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let families = self.registry.gather();
        if let Err(err) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(%err, "encoding metrics failed");
        }
        out
    }
}

/// Reads per-instance request counts and instance states from the controller's published [`View`]
/// at scrape time. A deleted instance is not in the view, so its series disappear with it.
struct InstanceCollector {
    view: Arc<ArcSwap<View>>,
    descs: Vec<Desc>,
}

const REQUESTS: &str = "autokill_instance_requests_total";
const REQUESTS_HELP: &str = "Requests forwarded to the instance, read from the proxy's meter.";
const STATES: &str = "autokill_instances";
const STATES_HELP: &str = "Instances by state.";

impl InstanceCollector {
    fn new(view: Arc<ArcSwap<View>>) -> Result<Self, prometheus::Error> {
        let descs = vec![
            Desc::new(
                REQUESTS.into(),
                REQUESTS_HELP.into(),
                vec!["instance_id".into(), "name".into()],
                Default::default(),
            )?,
            Desc::new(
                STATES.into(),
                STATES_HELP.into(),
                vec!["state".into()],
                Default::default(),
            )?,
        ];
        Ok(InstanceCollector { view, descs })
    }
}

impl Collector for InstanceCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = self.view.load();
        let requests =
            IntCounterVec::new(Opts::new(REQUESTS, REQUESTS_HELP), &["instance_id", "name"]);
        let states = IntGaugeVec::new(Opts::new(STATES, STATES_HELP), &["state"]);
        let (Ok(requests), Ok(states)) = (requests, states) else {
            return Vec::new();
        };
        for state in crate::controller::InstanceState::ALL {
            states.with_label_values(&[state.as_str()]).set(0);
        }
        let now = std::time::SystemTime::now();
        for inst in &view.instances {
            states.with_label_values(&[inst.state.as_str()]).inc();
            if carries_series(inst, now) {
                let id = inst.id.to_string();
                requests
                    .with_label_values(&[id.as_str(), &inst.name])
                    .inc_by(inst.meter.forwarded());
            }
        }
        let mut out = requests.collect();
        out.extend(states.collect());
        out
    }
}

/// How long a stopped instance keeps its per-instance series, so that its last count is scraped.
pub const STOPPED_SERIES: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether an instance has an `autokill_instance_requests_total` series: one that can serve
/// (starting, running, draining, stopping), or that served and stopped less than
/// [`STOPPED_SERIES`] ago. Templates, never-served and long-stopped instances have none, so a
/// node with 100,000 stopped instances does not export 100,000 idle series.
fn carries_series(inst: &crate::controller::InstanceView, now: std::time::SystemTime) -> bool {
    use crate::controller::InstanceState as S;
    match inst.state {
        S::Starting | S::Running | S::Draining | S::Stopping => true,
        S::Stopped => {
            inst.meter.forwarded() > 0
                && inst
                    .stopped_at
                    .is_none_or(|t| now.duration_since(t).unwrap_or_default() < STOPPED_SERIES)
        }
        S::Template | S::Deleted => false,
    }
}
