//! Request smuggling and framing, end to end: every case of `tests/fixtures/smuggling.txt` (each
//! citing where it comes from) is sent as raw bytes to the real proxy in front of a real
//! `autokill hello` instance; the client's answer is checked, and so is what reached the instance
//! (its log) and what was counted. Then the response side: an upstream that frames its answer
//! ambiguously gets the client a 502, and its connection is never used again.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One corpus case.
#[derive(Debug)]
struct Case {
    name: String,
    source: String,
    expect: u16,
    bytes: Vec<u8>,
}

/// The bytes of an escaped `send` line (`\r \n \t \\ \xNN`), with `HOST` replaced.
fn unescape(line: &str, host: &str) -> Vec<u8> {
    let line = line.replace("HOST", host);
    let bytes = line.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("a hex byte"));
                i += 2;
            }
            other => panic!("unknown escape \\{}", other as char),
        }
        i += 2;
    }
    out
}

fn corpus(host: &str) -> Vec<Case> {
    let text = include_str!("fixtures/smuggling.txt");
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "case" => cases.push(Case {
                name: rest.to_owned(),
                source: String::new(),
                expect: 0,
                bytes: Vec::new(),
            }),
            _ => {
                let case = cases.last_mut().expect("a case line first");
                match key {
                    "source" => case.source = rest.to_owned(),
                    "expect" => case.expect = rest.parse().expect("a status"),
                    "send" => case.bytes.extend(unescape(rest, host)),
                    "repeat" => {
                        let (n, text) = rest.split_once(' ').expect("repeat N TEXT");
                        let n: usize = n.parse().expect("a count");
                        case.bytes.extend(text.repeat(n).into_bytes());
                    }
                    other => panic!("unknown corpus line {other:?}"),
                }
            }
        }
    }
    for case in &cases {
        assert!(
            !case.source.is_empty() && case.expect != 0 && !case.bytes.is_empty(),
            "incomplete case {case:?}"
        );
    }
    cases
}

/// Sends `bytes` on a new connection; the answer's status, and whether the proxy closed the
/// connection after it (within `secs`).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], secs: u64) -> (u16, bool, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(secs), s.read_to_end(&mut out)).await,
        Ok(Ok(_)) | Ok(Err(_))
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, closed, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smuggling_corpus_is_refused_and_nothing_reaches_the_instance() {
    let server = common::start_solo("").await;
    let cases = corpus("solo.localhost");
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut accepted = 0;
    for case in &cases {
        let (status, closed, text) = exchange(server.proxy, &case.bytes, 10).await;
        if status != case.expect || !closed {
            failures.push(format!(
                "{} ({}): got {status}, closed {closed}, want {} and closed: {text:?}",
                case.name, case.source, case.expect
            ));
        }
        if case.expect < 400 {
            accepted += 1;
        }
    }
    common::assert_rows(&failures, cases.len());
    // Only the control cases (accepted, each once) reached the instance, and nothing smuggled.
    let log = server.upstream_log("solo");
    assert_eq!(log.len(), accepted, "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains("smuggled")),
        "a smuggled request reached the instance: {log:?}"
    );
    let counted =
        server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["requests"].as_u64();
    assert_eq!(counted, Some(accepted as u64), "refused requests counted");
}

/// The response side, with the proxy in this process in front of an upstream the test writes.
mod responses {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// An upstream that answers each request by its path (`/ok` well, the others ambiguously or
    /// not at all like HTTP), serving several requests per connection; counts its connections.
    async fn upstream(connections: Arc<AtomicUsize>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("");
                        let answer: &[u8] = match path {
                            "/ok" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
                            "/cl-te" => b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil\n",
                            "/two-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 9\r\n\r\nok\nevil\n\n\n",
                            "/longer" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil\n",
                            "/garbage" => b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
                            "/http10-chunked" => b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                        };
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends one request on `s` and reads one answer (its head and `Content-Length` body).
    async fn get(s: &mut TcpStream, path: &str) -> (u16, String) {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: up.localhost\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let (head, body) = super::common::read_response(s).await;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ambiguous_responses_are_502_and_their_connection_is_never_reused() {
        let connections = Arc::new(AtomicUsize::new(0));
        let addr = upstream(Arc::clone(&connections)).await;
        let proxy = super::common::start_proxy(addr);
        let mut s = TcpStream::connect(proxy.local_addr())
            .await
            .expect("connect");
        assert_eq!(get(&mut s, "/ok").await, (200, "ok\n".into()));
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        // Each bad answer comes on the pooled connection, which must then be dropped: the next
        // good request opens a new one (and never reads the bad answer's leftovers).
        for (bad, status) in [
            ("/cl-te", 502),
            ("/two-cl", 502),
            ("/garbage", 502),
            ("/http10-chunked", 502),
        ] {
            let before = connections.load(Ordering::SeqCst);
            let mut c = TcpStream::connect(proxy.local_addr())
                .await
                .expect("connect");
            assert_eq!(get(&mut c, bad).await.0, status, "{bad}");
            assert_eq!(
                get(&mut s, "/ok").await,
                (200, "ok\n".into()),
                "after {bad}"
            );
            assert_eq!(
                connections.load(Ordering::SeqCst),
                before + 1,
                "after {bad}, the next request took a new upstream connection"
            );
        }
        // A body longer than announced: the client gets what was announced; what follows is
        // never taken for the answer to the next request.
        let before = connections.load(Ordering::SeqCst);
        assert_eq!(get(&mut s, "/longer").await, (200, "ok\n".into()));
        assert_eq!(get(&mut s, "/ok").await, (200, "ok\n".into()));
        assert_eq!(connections.load(Ordering::SeqCst), before + 1);
        proxy.shutdown().await;
    }
}
