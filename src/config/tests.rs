//! Tests of [`parse`](super::parse) and [`load`](super::load): defaults, every key, and each
//! refusal with its exact place and key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn ok(yaml: &str) -> Config {
    match parse(yaml, "test.yaml") {
        Ok(config) => config,
        Err(err) => panic!("expected ok, got {err}"),
    }
}

/// Asserts the error's line, column and message.
#[track_caller]
fn refused(yaml: &str, line: usize, column: usize, message: &str) {
    let err = match parse(yaml, "test.yaml") {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(err) => err,
    };
    assert_eq!(
        (err.line, err.column, err.message.as_str()),
        (line, column, message),
        "for\n{yaml}"
    );
    assert_eq!(
        err.to_string(),
        format!("test.yaml:{line}:{column}: {message}")
    );
}

/// Like [`refused`], but only checks that the message starts with `prefix`.
#[track_caller]
fn refused_starting(yaml: &str, line: usize, column: usize, prefix: &str) {
    let err = match parse(yaml, "test.yaml") {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(err) => err,
    };
    assert_eq!((err.line, err.column), (line, column), "{err}");
    assert!(err.message.starts_with(prefix), "{err}");
}

/// A runtime with the `hello` image, for documents that declare instances.
const IMAGES: &str = "\
runtime:
  images:
    hello:
      command: [hello]
";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn defaults() -> Config {
    Config {
        proxy: ProxyConfig {
            listen: addr("127.0.0.1:8080"),
            workers: 0,
            base_domain: "localhost".into(),
            header_read_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            pool_idle_per_instance: 64,
            idle_timeout: Duration::from_secs(60),
            max_connections_per_worker: 0,
            request_body_timeout: Duration::from_secs(10),
            response_write_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_header_fields: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
            max_requests_per_connection: 0,
            balance: Balance::RoundRobin,
        },
        admin: AdminConfig {
            listen: addr("127.0.0.1:8081"),
            token: None,
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 0,
            api_users: Vec::new(),
            max_body_size: 1 << 20,
        },
        store: StoreConfig {
            path: PathBuf::from("data/autokill.redb"),
            quick_repair: true,
        },
        runtime: RuntimeConfig {
            kind: RuntimeKind::Process,
            stop_grace: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
            images: BTreeMap::new(),
            default_port: None,
            max_concurrent_kills: 64,
            max_concurrent_starts: 16,
            controller_nice: 10,
            stopping_cgroup: None,
        },
        defaults: Defaults {
            drain_timeout: Duration::from_secs(10),
        },
        autokill: AutokillConfig { jitter: 0.0 },
        service_groups: vec![],
        instances: vec![],
        shutdown: Shutdown::StopInstances,
    }
}

#[test]
fn empty_documents_are_all_defaults() {
    for yaml in [
        "",
        "\n\n",
        "# nothing but a comment\n",
        "---\n",
        "{}",
        "proxy:\nadmin:\nstore:\nruntime:\ndefaults:\nautokill:\nservice_groups:\ninstances:\n",
        "proxy: {}\nadmin: {}\nstore: {}\nruntime: {images: {}}\ndefaults: {}\nautokill: {jitter: 0}\nservice_groups: []\ninstances: []\n",
    ] {
        assert_eq!(ok(yaml), defaults(), "{yaml:?}");
    }
}

#[test]
fn the_embedded_sample_is_what_the_docs_say() {
    let config = ok(EMBEDDED);
    let hello = |name: &str| InstanceConfig {
        name: name.into(),
        image: "hello".into(),
        autokill: Autokill {
            num_requests: 5,
            time: Some(Duration::from_secs(30)),
        },
        restart_policy: RestartPolicy::Never,
        autodestroy: Autodestroy::Off,
        max_body_bytes: BodyLimit::Inherit,
    };
    let mut want = defaults();
    want.runtime.images.insert(
        "hello".into(),
        ImageConfig {
            image: None,
            command: [
                "{autokill}",
                "hello",
                "--listen",
                "127.0.0.1:{port}",
                "--name",
                "{name}",
            ]
            .map(String::from)
            .to_vec(),
            env: BTreeMap::new(),
            port: None,
        },
    );
    want.service_groups.push(GroupConfig {
        name: "hello".into(),
        domains: vec!["hello.localhost".into()],
        autokill_time: None,
        instances: vec![hello("hello-1"), hello("hello-2")],
        max_body_bytes: BodyLimit::Inherit,
    });
    assert_eq!(config, want);
}

