//! The proxy as an HTTP intermediary: hop-by-hop fields, X-Forwarded-For and Via, upstream
//! failures (502, 504), and protocol upgrades — against a real `autokill hello` upstream.

mod common;

use std::time::{Duration, Instant};

use common::{Server, hello_runtime, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn solo(dir: &std::path::Path) -> String {
    format!(
        "{}instances:\n  - name: solo\n    image: hello\n",
        hello_runtime(dir, "")
    )
}

async fn start() -> Server {
    let server = Server::start_with(solo, "  upstream_timeout: 500ms\n").await;
    server
        .eventually(10, "solo running", async || {
            server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["state"]
                == "running"
        })
        .await;
    server
}

/// Sends raw bytes and reads until the server closes (requests carry `Connection: close`).
async fn raw(server: &Server, request: &str) -> String {
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn head_and_body(resp: &str) -> (String, String) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_are_stripped_and_forwarding_fields_added() {
    let server = start().await;
    let resp = raw(
        &server,
        "GET /__headers HTTP/1.1\r\nHost: solo.localhost\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 10.1.2.3\r\nVia: 1.1 edge\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    let (head, upstream_saw) = head_and_body(&resp);
    assert!(head.starts_with("http/1.1 200"), "{resp}");
    let saw: Vec<&str> = upstream_saw.lines().collect();
    for gone in [
        "connection:",
        "x-secret:",
        "keep-alive:",
        "proxy-connection:",
        "te:",
        "upgrade:",
    ] {
        assert!(
            !saw.iter().any(|l| l.starts_with(gone)),
            "{gone} reached the upstream: {saw:?}"
        );
    }
    assert!(saw.contains(&"x-end-to-end: kept"), "{saw:?}");
    assert!(
        saw.contains(&"x-forwarded-for: 10.1.2.3, 127.0.0.1"),
        "one X-Forwarded-For list: {saw:?}"
    );
    assert!(
        saw.contains(&"via: 1.1 edge") && saw.contains(&"via: 1.1 autokill"),
        "{saw:?}"
    );
    assert!(
        saw.contains(&"host: solo.localhost"),
        "Host is preserved: {saw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_are_stripped_from_responses() {
    let server = start().await;
    let resp = raw(
        &server,
        "GET /__hop HTTP/1.1\r\nHost: solo.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = head_and_body(&resp);
    assert!(head.starts_with("http/1.1 200"), "{resp}");
    assert_eq!(body, "hop\n");
    for gone in [
        "x-hello-hop:",
        "keep-alive:",
        "proxy-connection:",
        "connection: x-hello-hop",
    ] {
        assert!(!head.contains(gone), "{gone} reached the client:\n{head}");
    }
    assert!(head.contains("x-hello-end-to-end: 1"), "{head}");
    assert!(head.contains("via: 1.1 autokill"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_without_answer_is_502() {
    let server = start().await;
    let r = server.get("solo.localhost", "/__close").await;
    assert_eq!(r.status.as_u16(), 502, "{}", r.text());
    // The proxy is unharmed: the next request is served.
    assert_eq!(server.get("solo.localhost", "/").await.status.as_u16(), 200);
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"autokill_upstream_errors_total{kind="protocol"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_upstream_is_504_after_upstream_timeout() {
    let server = start().await;
    let start = Instant::now();
    let r = server.get("solo.localhost", "/__sleep/5000").await;
    let took = start.elapsed();
    assert_eq!(r.status.as_u16(), 504, "{}", r.text());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"autokill_upstream_errors_total{kind="timeout"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    // A slow answer inside the timeout is fine.
    assert_eq!(
        server
            .get("solo.localhost", "/__sleep/100")
            .await
            .status
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_passes_through_after_101() {
    let server = start().await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(b"GET /__echo HTTP/1.1\r\nHost: solo.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.expect("write");
    let head = common::read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping through the tunnel")
        .await
        .expect("write");
    let mut echoed = [0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&echoed, b"ping through the tunnel");
    // The upgrade counted as one request.
    let v = server.admin_json("/v1/instances/solo").await;
    assert_eq!(v["data"]["instances"][0]["requests"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served() {
    use http_body_util::BodyExt;
    let server = start().await;
    let stream = TcpStream::connect(server.proxy).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        // HTTP/2 carries the host in :authority; the proxy routes by it.
        let req = hyper::Request::builder()
            .uri(format!("http://solo.localhost/h2?x={i}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2c request");
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            format!("hello from solo: /h2?x={i}\n").as_bytes()
        );
    }
    assert_eq!(server.upstream_log("solo").len(), 3);
}
