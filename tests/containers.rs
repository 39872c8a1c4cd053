//! The docker runtime against a real container engine: Podman's Docker-compatible service (started
//! on a temporary socket when `podman` is installed) or the engine at `AUTOKILL_TEST_DOCKER_HOST`
//! (else `DOCKER_HOST`). Each test imports its own small image (this build's `autokill` binary,
//! running `hello` on port 8080, with its libraries), runs real containers, and removes
//! everything it made: containers of its store, images, and the service it started.
//!
//! Without an engine each test says `SKIPPED: …`; with `AUTOKILL_TEST_REQUIRE=all` it fails.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autokill::config::{ImageConfig, RuntimeConfig, RuntimeKind};
use autokill::runtime::docker::{
    DockerRuntime, LABEL_INSTANCE, LABEL_STORE, Listed, container_name, list_labelled,
};
use autokill::runtime::{InstanceSpec, Runtime, RuntimeError, RuntimeEvent};
use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, CreateImageOptions, RemoveContainerOptions,
    RemoveImageOptions,
};
use common::{BIN, Server, free_port, skip, try_get, which};
use futures_util::StreamExt;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

/// What the image runs: `hello` on the container port, answering `/__exit/<code>`.
const PORT: u16 = 8080;
/// What busybox's httpd serves in the second test image (as `.ci/run` builds it too).
const HTTPD_PAGE: &str = "hello from busybox httpd\n";
/// Podman starts a container in about a second here; a loaded CI machine needs more.
const START_TIMEOUT: &str = "60s";
/// The longest any wait for a container's state may take before the test fails.
const PATIENCE: u64 = 90;

// ---- the engine ----------------------------------------------------------------------------

/// A container engine for one test, and what the test made in it.
struct Engine {
    /// `unix:///…` or `tcp://…`.
    host: String,
    docker: Docker,
    /// The Podman service this test started, if it did.
    service: Option<Service>,
    /// The image the test runs (`localhost/autokill-test:<pid>-<n>`).
    image: String,
    /// Store labels whose containers are removed at the end.
    stores: std::sync::Mutex<Vec<String>>,
    /// Images this test imported, removed at the end.
    images: std::sync::Mutex<Vec<String>>,
}

