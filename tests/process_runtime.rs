//! The process runtime with real child processes: `autokill hello` as the instance, `sh` for the
//! misbehaving ones.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use autokill::config::{ImageConfig, RuntimeConfig, RuntimeKind};
use autokill::runtime::process::ProcessRuntime;
use autokill::runtime::{InstanceSpec, Runtime, RuntimeError, RuntimeEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(5);
const GRACE: Duration = Duration::from_millis(300);

fn image(command: &[&str]) -> ImageConfig {
    ImageConfig {
        image: None,
        command: command.iter().map(|part| (*part).to_owned()).collect(),
        env: BTreeMap::new(),
        port: None,
    }
}

/// `{autokill} hello` as an image, with `/__exit/<code>` enabled.
fn hello_image() -> ImageConfig {
    image(&[
        "{autokill}",
        "hello",
        "--listen",
        "127.0.0.1:{port}",
        "--name",
        "{name}",
        "--allow-exit",
    ])
}

/// sh that ignores SIGTERM and keeps running after its hello child (which listens, so that start
/// succeeds) has exited on the group's SIGTERM: it goes only with the SIGKILL after the grace.
fn stubborn_image() -> ImageConfig {
    image(&[
        "sh",
        "-c",
        "trap '' TERM; \"$0\" hello --listen 127.0.0.1:$1 & while :; do sleep 1; done",
        "{autokill}",
        "{port}",
    ])
}

struct Harness {
    runtime: ProcessRuntime,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
    /// Every instance created, so that a failing test leaves no process behind.
    created: Mutex<Vec<Uuid>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let created = self
            .created
            .lock()
            .map(|ids| ids.clone())
            .unwrap_or_default();
        for id in created {
            if let Some(pid) = self.runtime.pid(id) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            }
        }
    }
}

impl Harness {
    fn new(images: Vec<(&str, ImageConfig)>, start_timeout: Duration) -> Harness {
        Harness::stopping_into(images, start_timeout, None)
    }

    /// Like [`Harness::new`], with `runtime.stopping_cgroup`.
    fn stopping_into(
        images: Vec<(&str, ImageConfig)>,
        start_timeout: Duration,
        stopping_cgroup: Option<PathBuf>,
    ) -> Harness {
        let config = RuntimeConfig {
            kind: RuntimeKind::Process,
            stop_grace: GRACE,
            start_timeout,
            default_port: None,
            max_concurrent_kills: 64,
            max_concurrent_starts: 16,
            controller_nice: 10,
            stopping_cgroup,
            images: images
                .into_iter()
                .map(|(name, image)| (name.to_owned(), image))
                .collect(),
        };
        let (sender, events) = mpsc::unbounded_channel();
        let runtime = ProcessRuntime::new(
            &config,
            PathBuf::from(env!("CARGO_BIN_EXE_autokill")),
            sender,
        );
        Harness {
            runtime,
            events,
            created: Mutex::new(Vec::new()),
        }
    }

    async fn create(&self, name: &str, image: &str) -> Uuid {
        let id = Uuid::new_v4();
        let spec = InstanceSpec {
            id,
            name: name.into(),
            image: image.to_owned(),
            memory_mb: None,
        };
        self.runtime.create(&spec).await.expect("create");
        if let Ok(mut created) = self.created.lock() {
            created.push(id);
        }
        id
    }

    async fn create_again(&self, id: Uuid, name: &str, image: &str) {
        let spec = InstanceSpec {
            id,
            name: name.into(),
            image: image.to_owned(),
            memory_mb: None,
        };
        self.runtime.create(&spec).await.expect("create again");
    }

    async fn start(&self, id: Uuid) -> Result<SocketAddr, RuntimeError> {
        timeout(PATIENCE, self.runtime.start(id))
            .await
            .expect("start resolves within 5 s")
    }

