//! Raw YAML types -> validated [`Config`]: defaults filled in, every value and cross-reference
//! checked, each refusal placed at the offending value and named by its key path.
//!
//! Checks run in the order of the file's sections and stop at the first problem, so the user
//! fixes one thing at a time in reading order.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::duration::RawDuration;
use super::raw::{
    RawAdmin, RawApiUser, RawAutodestroy, RawAutokillSettings, RawBalance, RawConfig, RawDefaults,
    RawGroup, RawImage, RawInstance, RawProxy, RawRestartPolicy, RawRuntime, RawRuntimeKind,
    RawShutdown, RawStore, key_path, sanitize,
};
use super::scalar::RawScalar;
use super::size::{self, RawSize};
use super::{
    AdminConfig, ApiUser, Autodestroy, Autokill, AutokillConfig, Balance, BodyLimit, Config,
    Defaults, GroupConfig, ImageConfig, InstanceConfig, Problem, ProxyConfig, RestartPolicy,
    RuntimeConfig, RuntimeKind, StoreConfig,
};

/// Default `proxy.listen`.
const PROXY_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Default `admin.listen`.
const ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
/// Default `proxy.base_domain`.
const BASE_DOMAIN: &str = "localhost";
/// Default `store.path`.
const STORE_PATH: &str = "data/autokill.redb";
/// Default `proxy.pool_idle_per_instance`.
const POOL_IDLE: u64 = 64;
/// Upper bound of `proxy.workers`: far above any core count, low enough to catch a typo
/// before it spawns thousands of threads.
const MAX_WORKERS: u64 = 1024;
/// Upper bound of `proxy.pool_idle_per_instance`.
const MAX_POOL_IDLE: u64 = 65_536;
/// Upper bound of `proxy.max_connections_per_worker` and `admin.max_connections`.
const MAX_CONNECTIONS: u64 = 1_000_000;
/// Default `proxy.idle_timeout` and `admin.idle_timeout`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `proxy.header_read_timeout` and `admin.header_read_timeout`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `admin.max_body_size`: nginx's `client_max_body_size`, and far above what a batch of
/// the API's largest items (1000 per call) takes.
const MAX_BODY_SIZE: usize = 1 << 20;
/// Bounds of `admin.max_body_size`: a body is held in memory whole before it is parsed.
const BODY_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 10)..=(1 << 30);
/// Default `runtime.max_concurrent_kills`. A kill storm (hundreds of instances spending their
/// budgets in the same second) would otherwise ask the engine for hundreds of stops and removes
/// at once; container engines serialise much of that work (network and cgroup teardown) and
/// answer slowly or time out under it, and the host spends the burst of exits on the cores the
/// proxy serves from. 64 keeps a storm of instances that exit on SIGTERM well under a second
/// (see `benches/kill_storm.sh`); instances that ignore SIGTERM hold a place for the whole
/// `stop_grace`, so a storm of those takes about (instances / 64) × `stop_grace`.
const MAX_CONCURRENT_KILLS: u64 = 64;
/// Default `runtime.max_concurrent_starts`. A restart after a crash starts again every instance
/// that was running; a thousand processes spawned at once (or a thousand container starts asked
/// of the engine) take both cores of a small host for seconds, and the proxy and the admin API
/// wait for their share. A start holds its place only until its instance answers, which takes
/// milliseconds for most programs, so 16 keeps the cores for the rest without slowing a usual
/// burst of starts (see `benches/control_plane.rs`, `kill -9` to `/readyz`). Programs that take
/// long to listen start in about (instances / 16) × their start time.
const MAX_CONCURRENT_STARTS: u64 = 16;
/// Upper bound of `runtime.max_concurrent_kills` and `runtime.max_concurrent_starts`: in
/// effect unlimited.
const MAX_KILLS_BOUND: u64 = 100_000;
/// Longest host name (RFC 1035 §2.3.4, without the root dot).
const MAX_HOST_LEN: usize = 253;

