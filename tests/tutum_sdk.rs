//! `/api/v1` driven by python-tutum 0.21.2 itself (`tests/tutum_sdk.py`), against the real
//! server and real `autokill hello` containers.
//!
//! The interpreter is the one `AUTOKILL_TEST_PYTHON_TUTUM` names (`.ci/run` makes a virtualenv
//! with the SDK and points it there). Without it the test is skipped, loudly; with
//! `AUTOKILL_TEST_REQUIRE=all` (or `python-tutum`) that is a failure instead.

mod common;
mod tutum_common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tutum_drives_the_api() {
    let python = match std::env::var("AUTOKILL_TEST_PYTHON_TUTUM") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => {
            common::skip(
                "python-tutum",
                "AUTOKILL_TEST_PYTHON_TUTUM does not name a Python with python-tutum 0.21.2 \
                 (see .ci/run)",
            );
            return;
        }
    };
    let server = tutum_common::server("  api_users:\n    - {user: alice, apikey: k3y}\n").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tutum_sdk.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}", server.admin))
        .arg(server.proxy.to_string())
        .args(["alice", "k3y"])
        // The SDK sends through any proxy the environment names; these are on loopback.
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the SDK script finished within 5 minutes")
        .expect("the SDK script ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} tests/tutum_sdk.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("python-tutum 0.21.2: all checks passed"),
        "{stdout}\n{stderr}"
    );
}
