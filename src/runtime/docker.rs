//! The `docker` runtime: each instance is a container, run through the Docker Engine API (Docker,
//! or Podman's Docker-compatible service) with bollard.
//!
//! ```text
//! create: image there? (inspect; pulled once if not) ─▶ container autokill-<name>, labelled
//!         autokill.instance=<uuid>, autokill.store=<store>; <port>/tcp published on 127.0.0.1
//!         at a port the engine picks
//! start:  engine start ─▶ inspect: the published port ─▶ connect to 127.0.0.1:<port> every 10 ms
//!           accepts ──────────▶ Ok(addr)         (the proxy forwards there, never to the bridge)
//!           exits first ──────▶ ExitedEarly
//!           start_timeout ────▶ engine kill, StartTimeout
//! stop:   engine stop with stop_grace (SIGTERM, then SIGKILL)
//! delete: engine remove, forced, with the container's anonymous volumes
//! events: `die` ─▶ RuntimeEvent::Exited, once per run; the stream drops ─▶ back-off, reconnect,
//!         list what exited meanwhile
//! adopt:  this store's containers at start: running ─▶ adopted as they are; exited ─▶ their exit
//!         code; unknown to the store ─▶ removed
//! commit: a template's stopped container ─▶ image autokill/template-<uuid> (its clones run it)
//! ```
//!
//! **Exactly once.** An exit is reported only by [`Inner::report_exit`], which takes the run's
//! exit sender: whoever sees the exit first (a `die` event, the list after a reconnect, a start
//! that finds its container already gone) reports it, and every later sighting finds nothing to
//! take. A `die` is believed only when an inspect confirms the container is not running, so a
//! stale event (replayed after a reconnect) cannot end a newer run; and while a start is in flight
//! `die` events are left to the starter, which inspects once the engine has answered.
//!
//! **Engine errors** are [`RuntimeError::Engine`] with the engine's own message and address;
//! nothing here panics or waits without a bound on an engine that does not answer (bollard's
//! request timeout, plus `start_timeout`/`stop_grace` around what containers do).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EventMessage, HostConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, CreateImageOptions, EventsOptions,
    KillContainerOptions, RemoveContainerOptions, RemoveImageOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    BoxFuture, EventSender, Found, InstanceSpec, Runtime, RuntimeError, RuntimeEvent, Timeouts,
    template_image,
};
use crate::config::{ImageConfig, RuntimeConfig, RuntimeKind};

/// Label naming the instance a container belongs to (and, on a template's image, the template).
pub const LABEL_INSTANCE: &str = "autokill.instance";
/// Label naming the store (its canonical path) of the autokill that made the container.
pub const LABEL_STORE: &str = "autokill.store";
/// Label naming the container port the instance listens on, so that a template's image (which
/// inherits it) tells its clones.
pub const LABEL_PORT: &str = "autokill.port";

