//! The YAML file as serde reads it: one struct per mapping, every key documented, nothing checked.
//!
//! These types mirror `config/autokill.yaml` key by key. Every key is optional here, even the
//! ones the schema requires, except where serde's own "missing key" error is the right answer
//! (`name`, `image`); defaults and all checks live in `validate.rs`, which turns these into the
//! public types. Scalars that validation may have to complain about are [`Spanned`], so that the
//! complaint carries the value's line and column. Every struct refuses unknown keys, so a typo
//! is an error instead of a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_path_to_error::{Path, Segment};
use serde_saphyr::{Error as YamlError, MessageFormatter, Spanned, UserMessageFormatter};

use super::Problem;
use super::duration::RawDuration;
use super::scalar::RawScalar;
use super::size::RawSize;

/// The whole file. An empty file is valid and means "all defaults".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// `proxy:` — the listener that carries instance traffic.
    pub proxy: Option<RawProxy>,
    /// `admin:` — the listener of the API, the web page, metrics and health checks.
    pub admin: Option<RawAdmin>,
    /// `store:` — where durable state lives.
    pub store: Option<RawStore>,
    /// `runtime:` — which backend runs the instances, and the images it can run.
    pub runtime: Option<RawRuntime>,
    /// `defaults:` — settings applied where a resource does not say otherwise.
    pub defaults: Option<RawDefaults>,
    /// `autokill:` — how request budgets are given out to new instances.
    pub autokill: Option<RawAutokillSettings>,
    /// `service_groups:` — groups of instances that share host names. Default: none.
    pub service_groups: Option<Vec<RawGroup>>,
    /// `instances:` — instances that belong to no group. Default: none.
    pub instances: Option<Vec<RawInstance>>,
    /// `shutdown:` — what SIGTERM/SIGINT does to the instances. Default `stop_instances`
    /// with the process runtime, `leave_instances` with docker.
    pub shutdown: Option<RawShutdown>,
}

/// `shutdown`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawShutdown {
    /// `stop_instances`: stop them; the next start starts those that were running.
    StopInstances,
    /// `leave_instances`: leave them running for the next start.
    LeaveInstances,
}

/// `proxy:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    /// IP address and port of the proxy listener. Default `127.0.0.1:8080`.
    pub listen: Option<Spanned<String>>,
    /// Worker threads, each with its own listener and upstream pool; 0 = one per core.
    /// Default 0, at most 1024.
    pub workers: Option<Spanned<u64>>,
    /// `<instance-name>.<base_domain>` addresses one instance; group domains without a
    /// trailing dot are under it. Default `localhost`.
    pub base_domain: Option<Spanned<String>>,
    /// Time a client has to send a request head. Default `10s`, must be > 0.
    pub header_read_timeout: Option<Spanned<RawDuration>>,
    /// Time to connect to an instance before answering 502. Default `2s`, must be > 0.
    pub upstream_connect_timeout: Option<Spanned<RawDuration>>,
    /// Time to wait for an instance's response head before answering 504. Default `30s`,
    /// must be > 0.
    pub upstream_timeout: Option<Spanned<RawDuration>>,
    /// Idle upstream connections kept per instance and worker. Default 64, at most 65536.
    pub pool_idle_per_instance: Option<Spanned<u64>>,
    /// A client connection with no request in progress is closed after this long. Default
    /// `60s`, must be > 0.
    pub idle_timeout: Option<Spanned<RawDuration>>,
    /// Most client connections one worker serves at once; 0 = derived from the open-file limit.
    /// Default 0, at most 1000000.
    pub max_connections_per_worker: Option<Spanned<u64>>,
    /// A request body that sends nothing for this long is answered 408. Default `10s`, > 0.
    pub request_body_timeout: Option<Spanned<RawDuration>>,
    /// A forwarded response the client takes nothing of for this long is cut off. Default
    /// `30s`, > 0.
    pub response_write_timeout: Option<Spanned<RawDuration>>,
    /// How a group picks one of its instances. Default `round_robin`.
    pub balance: Option<RawBalance>,
    /// Longest request head (request line and fields), a size (`64KiB`, or a whole number of
    /// bytes): 431 beyond. Default `64KiB`, `1KiB` to `1MiB`.
    pub max_header_bytes: Option<Spanned<RawSize>>,
    /// Most header fields in a request: 431 beyond. Default 100, 1 to 512.
    pub max_header_fields: Option<Spanned<u64>>,
    /// Longest request target, a size: 414 beyond. Default `8KiB`, 16 bytes to `1MiB`.
    pub max_uri_bytes: Option<Spanned<RawSize>>,
    /// Largest request body, a size: 413 beyond; 0 = no limit. Default 0. A group or an
    /// instance may set its own.
    pub max_body_bytes: Option<Spanned<RawSize>>,
    /// Requests one client connection carries before the proxy closes it; 0 = no limit.
    /// Default 0.
    pub max_requests_per_connection: Option<Spanned<u64>>,
}