/// Validates the whole file.
pub(crate) fn validate(raw: RawConfig) -> Result<Config, Problem> {
    let proxy = proxy(raw.proxy.unwrap_or_default())?;
    let admin = admin(raw.admin.unwrap_or_default(), &proxy)?;
    let store = store(raw.store.unwrap_or_default())?;
    let runtime = runtime(raw.runtime.unwrap_or_default())?;
    let defaults = defaults(raw.defaults.unwrap_or_default())?;
    let autokill = autokill(raw.autokill.unwrap_or_default())?;
    let shutdown = match raw.shutdown {
        Some(RawShutdown::StopInstances) => crate::config::Shutdown::StopInstances,
        Some(RawShutdown::LeaveInstances) => crate::config::Shutdown::LeaveInstances,
        // Containers are adopted by the next start, so leaving them costs nothing and spares
        // their users a restart; processes cannot be adopted, so they are stopped.
        None => match runtime.kind {
            RuntimeKind::Docker { .. } => crate::config::Shutdown::LeaveInstances,
            RuntimeKind::Process => crate::config::Shutdown::StopInstances,
        },
    };

    let mut names = Names::default();
    let mut service_groups = Vec::new();
    // Resolved group domains, kept with their place for the collision check at the end.
    let mut domains: Vec<(String, Place, String)> = Vec::new();
    for (i, group) in raw
        .service_groups
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = format!("service_groups[{i}]");
        let group = self::group(group, &path, &proxy.base_domain, &runtime, &mut names)?;
        let places = group.domain_places.iter().copied();
        for (j, (domain, place)) in group.config.domains.iter().zip(places).enumerate() {
            domains.push((domain.clone(), place, format!("{path}.domains[{j}]")));
        }
        service_groups.push(group.config);
    }
    let mut instances = Vec::new();
    for (j, instance) in raw.instances.unwrap_or_default().into_iter().enumerate() {
        let path = format!("instances[{j}]");
        instances.push(self::instance(instance, &path, &runtime, &mut names)?);
    }

    // Only now are all instance names known; a domain equal to an instance's own host name
    // would make the route ambiguous.
    for (domain, place, path) in &domains {
        if let Some(name) = domain
            .strip_suffix(&proxy.base_domain)
            .and_then(|rest| rest.strip_suffix('.'))
            && let Some(first) = names.instances.get(name)
        {
            return Err(place.fail(
                path,
                format!(
                    "{domain:?} is the host name of instance {name:?} (line {}); \
                     a group domain must not shadow an instance",
                    first.line
                ),
            ));
        }
    }

    Ok(Config {
        proxy,
        admin,
        store,
        runtime,
        defaults,
        autokill,
        service_groups,
        instances,
        shutdown,
    })
}

/// Where a value is in the file (1-based line and column).
#[derive(Debug, Clone, Copy)]
struct Place {
    line: usize,
    column: usize,
}

impl Place {
    /// Where the value was written (for an alias: the alias, not the anchor).
    fn of<T>(spanned: &Spanned<T>) -> Self {
        let location = spanned.referenced;
        Self {
            line: usize::try_from(location.line()).unwrap_or(usize::MAX),
            column: usize::try_from(location.column()).unwrap_or(usize::MAX),
        }
    }

    /// The problem `path: message` at this place.
    fn fail(self, path: &str, message: impl Display) -> Problem {
        Problem {
            line: self.line,
            column: self.column,
            message: sanitize(&format!("{path}: {message}")),
        }
    }
}

/// Names seen so far, with where, for the uniqueness checks.
#[derive(Default)]
struct Names {
    groups: HashMap<String, Place>,
    instances: HashMap<String, Place>,
    /// Resolved domain -> where it was first listed.
    domains: HashMap<String, Place>,
}

fn proxy(raw: RawProxy) -> Result<ProxyConfig, Problem> {
    let workers = bounded(raw.workers.as_ref(), "proxy.workers", 0, MAX_WORKERS)?;
    let pool_idle = bounded(
        raw.pool_idle_per_instance.as_ref(),
        "proxy.pool_idle_per_instance",
        POOL_IDLE,
        MAX_POOL_IDLE,
    )?;
    let base_domain = match &raw.base_domain {
        None => BASE_DOMAIN.to_owned(),
        Some(spanned) => {
            let place = Place::of(spanned);
            let path = "proxy.base_domain";
            let value = spanned.value.to_ascii_lowercase();
            if value.starts_with('.') || value.ends_with('.') {
                return Err(place.fail(
                    path,
                    format!(
                        "{:?}: write the domain without a leading or trailing dot",
                        value
                    ),
                ));
            }
            host_name(&value).map_err(|why| place.fail(path, why))?;
            value
        }
    };
    Ok(ProxyConfig {
        listen: socket_addr(raw.listen.as_ref(), "proxy.listen", PROXY_LISTEN)?,
        workers,
        base_domain,
        header_read_timeout: timeout(
            raw.header_read_timeout.as_ref(),
            "proxy.header_read_timeout",
            HEADER_READ_TIMEOUT,
        )?,
        upstream_connect_timeout: timeout(
            raw.upstream_connect_timeout.as_ref(),
            "proxy.upstream_connect_timeout",
            Duration::from_secs(2),
        )?,
        upstream_timeout: timeout(
            raw.upstream_timeout.as_ref(),
            "proxy.upstream_timeout",
            Duration::from_secs(30),
        )?,
        pool_idle_per_instance: pool_idle,
        idle_timeout: timeout(
            raw.idle_timeout.as_ref(),
            "proxy.idle_timeout",
            IDLE_TIMEOUT,
        )?,
        max_connections_per_worker: bounded(
            raw.max_connections_per_worker.as_ref(),
            "proxy.max_connections_per_worker",
            0,
            MAX_CONNECTIONS,
        )?,
        request_body_timeout: timeout(
            raw.request_body_timeout.as_ref(),
            "proxy.request_body_timeout",
            Duration::from_secs(10),
        )?,
        response_write_timeout: timeout(
            raw.response_write_timeout.as_ref(),
            "proxy.response_write_timeout",
            Duration::from_secs(30),
        )?,
        balance: match raw.balance {
            None | Some(RawBalance::RoundRobin) => Balance::RoundRobin,
            Some(RawBalance::LeastInflight) => Balance::LeastInflight,
        },
        max_header_bytes: byte_size(
            raw.max_header_bytes.as_ref(),
            "proxy.max_header_bytes",
            64 * 1024,
            1024..=1 << 20,
        )?,
        max_header_fields: within(
            raw.max_header_fields.as_ref(),
            "proxy.max_header_fields",
            100,
            1..=crate::proxy::request::MAX_FIELD_SLOTS as u64,
        )?,
        max_uri_bytes: byte_size(
            raw.max_uri_bytes.as_ref(),
            "proxy.max_uri_bytes",
            8 * 1024,
            16..=1 << 20,
        )?,
        max_body_bytes: match body_limit(raw.max_body_bytes.as_ref(), "proxy.max_body_bytes")? {
            BodyLimit::Bytes(n) => Some(n),
            BodyLimit::Inherit | BodyLimit::Unlimited => None,
        },
        max_requests_per_connection: raw
            .max_requests_per_connection
            .as_ref()
            .map_or(0, |s| s.value),
    })
}

