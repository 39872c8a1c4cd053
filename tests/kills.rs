//! Kill storms and pacing, through the real binary: budgets drawn with `autokill.jitter` are
//! what the proxy enforces, and a storm of instances spending their budgets together is
//! carried out whole (`runtime.max_concurrent_kills` places at a time) while the proxy keeps
//! serving the rest.

mod common;

use common::{Server, hello_runtime, request};
use serde_json::{Value, json};

/// The `runtime:` block of the tests, with `extra` keys (indented by two spaces) in it.
fn runtime_with(dir: &std::path::Path, extra: &str) -> String {
    hello_runtime(dir, "").replacen("runtime:\n", &format!("runtime:\n{extra}"), 1)
}

async fn instances(server: &Server) -> Vec<Value> {
    let v = server.admin_json("/v1/instances").await;
    v["data"]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// With `autokill.jitter: 0.5`, an instance created with `num_requests: 20` is given a budget
/// in [10, 20], shown by the API; the proxy forwards exactly that many requests and refuses
/// the next, and the instance is killed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drawn_budget_is_shown_and_enforced_exactly() {
    let server =
        Server::start(|dir| format!("{}autokill:\n  jitter: 0.5\n", hello_runtime(dir, ""))).await;
    // Several, so that one drew below what was asked (each draws 20 with chance 1/11).
    let mut drawn = Vec::new();
    for i in 0..8 {
        let name = format!("j{i}");
        let v = server
            .api_ok(
                "POST",
                "/v1/instances",
                json!({"name": name, "image": "hello", "autostart": true,
                       "wait_timeout_ms": 10000, "autokill": {"num_requests": 20}}),
                "instances",
            )
            .await;
        assert_eq!(v["state"], "running", "{v}");
        let shown = server.admin_json(&format!("/v1/instances/{name}")).await["data"]["instances"]
            [0]["autokill"]["num_requests"]
            .as_u64()
            .expect("num_requests shown");
        assert_eq!(v["autokill"]["num_requests"].as_u64(), Some(shown), "{v}");
        assert!((10..=20).contains(&shown), "{name}: {shown}");
        drawn.push((name, shown));
    }
    let (name, budget) = drawn
        .iter()
        .min_by_key(|(_, n)| *n)
        .cloned()
        .expect("eight instances");
    assert!(budget < 20, "no budget was cut: {drawn:?}");
    let host = format!("{name}.localhost");
    for k in 1..=budget {
        let r = server.get(&host, "/").await;
        assert_eq!(r.status.as_u16(), 200, "request {k} of {budget}");
    }
    let over = server.get(&host, "/").await.status.as_u16();
    assert!(
        [503, 404].contains(&over),
        "request {} answered {over}",
        budget + 1
    );
    assert_eq!(
        server.upstream_log(&name).len() as u64,
        budget,
        "exactly the drawn budget reached it"
    );
    server
        .eventually(20, "the instance killed at its drawn budget", async || {
            instances(&server)
                .await
                .iter()
                .all(|i| i["name"] != name.as_str())
        })
        .await;
}

/// A storm: 100 instances (num_requests 3) spend their budgets at once, with
/// `max_concurrent_kills: 8`. Every one is deleted and its process gone, none is lost in the
/// queue, each served exactly its budget, and an instance without a limit keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_deletes_every_instance_and_leaves_no_process() {
    const STORM: usize = 100;
    const BUDGET: usize = 3;
    let server = Server::start(|dir| {
        let mut body = runtime_with(dir, "  max_concurrent_kills: 8\n");
        body.push_str("instances:\n  - {name: steady, image: hello}\n");
        for i in 0..STORM {
            body.push_str(&format!(
                "  - {{name: s{i}, image: hello, autokill: {{num_requests: {BUDGET}}}}}\n"
            ));
        }
        body
    })
    .await;
    server
        .eventually(60, "every instance running", async || {
            let all = instances(&server).await;
            all.len() == STORM + 1 && all.iter().all(|i| i["state"] == "running")
        })
        .await;
    assert_eq!(server.instance_pids().len(), STORM + 1, "one process each");

    let requests: Vec<_> = (0..STORM)
        .flat_map(|i| (0..BUDGET).map(move |_| i))
        .map(|i| {
            let proxy = server.proxy;
            tokio::spawn(async move {
                request(proxy, "GET", &format!("s{i}.localhost"), "/")
                    .await
                    .status
                    .as_u16()
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.expect("no panic"), 200, "within the budget");
    }
    // While the storm is carried out, the rest is served.
    let steady = server.get("steady.localhost", "/").await.status.as_u16();
    assert_eq!(steady, 200);

    server
        .eventually(60, "every storm instance deleted", async || {
            instances(&server).await.len() == 1
        })
        .await;
    server
        .eventually(20, "every storm process gone", async || {
            server.instance_pids().len() == 1
        })
        .await;
    for i in 0..STORM {
        assert_eq!(server.upstream_log(&format!("s{i}")).len(), BUDGET, "s{i}");
    }
    let metrics = server.metrics().await;
    let kills = common::sample(
        &metrics,
        r#"autokill_kills_total{reason="num_requests",resource="instance"}"#,
    );
    assert_eq!(kills, Some(STORM as f64), "every kill counted once");
    assert_eq!(
        server.get("steady.localhost", "/").await.status.as_u16(),
        200
    );
}
