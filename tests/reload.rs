//! Live reconfiguration with the real binary: the file changed on disk (no signal) and SIGHUP
//! (file unchanged) both reconcile what it declares; a bad file keeps the running configuration
//! and says so in `/metrics` and in a log line with its line and column; a reload under load
//! loses no request and keeps the counts exact; a new `proxy.listen` is bound and taken over
//! (an address in use keeps the old one); the controller's and the shutdown's settings apply
//! live, and the keys that need a restart are named one by one.

mod common;

use common::{Server, free_port, hello_runtime, request, sample};
use serde_json::Value;

fn declared(dir: &std::path::Path, instances: &str) -> String {
    format!("{}instances:\n{instances}", hello_runtime(dir, ""))
}

/// The server's configuration file (the harness writes it as `autokill.yaml` in its directory),
/// with everything before `runtime:` kept and the rest replaced.
fn rewrite(server: &Server, body: &str) {
    let text = config_of(server);
    let head = text.split("runtime:").next().unwrap_or_default().to_owned();
    replace_config(server, &format!("{head}{body}"));
}

/// The server's configuration file as it is now.
fn config_of(server: &Server) -> String {
    std::fs::read_to_string(server.dir.path().join("autokill.yaml")).expect("config")
}

/// Writes `text` as the server's configuration file: whole, and renamed over the file, as
/// editors and config managers do.
fn replace_config(server: &Server, text: &str) {
    let tmp = server.dir.path().join("autokill.yaml.new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, server.dir.path().join("autokill.yaml")).expect("rename");
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

/// Writes `text` as the configuration file and waits until a reload of it succeeded.
async fn reload_with(server: &Server, text: &str) {
    let before = reloaded_at(server).await;
    replace_config(server, text);
    server
        .eventually(10, "the file reloaded", async || {
            reloaded_at(server).await != before
        })
        .await;
}

/// When the last reload that succeeded was.
async fn reloaded_at(server: &Server) -> Option<f64> {
    let metrics = server.metrics().await;
    sample(
        &metrics,
        "autokill_config_last_reload_success_timestamp_seconds",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reconciled_and_a_bad_one_is_refused() {
    let server = Server::start_logged(|dir| {
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
    // The log names the file, the line and the column of the bad key.
    let path = server.dir.path().join("autokill.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    let line = 1 + text
        .lines()
        .position(|l| l.contains("no_such_key"))
        .expect("the bad key is in the file");
    let want = format!(
        "{}:{line}:3: runtime.no_such_key: unknown key \"no_such_key\"",
        path.display()
    );
    server
        .eventually(10, "the bad file's place logged", async || {
            server.log().contains(&want)
        })
        .await;
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains(&want) && l.contains("configuration reload failed")),
        "one line says both what failed and where: {}",
        server.log()
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

/// What the clients of [`a_reload_under_load_loses_no_request_and_keeps_counts_exact`] saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    failures: Vec<String>,
}

/// Many keep-alive clients send requests through the proxy to a declared instance while the
/// file is rewritten (that instance's budget changed, other declared instances added and
/// removed) and SIGHUP arrives: every request is answered 200, and the instance's count, the
/// requests its upstream logged and the answers the clients got are the same number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_no_request_and_keeps_counts_exact() {
    const CLIENTS: usize = 32;
    const ROUNDS: u64 = 6;
    let file = |dir: &std::path::Path, budget: u64, extras: u64| {
        let mut instances =
            format!("  - {{name: busy, image: hello, autokill: {{num_requests: {budget}}}}}\n");
        for k in 0..extras {
            instances.push_str(&format!("  - {{name: extra-{k}, image: hello}}\n"));
        }
        declared(dir, &instances)
    };
    let server = Server::start(|dir| file(dir, 1_000_000, 0)).await;
    let dir = server.dir.path().to_owned();
    // Ready means recovered; the declared instance's process may still be starting.
    server
        .eventually(20, "busy running", async || {
            let (_, v) = server.api("GET", "/v1/instances/busy", Value::Null).await;
            v["data"]["instances"][0]["state"] == "running"
        })
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (stop, proxy) = (std::sync::Arc::clone(&stop), server.proxy);
        clients.spawn(async move {
            // One client each, sending one request after another: one keep-alive connection.
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let mut tally = Tally::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = hyper::Request::builder()
                    .uri(format!("http://{proxy}/"))
                    .header("host", "busy.localhost")
                    .body(http_body_util::Empty::new())
                    .expect("request");
                let answer = async {
                    let resp = client.request(req).await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    let body = http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    Ok::<_, String>((status, body))
                };
                match tokio::time::timeout(std::time::Duration::from_secs(30), answer).await {
                    Ok(Ok((hyper::StatusCode::OK, _))) => tally.ok += 1,
                    Ok(Ok((status, body))) => tally.failures.push(format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    )),
                    Ok(Err(e)) => tally.failures.push(e),
                    Err(_) => tally.failures.push("no answer within 30 s".into()),
                }
            }
            tally
        });
    }
    // Let the load reach its pace, then reload: by the file (alternately) and by SIGHUP.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for round in 1..=ROUNDS {
        let limit = 1_000_000 + round;
        let extras = round % 3;
        rewrite(&server, &file(&dir, limit, extras));
        if round % 2 == 0 {
            server.hangup();
        }
        server
            .eventually(20, &format!("reload {round} applied"), async || {
                if budget(&server, "busy").await != Some(limit) {
                    return false;
                }
                for k in 0..3 {
                    let declared = k < extras;
                    if budget(&server, &format!("extra-{k}")).await.is_some() != declared {
                        return false;
                    }
                }
                true
            })
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = Tally::default();
    while let Some(tally) = clients.join_next().await {
        let tally = tally.expect("client task");
        total.ok += tally.ok;
        total.failures.extend(tally.failures);
    }
    let refused: Vec<String> = server
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("autokill_proxy_refused_total"))
        .map(str::to_owned)
        .collect();
    assert!(
        total.failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}; the proxy's refusals: {refused:?}",
        total.failures.len(),
        total.ok + total.failures.len() as u64,
        &total.failures[..total.failures.len().min(3)]
    );
    assert!(
        total.ok >= 1_000,
        "a load worth the name: {} requests",
        total.ok
    );
    let (status, v) = server.api("GET", "/v1/instances/busy", Value::Null).await;
    assert_eq!(status, hyper::StatusCode::OK, "{v}");
    assert_eq!(
        v["data"]["instances"][0]["requests"].as_u64(),
        Some(total.ok),
        "the instance counted every answered request, once"
    );
    server
        .eventually(10, "the upstream logged every request", async || {
            server.upstream_log("busy").len() as u64 >= total.ok
        })
        .await;
    assert_eq!(server.upstream_log("busy").len() as u64, total.ok);
    assert_eq!(reload_ok(&server).await, Some(1.0));
    eprintln!(
        "reload under load: {} requests from {CLIENTS} keep-alive clients over {ROUNDS} reloads, none lost",
        total.ok
    );
}

