//! The Tutum-compatible `/api/v1` end to end, driven the way python-tutum 0.21 drives it (its
//! paths, headers and bodies; see `tutum_sdk.rs` for the SDK itself), with real `autokill hello`
//! containers that exit with the codes the tests ask for.

mod common;
mod tutum_common;

use std::time::Duration;

use serde_json::{Value, json};
use tutum_common::{Tutum, server, uuid};

/// What happens to a container that exits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Then {
    Restarted,
    Destroyed,
    Stopped,
}

/// Tutum's rule, with autokill's `ON_SUCCESS`: autorestart is decided first, then autodestroy,
/// for every value against exit codes 0 and 3, with autorestart OFF and ON_FAILURE (and ALWAYS
/// with OFF).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_autodestroy_against_exit_codes_and_autorestart() {
    use Then::*;
    let mut cases: Vec<(&str, &str, i32, Then)> = Vec::new();
    for restart in ["OFF", "ON_FAILURE"] {
        for destroy in ["OFF", "ON_FAILURE", "ON_SUCCESS", "ALWAYS"] {
            for code in [0, 3] {
                let failed = code != 0;
                let then = if restart == "ON_FAILURE" && failed {
                    Restarted
                } else if match destroy {
                    "ON_FAILURE" => failed,
                    "ON_SUCCESS" => !failed,
                    "ALWAYS" => true,
                    _ => false,
                } {
                    Destroyed
                } else {
                    Stopped
                };
                cases.push((restart, destroy, code, then));
            }
        }
    }
    cases.push(("ALWAYS", "OFF", 0, Restarted));
    cases.push(("ALWAYS", "OFF", 3, Restarted));
    assert_eq!(cases.len(), 18);

    let server = server("").await;
    let api = Tutum::new(&server);
    let name = |i: usize| format!("case-{i}");
    let mut services = Vec::new();
    for (i, (restart, destroy, _, _)) in cases.iter().enumerate() {
        let s = api
            .create(
                json!({"image": "hello", "name": name(i), "target_num_containers": 1,
                           "autorestart": restart, "autodestroy": destroy}),
            )
            .await;
        assert_eq!(s["state"], "Init", "{s}");
        assert_eq!(s["autorestart"], *restart);
        assert_eq!(s["autodestroy"], *destroy);
        services.push(uuid(&s));
    }
    for id in &services {
        api.expect(202, "POST", &format!("/api/v1/service/{id}/start/"), None)
            .await;
    }
    let mut containers = Vec::new();
    for id in &services {
        api.wait_state(&format!("/api/v1/service/{id}/"), "Running")
            .await;
        let c = api.containers_of(id).await;
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0]["state"], "Running");
        containers.push(uuid(&c[0]));
    }
    for (i, (_, _, code, _)) in cases.iter().enumerate() {
        api.exit(&format!("{}-1", name(i)), *code).await;
    }
    for (i, (restart, destroy, code, then)) in cases.iter().enumerate() {
        let what = format!("{} ({restart}, {destroy}, exit {code}) {then:?}", name(i));
        let path = format!("/api/v1/container/{}/", containers[i]);
        let mut last = Value::Null;
        server
            .eventually(15, &what, async || {
                last = api.get(&path).await.unwrap_or_default();
                let state = match then {
                    Restarted => "Running",
                    Destroyed => "Terminated",
                    Stopped => "Stopped",
                };
                last["state"] == state && last["exit_code"] == *code
            })
            .await;
        let service = api.service(&services[i]).await;
        match then {
            Destroyed => {
                assert!(last["destroyed_datetime"].is_string(), "{what}: {last}");
                assert_eq!(service["current_num_containers"], 0, "{what}: {service}");
                assert_eq!(service["state"], "Not running", "{what}: {service}");
            }
            Stopped => {
                assert_eq!(
                    last["exit_code_msg"],
                    if *code == 0 {
                        "Exit code 0 (Success)"
                    } else {
                        "Exit code 3 (Failure)"
                    },
                    "{what}"
                );
                assert_eq!(service["state"], "Stopped", "{what}: {service}");
                assert_eq!(service["stopped_num_containers"], 1, "{what}: {service}");
            }
            Restarted => {
                assert_eq!(service["running_num_containers"], 1, "{what}: {service}");
                let r = server.get(&format!("{}-1.localhost", name(i)), "/").await;
                assert_eq!(r.status.as_u16(), 200, "{what}: serving again");
            }
        }
    }
    // Nothing is decided twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, (_, _, _, then)) in cases.iter().enumerate() {
        let c = api
            .get(&format!("/api/v1/container/{}/", containers[i]))
            .await
            .unwrap_or_default();
        let want = match then {
            Restarted => "Running",
            Destroyed => "Terminated",
            Stopped => "Stopped",
        };
        assert_eq!(c["state"], want, "{}: {c}", name(i));
    }
}

