//! Crash safety with the real binary: `kill -9` at random moments while the API is written to and
//! the proxy forwards. After every restart, every change the API acknowledged is there, no
//! instance was ever forwarded more than its `num_requests` (counted at the upstream), and no
//! process of an earlier run is left. Also: timers across a restart, and a store of a newer schema.
//!
//! `AUTOKILL_CRASH_CYCLES` sets the number of crash cycles (default 20).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BIN, free_port, hello_runtime, pids_mentioning};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A server on a fixed directory, store and ports, so that it can be killed and started again.
struct Node {
    dir: PathBuf,
    config: PathBuf,
    proxy: SocketAddr,
    admin: SocketAddr,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, body: &str) -> Node {
        let node = Node {
            dir: dir.to_owned(),
            config: dir.join("autokill.yaml"),
            proxy: ([127, 0, 0, 1], free_port()).into(),
            admin: ([127, 0, 0, 1], free_port()).into(),
            child: None,
        };
        node.configure(body);
        node
    }

    /// Writes the configuration: the node's listeners and store, then `body`.
    fn configure(&self, body: &str) {
        self.configure_store("", body);
    }

    /// As [`Node::configure`], with more `store:` keys (`store` is indented YAML lines).
    fn configure_store(&self, store: &str, body: &str) {
        let text = format!(
            "proxy:\n  listen: {proxy}\n  workers: 2\nadmin:\n  listen: {admin}\nstore:\n  path: {path}\n{store}defaults:\n  drain_timeout: 1s\n{body}",
            proxy = self.proxy,
            admin = self.admin,
            path = self.dir.join("autokill.redb").display()
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// The instance (or template, with `templates/` in `path`) at `/v1/<path>`, if it exists.
    async fn get(&self, path: &str, key: &str) -> Option<Value> {
        match self.api("GET", &format!("/v1/{path}"), None).await {
            Ok((200, v)) => Some(v["data"][key][0].clone()),
            Ok((404, _)) => None,
            other => panic!("GET /v1/{path}: {other:?}"),
        }
    }

    /// Starts the server and returns how long it took to answer `/readyz` with 200.
    async fn start(&mut self) -> Duration {
        let started = Instant::now();
        // AUTOKILL_TEST_BIN runs the suite against another build, as in `common`.
        let bin = std::env::var("AUTOKILL_TEST_BIN").unwrap_or_else(|_| BIN.to_owned());
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "autokill=warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start autokill");
        self.child = Some(child);
        loop {
            if let Ok((200, _)) = send(self.admin, "GET", "/readyz", None).await {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "autokill did not become ready"
            );
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("autokill exited while starting: {status}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Pids of this node's instance processes.
    fn instance_pids(&self) -> Vec<u32> {
        let server = self.server_pid();
        pids_mentioning(&self.dir)
            .into_iter()
            .filter(|p| Some(*p) != server)
            .collect()
    }

    async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        send(self.admin, method, path, body).await
    }

    /// Waits (at most 10 s) until every instance is in `state`.
    async fn wait_until_all(&self, state: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.instances().await.iter().any(|i| i["state"] != state) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of an unlabelled metric on `/metrics`.
    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = send_raw(self.admin, "GET", "/metrics", None).await.ok()?;
        std::str::from_utf8(&text)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    async fn instances(&self) -> Vec<Value> {
        match self.api("GET", "/v1/instances", None).await {
            Ok((200, v)) => v["data"]["instances"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            other => panic!("GET /v1/instances: {other:?}"),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        for pid in pids_mentioning(&self.dir) {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let (status, bytes) = send_raw(addr, method, path, body).await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn send_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Bytes), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

/// Lines of each per-instance upstream log (`<dir>/<uuid>.log`): what reached each instance.
fn forwarded(dir: &Path) -> HashMap<String, usize> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".log")?.to_owned();
            let lines = std::fs::read_to_string(e.path()).ok()?.lines().count();
            Some((name, lines))
        })
        .collect()
}

fn runtime(dir: &Path) -> String {
    // One log per instance UUID, so that a re-created name never adds to an older budget.
    hello_runtime(dir, "").replace("{name}.log", "{id}.log")
}

/// A small deterministic generator, so a failing cycle can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// An instance with a request budget, as the test made it.
struct Budget {
    name: String,
    uuid: String,
    limit: u64,
    /// The cycle it was made in: it lived through every crash from then on.
    born: usize,
}

/// The most requests one crash can take from a budget of `limit`: the meter restarts at the
/// durable ceiling, which runs ahead of the count by at most one and a half blocks, and a block
/// is a sixteenth of what is left (the first is the largest).
fn lost_per_crash(limit: u64) -> u64 {
    let block = (limit / 16).max(1);
    block + block.div_ceil(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_change_and_never_exceeds_num_requests() {
    let cycles: usize = std::env::var("AUTOKILL_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(dir.path(), &runtime(dir.path()));

    // What the API acknowledged: instance name -> delete_lock.
    let mut acked: HashMap<String, bool> = HashMap::new();
    let mut ready_times = Vec::new();
    let mut budgets: Vec<Budget> = Vec::new();

    for cycle in 0..cycles {
        ready_times.push(
            restart_and_check(&mut node, &acked, &format!("cycle {cycle} (seed {seed})")).await,
        );
        check_budgets(&node, &budgets, &format!("cycle {cycle} (seed {seed})")).await;

        // A budgeted instance: small, large, or set by a PATCH on an unlimited one; traffic
        // against every budget, API writes, and a kill -9 at a random moment.
        let name = format!("budget-{cycle}");
        let (limit, patched) = match cycle % 3 {
            0 => (40, false),
            1 => (400, false),
            _ => (400, true),
        };
        let autokill = if patched {
            json!({})
        } else {
            json!({"num_requests": limit})
        };
        let created = node
            .api(
                "POST",
                "/v1/instances",
                Some(json!({"name": name, "image": "hello", "autostart": true, "autokill": autokill})),
            )
            .await;
        let mut uuid = match created {
            Ok((200 | 201, v)) => v["data"]["instances"][0]["uuid"]
                .as_str()
                .map(str::to_owned),
            _ => None,
        };
        if patched && uuid.is_some() {
            let patch = json!({"prop": "autokill", "op": "set", "value": {"num_requests": limit}});
            let r = node
                .api("PATCH", &format!("/v1/instances/{name}"), Some(patch))
                .await;
            // Unacknowledged, the budget may or may not apply: not one the test can judge.
            if !matches!(r, Ok((200, _))) {
                uuid = None;
            }
        }
        if let Some(uuid) = uuid {
            budgets.push(Budget {
                name,
                uuid,
                limit,
                born: cycle,
            });
        }
        let proxy = node.proxy;
        let hosts: Vec<String> = budgets
            .iter()
            .map(|b| format!("{}.localhost", b.name))
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let traffic: Vec<_> = (0..6)
            .map(|k| {
                let (hosts, stop) = (hosts.clone(), std::sync::Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut i = k;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && !hosts.is_empty() {
                        let host = &hosts[i % hosts.len()];
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            common::try_get(proxy, host, "/"),
                        )
                        .await;
                        i += 1;
                    }
                })
            })
            .collect();

        let kill_after = Duration::from_millis(50 + rng.below(400));
        let deadline = Instant::now() + kill_after;
        let mut n = 0;
        while Instant::now() < deadline {
            let name = format!("keep-{cycle}-{n}");
            n += 1;
            if let Ok((200 | 201, _)) = node
                .api(
                    "POST",
                    "/v1/instances",
                    Some(json!({"name": name, "image": "hello", "autostart": true})),
                )
                .await
            {
                acked.insert(name.clone(), false);
            }
            // Toggle the lock of one acknowledged instance.
            if let Some(target) = acked
                .keys()
                .nth(rng.below(acked.len() as u64) as usize)
                .cloned()
            {
                let value = !acked[&target];
                let patch = json!({"prop": "delete_lock", "op": "set", "value": value});
                if let Ok((200, _)) = node
                    .api("PATCH", &format!("/v1/instances/{target}"), Some(patch))
                    .await
                {
                    acked.insert(target, value);
                }
            }
        }
        node.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in traffic {
            let _ = t.await;
        }
        let logs = forwarded(dir.path());
        for b in &budgets {
            let lines = logs.get(&b.uuid).copied().unwrap_or(0) as u64;
            assert!(
                lines <= b.limit,
                "cycle {cycle} (seed {seed}): {} was forwarded {lines} > {} requests",
                b.name,
                b.limit
            );
        }
    }

    // A last start: the state is whole; every budget is spent to its end; then a clean stop.
    let when = format!("last start (seed {seed})");
    ready_times.push(restart_and_check(&mut node, &acked, &when).await);
    check_budgets(&node, &budgets, &when).await;
    // Started again (a budget spent to its ceiling drains at once).
    let deadline = Instant::now() + Duration::from_secs(10);
    while node
        .instances()
        .await
        .iter()
        .any(|i| i["state"] == "starting")
    {
        assert!(Instant::now() < deadline, "{when}: instances did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for b in &budgets {
        let host = format!("{}.localhost", b.name);
        for _ in 0..b.limit + 5 {
            match common::try_get(node.proxy, &host, "/").await {
                Ok(s) if s.is_success() => {}
                _ => break,
            }
        }
    }
    node.terminate();
    let logs = forwarded(dir.path());
    let mut total = 0;
    for b in &budgets {
        let lines = logs.get(&b.uuid).copied().unwrap_or(0) as u64;
        total += lines;
        let crashes = (cycles - b.born) as u64;
        let floor = b.limit.saturating_sub(crashes * lost_per_crash(b.limit));
        assert!(
            (floor..=b.limit).contains(&lines),
            "{} (seed {seed}): forwarded {lines} of a budget of {} over {crashes} crashes; at least {floor} expected",
            b.name,
            b.limit
        );
    }
    assert!(
        budgets.len() >= cycles / 2 && total > 0,
        "the test made {} budgets and forwarded {total}: it would prove nothing",
        budgets.len()
    );
    ready_times.sort();
    eprintln!(
        "restart to /readyz: median {:?}, max {:?}; {total} requests forwarded to budgets over {cycles} crashes",
        ready_times[ready_times.len() / 2],
        ready_times.last()
    );
}

/// After a restart, every budgeted instance still there has its budget (not only its name).
async fn check_budgets(node: &Node, budgets: &[Budget], when: &str) {
    let listed = node.instances().await;
    for b in budgets {
        if let Some(i) = listed.iter().find(|i| i["uuid"] == b.uuid.as_str()) {
            assert_eq!(
                i["autokill"]["num_requests"].as_u64(),
                Some(b.limit),
                "{when}: the budget of {}: {i}",
                b.name
            );
        }
    }
}

/// Starts the node again and checks what a crash must not lose: no process of the earlier run is
/// left, and every acknowledged instance is there with its acknowledged delete lock. Returns the
/// time to ready.
async fn restart_and_check(node: &mut Node, acked: &HashMap<String, bool>, when: &str) -> Duration {
    let earlier = node.instance_pids();
    let ready = node.start().await;
    leftovers_go_first(node, &earlier, when).await;
    let listed = node.instances().await;
    for (name, lock) in acked {
        let found = listed
            .iter()
            .find(|i| i["name"] == *name)
            .unwrap_or_else(|| panic!("{when}: acknowledged instance {name} is gone"));
        assert_eq!(
            found["delete_lock"].as_bool().unwrap_or(false),
            *lock,
            "{when}: delete_lock of {name}"
        );
    }
    ready
}

/// Waits (at most 10 s) until every process of `earlier` is gone, and checks meanwhile that no
/// instance process of the new run appears while one of them lives: the server may be ready
/// while the leftovers of a crashed run are removed, but no instance starts before they are.
async fn leftovers_go_first(node: &Node, earlier: &[u32], when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let living: Vec<u32> = earlier
            .iter()
            .copied()
            .filter(|p| common_alive(*p))
            .collect();
        if living.is_empty() {
            return;
        }
        let new: Vec<u32> = node
            .instance_pids()
            .into_iter()
            .filter(|p| !earlier.contains(p))
            .collect();
        assert!(
            new.is_empty() || earlier.iter().all(|p| !common_alive(*p)),
            "{when}: instance processes {new:?} started while {living:?} of an earlier run lived"
        );
        assert!(
            Instant::now() < deadline,
            "{when}: processes {living:?} of an earlier run are still alive"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn common_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_time_deadline_that_passed_while_down_fires_at_start_unless_locked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(dir.path(), &runtime(dir.path()));
    node.start().await;
    for (name, lock) in [("doomed", false), ("locked", true)] {
        let r = node
            .api(
                "POST",
                "/v1/instances",
                Some(json!({"name": name, "image": "hello", "autostart": true, "autokill": {"time_ms": 2000}})),
            )
            .await;
        assert!(matches!(r, Ok((200 | 201, _))), "{r:?}");
        if lock {
            let r = node
                .api(
                    "PATCH",
                    &format!("/v1/instances/{name}"),
                    Some(json!({"prop": "delete_lock", "op": "set", "value": true})),
                )
                .await;
            assert!(matches!(r, Ok((200, _))), "{r:?}");
        }
    }
    node.wait_until_all("running", "instances did not start")
        .await;
    for name in ["doomed", "locked"] {
        let r = node
            .api("PUT", &format!("/v1/instances/{name}/stop"), None)
            .await;
        assert!(matches!(r, Ok((200 | 202, _))), "{r:?}");
    }
    node.wait_until_all("stopped", "instances did not stop")
        .await;
    node.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.start().await;
    // Due while the server was down: deleted right after start. The locked one stays.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let names: Vec<String> = node
            .instances()
            .await
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect();
        if !names.contains(&"doomed".to_owned()) {
            assert!(
                names.contains(&"locked".to_owned()),
                "the delete-locked instance must stay: {names:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overdue instance was not deleted at start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.terminate();
}

#[tokio::test]
async fn a_store_of_a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::new(dir.path(), &runtime(dir.path()));
    {
        let (store, _) =
            autokill::store::Store::open(&dir.path().join("autokill.redb")).expect("store");
        store.set_schema_version(99).expect("set version");
    }
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&node.config)
        .output()
        .expect("run autokill");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema version 99")
            && stderr.contains(&format!("version {}", autokill::store::SCHEMA_VERSION)),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_running_instances_run_again_and_leftovers_are_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(
        dir.path(),
        &format!("{}shutdown: leave_instances\n", runtime(dir.path())),
    );
    node.start().await;
    let r = node
        .api(
            "POST",
            "/v1/instances",
            Some(json!({"name": "kept", "image": "hello", "autostart": true})),
        )
        .await;
    assert!(matches!(r, Ok((200 | 201, _))), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    node.wait_until_all("running", "instance did not start")
        .await;
    node.terminate();
    // leave_instances: the process outlives the server…
    let left = node.instance_pids();
    assert_eq!(left.len(), 1, "the instance was left running: {left:?}");
    // …and the next start removes it and starts the instance anew, not before it is gone.
    node.start().await;
    leftovers_go_first(&node, &left, "after a clean stop").await;
    while node
        .instances()
        .await
        .iter()
        .any(|i| i["name"] == "kept" && i["state"] != "running")
    {
        assert!(Instant::now() < deadline, "instance did not run again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pids = node.instance_pids();
    assert_eq!(pids.len(), 1);
    assert_ne!(pids[0], left[0]);
    node.terminate();
}

/// After `kill -9`, the instances that were running start again at most
/// `runtime.max_concurrent_starts` at a time: with two places, twelve instances all run again
/// and the earlier run's processes are gone; a second `kill -9` in the middle of that restart
/// (some started, the rest waiting their turn) loses none either, and leaves no process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_running_instances_start_again_in_turn_and_none_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body =
        runtime(dir.path()).replacen("runtime:\n", "runtime:\n  max_concurrent_starts: 2\n", 1);
    let mut node = Node::new(dir.path(), &body);
    node.start().await;
    let names: Vec<String> = (0..12).map(|i| format!("turn{i}")).collect();
    let items: Vec<Value> = names
        .iter()
        .map(|name| json!({"name": name, "image": "hello", "autostart": true}))
        .collect();
    let r = node
        .api("POST", "/v1/instances", Some(Value::Array(items)))
        .await;
    assert!(matches!(r, Ok((200 | 201, _))), "{r:?}");
    node.wait_until_all("running", "instances did not start")
        .await;
    let first = node.instance_pids();
    assert_eq!(first.len(), 12, "{first:?}");

    node.kill9();
    node.start().await;
    // Early in the restart: some may run, the others wait their turn (`starting`).
    let early = node.instances().await;
    assert_eq!(early.len(), 12);
    for i in &early {
        assert!(
            i["state"] == "running" || i["state"] == "starting",
            "after kill -9: {i}"
        );
    }
    node.kill9();
    node.start().await;
    node.wait_until_all("running", "instances did not run again after two kill -9")
        .await;
    let pids = node.instance_pids();
    assert_eq!(
        pids.len(),
        12,
        "one process per instance, none left over: {pids:?}"
    );
    for pid in first {
        assert!(
            !common_alive(pid),
            "a process of the first run is left: {pid}"
        );
    }
    node.terminate();
}

/// Issue 9.3: a clean stop with `shutdown: stop_instances` (the default) stops the controller
/// before it stops the instances, so the exits it causes are never judged: an `ON_SUCCESS`
/// instance is not destroyed, none comes back `stopped`, and the next start runs them all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_judges_no_exit_and_the_next_start_runs_every_instance_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(dir.path(), &runtime(dir.path()));
    node.start().await;
    let made = [
        ("succ", "never", "ON_SUCCESS"),
        ("fail", "never", "ON_FAILURE"),
        ("always", "never", "ALWAYS"),
        ("off", "never", "OFF"),
        ("restarts", "on-failure", "ON_SUCCESS"),
    ];
    for (name, restart, destroy) in made {
        let r = node
            .api(
                "POST",
                "/v1/instances",
                Some(json!({"name": name, "image": "hello", "autostart": true,
                            "restart_policy": restart, "autodestroy": destroy})),
            )
            .await;
        assert!(matches!(r, Ok((200 | 201, _))), "{r:?}");
    }
    for round in 0..3 {
        node.wait_until_all("running", &format!("round {round}: instances did not run"))
            .await;
        node.terminate();
        assert!(
            node.instance_pids().is_empty(),
            "round {round}: stop_instances left processes"
        );
        node.start().await;
        let listed = node.instances().await;
        let names: Vec<&str> = listed.iter().filter_map(|i| i["name"].as_str()).collect();
        for (name, ..) in made {
            assert!(
                names.contains(&name),
                "round {round}: {name} was lost at shutdown: {names:?}"
            );
        }
        for i in &listed {
            assert_ne!(i["state"], "stopped", "round {round}: {i}");
        }
    }
    node.wait_until_all("running", "instances did not run again")
        .await;
    node.terminate();
}

/// Issue 9.2: a budget set by PATCH on an unlimited instance is reserved durably: requests
/// before and after a `kill -9` never add up to more than the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_set_by_patch_holds_across_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(dir.path(), &runtime(dir.path()));
    node.start().await;
    let r = node
        .api(
            "POST",
            "/v1/instances",
            Some(json!({"name": "pb", "image": "hello", "autostart": true})),
        )
        .await;
    let uuid = match r {
        Ok((200 | 201, v)) => v["data"]["instances"][0]["uuid"]
            .as_str()
            .map(str::to_owned)
            .expect("uuid"),
        other => panic!("create: {other:?}"),
    };
    node.wait_until_all("running", "pb did not start").await;
    let patch = json!({"prop": "autokill", "op": "set", "value": {"num_requests": 5}});
    let r = node.api("PATCH", "/v1/instances/pb", Some(patch)).await;
    assert!(matches!(r, Ok((200, _))), "{r:?}");
    for _ in 0..4 {
        let status = common::try_get(node.proxy, "pb.localhost", "/").await;
        assert!(matches!(status, Ok(s) if s.is_success()), "{status:?}");
    }
    node.kill9();
    node.start().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node
        .instances()
        .await
        .iter()
        .any(|i| i["name"] == "pb" && i["state"] == "starting")
    {
        assert!(Instant::now() < deadline, "pb did not start again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        let _ = common::try_get(node.proxy, "pb.localhost", "/").await;
    }
    node.terminate();
    let lines = forwarded(dir.path()).get(&uuid).copied().unwrap_or(0);
    assert!(
        (4..=5).contains(&lines),
        "a budget of 5 forwarded {lines} requests across the crash"
    );
}

/// SPEC: resources the file declares are reconciled at start — created, changed, deleted by
/// name — and those made through the API are left alone; a declared instance that was killed is
/// created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_is_reconciled_at_start_and_api_resources_are_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let declared = |w1_budget: u64, extra: &str| {
        format!(
            "{}service_groups:\n  - name: web\n    domains: [web]\n    instances:\n      - {{name: w1, image: hello, autokill: {{num_requests: {w1_budget}}}}}\n      - {{name: w2, image: hello}}\ninstances:\n{extra}",
            runtime(dir.path())
        )
    };
    let mut node = Node::new(
        dir.path(),
        &declared(10, "  - {name: solo, image: hello}\n"),
    );
    node.start().await;
    let r = node
        .api(
            "POST",
            "/v1/instances",
            Some(json!({"name": "mine", "image": "hello", "autostart": true, "service_group": {"name": "web"}})),
        )
        .await;
    assert!(matches!(r, Ok((200 | 201, _))), "{r:?}");
    node.wait_until_all("running", "instances did not start")
        .await;
    let uuid = |v: Option<Value>| v.and_then(|v| v["uuid"].as_str().map(str::to_owned));
    let w1 = uuid(node.get("instances/w1", "instances").await).expect("w1");
    let w2 = uuid(node.get("instances/w2", "instances").await).expect("w2");
    let mine = uuid(node.get("instances/mine", "instances").await).expect("mine");
    // A declared instance killed by hand comes back at the next start.
    let r = node.api("DELETE", "/v1/instances/w2", None).await;
    assert!(matches!(r, Ok((200, _))), "{r:?}");
    node.terminate();

    // w1's budget changed, solo no longer declared, fresh newly declared.
    node.configure(&declared(20, "  - {name: fresh, image: hello}\n"));
    node.start().await;
    let w1_now = node.get("instances/w1", "instances").await.expect("w1");
    assert_eq!(w1_now["uuid"], w1.as_str(), "w1 is changed in place");
    assert_eq!(w1_now["autokill"]["num_requests"], 20, "{w1_now}");
    let w2_now = uuid(node.get("instances/w2", "instances").await).expect("w2 re-created");
    assert_ne!(w2_now, w2);
    assert!(node.get("instances/fresh", "instances").await.is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.get("instances/solo", "instances").await.is_some() {
        assert!(Instant::now() < deadline, "solo was not removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mine_now = node.get("instances/mine", "instances").await.expect("mine");
    assert_eq!(mine_now["uuid"], mine.as_str(), "API-made: untouched");
    node.wait_until_all("running", "instances did not run")
        .await;
    node.terminate();
}

/// Changes made through the API survive `kill -9` with every field, and the timers derived
/// from them come back: a template's unused time, a group's empty time, a restart back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_and_their_timers_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = hello_runtime(dir.path(), r#", "--allow-exit""#);
    let mut node = Node::new(dir.path(), &runtime);
    node.start().await;
    let ok = |r: Result<(u16, Value), String>| {
        assert!(matches!(r, Ok((200 | 201, _))), "{r:?}");
    };
    let patch = |prop: &str, value: Value| json!({"prop": prop, "op": "set", "value": value});
    // An instance whose policies were all PATCHed.
    ok(node
        .api(
            "POST",
            "/v1/instances",
            Some(json!({"name": "p", "image": "hello"})),
        )
        .await);
    for (prop, value) in [
        ("autokill", json!({"num_requests": 7, "time_ms": 600000})),
        ("restart_policy", json!("on-failure")),
        ("autodestroy", json!("ON_SUCCESS")),
        ("delete_lock", json!(true)),
    ] {
        ok(node
            .api("PATCH", "/v1/instances/p", Some(patch(prop, value)))
            .await);
    }
    // A template with a short unused time, and a group with a short empty time and a domain
    // added by PATCH.
    ok(node
        .api(
            "POST",
            "/v1/instances",
            Some(json!({"name": "src", "image": "hello"})),
        )
        .await);
    ok(node
        .api(
            "POST",
            "/v1/instances/templates",
            Some(json!({"name": "src", "autokill": {"time_ms": 1500}})),
        )
        .await);
    ok(node
        .api(
            "POST",
            "/v1/services",
            Some(json!({"name": "g", "domains": [{"name": "g"}], "autokill": {"time_ms": 1500}})),
        )
        .await);
    ok(node
        .api(
            "PATCH",
            "/v1/services/g",
            Some(json!({"prop": "domains", "op": "add", "value": [{"name": "g2"}]})),
        )
        .await);
    // An instance in its restart back-off (its second failure waits 5 s).
    ok(node
        .api(
            "POST",
            "/v1/instances",
            Some(json!({"name": "flaky", "image": "hello", "autostart": true, "restart_policy": "on-failure"})),
        )
        .await);
    let mut failed_at = Instant::now();
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while node
            .get("instances/flaky", "instances")
            .await
            .expect("flaky")["state"]
            != "running"
        {
            assert!(Instant::now() < deadline, "flaky did not run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Published means committed: the first exit restarted it at once (then it runs), the
        // second one starts a 5 s back-off (it stays stopped). The exit is asked again while it
        // still runs: a request that reached no process (a 502 while the proxy's worker had
        // yet to take up the new incarnation) would otherwise leave it running.
        let mut asked = Instant::now() - Duration::from_secs(1);
        while node
            .get("instances/flaky", "instances")
            .await
            .expect("flaky")["state"]
            == "running"
        {
            assert!(Instant::now() < deadline, "flaky did not exit");
            if asked.elapsed() >= Duration::from_millis(500) {
                failed_at = Instant::now();
                asked = failed_at;
                let _ = common::try_get(node.proxy, "flaky.localhost", "/__exit/3").await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    node.kill9();
    node.start().await;

    let p = node.get("instances/p", "instances").await.expect("p");
    assert_eq!(p["autokill"]["num_requests"], 7, "{p}");
    assert_eq!(p["autokill"]["time_ms"], 600000, "{p}");
    assert_eq!(p["restart_policy"], "on-failure", "{p}");
    assert_eq!(p["autodestroy"], "ON_SUCCESS", "{p}");
    assert_eq!(p["delete_lock"], true, "{p}");
    let g = node.get("services/g", "service_groups").await.expect("g");
    let domains: Vec<&str> = g["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(
        domains.contains(&"g2.localhost") || domains.contains(&"g2"),
        "{g}"
    );
    // Still in its back-off right after the start: not restarted by the recovery itself.
    let flaky = node
        .get("instances/flaky", "instances")
        .await
        .expect("flaky");
    if failed_at.elapsed() < Duration::from_secs(4) {
        assert_eq!(flaky["state"], "stopped", "{flaky}");
    }
    // The timers fire: the template and the group go, flaky runs again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let template = node.get("instances/templates/src", "instances").await;
        let group = node.get("services/g", "service_groups").await;
        let flaky = node
            .get("instances/flaky", "instances")
            .await
            .expect("flaky");
        if template.is_none() && group.is_none() && flaky["state"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timers after the restart: template {template:?}, group {group:?}, flaky {flaky}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failed_at.elapsed() >= Duration::from_secs(5),
        "flaky restarted before its back-off ended"
    );
    node.terminate();
}

/// `/readyz` answers 503 until the stored state is recovered (and `/livez` 200 meanwhile), so a
/// load balancer never sends traffic to a server that does not yet know its instances. The store
/// is held by another process when the server starts (as by an older server still letting go of
/// it): the server waits for it, answering `/livez` all along, and is ready only once what it
/// read is recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_recovery_while_livez_answers() {
    use autokill::store::{Change, Store};
    const STORED: usize = 10_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(dir.path(), &runtime(dir.path()));
    let (store, _) = Store::open(&dir.path().join("autokill.redb")).expect("store");
    let changes: Vec<Change> = (0..STORED)
        .map(|n| Change::PutInstance(stored(&format!("stored-{n}"), "template", None)))
        .collect();
    store.commit(&changes).expect("commit");
    let mut held = Some(store);
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&node.config)
        .env("RUST_LOG", "autokill=warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start autokill");
    node.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let ready = send(node.admin, "GET", "/readyz", None).await.map(|r| r.0);
        if let Ok(status) = ready {
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if status == 503 {
                let live = send(node.admin, "GET", "/livez", None).await.map(|r| r.0);
                assert_eq!(live, Ok(200), "/livez while not ready");
                // Seen waiting: the store is let go of (the server waits up to 3 s for it).
                held = None;
            }
            if status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never ready: {seen:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(held.is_none(), "ready while the store was held");
    assert_eq!(seen, [503, 200], "/readyz over the start");
    // Ready means recovered: every stored template is there.
    let listed = node
        .api("GET", "/v1/instances/templates", None)
        .await
        .map(|(_, v)| v["data"]["instances"].as_array().map_or(0, Vec::len));
    assert_eq!(listed, Ok(STORED));
    node.terminate();
}

/// A stored instance named `name` in `state`; with `time`, `(time_ms, stopped_at)`: stopped by
/// its user at `stopped_at` (ms since the epoch) with a stopped-time autokill of `time_ms`.
fn stored(name: &str, state: &str, time: Option<(u64, u64)>) -> autokill::store::InstanceRecord {
    autokill::store::InstanceRecord {
        time_ms: time.map(|(ms, _)| ms),
        stop_reason: time.map(|_| "user_stop".into()),
        stopped_at: time.map(|(_, at)| at),
        ..common::stored_instance(name, state)
    }
}

/// 20,000 stopped instances, each with its stopped-time timer: among them one stopped through
/// the API is deleted on time, and after a `kill -9` the restart arms every stored timer again
/// (all 20,000 are there until they are due, then all go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_stopped_timers_fire_on_time_and_are_rearmed_after_kill_9() {
    use autokill::store::{Change, Store};
    const MANY: usize = 20_000;
    /// When the stored ones are due, counted from when they were written: long enough for two
    /// starts of a debug build on a loaded machine (5 s each seen on two busy cores).
    const DUE: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(dir.path(), &runtime(dir.path()));
    let written = Instant::now();
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        let (store, _) = Store::open(&dir.path().join("autokill.redb")).expect("store");
        let changes: Vec<Change> = (0..MANY)
            .map(|n| {
                let time = (DUE.as_millis() as u64, now);
                Change::PutInstance(stored(&format!("idle-{n}"), "stopped", Some(time)))
            })
            .collect();
        store.commit(&changes).expect("commit");
    }
    node.start().await;
    let listed = async |node: &Node| {
        let (status, v) = node.api("GET", "/v1/instances", None).await.expect("list");
        assert_eq!(status, 200, "{v}");
        v["data"]["instances"].as_array().map_or(0, Vec::len)
    };

    // One more, stopped through the API with a stopped time of one second.
    let soon = json!({"name": "soon", "image": "hello", "autostart": true,
                      "autokill": {"time_ms": 1000}});
    let made = node.api("POST", "/v1/instances", Some(soon)).await;
    assert!(matches!(made, Ok((200 | 201, _))), "{made:?}");
    let stop = node.api("PUT", "/v1/instances/soon/stop", None).await;
    assert!(matches!(stop, Ok((200, _))), "{stop:?}");
    let stopped = Instant::now();
    while node.get("instances/soon", "instances").await.is_some() {
        assert!(
            stopped.elapsed() < Duration::from_millis(2500),
            "soon was not deleted one second after its stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(900),
        "soon was deleted {:?} after its stop, before its stopped time",
        stopped.elapsed()
    );

    node.kill9();
    node.start().await;
    assert!(
        written.elapsed() + Duration::from_secs(1) < DUE,
        "the restart took until the stored timers were due; nothing left to check"
    );
    assert_eq!(listed(&node).await, MANY, "every stored instance is back");
    // Each of them goes when its stored timer is due, as armed again by the restart (a debug
    // build on a busy machine deletes some hundreds a second; a release build thousands).
    let deadline = written + DUE + Duration::from_secs(90);
    loop {
        let (status, v) = node
            .api("GET", "/v1/instances?count=1", None)
            .await
            .expect("list");
        assert_eq!(status, 200, "{v}");
        if v["data"]["instances"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored timers not all fired: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        written.elapsed() >= DUE,
        "deleted before their stopped time"
    );
    node.terminate();
}

/// With `store.quick_repair` (the default), every commit saves the store's free-space map, and a
/// start after `kill -9` loads it instead of checking and repairing the whole file; with it off,
/// that start repairs the whole file. Either way nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_store_is_repaired_whole_only_without_quick_repair() {
    for (store, repaired) in [("", 0.0), ("  quick_repair: false\n", 1.0)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut node = Node::new(dir.path(), "");
        node.configure_store(store, &runtime(dir.path()));
        node.start().await;
        let before = node.metric("autokill_store_repaired").await;
        assert_eq!(before, Some(0.0), "a new store needs no repair ({store:?})");
        let made = json!({"name": "kept", "image": "hello"});
        let made = node.api("POST", "/v1/instances", Some(made)).await;
        assert!(matches!(made, Ok((200 | 201, _))), "{made:?}");
        node.kill9();
        node.start().await;
        let after = node.metric("autokill_store_repaired").await;
        assert_eq!(after, Some(repaired), "after kill -9 ({store:?})");
        assert!(
            node.metric("autokill_store_open_seconds").await.is_some(),
            "the open time is exported"
        );
        assert!(
            node.get("instances/kept", "instances").await.is_some(),
            "the acknowledged create survives ({store:?})"
        );
        node.terminate();
    }
}

/// The `nice` value of a process or thread (`/proc/<path>/stat`, field 19).
fn nice_of(path: &str) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{path}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// The controller's thread runs `runtime.controller_nice` (default 10) steps below the server's
/// CPU priority, so that a burst of control work leaves the cores to traffic; the proxy's
/// workers and the instance processes (spawned elsewhere) keep the server's own priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_nicer_than_the_proxy_and_the_instances() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(dir.path(), &runtime(dir.path()));
    node.start().await;
    for name in ["one", "two"] {
        let made = json!({"name": name, "image": "hello", "autostart": true});
        let made = node.api("POST", "/v1/instances", Some(made)).await;
        assert!(matches!(made, Ok((200 | 201, _))), "{made:?}");
    }
    node.wait_until_all("running", "both run").await;
    let ours = nice_of("self").expect("our nice");
    let server = node.server_pid().expect("server");
    let threads: Vec<(String, i64)> = std::fs::read_dir(format!("/proc/{server}/task"))
        .expect("threads")
        .filter_map(|t| {
            let tid = t.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{server}/task/{tid}/comm")).ok()?;
            Some((
                comm.trim().to_owned(),
                nice_of(&format!("{server}/task/{tid}"))?,
            ))
        })
        .collect();
    let of = |prefix: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(comm, _)| comm.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    // The controller's thread and its blocking threads (the store's commits).
    let controller = of("autokill-ctl");
    assert!(
        !controller.is_empty() && controller.iter().all(|n| *n == (ours + 10).min(19)),
        "{threads:?}"
    );
    let proxy = of("autokill-proxy");
    assert!(
        !proxy.is_empty() && proxy.iter().all(|n| *n == ours),
        "{threads:?}"
    );
    let instances = node.instance_pids();
    assert_eq!(instances.len(), 2, "both instance processes");
    for pid in instances {
        assert_eq!(
            nice_of(&pid.to_string()),
            Some(ours),
            "instance process {pid}"
        );
    }
    node.terminate();
}