/// The engine's address when neither `runtime.docker_host` nor `DOCKER_HOST` names one.
const DEFAULT_ENGINE: &str = "unix:///var/run/docker.sock";
/// How often `start` tries to connect to a starting instance.
const READY_POLL: Duration = Duration::from_millis(10);
/// How long a fresh connection must stay open to count as accepted. An engine's user-space
/// port proxy (Docker's `docker-proxy`) accepts even while nobody listens in the container, and
/// then closes the connection at once; a real listener keeps it open.
const READY_PROBE: Duration = Duration::from_millis(25);
/// Reconnect back-off of the event stream: first and longest wait.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long after asking the engine to kill or stop a container `start`/`stop` wait for its
/// exit to be reported before they resolve anyway (the report still comes later).
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long an exit is waited for while the engine still says the container is stopping (see
/// [`Inner::exit_code`]).
const STOPPING_WAIT: Duration = Duration::from_secs(10);
/// How long (about) an image inspect that the engine fails with 500 is asked again.
const INSPECT_PATIENCE: Duration = Duration::from_millis(800);
/// The least request timeout: long enough for a slow pull's first answer or a commit.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What a stop's request timeout leaves beyond the stop grace, for the engine's own work.
const STOP_MARGIN: Duration = Duration::from_secs(60);

/// Runs instances as containers. See the module documentation.
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

/// State shared with the event task.
struct Inner {
    docker: Docker,
    /// Where the engine is, for messages.
    address: String,
    images: BTreeMap<String, ImageConfig>,
    default_port: Option<u16>,
    timeouts: Timeouts,
    /// The engine client's request timeout, which a stop waits within (set at connect from
    /// `stop_grace`): a stop grace raised later is cut to fit it.
    request_timeout: Duration,
    /// The canonical store path: the value of [`LABEL_STORE`] on everything made here.
    store: String,
    events: EventSender,
    /// Never held across an `.await`.
    containers: Mutex<HashMap<Uuid, Container>>,
    /// Commits in progress, by image reference: a clone's create waits for its template's.
    commits: Mutex<HashMap<String, watch::Receiver<CommitOutcome>>>,
    /// Serializes pulls, so that instances of a missing image pull it once.
    pull: tokio::sync::Mutex<()>,
    /// `None` while the engine answers; `Some(why)` while it cannot be reached.
    health: watch::Sender<Option<String>>,
    /// Whether the event task runs (it starts after adoption, or at the first create).
    watching: Mutex<bool>,
}

/// A template commit's outcome once it is known: `Err` carries the engine's message.
type CommitOutcome = Option<Result<(), String>>;

/// One instance's container (or a template's image) as the runtime knows it.
struct Container {
    /// The engine's container id; empty for a template, whose container became its image.
    engine_id: String,
    /// The instance as the controller described it (kept to re-create a vanished container).
    spec: InstanceSpec,
    /// The port the instance listens on inside the container.
    port: u16,
    /// `Some` while a run has been started and its exit not yet reported: the sender the exit
    /// code goes to, taken by whoever reports it.
    run: Option<watch::Sender<Option<i32>>>,
    /// An engine start call is in flight: `die` events are left to the starter.
    starting: bool,
    /// A template: only its image is left.
    template: bool,
}

impl Container {
    /// An instance whose container could not be made yet.
    fn unmade(spec: &InstanceSpec) -> Container {
        Container {
            engine_id: String::new(),
            spec: spec.clone(),
            port: 0,
            run: None,
            starting: false,
            template: false,
        }
    }

    /// Whether there is something in the engine: a container, or a template's image.
    fn made(&self) -> bool {
        self.template || !self.engine_id.is_empty()
    }
}

/// How to run one image: what the table says, or the image's own settings.
struct Plan {
    reference: String,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    port: Option<u16>,
}

impl DockerRuntime {
    /// Connects to the engine at `runtime.docker_host`, else `DOCKER_HOST`, else the engine's
    /// default socket, and negotiates the API version. Everything made is labelled with
    /// `store` (the canonical store path); every container exit is reported on `events`.
    ///
    /// A missing or refusing engine is an error naming the address tried.
    pub async fn connect(
        config: &RuntimeConfig,
        store: String,
        events: EventSender,
    ) -> Result<DockerRuntime, RuntimeError> {
        let address = match &config.kind {
            RuntimeKind::Docker { host: Some(host) } => host.clone(),
            _ => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_ENGINE.to_owned()),
        };
        let fail = |message: String| RuntimeError::Engine {
            address: address.clone(),
            what: "connecting".to_owned(),
            message,
        };
        // The version is negotiated as the Docker CLI does, from `/_ping`'s `Api-Version`
        // header: Podman answers `/version` (bollard's way) in about a second, `/_ping` at once.
        let (status, headers, body) = get(&address, "/_ping").await.map_err(fail)?;
        if status != 200 {
            return Err(fail(format!(
                "{} (HTTP {status})",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        // Stops wait for the grace period inside one request.
        let timeout = MIN_REQUEST_TIMEOUT.max(config.stop_grace + STOP_MARGIN);
        let offered = headers
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_version);
        let docker = match offered {
            Some(server) => {
                let version = if server < *bollard::API_DEFAULT_VERSION {
                    server
                } else {
                    *bollard::API_DEFAULT_VERSION
                };
                let secs = timeout.as_secs();
                let docker = match address.strip_prefix("unix://") {
                    Some(_) => Docker::connect_with_unix(&address, secs, &version),
                    None => Docker::connect_with_http(&address, secs, &version),
                };
                docker.map_err(|e| fail(message(&e)))?
            }
            None => Docker::connect_with_host(&address)
                .map_err(|e| fail(message(&e)))?
                .with_timeout(timeout)
                .negotiate_version()
                .await
                .map_err(|e| fail(message(&e)))?,
        };
        let (health, _) = watch::channel(None);
        tracing::info!(%address, version = %docker.client_version(), "container engine connected");
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                docker,
                address,
                images: config.images.clone(),
                default_port: config.default_port,
                timeouts: Timeouts::new(config),
                request_timeout: timeout,
                store,
                events,
                containers: Mutex::new(HashMap::new()),
                commits: Mutex::new(HashMap::new()),
                pull: tokio::sync::Mutex::new(()),
                health,
                watching: Mutex::new(false),
            }),
        })
    }

    /// The engine's reachability: `None` while it answers, `Some(why)` while it cannot be
    /// reached (the event stream is down and reconnecting).
    pub fn health(&self) -> watch::Receiver<Option<String>> {
        self.inner.health.subscribe()
    }

    /// The engine's address, as connected to.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The engine's container id of the instance, if it has a container.
    pub fn container_id(&self, id: Uuid) -> Option<String> {
        self.inner
            .lock()
            .get(&id)
            .map(|c| c.engine_id.clone())
            .filter(|e| !e.is_empty())
    }
}

/// The container's name for an instance.
pub fn container_name(instance: &str) -> String {
    format!("autokill-{instance}")
}

