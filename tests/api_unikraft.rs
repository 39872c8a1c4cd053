//! Fidelity to Unikraft Cloud's platform API (issue 10) against the real binary: the list
//! filters, pages and order of all three resources (with a "victim" that sorts first, so that
//! an ignored filter cannot pass), every item of the issue as a row of a table (request →
//! status → body), and the high-level flow a user of the SDK writes, over plain HTTP.

mod common;

use common::{Server, hello_runtime};
use hyper::StatusCode;
use serde_json::{Value, json};

fn runtime_only(dir: &std::path::Path) -> String {
    hello_runtime(dir, "")
}

/// The kinds of listed resource: (list path, key, how to make one named `name`).
#[derive(Clone, Copy)]
enum Kind {
    Instance,
    Template,
    Group,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Instance => "/v1/instances",
            Kind::Template => "/v1/instances/templates",
            Kind::Group => "/v1/services",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Group => "service_groups",
            _ => "instances",
        }
    }

    /// Makes one; its UUID.
    async fn make(self, server: &Server, name: &str) -> String {
        let made = match self {
            Kind::Instance => {
                server
                    .api_ok(
                        "POST",
                        "/v1/instances",
                        json!({"name": name, "image": "hello"}),
                        "instances",
                    )
                    .await
            }
            Kind::Template => {
                server
                    .api_ok(
                        "POST",
                        "/v1/instances",
                        json!({"name": name, "image": "hello"}),
                        "instances",
                    )
                    .await;
                server
                    .api_ok(
                        "POST",
                        "/v1/instances/templates",
                        json!({"name": name}),
                        "instances",
                    )
                    .await
            }
            Kind::Group => {
                server
                    .api_ok(
                        "POST",
                        "/v1/services",
                        json!({"name": name}),
                        "service_groups",
                    )
                    .await
            }
        };
        made["uuid"].as_str().expect("uuid").to_owned()
    }
}

