//! A real chronik-server for the bench's integration tests: a free loopback port, a temporary
//! data dir, its log in a file that a failing test prints the tail of, killed on drop.
//!
//! The server binary is looked up in the usual target dirs (CHRONIK_SERVER_BIN overrides); if it
//! is not there, the test builds it with `cargo build -p chronik --bin chronik-server`.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use chronik_bench::cli::Args;

pub struct Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl Server {
    pub fn print_log_tail(&self, n: usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        eprintln!(
            "---- chronik-server log (last {} lines) ----",
            lines.len() - from
        );
        for l in &lines[from..] {
            eprintln!("{l}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.print_log_tail(60);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CHRONIK_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    let mut dirs = Vec::new();
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t));
    }
    dirs.push(root.join("target"));
    dirs.push(root.join("target-bench"));
    // The most recently built one: a release binary left from an older build must not stand
    // in for the debug build the test command just made.
    let newest = dirs
        .iter()
        .flat_map(|d| ["release", "debug"].map(|profile| d.join(profile).join("chronik-server")))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max_by_key(|(modified, _)| *modified);
    if let Some((_, p)) = newest {
        return p;
    }
    // A separate target dir: the outer `cargo test` may still hold the lock on the usual one.
    let target = dirs
        .first()
        .cloned()
        .unwrap_or_else(|| root.join("target"))
        .join("chronik-server-for-bench-tests");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "chronik", "--bin", "chronik-server"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building chronik-server failed");
    target.join("debug").join("chronik-server")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts chronik-server with `extra` flags and waits until it listens.
pub fn start_server(extra: &[&str]) -> Server {
    start_server_on(free_port(), extra)
}

/// Starts chronik-server listening on `port` (which `extra` may name again in `--listeners`,
/// beside other listeners) and waits until it listens there.
pub fn start_server_on(port: u16, extra: &[&str]) -> Server {
    let controller = free_port();
    let server = spawn_node(
        1,
        port,
        controller,
        &format!("1@127.0.0.1:{controller}"),
        extra,
        None,
    );
    server.wait_listening();
    server
}

/// Starts an `n`-node cluster (every node in one controller quorum) and waits until each one
/// listens and the first one's Metadata lists all `n` brokers.
pub async fn start_cluster(n: usize, extra: &[&str]) -> Vec<Server> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let quorum = ports
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    // The nodes of one cluster share its secret (the controller port authenticates with it).
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let nodes: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, &(port, controller))| {
            spawn_node(
                i as i32 + 1,
                port,
                controller,
                &quorum,
                extra,
                Some(&secret),
            )
        })
        .collect();
    for s in &nodes {
        s.wait_listening();
    }
    let first = vec![format!("127.0.0.1:{}", nodes[0].port)];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = chronik_bench::metadata::Cluster::bootstrap(
            first.clone(),
            chronik_bench::client::Security::plaintext(),
            Duration::from_secs(5),
            false,
        )
        .await
        .map(|c| c.broker_count())
        .unwrap_or(0);
        if seen == n {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not list {n} brokers within 30 s (saw {seen})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `secret`: the cluster secret (64 hex digits) for a node of a multi-node cluster.
fn spawn_node(
    node_id: i32,
    port: u16,
    controller: u16,
    quorum: &str,
    extra: &[&str],
    secret: Option<&str>,
) -> Server {
    let bin = server_binary();
    let data = tempfile::tempdir().expect("temp dir");
    let log = data.path().join("server.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(&bin);
    if let Some(secret) = secret {
        let file = data.path().join("cluster.secret");
        std::fs::write(&file, secret).expect("secret file");
        cmd.arg("--cluster-secret-file").arg(file);
    }
    let child = cmd
        .args([
            "--no-pin",
            "--node-id",
            &node_id.to_string(),
            "--data-dir",
            &data.path().join("data").display().to_string(),
            "--controller-listen",
            &format!("127.0.0.1:{controller}"),
            "--controller-quorum",
            quorum,
        ])
        // `--listeners` in `extra` names this port itself, beside other listeners.
        .args(if extra.contains(&"--listeners") {
            vec![]
        } else {
            vec!["--listen".to_string(), format!("127.0.0.1:{port}")]
        })
        .args(extra)
        // Several servers of one test binary run at once: no shared default metrics port.
        .args(if extra.contains(&"--metrics-listen") {
            &[][..]
        } else {
            &["--metrics-listen", "none"][..]
        })
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Server {
        child,
        port,
        log,
        _data: data,
    }
}

impl Server {
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chronik-server did not listen on {} within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// chronik-bench arguments against the server on `port`.
pub fn args(port: u16, extra: &[&str]) -> Args {
    args_for(&[port], extra)
}

/// chronik-bench arguments with every one of `ports` as a bootstrap server.
pub fn args_for(ports: &[u16], extra: &[&str]) -> Args {
    let addr = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut v = vec![
        "chronik-bench",
        "-b",
        addr.as_str(),
        "--report-interval-secs",
        "60",
        // Most flows here were written for the batch model (many records per task in flight);
        // the record-model tests pass `--producer-model record`, which overrides this.
        "--producer-model",
        "batch",
    ];
    v.extend_from_slice(extra);
    let a = Args::try_parse_from(v).expect("arguments parse");
    a.check().expect("arguments are consistent");
    a
}