/// `proxy.balance`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawBalance {
    /// `round_robin`: each routable instance in turn.
    RoundRobin,
    /// `least_inflight`: the routable instance with the fewest requests in flight.
    LeastInflight,
}

/// `admin:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// IP address and port of the admin listener. Default `127.0.0.1:8081`.
    pub listen: Option<Spanned<String>>,
    /// Bearer token the API requires. Default: none (no authentication), which is only
    /// allowed when `listen` is a loopback address. If set, not empty.
    pub token: Option<Spanned<String>>,
    /// Further `Host` names the admin listener answers to (besides its own address,
    /// `localhost`, `127.0.0.1` and `[::1]`), as `name` or `name:port`. Default: none.
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
    /// Time a client has to send a request head. Default `10s`, must be > 0.
    pub header_read_timeout: Option<Spanned<RawDuration>>,
    /// A connection with no request in progress is closed after this long. Default `60s`, > 0.
    pub idle_timeout: Option<Spanned<RawDuration>>,
    /// Most connections served at once; 0 = derived from the open-file limit. Default 0, at
    /// most 1000000.
    pub max_connections: Option<Spanned<u64>>,
    /// Users of the Tutum-compatible `/api/v1` (`ApiKey user:key` or Basic). Default: none.
    pub api_users: Option<Vec<RawApiUser>>,
    /// Largest request body any API or form post takes; larger ones get 413. Default `1MiB`,
    /// from `1KiB` to `1GiB`.
    pub max_body_size: Option<Spanned<RawSize>>,
}

/// One entry of `admin.api_users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiUser {
    /// The user name.
    pub user: Spanned<String>,
    /// The user's API key.
    pub apikey: Spanned<String>,
}

/// `store:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    /// Path of the single-file store, relative to the working directory.
    /// Default `data/autokill.redb`.
    pub path: Option<Spanned<String>>,
    /// Each commit also saves the file's free-space map, so that a start after a crash skips
    /// the full check of the file. Default true.
    pub quick_repair: Option<bool>,
}

/// `runtime:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    /// The backend: `process` or `docker`. Default `process`.
    pub kind: Option<Spanned<RawRuntimeKind>>,
    /// Docker Engine address (`unix:///path`, `tcp://host:port`, `http(s)://...`); only with
    /// `kind: docker`. Default: `DOCKER_HOST`, else the engine's default socket.
    pub docker_host: Option<Spanned<String>>,
    /// Time between the polite stop (SIGTERM, engine stop) and the forced one. Default `5s`,
    /// must be > 0.
    pub stop_grace: Option<Spanned<RawDuration>>,
    /// Time a started instance has to accept TCP connections. Default `10s`, must be > 0.
    pub start_timeout: Option<Spanned<RawDuration>>,
    /// Image name -> how to run it; an image with nothing under it (`nginx:`) takes all
    /// defaults, which suits docker. Default: none.
    pub images: Option<BTreeMap<String, Spanned<Option<RawImage>>>>,
    /// Docker only: the container port of an image that names none (no `port:`, no
    /// `EXPOSE`), 1-65535. Default: none (such an image is refused).
    pub default_port: Option<Spanned<u16>>,
    /// Most runtime deletes and stops carried out at once; more wait their turn, in order.
    /// Default 64, 1 to 100000.
    pub max_concurrent_kills: Option<Spanned<u64>>,
    /// Most runtime starts in progress at once (each from its spawn until the instance
    /// answers or fails); more wait their turn, in order. Default 16, 1 to 100000.
    pub max_concurrent_starts: Option<Spanned<u64>>,
    /// How much lower than the proxy's the controller's CPU priority is (a nice increment).
    /// Default 10, 0 to 19.
    pub controller_nice: Option<Spanned<u64>>,
    /// Process runtime only: an absolute path of a cgroup directory (v1 or v2) that a stopping
    /// instance's process is moved into just before its SIGTERM. Default: none (it stays where
    /// it is).
    pub stopping_cgroup: Option<Spanned<String>>,
}

/// `runtime.kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawRuntimeKind {
    /// `process`: local child processes.
    Process,
    /// `docker`: the Docker Engine API (Docker or Podman).
    Docker,
}

