//! chronik-bench against a real chronik-server: start the broker on a free loopback port with a
//! temporary data dir, produce with --validate, consume it all back, and check the counts.
//!
//! The server binary is looked up in the usual target dirs (CHRONIK_SERVER_BIN overrides); if it
//! is not there, the test builds it with `cargo build -p chronik --bin chronik-server`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use chronik_bench::cli::Args;
use chronik_bench::modes;

struct Server {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

fn start_server() -> Server {
    let bin = server_binary();
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let controller = free_port();
    let child = Command::new(&bin)
        .args([
            "--no-pin",
            "--node-id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data.path().display().to_string(),
            "--controller-listen",
            &format!("127.0.0.1:{controller}"),
            "--controller-quorum",
            &format!("1@127.0.0.1:{controller}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = Server {
        child,
        port,
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

fn args(port: u16, extra: &[&str]) -> Args {
    let addr = format!("127.0.0.1:{port}");
    let mut v = vec![
        "chronik-bench",
        "-b",
        addr.as_str(),
        "--report-interval-secs",
        "60",
    ];
    v.extend_from_slice(extra);
    let a = Args::try_parse_from(v).expect("arguments parse");
    a.check().expect("arguments are consistent");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_validate_against_chronik_server() {
    let server = start_server();
    let produce = args(
        server.port,
        &[
            "-t",
            "it",
            "-p",
            "3",
            "--create-topic",
            "-n",
            "20000",
            "-c",
            "8",
            "-s",
            "512",
            "--acks",
            "all",
            "--validate",
        ],
    );
    let r = modes::run(&produce).await.expect("produce runs");
    println!("{}", r.text_summary());
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.messages, 20000);
    assert_eq!(r.acknowledged, Some(20000));
    assert_eq!(r.stored, Some(20000));
    assert_eq!(r.validation_passed, Some(true));

    let consume = args(
        server.port,
        &[
            "-t",
            "it",
            "-m",
            "consume",
            "--stop-at-end",
            "-d",
            "60s",
            "-c",
            "3",
            "--validate",
        ],
    );
    let c = modes::run(&consume).await.expect("consume runs");
    println!("{}", c.text_summary());
    assert!(c.passed, "{}", c.text_summary());
    assert_eq!(c.messages, 20000);
    assert_eq!(c.bytes, 20000 * 512);

    let rt = args(
        server.port,
        &[
            "-t",
            "it",
            "-m",
            "round-trip",
            "-n",
            "5000",
            "-c",
            "4",
            "--validate",
        ],
    );
    let t = modes::run(&rt).await.expect("round-trip runs");
    println!("{}", t.text_summary());
    assert!(t.passed, "{}", t.text_summary());
    assert_eq!(t.messages, 5000);
}