impl Inner {
    /// The stop grace now, cut to what the engine client's request timeout leaves room for.
    fn stop_grace(&self) -> Duration {
        self.timeouts
            .stop_grace()
            .min(self.request_timeout.saturating_sub(STOP_MARGIN))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Container>> {
        // Every critical section is a few map operations; a panic cannot leave one half-done.
        self.containers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An engine error for `what`, with the engine's message.
    fn fail(&self, what: impl Into<String>, err: &EngineError) -> RuntimeError {
        RuntimeError::Engine {
            address: self.address.clone(),
            what: what.into(),
            message: message(err),
        }
    }

    fn labels(&self, id: Uuid, port: u16) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_INSTANCE.to_owned(), id.to_string()),
            (LABEL_STORE.to_owned(), self.store.clone()),
            (LABEL_PORT.to_owned(), port.to_string()),
        ])
    }

    /// `{"label": ["autokill.store=<store>"]}` and more: the filter of everything made here.
    fn store_filter(&self, extra: &[(&str, String)]) -> HashMap<String, Vec<String>> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_STORE}={}", self.store)],
        )]);
        for (key, value) in extra {
            filters
                .entry((*key).to_owned())
                .or_default()
                .push(value.clone());
        }
        filters
    }

    /// What to run for `image`: its table entry, or (not in the table) the reference itself
    /// with the image's own command and port.
    fn plan(&self, image: &str) -> Plan {
        match self.images.get(image) {
            Some(entry) => Plan {
                reference: entry.image.clone().unwrap_or_else(|| image.to_owned()),
                command: entry.command.clone(),
                env: entry.env.clone(),
                port: entry.port,
            },
            None => Plan {
                reference: image.to_owned(),
                command: Vec::new(),
                env: BTreeMap::new(),
                port: None,
            },
        }
    }

    /// Sets the engine's reachability and tells the controller when it changes.
    fn set_health(&self, unreachable: Option<String>) {
        let changed = self.health.send_if_modified(|now| {
            if now.is_some() == unreachable.is_some() {
                return false;
            }
            now.clone_from(&unreachable);
            true
        });
        if changed {
            match &unreachable {
                Some(why) => {
                    tracing::warn!(address = %self.address, %why, "container engine unreachable")
                }
                None => tracing::info!(address = %self.address, "container engine reachable again"),
            }
            // The controller may be gone during shutdown; then nobody is left to tell.
            let _ = self.events.send(RuntimeEvent::Engine { unreachable });
        }
    }

    /// Reports the end of the instance's current run, once: only the first caller finds the
    /// run's sender. `engine_id` guards against an old container's news.
    fn report_exit(&self, id: Uuid, engine_id: &str, code: i32) {
        let run = {
            let mut containers = self.lock();
            match containers.get_mut(&id) {
                Some(c) if c.engine_id == engine_id => c.run.take(),
                _ => None,
            }
        };
        if let Some(run) = run {
            tracing::info!(instance = %id, container = %short(engine_id), exit_code = code, "container exited");
            run.send_replace(Some(code));
            let _ = self.events.send(RuntimeEvent::Exited {
                id,
                exit_code: code,
            });
        }
    }

    /// Makes sure `reference` is there, pulling it once if not, and returns its inspection.
    async fn ensure_image(
        &self,
        reference: &str,
    ) -> Result<bollard::models::ImageInspect, RuntimeError> {
        self.wait_commit(reference).await?;
        match self.inspect_image(reference).await {
            Ok(image) => return Ok(image),
            Err(err) if status(&err) != Some(404) => {
                return Err(self.fail(format!("inspecting image {reference:?}"), &err));
            }
            Err(_) => {}
        }
        if reference.starts_with("autokill/template-") {
            return Err(RuntimeError::Engine {
                address: self.address.clone(),
                what: format!("running template image {reference:?}"),
                message: "the image is missing (its template's commit failed or it was removed)"
                    .to_owned(),
            });
        }
        let _one_at_a_time = self.pull.lock().await;
        // Another create may have pulled it while this one waited.
        if let Ok(image) = self.inspect_image(reference).await {
            return Ok(image);
        }
        tracing::info!(image = %reference, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(reference.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| self.fail(format!("pulling image {reference:?}"), &e))?;
            if let Some(detail) = info.error_detail {
                return Err(RuntimeError::Engine {
                    address: self.address.clone(),
                    what: format!("pulling image {reference:?}"),
                    message: detail.message.unwrap_or_else(|| "pull failed".to_owned()),
                });
            }
        }
        self.docker
            .inspect_image(reference)
            .await
            .map_err(|e| self.fail(format!("inspecting pulled image {reference:?}"), &e))
    }

    /// Inspects an image, asking again after a moment when the engine answers 500: Podman
    /// fails an inspect that meets another image's removal ("image not known") and succeeds
    /// when asked again; a lasting failure is still reported, with the engine's message.
    async fn inspect_image(
        &self,
        reference: &str,
    ) -> Result<bollard::models::ImageInspect, EngineError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.docker.inspect_image(reference).await {
                Err(err) if status(&err) == Some(500) && delay < INSPECT_PATIENCE => {
                    tracing::debug!(image = %reference, "inspect failed, asking again: {}", message(&err));
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
    }

    /// Waits for a template commit of `reference` in progress, if any, and fails with its error.
    async fn wait_commit(&self, reference: &str) -> Result<(), RuntimeError> {
        let pending = self
            .commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reference)
            .cloned();
        let Some(mut pending) = pending else {
            return Ok(());
        };
        let outcome = pending
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone())
            .ok()
            .flatten();
        match outcome {
            Some(Err(message)) => Err(RuntimeError::Engine {
                address: self.address.clone(),
                what: format!("making template image {reference:?}"),
                message,
            }),
            _ => Ok(()),
        }
    }

    /// Creates the instance's container (the image pulled first if missing) and registers it.
    async fn create_container(&self, spec: &InstanceSpec) -> Result<Container, RuntimeError> {
        let plan = self.plan(&spec.image);
        let image = self.ensure_image(&plan.reference).await?;
        let config = image.config.unwrap_or_default();
        let port = plan
            .port
            .or_else(|| {
                config
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_PORT))
                    .and_then(|p| p.parse().ok())
            })
            .or_else(|| first_tcp_port(config.exposed_ports.as_deref().unwrap_or_default()))
            .or(self.default_port)
            .ok_or_else(|| RuntimeError::NoPort(plan.reference.clone()))?;

        let fill = |s: &str| {
            s.replace("{port}", &port.to_string())
                .replace("{name}", &spec.name)
                .replace("{id}", &spec.id.to_string())
        };
        let mut env: Vec<String> = plan
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", fill(v)))
            .collect();
        env.push(format!("AUTOKILL_INSTANCE_ID={}", spec.id));
        env.push(format!("AUTOKILL_INSTANCE_NAME={}", spec.name));
        let port_key = format!("{port}/tcp");
        let body = ContainerCreateBody {
            image: Some(plan.reference.clone()),
            cmd: (!plan.command.is_empty()).then(|| plan.command.iter().map(|a| fill(a)).collect()),
            env: Some(env),
            labels: Some(self.labels(spec.id, port)),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
                        // Empty: the engine picks a free port, read back at start.
                        host_port: Some(String::new()),
                    }]),
                )])),
                memory: spec
                    .memory_mb
                    .and_then(|mb| i64::try_from(mb.saturating_mul(1 << 20)).ok()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = container_name(&spec.name);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let engine_id = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created.id,
            // Docker answers a taken name with 409, Podman with 500 and this message.
            Err(err) if status(&err) == Some(409) || message(&err).contains("already in use") => {
                self.claim_existing(spec, &name).await?
            }
            Err(err) => return Err(self.fail(format!("creating container {name}"), &err)),
        };
        tracing::debug!(instance = %spec.id, container = %short(&engine_id), %name, port, "container created");
        Ok(Container {
            engine_id,
            spec: spec.clone(),
            port,
            run: None,
            starting: false,
            template: false,
        })
    }

    /// The name is taken: it is ours if the container carries this instance's labels (a create
    /// repeated after a crash), else the create fails naming the holder.
    async fn claim_existing(
        &self,
        spec: &InstanceSpec,
        name: &str,
    ) -> Result<String, RuntimeError> {
        let found = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| self.fail(format!("inspecting container {name}"), &e))?;
        let labels = found
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let mine = labels.get(LABEL_INSTANCE) == Some(&spec.id.to_string())
            && labels.get(LABEL_STORE) == Some(&self.store);
        match found.id {
            Some(engine_id) if mine => Ok(engine_id),
            holder => Err(RuntimeError::Engine {
                address: self.address.clone(),
                what: format!("creating container {name}"),
                message: format!(
                    "the name is taken by container {} that is not this instance's; remove it or \
                     choose another instance name",
                    short(holder.as_deref().unwrap_or("?"))
                ),
            }),
        }
    }

    async fn create_instance(self: &Arc<Self>, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.ensure_watching();
        if self.lock().get(&spec.id).is_some_and(Container::made) {
            return Ok(());
        }
        match self.create_container(spec).await {
            Ok(container) => {
                self.lock().insert(spec.id, container);
                Ok(())
            }
            Err(err) => {
                // Remembered unmade, so that a start tries again (the image may be there by then).
                self.lock()
                    .entry(spec.id)
                    .or_insert_with(|| Container::unmade(spec));
                Err(err)
            }
        }
    }

    /// Makes the container of an instance whose create failed, before its start.
    async fn make_if_unmade(&self, id: Uuid) -> Result<(), RuntimeError> {
        let spec = match self.lock().get(&id) {
            Some(c) if !c.made() => c.spec.clone(),
            Some(_) => return Ok(()),
            None => return Err(RuntimeError::UnknownInstance(id)),
        };
        let container = self.create_container(&spec).await?;
        self.lock().insert(id, container);
        Ok(())
    }

    async fn start_instance(self: &Arc<Self>, id: Uuid) -> Result<SocketAddr, RuntimeError> {
        self.make_if_unmade(id).await?;
        let (engine_id, port, mut exited, fresh) = {
            let mut containers = self.lock();
            let c = containers
                .get_mut(&id)
                .ok_or(RuntimeError::UnknownInstance(id))?;
            if c.template {
                return Err(RuntimeError::UnknownInstance(id));
            }
            match &c.run {
                // Already started (adopted, or a start racing this one): wait for it like its
                // starter does.
                Some(run) => (c.engine_id.clone(), c.port, run.subscribe(), false),
                None => {
                    let (run, exited) = watch::channel(None);
                    c.run = Some(run);
                    c.starting = true;
                    (c.engine_id.clone(), c.port, exited, true)
                }
            }
        };
        let mut engine_id = engine_id;
        if fresh {
            let started = match self.docker.start_container(&engine_id, None).await {
                Err(err) if status(&err) == Some(404) => {
                    // The container vanished (removed behind our back): make it again.
                    self.recreate(id).await.map(|e| {
                        engine_id = e;
                    })
                }
                Err(err) => Err(self.fail(format!("starting instance {id}"), &err)),
                Ok(()) => Ok(()),
            };
            if let Err(err) = started {
                // Nothing ran: forget the run without reporting an exit.
                if let Some(c) = self.lock().get_mut(&id) {
                    c.run = None;
                    c.starting = false;
                }
                return Err(err);
            }
            if let Some(c) = self.lock().get_mut(&id) {
                c.starting = false;
            }
        }
        let inspected = self
            .docker
            .inspect_container(&engine_id, None)
            .await
            .map_err(|e| self.fail(format!("inspecting instance {id}"), &e))?;
        if !is_running(&inspected) {
            let code = if is_stopping(&inspected) {
                self.exit_code(&engine_id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(-1)
            } else {
                exit_code_of(&inspected)
            };
            self.report_exit(id, &engine_id, code);
            return Err(RuntimeError::ExitedEarly {
                id,
                exit_code: code,
            });
        }
        let addr = published(&inspected, port).ok_or_else(|| RuntimeError::Engine {
            address: self.address.clone(),
            what: format!("starting instance {id}"),
            message: format!("the engine published no host port for {port}/tcp"),
        })?;

        let ready = tokio::time::timeout(self.timeouts.start_timeout(), async {
            tokio::select! {
                biased;
                code = exited.wait_for(Option::is_some) => Err(code.ok().and_then(|c| *c).unwrap_or(-1)),
                () = accepts(addr) => Ok(()),
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => {
                tracing::info!(instance = %id, container = %short(&engine_id), %addr, "container started");
                Ok(addr)
            }
            Ok(Err(exit_code)) => Err(RuntimeError::ExitedEarly { id, exit_code }),
            Err(_elapsed) => {
                tracing::warn!(instance = %id, %addr, "container did not accept connections in time");
                let kill = KillContainerOptions {
                    signal: "SIGKILL".to_owned(),
                };
                if let Err(err) = self.docker.kill_container(&engine_id, Some(kill)).await {
                    tracing::warn!(instance = %id, "killing a container that did not start: {}", message(&err));
                }
                // Resolve once it is gone (bounded), so that a retry starts from a stopped one.
                let _ = tokio::time::timeout(EXIT_WAIT, exited.wait_for(Option::is_some)).await;
                Err(RuntimeError::StartTimeout {
                    id,
                    addr,
                    secs: self.timeouts.start_timeout().as_secs_f64(),
                })
            }
        }
    }

    /// Makes the instance's container again (it vanished) and starts it; returns its new id.
    async fn recreate(&self, id: Uuid) -> Result<String, RuntimeError> {
        let spec = self
            .lock()
            .get(&id)
            .map(|c| c.spec.clone())
            .ok_or(RuntimeError::UnknownInstance(id))?;
        tracing::warn!(instance = %id, "container vanished; creating it again");
        let fresh = self.create_container(&spec).await?;
        let engine_id = fresh.engine_id.clone();
        if let Some(c) = self.lock().get_mut(&id) {
            c.engine_id.clone_from(&engine_id);
            c.port = fresh.port;
        }
        self.docker
            .start_container(&engine_id, None)
            .await
            .map_err(|e| self.fail(format!("starting instance {id}"), &e))?;
        Ok(engine_id)
    }

    async fn stop_instance(&self, id: Uuid) -> Result<(), RuntimeError> {
        let (engine_id, exited) = {
            let containers = self.lock();
            let c = containers
                .get(&id)
                .ok_or(RuntimeError::UnknownInstance(id))?;
            match &c.run {
                Some(run) => (c.engine_id.clone(), run.subscribe()),
                None => return Ok(()),
            }
        };
        // The engine takes whole seconds; round up so that the grace is never shorter.
        let grace = self
            .stop_grace()
            .as_secs_f64()
            .ceil()
            .clamp(1.0, f64::from(i32::MAX)) as i32;
        let options = StopContainerOptions {
            t: Some(grace),
            signal: None,
        };
        match self.docker.stop_container(&engine_id, Some(options)).await {
            Ok(()) => {}
            Err(err) if status(&err) == Some(404) => {}
            Err(err) => return Err(self.fail(format!("stopping instance {id}"), &err)),
        }
        let mut exited = exited;
        let _ = tokio::time::timeout(EXIT_WAIT, exited.wait_for(Option::is_some)).await;
        Ok(())
    }

    async fn delete_instance(&self, id: Uuid) -> Result<(), RuntimeError> {
        // A template being committed is deleted once its image exists, so none is left behind.
        self.wait_commit(&template_image(id)).await.ok();
        let known = self.lock().remove(&id);
        let engine_ids = match &known {
            Some(c) if c.engine_id.is_empty() => Vec::new(),
            Some(c) => vec![c.engine_id.clone()],
            // Never created here (a failed create, or before adoption): anything labelled
            // with it still goes.
            None => self.labelled(id).await?,
        };
        for engine_id in &engine_ids {
            if let Err(err) = self.remove(engine_id).await {
                // Keep what is known, so that a retry finds it.
                if let Some(c) = known {
                    self.lock().insert(id, c);
                }
                return Err(self.fail(format!("removing instance {id}"), &err));
            }
        }
        let image = known.as_ref().map(|c| self.plan(&c.spec.image).reference);
        if known.as_ref().is_some_and(|c| c.template) {
            self.remove_template_image(&template_image(id)).await;
        } else if let Some(image) = image.filter(|i| i.starts_with("autokill/template-")) {
            // The last clone of a deleted template takes the template's image with it.
            let template_alive = self.lock().values().any(|c| {
                (c.template && template_image(c.spec.id) == image) || c.spec.image == image
            });
            if !template_alive {
                self.remove_template_image(&image).await;
            }
        }
        tracing::debug!(instance = %id, "container removed");
        Ok(())
    }

    /// Removes a template's image unless containers still use it (then the last of them
    /// removes it when it is deleted).
    async fn remove_template_image(&self, image: &str) {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            platforms: None,
        };
        match self.docker.remove_image(image, Some(options), None).await {
            Ok(_) => tracing::info!(%image, "template image removed"),
            Err(err) if status(&err) == Some(404) => {}
            Err(err) if status(&err) == Some(409) => {
                tracing::info!(%image, "template image still used by clones; kept until the last is deleted")
            }
            Err(err) => tracing::warn!(%image, "removing template image: {}", message(&err)),
        }
    }

    /// Engine ids of the containers labelled with instance `id` in this store.
    async fn labelled(&self, id: Uuid) -> Result<Vec<String>, RuntimeError> {
        let list = self
            .list_store(&[("label", format!("{LABEL_INSTANCE}={id}"))])
            .await?;
        Ok(list.into_iter().map(|c| c.id).collect())
    }

    /// This store's containers, running or not, that also match `extra` filters.
    async fn list_store(&self, extra: &[(&str, String)]) -> Result<Vec<Listed>, RuntimeError> {
        let filters = serde_json::to_string(&self.store_filter(extra)).unwrap_or_default();
        get_json(
            &self.address,
            &format!(
                "/containers/json?all=1&filters={}",
                percent_encode(&filters)
            ),
        )
        .await
        .map_err(|message| RuntimeError::Engine {
            address: self.address.clone(),
            what: "listing this store's containers".to_owned(),
            message,
        })
    }

    /// Removes a container, forced, with its anonymous volumes; one already gone is no error.
    async fn remove(&self, engine_id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(engine_id, Some(options)).await {
            Err(err) if status(&err) != Some(404) => Err(err),
            _ => Ok(()),
        }
    }

    async fn commit_instance(
        &self,
        id: Uuid,
        done: watch::Sender<CommitOutcome>,
    ) -> Result<(), RuntimeError> {
        let image = template_image(id);
        let result = self.commit_now(id, &image).await;
        done.send_replace(Some(
            result.as_ref().map(|_| ()).map_err(ToString::to_string),
        ));
        self.commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&image);
        result
    }

    async fn commit_now(&self, id: Uuid, image: &str) -> Result<(), RuntimeError> {
        let engine_id = {
            let containers = self.lock();
            let c = containers
                .get(&id)
                .ok_or(RuntimeError::UnknownInstance(id))?;
            c.engine_id.clone()
        };
        let options = CommitContainerOptions {
            container: Some(engine_id.clone()),
            repo: Some(image.to_owned()),
            tag: Some("latest".to_owned()),
            comment: Some(format!("autokill template {id}")),
            pause: false,
            ..Default::default()
        };
        self.docker
            .commit_container(options, ContainerConfig::default())
            .await
            .map_err(|e| self.fail(format!("committing template {id}"), &e))?;
        // The template never runs again: its image holds everything its clones need.
        if let Err(err) = self.remove(&engine_id).await {
            tracing::warn!(template = %id, "removing the committed container: {}", message(&err));
        }
        if let Some(c) = self.lock().get_mut(&id) {
            c.template = true;
            c.engine_id.clear();
            c.run = None;
        }
        tracing::info!(template = %id, %image, "template committed");
        Ok(())
    }

    // ---- adoption and the event stream ----------------------------------------------------

    async fn adopt_all(
        self: &Arc<Self>,
        stored: &[InstanceSpec],
    ) -> Result<HashMap<Uuid, Found>, RuntimeError> {
        let stored: HashMap<Uuid, &InstanceSpec> = stored.iter().map(|s| (s.id, s)).collect();
        let list = self.list_store(&[]).await?;
        let mut found = HashMap::new();
        let mut removed = 0;
        for listed in list {
            let engine_id = listed.id;
            let owner = listed
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_INSTANCE))
                .and_then(|v| Uuid::parse_str(v).ok());
            let spec = owner.and_then(|id| stored.get(&id).copied());
            let claimed = spec.is_some_and(|s| self.lock().contains_key(&s.id));
            let Some(spec) = spec.filter(|_| !claimed) else {
                // Not an instance the store knows (or a second container of one): remove it.
                self.remove(&engine_id).await.map_err(|err| {
                    self.fail(
                        format!("removing unknown container {}", short(&engine_id)),
                        &err,
                    )
                })?;
                removed += 1;
                continue;
            };
            let inspected = self
                .docker
                .inspect_container(&engine_id, None)
                .await
                .map_err(|e| {
                    self.fail(format!("inspecting container {}", short(&engine_id)), &e)
                })?;
            let port = inspected
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(LABEL_PORT))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let mut container = Container {
                engine_id: engine_id.clone(),
                port,
                ..Container::unmade(spec)
            };
            if spec.image == template_image(spec.id) {
                // A template whose commit a crash interrupted: finish it.
                self.lock().insert(spec.id, container);
                let (done, pending) = watch::channel(None);
                self.commits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(spec.image.clone(), pending);
                if let Err(err) = self.commit_instance(spec.id, done).await {
                    tracing::error!(template = %spec.id, %err, "finishing a template's commit failed");
                }
                continue;
            }
            if is_running(&inspected) {
                match published(&inspected, port) {
                    Some(addr) => {
                        let (run, _) = watch::channel(None);
                        container.run = Some(run);
                        found.insert(spec.id, Found::Running(addr));
                    }
                    None => {
                        tracing::warn!(instance = %spec.id, "adopted container publishes no port; it is started anew")
                    }
                }
            } else if has_run(&inspected) {
                found.insert(spec.id, Found::Exited(exit_code_of(&inspected)));
            }
            self.lock().insert(spec.id, container);
        }
        // Templates keep only their image.
        for spec in stored.values() {
            if spec.image == template_image(spec.id) && !self.lock().contains_key(&spec.id) {
                let template = Container {
                    template: true,
                    ..Container::unmade(spec)
                };
                self.lock().insert(spec.id, template);
            }
        }
        removed += self.remove_orphan_images(&stored).await;
        if removed > 0 {
            tracing::info!(
                count = removed,
                "removed containers and images of this store that it no longer knows"
            );
        }
        self.ensure_watching();
        Ok(found)
    }

    /// Template images of this store whose template is gone (a crash between the delete and the
    /// image's removal), unless a stored clone still runs them.
    async fn remove_orphan_images(&self, stored: &HashMap<Uuid, &InstanceSpec>) -> usize {
        let filters = serde_json::to_string(&self.store_filter(&[])).unwrap_or_default();
        let path = format!("/images/json?filters={}", percent_encode(&filters));
        let images: Vec<Listed> = match get_json(&self.address, &path).await {
            Ok(images) => images,
            Err(err) => {
                tracing::warn!("listing this store's template images: {err}");
                return 0;
            }
        };
        let mut removed = 0;
        for image in images {
            let Some(template) = image
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_INSTANCE))
                .and_then(|v| Uuid::parse_str(v).ok())
            else {
                continue;
            };
            let reference = template_image(template);
            if stored.values().any(|s| s.image == reference) {
                continue;
            }
            let options = RemoveImageOptions {
                force: false,
                noprune: false,
                platforms: None,
            };
            if self
                .docker
                .remove_image(&image.id, Some(options), None)
                .await
                .is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Starts the event task once.
    fn ensure_watching(self: &Arc<Self>) {
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        if !*watching {
            *watching = true;
            tokio::spawn(Arc::clone(self).watch_events());
        }
    }

    /// Follows the engine's event stream for the whole life of the runtime: after every
    /// (re)connect it first lists what exited while it was not watching, then reads `die`
    /// events from a moment before that list (so nothing falls between the two; what both see
    /// is reported once).
    async fn watch_events(self: Arc<Self>) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .saturating_sub(1);
            if let Err(err) = self.reconcile().await {
                self.set_health(Some(err.to_string()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            self.set_health(None);
            backoff = BACKOFF_FIRST;
            let options = EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(self.store_filter(&[("type", "container".to_owned())])),
            };
            let mut stream = self.docker.events(Some(options));
            let why = loop {
                match stream.next().await {
                    Some(Ok(event)) => self.on_event(event).await,
                    Some(Err(err)) => break message(&err),
                    None => break "the event stream ended".to_owned(),
                }
            };
            self.set_health(Some(format!("event stream: {why}")));
            tokio::time::sleep(backoff).await;
        }
    }

    async fn on_event(&self, event: EventMessage) {
        if event.action.as_deref() != Some("die") {
            return;
        }
        let Some(actor) = event.actor else {
            return;
        };
        let (Some(engine_id), attributes) = (actor.id, actor.attributes.unwrap_or_default()) else {
            return;
        };
        let Some(id) = attributes
            .get(LABEL_INSTANCE)
            .and_then(|v| Uuid::parse_str(v).ok())
        else {
            return;
        };
        let expected = {
            let containers = self.lock();
            containers
                .get(&id)
                .is_some_and(|c| c.engine_id == engine_id && c.run.is_some() && !c.starting)
        };
        if !expected {
            return;
        }
        let event_code = attributes
            .get("exitCode")
            .and_then(|c| c.parse().ok())
            .unwrap_or(-1);
        // Believe the event only if the container is not running now: a replayed old `die`
        // must not end a newer run.
        let code = match self.exit_code(&engine_id).await {
            Ok(Some(code)) => code,
            Ok(None) => return,
            Err(_) => event_code,
        };
        self.report_exit(id, &engine_id, code);
    }

    /// The exit code of a container that has exited, or `None` while it runs. One the engine
    /// is still stopping is asked again (for up to [`STOPPING_WAIT`]) until its exit is
    /// recorded: until then Podman gives 0 for it, even for one about to be killed; past the
    /// wait it is -1, unknown.
    async fn exit_code(&self, engine_id: &str) -> Result<Option<i32>, bollard::errors::Error> {
        let began = Instant::now();
        let mut pause = READY_POLL;
        loop {
            let inspected = self.docker.inspect_container(engine_id, None).await?;
            if is_running(&inspected) {
                return Ok(None);
            }
            if !is_stopping(&inspected) {
                return Ok(Some(exit_code_of(&inspected)));
            }
            if began.elapsed() >= STOPPING_WAIT {
                return Ok(Some(-1));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Reports every run this runtime believes alive whose container is no longer running.
    async fn reconcile(&self) -> Result<(), RuntimeError> {
        let list = self.list_store(&[]).await?;
        let running: std::collections::HashSet<String> = list
            .into_iter()
            // Stopping: its exit is not recorded yet, and its `die` event is still to come.
            .filter(|c| {
                matches!(
                    c.state.as_str(),
                    "running" | "paused" | "restarting" | "stopping"
                )
            })
            .map(|c| c.id)
            .collect();
        let suspects: Vec<(Uuid, String)> = self
            .lock()
            .iter()
            .filter(|(_, c)| c.run.is_some() && !c.starting && !running.contains(&c.engine_id))
            .map(|(id, c)| (*id, c.engine_id.clone()))
            .collect();
        for (id, engine_id) in suspects {
            let code = match self.exit_code(&engine_id).await {
                Ok(None) => continue,
                Ok(Some(code)) => code,
                // Removed behind our back: its exit code is unknown.
                Err(err) if status(&err) == Some(404) => -1,
                Err(err) => return Err(self.fail(format!("inspecting instance {id}"), &err)),
            };
            self.report_exit(id, &engine_id, code);
        }
        Ok(())
    }
}

impl Runtime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn create<'a>(&'a self, spec: &'a InstanceSpec) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.inner.create_instance(spec))
    }

    fn start(&self, id: Uuid) -> BoxFuture<'_, Result<SocketAddr, RuntimeError>> {
        Box::pin(self.inner.start_instance(id))
    }

    fn stop(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(self.inner.stop_instance(id))
    }

    fn delete(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(self.inner.delete_instance(id))
    }

    fn set_timeouts(&self, stop_grace: Duration, start_timeout: Duration) {
        let most = self.inner.request_timeout.saturating_sub(STOP_MARGIN);
        if stop_grace > most {
            tracing::warn!(
                key = "runtime.stop_grace",
                ?stop_grace,
                ?most,
                "longer than the engine client's request timeout allows until the next start; stops wait this long at most"
            );
        }
        self.inner.timeouts.set(stop_grace, start_timeout);
    }

    fn reclaim(&self) -> BoxFuture<'_, Result<usize, RuntimeError>> {
        // Containers are adopted, not reclaimed: see `adopt`.
        Box::pin(async { Ok(0) })
    }

    fn adopts(&self) -> bool {
        true
    }

    fn adopt<'a>(
        &'a self,
        stored: &'a [InstanceSpec],
    ) -> BoxFuture<'a, Result<HashMap<Uuid, Found>, RuntimeError>> {
        Box::pin(self.inner.adopt_all(stored))
    }

    fn commit(&self, id: Uuid) -> BoxFuture<'static, Result<(), RuntimeError>> {
        // Registered now, before any clone's create can look for the image.
        let (done, pending) = watch::channel(None);
        self.inner
            .commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(template_image(id), pending);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.commit_instance(id, done).await })
    }
}

