//! The admin listener's edges against the real binary: a body over `admin.max_body_size` is
//! refused with 413 naming the limit, on every API and the web page's form posts, announced or
//! chunked; a body at the limit is read; and every 401 says in `WWW-Authenticate` which
//! schemes it takes.

mod common;

use common::{Server, header, hello_runtime, raw_exchange as exchange};
use serde_json::Value;

/// A JSON body of exactly `len` bytes: `{"name":"aaa…"}`.
fn json_of_len(len: usize) -> Vec<u8> {
    let frame = br#"{"name":""}"#.len();
    format!(r#"{{"name":"{}"}}"#, "a".repeat(len - frame)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_naming_it() {
    let server =
        Server::start_with_admin(|dir| hello_runtime(dir, ""), "  max_body_size: 4KiB\n").await;
    let limit = 4096;
    let json = "Content-Type: application/json";
    let origin = format!("Origin: http://localhost:{}", server.admin.port());
    let form = format!("Content-Type: application/x-www-form-urlencoded\r\n{origin}");
    // (request line and headers, the surface's answer shape)
    let routes: Vec<(String, &str)> = vec![
        (format!("POST /v1/instances HTTP/1.1\r\n{json}"), "v1"),
        (format!("PATCH /v1/instances HTTP/1.1\r\n{json}"), "v1"),
        (format!("PUT /v1/instances/stop HTTP/1.1\r\n{json}"), "v1"),
        (
            format!("POST /v1/instances/templates HTTP/1.1\r\n{json}"),
            "v1",
        ),
        (format!("DELETE /v1/services HTTP/1.1\r\n{json}"), "v1"),
        (format!("GET /v1/instances HTTP/1.1\r\n{json}"), "v1"),
        (format!("POST /api/v1/service/ HTTP/1.1\r\n{json}"), "tutum"),
        (
            format!("PATCH /api/v1/service/x/ HTTP/1.1\r\n{json}"),
            "tutum",
        ),
        (format!("POST /ui/login HTTP/1.1\r\n{form}"), "page"),
    ];
    let mut failures = Vec::new();
    for (head, shape) in &routes {
        for chunked in [false, true] {
            let (status, _, body) =
                exchange(server.admin, head, &json_of_len(limit + 1), chunked).await;
            let message = match *shape {
                "v1" => serde_json::from_str::<Value>(&body).ok().and_then(|v| {
                    (v["status"] == "error" && v["errors"][0]["status"] == 413)
                        .then(|| v["message"].as_str().map(str::to_owned))
                        .flatten()
                }),
                "tutum" => serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned)),
                _ => Some(body.clone()),
            };
            let named = message.as_deref().is_some_and(|m| {
                m.contains("request body too large")
                    && m.contains("4 KiB (4096 bytes)")
                    && m.contains("admin.max_body_size")
            });
            if status != 413 || !named {
                failures.push(format!(
                    "{head:?} chunked={chunked}: {status} {}",
                    &body[..body.len().min(300)]
                ));
            }
        }
        // At the limit the body is read (and judged on its content, whatever that gives).
        let (status, _, body) = exchange(server.admin, head, &json_of_len(limit), false).await;
        if status == 413 || status >= 500 {
            failures.push(format!("{head:?} at the limit: {status} {body}"));
        }
    }
    common::assert_rows(&failures, routes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_is_one_mebibyte() {
    let server = Server::start(|dir| hello_runtime(dir, "")).await;
    let head = "POST /v1/instances HTTP/1.1\r\nContent-Type: application/json";
    let (status, _, body) = exchange(server.admin, head, &json_of_len((1 << 20) + 1), false).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("1 MiB (1048576 bytes)"), "{body}");
    let (status, _, body) = exchange(server.admin, head, &json_of_len(1 << 20), false).await;
    assert_eq!(status, 400, "read and judged: the name is too long: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_401_names_the_schemes_it_takes() {
    let server = Server::start_with_admin(
        |dir| hello_runtime(dir, ""),
        "  token: s3cret\n  api_users:\n    - {user: alice, apikey: k3y}\n",
    )
    .await;
    let origin = format!("Origin: http://localhost:{}", server.admin.port());
    let bearer = r#"Bearer realm="autokill""#;
    let invalid = r#"Bearer realm="autokill", error="invalid_token""#;
    let tutum = r#"ApiKey realm="autokill", Bearer realm="autokill""#;
    let cookie =
        r#"Cookie realm="autokill", form-action="/ui/login", cookie-name="autokill_session""#;
    // (request line and headers, body, the challenge)
    let rows: Vec<(String, &str, &str)> = vec![
        ("GET /v1/instances HTTP/1.1".into(), "", bearer),
        (
            "GET /v1/instances HTTP/1.1\r\nAuthorization: Bearer nope".into(),
            "",
            invalid,
        ),
        (
            "POST /v1/instances HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Basic YWxpY2U6azN5".into(),
            "{}",
            invalid,
        ),
        ("GET /api/v1/service/ HTTP/1.1".into(), "", tutum),
        (
            "GET /api/v1/service/ HTTP/1.1\r\nAuthorization: ApiKey alice:nope".into(),
            "",
            tutum,
        ),
        (
            "POST /api/v1/service/ HTTP/1.1\r\nContent-Type: application/json".into(),
            "{}",
            tutum,
        ),
        ("GET /ui/events/instances HTTP/1.1".into(), "", cookie),
        (
            format!(
                "POST /ui/login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n{origin}"
            ),
            "key=wrong",
            cookie,
        ),
    ];
    let mut failures = Vec::new();
    for (head, body, want) in &rows {
        let (status, got, _) = exchange(server.admin, head, body.as_bytes(), false).await;
        let challenge = header(&got, "www-authenticate");
        if status != 401 || challenge != Some(*want) {
            failures.push(format!(
                "{head:?}: {status}, WWW-Authenticate {challenge:?}, want {want}"
            ));
        }
    }
    common::assert_rows(&failures, rows.len());
    // Accepted credentials are not challenged.
    let (status, got, _) = exchange(
        server.admin,
        "GET /api/v1/service/ HTTP/1.1\r\nAuthorization: ApiKey alice:k3y",
        b"",
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&got, "www-authenticate"), None);
}
