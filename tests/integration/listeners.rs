//! Named listeners in a cluster: replica fetchers use the inter-broker listener, and each
//! listener's clients are told that listener's addresses.

use crate::common::cluster_util::{replicate_five_records, start_two_nodes_with_two_listeners};

/// Two nodes, each with `INTERNAL://127.0.0.1:port` (inter-broker, what the harness talks to)
/// and `EXTERNAL://127.0.0.1:external` advertised as `external-N.invalid`, a name that does not
/// resolve: a broker that followed it could not replicate.
#[test]
fn replicas_fetch_over_the_inter_broker_listener_and_clients_get_their_listeners_addresses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nodes, external_ports) =
        start_two_nodes_with_two_listeners(tmp.path(), |id, port, external| {
            vec![
                "--listeners".into(),
                format!("INTERNAL://127.0.0.1:{port},EXTERNAL://127.0.0.1:{external}"),
                "--advertised-listeners".into(),
                format!("INTERNAL://127.0.0.1:{port},EXTERNAL://external-{id}.invalid:{external}"),
                "--listener-security-protocol-map".into(),
                "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT".into(),
                "--inter-broker-listener-name".into(),
                "INTERNAL".into(),
            ]
        });
    replicate_five_records(&nodes, "replicated");
    let bootstrap = nodes[0].bootstrap();

    // Each listener advertises its own addresses, for every broker.
    let internal = crate::common::raw::metadata(&bootstrap, None).expect("metadata on INTERNAL");
    let mut got: Vec<(i32, String, i32)> = internal
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    got.sort();
    let want: Vec<(i32, String, i32)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i32 + 1, "127.0.0.1".to_string(), n.port as i32))
        .collect();
    assert_eq!(got, want);
    let external = crate::common::raw::metadata(&format!("127.0.0.1:{}", external_ports[1]), None)
        .expect("metadata on EXTERNAL");
    let mut got: Vec<(i32, String, i32)> = external
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    got.sort();
    let want: Vec<(i32, String, i32)> = external_ports
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let id = i as i32 + 1;
            (id, format!("external-{id}.invalid"), *e as i32)
        })
        .collect();
    assert_eq!(got, want);
}
