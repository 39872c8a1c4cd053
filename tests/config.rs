//! The configuration as a user meets it: `autokill serve --check --config FILE` on the sample
//! and on broken files, and the parser fed arbitrary text.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proptest::prelude::*;

/// Runs `autokill serve --check` with `args` appended.
fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autokill"))
        .args(["serve", "--check"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run autokill: {e}"))
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Asserts that checking `fixture` fails with `file:line:column: message` on stderr.
#[track_caller]
fn check_refuses(fixture: &str, line: usize, column: usize, message: &str) {
    let path = repo_file(fixture);
    let path_str = path
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {path:?}"));
    let output = check(&["--config", path_str]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "accepted {fixture}; stderr: {stderr}"
    );
    let want = format!("{path_str}:{line}:{column}: {message}");
    assert!(
        stderr.contains(&want),
        "stderr does not contain\n  {want}\nit is\n  {stderr}"
    );
}

#[test]
fn the_sample_config_checks_out() {
    let path = repo_file("config/autokill.yaml");
    let output = check(&["--config", &path.to_string_lossy()]);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_embedded_config_checks_out() {
    let output = check(&[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `runtime.stopping_cgroup` is checked when the server starts: one it cannot move processes
/// into stops the start, naming the key and the file.
#[test]
fn serve_refuses_a_stopping_cgroup_it_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-cgroup");
    let config = dir.path().join("autokill.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy: {{listen: '127.0.0.1:0'}}\nadmin: {{listen: '127.0.0.1:0'}}\n\
             store: {{path: {}}}\nruntime: {{stopping_cgroup: {}}}\n",
            dir.path().join("autokill.redb").display(),
            missing.display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_autokill"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run autokill");
    // A server that started after all is stopped, and the test fails.
    let begun = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if begun.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with a stopping_cgroup it cannot write");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let want = format!(
        "runtime.stopping_cgroup: {}/cgroup.procs: No such file or directory",
        missing.display()
    );
    assert!(stderr.contains(&want), "stderr lacks {want:?}: {stderr}");
}

#[test]
fn an_unknown_key_is_refused_with_its_place() {
    check_refuses(
        "tests/fixtures/config/unknown_key.yaml",
        4,
        3,
        "proxy.lisen: unknown key \"lisen\"; did you mean \"listen\"?",
    );
}

#[test]
fn a_bad_duration_is_refused_with_its_place() {
    check_refuses(
        "tests/fixtures/config/bad_duration.yaml",
        12,
        44,
        "service_groups[0].instances[0].autokill.time: \"30\" needs a unit, e.g. \"30s\"",
    );
}

#[test]
fn a_missing_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("nope.yaml");
    let output = check(&["--config", &path.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: cannot read the configuration file",
            path.display()
        )),
        "{stderr}"
    );
}

/// One edit of the sample: where (a fraction of the length), what, and text to insert.
fn edit() -> impl Strategy<Value = (prop::sample::Index, u8, String)> {
    (
        any::<prop::sample::Index>(),
        0..5u8,
        prop_oneof![
            "\\PC{0,12}",
            // Fragments that are meaningful to YAML or to the schema.
            prop::sample::select(vec![
                ":",
                "- ",
                "  ",
                "\n",
                "#",
                "&a ",
                "*a",
                "[",
                "]",
                "{",
                "}",
                "'",
                "\"",
                "0",
                "-1",
                "30",
                "1h30m",
                "99999999999999999999h",
                "null",
                "~",
                "listen",
                "restart_policy: always\n        autodestroy: ALWAYS",
                "<<: *a",
                "!!str ",
                "\t",
                "\u{feff}",
                "---\n",
            ])
            .prop_map(String::from),
        ],
    )
}

/// Applies one edit to `text`: insert, delete a run, replace a run, duplicate or drop a line.
fn apply(text: &mut String, (at, op, insert): &(prop::sample::Index, u8, String)) {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let start = boundaries[at.index(boundaries.len())];
    let end = boundaries
        .iter()
        .copied()
        .find(|&b| b >= start + insert.len().max(1))
        .unwrap_or(text.len());
    match op {
        0 => text.insert_str(start, insert),
        1 => text.replace_range(start..end, ""),
        2 => text.replace_range(start..end, insert),
        3 | 4 => {
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[start..]
                .find('\n')
                .map_or(text.len(), |i| start + i + 1);
            let line = text[line_start..line_end].to_owned();
            if *op == 3 {
                text.insert_str(line_end, &line);
            } else {
                text.replace_range(line_start..line_end, "");
            }
        }
        _ => {}
    }
}

/// What every outcome of `parse` must satisfy, beyond not panicking: an error points inside
/// the text (or nowhere), names the origin, and is one line.
fn assert_sane(text: &str) {
    match autokill::config::parse(text, "fuzz.yaml") {
        Ok(_) => {}
        Err(err) => {
            let lines = text.split('\n').count();
            assert!(err.line <= lines + 1, "line {} of {lines}: {err}", err.line);
            // Every refusal of a text points into it: the operator (and the reload's log
            // line) is told where to look.
            assert!(err.line >= 1 && err.column >= 1, "no place: {err}");
            let shown = err.to_string();
            assert!(shown.starts_with("fuzz.yaml"), "{shown}");
            assert!(!shown.contains('\n'), "multi-line message: {shown:?}");
        }
    }
}

/// Keys of the schema, by section, so that generated files reach validation, not only the
/// YAML reader.
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "proxy",
        &[
            "listen",
            "workers",
            "base_domain",
            "header_read_timeout",
            "upstream_timeout",
            "pool_idle_per_instance",
            "idle_timeout",
            "max_connections_per_worker",
            "balance",
        ],
    ),
    (
        "admin",
        &[
            "listen",
            "token",
            "allowed_hosts",
            "idle_timeout",
            "max_connections",
            "max_body_size",
            "api_users",
        ],
    ),
    ("store", &["path"]),
    (
        "runtime",
        &[
            "kind",
            "docker_host",
            "stop_grace",
            "start_timeout",
            "images",
            "default_port",
        ],
    ),
    ("defaults", &["drain_timeout"]),
];

