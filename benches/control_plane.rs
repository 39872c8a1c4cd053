//! The control plane as the instance count grows, measured against the release binary on
//! loopback, for 100 instances and for `INSTANCES` (default 100,000): every instance stored and
//! stopped with a `time_ms` timer, one in a hundred running (`autokill hello` processes).
//!
//! For each size it prints: creating the instances (batched `POST /v1/instances`), acknowledged
//! writes/s from one client (each its own commit) and from 64 (batched commits), resident memory
//! per stored instance, `GET /metrics` and `GET /v1/instances` (time and size), and start to
//! `/readyz` after `kill -9` (median of 3). With `wrk` on the PATH, also the proxy's requests/s to
//! one running instance (`wrk -t1 -c64 -d3s`) and the server's CPU time per proxied request,
//! so the two sizes can be compared. Both servers run at once and the rates are measured in
//! alternating rounds, writes in `ROUNDS` (default 5), then the proxy in `PROXY_ROUNDS`
//! (default 12): medians are printed, and the ratio large ÷ small as the median of each
//! round's own ratio with its range. Acknowledged writes wait on `fdatasync`, whose latency
//! moves with whatever else uses the disk; a proxy run moves by ±10 % with the machine.
//!
//! `cargo bench --bench control_plane` (builds and uses `target/release/autokill`).
//! `INSTANCES=20000` for a quicker run; `RUNNING` overrides the running share (default 1/100).

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

/// Items per create request (the API's cap is 1,000).
const BATCH: usize = 500;

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
            if let Ok((200, _)) = call(http, admin, "GET", "/readyz", "").await {
                return (server, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "not ready after 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// CPU time the server's own threads have used (user and system), in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        // Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
        let ticks: u64 = stat.ok().map_or(0, |s| {
            s.rsplit_once(')').map_or(0, |(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|t| t.parse::<u64>().ok())
                    .sum()
            })
        });
        // SAFETY: sysconf takes a plain integer.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        ticks as f64 / per_second as f64
    }

    /// Resident memory, from `/proc/PID/status`.
    fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a clean stop, which stops the instances it runs (nothing is left behind).
    fn terminate(mut self) {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One request; the status and the body.
async fn call(
    http: &Http,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Bytes), String> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// How many instances run (`autokill_instances{state="running"}` on `/metrics`).
async fn running_now(http: &Http, admin: SocketAddr) -> Option<u64> {
    let (_, body) = call(http, admin, "GET", "/metrics", "").await.ok()?;
    std::str::from_utf8(&body)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("autokill_instances{state=\"running\"} "))?
        .trim()
        .parse()
        .ok()
}

