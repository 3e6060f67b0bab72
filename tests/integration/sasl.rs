//! SASL: a node with a PLAINTEXT listener (for the harness), a SASL_PLAINTEXT and a SASL_SSL
//! one, its first users from `--sasl-bootstrap-users`. librdkafka logs in with PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512 and produces and consumes; raw frames check the refusals
//! (wrong password, a request before logging in, an expired session) and the SCRAM user APIs.

use crate::common::cluster_util::block_on;
use crate::common::{free_port, raw, Server};
use crate::tls::Pki;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, MetadataRequest,
    MetadataResponse, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const USERS: &str = "admin:admin-secret\nalice:alice-secret\n";

struct Node {
    server: Server,
    sasl_port: u16,
    sasl_ssl_port: u16,
    pki: Pki,
    _tmp: tempfile::TempDir,
}

impl Node {
    fn sasl_plaintext(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }
}

/// A node with `PLAINTEXT://port`, `SASL_PLAINTEXT://sasl_port` and `SASL_SSL://sasl_ssl_port`,
/// bootstrapped with `USERS`.
fn start(extra: &[&str]) -> Node {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = tmp.path().join("users.txt");
    std::fs::write(&users, USERS).expect("users file");
    let (port, sasl_port, sasl_ssl_port, controller_port) =
        (free_port(), free_port(), free_port(), free_port());
    let listeners = format!(
        "PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},\
         SASL_SSL://127.0.0.1:{sasl_ssl_port}"
    );
    let (cert, key) = (pki.path_str("server.pem"), pki.path_str("server.key"));
    let users = users.display().to_string();
    let mut args = vec![
        "--listeners",
        &listeners,
        "--inter-broker-listener-name",
        "PLAINTEXT",
        "--ssl-cert-file",
        &cert,
        "--ssl-key-file",
        &key,
        "--sasl-bootstrap-users",
        &users,
        "--cores",
        "2",
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
        sasl_port,
        sasl_ssl_port,
        pki,
        _tmp: tmp,
    }
}

fn sasl_client(
    bootstrap: &str,
    protocol: &str,
    mechanism: &str,
    user: &str,
    pw: &str,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("security.protocol", protocol)
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", pw);
    c
}

/// Produces `n` records to `topic` and reads them back with the same login.
fn produce_and_consume(config: &ClientConfig, node: &Node, topic: &str, n: usize) {
    let producer: FutureProducer = config
        .clone()
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    for i in 0..n {
        let value = format!("{i}");
        let r = block_on(producer.send(
            FutureRecord::<(), _>::to(topic).payload(&value),
            Duration::from_secs(20),
        ));
        if r.is_err() {
            node.server.print_log_tail(40);
        }
        r.expect("produce over SASL");
    }
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v = std::str::from_utf8(m.payload().expect("payload")).expect("utf8");
            seen.push(v.parse::<usize>().expect("index"));
        }
    }
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
}

#[test]
fn librdkafka_produces_and_consumes_over_sasl_ssl_with_scram_sha_512() {
    let node = start(&[]);
    let mut c = sasl_client(
        &format!("127.0.0.1:{}", node.sasl_ssl_port),
        "sasl_ssl",
        "SCRAM-SHA-512",
        "alice",
        "alice-secret",
    );
    c.set("ssl.ca.location", node.pki.path_str("ca.pem"));
    produce_and_consume(&c, &node, "over-sasl-ssl", 50);
}

#[test]
fn librdkafka_produces_and_consumes_over_sasl_plaintext_with_plain_and_scram_sha_256() {
    let node = start(&[]);
    let bootstrap = node.sasl_plaintext();
    let plain = sasl_client(
        &bootstrap,
        "sasl_plaintext",
        "PLAIN",
        "admin",
        "admin-secret",
    );
    produce_and_consume(&plain, &node, "over-plain", 20);
    let scram = sasl_client(
        &bootstrap,
        "sasl_plaintext",
        "SCRAM-SHA-256",
        "alice",
        "alice-secret",
    );
    produce_and_consume(&scram, &node, "over-scram-256", 20);
}

