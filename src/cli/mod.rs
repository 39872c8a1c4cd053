//! The command-line client, `autokill <noun> <verb>`: Tutum's words for services and containers
//! (spoken to `/api/v1`), Unikraft's for instances, templates and groups (spoken to `/v1`). It
//! speaks HTTP to the admin listener and nothing else: whatever it shows, the API showed.
//!
//! Exit codes tell apart what a script needs to: [`exit::USAGE`] (the command line is wrong),
//! [`exit::NOT_FOUND`], [`exit::REFUSED`] (the server said no: bad input, a conflict, bad
//! credentials), [`exit::UNREACHABLE`] (no server answered), and [`exit::FAILURE`] for the rest
//! (a server error, an action that failed, a wait that timed out).

mod http;
mod table;
mod tutum;
mod unikraft;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use http::Client;

/// Exit codes.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// A server error, an action that failed, a wait that timed out.
    pub const FAILURE: u8 = 1;
    /// The command line is wrong (also clap's own code for a usage error).
    pub const USAGE: u8 = 2;
    /// The resource does not exist (404).
    pub const NOT_FOUND: u8 = 3;
    /// The server refused: bad input (400), credentials (401), a conflict (409), …
    pub const REFUSED: u8 = 4;
    /// No server answered at the URL.
    pub const UNREACHABLE: u8 = 5;
}

/// What went wrong, by what a script would do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// Another 4xx.
    #[error("{0}")]
    Refused(String),
    /// No connection, or no answer.
    #[error("{0}")]
    Unreachable(String),
    /// 5xx, an answer that makes no sense, a failed action, a wait that timed out.
    #[error("{0}")]
    Server(String),
}

impl CliError {
    /// The exit code for this error.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Refused(_) => exit::REFUSED,
            CliError::Unreachable(_) => exit::UNREACHABLE,
            CliError::Server(_) => exit::FAILURE,
        }
    }
}

/// Exit codes, for `--help`.
const EXIT_CODES: &str = "Exit codes: 0 done, 1 server error, failed action or wait timed out, \
2 usage error, 3 not found, 4 refused (bad input, conflict, credentials), 5 server unreachable.";

/// `autokill <noun> <verb>`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tutum services: run, create, ps, inspect, set, scale, start, stop, redeploy, terminate.
    #[command(visible_alias = "apps", after_help = EXIT_CODES)]
    Service(Noun<ServiceVerb>),
    /// Tutum containers: ps, inspect, start, stop, redeploy, terminate.
    #[command(after_help = EXIT_CODES)]
    Container(Noun<ContainerVerb>),
    /// Unikraft instances: create, ls, get, start, stop, rm, set.
    #[command(after_help = EXIT_CODES)]
    Instance(Noun<InstanceVerb>),
    /// Unikraft instance templates: create, ls, rm.
    #[command(after_help = EXIT_CODES)]
    Template(Noun<TemplateVerb>),
    /// Unikraft service groups: create, ls, rm.
    #[command(after_help = EXIT_CODES)]
    Group(Noun<GroupVerb>),
}

/// A noun: where the server is, how to print, and the verb.
#[derive(Debug, Args)]
pub struct Noun<V: Subcommand> {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    verb: V,
}

/// Where the admin API is, who we are, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Admin API URL [env: AUTOKILL_URL; default: the admin address of config/autokill.yaml if
    /// present, else of the embedded configuration].
    #[arg(long, global = true)]
    url: Option<String>,
    /// Bearer token (admin.token) [env: AUTOKILL_TOKEN].
    #[arg(long, global = true)]
    token: Option<String>,
    /// API user for /api/v1 (admin.api_users), with --apikey [env: AUTOKILL_USER].
    #[arg(long, global = true)]
    user: Option<String>,
    /// API key of --user [env: AUTOKILL_APIKEY].
    #[arg(long, global = true)]
    apikey: Option<String>,
    /// Tables for people, or JSON (the API's objects) for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Longest --wait, in seconds.
    #[arg(long, global = true, default_value_t = 120)]
    wait_timeout: u64,
}

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables (UUIDs, for Tutum's verbs that act).
    Table,
    /// JSON.
    Json,
}

