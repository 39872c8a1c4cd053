//! SPEC's lifecycle rows end to end through the `/v1` API: the real binary, real `autokill hello`
//! upstreams, real timers of a few hundred milliseconds.

mod common;

use std::time::Duration;

use common::{Server, hello_runtime, sample};
use hyper::StatusCode;
use serde_json::{Value, json};

/// hello with `--allow-exit`, so that `GET /__exit/<code>` makes an instance exit with `<code>`.
async fn server() -> Server {
    Server::start(|dir| hello_runtime(dir, r#", "--allow-exit""#)).await
}

async fn create(server: &Server, body: Value) -> Value {
    server
        .api_ok("POST", "/v1/instances", body, "instances")
        .await
}

async fn patch(server: &Server, path: &str, prop: &str, value: Value, key: &str) -> Value {
    server
        .api_ok(
            "PATCH",
            path,
            json!({"prop": prop, "op": "set", "value": value}),
            key,
        )
        .await
}

/// The instance or template at `path` (`/v1/instances/x`, `/v1/instances/templates/x`,
/// `/v1/services/x`), or `None` once it is gone (404).
async fn find(server: &Server, path: &str, key: &str) -> Option<Value> {
    let (status, v) = server.api("GET", path, Value::Null).await;
    match status {
        StatusCode::OK => Some(v["data"][key][0].clone()),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET {path}: {other} {v}"),
    }
}

async fn instance(server: &Server, name: &str) -> Option<Value> {
    find(server, &format!("/v1/instances/{name}"), "instances").await
}

async fn wait_state(server: &Server, name: &str, state: &str) -> Value {
    let mut last = None;
    server
        .eventually(10, &format!("{name} {state}"), async || {
            last = instance(server, name).await;
            last.as_ref().is_some_and(|i| i["state"] == state)
        })
        .await;
    last.unwrap_or_default()
}

async fn wait_gone(server: &Server, path: &str, key: &str, secs: u64) {
    server
        .eventually(secs, &format!("{path} deleted"), async || {
            find(server, path, key).await.is_none()
        })
        .await;
}

async fn kills(server: &Server, resource: &str, reason: &str) -> f64 {
    let metrics = server.metrics().await;
    sample(
        &metrics,
        &format!(r#"autokill_kills_total{{reason="{reason}",resource="{resource}"}}"#),
    )
    .unwrap_or(0.0)
}

async fn skipped(server: &Server, resource: &str, reason: &str) -> f64 {
    let metrics = server.metrics().await;
    sample(
        &metrics,
        &format!(r#"autokill_kills_skipped_total{{reason="{reason}",resource="{resource}"}}"#),
    )
    .unwrap_or(0.0)
}

async fn stop(server: &Server, name: &str) {
    server
        .api_ok(
            "PUT",
            &format!("/v1/instances/{name}/stop"),
            Value::Null,
            "instances",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_is_deleted_after_time_ms_unless_started_again() {
    let server = server().await;
    for name in ["st", "again"] {
        create(
            &server,
            json!({"name": name, "image": "hello", "autostart": true, "autokill": {"time_ms": 300}}),
        )
        .await;
    }
    wait_state(&server, "st", "running").await;
    wait_state(&server, "again", "running").await;

    stop(&server, "st").await;
    let stopped = wait_state(&server, "st", "stopped").await;
    assert_eq!(stopped["stop_cause"], "user_stop", "{stopped}");
    assert!(stopped["stopped_at"].is_string(), "{stopped}");
    wait_gone(&server, "/v1/instances/st", "instances", 3).await;
    assert_eq!(kills(&server, "instance", "stopped_time").await, 1.0);

    // Starting it again before the time is up cancels the timer.
    stop(&server, "again").await;
    wait_state(&server, "again", "stopped").await;
    // The body form of start, as Unikraft's SDKs send it.
    server
        .api_ok(
            "PUT",
            "/v1/instances/start",
            json!([{"name": "again"}]),
            "instances",
        )
        .await;
    wait_state(&server, "again", "running").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let i = instance(&server, "again").await.expect("still there");
    assert_eq!(i["state"], "running");
    assert_eq!(kills(&server, "instance", "stopped_time").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_deleted_after_num_requests() {
    let server = server().await;
    let created = create(
        &server,
        json!({"name": "nr", "image": "hello", "autostart": true, "wait_timeout_ms": 5000,
               "autokill": {"num_requests": 3}}),
    )
    .await;
    assert_eq!(
        created["state"], "running",
        "wait_timeout_ms waited: {created}"
    );
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..4 {
            s.push(server.get("nr.localhost", "/").await.status.as_u16());
        }
        s
    };
    // The fourth finds it draining (503) or already deleted (404).
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!([503, 404].contains(&statuses[3]), "{statuses:?}");
    assert_eq!(
        server.upstream_log("nr").len(),
        3,
        "exactly three reached it"
    );
    wait_gone(&server, "/v1/instances/nr", "instances", 10).await;
    assert_eq!(kills(&server, "instance", "num_requests").await, 1.0);
}

/// SPEC: when an instance stops, (1) restart if the policy says so, else (2) destroy if
/// autodestroy matches the exit code, else (3) it stays stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_is_decided_before_autodestroy() {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Then {
        Restarted,
        Destroyed,
        Stopped,
    }
    use Then::*;
    // (restart_policy, autodestroy, exit code, what happens)
    let cases = [
        ("never", "OFF", 0, Stopped),
        ("never", "OFF", 3, Stopped),
        ("never", "ON_FAILURE", 0, Stopped),
        ("never", "ON_FAILURE", 3, Destroyed),
        ("never", "ON_SUCCESS", 0, Destroyed),
        ("never", "ON_SUCCESS", 3, Stopped),
        ("never", "ALWAYS", 0, Destroyed),
        ("never", "ALWAYS", 3, Destroyed),
        ("on-failure", "ON_FAILURE", 3, Restarted),
        ("on-failure", "ALWAYS", 3, Restarted),
        ("on-failure", "ALWAYS", 0, Destroyed),
        ("on-failure", "OFF", 0, Stopped),
        ("always", "OFF", 0, Restarted),
    ];
    let server = server().await;
    let name = |i: usize| format!("case-{i}");
    for (i, (restart, destroy, _, _)) in cases.iter().enumerate() {
        create(
            &server,
            json!({"name": name(i), "image": "hello", "autostart": true,
                   "restart_policy": restart, "autodestroy": destroy}),
        )
        .await;
    }
    let mut ports = Vec::new();
    for i in 0..cases.len() {
        let running = wait_state(&server, &name(i), "running").await;
        ports.push(running["private_port"].clone());
    }
    for (i, (_, _, code, _)) in cases.iter().enumerate() {
        let r = server
            .get(
                &format!("{}.localhost", name(i)),
                &format!("/__exit/{code}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", name(i), r.text());
    }
    for (i, (restart, destroy, code, then)) in cases.iter().enumerate() {
        let what = format!("{} ({restart}, {destroy}, exit {code}) {then:?}", name(i));
        match then {
            Restarted => {
                let mut last = Value::Null;
                server
                    .eventually(10, &what, async || {
                        last = instance(&server, &name(i)).await.unwrap_or_default();
                        last["state"] == "running" && last["exit_code"] == *code
                    })
                    .await;
                let r = server.get(&format!("{}.localhost", name(i)), "/").await;
                assert_eq!(r.status, StatusCode::OK, "{what}: serving again");
            }
            Destroyed => {
                wait_gone(
                    &server,
                    &format!("/v1/instances/{}", name(i)),
                    "instances",
                    10,
                )
                .await
            }
            Stopped => {
                let i = wait_state(&server, &name(i), "stopped").await;
                assert_eq!(i["exit_code"], *code, "{what}: {i}");
                assert_eq!(i["stop_cause"], "exited", "{what}: {i}");
            }
        }
    }
    // Nothing is decided twice: the stopped stay stopped, the restarted keep running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, (restart, destroy, code, then)) in cases.iter().enumerate() {
        let what = format!("{} ({restart}, {destroy}, exit {code})", name(i));
        let now = instance(&server, &name(i)).await;
        match then {
            Destroyed => assert!(now.is_none(), "{what}"),
            Stopped => assert_eq!(now.expect(&what)["state"], "stopped", "{what}"),
            Restarted => assert_eq!(now.expect(&what)["state"], "running", "{what}"),
        }
    }
    let destroyed = cases.iter().filter(|c| c.3 == Destroyed).count() as f64;
    assert_eq!(kills(&server, "instance", "autodestroy").await, destroyed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_template_is_deleted_and_clones_inherit_its_autokill() {
    let server = server().await;
    // A template nobody clones: deleted after its time.
    create(&server, json!({"name": "lonely", "image": "hello"})).await;
    let t = server
        .api_ok(
            "POST",
            "/v1/instances/templates",
            json!({"name": "lonely", "autokill": {"time_ms": 300}}),
            "instances",
        )
        .await;
    assert_eq!(t["state"], "template");
    wait_gone(&server, "/v1/instances/templates/lonely", "instances", 3).await;
    assert_eq!(kills(&server, "template", "unused").await, 1.0);

    // A template with clones.
    create(
        &server,
        json!({"name": "src", "image": "hello", "autokill": {"num_requests": 7}}),
    )
    .await;
    let t = server
        .api_ok(
            "POST",
            "/v1/instances/templates",
            json!({"name": "src", "autokill": {"time_ms": 300}}),
            "instances",
        )
        .await;
    let inherited = t["autokill"].clone();
    assert_eq!(inherited["num_requests"], 7, "{t}");
    // Clones run (a stopped clone would be subject to its inherited stopped time).
    let c1 = create(
        &server,
        json!({"name": "c1", "template": {"name": "src"}, "autostart": true}),
    )
    .await;
    // A clone inherits the template's spec: its num_requests and the stopped time of the instance
    // it was made from (none here); the template's own time_ms is its unused time.
    assert_eq!(
        c1["autokill"],
        json!({"num_requests": inherited["num_requests"], "time_ms": 0}),
        "a clone inherits: {c1}"
    );
    assert_eq!(c1["image"], "hello");
    assert_eq!(c1["template"]["name"], "src");
    let c2 = create(
        &server,
        json!({"name": "c2", "template": {"uuid": t["uuid"]}, "autostart": true,
               "autokill": {"num_requests": 2}}),
    )
    .await;
    assert_eq!(
        c2["autokill"]["num_requests"], 2,
        "the request overrides: {c2}"
    );
    assert_eq!(
        c2["autokill"]["time_ms"], 0,
        "the source's stopped time, not the unused time: {c2}"
    );
    wait_state(&server, "c1", "running").await;
    wait_state(&server, "c2", "running").await;

    // Past its time, but clones live: kept.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = find(&server, "/v1/instances/templates/src", "instances")
        .await
        .expect("a template with clones is kept");
    assert_eq!(t["clones"], 2);
    assert_eq!(kills(&server, "template", "unused").await, 1.0);

    // The last clone gone, it goes.
    server
        .api_ok(
            "DELETE",
            "/v1/instances",
            json!([{"name": "c1"}, {"name": "c2"}]),
            "instances",
        )
        .await;
    wait_gone(&server, "/v1/instances/templates/src", "instances", 3).await;
    assert_eq!(kills(&server, "template", "unused").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_group_is_deleted_after_time_ms() {
    let server = server().await;
    server
        .api_ok(
            "POST",
            "/v1/services",
            json!({"name": "empty", "domains": [{"name": "empty"}], "autokill": {"time_ms": 300}}),
            "service_groups",
        )
        .await;
    wait_gone(&server, "/v1/services/empty", "service_groups", 3).await;
    assert_eq!(kills(&server, "service_group", "empty").await, 1.0);

    // An instance joining cancels it; leaving re-arms it.
    server
        .api_ok(
            "POST",
            "/v1/services",
            json!({"name": "busy", "autokill": {"time_ms": 500}}),
            "service_groups",
        )
        .await;
    create(
        &server,
        json!({"name": "member", "image": "hello", "service_group": {"name": "busy"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let g = find(&server, "/v1/services/busy", "service_groups")
        .await
        .expect("a group with a member is kept");
    assert_eq!(g["instances"][0]["name"], "member");
    server
        .api_ok("DELETE", "/v1/instances/member", Value::Null, "instances")
        .await;
    assert!(
        find(&server, "/v1/services/busy", "service_groups")
            .await
            .is_some(),
        "not at once: the timer starts when it becomes empty"
    );
    wait_gone(&server, "/v1/services/busy", "service_groups", 3).await;
    assert_eq!(kills(&server, "service_group", "empty").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_lock_holds_every_kill_back_until_cleared() {
    let server = server().await;
    let lock = json!(true);
    let unlock = json!(false);

    // Stopped time.
    create(
        &server,
        json!({"name": "held", "image": "hello", "autostart": true, "autokill": {"time_ms": 300}}),
    )
    .await;
    wait_state(&server, "held", "running").await;
    patch(
        &server,
        "/v1/instances/held",
        "delete_lock",
        lock.clone(),
        "instances",
    )
    .await;
    stop(&server, "held").await;
    wait_state(&server, "held", "stopped").await;
    // Request limit, while locked: it keeps serving past it.
    create(
        &server,
        json!({"name": "busy", "image": "hello", "autostart": true, "autokill": {"num_requests": 2}}),
    )
    .await;
    wait_state(&server, "busy", "running").await;
    patch(
        &server,
        "/v1/instances/busy",
        "delete_lock",
        lock.clone(),
        "instances",
    )
    .await;
    for _ in 0..4 {
        assert_eq!(
            server.get("busy.localhost", "/").await.status,
            StatusCode::OK
        );
    }
    // Template unused, and group empty: locked first, the timer set after, so that a slow
    // machine cannot let it fire in between.
    create(&server, json!({"name": "tsrc", "image": "hello"})).await;
    server
        .api_ok(
            "POST",
            "/v1/instances/templates",
            json!({"name": "tsrc"}),
            "instances",
        )
        .await;
    let tpl = "/v1/instances/templates/tsrc";
    patch(&server, tpl, "delete_lock", lock.clone(), "instances").await;
    patch(
        &server,
        tpl,
        "autokill",
        json!({"time_ms": 300}),
        "instances",
    )
    .await;
    server
        .api_ok(
            "POST",
            "/v1/services",
            json!({"name": "grp"}),
            "service_groups",
        )
        .await;
    let grp = "/v1/services/grp";
    patch(&server, grp, "delete_lock", lock.clone(), "service_groups").await;
    patch(
        &server,
        grp,
        "autokill",
        json!({"time_ms": 300}),
        "service_groups",
    )
    .await;

    // Every trigger comes due (each counted as skipped), none fires.
    let held = [
        ("instance", "stopped_time"),
        ("instance", "num_requests"),
        ("template", "unused"),
        ("service_group", "empty"),
    ];
    server
        .eventually(10, "every kill due and skipped", async || {
            for (resource, reason) in held {
                if skipped(&server, resource, reason).await < 1.0 {
                    return false;
                }
            }
            true
        })
        .await;
    assert_eq!(
        instance(&server, "held").await.expect("held")["state"],
        "stopped"
    );
    assert_eq!(
        instance(&server, "busy").await.expect("busy")["state"],
        "running"
    );
    assert!(
        find(&server, "/v1/instances/templates/tsrc", "instances")
            .await
            .is_some()
    );
    assert!(
        find(&server, "/v1/services/grp", "service_groups")
            .await
            .is_some()
    );
    for (resource, reason) in held {
        assert_eq!(
            kills(&server, resource, reason).await,
            0.0,
            "{resource} {reason}"
        );
    }
    // Locked resources cannot be deleted by hand either.
    let (status, _) = server
        .api("DELETE", "/v1/instances/held", Value::Null)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = server.api("DELETE", "/v1/services/grp", Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Cleared: what came due fires at once.
    patch(
        &server,
        "/v1/instances/held",
        "delete_lock",
        unlock.clone(),
        "instances",
    )
    .await;
    patch(
        &server,
        "/v1/instances/busy",
        "delete_lock",
        unlock.clone(),
        "instances",
    )
    .await;
    patch(
        &server,
        "/v1/instances/templates/tsrc",
        "delete_lock",
        unlock.clone(),
        "instances",
    )
    .await;
    let (status, v) = server
        .api(
            "PATCH",
            "/v1/services/grp",
            json!({"prop": "delete_lock", "op": "set", "value": false}),
        )
        .await;
    // The group may be deleted by this very change; either answer is honest.
    assert!(
        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
        "{status} {v}"
    );
    wait_gone(&server, "/v1/instances/held", "instances", 2).await;
    wait_gone(&server, "/v1/instances/busy", "instances", 10).await;
    wait_gone(&server, "/v1/instances/templates/tsrc", "instances", 2).await;
    wait_gone(&server, "/v1/services/grp", "service_groups", 2).await;
    for (resource, reason) in [
        ("instance", "stopped_time"),
        ("instance", "num_requests"),
        ("template", "unused"),
        ("service_group", "empty"),
    ] {
        assert_eq!(
            kills(&server, resource, reason).await,
            1.0,
            "{resource} {reason}"
        );
    }
}

/// A one-shot instance (`num_requests: 1`) whose process exits right after its answer is killed
/// for its spent budget, whichever the controller hears first (the exit or the drain), and neither
/// its restart policy nor its autodestroy brings a spent instance back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_instance_that_exits_is_killed_and_never_revived() {
    let server = server().await;
    let cases = [
        ("os-never", "never", "OFF", 0),
        ("os-fail", "on-failure", "OFF", 3),
        ("os-always", "always", "OFF", 0),
        ("os-always-fail", "always", "OFF", 3),
        ("os-success", "never", "ON_SUCCESS", 3),
    ];
    for (name, restart, destroy, _) in cases {
        create(
            &server,
            json!({"name": name, "image": "hello", "autostart": true, "wait_timeout_ms": 5000,
                   "restart_policy": restart, "autodestroy": destroy,
                   "autokill": {"num_requests": 1}}),
        )
        .await;
    }
    for (name, _, _, code) in cases {
        wait_state(&server, name, "running").await;
        let host = format!("{name}.localhost");
        let resp = server.get(&host, &format!("/__exit/{code}")).await;
        assert_eq!(resp.status, StatusCode::OK, "{name}");
    }
    for (name, ..) in cases {
        wait_gone(&server, &format!("/v1/instances/{name}"), "instances", 10).await;
        assert_eq!(
            server.upstream_log(name).len(),
            1,
            "{name}: one request only"
        );
    }
    assert_eq!(
        kills(&server, "instance", "num_requests").await,
        cases.len() as f64,
        "{}",
        server.metrics().await
    );
    assert_eq!(kills(&server, "instance", "autodestroy").await, 0.0);
}

/// `autokill_timers_pending` counts the lifecycle timers armed: one for a stopped instance's
/// `time_ms`, none once it is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_pending_follows_the_armed_timers() {
    let server = server().await;
    let pending = async || sample(&server.metrics().await, "autokill_timers_pending");
    let before = pending().await.expect("autokill_timers_pending");
    create(
        &server,
        json!({"name": "waits", "image": "hello", "autokill": {"time_ms": 600000}}),
    )
    .await;
    assert_eq!(pending().await, Some(before + 1.0));
    let (status, _) = server
        .api("DELETE", "/v1/instances/waits", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    server
        .eventually(5, "the timer disarmed", async || {
            pending().await == Some(before)
        })
        .await;
}

/// A stop with `drain_timeout_ms` takes no new request, lets those in flight finish, then stops
/// (a user's stop: never restarted); the drain is bounded by the time given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_a_drain_lets_requests_in_flight_finish() {
    let server = server().await;
    for name in ["dr", "cut"] {
        create(
            &server,
            json!({"name": name, "image": "hello", "autostart": true, "wait_timeout_ms": 5000,
                   "restart_policy": "always"}),
        )
        .await;
    }
    let proxy = server.proxy;
    let slow = tokio::spawn(async move {
        common::try_request(proxy, "GET", "dr.localhost", "/__sleep/1500").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = server
        .api_ok(
            "PUT",
            "/v1/instances/dr/stop",
            json!({"drain_timeout_ms": 10000}),
            "instances",
        )
        .await;
    assert_eq!(stopping["state"], "stopping", "{stopping}");
    assert_eq!(
        server.get("dr.localhost", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no new request while draining"
    );
    let answered = slow.await.expect("join").expect("the slow request");
    assert_eq!(answered.0, StatusCode::OK, "the request in flight finished");
    let stopped = wait_state(&server, "dr", "stopped").await;
    assert_eq!(stopped["stop_cause"], "user_stop", "{stopped}");

    // Bounded: a request longer than the drain does not hold the stop.
    let slow = tokio::spawn(async move {
        common::try_request(proxy, "GET", "cut.localhost", "/__sleep/20000").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .api_ok(
            "PUT",
            "/v1/instances/cut/stop",
            json!({"drain_timeout_ms": 300}),
            "instances",
        )
        .await;
    wait_state(&server, "cut", "stopped").await;
    // Cut off when the instance stopped: never a full answer.
    let cut = slow.await.expect("join");
    assert!(!matches!(cut, Ok((StatusCode::OK, ..))), "{cut:?}");
    // Out of range is refused, naming the field.
    let (status, v) = server
        .api(
            "PUT",
            "/v1/instances/cut/stop",
            json!({"drain_timeout_ms": -1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("drain_timeout_ms"), "{v}");
}
