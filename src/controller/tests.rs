//! The controller task with a real store: what a failed commit does (issue 9.4) and what a
//! shutdown does. The runtime records the calls it gets, so that "nothing was carried out" can
//! be checked; everything else is the real thing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::api::{Call, Handle, InstancePatch, NewInstance, Ref, Reply};
use super::{Inputs, Published, run, state};
use crate::metrics::Metrics;
use crate::proxy::ProxyEvent;
use crate::runtime::{BoxFuture, InstanceSpec, Runtime, RuntimeError, RuntimeEvent};
use crate::store::Store;

/// A runtime that records what it is asked to do and starts everything (at `addr`, port 9
/// unless a test gives an upstream of its own; with `start_fails`, a start fails as if the
/// process exited early). A start takes `start_for`, a delete
/// `delete_for` (the most of each it ever had in progress at once is kept), and removing what
/// an earlier run left `reclaim_for` (then it records `reclaimed`).
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    addr: Option<SocketAddr>,
    start_for: Duration,
    start_fails: bool,
    reclaim_for: Duration,
    starting: AtomicUsize,
    most_starting: AtomicUsize,
    delete_for: Duration,
    deleting: AtomicUsize,
    most_deleting: AtomicUsize,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn record(&self, call: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }
}

impl Runtime for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }
    fn create<'a>(&'a self, spec: &'a InstanceSpec) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.record(format!("create {}", spec.name));
        Box::pin(async { Ok(()) })
    }
    fn start(&self, id: Uuid) -> BoxFuture<'_, Result<SocketAddr, RuntimeError>> {
        self.record(format!("start {id}"));
        let addr = self.addr.unwrap_or(([127, 0, 0, 1], 9).into());
        Box::pin(async move {
            let now = self.starting.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_starting.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.start_for).await;
            self.starting.fetch_sub(1, Ordering::SeqCst);
            if self.start_fails {
                return Err(RuntimeError::ExitedEarly { id, exit_code: 143 });
            }
            Ok(addr)
        })
    }
    fn stop(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        self.record(format!("stop {id}"));
        Box::pin(async { Ok(()) })
    }
    fn set_timeouts(&self, stop_grace: Duration, start_timeout: Duration) {
        self.record(format!("timeouts {stop_grace:?} {start_timeout:?}"));
    }
    fn delete(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let now = self.deleting.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_deleting.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delete_for).await;
            self.deleting.fetch_sub(1, Ordering::SeqCst);
            self.record(format!("delete {id}"));
            Ok(())
        })
    }
    fn reclaim(&self) -> BoxFuture<'_, Result<usize, RuntimeError>> {
        Box::pin(async move {
            tokio::time::sleep(self.reclaim_for).await;
            self.record("reclaimed".to_owned());
            Ok(0)
        })
    }
}

struct Running {
    api: Handle,
    runtime: Arc<Recorder>,
    store: Arc<Store>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    published: Published,
    /// The controller's end of the proxy's control channel.
    proxy: mpsc::UnboundedSender<ProxyEvent>,
    metrics: Metrics,
    config: crate::config::Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Proxy workers (and in-flight slots), for the tests that start the proxy too.
const WORKERS: usize = 2;

async fn start() -> Running {
    start_in(tempfile::tempdir().expect("temp dir"), 0).await
}

/// Starts a controller on the store in `dir`, whose first `failing` commits fail.
async fn start_in(dir: tempfile::TempDir, failing: u32) -> Running {
    start_with(dir, failing, "", Recorder::default()).await
}

/// Like [`start_in`], with `runtime_extra` keys in the `runtime:` block (indented by two
/// spaces) and the runtime `runtime`.
async fn start_with(
    dir: tempfile::TempDir,
    failing: u32,
    runtime_extra: &str,
    runtime: Recorder,
) -> Running {
    let config = crate::config::parse(
        &format!(
            "proxy:\n  listen: 127.0.0.1:0\n  workers: {WORKERS}\nadmin:\n  listen: 127.0.0.1:0\n\
             runtime:\n{runtime_extra}  images:\n    hello:\n      command: [\"x\"]\n"
        ),
        "test",
    )
    .expect("config");
    let (store, snapshot) = Store::open(&dir.path().join("s.redb")).expect("store");
    store.fail_next_commits(failing);
    let store = Arc::new(store);
    let published = Published::new();
    let metrics = Metrics::new(Arc::clone(&published.view)).expect("metrics");
    let runtime = Arc::new(runtime);
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (proxy_tx, proxy) = mpsc::unbounded_channel();
    let (events, runtime_rx) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown) = oneshot::channel();
    let (recovered_tx, recovered) = oneshot::channel();
    let inputs = Inputs {
        commands,
        commands_tx: commands_tx.clone(),
        proxy,
        runtime: runtime_rx,
        shutdown,
    };
    let task = {
        let (runtime, store, published): (Arc<dyn Runtime>, _, _) =
            (runtime.clone(), Arc::clone(&store), published.clone());
        let (config, metrics, workers) = (config.clone(), metrics.clone(), config.proxy.workers);
        tokio::spawn(async move {
            run(
                &config,
                workers,
                runtime,
                store,
                snapshot,
                published,
                metrics,
                inputs,
                recovered_tx,
                tokio::runtime::Handle::current(),
            )
            .await;
        })
    };
    recovered.await.expect("recovered");
    Running {
        proxy: proxy_tx,
        metrics,
        config,
        api: Handle::new(commands_tx),
        runtime,
        store,
        events,
        published,
        shutdown: Some(shutdown_tx),
        task,
        _dir: dir,
    }
}

