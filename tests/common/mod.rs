//! Test harness: runs the real `autokill` binary on loopback with a config of the test's own, and
//! talks to it with a real HTTP client.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub const BIN: &str = env!("CARGO_BIN_EXE_autokill");

/// A loopback port nobody listens on right now, for a server a test starts (and may stop and
/// start again on the same port, as after a `kill -9`).
///
/// The port comes from below the kernel's ephemeral range, and each once per test process: an
/// outgoing connection's local port, a port-0 listener (an instance, an upstream) or another test
/// of this process never takes it in the meantime. Port 0 would hand out ports from that very
/// range, and a restart could then find its port taken by a client's connection.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const WINDOW: u32 = 16_384;
    let low = ephemeral_low();
    if low < 1024 + 1024 {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
    }
    let first = low.saturating_sub(WINDOW).max(1024);
    let window = low - first;
    // Two test processes at once (two `cargo test` runs) start at different places.
    let offset = std::process::id().wrapping_mul(7919) % window;
    for _ in 0..window {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (first + (offset + n) % window) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {first}..{low}");
}

/// The lowest port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A running `autokill serve` and the directory it works in.
pub struct Server {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The `runtime:` block every test uses: `autokill hello`, logging each request to `<dir>/<name>.log`.
pub fn hello_runtime(dir: &Path, extra_args: &str) -> String {
    format!(
        r#"runtime:
  kind: process
  stop_grace: 2s
  start_timeout: 5s
  images:
    hello:
      command: ["{bin}", "hello", "--listen", "127.0.0.1:{{port}}", "--name", "{{name}}", "--log", "{dir}/{{name}}.log"{extra_args}]
"#,
        bin = BIN,
        dir = dir.display(),
    )
}

impl Server {
    /// Starts the server with `body` (everything after the `proxy`/`admin`/`store` blocks, which
    /// this fills in with free ports) and waits until `/readyz` answers 200.
    pub async fn start(body: impl FnOnce(&Path) -> String) -> Server {
        Server::start_with(body, "").await
    }

    /// Like [`Server::start`], with extra keys for the `proxy:` block (indented by the caller).
    pub async fn start_with(body: impl FnOnce(&Path) -> String, proxy_extra: &str) -> Server {
        Server::start_config(body, proxy_extra, "", None, false).await
    }

    /// Like [`Server::start`], with extra keys for the `admin:` block (indented by the caller),
    /// e.g. `"  token: s3cret\n"`.
    pub async fn start_with_admin(body: impl FnOnce(&Path) -> String, admin_extra: &str) -> Server {
        Server::start_config(body, "", admin_extra, None, false).await
    }

    /// Like [`Server::start_with`], with extra keys for the `proxy:` and the `admin:` blocks.
    pub async fn start_config_for_test(
        body: impl FnOnce(&Path) -> String,
        proxy_extra: &str,
        admin_extra: &str,
    ) -> Server {
        Server::start_config(body, proxy_extra, admin_extra, None, false).await
    }

    /// Like [`Server::start`], with the server's log (stderr, `RUST_LOG=autokill=warn`) kept in
    /// `<dir>/autokill.log` for [`Server::log`] instead of shown.
    pub async fn start_logged(body: impl FnOnce(&Path) -> String) -> Server {
        Server::start_config(body, "", "", None, true).await
    }

    /// [`Server::start_logged`] with extra keys for the `proxy:` block.
    pub async fn start_logged_with(
        body: impl FnOnce(&Path) -> String,
        proxy_extra: &str,
    ) -> Server {
        Server::start_config(body, proxy_extra, "", None, true).await
    }

    /// Like [`Server::start_with`], with extra keys for both blocks, in a process whose open-file
    /// limit (soft and hard) is `open_files`.
    pub async fn start_with_file_limit(
        body: impl FnOnce(&Path) -> String,
        proxy_extra: &str,
        admin_extra: &str,
        open_files: u64,
    ) -> Server {
        Server::start_config(body, proxy_extra, admin_extra, Some(open_files), false).await
    }