#[test]
fn every_key_is_read() {
    let yaml = r#"
proxy:
  listen: 0.0.0.0:9000
  workers: 4
  base_domain: Apps.Example.COM
  header_read_timeout: 1s
  upstream_connect_timeout: 500ms
  upstream_timeout: 1m
  pool_idle_per_instance: 8
  idle_timeout: 2m
  max_connections_per_worker: 100
  request_body_timeout: 5s
  response_write_timeout: 7s
  max_header_bytes: 4KiB
  max_header_fields: 20
  max_uri_bytes: 1000
  max_body_bytes: 1MiB
  max_requests_per_connection: 1000
  balance: least_inflight
admin:
  listen: "[::1]:9001"
  token: s3cret
  header_read_timeout: 3s
  idle_timeout: 4m
  max_connections: 50
  max_body_size: 64KiB
store:
  path: /var/lib/autokill/state.redb
  quick_repair: false
runtime:
  kind: docker
  docker_host: unix:///run/podman/podman.sock
  stop_grace: 1s
  start_timeout: 1m30s
  max_concurrent_kills: 8
  max_concurrent_starts: 4
  controller_nice: 0
  images:
    nginx:
      command: [nginx, -g, "daemon off;"]
      env: {A: "1", B: x}
      port: 80
    plain:
defaults:
  drain_timeout: 2s
autokill:
  jitter: 0.25
service_groups:
  - name: web
    domains: [www, Example.ORG.]
    autokill: {time: 1h}
    max_body_bytes: 2MB
    instances:
      - name: web-1
        image: nginx
        autokill: {num_requests: 10, time: 0}
        restart_policy: on-failure
        autodestroy: on_success
        max_body_bytes: 0
instances:
  - name: solo
    image: plain
    autokill: {time: "0s"}
    restart_policy: always
    autodestroy: OFF
    max_body_bytes: 512
  - name: solo-2
    image: plain
    autokill: {num_requests: 0, time: 2h}
    autodestroy: ALWAYS
shutdown: leave_instances
"#;
    let want = Config {
        proxy: ProxyConfig {
            listen: addr("0.0.0.0:9000"),
            workers: 4,
            base_domain: "apps.example.com".into(),
            header_read_timeout: Duration::from_secs(1),
            upstream_connect_timeout: Duration::from_millis(500),
            upstream_timeout: Duration::from_secs(60),
            pool_idle_per_instance: 8,
            idle_timeout: Duration::from_secs(120),
            max_connections_per_worker: 100,
            request_body_timeout: Duration::from_secs(5),
            response_write_timeout: Duration::from_secs(7),
            max_header_bytes: 4096,
            max_header_fields: 20,
            max_uri_bytes: 1000,
            max_body_bytes: Some(1 << 20),
            max_requests_per_connection: 1000,
            balance: Balance::LeastInflight,
        },
        admin: AdminConfig {
            listen: addr("[::1]:9001"),
            token: Some("s3cret".into()),
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(240),
            max_connections: 50,
            api_users: Vec::new(),
            max_body_size: 64 << 10,
        },
        store: StoreConfig {
            path: PathBuf::from("/var/lib/autokill/state.redb"),
            quick_repair: false,
        },
        runtime: RuntimeConfig {
            kind: RuntimeKind::Docker {
                host: Some("unix:///run/podman/podman.sock".into()),
            },
            stop_grace: Duration::from_secs(1),
            start_timeout: Duration::from_secs(90),
            default_port: None,
            max_concurrent_kills: 8,
            max_concurrent_starts: 4,
            controller_nice: 0,
            stopping_cgroup: None,
            images: BTreeMap::from([
                (
                    "nginx".into(),
                    ImageConfig {
                        image: None,
                        command: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
                        env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "x".into())]),
                        port: Some(80),
                    },
                ),
                (
                    "plain".into(),
                    ImageConfig {
                        image: None,
                        command: vec![],
                        env: BTreeMap::new(),
                        port: None,
                    },
                ),
            ]),
        },
        defaults: Defaults {
            drain_timeout: Duration::from_secs(2),
        },
        autokill: AutokillConfig { jitter: 0.25 },
        service_groups: vec![GroupConfig {
            name: "web".into(),
            domains: vec!["www.apps.example.com".into(), "example.org".into()],
            autokill_time: Some(Duration::from_secs(3600)),
            instances: vec![InstanceConfig {
                name: "web-1".into(),
                image: "nginx".into(),
                autokill: Autokill {
                    num_requests: 10,
                    time: None,
                },
                restart_policy: RestartPolicy::OnFailure,
                autodestroy: Autodestroy::OnSuccess,
                max_body_bytes: BodyLimit::Unlimited,
            }],
            max_body_bytes: BodyLimit::Bytes(2_000_000),
        }],
        instances: vec![
            InstanceConfig {
                name: "solo".into(),
                image: "plain".into(),
                autokill: Autokill::default(),
                restart_policy: RestartPolicy::Always,
                autodestroy: Autodestroy::Off,
                max_body_bytes: BodyLimit::Bytes(512),
            },
            InstanceConfig {
                name: "solo-2".into(),
                image: "plain".into(),
                autokill: Autokill {
                    num_requests: 0,
                    time: Some(Duration::from_secs(7200)),
                },
                restart_policy: RestartPolicy::Never,
                autodestroy: Autodestroy::Always,
                max_body_bytes: BodyLimit::Inherit,
            },
        ],
        shutdown: Shutdown::LeaveInstances,
    };
    assert_eq!(ok(yaml), want);
}

#[test]
fn docker_without_host_and_loopback_admin_without_token() {
    let config = ok("runtime: {kind: docker}\nadmin: {listen: '127.0.0.2:1'}\n");
    assert_eq!(config.runtime.kind, RuntimeKind::Docker { host: None });
    assert_eq!(config.admin.token, None);
}

#[test]
fn port_zero_listeners_do_not_collide() {
    let config = ok("proxy: {listen: '127.0.0.1:0'}\nadmin: {listen: '127.0.0.1:0'}\n");
    assert_eq!(config.proxy.listen.port(), 0);
}

