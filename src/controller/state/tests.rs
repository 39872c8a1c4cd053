//! `State::apply` driven directly: no runtime, no clock, no I/O.

use super::*;
use crate::config::{
    AdminConfig, Defaults, ImageConfig, ProxyConfig, RuntimeConfig, RuntimeKind, StoreConfig,
};
use crate::controller::api::{
    ApiError, AutokillSpec, Call, GroupChoice, GroupPatch, InstancePatch, NewGroup, NewInstance,
    NewTemplate, Ref, Reply, TemplatePatch,
};
use crate::controller::{GroupView, InstanceView};
use crate::proxy::route::{Route, Running};

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn at(ms: u64) -> SystemTime {
    T0 + Duration::from_millis(ms)
}

fn config() -> Config {
    let mut images = std::collections::BTreeMap::new();
    images.insert(
        "hello".to_owned(),
        ImageConfig {
            image: None,
            command: vec!["x".into()],
            env: Default::default(),
            port: None,
        },
    );
    Config {
        proxy: ProxyConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            workers: 1,
            base_domain: "localhost".into(),
            header_read_timeout: Duration::from_secs(1),
            upstream_connect_timeout: Duration::from_secs(1),
            upstream_timeout: Duration::from_secs(1),
            pool_idle_per_instance: 4,
            idle_timeout: Duration::from_secs(1),
            max_connections_per_worker: 1,
            request_body_timeout: Duration::from_secs(1),
            response_write_timeout: Duration::from_secs(1),
            balance: Balance::RoundRobin,
            max_header_bytes: 64 * 1024,
            max_header_fields: 100,
            max_uri_bytes: 8192,
            max_body_bytes: None,
            max_requests_per_connection: 0,
        },
        admin: AdminConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            token: None,
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: 1,
            api_users: Vec::new(),
            max_body_size: 1 << 20,
        },
        store: StoreConfig {
            path: "unused".into(),
            quick_repair: true,
        },
        runtime: RuntimeConfig {
            kind: RuntimeKind::Process,
            stop_grace: Duration::from_secs(1),
            start_timeout: Duration::from_secs(1),
            images,
            default_port: None,
            max_concurrent_kills: 64,
            max_concurrent_starts: 16,
            controller_nice: 10,
            stopping_cgroup: None,
        },
        defaults: Defaults {
            drain_timeout: Duration::from_secs(10),
        },
        autokill: Default::default(),
        service_groups: vec![],
        instances: vec![],
        shutdown: Default::default(),
    }
}

/// A harness around `State` that keeps the API answers and the effects.
struct H {
    /// The configuration the state was made with (and is made with again after a crash).
    config: Config,
    s: State,
    fx: Vec<Effect>,
    /// What the store holds: every committed record.
    disk: std::collections::HashMap<Uuid, crate::store::InstanceRecord>,
    groups_disk: std::collections::HashMap<Uuid, crate::store::GroupRecord>,
}

impl H {
    fn new() -> H {
        H::with(config())
    }

    fn with(config: Config) -> H {
        H {
            s: State::new(&config, 1),
            config,
            fx: Vec::new(),
            disk: Default::default(),
            groups_disk: Default::default(),
        }
    }

    /// A crash and a new start: the state is rebuilt from what was committed, and the meters
    /// start again at their stored reservations, as `controller::run` does.
    fn crash_and_recover(&mut self, now: SystemTime) {
        let snapshot = self.snapshot();
        self.s = State::new(&self.config, 1);
        self.fx = self.s.recover(snapshot, now);
        self.committed(now);
    }

    /// What the store holds, as a start reads it.
    fn snapshot(&self) -> crate::store::Snapshot {
        crate::store::Snapshot {
            instances: self.disk.values().cloned().collect(),
            groups: self.groups_disk.values().cloned().collect(),
        }
    }

    /// The durable ceiling of requests forwarded to `id`.
    fn stored_reserved(&self, id: Uuid) -> u64 {
        self.disk.get(&id).map_or(0, |r| r.reserved)
    }

    fn apply(&mut self, cmd: Command, now: SystemTime) -> &[Effect] {
        self.fx = self.s.apply(cmd, now);
        self.committed(now);
        &self.fx
    }

    /// What the controller task does once a batch is committed, for the meters: they learn new
    /// limits and reservations (and a limit found spent is reported back, as the task does).
    fn committed(&mut self, now: SystemTime) {
        for change in self.s.changes() {
            match change {
                crate::store::Change::PutInstance(r) => {
                    self.disk.insert(r.id, r);
                }
                crate::store::Change::DeleteInstance(id) => {
                    self.disk.remove(&id);
                }
                crate::store::Change::PutGroup(r) => {
                    self.groups_disk.insert(r.id, r);
                }
                crate::store::Change::DeleteGroup(id) => {
                    self.groups_disk.remove(&id);
                }
            }
        }
        self.s.committed();
        let mut reached = Vec::new();
        for e in &self.fx {
            match e {
                Effect::Reserved {
                    meter,
                    reserved,
                    refill_at,
                } => meter.set_reserved(*reserved, *refill_at),
                Effect::SetLimit {
                    id,
                    meter,
                    limit,
                    held,
                } => {
                    let spent = meter.set_limit_spent(*limit, *held);
                    if spent && !held {
                        reached.push(*id);
                    }
                }
                _ => {}
            }
        }
        for id in reached {
            let more = self.s.apply(Command::LimitReached { id }, now);
            self.fx.extend(more);
        }
    }

    /// Requests through the proxy, as a worker admits them: each reports what the proxy reports
    /// (the last request of the budget, a reservation to raise). Returns how many were forwarded.
    fn serve(&mut self, id: Uuid, requests: u64, now: SystemTime) -> u64 {
        use crate::proxy::meter::Admission;
        let meter = Arc::clone(&self.s.instances[&id].meter);
        let mut forwarded = 0;
        for _ in 0..requests {
            let event = match meter.admit() {
                Admission::Admitted => None,
                Admission::Refused => continue,
                Admission::Last => Some(Command::LimitReached { id }),
                Admission::Refill => Some(Command::Reserve { id }),
                Admission::Wait(_) => {
                    // The proxy asks and waits; here the controller answers at once.
                    self.apply(Command::Reserve { id }, now);
                    match meter.admit() {
                        Admission::Admitted | Admission::Refill => None,
                        Admission::Last => Some(Command::LimitReached { id }),
                        Admission::Refused | Admission::Wait(_) => continue,
                    }
                }
            };
            forwarded += 1;
            // Never forwarded beyond what is durable (SPEC: exact across a crash), up to the
            // limit (a delete lock serves past it).
            let (reserved, limit) = (
                self.stored_reserved(id),
                self.s.instances[&id].autokill.num_requests,
            );
            assert!(
                limit == 0 || meter.count().min(limit) <= reserved,
                "forwarded {} with {reserved} reserved",
                meter.count()
            );
            if let Some(cmd) = event {
                self.apply(cmd, now);
            }
        }
        forwarded
    }

    fn call(&mut self, call: Call, now: SystemTime) -> Result<Reply, ApiError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.fx = self.s.apply(Command::Api(call, tx), now);
        self.committed(now);
        // The reply is an effect: carried out after the publish before it.
        let mut reply = None;
        for e in self.fx.drain(..).collect::<Vec<_>>() {
            match e {
                Effect::Reply(to, r) => {
                    let _ = to.send(*r);
                }
                other => self.fx.push(other),
            }
        }
        if let Ok(r) = rx.try_recv() {
            reply = Some(r);
        }
        reply.unwrap_or_else(|| Err(ApiError::bad_request("no reply")))
    }

    /// The HTTP status a refused call answers with (`Ok(())` when it succeeded).
    fn status(&mut self, call: Call, now: SystemTime) -> Result<(), u16> {
        self.call(call, now).map(|_| ()).map_err(|e| e.status)
    }

    fn instance(&mut self, new: NewInstance, now: SystemTime) -> Uuid {
        match self.call(Call::CreateInstance(new), now) {
            Ok(Reply::Instance(v)) => v.id,
            other => panic!("create failed: {other:?}"),
        }
    }

    fn state(&self, id: Uuid) -> Option<InstanceState> {
        self.s.instances.get(&id).map(|i| i.state)
    }

    fn has(&self, pred: impl Fn(&Effect) -> bool) -> bool {
        self.fx.iter().any(pred)
    }

    fn armed(&self, key: TimerKey) -> Option<SystemTime> {
        self.fx.iter().rev().find_map(|e| match e {
            Effect::Arm(k, t) if *k == key => Some(*t),
            _ => None,
        })
    }

    fn running(&mut self, id: Uuid, now: SystemTime) {
        let attempt = self.s.instances[&id].attempt;
        self.apply(
            Command::Started {
                id,
                attempt,
                result: Ok(([127, 0, 0, 1], 9).into()),
            },
            now,
        );
        assert_eq!(self.state(id), Some(InstanceState::Running));
    }

    /// Runs from `ms`, is stopped by the user 10 ms later and exits 10 ms after that.
    fn ran_and_stopped(&mut self, id: Uuid, ms: u64) {
        self.running(id, at(ms));
        self.call(Call::StopInstance(Ref::Id(id)), at(ms + 10))
            .expect("stop");
        self.apply(Command::Exited { id, exit_code: 0 }, at(ms + 20));
        assert_eq!(self.state(id), Some(InstanceState::Stopped));
    }

    fn lock(&mut self, id: Uuid, locked: bool, now: SystemTime) {
        self.call(
            Call::PatchInstance(Ref::Id(id), vec![InstancePatch::DeleteLock(locked)]),
            now,
        )
        .expect("lock");
    }
}

fn new(name: &str) -> NewInstance {
    NewInstance {
        name: Some(name.into()),
        image: Some("hello".into()),
        autostart: true,
        ..Default::default()
    }
}

fn with_time(name: &str, ms: u64) -> NewInstance {
    NewInstance {
        autokill: Some(AutokillSpec {
            num_requests: None,
            time: Some(Duration::from_millis(ms)),
        }),
        ..new(name)
    }
}

fn deleted_with(h: &H, id: Uuid) -> bool {
    h.has(|e| matches!(e, Effect::Delete(d) if *d == id))
}