/// A PATCH of a running service's autodestroy reaches its containers at once and decides their
/// next stop; only the fields sent change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_of_autodestroy_decides_the_next_stop() {
    let server = server("").await;
    let api = Tutum::new(&server);
    let s = api
        .run(
            json!({"image": "hello", "name": "web", "target_num_containers": 2,
                    "autorestart": "OFF", "autodestroy": "OFF"}),
        )
        .await;
    let id = uuid(&s);
    let patched = api
        .expect(
            200,
            "PATCH",
            &format!("/api/v1/service/{id}/"),
            Some(&json!({"autodestroy": "ALWAYS"})),
        )
        .await;
    assert_eq!(patched["autodestroy"], "ALWAYS", "{patched}");
    assert_eq!(patched["autorestart"], "OFF", "unchanged: {patched}");
    assert_eq!(patched["target_num_containers"], 2, "unchanged: {patched}");
    assert_eq!(
        patched["state"], "Running",
        "a policy change redeploys nothing"
    );
    let containers = api.containers_of(&id).await;
    for c in &containers {
        assert_eq!(c["autodestroy"], "ALWAYS", "{c}");
        assert_eq!(c["state"], "Running", "{c}");
    }
    // The same records on /v1.
    let (_, v1) = server.api("GET", "/v1/instances/web-1", Value::Null).await;
    assert_eq!(v1["data"]["instances"][0]["autodestroy"], "ALWAYS", "{v1}");
    api.exit("web-1", 0).await;
    let first = api
        .wait_state(
            &format!("/api/v1/container/{}/", uuid(&containers[0])),
            "Terminated",
        )
        .await;
    assert_eq!(first["exit_code"], 0);
    // Back to OFF: the next stop keeps the container.
    api.expect(
        200,
        "PATCH",
        &format!("/api/v1/service/{id}/"),
        Some(&json!({"autodestroy": "OFF"})),
    )
    .await;
    api.exit("web-2", 0).await;
    api.wait_state(
        &format!("/api/v1/container/{}/", uuid(&containers[1])),
        "Stopped",
    )
    .await;
    let s = api.service(&id).await;
    assert_eq!(s["state"], "Stopped", "{s}");
    assert_eq!(s["current_num_containers"], 1, "{s}");
}

/// A PATCH of `target_num_containers`, then a scale, as python-tutum's `scale()` follows `save()`.
async fn scale(api: &Tutum<'_>, id: &str, n: u32) {
    let path = format!("/api/v1/service/{id}/");
    api.expect(
        200,
        "PATCH",
        &path,
        Some(&json!({"target_num_containers": n})),
    )
    .await;
    api.expect(202, "POST", &format!("{path}scale/"), None)
        .await;
}

