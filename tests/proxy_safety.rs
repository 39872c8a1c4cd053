//! The proxy against clients that misbehave: ambiguous hosts, `CONNECT`, stalled request bodies,
//! silent connections (also under a low open-file limit), and clients that stop reading while an
//! instance drains. Each test failed on the proxy before these protections.

mod common;

use std::time::{Duration, Instant};

use common::{Server, hello_runtime, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn solo(limit: u64) -> impl FnOnce(&std::path::Path) -> String {
    move |dir| {
        format!(
            "{}instances:\n  - name: solo\n    image: hello\n    autokill: {{ num_requests: {limit} }}\n",
            hello_runtime(dir, "")
        )
    }
}

async fn wait_running(server: &Server) {
    server
        .eventually(10, "solo running", async || {
            server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["state"]
                == "running"
        })
        .await;
}

/// Sends raw bytes and reads the answer until the server closes or `secs` pass.
async fn raw(addr: std::net::SocketAddr, request: &[u8], secs: u64) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(secs), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn requests_of(server: &Server) -> u64 {
    server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["requests"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_malformed_hosts_are_400_and_absolute_form_sets_host() {
    let server = Server::start(solo(0)).await;
    wait_running(&server).await;
    let p = server.proxy;
    for (what, request) in [
        (
            "two Host fields",
            &b"GET / HTTP/1.1\r\nHost: solo.localhost\r\nHost: other.localhost\r\nConnection: close\r\n\r\n"[..],
        ),
        ("empty Host", b"GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n"),
        (
            "a port that is not a number",
            b"GET / HTTP/1.1\r\nHost: solo.localhost:abc\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let resp = raw(p, request, 10).await;
        assert_eq!(status_of(&resp), 400, "{what}: {resp}");
    }
    // Absolute form: routed by the target's authority, and the instance gets that as its Host.
    // A Host that names another host than the target is ambiguous (which one did the client
    // mean, and which one will the instance read?): 400, as HAProxy answers it.
    let resp = raw(
        p,
        b"GET http://solo.localhost/__headers HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        10,
    )
    .await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    let resp = raw(
        p,
        b"GET http://solo.localhost/__headers HTTP/1.1\r\nHost: Solo.Localhost\r\nConnection: close\r\n\r\n",
        10,
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let saw = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let hosts: Vec<&str> = saw.lines().filter(|l| l.starts_with("host:")).collect();
    assert_eq!(hosts, ["host: solo.localhost"], "{saw}");
    assert_eq!(
        requests_of(&server).await,
        1,
        "only the absolute-form request counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_not_counted() {
    let server = Server::start(solo(0)).await;
    wait_running(&server).await;
    let resp = raw(
        server.proxy,
        b"CONNECT solo.localhost:80 HTTP/1.1\r\nHost: solo.localhost:80\r\n\r\n",
        5,
    )
    .await;
    let status = status_of(&resp);
    assert!(status == 405 || status == 400, "{resp}");
    assert_eq!(requests_of(&server).await, 0);
    assert!(
        server.upstream_log("solo").is_empty(),
        "CONNECT reached the instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_408_and_the_clients_fault() {
    let server = Server::start_with(
        solo(0),
        "  request_body_timeout: 500ms\n  upstream_timeout: 5s\n",
    )
    .await;
    wait_running(&server).await;
    let start = Instant::now();
    // Ten bytes announced, two sent, then nothing.
    let resp = raw(
        server.proxy,
        b"POST /upload HTTP/1.1\r\nHost: solo.localhost\r\nContent-Length: 10\r\n\r\nab",
        15,
    )
    .await;
    let took = start.elapsed();
    assert_eq!(status_of(&resp), 408, "after {took:?}: {resp}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"autokill_proxy_refused_total{reason="body_timeout"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("autokill_upstream_errors_total{") && !l.ends_with(" 0")),
        "counted as an upstream error:\n{metrics}"
    );
}

/// Opens `n` connections that never send a byte.
async fn silent(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.expect("connect"));
    }
    out
}

/// Waits until the server closes `s` (a read returns end of file or an error).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_on_both_listeners() {
    let server = Server::start_config_for_test(
        solo(0),
        "  header_read_timeout: 500ms\n",
        "  header_read_timeout: 500ms\n",
    )
    .await;
    let mut proxy = silent(server.proxy, 5).await;
    let mut admin = silent(server.admin, 5).await;
    for (what, conns) in [("proxy", &mut proxy), ("admin", &mut admin)] {
        for s in conns.iter_mut() {
            assert!(
                closed_within(s, Duration::from_secs(5)).await,
                "a silent {what} connection was left open"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_under_a_low_file_limit_leave_the_server_answering() {
    let server = Server::start_with_file_limit(
        solo(0),
        "  header_read_timeout: 1s\n",
        "  header_read_timeout: 1s\n",
        256,
    )
    .await;
    wait_running(&server).await;
    // More silent sockets than the process may open files.
    let _held = silent(server.proxy, 300).await;
    let start = Instant::now();
    let live = common::try_get(server.admin, "localhost", "/livez").await;
    assert_eq!(
        live,
        Ok(hyper::StatusCode::OK),
        "after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "/livez took {:?}",
        start.elapsed()
    );
    // The proxy serves again once the silent ones are closed (they time out after 1 s).
    server
        .eventually(15, "the proxy answers", async || {
            common::try_get(server.proxy, "solo.localhost", "/").await == Ok(hyper::StatusCode::OK)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_the_drain() {
    let server = Server::start_with(
        |dir| format!("{}defaults:\n  drain_timeout: 60s\n", solo(1)(dir)),
        "  response_write_timeout: 1s\n",
    )
    .await;
    wait_running(&server).await;
    // The last request of the budget asks for far more than the socket buffers hold, and the
    // client reads none of it.
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(b"GET /__bytes/67108864 HTTP/1.1\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    let start = Instant::now();
    server
        .eventually(20, "the spent instance deleted", async || {
            server.admin_json("/v1/instances").await["data"]["instances"] == serde_json::json!([])
        })
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "held for {:?}",
        start.elapsed()
    );
    drop(s);
}
