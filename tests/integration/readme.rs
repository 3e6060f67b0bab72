//! The README's commands, run as written. Every ```sh block of README.md is run here, so a README
//! whose commands stop working fails the test command:
//! - the run command (`cargo run --release --bin chronik-server`, the first block) from a fresh
//!   empty working directory with no flags, then the "try it" block against it, then a real
//!   client (librdkafka) producing and consuming;
//! - the cluster block (start, `cluster status`, stop) with the benchmark example run against the
//!   cluster in between (its duration shortened).
//!
//! The blocks name release builds (`cargo run --release`, `target/release/…`); a release build
//! (fat LTO) takes minutes, so `cargo` here is a shim that runs the binaries this test run built
//! instead, and `target/release/` reads as that build's directory. Everything else — the
//! arguments, the working directory, the fixed ports 9092–9094 — is as written. The two tests take
//! turns, as they use the same ports.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The README's fixed ports are shared by both tests.
static PORTS: Mutex<()> = Mutex::new(());

struct Block {
    heading: String,
    /// Commands, with backslash-continued lines joined.
    commands: Vec<String>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every ```sh block of README.md, with the heading it sits under.
fn sh_blocks() -> Vec<Block> {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start().starts_with('#') => {
                heading = line.trim_start_matches('#').trim().to_string()
            }
            None if line.trim() == "```sh" => current = Some(Vec::new()),
            None => {}
            Some(cmds) if line.trim() == "```" => {
                blocks.push(Block {
                    heading: heading.clone(),
                    commands: std::mem::take(cmds),
                });
                current = None;
            }
            Some(cmds) => {
                let continues = cmds.last().is_some_and(|l: &String| l.ends_with('\\'));
                if continues {
                    let last = cmds.last_mut().expect("a previous line");
                    last.pop();
                    last.push(' ');
                    last.push_str(line.trim());
                } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                    cmds.push(line.to_string());
                }
            }
        }
    }
    blocks
}

fn block_under(blocks: &[Block], heading: &str) -> Vec<String> {
    blocks
        .iter()
        .filter(|b| b.heading == heading)
        .flat_map(|b| b.commands.clone())
        .collect()
}

/// The directory holding the chronik-server and chronik-bench binaries this test run built.
fn bin_dir() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_chronik-server"));
    let dir = server.parent().expect("bin dir").to_path_buf();
    assert!(
        dir.join("chronik-bench").exists(),
        "chronik-bench is not built next to {} (cargo build --workspace first)",
        server.display()
    );
    dir
}

/// A `cargo` that runs the already built binaries for `cargo run`, and builds nothing.
fn cargo_shim(dir: &Path) {
    let script = r#"#!/usr/bin/env bash
# tests/integration/readme.rs: the README's cargo commands, run with the binaries of this test run.
case "$1" in
  build) exit 0 ;;
  run)
    shift
    bin=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --) shift; break ;;
        --bin|-p) bin="$2"; shift 2 ;;
        --release) shift ;;
        *) echo "cargo shim: unexpected 'cargo run' argument $1" >&2; exit 2 ;;
      esac
    done
    exec "$CHRONIK_TEST_BIN_DIR/$bin" "$@" ;;
  *) echo "cargo shim: unexpected cargo command $1" >&2; exit 2 ;;
esac
"#;
    let path = dir.join("cargo");
    std::fs::write(&path, script).expect("write shim");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod shim");
}

