//! Live reconfiguration with the real binary: the file changed on disk (no signal) and SIGHUP
//! (file unchanged) both reconcile what it declares; a bad file keeps the running configuration and says so in
//! `/metrics`.

mod common;

use common::{Server, hello_runtime, sample};
use serde_json::Value;

fn declared(dir: &std::path::Path, instances: &str) -> String {
    format!("{}instances:\n{instances}", hello_runtime(dir, ""))
}

/// The server's configuration file (the harness writes it as `autokill.yaml` in its directory),
/// with everything before `runtime:` kept and the rest replaced.
fn rewrite(server: &Server, body: &str) {
    let path = server.dir.path().join("autokill.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    let head = text.split("runtime:").next().unwrap_or_default().to_owned();
    // Written whole and renamed over the file, as editors and config managers do.
    let tmp = server.dir.path().join("autokill.yaml.new");
    std::fs::write(&tmp, format!("{head}{body}")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

async fn budget(server: &Server, name: &str) -> Option<u64> {
    let (status, v) = server
        .api("GET", &format!("/v1/instances/{name}"), Value::Null)
        .await;
    (status == hyper::StatusCode::OK)
        .then(|| v["data"]["instances"][0]["autokill"]["num_requests"].as_u64())
        .flatten()
}

async fn reload_ok(server: &Server) -> Option<f64> {
    sample(
        &server.metrics().await,
        "autokill_config_last_reload_successful",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reconciled_and_a_bad_one_is_refused() {
    let server = Server::start(|dir| {
        declared(
            dir,
            "  - {name: one, image: hello, autokill: {num_requests: 10}}\n",
        )
    })
    .await;
    assert_eq!(budget(&server, "one").await, Some(10));
    let dir = server.dir.path().to_owned();

    // Changed on disk: one's budget changes, two is created.
    rewrite(
        &server,
        &declared(
            &dir,
            "  - {name: one, image: hello, autokill: {num_requests: 20}}\n  - {name: two, image: hello}\n",
        ),
    );
    server
        .eventually(10, "the changed file applied", async || {
            budget(&server, "one").await == Some(20) && budget(&server, "two").await.is_some()
        })
        .await;
    assert_eq!(reload_ok(&server).await, Some(1.0));

    // A bad file: refused, the running configuration kept, the metric says so.
    rewrite(&server, "runtime:\n  kind: process\n  no_such_key: 1\n");
    server
        .eventually(10, "the bad file reported", async || {
            reload_ok(&server).await == Some(0.0)
        })
        .await;
    assert_eq!(budget(&server, "one").await, Some(20));
    assert!(
        budget(&server, "two").await.is_some(),
        "nothing was removed"
    );

    // Fixed: applied, and two is no longer declared and goes.
    rewrite(
        &server,
        &declared(
            &dir,
            "  - {name: one, image: hello, autokill: {num_requests: 30}}\n",
        ),
    );
    server
        .eventually(10, "the fixed file applied", async || {
            budget(&server, "one").await == Some(30) && budget(&server, "two").await.is_none()
        })
        .await;
    assert_eq!(reload_ok(&server).await, Some(1.0));

    // SIGHUP with the file unchanged reconciles again: a declared instance deleted by hand
    // comes back.
    let (status, _) = server.api("DELETE", "/v1/instances/one", Value::Null).await;
    assert_eq!(status, hyper::StatusCode::OK);
    server
        .eventually(10, "one deleted", async || {
            budget(&server, "one").await.is_none()
        })
        .await;
    server.hangup();
    server
        .eventually(10, "one declared again on SIGHUP", async || {
            budget(&server, "one").await == Some(30)
        })
        .await;
}
