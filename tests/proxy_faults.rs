//! Upstream faults and shutdown, as a client sees them: a refused connect answered 502 at once,
//! a hung upstream 504 at `upstream_timeout` (±10 %), a reset in the middle of a body aborts the
//! client's response (never a complete response with a short body), an instance killed with
//! requests in flight fails them cleanly and its count stays exact, and SIGTERM lets in-flight
//! requests finish with `Connection: close` while idle keep-alive connections see an orderly
//! close, never a reset.

mod common;

use std::time::{Duration, Instant};

use common::{read_head, read_response, sockets_to, start_solo as start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request on a new connection (`Connection: close`): the status and how long it took.
async fn timed(addr: std::net::SocketAddr, path: &str) -> (u16, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: solo.localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let head = read_head(&mut s).await;
    let took = start.elapsed();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_502_within_100ms() {
    let server = start("  pool_idle_per_instance: 0\n").await;
    assert_eq!(timed(server.proxy, "/__listen/close").await.0, 200);
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let (status, took) = timed(server.proxy, "/refused").await;
        assert_eq!(status, 502);
        fastest = fastest.min(took);
    }
    assert!(
        fastest < Duration::from_millis(100),
        "502 after {fastest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_is_504_at_the_timeout() {
    let server = start("  upstream_timeout: 1s\n").await;
    let (status, took) = timed(server.proxy, "/__sleep/10000").await;
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(1100),
        "504 after {took:?} (upstream_timeout 1s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_with_requests_in_flight_fails_them_and_counts_exactly() {
    let server = start("").await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let addr = server.proxy;
        clients.push(tokio::spawn(async move {
            timed(addr, &format!("/__sleep/5000?{i}")).await
        }));
    }
    server
        .eventually(10, "five requests at the instance", async || {
            server.upstream_log("solo").len() == 5
        })
        .await;
    for pid in server.instance_pids() {
        // SAFETY: a signal to a child process of the server under test.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let killed = Instant::now();
    for client in clients {
        let (status, _) = client.await.expect("client");
        assert_eq!(status, 502, "a request in flight on a killed instance");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
    let requests =
        server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["requests"].as_u64();
    assert_eq!(
        requests,
        Some(5),
        "the five forwarded requests, counted once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_closes_idle_connections_cleanly() {
    let server = start("").await;
    // An idle keep-alive connection, and one with a request in flight.
    let mut idle = TcpStream::connect(server.proxy).await.expect("connect");
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut idle).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut busy = TcpStream::connect(server.proxy).await.expect("connect");
    busy.write_all(b"GET /__sleep/1000 HTTP/1.1\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    server
        .eventually(10, "the slow request at the instance", async || {
            server
                .upstream_log("solo")
                .iter()
                .any(|l| l.contains("__sleep"))
        })
        .await;
    let exit = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server.terminate();
        (server, status)
    });
    // The request in flight is answered whole, and told that the connection ends.
    let (head, body) = read_response(&mut busy).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "hello from solo: /__sleep/1000\n");
    // The idle connection is closed in order: end of file, not a reset.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(read.is_ok(), "the idle connection was reset: {read:?}");
    assert!(rest.is_empty(), "{rest:?}");
    let (_server, status) = exit.await.expect("terminate");
    assert!(status.success(), "exit status {status:?}");
}

/// Upstreams that break in the middle of a body, with the proxy in this process.
mod resets {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// An upstream that answers every request with a head announcing 100 bytes (by length, or
    /// chunked for `/chunked`), sends 10 of them, and resets the connection.
    async fn resetting() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let answer: &[u8] = if buf.starts_with(b"GET /chunked ") {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123456789"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
                    };
                    let _ = s.write_all(answer).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    // SO_LINGER 0: the close sends a reset.
                    let _ = s.set_zero_linger();
                    drop(s);
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_mid_body_aborts_the_clients_response() {
        let proxy = super::common::start_proxy(resetting().await);
        for path in ["/length", "/chunked"] {
            let mut s = TcpStream::connect(proxy.local_addr())
                .await
                .expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: up.localhost\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let head = super::common::read_head(&mut s).await;
            assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
            let mut body = Vec::new();
            let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut body))
                .await
                .expect("the connection ends");
            // Closed (or reset) with the body short of what was announced: for a length, fewer
            // bytes; for chunks, no last chunk. Never a response that looks complete.
            if path == "/length" {
                assert!(
                    head.contains("content-length: 100") && body.len() < 100,
                    "{path}: {head}{body:?} {ended:?}"
                );
            } else {
                assert!(
                    head.contains("transfer-encoding: chunked") && !body.ends_with(b"0\r\n\r\n"),
                    "{path}: {head}{body:?} {ended:?}"
                );
            }
        }
        proxy.shutdown().await;
    }
}

