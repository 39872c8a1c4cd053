//! Issue 9's API items against the real binary: budgets the meter cannot hold, UUID-shaped
//! names, caps on batches and domains, a batch that outlives its client, cross-site requests
//! (`Content-Type`, `Host`, `Origin`), and error answers that are always the envelope.

mod common;

use std::time::Duration;

use common::{Server, hello_runtime, raw_request};
use serde_json::{Value, json};

fn runtime_only(dir: &std::path::Path) -> String {
    hello_runtime(dir, "")
}

/// Sends each `(head, body, status)` row as a raw exchange and asserts its status, and that
/// every refusal is the envelope (with the status in `errors`).
async fn check_raw_rows(server: &Server, rows: &[(String, Vec<u8>, u16)]) {
    let mut failures = Vec::new();
    for (head, body, want) in rows {
        let (status, bytes) = raw_request(server.admin, head, body).await;
        let enveloped = *want == 200
            || serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| is_envelope(&v, *want));
        if status != *want || !enveloped {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            failures.push(format!("{head:?}\n  want {want}\n  got  {status} {shown}"));
        }
    }
    common::assert_rows(&failures, rows.len());
}

fn is_envelope(v: &Value, status: u16) -> bool {
    v["status"] == "error" && v["message"].is_string() && v["errors"][0]["status"] == json!(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_names_and_sizes_the_meter_and_the_router_cannot_hold_are_refused() {
    let server = Server::start(runtime_only).await;
    let solo = server
        .api_ok(
            "POST",
            "/v1/instances",
            json!({"name": "solo", "image": "hello"}),
            "instances",
        )
        .await;
    let solo_id = solo["uuid"].as_str().expect("uuid").to_owned();
    let simple_id = solo_id.replace('-', "");
    let max = (1u64 << 63) - 1;
    let too_many_items = Value::Array(
        (0..1001)
            .map(|i| json!({"name": format!("n{i}"), "image": "hello"}))
            .collect(),
    );
    let too_many_domains = json!({
        "name": "big",
        "domains": (0..101).map(|i| json!({"name": format!("d{i}")})).collect::<Vec<_>>(),
    });
    // (method, path, body, status, substring of the message)
    let rows: Vec<(&str, &str, String, u16, String)> = vec![
        // 14: 2^63 + 3 would become 3 under the meter's lock bit.
        (
            "POST",
            "/v1/instances",
            json!({"name": "x", "image": "hello", "autokill": {"num_requests": (1u64 << 63) + 3}})
                .to_string(),
            400,
            format!(
                "autokill.num_requests: {} is more than the meter can count (at most {max}",
                (1u64 << 63) + 3
            ),
        ),
        (
            "POST",
            "/v1/instances",
            json!({"name": "x", "image": "hello", "autokill": {"num_requests": u64::MAX}})
                .to_string(),
            400,
            format!("at most {max}"),
        ),
        (
            "PATCH",
            "/v1/instances/solo",
            json!({"prop": "autokill", "op": "set", "value": {"num_requests": 1u64 << 63}})
                .to_string(),
            400,
            format!(
                "value.num_requests: {} is more than the meter can count",
                1u64 << 63
            ),
        ),
        // 15: a name that parses as a UUID would be looked up as one.
        (
            "POST",
            "/v1/instances",
            json!({"name": solo_id, "image": "hello"}).to_string(),
            400,
            "name: ".to_owned() + &format!("{solo_id:?} has the shape of a UUID"),
        ),
        (
            "POST",
            "/v1/instances",
            json!({"name": simple_id, "image": "hello"}).to_string(),
            400,
            "has the shape of a UUID".into(),
        ),
        (
            "POST",
            "/v1/services",
            json!({"name": solo_id}).to_string(),
            400,
            "name: ".to_owned() + &format!("{solo_id:?} has the shape of a UUID"),
        ),
        // 17: caps.
        (
            "POST",
            "/v1/instances",
            too_many_items.to_string(),
            400,
            "1001 items; at most 1000 are taken in one request".into(),
        ),
        (
            "POST",
            "/v1/services",
            too_many_domains.to_string(),
            400,
            "domains: 101 domains; a service group has at most 100".into(),
        ),
        // 21: duplicate keys inside a PATCH value are refused as everywhere else.
        (
            "PATCH",
            "/v1/instances/solo",
            r#"{"prop": "autokill", "op": "set", "value": {"num_requests": 1, "num_requests": 2}}"#
                .into(),
            400,
            "value: duplicate field `num_requests`".into(),
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, needle) in &rows {
        let (got, v) = server.api_raw(method, path, body).await;
        let message = v["message"].as_str().unwrap_or_default();
        if got.as_u16() != *status || !message.contains(needle.as_str()) {
            let shown: String = v.to_string().chars().take(400).collect();
            failures.push(format!(
                "{method} {path} {}\n  want {status} ~ {needle:?}\n  got  {got} {shown}",
                &body[..body.len().min(120)]
            ));
        }
    }
    common::assert_rows(&failures, rows.len());
    let all = server.admin_json("/v1/instances").await;
    assert_eq!(
        all["data"]["instances"].as_array().map(Vec::len),
        Some(1),
        "nothing was created: {all}"
    );
    assert_eq!(all["data"]["instances"][0]["autokill"]["num_requests"], 0);
    let groups = server.admin_json("/v1/services").await;
    assert_eq!(groups["data"]["service_groups"], json!([]), "{groups}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_applied_whole_even_when_its_client_goes_away() {
    let server = Server::start(runtime_only).await;
    let items: Vec<Value> = (0..300)
        .map(|i| json!({"name": format!("b{i}"), "image": "hello"}))
        .collect();
    let body = Value::Array(items).to_string();
    // Send the batch and hang up without reading the answer.
    {
        use tokio::io::AsyncWriteExt;
        let mut conn = tokio::net::TcpStream::connect(server.admin)
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/instances HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.expect("head");
        conn.write_all(body.as_bytes()).await.expect("body");
        conn.flush().await.expect("flush");
        // Give the server a moment to start on it, then close.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut count = 0;
    server
        .eventually(20, "all 300 instances of the batch exist", async || {
            let v = server.admin_json("/v1/instances").await;
            count = v["data"]["instances"].as_array().map_or(0, Vec::len);
            count == 300
        })
        .await;
    // And no more arrive afterwards.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = server.admin_json("/v1/instances").await;
    assert_eq!(v["data"]["instances"].as_array().map(Vec::len), Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused() {
    let server = Server::start_with_admin(runtime_only, "  allowed_hosts: [autokill.test]\n").await;
    let port = server.admin.port();
    let create = |name: &str| format!(r#"{{"name": "{name}", "image": "hello"}}"#);
    // (head, body, status); every refusal is the envelope.
    let rows: Vec<(String, String, u16)> = vec![
        // A form post or fetch without preflight: text/plain.
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: text/plain"
            ),
            create("t1"),
            415,
        ),
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/x-www-form-urlencoded"
            ),
            create("t2"),
            415,
        ),
        (
            format!("POST /v1/instances HTTP/1.1\r\nHost: localhost:{port}"),
            create("t3"),
            415,
        ),
        (
            format!(
                "PATCH /v1/instances/t9 HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: text/plain"
            ),
            r#"{"prop":"delete_lock","op":"set","value":true}"#.into(),
            415,
        ),
        // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: evil.example:{port}\r\nContent-Type: application/json"
            ),
            create("t4"),
            403,
        ),
        (
            format!("GET /v1/instances HTTP/1.1\r\nHost: evil.example:{port}"),
            String::new(),
            403,
        ),
        (
            format!("GET /metrics HTTP/1.1\r\nHost: evil.example:{port}"),
            String::new(),
            403,
        ),
        (
            format!(
                "GET /v1/instances HTTP/1.1\r\nHost: localhost:{}",
                port.wrapping_add(1)
            ),
            String::new(),
            403,
        ),
        // A page elsewhere posting with a JSON type still sends its Origin.
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\nOrigin: http://evil.example"
            ),
            create("t5"),
            403,
        ),
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\nOrigin: null"
            ),
            create("t6"),
            403,
        ),
        // Allowed: JSON with parameters, the listener's own names, an allowed host, a same-origin page.
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: Application/JSON; charset=utf-8"
            ),
            create("ok1"),
            200,
        ),
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json"
            ),
            create("ok2"),
            200,
        ),
        (
            format!(
                "POST /v1/instances HTTP/1.1\r\nHost: autokill.test:{port}\r\nContent-Type: application/json\r\nOrigin: http://autokill.test:{port}"
            ),
            create("ok3"),
            200,
        ),
        (
            "POST /v1/instances HTTP/1.1\r\nHost: autokill.test\r\nContent-Type: application/json"
                .to_owned(),
            create("ok4"),
            200,
        ),
        (
            format!(
                "GET /v1/instances HTTP/1.1\r\nHost: [::1]:{port}\r\nOrigin: http://localhost:{port}"
            ),
            String::new(),
            200,
        ),
        (
            format!("GET /livez HTTP/1.1\r\nHost: localhost:{port}"),
            String::new(),
            200,
        ),
    ];
    let rows: Vec<(String, Vec<u8>, u16)> = rows
        .into_iter()
        .map(|(head, body, want)| (head, body.into_bytes(), want))
        .collect();
    check_raw_rows(&server, &rows).await;
    let v = server.admin_json("/v1/instances").await;
    let mut names: Vec<&str> = v["data"]["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["ok1", "ok2", "ok3", "ok4"],
        "only the allowed requests acted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_the_envelope_and_echoes_are_short() {
    let server = Server::start(runtime_only).await;
    let port = server.admin.port();
    let host = format!("Host: localhost:{port}\r\nContent-Type: application/json");
    let big = vec![b' '; 3 << 20];
    // (head, body, status)
    let rows: Vec<(String, Vec<u8>, u16)> = vec![
        (format!("POST /v1/instances HTTP/1.1\r\n{host}"), big, 413),
        (
            format!("GET /v1/instances/%FF%FE HTTP/1.1\r\n{host}"),
            Vec::new(),
            400,
        ),
        (
            format!("PUT /v1/instances HTTP/1.1\r\n{host}"),
            b"{}".to_vec(),
            405,
        ),
        (
            format!("GET /v1/nothing-here HTTP/1.1\r\n{host}"),
            Vec::new(),
            404,
        ),
        (
            format!("GET /v1/instances/a/b/c HTTP/1.1\r\n{host}"),
            Vec::new(),
            404,
        ),
    ];
    check_raw_rows(&server, &rows).await;

    // A half-megabyte bad value (under admin.max_body_size) is not sent back (twice) in full.
    let huge = "A".repeat(1 << 19);
    for body in [
        json!({"name": huge, "image": "hello"}),
        json!({"name": "x", "image": "hello", "autokill": {"time_ms": huge}}),
        json!([{"name": huge}]),
    ] {
        let path = if body.is_array() {
            "/v1/instances/start"
        } else {
            "/v1/instances"
        };
        let method = if body.is_array() { "PUT" } else { "POST" };
        let r = server
            .admin_request(method, path, &body.to_string(), None)
            .await;
        assert!(
            r.body.len() < 8 * 1024,
            "{method} {path}: answer of {} bytes: {}",
            r.body.len(),
            &r.text()[..300]
        );
        let v: Value = serde_json::from_slice(&r.body).expect("envelope");
        assert_eq!(v["status"], "error", "{v}");
    }
}
