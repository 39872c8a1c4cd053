//! Configuration: the YAML file (`config/autokill.yaml`) parsed, checked and turned into [`Config`].
//!
//! This is the only module that knows YAML. Everything else takes the validated types below, in
//! which every duration is a [`Duration`], every address is parsed, and every cross-reference (an
//! instance's image, a group's domains) has been checked.
//!
//! The way in is two steps: `raw.rs` reads the YAML into serde structs that mirror the file
//! (unknown keys refused, scalars kept with their line and column), then `validate.rs` fills in
//! defaults and checks values and cross-references, placing each refusal at the offending
//! value. `duration.rs` holds the duration grammar both use.

mod duration;
mod raw;
mod scalar;
mod size;
#[cfg(test)]
mod tests;
mod validate;
/// Durations as the file writes them (`"30s"`), for the command line's flags too.
pub(crate) use duration::parse as parse_duration;
/// Sizes as people read them (`1 MiB`), for messages that name a size limit.
pub(crate) use size::display as display_size;
pub(crate) use validate::{
    RESERVED_NAMES, check_name, check_num_requests, host_name, is_image_reference,
};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The validated configuration of one `autokill serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The proxy listener and its data-path settings.
    pub proxy: ProxyConfig,
    /// The admin listener (API, UI, metrics, health).
    pub admin: AdminConfig,
    /// The durable store.
    pub store: StoreConfig,
    /// The runtime backend that runs the instances.
    pub runtime: RuntimeConfig,
    /// Defaults applied where a resource does not say otherwise.
    pub defaults: Defaults,
    /// How request budgets are given out to new instances.
    pub autokill: AutokillConfig,
    /// Service groups declared by the file, each with its instances.
    pub service_groups: Vec<GroupConfig>,
    /// Instances declared by the file that belong to no group.
    pub instances: Vec<InstanceConfig>,
    /// What a shutdown does to the instances.
    pub shutdown: Shutdown,
}

/// `shutdown:` — what SIGTERM/SIGINT does to the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shutdown {
    /// Stop them (the default with the process runtime: it cannot adopt a child of an earlier
    /// run, so the next start would kill and restart it anyway). The store still says they run,
    /// so the next start starts them again.
    #[default]
    StopInstances,
    /// Leave them running (the default with the docker runtime, whose next start adopts the
    /// containers as they are); the process runtime's next start removes and restarts them.
    LeaveInstances,
}

/// `proxy:` — the listener that carries instance traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Worker threads, each with its own listener (`SO_REUSEPORT`) and upstream pool; 0 = one per core.
    pub workers: usize,
    /// `<instance-name>.<base_domain>` addresses one instance.
    pub base_domain: String,
    /// Time a client has to send a request's head before the connection is closed.
    pub header_read_timeout: Duration,
    /// Time to establish an upstream TCP connection before answering 504.
    pub upstream_connect_timeout: Duration,
    /// Time to wait for the upstream's response head before answering 504.
    pub upstream_timeout: Duration,
    /// Idle upstream connections kept per instance and worker.
    pub pool_idle_per_instance: usize,
    /// A client connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// Most client connections one worker serves at once; 0 = derived from the open-file limit.
    /// Beyond it, connections wait in the kernel's accept queue.
    pub max_connections_per_worker: usize,
    /// A request body that sends nothing for this long is answered 408.
    pub request_body_timeout: Duration,
    /// A forwarded response that the client takes nothing of for this long is cut off.
    pub response_write_timeout: Duration,
    /// How a group picks one of its instances.
    pub balance: Balance,
    /// Longest request head (request line and fields) in bytes: 431 beyond.
    pub max_header_bytes: usize,
    /// Most header fields in a request: 431 beyond.
    pub max_header_fields: usize,
    /// Longest request target in bytes: 414 beyond.
    pub max_uri_bytes: usize,
    /// Largest request body in bytes (413 beyond) of an instance whose group and itself set
    /// none; `None` = no limit.
    pub max_body_bytes: Option<u64>,
    /// Requests one client connection carries before the proxy closes it; 0 = no limit.
    pub max_requests_per_connection: u64,
}

/// How a service group picks an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each routable instance in turn.
    #[default]
    RoundRobin,
    /// The routable instance with the fewest requests in flight.
    LeastInflight,
}

/// `admin:` — the listener of the API, web page, metrics and health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address the admin server listens on; a non-loopback address requires `token`.
    pub listen: SocketAddr,
    /// Bearer token the API requires; `None` = no authentication (loopback only).
    pub token: Option<String>,
    /// Further `Host` names the admin listener answers to (lower-case; `name` or `name:port`),
    /// besides its own address, `localhost`, `127.0.0.1` and `[::1]`.
    pub allowed_hosts: Vec<String>,
    /// Time a client has to send a request head, from accept or the first byte of a request.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress (or a response the client does not take) is
    /// closed after this long.
    pub idle_timeout: Duration,
    /// Most connections served at once; 0 = derived from the open-file limit.
    pub max_connections: usize,
    /// Users of the Tutum-compatible `/api/v1`; with neither these nor `token`, it is open
    /// (loopback only, as `/v1`).
    pub api_users: Vec<ApiUser>,
    /// Largest request body, in bytes, that `/v1`, `/api/v1` and the web page's form posts
    /// take; a larger one is answered 413.
    pub max_body_size: usize,
}

/// One `admin.api_users` entry: what `Authorization: ApiKey user:apikey` (or Basic) must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUser {
    /// User name: printable ASCII without spaces or `:`.
    pub user: String,
    /// API key: printable ASCII without spaces.
    pub apikey: String,
}

/// `store:` — where durable state lives.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Path of the single-file store.
    pub path: PathBuf,
    /// Commits also save the free-space map (a second sync each), so that a start after a crash
    /// need not check and repair the whole file; see [`crate::store::Store::open_with`].
    pub quick_repair: bool,
}

/// `runtime:` — which backend runs instances, and its images.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// The backend.
    pub kind: RuntimeKind,
    /// Time between SIGTERM (or the engine's stop) and SIGKILL.
    pub stop_grace: Duration,
    /// Time an instance has to accept TCP connections after it was started.
    pub start_timeout: Duration,
    /// Image name -> how to run it.
    pub images: BTreeMap<String, ImageConfig>,
    /// Docker runtime: the container port of an image that names none (no `port:` in its
    /// entry, no `EXPOSE` in the image); `None` = such an image is refused at create.
    pub default_port: Option<u16>,
    /// Most runtime deletes and stops the controller has in progress at once; the others
    /// wait their turn in the order they were asked for (none is dropped). Bounds what a kill
    /// storm asks of the engine and the host at one time.
    pub max_concurrent_kills: usize,
    /// Most runtime starts the controller has in progress at once, each from its spawn until
    /// the instance answers (or its start fails); the others wait their turn in the order they
    /// were asked for. Bounds what a restart of every instance after a crash asks of the host.
    pub max_concurrent_starts: usize,
    /// The controller's thread (its batches, the store's commits, publishing) runs this much
    /// nicer than the rest of the server (`setpriority`), so that a burst of control work (a
    /// kill storm) leaves the cores to the proxy's workers; 0 = the same priority. Instance
    /// processes are spawned from the server's other threads, at its own priority.
    pub controller_nice: u8,
    /// Process runtime: the cgroup directory a stopping instance's process is moved into just
    /// before its SIGTERM (by writing its pid to `cgroup.procs`), so that a cgroup of low CPU
    /// weight can make a kill storm's exits wait for the cores the proxy does not use. `None`
    /// = not moved.
    pub stopping_cgroup: Option<PathBuf>,
}

/// The runtime backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Local child processes (the embedded default).
    Process,
    /// The Docker Engine API; `host` overrides `DOCKER_HOST` and the default socket.
    Docker {
        /// Engine address (`unix:///path` or `tcp://host:port`).
        host: Option<String>,
    },
}