#[test]
fn durations_in_the_file() {
    let time = |value: &str| {
        let yaml = format!(
            "{IMAGES}instances:\n  - name: a\n    image: hello\n    autokill: {{time: {value}}}\n"
        );
        parse(&yaml, "t").map(|c| c.instances[0].autokill.time)
    };
    for (value, want) in [
        ("0", None),
        ("'0'", None),
        ("0s", None),
        ("0ms", None),
        ("null", None),
        ("500ms", Some(Duration::from_millis(500))),
        ("\"30s\"", Some(Duration::from_secs(30))),
        ("5m", Some(Duration::from_secs(300))),
        ("1h30m", Some(Duration::from_secs(5400))),
    ] {
        assert_eq!(time(value).ok(), Some(want), "{value}");
    }
    let path = "instances[0].autokill.time";
    for (value, message) in [
        (
            "30",
            "\"30\" needs a unit, e.g. \"30s\" (units: ms, s, m, h)",
        ),
        (
            "'30'",
            "\"30\" needs a unit, e.g. \"30s\" (units: ms, s, m, h)",
        ),
        ("-5s", "negative duration \"-5s\""),
        ("-1", "negative duration \"-1\""),
        (
            "1.5",
            "\"1.5\": fractions are not supported; use a smaller unit, e.g. \"1500ms\" for 1.5s",
        ),
        ("5d", "\"5d\": unknown unit \"d\" (units: ms, s, m, h)"),
        (
            "''",
            "empty duration; write e.g. \"30s\" (units: ms, s, m, h)",
        ),
        (
            "30s1m",
            "\"30s1m\": write each unit once, from the largest to the smallest (e.g. \"1h30m\")",
        ),
        (
            "99999999999999999999h",
            "\"99999999999999999999h\" is too long (at most 100 years)",
        ),
        // Too large for an integer, so YAML reads it as a float.
        (
            "99999999999999999999999",
            "\"100000000000000000000000\" needs a unit, e.g. \"100000000000000000000000s\" (units: ms, s, m, h)",
        ),
        (".inf", "value `.inf` is not a finite number"),
    ] {
        let err = time(value)
            .err()
            .unwrap_or_else(|| panic!("{value} accepted"));
        assert_eq!(err.message, format!("{path}: {message}"), "{value}");
        assert_eq!((err.line, err.column), (8, 22), "{value}");
    }
    // A duration must be a scalar, and the error points at the value, not the key.
    for (value, found) in [
        ("[1]", "a list"),
        ("{a: 1}", "a mapping"),
        ("true", "a boolean"),
    ] {
        let err = time(value)
            .err()
            .unwrap_or_else(|| panic!("{value} accepted"));
        assert_eq!((err.line, err.column), (8, 22), "{value}");
        assert_eq!(
            err.message,
            format!("{path}: expected a duration such as \"30s\", found {found}")
        );
    }
}

#[test]
fn timeouts_must_be_positive() {
    for key in [
        "header_read_timeout",
        "upstream_connect_timeout",
        "upstream_timeout",
    ] {
        refused(
            &format!("proxy:\n  {key}: 0s\n"),
            2,
            key.len() + 5,
            &format!("proxy.{key}: must be more than 0, e.g. \"10s\""),
        );
    }
    for key in ["stop_grace", "start_timeout"] {
        refused(
            &format!("runtime:\n  {key}: 0\n"),
            2,
            key.len() + 5,
            &format!("runtime.{key}: must be more than 0, e.g. \"10s\""),
        );
    }
    refused(
        "defaults:\n  drain_timeout: 0ms\n",
        2,
        18,
        "defaults.drain_timeout: must be more than 0, e.g. \"10s\"",
    );
    refused(
        "defaults:\n  drain_timeout: 10\n",
        2,
        18,
        "defaults.drain_timeout: \"10\" needs a unit, e.g. \"10s\" (units: ms, s, m, h)",
    );
}

#[test]
fn unknown_keys_are_refused_with_the_expected_ones() {
    refused(
        "prox:\n  listen: 127.0.0.1:1\n",
        1,
        1,
        "prox: unknown key \"prox\"; did you mean \"proxy\"? (expected one of: proxy, admin, \
         store, runtime, defaults, autokill, service_groups, instances, shutdown)",
    );
    refused(
        "admin:\n  listen: 127.0.0.1:1\n  tokn: x\n",
        3,
        3,
        "admin.tokn: unknown key \"tokn\"; did you mean \"token\"? (expected one of: listen, \
         token, allowed_hosts, header_read_timeout, idle_timeout, max_connections, api_users, max_body_size)",
    );
    refused(
        &format!("{IMAGES}service_groups:\n  - name: g\n    autokill: {{num_requests: 3}}\n"),
        7,
        16,
        "service_groups[0].autokill.num_requests: unknown key \"num_requests\" \
         (expected one of: time)",
    );
    refused(
        &format!(
            "{IMAGES}service_groups:\n  - name: g\n    instances:\n      - name: i\n        \
             image: hello\n        colour: red\n"
        ),
        10,
        9,
        "service_groups[0].instances[0].colour: unknown key \"colour\" (expected one of: \
         name, image, autokill, restart_policy, autodestroy, max_body_bytes)",
    );
    refused(
        "runtime:\n  images:\n    hello:\n      cmd: [x]\n",
        4,
        7,
        "runtime.images.hello.cmd: unknown key \"cmd\" (expected one of: image, command, env, port)",
    );
}

#[test]
fn type_errors_name_the_key() {
    refused(
        "proxy:\n  workers: -1\n",
        2,
        12,
        "proxy.workers: expected a whole number, 0 or more",
    );
    refused(
        "proxy:\n  balance: random\n",
        2,
        12,
        "proxy.balance: unknown value \"random\" (expected one of: round_robin, least_inflight)",
    );
    refused(
        "runtime:\n  kind: podman\n",
        2,
        9,
        "runtime.kind: unknown value \"podman\" (expected one of: process, docker)",
    );
    refused(
        &format!("{IMAGES}instances:\n  - name: i\n    image: hello\n    restart_policy: ALWAYS\n"),
        8,
        21,
        "instances[0].restart_policy: unknown value \"ALWAYS\" (expected one of: never, \
         always, on-failure)",
    );
    refused(
        &format!("{IMAGES}instances:\n  - name: i\n    image: hello\n    autodestroy: sometimes\n"),
        8,
        18,
        "instances[0].autodestroy: unknown value \"sometimes\" (expected one of: OFF, off, \
         ON_FAILURE, on_failure, ON_SUCCESS, on_success, ALWAYS, always)",
    );
    refused(
        &format!("{IMAGES}instances:\n  - image: hello\n"),
        6,
        5,
        "instances[0]: missing required key \"name\"",
    );
    refused(
        "runtime:\n  kind: docker\n  images:\n    x:\n      port: 70000\n",
        5,
        13,
        "runtime.images.x.port: expected a whole number from 0 to 65535",
    );
    refused(
        "proxy: 5\n",
        1,
        8,
        "proxy: expected a mapping (`key: value` entries)",
    );
    refused(
        "service_groups: {name: x}\n",
        1,
        17,
        "service_groups: expected a list (`- item` entries or `[a, b]`)",
    );
    refused("- 1\n", 1, 1, "expected a mapping (`key: value` entries)");
    refused(
        "proxy: {workers: [1]}\n",
        1,
        18,
        "proxy.workers: expected a single value, not a list or mapping",
    );
    refused(
        "proxy: {balance: {round_robin: 1}}\n",
        1,
        32,
        "proxy.balance: expected one word, not a list or mapping",
    );
    refused(
        "runtime: {images: [hello]}\n",
        1,
        19,
        "runtime.images: expected a mapping (`key: value` entries)",
    );
}