    async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        timeout(PATIENCE, self.runtime.stop(id))
            .await
            .expect("stop resolves within 5 s")
    }

    async fn delete(&self, id: Uuid) -> Result<(), RuntimeError> {
        timeout(PATIENCE, self.runtime.delete(id))
            .await
            .expect("delete resolves within 5 s")
    }

    async fn next_exit(&mut self) -> (Uuid, i32) {
        match timeout(PATIENCE, self.events.recv()).await {
            Ok(Some(RuntimeEvent::Exited { id, exit_code })) => (id, exit_code),
            Ok(Some(other)) => panic!("a process runtime has no engine to report on: {other:?}"),
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!("no exit event within 5 s"),
        }
    }

    /// Fails if a second event arrives for an exit already reported.
    async fn no_more_events(&mut self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(event) = self.events.try_recv() {
            panic!("unexpected extra event {event:?}");
        }
    }
}

/// GET `path` on a fresh connection; returns the raw response.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = String::new();
    timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("response within 5 s")
        .expect("read response");
    response
}

/// Alive means it exists and is not a zombie: a killed grandchild stays a zombie until whoever
/// inherited it reaps it, which is not ours to wait for.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn started_instance_answers_and_stop_reports_one_exit() {
    let mut h = Harness::new(vec![("hello", hello_image())], PATIENCE);
    let id = h.create("web", "hello").await;
    // Creating twice is harmless.
    h.create_again(id, "web", "hello").await;

    let addr = h.start(id).await.expect("start");
    assert!(addr.ip().is_loopback());
    let response = get(addr, "/x?y=1").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("x-hello-name: web\r\n"), "{response}");
    assert!(response.ends_with("hello from web: /x?y=1\n"), "{response}");
    // Starting a running instance returns where it runs.
    assert_eq!(h.start(id).await.expect("start again"), addr);

    let pid = h.runtime.pid(id).expect("pid of a running instance");
    assert!(alive(pid));
    h.stop(id).await.expect("stop");
    // hello exits 0 on SIGTERM.
    assert_eq!(h.next_exit().await, (id, 0));
    assert_eq!(h.runtime.pid(id), None);
    assert!(gone(pid).await, "pid {pid} still alive after stop");
    h.no_more_events().await;

    // Stopping a stopped instance succeeds and reports nothing.
    h.stop(id).await.expect("stop a stopped instance");
    h.no_more_events().await;

    // It starts again, on the port picked for this start.
    let addr = h.start(id).await.expect("restart");
    assert!(get(addr, "/").await.ends_with("hello from web: /\n"));
    h.delete(id).await.expect("delete");
    assert_eq!(h.next_exit().await, (id, 0));
}

#[tokio::test]
async fn sigterm_ignored_is_sigkilled_after_the_grace_period() {
    let stubborn = stubborn_image();
    let mut h = Harness::new(vec![("stubborn", stubborn)], PATIENCE);
    let id = h.create("stubborn", "stubborn").await;
    h.start(id).await.expect("start");
    let pid = h.runtime.pid(id).expect("pid");

    let begun = Instant::now();
    h.stop(id).await.expect("stop");
    let took = begun.elapsed();
    assert!(took >= GRACE, "stopped after {took:?}, before the grace");
    assert_eq!(h.next_exit().await, (id, 128 + libc::SIGKILL));
    assert!(gone(pid).await);
    h.delete(id).await.expect("delete");
}

/// A cgroup made for one test under the first hierarchy this machine lets it write (cgroup v2,
/// else v1's cpu controller), removed when dropped.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    /// The cgroup, or `None` (the test skipped loudly) when none can be made here.
    fn make(test: &str) -> Option<TestCgroup> {
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let root = if v2 {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/cpu"
        };
        let dir = PathBuf::from(root).join(format!("autokill-test-{}-{test}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(TestCgroup { dir }),
            Err(err) => {
                common::skip(
                    "cgroup",
                    &format!("{test}: cannot make a cgroup at {}: {err}", dir.display()),
                );
                None
            }
        }
    }

    fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .any(|line| line.trim() == pid.to_string())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone; a failing test may have left one behind a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test]
