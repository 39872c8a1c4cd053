//! The counting proxy end to end: the real binary, real `autokill hello` upstream processes.

mod common;

use std::time::Duration;

use common::{Server, hello_runtime, sample};
use hyper::StatusCode;

fn one_instance(limit: u64) -> impl FnOnce(&std::path::Path) -> String {
    move |dir| {
        format!(
            "{runtime}instances:\n  - name: solo\n    image: hello\n    autokill: {{ num_requests: {limit} }}\n",
            runtime = hello_runtime(dir, "")
        )
    }
}

fn group(limit: u64) -> impl FnOnce(&std::path::Path) -> String {
    move |dir| {
        format!(
            "{runtime}service_groups:\n  - name: web\n    domains: [web]\n    instances:\n      - name: web-1\n        image: hello\n        autokill: {{ num_requests: {limit} }}\n      - name: web-2\n        image: hello\n        autokill: {{ num_requests: {limit} }}\n",
            runtime = hello_runtime(dir, "")
        )
    }
}

async fn wait_running(server: &Server, names: &[&str]) {
    server
        .eventually(10, "instances running", async || {
            let v = server.admin_json("/v1/instances").await;
            names.iter().all(|n| {
                v["data"]["instances"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| i["name"] == *n && i["state"] == "running"))
            })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_n_requests_reach_an_instance_then_it_is_killed() {
    let server = Server::start(one_instance(5)).await;
    wait_running(&server, &["solo"]).await;
    assert_eq!(server.instance_pids().len(), 1, "one upstream process");

    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = server.get("solo.localhost", &format!("/r{i}")).await;
        if r.status == StatusCode::OK {
            assert_eq!(r.text(), format!("hello from solo: /r{i}\n"));
        } else if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                r.headers.get("retry-after").map(|v| v.as_bytes()),
                Some(&b"1"[..]),
                "503 carries Retry-After"
            );
        }
        // Spent: 503 while it drains, 404 once it is deleted (which may come first).
        statuses.push(match r.status.as_u16() {
            404 => 503,
            other => other,
        });
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503, 503, 503]);
    assert_eq!(
        server.upstream_log("solo"),
        (0..5).map(|i| format!("GET /r{i}")).collect::<Vec<_>>(),
        "the upstream saw exactly the first five"
    );

    server
        .eventually(10, "instance process gone", async || {
            server.instance_pids().is_empty()
        })
        .await;
    server
        .eventually(5, "instance removed from the API", async || {
            server.admin_json("/v1/instances").await["data"]["instances"] == serde_json::json!([])
        })
        .await;
    let r = server.get("solo.localhost", "/after").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a deleted instance has no route"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"autokill_kills_total{reason="num_requests",resource="instance"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("autokill_instance_requests_total{"),
        "a deleted instance's series is gone:\n{metrics}"
    );
    // Three refused while spent (503, or 404 once deleted) and the one after: all counted.
    let refused = |reason: &str| {
        sample(
            &metrics,
            &format!(r#"autokill_proxy_refused_total{{reason="{reason}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(refused("exhausted") + refused("no_route"), 4.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_read_the_meter() {
    let server = Server::start(one_instance(0)).await;
    wait_running(&server, &["solo"]).await;
    for _ in 0..7 {
        assert_eq!(
            server.get("solo.localhost", "/").await.status,
            StatusCode::OK
        );
    }
    let v = server.admin_json("/v1/instances/solo").await;
    let id = v["data"]["instances"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    assert_eq!(v["data"]["instances"][0]["requests"], 7);
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            &format!(r#"autokill_instance_requests_total{{instance_id="{id}",name="solo"}}"#)
        ),
        Some(7.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"autokill_instances{state="running"}"#),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_traffic_moves_to_the_remaining_instance_then_503() {
    let server = Server::start(group(3)).await;
    wait_running(&server, &["web-1", "web-2"]).await;
    let mut ok = 0;
    for _ in 0..6 {
        let r = server.get("web.localhost", "/").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        ok += 1;
    }
    assert_eq!(ok, 6);
    assert_eq!(server.upstream_log("web-1").len(), 3);
    assert_eq!(server.upstream_log("web-2").len(), 3);
    let r = server.get("web.localhost", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    server
        .eventually(10, "both instance processes gone", async || {
            server.instance_pids().is_empty()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_skips_an_instance_killed_early() {
    // web-1 has a budget of 1, web-2 of 100: after web-1 is spent the group keeps answering.
    let server = Server::start(|dir| {
        format!(
            "{runtime}service_groups:\n  - name: web\n    domains: [web]\n    instances:\n      - name: web-1\n        image: hello\n        autokill: {{ num_requests: 1 }}\n      - name: web-2\n        image: hello\n        autokill: {{ num_requests: 100 }}\n",
            runtime = hello_runtime(dir, "")
        )
    })
    .await;
    wait_running(&server, &["web-1", "web-2"]).await;
    for _ in 0..20 {
        assert_eq!(
            server.get("web.localhost", "/").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(server.upstream_log("web-1").len(), 1);
    assert_eq!(server.upstream_log("web-2").len(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_clients_forward_exactly_n() {
    const N: u64 = 150;
    let server = Server::start(one_instance(N)).await;
    wait_running(&server, &["solo"]).await;
    let proxy = server.proxy;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let mut ok = 0u64;
                for j in 0..3 {
                    let r = common::request(proxy, "GET", "solo.localhost", &format!("/c{i}-{j}"))
                        .await;
                    match r.status {
                        StatusCode::OK => ok += 1,
                        // Spent, then deleted: both are refusals.
                        StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND => {}
                        other => panic!("unexpected {other}: {}", r.text()),
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("client task");
    }
    assert_eq!(ok, N, "clients got exactly N answers from the upstream");
    assert_eq!(
        server.upstream_log("solo").len() as u64,
        N,
        "the upstream saw exactly N"
    );
    server
        .eventually(10, "instance process gone", async || {
            server.instance_pids().is_empty()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_404_and_missing_host_is_400() {
    let server = Server::start(one_instance(0)).await;
    let r = server.get("nobody.localhost", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // HTTP/1.0 without Host.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.proxy)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    assert!(
        out.starts_with(b"HTTP/1.0 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_instances_and_exits_cleanly() {
    let mut server = Server::start(one_instance(0)).await;
    wait_running(&server, &["solo"]).await;
    assert_eq!(server.instance_pids().len(), 1);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        server.instance_pids().is_empty(),
        "no instance outlives the server"
    );
}