/// Tutum's `autorestart` values.
const AUTORESTART: [&str; 3] = ["OFF", "ON_FAILURE", "ALWAYS"];
/// Tutum's autodestroy values, and autokill's `ON_SUCCESS`.
const AUTODESTROY: [&str; 4] = ["OFF", "ON_FAILURE", "ON_SUCCESS", "ALWAYS"];

/// What a service is made of (`run`, `create`).
#[derive(Debug, Args)]
pub struct ServiceSpecArgs {
    /// Image (a key of the server's runtime.images).
    image: String,
    /// Service name (default: the image's, or the image's with a suffix if taken).
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Number of containers (default 1).
    #[arg(short = 't', long = "target-num-containers")]
    target: Option<u32>,
    #[command(flatten)]
    policy: ServicePolicy,
}

/// What a service's containers do when they stop, and their autokill.
#[derive(Debug, Args)]
pub struct ServicePolicy {
    /// Restart a container that stops.
    #[arg(long, ignore_case = true, value_parser = AUTORESTART)]
    autorestart: Option<String>,
    /// Terminate a container that stops (decided after autorestart).
    #[arg(long, ignore_case = true, value_parser = AUTODESTROY)]
    autodestroy: Option<String>,
    /// Each container's autokill, e.g. num-requests=100,time=30s (replaces the whole policy).
    #[arg(long, value_parser = parse_autokill)]
    autokill: Option<Value>,
}

/// Identifiers and `--wait`.
#[derive(Debug, Args)]
pub struct Targets {
    /// Names, UUIDs, or UUID prefixes.
    #[arg(required = true, num_args = 1..)]
    ids: Vec<String>,
    /// Wait until it is done (its action succeeded or failed, or the state is reached).
    #[arg(long, alias = "sync")]
    wait: bool,
}

/// Identifiers only.
#[derive(Debug, Args)]
pub struct Ids {
    /// Names, UUIDs, or UUID prefixes.
    #[arg(required = true, num_args = 1..)]
    ids: Vec<String>,
}