/// A count that must lie in `range` (`default` when absent).
fn within(
    spanned: Option<&Spanned<u64>>,
    path: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<usize, Problem> {
    match spanned {
        Some(s) if !range.contains(&s.value) => Err(Place::of(s).fail(
            path,
            format!(
                "{} is not between {} and {}",
                s.value,
                range.start(),
                range.end()
            ),
        )),
        // Bounded by the range's end, which fits in usize on every supported platform.
        _ => Ok(usize::try_from(spanned.map_or(default, |s| s.value)).unwrap_or(usize::MAX)),
    }
}

fn admin(raw: RawAdmin, proxy: &ProxyConfig) -> Result<AdminConfig, Problem> {
    let listen = socket_addr(raw.listen.as_ref(), "admin.listen", ADMIN_LISTEN)?;
    let listen_place = raw.listen.as_ref().map(Place::of);
    if let Some(place) = listen_place
        && same_port(listen, proxy.listen)
    {
        return Err(place.fail(
            "admin.listen",
            format!(
                "{listen} is also proxy.listen ({}); use another port",
                proxy.listen
            ),
        ));
    }
    let token = match raw.token {
        None => None,
        Some(spanned) => {
            let place = Place::of(&spanned);
            let token = spanned.value;
            if token.is_empty() {
                return Err(place.fail(
                    "admin.token",
                    "empty token; remove the key for no authentication (loopback only) \
                     or set a secret",
                ));
            }
            // The token travels in `Authorization: Bearer <token>`; a character a header
            // cannot carry would make the API unreachable.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(place.fail(
                    "admin.token",
                    "the token must be printable ASCII without spaces (it is sent in an HTTP header)",
                ));
            }
            Some(token)
        }
    };
    if token.is_none()
        && !listen.ip().is_loopback()
        && let Some(place) = listen_place
    {
        return Err(place.fail(
            "admin.listen",
            format!(
                "{listen} is not a loopback address, so admin.token is required \
                 (without it the API would be open to the network)"
            ),
        ));
    }
    let mut allowed_hosts = Vec::new();
    for (i, spanned) in raw.allowed_hosts.into_iter().flatten().enumerate() {
        let written = spanned.value.trim().to_ascii_lowercase();
        // `name` or `name:port`; an IPv6 literal in brackets (`[fd00::1]:8081`).
        let name = match written.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(':') && port.parse::<u16>().is_ok() => name,
            _ => written.as_str(),
        };
        let bracketed = name.starts_with('[') && name.ends_with(']');
        if !bracketed && host_name(name.trim_end_matches('.')).is_err() {
            return Err(Place::of(&spanned).fail(
                &format!("admin.allowed_hosts[{i}]"),
                format!(
                    "{:?} is not a host name or host:port (e.g. autokill.internal:8081)",
                    spanned.value
                ),
            ));
        }
        allowed_hosts.push(written);
    }
    let api_users = api_users(raw.api_users.unwrap_or_default())?;
    Ok(AdminConfig {
        listen,
        token,
        allowed_hosts,
        header_read_timeout: timeout(
            raw.header_read_timeout.as_ref(),
            "admin.header_read_timeout",
            HEADER_READ_TIMEOUT,
        )?,
        idle_timeout: timeout(
            raw.idle_timeout.as_ref(),
            "admin.idle_timeout",
            IDLE_TIMEOUT,
        )?,
        max_connections: bounded(
            raw.max_connections.as_ref(),
            "admin.max_connections",
            0,
            MAX_CONNECTIONS,
        )?,
        api_users,
        max_body_size: byte_size(
            raw.max_body_size.as_ref(),
            "admin.max_body_size",
            MAX_BODY_SIZE,
            BODY_SIZE_RANGE,
        )?,
    })
}