/// Scale up and down after a PATCH of `target_num_containers`; the highest-numbered containers
/// go first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_and_down() {
    let server = server("").await;
    let api = Tutum::new(&server);
    let s = api
        .run(json!({"image": "hello", "name": "web", "target_num_containers": 1}))
        .await;
    let id = uuid(&s);
    let path = format!("/api/v1/service/{id}/");
    let patched = api
        .expect(
            200,
            "PATCH",
            &path,
            Some(&json!({"target_num_containers": 3})),
        )
        .await;
    assert_eq!(patched["target_num_containers"], 3);
    assert_eq!(
        patched["current_num_containers"], 1,
        "a PATCH alone scales nothing"
    );
    let a = api
        .call("POST", &format!("/api/v1/service/{id}/scale/"), None)
        .await;
    assert_eq!(a.status.as_u16(), 202, "{}", a.body);
    assert_eq!(a.body["current_num_containers"], 3, "{}", a.body);
    api.wait_state(&path, "Running").await;
    let names: Vec<Value> = api
        .containers_of(&id)
        .await
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, [json!("web-1"), json!("web-2"), json!("web-3")]);
    for n in ["web-1", "web-2", "web-3"] {
        let r = server.get(&format!("{n}.localhost"), "/").await;
        assert_eq!(r.status.as_u16(), 200, "{n}");
    }
    // The service's domain spreads requests over its containers.
    let r = server.get("web.localhost", "/").await;
    assert_eq!(r.status.as_u16(), 200);
    let three = api.containers_of(&id).await;
    scale(&api, &id, 1).await;
    for c in &three[1..] {
        api.wait_state(&format!("/api/v1/container/{}/", uuid(c)), "Terminated")
            .await;
    }
    let s = api.wait_state(&path, "Running").await;
    assert_eq!(s["current_num_containers"], 1, "{s}");
    assert_eq!(api.containers_of(&id).await[0]["name"], "web-1");
    // A stopped service scales up with containers that are created, not started.
    api.expect(202, "POST", &format!("/api/v1/service/{id}/stop/"), None)
        .await;
    api.wait_state(&path, "Stopped").await;
    scale(&api, &id, 2).await;
    let c = api.containers_of(&id).await;
    assert_eq!(c[1]["state"], "Init", "{c:?}");
    assert_eq!(api.service(&id).await["state"], "Stopped");
}

/// A redeploy replaces every container with a new one of the same name, and brings a service
/// whose containers were destroyed back to its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_replaces_every_container() {
    let server = server("").await;
    let api = Tutum::new(&server);
    let s = api
        .run(
            json!({"image": "hello", "name": "job", "target_num_containers": 2,
                    "autodestroy": "ALWAYS"}),
        )
        .await;
    let id = uuid(&s);
    let path = format!("/api/v1/service/{id}/");
    let before = api.containers_of(&id).await;
    api.exit("job-1", 0).await;
    api.wait_state(
        &format!("/api/v1/container/{}/", uuid(&before[0])),
        "Terminated",
    )
    .await;
    assert_eq!(api.service(&id).await["current_num_containers"], 1);
    let a = api
        .call(
            "POST",
            &format!("/api/v1/service/{id}/redeploy/?reuse_volumes=True"),
            None,
        )
        .await;
    assert_eq!(a.status.as_u16(), 202, "{}", a.body);
    assert_eq!(a.body["state"], "Redeploying", "{}", a.body);
    let s = api.wait_state(&path, "Running").await;
    assert_eq!(s["current_num_containers"], 2, "{s}");
    let after = api.containers_of(&id).await;
    let names: Vec<&Value> = after.iter().map(|c| &c["name"]).collect();
    assert_eq!(names, [&json!("job-1"), &json!("job-2")]);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(uuid(old), uuid(new), "a new container");
    }
    api.wait_state(
        &format!("/api/v1/container/{}/", uuid(&before[1])),
        "Terminated",
    )
    .await;
    // The action of the redeploy ends in success.
    let action = a.action.expect("X-Tutum-Action-URI");
    let last = api.wait_state(&action, "Success").await;
    assert_eq!(last["action"], "Service Redeploy");
    assert_eq!(last["object"], format!("/api/v1/service/{id}/"));
    assert_eq!(last["method"], "POST");
    assert!(last["end_date"].is_string(), "{last}");
    // A container alone, too: the answer is the new one.
    let c = api
        .expect(
            202,
            "POST",
            &format!("/api/v1/container/{}/redeploy/", uuid(&after[0])),
            None,
        )
        .await;
    assert_eq!(c["name"], "job-1");
    assert_ne!(uuid(&c), uuid(&after[0]));
    api.wait_state(&format!("/api/v1/container/{}/", uuid(&c)), "Running")
        .await;
}