/// A `podman system service` on a socket in a temporary directory.
struct Service {
    child: Option<Child>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    fn start(socket: &Path) -> std::io::Result<Child> {
        // A socket left by a killed service would make the new one fail to listen.
        let _ = std::fs::remove_file(socket);
        Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Engine {
    /// The engine named by the environment, else a Podman service of this test's own.
    async fn open() -> Option<Engine> {
        let named = ["AUTOKILL_TEST_DOCKER_HOST", "DOCKER_HOST"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|h| !h.trim().is_empty()));
        match named {
            Some(host) => Engine::at(host.trim().to_owned(), None).await,
            None => Engine::own().await,
        }
    }

    /// A Podman service of this test's own, which it may stop and start again.
    async fn own() -> Option<Engine> {
        if which("podman").is_none() {
            skip(
                "docker",
                "no container engine: install podman (its service is started on a temporary \
                 socket) or set AUTOKILL_TEST_DOCKER_HOST",
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("podman.sock");
        let child = match Service::start(&socket) {
            Ok(child) => child,
            Err(err) => {
                skip("docker", &format!("podman system service: {err}"));
                return None;
            }
        };
        let host = format!("unix://{}", socket.display());
        let service = Service {
            child: Some(child),
            socket,
            _dir: dir,
        };
        Engine::at(host, Some(service)).await
    }

    async fn at(host: String, service: Option<Service>) -> Option<Engine> {
        let docker = match connect(&host).await {
            Ok(docker) => docker,
            Err(why) => {
                skip(
                    "docker",
                    &format!("no container engine answers at {host}: {why}"),
                );
                return None;
            }
        };
        static IMAGES: AtomicUsize = AtomicUsize::new(0);
        let image = format!(
            "localhost/autokill-test:{}-{}",
            std::process::id(),
            IMAGES.fetch_add(1, Ordering::Relaxed)
        );
        let engine = Engine {
            host,
            docker,
            service,
            image,
            stores: std::sync::Mutex::new(Vec::new()),
            images: std::sync::Mutex::new(Vec::new()),
        };
        if let Err(why) = engine.import_image().await {
            panic!("importing the test image into {}: {why}", engine.host);
        }
        Some(engine)
    }

    /// Imports this build's `autokill` (with the libraries it loads) as the test image.
    async fn import_image(&self) -> Result<(), String> {
        let cmd = [
            "/autokill",
            "hello",
            "--listen",
            &format!("0.0.0.0:{PORT}"),
            "--allow-exit",
        ];
        self.import(rootfs_tar().clone(), &self.image, &cmd, PORT)
            .await
    }

    /// Imports `tar` as the image `reference` that runs `cmd` and exposes `port`. The import
    /// only makes the file system; a container of it committed with the command and the port
    /// gives the image its settings (Podman's import ignores all but one change). The image is
    /// removed when the test ends.
    async fn import(
        &self,
        tar: Vec<u8>,
        reference: &str,
        cmd: &[&str],
        port: u16,
    ) -> Result<(), String> {
        if let Ok(mut images) = self.images.lock() {
            images.push(reference.to_owned());
        }
        let rootfs = format!("{reference}-rootfs");
        let options = CreateImageOptions {
            from_src: Some("-".to_owned()),
            // With its tag: Podman ignores `tag` on an import.
            repo: Some(rootfs.clone()),
            ..Default::default()
        };
        // Every test imports the same tarball, so their images share its layer; a test that
        // removes its image while another commits one can remove the layer under it, and Podman
        // answers "layer not known". The import is then tried again (the layer is made anew).
        let tar = bytes::Bytes::from(tar);
        for attempt in 1.. {
            let body = bollard::body_full(tar.clone());
            let mut progress = self
                .docker
                .create_image(Some(options.clone()), Some(body), None);
            let mut failed = None;
            while let Some(item) = progress.next().await {
                match item {
                    Err(e) => failed = Some(e.to_string()),
                    Ok(info) => {
                        if let Some(detail) = info.error_detail {
                            failed = Some(detail.message.unwrap_or_default());
                        }
                    }
                }
            }
            match failed {
                None => break,
                Some(why) if why.contains("layer not known") && attempt < 3 => continue,
                Some(why) => return Err(why),
            }
        }
        let settings = ContainerCreateBody {
            image: Some(rootfs.clone()),
            cmd: Some(cmd.iter().map(|a| (*a).to_owned()).collect()),
            exposed_ports: Some(vec![format!("{port}/tcp")]),
            ..Default::default()
        };
        let made = self
            .docker
            .create_container(None::<CreateContainerOptions>, settings)
            .await
            .map_err(|e| e.to_string())?;
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let commit = CommitContainerOptions {
            container: Some(made.id.clone()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            pause: false,
            ..Default::default()
        };
        let committed = self
            .docker
            .commit_container(commit, ContainerConfig::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = self.docker.remove_container(&made.id, Some(force())).await;
        let _ = self
            .docker
            .remove_image(&rootfs, None::<RemoveImageOptions>, None)
            .await;
        committed
    }

    /// busybox's httpd serving [`HTTPD_PAGE`] on port 8000, ignoring SIGTERM as PID 1:
    /// `AUTOKILL_TEST_HTTPD_IMAGE` (CI builds it), else imported here from a static busybox;
    /// `None` (the test is skipped, or fails under `AUTOKILL_TEST_REQUIRE`) without either.
    async fn httpd_image(&self) -> Option<String> {
        let image = self.make_httpd_image().await;
        if image.is_none() {
            skip(
                "busybox",
                "no busybox httpd image: install busybox-static or set AUTOKILL_TEST_HTTPD_IMAGE",
            );
        }
        image
    }

    /// [`Engine::httpd_image`] without the skip.
    async fn make_httpd_image(&self) -> Option<String> {
        if let Ok(image) = std::env::var("AUTOKILL_TEST_HTTPD_IMAGE") {
            return Some(image);
        }
        let busybox = which("busybox")?;
        // Only a static busybox runs in an image without libraries.
        let ldd = Command::new("ldd").arg(&busybox).output().ok()?;
        if ldd.status.success() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).ok()?;
        std::fs::create_dir_all(root.join("www")).ok()?;
        std::fs::copy(&busybox, root.join("bin/busybox")).ok()?;
        std::os::unix::fs::symlink("busybox", root.join("bin/httpd")).ok()?;
        std::fs::write(root.join("www/index.html"), HTTPD_PAGE).ok()?;
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["-cf", "-", "."])
            .output()
            .ok()?;
        let image = format!("{}-httpd", self.image);
        let cmd = ["/bin/httpd", "-f", "-p", "8000", "-h", "/www"];
        self.import(tar.stdout, &image, &cmd, 8000).await.ok()?;
        Some(image)
    }

    /// Removes every container of `store` (the canonical store path) when the test ends.
    fn owns(&self, store: &str) {
        if let Ok(mut stores) = self.stores.lock() {
            stores.push(store.to_owned());
        }
    }

    /// This store's containers, running or not (what `podman ps -a` shows of it).
    async fn containers(&self, store: &str) -> Vec<Listed> {
        of_store(&self.host, store).await.expect("list containers")
    }

    /// The container named `autokill-<name>`: its id, state and start time.
    async fn container(&self, name: &str) -> Option<(String, String, String)> {
        let c = self
            .docker
            .inspect_container(&container_name(name), None)
            .await
            .ok()?;
        let state = c.state.unwrap_or_default();
        Some((
            c.id.unwrap_or_default(),
            state.status.map(|s| s.to_string()).unwrap_or_default(),
            state.started_at.unwrap_or_default(),
        ))
    }

    /// Kills the API service (containers keep running), as an engine restart does.
    fn stop_service(&mut self) {
        if let Some(service) = &mut self.service {
            service.stop();
        }
    }

    /// Starts the API service again on the same socket.
    async fn start_service(&mut self) {
        let Some(service) = &mut self.service else {
            return;
        };
        service.child = Some(Service::start(&service.socket).expect("restart podman service"));
        connect(&self.host)
            .await
            .expect("the service answers again");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Runs on a thread of its own: a test's tokio runtime cannot block on its own futures.
        let (docker, host) = (self.docker.clone(), self.host.clone());
        let images = self.images.lock().map(|i| i.clone()).unwrap_or_default();
        let stores = self.stores.lock().map(|s| s.clone()).unwrap_or_default();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                for store in stores {
                    for c in of_store(&host, &store).await.unwrap_or_default() {
                        let _ = docker.remove_container(&c.id, Some(force())).await;
                    }
                }
                // Podman may fail a removal that meets another test's image work: try again.
                for image in &images {
                    for _ in 0..5 {
                        let options = RemoveImageOptions {
                            force: true,
                            ..Default::default()
                        };
                        match docker.remove_image(image, Some(options), None).await {
                            Ok(_) => break,
                            Err(bollard::errors::Error::DockerResponseServerError {
                                status_code: 404,
                                ..
                            }) => break,
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                }
            });
        });
        let _ = cleanup.join();
        // The service (if ours) stops when `self.service` drops, after the cleanup above.
    }
}

/// The containers labelled with `store`, running or not.
async fn of_store(host: &str, store: &str) -> Result<Vec<Listed>, String> {
    list_labelled(host, &format!("{LABEL_STORE}={store}")).await
}

fn force() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    }
}