/// `admin.api_users`: names and keys travel in `Authorization` (`ApiKey user:key`, or Basic's
/// `user:key`), so both are printable ASCII without spaces, and a name has no `:`.
fn api_users(raw: Vec<RawApiUser>) -> Result<Vec<ApiUser>, Problem> {
    let mut users: Vec<ApiUser> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let user_path = format!("admin.api_users[{i}].user");
        let place = Place::of(&entry.user);
        let user = entry.user.value;
        if user.is_empty() {
            return Err(place.fail(&user_path, "empty user name"));
        }
        if !user.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(place.fail(
                &user_path,
                "a user name must be printable ASCII without spaces or ':' (it is sent as user:key)",
            ));
        }
        if users.iter().any(|u| u.user == user) {
            return Err(place.fail(&user_path, format!("user {user:?} is listed twice")));
        }
        let key_path = format!("admin.api_users[{i}].apikey");
        let place = Place::of(&entry.apikey);
        let apikey = entry.apikey.value;
        if apikey.is_empty() {
            return Err(place.fail(&key_path, "empty API key"));
        }
        if !apikey.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(place.fail(
                &key_path,
                "an API key must be printable ASCII without spaces (it is sent in an HTTP header)",
            ));
        }
        users.push(ApiUser { user, apikey });
    }
    Ok(users)
}

fn store(raw: RawStore) -> Result<StoreConfig, Problem> {
    let path = match raw.path {
        None => PathBuf::from(STORE_PATH),
        Some(spanned) if spanned.value.is_empty() => {
            return Err(Place::of(&spanned).fail("store.path", "empty path"));
        }
        Some(spanned) => PathBuf::from(spanned.value),
    };
    Ok(StoreConfig {
        path,
        quick_repair: raw.quick_repair.unwrap_or(true),
    })
}

fn runtime(raw: RawRuntime) -> Result<RuntimeConfig, Problem> {
    let docker = raw
        .kind
        .as_ref()
        .is_some_and(|kind| kind.value == RawRuntimeKind::Docker);
    let kind = if docker {
        let host = match raw.docker_host {
            None => None,
            Some(spanned) => {
                if spanned.value.starts_with("https://") {
                    return Err(Place::of(&spanned).fail(
                        "runtime.docker_host",
                        "TLS engine addresses are not supported; use a unix socket, or \
                         tcp://host:port on a trusted network",
                    ));
                }
                let known = ["unix://", "tcp://", "http://"];
                let rest = known
                    .iter()
                    .find_map(|scheme| spanned.value.strip_prefix(scheme));
                if rest.is_none_or(str::is_empty) {
                    return Err(Place::of(&spanned).fail(
                        "runtime.docker_host",
                        format!(
                            "{:?} is not an engine address; write unix:///path/to/socket \
                             or tcp://host:port",
                            spanned.value
                        ),
                    ));
                }
                Some(spanned.value)
            }
        };
        RuntimeKind::Docker { host }
    } else {
        if let Some(spanned) = &raw.docker_host {
            return Err(Place::of(spanned).fail(
                "runtime.docker_host",
                "only used with runtime.kind: docker (the runtime is process)",
            ));
        }
        RuntimeKind::Process
    };

    let mut images = BTreeMap::new();
    for (name, spanned) in raw.images.unwrap_or_default() {
        let path = key_path("runtime.images", &name);
        let image = image(&name, spanned, &path, docker)?;
        images.insert(name, image);
    }
    let default_port = match raw.default_port {
        None => None,
        Some(port) if !docker => {
            return Err(Place::of(&port).fail(
                "runtime.default_port",
                "only used with runtime.kind: docker (the runtime is process)",
            ));
        }
        Some(port) if port.value == 0 => {
            return Err(Place::of(&port).fail("runtime.default_port", "must be 1 to 65535"));
        }
        Some(port) => Some(port.value),
    };

    let stopping_cgroup = match raw.stopping_cgroup {
        None => None,
        Some(path) if docker => {
            return Err(Place::of(&path).fail(
                "runtime.stopping_cgroup",
                "only used with runtime.kind: process (the engine keeps a container's cgroup)",
            ));
        }
        Some(path) if !path.value.starts_with('/') => {
            return Err(Place::of(&path).fail(
                "runtime.stopping_cgroup",
                format!(
                    "{:?} is not an absolute path; name the cgroup's directory, e.g. \
                     /sys/fs/cgroup/autokill-stopping",
                    path.value
                ),
            ));
        }
        Some(path) => Some(PathBuf::from(path.value)),
    };

    Ok(RuntimeConfig {
        kind,
        stop_grace: timeout(
            raw.stop_grace.as_ref(),
            "runtime.stop_grace",
            Duration::from_secs(5),
        )?,
        start_timeout: timeout(
            raw.start_timeout.as_ref(),
            "runtime.start_timeout",
            Duration::from_secs(10),
        )?,
        images,
        default_port,
        max_concurrent_kills: within(
            raw.max_concurrent_kills.as_ref(),
            "runtime.max_concurrent_kills",
            MAX_CONCURRENT_KILLS,
            1..=MAX_KILLS_BOUND,
        )?,
        max_concurrent_starts: within(
            raw.max_concurrent_starts.as_ref(),
            "runtime.max_concurrent_starts",
            MAX_CONCURRENT_STARTS,
            1..=MAX_KILLS_BOUND,
        )?,
        // At most 19: the range is that small.
        controller_nice: within(
            raw.controller_nice.as_ref(),
            "runtime.controller_nice",
            10,
            0..=19,
        )? as u8,
        stopping_cgroup,
    })
}