/// DELETE terminates the containers, then the service; both stay visible as `Terminated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_a_service() {
    let server = server("").await;
    let api = Tutum::new(&server);
    let s = api
        .run(json!({"image": "hello", "name": "web", "target_num_containers": 2}))
        .await;
    let id = uuid(&s);
    let containers = api.containers_of(&id).await;
    assert_eq!(server.instance_pids().len(), 2);
    let a = api
        .call("DELETE", &format!("/api/v1/service/{id}"), None)
        .await;
    assert_eq!(a.status.as_u16(), 202, "{}", a.body);
    assert_eq!(a.body["state"], "Terminating", "{}", a.body);
    assert!(a.action.is_some());
    let gone = api
        .wait_state(&format!("/api/v1/service/{id}/"), "Terminated")
        .await;
    assert!(gone["destroyed_datetime"].is_string(), "{gone}");
    for c in &containers {
        api.wait_state(&format!("/api/v1/container/{}/", uuid(c)), "Terminated")
            .await;
    }
    server
        .eventually(10, "no container process left", async || {
            server.instance_pids().is_empty()
        })
        .await;
    let listed = api.all("/api/v1/service/?state=Terminated").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The group is gone from /v1 too, and the name is free again.
    let (status, _) = server.api("GET", "/v1/services/web", Value::Null).await;
    assert_eq!(status.as_u16(), 404);
    let again = api
        .create(json!({"image": "hello", "name": "web", "target_num_containers": 0}))
        .await;
    assert_ne!(uuid(&again), id);
    assert_eq!(api.service("web").await["uuid"], uuid(&again).as_str());
    // A terminated service takes no more actions.
    let a = api
        .call("POST", &format!("/api/v1/service/{id}/start/"), None)
        .await;
    assert_eq!(a.status.as_u16(), 409, "{}", a.body);
}

/// Lists come in pages (`limit`, `offset`, `meta.next`/`previous` keeping the filters), over
/// more than one page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages() {
    let server = server("").await;
    let api = Tutum::new(&server);
    let mut made = Vec::new();
    for i in 0..30 {
        let s = api
            .create(json!({"image": "hello", "name": format!("svc-{i:02}"), "target_num_containers": 0}))
            .await;
        made.push(uuid(&s));
    }
    let first = api.expect(200, "GET", "/api/v1/service/", None).await;
    assert_eq!(first["meta"]["limit"], 25, "tastypie's default page");
    assert_eq!(first["meta"]["total_count"], 30);
    assert_eq!(first["meta"]["previous"], Value::Null);
    assert_eq!(first["objects"].as_array().map(Vec::len), Some(25));
    let all = api.all("/api/v1/service/?limit=7").await;
    let got: Vec<String> = all.iter().map(uuid).collect();
    assert_eq!(got, made, "every service once, oldest first");
    let third = api
        .expect(200, "GET", "/api/v1/service/?limit=7&offset=14", None)
        .await;
    assert_eq!(third["meta"]["next"], "/api/v1/service/?limit=7&offset=21");
    assert_eq!(
        third["meta"]["previous"],
        "/api/v1/service/?limit=7&offset=7"
    );
    // Filters stay in the links.
    let page = api
        .expect(
            200,
            "GET",
            "/api/v1/service/?limit=1&state=Not%20running",
            None,
        )
        .await;
    assert_eq!(page["meta"]["total_count"], 30);
    assert_eq!(
        page["meta"]["next"],
        "/api/v1/service/?limit=1&offset=1&state=Not%20running"
    );
    let by_name = api.all("/api/v1/service/?name=svc-07").await;
    assert_eq!(by_name.len(), 1);
    let prefix = &made[3][..8];
    let by_prefix = api
        .all(&format!("/api/v1/service/?uuid__startswith={prefix}"))
        .await;
    assert!(by_prefix.iter().any(|s| uuid(s) == made[3]));
    let past = api
        .expect(200, "GET", "/api/v1/service/?offset=100", None)
        .await;
    assert_eq!(past["objects"], json!([]));
    assert_eq!(past["meta"]["next"], Value::Null);
}

