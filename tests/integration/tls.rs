//! Listeners and TLS: a node with a PLAINTEXT and an SSL listener, certificates made here with
//! rcgen. librdkafka (OpenSSL) produces and consumes over SSL; a rustls client checks what each
//! listener advertises and how client certificates are checked.

use crate::common::{free_port, Server};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate
/// (CN=test-client), as PEM files and as DER for the rustls client. Also the SASL_SSL tests'.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    client_der: CertificateDer<'static>,
    client_key: Vec<u8>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "chronik test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");

        let server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        let server_key = KeyPair::generate().expect("server key");
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server cert");

        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "test-client");
        let client_key = KeyPair::generate().expect("client key");
        let client = client_params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");

        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write pem");
        };
        write("ca.pem", ca.pem());
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());
        write("client.pem", client.pem());
        write("client.key", client_key.serialize_pem());
        Pki {
            ca_der: ca.der().clone(),
            client_der: client.der().clone(),
            client_key: client_key.serialize_der(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A running node with `PLAINTEXT://127.0.0.1:port` and `SSL://127.0.0.1:ssl_port`.
struct Node {
    server: Server,
    ssl_port: u16,
    _tmp: tempfile::TempDir,
}

/// A node with `PLAINTEXT://127.0.0.1:port` and `SSL://127.0.0.1:ssl_port`.
fn start(pki: &Pki, extra: &[&str]) -> Node {
    let port = free_port();
    let ssl_port = free_port();
    let controller_port = free_port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let listeners = format!("PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}");
    let (cert, key, ca) = (
        pki.path_str("server.pem"),
        pki.path_str("server.key"),
        pki.path_str("ca.pem"),
    );
    let mut args = vec![
        "--listeners",
        &listeners,
        "--ssl-cert-file",
        &cert,
        "--ssl-key-file",
        &key,
        "--ssl-ca-file",
        &ca,
    ];
    args.extend_from_slice(extra);
    let quorum = format!("1@127.0.0.1:{controller_port}");
    let mut server = Server::node(
        1,
        port,
        controller_port,
        &quorum,
        tmp.path().join("data"),
        &args,
    );
    server.spawn();
    server.wait_ready(1);
    Node {
        server,
        ssl_port,
        _tmp: tmp,
    }
}

fn tls_client(pki: &Pki, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).expect("ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = if with_cert {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.client_key.clone()));
        builder
            .with_client_auth_cert(vec![pki.client_der.clone()], key)
            .expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect_tls(config: Arc<rustls::ClientConfig>, port: u16) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

fn metadata_over<S: Read + Write>(s: &mut S) -> std::io::Result<MetadataResponse> {
    let req = MetadataRequest::default();
    chronik::kafka::client::call_blocking(s, ApiKey::Metadata, 9, 7, "test", 64 << 20, &req)
}

fn brokers(m: &MetadataResponse) -> Vec<(String, i32)> {
    m.brokers
        .iter()
        .map(|b| (b.host.to_string(), b.port))
        .collect()
}

fn ssl_client(pki: &Pki, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", pki.path_str("ca.pem"));
    c
}

#[test]
fn librdkafka_produces_and_consumes_over_ssl() {
    let pki = Pki::new();
    let node = start(&pki, &[]);
    let bootstrap = format!("127.0.0.1:{}", node.ssl_port);
    let producer: FutureProducer = ssl_client(&pki, &bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    // 200 records of 1 KB, then every tenth one of 300 KB: requests and responses of many
    // TLS records, larger than one socket read.
    let n = 200;
    let small = "x".repeat(1000);
    let large = "y".repeat(300_000);
    let payload = |i: usize| if i % 10 == 9 { &large } else { &small };
    for i in 0..n {
        let value = format!("{i}:{}", payload(i));
        let r = crate::common::cluster_util::block_on(producer.send(
            FutureRecord::<(), _>::to("over-tls").payload(&value),
            Duration::from_secs(20),
        ));
        if r.is_err() {
            node.server.print_log_tail(40);
        }
        r.expect("produce over SSL");
    }
    let consumer: BaseConsumer = ssl_client(&pki, &bootstrap)
        .set("group.id", "tls-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("over-tls", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v = std::str::from_utf8(m.payload().expect("payload")).expect("utf8");
            let (i, rest) = v.split_once(':').expect("i:payload");
            let i = i.parse::<usize>().expect("index");
            assert!(rest == payload(i), "record {i} differs");
            seen.push(i);
        }
    }
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
}

#[test]
fn a_plaintext_client_on_the_ssl_port_is_closed() {
    let pki = Pki::new();
    let node = start(&pki, &[]);
    let mut tcp = TcpStream::connect(("127.0.0.1", node.ssl_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let err = metadata_over(&mut tcp).expect_err("a Kafka answer on the SSL port");
    // The broker answers with a TLS alert, then closes: no Kafka frame comes back.
    assert!(
        !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    let mut rest = Vec::new();
    match tcp.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn metadata_on_each_listener_advertises_that_listeners_address() {
    let pki = Pki::new();
    let port = free_port();
    let ssl_port = free_port();
    let advertised = format!("PLAINTEXT://127.0.0.1:{port},SSL://localhost:{ssl_port}");
    let controller_port = free_port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let listeners = format!("PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}");
    let (cert, key) = (pki.path_str("server.pem"), pki.path_str("server.key"));
    let args = [
        "--listeners",
        &listeners,
        "--advertised-listeners",
        &advertised,
        "--ssl-cert-file",
        &cert,
        "--ssl-key-file",
        &key,
    ];
    let quorum = format!("1@127.0.0.1:{controller_port}");
    let mut s = Server::node(
        1,
        port,
        controller_port,
        &quorum,
        tmp.path().join("data"),
        &args,
    );
    s.spawn();
    s.wait_ready(1);

    let plain = metadata_over(&mut crate::common::raw::connect(&s.bootstrap()).expect("connect"))
        .expect("metadata on PLAINTEXT");
    assert_eq!(
        brokers(&plain),
        vec![("127.0.0.1".to_string(), port as i32)]
    );
    let mut tls = connect_tls(tls_client(&pki, false), ssl_port).expect("connect SSL");
    let secure = metadata_over(&mut tls).expect("metadata on SSL");
    assert_eq!(
        brokers(&secure),
        vec![("localhost".to_string(), ssl_port as i32)]
    );
}

#[test]
fn with_client_auth_required_a_client_needs_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let node = start(&pki, &["--ssl-client-auth", "required"]);
    let ssl_port = node.ssl_port;
    // Without a certificate the handshake fails (in TLS 1.3 the client learns it on its first
    // read): no Kafka answer.
    let refused =
        connect_tls(tls_client(&pki, false), ssl_port).and_then(|mut tls| metadata_over(&mut tls));
    assert!(refused.is_err(), "served without a client certificate");
    let mut tls = connect_tls(tls_client(&pki, true), ssl_port).expect("connect");
    let m = metadata_over(&mut tls).expect("metadata with a client certificate");
    assert_eq!(m.brokers.len(), 1);
    // librdkafka with its certificate too.
    let producer: FutureProducer = ssl_client(&pki, &format!("127.0.0.1:{ssl_port}"))
        .set("ssl.certificate.location", pki.path_str("client.pem"))
        .set("ssl.key.location", pki.path_str("client.key"))
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    crate::common::cluster_util::block_on(producer.send(
        FutureRecord::<(), _>::to("mtls").payload("hello"),
        Duration::from_secs(20),
    ))
    .expect("produce with a client certificate");
}

#[test]
fn with_client_auth_requested_a_client_without_a_certificate_is_served() {
    let pki = Pki::new();
    let node = start(&pki, &["--ssl-client-auth", "requested"]);
    for with_cert in [false, true] {
        let mut tls = connect_tls(tls_client(&pki, with_cert), node.ssl_port).expect("connect");
        metadata_over(&mut tls).expect("metadata");
    }
}

#[test]
fn a_node_with_an_ssl_listener_and_no_certificate_does_not_start() {
    let port = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronik-server"))
        .args([
            "--listeners",
            &format!(
                "PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{}",
                free_port()
            ),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ssl-cert-file"), "{err}");
    let missing = Path::new("/nonexistent/cert.pem");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronik-server"))
        .args([
            "--listeners",
            &format!(
                "PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{}",
                free_port()
            ),
            "--ssl-cert-file",
            &missing.display().to_string(),
            "--ssl-key-file",
            &missing.display().to_string(),
            "--data-dir",
            &tmp.path().display().to_string(),
            "--metrics-listen",
            "none",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ssl-cert-file /nonexistent/cert.pem"), "{err}");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let old = Pki::new();
    let node = start(&old, &[]);
    let mut before = connect_tls(tls_client(&old, false), node.ssl_port).expect("connect");
    metadata_over(&mut before).expect("served with the first certificate");
    // A certificate from another CA replaces the files, then SIGHUP.
    let new = Pki::new();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(new.path(f), old.path(f)).expect("replace");
    }
    node.server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = connect_tls(tls_client(&new, false), node.ssl_port)
            .and_then(|mut tls| metadata_over(&mut tls));
        if served.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {served:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stale = connect_tls(tls_client(&old, false), node.ssl_port)
        .and_then(|mut tls| metadata_over(&mut tls));
    assert!(
        stale.is_err(),
        "a new connection still got the old certificate"
    );
    // The connection opened before the reload keeps working.
    metadata_over(&mut before).expect("an open connection survives the reload");
    assert!(node.server.is_running());
}

#[test]
fn over_tls_a_frame_larger_than_socket_request_max_bytes_closes_the_connection() {
    let pki = Pki::new();
    let node = start(&pki, &["--socket-request-max-bytes", "100000"]);
    let mut tls = connect_tls(tls_client(&pki, false), node.ssl_port).expect("connect");
    metadata_over(&mut tls).expect("a normal request is served");
    // A length prefix past the limit: closed before anything is allocated for it.
    tls.write_all(&200_000i32.to_be_bytes()).expect("write");
    tls.flush().expect("flush");
    let mut rest = Vec::new();
    let closed = tls.read_to_end(&mut rest);
    assert!(
        matches!(&closed, Ok(0))
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "{closed:?} after {} bytes",
        rest.len()
    );
    assert!(rest.is_empty(), "answered an oversized frame");
}

#[test]
fn a_client_that_never_finishes_the_tls_handshake_is_closed_when_idle() {
    let pki = Pki::new();
    let node = start(&pki, &["--connections-max-idle-ms", "1500"]);
    let mut tcp = TcpStream::connect(("127.0.0.1", node.ssl_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let r = tcp.read(&mut buf);
    assert!(matches!(r, Ok(0)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// Two nodes whose inter-broker listener is SSL with client certificates required: followers
/// replicate only if their fetchers speak TLS and show the broker's certificate.
#[test]
fn replicas_fetch_over_an_ssl_inter_broker_listener_with_client_auth_required() {
    use crate::common::cluster_util::{replicate_five_records, start_two_nodes_with_two_listeners};
    let pki = Pki::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = (
        pki.path_str("server.pem"),
        pki.path_str("server.key"),
        pki.path_str("ca.pem"),
    );
    let (nodes, _) = start_two_nodes_with_two_listeners(tmp.path(), |_, port, ssl_port| {
        vec![
            "--listeners".into(),
            format!("PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}"),
            "--inter-broker-listener-name".into(),
            "SSL".into(),
            "--ssl-cert-file".into(),
            cert.clone(),
            "--ssl-key-file".into(),
            key.clone(),
            "--ssl-ca-file".into(),
            ca.clone(),
            "--ssl-client-auth".into(),
            "required".into(),
        ]
    });
    // Over TLS: the followers' fetchers must speak it and show the broker's certificate.
    replicate_five_records(&nodes, "over-tls-replicated");
}

/// Three nodes with TLS everywhere inside the cluster: the inter-broker listener is SSL with
/// client certificates required, and the controller port is mutual TLS (`--controller-tls`).
/// An acks=all producer keeps every acknowledged record through a SIGKILL of the partition
/// leader, and the killed node comes back and catches up over TLS.
#[test]
fn a_three_node_cluster_with_tls_between_brokers_replicates_and_fails_over() {
    use crate::common::cluster_util::*;
    use rdkafka::admin::{NewTopic, TopicReplication};
    let pki = Pki::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = (
        pki.path_str("server.pem"),
        pki.path_str("server.key"),
        pki.path_str("ca.pem"),
    );
    let (mut nodes, _) = start_nodes_with_two_listeners(3, tmp.path(), |_, port, ssl_port| {
        vec![
            "--listeners".into(),
            format!("PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}"),
            "--inter-broker-listener-name".into(),
            "SSL".into(),
            "--ssl-cert-file".into(),
            cert.clone(),
            "--ssl-key-file".into(),
            key.clone(),
            "--ssl-ca-file".into(),
            ca.clone(),
            "--ssl-client-auth".into(),
            "required".into(),
            "--controller-tls".into(),
        ]
    });
    let bootstrap = |nodes: &[crate::common::Server]| {
        nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    };
    let first = nodes[0].bootstrap();
    create(
        &first,
        NewTopic::new("tls-failover", 1, TopicReplication::Fixed(3)),
    );
    wait_until("a leader", 20, || leader_of(&first, "tls-failover", 0) > 0);
    let leader = leader_of(&first, "tls-failover", 0);
    let all = bootstrap(&nodes);
    let victim = (leader - 1) as usize;
    let acked = produce_through(&all, "tls-failover", 2000, 800, || nodes[victim].kill());
    assert_eq!(
        acked.len(),
        2000,
        "every record acknowledged after failover"
    );
    let alive = bootstrap(&nodes);
    let survivor = alive.split(',').next().expect("a survivor").to_string();
    let new_leader = leader_of(&survivor, "tls-failover", 0);
    assert!(
        new_leader > 0 && new_leader != leader,
        "a new leader: {new_leader}"
    );
    check_exactly_at(&alive, "tls-failover", &acked);
    // The killed node restarts and its follower fetches everything over TLS again.
    nodes[victim].spawn();
    nodes[victim].wait_ready(3);
    let back = nodes[victim].bootstrap();
    let end = local_leo(&survivor, "tls-failover", 0);
    assert!(end >= 2000, "log end {end}");
    wait_until("the restarted node caught up", 30, || {
        local_leo(&back, "tls-failover", 0) == end
    });
}