/// Creates (and starts) instance `name` and returns its id.
async fn create(r: &Running, name: &str) -> Uuid {
    match r.api.call(Call::CreateInstance(new(name))).await {
        Ok(Reply::Instance(view)) => view.id,
        other => panic!("creating {name}: {other:?}"),
    }
}

fn new(name: &str) -> NewInstance {
    NewInstance {
        name: Some(name.into()),
        image: Some("hello".into()),
        autostart: true,
        ..Default::default()
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn state_of(r: &Running, name: &str) -> Option<&'static str> {
    r.published
        .view
        .load()
        .instances
        .iter()
        .find(|i| &*i.name == name)
        .map(|i| i.state.as_str())
}

/// A batch whose commit fails changes nothing: the call is answered 500, the runtime is asked
/// for nothing, the published state is as before; and a runtime event in a failed batch is not
/// lost: it is applied once the store takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_changes_nothing_and_its_events_are_retried() {
    let r = start().await;
    let id = create(&r, "a").await;
    eventually("a runs", || state_of(&r, "a") == Some("running")).await;

    r.store.fail_next_commits(1);
    let refused = r.api.call(Call::CreateInstance(new("b"))).await;
    assert_eq!(refused.map(|_| ()).map_err(|e| e.status), Err(500));
    assert!(state_of(&r, "b").is_none(), "b is not published");
    assert!(
        !r.runtime.calls().iter().any(|c| c == "create b"),
        "the runtime was asked for nothing: {:?}",
        r.runtime.calls()
    );
    // The name is free: the undone create left nothing behind.
    assert!(r.api.call(Call::CreateInstance(new("b"))).await.is_ok());
    eventually("b runs", || state_of(&r, "b") == Some("running")).await;

    // A lock that failed to commit is not in force.
    r.store.fail_next_commits(1);
    let lock = Call::PatchInstance(Ref::Id(id), vec![InstancePatch::DeleteLock(true)]);
    assert!(r.api.call(lock).await.is_err());
    assert!(
        r.api.call(Call::DeleteInstance(Ref::Id(id))).await.is_ok(),
        "not locked"
    );

    // An exit in a failed batch is retried: b stops for good once the store recovers.
    let b = r
        .published
        .view
        .load()
        .instances
        .iter()
        .find(|i| &*i.name == "b")
        .map(|i| i.id);
    let b = b.expect("b");
    r.store.fail_next_commits(3);
    let _ = r.events.send(RuntimeEvent::Exited {
        id: b,
        exit_code: 0,
    });
    eventually("the exit is applied after the retries", || {
        state_of(&r, "b") == Some("stopped")
    })
    .await;
    stop(r).await;
}

async fn stop(r: Running) {
    stop_keeping(r).await;
}

