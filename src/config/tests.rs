use super::*;
use std::time::Duration;

/// The server flags as `chronik-server ARGS` parses them.
fn args(flags: &[&str]) -> ServerArgs {
    let argv = std::iter::once("chronik-server").chain(flags.iter().copied());
    Cli::try_parse_from(argv).expect("flags parse").server
}

fn resolve(flags: &[&str]) -> Result<BrokerConfig, String> {
    BrokerConfig::resolve(&args(flags))
}

fn with_file(text: &str, flags: &[&str]) -> Result<BrokerConfig, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).expect("write");
    let mut a = args(flags);
    a.config = Some(path);
    BrokerConfig::resolve(&a)
}

fn every_declared() -> impl Iterator<Item = &'static Declared> {
    BrokerSettings::DECLARED
        .iter()
        .chain(GroupSettings::DECLARED)
}

#[test]
fn quorum_parses_and_rejects_garbage() {
    let q = parse_quorum("1@127.0.0.1:10092,2@127.0.0.1:10093").unwrap();
    assert_eq!(
        q,
        vec![(1, "127.0.0.1:10092".into()), (2, "127.0.0.1:10093".into())]
    );
    assert!(parse_quorum("x@1:2").is_err());
    assert!(parse_quorum("1@host").is_err());
    assert!(parse_quorum("1@a:1,1@b:2").is_err());
}

#[test]
fn every_built_in_default_parses_as_its_type() {
    // `values()` parses every literal default; a bad one panics here rather than at a start.
    let b = BrokerSettings::default().values();
    assert_eq!(b.node_id, 1);
    assert_eq!(b.log_segment_bytes, 1 << 30);
    assert!(b.pin);
    let g = GroupSettings::default().values();
    assert_eq!(g.offsets_topic_num_partitions, 50);
    assert_eq!(
        GroupConfig::default(),
        GroupConfig::resolve(Default::default()).unwrap()
    );
}

#[test]
fn the_cluster_secret_file_comes_from_the_flag_or_the_file() {
    let file = "cluster-secret-file = \"/etc/chronik/secret\"";
    let c = with_file(file, &[]).unwrap();
    assert_eq!(
        c.cluster_secret_file.as_deref(),
        Some(std::path::Path::new("/etc/chronik/secret"))
    );
    let c = with_file(file, &["--cluster-secret-file", "/from/the/flag"]).unwrap();
    assert_eq!(
        c.cluster_secret_file.as_deref(),
        Some(std::path::Path::new("/from/the/flag"))
    );
    assert_eq!(with_file("", &[]).unwrap().cluster_secret_file, None);
}

#[test]
fn a_cluster_id_comes_from_the_flag_or_the_file_and_garbage_is_refused() {
    let c = with_file("cluster-id = \"MkU3OEVBNTcwNTJENDM2Qg\"", &[]).unwrap();
    assert_eq!(c.cluster_id.as_deref(), Some("MkU3OEVBNTcwNTJENDM2Qg"));
    let c = with_file(
        "cluster-id = \"from-the-file\"",
        &["--cluster-id", "from-the-flag"],
    )
    .unwrap();
    assert_eq!(c.cluster_id.as_deref(), Some("from-the-flag"));
    assert_eq!(resolve(&[]).unwrap().cluster_id, None);
    for bad in ["", "has space", "slash/y", &"x".repeat(65)] {
        let e = resolve(&["--cluster-id", bad]).unwrap_err();
        assert!(e.contains("cluster-id"), "{bad:?}: {e}");
    }
}

#[test]
fn no_flags_give_a_single_node_on_9092() {
    let c = resolve(&[]).unwrap();
    assert_eq!(c.listeners.all[0].bind.to_string(), "127.0.0.1:9092");
    assert_eq!(c.controller_listen.to_string(), "127.0.0.1:10092");
    assert_eq!(
        c.controller_quorum,
        vec![(1, "127.0.0.1:10092".to_string())]
    );
    assert!(c.cores >= 1);
    assert!(c.pin);
    assert_eq!(c.log_flush, FlushSetting::IntervalMs(1000));
    assert_eq!(c.connections_max_idle_ms, Some(600_000));
    assert_eq!(c.log_retention_ms, Some(604_800_000));
    assert!(c.data_dir.is_absolute() && c.data_dir.ends_with("data"));
}

