//! `/metrics` is valid Prometheus text, as `promtool check metrics` judges it, and follows the
//! naming rules (prefix, base units, `_total` counters, `instance_id` label).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Server, find_or_skip, hello_runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let Some(promtool) = find_or_skip("promtool", "promtool") else {
        return;
    };
    let server = Server::start(|dir| {
        format!(
            "{}service_groups:\n  - name: web\n    domains: [web]\n    instances:\n      - name: web-1\n        image: hello\n        autokill: {{ num_requests: 2 }}\n      - name: web-2\n        image: hello\n",
            hello_runtime(dir, "")
        )
    })
    .await;
    server
        .eventually(10, "instances running", async || {
            server.admin_json("/v1/instances").await["data"]["instances"]
                .as_array()
                .is_some_and(|a| a.iter().all(|i| i["state"] == "running") && a.len() == 2)
        })
        .await;
    // web-1's budget by its own name (a group's round-robin is per worker, and the requests may
    // land on either), then the group, which web-2 alone serves from then on.
    for host in [
        "web-1.localhost",
        "web-1.localhost",
        "web.localhost",
        "web.localhost",
        "web.localhost",
    ] {
        assert_eq!(server.get(host, "/").await.status.as_u16(), 200, "{host}");
    }
    assert_eq!(
        server.get("nobody.localhost", "/").await.status.as_u16(),
        404
    );
    server
        .eventually(10, "web-1 killed", async || {
            server.metrics().await.contains("autokill_kills_total{")
        })
        .await;
    // Let the workers flush their local histograms.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let text = server.metrics().await;

    for family in [
        "autokill_request_duration_seconds",
        "autokill_instance_requests_total",
        "autokill_kills_total",
        "autokill_instances",
        "autokill_build_info",
        "autokill_proxy_refused_total",
        "autokill_config_last_reload_successful",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        text.contains("autokill_request_duration_seconds_count 5"),
        "every forwarded request observed:\n{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("autokill_"),
            "metric outside the namespace: {line}"
        );
        assert!(
            !line.contains("instance=\"") && !line.contains("job=\""),
            "reserved label: {line}"
        );
    }

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics complained:\n{report}\n---\n{text}"
    );
}

/// Per-instance series only for instances that can serve or stopped recently: a long-stopped
/// instance (here: stopped an hour ago, as the store says) and a template export none, so idle
/// fleets do not flood the scrape; every instance is still counted in `autokill_instances`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_live_or_recently_stopped_instances_have_series() {
    use autokill::store::{Change, InstanceRecord, Store};
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        - 3_600_000;
    let record = |name: &str, state: &str| InstanceRecord {
        exit_code: Some(0),
        stop_reason: Some("user_stop".into()),
        stopped_at: Some(hour_ago),
        created_at: hour_ago,
        last_used: hour_ago,
        ..common::stored_instance(name, state)
    };
    let server = Server::start(|dir| {
        let (store, _) = Store::open(&dir.join("autokill.redb")).expect("store");
        store
            .commit(&[
                Change::PutInstance(record("long-stopped", "stopped")),
                Change::PutInstance(record("tpl", "template")),
            ])
            .expect("commit");
        format!(
            "{}instances:\n  - {{name: live, image: hello}}\n",
            hello_runtime(dir, "")
        )
    })
    .await;
    server
        .eventually(10, "live running", async || {
            server.get("live.localhost", "/").await.status.as_u16() == 200
        })
        .await;
    let text = server.metrics().await;
    let series = |name: &str| {
        text.lines().any(|l| {
            l.starts_with("autokill_instance_requests_total{")
                && l.contains(&format!("name=\"{name}\""))
        })
    };
    assert!(series("live"), "{text}");
    assert!(!series("long-stopped"), "{text}");
    assert!(!series("tpl"), "{text}");
    assert!(
        text.contains("autokill_instances{state=\"stopped\"} 1")
            && text.contains("autokill_instances{state=\"template\"} 1"),
        "{text}"
    );
}
