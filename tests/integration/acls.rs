//! ACLs and the authorizer: real principals from client certificates (mTLS, `User:CN=…`),
//! bindings made with CreateAcls by a super user, and what each principal may then do; the ACL
//! APIs with the authorizer off; and a 3-node cluster that replicates with the authorizer on
//! (replica fetchers are authorized as brokers, not as the anonymous principal of their
//! plaintext connection).

use crate::common::cluster_util::{self, wait_until};
use crate::common::{free_port, raw, Cluster, Server};
use chronik::kafka::client::call_blocking;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

// Kafka's codes.
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const ANY: i8 = 1;
const MATCH: i8 = 2;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const DESCRIBE: i8 = 8;
const DESCRIBE_CONFIGS: i8 = 10;
const DENY: i8 = 2;
const ALLOW: i8 = 3;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const SECURITY_DISABLED: i16 = 54;
const ALICE: &str = "User:CN=alice";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A CA, the broker's certificate, and client certificates signed by the CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "chronik acl test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write");
        Pki { dir, ca, ca_key }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A rustls client config presenting a certificate with subject `CN=<cn>`.
    fn client(&self, cn: &str) -> Arc<rustls::ClientConfig> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("client cert");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("client cert");
        Arc::new(config)
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A connection to the SSL listener as the client of `config`.
fn connect(config: &Arc<rustls::ClientConfig>, port: u16) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("tls");
    rustls::StreamOwned::new(conn, tcp)
}

fn call<S: Read + Write, Req: Encodable + HeaderVersion, Resp: Decodable>(
    s: &mut S,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    call_blocking(s, key, version, 7, "acl-test", 64 << 20, req).expect("answered")
}

/// A node with PLAINTEXT and SSL (client certificates required) listeners and the authorizer
/// on, `User:CN=admin` a super user.
struct Node {
    _server: Server,
    ssl_port: u16,
    _tmp: tempfile::TempDir,
}

fn start(pki: &Pki) -> Node {
    let (port, ssl_port, controller_port) = (free_port(), free_port(), free_port());
    let tmp = tempfile::tempdir().expect("tempdir");
    let listeners = format!("PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let args = [
        "--listeners",
        &listeners,
        "--ssl-cert-file",
        &cert,
        "--ssl-key-file",
        &key,
        "--ssl-ca-file",
        &ca,
        "--ssl-client-auth",
        "required",
        "--authorizer-enable",
        "--super-users",
        "User:CN=admin",
        "--cores",
        "2",
    ];
    let quorum = format!("1@127.0.0.1:{controller_port}");
    let mut server = Server::node(
        1,
        port,
        controller_port,
        &quorum,
        tmp.path().join("d"),
        &args,
    );
    server.spawn();
    server.wait_ready(1);
    Node {
        _server: server,
        ssl_port,
        _tmp: tmp,
    }
}

fn creation(rt: i8, name: &str, pattern: i8, principal: &str, op: i8, perm: i8) -> AclCreation {
    let mut c = AclCreation::default();
    c.resource_type = rt;
    c.resource_name = s(name);
    c.resource_pattern_type = pattern;
    c.principal = s(principal);
    c.host = s("*");
    c.operation = op;
    c.permission_type = perm;
    c
}

/// CreateAcls v2; the error code of each creation.
fn create_acls<S: Read + Write>(c: &mut S, creations: Vec<AclCreation>) -> Vec<i16> {
    let mut req = CreateAclsRequest::default();
    req.creations = creations;
    let r: CreateAclsResponse = call(c, ApiKey::CreateAcls, 2, &req);
    r.results.iter().map(|x| x.error_code).collect()
}

fn filter(
    rt: i8,
    name: Option<&str>,
    pattern: i8,
    principal: Option<&str>,
    perm: i8,
) -> DescribeAclsRequest {
    let mut f = DescribeAclsRequest::default();
    f.resource_type_filter = rt;
    f.resource_name_filter = name.map(s);
    f.pattern_type_filter = pattern;
    f.principal_filter = principal.map(s);
    f.host_filter = None;
    f.operation = ANY;
    f.permission_type = perm;
    f
}