#[test]
fn yaml_errors_are_placed() {
    refused_starting(
        "proxy:\n  workers: 1\n  workers: 2\n",
        3,
        3,
        "proxy: duplicate mapping key",
    );
    refused_starting("proxy: {listen: [}\n", 1, 17, "proxy.listen:");
    refused_starting(
        "proxy: {}\n---\nproxy: {}\n",
        3,
        1,
        "only single YAML document",
    );
    refused_starting("proxy:\n  listen: *nowhere\n", 2, 11, "");
}

#[test]
fn proxy_values_are_checked() {
    refused(
        "proxy:\n  listen: localhost:8080\n",
        2,
        11,
        "proxy.listen: \"localhost:8080\" is not an IP address and port, e.g. 127.0.0.1:8080 \
         or [::1]:8080",
    );
    refused(
        "proxy:\n  workers: 1025\n",
        2,
        12,
        "proxy.workers: 1025 is more than 1024",
    );
    assert_eq!(ok("proxy: {workers: 1024}").proxy.workers, 1024);
    refused(
        "proxy:\n  pool_idle_per_instance: 65537\n",
        2,
        27,
        "proxy.pool_idle_per_instance: 65537 is more than 65536",
    );
    assert_eq!(
        ok("proxy: {pool_idle_per_instance: 65536}")
            .proxy
            .pool_idle_per_instance,
        65536
    );
    refused(
        "proxy:\n  base_domain: ''\n",
        2,
        16,
        "proxy.base_domain: empty host name",
    );
    refused(
        "proxy:\n  base_domain: example.com.\n",
        2,
        16,
        "proxy.base_domain: \"example.com.\": write the domain without a leading or trailing dot",
    );
    refused(
        "proxy:\n  base_domain: .example.com\n",
        2,
        16,
        "proxy.base_domain: \".example.com\": write the domain without a leading or trailing dot",
    );
    refused(
        "proxy:\n  base_domain: my_host\n",
        2,
        16,
        "proxy.base_domain: invalid host name label \"my_host\": use 1 to 63 letters, digits \
         and '-', not starting or ending with '-'",
    );
}

#[test]
fn admin_values_are_checked() {
    refused(
        "admin:\n  listen: 0.0.0.0:8081\n",
        2,
        11,
        "admin.listen: 0.0.0.0:8081 is not a loopback address, so admin.token is required \
         (without it the API would be open to the network)",
    );
    let config = ok("admin:\n  listen: 0.0.0.0:8081\n  token: abc\n");
    assert_eq!(config.admin.token.as_deref(), Some("abc"));
    refused(
        "admin:\n  token: ''\n",
        2,
        10,
        "admin.token: empty token; remove the key for no authentication (loopback only) or \
         set a secret",
    );
    refused(
        "admin:\n  token: 'a b'\n",
        2,
        10,
        "admin.token: the token must be printable ASCII without spaces (it is sent in an HTTP \
         header)",
    );
    refused(
        "proxy:\n  listen: 127.0.0.1:9000\nadmin:\n  listen: 0.0.0.0:9000\n  token: t\n",
        4,
        11,
        "admin.listen: 0.0.0.0:9000 is also proxy.listen (127.0.0.1:9000); use another port",
    );
}

#[test]
fn body_sizes_are_checked() {
    assert_eq!(
        ok("admin:\n  max_body_size: 4096\n").admin.max_body_size,
        4096
    );
    assert_eq!(
        ok("admin:\n  max_body_size: 2MB\n").admin.max_body_size,
        2_000_000
    );
    refused(
        "admin:\n  max_body_size: 100\n",
        2,
        18,
        "admin.max_body_size: 100 bytes is out of range; use 1 KiB to 1 GiB",
    );
    refused(
        "admin:\n  max_body_size: 2GiB\n",
        2,
        18,
        "admin.max_body_size: 2 GiB is out of range; use 1 KiB to 1 GiB",
    );
    refused(
        "admin:\n  max_body_size: 1mb\n",
        2,
        18,
        "admin.max_body_size: \"1mb\": unknown unit \"mb\" (units: B, KiB, MiB, GiB, KB, MB, GB)",
    );
    refused(
        "admin:\n  max_body_size: [1]\n",
        2,
        18,
        "admin.max_body_size: expected a size such as \"1MiB\" or a whole number of bytes, \
         found a list",
    );
}

/// Every size key takes the same forms as `admin.max_body_size` (a whole number of bytes, or a
/// number and a unit), with the same refusals; plain integers stay valid.
#[test]
fn proxy_sizes_take_units() {
    let p = ok("proxy:\n  max_header_bytes: 16KiB\n  max_uri_bytes: 2KB\n  max_body_bytes: 1MiB\n")
        .proxy;
    assert_eq!(
        (p.max_header_bytes, p.max_uri_bytes, p.max_body_bytes),
        (16 << 10, 2_000, Some(1 << 20))
    );
    let p =
        ok("proxy:\n  max_header_bytes: 2048\n  max_uri_bytes: 100\n  max_body_bytes: 0\n").proxy;
    assert_eq!(
        (p.max_header_bytes, p.max_uri_bytes, p.max_body_bytes),
        (2048, 100, None)
    );
    refused(
        "proxy:\n  max_header_bytes: 2MiB\n",
        2,
        21,
        "proxy.max_header_bytes: 2 MiB is out of range; use 1 KiB to 1 MiB",
    );
    refused(
        "proxy:\n  max_uri_bytes: 8\n",
        2,
        18,
        "proxy.max_uri_bytes: 8 bytes is out of range; use 16 bytes to 1 MiB",
    );
    refused(
        "proxy:\n  max_body_bytes: 1mb\n",
        2,
        19,
        "proxy.max_body_bytes: \"1mb\": unknown unit \"mb\" (units: B, KiB, MiB, GiB, KB, MB, GB)",
    );
    refused(
        "proxy:\n  max_body_bytes: -1\n",
        2,
        19,
        "proxy.max_body_bytes: \"-1\" is not a size; write a whole number of bytes or e.g. \
         \"64KiB\", \"1MiB\" (units: B, KiB, MiB, GiB, KB, MB, GB)",
    );
}