/// Bad input: 400 (or 404, 409) with `{"error": …}` naming the field, and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field() {
    let server = server("").await;
    let api = Tutum::new(&server);
    let web = api
        .create(json!({"image": "hello", "name": "web", "target_num_containers": 0}))
        .await;
    let web_path = format!("/api/v1/service/{}/", uuid(&web));
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({})),
            400,
            "missing field `image`",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "colour": "red"})),
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "target_num_containers": -1})),
            400,
            "target_num_containers: -1 is negative",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "target_num_containers": 1001})),
            400,
            "target_num_containers: 1001 is more than 1000",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "target_num_containers": "2"})),
            400,
            "target_num_containers: invalid type",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "autodestroy": "SOMETIMES"})),
            400,
            "autodestroy: unknown autodestroy \"SOMETIMES\"",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "autorestart": "NEVER-EVER"})),
            400,
            "autorestart: unknown restart policy",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "autorestart": "ALWAYS", "autodestroy": "ON_FAILURE"})),
            400,
            "autodestroy: must be OFF when autorestart is ALWAYS",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "nope"})),
            400,
            "image: unknown image \"nope\"",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "name": "Bad_Name"})),
            400,
            "name: invalid name",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "autokill": {"time_ms": -5}})),
            400,
            "autokill.time_ms: -5 is negative",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "privileged": true})),
            400,
            "privileged: is not supported",
        ),
        (
            "POST",
            "/api/v1/service/".into(),
            Some(json!({"image": "hello", "name": "web"})),
            409,
            "name: a service or service group named \"web\" already exists",
        ),
        (
            "PATCH",
            web_path.clone(),
            Some(json!({"state": "Running"})),
            400,
            "state: is read-only",
        ),
        (
            "PATCH",
            web_path.clone(),
            Some(json!({"name": "other"})),
            400,
            "name: is read-only",
        ),
        (
            "PATCH",
            web_path.clone(),
            Some(json!({"autorestart": "ALWAYS", "autodestroy": "ALWAYS"})),
            400,
            "autodestroy: must be OFF",
        ),
        (
            "PATCH",
            web_path.clone(),
            Some(json!({"target_num_containers": -3})),
            400,
            "target_num_containers: -3 is negative",
        ),
        (
            "PATCH",
            "/api/v1/service/nope/".into(),
            Some(json!({"autodestroy": "ALWAYS"})),
            404,
            "no service nope",
        ),
        (
            "POST",
            format!("{web_path}start/"),
            Some(json!({"now": true})),
            400,
            "unknown field `now`",
        ),
        (
            "GET",
            "/api/v1/service/?state=Bogus".into(),
            None,
            400,
            "state: unknown value \"Bogus\"",
        ),
        (
            "GET",
            "/api/v1/service/?limit=-1".into(),
            None,
            400,
            "limit: -1 is negative",
        ),
        (
            "GET",
            "/api/v1/service/?limit=5000".into(),
            None,
            400,
            "limit: 5000 is more than 1000",
        ),
        (
            "GET",
            "/api/v1/service/?colour=red".into(),
            None,
            400,
            "colour: unknown query parameter",
        ),
        (
            "GET",
            "/api/v1/container/?service=nope".into(),
            None,
            400,
            "service: no service",
        ),
        (
            "GET",
            "/api/v1/container/nope/".into(),
            None,
            404,
            "no container nope",
        ),
        ("GET", "/api/v1/action/nope/".into(), None, 404, "no action"),
        (
            "GET",
            "/api/v1/nothing/".into(),
            None,
            404,
            "no such endpoint",
        ),
        (
            "PUT",
            "/api/v1/service/".into(),
            None,
            405,
            "method not allowed",
        ),
    ];
    for (method, path, body, status, message) in &cases {
        let a = api.call(method, path, body.as_ref()).await;
        assert_eq!(
            a.status.as_u16(),
            *status,
            "{method} {path} {body:?}: {}",
            a.body
        );
        let keys: Vec<&String> = a
            .body
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["error"], "Tutum's error body: {}", a.body);
        let error = a.body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{method} {path}: {error:?} should say {message:?}"
        );
        if method != &"GET" && *status != 405 {
            assert!(
                a.action.is_some(),
                "{method} {path}: the refusal is an action too"
            );
        }
    }
    let invalid = common::request_with(
        server.admin,
        "POST",
        "/api/v1/service/",
        b"{\"image\": ",
        &[],
    )
    .await;
    assert_eq!(invalid.status.as_u16(), 400);
    assert!(
        invalid.text().contains("invalid JSON"),
        "{}",
        invalid.text()
    );
    // Nothing changed: one service, as made.
    let all = api.all("/api/v1/service/").await;
    assert_eq!(all.len(), 1, "{all:?}");
    let after = api.service("web").await;
    for key in [
        "autorestart",
        "autodestroy",
        "target_num_containers",
        "name",
    ] {
        assert_eq!(after[key], web[key], "{key}");
    }
    let (_, instances) = server.api("GET", "/v1/instances", Value::Null).await;
    assert_eq!(
        instances["data"]["instances"],
        json!([]),
        "no container was made"
    );
}