/// An instance that leaves the route table while its process lives on (killed at its limit, its
/// delete waiting for a place among `runtime.max_concurrent_kills`, as in a kill storm) is not
/// woken by the proxy closing its idle pooled connections: they wait for the instance's exit to
/// close them. So the instance's end closes first: its side of each holds TIME_WAIT, the
/// proxy's side none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_pooled_connections_are_closed_by_its_exit_not_by_the_proxy() {
    let server = common::Server::start(|_| {
        format!(
            r#"runtime:
  kind: process
  stop_grace: 2s
  max_concurrent_kills: 1
  images:
    hello:
      command: ["{bin}", "hello", "--listen", "127.0.0.1:{{port}}", "--name", "{{name}}"]
    stubborn:
      command: [sh, -c, "trap '' TERM; {bin} hello --listen 127.0.0.1:{{port}} --name {{name}} & while :; do sleep 1; done"]
instances:
  - {{ name: stubborn, image: stubborn, autokill: {{ num_requests: 1 }} }}
  - {{ name: last, image: hello, autokill: {{ num_requests: 5 }} }}
"#,
            bin = common::BIN,
        )
    })
    .await;
    let shown = async |name: &str| {
        server.admin_json(&format!("/v1/instances/{name}")).await["data"]["instances"][0].clone()
    };
    for name in ["stubborn", "last"] {
        server
            .eventually(10, &format!("{name} running"), async || {
                shown(name).await["state"] == "running"
            })
            .await;
    }
    let port = shown("last").await["private_port"]
        .as_u64()
        .expect("private_port") as u16;
    let closed_by_proxy = common::sockets_to(port, "06");
    // Four requests at once: four upstream connections, pooled when their answers end.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let addr = server.proxy;
            tokio::spawn(async move {
                common::request(addr, "GET", "last.localhost", &format!("/__sleep/200?{i}"))
                    .await
                    .status
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.expect("client"), 200);
    }
    let pooled = common::sockets_to(port, "01");
    assert!(pooled >= 2, "{pooled} pooled connections to the instance");
    // stubborn is killed first; its shell ignores SIGTERM, so its delete holds the only place
    // for the 2 s stop_grace.
    let first = common::request(server.proxy, "GET", "stubborn.localhost", "/").await;
    assert_eq!(first.status, 200);
    // The fifth request spends last's budget: it leaves the route table at once, and its
    // delete waits its turn while the workers take up the new table (every 250 ms).
    let fifth = common::request(server.proxy, "GET", "last.localhost", "/").await;
    assert_eq!(fifth.status, 200);
    server
        .eventually(10, "every connection to last closed", async || {
            common::sockets_to(port, "01") == 0 && common::sockets_to(port, "08") == 0
        })
        .await;
    assert_eq!(
        common::sockets_to(port, "06"),
        closed_by_proxy,
        "the proxy closed connections to the instance before it exited"
    );
    let closed_by_instance = common::sockets_from(port, "06");
    assert!(
        closed_by_instance >= pooled,
        "{closed_by_instance} connections closed by the instance, {pooled} were pooled"
    );
}

/// A deleted instance's idle pooled connections are closed although no request comes after the
/// delete: the workers take up the new route table on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_instances_pooled_connections_close_without_traffic() {
    let server = common::Server::start(|dir| common::hello_runtime(dir, "")).await;
    let made = server
        .api(
            "POST",
            "/v1/instances",
            serde_json::json!({"name": "pooled", "image": "hello", "autostart": true}),
        )
        .await;
    assert_eq!(made.0, 200, "{}", made.1);
    let shown =
        async || server.admin_json("/v1/instances/pooled").await["data"]["instances"][0].clone();
    server
        .eventually(10, "pooled running", async || {
            shown().await["state"] == "running"
        })
        .await;
    let port = shown().await["private_port"]
        .as_u64()
        .expect("private_port") as u16;
    // Several requests at once, each on its own client connection: as many upstream
    // connections, pooled when their answers end.
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let addr = server.proxy;
            tokio::spawn(async move {
                common::request(
                    addr,
                    "GET",
                    "pooled.localhost",
                    &format!("/__sleep/300?{i}"),
                )
                .await
                .status
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.expect("client"), 200);
    }
    assert!(
        sockets_to(port, "01") > 0,
        "no pooled connection to the instance"
    );
    let deleted = server
        .api("DELETE", "/v1/instances/pooled", serde_json::Value::Null)
        .await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    // The instance's process is gone, so its end of each pooled connection is closed; the
    // proxy's end must follow with no request to prompt it.
    server
        .eventually(5, "the pooled connections closed", async || {
            sockets_to(port, "08") == 0 && sockets_to(port, "01") == 0
        })
        .await;
}