/// Issue 15: a reload changes the proxy's limits without a restart, for new connections and for
/// the next request of one already open; a key only a restart applies is named in a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_limits_change_on_reload_for_open_connections_too() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_logged_with(
        |dir| declared(dir, "  - {name: one, image: hello}\n"),
        "  max_uri_bytes: 1000\n",
    )
    .await;
    server
        .eventually(10, "one running", async || {
            server.get("one.localhost", "/").await.status == 200
        })
        .await;
    let long = format!("/{}", "a".repeat(3000));
    assert_eq!(server.get("one.localhost", &long).await.status, 414);

    // A keep-alive connection opened before the reload.
    let mut open = tokio::net::TcpStream::connect(server.proxy)
        .await
        .expect("connect");
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: one.localhost\r\n\r\n");
    open.write_all(ask("/").as_bytes()).await.expect("write");
    let first = read_one(&mut open).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    let text = config_of(&server)
        .replace("max_uri_bytes: 1000", "max_uri_bytes: 8000")
        .replace("workers: 2", "workers: 3");
    replace_config(&server, &text);
    server
        .eventually(10, "the new limit applied", async || {
            server.get("one.localhost", &long).await.status == 200
        })
        .await;
    // Every worker has taken it up within its tick; the open connection's next request too.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..8 {
        assert_eq!(server.get("one.localhost", &long).await.status, 200);
    }
    open.write_all(ask(&long).as_bytes()).await.expect("write");
    let second = read_one(&mut open).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "{}",
        &second[..80.min(second.len())]
    );
    assert_eq!(reload_ok(&server).await, Some(1.0));
    server
        .eventually(5, "the restart-only key named", async || {
            server.log().contains("proxy.workers")
        })
        .await;
}

