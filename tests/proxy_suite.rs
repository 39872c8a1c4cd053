//! Documented proxy behaviour that had no test: round-robin order, `least_inflight`, 503 for a
//! stopped instance, request bodies streamed (not buffered), and upstream connections reused.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Server, hello_runtime, sockets_to};
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn group(members: &[&str]) -> impl FnOnce(&std::path::Path) -> String {
    let instances: String = members
        .iter()
        .map(|m| format!("      - name: {m}\n        image: hello\n"))
        .collect();
    move |dir| {
        format!(
            "{}service_groups:\n  - name: web\n    domains: [web]\n    instances:\n{instances}",
            hello_runtime(dir, "")
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

/// The instance that answered: `hello from NAME: PATH`.
fn answered_by(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .strip_prefix("hello from ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or("?")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_each_instance_in_turn() {
    let names = ["web-1", "web-2", "web-3"];
    let server = Server::start(group(&names)).await;
    wait_running(&server, &names).await;
    // One keep-alive connection stays on one worker, whose cursor moves one step per request.
    let stream = TcpStream::connect(server.proxy).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut order = Vec::new();
    for _ in 0..6 {
        let req = hyper::Request::builder()
            .uri("/")
            .header("host", "web.localhost")
            .body(Empty::<Bytes>::new())
            .expect("request");
        // The previous answer read to its end; the connection takes the next once it is idle.
        sender.ready().await.expect("connection ready");
        let resp = sender.send_request(req).await.expect("answer");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        order.push(answered_by(&body));
    }
    let first: Vec<&String> = order[..3].iter().collect();
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "each instance once per turn: {order:?}");
    assert_eq!(
        order[..3],
        order[3..],
        "the same order every turn: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_inflight_avoids_the_busy_instance() {
    let names = ["web-1", "web-2"];
    let server = Server::start_with(group(&names), "  balance: least_inflight\n").await;
    wait_running(&server, &names).await;
    let proxy = server.proxy;
    let slow = tokio::spawn(async move {
        common::request(proxy, "GET", "web.localhost", "/__sleep/3000").await
    });
    let mut busy = String::new();
    server
        .eventually(5, "the slow request reached an instance", async || {
            busy = names
                .iter()
                .find(|n| {
                    server
                        .upstream_log(n)
                        .iter()
                        .any(|l| l.contains("/__sleep/"))
                })
                .map_or_else(String::new, |n| (*n).to_owned());
            !busy.is_empty()
        })
        .await;
    for i in 0..4 {
        let r = server.get("web.localhost", &format!("/quick{i}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(answered_by(&r.body), busy, "sent to the busy instance");
    }
    assert_eq!(slow.await.expect("slow request").status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_is_503_with_retry_after() {
    let server = Server::start(|dir| {
        format!(
            "{}instances:\n  - name: solo\n    image: hello\n",
            hello_runtime(dir, "")
        )
    })
    .await;
    wait_running(&server, &["solo"]).await;
    server
        .api_ok(
            "PUT",
            "/v1/instances/solo/stop",
            serde_json::Value::Null,
            "instances",
        )
        .await;
    server
        .eventually(10, "solo stopped", async || {
            server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["state"]
                == "stopped"
        })
        .await;
    let r = server.get("solo.localhost", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(
        r.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_streamed_not_buffered() {
    let server = Server::start(|dir| {
        format!(
            "{}instances:\n  - name: solo\n    image: hello\n",
            hello_runtime(dir, "")
        )
    })
    .await;
    wait_running(&server, &["solo"]).await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(
        b"POST /stream HTTP/1.1\r\nHost: solo.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nfirst\r\n",
    )
    .await
    .expect("write the first chunk");
    // The instance has the request while the client still holds back the rest of the body.
    server
        .eventually(
            5,
            "the upstream saw the request before its body ended",
            async || {
                server
                    .upstream_log("solo")
                    .iter()
                    .any(|l| l == "POST /stream")
            },
        )
        .await;
    s.write_all(b"4\r\nlast\r\n0\r\n\r\n")
        .await
        .expect("write the rest");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let server = Server::start(|dir| {
        format!(
            "{}instances:\n  - name: solo\n    image: hello\n",
            hello_runtime(dir, "")
        )
    })
    .await;
    wait_running(&server, &["solo"]).await;
    let port =
        server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["private_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("private_port");
    for i in 0..20 {
        assert_eq!(
            server.get("solo.localhost", &format!("/r{i}")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(server.upstream_log("solo").len(), 20);
    // Twenty requests, each on a new client connection that may land on either worker: at
    // most one pooled upstream connection per worker.
    let open = sockets_to(port, "01");
    assert!(
        (1..=2).contains(&open),
        "{open} upstream connections for 20 sequential requests"
    );
}
