//! The controller RPC port serves only members of the cluster: every connection proves
//! knowledge of the cluster secret (HMAC challenge–response, raft/src/network.rs) before any
//! request is served, operator commands need the secret too, and a secret rotates while the
//! cluster runs. The hostile clients here write the wire format by hand:
//! `len u32 LE | id u64 LE | bincode(body)`.

use crate::common::cluster_util::*;
use crate::common::{new_secret_file, raw, Cluster, Server};
use chronik_raft::network::{blocking_call, RpcRequest, RpcResponse};
use chronik_raft::secret::{ClusterSecret, SECRET_FILE};
use chronik_raft::Command;
use kafka_protocol::messages::{ApiKey, DescribeClusterRequest, DescribeClusterResponse};
use rdkafka::admin::{NewTopic, TopicReplication};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The handshake messages as network.rs encodes them (bincode of these shapes).
#[derive(Serialize)]
enum Role {
    Peer { cluster_id: String },
    Operator,
}

#[derive(Serialize)]
struct Hello {
    magic: [u8; 8],
    role: Role,
    nonce: [u8; 32],
}

#[derive(Deserialize)]
struct Challenge {
    cluster_id: String,
    nonce: [u8; 32],
}

#[derive(Serialize)]
struct Proof {
    mac: [u8; 32],
}

fn frame(id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 8) as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&id.to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("encode")
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    assert!((8..=1 << 20).contains(&len), "frame length {len}");
    let mut body = vec![0u8; len - 8];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the controller port");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s
}

/// Reads until the server closes the connection; fails if it answers a request or keeps the
/// connection open past the read timeout.
fn assert_closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    let mut got = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                // A challenge is ~50 bytes; an answer to Submit would come after it.
                assert!(got < 256, "{what}: the server sent {got} bytes");
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{what}: the connection stayed open ({e})"),
        }
    }
}

fn delete_topic(topic: &str) -> Vec<u8> {
    enc(&RpcRequest::Submit(Command::DeleteTopics {
        names: vec![topic.to_string()],
    }))
}

/// The client proof of network.rs's transcript, under `secret`.
fn client_proof(secret: &ClusterSecret, role: u8, ch: &Challenge, nonce: &[u8; 32]) -> Proof {
    let len = (ch.cluster_id.len() as u32).to_le_bytes();
    Proof {
        mac: secret.mac(&[
            b"chronik-rpc client proof",
            &[role],
            &len,
            ch.cluster_id.as_bytes(),
            nonce,
            &ch.nonce,
        ]),
    }
}

/// Our hand-written handshake as an operator with `secret`; on success, sends `req` and
/// returns the answer's bytes.
fn handshake_and_call(addr: &str, secret: &ClusterSecret, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = connect(addr);
    let nonce = [7u8; 32];
    let hello = Hello {
        magic: *b"chronik1",
        role: Role::Operator,
        nonce,
    };
    s.write_all(&frame(0, &enc(&hello)))?;
    let ch: Challenge = bincode::deserialize(&read_frame(&mut s)?).expect("a challenge");
    s.write_all(&frame(0, &enc(&client_proof(secret, 2, &ch, &nonce))))?;
    let _server_proof = read_frame(&mut s)?;
    s.write_all(&frame(1, req))?;
    read_frame(&mut s)
}

fn cluster_id(bootstrap: &str) -> String {
    let mut s = raw::connect(bootstrap).expect("connect");
    let r: DescribeClusterResponse = raw::call(
        &mut s,
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default(),
    )
    .expect("DescribeCluster");
    r.cluster_id.to_string()
}

fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    raw::metadata(bootstrap, Some(vec![topic]))
        .map(|m| m.topics.first().is_some_and(|t| t.error_code == 0))
        .unwrap_or(false)
}