#[test]
fn decide_follows_the_spec_order() {
    use Autodestroy as D;
    use Decision::*;
    use RestartPolicy as R;
    // Restart first…
    assert_eq!(decide(R::Always, D::Off, 0, false), Restart);
    assert_eq!(decide(R::OnFailure, D::Always, 1, false), Restart);
    // …never after a user's stop…
    assert_eq!(decide(R::OnFailure, D::Off, 1, true), Stay);
    assert_eq!(decide(R::OnFailure, D::Always, 1, true), Destroy);
    // …then autodestroy by exit code.
    for (destroy, ok, failed) in [
        (D::Off, Stay, Stay),
        (D::OnFailure, Stay, Destroy),
        (D::OnSuccess, Destroy, Stay),
        (D::Always, Destroy, Destroy),
    ] {
        assert_eq!(
            decide(R::Never, destroy, 0, false),
            ok,
            "{destroy:?} exit 0"
        );
        assert_eq!(
            decide(R::Never, destroy, 3, false),
            failed,
            "{destroy:?} exit 3"
        );
        // on-failure restarts a failure, so autodestroy only sees successes.
        assert_eq!(decide(R::OnFailure, destroy, 3, false), Restart);
        assert_eq!(decide(R::OnFailure, destroy, 0, false), ok);
    }
}

#[test]
fn backoff_schedule() {
    let secs: Vec<u64> = (0..10).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, [0, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
}

#[test]
fn limit_drains_then_deletes() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            autokill: Some(AutokillSpec {
                num_requests: Some(2),
                time: None,
            }),
            ..new("a")
        },
        at(0),
    );
    h.running(id, at(1));
    assert!(matches!(
        h.s.route_table().lookup(b"a.localhost"),
        Some(Route::Instance(Some(Running { slot: 0, .. })))
    ));
    assert_eq!(h.serve(id, 2, at(2)), 2);
    assert!(h.has(|e| matches!(e, Effect::WatchDrain { .. })));
    assert_eq!(
        h.armed(TimerKey::Drain(id)),
        Some(at(2) + Duration::from_secs(10))
    );
    assert_eq!(h.state(id), Some(InstanceState::Draining));
    assert!(
        matches!(
            h.s.route_table().lookup(b"a.localhost"),
            Some(Route::Instance(Some(_)))
        ),
        "addressable by name; the meter refuses"
    );
    h.apply(Command::Drained { id }, at(3));
    assert!(deleted_with(&h, id));
    assert!(h.has(|e| matches!(
        e,
        Effect::Killed {
            resource: "instance",
            reason: "num_requests"
        }
    )));
    assert!(h.s.route_table().lookup(b"a.localhost").is_none());
    h.apply(Command::Exited { id, exit_code: 143 }, at(4));
    h.apply(Command::Deleted { id, result: Ok(()) }, at(5));
    assert!(h.s.instances.is_empty());
}

#[test]
fn drain_timeout_deletes_anyway() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            autokill: Some(AutokillSpec {
                num_requests: Some(1),
                time: None,
            }),
            ..new("a")
        },
        at(0),
    );
    h.running(id, at(0));
    assert_eq!(h.serve(id, 1, at(1)), 1);
    h.apply(Command::Timer(TimerKey::Drain(id)), at(10_001));
    assert!(deleted_with(&h, id));
}

#[test]
fn delete_lock_holds_num_requests_and_fires_on_clear() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            autokill: Some(AutokillSpec {
                num_requests: Some(1),
                time: None,
            }),
            ..new("a")
        },
        at(0),
    );
    h.running(id, at(0));
    h.lock(id, true, at(1));
    let meter = Arc::clone(&h.s.instances[&id].meter);
    assert_eq!(meter.admit(), crate::proxy::meter::Admission::Last);
    assert_eq!(
        meter.admit(),
        crate::proxy::meter::Admission::Admitted,
        "locked: keeps serving past its limit"
    );
    h.apply(Command::LimitReached { id }, at(2));
    assert!(h.has(|e| matches!(
        e,
        Effect::KillSkipped {
            resource: "instance",
            reason: "num_requests"
        }
    )));
    assert_eq!(h.state(id), Some(InstanceState::Running));
    h.lock(id, false, at(3));
    assert_eq!(
        h.state(id),
        Some(InstanceState::Draining),
        "clearing the lock fires the due kill at once"
    );
    assert_eq!(meter.admit(), crate::proxy::meter::Admission::Refused);
}

#[test]
fn the_view_shows_each_armed_deadline() {
    use crate::controller::{Due, DueKind};
    let mut h = H::new();
    let due = |h: &H, id: Uuid| h.s.view().due.get(&id).copied();
    let id = h.instance(with_time("a", 300), at(0));
    h.running(id, at(0));
    assert_eq!(due(&h, id), None, "a running instance waits for nothing");
    h.call(Call::StopInstance(Ref::Id(id)), at(10))
        .expect("stop");
    h.apply(Command::Exited { id, exit_code: 0 }, at(20));
    let stopped = Due {
        kind: DueKind::StoppedTime,
        at: at(320),
    };
    assert_eq!(
        due(&h, id),
        Some(stopped),
        "killed stopped time after its stop"
    );
    h.call(Call::StartInstance(Ref::Id(id)), at(30))
        .expect("start");
    h.running(id, at(40));
    assert_eq!(due(&h, id), None, "a start cancels it");
    // A spent budget drains, at most for the drain timeout.
    let b = h.instance(limited("b", 1), at(50));
    h.running(b, at(50));
    assert_eq!(h.serve(b, 1, at(60)), 1);
    assert_eq!(h.state(b), Some(InstanceState::Draining));
    let drain = Due {
        kind: DueKind::Drain,
        at: at(10_060),
    };
    assert_eq!(due(&h, b), Some(drain));
    h.apply(Command::Drained { id: b }, at(70));
    assert_eq!(due(&h, b), None, "gone with its instance");
}

#[test]
fn stopped_time_kill_and_start_cancels() {
    let mut h = H::new();
    let id = h.instance(with_time("a", 300), at(0));
    h.running(id, at(0));
    h.call(Call::StopInstance(Ref::Name("a".into())), at(10))
        .expect("stop");
    assert!(h.has(|e| matches!(e, Effect::Stop(d) if *d == id)));
    h.apply(Command::Exited { id, exit_code: 0 }, at(20));
    assert_eq!(h.state(id), Some(InstanceState::Stopped));
    assert_eq!(h.s.instances[&id].stop_reason, Some(StopReason::UserStop));
    assert_eq!(h.armed(TimerKey::StoppedTime(id)), Some(at(320)));
    // An early (or stale) fire changes nothing but re-arms.
    h.apply(Command::Timer(TimerKey::StoppedTime(id)), at(100));
    assert!(!deleted_with(&h, id));
    assert_eq!(h.armed(TimerKey::StoppedTime(id)), Some(at(320)));
    // Starting again cancels the timer.
    h.call(Call::StartInstance(Ref::Id(id)), at(200))
        .expect("start");
    assert!(h.has(|e| matches!(e, Effect::Disarm(TimerKey::StoppedTime(d)) if *d == id)));
    h.running(id, at(210));
    h.apply(Command::Timer(TimerKey::StoppedTime(id)), at(320));
    assert!(
        !deleted_with(&h, id),
        "a running instance is not killed by a stale timer"
    );
    // Stop again: killed at stop + time.
    h.call(Call::StopInstance(Ref::Id(id)), at(400))
        .expect("stop");
    h.apply(Command::Exited { id, exit_code: 0 }, at(410));
    h.apply(Command::Timer(TimerKey::StoppedTime(id)), at(710));
    assert!(deleted_with(&h, id));
    assert!(h.has(|e| matches!(
        e,
        Effect::Killed {
            resource: "instance",
            reason: "stopped_time"
        }
    )));
    h.apply(Command::Deleted { id, result: Ok(()) }, at(720));
}

#[test]
fn stopped_time_held_by_lock_fires_on_clear() {
    let mut h = H::new();
    let id = h.instance(with_time("a", 300), at(0));
    h.running(id, at(0));
    h.lock(id, true, at(1));
    h.apply(Command::Exited { id, exit_code: 1 }, at(10));
    h.apply(Command::Timer(TimerKey::StoppedTime(id)), at(310));
    assert!(!deleted_with(&h, id));
    assert!(h.has(|e| matches!(
        e,
        Effect::KillSkipped {
            resource: "instance",
            reason: "stopped_time"
        }
    )));
    assert_eq!(
        h.status(Call::DeleteInstance(Ref::Id(id)), at(320)),
        Err(409),
        "a locked instance cannot be deleted"
    );
    h.lock(id, false, at(400));
    assert!(
        deleted_with(&h, id),
        "due while locked: fires when the lock is cleared"
    );
}

#[test]
fn restart_then_autodestroy_ordering() {
    use Autodestroy::*;
    for (restart, destroy, code, expect) in [
        (RestartPolicy::OnFailure, Always, 1, "restart"),
        (RestartPolicy::OnFailure, Always, 0, "destroy"),
        (RestartPolicy::Never, OnFailure, 1, "destroy"),
        (RestartPolicy::Never, OnFailure, 0, "stay"),
        (RestartPolicy::Never, OnSuccess, 0, "destroy"),
        (RestartPolicy::Never, OnSuccess, 2, "stay"),
        (RestartPolicy::Never, Off, 0, "stay"),
        (RestartPolicy::Always, Off, 0, "restart"),
    ] {
        let mut h = H::new();
        let id = h.instance(
            NewInstance {
                restart_policy: Some(restart),
                autodestroy: Some(destroy),
                ..new("a")
            },
            at(0),
        );
        h.running(id, at(0));
        h.apply(
            Command::Exited {
                id,
                exit_code: code,
            },
            at(100),
        );
        let what = if h.has(|e| matches!(e, Effect::Start { id: d, .. } if *d == id)) {
            "restart"
        } else if deleted_with(&h, id) {
            "destroy"
        } else {
            "stay"
        };
        assert_eq!(what, expect, "{restart:?} {destroy:?} exit {code}");
        assert_eq!(h.s.instances[&id].exit_code, Some(code));
        if expect == "destroy" {
            assert!(h.has(|e| matches!(
                e,
                Effect::Killed {
                    resource: "instance",
                    reason: "autodestroy"
                }
            )));
            h.apply(Command::Deleted { id, result: Ok(()) }, at(200));
        }
    }
}

