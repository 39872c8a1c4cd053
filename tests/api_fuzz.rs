//! No input topples the admin APIs: arbitrary bytes, arbitrary JSON built from the APIs' own
//! field names, and valid bodies with one field changed, sent to every route of `/v1` and
//! `/api/v1` that reads a body, against the real binary. Every answer must be a success or a
//! 4xx that says what was wrong (the envelope's `message`, Tutum's `error`), never a 5xx, a
//! dropped connection (a panic in a handler) or silence; the server must be ready afterwards.
//!
//! Each property runs a fixed number of cases (below), so the run is bounded; failures shrink to
//! the smallest body that shows them.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Server, hello_runtime};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

/// Cases per property: each is one request, so this bounds the run's time.
const CASES: u32 = 400;

/// Field names the two APIs read, and a few they do not.
const KEYS: &[&str] = &[
    "name",
    "uuid",
    "image",
    "autokill",
    "num_requests",
    "time_ms",
    "time",
    "prop",
    "op",
    "value",
    "id",
    "delete_lock",
    "restart_policy",
    "autodestroy",
    "autorestart",
    "features",
    "template",
    "service_group",
    "domains",
    "services",
    "port",
    "destination_port",
    "handlers",
    "soft_limit",
    "hard_limit",
    "autostart",
    "replicas",
    "memory_mb",
    "drain_timeout_ms",
    "target_num_containers",
    "state",
    "offset",
    "limit",
    "certificate",
    "volumes",
    "no_such_field",
    "",
];

/// Strings that mean something to some field, and some that mean nothing.
const WORDS: &[&str] = &[
    "fz-one",
    "fz-two",
    "fz-group",
    "fz-svc",
    "hello",
    "set",
    "add",
    "del",
    "always",
    "never",
    "on-failure",
    "ALWAYS",
    "ON_FAILURE",
    "ON_SUCCESS",
    "OFF",
    "delete-on-stop",
    "autokill",
    "delete_lock",
    "restart_policy",
    "tls",
    "http",
    "00000000-0000-0000-0000-000000000000",
    "not a uuid",
    "",
    " ",
    "ü\u{0}\u{7f}",
    "../../etc/passwd",
    "a.b.c",
    "-",
    "1h",
];

/// Numbers at the edges of every type a field may be read as (no -1: as a wait it means the
/// longest one, which would only slow the run).
fn number() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(0),
        json!(1),
        json!(2),
        json!(-2),
        json!(80),
        json!(1001),
        json!(65_536),
        json!(4_294_967_296u64),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(-0.0),
        json!(1e300),
    ])
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        prop::sample::select(WORDS).prop_map(|w| json!(w)),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

/// JSON values, nested a few levels, with the APIs' own keys.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| ((*k).to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// One field of `body` replaced, removed, or added (at the top level or in the first item).
fn mutate(mut body: Value, key: &str, new: Option<Value>) -> Value {
    let target = match &mut body {
        Value::Array(items) => items.first_mut(),
        other => Some(other),
    };
    if let Some(Value::Object(map)) = target {
        match new {
            Some(v) => {
                map.insert(key.to_owned(), v);
            }
            None => {
                map.remove(key);
            }
        }
    }
    body
}

/// A request body for a route whose valid bodies are `valid`: raw bytes, arbitrary JSON, a
/// valid body as it is, or one with a field changed.
fn body(valid: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    let parsed: Vec<Value> = valid
        .iter()
        .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("{b}: {e}")))
        .collect();
    let mut options = vec![
        (1, prop::collection::vec(any::<u8>(), 0..64).boxed()),
        (1, "\\PC{0,40}".prop_map(String::into_bytes).boxed()),
        (2, value().prop_map(|v| v.to_string().into_bytes()).boxed()),
    ];
    if !parsed.is_empty() {
        options.push((
            2,
            prop::sample::select(parsed.clone())
                .prop_map(|v| v.to_string().into_bytes())
                .boxed(),
        ));
        options.push((
            4,
            (
                prop::sample::select(parsed),
                prop::sample::select(KEYS),
                prop::option::of(value()),
            )
                .prop_map(|(v, key, new)| mutate(v, key, new).to_string().into_bytes())
                .boxed(),
        ));
    }
    proptest::strategy::Union::new_weighted(options).boxed()
}