/// Replaces the first `from` by `to` in the server's configuration file.
fn edit(server: &Server, from: &str, to: &str) {
    let text = config_of(server);
    assert!(text.contains(from), "{from:?} not in {text}");
    replace_config(server, &text.replacen(from, to, 1));
}

/// Reads one response (head and `Content-Length` body) from `conn`.
async fn read_one(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

/// A server (its log kept) with one instance, `one`, that answers.
async fn serving_one() -> Server {
    let server = Server::start_logged(|dir| declared(dir, "  - {name: one, image: hello}\n")).await;
    server
        .eventually(10, "one running", async || {
            server.get("one.localhost", "/").await.status == 200
        })
        .await;
    server
}

/// Waits until a listener moved from `old` to `new`: `new` answers GET `path` for `host` with
/// 200, and `old` refuses connections.
async fn moved(
    server: &Server,
    old: std::net::SocketAddr,
    new: std::net::SocketAddr,
    host: &str,
    path: &str,
) {
    server
        .eventually(10, "the new address answers", async || {
            common::try_get(new, host, path).await == Ok(hyper::StatusCode::OK)
        })
        .await;
    server
        .eventually(5, "the old address refuses", async || {
            tokio::net::TcpStream::connect(old).await.is_err()
        })
        .await;
}

/// Issue 15: a reload that changes `proxy.listen` binds the new address and stops accepting on
/// the old one, while a request in flight on a keep-alive connection of the old address is
/// answered (and that connection then closed, as at shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_listen_address_is_taken_over_on_reload() {
    use tokio::io::AsyncWriteExt;
    let server = serving_one().await;
    let old = server.proxy;
    let mut open = tokio::net::TcpStream::connect(old).await.expect("connect");
    open.write_all(b"GET /first HTTP/1.1\r\nHost: one.localhost\r\n\r\n")
        .await
        .expect("write");
    assert!(read_one(&mut open).await.starts_with("HTTP/1.1 200"));
    // In flight on the old address while the proxy moves.
    open.write_all(b"GET /__sleep/2000 HTTP/1.1\r\nHost: one.localhost\r\n\r\n")
        .await
        .expect("write");

    let new: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    edit(
        &server,
        &format!("listen: {old}"),
        &format!("listen: {new}"),
    );
    server.hangup();
    moved(&server, old, new, "one.localhost", "/").await;
    let answer = read_one(&mut open).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("hello from one: /__sleep/2000\n"),
        "{answer}"
    );
    // Then the old address's connection ends, as at shutdown.
    assert!(answer.contains("connection: close"), "{answer}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut open, &mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?} {rest:?}");
    assert_eq!(
        request(new, "GET", "one.localhost", "/after").await.status,
        200
    );
    assert_eq!(reload_ok(&server).await, Some(1.0));
    assert!(
        !server.log().contains("proxy.listen"),
        "no restart asked for: {}",
        server.log()
    );
}

/// Issue 15: a reload to an address that is in use keeps the old listener serving, says which
/// key and address failed, and sets the reload metric to 0; a later reload to a free address
/// binds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_listen_address_in_use_keeps_the_old_listener() {
    let server = serving_one().await;
    let old = server.proxy;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr");
    edit(
        &server,
        &format!("listen: {old}"),
        &format!("listen: {busy}"),
    );
    server
        .eventually(10, "the failed bind reported", async || {
            reload_ok(&server).await == Some(0.0)
        })
        .await;
    assert_eq!(server.get("one.localhost", "/still").await.status, 200);
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("proxy.listen")
            && l.contains(&busy.to_string())
            && l.contains("in use")),
        "{log}"
    );
    // The rest of the file applied all the same; a free address then binds.
    let free: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    edit(
        &server,
        &format!("listen: {busy}"),
        &format!("listen: {free}"),
    );
    server
        .eventually(10, "the free address answers", async || {
            common::try_get(free, "one.localhost", "/").await == Ok(hyper::StatusCode::OK)
        })
        .await;
    assert_eq!(reload_ok(&server).await, Some(1.0));
    drop(taken);
}