fn image(
    name: &str,
    spanned: Spanned<Option<RawImage>>,
    path: &str,
    docker: bool,
) -> Result<ImageConfig, Problem> {
    let place = Place::of(&spanned);
    let raw = spanned.value.unwrap_or_default();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(place.fail(path, "an image name must be non-empty and without spaces"));
    }

    let reference = match raw.image {
        None => None,
        Some(spanned) if !docker => {
            return Err(Place::of(&spanned).fail(
                &format!("{path}.image"),
                "only used with runtime.kind: docker; the process runtime runs `command`",
            ));
        }
        Some(spanned) => {
            if !is_image_reference(&spanned.value) {
                return Err(Place::of(&spanned).fail(
                    &format!("{path}.image"),
                    format!(
                        "{:?} is not an image reference, e.g. localhost/hello:latest or \
                         docker.io/library/nginx:1.27",
                        spanned.value
                    ),
                ));
            }
            Some(spanned.value)
        }
    };
    if docker && reference.is_none() && !is_image_reference(name) {
        return Err(place.fail(
            path,
            format!("{name:?} is not an image reference; name the image with `image:` under it"),
        ));
    }

    let command = match raw.command {
        Some(list) => {
            let list_place = Place::of(&list);
            if list.value.is_empty() && !docker {
                return Err(list_place.fail(
                    &format!("{path}.command"),
                    "empty; the process runtime needs a program to run",
                ));
            }
            let mut command = Vec::with_capacity(list.value.len());
            for (k, arg) in list.value.into_iter().enumerate() {
                let arg_path = format!("{path}.command[{k}]");
                if arg.value.contains('\0') {
                    return Err(Place::of(&arg).fail(&arg_path, "contains a NUL character"));
                }
                if k == 0 && arg.value.is_empty() {
                    return Err(Place::of(&arg).fail(&arg_path, "empty program name"));
                }
                if docker && arg.value.contains("{autokill}") {
                    return Err(Place::of(&arg).fail(
                        &arg_path,
                        "{autokill} is the path of autokill on this machine, which does not \
                         exist inside a container",
                    ));
                }
                command.push(arg.value);
            }
            command
        }
        None if !docker => {
            return Err(place.fail(
                &format!("{path}.command"),
                "missing; the process runtime needs a program to run, e.g. \
                 [\"{autokill}\", \"hello\", \"--listen\", \"127.0.0.1:{port}\"]",
            ));
        }
        None => Vec::new(),
    };

    let mut env = BTreeMap::new();
    for (key, value) in raw.env.unwrap_or_default() {
        let value_place = Place::of(&value);
        let env_path = key_path(&format!("{path}.env"), &key);
        // The OS refuses these at spawn time; catching them here names the key.
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(value_place.fail(
                &env_path,
                "an environment variable name must be non-empty, without '=' or NUL",
            ));
        }
        if value.value.contains('\0') {
            return Err(value_place.fail(&env_path, "contains a NUL character"));
        }
        env.insert(key, value.value);
    }

    let port = match raw.port {
        None => None,
        Some(port) if !docker => {
            return Err(Place::of(&port).fail(
                &format!("{path}.port"),
                "only used with runtime.kind: docker; the process runtime gives each \
                 instance a free port as {port}",
            ));
        }
        Some(port) if port.value == 0 => {
            return Err(Place::of(&port).fail(&format!("{path}.port"), "must be 1 to 65535"));
        }
        Some(port) => Some(port.value),
    };

    Ok(ImageConfig {
        image: reference,
        command,
        env,
        port,
    })
}