/// A container or image as the engine lists it: only what autokill reads, parsed leniently.
/// (Podman lists a container being cleaned up after its exit as `stopped`, a state that the
/// Docker API, and so bollard's list types, do not have: one such container would make a whole
/// list unreadable.)
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    /// The engine's id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Its labels.
    #[serde(rename = "Labels", default)]
    pub labels: Option<HashMap<String, String>>,
    /// Containers: `running`, `exited`, … as the engine says (images: empty).
    #[serde(rename = "State", default)]
    pub state: String,
}

/// Lists the containers (running or not) labelled `label` (`key=value`) at the engine `address`.
pub async fn list_labelled(address: &str, label: &str) -> Result<Vec<Listed>, String> {
    let filters = serde_json::json!({ "label": [label] }).to_string();
    get_json(
        address,
        &format!(
            "/containers/json?all=1&filters={}",
            percent_encode(&filters)
        ),
    )
    .await
}

/// `GET path` at the engine `address` (`unix://`, `tcp://` or `http://`), parsed as `T`; an
/// answer other than 200 is an error with the engine's message. Unversioned paths are the
/// engines' newest API, which reads these lists the same way.
async fn get_json<T: serde::de::DeserializeOwned>(address: &str, path: &str) -> Result<T, String> {
    let (status, _, body) = get(address, path).await?;
    if status != 200 {
        let said = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("{said} (HTTP {status})"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("unreadable answer: {e}"))
}

/// `GET path` at the engine `address`: status, header fields and body, within the request
/// timeout.
async fn get(address: &str, path: &str) -> Result<(u16, http::HeaderMap, bytes::Bytes), String> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    async fn send<S>(
        stream: S,
        host: &str,
        path: &str,
    ) -> Result<(u16, http::HeaderMap, Bytes), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status.as_u16(), parts.headers, body))
    }

    let answer = async {
        if let Some(socket) = address.strip_prefix("unix://") {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| format!("{socket}: {e}"))?;
            send(stream, "docker", path).await
        } else {
            let host = address
                .strip_prefix("tcp://")
                .or_else(|| address.strip_prefix("http://"))
                .unwrap_or(address)
                .trim_end_matches('/');
            let stream = TcpStream::connect(host)
                .await
                .map_err(|e| format!("{host}: {e}"))?;
            send(stream, host, path).await
        }
    };
    tokio::time::timeout(MIN_REQUEST_TIMEOUT, answer)
        .await
        .map_err(|_| "the engine did not answer in time".to_owned())?
}