/// Stops the controller and hands back its store's directory.
async fn stop_keeping(mut r: Running) -> tempfile::TempDir {
    if let Some(tx) = r.shutdown.take() {
        let _ = tx.send(());
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), r.task).await;
    r._dir
}

/// A crash: the controller's task ends at once, stopping nothing (the store still says what
/// ran and what was asked); returns its store's directory.
async fn crash_keeping(r: Running) -> tempfile::TempDir {
    r.task.abort();
    let _ = r.task.await;
    r._dir
}

/// A recovery whose commit fails is retried with the same changes: the recovered instances
/// are all there once the store takes writes, whether recovery changed them (one that was
/// running starts again) or not (one stopped is as it was stored, and not written back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_whose_commit_fails_keeps_what_it_recovered() {
    let r = start().await;
    assert!(r.api.call(Call::CreateInstance(new("a"))).await.is_ok());
    let idle = NewInstance {
        autostart: false,
        ..new("idle")
    };
    assert!(r.api.call(Call::CreateInstance(idle)).await.is_ok());
    eventually("a runs", || state_of(&r, "a") == Some("running")).await;
    // A crash: the controller ends without stopping anything; the store still says a runs.
    let dir = crash_keeping(r).await;
    let r = start_in(dir, 2).await;
    assert_eq!(state_of(&r, "idle"), Some("stopped"));
    eventually("a runs again", || state_of(&r, "a") == Some("running")).await;
    let dir = stop_keeping(r).await;
    // And it was all durable: a third start finds both.
    let r = start_in(dir, 0).await;
    assert!(state_of(&r, "idle").is_some() && state_of(&r, "a").is_some());
    stop(r).await;
}

/// A server stopped while its store keeps refusing the recovery's write still ends: the retries
/// wait on the controller's task, which the runtime drops, not on a thread it would wait for.
#[test]
fn a_recovery_that_cannot_commit_does_not_hold_up_the_end_of_the_runtime() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    // A store with something for the recovery to write: an instance that was running.
    let dir = runtime().block_on(async {
        let r = start().await;
        create(&r, "a").await;
        eventually("a runs", || state_of(&r, "a") == Some("running")).await;
        crash_keeping(r).await
    });
    let (ended, end) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async {
            let starting = tokio::spawn(start_in(dir, u32::MAX));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !starting.is_finished(),
                "not ready while nothing can be written"
            );
        });
        drop(rt);
        let _ = ended.send(());
    });
    assert!(
        end.recv_timeout(Duration::from_secs(20)).is_ok(),
        "the runtime did not end while the recovery was retrying its commit"
    );
}

/// After the shutdown signal the controller ends and judges nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_exits_are_not_judged() {
    let mut r = start().await;
    let v = r
        .api
        .call(Call::CreateInstance(NewInstance {
            autodestroy: Some(crate::config::Autodestroy::Always),
            ..new("a")
        }))
        .await;
    assert!(v.is_ok());
    eventually("a runs", || state_of(&r, "a") == Some("running")).await;
    let id = r
        .published
        .view
        .load()
        .instances
        .iter()
        .next()
        .map(|i| i.id)
        .expect("one instance");
    if let Some(tx) = r.shutdown.take() {
        let _ = tx.send(());
    }
    let task = std::mem::replace(&mut r.task, tokio::spawn(async {}));
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the controller ends")
        .expect("no panic");
    let _ = r.events.send(RuntimeEvent::Exited { id, exit_code: 0 });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!r.runtime.calls().iter().any(|c| c.starts_with("delete")));
    assert_eq!(state_of(&r, "a"), Some("running"));
}