#[test]
fn restart_backoff_grows_and_resets_after_a_healthy_run() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            restart_policy: Some(RestartPolicy::Always),
            ..new("a")
        },
        at(0),
    );
    h.running(id, at(0));
    // First restart: immediate.
    h.apply(Command::Exited { id, exit_code: 1 }, at(1_000));
    assert!(h.has(|e| matches!(e, Effect::Start { .. })));
    h.running(id, at(1_100));
    // Second: after 5 s, then 10 s.
    h.apply(Command::Exited { id, exit_code: 1 }, at(2_000));
    assert_eq!(h.armed(TimerKey::Restart(id)), Some(at(7_000)));
    assert_eq!(h.state(id), Some(InstanceState::Stopped));
    h.apply(Command::Timer(TimerKey::Restart(id)), at(7_000));
    assert!(h.has(|e| matches!(e, Effect::Start { .. })));
    h.running(id, at(7_100));
    h.apply(Command::Exited { id, exit_code: 1 }, at(8_000));
    assert_eq!(h.armed(TimerKey::Restart(id)), Some(at(18_000)));
    h.apply(Command::Timer(TimerKey::Restart(id)), at(18_000));
    h.running(id, at(18_000));
    // Ran 10 s: the back-off starts over (immediate restart).
    h.apply(Command::Exited { id, exit_code: 1 }, at(28_000));
    assert!(h.has(|e| matches!(e, Effect::Start { .. })));
}

#[test]
fn user_stop_is_never_restarted_and_cancels_a_pending_restart() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            restart_policy: Some(RestartPolicy::Always),
            ..new("a")
        },
        at(0),
    );
    h.running(id, at(0));
    h.call(Call::StopInstance(Ref::Id(id)), at(10))
        .expect("stop");
    h.apply(Command::Exited { id, exit_code: 0 }, at(20));
    assert_eq!(h.state(id), Some(InstanceState::Stopped));
    assert!(!h.has(|e| matches!(e, Effect::Start { .. })));
}

#[test]
fn failed_start_answers_are_matched_to_their_attempt() {
    let mut h = H::new();
    let id = h.instance(new("a"), at(0));
    h.apply(Command::Exited { id, exit_code: 7 }, at(1));
    assert_eq!(
        h.s.instances[&id].stop_reason,
        Some(StopReason::StartFailed)
    );
    h.call(Call::StartInstance(Ref::Id(id)), at(2))
        .expect("start");
    // The first attempt's late failure must not fail the second attempt.
    h.apply(
        Command::Started {
            id,
            attempt: 1,
            result: Err("boom".into()),
        },
        at(3),
    );
    assert_eq!(h.state(id), Some(InstanceState::Starting));
    h.running(id, at(4));
}

#[test]
fn template_clone_inherits_and_unused_kill_waits_for_clones() {
    let mut h = H::new();
    let src = h.instance(
        NewInstance {
            autokill: Some(AutokillSpec {
                num_requests: Some(7),
                time: Some(Duration::from_secs(60)),
            }),
            restart_policy: Some(RestartPolicy::OnFailure),
            autostart: false,
            ..new("base")
        },
        at(0),
    );
    assert_eq!(h.state(src), Some(InstanceState::Stopped));
    let t = match h.call(
        Call::CreateTemplate(NewTemplate {
            instance: Ref::Name("base".into()),
            autokill_time: Some(Duration::from_millis(300)),
        }),
        at(10),
    ) {
        Ok(Reply::Instance(v)) => {
            assert_eq!(v.state, InstanceState::Template);
            v.id
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(h.armed(TimerKey::Unused(t)), Some(at(310)));
    // A clone inherits the template's spec; request fields override.
    let c = h.instance(
        NewInstance {
            name: Some("c1".into()),
            template: Some(Ref::Name("base".into())),
            autokill: Some(AutokillSpec {
                num_requests: Some(3),
                time: None,
            }),
            autostart: true,
            ..Default::default()
        },
        at(100),
    );
    let clone = &h.s.instances[&c];
    // The clone inherits the spec (the source's 60 s stopped time), not the template's unused time.
    assert_eq!(
        (clone.autokill.num_requests, clone.autokill.time),
        (3, Some(Duration::from_secs(60)))
    );
    assert_eq!(clone.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(clone.image, "hello");
    assert_eq!(
        h.armed(TimerKey::Unused(t)),
        Some(at(400)),
        "cloning re-arms the unused time"
    );
    // Due, but a clone exists: kept.
    h.apply(Command::Timer(TimerKey::Unused(t)), at(400));
    assert_eq!(h.state(t), Some(InstanceState::Template));
    // The last clone goes: the template, long unused, goes too.
    h.call(Call::DeleteInstance(Ref::Id(c)), at(500))
        .expect("delete clone");
    h.apply(
        Command::Deleted {
            id: c,
            result: Ok(()),
        },
        at(510),
    );
    assert!(h.has(|e| matches!(
        e,
        Effect::Killed {
            resource: "template",
            reason: "unused"
        }
    )));
    assert!(!h.s.instances.contains_key(&t));
}

#[test]
fn template_lock_holds_the_unused_kill() {
    let mut h = H::new();
    h.instance(
        NewInstance {
            autostart: false,
            ..new("base")
        },
        at(0),
    );
    let Ok(Reply::Instance(v)) = h.call(
        Call::CreateTemplate(NewTemplate {
            instance: Ref::Name("base".into()),
            autokill_time: Some(Duration::from_millis(300)),
        }),
        at(0),
    ) else {
        panic!("template")
    };
    h.call(
        Call::PatchTemplate(Ref::Id(v.id), vec![TemplatePatch::DeleteLock(true)]),
        at(1),
    )
    .expect("lock");
    h.apply(Command::Timer(TimerKey::Unused(v.id)), at(300));
    assert!(h.has(|e| matches!(
        e,
        Effect::KillSkipped {
            resource: "template",
            ..
        }
    )));
    assert_eq!(
        h.status(Call::DeleteTemplate(Ref::Id(v.id)), at(301)),
        Err(409)
    );
    let r = h.call(
        Call::PatchTemplate(Ref::Id(v.id), vec![TemplatePatch::DeleteLock(false)]),
        at(302),
    );
    assert!(
        matches!(
            r,
            Ok(Reply::Instance(InstanceView {
                state: InstanceState::Deleted,
                ..
            }))
        ),
        "answered as deleted: {r:?}"
    );
    assert!(!h.s.instances.contains_key(&v.id));
}

#[test]
fn a_running_instance_cannot_become_a_template() {
    let mut h = H::new();
    let id = h.instance(new("a"), at(0));
    h.running(id, at(0));
    let err = h.status(
        Call::CreateTemplate(NewTemplate {
            instance: Ref::Id(id),
            autokill_time: None,
        }),
        at(1),
    );
    assert_eq!(err, Err(409));
}

#[test]
fn group_empty_kill_cancelled_by_a_joining_instance_and_rearmed_when_it_leaves() {
    let mut h = H::new();
    let g = match h.call(
        Call::CreateGroup(NewGroup {
            name: Some("g".into()),
            domains: vec!["g.localhost".into()],
            autokill_time: Some(Duration::from_millis(300)),
            ..Default::default()
        }),
        at(0),
    ) {
        Ok(Reply::Group(v)) => v.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.armed(TimerKey::Empty(g)),
        Some(at(300)),
        "empty at creation"
    );
    let id = h.instance(
        NewInstance {
            service_group: Some(GroupChoice::Existing(Ref::Name("g".into()))),
            ..new("a")
        },
        at(100),
    );
    assert!(h.has(|e| matches!(e, Effect::Disarm(TimerKey::Empty(x)) if *x == g)));
    h.apply(Command::Timer(TimerKey::Empty(g)), at(300));
    assert!(h.s.groups.contains_key(&g), "not empty: kept");
    h.call(Call::DeleteInstance(Ref::Id(id)), at(400))
        .expect("delete");
    h.apply(Command::Deleted { id, result: Ok(()) }, at(410));
    assert_eq!(h.armed(TimerKey::Empty(g)), Some(at(710)));
    h.apply(Command::Timer(TimerKey::Empty(g)), at(710));
    assert!(!h.s.groups.contains_key(&g));
    assert!(h.has(|e| matches!(
        e,
        Effect::Killed {
            resource: "service_group",
            reason: "empty"
        }
    )));
}

#[test]
fn group_lock_holds_the_empty_kill() {
    let mut h = H::new();
    let Ok(Reply::Group(v)) = h.call(
        Call::CreateGroup(NewGroup {
            name: Some("g".into()),
            autokill_time: Some(Duration::from_millis(300)),
            ..Default::default()
        }),
        at(0),
    ) else {
        panic!("group")
    };
    h.call(
        Call::PatchGroup(Ref::Id(v.id), vec![GroupPatch::DeleteLock(true)]),
        at(1),
    )
    .expect("lock");
    h.apply(Command::Timer(TimerKey::Empty(v.id)), at(300));
    assert!(h.s.groups.contains_key(&v.id));
    assert!(h.has(|e| matches!(
        e,
        Effect::KillSkipped {
            resource: "service_group",
            ..
        }
    )));
    assert_eq!(
        h.status(Call::DeleteGroup(Ref::Id(v.id)), at(301)),
        Err(409)
    );
    let r = h.call(
        Call::PatchGroup(Ref::Id(v.id), vec![GroupPatch::DeleteLock(false)]),
        at(302),
    );
    assert!(
        matches!(r, Ok(Reply::Group(GroupView { deleted: true, .. }))),
        "deleted as soon as the lock is cleared: {r:?}"
    );
    assert!(!h.s.groups.contains_key(&v.id));
}

#[test]
fn bad_calls_change_nothing() {
    let mut h = H::new();
    h.instance(new("a"), at(0));
    let before = format!(
        "{:?}",
        h.s.view()
            .instances
            .iter()
            .map(|i| (&i.name, i.state, i.autokill))
            .collect::<Vec<_>>()
    );
    for (call, status) in [
        (Call::CreateInstance(new("a")), 409),
        (
            Call::CreateInstance(NewInstance {
                image: Some("nope".into()),
                ..new("b")
            }),
            400,
        ),
        (
            Call::CreateInstance(NewInstance {
                image: None,
                ..new("b")
            }),
            400,
        ),
        (
            Call::CreateInstance(NewInstance {
                template: Some(Ref::Name("none".into())),
                ..new("b")
            }),
            404,
        ),
        (
            Call::CreateInstance(NewInstance {
                service_group: Some(GroupChoice::Existing(Ref::Name("none".into()))),
                ..new("b")
            }),
            404,
        ),
        (
            Call::CreateInstance(NewInstance {
                restart_policy: Some(RestartPolicy::Always),
                autodestroy: Some(Autodestroy::OnSuccess),
                ..new("b")
            }),
            400,
        ),
        (
            Call::PatchInstance(
                Ref::Name("a".into()),
                vec![
                    InstancePatch::RestartPolicy(RestartPolicy::Always),
                    InstancePatch::Autodestroy(Autodestroy::Always),
                ],
            ),
            400,
        ),
        (Call::PatchInstance(Ref::Name("zz".into()), vec![]), 404),
        (Call::DeleteInstance(Ref::Name("zz".into())), 404),
        (
            Call::CreateTemplate(NewTemplate {
                instance: Ref::Name("a".into()),
                autokill_time: None,
            }),
            409,
        ),
    ] {
        let what = format!("{call:?}");
        assert_eq!(h.status(call, at(1)), Err(status), "{what}");
    }
    let after = format!(
        "{:?}",
        h.s.view()
            .instances
            .iter()
            .map(|i| (&i.name, i.state, i.autokill))
            .collect::<Vec<_>>()
    );
    assert_eq!(before, after);
    // A group domain may not take an instance's host name, nor another group's domain.
    assert_eq!(
        h.status(
            Call::CreateGroup(NewGroup {
                name: Some("g".into()),
                domains: vec!["a.localhost".into()],
                ..Default::default()
            }),
            at(2)
        ),
        Err(409)
    );
    h.call(
        Call::CreateGroup(NewGroup {
            name: Some("g".into()),
            domains: vec!["x.example".into()],
            ..Default::default()
        }),
        at(2),
    )
    .expect("group");
    assert_eq!(
        h.status(
            Call::CreateGroup(NewGroup {
                name: Some("h".into()),
                domains: vec!["x.example".into()],
                ..Default::default()
            }),
            at(2)
        ),
        Err(409)
    );
    assert_eq!(
        h.status(
            Call::CreateGroup(NewGroup {
                name: Some("g".into()),
                ..Default::default()
            }),
            at(2)
        ),
        Err(409)
    );
}

#[test]
fn patch_autokill_replaces_the_policy_and_applies_at_once() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            autokill: Some(AutokillSpec {
                num_requests: Some(100),
                time: Some(Duration::from_secs(5)),
            }),
            ..new("a")
        },
        at(0),
    );
    h.running(id, at(0));
    let meter = Arc::clone(&h.s.instances[&id].meter);
    for _ in 0..3 {
        meter.admit();
    }
    // The whole policy is replaced: time goes back to "off".
    h.call(
        Call::PatchInstance(
            Ref::Id(id),
            vec![InstancePatch::Autokill(AutokillSpec {
                num_requests: Some(3),
                time: None,
            })],
        ),
        at(1),
    )
    .expect("patch");
    assert_eq!(
        h.s.instances[&id].autokill,
        Autokill {
            num_requests: 3,
            time: None
        }
    );
    assert_eq!(
        h.state(id),
        Some(InstanceState::Draining),
        "already at the new limit"
    );
}