#[test]
fn a_client_without_the_secret_cannot_delete_a_topic_through_the_controller_port() {
    let c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("keep", 1, TopicReplication::Fixed(3)));
    // Any Kafka client can read the cluster id; it must not be enough.
    let id = cluster_id(&b1);
    assert!(!id.is_empty());
    for n in &c.nodes {
        let ctl = n.controller();
        // The old "operator" hello (no cluster id) and a Submit right behind it.
        let mut s = connect(&ctl);
        let legacy_hello = enc(&Option::<String>::None);
        let mut bytes = frame(0, &legacy_hello);
        bytes.extend(frame(1, &delete_topic("keep")));
        s.write_all(&bytes).expect("write");
        assert_closed(&mut s, "legacy operator hello");

        // A peer hello naming the right cluster id, then the Submit instead of a proof.
        let mut s = connect(&ctl);
        let hello = Hello {
            magic: *b"chronik1",
            role: Role::Peer {
                cluster_id: id.clone(),
            },
            nonce: [1u8; 32],
        };
        let mut bytes = frame(0, &enc(&hello));
        bytes.extend(frame(1, &delete_topic("keep")));
        s.write_all(&bytes).expect("write");
        assert_closed(&mut s, "peer hello without a proof");

        // The whole exchange, done right, under a wrong secret.
        let wrong = ClusterSecret::generate();
        let r = handshake_and_call(&ctl, &wrong, &delete_topic("keep"));
        assert!(r.is_err(), "a wrong secret was answered");

        // A length prefix of 100 MB before authenticating, and a silent connection.
        let mut s = connect(&ctl);
        let mut huge = 100_000_000u32.to_le_bytes().to_vec();
        huge.extend(0u64.to_le_bytes());
        s.write_all(&huge).expect("write");
        assert_closed(&mut s, "a 100 MB hello");
        let mut s = connect(&ctl);
        assert_closed(&mut s, "a silent connection");
    }
    // Every node still has the topic, and still serves the cluster.
    for n in &c.nodes {
        assert!(topic_exists(&n.bootstrap(), "keep"), "node {}", n.node_id);
    }
    create(&b1, NewTopic::new("after", 1, TopicReplication::Fixed(3)));
    for n in &c.nodes {
        let b = n.bootstrap();
        wait_until("the new topic everywhere", 30, || topic_exists(&b, "after"));
    }

    // The same hand-written client with the cluster's secret is served: the refusals above
    // were for the secret, not for the wire format.
    let secret = ClusterSecret::read_file(&c.secret_file).expect("secret");
    let answer = handshake_and_call(&c.nodes[1].controller(), &secret, &delete_topic("keep"))
        .expect("served with the secret");
    match bincode::deserialize::<RpcResponse>(&answer) {
        Ok(RpcResponse::Submit(Ok(_))) => {}
        _ => panic!("unexpected answer to an authenticated Submit"),
    }
    wait_until("the topic deleted by the operator", 30, || {
        !topic_exists(&b1, "keep")
    });
}

#[test]
fn operator_commands_work_with_the_cluster_secret_and_are_refused_without_it() {
    let c = Cluster::start(3, FAST);
    create(
        &c.nodes[0].bootstrap(),
        NewTopic::new("ops", 3, TopicReplication::Fixed(1)),
    );
    let (code, out) = c.admin_cli_with_secret(&["rebalance"], None);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--cluster-secret-file"), "{out}");

    let wrong = c.path("wrong.secret");
    new_secret_file(&wrong);
    let (code, out) = c.admin_cli_with_secret(&["rebalance"], Some(&wrong));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("authentication"), "{out}");

    // A library call without the secret gets nothing either.
    let ctl = c.nodes[0].controller();
    let err = blocking_call(
        &ctl,
        &ClusterSecret::generate(),
        None,
        &RpcRequest::Summary,
        Duration::from_secs(10),
    );
    assert!(err.is_err());

    let (code, out) = c.admin_cli(&["rebalance"]);
    assert_eq!(code, 0, "{out}");
    let secret = ClusterSecret::read_file(&c.secret_file).expect("secret");
    match blocking_call(
        &ctl,
        &secret,
        None,
        &RpcRequest::Summary,
        Duration::from_secs(10),
    ) {
        Ok(RpcResponse::Summary(s)) => assert_eq!(s.brokers.len(), 3),
        Ok(_) => panic!("unexpected answer"),
        Err(e) => panic!("refused with the secret: {e}"),
    }
    // `cluster status` reads only what Kafka clients may (DescribeCluster, Metadata): no secret.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronik-server"))
        .args(["cluster", "status", "--bootstrap", &c.nodes[0].bootstrap()])
        .output()
        .expect("cluster status");
    assert!(out.status.success());
}

#[test]
fn a_node_with_another_secret_or_none_cannot_join() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    let quorum = c.quorum.clone();

    // Without a secret, a node that is not alone in its quorum refuses to start.
    let none = c.spawn_new_node_with_secret(&quorum, &[], None);
    let code = c.node(none).wait_exit(30);
    assert_ne!(code, Some(0));
    let log = std::fs::read_to_string(c.node(none).log_path()).unwrap_or_default();
    assert!(log.contains("--cluster-secret-file"), "{log}");

    // With another cluster's secret it starts, but the cluster will not talk to it.
    let wrong = c.path("other.secret");
    new_secret_file(&wrong);
    let id = c.spawn_new_node_with_secret(&quorum, &[], Some(wrong));
    let ctl = c.node(id).controller();
    let (code, out) = c.admin_cli(&[
        "add-node",
        "--node-id",
        &id.to_string(),
        "--node-controller",
        &ctl,
        "--wait-secs",
        "15",
    ]);
    assert_ne!(code, 0, "{out}");
    let ids: Vec<i32> = raw::metadata(&b1, None)
        .expect("metadata")
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .collect();
    assert!(!ids.contains(&id), "{ids:?}");
    assert!(c.node(id).is_running(), "the node kept running");
    let log = std::fs::read_to_string(c.node(id).log_path()).unwrap_or_default();
    assert!(
        log.contains("does not know the cluster secret"),
        "the new node refuses the leader's connections: {log}"
    );
}

