//! Helpers for controller cluster tests: loopback ports, temp dirs, waiting without timing asserts.
#![allow(dead_code)]

use chronik_raft::{
    start_with, BrokerRegistration, Command, Controller, ControllerConfig, NewTopic, Submitted,
    Tuning,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    // Deliberately not tokio: the handle must work from a runtime without a tokio reactor.
    futures_lite::future::block_on(f)
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Cluster {
    pub quorum: Vec<(i32, String)>,
    pub dirs: Vec<tempfile::TempDir>,
    pub nodes: Vec<Option<Controller>>,
    pub tuning: Tuning,
    /// Shared by every node (each node's own config may override it).
    pub secret: chronik_raft::secret::ClusterSecret,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Self::start_tuned(n, Tuning::default())
    }

    pub fn start_tuned(n: usize, tuning: Tuning) -> Cluster {
        let quorum: Vec<(i32, String)> = (1..=n as i32)
            .map(|i| (i, format!("127.0.0.1:{}", free_port())))
            .collect();
        let dirs: Vec<tempfile::TempDir> = (0..n)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let mut c = Cluster {
            quorum,
            dirs,
            nodes: Vec::new(),
            tuning,
            secret: chronik_raft::secret::ClusterSecret::generate(),
        };
        for i in 0..n {
            let node = c.boot(i);
            c.nodes.push(Some(node));
        }
        c
    }

    pub fn config(&self, i: usize) -> ControllerConfig {
        let (id, addr) = self.quorum[i].clone();
        ControllerConfig {
            node_id: id,
            raft_listen: addr.parse().expect("socket addr"),
            quorum: self.quorum.clone(),
            data_dir: PathBuf::from(self.dirs[i].path()).join("__raft"),
            broker: BrokerRegistration {
                id,
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
                rack: None,
                listeners: Vec::new(),
            },
            session_timeout_ms: 1000,
            heartbeat_interval_ms: 100,
            default_num_partitions: 1,
            default_replication_factor: 1,
            cluster_id: String::new(),
            cluster_secret: self.secret.clone(),
            tls: None,
            pin_core: None,
        }
    }

    fn boot(&self, i: usize) -> Controller {
        boot(self.config(i), &self.tuning)
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        self.nodes[i] = Some(self.boot(i));
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown();
        }
    }

    pub fn node(&self, i: usize) -> &Controller {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &Controller)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Index (into `nodes`) of the Raft leader, once all running nodes agree on one.
    pub fn leader(&self) -> usize {
        let mut found = None;
        wait_until("an agreed Raft leader", || {
            let leaders: Vec<Option<i32>> = self.running().map(|(_, n)| n.raft_leader()).collect();
            match leaders.first() {
                Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) => {
                    found = self.quorum.iter().position(|(id, _)| id == l);
                    found.map(|i| self.nodes[i].is_some()).unwrap_or(false)
                }
                _ => false,
            }
        });
        found.expect("leader index")
    }

    /// Wait until every running node's image lists `n` live brokers.
    pub fn wait_brokers_live(&self, n: usize) {
        wait_until("brokers registered", || {
            self.running()
                .all(|(_, c)| c.current_image().live_brokers().count() == n)
        });
    }

    pub fn wait_applied_everywhere(&self, index: u64) {
        for (_, n) in self.running() {
            block_on(n.wait_applied(index)).expect("wait_applied");
        }
    }

    pub fn shutdown_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown_all();
    }
}

/// Starts a controller, retrying the bind: a just-freed port can linger briefly.
pub fn boot(cfg: ControllerConfig, tuning: &Tuning) -> Controller {
    let start = Instant::now();
    loop {
        match start_with(cfg.clone(), tuning.clone()) {
            Ok(c) => return c,
            Err(e) if start.elapsed() < WAIT => {
                eprintln!("start node {}: {e}; retrying", cfg.node_id);
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("start node {}: {e}", cfg.node_id),
        }
    }
}

pub fn new_topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: rf,
        assignments: None,
        configs: BTreeMap::new(),
    }
}

pub fn create(c: &Controller, name: &str, partitions: i32, rf: i16) -> Submitted {
    block_on(c.submit(Command::CreateTopics {
        topics: vec![new_topic(name, partitions, rf)],
        validate_only: false,
    }))
    .expect("submit CreateTopics")
}

pub fn assert_created(s: &Submitted, name: &str) {
    match &s.outcome {
        chronik_raft::CommandOutcome::Topics(r) => {
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].0, name);
            assert!(r[0].1.is_ok(), "create {name}: {:?}", r[0].1);
        }
        other => panic!("unexpected outcome {other:?}"),
    }
}