/// `max_body_bytes` of a group and of an instance: a size, 0 = no limit, absent = inherited;
/// a bad one is refused at its place, named by its path.
#[test]
fn group_and_instance_body_limits() {
    let c = ok(
        "runtime:\n  images: {hello: {command: [x]}}\nservice_groups:\n  - name: g\n    max_body_bytes: 64KiB\n    instances:\n      - {name: a, image: hello, max_body_bytes: 0}\n      - {name: b, image: hello}\ninstances:\n  - {name: c, image: hello, max_body_bytes: 100}\n",
    );
    let g = &c.service_groups[0];
    assert_eq!(g.max_body_bytes, BodyLimit::Bytes(64 << 10));
    assert_eq!(g.instances[0].max_body_bytes, BodyLimit::Unlimited);
    assert_eq!(g.instances[1].max_body_bytes, BodyLimit::Inherit);
    assert_eq!(c.instances[0].max_body_bytes, BodyLimit::Bytes(100));
    assert_eq!(
        BodyLimit::Inherit.or(BodyLimit::Bytes(5)).bytes(),
        Some(5),
        "an instance without a limit takes its group's"
    );
    assert_eq!(BodyLimit::Bytes(7).or(BodyLimit::Bytes(5)).bytes(), Some(7));
    assert_eq!(
        BodyLimit::Unlimited.or(BodyLimit::Bytes(5)).bytes(),
        Some(u64::MAX)
    );
    assert_eq!(BodyLimit::Inherit.or(BodyLimit::Inherit).bytes(), None);
    refused(
        "runtime:\n  images: {hello: {command: [x]}}\nservice_groups:\n  - name: g\n    max_body_bytes: 1.5MiB\n",
        5,
        21,
        "service_groups[0].max_body_bytes: \"1.5MiB\" is not a size; write a whole number of \
         bytes or e.g. \"64KiB\", \"1MiB\" (units: B, KiB, MiB, GiB, KB, MB, GB)",
    );
    refused(
        "runtime:\n  images: {hello: {command: [x]}}\ninstances:\n  - {name: c, image: hello, max_body_bytes: 5TiB}\n",
        4,
        45,
        "instances[0].max_body_bytes: \"5TiB\": unknown unit \"TiB\" (units: B, KiB, MiB, GiB, KB, MB, GB)",
    );
}

#[test]
fn store_and_runtime_values_are_checked() {
    refused("store:\n  path: ''\n", 2, 9, "store.path: empty path");
    refused_starting(
        "store:\n  quick_repair: sometimes\n",
        2,
        17,
        "store.quick_repair: ",
    );
    refused(
        "runtime:\n  docker_host: unix:///x\n",
        2,
        16,
        "runtime.docker_host: only used with runtime.kind: docker (the runtime is process)",
    );
    refused(
        "runtime:\n  kind: docker\n  docker_host: /var/run/docker.sock\n",
        3,
        16,
        "runtime.docker_host: \"/var/run/docker.sock\" is not an engine address; write \
         unix:///path/to/socket or tcp://host:port",
    );
    refused(
        "runtime:\n  images:\n    hello:\n      env: {A: x}\n",
        4,
        7,
        "runtime.images.hello.command: missing; the process runtime needs a program to run, \
         e.g. [\"{autokill}\", \"hello\", \"--listen\", \"127.0.0.1:{port}\"]",
    );
    refused(
        "runtime:\n  images:\n    hello:\n      command: []\n",
        4,
        16,
        "runtime.images.hello.command: empty; the process runtime needs a program to run",
    );
    refused(
        "runtime:\n  images:\n    hello:\n      command: ['', x]\n",
        4,
        17,
        "runtime.images.hello.command[0]: empty program name",
    );
    refused(
        "runtime:\n  images:\n    hello:\n      command: [x]\n      port: 80\n",
        5,
        13,
        "runtime.images.hello.port: only used with runtime.kind: docker; the process runtime \
         gives each instance a free port as {port}",
    );
    refused(
        "runtime:\n  kind: docker\n  images:\n    web:\n      port: 0\n",
        5,
        13,
        "runtime.images.web.port: must be 1 to 65535",
    );
    refused(
        "runtime:\n  images:\n    hello:\n      command: [x]\n      env: {'A=B': x}\n",
        5,
        20,
        "runtime.images.hello.env[\"A=B\"]: an environment variable name must be non-empty, \
         without '=' or NUL",
    );
    refused(
        "runtime:\n  images:\n    hello:\n      command: [\"a\\0b\"]\n",
        4,
        17,
        "runtime.images.hello.command[0]: contains a NUL character",
    );
    refused(
        "runtime:\n  max_concurrent_kills: 0\n",
        2,
        25,
        "runtime.max_concurrent_kills: 0 is not between 1 and 100000",
    );
    refused(
        "runtime:\n  max_concurrent_kills: 100001\n",
        2,
        25,
        "runtime.max_concurrent_kills: 100001 is not between 1 and 100000",
    );
    assert_eq!(
        ok("runtime:\n  max_concurrent_kills: 1\n")
            .runtime
            .max_concurrent_kills,
        1
    );
    refused(
        "runtime:\n  max_concurrent_starts: 0\n",
        2,
        26,
        "runtime.max_concurrent_starts: 0 is not between 1 and 100000",
    );
    refused_starting(
        "runtime:\n  max_concurrent_starts: -3\n",
        2,
        26,
        "runtime.max_concurrent_starts",
    );
    assert_eq!(
        ok("runtime:\n  max_concurrent_starts: 100000\n")
            .runtime
            .max_concurrent_starts,
        100_000
    );
    refused(
        "runtime:\n  controller_nice: 20\n",
        2,
        20,
        "runtime.controller_nice: 20 is not between 0 and 19",
    );
    assert_eq!(
        ok("runtime:\n  controller_nice: 19\n")
            .runtime
            .controller_nice,
        19
    );
}