/// Waits (at most 5 minutes) until `running` instances run: starts go in turn
/// (`runtime.max_concurrent_starts`), so a restart's last ones run some time after `/readyz`.
async fn wait_running(http: &Http, admin: SocketAddr, running: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while running_now(http, admin).await.unwrap_or(0) < running as u64 {
        assert!(
            Instant::now() < deadline,
            "{running} instances did not run within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
                    let path = format!("/v1/instances/w-{c}");
                    if let Ok((200, _)) = call(&http, admin, "PATCH", &path, &body).await {
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

/// Creates `n` instances named `<prefix>-<i>` in batches; returns the time it took.
async fn create(http: &Http, admin: SocketAddr, prefix: &str, n: usize, fields: &str) -> Duration {
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        let items: Vec<String> = chunk
            .iter()
            .map(|i| format!(r#"{{"name":"{prefix}-{i}","image":"hello"{fields}}}"#))
            .collect();
        let body = format!("[{}]", items.join(","));
        let status = call(http, admin, "POST", "/v1/instances", &body).await;
        assert!(
            matches!(status, Ok((200, _))),
            "creating {prefix} instances: {status:?}"
        );
    }
    started.elapsed()
}

/// Timed `GET`: (milliseconds, bytes).
async fn timed_get(http: &Http, admin: SocketAddr, path: &str) -> (f64, usize) {
    let started = Instant::now();
    let size = match call(http, admin, "GET", path, "").await {
        Ok((200, body)) => body.len(),
        other => panic!("GET {path}: {other:?}"),
    };
    (started.elapsed().as_secs_f64() * 1e3, size)
}

/// `wrk -t1 -c64 -d3s` against one running instance through `server`'s proxy: requests/s, and
/// the server's CPU time per request in µs, if wrk runs. The CPU time is the steadier figure
/// on a shared machine: it does not move with how much of the cores wrk and the upstream got.
fn proxy_rate(server: &Server, proxy: SocketAddr, host: &str) -> Option<(f64, f64)> {
    let cpu = server.cpu_seconds();
    let out = Command::new("wrk")
        .args(["-t1", "-c64", "-d3s", "-H", &format!("Host: {host}")])
        .arg(format!("http://{proxy}/"))
        .output()
        .ok()?;
    let cpu = server.cpu_seconds() - cpu;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str, at: usize| {
        text.lines()
            .find(|l| l.contains(prefix))
            .and_then(|l| l.split_whitespace().nth(at))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let rate = field("Requests/sec:", 1)?;
    let requests = field(" requests in ", 0)?;
    Some((rate, cpu * 1e6 / requests.max(1.0)))
}

struct Figures {
    instances: usize,
    running: usize,
    created: Duration,
    sequential: Vec<f64>,
    concurrent: Vec<f64>,
    rss_per_instance: f64,
    metrics: (f64, usize),
    list: (f64, usize),
    ready: Duration,
    proxy: Vec<f64>,
    /// The server's CPU µs per proxied request, per round.
    proxy_cpu: Vec<f64>,
}

/// A server filled with its instances, ready to be measured.
struct Node {
    server: Server,
    _dir: tempfile::TempDir,
    config: PathBuf,
    admin: SocketAddr,
    proxy: SocketAddr,
    figures: Figures,
}

async fn fill(bin: &Path, instances: usize, running: usize, http: &Http) -> Node {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("autokill.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy:\n  listen: {proxy}\nadmin:\n  listen: {admin}\nstore:\n  path: {}\nruntime:\n  start_timeout: 60s\n  images:\n    hello:\n      command: [\"{{autokill}}\", \"hello\", \"--listen\", \"127.0.0.1:{{port}}\"]\n",
            dir.path().join("autokill.redb").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let (server, _) = Server::start(bin, &config, admin, http).await;
    let before = server.rss_bytes();
    let created = create(
        http,
        admin,
        "s",
        instances - running,
        r#","autokill":{"time_ms":3600000}"#,
    )
    .await;
    create(
        http,
        admin,
        "r",
        running,
        r#","autostart":true,"autokill":{"time_ms":3600000}"#,
    )
    .await;
    create(http, admin, "w", 64, "").await;
    // Memory at rest once the running ones run: the controller gives what the burst of
    // creations freed back to the system after a second without work (`TRIM_AFTER_IDLE`).
    let deadline = Instant::now() + Duration::from_secs(300);
    while call(http, proxy, "GET", "/", "").await.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_running(http, admin, running).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_per_instance = (server.rss_bytes().saturating_sub(before)) as f64 / instances as f64;
    Node {
        server,
        _dir: dir,
        config,
        admin,
        proxy,
        figures: Figures {
            instances,
            running,
            created,
            sequential: Vec::new(),
            concurrent: Vec::new(),
            rss_per_instance,
            metrics: (0.0, 0),
            list: (0.0, 0),
            ready: Duration::ZERO,
            proxy: Vec::new(),
            proxy_cpu: Vec::new(),
        },
    }
}

/// One round of the figures that the machine's load moves most (writes wait on `fdatasync`,
/// which other work on the same disk slows), so that the sizes are measured side by side.
async fn round(node: &mut Node, http: &Http) {
    let f = &mut node.figures;
    f.sequential
        .push(writes_per_second(http, node.admin, 1, Duration::from_secs(2)).await);
    f.concurrent
        .push(writes_per_second(http, node.admin, 64, Duration::from_secs(2)).await);
}

/// One proxy run against a node: requests/s and the server's CPU per request.
fn proxy_round(node: &mut Node) {
    let f = &mut node.figures;
    if f.running > 0
        && let Some((rate, cpu)) = proxy_rate(&node.server, node.proxy, "r-0.localhost")
    {
        f.proxy.push(rate);
        f.proxy_cpu.push(cpu);
    }
}

/// The one-off figures, then start to `/readyz` after `kill -9` (median of 3).
async fn finish(node: Node, bin: &Path, http: &Http) -> Figures {
    let Node {
        server,
        config,
        admin,
        mut figures,
        ..
    } = node;
    figures.metrics = timed_get(http, admin, "/metrics").await;
    figures.list = timed_get(http, admin, "/v1/instances").await;
    server.kill9();
    let mut ready = Vec::new();
    for _ in 0..3 {
        let (server, t) = Server::start(bin, &config, admin, http).await;
        ready.push(t);
        // Every instance that ran is running again before the next crash, as before the
        // first: each start then has all of them to remove and start anew.
        wait_running(http, admin, figures.running).await;
        server.kill9();
    }
    ready.sort();
    figures.ready = ready[1];
    // A last start removes what the kill -9 left running; its clean stop stops the rest.
    let (server, _) = Server::start(bin, &config, admin, http).await;
    server.terminate();
    figures
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let large: usize = std::env::var("INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let running_share: usize = std::env::var("RUNNING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let bin = binary();
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut nodes = Vec::new();
    for instances in [100, large] {
        let running = (instances / running_share.max(1)).max(1);
        eprintln!("filling a server with {instances} instances ({running} running) …");
        nodes.push(fill(&bin, instances, running, &http).await);
    }
    // Both servers run throughout; their rounds alternate (ABBA), so a change in the
    // machine's load falls on both.
    for r in 0..rounds {
        eprintln!("round {} of {rounds} …", r + 1);
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            round(&mut nodes[i], &http).await;
        }
    }
    // The proxy on its own rounds, after the writes (whose after-effects, a commit's pages
    // written back or freed memory given back, would otherwise fall into the first seconds of
    // the larger server's run), alternating too. A run moves by ±10 % with the machine, far
    // more than the difference looked for, so there are many short ones, and the ratio
    // printed is the median of each round's own ratio.
    let proxy_rounds: usize = std::env::var("PROXY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    eprintln!("{proxy_rounds} proxy rounds …");
    for r in 0..proxy_rounds {
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            proxy_round(&mut nodes[i]);
        }
    }
    let mut all = Vec::new();
    for node in nodes {
        all.push(finish(node, &bin, &http).await);
    }
    println!("control plane figures (release build, loopback)");
    println!(
        "{:<44} {:>16} {:>16}",
        "figure", all[0].instances, all[1].instances
    );
    let row = |what: &str, f: &dyn Fn(&Figures) -> String| {
        println!("{what:<44} {:>16} {:>16}", f(&all[0]), f(&all[1]));
    };
    row("running instances", &|f| f.running.to_string());
    row("creating them (instances/s)", &|f| {
        format!("{:.0}", f.instances as f64 / f.created.as_secs_f64())
    });
    let rate = |v: &[f64]| median(v).map_or("-".into(), |r| format!("{r:.0}"));
    row("acknowledged writes/s, 1 client (median)", &|f| {
        rate(&f.sequential)
    });
    row("acknowledged writes/s, 64 clients (median)", &|f| {
        rate(&f.concurrent)
    });
    row("resident memory per instance (bytes)", &|f| {
        format!("{:.0}", f.rss_per_instance)
    });
    row("GET /metrics (ms / KiB)", &|f| {
        format!("{:.1} / {:.0}", f.metrics.0, f.metrics.1 as f64 / 1024.0)
    });
    row("GET /v1/instances (ms / KiB)", &|f| {
        format!("{:.1} / {:.0}", f.list.0, f.list.1 as f64 / 1024.0)
    });
    row("kill -9 to /readyz (ms, median of 3)", &|f| {
        format!("{:.0}", f.ready.as_secs_f64() * 1e3)
    });
    row(
        "proxy req/s to one instance (wrk -c64 -d3s, median)",
        &|f| rate(&f.proxy),
    );
    row("proxy CPU µs per request (median)", &|f| {
        median(&f.proxy_cpu).map_or_else(|| "-".into(), |v| format!("{v:.2}"))
    });
    fn sequential(f: &Figures) -> &[f64] {
        &f.sequential
    }
    fn concurrent(f: &Figures) -> &[f64] {
        &f.concurrent
    }
    fn proxied(f: &Figures) -> &[f64] {
        &f.proxy
    }
    fn proxy_cpu(f: &Figures) -> &[f64] {
        &f.proxy_cpu
    }
    type Rates = fn(&Figures) -> &[f64];
    let pick: [(&str, Rates); 4] = [
        ("writes/s, 1 client", sequential),
        ("writes/s, 64 clients", concurrent),
        ("proxy req/s", proxied),
        ("proxy CPU µs per request", proxy_cpu),
    ];
    for (what, v) in pick {
        // Each round's ratio, the two servers measured one right after the other.
        let mut ratios: Vec<f64> = v(&all[1])
            .iter()
            .zip(v(&all[0]))
            .map(|(big, small)| big / small)
            .collect();
        ratios.sort_by(f64::total_cmp);
        if let (Some(mid), Some(low), Some(high)) = (median(&ratios), ratios.first(), ratios.last())
        {
            println!(
                "{what}, large ÷ small (median of {} rounds' ratios, range): {mid:.3} ({low:.2}–{high:.2})",
                ratios.len()
            );
        }
    }
}