fn defaults(raw: RawDefaults) -> Result<Defaults, Problem> {
    Ok(Defaults {
        drain_timeout: timeout(
            raw.drain_timeout.as_ref(),
            "defaults.drain_timeout",
            Duration::from_secs(10),
        )?,
    })
}

fn autokill(raw: RawAutokillSettings) -> Result<AutokillConfig, Problem> {
    let path = "autokill.jitter";
    let Some(spanned) = raw.jitter else {
        return Ok(AutokillConfig::default());
    };
    let place = Place::of(&spanned);
    let jitter = match spanned.value {
        RawScalar::Float(f) => f,
        // Only 0 is in range; any other whole number stays out of range through the cast.
        RawScalar::Integer(i) => i as f64,
        RawScalar::Text(t) => {
            return Err(place.fail(
                path,
                format!("{t:?} is not a number; write a fraction such as 0.1"),
            ));
        }
        RawScalar::Other(what) => {
            return Err(place.fail(
                path,
                format!("expected a fraction such as 0.1, found {what}"),
            ));
        }
    };
    // A jitter of 1 or more would let a budget be cut to nothing; NaN compares false and is
    // refused here too.
    if !(0.0..1.0).contains(&jitter) {
        return Err(place.fail(
            path,
            format!(
                "{jitter} is out of range; use a fraction from 0 (off) up to, not including, 1"
            ),
        ));
    }
    Ok(AutokillConfig { jitter })
}

/// A validated group, with the places of its domains for the final collision check.
struct CheckedGroup {
    config: GroupConfig,
    domain_places: Vec<Place>,
}

fn group(
    raw: RawGroup,
    path: &str,
    base_domain: &str,
    runtime: &RuntimeConfig,
    names: &mut Names,
) -> Result<CheckedGroup, Problem> {
    let name = unique_name(
        &raw.name,
        &format!("{path}.name"),
        &mut names.groups,
        "group",
    )?;

    let mut domains = Vec::new();
    let mut domain_places = Vec::new();
    for (j, spanned) in raw.domains.unwrap_or_default().into_iter().enumerate() {
        let place = Place::of(&spanned);
        let domain_path = format!("{path}.domains[{j}]");
        let written = spanned.value.to_ascii_lowercase();
        let full = match written.strip_suffix('.') {
            Some(full) => full.to_owned(),
            None if written.is_empty() => String::new(),
            None => format!("{written}.{base_domain}"),
        };
        host_name(&full)
            .map_err(|why| place.fail(&domain_path, format!("{:?}: {why}", spanned.value)))?;
        if let Some(first) = names.domains.get(&full) {
            return Err(place.fail(
                &domain_path,
                format!("domain {full:?} is already listed at line {}", first.line),
            ));
        }
        names.domains.insert(full.clone(), place);
        domains.push(full);
        domain_places.push(place);
    }

    let autokill_time = match raw.autokill {
        None => None,
        Some(autokill) => {
            optional_duration(autokill.time.as_ref(), &format!("{path}.autokill.time"))?
        }
    };

    let mut instances = Vec::new();
    for (j, instance) in raw.instances.unwrap_or_default().into_iter().enumerate() {
        let instance_path = format!("{path}.instances[{j}]");
        instances.push(self::instance(instance, &instance_path, runtime, names)?);
    }

    Ok(CheckedGroup {
        config: GroupConfig {
            name,
            domains,
            autokill_time,
            instances,
            max_body_bytes: body_limit(
                raw.max_body_bytes.as_ref(),
                &format!("{path}.max_body_bytes"),
            )?,
        },
        domain_places,
    })
}