/// A described binding: (type, name, pattern, principal, operation, permission).
type Described = (i8, String, i8, String, i8, i8);

/// DescribeAcls v2: the error code and the bindings.
fn describe_acls<S: Read + Write>(c: &mut S, f: &DescribeAclsRequest) -> (i16, Vec<Described>) {
    let r: DescribeAclsResponse = call(c, ApiKey::DescribeAcls, 2, f);
    let mut out = Vec::new();
    for res in &r.resources {
        for a in &res.acls {
            out.push((
                res.resource_type,
                res.resource_name.to_string(),
                res.pattern_type,
                a.principal.to_string(),
                a.operation,
                a.permission_type,
            ));
        }
    }
    (r.error_code, out)
}

fn create_topic<S: Read + Write>(c: &mut S, name: &str) -> i16 {
    create_topic_result(c, name).error_code
}

/// CreateTopics v5 of one topic (1 partition, RF 1): its result.
fn create_topic_result<S: Read + Write>(
    c: &mut S,
    name: &str,
) -> create_topics_response::CreatableTopicResult {
    let mut t = CreatableTopic::default();
    t.name = TopicName(s(name));
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let r: CreateTopicsResponse = call(c, ApiKey::CreateTopics, 5, &req);
    r.topics.into_iter().next().expect("one topic result")
}

/// Produce v9 of one small batch to partition 0; its error code.
fn produce<S: Read + Write>(c: &mut S, topic: &str) -> i16 {
    let batch = chronik_storage::testing::build_batch_of(1, 10, b'x', 1_700_000_000_000);
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(batch.freeze());
    let mut td = TopicProduceData::default();
    td.name = TopicName(s(topic));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 30_000;
    req.topic_data = vec![td];
    let r: ProduceResponse = call(c, ApiKey::Produce, 9, &req);
    r.responses[0].partition_responses[0].error_code
}

/// Metadata v10 (no auto-create): (name, error, authorized operations) per topic.
fn metadata<S: Read + Write>(c: &mut S, topics: Option<&[&str]>) -> Vec<(String, i16, i32)> {
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(TopicName(s(n)));
                t
            })
            .collect()
    });
    req.allow_auto_topic_creation = false;
    req.include_topic_authorized_operations = true;
    let r: MetadataResponse = call(c, ApiKey::Metadata, 10, &req);
    r.topics
        .iter()
        .map(|t| {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            (name, t.error_code, t.topic_authorized_operations)
        })
        .collect()
}

fn fetch_error<S: Read + Write>(c: &mut S, topic: &str) -> i16 {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = 0;
    p.current_leader_epoch = -1;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(s(topic));
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.max_bytes = 1 << 20;
    req.topics = vec![t];
    let r: FetchResponse = call(c, ApiKey::Fetch, 11, &req);
    r.responses[0].partitions[0].error_code
}

/// OffsetCommit v2 of offset 0 of `orders`/0 for `group`, outside any generation (as a
/// consumer with manual assignment commits); the partition's error code.
fn commit<S: Read + Write>(c: &mut S, group: &str) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 0;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("orders"));
    t.partitions = vec![p];
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = -1;
    req.member_id = s("");
    req.topics = vec![t];
    let r: OffsetCommitResponse = call(c, ApiKey::OffsetCommit, 2, &req);
    r.topics[0].partitions[0].error_code
}

/// InitProducerId v4 without a transactional id; its error code.
fn init_producer_id<S: Read + Write>(c: &mut S) -> i16 {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let r: InitProducerIdResponse = call(c, ApiKey::InitProducerId, 4, &req);
    r.error_code
}

fn bit(op: i8) -> i32 {
    1 << op
}

