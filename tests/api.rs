//! The `/v1` admin API over HTTP against the real binary: bad input named and refused with
//! nothing changed, auth, the envelope, route order, batches and PATCH `id` echo.

mod common;

use common::{Server, hello_runtime};
use hyper::StatusCode;
use serde_json::{Value, json};

fn runtime_only(dir: &std::path::Path) -> String {
    hello_runtime(dir, "")
}

/// Everything the API shows: compared before and after refused requests.
async fn snapshot(server: &Server) -> Value {
    json!({
        "instances": server.admin_json("/v1/instances").await,
        "templates": server.admin_json("/v1/instances/templates").await,
        "services": server.admin_json("/v1/services").await,
    })
}

/// Creates a stopped (not auto-started) instance.
async fn stopped_instance(server: &Server, body: Value) -> Value {
    server
        .api_ok("POST", "/v1/instances", body, "instances")
        .await
}

/// A server with: a stopped instance `solo` (autodestroy ON_FAILURE), a delete-locked stopped
/// instance `locked`, a group `web` (domain `web`) with a stopped member `member`, and a
/// delete-locked template `tpl`.
async fn populated() -> Server {
    let server = Server::start(runtime_only).await;
    stopped_instance(
        &server,
        json!({"name": "solo", "image": "hello", "autodestroy": "ON_FAILURE"}),
    )
    .await;
    stopped_instance(&server, json!({"name": "locked", "image": "hello"})).await;
    server
        .api_ok(
            "PATCH",
            "/v1/instances/locked",
            json!({"prop": "delete_lock", "op": "set", "value": true}),
            "instances",
        )
        .await;
    server
        .api_ok(
            "POST",
            "/v1/services",
            json!({"name": "web", "domains": [{"name": "web"}]}),
            "service_groups",
        )
        .await;
    stopped_instance(
        &server,
        json!({"name": "member", "image": "hello", "service_group": {"name": "web"}}),
    )
    .await;
    stopped_instance(&server, json!({"name": "base", "image": "hello"})).await;
    server
        .api_ok(
            "POST",
            "/v1/instances/templates",
            json!({"name": "base"}),
            "instances",
        )
        .await;
    server
        .api_ok(
            "PATCH",
            "/v1/instances/templates/base",
            json!({"prop": "delete_lock", "op": "set", "value": true}),
            "instances",
        )
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_nothing_changes() {
    let server = populated().await;
    let before = snapshot(&server).await;
    let long = "a".repeat(64);
    // (method, path, body as sent, status, substring of the message)
    let rows: Vec<(&str, &str, String, u16, &str)> = vec![
        // POST /v1/instances: shape and types
        ("POST", "/v1/instances", r#"{"nmae": "x", "image": "hello"}"#.into(), 400, "unknown field `nmae`"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"time_ms": "x"}}"#.into(), 400, "autokill.time_ms: invalid type: string \"x\""),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"time_ms": -5}}"#.into(), 400, "autokill.time_ms: -5 is negative"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"time_ms": 3155760000001}}"#.into(), 400, "autokill.time_ms: 3155760000001 ms is more than 100 years"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"time_ms": 184467440737095516150}}"#.into(), 400, "autokill.time_ms: "),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"time_ms": 1.5}}"#.into(), 400, "autokill.time_ms: 1.5 is not a whole number"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"num_requests": -1}}"#.into(), 400, "autokill.num_requests: invalid value: integer `-1`"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"num_requests": "3"}}"#.into(), 400, "autokill.num_requests: invalid type: string"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autokill": {"time": 5}}"#.into(), 400, "autokill.time: unknown field `time`"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "restart_policy": "sometimes"}"#.into(), 400, "restart_policy: unknown restart policy \"sometimes\""),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autodestroy": "MAYBE"}"#.into(), 400, "autodestroy: unknown autodestroy \"MAYBE\""),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "features": ["fly"]}"#.into(), 400, "features[0]: unknown variant `fly`"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "features": "delete-on-stop"}"#.into(), 400, "features: invalid type: string"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "restart_policy": "always", "autodestroy": "ON_SUCCESS"}"#.into(), 400, "autodestroy: ON_SUCCESS cannot be combined with restart_policy \"always\""),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "restart_policy": "ALWAYS", "features": ["delete-on-stop"]}"#.into(), 400, "features: ALWAYS cannot be combined"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "autodestroy": "OFF", "features": ["delete-on-stop"]}"#.into(), 400, "features: \"delete-on-stop\" means autodestroy ALWAYS"),
        ("POST", "/v1/instances", r#"{"name": "", "image": "hello"}"#.into(), 400, "name: invalid name \"\""),
        ("POST", "/v1/instances", r#"{"name": "Web", "image": "hello"}"#.into(), 400, "name: invalid name \"Web\""),
        ("POST", "/v1/instances", r#"{"name": "-a", "image": "hello"}"#.into(), 400, "name: invalid name"),
        ("POST", "/v1/instances", format!(r#"{{"name": "{long}", "image": "hello"}}"#), 400, "name: invalid name"),
        ("POST", "/v1/instances", r#"{"name": 7, "image": "hello"}"#.into(), 400, "name: invalid type: integer `7`"),
        ("POST", "/v1/instances", r#"{"name": "templates", "image": "hello"}"#.into(), 400, "name: \"templates\" is reserved"),
        ("POST", "/v1/instances", r#"{"name": "x"}"#.into(), 400, "image: required"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "nope"}"#.into(), 400, "unknown image \"nope\""),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "replicas": 2}"#.into(), 400, "replicas: not supported"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "memory_mb": 5}"#.into(), 400, "memory_mb: 5 is out of range: from 6"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "memory_mb": -1}"#.into(), 400, "memory_mb: invalid value: integer `-1`"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "wait_timeout_ms": 100}"#.into(), 400, "wait_timeout_ms: only with \"autostart\": true"),
        ("POST", "/v1/instances", r#"{"name": "x", "template": {"name": "base", "uuid": "8d6b0ae0-0d4c-4b9e-a4a7-2b8f5d1c9e10"}}"#.into(), 400, "template: give either uuid or name, not both"),
        ("POST", "/v1/instances", r#"{"name": "x", "template": {"nmae": "base"}}"#.into(), 400, "template.nmae: unknown field `nmae`"),
        ("POST", "/v1/instances", r#"{"name": "x", "template": {"uuid": "not-a-uuid"}}"#.into(), 400, "template.uuid: UUID parsing failed"),
        // JSON itself
        ("POST", "/v1/instances", "{\"name\": \"x\",\n \"image\": hello}".into(), 400, "invalid JSON: expected value at line 2 column"),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello"} x"#.into(), 400, "invalid JSON: trailing characters at line 1"),
        ("POST", "/v1/instances", "".into(), 400, "the request body is empty"),
        ("POST", "/v1/instances", "[]".into(), 400, "empty array"),
        // a bad item refuses the whole batch, before anything is created
        ("POST", "/v1/instances", r#"[{"name": "x", "image": "hello"}, {"name": "y", "image": "hello", "autokill": {"time_ms": true}}]"#.into(), 400, "[1].autokill.time_ms: invalid type: boolean"),
        ("POST", "/v1/instances", r#"[{"name": "x", "image": "hello"}, {"name": "Y", "image": "hello"}]"#.into(), 400, "[1].name: invalid name"),
        // what only the controller knows
        ("POST", "/v1/instances", r#"{"name": "solo", "image": "hello"}"#.into(), 409, "already exists"),
        ("POST", "/v1/instances", r#"{"name": "web", "image": "hello"}"#.into(), 409, "service group's domain"),
        ("POST", "/v1/instances", r#"{"name": "x", "template": {"name": "nope"}}"#.into(), 404, "no template \"nope\""),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "service_group": {"name": "nope"}}"#.into(), 404, "no service group \"nope\""),
        // PATCH /v1/instances
        ("PATCH", "/v1/instances/solo", r#"{"prop": "nope", "op": "set", "value": true}"#.into(), 400, "prop: unknown property \"nope\" of an instance"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "delete_lock", "op": "add", "value": true}"#.into(), 400, "op: op \"add\" is not supported for \"delete_lock\""),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "delete_lock", "op": "replace", "value": true}"#.into(), 400, "op: unknown variant `replace`"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "delete_lock", "op": "set", "value": "yes"}"#.into(), 400, "value: invalid type: string \"yes\", expected a boolean"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "delete_lock", "op": "set"}"#.into(), 400, "value: invalid type: null"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "autokill", "op": "set", "value": {"time_ms": -1}}"#.into(), 400, "value.time_ms: -1 is negative"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "autokill", "op": "set", "value": {"nmae": 1}}"#.into(), 400, "value.nmae: unknown field `nmae`"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "restart_policy", "op": "set", "value": "sometimes"}"#.into(), 400, "value: unknown restart policy"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "restart_policy", "op": "set", "value": "always"}"#.into(), 400, "autodestroy"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "features", "op": "add", "value": ["fly"]}"#.into(), 400, "value[0]: unknown variant `fly`"),
        ("PATCH", "/v1/instances/solo", r#"{"prop": "delete_lock", "op": "set", "value": true, "extra": 1}"#.into(), 400, "unknown field `extra`"),
        ("PATCH", "/v1/instances/solo", r#"{"name": "locked", "prop": "delete_lock", "op": "set", "value": true}"#.into(), 400, "uuid/name: \"locked\" is not the instance \"solo\" of the path"),
        ("PATCH", "/v1/instances/nope", r#"{"prop": "delete_lock", "op": "set", "value": true}"#.into(), 404, "no instance \"nope\""),
        ("PATCH", "/v1/instances", r#"[{"prop": "delete_lock", "op": "set", "value": true}]"#.into(), 400, "[0].uuid/name: give the uuid or the name"),
        // all or nothing: the good first item is not applied either
        ("PATCH", "/v1/instances", r#"[{"name": "solo", "prop": "delete_lock", "op": "set", "value": true}, {"name": "solo", "prop": "nope", "op": "set", "value": 1}]"#.into(), 400, "[1].prop: unknown property"),
        ("PATCH", "/v1/instances/solo", r#"[{"prop": "delete_lock", "op": "set", "value": true}, {"prop": "restart_policy", "op": "set", "value": "always"}]"#.into(), 400, "autodestroy"),
        // DELETE, start, stop
        ("DELETE", "/v1/instances", r#"[{"nmae": "solo"}]"#.into(), 400, "[0].nmae: unknown field `nmae`"),
        ("DELETE", "/v1/instances", r#"[{"uuid": "zz"}]"#.into(), 400, "[0].uuid: UUID parsing failed"),
        ("DELETE", "/v1/instances", r#"[{}]"#.into(), 400, "[0]: give the uuid or the name"),
        ("DELETE", "/v1/instances", "".into(), 400, "the request body is empty"),
        ("DELETE", "/v1/instances/nope", "".into(), 404, "no instance \"nope\""),
        ("DELETE", "/v1/instances/locked", "".into(), 409, "delete-locked"),
        ("DELETE", "/v1/instances/base", "".into(), 404, "is a template, not an instance"),
        ("PUT", "/v1/instances/solo/start", r#"{"force": true}"#.into(), 400, "unknown field `force`"),
        ("PUT", "/v1/instances/nope/start", "".into(), 404, "no instance \"nope\""),
        // templates
        ("POST", "/v1/instances/templates", "{}".into(), 400, "give the uuid or the name"),
        ("POST", "/v1/instances/templates", r#"{"name": "solo", "autokill": {"time_ms": "x"}}"#.into(), 400, "autokill.time_ms: invalid type"),
        ("POST", "/v1/instances/templates", r#"{"name": "solo", "autokill": {"num_requests": 1}}"#.into(), 400, "autokill.num_requests: unknown field `num_requests`"),
        ("POST", "/v1/instances/templates", r#"{"name": "nope"}"#.into(), 404, "no instance \"nope\""),
        ("POST", "/v1/instances/templates", r#"{"name": "base"}"#.into(), 404, "is a template, not an instance"),
        ("PATCH", "/v1/instances/templates/base", r#"{"prop": "autokill", "op": "set", "value": {"num_requests": 1}}"#.into(), 400, "value.num_requests: unknown field"),
        ("PATCH", "/v1/instances/templates/base", r#"{"prop": "delete_lock", "op": "del", "value": true}"#.into(), 400, "op: op \"del\" is not supported"),
        ("PATCH", "/v1/instances/templates/base", r#"{"prop": "restart_policy", "op": "set", "value": "never"}"#.into(), 400, "prop: unknown property \"restart_policy\" of a template"),
        ("PATCH", "/v1/instances/templates/solo", r#"{"prop": "delete_lock", "op": "set", "value": true}"#.into(), 404, "is an instance, not a template"),
        ("DELETE", "/v1/instances/templates/base", "".into(), 409, "delete-locked"),
        // service groups
        ("POST", "/v1/services", r#"{"name": 5, "domains": []}"#.into(), 400, "name: invalid type: integer `5`"),
        ("POST", "/v1/services", r#"{"name": "Bad"}"#.into(), 400, "name: invalid name"),
        ("POST", "/v1/services", r#"{"name": "g", "domains": [{"name": "a..b"}]}"#.into(), 400, "domains[0].name: invalid host name"),
        ("POST", "/v1/services", r#"{"name": "g", "domains": [{"name": "Shop"}, {"name": "shop"}]}"#.into(), 400, "domains[1].name: \"shop.localhost\" is given twice"),
        ("POST", "/v1/services", r#"{"name": "g", "domains": ["shop"]}"#.into(), 400, "domains[0]: invalid type: string"),
        ("POST", "/v1/services", r#"{"name": "g", "autokill": {"num_requests": 3}}"#.into(), 400, "autokill.num_requests: unknown field"),
        ("POST", "/v1/services", r#"{"name": "g", "autokill": {"time_ms": -3}}"#.into(), 400, "autokill.time_ms: -3 is negative"),
        ("POST", "/v1/services", r#"{"name": "g", "soft_limit": 10, "hard_limit": 5}"#.into(), 400, "soft_limit: 10 is above hard_limit 5"),
        ("POST", "/v1/services", r#"{"name": "g", "hard_limit": 0}"#.into(), 400, "hard_limit: 0 is not in 1..=65535"),
        ("POST", "/v1/services", r#"{"name": "g", "services": [{"port": 0}]}"#.into(), 400, "services[0].port: port 0 is not in 1..=65535"),
        ("POST", "/v1/services", r#"{"name": "g", "services": [{"port": 80, "handlers": ["ftp"]}]}"#.into(), 400, "services[0].handlers[0]: unknown variant `ftp`"),
        ("POST", "/v1/services", r#"{"name": "web"}"#.into(), 409, "already exists"),
        ("POST", "/v1/services", r#"{"name": "g", "domains": [{"name": "web"}]}"#.into(), 409, "already belongs to service group \"web\""),
        ("POST", "/v1/services", r#"{"name": "g", "domains": [{"name": "solo"}]}"#.into(), 409, "host name of instance \"solo\""),
        ("PATCH", "/v1/services/web", r#"{"prop": "domains", "op": "set", "value": [{"name": "x"}]}"#.into(), 400, "op: op \"set\" is not supported for \"domains\""),
        ("PATCH", "/v1/services/web", r#"{"prop": "domains", "op": "add", "value": [{"name": "a..b"}]}"#.into(), 400, "value[0].name: invalid host name"),
        ("PATCH", "/v1/services/web", r#"{"prop": "soft_limit", "op": "set", "value": 0}"#.into(), 400, "value: 0 is not in 1..=65535"),
        ("PATCH", "/v1/services/web", r#"{"prop": "hard_limit", "op": "set", "value": "x"}"#.into(), 400, "value: invalid type: string"),
        ("PATCH", "/v1/services/web", r#"{"prop": "persistent", "op": "set", "value": true}"#.into(), 400, "prop: unknown property \"persistent\" of a service group"),
        ("PATCH", "/v1/services/nope", r#"{"prop": "delete_lock", "op": "set", "value": true}"#.into(), 404, "no service group \"nope\""),
        ("DELETE", "/v1/services/web", "".into(), 409, "still has 1 instance"),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, needle) in &rows {
        let (got, v) = server.api_raw(method, path, body).await;
        let message = v["message"].as_str().unwrap_or_default();
        // An array body is a batch: refused items are answered in a 200, each saying why.
        let batch = body.trim_start().starts_with('[') && got == StatusCode::OK;
        let refusal = if batch {
            v["data"]
                .as_object()
                .and_then(|d| d.values().next())
                .and_then(|items| items.as_array())
                .and_then(|items| items.iter().find(|i| i["status"] == "error"))
                .cloned()
                .unwrap_or_default()
        } else {
            v["errors"][0].clone()
        };
        let shaped = v["status"] == "error"
            && (batch || refusal["status"] == json!(status))
            && refusal["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle));
        if (got.as_u16() != *status && !batch) || !message.contains(needle) || !shaped {
            failures.push(format!(
                "{method} {path} {body}\n  want {status} ~ {needle:?}\n  got  {got} {v}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert_eq!(
        snapshot(&server).await,
        before,
        "a refused request changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_v1() {
    let server = Server::start_with_admin(runtime_only, "  token: s3cret-token\n").await;
    for (token, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (Some("s3cret-tokenX"), StatusCode::UNAUTHORIZED),
        (Some("s3cret-token"), StatusCode::OK),
    ] {
        let r = server
            .admin_request("GET", "/v1/instances", "", token)
            .await;
        assert_eq!(r.status, want, "token {token:?}: {}", r.text());
        if want == StatusCode::UNAUTHORIZED {
            let v: Value = serde_json::from_slice(&r.body).expect("JSON envelope");
            assert_eq!(v["status"], "error");
            assert_eq!(v["errors"][0]["status"], 401);
            // RFC 6750 §3: the realm, and why when a token was sent.
            let want: &[u8] = if token.is_some() {
                br#"Bearer realm="autokill", error="invalid_token""#
            } else {
                br#"Bearer realm="autokill""#
            };
            assert_eq!(
                r.headers.get("www-authenticate").map(|v| v.as_bytes()),
                Some(want)
            );
        }
    }
    // A refused change changes nothing.
    let r = server
        .admin_request(
            "POST",
            "/v1/instances",
            r#"{"name": "x", "image": "hello"}"#,
            Some("wrong"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = common::request_with(
        server.admin,
        "GET",
        "/v1/instances",
        b"",
        &[("authorization", "bearer s3cret-token")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the scheme is case-insensitive");
    let v: Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["data"]["instances"], json!([]), "nothing was created");
    // Health and metrics stay open for probes and scrapers.
    for path in ["/livez", "/readyz", "/metrics"] {
        let r = server.admin_request("GET", path, "", None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_use_the_unikraft_envelope_and_shapes() {
    let server = Server::start(runtime_only).await;
    let group = server
        .api_ok(
            "POST",
            "/v1/services",
            json!({
                "name": "shop",
                "domains": [{"name": "Shop"}, {"name": "shop.example.com."}],
                "autokill": {"time_ms": 0},
                "soft_limit": 5,
                "hard_limit": 10,
                "services": [{"port": 443, "destination_port": 8080, "handlers": ["tls", "http"]}],
            }),
            "service_groups",
        )
        .await;
    assert_eq!(group["status"], "success");
    assert_eq!(group["name"], "shop");
    assert_eq!(
        group["domains"],
        json!([{"fqdn": "shop.localhost", "name": "shop.localhost"},
               {"fqdn": "shop.example.com", "name": "shop.example.com"}])
    );
    assert_eq!(group["soft_limit"], 5);
    assert_eq!(group["hard_limit"], 10);
    assert_eq!(
        group["services"],
        json!([{"port": 443, "destination_port": 8080, "handlers": ["tls", "http"]}])
    );
    assert_eq!(group["autokill"], json!({"time_ms": 0}));
    let group_id = group["uuid"].as_str().expect("uuid").to_owned();

    let (status, v) = server
        .api(
            "POST",
            "/v1/instances",
            json!({
                "name": "cart",
                "image": "hello",
                "service_group": {"uuid": group_id},
                "autokill": {"num_requests": 10, "time_ms": 60000},
                "restart_policy": "ON_FAILURE",
                "features": ["delete-on-stop"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert!(v.get("errors").is_none(), "{v}");
    let i = &v["data"]["instances"][0];
    assert_eq!(i["status"], "success");
    assert_eq!(i["name"], "cart");
    assert_eq!(i["state"], "stopped", "created without autostart");
    assert_eq!(i["image"], "hello");
    assert_eq!(i["fqdn"], "cart.localhost");
    assert_eq!(i["private_fqdn"], "cart.localhost");
    assert_eq!(
        i["service_group"],
        json!({"uuid": group_id, "name": "shop", "domains": [
            {"fqdn": "shop.localhost", "name": "shop.localhost"},
            {"fqdn": "shop.example.com", "name": "shop.example.com"},
        ]})
    );
    assert_eq!(i["autokill"], json!({"num_requests": 10, "time_ms": 60000}));
    assert_eq!(i["restart_policy"], "on-failure");
    assert_eq!(i["autodestroy"], "ALWAYS");
    assert_eq!(i["features"], json!(["delete-on-stop"]));
    assert_eq!(i["delete_lock"], false);
    assert_eq!(i["requests"], 0);
    let created = i["created_at"].as_str().expect("created_at");
    assert!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {created}"
    );
    assert!(i.get("template").is_none(), "absent, not null: {i}");
    assert!(i.get("exit_code").is_none(), "absent, not null: {i}");

    // A field sent as `null` is not set.
    let nul = stopped_instance(
        &server,
        json!({"name": "nul", "image": "hello", "autokill": {"num_requests": 5, "time_ms": null},
               "restart_policy": null, "autodestroy": null, "features": null,
               "service_group": null, "template": null, "autostart": null}),
    )
    .await;
    assert_eq!(nul["autokill"], json!({"num_requests": 5, "time_ms": 0}));
    assert_eq!(nul["restart_policy"], "never");
    assert_eq!(nul["autodestroy"], "OFF");
    assert!(nul.get("service_group").is_none(), "{nul}");
    server
        .api_ok("DELETE", "/v1/instances/nul", Value::Null, "instances")
        .await;

    // GET of one and of the list: no per-item status, as Unikraft lists.
    let one = server.admin_json("/v1/instances/cart").await;
    assert_eq!(one["status"], "success");
    assert_eq!(one["data"]["instances"][0]["uuid"], i["uuid"]);
    assert!(one["data"]["instances"][0].get("status").is_none());
    let by_uuid = server
        .admin_json(&format!(
            "/v1/instances/{}",
            i["uuid"].as_str().expect("uuid")
        ))
        .await;
    assert_eq!(by_uuid["data"]["instances"][0]["name"], "cart");
    let groups = server.admin_json("/v1/services/shop").await;
    assert_eq!(
        groups["data"]["service_groups"][0]["instances"],
        json!([{"uuid": i["uuid"], "name": "cart"}])
    );
    // The list form with a body naming resources (Unikraft's GET takes one).
    let (status, v) = server
        .api(
            "GET",
            "/v1/instances",
            json!([{"name": "cart"}, {"name": "nope"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "partial_success");
    assert_eq!(v["data"]["instances"][0]["name"], "cart");
    assert_eq!(v["data"]["instances"][1]["status"], "error");
    assert_eq!(v["data"]["instances"][1]["error"], 8, "not found: {v}");
    assert!(
        v.get("errors").is_none(),
        "a 200 names its refusals in its items: {v}"
    );

    // Errors: 404 for an unknown resource and an unknown path, 405 with Allow.
    let (status, v) = server.api("GET", "/v1/instances/nope", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["status"], "error");
    assert_eq!(v["message"], "no instance \"nope\"");
    assert_eq!(
        v["errors"],
        json!([{"status": 404, "message": "no instance \"nope\""}])
    );
    let (status, v) = server.api("GET", "/v1/nothing", Value::Null).await;
    assert_eq!(
        (status, &v["status"]),
        (StatusCode::NOT_FOUND, &json!("error"))
    );
    // A Unikraft feature autokill lacks is named, not a missing resource.
    let (status, v) = server.api("GET", "/v1/volumes", Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("volumes")),
        "{v}"
    );
    let r = server
        .admin_request("POST", "/v1/instances/cart", "{}", None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers.contains_key("allow"));
    let v: Value = serde_json::from_slice(&r.body).expect("JSON envelope");
    assert_eq!(v["errors"][0]["status"], 405);

    // A delete answers with the resource as it ends.
    let gone = server
        .api_ok("DELETE", "/v1/instances/cart", Value::Null, "instances")
        .await;
    assert_eq!(gone["name"], "cart");
    assert_eq!(gone["state"], "deleted");
    let gone = server
        .api_ok("DELETE", "/v1/services/shop", Value::Null, "service_groups")
        .await;
    assert_eq!(gone["name"], "shop");
    assert_eq!(
        snapshot(&server).await["services"]["data"]["service_groups"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_route_before_instance_names() {
    let server = Server::start(runtime_only).await;
    stopped_instance(&server, json!({"name": "base", "image": "hello"})).await;
    stopped_instance(&server, json!({"name": "plain", "image": "hello"})).await;
    let tpl = server
        .api_ok(
            "POST",
            "/v1/instances/templates",
            json!([{"name": "base", "autokill": {"time_ms": 0}}]),
            "instances",
        )
        .await;
    assert_eq!(tpl["state"], "template");
    assert_eq!(tpl["clones"], 0);
    assert!(tpl.get("fqdn").is_none(), "a template is not routed: {tpl}");

    let templates = server.admin_json("/v1/instances/templates").await;
    let names: Vec<&str> = templates["data"]["instances"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["base"], "{templates}");
    let instances = server.admin_json("/v1/instances").await;
    let names: Vec<&str> = instances["data"]["instances"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["plain"], "templates are not listed as instances");

    let one = server.admin_json("/v1/instances/templates/base").await;
    assert_eq!(one["data"]["instances"][0]["state"], "template");
    let (status, v) = server.api("GET", "/v1/instances/base", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("is a template")),
        "{v}"
    );
    let (status, v) = server
        .api("GET", "/v1/instances/templates/plain", Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("is an instance")),
        "{v}"
    );
    // Clone it through the instances route; the clone names its template.
    let clone = stopped_instance(
        &server,
        json!({"name": "copy", "template": {"name": "base"}}),
    )
    .await;
    assert_eq!(clone["template"]["name"], "base");
    assert_eq!(clone["template"]["uuid"], tpl["uuid"]);
    assert_eq!(clone["image"], "hello");
    let one = server.admin_json("/v1/instances/templates/base").await;
    assert_eq!(one["data"]["instances"][0]["clones"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_per_item() {
    let server = Server::start(runtime_only).await;
    stopped_instance(&server, json!({"name": "taken", "image": "hello"})).await;

    let (status, v) = server
        .api(
            "POST",
            "/v1/instances",
            json!([
                {"name": "b1", "image": "hello"},
                {"name": "taken", "image": "hello"},
                {"name": "b2", "image": "hello"},
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "partial_success", "{v}");
    let items = v["data"]["instances"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["status"], "success");
    assert_eq!(items[0]["name"], "b1");
    assert_eq!(items[1]["status"], "error");
    assert_eq!(items[1]["name"], "taken", "a refused item names itself");
    assert!(
        items[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already exists"))
    );
    assert_eq!(items[2]["status"], "success");
    assert_eq!(items[1]["error"], 23, "name taken: {v}");
    assert!(v.get("errors").is_none(), "{v}");

    // Every item refused: still a 200 (as Unikraft answers batches), each with its status and
    // code (23: the name is taken).
    let (status, v) = server
        .api(
            "POST",
            "/v1/instances",
            json!([{"name": "b1", "image": "hello"}, {"name": "b2", "image": "hello"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(v["data"]["instances"][0]["error"], 23);
    assert_eq!(v["data"]["instances"][1]["error"], 23);

    // Deletes, by name and by uuid, one unknown.
    let b2 = server.admin_json("/v1/instances/b2").await["data"]["instances"][0]["uuid"].clone();
    let (status, v) = server
        .api(
            "DELETE",
            "/v1/instances",
            json!([{"name": "b1"}, {"name": "nope"}, {"uuid": b2}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "partial_success");
    let items = v["data"]["instances"].as_array().expect("items");
    assert_eq!(
        items
            .iter()
            .map(|i| i["status"].as_str())
            .collect::<Vec<_>>(),
        [Some("success"), Some("error"), Some("success")]
    );
    assert_eq!(items[1]["name"], "nope");
    assert_eq!(items[1]["error"], 8);
    let left = server.admin_json("/v1/instances").await;
    assert_eq!(
        left["data"]["instances"].as_array().map(Vec::len),
        Some(1),
        "{left}"
    );

    // Groups too.
    let (status, v) = server
        .api(
            "POST",
            "/v1/services",
            json!([{"name": "g1"}, {"name": "g1"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "partial_success");
    assert_eq!(v["data"]["service_groups"][1]["status"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_items_echo_their_id() {
    let server = Server::start(runtime_only).await;
    stopped_instance(&server, json!({"name": "p1", "image": "hello"})).await;
    stopped_instance(&server, json!({"name": "p2", "image": "hello"})).await;
    server
        .api_ok(
            "POST",
            "/v1/services",
            json!({"name": "grp", "domains": [{"name": "grp"}]}),
            "service_groups",
        )
        .await;

    let (status, v) = server
        .api(
            "PATCH",
            "/v1/instances",
            json!([
                {"id": "first", "name": "p1", "prop": "autokill", "op": "set", "value": {"num_requests": 4}},
                {"id": 2, "name": "p2", "prop": "delete_lock", "op": "set", "value": true},
                {"id": "third", "name": "p1", "prop": "features", "op": "add", "value": ["delete-on-stop"]},
                {"id": "fourth", "name": "nope", "prop": "delete_lock", "op": "set", "value": true},
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "partial_success", "{v}");
    let items = v["data"]["instances"].as_array().expect("items");
    assert_eq!(
        items.iter().map(|i| i["id"].clone()).collect::<Vec<_>>(),
        [json!("first"), json!(2), json!("third"), json!("fourth")]
    );
    assert_eq!(items[0]["name"], "p1");
    assert_eq!(items[0]["autokill"]["num_requests"], 4);
    assert_eq!(items[1]["delete_lock"], true);
    assert_eq!(items[2]["autodestroy"], "ALWAYS");
    assert_eq!(items[3]["status"], "error");
    assert_eq!(items[3]["error"], 8);

    let p1 = server.admin_json("/v1/instances/p1").await["data"]["instances"][0].clone();
    assert_eq!(p1["autokill"], json!({"num_requests": 4, "time_ms": 0}));
    assert_eq!(p1["features"], json!(["delete-on-stop"]));

    // The path form, one object: its id is echoed too. `autokill` set replaces the whole policy.
    let (status, v) = server
        .api(
            "PATCH",
            "/v1/instances/p1",
            json!({"id": 9, "prop": "autokill", "op": "set", "value": {"time_ms": 5000}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["instances"][0]["id"], 9);
    assert_eq!(
        v["data"]["instances"][0]["autokill"],
        json!({"num_requests": 0, "time_ms": 5000})
    );

    // Groups: domains add and del, limits.
    let (status, v) = server
        .api(
            "PATCH",
            "/v1/services/grp",
            json!([
                {"id": "a", "prop": "domains", "op": "add", "value": [{"name": "more"}, {"name": "api.example.org."}]},
                {"id": "b", "prop": "domains", "op": "del", "value": {"name": "grp"}},
                {"id": "c", "prop": "soft_limit", "op": "set", "value": 3},
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let g = &v["data"]["service_groups"];
    assert_eq!(g[0]["id"], "a");
    assert_eq!(g[2]["id"], "c");
    assert_eq!(
        g[2]["domains"],
        json!([{"fqdn": "more.localhost", "name": "more.localhost"},
               {"fqdn": "api.example.org", "name": "api.example.org"}])
    );
    assert_eq!(g[2]["soft_limit"], 3);
}