#[test]
fn declared_group_routes_by_domain() {
    let mut h = H::new();
    let g = GroupConfig {
        name: "g".into(),
        domains: vec!["g.localhost".into()],
        autokill_time: None,
        instances: vec![InstanceConfig {
            name: "a".into(),
            image: "hello".into(),
            autokill: Autokill::default(),
            restart_policy: RestartPolicy::Never,
            autodestroy: Autodestroy::Off,
            max_body_bytes: Default::default(),
        }],
        max_body_bytes: Default::default(),
    };
    h.apply(
        Command::Declare {
            groups: vec![g],
            instances: vec![],
        },
        at(0),
    );
    let Some(Effect::Launch {
        spec,
        start: Some(1),
    }) = h.fx.iter().find(|e| matches!(e, Effect::Launch { .. }))
    else {
        panic!("launch")
    };
    let id = spec.id;
    h.running(id, at(1));
    assert!(
        matches!(h.s.route_table().lookup(b"g.localhost"), Some(Route::Group(g)) if g.members.len() == 1)
    );
    let view = h.s.view();
    assert_eq!(
        view.groups.iter().next().map(|g| g.instances.len()),
        Some(1)
    );
}

fn limited(name: &str, n: u64) -> NewInstance {
    NewInstance {
        autokill: Some(AutokillSpec {
            num_requests: Some(n),
            time: None,
        }),
        ..new(name)
    }
}

fn kill_count(h: &H, reason: &str) -> usize {
    h.fx.iter()
        .filter(|e| matches!(e, Effect::Killed { resource: "instance", reason: r } if *r == reason))
        .count()
}

/// Issue 9.1: a one-shot instance that exits after its last answer is killed for its budget,
/// whether the exit comes before the drain ends or before the proxy's report is even applied,
/// and whatever its restart policy and autodestroy say.
#[test]
fn a_spent_instance_that_exits_is_killed_for_its_budget() {
    use Autodestroy as D;
    use RestartPolicy as R;
    for (restart, destroy) in [
        (R::Never, D::Off),
        (R::OnFailure, D::Off),
        (R::Always, D::Off),
        (R::Never, D::OnSuccess),
        (R::OnFailure, D::Always),
    ] {
        for code in [0, 3] {
            for exit_first in [false, true] {
                let what = format!("{restart:?} {destroy:?} exit {code} exit_first {exit_first}");
                let mut h = H::new();
                let id = h.instance(
                    NewInstance {
                        restart_policy: Some(restart),
                        autodestroy: Some(destroy),
                        ..limited("a", 1)
                    },
                    at(0),
                );
                h.running(id, at(1));
                let meter = Arc::clone(&h.s.instances[&id].meter);
                if exit_first {
                    // The exit is applied before the proxy's "budget spent".
                    assert_eq!(meter.admit(), crate::proxy::meter::Admission::Last);
                } else {
                    assert_eq!(h.serve(id, 1, at(2)), 1);
                    assert_eq!(h.state(id), Some(InstanceState::Draining), "{what}");
                }
                h.apply(
                    Command::Exited {
                        id,
                        exit_code: code,
                    },
                    at(3),
                );
                let mut killed = kill_count(&h, "num_requests");
                assert!(deleted_with(&h, id), "{what}: {:?}", h.fx);
                assert!(
                    !h.has(|e| matches!(e, Effect::Start { .. })),
                    "{what}: never restarted"
                );
                assert_eq!(kill_count(&h, "autodestroy"), 0, "{what}");
                h.apply(Command::LimitReached { id }, at(3));
                killed += kill_count(&h, "num_requests");
                // The drain's end and its timer, arriving late, change nothing.
                h.apply(Command::Drained { id }, at(4));
                killed += kill_count(&h, "num_requests");
                h.apply(Command::Timer(TimerKey::Drain(id)), at(20_000));
                killed += kill_count(&h, "num_requests");
                assert_eq!(killed, 1, "{what}: killed once");
                h.apply(Command::Deleted { id, result: Ok(()) }, at(5));
                assert!(h.s.instances.is_empty(), "{what}");
            }
        }
    }
}

/// Issue 9.1, with a lock: the kill of a spent instance that exited is held back (counted once)
/// and fires when the lock is cleared; the instance is not restarted meanwhile.
#[test]
fn a_locked_spent_instance_that_exits_stays_until_the_lock_is_cleared() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            restart_policy: Some(RestartPolicy::Always),
            ..limited("a", 1)
        },
        at(0),
    );
    h.running(id, at(1));
    h.lock(id, true, at(1));
    assert_eq!(h.serve(id, 1, at(2)), 1);
    h.apply(Command::Exited { id, exit_code: 0 }, at(3));
    assert_eq!(h.state(id), Some(InstanceState::Stopped));
    assert!(!h.has(|e| matches!(e, Effect::Start { .. })));
    h.lock(id, false, at(4));
    assert!(deleted_with(&h, id));
    assert_eq!(kill_count(&h, "num_requests"), 1);
}

/// Issue 9.2: a budget set by PATCH on an unlimited instance is reserved durably like any
/// other, so a crash cannot let more than the budget through.
#[test]
fn a_budget_set_by_patch_is_durably_reserved() {
    let mut h = H::new();
    let id = h.instance(new("a"), at(0));
    h.running(id, at(1));
    assert_eq!(h.serve(id, 7, at(2)), 7, "unlimited");
    h.call(
        Call::PatchInstance(
            Ref::Id(id),
            vec![InstancePatch::Autokill(AutokillSpec {
                num_requests: Some(12),
                time: None,
            })],
        ),
        at(3),
    )
    .expect("patch");
    let meter = Arc::clone(&h.s.instances[&id].meter);
    assert!(
        meter.reserved() <= 12 && meter.reserved() == h.stored_reserved(id),
        "the meter's ceiling ({}) is the durable one ({})",
        meter.reserved(),
        h.stored_reserved(id)
    );
    assert_eq!(h.serve(id, 4, at(4)), 4);
    h.crash_and_recover(at(5));
    let attempt = h.s.instances[&id].attempt;
    h.apply(
        Command::Started {
            id,
            attempt,
            result: Ok(([127, 0, 0, 1], 9).into()),
        },
        at(6),
    );
    let after = h.serve(id, 10, at(7));
    assert!(
        7 + 4 + after <= 12,
        "at most the budget in all: 11 before the crash, {after} after"
    );
    // And not far fewer: at most one block (a sixteenth of what was left) is lost.
    assert!(11 + after >= 12 - 1, "{after} after the crash");
}