/// The names a listing answered with, in order (failed items as `!name`).
async fn names(server: &Server, kind: Kind, query: &str) -> (StatusCode, Vec<String>, Value) {
    let (status, v) = server
        .api("GET", &format!("{}{query}", kind.path()), Value::Null)
        .await;
    let names = v["data"][kind.key()]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let name = i["name"].as_str().unwrap_or("?");
                    if i["status"] == "error" {
                        format!("!{name}")
                    } else {
                        name.to_owned()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    (status, names, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_page_and_order_all_three_resources() {
    let server = Server::start(runtime_only).await;
    for kind in [Kind::Instance, Kind::Template, Kind::Group] {
        let p = match kind {
            Kind::Instance => "i",
            Kind::Template => "t",
            Kind::Group => "g",
        };
        // The victim is made first: it heads every listing an ignored filter would give.
        let victim = format!("{p}-victim");
        kind.make(&server, &victim).await;
        let mut ids = Vec::new();
        for n in 1..=5 {
            ids.push(kind.make(&server, &format!("{p}{n}")).await);
        }
        let all: Vec<String> = std::iter::once(victim.clone())
            .chain((1..=5).map(|n| format!("{p}{n}")))
            .collect();
        let s = |v: &[&str]| -> Vec<String> { v.iter().map(|n| format!("{p}{n}")).collect() };
        let rows: Vec<(String, Vec<String>)> = vec![
            (String::new(), all.clone()),
            (format!("?name={p}3"), s(&["3"])),
            (format!("?uuid={}", ids[1]), s(&["2"])),
            (format!("?name={p}4&uuid={}", ids[0]), s(&["1", "4"])),
            (format!("?name={p}4&name={p}2"), s(&["2", "4"])),
            ("?count=2".into(), vec![victim.clone(), format!("{p}1")]),
            (format!("?count=3&from={}", ids[1]), s(&["2", "3", "4"])),
            ("?order=desc&count=2".into(), s(&["5", "4"])),
            (
                format!("?order=desc&from={}", ids[1]),
                vec![format!("{p}2"), format!("{p}1"), victim.clone()],
            ),
            (
                format!("?name={p}1&details=true&sortby=create_time&order=asc"),
                s(&["1"]),
            ),
            // A cursor that is gone: an empty page (the SDKs resume from an earlier one).
            (
                "?from=00000000-0000-4000-8000-000000000000".into(),
                Vec::new(),
            ),
        ];
        let mut failures = Vec::new();
        for (query, want) in &rows {
            let (status, got, v) = names(&server, kind, query).await;
            if status != StatusCode::OK || got != *want {
                failures.push(format!(
                    "{} {query}: want {want:?}, got {status} {got:?} {v}",
                    kind.path()
                ));
            }
        }
        common::assert_rows(&failures, rows.len());

        // Pages the way the SDKs walk them: `count` + 1 from the last item read, which comes
        // again first and is dropped.
        let mut seen = Vec::new();
        let (_, mut page, _) = names(&server, kind, "?count=2").await;
        loop {
            let last = page.last().cloned();
            seen.extend(page.iter().skip(usize::from(!seen.is_empty())).cloned());
            let Some(last) = last else { break };
            let (_, v) = server
                .api("GET", &format!("{}?name={last}", kind.path()), Value::Null)
                .await;
            let uuid = v["data"][kind.key()][0]["uuid"]
                .as_str()
                .expect("uuid")
                .to_owned();
            let (_, next, _) = names(&server, kind, &format!("?count=3&from={uuid}")).await;
            if next.len() < 3 {
                seen.extend(next.into_iter().skip(1));
                break;
            }
            page = next;
        }
        assert_eq!(
            seen,
            all,
            "{}: every item once, in order, over 3 pages",
            kind.path()
        );

        // A filter that names nothing of this kind: a not-found item (code 8), still a 200.
        let (status, got, v) = names(&server, kind, "?name=nope").await;
        assert_eq!(
            (status, got),
            (StatusCode::OK, vec!["!nope".to_owned()]),
            "{v}"
        );
        assert_eq!(v["status"], "error");
        assert_eq!(v["data"][kind.key()][0]["error"], 8, "{v}");
        let (status, got, v) = names(&server, kind, &format!("?name={p}1&name=nope")).await;
        assert_eq!(
            (status, got),
            (StatusCode::OK, vec![format!("{p}1"), "!nope".to_owned()]),
            "{v}"
        );
        assert_eq!(v["status"], "partial_success");
        // Bad parameters are named.
        for (query, needle) in [
            ("?uuid=web", "uuid: invalid UUID"),
            ("?count=0", "count: "),
            ("?from=x", "from: "),
            ("?order=up", "order: "),
            ("?sortby=name", "sortby: "),
            ("?tags=a", "tags: not supported"),
            ("?colour=red", "colour: unknown query parameter"),
        ] {
            let (status, v) = server
                .api("GET", &format!("{}{query}", kind.path()), Value::Null)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {v}");
            assert!(
                v["message"].as_str().is_some_and(|m| m.contains(needle)),
                "{query}: {v}"
            );
        }
    }
    // Templates and instances do not leak into each other's filters.
    let (_, got, _) = names(&server, Kind::Instance, "?name=t1").await;
    assert_eq!(got, ["!t1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_of_the_issue_as_a_row() {
    let server = Server::start(runtime_only).await;
    // (method, path, body, status, substrings the body must contain, substrings it must not)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        u16,
        &'static [&'static str],
        &'static [&'static str],
    );
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // Setup: a victim first, so an ignored filter would answer with it.
        ("POST", "/v1/instances", r#"{"name": "victim", "image": "hello"}"#, 200, &[r#""name":"victim""#], &[]),
        // 3. waits: create and await.
        ("POST", "/v1/instances", r#"{"name": "web", "image": "hello", "autostart": true, "timeout_s": 20}"#, 200, &[r#""state":"running""#, r#""name":"web""#], &[]),
        // 1. filters.
        ("GET", "/v1/instances?name=web", "", 200, &[r#""name":"web""#], &["victim"]),
        ("GET", "/v1/instances?name=missing", "", 200, &[r#""error":8"#, r#""name":"missing""#], &["victim"]),
        // 4. fields the SDK reads.
        ("GET", "/v1/instances?name=web", "", 200, &[ r#""private_fqdn":"web.localhost""#, r#""fqdn":"web.localhost""#, ], &[]),
        // 3. waits: a wait that lapses is an error item with the instance's state, in a 200.
        ("GET", "/v1/instances/wait?name=web&state=stopped&timeout_ms=200", "", 200, &["timed out", r#""state":"running""#, r#""status":"error""#], &[]),
        ("GET", "/v1/instances/wait", r#"[{"name": "web", "state": "running", "timeout_s": 5}]"#, 200, &[r#""state":"running""#, r#""status":"success""#], &[]),
        ("GET", "/v1/instances/web/wait", r#"{"state": "running", "timeout_ms": 5000}"#, 200, &[r#""state":"running""#], &[]),
        ("GET", "/v1/instances/wait?name=nope&timeout_ms=10", "", 200, &[r#""error":8"#], &[]),
        // stop: with a drain it is stopping at once; force is taken (stopping already, or stopped
        // if the drain found nothing in flight).
        ("PUT", "/v1/instances/stop", r#"[{"name": "web", "drain_timeout_ms": 100}]"#, 200, &[r#""previous_state":"running""#, r#""state":"stopping""#], &[]),
        ("PUT", "/v1/instances/stop", r#"[{"name": "web", "force": true}]"#, 200, &[r#""name":"web""#, r#""status":"success""#], &[]),
        ("GET", "/v1/instances/wait?name=web&state=stopped&timeout_s=20", "", 200, &[r#""state":"stopped""#, r#""status":"success""#], &[]),
        // start with a wait.
        ("PUT", "/v1/instances/start", r#"[{"name": "web", "timeout_s": 20}]"#, 200, &[r#""previous_state":"stopped""#, r#""state":"running""#], &[]),
        ("PUT", "/v1/instances/web/start", r#"{"wait_timeout_ms": 5000}"#, 200, &[r#""previous_state":"running""#], &[]),
        // 2 & 6. codes: a state conflict is not "name taken".
        ("POST", "/v1/instances/templates", r#"[{"name": "web", "timeout_s": 5}]"#, 200, &[r#""error":16"#, "only a stopped instance"], &[r#""error":23"#]),
        ("POST", "/v1/instances", r#"[{"name": "web", "image": "hello"}]"#, 200, &[r#""error":23"#], &[]),
        ("PATCH", "/v1/instances", r#"[{"name": "victim", "prop": "delete_lock", "op": "set", "value": true}]"#, 200, &[r#""delete_lock":true"#], &[]),
        ("DELETE", "/v1/instances", r#"[{"name": "victim"}]"#, 200, &[r#""error":16"#, "delete-locked"], &[]),
        ("DELETE", "/v1/instances", r#"[{"name": "nope"}]"#, 200, &[r#""error":8"#], &[]),
        ("DELETE", "/v1/instances/nope", "", 404, &["no instance"], &[]),
        // 5. shapes the SDK sends: a group without a name, services with protocol.
        ("POST", "/v1/services", r#"{"services": [{"port": 443, "destination_port": 8080, "protocol": "tcp", "handlers": ["tls", "http"]}], "domains": [{"name": "shop"}]}"#, 200, &[ r#""name":"sg-"#, r#""protocol":"tcp""#, r#""fqdn":"shop.localhost""#, ], &[]),
        ("POST", "/v1/services", r#"{"name": "grp", "services": [{"port": 80}]}"#, 200, &[r#""name":"grp""#], &[]),
        ("PATCH", "/v1/services", r#"[{"name": "grp", "prop": "services", "op": "add", "value": [{"port": 443, "protocol": "udp"}]}]"#, 200, &[r#""port":80"#, r#""port":443"#, r#""protocol":"udp""#], &[]),
        ("PATCH", "/v1/services", r#"[{"name": "grp", "prop": "services", "op": "del", "value": {"port": 80}}]"#, 200, &[r#""port":443"#], &[r#""port":80"#]),
        ("PATCH", "/v1/services/grp", r#"{"prop": "services", "op": "set", "value": [{"port": 8443}]}"#, 200, &[r#""services":[{"port":8443}]"#], &[]),
        ("POST", "/v1/instances", r#"{"name": "member", "image": {"url": "hello", "pull_policy": "always"}, "service_group": {"name": "grp"}}"#, 200, &[ r#""image":"hello""#, r#""service_group":{"#, r#""name":"grp""#, ], &[]),
        ("DELETE", "/v1/services", r#"[{"name": "grp"}]"#, 200, &[r#""error":16"#, "still has 1 instance"], &[]),
        // An ephemeral group made for one instance, gone with it.
        ("POST", "/v1/instances", r#"{"name": "eph", "image": "hello", "service_group": {"services": [{"port": 443}], "domains": [{"name": "eph-site"}]}}"#, 200, &[r#""fqdn":"eph-site.localhost""#, r#""name":"sg-"#], &[]),
        ("DELETE", "/v1/instances", r#"[{"name": "eph", "timeout_s": 10}]"#, 200, &[r#""state":"deleted""#, r#""previous_state":"stopped""#], &[]),
        // Template prepare: source, template and clone in one request; its own autokill apart.
        ("POST", "/v1/instances", r#"{"name": "seed", "autostart": false, "template": {"name": "tpl", "prepare": true, "create_args": {"image": "hello", "autokill": {"num_requests": 7}}, "autokill": {"time_ms": 600000}, "prepare_timeout_s": 30}}"#, 200, &[r#""name":"seed""#, r#""num_requests":7"#, r#""template":{"#], &[]),
        ("GET", "/v1/instances/templates?name=tpl", "", 200, &[ r#""template_autokill":{"time_ms":600000}"#, r#""num_requests":7"#, r#""state":"template""#, ], &[]),
        ("POST", "/v1/instances", r#"{"name": "seed2", "template": {"name": "tpl", "prepare": true, "create_args": {"image": "hello"}}}"#, 200, &[r#""name":"seed2""#], &[]),
        ("DELETE", "/v1/instances/templates", r#"[{"name": "tpl"}]"#, 200, &[r#""status":"success""#], &[]),
        ("DELETE", "/v1/instances/templates", r#"[{"name": "tpl"}]"#, 200, &[r#""error":8"#], &[]),
        // 7. features autokill does not have: 400 naming them.
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "volumes": [{"name": "v"}]}"#, 400, &["volumes: not supported"], &[]),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "roms": []}"#, 400, &["roms: not supported"], &[]),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "scale_to_zero": {"policy": "on"}}"#, 400, &["scale_to_zero: not supported"], &[]),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "features": ["scale-to-zero"]}"#, 400, &["features: not supported: scale-to-zero"], &[]),
        ("POST", "/v1/instances", r#"{"name": "x", "image": "hello", "memory_mb": 128}"#, 400, &["memory_mb: not supported"], &[]),
        ("POST", "/v1/instances", r#"{"name": "x", "image": {"url": "hello", "credentials": "c"}}"#, 400, &["image: not supported: credentials"], &[]),
        ("GET", "/v1/instances/metrics", "", 400, &["not supported: instance metrics"], &[]),
        ("GET", "/v1/instances/web/metrics", "", 400, &["not supported: instance metrics"], &[]),
        ("PUT", "/v1/instances/web/suspend", "", 400, &["not supported: suspend"], &[]),
        ("GET", "/v1/instances/checkpoints", "", 400, &["not supported: checkpoints"], &[]),
        ("GET", "/v1/services/grp/autoscale", "", 400, &["not supported: autoscale"], &[]),
        ("POST", "/v1/volumes", r#"{"name": "v"}"#, 400, &["not supported: volumes"], &[]),
        // Logs: what the instance wrote to stdout and stderr (`autokill hello` says where it
        // listens), base64 as Unikraft sends it, with byte offsets.
        ("GET", "/v1/instances/web/log", "", 200, &[r#""output":"YXV0b2tpbGwgaGVsbG8gIndlYiI6IGxpc3RlbmluZyBv"#, r#""available":{"end":"#, r#""range":{"end":"#, r#""name":"web""#], &[]),
        ("GET", "/v1/instances/log?name=web&offset=0&limit=3", "", 200, &[r#""output":"YXV0""#, r#""range":{"end":3,"start":0}"#], &["victim"]),
        ("GET", "/v1/instances/log", r#"[{"name": "web", "offset": -5}]"#, 200, &[r#""status":"success""#], &[]),
        ("GET", "/v1/instances/log?name=nope", "", 200, &[r#""error":8"#], &[]),
        // 6. an unknown route under /v1/instances/<word> is not a missing instance.
        ("GET", "/v1/instances/web/nothing", "", 404, &["no such endpoint"], &["no instance"]),
        ("POST", "/v1/instances", r#"{"name": "metrics", "image": "hello"}"#, 400, &["reserved"], &[]),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, has, lacks) in rows {
        let (got, v) = server.api_raw(method, path, body).await;
        let text = v.to_string();
        let ok = got.as_u16() == *status
            && has.iter().all(|h| text.contains(h))
            && !lacks.iter().any(|l| text.contains(l));
        if !ok {
            failures.push(format!(
                "{method} {path} {body}\n  want {status} with {has:?} without {lacks:?}\n  got  {got} {text}"
            ));
        }
    }
    common::assert_rows(&failures, rows.len());
    // The ephemeral group goes once its instance is gone (the runtime's delete done).
    server
        .eventually(
            20,
            "the ephemeral group is deleted with its instance",
            async || {
                let v = server.admin_json("/v1/services").await;
                let text = v.to_string();
                text.contains(r#""name":"grp""#) && !text.contains("eph-site")
            },
        )
        .await;
}

/// The server, for calls the flow expects to succeed.
struct Api<'s>(&'s Server);

impl Api<'_> {
    /// A call that must succeed: its first item under `key` (which must not be a refusal).
    async fn ok(&self, method: &str, path: &str, body: Value, key: &str) -> Value {
        one(self.0, method, path, body, key).await
    }

    /// `PUT /v1/instances/<action>` of `target` (an item naming `inst`), which was in state
    /// `before`, then a wait until it is `after`: both must be about `inst`.
    async fn act_and_wait(
        &self,
        action: &str,
        target: Value,
        inst: &Value,
        before: &str,
        after: &str,
    ) {
        let path = format!("/v1/instances/{action}");
        let moved = self
            .ok("PUT", &path, json!([target.clone()]), "instances")
            .await;
        assert_eq!(
            (&moved["uuid"], moved["previous_state"].as_str()),
            (&inst["uuid"], Some(before))
        );
        let mut wait = target;
        wait["state"] = json!(after);
        wait["timeout_s"] = json!(20);
        let waited = self
            .ok("GET", "/v1/instances/wait", json!([wait]), "instances")
            .await;
        assert_eq!(
            (&waited["uuid"], waited["state"].as_str()),
            (&inst["uuid"], Some(after))
        );
    }
}

/// A call the flow expects to succeed: its first item (which must not be a refusal).
async fn one(server: &Server, method: &str, path: &str, body: Value, key: &str) -> Value {
    let (status, v) = server.api(method, path, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{method} {path} {body}: {v}");
    let item = v["data"][key][0].clone();
    assert_ne!(item["status"], "error", "{method} {path} {body}: {v}");
    item
}

/// The flow of `tests/sdk/flow.py`, with the requests the SDK's high-level client sends (list
/// filters to read, arrays to act), so that it runs where the SDK is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_flow_over_http() {
    let server = Server::start(runtime_only).await;
    let api = Api(&server);
    let i = "instances";
    let victim = api
        .ok(
            "POST",
            "/v1/instances",
            json!({"name": "victim", "image": "hello"}),
            i,
        )
        .await;
    // Create and await.
    let web = api
        .ok(
            "POST",
            "/v1/instances",
            json!({"name": "web", "image": "hello", "autostart": true, "timeout_s": 20}),
            i,
        )
        .await;
    assert_eq!(
        (web["name"].as_str(), web["state"].as_str()),
        (Some("web"), Some("running"))
    );
    assert_ne!(web["uuid"], victim["uuid"]);
    let uuid = web["uuid"].as_str().expect("uuid").to_owned();
    // Get by name and by uuid, as the SDK reads: a filtered list.
    let got = api
        .ok("GET", "/v1/instances?name=web&details=true", Value::Null, i)
        .await;
    assert_eq!(got["uuid"], web["uuid"]);
    let got = api
        .ok(
            "GET",
            &format!("/v1/instances?uuid={uuid}&details=true"),
            Value::Null,
            i,
        )
        .await;
    assert_eq!(got["name"], "web");
    // Stop, wait until stopped, start, wait until running.
    api.act_and_wait("stop", json!({"name": "web"}), &web, "running", "stopped")
        .await;
    api.act_and_wait("start", json!({"uuid": uuid}), &web, "stopped", "running")
        .await;
    // Update; the victim is untouched.
    let updated = api.ok("PATCH", "/v1/instances", json!([{"name": "web", "prop": "autokill", "op": "set", "value": {"num_requests": 50}}]), i,).await;
    assert_eq!(updated["uuid"], web["uuid"]);
    let again = api
        .ok("GET", "/v1/instances?name=web", Value::Null, i)
        .await;
    assert_eq!(again["autokill"]["num_requests"], 50);
    let v = api
        .ok("GET", "/v1/instances?name=victim", Value::Null, i)
        .await;
    assert_eq!(v["autokill"]["num_requests"], 0);
    // List in pages of 2, as the SDK walks them.
    for n in ["p1", "p2", "p3"] {
        api.ok(
            "POST",
            "/v1/instances",
            json!({"name": n, "image": "hello"}),
            i,
        )
        .await;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut query = "count=2".to_owned();
    loop {
        let (_, v) = server
            .api("GET", &format!("/v1/instances?{query}"), Value::Null)
            .await;
        let page = v["data"][i].as_array().cloned().unwrap_or_default();
        let fresh: Vec<&Value> = page.iter().skip(usize::from(!seen.is_empty())).collect();
        seen.extend(
            fresh
                .iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned)),
        );
        let wanted = if seen.len() <= 2 { 2 } else { 3 };
        if page.len() < wanted {
            break;
        }
        let last = page.last().and_then(|p| p["uuid"].as_str()).expect("uuid");
        query = format!("count=3&from={last}");
    }
    assert_eq!(seen, ["victim", "web", "p1", "p2", "p3"]);
    // Delete, then delete with missing_ok: the SDK forgives code 8 in a 200.
    let gone = api
        .ok("DELETE", "/v1/instances", json!([{"name": "p1"}]), i)
        .await;
    assert_eq!(
        (gone["name"].as_str(), gone["previous_state"].as_str()),
        (Some("p1"), Some("stopped"))
    );
    let (status, v) = server
        .api("DELETE", "/v1/instances", json!([{"name": "p1"}]))
        .await;
    assert_eq!(
        (status, &v["data"][i][0]["error"]),
        (StatusCode::OK, &json!(8)),
        "{v}"
    );
    assert!(
        v.get("errors").is_none(),
        "only item codes, so that absent reads as absent: {v}"
    );
    // A service group: created without a name, read, deleted.
    let g = "service_groups";
    let group = api.ok("POST", "/v1/services", json!({"services": [{"port": 443, "destination_port": 8080, "handlers": ["tls", "http"]}], "domains": [{"name": "shop"}]}), g,).await;
    let group_name = group["name"].as_str().expect("name").to_owned();
    assert!(group_name.starts_with("sg-"), "{group}");
    assert_eq!(group["domains"][0]["fqdn"], "shop.localhost");
    let got = api
        .ok(
            "GET",
            &format!("/v1/services?name={group_name}"),
            Value::Null,
            g,
        )
        .await;
    assert_eq!(got["uuid"], group["uuid"]);
    api.ok("DELETE", "/v1/services", json!([{"name": group_name}]), g)
        .await;
    let (_, v) = server
        .api(
            "GET",
            &format!("/v1/services?name={group_name}"),
            Value::Null,
        )
        .await;
    assert_eq!(v["data"][g][0]["error"], 8, "{v}");
    // Template prepare (the SDK's: a stopped seed clone, deleted after), clone, delete.
    let (_, v) = server
        .api("GET", "/v1/instances/templates?name=base", Value::Null)
        .await;
    assert_eq!(v["data"][i][0]["error"], 8, "absent before: {v}");
    let seed = api.ok("POST", "/v1/instances", json!({"autostart": false, "template": {"name": "base", "prepare": true, "create_args": {"image": "hello"}, "autokill": {"time_ms": 600000}}}), i,).await;
    let tpl = api
        .ok(
            "GET",
            "/v1/instances/templates?name=base&details=true",
            Value::Null,
            i,
        )
        .await;
    assert_eq!(
        (tpl["state"].as_str(), &tpl["template_autokill"]),
        (Some("template"), &json!({"time_ms": 600000}))
    );
    assert_eq!(seed["template"]["name"], "base");
    api.ok(
        "DELETE",
        "/v1/instances",
        json!([{"uuid": seed["uuid"]}]),
        i,
    )
    .await;
    let clone = api
        .ok(
            "POST",
            "/v1/instances",
            json!({"name": "c1", "template": {"name": "base"}}),
            i,
        )
        .await;
    assert_eq!(
        (clone["name"].as_str(), &clone["template"]["uuid"]),
        (Some("c1"), &tpl["uuid"])
    );
    let deleted = api
        .ok(
            "DELETE",
            "/v1/instances/templates",
            json!([{"name": "base"}]),
            i,
        )
        .await;
    assert_eq!(deleted["uuid"], tpl["uuid"]);
    let (_, v) = server
        .api(
            "DELETE",
            "/v1/instances/templates",
            json!([{"name": "base"}]),
        )
        .await;
    assert_eq!(v["data"][i][0]["error"], 8, "{v}");
    api.ok("DELETE", "/v1/instances", json!([{"name": "web"}]), i)
        .await;
    let (_, v) = server.api("GET", "/v1/instances", Value::Null).await;
    let mut left: Vec<&str> = v["data"][i]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["c1", "p2", "p3", "victim"]);
}

/// A create that waits for an instance which stops before it runs: still a 200, the item
/// failed with the instance's stopped state (what the SDK turns into `InstanceStoppedError`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_an_instance_that_stops_before_it_runs_says_so() {
    let server = Server::start(|dir| {
        format!(
            "{}    broken:\n      command: [\"/bin/false\"]\n",
            hello_runtime(dir, "")
        )
    })
    .await;
    let (status, v) = server
        .api(
            "POST",
            "/v1/instances",
            json!({"name": "b", "image": "broken", "autostart": true, "timeout_s": 20}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let item = &v["data"]["instances"][0];
    assert_eq!(
        (
            item["status"].as_str(),
            item["state"].as_str(),
            item["name"].as_str()
        ),
        (Some("error"), Some("stopped"), Some("b")),
        "{v}"
    );
    assert!(
        item["message"]
            .as_str()
            .is_some_and(|m| m.contains("stopped before it was running")),
        "{v}"
    );
    assert!(item["uuid"].is_string(), "the instance is named: {v}");
}