fn instance(
    raw: RawInstance,
    path: &str,
    runtime: &RuntimeConfig,
    names: &mut Names,
) -> Result<InstanceConfig, Problem> {
    let name = unique_name(
        &raw.name,
        &format!("{path}.name"),
        &mut names.instances,
        "instance",
    )?;

    // With docker an instance may name an image reference outside the table, as the API allows.
    let docker = matches!(runtime.kind, RuntimeKind::Docker { .. });
    if docker && !runtime.images.contains_key(&raw.image.value) {
        if !is_image_reference(&raw.image.value) {
            return Err(Place::of(&raw.image).fail(
                &format!("{path}.image"),
                format!(
                    "{:?} is neither a key of runtime.images nor an image reference",
                    raw.image.value
                ),
            ));
        }
    } else if !runtime.images.contains_key(&raw.image.value) {
        let known: Vec<&str> = runtime.images.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none; declare it under runtime.images".to_owned()
        } else {
            known.join(", ")
        };
        return Err(Place::of(&raw.image).fail(
            &format!("{path}.image"),
            format!("unknown image {:?} (known: {known})", raw.image.value),
        ));
    }

    let autokill = match raw.autokill {
        None => Autokill::default(),
        Some(autokill) => Autokill {
            num_requests: match autokill.num_requests {
                None => 0,
                Some(n) => {
                    check_num_requests(n.value).map_err(|e| {
                        Place::of(&n).fail(&format!("{path}.autokill.num_requests"), e)
                    })?;
                    n.value
                }
            },
            time: optional_duration(autokill.time.as_ref(), &format!("{path}.autokill.time"))?,
        },
    };

    let restart_policy = match raw.restart_policy.as_ref().map(|s| s.value) {
        None | Some(RawRestartPolicy::Never) => RestartPolicy::Never,
        Some(RawRestartPolicy::Always) => RestartPolicy::Always,
        Some(RawRestartPolicy::OnFailure) => RestartPolicy::OnFailure,
    };
    let autodestroy = match raw.autodestroy.as_ref().map(|s| s.value) {
        None | Some(RawAutodestroy::Off) => Autodestroy::Off,
        Some(RawAutodestroy::OnFailure) => Autodestroy::OnFailure,
        Some(RawAutodestroy::OnSuccess) => Autodestroy::OnSuccess,
        Some(RawAutodestroy::Always) => Autodestroy::Always,
    };
    // SPEC: the restart policy is evaluated first, so with `always` the instance is never left
    // stopped for autodestroy to act on; the combination is refused rather than ignored.
    if restart_policy == RestartPolicy::Always
        && autodestroy != Autodestroy::Off
        && let Some(spanned) = &raw.autodestroy
    {
        let written = match autodestroy {
            Autodestroy::Off => "OFF",
            Autodestroy::OnFailure => "ON_FAILURE",
            Autodestroy::OnSuccess => "ON_SUCCESS",
            Autodestroy::Always => "ALWAYS",
        };
        return Err(Place::of(spanned).fail(
            &format!("{path}.autodestroy"),
            format!(
                "{written} cannot be combined with restart_policy: always (an instance that \
                 is always restarted is never left stopped to be destroyed); use \
                 autodestroy: OFF or another restart_policy"
            ),
        ));
    }

    Ok(InstanceConfig {
        name,
        image: raw.image.value,
        autokill,
        restart_policy,
        autodestroy,
        max_body_bytes: body_limit(
            raw.max_body_bytes.as_ref(),
            &format!("{path}.max_body_bytes"),
        )?,
    })
}

/// Checks a group or instance name (DNS label) and that it is not taken.
fn unique_name(
    spanned: &Spanned<String>,
    path: &str,
    seen: &mut HashMap<String, Place>,
    what: &str,
) -> Result<String, Problem> {
    let place = Place::of(spanned);
    let name = &spanned.value;
    check_name(name).map_err(|e| place.fail(path, e))?;
    if what == "instance" && RESERVED_NAMES.contains(&name.as_str()) {
        return Err(place.fail(
            path,
            format!("{name:?} cannot be an instance name: the admin API uses it as a path segment (/v1/instances/{name})"),
        ));
    }
    if let Some(first) = seen.get(name) {
        return Err(place.fail(
            path,
            format!(
                "{what} name {name:?} is already used at line {}",
                first.line
            ),
        ));
    }
    seen.insert(name.clone(), place);
    Ok(name.clone())
}

/// Checks a resource name, for the configuration and the API alike: a lower-case DNS label
/// (instances are addressed as `<name>.<base_domain>`) that does not parse as a UUID (the API
/// reads `{id}` as a UUID first, so such a name would address another resource).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if !is_label(name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "invalid name {name:?}: use 1 to 63 lower-case letters, digits and '-', \
             not starting or ending with '-'"
        ));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(format!(
            "{name:?} has the shape of a UUID; the API would take it for one, so choose \
             another name"
        ));
    }
    Ok(())
}

/// Checks a request budget against what the proxy's meter can count.
pub(crate) fn check_num_requests(n: u64) -> Result<(), String> {
    use crate::proxy::meter::MAX_LIMIT;
    if n > MAX_LIMIT {
        return Err(format!(
            "{n} is more than the meter can count (at most {MAX_LIMIT}; 0 disables)"
        ));
    }
    Ok(())
}

/// Path segments of the admin API under `/v1/instances/` that an instance name would shadow.
pub(crate) const RESERVED_NAMES: [&str; 9] = [
    "templates",
    "start",
    "stop",
    "wait",
    "log",
    "metrics",
    "history",
    "suspend",
    "checkpoints",
];

/// A DNS label: 1-63 of ASCII letters, digits and '-', not starting or ending with '-'.
pub(crate) fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Checks an already lower-cased host name without the root dot.
pub(crate) fn host_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty host name".to_owned());
    }
    if name.len() > MAX_HOST_LEN {
        return Err(format!("host name longer than {MAX_HOST_LEN} characters"));
    }
    if !name.is_ascii() {
        return Err("not ASCII; write an internationalised name in its xn-- form".to_owned());
    }
    match name.split('.').find(|label| !is_label(label)) {
        None => Ok(()),
        Some(label) => Err(format!(
            "invalid host name label {label:?}: use 1 to 63 letters, digits and '-', \
             not starting or ending with '-'"
        )),
    }
}