#[test]
fn pin_is_on_unless_turned_off_by_flag_or_file_and_the_last_flag_wins() {
    assert!(!resolve(&["--no-pin"]).unwrap().pin);
    assert!(!resolve(&["--pin=false"]).unwrap().pin);
    assert!(resolve(&["--no-pin", "--pin"]).unwrap().pin);
    assert!(!resolve(&["--pin", "--no-pin"]).unwrap().pin);
    assert!(!with_file("pin = false", &[]).unwrap().pin);
    assert!(with_file("pin = false", &["--pin"]).unwrap().pin);
}

#[test]
fn negative_values_are_taken_where_they_mean_never_or_forever() {
    let c = resolve(&[
        "--connections-max-idle-ms",
        "-1",
        "--log-retention-ms",
        "-1",
    ])
    .unwrap();
    assert_eq!(c.connections_max_idle_ms, None);
    assert_eq!(c.log_retention_ms, None);
    assert!(resolve(&["--connections-max-idle-ms", "0"]).is_err());
    assert!(resolve(&["--fetch-max-bytes", "100"]).is_err());
    assert!(resolve(&["--num-partitions", "0"]).is_err());
}

#[test]
fn metrics_listen_defaults_to_9644_and_none_turns_it_off() {
    let c = resolve(&[]).unwrap();
    assert_eq!(c.metrics_listen.unwrap().to_string(), "127.0.0.1:9644");
    let file = "metrics-listen = \"127.0.0.1:19644\"";
    let c = with_file(file, &[]).unwrap();
    assert_eq!(c.metrics_listen.unwrap().to_string(), "127.0.0.1:19644");
    let c = with_file(file, &["--metrics-listen", "none"]).unwrap();
    assert_eq!(c.metrics_listen, None);
    assert!(resolve(&["--metrics-listen", "nowhere"])
        .unwrap_err()
        .contains("metrics-listen"));
}

#[test]
fn a_toml_file_configures_a_cluster_node_and_flags_override_it() {
    let text = r#"
        node-id = 2
        listen = "127.0.0.1:19093"
        controller_listen = "127.0.0.1:20093"
        controller-quorum = "1@127.0.0.1:20092,2@127.0.0.1:20093,3@127.0.0.1:20094"
        "min.insync.replicas" = 2
        replica-lag-time-max-ms = 5000
        log.cleaner.io.max.bytes.per.second = 1000
    "#;
    let c = with_file(text, &[]).unwrap();
    assert_eq!(c.node_id, 2);
    assert_eq!(c.listeners.all[0].bind.to_string(), "127.0.0.1:19093");
    assert_eq!(c.controller_listen.to_string(), "127.0.0.1:20093");
    assert_eq!(c.controller_quorum.len(), 3);
    assert_eq!(c.min_insync_replicas, 2);
    assert_eq!(c.replica_lag_time_max_ms, 5000);
    assert_eq!(c.log_cleaner_io_max_bytes_per_second, 1000);
    let c = with_file(
        text,
        &["--listen", "127.0.0.1:19999", "--min-insync-replicas", "1"],
    )
    .unwrap();
    assert_eq!(c.listeners.all[0].bind.to_string(), "127.0.0.1:19999");
    assert_eq!(c.min_insync_replicas, 1);
    assert_eq!(c.node_id, 2);
}

#[test]
fn a_toml_file_with_an_unknown_key_or_bad_syntax_is_refused_by_name() {
    let e = with_file("node-id = 1\nlisten-port = 9092\n", &[]).unwrap_err();
    assert!(e.contains("listen-port") && e.contains("node.toml"), "{e}");
    let e = with_file("node-id = \n", &[]).unwrap_err();
    assert!(e.contains("node.toml"), "{e}");
    let e = with_file("[log]\n", &[]).unwrap_err();
    assert!(e.contains("unknown key `log`"), "{e}");
    let e = with_file("node-id = \"one\"\n", &[]).unwrap_err();
    assert!(e.contains("node.toml"), "{e}");
}

