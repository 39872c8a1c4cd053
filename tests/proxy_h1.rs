//! The proxy's own HTTP/1 server end to end, against a real `autokill hello` upstream: pipelined
//! requests answered in order, `Expect: 100-continue`, HTTP/1.0 keep-alive, chunked request
//! bodies, the request limits (431, 414, 413: nothing forwarded, nothing counted), requests per
//! connection, and a slowloris client closed within `header_read_timeout` + 1 s.

mod common;

use std::time::{Duration, Instant};

use common::{Server, hello_runtime, read_response, start_solo as start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn requests_of(server: &Server) -> u64 {
    server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["requests"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Reads until the server closes (or `secs` pass).
async fn read_all(s: &mut TcpStream, secs: u64) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(secs), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let server = start("").await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: solo.localhost\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: solo.localhost\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: solo.localhost\r\n\r\n",
    )
    .await
    .expect("write");
    for path in ["/one", "/two", "/three"] {
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, format!("hello from solo: {path}\n"));
    }
    assert_eq!(
        server.upstream_log("solo"),
        ["GET /one", "POST /two", "GET /three"]
    );
    assert_eq!(requests_of(&server).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_and_chunked_bodies() {
    let server = start("").await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(
        b"POST /__headers HTTP/1.1\r\nHost: solo.localhost\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await
    .expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 100"), "{head}");
    s.write_all(b"body").await.expect("write body");
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("content-length: 4"), "{body}");
    // A chunked body goes upstream chunked (the upstream sees the framing the proxy wrote).
    s.write_all(
        b"POST /__headers HTTP/1.1\r\nHost: solo.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("transfer-encoding: chunked"), "{body}");
    assert_eq!(requests_of(&server).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_is_kept_and_default_close_closes() {
    let server = start("").await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    for i in 0..2 {
        s.write_all(
            format!("GET /k{i} HTTP/1.0\r\nHost: solo.localhost\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.0 200"), "{head}");
        assert!(head.contains("connection: keep-alive"), "{head}");
        assert_eq!(body, format!("hello from solo: /k{i}\n"));
    }
    s.write_all(b"GET /last HTTP/1.0\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    let rest = read_all(&mut s, 10).await;
    assert!(rest.starts_with("HTTP/1.0 200"), "{rest}");
    assert!(rest.ends_with("hello from solo: /last\n"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_answered_and_nothing_is_forwarded() {
    let server = start(
        "  max_header_bytes: 2048\n  max_header_fields: 10\n  max_uri_bytes: 100\n  max_body_bytes: 10\n",
    )
    .await;
    let many: String = (0..11).map(|i| format!("X-{i}: 1\r\n")).collect();
    let cases = [
        (
            "too many fields",
            format!("GET / HTTP/1.1\r\nHost: solo.localhost\r\n{many}\r\n"),
            431,
        ),
        (
            "a head too large",
            format!(
                "GET / HTTP/1.1\r\nHost: solo.localhost\r\nX-Big: {}\r\n\r\n",
                "v".repeat(2100)
            ),
            431,
        ),
        (
            "a target too long",
            format!(
                "GET /{} HTTP/1.1\r\nHost: solo.localhost\r\n\r\n",
                "p".repeat(101)
            ),
            414,
        ),
        (
            "a body too large",
            "POST / HTTP/1.1\r\nHost: solo.localhost\r\nContent-Length: 11\r\n\r\n01234567890"
                .to_owned(),
            413,
        ),
    ];
    for (what, request, status) in cases {
        let mut s = TcpStream::connect(server.proxy).await.expect("connect");
        let _ = s.write_all(request.as_bytes()).await;
        let resp = read_all(&mut s, 10).await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {resp}"
        );
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{what}: {resp}"
        );
    }
    // A chunked body that grows past the limit is cut off with 413 (its head had gone upstream).
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: solo.localhost\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let resp = read_all(&mut s, 10).await;
    assert!(resp.starts_with("HTTP/1.1 413 "), "{resp}");
    assert!(
        !server
            .upstream_log("solo")
            .iter()
            .any(|l| l != "POST /chunked"),
        "a refused head reached the instance: {:?}",
        server.upstream_log("solo")
    );
    assert!(requests_of(&server).await <= 1);
    // Within the limits all is well.
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(b"POST /ok HTTP/1.1\r\nHost: solo.localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789")
        .await
        .expect("write");
    let resp = read_all(&mut s, 10).await;
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
}

/// `max_body_bytes` of a group and of an instance (issue 15): instance over group over the
/// proxy's. A `Content-Length` above the routed instance's limit is 413 with nothing forwarded
/// and nothing counted; a chunked body that grows past it is cut off with 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_instance_body_limits() {
    let server = Server::start_with(
        |dir| {
            format!(
                "{}service_groups:\n  - name: grp\n    domains: [grp]\n    max_body_bytes: 20\n    instances:\n      - {{name: member, image: hello}}\n      - {{name: roomy, image: hello, max_body_bytes: 0}}\n  - name: tight\n    domains: [tight]\n    max_body_bytes: 5\n    instances:\n      - {{name: t1, image: hello}}\ninstances:\n  - {{name: solo, image: hello, max_body_bytes: 10}}\n  - {{name: plain, image: hello}}\n",
                hello_runtime(dir, "")
            )
        },
        "  max_body_bytes: 30\n",
    )
    .await;
    for name in ["member", "roomy", "t1", "solo", "plain"] {
        server
            .eventually(10, "instances running", async || {
                server.admin_json(&format!("/v1/instances/{name}")).await["data"]["instances"][0]
                    ["state"]
                    == "running"
            })
            .await;
    }
    let count = async |name: &str| {
        server.admin_json(&format!("/v1/instances/{name}")).await["data"]["instances"][0]
            ["requests"]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    let post = async |host: &str, path: &str, len: usize| {
        let mut s = TcpStream::connect(server.proxy).await.expect("connect");
        let body = "x".repeat(len);
        let _ = s
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}"
                )
                .as_bytes(),
            )
            .await;
        let resp = read_all(&mut s, 10).await;
        resp.split(' ').nth(1).unwrap_or("").to_owned()
    };
    // (host, body length, status)
    let cases = [
        ("solo.localhost", 11, "413"), // the instance's 10 wins over the proxy's 30
        ("solo.localhost", 10, "200"),
        ("member.localhost", 21, "413"), // the group's 20, by the member's own name too
        ("member.localhost", 20, "200"),
        ("plain.localhost", 31, "413"), // neither sets one: the proxy's 30
        ("plain.localhost", 30, "200"),
        ("roomy.localhost", 1000, "200"), // 0 = no limit, whatever group and proxy say
    ];
    for (host, len, status) in cases {
        let path = format!("/{len}");
        assert_eq!(
            post(host, &path, len).await,
            status,
            "{host} with {len} bytes"
        );
    }
    // A request to a group whose members all refuse the body: 413, to the group's domain too.
    assert_eq!(post("tight.localhost", "/6", 6).await, "413");
    assert_eq!(post("tight.localhost", "/5", 5).await, "200");
    // A member that takes the body (roomy, no limit) gets it when another (member) would not.
    for _ in 0..2 {
        assert_eq!(post("grp.localhost", "/mid", 25).await, "200");
    }
    assert_eq!(server.upstream_log("solo"), ["POST /10"]);
    assert_eq!(server.upstream_log("member"), ["POST /20"]);
    assert_eq!(server.upstream_log("plain"), ["POST /30"]);
    assert_eq!(
        server.upstream_log("roomy"),
        ["POST /1000", "POST /mid", "POST /mid"]
    );
    assert_eq!(server.upstream_log("t1"), ["POST /5"]);
    assert_eq!(count("solo").await, 1, "a refused body is not counted");
    assert_eq!(count("member").await, 1);
    assert_eq!(count("plain").await, 1);
    assert_eq!(count("t1").await, 1);
    // A chunked body that grows past the limit is cut off with 413: the instance's own (solo),
    // its group's (member), the proxy's (plain).
    for (host, chunks) in [
        ("solo.localhost", 2),
        ("member.localhost", 3),
        ("plain.localhost", 4),
    ] {
        let mut s = TcpStream::connect(server.proxy).await.expect("connect");
        let body = "8\r\n01234567\r\n".repeat(chunks);
        s.write_all(
            format!("POST /chunked HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}0\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let resp = read_all(&mut s, 10).await;
        assert!(resp.starts_with("HTTP/1.1 413 "), "{host}: {resp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_connection_are_capped() {
    let server = start("  max_requests_per_connection: 2\n").await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(b"GET /a HTTP/1.1\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(!head.contains("connection: close"), "{head}");
    s.write_all(b"GET /b HTTP/1.1\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(read_all(&mut s, 5).await, "", "closed after the second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_closed_within_the_header_read_timeout() {
    let server = start("  header_read_timeout: 2s\n").await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    // A first request completes, so the trickle below is a later request's head.
    s.write_all(b"GET /a HTTP/1.1\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    let _ = read_response(&mut s).await;
    let start = Instant::now();
    let head = b"GET /slow HTTP/1.1\r\nHost: solo.localhost\r\nX-Slow: 0123456789\r\n";
    let mut closed_after = None;
    for byte in head {
        if s.write_all(&[*byte]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        // One byte a second, and watch for the close meanwhile.
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Err(_) => {}
        }
    }
    let took = closed_after.expect("the connection was closed");
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_secs(3),
        "closed after {took:?} (header_read_timeout 2s)"
    );
    assert_eq!(server.upstream_log("solo"), ["GET /a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start("  idle_timeout: 1s\n").await;
    let mut s = TcpStream::connect(server.proxy).await.expect("connect");
    s.write_all(b"GET /a HTTP/1.1\r\nHost: solo.localhost\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let idle = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s");
    let took = idle.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(2000),
        "closed after {took:?} (idle_timeout 1s)"
    );
}