/// The reservation under a long budget: every request forwarded was durable first, exactly the
/// budget is forwarded, and a crash loses at most one block.
#[test]
fn reservations_keep_every_forwarded_request_durable() {
    let mut h = H::new();
    let id = h.instance(limited("a", 1000), at(0));
    h.running(id, at(1));
    assert_eq!(h.serve(id, 600, at(2)), 600);
    let commits_before = h.stored_reserved(id);
    assert!((600..=1000).contains(&commits_before));
    h.crash_and_recover(at(3));
    let attempt = h.s.instances[&id].attempt;
    h.apply(
        Command::Started {
            id,
            attempt,
            result: Ok(([127, 0, 0, 1], 9).into()),
        },
        at(4),
    );
    let after = h.serve(id, 1000, at(5));
    assert!(600 + after <= 1000, "{after}");
    let block = reservation_block(1000, 600);
    assert!(
        600 + after + block >= 1000,
        "{after}: lost more than a block"
    );
}

/// Issue 9.7: a delete lock set during a drain holds the kill (counted once) and the instance
/// serves on; a PATCH raising the limit during a drain ends the drain too.
#[test]
fn a_lock_or_a_raised_limit_during_a_drain_ends_it() {
    let mut h = H::new();
    let id = h.instance(limited("a", 2), at(0));
    h.running(id, at(1));
    assert_eq!(h.serve(id, 2, at(2)), 2);
    assert_eq!(h.state(id), Some(InstanceState::Draining));
    h.lock(id, true, at(3));
    assert_eq!(
        h.state(id),
        Some(InstanceState::Running),
        "locked: serves on"
    );
    assert!(h.has(|e| matches!(
        e,
        Effect::KillSkipped {
            resource: "instance",
            reason: "num_requests"
        }
    )));
    h.apply(Command::Drained { id }, at(4));
    assert!(!deleted_with(&h, id), "the drain's end is stale");
    assert_eq!(h.serve(id, 3, at(5)), 3, "past its limit while locked");

    let mut h = H::new();
    let id = h.instance(limited("a", 2), at(0));
    h.running(id, at(1));
    assert_eq!(h.serve(id, 2, at(2)), 2);
    assert_eq!(h.state(id), Some(InstanceState::Draining));
    h.call(
        Call::PatchInstance(
            Ref::Id(id),
            vec![InstancePatch::Autokill(AutokillSpec {
                num_requests: Some(5),
                time: None,
            })],
        ),
        at(3),
    )
    .expect("patch");
    assert_eq!(h.state(id), Some(InstanceState::Running));
    h.apply(Command::Timer(TimerKey::Drain(id)), at(20_000));
    assert!(!deleted_with(&h, id), "the drain timer is stale");
    assert_eq!(h.serve(id, 10, at(6)), 3, "three more, then spent");
    assert_eq!(h.state(id), Some(InstanceState::Draining));
    h.apply(Command::Drained { id }, at(7));
    assert!(deleted_with(&h, id));
}

/// Issue 9.7 (the refund side): a drain whose budget is no longer spent when it ends (a request
/// the proxy could not forward gave its count back) returns the instance to service.
#[test]
fn a_drain_whose_budget_was_given_back_serves_on() {
    let mut h = H::new();
    let id = h.instance(limited("a", 2), at(0));
    h.running(id, at(1));
    assert_eq!(h.serve(id, 2, at(2)), 2);
    let meter = Arc::clone(&h.s.instances[&id].meter);
    // What a refund does to the count: the last request never reached the instance.
    meter.unadmit();
    h.apply(Command::Drained { id }, at(3));
    assert_eq!(h.state(id), Some(InstanceState::Running));
    assert_eq!(h.serve(id, 5, at(4)), 1);
}

/// Issue 9.21: a locked, overdue kill is counted as skipped once, not on every re-check.
#[test]
fn a_skipped_kill_is_counted_once_per_time_it_comes_due() {
    let skipped = |h: &H| {
        h.fx.iter()
            .filter(|e| matches!(e, Effect::KillSkipped { .. }))
            .count()
    };
    let mut h = H::new();
    let id = h.instance(with_time("a", 300), at(0));
    h.running(id, at(0));
    h.lock(id, true, at(1));
    h.call(Call::StopInstance(Ref::Id(id)), at(2))
        .expect("stop");
    h.apply(Command::Exited { id, exit_code: 0 }, at(3));
    h.apply(Command::Timer(TimerKey::StoppedTime(id)), at(400));
    let mut total = skipped(&h);
    for t in 0..5 {
        h.lock(id, true, at(500 + t));
        total += skipped(&h);
        h.call(
            Call::PatchInstance(
                Ref::Id(id),
                vec![InstancePatch::RestartPolicy(RestartPolicy::Never)],
            ),
            at(600 + t),
        )
        .expect("patch");
        total += skipped(&h);
    }
    assert_eq!(total, 1);
}

/// Issue 9.16: a generated name never takes a name the configuration declares, even while the
/// declared instance does not exist; a declared name is refused to the API; and the reconcile
/// at the next start re-creates the declared instance and leaves the API's alone.
#[test]
fn generated_names_never_take_declared_ones() {
    let declared = |name: &str| InstanceConfig {
        name: name.into(),
        image: "hello".into(),
        autokill: Autokill::default(),
        restart_policy: RestartPolicy::Never,
        autodestroy: Autodestroy::Off,
        max_body_bytes: Default::default(),
    };
    let mut h = H::new();
    h.apply(
        Command::Declare {
            groups: vec![],
            instances: vec![declared("hello-1")],
        },
        at(0),
    );
    let declared_id =
        h.s.names
            .get(&Arc::from("hello-1"))
            .copied()
            .expect("declared");
    h.call(Call::DeleteInstance(Ref::Name("hello-1".into())), at(1))
        .expect("delete");
    h.apply(
        Command::Deleted {
            id: declared_id,
            result: Ok(()),
        },
        at(2),
    );
    let mut made = Vec::new();
    for _ in 0..50 {
        let id = h.instance(
            NewInstance {
                name: None,
                ..new("x")
            },
            at(3),
        );
        let name = h.s.instances[&id].name.to_string();
        assert!(name.starts_with("hello-") && name != "hello-1", "{name}");
        made.push(id);
    }
    assert_eq!(
        h.status(Call::CreateInstance(new("hello-1")), at(4)),
        Err(409)
    );
    h.apply(
        Command::Declare {
            groups: vec![],
            instances: vec![declared("hello-1")],
        },
        at(5),
    );
    let again =
        h.s.names
            .get(&Arc::from("hello-1"))
            .copied()
            .expect("re-created");
    assert!(h.s.instances[&again].from_config);
    for id in made {
        assert_eq!(
            h.state(id),
            Some(InstanceState::Starting),
            "API-made: untouched"
        );
    }
}

/// Issue 9.4: a batch whose commit failed is undone whole: records, names and all.
#[test]
fn a_rolled_back_batch_leaves_the_state_as_it_was() {
    let mut h = H::new();
    let id = h.instance(limited("a", 10), at(0));
    h.running(id, at(1));
    let before = format!("{:?}", h.s.view());
    let (tx, _rx) = tokio::sync::oneshot::channel();
    h.s.apply(
        Command::Api(
            Call::PatchInstance(Ref::Id(id), vec![InstancePatch::DeleteLock(true)]),
            tx,
        ),
        at(2),
    );
    let (tx, _rx) = tokio::sync::oneshot::channel();
    h.s.apply(Command::Api(Call::CreateInstance(new("b")), tx), at(2));
    h.s.apply(Command::Exited { id, exit_code: 1 }, at(2));
    assert!(!h.s.changes().is_empty());
    h.s.rollback();
    assert!(h.s.changes().is_empty());
    assert_eq!(format!("{:?}", h.s.view()), before);
    assert!(
        h.s.names.get(&Arc::from("b")).is_none(),
        "b's name is free again"
    );
    assert!(h.s.find(&Ref::Name("a".into()), false).is_some());
}

/// A harness whose runtime is docker.
fn docker() -> H {
    let mut config = config();
    config.runtime.kind = RuntimeKind::Docker { host: None };
    H {
        s: State::new(&config, 1),
        ..H::new()
    }
}

/// A stopped instance `name` (with `memory_mb`), made a template at `at(1)`.
fn template(h: &mut H, name: &str, memory_mb: Option<u64>) -> Uuid {
    let id = h.instance(
        NewInstance {
            autostart: false,
            memory_mb,
            ..new(name)
        },
        at(0),
    );
    h.call(
        Call::CreateTemplate(NewTemplate {
            instance: Ref::Id(id),
            autokill_time: None,
        }),
        at(1),
    )
    .expect("template");
    id
}

/// A clone of template `t`.
fn clone_of(t: Uuid, memory_mb: Option<u64>) -> NewInstance {
    NewInstance {
        template: Some(Ref::Id(t)),
        memory_mb,
        ..Default::default()
    }
}