#[test]
fn a_principal_without_acls_is_refused_until_an_acl_allows_it_and_a_deny_wins() {
    let pki = Pki::new();
    let node = start(&pki);
    let mut admin = connect(&pki.client("admin"), node.ssl_port);
    let mut alice = connect(&pki.client("alice"), node.ssl_port);
    for t in ["orders", "logs-a", "metrics"] {
        assert_eq!(create_topic(&mut admin, t), 0, "super user creates {t}");
    }

    // No ACLs: alice sees no topic and may not write.
    assert_eq!(metadata(&mut alice, None), vec![]);
    assert_eq!(
        metadata(&mut alice, Some(&["orders"])),
        vec![("orders".into(), TOPIC_AUTHORIZATION_FAILED, i32::MIN)]
    );
    assert_eq!(produce(&mut alice, "orders"), TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(create_topic(&mut alice, "mine"), TOPIC_AUTHORIZATION_FAILED);
    // Nor use the ACL APIs (ALTER / DESCRIBE on the cluster).
    let all = filter(ANY, None, ANY, None, ANY);
    assert_eq!(
        describe_acls(&mut alice, &all).0,
        CLUSTER_AUTHORIZATION_FAILED
    );
    assert_eq!(
        create_acls(
            &mut alice,
            vec![creation(TOPIC, "orders", LITERAL, ALICE, ALL, ALLOW)]
        ),
        vec![CLUSTER_AUTHORIZATION_FAILED]
    );

    // ALLOW WRITE on the topic: she may produce, and (WRITE implies DESCRIBE) see it.
    assert_eq!(
        create_acls(
            &mut admin,
            vec![
                creation(TOPIC, "orders", LITERAL, ALICE, WRITE, ALLOW),
                creation(TOPIC, "logs-", PREFIXED, ALICE, WRITE, ALLOW),
                // Refused on its own: the cluster resource has one name.
                creation(CLUSTER, "other", LITERAL, ALICE, ALL, ALLOW),
            ]
        ),
        vec![0, 0, 42]
    );
    assert_eq!(produce(&mut alice, "orders"), 0);
    assert_eq!(
        produce(&mut alice, "logs-a"),
        0,
        "a PREFIXED binding covers logs-a"
    );
    assert_eq!(produce(&mut alice, "metrics"), TOPIC_AUTHORIZATION_FAILED);
    let seen = metadata(&mut alice, None);
    assert_eq!(
        seen,
        vec![
            ("logs-a".into(), 0, bit(WRITE) | bit(DESCRIBE)),
            ("orders".into(), 0, bit(WRITE) | bit(DESCRIBE)),
        ]
    );
    // WRITE is not READ.
    assert_eq!(
        fetch_error(&mut alice, "orders"),
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_eq!(fetch_error(&mut admin, "orders"), 0);

    // A DENY beats the ALLOW.
    assert_eq!(
        create_acls(
            &mut admin,
            vec![creation(TOPIC, "orders", LITERAL, ALICE, WRITE, DENY)]
        ),
        vec![0]
    );
    assert_eq!(produce(&mut alice, "orders"), TOPIC_AUTHORIZATION_FAILED);

    // DescribeAcls filters.
    let (e, mine) = describe_acls(&mut admin, &filter(ANY, None, ANY, Some(ALICE), ANY));
    assert_eq!(e, 0);
    assert_eq!(mine.len(), 3);
    let (_, matching) = describe_acls(&mut admin, &filter(TOPIC, Some("logs-a"), MATCH, None, ANY));
    assert_eq!(
        matching,
        vec![(TOPIC, "logs-".into(), PREFIXED, ALICE.into(), WRITE, ALLOW)]
    );
    let (_, denies) = describe_acls(&mut admin, &filter(ANY, None, ANY, None, DENY));
    assert_eq!(
        denies,
        vec![(TOPIC, "orders".into(), LITERAL, ALICE.into(), WRITE, DENY)]
    );
    let (_, literal) = describe_acls(
        &mut admin,
        &filter(TOPIC, Some("orders"), LITERAL, None, ANY),
    );
    assert_eq!(literal.len(), 2);

    // DeleteAcls returns what it removed; the DENY gone, alice writes again.
    let mut f = DeleteAclsFilter::default();
    f.resource_type_filter = ANY;
    f.resource_name_filter = None;
    f.pattern_type_filter = ANY;
    f.principal_filter = Some(s(ALICE));
    f.host_filter = None;
    f.operation = ANY;
    f.permission_type = DENY;
    let mut req = DeleteAclsRequest::default();
    req.filters = vec![f];
    let r: DeleteAclsResponse = call(&mut admin, ApiKey::DeleteAcls, 2, &req);
    assert_eq!(r.filter_results.len(), 1);
    assert_eq!(r.filter_results[0].error_code, 0);
    let gone: Vec<_> = r.filter_results[0]
        .matching_acls
        .iter()
        .map(|m| (m.resource_name.to_string(), m.operation, m.permission_type))
        .collect();
    assert_eq!(gone, vec![("orders".to_string(), WRITE, DENY)]);
    assert_eq!(describe_acls(&mut admin, &all).1.len(), 2);
    assert_eq!(produce(&mut alice, "orders"), 0);

    // Groups: no ACL on the group, FindCoordinator is refused.
    let mut req = FindCoordinatorRequest::default();
    req.key = s("alice-group");
    let r: FindCoordinatorResponse = call(&mut alice, ApiKey::FindCoordinator, 3, &req);
    assert_eq!(r.error_code, GROUP_AUTHORIZATION_FAILED);
    assert_eq!(
        create_acls(
            &mut admin,
            vec![creation(GROUP, "alice-", PREFIXED, ALICE, READ, ALLOW)]
        ),
        vec![0]
    );
    let r: FindCoordinatorResponse = call(&mut alice, ApiKey::FindCoordinator, 3, &req);
    assert_eq!(r.error_code, 0, "READ on the group implies DESCRIBE");

    // OffsetCommit needs READ on the group and on the topic.
    assert_eq!(commit(&mut alice, "bob-group"), GROUP_AUTHORIZATION_FAILED);
    assert_eq!(
        commit(&mut alice, "alice-group"),
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_eq!(
        create_acls(
            &mut admin,
            vec![creation(TOPIC, "orders", LITERAL, ALICE, READ, ALLOW)]
        ),
        vec![0]
    );
    assert_eq!(commit(&mut alice, "alice-group"), 0);
    assert_eq!(fetch_error(&mut alice, "orders"), 0);

    // An idempotent producer id: WRITE on some topic is enough (Kafka 2.8+); bob has none.
    let mut bob = connect(&pki.client("bob"), node.ssl_port);
    assert_eq!(init_producer_id(&mut alice), 0);
    assert_eq!(init_producer_id(&mut bob), CLUSTER_AUTHORIZATION_FAILED);

    // Cluster-level APIs.
    let mut req = ElectLeadersRequest::default();
    req.topic_partitions = None;
    req.election_type = 0;
    req.timeout_ms = 10_000;
    let r: ElectLeadersResponse = call(&mut alice, ApiKey::ElectLeaders, 2, &req);
    assert_eq!(r.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert!(
        r.replica_election_results.is_empty(),
        "no topic names revealed"
    );
    let r: DescribeClusterResponse = call(
        &mut alice,
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default(),
    );
    assert_eq!(r.error_code, CLUSTER_AUTHORIZATION_FAILED);
    let mut req = DescribeClusterRequest::default();
    req.include_cluster_authorized_operations = true;
    let r: DescribeClusterResponse = call(&mut admin, ApiKey::DescribeCluster, 0, &req);
    assert_eq!(r.error_code, 0);
    assert_ne!(
        r.cluster_authorized_operations & bit(7),
        0,
        "a super user may ALTER"
    );

    // CreateTopics v5 answers the new topic's configs only to who may DESCRIBE_CONFIGS it.
    let created = create_topic_result(&mut admin, "admin-new");
    assert_eq!(
        (created.error_code, created.topic_config_error_code),
        (0, 0)
    );
    let configs = created.configs.expect("a super user sees the configs");
    assert!(configs.iter().any(|c| c.name.as_str() == "cleanup.policy"
        && c.value.as_ref().map(|v| v.as_str()) == Some("delete")));
    assert_eq!(
        create_acls(
            &mut admin,
            vec![creation(TOPIC, "alice-", PREFIXED, ALICE, CREATE, ALLOW)]
        ),
        vec![0]
    );
    let created = create_topic_result(&mut alice, "alice-new");
    assert_eq!(created.error_code, 0, "CREATE on the topic is enough");
    assert_eq!(created.topic_config_error_code, TOPIC_AUTHORIZATION_FAILED);
    assert!(
        created.configs.unwrap_or_default().is_empty(),
        "no config shown without DESCRIBE_CONFIGS"
    );
    assert_eq!(
        create_acls(
            &mut admin,
            vec![creation(
                TOPIC,
                "alice-",
                PREFIXED,
                ALICE,
                DESCRIBE_CONFIGS,
                ALLOW
            )]
        ),
        vec![0]
    );
    let created = create_topic_result(&mut alice, "alice-two");
    assert_eq!(
        (created.error_code, created.topic_config_error_code),
        (0, 0)
    );
    assert!(!created.configs.unwrap_or_default().is_empty());
}

#[test]
fn with_the_authorizer_off_the_acl_apis_answer_security_disabled() {
    let node = Server::start(&["--cores", "2"]);
    let mut c = raw::connect(&node.bootstrap()).expect("connect");
    let (e, _) = describe_acls(&mut c, &filter(ANY, None, ANY, None, ANY));
    assert_eq!(e, SECURITY_DISABLED);
    assert_eq!(
        create_acls(
            &mut c,
            vec![creation(TOPIC, "t", LITERAL, ALICE, READ, ALLOW)]
        ),
        vec![SECURITY_DISABLED]
    );
    // Everyone may do everything: the topic operations are all of TOPIC's.
    assert_eq!(create_topic(&mut c, "open"), 0);
    let m = metadata(&mut c, Some(&["open"]));
    let all_topic_ops = [3, 4, 5, 6, 7, 8, 10, 11]
        .iter()
        .fold(0, |b, op| b | (1 << op));
    assert_eq!(m, vec![("open".into(), 0, all_topic_ops)]);
    // ApiVersions lists the three APIs.
    let r: ApiVersionsResponse = call(
        &mut c,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    for key in [ApiKey::CreateAcls, ApiKey::DescribeAcls, ApiKey::DeleteAcls] {
        let v = r
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .expect("listed");
        assert_eq!((v.min_version, v.max_version), (1, 3));
    }
}

#[test]
fn a_three_node_cluster_with_the_authorizer_on_replicates_as_brokers() {
    // Clients are anonymous (plaintext); with no ACL yet everyone may do everything, so the
    // test sets itself up, then denies the anonymous principal the operations a follower
    // needs (CLUSTER_ACTION, READ): followers still fetch, as brokers.
    let mut cluster = Cluster::start(
        3,
        &[
            "--authorizer-enable",
            "--allow-everyone-if-no-acl-found",
            "--cores",
            "2",
        ],
    );
    let bootstrap = cluster.bootstrap();
    let topic = "replicated";
    let mut new =
        rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(3));
    new = new.set("min.insync.replicas", "3");
    cluster_util::create(&bootstrap, new);
    let anon = "User:ANONYMOUS";
    // Sent to the last node: a non-controller node forwards it to the controller.
    let addr = cluster.node(3).bootstrap();
    let mut c = raw::connect(&addr).expect("connect");
    assert_eq!(
        create_acls(
            &mut c,
            vec![
                creation(TOPIC, topic, LITERAL, anon, WRITE, ALLOW),
                creation(TOPIC, topic, LITERAL, anon, READ, DENY),
                creation(CLUSTER, "kafka-cluster", LITERAL, anon, 9, DENY),
            ]
        ),
        vec![0, 0, 0]
    );
    // Every node serves the new bindings.
    for id in 1..=3 {
        let addr = cluster.node(id).bootstrap();
        let mut c = raw::connect(&addr).expect("connect");
        assert_eq!(fetch_error(&mut c, topic), TOPIC_AUTHORIZATION_FAILED);
    }
    // acks=all with min.insync.replicas=3: answered only once both followers fetched it.
    let leader = cluster_util::leader_of(&cluster.node(1).bootstrap(), topic, 0);
    let leader_addr = cluster.node(leader).bootstrap();
    wait_until("a three-member ISR", 30, || {
        cluster_util::isr_of(&leader_addr, topic, 0).len() == 3
    });
    for _ in 0..3 {
        let mut c = raw::connect(&leader_addr).expect("connect");
        assert_eq!(produce(&mut c, topic), 0);
    }
    assert_eq!(cluster_util::isr_of(&leader_addr, topic, 0).len(), 3);
}

#[test]
fn acls_survive_a_restart() {
    let mut node = Server::start(&["--authorizer-enable", "--super-users", "User:ANONYMOUS"]);
    let mut c = raw::connect(&node.bootstrap()).expect("connect");
    assert_eq!(
        create_acls(
            &mut c,
            vec![creation(GROUP, "g", PREFIXED, ALICE, READ, ALLOW)]
        ),
        vec![0]
    );
    node.restart();
    let mut c = raw::connect(&node.bootstrap()).expect("connect");
    let (e, acls) = describe_acls(&mut c, &filter(ANY, None, ANY, None, ANY));
    assert_eq!(e, 0);
    assert_eq!(
        acls,
        vec![(GROUP, "g".into(), PREFIXED, ALICE.into(), READ, ALLOW)]
    );
}

const TRANSACTIONAL_ID: i8 = 5;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// FindCoordinator v3 for a transactional id: (error, node).
fn find_txn_coordinator<S: Read + Write>(c: &mut S, id: &str) -> (i16, i32) {
    let mut req = FindCoordinatorRequest::default();
    req.key = s(id);
    req.key_type = 1;
    let r: FindCoordinatorResponse = call(c, ApiKey::FindCoordinator, 3, &req);
    (r.error_code, r.node_id.0)
}

/// InitProducerId v4 with a transactional id; its error code.
fn init_transactional<S: Read + Write>(c: &mut S, id: &str) -> i16 {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = Some(TransactionalId(s(id)));
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let r: InitProducerIdResponse = call(c, ApiKey::InitProducerId, 4, &req);
    r.error_code
}

#[test]
fn a_transactional_id_needs_an_acl_before_its_coordinator_is_found_or_a_producer_initialised() {
    let pki = Pki::new();
    let node = start(&pki);
    let mut admin = connect(&pki.client("admin"), node.ssl_port);
    let mut alice = connect(&pki.client("alice"), node.ssl_port);
    assert_eq!(
        find_txn_coordinator(&mut alice, "tx-a").0,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(
        init_transactional(&mut alice, "tx-a"),
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(
        create_acls(
            &mut admin,
            vec![creation(
                TRANSACTIONAL_ID,
                "tx-",
                PREFIXED,
                ALICE,
                WRITE,
                ALLOW
            )]
        ),
        vec![0]
    );
    // WRITE implies DESCRIBE: the coordinator is found (once its topic exists) and the
    // producer gets an id; an id outside the prefix stays refused.
    wait_until("the transaction coordinator", 30, || {
        find_txn_coordinator(&mut alice, "tx-a").0 == 0
    });
    wait_until("a transactional producer id", 30, || {
        init_transactional(&mut alice, "tx-a") == 0
    });
    assert_eq!(
        find_txn_coordinator(&mut alice, "other").0,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(
        init_transactional(&mut alice, "other"),
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
}