/// One entry of `runtime.images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// Docker runtime: the OCI image reference to run (`localhost/hello:latest`); `None` = the
    /// entry's own name. Always `None` with the process runtime.
    pub image: Option<String>,
    /// Process runtime: program and arguments. `{port}` is replaced by the instance's port,
    /// `{name}` by its name, `{id}` by its UUID and `{autokill}` by the path of the running autokill binary.
    pub command: Vec<String>,
    /// Extra environment for the process, with the same placeholders.
    pub env: BTreeMap<String, String>,
    /// Port the instance listens on inside its container (docker runtime); the process runtime
    /// picks a free loopback port instead.
    pub port: Option<u16>,
}

/// `defaults:`
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// How long a draining instance may finish in-flight requests before it is deleted anyway.
    pub drain_timeout: Duration,
}

/// `autokill:` — how request budgets are given out to new instances.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AutokillConfig {
    /// A fraction in `[0, 1)`: an instance created with `num_requests` N is given a budget of
    /// N minus a whole number drawn uniformly from `[0, jitter × N]` (never less than 1), so
    /// that instances created together do not all reach their limits together. 0 = off.
    pub jitter: f64,
}

impl AutokillConfig {
    /// The budget to give an instance created with `num_requests` (0 = no limit, kept),
    /// drawing the cut from `rng`.
    pub fn draw(&self, num_requests: u64, rng: &mut fastrand::Rng) -> u64 {
        if num_requests == 0 || self.jitter <= 0.0 {
            return num_requests;
        }
        // `as` saturates; the product is below `num_requests` for a jitter below 1.
        let most = (self.jitter * num_requests as f64) as u64;
        num_requests.saturating_sub(rng.u64(0..=most)).max(1)
    }

