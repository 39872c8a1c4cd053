//! The command-line client, `autokill <noun> <verb>`: each command run as a user runs it,
//! against a real server, its output and exit code checked (0 done, 2 usage, 3 not found,
//! 4 refused, 5 unreachable).

mod common;
mod tutum_common;

use std::path::Path;

use common::{BIN, Server, free_port};
use serde_json::Value;
use tutum_common::{Tutum, server};

/// What a command did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "{self:?}");
        self.stdout
    }

    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// Runs `autokill <args>` in `dir` with only `env` of the client's variables set.
async fn run_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).current_dir(dir);
    for var in [
        "AUTOKILL_URL",
        "AUTOKILL_TOKEN",
        "AUTOKILL_USER",
        "AUTOKILL_APIKEY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run autokill");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `autokill <args> --url <server>`.
async fn run(server: &Server, args: &[&str]) -> Run {
    let url = format!("http://{}", server.admin);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", &url]);
    run_in(server.dir.path(), &[], &all).await
}

fn is_uuid(line: &str) -> bool {
    uuid::Uuid::parse_str(line.trim()).is_ok()
}

/// The rows of a table whose first column is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The seed's two commands, and every Tutum verb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutum_commands() {
    let server = server("").await;
    let api = Tutum::new(&server);

    // `tutum service run --autodestroy ALWAYS …`, with autokill for tutum.
    let out = run(
        &server,
        &[
            "service",
            "run",
            "--autodestroy",
            "ALWAYS",
            "-n",
            "job",
            "-t",
            "2",
            "--wait",
            "hello",
        ],
    )
    .await
    .ok();
    assert!(is_uuid(&out), "prints the UUID: {out}");
    let job = api.service("job").await;
    assert_eq!(job["uuid"], out.trim());
    assert_eq!(job["autodestroy"], "ALWAYS");
    assert_eq!(
        job["state"], "Running",
        "--wait waited for the start: {job}"
    );
    assert_eq!(job["current_num_containers"], 2);

    // `tutum apps set --autodestroy ALWAYS NAME`.
    run(&server, &["service", "run", "-n", "web", "hello", "--wait"])
        .await
        .ok();
    assert_eq!(api.service("web").await["autodestroy"], "OFF");
    let out = run(&server, &["apps", "set", "--autodestroy", "ALWAYS", "web"])
        .await
        .ok();
    let web = api.service("web").await;
    assert_eq!(out.trim(), web["uuid"]);
    assert_eq!(web["autodestroy"], "ALWAYS", "{web}");
    assert_eq!(api.container("web-1").await["autodestroy"], "ALWAYS");

    // ps: a table for people (no colour: not a terminal), UUIDs with -q, JSON for scripts.
    let table = run(&server, &["service", "ps"]).await.ok();
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        !table.contains('\x1b'),
        "no colour off a terminal: {table:?}"
    );
    let r = row(&table, "web");
    assert_eq!(
        r[..4],
        [
            "web",
            &web["uuid"].as_str().unwrap_or_default()[..8],
            "Running",
            "1"
        ]
    );
    assert!(r.contains(&"ALWAYS"), "{r:?}");
    assert!(r.contains(&"web.localhost"), "{r:?}");
    let quiet = run(&server, &["apps", "ps", "-q"]).await.ok();
    assert_eq!(quiet.lines().count(), 2, "{quiet}");
    assert!(quiet.lines().all(is_uuid), "{quiet}");
    let listed = run(
        &server,
        &["service", "list", "--output", "json", "-s", "Running"],
    )
    .await
    .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let inspected = run(&server, &["service", "inspect", "web"]).await.json();
    assert_eq!(inspected["name"], "web");
    let short = &web["uuid"].as_str().unwrap_or_default()[..8];
    let by_prefix = run(&server, &["service", "inspect", short]).await.json();
    assert_eq!(by_prefix["name"], "web", "a UUID prefix names it too");

    // scale, stop, start, redeploy.
    let out = run(&server, &["service", "scale", "web", "3", "--wait"])
        .await
        .ok();
    assert_eq!(out.trim(), web["uuid"]);
    assert_eq!(api.service("web").await["current_num_containers"], 3);
    run(&server, &["service", "set", "--autodestroy", "OFF", "web"])
        .await
        .ok();
    run(&server, &["service", "stop", "web", "--wait"])
        .await
        .ok();
    assert_eq!(api.service("web").await["state"], "Stopped");
    run(&server, &["service", "start", "web", "--sync"])
        .await
        .ok();
    assert_eq!(api.service("web").await["state"], "Running");
    let before = api.container("web-2").await["uuid"].clone();
    run(&server, &["service", "redeploy", "web", "--wait"])
        .await
        .ok();
    assert_ne!(
        api.container("web-2").await["uuid"],
        before,
        "new containers"
    );
    assert_eq!(api.service("web").await["state"], "Running");

    // container verbs.
    let table = run(
        &server,
        &["container", "ps", "--service", "web", "-s", "Running"],
    )
    .await
    .ok();
    assert_eq!(table.lines().count(), 4, "a header and three rows: {table}");
    assert_eq!(row(&table, "web-3")[2], "Running");
    let c = run(&server, &["container", "inspect", "web-1"])
        .await
        .json();
    assert_eq!(
        c["service"],
        format!(
            "/api/v1/service/{}/",
            web["uuid"].as_str().unwrap_or_default()
        )
    );
    run(&server, &["container", "stop", "web-1", "--wait"])
        .await
        .ok();
    assert_eq!(api.container("web-1").await["state"], "Stopped");
    run(&server, &["container", "start", "web-1", "--wait"])
        .await
        .ok();
    assert_eq!(api.container("web-1").await["state"], "Running");
    let out = run(&server, &["container", "redeploy", "web-2", "--wait"])
        .await
        .ok();
    assert_eq!(
        out.trim(),
        api.container("web-2").await["uuid"],
        "the new one"
    );
    run(&server, &["container", "terminate", "web-3", "--wait"])
        .await
        .ok();
    assert_eq!(api.service("web").await["current_num_containers"], 2);

    // On a terminal (a pty from `script`), states are coloured; NO_COLOR turns that off.
    if let Some(script) = common::find_or_skip("script", "script") {
        let line = format!("{BIN} service ps --url http://{}", server.admin);
        for (no_color, coloured) in [("", true), ("1", false)] {
            let out = tokio::process::Command::new(&script)
                .args(["-qec", &line, "/dev/null"])
                .env("NO_COLOR", no_color)
                .output()
                .await
                .expect("run script");
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text.contains("\x1b[32mRunning\x1b[0m"),
                coloured,
                "NO_COLOR={no_color:?}: {text:?}"
            );
        }
    }

    // create: a service made, not started.
    let out = run(
        &server,
        &["service", "create", "-n", "idle", "-t", "0", "hello"],
    )
    .await
    .ok();
    let idle = api.service("idle").await;
    assert_eq!(out.trim(), idle["uuid"]);
    assert_eq!(idle["state"], "Not running");

    // terminate.
    run(
        &server,
        &["service", "terminate", "web", "job", "idle", "--wait"],
    )
    .await
    .ok();
    for name in ["web", "job", "idle"] {
        assert_eq!(api.service(name).await["state"], "Terminated");
    }
    let table = run(&server, &["service", "ps", "-s", "Terminated"])
        .await
        .ok();
    assert_eq!(row(&table, "web")[2], "Terminated");
}