async fn a_stopping_instance_is_moved_into_the_stopping_cgroup_before_its_sigterm() {
    let Some(cgroup) = TestCgroup::make("stopping") else {
        return;
    };
    // Its shell is still there, stopping, for the grace period.
    let stubborn = stubborn_image();
    let mut h = Harness::stopping_into(
        vec![("stubborn", stubborn)],
        PATIENCE,
        Some(cgroup.dir.clone()),
    );
    let id = h.create("stubborn", "stubborn").await;
    h.start(id).await.expect("start");
    let pid = h.runtime.pid(id).expect("pid");
    assert!(!cgroup.holds(pid), "moved before its stop");

    let (stopped, held) = tokio::join!(h.stop(id), async {
        tokio::time::sleep(GRACE / 2).await;
        cgroup.holds(pid)
    });
    stopped.expect("stop");
    assert!(
        held,
        "pid {pid} is not in {} while it stops",
        cgroup.dir.display()
    );
    assert_eq!(h.next_exit().await, (id, 128 + libc::SIGKILL));
    assert!(gone(pid).await);
    h.delete(id).await.expect("delete");
}

#[tokio::test]
async fn unknown_image_is_refused() {
    let h = Harness::new(vec![("hello", hello_image())], PATIENCE);
    let spec = InstanceSpec {
        id: Uuid::new_v4(),
        name: "nope".into(),
        image: "nginx".to_owned(),
        memory_mb: None,
    };
    match h.runtime.create(&spec).await {
        Err(RuntimeError::UnknownImage(image)) => assert_eq!(image, "nginx"),
        other => panic!("expected UnknownImage, got {other:?}"),
    }
    match h.start(spec.id).await {
        Err(RuntimeError::UnknownInstance(id)) => assert_eq!(id, spec.id),
        other => panic!("expected UnknownInstance, got {other:?}"),
    }
}

#[tokio::test]
async fn exit_before_listening_is_exited_early_with_its_code() {
    let mut h = Harness::new(vec![("seven", image(&["sh", "-c", "exit 7"]))], PATIENCE);
    let id = h.create("seven", "seven").await;
    match h.start(id).await {
        Err(RuntimeError::ExitedEarly {
            id: which,
            exit_code,
        }) => {
            assert_eq!((which, exit_code), (id, 7));
        }
        other => panic!("expected ExitedEarly, got {other:?}"),
    }
    // The exit is also an event, like every exit.
    assert_eq!(h.next_exit().await, (id, 7));
    assert_eq!(h.runtime.pid(id), None);
}

#[tokio::test]
async fn never_listening_is_a_start_timeout_and_is_killed() {
    let mut h = Harness::new(
        vec![("mute", image(&["sleep", "30"]))],
        Duration::from_millis(300),
    );
    let id = h.create("mute", "mute").await;
    let begun = Instant::now();
    let result = h.start(id).await;
    let took = begun.elapsed();
    match result {
        Err(RuntimeError::StartTimeout {
            id: which, addr, ..
        }) => {
            assert_eq!(which, id);
            assert!(addr.ip().is_loopback());
        }
        other => panic!("expected StartTimeout, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
    assert_eq!(h.next_exit().await, (id, 128 + libc::SIGKILL));
    assert_eq!(h.runtime.pid(id), None);
}

#[tokio::test]
async fn exit_asked_of_the_instance_is_reported_and_its_grandchildren_are_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("grandchild.pid");
    // A grandchild in the instance's group, then hello in place of the shell.
    let forking = ImageConfig {
        image: None,
        command: [
            "sh",
            "-c",
            "sleep 60 & echo $! > \"$GRANDCHILD_PID\"; exec \"$0\" hello --listen 127.0.0.1:$1 --name \"$2\" --allow-exit",
            "{autokill}",
            "{port}",
            "{name}",
        ]
        .iter()
        .map(|part| (*part).to_owned())
        .collect(),
        env: BTreeMap::from([(
            "GRANDCHILD_PID".to_owned(),
            pid_file.to_string_lossy().into_owned(),
        )]),
        port: None,
    };
    let mut h = Harness::new(vec![("forking", forking)], PATIENCE);
    let id = h.create("forking", "forking").await;
    let addr = h.start(id).await.expect("start");
    let grandchild: u32 = std::fs::read_to_string(&pid_file)
        .expect("grandchild pid file")
        .trim()
        .parse()
        .expect("grandchild pid");
    assert!(alive(grandchild), "grandchild not running before the exit");

    let response = get(addr, "/__exit/5").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(h.next_exit().await, (id, 5));
    assert!(
        gone(grandchild).await,
        "grandchild {grandchild} left behind"
    );
    assert_eq!(h.runtime.pid(id), None);
    h.no_more_events().await;
}

#[tokio::test]
async fn the_process_gets_its_identity_and_filled_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("env.txt");
    let mut env_image = image(&[
        "sh",
        "-c",
        "echo \"$AUTOKILL_INSTANCE_ID $AUTOKILL_INSTANCE_NAME $FILLED\" > \"$0\"; exec \"$1\" hello --listen 127.0.0.1:$2",
        &out.to_string_lossy(),
        "{autokill}",
        "{port}",
    ]);
    env_image
        .env
        .insert("FILLED".to_owned(), "{name}@{port}".to_owned());
    let h = Harness::new(vec![("env", env_image)], PATIENCE);
    let id = h.create("envy", "env").await;
    let addr = h.start(id).await.expect("start");
    let written = std::fs::read_to_string(&out).expect("env file");
    assert_eq!(written, format!("{id} envy envy@{}\n", addr.port()));
    h.delete(id).await.expect("delete");
}