#[test]
fn a_single_node_makes_its_own_secret_and_operator_commands_find_it_in_the_data_dir() {
    let mut s = Server::start(&["--cores", "2"]);
    let file = s.data_dir.join(SECRET_FILE);
    let secret = ClusterSecret::read_file(&file).expect("the node wrote its secret");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    s.restart();
    assert_eq!(ClusterSecret::read_file(&file).expect("kept"), secret);

    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_chronik-server"))
            .args(["cluster", "rebalance", "--controller", &s.controller()])
            .args(args)
            .args(["--wait-secs", "30"])
            .output()
            .expect("run cluster rebalance")
    };
    let dir = s.data_dir.to_string_lossy().to_string();
    let out = cli(&["--data-dir", &dir]);
    assert!(out.status.success(), "{out:?}");
    let file_s = file.to_string_lossy().to_string();
    let out = cli(&["--cluster-secret-file", &file_s]);
    assert!(out.status.success(), "{out:?}");
}

/// The documented rotation, A to B: every node accepts both (files "A, B"), then proves with B
/// (files "B, A"), then accepts only B. Each phase meets the previous one (a rolling restart),
/// and the cluster keeps working throughout.
#[test]
fn a_cluster_secret_rotates_while_the_cluster_runs() {
    let a = ClusterSecret::generate();
    let b = ClusterSecret::generate();
    let ab = a.clone().with_next(&b).to_text();
    let ba = b.clone().with_next(&a).to_text();
    // Phase 1 (all accept B) meets phase 2 (node 3 already proves with B).
    let mut c = Cluster::start_with_secrets(3, FAST, &[ab.clone(), ab, ba.clone()]);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("rot", 1, TopicReplication::Fixed(3)));
    wait_until("every replica in sync", 60, || {
        isr_of(&b1, "rot", 0).len() == 3
    });
    let write = |c: &Cluster, name: &str, s: &ClusterSecret| {
        let f = c.path(name);
        s.write_file(&f).expect("write");
        f
    };
    let only_a = write(&c, "a.secret", &a);
    let only_b = write(&c, "b.secret", &b);
    let (code, out) = c.admin_cli_with_secret(&["rebalance"], Some(&only_a));
    assert_eq!(code, 0, "{out}");
    let (code, out) = c.admin_cli_with_secret(&["rebalance"], Some(&only_b));
    assert_eq!(code, 0, "{out}");

    // Phase 2 everywhere, then phase 3 (B only) node by node. A restarted node registers its
    // broker through the controller leader and learns the commit back (both directions
    // authenticated) before it serves; otherwise it logs that it is not registered.
    let restart = |c: &mut Cluster, i: usize, file: std::path::PathBuf| {
        c.nodes[i].secret_file = Some(file);
        c.nodes[i].kill();
        c.nodes[i].spawn();
        c.nodes[i].wait_ready(3);
        let log = std::fs::read_to_string(c.nodes[i].log_path()).unwrap_or_default();
        assert!(
            !log.contains("not registered with the controller"),
            "node {} was shut out after the restart: {log}",
            i + 1
        );
    };
    for i in 0..2 {
        let f = c.path(&format!("node-{}.secret", i + 1));
        std::fs::write(&f, &ba).expect("write");
        restart(&mut c, i, f);
    }
    for i in 0..3 {
        restart(&mut c, i, only_b.clone());
    }
    create(&b1, NewTopic::new("rot2", 1, TopicReplication::Fixed(3)));
    for n in &c.nodes {
        let b = n.bootstrap();
        wait_until("the new topic everywhere, in sync", 60, || {
            topic_exists(&b, "rot2") && isr_of(&b, "rot2", 0).len() == 3
        });
    }
    let (code, out) = c.admin_cli_with_secret(&["rebalance"], Some(&only_a));
    assert_ne!(code, 0, "the retired secret still works: {out}");
    let (code, out) = c.admin_cli_with_secret(&["rebalance"], Some(&only_b));
    assert_eq!(code, 0, "{out}");
}