#[test]
fn every_spelling_of_a_file_key_is_taken() {
    let c = with_file(
        r#"
        offsets-topic-num-partitions = 3
        offsets_retention_minutes = 7
        "group.initial.rebalance.delay.ms" = 10
        group.min.session.timeout.ms = 100
        offsets.topic.replication.factor = 2
        log.cleaner.enable = false
        "#,
        &[],
    )
    .unwrap();
    assert_eq!(c.groups.offsets_partitions, 3);
    assert_eq!(c.groups.offsets_retention, Duration::from_secs(7 * 60));
    assert_eq!(c.groups.initial_rebalance_delay, Duration::from_millis(10));
    assert_eq!(c.groups.min_session_timeout_ms, 100);
    assert_eq!(c.groups.offsets_replication_factor, Some(2));
    assert!(!c.log_cleaner_enable);
}

#[test]
fn a_key_given_twice_or_misspelt_under_a_dotted_prefix_is_refused() {
    let e = with_file(
        "offsets-retention-minutes = 1\n\"offsets.retention.minutes\" = 2",
        &[],
    )
    .unwrap_err();
    assert!(e.contains("twice"), "{e}");
    let e = with_file("offsets.retention.minutez = 3\n", &[]).unwrap_err();
    assert!(e.contains("offsets.retention.minutez"), "{e}");
    assert!(with_file("offsets-retention-minutes = \"x\"", &[]).is_err());
}

#[test]
fn flags_beat_the_file_and_ms_beats_minutes() {
    let c = with_file(
        "num-partitions = 2\noffsets-topic-num-partitions = 3\noffsets-retention-minutes = 5",
        &[
            "--offsets-topic-num-partitions",
            "4",
            "--offsets-retention-ms",
            "1500",
        ],
    )
    .unwrap();
    assert_eq!(c.num_partitions, 2);
    assert_eq!(c.groups.offsets_partitions, 4);
    assert_eq!(c.groups.offsets_retention, Duration::from_millis(1500));
}

#[test]
fn group_settings_that_make_no_sense_are_refused() {
    for bad in [
        &["--offsets-topic-num-partitions", "0"][..],
        &[
            "--group-min-session-timeout-ms",
            "10000",
            "--group-max-session-timeout-ms",
            "5000",
        ],
        &["--offsets-topic-segment-bytes", "0"],
    ] {
        assert!(resolve(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_example_config_file_resolves() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/chronik.toml");
    let mut a = args(&[]);
    a.config = Some(path);
    let c = BrokerConfig::resolve(&a).expect("tuning/chronik.toml resolves");
    assert_eq!(c.groups.offsets_replication_factor, Some(3));
    assert_eq!(c.min_insync_replicas, 2);
}

#[test]
fn flush_setting_parses() {
    assert_eq!(parse_flush("always").unwrap(), FlushSetting::Always);
    assert_eq!(parse_flush("250").unwrap(), FlushSetting::IntervalMs(250));
    assert!(parse_flush("sometimes").is_err());
}

/// Set by `the_environment_sits_between_the_flags_and_the_file` in the child it starts.
const ENV_CHILD: &str = "CHRONIK_CONFIG_TEST_ENV_CHILD";

#[test]
fn the_environment_sits_between_the_flags_and_the_file() {
    if std::env::var_os(ENV_CHILD).is_some() {
        return;
    }
    // Environment variables are process-wide: the checks run in a child test process
    // (`environment_child_checks`), not beside the other tests of this one.
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "config::tests::environment_child_checks",
            "--exact",
            "--test-threads=1",
        ])
        .env(ENV_CHILD, "1")
        .env("CHRONIK_LOG_CLEANER_SHARES", "77")
        .env("CHRONIK_OFFSETS_TOPIC_NUM_PARTITIONS", "9")
        .env("CHRONIK_PIN", "false")
        .output()
        .expect("run the child test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn environment_child_checks() {
    if std::env::var_os(ENV_CHILD).is_none() {
        return;
    }
    let file = "log-cleaner-shares = 5\noffsets-topic-num-partitions = 6\npin = true";
    let c = with_file(file, &[]).unwrap();
    assert_eq!(c.log_cleaner_shares, 77);
    assert_eq!(c.groups.offsets_partitions, 9);
    assert!(!c.pin);
    let c = with_file(file, &["--log-cleaner-shares", "3", "--pin"]).unwrap();
    assert_eq!(c.log_cleaner_shares, 3);
    assert!(c.pin);
}

#[test]
fn help_shows_every_setting_with_its_flag_environment_variable_and_default() {
    use clap::CommandFactory;
    let help = Cli::command().render_help().to_string();
    // Wrapped lines are joined, so a default split over two lines still reads as written.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for d in every_declared() {
        let flag = format!("--{}", d.name.replace('_', "-"));
        let env = format!("CHRONIK_{}", d.name.to_ascii_uppercase());
        assert!(help.contains(&flag), "--help lacks {flag}");
        assert!(help.contains(&format!("env: {env}")), "--help lacks {env}");
        assert!(
            help.contains(&format!("[default: {}]", d.default)),
            "--help lacks the default of {flag} ({})",
            d.default
        );
    }
}

/// One row of README's configuration tables: flag, environment variable, default.
#[derive(Debug, PartialEq)]
struct Row {
    flag: String,
    env: String,
    default: String,
}

/// The rows of every `| flag | environment | default | meaning |` table under README's
/// "## Configuration" (up to the next `## ` heading).
fn readme_rows() -> Vec<Row> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(path).expect("README.md");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Configuration\n"))
        .expect("README has a Configuration section");
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in section.lines() {
        let cells = split_row(line);
        if cells.is_empty() {
            in_table = false;
            continue;
        }
        if cells[..] == ["flag", "environment", "default", "meaning"] {
            in_table = true;
            continue;
        }
        if !in_table || cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
            continue;
        }
        assert_eq!(cells.len(), 4, "README row `{line}` has not 4 cells");
        // `--listen HOST:PORT`, `--pin[=false]` → `--listen`, `--pin`
        let flag: String = cells[0]
            .trim_matches('`')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        rows.push(Row {
            flag,
            env: cells[1].trim_matches('`').to_string(),
            default: cells[2].trim_matches('`').to_string(),
        });
    }
    rows
}