/// `autokill service <verb>`.
#[derive(Debug, Subcommand)]
pub enum ServiceVerb {
    /// Create a service and start it; prints its UUID.
    Run {
        #[command(flatten)]
        spec: ServiceSpecArgs,
        /// Wait until its containers have started.
        #[arg(long, alias = "sync")]
        wait: bool,
    },
    /// Create a service without starting it (state Init); prints its UUID.
    Create {
        #[command(flatten)]
        spec: ServiceSpecArgs,
    },
    /// List services (and those terminated lately).
    #[command(visible_alias = "list", visible_alias = "ls")]
    Ps {
        /// Only services in this state.
        #[arg(short = 's', long)]
        status: Option<String>,
        /// Print only UUIDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show services whole (JSON).
    Inspect(Ids),
    /// Change services: policies apply to every container at its next stop.
    Set {
        #[command(flatten)]
        ids: Ids,
        #[command(flatten)]
        policy: ServicePolicy,
        /// New target number of containers (applied by scale or redeploy).
        #[arg(short = 't', long = "target-num-containers")]
        target: Option<u32>,
        /// New image (used from the next redeploy).
        #[arg(long)]
        image: Option<String>,
        /// Redeploy after the change.
        #[arg(long)]
        redeploy: bool,
    },
    /// Scale services to N containers.
    Scale {
        /// Names, UUIDs, or UUID prefixes.
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
        /// The number of containers.
        target: u32,
        /// Wait until the containers are added or removed.
        #[arg(long, alias = "sync")]
        wait: bool,
    },
    /// Start every container of services.
    Start(Targets),
    /// Stop every container of services.
    Stop(Targets),
    /// Replace every container with a new one of the current spec.
    Redeploy(Targets),
    /// Terminate services and their containers.
    #[command(visible_alias = "rm")]
    Terminate(Targets),
}

/// `autokill container <verb>`.
#[derive(Debug, Subcommand)]
pub enum ContainerVerb {
    /// List containers (and those terminated lately).
    #[command(visible_alias = "list", visible_alias = "ls")]
    Ps {
        /// Only containers in this state.
        #[arg(short = 's', long)]
        status: Option<String>,
        /// Only containers of this service (name or UUID).
        #[arg(long)]
        service: Option<String>,
        /// Print only UUIDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show containers whole (JSON).
    Inspect(Ids),
    /// Start containers.
    Start(Targets),
    /// Stop containers.
    Stop(Targets),
    /// Replace containers with new ones of the same name.
    Redeploy(Targets),
    /// Terminate containers.
    #[command(visible_alias = "rm")]
    Terminate(Targets),
}

/// Unikraft's restart policies.
const RESTART: [&str; 3] = ["never", "always", "on-failure"];

/// An instance's autokill, restart policy and autodestroy.
#[derive(Debug, Args)]
pub struct InstancePolicy {
    /// Autokill, e.g. num-requests=100,time=30s (replaces the whole policy).
    #[arg(long, value_parser = parse_autokill)]
    autokill: Option<Value>,
    /// Restart policy.
    #[arg(long, ignore_case = true, value_parser = RESTART)]
    restart: Option<String>,
    /// Autodestroy (decided after the restart policy).
    #[arg(long, ignore_case = true, value_parser = AUTODESTROY)]
    autodestroy: Option<String>,
}

/// `autokill instance <verb>`.
#[derive(Debug, Subcommand)]
pub enum InstanceVerb {
    /// Create an instance (stopped unless --start), or clone a template.
    Create {
        /// Image (a key of the server's runtime.images); not needed with --template.
        image: Option<String>,
        /// Instance name (default: generated).
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// Clone this template.
        #[arg(long)]
        template: Option<String>,
        /// Join this service group.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        policy: InstancePolicy,
        /// Start it.
        #[arg(long)]
        start: bool,
        /// With --start: wait until it runs.
        #[arg(long)]
        wait: bool,
    },
    /// List instances.
    #[command(visible_alias = "list")]
    Ls,
    /// Show instances.
    Get(Ids),
    /// Start instances.
    Start(Targets),
    /// Stop instances.
    Stop(Targets),
    /// Delete instances.
    #[command(visible_alias = "delete")]
    Rm(Targets),
    /// Change instances.
    Set {
        #[command(flatten)]
        ids: Ids,
        #[command(flatten)]
        policy: InstancePolicy,
        /// Set the delete lock.
        #[arg(long, conflicts_with = "no_delete_lock")]
        delete_lock: bool,
        /// Clear the delete lock.
        #[arg(long)]
        no_delete_lock: bool,
    },
}

/// `autokill template <verb>`.
#[derive(Debug, Subcommand)]
pub enum TemplateVerb {
    /// Make a template of a stopped instance.
    Create {
        /// The stopped instance (name or UUID).
        instance: String,
        /// Delete the template once unused this long, e.g. time=1h.
        #[arg(long, value_parser = parse_autokill)]
        autokill: Option<Value>,
    },
    /// List templates.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete templates.
    #[command(visible_alias = "delete")]
    Rm(Ids),
}

/// `autokill group <verb>`.
#[derive(Debug, Subcommand)]
pub enum GroupVerb {
    /// Create a service group.
    Create {
        /// Group name.
        name: String,
        /// A domain (repeat for more); without a trailing dot it is under the base domain.
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Delete the group once empty this long, e.g. time=10m.
        #[arg(long, value_parser = parse_autokill)]
        autokill: Option<Value>,
    },
    /// List service groups.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete service groups.
    #[command(visible_alias = "delete")]
    Rm(Ids),
}

/// `num-requests=N,time=DURATION` (either part) as the API's `{"num_requests", "time_ms"}`.
fn parse_autokill(s: &str) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            format!("{part:?}: expected key=value, e.g. num-requests=100,time=30s")
        })?;
        match key.trim().replace('_', "-").as_str() {
            "num-requests" => {
                let n: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("num-requests={value}: expected a whole number"))?;
                out.insert("num_requests".into(), json!(n));
            }
            "time" => {
                let t = crate::config::parse_duration(value.trim())
                    .map_err(|e| format!("time={value}: {e}"))?;
                out.insert("time_ms".into(), json!(t.as_millis() as u64));
            }
            other => {
                return Err(format!(
                    "unknown autokill key {other:?}; expected num-requests and/or time"
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("expected num-requests=N and/or time=DURATION".into());
    }
    Ok(Value::Object(out))
}

/// What every verb needs.
struct Ctx {
    client: Client,
    output: Output,
    wait_timeout: Duration,
}

impl Ctx {
    /// Prints `v` as JSON (pretty).
    fn json(&self, v: &Value) {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

/// A flag, else its environment variable (unset or empty: none).
fn or_env(flag: &Option<String>, var: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
}

/// The admin URL when neither `--url` nor `AUTOKILL_URL` gives one: the admin address of
/// `config/autokill.yaml` if present, else the embedded configuration's.
fn default_url() -> Result<String, CliError> {
    const PATH: &str = "config/autokill.yaml";
    let config = if std::path::Path::new(PATH).is_file() {
        crate::config::load(std::path::Path::new(PATH)).map_err(|e| {
            CliError::Usage(format!(
                "{e}\n(the admin address is read from {PATH}; pass --url or set AUTOKILL_URL)"
            ))
        })?
    } else {
        crate::config::parse(crate::config::EMBEDDED, "<embedded>")
            .map_err(|e| CliError::Usage(e.to_string()))?
    };
    let mut addr = config.admin.listen;
    // A listener on every address is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{addr}"))
}

/// The context for a noun: `/api/v1` nouns (`tutum`) authenticate with `--user`/`--apikey` when
/// given, else with the token; `/v1` nouns with the token.
fn context(conn: &Conn, tutum: bool) -> Result<Ctx, CliError> {
    let url = match or_env(&conn.url, "AUTOKILL_URL") {
        Some(url) => url,
        None => default_url()?,
    };
    let token = or_env(&conn.token, "AUTOKILL_TOKEN");
    let user = or_env(&conn.user, "AUTOKILL_USER");
    let apikey = or_env(&conn.apikey, "AUTOKILL_APIKEY");
    let auth = match (user, apikey) {
        (Some(user), Some(key)) if tutum => Some(format!("ApiKey {user}:{key}")),
        (Some(_), None) => return Err(CliError::Usage("--user needs --apikey".into())),
        (None, Some(_)) => return Err(CliError::Usage("--apikey needs --user".into())),
        _ => token.map(|t| format!("Bearer {t}")),
    };
    Ok(Ctx {
        client: Client::new(&url, auth)?,
        output: conn.output,
        wait_timeout: Duration::from_secs(conn.wait_timeout),
    })
}

/// Runs a command and maps its outcome to an exit code, printing errors to stderr.
pub fn run(command: Command) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("autokill: cannot start: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match rt.block_on(dispatch(command)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("autokill: {err}");
            ExitCode::from(err.code())
        }
    }
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Service(n) => tutum::service(&context(&n.conn, true)?, n.verb).await,
        Command::Container(n) => tutum::container(&context(&n.conn, true)?, n.verb).await,
        Command::Instance(n) => unikraft::instance(&context(&n.conn, false)?, n.verb).await,
        Command::Template(n) => unikraft::template(&context(&n.conn, false)?, n.verb).await,
        Command::Group(n) => unikraft::group(&context(&n.conn, false)?, n.verb).await,
    }
}

/// A path segment, percent-encoded (names and UUIDs need none; anything else stays inside
/// its segment).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Polls `check` every 100 ms until it gives an answer, at most `ctx.wait_timeout`.
async fn wait_for<T, F, Fut>(ctx: &Ctx, what: &str, mut check: F) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, CliError>>,
{
    let deadline = tokio::time::Instant::now() + ctx.wait_timeout;
    loop {
        if let Some(done) = check().await? {
            return Ok(done);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Server(format!(
                "timed out after {}s waiting for {what} (--wait-timeout)",
                ctx.wait_timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autokill_flags_read_as_the_api_writes_them() {
        assert_eq!(
            parse_autokill("num-requests=100,time=30s"),
            Ok(json!({"num_requests": 100, "time_ms": 30_000}))
        );
        assert_eq!(parse_autokill("time=1h"), Ok(json!({"time_ms": 3_600_000})));
        assert!(parse_autokill("num-requests=-1").is_err());
        assert!(parse_autokill("time=30").is_err());
        assert!(parse_autokill("speed=3").is_err());
        assert!(parse_autokill("").is_err());
    }

    #[test]
    fn segments_stay_segments() {
        assert_eq!(segment("web-1"), "web-1");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }
}