/// Every route of the two APIs that reads a body (`{id}` filled in by [`ids_for`]), with bodies
/// it takes.
const ROUTES: &[(&str, &str, &[&str])] = &[
    (
        "POST",
        "/v1/instances",
        &[
            r#"{"name": "fz-two", "image": "hello", "autokill": {"num_requests": 5, "time_ms": 1000}}"#,
            r#"[{"name": "fz-three", "image": "hello", "restart_policy": "on-failure"}]"#,
            r#"{"name": "fz-clone", "template": {"name": "fz-tpl"}}"#,
            r#"{"image": "hello", "service_group": {"name": "fz-group"}, "features": ["delete-on-stop"]}"#,
        ],
    ),
    (
        "PATCH",
        "/v1/instances",
        &[
            r#"[{"name": "fz-one", "prop": "autokill", "op": "set", "value": {"num_requests": 3}}]"#,
            r#"[{"name": "fz-one", "prop": "delete_lock", "op": "set", "value": false, "id": "x"}]"#,
        ],
    ),
    ("DELETE", "/v1/instances", &[r#"[{"name": "fz-two"}]"#]),
    (
        "PATCH",
        "/v1/instances/{id}",
        &[
            r#"{"prop": "delete_lock", "op": "set", "value": true}"#,
            r#"{"prop": "restart_policy", "op": "set", "value": "always"}"#,
            r#"[{"prop": "autodestroy", "op": "set", "value": "ON_FAILURE"}]"#,
        ],
    ),
    ("DELETE", "/v1/instances/{id}", &["{}"]),
    ("PUT", "/v1/instances/start", &[r#"[{"name": "fz-one"}]"#]),
    (
        "PUT",
        "/v1/instances/stop",
        &[r#"[{"name": "fz-one", "drain_timeout_ms": 0}]"#],
    ),
    ("PUT", "/v1/instances/{id}/start", &["{}"]),
    (
        "PUT",
        "/v1/instances/{id}/stop",
        &[r#"{"drain_timeout_ms": 10}"#],
    ),
    (
        "POST",
        "/v1/instances/templates",
        &[r#"[{"name": "fz-one"}]"#],
    ),
    (
        "PATCH",
        "/v1/instances/templates",
        &[r#"[{"name": "fz-tpl", "prop": "delete_lock", "op": "set", "value": true}]"#],
    ),
    (
        "DELETE",
        "/v1/instances/templates",
        &[r#"[{"name": "fz-tpl"}]"#],
    ),
    (
        "PATCH",
        "/v1/instances/templates/{id}",
        &[r#"{"prop": "autokill", "op": "set", "value": {"time_ms": 5000}}"#],
    ),
    ("DELETE", "/v1/instances/templates/{id}", &[]),
    (
        "POST",
        "/v1/services",
        &[
            r#"{"name": "fz-group2", "domains": [{"name": "fz2"}], "autokill": {"time_ms": 1000}}"#,
            r#"[{"services": [{"port": 80, "destination_port": 8080, "handlers": ["http"]}], "soft_limit": 1, "hard_limit": 2}]"#,
        ],
    ),
    (
        "PATCH",
        "/v1/services",
        &[r#"[{"name": "fz-group", "prop": "domains", "op": "add", "value": [{"name": "fz3"}]}]"#],
    ),
    ("DELETE", "/v1/services", &[r#"[{"name": "fz-group2"}]"#]),
    (
        "PATCH",
        "/v1/services/{id}",
        &[
            r#"{"prop": "autokill", "op": "set", "value": {"time_ms": 0}}"#,
            r#"{"prop": "delete_lock", "op": "set", "value": true}"#,
        ],
    ),
    ("DELETE", "/v1/services/{id}", &[]),
    (
        "GET",
        "/v1/instances",
        &[r#"[{"name": "fz-one"}, {"uuid": "00000000-0000-0000-0000-000000000000"}]"#],
    ),
    ("GET", "/v1/services", &[r#"{"name": "fz-group"}"#]),
    (
        "POST",
        "/api/v1/service/",
        &[
            r#"{"image": "hello", "name": "fz-svc2", "target_num_containers": 1, "autorestart": "OFF", "autodestroy": "ALWAYS"}"#,
            r#"{"image": "hello", "autokill": {"num_requests": 3}}"#,
        ],
    ),
    (
        "PATCH",
        "/api/v1/service/{id}/",
        &[
            r#"{"target_num_containers": 2, "autodestroy": "OFF"}"#,
            r#"{"autorestart": "ON_FAILURE", "image": "hello"}"#,
        ],
    ),
    ("POST", "/api/v1/service/{id}/start/", &["{}"]),
    ("POST", "/api/v1/service/{id}/stop/", &["{}"]),
    ("POST", "/api/v1/service/{id}/scale/", &["{}"]),
    ("POST", "/api/v1/service/{id}/redeploy/", &["{}"]),
    ("DELETE", "/api/v1/service/{id}/", &[]),
    ("POST", "/api/v1/container/{id}/start/", &["{}"]),
    ("POST", "/api/v1/container/{id}/stop/", &["{}"]),
    ("POST", "/api/v1/container/{id}/redeploy/", &[]),
    ("DELETE", "/api/v1/container/{id}/", &[]),
];

/// Names for `{id}` of each kind: mostly the fixtures (so calls reach the controller), some
/// that name nothing, or another kind, or cannot be a name.
const IDS: &[&str] = &[
    "fz-one",
    "fz-one",
    "fz-tpl",
    "fz-group",
    "fz-group",
    "fz-svc-1",
    "no-such-thing",
    "00000000-0000-0000-0000-000000000000",
    "%FF",
];
const SERVICE_IDS: &[&str] = &["fz-svc", "fz-svc", "fz-svc", "fz-svc2", "fz-group", "%FF"];
const CONTAINER_IDS: &[&str] = &["fz-svc-1", "fz-svc-1", "fz-svc-1", "fz-one", "fz-tpl", "x"];

/// The names `{id}` of `route` is filled in with.
fn ids_for(route: &str) -> &'static [&'static str] {
    if route.contains("/service/") {
        SERVICE_IDS
    } else if route.contains("/container/") {
        CONTAINER_IDS
    } else {
        IDS
    }
}

/// What the answer to one request must be; `Err` says why it is not.
fn judge(path: &str, status: u16, body: &[u8]) -> Result<(), String> {
    if status >= 500 {
        return Err(format!("a server error {status}"));
    }
    if !(200..500).contains(&status) {
        return Err(format!("status {status}"));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if status >= 400 {
        let message = if path.starts_with("/api/v1") {
            &json["error"]
        } else {
            &json["message"]
        };
        match message.as_str() {
            Some(m) if !m.trim().is_empty() => {}
            _ => return Err("a refusal without a message".to_owned()),
        }
    }
    Ok(())
}

/// Runs `CASES` requests of (route, id, body) against a fresh server, then checks it is still
/// ready. `tutum`: the routes of `/api/v1`, else those of `/v1`.
fn fuzz(tutum: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = rt.block_on(async {
        let server = Server::start(|dir| {
            format!(
                "{}instances:\n  - {{name: fz-one, image: hello}}\n",
                hello_runtime(dir, "")
            )
        })
        .await;
        // A template, a group and a Tutum service to aim at by name.
        server
            .api_ok(
                "POST",
                "/v1/instances",
                json!({"name": "fz-tpl", "image": "hello"}),
                "instances",
            )
            .await;
        server
            .api_ok(
                "POST",
                "/v1/instances/templates",
                json!([{"name": "fz-tpl"}]),
                "instances",
            )
            .await;
        server
            .api_ok(
                "POST",
                "/v1/services",
                json!({"name": "fz-group", "domains": [{"name": "fz-group"}]}),
                "service_groups",
            )
            .await;
        let r = server
            .admin_request(
                "POST",
                "/api/v1/service/",
                r#"{"image": "hello", "name": "fz-svc"}"#,
                None,
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text());
        server
    });
    let routes: Vec<(&str, &str, &[&str])> = ROUTES
        .iter()
        .copied()
        .filter(|(_, path, _)| path.starts_with("/api/v1") == tutum)
        .collect();
    let sent = AtomicUsize::new(0);
    // Statuses seen, to show (and check) that bodies got past the parsers to the controller.
    let statuses: Mutex<BTreeMap<u16, usize>> = Mutex::default();
    let mut runner = TestRunner::new(RunConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunConfig::default()
    });
    let strategy = prop::sample::select(routes).prop_flat_map(|(method, route, valid)| {
        (
            Just((method, route)),
            prop::sample::select(ids_for(route)),
            body(valid),
        )
    });
    let result = runner.run(&strategy, |((method, route), id, body)| {
        let path = route.replace("{id}", id);
        sent.fetch_add(1, Ordering::Relaxed);
        // An empty body goes without `Content-Type` (the guard asks for one only with a body).
        let answer = rt.block_on(common::try_request_with(
            server.admin,
            method,
            &path,
            &body,
            &[],
        ));
        let shown = String::from_utf8_lossy(&body).into_owned();
        match answer {
            Ok((status, _, bytes)) => {
                let status = status.as_u16();
                if let Ok(mut seen) = statuses.lock() {
                    *seen.entry(status).or_default() += 1;
                }
                judge(&path, status, &bytes).map_err(|why| {
                    TestCaseError::fail(format!(
                        "{method} {path} {shown:?}: {why}: {}",
                        String::from_utf8_lossy(&bytes)
                    ))
                })
            }
            Err(e) => Err(TestCaseError::fail(format!(
                "{method} {path} {shown:?}: the request failed: {e}"
            ))),
        }
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    assert!(sent.load(Ordering::Relaxed) >= CASES as usize);
    let seen = statuses.into_inner().unwrap_or_default();
    eprintln!(
        "statuses of {} requests: {seen:?}",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        seen.keys().any(|s| (200..300).contains(s)) && seen.keys().any(|s| (400..500).contains(s)),
        "both acceptances and refusals: {seen:?}"
    );
    rt.block_on(async {
        let ready = common::request(server.admin, "GET", "localhost", "/readyz").await;
        assert_eq!(ready.status.as_u16(), 200, "the server is still ready");
    });
    drop(server);
}

#[test]
fn unikraft_api_bodies_never_topple_the_server() {
    fuzz(false);
}

#[test]
fn tutum_api_bodies_never_topple_the_server() {
    fuzz(true);
}