    /// [`AutokillConfig::draw`], with what an instance stores: the budget, and the number
    /// asked for when the budget is lower (`None` when it is what was asked).
    pub fn budget(&self, asked: u64, rng: &mut fastrand::Rng) -> (u64, Option<u64>) {
        let drawn = self.draw(asked, rng);
        (drawn, (drawn != asked).then_some(asked))
    }
}

/// One entry of `service_groups`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Unique name of the group.
    pub name: String,
    /// Host names that address the group, already resolved against `base_domain` and lower-cased.
    pub domains: Vec<String>,
    /// Delete the group once it has been empty this long; `None` disables.
    pub autokill_time: Option<Duration>,
    /// Instances that belong to the group.
    pub instances: Vec<InstanceConfig>,
    /// Largest request body its instances take (those that set none of their own).
    pub max_body_bytes: BodyLimit,
}

/// A group's or an instance's own request body limit (`max_body_bytes`), which takes
/// precedence: instance over group over `proxy.max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyLimit {
    /// Not set: the group's, else the proxy's limit applies.
    #[default]
    Inherit,
    /// No limit, whatever the group or the proxy say (`0` in the file).
    Unlimited,
    /// At most this many bytes.
    Bytes(u64),
}

impl BodyLimit {
    /// This limit, else `outer` (the group's, for an instance).
    pub fn or(self, outer: BodyLimit) -> BodyLimit {
        match self {
            BodyLimit::Inherit => outer,
            own => own,
        }
    }

    /// As the proxy's route target carries it: `None` = the proxy's limit applies.
    pub fn bytes(self) -> Option<u64> {
        match self {
            BodyLimit::Inherit => None,
            BodyLimit::Unlimited => Some(u64::MAX),
            BodyLimit::Bytes(n) => Some(n),
        }
    }
}

/// One instance declared in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceConfig {
    /// Unique name; the instance is addressed as `<name>.<base_domain>`.
    pub name: String,
    /// Key into `runtime.images`.
    pub image: String,
    /// The autokill policy.
    pub autokill: Autokill,
    /// What happens when the instance stops on its own.
    pub restart_policy: RestartPolicy,
    /// Whether a stopped instance is destroyed, by exit code.
    pub autodestroy: Autodestroy,
    /// Largest request body the instance takes; [`BodyLimit::Inherit`] = its group's.
    pub max_body_bytes: BodyLimit,
}