/// One entry of `runtime.images`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImage {
    /// Docker only: the OCI image reference to run. Default: the entry's own name.
    pub image: Option<Spanned<String>>,
    /// Program and arguments, with `{port}`, `{name}`, `{id}` and (process only) `{autokill}`
    /// placeholders.
    /// Required and non-empty for the process runtime; for docker it overrides the image's
    /// command. Default: none.
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    /// Extra environment variables, with the same placeholders. Default: none.
    pub env: Option<BTreeMap<String, Spanned<String>>>,
    /// Port the instance listens on inside its container; docker runtime only (1-65535).
    /// Default: none.
    pub port: Option<Spanned<u16>>,
}

/// `autokill:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAutokillSettings {
    /// Fraction of `num_requests` by which each new instance's budget may be cut, drawn per
    /// instance (gunicorn's `max_requests_jitter`, as a fraction). Default 0 (off); at least 0
    /// and less than 1.
    pub jitter: Option<Spanned<RawScalar>>,
}

/// `defaults:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    /// How long a draining instance may finish in-flight requests before it is deleted
    /// anyway. Default `10s`, must be > 0.
    pub drain_timeout: Option<Spanned<RawDuration>>,
}

/// One entry of `service_groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    /// Required. Unique among groups; 1-63 of `a-z`, `0-9`, `-`, not starting or ending in `-`.
    pub name: Spanned<String>,
    /// Host names of the group: `x` means `x.<base_domain>`, `x.example.` (trailing dot)
    /// means `x.example`. Unique across groups. Default: none.
    pub domains: Option<Vec<Spanned<String>>>,
    /// `{time}`: delete the group once it has been empty this long. Default: never.
    pub autokill: Option<RawGroupAutokill>,
    /// The group's instances. Default: none.
    pub instances: Option<Vec<RawInstance>>,
    /// Largest request body its instances take, a size; 0 = no limit. Default: the proxy's
    /// `max_body_bytes`; an instance's own setting wins.
    pub max_body_bytes: Option<Spanned<RawSize>>,
}

/// `service_groups[].autokill`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroupAutokill {
    /// Delete the group after it has been empty this long; `0` or absent = never.
    pub time: Option<Spanned<RawDuration>>,
}

/// One entry of `instances` or `service_groups[].instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstance {
    /// Required. Unique among all instances; same rule as group names.
    pub name: Spanned<String>,
    /// Required. A key of `runtime.images`; with docker also an image reference.
    pub image: Spanned<String>,
    /// `{num_requests, time}`. Default: both off.
    pub autokill: Option<RawAutokill>,
    /// `never`, `always` or `on-failure`. Default `never`.
    pub restart_policy: Option<Spanned<RawRestartPolicy>>,
    /// `OFF`, `ON_FAILURE`, `ON_SUCCESS` or `ALWAYS` (lower case accepted). Default `OFF`.
    pub autodestroy: Option<Spanned<RawAutodestroy>>,
    /// Largest request body the instance takes, a size; 0 = no limit. Default: its group's,
    /// else the proxy's `max_body_bytes`.
    pub max_body_bytes: Option<Spanned<RawSize>>,
}

/// `...instances[].autokill`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAutokill {
    /// Delete the instance once it has been sent this many requests; 0 or absent = never.
    pub num_requests: Option<Spanned<u64>>,
    /// Delete the instance once it has been stopped this long; `0` or absent = never.
    pub time: Option<Spanned<RawDuration>>,
}

/// `...instances[].restart_policy`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum RawRestartPolicy {
    /// Never restart.
    #[serde(rename = "never")]
    Never,
    /// Restart whatever the exit code.
    #[serde(rename = "always")]
    Always,
    /// Restart on a non-zero exit code.
    #[serde(rename = "on-failure")]
    OnFailure,
}

/// `...instances[].autodestroy`, Tutum's spelling, with lower case accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum RawAutodestroy {
    /// Keep a stopped instance.
    #[serde(rename = "OFF", alias = "off")]
    Off,
    /// Destroy on a non-zero exit code.
    #[serde(rename = "ON_FAILURE", alias = "on_failure")]
    OnFailure,
    /// Destroy on exit code 0.
    #[serde(rename = "ON_SUCCESS", alias = "on_success")]
    OnSuccess,
    /// Always destroy.
    #[serde(rename = "ALWAYS", alias = "always")]
    Always,
}

