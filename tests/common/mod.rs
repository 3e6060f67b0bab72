//! Test harness: real `chronik-server` processes on random loopback ports with temp data dirs.
#![allow(dead_code)]

pub mod cluster_util;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port below the kernel's ephemeral range (32768+ by default), so a client
/// reconnecting to a killed server's port cannot end up connected to itself on it (a TCP
/// self-connect, which would also keep the restarted server from binding the port).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread concurrent test binaries over the range by process id.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (p - 20_000) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub controller_port: u16,
    pub node_id: i32,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    pub quorum: Option<String>,
    /// Started with only `--config FILE` (every setting in the TOML file).
    pub config_file: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s = Server {
            child: None,
            port: free_port(),
            controller_port: free_port(),
            node_id: 1,
            data_dir: dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            quorum: None,
            config_file: None,
            _tmp: Some(tmp),
        };
        s.spawn();
        s.wait_ready(1);
        s
    }

    /// A node of a cluster, not started yet.
    pub fn node(
        node_id: i32,
        port: u16,
        controller_port: u16,
        quorum: &str,
        data_dir: PathBuf,
        extra: &[&str],
    ) -> Server {
        Server {
            child: None,
            port,
            controller_port,
            node_id,
            data_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            quorum: Some(quorum.to_string()),
            config_file: None,
            _tmp: None,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        let mut p = self.data_dir.clone().into_os_string();
        p.push(".log");
        PathBuf::from(p)
    }

    /// Prints the last `n` lines of this server's log (to the test's captured output).
    pub fn print_log_tail(&self, n: usize) {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        // A panic (in a shard or in the Raft core) is usually far above the tail.
        let panics = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("panicked at"));
        for (i, _) in panics.take(3) {
            eprintln!(
                "---- node {} panic at log line {} ----",
                self.node_id,
                i + 1
            );
            for m in lines.iter().skip(i).take(6) {
                eprintln!("{m}");
            }
        }
        eprintln!(
            "---- node {} log (last {} lines) ----",
            self.node_id,
            lines.len() - from
        );
        for l in &lines[from..] {
            eprintln!("{l}");
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Freezes (SIGSTOP) or resumes (SIGCONT) the process.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chronik-server"));
        if let Some(f) = &self.config_file {
            cmd.arg("--config").arg(f);
        } else {
            self.add_flags(&mut cmd);
        }
        cmd.args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("CHRONIK_TEST_LOG").unwrap_or("info,openraft=warn".into()),
            )
            .stdout(Stdio::null());
        // The server's log goes to a file beside its data dir (inside the test's temp dir, kept
        // across restarts); a failing test prints its tail, so CI failures can be diagnosed.
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            Ok(f) => cmd.stderr(f),
            Err(_) => cmd.stderr(Stdio::null()),
        };
        self.child = Some(cmd.spawn().expect("spawn chronik-server"));
    }

    fn add_flags(&self, cmd: &mut Command) {
        cmd.arg("--node-id")
            .arg(self.node_id.to_string())
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--controller-listen")
            .arg(format!("127.0.0.1:{}", self.controller_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--no-pin");
        if let Some(q) = &self.quorum {
            cmd.arg("--controller-quorum").arg(q);
        }
    }

    /// Waits until the broker answers Metadata listing `brokers` brokers.
    pub fn wait_ready(&mut self, brokers: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("chronik-server exited during start-up: {status}");
                }
            }
            if let Ok(n) = raw::metadata_broker_count(&self.bootstrap()) {
                if n >= brokers {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `secs` for the process to exit by itself (killing it after that); returns
    /// its exit code (None: killed, or it never ran).
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let c = self.child.as_ref()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        self.wait_exit(20)
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(1);
    }
}

/// N real nodes on loopback forming one cluster (same --controller-quorum on each).
pub struct Cluster {
    pub nodes: Vec<Server>,
    /// The --controller-quorum every node was started with.
    pub quorum: String,
    extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::launch(n, extra, None)
    }

    /// Like `start`, but each node gets only `--config node-N.toml`: a file holding its id,
    /// listeners, data dir and the shared quorum, then `settings` (more TOML lines).
    pub fn start_from_toml(n: usize, settings: &str) -> Cluster {
        Cluster::launch(n, &[], Some(settings))
    }

    fn launch(n: usize, extra: &[&str], toml: Option<&str>) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let quorum = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, (p, c)) in ports.iter().enumerate() {
            let id = i as i32 + 1;
            let dir = tmp.path().join(format!("node-{id}"));
            let mut s = Server::node(id, *p, *c, &quorum, dir.clone(), extra);
            if let Some(settings) = toml {
                let file = tmp.path().join(format!("node-{id}.toml"));
                let text = format!(
                    "node-id = {id}\nlisten = \"127.0.0.1:{p}\"\ncontroller-listen = \"127.0.0.1:{c}\"\n\
                     controller-quorum = \"{quorum}\"\ndata-dir = {dir:?}\npin = false\n{settings}"
                );
                std::fs::write(&file, text).expect("write node config");
                s.config_file = Some(file);
            }
            s.spawn();
            nodes.push(s);
        }
        for s in nodes.iter_mut() {
            s.wait_ready(n);
        }
        Cluster {
            nodes,
            quorum,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _tmp: tmp,
        }
    }

    /// Starts one more node with the next id and the same quorum (which does not list it): it
    /// waits until `cluster add-node` lets it in. Returns its id.
    pub fn spawn_new_node(&mut self) -> i32 {
        let quorum = self.quorum.clone();
        self.spawn_new_node_with(&quorum, &[])
    }

    /// `spawn_new_node` with another `--controller-quorum` and more flags.
    pub fn spawn_new_node_with(&mut self, quorum: &str, more: &[&str]) -> i32 {
        let id = self.nodes.len() as i32 + 1;
        let extra: Vec<&str> = self
            .extra
            .iter()
            .map(String::as_str)
            .chain(more.iter().copied())
            .collect();
        let mut s = Server::node(
            id,
            free_port(),
            free_port(),
            quorum,
            self._tmp.path().join(format!("node-{id}")),
            &extra,
        );
        s.spawn();
        self.nodes.push(s);
        id
    }

    /// `chronik-server cluster <args>` against node 1's controller; returns (exit code, stdout).
    pub fn admin_cli(&self, args: &[&str]) -> (i32, String) {
        let n = &self.nodes[0];
        let out = Command::new(env!("CARGO_BIN_EXE_chronik-server"))
            .arg("cluster")
            .args(args)
            .arg("--bootstrap")
            .arg(n.bootstrap())
            .arg("--controller")
            .arg(format!("127.0.0.1:{}", n.controller_port))
            .arg("--wait-secs")
            .arg("120")
            .output()
            .expect("run chronik-server cluster");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("cluster {args:?}:\n{text}");
        (out.status.code().unwrap_or(-1), text)
    }

    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// 1-based node id → server.
    pub fn node(&mut self, id: i32) -> &mut Server {
        &mut self.nodes[(id - 1) as usize]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.print_log_tail(60);
        }
    }
}