/// `ApiKey user:key`, Basic, and the `/v1` Bearer token; 401 otherwise. `/v1` keeps its rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    let server = server(
        "  token: s3cret\n  api_users:\n    - {user: alice, apikey: k3y}\n    - {user: bob, apikey: other}\n",
    )
    .await;
    let mut api = Tutum::new(&server);
    let a = api.call("GET", "/api/v1/service/", None).await;
    assert_eq!(a.status.as_u16(), 401, "{}", a.body);
    assert!(
        a.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("credentials"))
    );
    // base64("alice:k3y"), base64("alice:nope")
    for (auth, status) in [
        ("ApiKey alice:k3y", 200),
        ("apikey bob:other", 200),
        ("Basic YWxpY2U6azN5", 200),
        ("Bearer s3cret", 200),
        ("ApiKey alice:other", 401),
        ("ApiKey carol:k3y", 401),
        ("Basic YWxpY2U6bm9wZQ==", 401),
        ("Basic !!!", 401),
        ("Bearer nope", 401),
        ("Token k3y", 401),
    ] {
        api.auth = Some(auth.to_owned());
        let a = api.call("GET", "/api/v1/service/", None).await;
        assert_eq!(a.status.as_u16(), status, "{auth}: {}", a.body);
    }
    api.auth = Some("ApiKey alice:k3y".into());
    let me = api.expect(200, "GET", "/api/v1/auth/", None).await;
    assert_eq!(me["objects"][0]["user"], "alice", "{me}");
    // /v1 takes the bearer token only.
    let r = server
        .admin_request("GET", "/v1/instances", "", Some("s3cret"))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    let r = common::request_with(
        server.admin,
        "GET",
        "/v1/instances",
        b"",
        &[("authorization", "ApiKey alice:k3y")],
    )
    .await;
    assert_eq!(r.status.as_u16(), 401);
}