/// `| a | b\|c |` → ["a", "b|c"]; not a table row → [].
fn split_row(line: &str) -> Vec<String> {
    let line = line.trim();
    let Some(inner) = line.strip_prefix('|').and_then(|l| l.strip_suffix('|')) else {
        return Vec::new();
    };
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                if let Some(cell) = cells.last_mut() {
                    cell.push('|');
                }
            }
            '|' => cells.push(String::new()),
            c => {
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
        }
    }
    cells.iter().map(|c| c.trim().to_string()).collect()
}

#[test]
fn the_readme_configuration_tables_list_every_flag_with_its_environment_variable_and_default() {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let defaults: BTreeMap<String, &str> = every_declared()
        .map(|d| (d.name.replace('_', "-"), d.default))
        .collect();
    let expected: Vec<Row> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "help" | "version"))
        .map(|long| {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .expect("the argument");
            Row {
                flag: format!("--{long}"),
                env: arg
                    .get_env()
                    .map_or("—".to_string(), |e| e.to_string_lossy().into_owned()),
                default: defaults.get(long).copied().unwrap_or("—").to_string(),
            }
        })
        .collect();
    assert!(expected.len() > defaults.len(), "{expected:?}");
    let rows = readme_rows();
    for want in &expected {
        let found: Vec<&Row> = rows.iter().filter(|r| r.flag == want.flag).collect();
        assert_eq!(found, vec![want], "README's row of {}", want.flag);
    }
    for row in &rows {
        assert!(
            expected.iter().any(|w| w.flag == row.flag),
            "README lists {}, which is no flag of chronik-server",
            row.flag
        );
    }
}

#[test]
fn listeners_flags_resolve_together_with_the_tls_files() {
    let c = resolve(&[
        "--listeners",
        "PLAINTEXT://127.0.0.1:19092,SSL://127.0.0.1:19093",
        "--ssl-cert-file",
        "cert.pem",
        "--ssl-key-file",
        "key.pem",
    ])
    .unwrap();
    assert_eq!(c.listeners.all.len(), 2);
    assert_eq!(c.controller_listen.to_string(), "127.0.0.1:20092");
    let tls = c.tls.unwrap();
    assert_eq!(tls.client_auth, super::tls::ClientAuth::None);
    let e = resolve(&[
        "--listeners",
        "SSL://127.0.0.1:19093,PLAINTEXT://127.0.0.1:1",
    ])
    .unwrap_err();
    assert!(e.contains("ssl-cert-file"), "{e}");
    assert!(resolve(&[]).unwrap().tls.is_none());
}