/// A kill storm is paced: with `runtime.max_concurrent_kills: 3`, twelve instances deleted in
/// one batch never have more than three runtime deletes in progress, the places are used (three
/// at once, not one), and every delete completes: none is lost in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_paced_and_none_is_lost() {
    let recorder = Recorder {
        delete_for: Duration::from_millis(100),
        ..Recorder::default()
    };
    let r = start_with(
        tempfile::tempdir().expect("temp dir"),
        0,
        "  max_concurrent_kills: 3\n",
        recorder,
    )
    .await;
    let names: Vec<String> = (0..12).map(|i| format!("i{i}")).collect();
    for name in &names {
        assert!(r.api.call(Call::CreateInstance(new(name))).await.is_ok());
    }
    for name in &names {
        eventually("running", || state_of(&r, name) == Some("running")).await;
    }
    // All asked for at once: the deletes are spawned together, in one batch or few.
    let deletes: Vec<_> = names
        .iter()
        .map(|name| {
            let (api, name) = (r.api.clone(), name.clone());
            tokio::spawn(async move { api.call(Call::DeleteInstance(Ref::Name(name))).await })
        })
        .collect();
    for delete in deletes {
        let answer = delete.await.expect("no panic");
        assert!(answer.is_ok(), "{answer:?}");
    }
    eventually("every delete done", || {
        r.runtime
            .calls()
            .iter()
            .filter(|c| c.starts_with("delete"))
            .count()
            == 12
    })
    .await;
    eventually("every instance gone", || {
        r.published.view.load().instances.is_empty()
    })
    .await;
    assert_eq!(
        r.runtime.most_deleting.load(Ordering::SeqCst),
        3,
        "at most max_concurrent_kills deletes at once, and that many used"
    );
    stop(r).await;
}

/// Starts are paced: with `runtime.max_concurrent_starts: 3`, twelve instances created at once
/// never have more than three runtime starts in progress, the places are used (three at once),
/// and every instance ends up running: none is lost in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_are_paced_and_none_is_lost() {
    let recorder = Recorder {
        start_for: Duration::from_millis(100),
        ..Recorder::default()
    };
    let r = start_with(
        tempfile::tempdir().expect("temp dir"),
        0,
        "  max_concurrent_starts: 3\n",
        recorder,
    )
    .await;
    let names: Vec<String> = (0..12).map(|i| format!("i{i}")).collect();
    let creates: Vec<_> = names
        .iter()
        .map(|name| {
            let (api, name) = (r.api.clone(), name.clone());
            tokio::spawn(async move { api.call(Call::CreateInstance(new(&name))).await })
        })
        .collect();
    for create in creates {
        let answer = create.await.expect("no panic");
        assert!(answer.is_ok(), "{answer:?}");
    }
    for name in &names {
        eventually("running", || state_of(&r, name) == Some("running")).await;
    }
    assert_eq!(
        r.runtime.most_starting.load(Ordering::SeqCst),
        3,
        "at most max_concurrent_starts starts at once, and that many used"
    );
    stop(r).await;
}

/// A start that waits for its place is overtaken by a stop or a delete: it never reaches the
/// runtime (which would leave running what the state says is stopped), and the instance ends
/// stopped (or gone). The start in progress meanwhile completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_start_overtaken_by_a_stop_or_delete_never_begins() {
    let recorder = Recorder {
        start_for: Duration::from_millis(300),
        ..Recorder::default()
    };
    let r = start_with(
        tempfile::tempdir().expect("temp dir"),
        0,
        "  max_concurrent_starts: 1\n",
        recorder,
    )
    .await;
    let first = create(&r, "first").await;
    let stopped = create(&r, "stopped").await;
    let deleted = create(&r, "deleted").await;
    assert_eq!(state_of(&r, "stopped"), Some("starting"));
    let answer = r
        .api
        .call(Call::StopInstance(Ref::Name("stopped".into())))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    let answer = r
        .api
        .call(Call::DeleteInstance(Ref::Name("deleted".into())))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    eventually("the first running", || {
        state_of(&r, "first") == Some("running")
    })
    .await;
    eventually("the overtaken one stopped", || {
        state_of(&r, "stopped") == Some("stopped")
    })
    .await;
    eventually("the deleted one gone", || state_of(&r, "deleted").is_none()).await;
    // Long enough for a start that (wrongly) began after the first's to be recorded.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let calls = r.runtime.calls();
    assert!(calls.contains(&format!("start {first}")), "{calls:?}");
    for overtaken in [stopped, deleted] {
        assert!(
            !calls.contains(&format!("start {overtaken}")),
            "a start overtaken while it waited reached the runtime: {calls:?}"
        );
    }
    assert_eq!(state_of(&r, "stopped"), Some("stopped"));
    stop(r).await;
}