#[test]
fn with_docker_an_image_may_be_any_reference() {
    let image = |image: &str| NewInstance {
        image: Some(image.into()),
        autostart: false,
        ..Default::default()
    };
    // The process runtime runs only what its table names.
    let mut h = H::new();
    assert_eq!(
        h.status(Call::CreateInstance(image("localhost/web:1")), at(0)),
        Err(400)
    );
    let mut h = docker();
    let id = h.instance(image("localhost/web:1"), at(0));
    assert_eq!(h.s.instances[&id].image, "localhost/web:1");
    assert!(h.has(|e| matches!(e, Effect::Launch { spec, .. } if spec.image == "localhost/web:1")));
    h.instance(image("hello"), at(0));
    match h.call(Call::CreateInstance(image("Not An/Image")), at(0)) {
        Err(e) => assert_eq!(
            (e.status, e.message.as_str()),
            (
                400,
                "image: \"Not An/Image\" is neither a key of runtime.images nor an image reference"
            )
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn memory_limits_reach_the_runtime_and_clones_inherit_them() {
    // The process runtime sets no memory limit and says so.
    let mut h = H::new();
    let limited = NewInstance {
        memory_mb: Some(64),
        ..new("a")
    };
    assert_eq!(h.status(Call::CreateInstance(limited), at(0)), Err(400));
    let mut h = docker();
    h.instance(
        NewInstance {
            memory_mb: Some(64),
            autostart: false,
            ..new("a")
        },
        at(0),
    );
    assert!(h.has(|e| matches!(e, Effect::Launch { spec, .. } if spec.memory_mb == Some(64))));
    let t = template(&mut h, "t", Some(32));
    let inherited = h.instance(clone_of(t, None), at(2));
    assert_eq!(h.s.instances[&inherited].memory_mb, Some(32));
    let own = h.instance(clone_of(t, Some(128)), at(3));
    assert_eq!(h.s.instances[&own].memory_mb, Some(128));
    let view = h.s.view();
    assert_eq!(
        view.instances.get(&own).and_then(|i| i.memory_mb),
        Some(128)
    );
}

#[test]
fn with_docker_a_template_is_committed_and_its_clones_run_its_image() {
    let mut h = docker();
    let id = template(&mut h, "a", None);
    assert!(h.has(|e| matches!(e, Effect::Commit(t) if *t == id)));
    let image = crate::runtime::template_image(id);
    assert_eq!(h.s.instances[&id].image, image);
    let clone = h.instance(clone_of(id, None), at(2));
    assert_eq!(h.s.instances[&clone].image, image);
    // The process runtime has nothing to commit: clones run the template's command.
    let mut h = H::new();
    let id = template(&mut h, "a", None);
    assert!(!h.has(|e| matches!(e, Effect::Commit(_))));
    assert_eq!(h.s.instances[&id].image, "hello");
}

#[test]
fn while_the_engine_is_unreachable_creates_and_starts_are_refused() {
    let mut h = H::new();
    let id = h.instance(
        NewInstance {
            autostart: false,
            ..new("a")
        },
        at(0),
    );
    h.apply(
        Command::Engine {
            unreachable: Some("event stream: connection refused".into()),
        },
        at(1),
    );
    match h.call(Call::CreateInstance(new("b")), at(2)) {
        Err(e) => assert_eq!(
            (e.status, e.message.as_str()),
            (
                503,
                "the container engine cannot be reached (event stream: connection refused); \
                 nothing was created, try again later"
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.s.instances.len(), 1, "nothing half-made");
    assert_eq!(h.status(Call::StartInstance(Ref::Id(id)), at(3)), Err(503));
    h.apply(Command::Engine { unreachable: None }, at(4));
    h.instance(new("b"), at(5));
    assert_eq!(h.status(Call::StartInstance(Ref::Id(id)), at(6)), Ok(()));
}

/// A new start from what `h` committed, with `found` adopted; the effects.
fn restarted(
    h: &mut H,
    found: &[(Uuid, crate::runtime::Found)],
    now: SystemTime,
) -> (H, Vec<Effect>) {
    let snapshot = h.snapshot();
    let mut next = H::new();
    let mut fx = next.s.recover(snapshot, now);
    next.s.adopt(&found.iter().copied().collect(), &mut fx, now);
    (next, fx)
}

#[test]
fn adopted_containers_run_on_and_those_that_exited_meanwhile_are_judged() {
    use crate::runtime::Found;
    let mut h = H::new();
    let mut policy = |name: &str, restart, destroy| {
        let new = NewInstance {
            restart_policy: Some(restart),
            autodestroy: Some(destroy),
            autokill: Some(AutokillSpec {
                num_requests: Some(100),
                time: None,
            }),
            ..new(name)
        };
        h.instance(new, at(0))
    };
    use Autodestroy::{Off, OnSuccess};
    use RestartPolicy::{Never, OnFailure};
    let runs = policy("runs", Never, Off);
    let fails = policy("fails", OnFailure, Off);
    let done = policy("done", Never, OnSuccess);
    let stays = policy("stays", Never, OnSuccess);
    let gone = policy("gone", Never, Off);
    for id in [runs, fails, done, stays, gone] {
        h.running(id, at(1));
    }
    let stopped = h.instance(
        NewInstance {
            autostart: false,
            ..new("stopped")
        },
        at(1),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], 4242).into();
    let (next, fx) = restarted(
        &mut h,
        &[
            (runs, Found::Running(addr)),
            (fails, Found::Exited(3)),
            (done, Found::Exited(0)),
            (stays, Found::Exited(3)),
            (stopped, Found::Running(addr)),
        ],
        at(2),
    );
    let launched = |id: Uuid| {
        fx.iter()
            .any(|e| matches!(e, Effect::Launch { spec, .. } if spec.id == id))
    };
    // Adopted as it is: running at its address, no launch, the meter where the store left it.
    assert_eq!(next.state(runs), Some(InstanceState::Running));
    assert_eq!(
        next.s.instances[&runs].upstream.as_ref().map(|u| u.addr),
        Some(addr)
    );
    assert!(!launched(runs));
    // (every request up to the stored reservation may have been forwarded before the crash)
    assert_eq!(
        next.s.instances[&runs].meter.count(),
        h.stored_reserved(runs)
    );
    assert!(h.stored_reserved(runs) > 0);
    // Exited meanwhile: judged by its real exit code, as if autokill had been up.
    assert_eq!(next.s.instances[&fails].exit_code, Some(3));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Start { id, .. } if *id == fails)),
        "on-failure restarts exit 3"
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Delete(id) if *id == done)),
        "ON_SUCCESS destroys exit 0"
    );
    assert_eq!(next.state(stays), Some(InstanceState::Stopped));
    assert_eq!(
        next.s.instances[&stays].stop_reason,
        Some(StopReason::Exited)
    );
    for id in [fails, done, stays] {
        assert!(!launched(id));
    }
    // Nothing left of it: started anew, as before adoption existed.
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Launch { spec, start: Some(_) } if spec.id == gone))
    );
    // Stopped in the store but running: stopped.
    assert_eq!(next.state(stopped), Some(InstanceState::Stopping));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Stop(id) if *id == stopped))
    );
}

/// One step of [`incremental_structures_match_a_rebuild`]: instance and group numbers pick
/// among a few names, so steps collide (the same name twice, a step on a missing one).
#[derive(Debug, Clone)]
enum Step {
    Group(u8),
    Create {
        n: u8,
        group: Option<u8>,
        start: bool,
    },
    Clone {
        n: u8,
        template: u8,
    },
    Run(u8),
    Exit(u8, i32),
    Stop(u8),
    Lock(u8, bool),
    Limit(u8, u64),
    Template(u8),
    Delete(u8),
    Deleted(u8),
    DeleteGroup(u8),
    Serve(u8, u8),
    Batch(Vec<Step>),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let one = prop_oneof![
        (0u8..3).prop_map(Step::Group),
        (0u8..8, proptest::option::of(0u8..3), any::<bool>())
            .prop_map(|(n, group, start)| Step::Create { n, group, start }),
        (0u8..8, 0u8..8).prop_map(|(n, template)| Step::Clone { n, template }),
        (0u8..8).prop_map(Step::Run),
        (0u8..8, 0i32..2).prop_map(|(n, c)| Step::Exit(n, c)),
        (0u8..8).prop_map(Step::Stop),
        (0u8..8, any::<bool>()).prop_map(|(n, l)| Step::Lock(n, l)),
        (0u8..8, 0u64..4).prop_map(|(n, l)| Step::Limit(n, l)),
        (0u8..8).prop_map(Step::Template),
        (0u8..8).prop_map(Step::Delete),
        (0u8..8).prop_map(Step::Deleted),
        (0u8..3).prop_map(Step::DeleteGroup),
        (0u8..8, 1u8..4).prop_map(|(n, r)| Step::Serve(n, r)),
    ];
    prop_oneof![
        4 => one.clone(),
        1 => proptest::collection::vec(one, 2..5).prop_map(Step::Batch),
    ]
}

/// Applies `step` uncommitted (the harness commits after each batch).
fn apply_step(h: &mut H, step: &Step, now: SystemTime) {
    let name = |n: u8| format!("i{n}");
    let id = |h: &H, n: u8| h.s.names.get(&Arc::from(name(n).as_str())).copied();
    let call = |h: &mut H, c: Call| {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let fx = h.s.apply(Command::Api(c, tx), now);
        h.fx.extend(fx);
    };
    match step {
        Step::Group(g) => call(
            h,
            Call::CreateGroup(NewGroup {
                name: Some(format!("g{g}")),
                domains: vec![format!("g{g}.localhost")],
                ..Default::default()
            }),
        ),
        Step::Create { n, group, start } => call(
            h,
            Call::CreateInstance(NewInstance {
                autostart: *start,
                service_group: group.map(|g| GroupChoice::Existing(Ref::Name(format!("g{g}")))),
                ..new(&name(*n))
            }),
        ),
        Step::Clone { n, template } => call(
            h,
            Call::CreateInstance(NewInstance {
                name: Some(name(*n)),
                image: None,
                template: Some(Ref::Name(name(*template))),
                ..Default::default()
            }),
        ),
        Step::Run(n) => {
            if let Some(id) = id(h, *n) {
                let attempt = h.s.instances[&id].attempt;
                let fx = h.s.apply(
                    Command::Started {
                        id,
                        attempt,
                        result: Ok(([127, 0, 0, 1], 9).into()),
                    },
                    now,
                );
                h.fx.extend(fx);
            }
        }
        Step::Exit(n, code) => {
            if let Some(id) = id(h, *n) {
                let fx = h.s.apply(
                    Command::Exited {
                        id,
                        exit_code: *code,
                    },
                    now,
                );
                h.fx.extend(fx);
            }
        }
        Step::Stop(n) => call(h, Call::StopInstance(Ref::Name(name(*n)))),
        Step::Lock(n, l) => call(
            h,
            Call::PatchInstance(Ref::Name(name(*n)), vec![InstancePatch::DeleteLock(*l)]),
        ),
        Step::Limit(n, l) => call(
            h,
            Call::PatchInstance(
                Ref::Name(name(*n)),
                vec![InstancePatch::Autokill(AutokillSpec {
                    num_requests: Some(*l),
                    time: None,
                })],
            ),
        ),
        Step::Template(n) => call(
            h,
            Call::CreateTemplate(NewTemplate {
                instance: Ref::Name(name(*n)),
                autokill_time: None,
            }),
        ),
        Step::Delete(n) => {
            call(h, Call::DeleteInstance(Ref::Name(name(*n))));
            call(h, Call::DeleteTemplate(Ref::Name(name(*n))));
        }
        Step::Deleted(n) => {
            // The runtime finishing a delete of whatever is being deleted under that name.
            let gone: Vec<Uuid> =
                h.s.instances
                    .values()
                    .filter(|i| *i.name == name(*n) && i.state == InstanceState::Deleted)
                    .map(|i| i.id)
                    .collect();
            for id in gone {
                let fx = h.s.apply(Command::Deleted { id, result: Ok(()) }, now);
                h.fx.extend(fx);
            }
        }
        Step::DeleteGroup(g) => call(h, Call::DeleteGroup(Ref::Name(format!("g{g}")))),
        Step::Serve(n, r) => {
            if let Some(id) = id(h, *n) {
                let meter = Arc::clone(&h.s.instances[&id].meter);
                for _ in 0..*r {
                    if meter.admit() == crate::proxy::meter::Admission::Last {
                        let fx = h.s.apply(Command::LimitReached { id }, now);
                        h.fx.extend(fx);
                    }
                }
            }
        }
        Step::Batch(steps) => {
            for s in steps {
                apply_step(h, s, now);
            }
        }
    }
}