/// A client of `host` that answers, tried for up to 20 s (a fresh service takes a moment).
async fn connect(host: &str) -> Result<Docker, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = match Docker::connect_with_host(host) {
            Ok(docker) => docker.negotiate_version().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(docker) => return Ok(docker),
            Err(why) if Instant::now() > deadline => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The image's root file system as a tar archive, built once per test binary: this build's
/// `autokill` (stripped when `objcopy` is there, which makes it a fifth the size) and the
/// shared libraries `ldd` says it loads.
fn rootfs_tar() -> &'static Vec<u8> {
    static ROOTFS: OnceLock<Vec<u8>> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let binary = root.join("autokill");
        let stripped = which("objcopy").is_some_and(|_| {
            Command::new("objcopy")
                .args(["--strip-all", BIN])
                .arg(&binary)
                .status()
                .is_ok_and(|s| s.success())
        });
        if !stripped {
            std::fs::copy(BIN, &binary).expect("copy autokill");
        }
        let ldd = Command::new("ldd").arg(BIN).output().expect("ldd");
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let target = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().expect("a library has a folder"))
                .expect("library folder");
            std::fs::copy(lib, &target).expect("copy library");
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["-cf", "-", "."])
            .output()
            .expect("tar");
        assert!(tar.status.success(), "tar failed");
        tar.stdout
    })
}

// ---- autokill in front of it ---------------------------------------------------------------

/// The `runtime:` block: the table's `hello` runs the test image with its own command, naming
/// the instance, on port 8080.
fn runtime(engine: &Engine, extra: &str) -> String {
    format!(
        r#"runtime:
  kind: docker
  docker_host: {host}
  stop_grace: 1s
  start_timeout: {START_TIMEOUT}
  images:
    hello:
      image: {image}
      command: [/autokill, hello, --listen, '0.0.0.0:{{port}}', --name, '{{name}}', --allow-exit]
      port: {PORT}
{extra}"#,
        host = engine.host,
        image = engine.image,
    )
}

/// autokill on `engine`; its containers are removed with the engine's cleanup.
async fn serve(engine: &Engine, extra: &str) -> (Server, String) {
    let body = runtime(engine, extra);
    let server = Server::start(move |_| body).await;
    let store = store_label(server.dir.path());
    engine.owns(&store);
    (server, store)
}