#[test]
fn stopping_cgroup_is_an_absolute_path_for_the_process_runtime() {
    assert_eq!(ok("runtime: {}\n").runtime.stopping_cgroup, None);
    assert_eq!(
        ok("runtime:\n  stopping_cgroup: /sys/fs/cgroup/autokill-stopping\n")
            .runtime
            .stopping_cgroup,
        Some(std::path::PathBuf::from("/sys/fs/cgroup/autokill-stopping"))
    );
    refused(
        "runtime:\n  stopping_cgroup: autokill-stopping\n",
        2,
        20,
        "runtime.stopping_cgroup: \"autokill-stopping\" is not an absolute path; name the \
         cgroup's directory, e.g. /sys/fs/cgroup/autokill-stopping",
    );
    refused(
        "runtime:\n  kind: docker\n  stopping_cgroup: /sys/fs/cgroup/x\n",
        3,
        20,
        "runtime.stopping_cgroup: only used with runtime.kind: process (the engine keeps a \
         container's cgroup)",
    );
}

#[test]
fn names_are_dns_labels() {
    let bad = "invalid name {:?}: use 1 to 63 lower-case letters, digits and '-', not \
               starting or ending with '-'";
    let long = "a".repeat(64);
    for name in ["Hello", "-a", "a-", "a.b", "a_b", "''", long.as_str()] {
        let shown = name.trim_matches('\'');
        refused(
            &format!("{IMAGES}service_groups:\n  - name: {name}\n"),
            6,
            11,
            &format!(
                "service_groups[0].name: {}",
                bad.replace("{:?}", &format!("{shown:?}"))
            ),
        );
        refused(
            &format!("{IMAGES}instances:\n  - name: {name}\n    image: hello\n"),
            6,
            11,
            &format!(
                "instances[0].name: {}",
                bad.replace("{:?}", &format!("{shown:?}"))
            ),
        );
    }
    let max = "a".repeat(63);
    let config = ok(&format!(
        "{IMAGES}instances:\n  - name: {max}\n    image: hello\n  - name: 0-9\n    image: hello\n"
    ));
    assert_eq!(config.instances[0].name, max);
}

#[test]
fn names_are_unique() {
    refused(
        &format!("{IMAGES}service_groups:\n  - name: g\n  - name: g\n"),
        7,
        11,
        "service_groups[1].name: group name \"g\" is already used at line 6",
    );
    // Across groups and stand-alone instances.
    refused(
        &format!(
            "{IMAGES}service_groups:\n  - name: g\n    instances:\n      - {{name: a, image: hello}}\n\
             instances:\n  - {{name: b, image: hello}}\n  - {{name: a, image: hello}}\n"
        ),
        11,
        12,
        "instances[1].name: instance name \"a\" is already used at line 8",
    );
    // A group and an instance may share a name: they are different kinds of things.
    ok(&format!(
        "{IMAGES}service_groups:\n  - name: a\ninstances:\n  - {{name: a, image: hello}}\n"
    ));
}

#[test]
fn images_must_exist() {
    refused(
        &format!(
            "{IMAGES}service_groups:\n  - name: g\n    instances:\n      - name: a\n        image: hello\n      - name: b\n        image: helo\n"
        ),
        11,
        16,
        "service_groups[0].instances[1].image: unknown image \"helo\" (known: hello)",
    );
    refused(
        "instances:\n  - name: a\n    image: hello\n",
        3,
        12,
        "instances[0].image: unknown image \"hello\" (known: none; declare it under runtime.images)",
    );
}

#[test]
fn domains_are_resolved_checked_and_unique() {
    let config = ok(
        "proxy: {base_domain: Example.com}\nservice_groups:\n  - name: g\n    domains: [API, api.other.org., EXAMPLE.com.]\n",
    );
    assert_eq!(
        config.service_groups[0].domains,
        ["api.example.com", "api.other.org", "example.com"]
    );
    refused(
        "service_groups:\n  - name: g\n    domains: [a, 'b..c']\n",
        3,
        18,
        "service_groups[0].domains[1]: \"b..c\": invalid host name label \"\": use 1 to 63 \
         letters, digits and '-', not starting or ending with '-'",
    );
    refused(
        "service_groups:\n  - name: g\n    domains: ['.']\n",
        3,
        15,
        "service_groups[0].domains[0]: \".\": empty host name",
    );
    refused(
        "service_groups:\n  - name: g\n    domains: [a]\n  - name: h\n    domains: [A.localhost.]\n",
        5,
        15,
        "service_groups[1].domains[0]: domain \"a.localhost\" is already listed at line 3",
    );
    refused(
        &format!(
            "{IMAGES}service_groups:\n  - name: g\n    domains: [hello, solo]\ninstances:\n  - name: solo\n    image: hello\n"
        ),
        7,
        22,
        "service_groups[0].domains[1]: \"solo.localhost\" is the host name of instance \"solo\" \
         (line 9); a group domain must not shadow an instance",
    );
}