/// `autokill: {num_requests, time}`; zero or absent disables a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Autokill {
    /// Delete after this many requests; 0 = never.
    pub num_requests: u64,
    /// Delete after being stopped this long; `None` = never.
    pub time: Option<Duration>,
}

/// The restart policy (Tutum `autorestart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart (`OFF`).
    #[default]
    Never,
    /// Restart whatever the exit code (`ALWAYS`).
    Always,
    /// Restart on a non-zero exit code (`ON_FAILURE`).
    OnFailure,
}

/// Tutum's autodestroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Autodestroy {
    /// Keep a stopped instance.
    #[default]
    Off,
    /// Destroy on a non-zero exit code.
    OnFailure,
    /// Destroy on exit code 0.
    OnSuccess,
    /// Always destroy.
    Always,
}

/// The default configuration, compiled into the binary (`config/autokill.yaml`).
pub const EMBEDDED: &str = include_str!("../../config/autokill.yaml");

/// An error in a configuration file, with where it is.
///
/// Displays as `origin:line:column: message`, or `origin: message` when the error is not tied
/// to a place (line 0), e.g. an unreadable file.
#[derive(Debug, thiserror::Error)]
#[error("{origin}{}: {message}", place(*.line, *.column))]
pub struct ConfigError {
    /// File name, or `<embedded>`.
    pub origin: String,
    /// 1-based line, 0 when the error is not tied to a place (e.g. unreadable file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the key.
    pub message: String,
}

/// `:line:column`, or nothing for line 0.
fn place(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{column}")
    }
}

/// A [`ConfigError`] before it knows which file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, starting with the key path.
    pub message: String,
}

impl Problem {
    fn in_file(self, origin: &str) -> ConfigError {
        ConfigError {
            origin: origin.to_owned(),
            line: self.line,
            column: self.column,
            message: self.message,
        }
    }
}

/// Reads and validates a configuration file; errors name the file as given.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|err| ConfigError {
        origin: origin.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the configuration file: {err}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        // Point at the first bad byte: everything before it is valid UTF-8.
        let valid = err.utf8_error().valid_up_to();
        let before = String::from_utf8_lossy(&err.as_bytes()[..valid]);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError {
            origin: origin.clone(),
            line,
            column,
            message: "the file is not valid UTF-8".to_owned(),
        }
    })?;
    parse(&text, &origin)
}

/// Parses and validates configuration text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw = raw::decode(text).map_err(|p| p.in_file(origin))?;
    validate::validate(raw).map_err(|p| p.in_file(origin))
}

impl RestartPolicy {
    /// The wire name: `never`, `always`, `on-failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
        }
    }

    /// Parses a wire name, or Tutum's `OFF`, `ALWAYS`, `ON_FAILURE`.
    pub fn from_wire(s: &str) -> Option<RestartPolicy> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "never" | "off" | "no" => Some(RestartPolicy::Never),
            "always" => Some(RestartPolicy::Always),
            "on-failure" => Some(RestartPolicy::OnFailure),
            _ => None,
        }
    }
}

impl Autodestroy {
    /// The wire name: `OFF`, `ON_FAILURE`, `ON_SUCCESS`, `ALWAYS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Autodestroy::Off => "OFF",
            Autodestroy::OnFailure => "ON_FAILURE",
            Autodestroy::OnSuccess => "ON_SUCCESS",
            Autodestroy::Always => "ALWAYS",
        }
    }

    /// Parses a wire name, in any case.
    pub fn from_wire(s: &str) -> Option<Autodestroy> {
        match s.to_ascii_uppercase().as_str() {
            "OFF" => Some(Autodestroy::Off),
            "ON_FAILURE" => Some(Autodestroy::OnFailure),
            "ON_SUCCESS" => Some(Autodestroy::OnSuccess),
            "ALWAYS" => Some(Autodestroy::Always),
            _ => None,
        }
    }
}
