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
    for d in &dirs {
        for profile in ["release", "debug"] {
            let p = d.join(profile).join("chronik-server");
            if p.exists() {
                return p;
            }
        }
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts chronik-server with `extra` flags and waits until it listens.
pub fn start_server(extra: &[&str]) -> Server {
    let bin = server_binary();
    let data = tempfile::tempdir().expect("temp dir");
    let log = data.path().join("server.log");
    let port = free_port();
    let controller = free_port();
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(&bin)
        .args([
            "--no-pin",
            "--node-id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data.path().join("data").display().to_string(),
            "--controller-listen",
            &format!("127.0.0.1:{controller}"),
            "--controller-quorum",
            &format!("1@127.0.0.1:{controller}"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = Server {
        child,
        port,
        log,
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chronik-server did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// chronik-bench arguments against the server on `port`.
pub fn args(port: u16, extra: &[&str]) -> Args {
    let addr = format!("127.0.0.1:{port}");
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