fn handshake(s: &mut TcpStream, mechanism: &str) -> SaslHandshakeResponse {
    let mut r = SaslHandshakeRequest::default();
    r.mechanism = StrBytes::from_string(mechanism.to_string());
    raw::call(s, ApiKey::SaslHandshake, 1, &r).expect("handshake answered")
}

fn plain_login(
    s: &mut TcpStream,
    user: &str,
    pw: &str,
) -> std::io::Result<SaslAuthenticateResponse> {
    assert_eq!(handshake(s, "PLAIN").error_code, 0);
    let mut r = SaslAuthenticateRequest::default();
    r.auth_bytes = bytes::Bytes::from(format!("\0{user}\0{pw}").into_bytes());
    raw::call(s, ApiKey::SaslAuthenticate, 2, &r)
}

fn metadata(s: &mut TcpStream) -> std::io::Result<MetadataResponse> {
    raw::call(s, ApiKey::Metadata, 9, &MetadataRequest::default())
}

/// The broker closed `s`: a read gives end of stream (or a reset).
fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the close: {rest:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn a_wrong_password_gets_sasl_authentication_failed_and_the_connection_is_closed() {
    let node = start(&[]);
    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    let r = plain_login(&mut s, "alice", "not-her-password").expect("answered");
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert_closed(&mut s);

    // librdkafka reports the failure too.
    let producer: FutureProducer = sasl_client(
        &node.sasl_plaintext(),
        "sasl_plaintext",
        "SCRAM-SHA-256",
        "alice",
        "wrong",
    )
    .set("message.timeout.ms", "3000")
    .create()
    .expect("producer");
    let r = block_on(producer.send(
        FutureRecord::<(), _>::to("never").payload("x"),
        Duration::from_secs(5),
    ));
    assert!(r.is_err(), "a wrong password produced");
}

#[test]
fn a_request_before_authenticating_closes_the_connection_and_unknown_mechanisms_are_listed() {
    let node = start(&[]);
    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    assert!(metadata(&mut s).is_err(), "Metadata answered before login");
    assert_closed(&mut s);

    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    let r = handshake(&mut s, "GSSAPI");
    assert_eq!(r.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let mut names: Vec<String> = r.mechanisms.iter().map(|m| m.to_string()).collect();
    names.sort();
    assert_eq!(names, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert_closed(&mut s);

    // On the PLAINTEXT listener a handshake is answered ILLEGAL_SASL_STATE, as Kafka does.
    let mut s = raw::connect(&node.server.bootstrap()).expect("connect");
    assert_eq!(
        handshake(&mut s, "PLAIN").error_code,
        34,
        "ILLEGAL_SASL_STATE"
    );

    // Logged in, the same request is served.
    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    let r = plain_login(&mut s, "admin", "admin-secret").expect("login");
    assert_eq!(r.error_code, 0);
    assert_eq!(metadata(&mut s).expect("metadata").brokers.len(), 1);
}

#[test]
fn a_session_that_expires_without_reauthentication_is_closed_and_librdkafka_reauthenticates() {
    let node = start(&["--connections-max-reauth-ms", "2000"]);
    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    let r = plain_login(&mut s, "admin", "admin-secret").expect("login");
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 2000));
    metadata(&mut s).expect("served within the session");
    // Logging in again on the same connection renews the session.
    std::thread::sleep(Duration::from_millis(1200));
    let r = plain_login(&mut s, "admin", "admin-secret").expect("re-authentication");
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 2000));
    std::thread::sleep(Duration::from_millis(1200));
    metadata(&mut s).expect("served in the renewed session");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        metadata(&mut s).is_err(),
        "served after the session expired"
    );

    // librdkafka logs in again before its session ends (KIP-368) and keeps producing.
    let producer: FutureProducer = sasl_client(
        &node.sasl_plaintext(),
        "sasl_plaintext",
        "SCRAM-SHA-512",
        "alice",
        "alice-secret",
    )
    .set("message.timeout.ms", "10000")
    .create()
    .expect("producer");
    let until = Instant::now() + Duration::from_secs(6);
    let mut sent = 0;
    while Instant::now() < until {
        let r = block_on(producer.send(
            FutureRecord::<(), _>::to("reauth").payload("x"),
            Duration::from_secs(10),
        ));
        if r.is_err() {
            node.server.print_log_tail(40);
        }
        r.expect("produce across re-authentications");
        sent += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // (With RUST_LOG debug, the broker logs no session-expiry close for the producer's
    // connections: librdkafka logged in again each time.)
    assert!(sent > 10);
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations).expect("iterations"),
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