/// A stop while the start is in progress, whose SIGTERM makes the starting process exit: the
/// start reports its failure before the runtime reports the exit (the controller reads its
/// own commands first). The failure must not end the stop by itself: the exit decides, as for
/// any stopped instance, and `ALWAYS` destroys it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_under_a_stop_leaves_the_decision_to_the_exit() {
    let recorder = Recorder {
        start_for: Duration::from_millis(300),
        start_fails: true,
        ..Recorder::default()
    };
    let r = start_with(tempfile::tempdir().expect("temp dir"), 0, "", recorder).await;
    let made = r
        .api
        .call(Call::CreateInstance(NewInstance {
            autodestroy: Some(crate::config::Autodestroy::Always),
            ..new("a")
        }))
        .await;
    let id = match made {
        Ok(Reply::Instance(view)) => view.id,
        other => panic!("{other:?}"),
    };
    eventually("the start in progress", || {
        r.runtime.starting.load(Ordering::SeqCst) == 1
    })
    .await;
    let answer = r.api.call(Call::StopInstance(Ref::Name("a".into()))).await;
    assert!(answer.is_ok(), "{answer:?}");
    // The start's failure (at 300 ms) is in; then the exit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = r.events.send(RuntimeEvent::Exited { id, exit_code: 143 });
    eventually("destroyed by ALWAYS on the exit", || {
        state_of(&r, "a").is_none()
    })
    .await;
    stop(r).await;
}

/// After a restart, an instance that was running starts again only once what the earlier run
/// left is removed, and the server is ready before that: the removal holds back the starts,
/// not the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_after_a_restart_wait_for_the_leftovers_to_be_removed() {
    let r = start().await;
    let id = create(&r, "a").await;
    eventually("running", || state_of(&r, "a") == Some("running")).await;
    let dir = stop_keeping(r).await;
    let recorder = Recorder {
        reclaim_for: Duration::from_secs(1),
        ..Recorder::default()
    };
    // `start_with` returns once the controller says it recovered (`/readyz`).
    let r = start_with(dir, 0, "", recorder).await;
    assert!(
        !r.runtime.calls().contains(&"reclaimed".to_owned()),
        "ready only after the leftovers were removed"
    );
    assert_eq!(state_of(&r, "a"), Some("starting"));
    eventually("running again", || state_of(&r, "a") == Some("running")).await;
    let calls = r.runtime.calls();
    let at = |call: &str| calls.iter().position(|c| c == call);
    let (reclaimed, started) = (at("reclaimed"), at(&format!("start {id}")));
    assert!(
        reclaimed.is_some() && started.is_some() && reclaimed < started,
        "started before the leftovers were removed: {calls:?}"
    );
    stop(r).await;
}

/// An upstream on loopback that answers every request `200 ok` (keep-alive) and counts the
/// requests that reached it.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Requests without bodies: each ends at its blank line.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        count.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, served)
}