/// Whether binding both addresses would collide on the port.
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    // Port 0 asks the OS for a free port, which never collides.
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn socket_addr(
    spanned: Option<&Spanned<String>>,
    path: &str,
    default: SocketAddr,
) -> Result<SocketAddr, Problem> {
    let Some(spanned) = spanned else {
        return Ok(default);
    };
    spanned.value.parse().map_err(|_| {
        Place::of(spanned).fail(
            path,
            format!(
                "{:?} is not an IP address and port, e.g. 127.0.0.1:8080 or [::1]:8080",
                spanned.value
            ),
        )
    })
}

fn bounded(
    spanned: Option<&Spanned<u64>>,
    path: &str,
    default: u64,
    max: u64,
) -> Result<usize, Problem> {
    let value = spanned.map_or(default, |s| s.value);
    match spanned {
        Some(s) if value > max => {
            Err(Place::of(s).fail(path, format!("{value} is more than {max}")))
        }
        // Bounded by `max`, which fits in usize on every supported platform.
        _ => Ok(usize::try_from(value).unwrap_or(usize::MAX)),
    }
}

/// A timeout: must be > 0.
/// Whether `s` can be an OCI image reference (`[registry/]path[:tag][@digest]`): lower-case
/// path components of letters, digits and separators, as the engines accept. The engine has the
/// last word; this only catches what can never be one (spaces, upper case in the path, empty
/// parts), so that a typo is refused with its place instead of failing at the first start.
pub(crate) fn is_image_reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if digest.is_some_and(|d| {
        !d.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty() && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit())
        })
    }) {
        return false;
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry's port).
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    });
    let mut parts = path.split('/').peekable();
    let mut first = true;
    let mut ok = !path.is_empty();
    while let Some(part) = parts.next() {
        // The first of several parts may be a registry host with a port and upper case.
        let registry = first && parts.peek().is_some();
        first = false;
        ok &= !part.is_empty()
            && part.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '.' | '_' | '-')
                    || (registry && (c.is_ascii_uppercase() || c == ':'))
            })
            && part.starts_with(|c: char| c.is_ascii_alphanumeric());
    }
    ok && tag_ok
}

fn timeout(
    spanned: Option<&Spanned<RawDuration>>,
    path: &str,
    default: Duration,
) -> Result<Duration, Problem> {
    let Some(spanned) = spanned else {
        return Ok(default);
    };
    let place = Place::of(spanned);
    let duration = spanned
        .value
        .to_duration()
        .map_err(|why| place.fail(path, why))?;
    if duration.is_zero() {
        return Err(place.fail(path, "must be more than 0, e.g. \"10s\""));
    }
    Ok(duration)
}

/// A size in bytes within `range` (`default` when absent), as `T` (`usize` for sizes that
/// index memory, `u64` for body limits).
fn byte_size<T: TryFrom<u64>>(
    spanned: Option<&Spanned<RawSize>>,
    path: &str,
    default: T,
    range: std::ops::RangeInclusive<u64>,
) -> Result<T, Problem> {
    let Some(spanned) = spanned else {
        return Ok(default);
    };
    let place = Place::of(spanned);
    let bytes = spanned
        .value
        .to_bytes()
        .map_err(|why| place.fail(path, why))?;
    if !range.contains(&bytes) {
        return Err(place.fail(
            path,
            format!(
                "{} is out of range; use {} to {}",
                size::display(bytes),
                size::display(*range.start()),
                size::display(*range.end())
            ),
        ));
    }
    T::try_from(bytes).map_err(|_| place.fail(path, "too large for this platform"))
}

/// A request body limit (`max_body_bytes` of the proxy, a group or an instance): a size, 0 = no
/// limit; absent = inherited.
fn body_limit(spanned: Option<&Spanned<RawSize>>, path: &str) -> Result<BodyLimit, Problem> {
    if spanned.is_none() {
        return Ok(BodyLimit::Inherit);
    }
    Ok(match byte_size(spanned, path, 0, 0..=u64::MAX)? {
        0 => BodyLimit::Unlimited,
        n => BodyLimit::Bytes(n),
    })
}

/// A trigger time: 0 or absent disables it.
fn optional_duration(
    spanned: Option<&Spanned<RawDuration>>,
    path: &str,
) -> Result<Option<Duration>, Problem> {
    let Some(spanned) = spanned else {
        return Ok(None);
    };
    let duration = spanned
        .value
        .to_duration()
        .map_err(|why| Place::of(spanned).fail(path, why))?;
    Ok((!duration.is_zero()).then_some(duration))
}
