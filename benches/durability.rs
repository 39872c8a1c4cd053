//! Figures of the durable store, measured against the release binary on loopback:
//!
//! * time from start to `/readyz` 200 with 10,000 stored instances (and with none);
//! * acknowledged API writes per second, one client at a time (every change its own commit) and
//!   64 clients at once (changes that arrive together share a commit).
//!
//! `cargo bench --bench durability` (builds and uses `target/release/autokill`). `INSTANCES`
//! overrides the 10,000.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Http = Client<HttpConnector, Full<Bytes>>;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--bin", "autokill"])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cargo build --release failed"
    );
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/autokill")
}

struct Server {
    child: Child,
}

impl Server {
    async fn start(
        bin: &Path,
        config: &Path,
        admin: SocketAddr,
        http: &Http,
    ) -> (Server, Duration) {
        let started = Instant::now();
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "autokill=error")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start autokill: {e}"));
        let server = Server { child };
        loop {
            if let Ok(200) = call(http, admin, "GET", "/readyz", "").await {
                return (server, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not ready after 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    http: &Http,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<u16, String> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// `clients` tasks each PATCH-ing their own instance's lock for `for_how_long`: acknowledged/s.
async fn writes_per_second(
    http: &Http,
    admin: SocketAddr,
    clients: usize,
    for_how_long: Duration,
) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + for_how_long;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, done) = (http.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut lock = true;
                while Instant::now() < deadline {
                    let body = format!(r#"{{"prop":"delete_lock","op":"set","value":{lock}}}"#);
                    if let Ok(200) = call(
                        &http,
                        admin,
                        "PATCH",
                        &format!("/v1/instances/w-{c}"),
                        &body,
                    )
                    .await
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    lock = !lock;
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let instances: usize = std::env::var("INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let bin = binary();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("autokill.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy:\n  listen: 127.0.0.1:{}\nadmin:\n  listen: {admin}\nstore:\n  path: {}\nruntime:\n  images:\n    hello:\n      command: [\"{{autokill}}\", \"hello\", \"--listen\", \"127.0.0.1:{{port}}\"]\n",
            free_port(),
            dir.path().join("autokill.redb").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let http: Http = Client::builder(TokioExecutor::new()).build_http();

    let (server, empty) = Server::start(&bin, &config, admin, &http).await;
    // Stored, stopped instances (no processes): created in batches of 500 per request.
    let created = Instant::now();
    for chunk in (0..instances).collect::<Vec<_>>().chunks(500) {
        let items: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(r#"{{"name":"s-{i}","image":"hello","autokill":{{"num_requests":1000}}}}"#)
            })
            .collect();
        let status = call(
            &http,
            admin,
            "POST",
            "/v1/instances",
            &format!("[{}]", items.join(",")),
        )
        .await;
        assert_eq!(status, Ok(200), "creating instances");
    }
    let created = created.elapsed();
    for c in 0..64 {
        let status = call(
            &http,
            admin,
            "POST",
            "/v1/instances",
            &format!(r#"{{"name":"w-{c}","image":"hello"}}"#),
        )
        .await;
        assert_eq!(status, Ok(200));
    }
    let sequential = writes_per_second(&http, admin, 1, Duration::from_secs(3)).await;
    let concurrent = writes_per_second(&http, admin, 64, Duration::from_secs(3)).await;
    server.kill9();

    let mut ready = Vec::new();
    for _ in 0..3 {
        let (server, t) = Server::start(&bin, &config, admin, &http).await;
        ready.push(t);
        server.kill9();
    }
    ready.sort();
    let size = std::fs::metadata(dir.path().join("autokill.redb")).map_or(0, |m| m.len());
    println!("durability figures (release build, loopback)");
    println!(
        "  start to /readyz, empty store:            {:>8.1} ms",
        empty.as_secs_f64() * 1e3
    );
    println!(
        "  start to /readyz, {instances} instances:     {:>8.1} ms (median of 3 after kill -9; store {:.1} MiB)",
        ready[1].as_secs_f64() * 1e3,
        size as f64 / 1048576.0
    );
    println!(
        "  creating them, 500 per request:           {:>8.0} instances/s",
        instances as f64 / created.as_secs_f64()
    );
    println!(
        "  acknowledged writes, 1 client:            {:>8.0} /s (each its own commit)",
        sequential
    );
    println!(
        "  acknowledged writes, 64 clients:          {:>8.0} /s (batched commits)",
        concurrent
    );
}