/// Issue 15: `admin.listen` moves on reload: the API answers on the new address (its Host
/// guard taking the new port), the old one refuses; a non-loopback address is not taken while
/// the running server has no token (one the new file adds is only read at the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_admin_listen_address_is_taken_over_on_reload() {
    let server = serving_one().await;
    let old = server.admin;
    let new: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    edit(
        &server,
        &format!("listen: {old}"),
        &format!("listen: {new}"),
    );
    let metrics_at = async |addr| request(addr, "GET", "localhost", "/metrics").await.text();
    moved(&server, old, new, "localhost", "/livez").await;
    let host = format!("localhost:{}", new.port());
    assert_eq!(
        request(new, "GET", &host, "/v1/instances/one").await.status,
        200,
        "the Host guard takes the new port"
    );
    assert_eq!(
        sample(
            &metrics_at(new).await,
            "autokill_config_last_reload_successful"
        ),
        Some(1.0)
    );

    // Not to the network without a running token.
    let open: std::net::SocketAddr = ([0, 0, 0, 0], free_port()).into();
    edit(
        &server,
        &format!("listen: {new}\n"),
        &format!("listen: {open}\n  token: s3cret\n"),
    );
    server
        .eventually(10, "the refusal reported", async || {
            sample(
                &metrics_at(new).await,
                "autokill_config_last_reload_successful",
            ) == Some(0.0)
        })
        .await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", open.port()))
            .await
            .is_err(),
        "nothing listens on the open address"
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("admin.listen") && l.contains("admin.token")),
        "{log}"
    );
    assert!(
        log.contains("key=\"admin.token\""),
        "the token named as start-only: {log}"
    );
}

/// Issue 15: `defaults.drain_timeout`, `autokill.jitter`, `runtime.max_concurrent_kills`,
/// `stop_grace` and `start_timeout` apply on reload (no warning); keys that need a restart
/// are named one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_settings_apply_on_reload_and_restart_keys_are_named() {
    use tokio::io::AsyncWriteExt;
    let body = |dir: &std::path::Path| {
        format!(
            "{}defaults:\n  drain_timeout: 30s\n",
            declared(
                dir,
                "  - {name: one, image: hello, autokill: {num_requests: 2}}\n",
            )
        )
    };
    let server = Server::start_logged(body).await;
    server
        .eventually(10, "one running", async || {
            budget(&server, "one").await == Some(2)
                && server.admin_json("/v1/instances/one").await["data"]["instances"][0]["state"]
                    == "running"
        })
        .await;
    let text = config_of(&server)
        .replace("drain_timeout: 30s", "drain_timeout: 1s")
        .replace(
            "stop_grace: 2s",
            "stop_grace: 3s\n  max_concurrent_kills: 3\n  stopping_cgroup: /sys/fs/cgroup/autokill-none",
        )
        .replace("start_timeout: 5s", "start_timeout: 6s")
        .replace("autokill.redb", "elsewhere.redb")
        .replacen("admin:\n", "admin:\n  max_body_size: 64KiB\n", 1)
        + "autokill:\n  jitter: 0.5\nshutdown: leave_instances\n";
    reload_with(&server, &text).await;
    assert_eq!(reload_ok(&server).await, Some(1.0));

    // drain_timeout: one's budget is spent while a request is in flight; the drain gives up
    // after 1 s (30 s before the reload) and the instance is deleted.
    let mut slow = tokio::net::TcpStream::connect(server.proxy)
        .await
        .expect("connect");
    slow.write_all(b"GET /__sleep/60000 HTTP/1.1\r\nHost: one.localhost\r\n\r\n")
        .await
        .expect("write");
    server
        .eventually(5, "the slow request in flight", async || {
            server.upstream_log("one").len() == 1
        })
        .await;
    assert_eq!(server.get("one.localhost", "/last").await.status, 200);
    server
        .eventually(8, "one deleted after the new drain_timeout", async || {
            budget(&server, "one").await.is_none()
        })
        .await;

    // jitter: instances created after the reload draw their budgets.
    let mut drawn = Vec::new();
    for i in 0..8 {
        let (status, v) = server
            .api(
                "POST",
                "/v1/instances",
                serde_json::json!({"name": format!("j{i}"), "image": "hello",
                                   "autokill": {"num_requests": 20}}),
            )
            .await;
        assert!(status.is_success(), "{v}");
        drawn.push(budget(&server, &format!("j{i}")).await.unwrap_or(0));
    }
    assert!(drawn.iter().all(|n| (10..=20).contains(n)), "{drawn:?}");
    assert!(drawn.iter().any(|&n| n < 20), "no budget drawn: {drawn:?}");

    // Named by key: what needs a restart; nothing about what applied.
    let log = server.log();
    for key in [
        "store.path",
        "admin.max_body_size",
        "runtime.stopping_cgroup",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(key) && l.contains("next start")),
            "{key} not named: {log}"
        );
    }
    for key in [
        "drain_timeout",
        "max_concurrent_kills",
        "stop_grace",
        "start_timeout",
        "jitter",
        "shutdown",
        "key=\"runtime\"",
        "key=\"defaults\"",
    ] {
        assert!(!log.contains(key), "{key} named: {log}");
    }
}

