//! The web page over plain HTTP (its browser tests are in `ui_browser.rs`): pages that read
//! without JavaScript, the sign-in cookie and the forms the admin guard lets through, and the
//! live stream — what it sends, what it does not, and that it ends at shutdown.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Server, header, hello_runtime, request_with};

/// One HTTP/1.1 exchange written as is (`Connection: close`): the head and body of the answer.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut head = format!("{method} {path} HTTP/1.1");
    for (k, v) in headers {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    common::raw_exchange(addr, &head, body.as_bytes(), false).await
}

async fn json_call(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let r = request_with(server.admin, method, path, body.to_string().as_bytes(), &[]).await;
    assert!(
        r.status.is_success(),
        "{method} {path}: {} {}",
        r.status,
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Starts the instance `solo`, with a budget of 3 requests.
async fn start_solo(server: &Server) {
    json_call(
        server,
        "POST",
        "/v1/instances",
        json!({"name": "solo", "image": "hello", "autostart": true,
        "timeout_s": 10, "autokill": {"num_requests": 3}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_without_javascript() {
    let server = Server::start(|dir| hello_runtime(dir, "")).await;
    json_call(
        &server,
        "POST",
        "/api/v1/service/",
        json!({"image": "hello", "name": "web", "autodestroy": "ALWAYS",
        "autokill": {"num_requests": 7}}),
    )
    .await;
    start_solo(&server).await;
    assert_eq!(server.get("solo.localhost", "/").await.status, 200);

    let (status, head, _) = exchange(server.admin, "GET", "/ui/", &[], "").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"));
    assert!(
        header(&head, "content-security-policy")
            .is_some_and(|c| c.contains("frame-ancestors 'none'"))
    );
    let pages: [(&str, &[&str]); 3] = [
        (
            "/ui/",
            &[
                "<h1>Services</h1>",
                "Launch new service",
                "name=\"autodestroy\"",
                ">web<",
                "ALWAYS",
                "7 requests",
                "<option value=\"hello\">",
            ],
        ),
        (
            "/ui/services/web",
            &[
                "id=\"autodestroy\"",
                "aria-pressed=\"true\"",
                "web-1",
                "Containers",
            ],
        ),
        (
            "/ui/instances",
            &[
                "data-name=\"solo\"",
                "<progress class=\"low\" max=\"3\" value=\"1\"",
                "1 / 3",
                "web-1",
                "Kills, last hour",
            ],
        ),
    ];
    for (path, wants) in pages {
        let (status, _, body) = exchange(server.admin, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        for want in wants {
            assert!(body.contains(want), "{path} shows {want}: {body}");
        }
    }
    let (status, _, body) = exchange(server.admin, "GET", "/ui/services/nope", &[], "").await;
    assert_eq!(status, 404);
    assert!(body.contains("There is no service nope."), "{body}");
    let (status, head, _) = exchange(server.admin, "GET", "/ui/elsewhere", &[], "").await;
    assert_eq!(
        (status, header(&head, "content-type")),
        (404, Some("text/html; charset=utf-8"))
    );
    let (status, head, _) = exchange(server.admin, "GET", "/ui", &[], "").await;
    assert_eq!((status, header(&head, "location")), (308, Some("/ui/")));
    let (status, head, script) = exchange(server.admin, "GET", "/ui/assets/ui.js", &[], "").await;
    assert_eq!(status, 200);
    assert!(header(&head, "cache-control").is_some_and(|c| c.contains("immutable")));
    assert!(script.contains("EventSource"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_keeps_the_token_in_a_strict_httponly_cookie_and_forms_stay_same_origin() {
    let server = Server::start_with_admin(|dir| hello_runtime(dir, ""), "  token: s3cret\n").await;
    let admin = server.admin;
    let own = format!("http://localhost:{}", admin.port());
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", own.as_str()),
    ];

    let (status, head, _) = exchange(admin, "GET", "/ui/instances", &[], "").await;
    assert_eq!(
        (status, header(&head, "location")),
        (303, Some("/ui/login?next=%2Fui%2Finstances"))
    );
    assert_eq!(
        exchange(admin, "GET", "/ui/events/instances", &[], "")
            .await
            .0,
        401
    );

    let (status, head, body) =
        exchange(admin, "POST", "/ui/login", &form, "key=wrong&next=%2Fui%2F").await;
    assert_eq!(status, 401, "{head}");
    assert!(body.contains("not accepted") && header(&head, "set-cookie").is_none());
    // An open redirect is not offered: `next` stays on the page.
    let (status, head, _) = exchange(
        admin,
        "POST",
        "/ui/login",
        &form,
        "key=s3cret&next=https%3A%2F%2Fevil.example%2F",
    )
    .await;
    assert_eq!((status, header(&head, "location")), (303, Some("/ui/")));
    let cookie = header(&head, "set-cookie")
        .expect("a session cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.split("; ").any(|a| a == attribute),
            "{attribute} in {cookie}"
        );
    }
    let sent_cookie = cookie.split(';').next().expect("name=value").to_owned();
    let with_cookie = [("cookie", sent_cookie.as_str())];
    assert_eq!(
        exchange(admin, "GET", "/ui/instances", &with_cookie, "")
            .await
            .0,
        200
    );
    assert_eq!(
        exchange(admin, "GET", "/api/v1/service/", &with_cookie, "")
            .await
            .0,
        200
    );
    let json_with_cookie = [
        ("cookie", sent_cookie.as_str()),
        ("content-type", "application/json"),
        ("origin", own.as_str()),
    ];
    let (status, _, body) = exchange(
        admin,
        "POST",
        "/v1/instances",
        &json_with_cookie,
        r#"{"name":"one","image":"hello"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Without the cookie, the same call is refused.
    let (status, _, _) = exchange(
        admin,
        "POST",
        "/v1/instances",
        &json_with_cookie[1..],
        r#"{"name":"two","image":"hello"}"#,
    )
    .await;
    assert_eq!(status, 401);

    // Forms: only the page's own, only from its own origin.
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let cookie = ("cookie", sent_cookie.as_str());
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case; 5] = [
        ("/ui/login", "key=s3cret", vec![form_type], 415),
        (
            "/ui/login",
            "key=s3cret",
            vec![form_type, ("sec-fetch-site", "same-origin")],
            303,
        ),
        (
            "/ui/login",
            "key=s3cret",
            vec![form_type, ("origin", "http://evil.example")],
            403,
        ),
        (
            "/api/v1/service/",
            "image=hello",
            vec![form_type, ("origin", &own), cookie],
            415,
        ),
        (
            "/v1/instances",
            "name=x",
            vec![form_type, ("origin", &own), cookie],
            415,
        ),
    ];
    let mut failures = Vec::new();
    for (path, body, headers, want) in cases {
        let (status, _, answer) = exchange(admin, "POST", path, &headers, body).await;
        if status != want {
            failures.push(format!(
                "{path} {headers:?}: {status}, not {want}: {answer}"
            ));
        }
    }
    common::assert_rows(&failures, 5);

    let (status, head, _) = exchange(admin, "POST", "/ui/logout", &form, "").await;
    assert_eq!(
        (status, header(&head, "location")),
        (303, Some("/ui/login"))
    );
    assert!(header(&head, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
}

/// An open event stream: reads events as they come.
struct Events {
    conn: TcpStream,
    buf: String,
}

impl Events {
    async fn open(addr: SocketAddr, path: &str) -> Events {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nAccept: text/event-stream\r\n\r\n",
            addr.port()
        );
        conn.write_all(req.as_bytes()).await.expect("write");
        Events {
            conn,
            buf: String::new(),
        }
    }

    /// Reads until the stream holds `want` (or `within` passes: `false`), or ends (`None`).
    async fn until(&mut self, want: &str, within: Duration) -> Option<bool> {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.contains(want) {
                return Some(true);
            }
            let mut chunk = [0u8; 65536];
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.conn.read(&mut chunk)).await {
                Err(_) => return Some(false),
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    }

    /// What came since the last call.
    fn take(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_sends_what_changed_and_ends_at_shutdown() {
    let mut server = Server::start(|dir| hello_runtime(dir, "")).await;
    let (_, _, page) = exchange(server.admin, "GET", "/ui/instances", &[], "").await;
    let events = page
        .split("data-events=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page names its stream")
        .to_owned();
    assert!(events.starts_with("/ui/events/instances?v="), "{events}");

    // A page that shows the current version is sent nothing but the retry time.
    let mut stream = Events::open(server.admin, &events).await;
    assert_eq!(
        stream.until("retry: 1000", Duration::from_secs(5)).await,
        Some(true)
    );
    assert_eq!(
        stream
            .until("event: patch", Duration::from_millis(1500))
            .await,
        Some(false)
    );
    // A stale page gets every region at once.
    let mut stale = Events::open(server.admin, "/ui/events/instances?v=0").await;
    assert_eq!(
        stale
            .until("\"id\":\"groups\"}", Duration::from_secs(5))
            .await,
        Some(true)
    );
    drop(stale);

    // A new instance: the region of instances is sent whole (a row came).
    start_solo(&server).await;
    assert_eq!(
        stream
            .until("data-name=\\\"solo\\\"", Duration::from_secs(5))
            .await,
        Some(true)
    );
    assert_eq!(
        stream
            .until("\\\"running\\\"", Duration::from_secs(5))
            .await,
        Some(true)
    );
    stream.take();
    // A request through the proxy moves the counter without a publish: only its row is sent.
    assert_eq!(server.get("solo.localhost", "/").await.status, 200);
    assert_eq!(
        stream.until("1 / 3", Duration::from_secs(3)).await,
        Some(true)
    );
    let sent = stream.take();
    assert!(
        sent.contains("\"id\":\"instances\",\"rows\":[[\"i-"),
        "{sent}"
    );
    assert!(
        !sent.contains("\"id\":\"groups\""),
        "unchanged regions are not sent: {sent}"
    );
    // That row-only event's version is the page's: a browser that shows it (a reload, a
    // reconnect) is sent nothing.
    let version = sent
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("the patch has a version")
        .to_owned();
    let (_, _, page) = exchange(server.admin, "GET", "/ui/instances", &[], "").await;
    assert!(page.contains(&format!("?v={version}")), "{version}");
    let mut current =
        Events::open(server.admin, &format!("/ui/events/instances?v={version}")).await;
    assert_eq!(
        current
            .until("event: patch", Duration::from_millis(1500))
            .await,
        Some(false),
        "{}",
        current.take()
    );
    drop(current);

    // Shutdown ends the stream, and the server does not wait out its grace for it.
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        stream.until("never", Duration::from_secs(10)).await,
        None,
        "the stream ended"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shut down in {:?}",
        started.elapsed()
    );
}