/// Reads the YAML text into [`RawConfig`]; YAML and type errors come back with their place and
/// the key path that led there.
pub(crate) fn decode(text: &str) -> Result<RawConfig, Problem> {
    // Snippets off: the error becomes one `file:line:column: message` line, composed by us.
    // The default budget stays on; it bounds nesting depth, alias expansion and document size,
    // so hostile input cannot exhaust the stack or memory.
    let options = serde_saphyr::options! {
        with_snippet: false,
    };
    let mut failed_at: Option<Path> = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, Option<RawConfig>>(de).map_err(|err| {
            failed_at = Some(err.path().clone());
            err.into_inner()
        })
    });
    match result {
        // An empty document (or one of comments only) is null: all defaults.
        Ok(raw) => Ok(raw.unwrap_or_default()),
        Err(err) => Err(problem_from_yaml(&err, failed_at.as_ref())),
    }
}

/// Turns a serde-saphyr error into our one-line form: `key.path: message`.
fn problem_from_yaml(err: &YamlError, path: Option<&Path>) -> Problem {
    let location = err.location();
    let mut inner = err.without_snippet();
    // An error inside an alias carries the alias' place (outer) and the real error (inner).
    while let YamlError::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let message = sanitize(&describe(inner));
    let path = path.map(render_path).unwrap_or_default();
    let message = if path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    };
    let (line, column) = location.map_or((0, 0), |l| (to_usize(l.line()), to_usize(l.column())));
    Problem {
        line,
        column,
        message,
    }
}

/// The message for one error, worded for someone editing the file rather than a developer.
fn describe(err: &YamlError) -> String {
    match err {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = closest(field, expected)
                .map(|near| format!("; did you mean {near:?}?"))
                .unwrap_or_default();
            format!(
                "unknown key {field:?}{hint} (expected one of: {})",
                expected.join(", ")
            )
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown value {variant:?} (expected one of: {})",
            expected.join(", ")
        ),
        YamlError::SerdeMissingField { field, .. } => format!("missing required key {field:?}"),
        YamlError::InvalidScalar { ty, .. } => match *ty {
            "u16" => "expected a whole number from 0 to 65535".to_owned(),
            "u64" => "expected a whole number, 0 or more".to_owned(),
            other => format!("expected a value of type {other}"),
        },
        YamlError::Unexpected { expected, .. } if expected.contains("mapping") => {
            "expected a mapping (`key: value` entries)".to_owned()
        }
        YamlError::Unexpected { expected, .. } if expected.contains("sequence") => {
            "expected a list (`- item` entries or `[a, b]`)".to_owned()
        }
        YamlError::Unexpected { expected, .. } if expected.contains("scalar") => {
            "expected a single value, not a list or mapping".to_owned()
        }
        YamlError::ExternallyTaggedEnumExpectedScalarOrMapping { .. }
        | YamlError::UnexpectedValueForUnitEnumVariant { .. } => {
            "expected one word, not a list or mapping".to_owned()
        }
        other => UserMessageFormatter.format_message(other).into_owned(),
    }
}

/// The expected key nearest to a mistyped one, if it is near enough to be a typo.
fn closest<'a>(typed: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|candidate| (edit_distance(typed, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars; keys are short, so the quadratic cost does not matter.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// `service_groups[0].instances[1].image` from serde_path_to_error's path.
///
/// [`Spanned`] reads its value through an internal mapping whose key is `value`, so every
/// spanned key adds a `value` segment; those are dropped. No key of the schema is called
/// `value`, so the only casualty is a user's env variable literally named `value`, whose
/// path then ends one segment early. `?` segments (a key that could not be read) are dropped
/// too: the location says where it is.
fn render_path(path: &Path) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key == "value" => {}
            Segment::Map { key } => out = key_path(&out, key),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// `prefix.key`, or `prefix["odd key"]` for a key that is not a plain word (an image named
/// `ghcr.io/x:1`, an env variable with a dot), so the path stays unambiguous.
pub(crate) fn key_path(prefix: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (plain, prefix.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{prefix}.{key}"),
        (false, _) => format!("{prefix}[{key:?}]"),
    }
}

/// Escapes control characters so that a message stays one line in a terminal or log.
pub(crate) fn sanitize(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_owned();
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Line and column numbers fit in usize on every platform autokill runs on; saturate anyway.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(edit_distance("lisen", "listen"), 1);
        assert_eq!(edit_distance("listne", "listen"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn closest_only_suggests_near_keys() {
        let keys = ["listen", "workers", "base_domain"];
        assert_eq!(closest("lisen", &keys), Some("listen"));
        assert_eq!(closest("base-domain", &keys), Some("base_domain"));
        assert_eq!(closest("colour", &keys), None);
    }

    #[test]
    fn sanitize_keeps_messages_on_one_line() {
        assert_eq!(sanitize("a\nb\u{7}"), "a\\nb\\u{7}");
        assert_eq!(sanitize("plain"), "plain");
    }
}