#[test]
fn always_restart_excludes_autodestroy() {
    for autodestroy in ["ON_FAILURE", "on_success", "ALWAYS"] {
        refused(
            &format!(
                "{IMAGES}instances:\n  - name: a\n    image: hello\n    restart_policy: always\n    autodestroy: {autodestroy}\n"
            ),
            9,
            18,
            &format!(
                "instances[0].autodestroy: {} cannot be combined with restart_policy: always \
                 (an instance that is always restarted is never left stopped to be destroyed); \
                 use autodestroy: OFF or another restart_policy",
                autodestroy.to_ascii_uppercase()
            ),
        );
    }
    ok(&format!(
        "{IMAGES}instances:\n  - name: a\n    image: hello\n    restart_policy: always\n    autodestroy: off\n"
    ));
    ok(&format!(
        "{IMAGES}instances:\n  - name: a\n    image: hello\n    restart_policy: on-failure\n    autodestroy: ALWAYS\n"
    ));
}

#[test]
fn display_without_a_place() {
    let err = ConfigError {
        origin: "a.yaml".into(),
        line: 0,
        column: 0,
        message: "cannot read".into(),
    };
    assert_eq!(err.to_string(), "a.yaml: cannot read");
    let err = ConfigError {
        line: 3,
        column: 7,
        ..err
    };
    assert_eq!(err.to_string(), "a.yaml:3:7: cannot read");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let missing = dir.path().join("missing.yaml");
    let err = load(&missing)
        .err()
        .unwrap_or_else(|| panic!("loaded a missing file"));
    assert_eq!(err.line, 0);
    assert!(
        err.to_string().starts_with(&format!(
            "{}: cannot read the configuration file: ",
            missing.display()
        )),
        "{err}"
    );

    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"proxy:\n  base_domain: caf\xe9\n").unwrap_or_else(|e| panic!("{e}"));
    let err = load(&latin1)
        .err()
        .unwrap_or_else(|| panic!("loaded latin-1"));
    assert_eq!(
        err.to_string(),
        format!("{}:2:19: the file is not valid UTF-8", latin1.display())
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, EMBEDDED).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(load(&good).ok(), parse(EMBEDDED, "x").ok());
}

#[test]
fn api_path_segments_are_not_instance_names() {
    let text = "runtime:\n  images:\n    hello:\n      command: [x]\ninstances:\n  - name: templates\n    image: hello\n";
    let err = crate::config::parse(text, "t.yaml")
        .map(|_| ())
        .expect_err("refused");
    assert_eq!((err.line, err.column), (6, 11), "{err}");
    assert!(err.message.contains("path segment"), "{err}");
}

#[test]
fn budgets_beyond_the_meter_are_refused_naming_the_maximum() {
    // 2^63 + 3: the meter's lock bit would leave a budget of 3.
    refused_starting(
        &format!(
            "{IMAGES}instances:\n  - name: a\n    image: hello\n    autokill: {{num_requests: 9223372036854775811}}\n"
        ),
        8,
        30,
        "instances[0].autokill.num_requests: 9223372036854775811 is more than the meter can \
         count (at most 9223372036854775807",
    );
    let config = ok(&format!(
        "{IMAGES}instances:\n  - name: a\n    image: hello\n    autokill: {{num_requests: 9223372036854775807}}\n"
    ));
    assert_eq!(config.instances[0].autokill.num_requests, (1 << 63) - 1);
}

#[test]
fn uuid_shaped_names_are_refused() {
    // The API reads `{id}` as a UUID first, so such a name would address another resource.
    for name in [
        "8d6b0ae0-0d4c-4b9e-a4a7-2b8f5d1c9e10",
        "8d6b0ae00d4c4b9ea4a72b8f5d1c9e10",
    ] {
        refused_starting(
            &format!("{IMAGES}instances:\n  - name: {name}\n    image: hello\n"),
            6,
            11,
            &format!("instances[0].name: {name:?} has the shape of a UUID"),
        );
        refused_starting(
            &format!("{IMAGES}service_groups:\n  - name: {name}\n"),
            6,
            11,
            &format!("service_groups[0].name: {name:?} has the shape of a UUID"),
        );
    }
}

#[test]
fn api_users_are_checked() {
    let config = ok(
        "admin:\n  api_users:\n    - {user: alice, apikey: k3y}\n    - {user: bob, apikey: other}\n",
    );
    assert_eq!(
        config.admin.api_users,
        vec![
            crate::config::ApiUser {
                user: "alice".into(),
                apikey: "k3y".into()
            },
            crate::config::ApiUser {
                user: "bob".into(),
                apikey: "other".into()
            },
        ]
    );
    refused(
        "admin:\n  api_users:\n    - {user: 'a:b', apikey: k}\n",
        3,
        14,
        "admin.api_users[0].user: a user name must be printable ASCII without spaces or ':' (it \
         is sent as user:key)",
    );
    refused(
        "admin:\n  api_users:\n    - {user: a, apikey: ''}\n",
        3,
        25,
        "admin.api_users[0].apikey: empty API key",
    );
    refused(
        "admin:\n  api_users:\n    - {user: a, apikey: x}\n    - {user: a, apikey: y}\n",
        4,
        14,
        "admin.api_users[1].user: user \"a\" is listed twice",
    );
    refused(
        "admin:\n  api_users:\n    - {user: a}\n",
        3,
        8,
        "admin.api_users[0]: missing required key \"apikey\"",
    );
}