/// Scalars that some key of the schema takes, and many it does not.
fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "30",
            "30s",
            "1h30m",
            "500ms",
            "1MiB",
            "4096",
            "1.5",
            "true",
            "null",
            "~",
            "''",
            "\"\"",
            "127.0.0.1:0",
            "0.0.0.0:80",
            "[::1]:8081",
            "localhost",
            "round_robin",
            "least_inflight",
            "process",
            "docker",
            "ALWAYS",
            "never",
            "hello",
            "[]",
            "{}",
            "[1, 2]",
            "{a: 1}",
            "18446744073709551616",
            "99999999999999999999h",
            "&x 1",
            "*x",
            "!!binary aGk=",
            "|\n  text",
            "0x10",
            "1e3",
        ])
        .prop_map(String::from),
        "[a-zA-Z0-9:./_-]{0,10}",
    ]
}

/// One entry of an `instances` list, at the top level's indentation.
fn yaml_instance() -> impl Strategy<Value = String> {
    (
        yaml_scalar(),
        yaml_scalar(),
        yaml_scalar(),
        yaml_scalar(),
        yaml_scalar(),
    )
        .prop_map(|(name, image, n, time, policy)| {
            format!(
                "  - name: {name}\n    image: {image}\n    autokill: {{num_requests: {n}, time: {time}}}\n    restart_policy: {policy}\n"
            )
        })
}

/// A whole file: some sections with some of their keys, perhaps a group or an instance.
fn yaml_file() -> impl Strategy<Value = String> {
    let section = (
        prop::sample::select(SECTIONS),
        prop::collection::vec((any::<prop::sample::Index>(), yaml_scalar()), 0..4),
    )
        .prop_map(|((name, keys), picks)| {
            let mut text = format!("{name}:\n");
            for (index, value) in picks {
                text.push_str(&format!("  {}: {value}\n", index.get(keys)));
            }
            text
        });
    (
        prop::collection::vec(section, 0..4),
        prop::collection::vec(yaml_instance(), 0..3),
        prop::collection::vec(yaml_instance(), 0..3),
        yaml_scalar(),
    )
        .prop_map(|(sections, grouped, solo, domain)| {
            let mut text = sections.concat();
            if !grouped.is_empty() {
                text.push_str(&format!(
                    "service_groups:\n  - name: g\n    domains: [{domain}]\n    instances:\n"
                ));
                for i in grouped {
                    text.push_str(
                        &i.replace("\n  ", "\n      ")
                            .replacen("  - ", "      - ", 1),
                    );
                }
            }
            if !solo.is_empty() {
                text.push_str("instances:\n");
                text.push_str(&solo.concat());
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_files_of_the_schema(text in yaml_file()) {
        assert_sane(&text);
    }

    #[test]
    fn load_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("fuzz.yaml");
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write: {e}"));
        if let Err(err) = autokill::config::load(&path) {
            let lines = bytes.split(|b| *b == b'\n').count();
            assert!(err.line >= 1 && err.column >= 1, "no place: {err}");
            assert!(err.line <= lines + 1, "line {} of {lines}: {err}", err.line);
            assert!(!err.to_string().contains('\n'), "multi-line message: {err}");
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        assert_sane(&text);
    }

    #[test]
    fn parse_never_panics_on_yamlish_text(text in "[a-z_:\\-\\[\\]{}, \n#&*'\"0-9.]{0,200}") {
        assert_sane(&text);
    }

    #[test]
    fn parse_never_panics_on_mutations_of_the_sample(edits in prop::collection::vec(edit(), 1..6)) {
        let mut text = autokill::config::EMBEDDED.to_owned();
        for e in &edits {
            apply(&mut text, e);
        }
        assert_sane(&text);
    }
}