fn upsertion(
    user: &str,
    mechanism: i8,
    iterations: i32,
    password: &str,
) -> ScramCredentialUpsertion {
    let mut u = ScramCredentialUpsertion::default();
    u.name = StrBytes::from_string(user.to_string());
    u.mechanism = mechanism;
    u.iterations = iterations;
    u.salt = bytes::Bytes::from_static(b"some-salt-of-carol");
    u.salted_password = bytes::Bytes::from(salted_password(
        password,
        b"some-salt-of-carol",
        iterations.max(1) as u32,
    ));
    u
}

fn deletion(user: &str, mechanism: i8) -> ScramCredentialDeletion {
    let mut d = ScramCredentialDeletion::default();
    d.name = StrBytes::from_string(user.to_string());
    d.mechanism = mechanism;
    d
}

fn alter(
    addr: &str,
    upsertions: Vec<ScramCredentialUpsertion>,
    deletions: Vec<ScramCredentialDeletion>,
) -> Vec<(String, i16)> {
    let mut req = AlterUserScramCredentialsRequest::default();
    req.upsertions = upsertions;
    req.deletions = deletions;
    let mut s = raw::connect(addr).expect("connect");
    let r: AlterUserScramCredentialsResponse =
        raw::call(&mut s, ApiKey::AlterUserScramCredentials, 0, &req).expect("alter");
    r.results
        .iter()
        .map(|x| (x.user.to_string(), x.error_code))
        .collect()
}

fn describe(addr: &str, users: Option<&[&str]>) -> DescribeUserScramCredentialsResponse {
    let mut req = DescribeUserScramCredentialsRequest::default();
    req.users = users.map(|u| {
        u.iter()
            .map(|n| {
                let mut x = UserName::default();
                x.name = StrBytes::from_string(n.to_string());
                x
            })
            .collect()
    });
    let mut s = raw::connect(addr).expect("connect");
    raw::call(&mut s, ApiKey::DescribeUserScramCredentials, 0, &req).expect("describe")
}