/// A minimal blocking Kafka client for raw protocol tests.
pub mod raw {
    use bytes::{Buf, BufMut, BytesMut};
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, RequestHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn connect(addr: &str) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(s)
    }

    pub fn frame<Req: Encodable + HeaderVersion>(
        key: ApiKey,
        version: i16,
        corr: i32,
        req: &Req,
    ) -> Vec<u8> {
        let mut hdr = RequestHeader::default();
        hdr.request_api_key = key as i16;
        hdr.request_api_version = version;
        hdr.correlation_id = corr;
        hdr.client_id = Some(StrBytes::from_static_str("test"));
        let mut body = BytesMut::new();
        hdr.encode(&mut body, Req::header_version(version)).unwrap();
        req.encode(&mut body, version).unwrap();
        let mut f = BytesMut::new();
        f.put_i32(body.len() as i32);
        f.extend_from_slice(&body);
        f.to_vec()
    }

    pub fn read_response(s: &mut TcpStream) -> std::io::Result<bytes::Bytes> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let n = i32::from_be_bytes(len) as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf)?;
        Ok(bytes::Bytes::from(buf))
    }

    pub fn call<Req: Encodable + HeaderVersion, Resp: Decodable>(
        s: &mut TcpStream,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        s.write_all(&frame(key, version, 7, req))?;
        let mut b = read_response(s)?;
        assert_eq!(b.get_i32(), 7, "correlation id");
        if key.response_header_version(version) >= 1 {
            let _ = b.get_u8();
        }
        Resp::decode(&mut b, version)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }

    pub fn metadata(addr: &str, topics: Option<Vec<&str>>) -> std::io::Result<MetadataResponse> {
        let mut s = connect(addr)?;
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|t| {
            t.into_iter()
                .map(|n| {
                    let mut x =
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
                    x.name = Some(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        n.to_string(),
                    )));
                    x
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        call(&mut s, ApiKey::Metadata, 9, &req)
    }

    pub fn metadata_broker_count(addr: &str) -> std::io::Result<usize> {
        Ok(metadata(addr, None)?.brokers.len())
    }
}