/// The label value autokill puts on its containers: the canonical store path.
fn store_label(dir: &Path) -> String {
    let path = dir.join("autokill.redb");
    std::fs::canonicalize(&path)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Creates an instance and waits (through the API's `wait_timeout_ms`) until it runs.
async fn running(server: &Server, body: Value) -> Value {
    let mut body = body;
    body["autostart"] = json!(true);
    body["wait_timeout_ms"] = json!(PATIENCE * 1000);
    let v = server
        .api_ok("POST", "/v1/instances", body.clone(), "instances")
        .await;
    assert_eq!(v["state"], "running", "{body} -> {v}");
    v
}

/// The instance as the API shows it, or `None` once it is gone.
async fn instance(server: &Server, name: &str) -> Option<Value> {
    let (status, v) = server
        .api("GET", &format!("/v1/instances/{name}"), Value::Null)
        .await;
    (status == StatusCode::OK).then(|| v["data"]["instances"][0].clone())
}

/// Waits until `cond` holds, polling every 100 ms, for at most [`PATIENCE`] seconds.
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(PATIENCE);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the instance through the API and waits until it is stopped.
async fn stopped(server: &Server, name: &str) {
    let path = format!("/v1/instances/{name}/stop");
    server.api_ok("PUT", &path, Value::Null, "instances").await;
    until(&format!("{name} stops"), async || {
        instance(server, name)
            .await
            .is_some_and(|v| v["state"] == "stopped")
    })
    .await;
}

/// Makes a template of the stopped instance `name`; its image's name.
async fn template(server: &Server, name: &str) -> String {
    let body = json!({ "name": name });
    let t = server
        .api_ok("POST", "/v1/instances/templates", body, "instances")
        .await;
    let image = format!("autokill/template-{}", t["uuid"].as_str().expect("uuid"));
    assert_eq!(t["image"], image);
    image
}

/// Makes the instance's process exit with `code`, through the proxy.
async fn exit_with(server: &Server, name: &str, code: i32) {
    let r = server
        .get(&format!("{name}.localhost"), &format!("/__exit/{code}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
}

// ---- the tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_serves_through_the_proxy_and_num_requests_is_exact() {
    let Some(engine) = Engine::open().await else {
        return;
    };
    let (server, store) = serve(&engine, "").await;
    const LIMIT: u64 = 20;
    const SENT: usize = 70;
    // An image reference outside the table: the image's own command, on its exposed port.
    let v = running(
        &server,
        json!({"name": "web", "image": engine.image, "autokill": {"num_requests": LIMIT}}),
    )
    .await;
    // The proxy forwards to the port the engine published on 127.0.0.1.
    let (id, status, _) = engine.container("web").await.expect("container");
    assert_eq!(status, "running");
    let inspected = engine
        .docker
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let binding = inspected
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&format!("{PORT}/tcp")).cloned().flatten())
        .and_then(|b| b.into_iter().next())
        .expect("a published port");
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(v["private_ip"], "127.0.0.1");
    assert_eq!(
        v["private_port"].to_string(),
        binding.host_port.expect("host port")
    );
    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(
        labels.get(LABEL_INSTANCE),
        v["uuid"].as_str().map(str::to_owned).as_ref()
    );
    assert_eq!(labels.get(LABEL_STORE), Some(&store));

    // 50 clients race for SENT requests; exactly LIMIT reach the container.
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (sent, proxy) = (std::sync::Arc::clone(&sent), server.proxy);
        clients.spawn(async move {
            let mut answers = Vec::new();
            while sent.fetch_add(1, Ordering::Relaxed) < SENT {
                answers.push(common::request(proxy, "GET", "web.localhost", "/").await);
            }
            answers
        });
    }
    let mut forwarded = 0;
    let mut refused = 0;
    while let Some(answers) = clients.join_next().await {
        for r in answers.expect("client") {
            match r.status {
                StatusCode::OK => {
                    assert_eq!(r.text(), "hello from hello: /\n");
                    forwarded += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND => refused += 1,
                other => panic!("unexpected {other}: {}", r.text()),
            }
        }
    }
    assert_eq!(
        (forwarded, refused),
        (LIMIT as usize, SENT - LIMIT as usize)
    );
    // Then it is killed: gone from the API and from the engine (`podman ps -a`).
    until("the instance is deleted", async || {
        instance(&server, "web").await.is_none()
    })
    .await;
    until("its container is removed", async || {
        engine.containers(&store).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_meet_the_restart_policy_first_then_autodestroy() {
    let Some(engine) = Engine::open().await else {
        return;
    };
    let (server, store) = serve(&engine, "").await;
    let mut cases = Vec::new();
    for restart in ["never", "on-failure"] {
        for destroy in ["OFF", "ON_FAILURE", "ON_SUCCESS", "ALWAYS"] {
            for code in [0, 3] {
                let name = format!("{restart}-{destroy}-{code}")
                    .to_ascii_lowercase()
                    .replace('_', "-");
                // SPEC: on-failure restarts a failure before autodestroy is considered.
                let expect = if restart == "on-failure" && code != 0 {
                    "restarted"
                } else if destroy == "ALWAYS"
                    || (destroy == "ON_FAILURE" && code != 0)
                    || (destroy == "ON_SUCCESS" && code == 0)
                {
                    "destroyed"
                } else {
                    "stopped"
                };
                cases.push((name, restart, destroy, code, expect));
            }
        }
    }
    for (name, restart, destroy, _, _) in &cases {
        let body = json!({"name": name, "image": "hello", "autostart": true,
            "restart_policy": restart, "autodestroy": destroy});
        server
            .api_ok("POST", "/v1/instances", body, "instances")
            .await;
    }
    let mut first_ids = HashMap::new();
    for (name, ..) in &cases {
        until(&format!("{name} runs"), async || {
            instance(&server, name)
                .await
                .is_some_and(|v| v["state"] == "running")
        })
        .await;
        first_ids.insert(
            name.clone(),
            engine.container(name).await.expect("container").0,
        );
    }
    for (name, _, _, code, _) in &cases {
        exit_with(&server, name, *code).await;
    }
    for (name, _, _, code, expect) in &cases {
        let what = format!("{name} {expect}");
        match *expect {
            "destroyed" => {
                until(&what, async || instance(&server, name).await.is_none()).await;
                until(&what, async || engine.container(name).await.is_none()).await;
            }
            "stopped" => {
                until(&what, async || {
                    instance(&server, name).await.is_some_and(|v| {
                        v["state"] == "stopped"
                            && v["exit_code"] == *code
                            && v["stop_cause"] == "exited"
                    })
                })
                .await;
                let (_, status, _) = engine.container(name).await.expect("kept");
                assert_eq!(status, "exited", "{what}");
            }
            _ => {
                // Started again: the same container, running, its last exit code shown.
                until(&what, async || {
                    instance(&server, name)
                        .await
                        .is_some_and(|v| v["state"] == "running" && v["exit_code"] == *code)
                })
                .await;
                let (id, status, _) = engine.container(name).await.expect("kept");
                assert_eq!(
                    (&id, status.as_str()),
                    (&first_ids[name], "running"),
                    "{what}"
                );
                let r = server.get(&format!("{name}.localhost"), "/").await;
                assert_eq!(r.status, StatusCode::OK, "{what}");
            }
        }
    }
    let destroyed = cases.iter().filter(|c| c.4 == "destroyed").count();
    assert_eq!(
        engine.containers(&store).await.len(),
        cases.len() - destroyed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_is_killed_after_its_time_unless_delete_locked() {
    let Some(engine) = Engine::open().await else {
        return;
    };
    let (server, store) = serve(&engine, "").await;
    for name in ["free", "locked"] {
        running(
            &server,
            json!({"name": name, "image": "hello", "memory_mb": 64,
                "autokill": {"time_ms": 1500}}),
        )
        .await;
    }
    // memory_mb reaches the engine.
    let (id, ..) = engine.container("free").await.expect("container");
    let inspected = engine
        .docker
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let memory = inspected.host_config.and_then(|h| h.memory);
    assert_eq!(memory, Some(64 << 20));
    let lock = json!({"prop": "delete_lock", "op": "set", "value": true});
    server
        .api_ok("PATCH", "/v1/instances/locked", lock, "instances")
        .await;
    // The engine's stop: `hello` ends on SIGTERM with 0, within the grace period.
    for name in ["free", "locked"] {
        stopped(&server, name).await;
    }
    assert_eq!(
        instance(&server, "locked").await.expect("locked")["exit_code"],
        0
    );
    until("free is killed after its stopped time", async || {
        engine.container("free").await.is_none() && instance(&server, "free").await.is_none()
    })
    .await;
    // The lock holds: well past its time it is still there, stopped.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        instance(&server, "locked").await.expect("locked")["state"],
        "stopped"
    );
    assert_eq!(engine.container("locked").await.expect("kept").1, "exited");
    // Cleared: what came due fires at once.
    let unlock = json!({"prop": "delete_lock", "op": "set", "value": false});
    server
        .api_ok("PATCH", "/v1/instances/locked", unlock, "instances")
        .await;
    until("locked is killed once unlocked", async || {
        engine.containers(&store).await.is_empty()
    })
    .await;
    assert!(instance(&server, "locked").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_is_a_committed_image_that_clones_run_and_that_goes_with_it() {
    let Some(engine) = Engine::open().await else {
        return;
    };
    let (server, store) = serve(&engine, "").await;
    running(&server, json!({"name": "base", "image": "hello"})).await;
    stopped(&server, "base").await;
    let image = template(&server, "base").await;
    // Clones run the committed image: its command still names the instance it was made from.
    for name in ["clone-1", "clone-2"] {
        let v = running(&server, json!({"name": name, "template": {"name": "base"}})).await;
        assert_eq!(v["image"], image);
        let r = server.get(&format!("{name}.localhost"), "/x").await;
        assert_eq!(
            (r.status, r.text()),
            (StatusCode::OK, "hello from base: /x\n".to_owned())
        );
    }
    assert!(engine.docker.inspect_image(&image).await.is_ok());
    // The template's own container became the image.
    assert!(engine.container("base").await.is_none());
    // Deleted while clones use it, the image stays until the last clone goes.
    let (status, v) = server
        .api("DELETE", "/v1/instances/templates/base", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    server
        .api_ok("DELETE", "/v1/instances/clone-1", Value::Null, "instances")
        .await;
    until("clone-1's container is removed", async || {
        engine.container("clone-1").await.is_none()
    })
    .await;
    assert!(
        engine.docker.inspect_image(&image).await.is_ok(),
        "clone-2 still runs it"
    );
    server
        .api_ok("DELETE", "/v1/instances/clone-2", Value::Null, "instances")
        .await;
    until("the template's image is removed", async || {
        engine.docker.inspect_image(&image).await.is_err()
    })
    .await;
    assert!(engine.containers(&store).await.is_empty());
    // And a template deleted with no clone left takes its image at once.
    running(&server, json!({"name": "solo", "image": "hello"})).await;
    stopped(&server, "solo").await;
    let image = template(&server, "solo").await;
    until("solo's image is committed", async || {
        engine.docker.inspect_image(&image).await.is_ok()
    })
    .await;
    let (status, v) = server
        .api("DELETE", "/v1/instances/templates/solo", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    until("solo's image is removed", async || {
        engine.docker.inspect_image(&image).await.is_err()
    })
    .await;
}

/// autokill on a fixed store and ports, so that it can be killed and started again.
struct Node {
    config: PathBuf,
    admin: SocketAddr,
    proxy: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Node {
    fn new(engine: &Engine) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.path().join("autokill.yaml");
        let text = format!(
            "proxy:\n  listen: {proxy}\n  workers: 2\nadmin:\n  listen: {admin}\nstore:\n  path: {}\n{}",
            dir.path().join("autokill.redb").display(),
            runtime(engine, "")
        );
        std::fs::write(&config, text).expect("write config");
        Node {
            config,
            admin,
            proxy,
            child: None,
            dir,
        }
    }

    /// Starts autokill and waits for `/readyz`; returns how long that took.
    async fn start(&mut self) -> Duration {
        let started = Instant::now();
        self.child = Some(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "autokill=warn")
                .stdin(Stdio::null())
                .spawn()
                .expect("start autokill"),
        );
        loop {
            if try_get(self.admin, "localhost", "/readyz").await == Ok(StatusCode::OK) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(PATIENCE),
                "not ready"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn api(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let r = common::request_with(self.admin, method, path, text.as_bytes(), &[]).await;
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    async fn instance(&self, name: &str) -> Option<Value> {
        let (status, v) = self
            .api("GET", &format!("/v1/instances/{name}"), Value::Null)
            .await;
        (status == StatusCode::OK).then(|| v["data"]["instances"][0].clone())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_running_containers_are_adopted_and_exits_meanwhile_judged() {
    let Some(engine) = Engine::open().await else {
        return;
    };
    let mut node = Node::new(&engine);
    node.start().await;
    let store = store_label(node.dir.path());
    engine.owns(&store);
    for (name, extra) in [
        ("keep", json!({"autokill": {"num_requests": 6}})),
        ("fails", json!({"autodestroy": "ON_FAILURE"})),
        ("quits", json!({"autodestroy": "ON_FAILURE"})),
    ] {
        let mut body = json!({"name": name, "image": "hello", "autostart": true,
            "wait_timeout_ms": PATIENCE * 1000});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let (status, v) = node.api("POST", "/v1/instances", body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["instances"][0]["state"], "running", "{v}");
    }
    let forwarded = async |node: &Node, n: usize| {
        let mut ok = 0;
        for _ in 0..n {
            if try_get(node.proxy, "keep.localhost", "/").await == Ok(StatusCode::OK) {
                ok += 1;
            }
        }
        ok
    };
    assert_eq!(forwarded(&node, 2).await, 2);
    let before = engine.container("keep").await.expect("keep");
    let addr = |v: &Value| -> SocketAddr {
        format!("127.0.0.1:{}", v["private_port"])
            .parse()
            .expect("address")
    };
    let fails = addr(&node.instance("fails").await.expect("fails"));
    let quits = addr(&node.instance("quits").await.expect("quits"));
    // A container of this store that the store does not know.
    let stranger = Uuid::new_v4();
    let body = ContainerCreateBody {
        image: Some(engine.image.clone()),
        labels: Some(HashMap::from([
            (LABEL_STORE.to_owned(), store.clone()),
            (LABEL_INSTANCE.to_owned(), stranger.to_string()),
        ])),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some("autokill-stranger".to_owned()),
        ..Default::default()
    };
    let made = engine
        .docker
        .create_container(Some(options), body)
        .await
        .expect("stranger");
    engine
        .docker
        .start_container(&made.id, None)
        .await
        .expect("start stranger");

    node.kill9();
    // While autokill is down, two containers exit: with 3 and with 0.
    for (addr, code) in [(fails, 3), (quits, 0)] {
        let status = try_get(addr, "x", &format!("/__exit/{code}")).await;
        assert_eq!(status, Ok(StatusCode::OK));
    }
    until("both exited", async || {
        let mut exited = 0;
        for name in ["fails", "quits"] {
            if engine
                .container(name)
                .await
                .is_some_and(|c| c.1 == "exited")
            {
                exited += 1;
            }
        }
        exited == 2
    })
    .await;

    node.start().await;
    // Adopted, not restarted: the same container, started at the same moment, still serving.
    let after = engine.container("keep").await.expect("keep");
    assert_eq!(after, before);
    assert_eq!(
        node.instance("keep").await.expect("keep")["state"],
        "running"
    );
    // Its budget goes on from the stored reservation (at least the 2 served, and what may
    // have been reserved ahead): never more than 6 in all, and not from 0 again.
    let more = forwarded(&node, 10).await;
    assert!(
        (1..=4).contains(&more),
        "{more} more forwarded after the restart"
    );
    // Judged by the real exit codes: ON_FAILURE destroys the 3, keeps the 0.
    until("fails is destroyed", async || {
        node.instance("fails").await.is_none() && engine.container("fails").await.is_none()
    })
    .await;
    let q = node.instance("quits").await.expect("quits is kept");
    assert_eq!(
        (&q["state"], &q["exit_code"]),
        (&json!("stopped"), &json!(0))
    );
    // The stranger is removed.
    assert!(engine.container("stranger").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reconnects_and_an_exit_while_the_engine_was_down_is_seen_once() {
    // This test restarts the engine's API service, so it needs one of its own.
    let Some(mut engine) = Engine::own().await else {
        return;
    };
    let store = format!("test-{}", Uuid::new_v4());
    engine.owns(&store);
    let (runtime, mut events) = docker_runtime(&engine, &store, &engine.image).await;
    assert!(runtime.adopt(&[]).await.expect("adopt").is_empty());
    let spec = |name: &str| InstanceSpec {
        id: Uuid::new_v4(),
        name: name.into(),
        image: "hello".to_owned(),
        memory_mb: None,
    };
    let one = spec("one");
    runtime.create(&one).await.expect("create");
    let addr = runtime.start(one.id).await.expect("start");

    engine.stop_service();
    let next = async |events: &mut mpsc::UnboundedReceiver<RuntimeEvent>| {
        tokio::time::timeout(Duration::from_secs(PATIENCE), events.recv())
            .await
            .expect("an event in time")
            .expect("events open")
    };
    assert!(
        matches!(
            next(&mut events).await,
            RuntimeEvent::Engine {
                unreachable: Some(_)
            }
        ),
        "the stream's end is noticed"
    );
    // Meanwhile a create fails, naming the engine, and leaves nothing behind.
    let two = spec("two");
    match runtime.create(&two).await {
        Err(err @ RuntimeError::Engine { .. }) => {
            assert!(err.to_string().contains(&engine.host), "{err}")
        }
        other => panic!("create with the engine down: {other:?}"),
    }
    // The container does not need the API service: it exits with 3 while the service is down.
    assert_eq!(try_get(addr, "x", "/__exit/3").await, Ok(StatusCode::OK));
    tokio::time::sleep(Duration::from_secs(2)).await;
    engine.start_service().await;
    let mut seen = Vec::new();
    while !(seen.contains(&RuntimeEvent::Engine { unreachable: None })
        && seen
            .iter()
            .any(|e| matches!(e, RuntimeEvent::Exited { .. })))
    {
        seen.push(next(&mut events).await);
    }
    assert!(
        seen.contains(&RuntimeEvent::Exited {
            id: one.id,
            exit_code: 3
        }),
        "{seen:?}"
    );
    // Exactly once: the replayed `die` and the list after the reconnect do not repeat it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Ok(event) = events.try_recv() {
        panic!("no second report, but {event:?} after {seen:?}");
    }
    let left = engine.containers(&store).await;
    assert_eq!(left.len(), 1, "the failed create made nothing");
    runtime.delete(one.id).await.expect("delete");
    assert!(engine.containers(&store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_engine_is_down_readyz_fails_and_creates_are_refused() {
    let Some(mut engine) = Engine::own().await else {
        return;
    };
    let (server, store) = serve(&engine, "").await;
    engine.stop_service();
    until("/readyz says not ready", async || {
        try_get(server.admin, "localhost", "/readyz").await == Ok(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    // Container names are the engine's: unique across the tests that share it.
    let body = json!({"name": "after-outage", "image": "hello", "autostart": true});
    let (status, v) = server.api("POST", "/v1/instances", body.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let message = v["errors"][0]["message"].as_str().or(v["message"].as_str());
    assert!(
        message.is_some_and(|m| m.contains("container engine cannot be reached")
            && m.contains("nothing was created")),
        "{v}"
    );
    let list = server.admin_json("/v1/instances").await;
    assert_eq!(list["data"]["instances"], json!([]), "nothing half-made");
    engine.start_service().await;
    until("/readyz says ready again", async || {
        try_get(server.admin, "localhost", "/readyz").await == Ok(StatusCode::OK)
    })
    .await;
    assert!(engine.containers(&store).await.is_empty());
    running(&server, body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_are_the_instances_start_error() {
    let Some(engine) = Engine::open().await else {
        return;
    };
    let (server, store) = serve(&engine, "").await;
    // A missing image is pulled; no registry is reachable here, so the pull fails.
    let body =
        json!({"name": "nope", "image": "localhost/autokill-missing:never", "autostart": true});
    server
        .api_ok("POST", "/v1/instances", body, "instances")
        .await;
    // The name is taken by a container that is not this instance's.
    let taken = ContainerCreateBody {
        image: Some(engine.image.clone()),
        // Of this store (so that the cleanup finds it), but of no instance.
        labels: Some(HashMap::from([(LABEL_STORE.to_owned(), store)])),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(container_name("taken")),
        ..Default::default()
    };
    engine
        .docker
        .create_container(Some(options), taken)
        .await
        .expect("holder");
    let body = json!({"name": "taken", "image": "hello", "autostart": true});
    server
        .api_ok("POST", "/v1/instances", body, "instances")
        .await;
    for (name, says) in [
        ("nope", "pulling image \"localhost/autokill-missing:never\""),
        ("taken", "the name is taken by container"),
    ] {
        until(&format!("{name} fails to start"), async || {
            instance(&server, name).await.is_some_and(|v| {
                v["state"] == "stopped"
                    && v["stop_cause"] == "start_failed"
                    && v["start_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(says) && e.contains(&engine.host))
            })
        })
        .await;
    }
}

#[tokio::test]
async fn a_missing_engine_at_start_is_an_error_naming_the_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("no-engine.sock");
    let config = dir.path().join("autokill.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy: {{listen: '127.0.0.1:{}'}}\nadmin: {{listen: '127.0.0.1:{}'}}\n\
             store: {{path: {}}}\nruntime: {{kind: docker, docker_host: 'unix://{}'}}\n",
            free_port(),
            free_port(),
            dir.path().join("autokill.redb").display(),
            socket.display()
        ),
    )
    .expect("write config");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run autokill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("container engine at unix://{}", socket.display())),
        "{stderr}"
    );
}

/// A fake engine on a unix socket: it answers the ping, the version, empty lists and an event
/// stream that stays open, and 500 with `injected failure` to everything else.
async fn failing_engine(socket: &Path) -> tokio::task::JoinHandle<()> {
    use http_body_util::{Either, Full, StreamBody};
    use hyper::body::{Bytes, Frame, Incoming};
    use hyper::{Request, Response};
    let listener = tokio::net::UnixListener::bind(socket).expect("bind fake engine");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let path = req.uri().path().to_owned();
                let (status, body) = if path.ends_with("/_ping") {
                    let mut resp = Response::new(Either::Left(Full::new(Bytes::from("OK"))));
                    resp.headers_mut().insert(
                        "api-version",
                        hyper::header::HeaderValue::from_static("1.41"),
                    );
                    return Ok(resp);
                } else if path.ends_with("/version") {
                    (200, r#"{"ApiVersion":"1.41","Version":"fake"}"#)
                } else if path.ends_with("/containers/json") || path.ends_with("/images/json") {
                    (200, "[]")
                } else if path.ends_with("/events") {
                    let never = futures_util::stream::pending::<
                        Result<Frame<Bytes>, std::convert::Infallible>,
                    >();
                    return Ok::<_, std::convert::Infallible>(Response::new(Either::Right(
                        StreamBody::new(never),
                    )));
                } else {
                    (500, r#"{"message":"injected failure"}"#)
                };
                let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap_or_default();
                Ok(resp)
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_answering_500_gives_clear_instance_states_and_api_errors() {
    let socket_dir = tempfile::tempdir().expect("temp dir");
    let socket = socket_dir.path().join("engine.sock");
    let engine = failing_engine(&socket).await;
    let body = format!(
        "runtime:\n  kind: docker\n  docker_host: unix://{}\n  images:\n    hello:\n      port: 80\n",
        socket.display()
    );
    let server = Server::start(move |_| body).await;
    let body = json!({"name": "one", "image": "hello", "autostart": true});
    server
        .api_ok("POST", "/v1/instances", body, "instances")
        .await;
    let failed = async || {
        instance(&server, "one").await.is_some_and(|v| {
            v["state"] == "stopped"
                && v["stop_cause"] == "start_failed"
                && v["start_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("injected failure (HTTP 500)"))
        })
    };
    until("the start fails with the engine's message", failed).await;
    // A start asked for again fails the same way; a delete of what was never made succeeds.
    let v = server
        .api_ok("PUT", "/v1/instances/one/start", Value::Null, "instances")
        .await;
    assert_eq!(v["state"], "starting");
    until("the second start fails too", failed).await;
    server
        .api_ok("DELETE", "/v1/instances/one", Value::Null, "instances")
        .await;
    until("it is gone", async || {
        instance(&server, "one").await.is_none()
    })
    .await;
    drop(server);
    engine.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_its_own_runs_its_command_and_is_killed_when_it_ignores_sigterm() {
    let Some(engine) = Engine::open().await else {
        return;
    };
    let Some(image) = engine.httpd_image().await else {
        return;
    };
    let (server, store) = serve(&engine, "").await;
    // Not in the table: the image's own command, on the port it exposes.
    running(&server, json!({"name": "httpd", "image": image})).await;
    let r = server.get("httpd.localhost", "/").await;
    assert_eq!(
        (r.status, r.text()),
        (StatusCode::OK, HTTPD_PAGE.to_owned())
    );
    // httpd as PID 1 ignores SIGTERM: after stop_grace (1 s) the engine kills it.
    stopped(&server, "httpd").await;
    let v = instance(&server, "httpd").await.expect("kept");
    assert_eq!(
        (&v["exit_code"], &v["stop_cause"]),
        (&json!(137), &json!("user_stop"))
    );
    server
        .api_ok("DELETE", "/v1/instances/httpd", Value::Null, "instances")
        .await;
    until("its container is removed", async || {
        engine.containers(&store).await.is_empty()
    })
    .await;
}

/// A runtime on `engine` for `store` (stop grace 1 s), whose image `hello` is `image`, and its
/// events.
async fn docker_runtime(
    engine: &Engine,
    store: &str,
    image: &str,
) -> (DockerRuntime, mpsc::UnboundedReceiver<RuntimeEvent>) {
    let config = RuntimeConfig {
        kind: RuntimeKind::Docker {
            host: Some(engine.host.clone()),
        },
        stop_grace: Duration::from_secs(1),
        start_timeout: Duration::from_secs(PATIENCE),
        images: [(
            "hello".to_owned(),
            ImageConfig {
                image: Some(image.to_owned()),
                command: Vec::new(),
                env: Default::default(),
                port: None,
            },
        )]
        .into(),
        default_port: None,
        max_concurrent_kills: 64,
        max_concurrent_starts: 16,
        controller_nice: 10,
        stopping_cgroup: None,
    };
    let (tx, events) = mpsc::unbounded_channel();
    let runtime = DockerRuntime::connect(&config, store.to_owned(), tx)
        .await
        .expect("connect");
    (runtime, events)
}

/// Podman says a container it is stopping is `stopping`, not running, with exit code 0 until
/// the exit is recorded. Such a container is not taken for one that exited with 0: here the
/// list after a reconnect of the event stream finds it stopping (stopped by hand, with a
/// grace of 4 s, while the API service was down), and the exit reported is the kill's, 137,
/// once it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_the_engine_is_still_stopping_has_not_exited_with_0() {
    // This test restarts the engine's API service, so it needs one of its own.
    let Some(mut engine) = Engine::own().await else {
        return;
    };
    let Some(image) = engine.httpd_image().await else {
        return;
    };
    let store = format!("test-{}", Uuid::new_v4());
    engine.owns(&store);
    let (runtime, mut events) = docker_runtime(&engine, &store, &image).await;
    let one = InstanceSpec {
        id: Uuid::new_v4(),
        name: format!("stopping-{}", Uuid::new_v4().simple()).into(),
        image: "hello".to_owned(),
        memory_mb: None,
    };
    runtime.create(&one).await.expect("create");
    runtime.start(one.id).await.expect("start");
    engine.stop_service();
    // httpd as PID 1 ignores SIGTERM: it is `stopping` for the 4 s grace, then killed.
    let stopping = Command::new("podman")
        .args(["stop", "--time", "4"])
        .arg(container_name(&one.name))
        .stdout(Stdio::null())
        .spawn()
        .expect("podman stop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    engine.start_service().await;
    let began = Instant::now();
    let exited = loop {
        let event = tokio::time::timeout(Duration::from_secs(PATIENCE), events.recv())
            .await
            .expect("an exit in time")
            .expect("events open");
        if let RuntimeEvent::Exited { id, exit_code } = event {
            break (id, exit_code, began.elapsed());
        }
    };
    assert_eq!((exited.0, exited.1), (one.id, 137), "after {:?}", exited.2);
    let status = tokio::task::spawn_blocking(move || stopping.wait_with_output())
        .await
        .expect("join")
        .expect("podman stop ends");
    assert!(status.status.success(), "podman stop: {status:?}");
    runtime.delete(one.id).await.expect("delete");
    assert!(engine.containers(&store).await.is_empty());
}