/// Where every known host leads, by instance id (table indexes differ between builds).
fn routes(table: &crate::proxy::RouteTable, hosts: &BTreeSet<String>) -> Vec<(String, String)> {
    hosts
        .iter()
        .map(|host| {
            let to = match table.lookup(host.as_bytes()) {
                None => "404".to_owned(),
                Some(Route::Instance(None)) => "503".to_owned(),
                Some(Route::Instance(Some(running))) => running.upstream.id.to_string(),
                Some(Route::Group(g)) => {
                    let mut ids: Vec<String> = g
                        .members
                        .iter()
                        .map(|i| {
                            table
                                .upstream(*i)
                                .map_or("empty slot".into(), |u| u.id.to_string())
                        })
                        .collect();
                    ids.sort();
                    format!("group {ids:?}")
                }
            };
            (host.clone(), to)
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Issue 16: whatever happens, the indexes and the view kept up to date commit by commit
    /// equal what a scan of every instance gives, and the route table published incrementally
    /// (or not at all: nothing that routes changed) routes every host as one built from scratch.
    #[test]
    fn incremental_structures_match_a_rebuild(steps in proptest::collection::vec(step(), 1..40)) {
        let mut h = H::new();
        let mut hosts = BTreeSet::new();
        h.committed(at(0));
        let mut published = h.s.publish_routes().unwrap_or_default();
        for (t, step) in steps.iter().enumerate() {
            let now = at(10 * t as u64 + 1);
            h.fx.clear();
            apply_step(&mut h, step, now);
            h.committed(now);
            // The indexes.
            for g in h.s.groups.values() {
                let mut indexed = h.s.member_ids(g.id);
                indexed.sort();
                let mut scanned: Vec<Uuid> = h.s.instances.values()
                    .filter(|i| i.group == Some(g.id) && i.state != InstanceState::Deleted)
                    .map(|i| i.id).collect();
                scanned.sort();
                proptest::prop_assert_eq!(indexed, scanned, "members of {}", g.name);
            }
            // The view, record by record.
            let view = h.s.view();
            let live: Vec<&Instance> = h.s.instances.values()
                .filter(|i| i.state != InstanceState::Deleted).collect();
            proptest::prop_assert_eq!(view.instances.len(), live.len());
            for i in live {
                let clones = h.s.instances.values()
                    .filter(|c| c.template == Some(i.id) && c.state != InstanceState::Deleted)
                    .count();
                let fresh = format!("{:?}", h.s.instance_view(i, clones));
                let kept = format!("{:?}", view.instances.get(&i.id));
                proptest::prop_assert_eq!(format!("Some({fresh})"), kept);
            }
            proptest::prop_assert_eq!(view.groups.len(), h.s.groups.len());
            for g in h.s.groups.values() {
                let fresh = format!("Some({:?})", h.s.group_view(g));
                proptest::prop_assert_eq!(fresh, format!("{:?}", view.groups.get(&g.id)));
            }
            // The deadlines, of instances and of groups.
            let mut due: std::collections::HashMap<Uuid, crate::controller::Due> = h.s.instances
                .values()
                .filter(|i| i.state != InstanceState::Deleted)
                .filter_map(|i| i.due().map(|d| (i.id, d)))
                .collect();
            for g in h.s.groups.values() {
                if let Some((since, time)) = g.empty_since.zip(g.autokill_time) {
                    let empty = crate::controller::DueKind::Empty;
                    due.insert(g.id, crate::controller::Due { kind: empty, at: since + time });
                }
            }
            let kept: std::collections::HashMap<Uuid, crate::controller::Due> =
                view.due.iter().map(|(k, v)| (*k, *v)).collect();
            proptest::prop_assert_eq!(kept, due);
            // The route table.
            for i in h.s.instances.values() {
                hosts.insert(format!("{}.localhost", i.name));
            }
            for g in h.s.groups.values() {
                hosts.extend(g.domains.iter().cloned());
            }
            if let Some(table) = h.s.publish_routes() {
                published = table;
            }
            proptest::prop_assert!(h.s.publish_routes().is_none(), "nothing left to publish");
            let rebuilt = h.s.route_table();
            proptest::prop_assert_eq!(
                routes(&published, &hosts),
                routes(&rebuilt, &hosts),
                "after {:?}", step
            );
            // Every filled slot is a running instance's, and the slots say which.
            for (id, slot) in &h.s.slots {
                let up = published.upstream(*slot).map(|u| u.id);
                proptest::prop_assert_eq!(up, Some(*id));
            }
            let filled = published.upstreams().filter(Option::is_some).count();
            proptest::prop_assert_eq!(filled, h.s.slots.len());
        }
    }
}

/// The published instances when a name passes from one instance to another within a batch
/// (a redeploy): whichever order the two are refreshed in, the name leads to the new one.
#[test]
fn a_name_taken_over_in_one_batch_leads_to_the_new_instance() {
    for old_first in [true, false] {
        let mut h = H::new();
        let old = h.instance(new("a"), at(0));
        let (tx, _rx) = tokio::sync::oneshot::channel();
        h.s.apply(Command::Api(Call::DeleteInstance(Ref::Id(old)), tx), at(1));
        let (tx, _rx) = tokio::sync::oneshot::channel();
        h.s.apply(Command::Api(Call::CreateInstance(new("a")), tx), at(1));
        let fresh = h.s.names.get(&Arc::from("a")).copied().expect("a");
        let mut cache = crate::controller::Instances::default();
        let view = |h: &H, id: Uuid| Arc::new(h.s.instance_view(&h.s.instances[&id], 0));
        if old_first {
            cache.put(view(&h, old));
            cache.put(view(&h, fresh));
            cache.remove(&old);
        } else {
            cache.put(view(&h, old));
            cache.remove(&old);
            cache.put(view(&h, fresh));
        }
        assert_eq!(
            cache.named("a").map(|v| v.id),
            Some(fresh),
            "old first: {old_first}"
        );
        assert_eq!(cache.len(), 1);
        h.committed(at(1));
        assert_eq!(h.s.view().instances.named("a").map(|v| v.id), Some(fresh));
    }
}

/// A recovery writes back only the records it changed: a stopped instance and its timer are
/// as they were stored (100,000 of them cost no write), one that was running starts again.
#[test]
fn a_recovery_writes_back_only_what_it_changed() {
    let mut h = H::new();
    let idle = h.instance(with_time("idle", 300_000), at(0));
    h.ran_and_stopped(idle, 0);
    let busy = h.instance(new("busy"), at(30));
    h.running(busy, at(30));
    let snapshot = h.snapshot();
    let mut s = State::new(&config(), 1);
    let fx = s.recover(snapshot, at(40));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Arm(TimerKey::StoppedTime(id), _) if *id == idle)),
        "the stopped time is armed again"
    );
    let written: Vec<Uuid> = s
        .changes()
        .iter()
        .filter_map(|c| match c {
            crate::store::Change::PutInstance(r) => Some(r.id),
            _ => None,
        })
        .collect();
    assert_eq!(written, [busy]);
    s.committed();
    assert_eq!(s.view().instances.len(), 2, "both are indexed all the same");
}

/// What a recovery restores as stored is written back as soon as anything changes it: a stopped
/// instance whose stopped time ran out while autokill was down is deleted at once, and that
/// delete is durable before it is carried out (a crash now finishes it at the next start).
#[test]
fn a_recovery_writes_back_what_its_checks_changed() {
    let mut h = H::new();
    let late = h.instance(with_time("late", 1_000), at(0));
    let kept = h.instance(with_time("kept", 600_000), at(0));
    let group = match h.call(
        Call::CreateGroup(NewGroup {
            name: Some("g".into()),
            autokill_time: Some(Duration::from_millis(600_000)),
            ..Default::default()
        }),
        at(0),
    ) {
        Ok(Reply::Group(v)) => v.id,
        other => panic!("{other:?}"),
    };
    for id in [late, kept] {
        h.running(id, at(0));
        h.call(Call::StopInstance(Ref::Id(id)), at(10))
            .expect("stop");
        h.apply(Command::Exited { id, exit_code: 0 }, at(20));
    }
    let snapshot = h.snapshot();
    let mut s = State::new(&config(), 1);
    let fx = s.recover(snapshot, at(60_000));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Delete(id) if *id == late))
    );
    let written: Vec<_> = s
        .changes()
        .into_iter()
        .filter_map(|c| match c {
            crate::store::Change::PutInstance(r) => Some((r.id, r.deleting)),
            _ => None,
        })
        .collect();
    assert_eq!(written, [(late, Some("stopped_time".to_owned()))]);
    // What was restored as stored is published all the same.
    s.committed();
    let view = s.view();
    assert!(view.instances.get(&kept).is_some());
    assert!(
        view.groups.get(&group).is_some(),
        "the restored group is published"
    );
}