/// Issue 15: `runtime.stop_grace` and `runtime.start_timeout` apply on reload to the stops and
/// starts that begin afterwards: both 30 s at start, 1 s after the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_timeouts_apply_on_reload() {
    let server = Server::start_logged(|dir| {
        let runtime = hello_runtime(dir, "")
            .replace("stop_grace: 2s", "stop_grace: 30s")
            .replace("start_timeout: 5s", "start_timeout: 30s");
        // silent never listens; stubborn's shell ignores SIGTERM (its hello does not) and
        // lives on until the SIGKILL that follows the stop grace.
        format!(
            "{runtime}    silent:\n      command: [sleep, \"300\"]\n    stubborn:\n      command: [sh, -c, \"trap '' TERM; {{autokill}} hello --listen 127.0.0.1:{{port}} --name {{name}} & while :; do sleep 1; done\"]\n"
        )
    })
    .await;
    let create = async |name: &str, image: &str| {
        let (status, v) = server
            .api(
                "POST",
                "/v1/instances",
                serde_json::json!({"name": name, "image": image, "autostart": true}),
            )
            .await;
        assert!(status.is_success(), "{v}");
    };
    let state = async |name: &str| {
        server.admin_json(&format!("/v1/instances/{name}")).await["data"]["instances"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    create("stubborn", "stubborn").await;
    server
        .eventually(20, "stubborn running", async || {
            state("stubborn").await == "running"
        })
        .await;
    let text = config_of(&server)
        .replace("stop_grace: 30s", "stop_grace: 1s")
        .replace("start_timeout: 30s", "start_timeout: 1s");
    reload_with(&server, &text).await;
    let (status, v) = server
        .api(
            "PUT",
            "/v1/instances/stubborn/stop",
            serde_json::Value::Null,
        )
        .await;
    assert!(status.is_success(), "{v}");
    server
        .eventually(8, "stubborn stopped after the new stop_grace", async || {
            state("stubborn").await == "stopped"
        })
        .await;
    create("silent", "silent").await;
    server
        .eventually(
            8,
            "silent failed its start after the new start_timeout",
            async || state("silent").await == "stopped",
        )
        .await;
    let log = server.log();
    assert!(
        !log.contains("stop_grace") && !log.contains("start_timeout"),
        "{log}"
    );
}

/// Issue 15: `shutdown` applies on reload: a server started with `stop_instances` (the process
/// runtime's default) and reloaded with `leave_instances` leaves its instances running at
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_setting_applies_on_reload() {
    let mut server = serving_one().await;
    reload_with(
        &server,
        &(config_of(&server) + "shutdown: leave_instances\n"),
    )
    .await;
    let pids = server.instance_pids();
    assert!(!pids.is_empty(), "one's process");
    assert!(server.terminate().success());
    let left = server.instance_pids();
    for pid in &left {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert_eq!(left, pids, "the instance was left running");
}