/// Runs README commands through bash (with the shim first on PATH), as written but for the build
/// directory; returns stdout, failing the test when one fails.
fn run_commands(commands: &[String], cwd: &Path, shim: &Path, env: &[(&str, String)]) -> String {
    let bins = bin_dir();
    let script = commands
        .iter()
        .map(|c| c.replace("target/release/", &format!("{}/", bins.display())))
        .collect::<Vec<_>>()
        .join("\n");
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("timeout");
    cmd.arg("300")
        .arg("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .current_dir(cwd)
        .env("PATH", path)
        .env("CHRONIK_TEST_BIN_DIR", &bins)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "README commands failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The README's run command: `cargo run [--release] --bin chronik-server [-- ARGS]` → ARGS.
fn run_command_args(cmd: &str) -> Vec<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    assert!(
        words.starts_with(&["cargo", "run"]) && cmd.contains("--bin chronik-server"),
        "the README's first command is not `cargo run … --bin chronik-server`: {cmd}"
    );
    match words.iter().position(|w| *w == "--") {
        Some(i) => words[i + 1..].iter().map(|s| s.to_string()).collect(),
        None => Vec::new(),
    }
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_line(&mut self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.log_text().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chronik-server exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no '{needle}' line within {secs} s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(args: &[String], cwd: &Path, log: PathBuf) -> Running {
    let f = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_chronik-server"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("spawn chronik-server");
    Running { child, log }
}

#[test]
fn the_readme_run_command_stores_and_serves_messages_from_an_empty_directory() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let blocks = sh_blocks();
    let under: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.heading == "Run a single node")
        .collect();
    assert!(
        !under.is_empty(),
        "README has a 'Run a single node' sh block"
    );
    let run = &under[0].commands;
    assert_eq!(run.len(), 1, "one run command: {run:?}");
    let args = run_command_args(&run[0]);

    let work = tempfile::tempdir().expect("tempdir");
    let cwd = work.path().join("empty");
    std::fs::create_dir(&cwd).expect("mkdir");
    let mut server = spawn_server(&args, &cwd, work.path().join("server.log"));
    let serving = server.wait_for_line("chronik-server serving", 60);
    let data = cwd.join("data");
    assert!(
        serving.contains(&format!("data in {}", data.display())),
        "the start-up line names the absolute data dir {}: {serving}",
        data.display()
    );
    assert!(serving.contains("Kafka on 127.0.0.1:9092"), "{serving}");

    // The "try it" block, from the same directory.
    let shim = work.path().join("shim");
    std::fs::create_dir(&shim).expect("mkdir shim");
    cargo_shim(&shim);
    let try_it: Vec<String> = under[1..].iter().flat_map(|b| b.commands.clone()).collect();
    assert!(
        !try_it.is_empty(),
        "the README shows how to try the node (a second sh block under 'Run a single node')"
    );
    let out = run_commands(&try_it, &cwd, &shim, &[]);
    assert_eq!(
        out.matches("result       PASS").count(),
        2,
        "both bench runs pass their validation: {out}"
    );
    assert!(out.contains("0 corrupt"), "{out}");

    // A real client: the README's promise is that Kafka clients just work.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for i in 0..10 {
        let v = format!("hello {i}");
        producer
            .send(BaseRecord::<(), _>::to("hello-readme").payload(&v))
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(producer.in_flight_count(), 0, "every message delivered");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .set("group.id", "readme")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["hello-readme"]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 10 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    let want: Vec<String> = (0..10).map(|i| format!("hello {i}")).collect();
    assert_eq!(got, want);
    assert!(data.join("hello-readme-0").is_dir(), "data under ./data");
    assert!(
        !server.log_text().contains("cannot open partition"),
        "{}",
        server.log_text()
    );

    // A second node started the same way while the first holds the port says which port.
    let other = work.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let mut second = spawn_server(&args, &other, work.path().join("second.log"));
    let status = wait_exit(&mut second.child, 30).expect("the second node exits");
    assert_eq!(status, 1, "{}", second.log_text());
    assert!(
        second
            .log_text()
            .contains("cannot listen for Kafka clients on 127.0.0.1:9092"),
        "{}",
        second.log_text()
    );

    // SIGTERM stops it cleanly.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut server.child, 30), Some(0));
}

fn wait_exit(child: &mut Child, secs: u64) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn the_readme_cluster_and_benchmark_commands_work_as_written() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let blocks = sh_blocks();
    let cluster = block_under(&blocks, "Cluster");
    let (stop, start): (Vec<String>, Vec<String>) =
        cluster.into_iter().partition(|c| c.contains("stop.sh"));
    assert_eq!(stop.len(), 1, "the cluster block ends with stop.sh");
    assert!(
        start.iter().any(|c| c.contains("start.sh")),
        "the cluster block starts one: {start:?}"
    );
    let bench: Vec<String> = block_under(&blocks, "Benchmarks")
        .into_iter()
        .map(|c| c.replace("--duration 30s", "--duration 3s"))
        .collect();
    assert!(
        bench.iter().any(|c| c.contains("chronik-bench")),
        "the benchmark example: {bench:?}"
    );

    let work = tempfile::tempdir().expect("tempdir");
    let shim = work.path().join("shim");
    std::fs::create_dir(&shim).expect("mkdir shim");
    cargo_shim(&shim);
    let cluster_dir = work.path().join("cluster");
    // `<printed dir>` is what start.sh printed; the test chooses it up front.
    let env = [
        ("CHRONIK_CLUSTER_DIR", cluster_dir.display().to_string()),
        (
            "CHRONIK_BIN",
            env!("CARGO_BIN_EXE_chronik-server").to_string(),
        ),
    ];
    let stop: Vec<String> = stop
        .iter()
        .map(|c| c.replace("<printed dir>", &cluster_dir.display().to_string()))
        .collect();
    let root = repo_root();
    let result = std::panic::catch_unwind(|| {
        let status = run_commands(&start, &root, &shim, &env);
        for port in 9092..=9094 {
            assert!(
                status.contains(&format!("127.0.0.1:{port}  alive")),
                "cluster status lists the broker on {port} as alive: {status}"
            );
        }
        let out = run_commands(&bench, &root, &shim, &env);
        assert!(
            out.contains("stored vs acknowledged"),
            "the bench reports stored vs acknowledged: {out}"
        );
    });
    run_commands(&stop, &root, &shim, &env);
    if let Err(e) = result {
        for n in 1..=3 {
            let log = cluster_dir.join(format!("node-{n}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("---- node {n} log tail ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        std::panic::resume_unwind(e);
    }
    for n in 1..=3 {
        assert!(
            !cluster_dir.join(format!("node-{n}.pid")).exists(),
            "stop.sh stopped node {n}"
        );
    }
}
