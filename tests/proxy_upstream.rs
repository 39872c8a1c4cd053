//! Upstreams that fail before answering: a refused connect (502, its count given back so the
//! instance is not killed short of its budget), a connect that hangs (504), an instance still
//! starting (503), and a request that waits for a durable reservation that never comes (503) —
//! each counted under its metric.

mod common;

use std::time::{Duration, Instant};

use common::{Server, hello_runtime, sample};
use hyper::StatusCode;
use tokio::net::TcpStream;

fn solo(limit: u64, hello_args: &'static str) -> impl FnOnce(&std::path::Path) -> String {
    move |dir| {
        format!(
            "{}instances:\n  - name: solo\n    image: hello\n    autokill: {{ num_requests: {limit} }}\n",
            hello_runtime(dir, hello_args)
        )
    }
}

async fn state(server: &Server, name: &str) -> serde_json::Value {
    server.admin_json(&format!("/v1/instances/{name}")).await["data"]["instances"][0].clone()
}

async fn wait_state(server: &Server, name: &str, want: &str) {
    server
        .eventually(10, &format!("{name} {want}"), async || {
            state(server, name).await["state"] == want
        })
        .await;
}

/// Every request opens its own upstream connection, so an upstream that stops listening is seen
/// at once.
const NO_POOL: &str = "  pool_idle_per_instance: 0\n  upstream_connect_timeout: 300ms\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_502_and_gives_its_count_back() {
    let server = Server::start_with(solo(3, ""), NO_POOL).await;
    wait_state(&server, "solo", "running").await;
    assert_eq!(
        server.get("solo.localhost", "/one").await.status,
        StatusCode::OK
    );
    // The second request closes the upstream's listener: from now on connects are refused.
    assert_eq!(
        server.get("solo.localhost", "/__listen/close").await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let r = server.get("solo.localhost", "/refused").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    }
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"autokill_upstream_errors_total{kind="connect_refused"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    // Two requests reached the instance; the two the proxy could not send gave their count
    // back, so the third of its three is still to come and it was not killed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = state(&server, "solo").await;
    assert_eq!(v["requests"], 2, "{v}");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(server.upstream_log("solo").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_hangs_is_504_after_the_connect_timeout() {
    let server = Server::start_with(solo(0, r#", "--backlog", "1""#), NO_POOL).await;
    wait_state(&server, "solo", "running").await;
    let port = state(&server, "solo").await["private_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("private_port");
    assert_eq!(
        server.get("solo.localhost", "/__listen/pause").await.status,
        StatusCode::OK
    );
    // Fill the accept queue nobody takes from: the kernel then drops further connects' SYNs.
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            held.push(s);
        }
    }
    let start = Instant::now();
    let r = server.get("solo.localhost", "/hangs").await;
    let took = start.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"autokill_upstream_errors_total{kind="connect_timeout"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    // The request never reached the instance: its count was given back.
    assert_eq!(state(&server, "solo").await["requests"], 1);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_instance_is_503_with_retry_after() {
    // An image that never listens stays `starting` until its start timeout.
    let server = Server::start(|dir| {
        format!(
            "{}    slow:\n      command: [\"sleep\", \"30\"]\ninstances:\n  - name: slow\n    image: slow\n",
            hello_runtime(dir, "").replace("start_timeout: 5s", "start_timeout: 20s")
        )
    })
    .await;
    wait_state(&server, "slow", "starting").await;
    let r = server.get("slow.localhost", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(
        r.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"autokill_proxy_refused_total{reason="unavailable"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(state(&server, "slow").await["requests"], 0);
}

/// The proxy alone, in this process, in front of one instance whose durable reservation the
/// test controls (no controller raises it).
mod reservation {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use arc_swap::ArcSwap;
    use autokill::controller::View;
    use autokill::metrics::Metrics;
    use autokill::proxy::meter::Meter;
    use autokill::proxy::route::{Target, Upstream};
    use autokill::proxy::{Proxy, ProxyEvent, RouteTable};
    use hyper::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An upstream that answers every request `200 ok`.
    async fn upstream() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut have = 0;
                    loop {
                        match s.read(&mut buf[have..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have += n,
                        }
                        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n")
                        {
                            buf.copy_within(end + 4..have, 0);
                            have -= end + 4;
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reservation_wait_ends_in_503_or_when_raised() {
        let upstream = upstream().await;
        let meter = Arc::new(Meter::new(0, 10));
        // Two requests are durable; the third must wait for the next block.
        meter.set_reserved(2, 0);
        let mut b = RouteTable::builder();
        let i = b.upstream(Arc::new(Upstream::new(
            uuid::Uuid::new_v4(),
            "up".into(),
            upstream,
            Arc::clone(&meter),
            1,
        )));
        b.route("up.localhost", Target::Instance(Some(i)));
        let table = Arc::new(ArcSwap::from_pointee(b.build()));
        let metrics =
            Metrics::new(Arc::new(ArcSwap::from_pointee(View::default()))).expect("metrics");
        let (events, mut asked) = tokio::sync::mpsc::unbounded_channel();
        let cfg = super::common::proxy_config();
        let proxy = Proxy::start(&cfg, Duration::from_secs(1), table, events, &metrics, 1024)
            .expect("proxy");
        let addr = proxy.local_addr();
        for _ in 0..2 {
            assert_eq!(
                super::common::request(addr, "GET", "up.localhost", "/")
                    .await
                    .status,
                StatusCode::OK
            );
        }
        // Nobody raises the ceiling: the wait ends in 503 after its bound (5 s).
        let start = Instant::now();
        let r = super::common::request(addr, "GET", "up.localhost", "/").await;
        let took = start.elapsed();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert_eq!(
            r.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(
            took >= Duration::from_millis(4500) && took < Duration::from_secs(20),
            "{took:?}"
        );
        assert_eq!(meter.count(), 2, "the refused request is not counted");
        let mut reserve_asks = 0;
        while let Ok(ProxyEvent::Reserve { .. }) = asked.try_recv() {
            reserve_asks += 1;
        }
        assert!(reserve_asks >= 1, "the proxy asked for the next block");
        // The same wait ends as soon as the ceiling rises.
        let raise = {
            let meter = Arc::clone(&meter);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                meter.set_reserved(10, 0);
            })
        };
        let start = Instant::now();
        let r = super::common::request(addr, "GET", "up.localhost", "/").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(meter.count(), 3);
        raise.await.expect("raise");
        let text = metrics.render();
        assert_eq!(
            super::common::sample(
                &text,
                r#"autokill_proxy_refused_total{reason="unavailable"}"#
            ),
            Some(1.0),
            "{text}"
        );
        proxy.shutdown().await;
    }
}