/// `1.41` as a client version.
fn parse_version(text: &str) -> Option<bollard::ClientVersion> {
    let (major, minor) = text.trim().split_once('.')?;
    Some(bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The engine's message for an error: its own text for an HTTP answer, else bollard's.
fn message(err: &EngineError) -> String {
    match err {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        EngineError::SocketNotFoundError(path) => {
            format!("no socket at {path} (is the engine running?)")
        }
        EngineError::RequestTimeoutError => "the engine did not answer in time".to_owned(),
        other => other.to_string(),
    }
}

/// The HTTP status of an engine's answer, if the error is one.
fn status(err: &EngineError) -> Option<u16> {
    match err {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The first 12 characters of an engine id, as the engines' own tools show it.
fn short(engine_id: &str) -> &str {
    engine_id.get(..12).unwrap_or(engine_id)
}

/// The first `<port>/tcp` the image exposes, in the engine's order.
fn first_tcp_port(exposed: &[String]) -> Option<u16> {
    exposed.iter().find_map(|p| {
        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        (proto == "tcp").then(|| port.parse().ok()).flatten()
    })
}

fn is_running(c: &ContainerInspectResponse) -> bool {
    c.state
        .as_ref()
        .is_some_and(|s| s.running == Some(true) || s.restarting == Some(true))
}

/// Whether the engine is still stopping the container: Podman says `stopping` (not running)
/// from the stop's signal until it has recorded the exit, with an exit code of 0 until then.
fn is_stopping(c: &ContainerInspectResponse) -> bool {
    use bollard::models::ContainerStateStatusEnum as S;
    c.state
        .as_ref()
        .is_some_and(|s| s.status == Some(S::STOPPING))
}

/// Whether the container ever ran (an exited one has; a created one has not).
fn has_run(c: &ContainerInspectResponse) -> bool {
    use bollard::models::ContainerStateStatusEnum as S;
    c.state
        .as_ref()
        .and_then(|s| s.status)
        .is_some_and(|s| matches!(s, S::EXITED | S::DEAD))
}

/// The exit code of a stopped container (-1 when the engine does not say).
fn exit_code_of(c: &ContainerInspectResponse) -> i32 {
    c.state
        .as_ref()
        .and_then(|s| s.exit_code)
        .and_then(|code| i32::try_from(code).ok())
        .unwrap_or(-1)
}

/// Where the engine published `port`/tcp of a running container (on 127.0.0.1).
fn published(c: &ContainerInspectResponse, port: u16) -> Option<SocketAddr> {
    let bindings = c
        .network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&format!("{port}/tcp"))?
        .as_ref()?;
    bindings.iter().find_map(|b| {
        let host_port: u16 = b.host_port.as_deref()?.parse().ok()?;
        (host_port != 0).then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
    })
}

/// Resolves once `addr` accepts a TCP connection that stays open for [`READY_PROBE`] (or
/// answers in that time), trying every [`READY_POLL`].
async fn accepts(addr: SocketAddr) {
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(READY_PROBE, stream.peek(&mut byte)).await {
                // Still open and silent, or already talking: someone listens.
                Err(_) | Ok(Ok(1..)) => return,
                // Closed at once: a port proxy with nobody behind it yet.
                Ok(Ok(0) | Err(_)) => {}
            }
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_exposed_tcp_port_is_used() {
        let ports = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            first_tcp_port(&ports(&["53/udp", "8080/tcp", "80/tcp"])),
            Some(8080)
        );
        assert_eq!(first_tcp_port(&ports(&["9000"])), Some(9000));
        assert_eq!(first_tcp_port(&ports(&["53/udp"])), None);
        assert_eq!(first_tcp_port(&[]), None);
    }

    #[test]
    fn api_versions_are_read_from_ping() {
        let v = parse_version("1.41").expect("a version");
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_version("1").is_none());
        assert!(parse_version("x.y").is_none());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"label":["autokill.store=/a b"]}"#),
            "%7B%22label%22%3A%5B%22autokill.store%3D%2Fa%20b%22%5D%7D"
        );
        assert_eq!(percent_encode("az-09_.~"), "az-09_.~");
    }

    #[test]
    fn lists_are_read_whatever_state_the_engine_names() {
        let listed: Vec<Listed> = serde_json::from_str(
            r#"[{"Id":"a","Labels":{"k":"v"},"State":"stopped","Names":["/x"]},{"Id":"b","Labels":null}]"#,
        )
        .expect("lenient");
        assert_eq!(listed[0].state, "stopped");
        assert_eq!(listed[1].labels, None);
    }

    #[test]
    fn engine_messages_are_the_engines_own() {
        let err = EngineError::DockerResponseServerError {
            status_code: 500,
            message: "something broke".into(),
        };
        assert_eq!(message(&err), "something broke (HTTP 500)");
        assert_eq!(status(&err), Some(500));
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }
}