/// `autokill.jitter`: the budget of each new instance is drawn once, at creation, in
/// `[N - jitter × N, N]`; the drawn budget is what the meter enforces, what the API shows and
/// what is stored, and it survives a crash. A PATCH sets exactly what it asks; a template passes
/// on the number asked for, and each clone draws its own.
#[test]
fn jitter_draws_each_budget_once_at_creation() {
    let budgets = |jitter: f64| {
        let mut h = H::with(Config {
            autokill: crate::config::AutokillConfig { jitter },
            ..config()
        });
        let mut drawn = Vec::new();
        for i in 0..50 {
            let new = NewInstance {
                autokill: Some(AutokillSpec {
                    num_requests: Some(100),
                    time: None,
                }),
                ..new(&format!("i{i}"))
            };
            match h.call(Call::CreateInstance(new), at(0)) {
                Ok(Reply::Instance(v)) => drawn.push((v.id, v.autokill.num_requests)),
                other => panic!("{other:?}"),
            }
        }
        (h, drawn)
    };

    let (_, exact) = budgets(0.0);
    assert!(exact.iter().all(|(_, n)| *n == 100), "jitter 0: {exact:?}");

    let (mut h, drawn) = budgets(0.5);
    let numbers: Vec<u64> = drawn.iter().map(|(_, n)| *n).collect();
    assert!(
        numbers.iter().all(|n| (50..=100).contains(n)),
        "{numbers:?}"
    );
    assert!(
        numbers.iter().any(|n| *n != numbers[0]),
        "all equal: {numbers:?}"
    );
    for &(id, n) in &drawn {
        h.running(id, at(1));
        assert_eq!(h.s.instances[&id].meter.limit(), n, "the meter enforces it");
        assert_eq!(h.disk[&id].num_requests, n, "it is stored");
        assert_eq!(
            h.s.view()
                .instances
                .get(&id)
                .map(|v| v.autokill.num_requests),
            Some(n)
        );
    }
    // Not drawn again by a recovery.
    h.crash_and_recover(at(2));
    for &(id, n) in &drawn {
        assert_eq!(h.s.instances[&id].autokill.num_requests, n);
        assert_eq!(h.s.instances[&id].meter.limit(), n);
    }
    // A PATCH sets exactly what it asks for.
    let (id, _) = drawn[0];
    let patch = InstancePatch::Autokill(AutokillSpec {
        num_requests: Some(100),
        time: None,
    });
    match h.call(Call::PatchInstance(Ref::Id(id), vec![patch]), at(3)) {
        Ok(Reply::Instance(v)) => assert_eq!(v.autokill.num_requests, 100),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.s.instances[&id].meter.limit(), 100);
    assert_eq!(h.disk[&id].num_requests, 100);
    assert_eq!(h.disk[&id].asked_num_requests, None);

    // A template passes on the number asked for, not the one its instance drew.
    let base = h.instance(
        NewInstance {
            autokill: Some(AutokillSpec {
                num_requests: Some(1000),
                time: None,
            }),
            autostart: false,
            ..new("base")
        },
        at(4),
    );
    let base_budget = h.s.instances[&base].autokill.num_requests;
    assert!((500..=1000).contains(&base_budget));
    let template = NewTemplate {
        instance: Ref::Id(base),
        autokill_time: None,
    };
    match h.call(Call::CreateTemplate(template), at(5)) {
        Ok(Reply::Instance(v)) => assert_eq!(v.autokill.num_requests, 1000),
        other => panic!("{other:?}"),
    }
    let clones: Vec<u64> = (0..20)
        .map(|i| {
            let clone = NewInstance {
                name: Some(format!("c{i}")),
                template: Some(Ref::Id(base)),
                autostart: true,
                ..Default::default()
            };
            let c = h.instance(clone, at(6));
            h.s.instances[&c].autokill.num_requests
        })
        .collect();
    assert!(
        clones.iter().all(|n| (500..=1000).contains(n)),
        "{clones:?}"
    );
    assert!(clones.iter().any(|n| *n != clones[0]), "{clones:?}");
}

/// A declared instance draws its budget when the file first declares it; a reload (or a new
/// start) that declares the same number keeps it, one that declares another number draws anew.
#[test]
fn declared_budgets_are_kept_while_the_file_asks_the_same() {
    let declared = |n: u64| -> Vec<InstanceConfig> {
        (0..30)
            .map(|i| InstanceConfig {
                name: format!("d{i}"),
                image: "hello".into(),
                autokill: Autokill {
                    num_requests: n,
                    time: None,
                },
                restart_policy: RestartPolicy::Never,
                autodestroy: Autodestroy::Off,
                max_body_bytes: Default::default(),
            })
            .collect()
    };
    let budgets = |h: &H| -> std::collections::BTreeMap<String, u64> {
        h.s.instances
            .values()
            .map(|i| (i.name.to_string(), i.autokill.num_requests))
            .collect()
    };
    let mut h = H::with(Config {
        autokill: crate::config::AutokillConfig { jitter: 0.5 },
        ..config()
    });
    let declare = |n| Command::Declare {
        groups: vec![],
        instances: declared(n),
    };
    h.apply(declare(100), at(0));
    let first = budgets(&h);
    assert_eq!(first.len(), 30);
    assert!(first.values().all(|n| (50..=100).contains(n)), "{first:?}");
    assert!(first.values().any(|n| *n != first["d0"]), "{first:?}");
    h.apply(declare(100), at(1));
    assert_eq!(budgets(&h), first, "a reload of the same file keeps them");
    h.crash_and_recover(at(2));
    h.apply(declare(100), at(3));
    assert_eq!(budgets(&h), first, "a new start keeps them");
    h.apply(declare(200), at(4));
    let second = budgets(&h);
    assert!(
        second.values().all(|n| (100..=200).contains(n)),
        "{second:?}"
    );
    assert!(second.values().any(|n| *n != second["d0"]), "{second:?}");
    for i in h.s.instances.values() {
        assert_eq!(i.meter.limit(), i.autokill.num_requests);
    }
}

/// A large store is restored on two threads (from `PARALLEL_RESTORE_FROM` records): every
/// instance comes back as it does from a store of it alone, with the same effects, in the
/// stored order.
#[test]
fn a_large_recovery_restores_each_instance_as_a_recovery_of_it_alone_does() {
    let mut h = H::new();
    let stopped = h.instance(with_time("stopped", 300_000), at(0));
    h.ran_and_stopped(stopped, 0);
    let running = h.instance(new("running"), at(30));
    h.running(running, at(30));
    h.instance(new("idle"), at(40));
    h.instance(
        NewInstance {
            autostart: false,
            ..new("base")
        },
        at(40),
    );
    h.call(
        Call::CreateTemplate(NewTemplate {
            instance: Ref::Name("base".into()),
            autokill_time: Some(Duration::from_secs(3600)),
        }),
        at(50),
    )
    .expect("template");
    let late = h.instance(with_time("late", 1_000), at(0));
    h.ran_and_stopped(late, 0);
    let mut kinds: Vec<_> = h.snapshot().instances;
    // In a fixed order: the store's snapshot comes out of a hash map.
    kinds.sort_by(|a, b| a.name.cmp(&b.name));
    let stopped = kinds
        .iter()
        .find(|r| r.name == "stopped")
        .expect("stopped")
        .clone();
    let mut deleting = stopped.clone();
    deleting.deleting = Some("num_requests".into());
    let mut stopping = stopped;
    stopping.state = "stopping".into();
    let kinds: Vec<_> = kinds.into_iter().chain([deleting, stopping]).collect();
    let mut records: Vec<_> = (0..4_500)
        .map(|n| {
            let mut r = kinds[n % kinds.len()].clone();
            r.id = Uuid::new_v4();
            r.name = format!("{}-{n}", r.name);
            r
        })
        .collect();
    records.sort_by_key(|r| r.id);
    let now = at(60_000);
    let mut all = State::new(&config(), 1);
    let fx = all.recover(
        crate::store::Snapshot {
            instances: records.clone(),
            groups: Vec::new(),
        },
        now,
    );
    all.committed();
    // Each effect under every instance id it names.
    let by_id = |fx: &[Effect]| {
        let mut by_id: HashMap<Uuid, Vec<String>> = HashMap::new();
        for e in fx {
            let text = format!("{e:?}");
            let ids = text
                .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
                .filter_map(|word| Uuid::try_parse(word).ok());
            for id in ids {
                by_id.entry(id).or_default().push(text.clone());
            }
        }
        by_id
    };
    let all_fx = by_id(&fx);
    let mut order = Vec::new();
    let mut views = 0;
    for r in &records {
        let mut one = State::new(&config(), 1);
        let alone = one.recover(
            crate::store::Snapshot {
                instances: vec![r.clone()],
                groups: Vec::new(),
            },
            now,
        );
        one.committed();
        views += one.view().instances.len();
        assert_eq!(
            all_fx.get(&r.id),
            by_id(&alone).get(&r.id),
            "effects of {}",
            r.name
        );
        assert_eq!(
            format!("{:?}", all.view().instances.get(&r.id)),
            format!("{:?}", one.view().instances.get(&r.id)),
            "view of {}",
            r.name
        );
        order.extend(fx.iter().position(|e| {
            matches!(e, Effect::Launch { spec, .. } if spec.id == r.id)
                || matches!(e, Effect::Delete(id) if *id == r.id)
        }));
    }
    let templates = records.iter().filter(|r| r.state == "template").count();
    assert!(templates > 0, "templates among them");
    assert!(
        order.len() == records.len() - templates && order.is_sorted(),
        "one effect each but for templates, in the stored order"
    );
    assert_eq!(all.view().instances.len(), views);
}

proptest::proptest! {
    /// Sorting views by their names' first bytes, then whole names where those tie, is sorting
    /// by name: short names, names that are prefixes of others, long shared beginnings.
    #[test]
    fn views_sorted_by_name_heads_are_sorted_by_name(
        names in proptest::collection::vec("(abcdefghijklmnop|ab|a\u{0}|é)?[a-c\u{0}é]{0,20}", 0..200),
    ) {
        let mut views: Vec<Arc<String>> = names.iter().cloned().map(Arc::new).collect();
        super::sort_by_name(&mut views, |v| v.as_str());
        let mut expected = names.clone();
        expected.sort();
        let sorted: Vec<String> = views.iter().map(|v| (**v).clone()).collect();
        proptest::prop_assert_eq!(sorted, expected);
    }
}