#[test]
fn docker_images_name_a_reference_a_port_and_no_autokill_path() {
    let config = ok("runtime:
  kind: docker
  default_port: 8080
  images:
    hello:
      image: localhost/hello:latest
      command: [/autokill, hello, --listen, '0.0.0.0:{port}']
      port: 8080
    nginx:1.27:
instances:
  - {name: a, image: hello}
  - {name: b, image: 'registry.local:5000/team/app@sha256:abc123'}
");
    assert_eq!(config.runtime.default_port, Some(8080));
    assert_eq!(
        config.runtime.images["hello"].image.as_deref(),
        Some("localhost/hello:latest")
    );
    assert_eq!(config.runtime.images["nginx:1.27"].image, None);
    assert_eq!(
        config.instances[1].image,
        "registry.local:5000/team/app@sha256:abc123"
    );
    // Containers are adopted by the next start: leaving them is the default.
    assert_eq!(config.shutdown, Shutdown::LeaveInstances);
    assert_eq!(
        ok("runtime: {kind: docker}\nshutdown: stop_instances\n").shutdown,
        Shutdown::StopInstances
    );
    assert_eq!(
        ok("runtime: {kind: process}\n").shutdown,
        Shutdown::StopInstances
    );

    refused(
        "runtime:\n  images:\n    hello:\n      image: x\n      command: [x]\n",
        4,
        14,
        "runtime.images.hello.image: only used with runtime.kind: docker; the process runtime \
         runs `command`",
    );
    refused(
        "runtime:\n  kind: docker\n  images:\n    hello:\n      image: Hello World\n",
        5,
        14,
        "runtime.images.hello.image: \"Hello World\" is not an image reference, e.g. \
         localhost/hello:latest or docker.io/library/nginx:1.27",
    );
    refused(
        "runtime:\n  kind: docker\n  images:\n    Web:\n      port: 80\n",
        5,
        7,
        "runtime.images.Web: \"Web\" is not an image reference; name the image with `image:` \
         under it",
    );
    refused(
        "runtime:\n  kind: docker\n  images:\n    web:\n      command: ['{autokill}', hello]\n",
        5,
        17,
        "runtime.images.web.command[0]: {autokill} is the path of autokill on this machine, \
         which does not exist inside a container",
    );
    refused(
        "runtime:\n  default_port: 80\n",
        2,
        17,
        "runtime.default_port: only used with runtime.kind: docker (the runtime is process)",
    );
    refused(
        "runtime:\n  kind: docker\n  default_port: 0\n",
        3,
        17,
        "runtime.default_port: must be 1 to 65535",
    );
    refused(
        "runtime:\n  kind: docker\n  docker_host: https://engine:2376\n",
        3,
        16,
        "runtime.docker_host: TLS engine addresses are not supported; use a unix socket, or \
         tcp://host:port on a trusted network",
    );
    refused(
        "runtime:\n  kind: docker\n  docker_host: 'unix://'\n",
        3,
        16,
        "runtime.docker_host: \"unix://\" is not an engine address; write \
         unix:///path/to/socket or tcp://host:port",
    );
    refused(
        "runtime: {kind: docker}\ninstances:\n  - {name: a, image: 'No Such'}\n",
        3,
        22,
        "instances[0].image: \"No Such\" is neither a key of runtime.images nor an image \
         reference",
    );
}

#[test]
fn image_references() {
    for good in [
        "nginx",
        "nginx:1.27",
        "localhost/hello:latest",
        "docker.io/library/nginx",
        "registry.local:5000/team/app",
        "Registry.Local:5000/a/b:v1.0-rc_1",
        "ghcr.io/a/b@sha256:0123abcdef",
        "a/b:t@sha256:00",
    ] {
        assert!(is_image_reference(good), "{good}");
    }
    for bad in [
        "",
        "Nginx",
        "a b",
        "a//b",
        "/a",
        "a/",
        "a:",
        "a:-x",
        "a@sha256",
        "a@sha256:xyz",
        "-a",
        "a/B",
    ] {
        assert!(!is_image_reference(bad), "{bad}");
    }
}

#[test]
fn the_docker_example_is_valid() {
    let config = ok(include_str!("../../config/docker.yaml"));
    assert_eq!(config.runtime.kind, RuntimeKind::Docker { host: None });
    assert_eq!(config.shutdown, Shutdown::LeaveInstances);
    assert_eq!(config.service_groups[0].instances[0].image, "web");
}

#[test]
fn jitter_is_a_fraction_below_one() {
    assert_eq!(ok("autokill:\n  jitter: 0.5\n").autokill.jitter, 0.5);
    assert_eq!(ok("autokill:\n  jitter: 0\n").autokill.jitter, 0.0);
    for (yaml, message) in [
        (
            "autokill:\n  jitter: 1\n",
            "autokill.jitter: 1 is out of range; use a fraction from 0 (off) up to, not including, 1",
        ),
        (
            "autokill:\n  jitter: -0.1\n",
            "autokill.jitter: -0.1 is out of range; use a fraction from 0 (off) up to, not including, 1",
        ),
        (
            "autokill:\n  jitter: .nan\n",
            "autokill.jitter: value `.nan` is not a finite number",
        ),
        (
            "autokill:\n  jitter: 10%\n",
            "autokill.jitter: \"10%\" is not a number; write a fraction such as 0.1",
        ),
        (
            "autokill:\n  jitter: [0.1]\n",
            "autokill.jitter: expected a fraction such as 0.1, found a list",
        ),
    ] {
        refused(yaml, 2, 11, message);
    }
}

/// The draw: within `[N - jitter × N, N]`, never below 1, spread out, and nothing drawn when
/// off or for an unlimited budget.
#[test]
fn budgets_are_drawn_within_the_jitter() {
    let mut rng = fastrand::Rng::with_seed(7);
    let half = AutokillConfig { jitter: 0.5 };
    let drawn: Vec<u64> = (0..1000).map(|_| half.draw(100, &mut rng)).collect();
    assert!(drawn.iter().all(|n| (50..=100).contains(n)), "{drawn:?}");
    assert!(
        drawn.contains(&50) && drawn.contains(&100),
        "both ends drawn"
    );
    assert_eq!(half.draw(0, &mut rng), 0, "no limit stays no limit");
    assert!(
        (0..100).all(|_| half.draw(1, &mut rng) == 1),
        "never below 1"
    );
    let most = AutokillConfig { jitter: 0.999 };
    assert!((0..100).all(|_| most.draw(2, &mut rng) >= 1));
    let off = AutokillConfig::default();
    assert!((0..100).all(|_| off.draw(100, &mut rng) == 100));
}
