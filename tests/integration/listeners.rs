//! Named listeners in a cluster: replica fetchers use the inter-broker listener, and each
//! listener's clients are told that listener's addresses.

use crate::common::cluster_util::{create, leader_of, local_leo, produce_once, wait_until, FAST};
use crate::common::{free_port, new_secret_file, Server};
use rdkafka::admin::{NewTopic, TopicReplication};

/// Two nodes, each with `INTERNAL://127.0.0.1:port` (inter-broker, what the harness talks to)
/// and `EXTERNAL://127.0.0.1:external` advertised as `external-N.invalid`, a name that does not
/// resolve: a broker that followed it could not replicate.
#[test]
fn replicas_fetch_over_the_inter_broker_listener_and_clients_get_their_listeners_addresses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let secret = tmp.path().join("cluster.secret");
    new_secret_file(&secret);
    let ports: Vec<(u16, u16, u16)> = (0..2)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let quorum = ports
        .iter()
        .enumerate()
        .map(|(i, (_, _, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Server> = Vec::new();
    for (i, (port, external, controller)) in ports.iter().enumerate() {
        let id = i as i32 + 1;
        let listeners = format!("INTERNAL://127.0.0.1:{port},EXTERNAL://127.0.0.1:{external}");
        let advertised =
            format!("INTERNAL://127.0.0.1:{port},EXTERNAL://external-{id}.invalid:{external}");
        let mut args = vec![
            "--listeners",
            &listeners,
            "--advertised-listeners",
            &advertised,
            "--listener-security-protocol-map",
            "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
            "--inter-broker-listener-name",
            "INTERNAL",
        ];
        args.extend_from_slice(FAST);
        let dir = tmp.path().join(format!("node-{id}"));
        let mut s = Server::node(id, *port, *controller, &quorum, dir, &args);
        s.secret_file = Some(secret.clone());
        s.spawn();
        nodes.push(s);
    }
    for s in nodes.iter_mut() {
        s.wait_ready(2);
    }
    let bootstrap = nodes[0].bootstrap();
    create(
        &bootstrap,
        NewTopic::new("replicated", 1, TopicReplication::Fixed(2)),
    );
    wait_until("a leader", 20, || {
        leader_of(&bootstrap, "replicated", 0) > 0
    });
    let leader = leader_of(&bootstrap, "replicated", 0);
    let leader_addr = nodes[(leader - 1) as usize].bootstrap();
    let (err, _) = produce_once(&leader_addr, "replicated", 0, -1, 10_000, 5);
    assert_eq!(err, 0, "acks=all produce");
    let follower = nodes[(2 - leader) as usize].bootstrap();
    wait_until("the follower caught up", 20, || {
        local_leo(&follower, "replicated", 0) == 5
    });

    // Each listener advertises its own addresses, for every broker.
    let internal = crate::common::raw::metadata(&bootstrap, None).expect("metadata on INTERNAL");
    let mut got: Vec<(i32, String, i32)> = internal
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    got.sort();
    let want: Vec<(i32, String, i32)> = ports
        .iter()
        .enumerate()
        .map(|(i, (p, _, _))| (i as i32 + 1, "127.0.0.1".to_string(), *p as i32))
        .collect();
    assert_eq!(got, want);
    let external = crate::common::raw::metadata(&format!("127.0.0.1:{}", ports[1].1), None)
        .expect("metadata on EXTERNAL");
    let mut got: Vec<(i32, String, i32)> = external
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    got.sort();
    let want: Vec<(i32, String, i32)> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, e, _))| {
            let id = i as i32 + 1;
            (id, format!("external-{id}.invalid"), *e as i32)
        })
        .collect();
    assert_eq!(got, want);
}