/// Exit codes tell apart usage, not found, refused and unreachable, and the server's answer is
/// shown whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_errors() {
    let server = server("").await;
    let r = run(&server, &["service", "inspect", "nope"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr
            .contains(r#"404 Not Found: {"error":"no service nope"}"#),
        "{r:?}"
    );
    let r = run(&server, &["service", "run", "nope"]).await;
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr
            .contains(r#"400 Bad Request: {"error":"image: unknown image \"nope\""#),
        "{r:?}"
    );
    let r = run(&server, &["service", "run", "hello", "-n", "Bad_Name"]).await;
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("name: invalid name"), "{r:?}");
    let r = run(&server, &["container", "ps", "--service", "nope"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    // Usage errors: clap's and ours.
    for args in [
        vec!["service", "run"],
        vec!["service", "run", "hello", "--autodestroy", "MAYBE"],
        vec!["service", "run", "hello", "--autokill", "speed=3"],
        vec!["service", "set", "web"],
        vec!["service", "frobnicate"],
        vec!["instance", "create"],
    ] {
        let r = run(&server, &args).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(!r.stderr.is_empty(), "{args:?}: says why");
    }
    let r = run_in(
        server.dir.path(),
        &[],
        &["service", "ps", "--url", "https://localhost:1"],
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    let port = free_port().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let r = run_in(
        server.dir.path(),
        &[("AUTOKILL_URL", &url)],
        &["service", "ps"],
    )
    .await;
    assert_eq!(r.code, 5, "{r:?}");
    assert!(
        r.stderr.contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{r:?}"
    );
    let r = run(&server, &["instance", "get", "nope"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("404 Not Found: {"),
        "the envelope, whole: {r:?}"
    );
}

/// `--user`/`--apikey` (or `AUTOKILL_USER`/`AUTOKILL_APIKEY`) for `/api/v1`, `--token` (or
/// `AUTOKILL_TOKEN`) for both; the default URL is the admin address of `config/autokill.yaml`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_the_default_url() {
    let server = server("  token: s3cret\n  api_users:\n    - {user: alice, apikey: k3y}\n").await;
    let r = run(&server, &["service", "ps"]).await;
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("401 Unauthorized"), "{r:?}");
    run(
        &server,
        &["service", "ps", "--user", "alice", "--apikey", "k3y"],
    )
    .await
    .ok();
    let r = run(
        &server,
        &["service", "ps", "--user", "alice", "--apikey", "nope"],
    )
    .await;
    assert_eq!(r.code, 4, "{r:?}");
    let r = run(&server, &["service", "ps", "--user", "alice"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    run(&server, &["service", "ps", "--token", "s3cret"])
        .await
        .ok();
    run(&server, &["instance", "ls", "--token", "s3cret"])
        .await
        .ok();
    let r = run(&server, &["instance", "ls"]).await;
    assert_eq!(r.code, 4, "{r:?}");
    // From the environment, and the URL from ./config/autokill.yaml.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("config")).expect("mkdir");
    std::fs::write(
        dir.path().join("config/autokill.yaml"),
        format!("admin:\n  listen: {}\n  token: x\n", server.admin),
    )
    .expect("write config");
    let env = [("AUTOKILL_USER", "alice"), ("AUTOKILL_APIKEY", "k3y")];
    let out = run_in(dir.path(), &env, &["service", "ps"]).await.ok();
    assert!(out.starts_with("NAME"), "{out}");
    let out = run_in(
        dir.path(),
        &[("AUTOKILL_TOKEN", "s3cret")],
        &["group", "ls"],
    )
    .await
    .ok();
    assert!(out.starts_with("NAME"), "{out}");
    // A broken config file is named, with what to do.
    std::fs::write(dir.path().join("config/autokill.yaml"), "admin: [\n").expect("write");
    let r = run_in(dir.path(), &[], &["service", "ps"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("config/autokill.yaml") && r.stderr.contains("--url"),
        "{r:?}"
    );
}

/// Unikraft's verbs on `/v1`: instances, templates and groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unikraft_commands() {
    let server = server("").await;
    let out = run(
        &server,
        &[
            "instance",
            "create",
            "hello",
            "--name",
            "one",
            "--start",
            "--wait",
            "--autokill",
            "num-requests=3,time=30s",
            "--restart",
            "on-failure",
        ],
    )
    .await
    .ok();
    let r = row(&out, "one");
    assert_eq!(r[2], "running", "{out}");
    assert!(
        out.contains("3 requests, 30s") && out.contains("on-failure"),
        "{out}"
    );
    let listed = run(&server, &["instance", "ls", "-o", "json"]).await.json();
    assert_eq!(listed[0]["name"], "one");
    let got = run(&server, &["instance", "get", "one"]).await.ok();
    assert_eq!(row(&got, "one")[2], "running");
    let set = run(
        &server,
        &[
            "instance",
            "set",
            "one",
            "--autodestroy",
            "always",
            "--restart",
            "never",
            "--delete-lock",
        ],
    )
    .await
    .ok();
    assert!(set.contains("ALWAYS") && set.contains("locked"), "{set}");
    let r = run(&server, &["instance", "rm", "one"]).await;
    assert_eq!(r.code, 4, "locked: {r:?}");
    assert!(r.stderr.contains("delete-locked"), "{r:?}");
    run(&server, &["instance", "set", "one", "--no-delete-lock"])
        .await
        .ok();
    // ALWAYS: the stop ends in its destruction; --wait waits for that.
    run(&server, &["instance", "stop", "one", "--wait"])
        .await
        .ok();
    let r = run(&server, &["instance", "get", "one"]).await;
    assert_eq!(r.code, 3, "destroyed when it stopped: {r:?}");

    run(&server, &["instance", "create", "hello", "--name", "two"])
        .await
        .ok();
    let started = run(&server, &["instance", "start", "two", "--wait"])
        .await
        .ok();
    assert_eq!(row(&started, "two")[2], "running", "{started}");
    run(&server, &["instance", "stop", "two", "--wait"])
        .await
        .ok();
    let t = run(
        &server,
        &["template", "create", "two", "--autokill", "time=1h"],
    )
    .await
    .ok();
    assert!(t.contains("3600s"), "{t}");
    assert_eq!(
        row(&run(&server, &["template", "ls"]).await.ok(), "two")[0],
        "two"
    );
    run(
        &server,
        &[
            "group",
            "create",
            "g",
            "--domain",
            "g",
            "--autokill",
            "time=10m",
        ],
    )
    .await
    .ok();
    let clone = run(
        &server,
        &[
            "instance",
            "create",
            "--template",
            "two",
            "--name",
            "clone",
            "--group",
            "g",
            "--start",
            "--wait",
        ],
    )
    .await
    .ok();
    assert_eq!(row(&clone, "clone")[2], "running", "{clone}");
    let groups = run(&server, &["group", "ls"]).await.ok();
    assert!(row(&groups, "g").contains(&"clone"), "{groups}");
    let r = run(&server, &["group", "rm", "g"]).await;
    assert_eq!(r.code, 4, "not empty: {r:?}");
    run(&server, &["instance", "rm", "clone", "--wait"])
        .await
        .ok();
    run(&server, &["group", "rm", "g"]).await.ok();
    run(&server, &["template", "rm", "two"]).await.ok();
    let empty = run(&server, &["instance", "ls"]).await.ok();
    assert_eq!(empty.lines().count(), 1, "only the header: {empty}");
}