    async fn start_config(
        body: impl FnOnce(&Path) -> String,
        proxy_extra: &str,
        admin_extra: &str,
        open_files: Option<u64>,
        logged: bool,
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = format!(
            "proxy:\n  listen: {proxy}\n  workers: 2\n{proxy_extra}admin:\n  listen: {admin}\n{admin_extra}store:\n  path: {store}\n{body}",
            store = dir.path().join("autokill.redb").display(),
            body = body(dir.path()),
        );
        let path = dir.path().join("autokill.yaml");
        std::fs::write(&path, &config).expect("write config");
        // AUTOKILL_TEST_BIN runs the suite against another build (e.g. to see a new test fail
        // on the code before a fix).
        let bin = std::env::var("AUTOKILL_TEST_BIN").unwrap_or_else(|_| BIN.to_owned());
        let mut command = Command::new(bin);
        command
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "autokill=warn")
            .stdin(Stdio::null());
        if logged {
            let log = std::fs::File::create(dir.path().join("autokill.log")).expect("log file");
            command.stderr(log);
        }
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: only `setrlimit`, which is async-signal-safe, runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = command.spawn().expect("start autokill");
        let server = Server {
            proxy,
            admin,
            dir,
            child: Some(child),
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/readyz`, each try bounded by 2 s, for at most a minute (a loaded machine can be
    /// slow to start a process; readiness is not what the tests time).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = tokio::time::timeout(
                Duration::from_secs(2),
                try_request(self.admin, "GET", "localhost", "/readyz"),
            )
            .await;
            if let Ok(Ok((StatusCode::OK, _, _))) = ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "autokill did not become ready: {ready:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A GET through the proxy with `host`.
    pub async fn get(&self, host: &str, path: &str) -> Resp {
        request(self.proxy, "GET", host, path).await
    }

    /// A GET on the admin listener; the body parsed as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = request(self.admin, "GET", "localhost", path).await;
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.text()))
    }

    /// A request to the admin listener with a body and, if given, `Authorization: Bearer <token>`.
    pub async fn admin_request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        request_with(self.admin, method, path, body.as_bytes(), &headers).await
    }

    /// A `/v1` call without a token: the status and the body parsed as JSON (`body` is sent as
    /// written; `Value::Null` sends none).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.api_raw(method, path, &text).await
    }

    /// A `/v1` call that must succeed: asserts 200 and `"status": "success"`, and returns the first
    /// item under `data.<key>`.
    pub async fn api_ok(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
        key: &str,
    ) -> serde_json::Value {
        let (status, v) = self.api(method, path, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{method} {path} {body}: {v}");
        assert_eq!(v["status"], "success", "{method} {path} {body}: {v}");
        v["data"][key][0].clone()
    }

    /// Like [`Server::api`], with the body as raw text (for bodies that are not valid JSON).
    pub async fn api_raw(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let r = self.admin_request(method, path, body, None).await;
        let json = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", r.text()));
        (r.status, json)
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        request(self.admin, "GET", "localhost", "/metrics")
            .await
            .text()
    }

    /// Lines the instance `name`'s upstream logged: the requests that really reached it.
    pub fn upstream_log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Pids of processes whose command line mentions this server's directory: its instances.
    pub fn instance_pids(&self) -> Vec<u32> {
        let server = self.child.as_ref().map(|c| c.id());
        pids_mentioning(self.dir.path())
            .into_iter()
            .filter(|p| Some(*p) != server)
            .collect()
    }

    /// Waits until `cond` holds, polling every 20 ms, for at most `secs` seconds.
    pub async fn eventually(&self, secs: u64, what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the server logged so far, when started with [`Server::start_logged`].
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("autokill.log")).unwrap_or_default()
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hangup(&self) {
        if let Some(child) = &self.child {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in pids_mentioning(self.dir.path()) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Pids whose `/proc/PID/cmdline` contains `needle`.
pub fn pids_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle) && !is_zombie(*pid))
                .unwrap_or(false)
        })
        .filter(|pid| *pid != std::process::id())
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request to `addr` with `Host: host`.
pub async fn request(addr: SocketAddr, method: &str, host: &str, path: &str) -> Resp {
    let (status, headers, body) = try_request(addr, method, host, path)
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"));
    Resp {
        status,
        headers,
        body,
    }
}

/// Longest a test request may take, answer and body, before it fails the test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Like [`request`], with a failure as an error rather than a panic.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client().request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
}

/// One request to `addr` (`Host: localhost`) with `body` and extra header fields.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Resp {
    let (status, headers, body) = try_request_with(addr, method, path, body, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    Resp {
        status,
        headers,
        body,
    }
}

/// Like [`request_with`], with a failure (no answer, a dropped connection) as an error rather
/// than a panic.
pub async fn try_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", "localhost");
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client().request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
}

/// The value of a Prometheus sample `name{labels}` in `text`, if present (labels must match exactly as written).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Whether a component a test needs is required: `AUTOKILL_TEST_REQUIRE` lists components
/// (comma-separated, trimmed, any case), or says `all` (as CI does).
pub fn required(component: &str) -> bool {
    std::env::var("AUTOKILL_TEST_REQUIRE").is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|c| c.eq_ignore_ascii_case("all") || c.eq_ignore_ascii_case(component))
    })
}

/// Skips a test loudly: fails it when `component` is required, else prints `SKIPPED: <why>` where
/// a person sees it. The test harness captures a passing test's stderr, so the line goes to the
/// terminal (`/dev/tty`) when there is one, and to stderr as well.
pub fn skip(component: &str, why: &str) {
    assert!(
        !required(component),
        "{why} (AUTOKILL_TEST_REQUIRE asks for {component})"
    );
    let line = format!("SKIPPED: {why}\n");
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        use std::io::Write;
        let _ = tty.write_all(line.as_bytes());
    }
    eprint!("{line}");
}

/// Finds `program` on PATH, or skips the test loudly ([`skip`]).
pub fn find_or_skip(program: &str, component: &str) -> Option<PathBuf> {
    let found = which(program);
    if found.is_none() {
        skip(
            component,
            &format!("{program} not found on PATH; install it to run this test"),
        );
    }
    found
}

/// `program`'s path, if it is on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// A GET through `addr` with `Host: host` that reports failures instead of panicking.
pub async fn try_get(addr: SocketAddr, host: &str, path: &str) -> Result<StatusCode, String> {
    try_request(addr, "GET", host, path)
        .await
        .map(|(status, _, _)| status)
}

/// One raw HTTP/1.1 exchange: `head` is the request line and header fields (without the blank
/// line, `Connection: close` added), `body` follows with its `Content-Length`. For requests the
/// typed client would not send as written (odd `Host`, no `Content-Type`, invalid UTF-8 in the
/// path). Returns the status and the body.
pub async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Bytes) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut req = format!(
        "{head}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    conn.write_all(&req).await.expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .expect("answer within 30 s")
        .expect("read answer");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    let head_text = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let mut rest = answer[split..].to_vec();
    if head_text.contains("transfer-encoding: chunked") {
        rest = dechunk(&rest);
    }
    (status, Bytes::from(rest))
}

/// One raw HTTP/1.1 exchange with `addr`: `head` is the request line and header fields (without
/// the blank line; `Host: localhost:<port>` and `Connection: close` added), the body follows
/// with its `Content-Length`, or in 1 KiB chunks when `chunked`. Returns the status, the head
/// and the body of the answer. A write the server cut short (it may answer before reading the
/// whole body, and close) is not an error: what it answered is what counts.
pub async fn raw_exchange(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
    chunked: bool,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut req = format!(
        "{head}\r\nHost: localhost:{}\r\nConnection: close\r\n",
        addr.port()
    );
    if chunked {
        req.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    let mut bytes = req.into_bytes();
    if chunked {
        for chunk in body.chunks(1024) {
            bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        bytes.extend_from_slice(body);
    }
    let _ = conn.write_all(&bytes).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{head}: no answer within 30 s"))
        .unwrap_or_else(|e| panic!("{head}: reading the answer: {e}"));
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head_text, body_text) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head_text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{head}: no status line in {text:?}"));
    (status, head_text.to_owned(), body_text.to_owned())
}

/// The value of the field `name` (any case) in an answer's head.
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The payload of a chunked body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// Reads one response head from `s`, byte by byte (so nothing after it is consumed), through
/// its blank line; lower-cased.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .expect("a response head in time")
            .expect("read");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Reads one response from `s`: its head (lower-cased, see [`read_head`]) and a body of its
/// `Content-Length`.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let head = read_head(s).await;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut body))
        .await
        .expect("the body in time")
        .expect("read");
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// A proxy configuration for a proxy started in the test's own process (`Proxy::start`): one
/// worker on an ephemeral loopback port, the documented defaults otherwise.
pub fn proxy_config() -> autokill::config::ProxyConfig {
    autokill::config::ProxyConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        workers: 1,
        base_domain: "localhost".into(),
        header_read_timeout: Duration::from_secs(10),
        upstream_connect_timeout: Duration::from_secs(1),
        upstream_timeout: Duration::from_secs(10),
        pool_idle_per_instance: 4,
        idle_timeout: Duration::from_secs(60),
        max_connections_per_worker: 0,
        request_body_timeout: Duration::from_secs(10),
        response_write_timeout: Duration::from_secs(10),
        balance: autokill::config::Balance::RoundRobin,
        max_header_bytes: 64 * 1024,
        max_header_fields: 100,
        max_uri_bytes: 8192,
        max_body_bytes: None,
        max_requests_per_connection: 0,
    }
}

/// A server with one instance `solo` (`autokill hello`, no request limit) and `proxy_extra` keys
/// in its `proxy:` block, once `solo` is running.
pub async fn start_solo(proxy_extra: &str) -> Server {
    let server = Server::start_with(
        |dir| {
            format!(
                "{}instances:\n  - name: solo\n    image: hello\n",
                hello_runtime(dir, "")
            )
        },
        proxy_extra,
    )
    .await;
    server
        .eventually(10, "solo running", async || {
            server.admin_json("/v1/instances/solo").await["data"]["instances"][0]["state"]
                == "running"
        })
        .await;
    server
}

/// The proxy alone, in this process ([`proxy_config`]), routing `up.localhost` to the upstream
/// at `addr` (an instance without a request limit).
pub fn start_proxy(addr: SocketAddr) -> autokill::proxy::Proxy {
    use autokill::proxy::route::{Target, Upstream};
    let mut b = autokill::proxy::RouteTable::builder();
    let i = b.upstream(std::sync::Arc::new(Upstream::new(
        uuid::Uuid::new_v4(),
        "up".into(),
        addr,
        std::sync::Arc::new(autokill::proxy::meter::Meter::new(0, 0)),
        1,
    )));
    b.route("up.localhost", Target::Instance(Some(i)));
    let table = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(b.build()));
    let view = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
        autokill::controller::View::default(),
    ));
    let metrics = autokill::metrics::Metrics::new(view).expect("metrics");
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    autokill::proxy::Proxy::start(
        &proxy_config(),
        Duration::from_secs(1),
        table,
        events,
        &metrics,
        1024,
    )
    .expect("proxy")
}

/// Asserts that no row of a table test failed, listing those that did.
#[track_caller]
pub fn assert_rows(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A stored instance named `name` in `state` with nothing else set (no limit, no timer, never
/// stopped, created at the epoch), for a test that writes the store before a start; tests set
/// what they need with struct update syntax.
pub fn stored_instance(name: &str, state: &str) -> autokill::store::InstanceRecord {
    autokill::store::InstanceRecord {
        id: uuid::Uuid::new_v4(),
        name: name.to_owned(),
        image: "hello".into(),
        memory_mb: None,
        group: None,
        template: None,
        template_name: None,
        num_requests: 0,
        asked_num_requests: None,
        time_ms: None,
        restart_policy: "never".into(),
        autodestroy: "OFF".into(),
        state: state.into(),
        exit_code: None,
        stop_reason: None,
        stopped_at: None,
        created_at: 0,
        delete_lock: false,
        last_used: 0,
        unused_ms: None,
        restarts: 0,
        restart_at: None,
        destroy_due: false,
        deleting: None,
        reserved: 0,
        from_config: false,
    }
}

/// Connections of this machine to `port` in TCP `state` (`/proc/net/tcp`'s code: 01
/// established; 06 time-wait, this side closed first; 08 close-wait, the peer closed and this
/// side has not).
pub fn sockets_to(port: u16, state: &str) -> usize {
    sockets_with(state, |_, remote| remote == port)
}

/// Connections of this machine whose own end is on `port`, in TCP `state` (as [`sockets_to`]).
pub fn sockets_from(port: u16, state: &str) -> usize {
    sockets_with(state, |local, _| local == port)
}

/// `/proc/net/tcp` lines in `state` whose (local, remote) ports pass `wanted`.
fn sockets_with(state: &str, wanted: impl Fn(u16, u16) -> bool) -> usize {
    let port = |address: Option<&&str>| {
        address
            .and_then(|a| a.split(':').nth(1))
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(3) == Some(&state)
                && port(fields.get(1))
                    .zip(port(fields.get(2)))
                    .is_some_and(|(local, remote)| wanted(local, remote))
        })
        .count()
}
