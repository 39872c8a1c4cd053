//! `autokill hello` as a user runs it: the real binary on loopback, with a real HTTP client.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(5);

/// Starts `autokill hello --name x` on a port the system picks, and reads that port from its
/// first line on stderr: a port chosen here and let go could be taken meanwhile (by another test
/// of this file binding port 0), and the connections then go to someone else.
async fn hello(log: Option<&Path>, allow_exit: bool) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_autokill"));
    command
        .args(["hello", "--listen", "127.0.0.1:0", "--name", "x"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(log) = log {
        command.arg("--log").arg(log);
    }
    if allow_exit {
        command.arg("--allow-exit");
    }
    let mut child = command.spawn().expect("spawn autokill hello");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let line = timeout(PATIENCE, lines.next_line())
        .await
        .expect("autokill hello listens within 5 s")
        .expect("read stderr")
        .expect("autokill hello exited before listening");
    let addr = line
        .rsplit_once("listening on ")
        .and_then(|(_, addr)| addr.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    // Keep reading what it writes, so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// One HTTP/1.1 connection; every request sent on it reuses it.
async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

struct Answer {
    status: u16,
    name: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: &'static str,
) -> Answer {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "hello.test")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let response = timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("answer within 5 s")
        .expect("answer");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let name = header("x-hello-name");
    let content_type = header("content-type");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        name,
        content_type,
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
    }
}

async fn exit_code(child: &mut Child) -> i32 {
    let status = timeout(PATIENCE, child.wait())
        .await
        .expect("exits within 5 s")
        .expect("wait");
    status.code().expect("exited, not killed by a signal")
}

#[tokio::test]
async fn answers_with_name_and_path_on_one_keep_alive_connection_and_logs_each_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.log");
    let (_child, addr) = hello(Some(&log), true).await;

    let mut sender = connect(addr).await;
    let first = send(&mut sender, "GET", "/a/b?c=1", "").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "hello from x: /a/b?c=1\n");
    assert_eq!(first.name.as_deref(), Some("x"));
    assert_eq!(first.content_type.as_deref(), Some("text/plain"));

    // Same connection: fails if the server closed it after the first answer.
    let second = send(&mut sender, "POST", "/upload", "some body to discard").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, "hello from x: /upload\n");

    let logged = std::fs::read_to_string(&log).expect("read log");
    assert_eq!(logged, "GET /a/b?c=1\nPOST /upload\n");
}

#[tokio::test]
async fn exit_path_makes_the_process_exit_with_its_code_after_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.log");
    let (mut child, addr) = hello(Some(&log), true).await;

    let mut sender = connect(addr).await;
    let answer = send(&mut sender, "GET", "/__exit/3", "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "hello from x: /__exit/3\n");
    assert_eq!(exit_code(&mut child).await, 3);
    // Logged before the process went away.
    let logged = std::fs::read_to_string(&log).expect("read log");
    assert_eq!(logged, "GET /__exit/3\n");
}

#[tokio::test]
async fn exit_path_is_an_ordinary_path_without_allow_exit() {
    let (mut child, addr) = hello(None, false).await;

    let mut sender = connect(addr).await;
    let answer = send(&mut sender, "GET", "/__exit/3", "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "hello from x: /__exit/3\n");
    // Longer than hello's exit fallback (500 ms): an exit would have happened by now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "hello exited"
    );
    let again = send(&mut sender, "GET", "/still-here", "").await;
    assert_eq!(again.body, "hello from x: /still-here\n");
}

#[tokio::test]
async fn sigterm_exits_zero() {
    let (mut child, _addr) = hello(None, true).await;
    let pid = child.id().expect("pid") as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(exit_code(&mut child).await, 0);
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let output = timeout(
        PATIENCE,
        Command::new(env!("CARGO_BIN_EXE_autokill"))
            .args(["hello", "--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("exits within 5 s")
    .expect("run autokill hello");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&addr.to_string()), "stderr: {stderr}");
}
