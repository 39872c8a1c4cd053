//! The official Unikraft Cloud Python SDK (`unikraft-cloud` 0.3.0) against the real binary:
//! `tests/sdk/flow.py` drives the high-level client as a user would and checks that every call
//! touched the resource it meant. `tests/api_flow.rs` runs the same flow with Rust's client.
//!
//! The Python with the SDK installed is `AUTOKILL_TEST_PYTHON` (`.ci/run` makes a venv and
//! sets it), else `python3` if it can import the SDK; without one the test is skipped loudly
//! (and fails under `AUTOKILL_TEST_REQUIRE=all`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, hello_runtime};

/// A Python that imports `unikraft_cloud`, or why there is none.
fn python_with_sdk() -> Result<String, String> {
    let python = std::env::var("AUTOKILL_TEST_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import unikraft_cloud"])
        .output()
        .map_err(|e| format!("{python} cannot run ({e}); set AUTOKILL_TEST_PYTHON"))?;
    if probe.status.success() {
        Ok(python)
    } else {
        Err(format!(
            "{python} has no unikraft_cloud (pip install unikraft-cloud==0.3.0 into a venv and \
             set AUTOKILL_TEST_PYTHON to its python)"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_high_level_flow_acts_on_the_intended_resources() {
    let python = match python_with_sdk() {
        Ok(python) => python,
        Err(why) => {
            common::skip("sdk", &format!("Unikraft SDK flow: {why}"));
            return;
        }
    };
    let server = Server::start(|dir| hello_runtime(dir, "")).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/flow.py");
    let base = format!("http://{}", server.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .arg(&base)
            // The SDK reads these; the test's own environment must not point it elsewhere.
            .env_remove("UKC_TOKEN")
            .env_remove("UKC_METRO")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .output()
    })
    .await
    .expect("join")
    .expect("run the SDK flow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("FLOW OK"),
        "the SDK flow failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
