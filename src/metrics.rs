//! Prometheus metrics shared by the proxy, the controller and the admin server.
//!
//! Per-instance request counts are not counters of their own: [`InstanceCollector`] reads the
//! proxy's meters at scrape time, so a request is counted once, by the proxy's `fetch_add`
//! ([`Meter::forwarded`](crate::proxy::meter::Meter::forwarded), which never goes down).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// How long this start took to open the store and read every record.
    pub store_open_seconds: Gauge,
    /// 1 when this start found the store not closed cleanly and repaired the whole file.
    pub store_repaired: IntGauge,
    /// The kills of the last hour, for the web page (a counter cannot say when).
    recent_kills: Arc<RecentKills>,
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
        let store_open_seconds = Gauge::new(
            "autokill_store_open_seconds",
            "Time this start took to open the store and read every record, repair included.",
        )?;
        let store_repaired = IntGauge::new(
            "autokill_store_repaired",
            "1 if this start found the store not closed cleanly and checked and repaired the \
             whole file (a crash with store.quick_repair off), else 0.",
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
        registry.register(Box::new(store_open_seconds.clone()))?;
        registry.register(Box::new(store_repaired.clone()))?;
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
            store_open_seconds,
            store_repaired,
            recent_kills: Arc::default(),
        })
    }

    /// Counts a kill: `autokill_kills_total`, and the last hour's tally the web page shows.
    pub fn killed(&self, resource: &'static str, reason: &'static str) {
        self.kills.with_label_values(&[resource, reason]).inc();
        self.recent_kills
            .record(resource, reason, SystemTime::now());
    }

    /// Kills of the last hour (to the minute) by resource and reason, sorted.
    pub fn kills_last_hour(&self) -> Vec<KillCount> {
        self.recent_kills.last_hour(SystemTime::now())
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

/// How many `resource`s were killed for `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillCount {
    /// `instance`, `template` or `service_group`.
    pub resource: &'static str,
    /// Why (`num_requests`, `stopped_time`, `autodestroy`, `unused`, `empty`, ...).
    pub reason: &'static str,
    /// How many.
    pub count: u64,
}

/// The span [`Metrics::kills_last_hour`] covers.
const RECENT: Duration = Duration::from_secs(3600);

/// Kills in one-minute buckets, the last hour's only: memory stays bounded however many kills
/// there are (at most 61 buckets of a few label pairs). Written by the controller task, read by
/// the web page; the proxy never takes its lock.
#[derive(Debug, Default)]
struct RecentKills {
    /// (minute since the epoch, counts by (resource, reason)), oldest first.
    buckets: Mutex<VecDeque<(u64, Vec<KillCount>)>>,
}

fn minute(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

impl RecentKills {
    fn record(&self, resource: &'static str, reason: &'static str, now: SystemTime) {
        let now = minute(now);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.back().is_none_or(|(m, _)| *m != now) {
            buckets.push_back((now, Vec::new()));
        }
        let oldest = now.saturating_sub(RECENT.as_secs() / 60);
        while buckets.front().is_some_and(|(m, _)| *m < oldest) {
            buckets.pop_front();
        }
        if let Some((_, counts)) = buckets.back_mut() {
            match counts
                .iter_mut()
                .find(|c| c.resource == resource && c.reason == reason)
            {
                Some(c) => c.count += 1,
                None => counts.push(KillCount {
                    resource,
                    reason,
                    count: 1,
                }),
            }
        }
    }

    /// The buckets of the last 60 minutes and the current one, summed.
    fn last_hour(&self, now: SystemTime) -> Vec<KillCount> {
        let oldest = minute(now).saturating_sub(RECENT.as_secs() / 60 - 1);
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<KillCount> = Vec::new();
        for (_, counts) in buckets.iter().filter(|(m, _)| *m >= oldest) {
            for c in counts {
                match out
                    .iter_mut()
                    .find(|o| o.resource == c.resource && o.reason == c.reason)
                {
                    Some(o) => o.count += c.count,
                    None => out.push(c.clone()),
                }
            }
        }
        out.sort_by(|a, b| (a.resource, a.reason).cmp(&(b.resource, b.reason)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_kills_forget_what_is_older_than_an_hour() {
        let log = RecentKills::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000 * 60);
        log.record("instance", "num_requests", t0);
        log.record("instance", "num_requests", t0 + Duration::from_secs(30));
        log.record("template", "unused", t0 + Duration::from_secs(600));
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(
            log.last_hour(at(601)),
            vec![
                KillCount {
                    resource: "instance",
                    reason: "num_requests",
                    count: 2
                },
                KillCount {
                    resource: "template",
                    reason: "unused",
                    count: 1
                },
            ]
        );
        // An hour (to the minute) after the first two, only the template's is left.
        assert_eq!(log.last_hour(at(3600)).len(), 1);
        assert!(log.last_hour(at(3600 + 600)).is_empty());
        // Recording prunes: the deque never holds more than the hour's buckets.
        for m in 0..200 {
            log.record("instance", "empty", at(m * 60));
        }
        assert!(log.buckets.lock().map(|b| b.len()).unwrap_or(0) <= 61);
    }
}