/// Paths answer the same with or without their trailing slash; containers take their verbs and
/// are the `/v1` instances; every change's action is readable and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_containers_and_actions() {
    let server = server("").await;
    let api = Tutum::new(&server);
    let s = api
        .run(json!({"image": "hello", "name": "web", "target_num_containers": 1}))
        .await;
    let id = uuid(&s);
    let c = api.containers_of(&id).await.remove(0);
    let cid = uuid(&c);
    assert_eq!(c["service"], format!("/api/v1/service/{id}/"));
    assert_eq!(c["public_dns"], "web-1.localhost");
    assert!(
        c["started_datetime"]
            .as_str()
            .is_some_and(|t| t.ends_with(" +0000")),
        "{c}"
    );
    for path in [
        "/api/v1/service/".to_owned(),
        "/api/v1/service".to_owned(),
        format!("/api/v1/service/{id}/"),
        format!("/api/v1/service/{id}"),
        "/api/v1/service/web".to_owned(),
        "/api/v1/container".to_owned(),
        format!("/api/v1/container/{cid}"),
        "/api/v1/action".to_owned(),
    ] {
        api.expect(200, "GET", &path, None).await;
    }
    let web = api.all("/api/v1/container/?service=web").await;
    assert_eq!(web.len(), 1);
    let by_uri = api
        .all(&format!("/api/v1/container/?service=/api/v1/service/{id}/"))
        .await;
    assert_eq!(by_uri.len(), 1);
    // The group and instance on /v1 are the same records.
    let (_, group) = server.api("GET", "/v1/services/web", Value::Null).await;
    assert_eq!(
        group["data"]["service_groups"][0]["uuid"],
        id.as_str(),
        "{group}"
    );
    assert_eq!(
        group["data"]["service_groups"][0]["instances"][0]["uuid"],
        cid.as_str()
    );
    // Container verbs, with and without the slash.
    let a = api
        .call("POST", &format!("/api/v1/container/{cid}/stop"), None)
        .await;
    assert_eq!(a.status.as_u16(), 202, "{}", a.body);
    let action = a.action.expect("an action");
    api.wait_state(&format!("/api/v1/container/{cid}/"), "Stopped")
        .await;
    let last = api.wait_state(&action, "Success").await;
    assert_eq!(last["action"], "Container Stop");
    assert_eq!(last["user_agent"], "python-tutum/0.21.2");
    assert_eq!(api.service(&id).await["state"], "Stopped");
    api.expect(
        202,
        "POST",
        &format!("/api/v1/container/{cid}/start/"),
        None,
    )
    .await;
    api.wait_state(&format!("/api/v1/container/{cid}/"), "Running")
        .await;
    let a = api
        .call("DELETE", &format!("/api/v1/container/{cid}/"), None)
        .await;
    assert_eq!(a.status.as_u16(), 202, "{}", a.body);
    assert_eq!(a.body["state"], "Terminating", "{}", a.body);
    api.wait_state(&format!("/api/v1/container/{cid}/"), "Terminated")
        .await;
    let s = api.service(&id).await;
    assert_eq!(s["state"], "Not running", "{s}");
    // Every change is an action; filters by object.
    let actions = api
        .all(&format!("/api/v1/action/?object=/api/v1/container/{cid}/"))
        .await;
    let names: Vec<&Value> = actions.iter().map(|a| &a["action"]).collect();
    assert_eq!(
        names,
        [
            &json!("Container Stop"),
            &json!("Container Start"),
            &json!("Container Terminate")
        ]
    );
    server
        .eventually(10, "every action ends", async || {
            api.all("/api/v1/action/?state=In%20progress")
                .await
                .is_empty()
        })
        .await;
}