#[test]
fn user_scram_credentials_alter_and_describe_round_trip_and_a_new_user_can_then_log_in() {
    let node = start(&[]);
    let admin = node.server.bootstrap();
    // Kafka's per-user refusals.
    let refused = alter(
        &admin,
        vec![
            upsertion("few", 1, 10, "pw"),
            upsertion("many", 1, 20_000, "pw"),
            upsertion("odd", 0, 4096, "pw"),
            upsertion("", 1, 4096, "pw"),
            upsertion("twice", 1, 4096, "pw"),
        ],
        vec![deletion("twice", 1), deletion("nobody", 2)],
    );
    let code = |u: &str| refused.iter().find(|(n, _)| n == u).map(|x| x.1);
    assert_eq!(code("few"), Some(93), "UNACCEPTABLE_CREDENTIAL");
    assert_eq!(code("many"), Some(93));
    assert_eq!(code("odd"), Some(33), "UNSUPPORTED_SASL_MECHANISM");
    assert_eq!(code(""), Some(93));
    assert_eq!(code("twice"), Some(92), "DUPLICATE_RESOURCE");
    assert_eq!(code("nobody"), Some(91), "RESOURCE_NOT_FOUND");

    // A new user, SCRAM-SHA-256 with 8192 iterations.
    assert_eq!(
        alter(
            &admin,
            vec![upsertion("carol", 1, 8192, "carol-pw")],
            vec![]
        ),
        vec![("carol".to_string(), 0)]
    );
    let d = describe(&admin, Some(&["carol", "nobody", "admin"]));
    assert_eq!(d.error_code, 0);
    /// (user, error code, (mechanism, iterations) of each credential).
    type Described = (String, i16, Vec<(i8, i32)>);
    let got: Vec<Described> = d
        .results
        .iter()
        .map(|r| {
            let infos = r
                .credential_infos
                .iter()
                .map(|i| (i.mechanism, i.iterations))
                .collect();
            (r.user.to_string(), r.error_code, infos)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("carol".to_string(), 0, vec![(1, 8192)]),
            ("nobody".to_string(), 91, vec![]),
            ("admin".to_string(), 0, vec![(1, 4096), (2, 4096)]),
        ]
    );
    let all = describe(&admin, None);
    let mut names: Vec<String> = all.results.iter().map(|r| r.user.to_string()).collect();
    names.sort();
    assert_eq!(names, ["admin", "alice", "carol"]);

    // Carol logs in with SCRAM-SHA-256 and with PLAIN.
    let c = sasl_client(
        &node.sasl_plaintext(),
        "sasl_plaintext",
        "SCRAM-SHA-256",
        "carol",
        "carol-pw",
    );
    produce_and_consume(&c, &node, "carols", 5);
    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    assert_eq!(
        plain_login(&mut s, "carol", "carol-pw")
            .expect("login")
            .error_code,
        0
    );

    // Deleted, she cannot.
    assert_eq!(
        alter(&admin, vec![], vec![deletion("carol", 1)]),
        vec![("carol".to_string(), 0)]
    );
    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    assert_eq!(
        plain_login(&mut s, "carol", "carol-pw")
            .expect("answer")
            .error_code,
        58
    );
}

#[test]
fn bootstrap_users_survive_a_restart_without_the_file() {
    let mut node = start(&[]);
    let flag = node
        .server
        .extra
        .iter()
        .position(|a| a == "--sasl-bootstrap-users")
        .expect("flag");
    node.server.extra.drain(flag..flag + 2);
    node.server.restart();
    let mut s = raw::connect(&node.sasl_plaintext()).expect("connect");
    let r = plain_login(&mut s, "alice", "alice-secret").expect("login");
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    metadata(&mut s).expect("served");
}

/// Two nodes whose inter-broker listener is SASL_PLAINTEXT: followers replicate only if their
/// fetchers log in (SCRAM-SHA-512 as `broker`) before proving which broker they are.
#[test]
fn replicas_fetch_over_a_sasl_inter_broker_listener() {
    use crate::common::cluster_util::{replicate_five_records, start_two_nodes_with_two_listeners};
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = tmp.path().join("users.txt");
    std::fs::write(&users, "broker:broker-secret\n").expect("users");
    let password = tmp.path().join("broker.password");
    std::fs::write(&password, "broker-secret\n").expect("password");
    let (users, password) = (users.display().to_string(), password.display().to_string());
    let (nodes, _) = start_two_nodes_with_two_listeners(tmp.path(), |_, port, sasl_port| {
        vec![
            "--listeners".into(),
            format!("PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"),
            "--inter-broker-listener-name".into(),
            "SASL_PLAINTEXT".into(),
            "--sasl-bootstrap-users".into(),
            users.clone(),
            "--sasl-inter-broker-user".into(),
            "broker".into(),
            "--sasl-inter-broker-password-file".into(),
            password.clone(),
        ]
    });
    replicate_five_records(&nodes, "over-sasl-replicated");
}