#[tokio::test]
async fn delete_is_idempotent_and_forgets_the_instance() {
    let mut h = Harness::new(vec![("hello", hello_image())], PATIENCE);
    h.delete(Uuid::new_v4())
        .await
        .expect("deleting an unknown instance succeeds");

    let id = h.create("doomed", "hello").await;
    let addr = h.start(id).await.expect("start");
    let pid = h.runtime.pid(id).expect("pid");
    h.delete(id).await.expect("delete");
    assert_eq!(h.next_exit().await, (id, 0));
    assert!(gone(pid).await);
    // The port is free again, and another test's instance may already have it: only this
    // instance must not answer.
    if TcpStream::connect(addr).await.is_ok() {
        let response = get(addr, "/").await;
        assert!(
            !response.contains("hello from doomed"),
            "deleted instance still answers: {response}"
        );
    }
    h.delete(id).await.expect("delete again");
    match h.start(id).await {
        Err(RuntimeError::UnknownInstance(which)) => assert_eq!(which, id),
        other => panic!("expected UnknownInstance after delete, got {other:?}"),
    }
    h.no_more_events().await;
}

#[tokio::test]
async fn delete_of_a_created_never_started_instance_succeeds() {
    let mut h = Harness::new(vec![("hello", hello_image())], PATIENCE);
    let id = h.create("idle", "hello").await;
    h.delete(id).await.expect("delete");
    assert!(matches!(
        h.stop(id).await,
        Err(RuntimeError::UnknownInstance(_))
    ));
    h.no_more_events().await;
}

/// A stopped instance holds no port, process or descriptor: more instances than loopback has
/// ports can exist at once, and each start picks a port no running instance holds.
#[tokio::test]
async fn stopped_instances_hold_no_port() {
    let mut h = Harness::new(vec![("hello", hello_image())], PATIENCE);
    let fds = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let before = fds();
    for n in 0..70_000 {
        h.create_again(Uuid::new_v4(), &format!("idle-{n}"), "hello")
            .await;
    }
    assert!(fds() <= before + 2, "created instances hold descriptors");
    let a = h.create("a", "hello").await;
    let b = h.create("b", "hello").await;
    let at_a = h.start(a).await.expect("start a");
    let at_b = h.start(b).await.expect("start b");
    assert_ne!(at_a, at_b);
    assert!(get(at_a, "/").await.ends_with("hello from a: /\n"));
    assert!(get(at_b, "/").await.ends_with("hello from b: /\n"));
    for id in [a, b] {
        h.stop(id).await.expect("stop");
        h.next_exit().await;
    }
    // Started again, each answers on its new port.
    for (id, name) in [(a, "a"), (b, "b")] {
        let addr = h.start(id).await.expect("start again");
        assert!(
            get(addr, "/")
                .await
                .ends_with(&format!("hello from {name}: /\n"))
        );
        h.delete(id).await.expect("delete");
        h.next_exit().await;
    }
}