/// One request for `host` through the proxy on a connection of its own: the status code.
async fn status_through(proxy: SocketAddr, host: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut conn) = tokio::net::TcpStream::connect(proxy).await else {
        return 0;
    };
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if conn.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Issue 15: the control channel stays bounded while the controller lags. The controller is
/// stalled (nothing takes the proxy's messages) while 40 clients hit an instance at the end of
/// its first reserved block: they wait for the next block, the proxy keeps serving another
/// instance, and the channel holds at most one message for the instance (it held one per
/// waiting request before). Once the controller takes the messages again, exactly
/// `num_requests` requests are forwarded and the rest refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_controller_keeps_the_control_channel_bounded_and_counts_exact() {
    const LIMIT: u64 = 100;
    const CLIENTS: usize = 40;
    const EACH: usize = 4;
    let (upstream, served) = counting_upstream().await;
    let recorder = Recorder {
        addr: Some(upstream),
        ..Recorder::default()
    };
    let r = start_with(tempfile::tempdir().expect("temp dir"), 0, "", recorder).await;
    let (events, mut lagging) = mpsc::unbounded_channel();
    let proxy = crate::proxy::Proxy::start(
        &r.config.proxy,
        Duration::from_secs(1),
        Arc::clone(&r.published.table),
        events,
        &r.metrics,
        1024,
    )
    .expect("proxy");
    assert_eq!(proxy.workers(), WORKERS);
    let limited = NewInstance {
        autokill: Some(crate::controller::api::AutokillSpec {
            num_requests: Some(LIMIT),
            time: None,
        }),
        ..new("lim")
    };
    assert!(r.api.call(Call::CreateInstance(limited)).await.is_ok());
    assert!(r.api.call(Call::CreateInstance(new("free"))).await.is_ok());
    eventually("both run", || {
        state_of(&r, "lim") == Some("running") && state_of(&r, "free") == Some("running")
    })
    .await;
    let block = state::reservation_block(LIMIT, 0);

    // Stalled: nothing is taken off the channel.
    let addr = proxy.local_addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for _ in 0..EACH {
                    codes.push(status_through(addr, "lim.localhost").await);
                }
                codes
            })
        })
        .collect();
    eventually("the first block served", || {
        served.load(Ordering::SeqCst) == block
    })
    .await;
    // The clients come back for more and wait; let them all ask.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served.load(Ordering::SeqCst),
        block,
        "never past the reservation"
    );
    assert_eq!(
        status_through(addr, "free.localhost").await,
        200,
        "the rest is served"
    );
    let queued = lagging.len();
    assert!(
        (1..=2).contains(&queued),
        "{queued} messages queued for one instance while {CLIENTS} requests wait"
    );

    // The controller takes them again.
    let most = Arc::new(AtomicUsize::new(queued));
    let relay = {
        let (to, most) = (r.proxy.clone(), Arc::clone(&most));
        tokio::spawn(async move {
            while let Some(event) = lagging.recv().await {
                most.fetch_max(lagging.len() + 1, Ordering::SeqCst);
                let _ = to.send(event);
            }
        })
    };
    let mut codes = Vec::new();
    for client in clients {
        codes.extend(client.await.expect("no panic"));
    }
    let ok = codes.iter().filter(|c| **c == 200).count() as u64;
    // Refused while it drains (503), or not found once it is deleted (404).
    let refused = codes.iter().filter(|c| [503, 404].contains(*c)).count();
    assert_eq!(ok, LIMIT, "exactly num_requests forwarded: {codes:?}");
    assert_eq!(
        refused,
        CLIENTS * EACH - LIMIT as usize,
        "the rest refused: {codes:?}"
    );
    // Both instances run on the one upstream: the request to `free` is counted there too.
    assert_eq!(
        served.load(Ordering::SeqCst),
        LIMIT + 1,
        "and reached the upstream"
    );
    assert!(
        most.load(Ordering::SeqCst) <= 2,
        "{} queued",
        most.load(Ordering::SeqCst)
    );
    eventually("killed once spent", || state_of(&r, "lim").is_none()).await;
    proxy.shutdown().await;
    relay.abort();
    stop(r).await;
}

/// `Records::fill` (the first commit after a recovery, two threads) gives the same set as
/// putting the records one by one: the same order by name, and every one found by id and by
/// name.
#[test]
fn records_filled_at_once_equal_records_put_one_by_one() {
    use super::{GroupView, Groups};
    let mut views: Vec<Arc<GroupView>> = (0..10_000u32)
        .map(|i| {
            // Ids in another order than the names, so the two indexes differ.
            let id = Uuid::from_u128(u128::from(i.wrapping_mul(2_654_435_761)));
            Arc::new(GroupView {
                id,
                name: format!("g-{i:05}"),
                domains: Vec::new(),
                autokill_time: None,
                delete_lock: false,
                instances: Vec::new(),
                soft_limit: None,
                hard_limit: None,
                services: serde_json::Value::Null,
                created_at: std::time::SystemTime::UNIX_EPOCH,
                deleted: false,
            })
        })
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    let mut filled = Groups::default();
    filled.fill(&views);
    let mut put = Groups::default();
    for view in &views {
        put.put(Arc::clone(view));
    }
    assert_eq!(filled.len(), views.len());
    let names = |r: &Groups| r.iter().map(|v| (v.id, v.name.clone())).collect::<Vec<_>>();
    assert_eq!(names(&filled), names(&put));
    for view in &views {
        assert_eq!(filled.get(&view.id).map(|v| &v.name), Some(&view.name));
        assert_eq!(filled.named(&view.name).map(|v| v.id), Some(view.id));
    }
}
