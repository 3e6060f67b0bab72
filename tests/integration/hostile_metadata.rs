//! The metadata trust boundary against real servers: hostile CreateTopics / CreatePartitions /
//! IncrementalAlterConfigs get Kafka's error codes, are never written to the Raft log, and leave
//! the broker serving and restartable; a full Raft log disk delays metadata changes (answered
//! with an error in bounded time) but does not stop the controller.

use crate::common::cluster_util::{leader_of, local_leo, produce_once, wait_until};
use crate::common::tmpfs::Tmpfs;
use crate::common::{raw, Cluster, Server};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_CONTROLLER: i16 = 41;
const POLICY_VIOLATION: i16 = 44;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn new_topic(topic: &str, partitions: i32, rf: i16) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = rf;
    t
}

/// One CreateTopics (v7); the per-topic (error code, message) in request order.
fn create_topics(
    addr: &str,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
    timeout_ms: i32,
) -> Vec<(i16, String)> {
    create_topics_v(addr, 7, topics, validate_only, timeout_ms)
}

fn create_topics_v(
    addr: &str,
    version: i16,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
    timeout_ms: i32,
) -> Vec<(i16, String)> {
    let mut s = raw::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(timeout_ms as u64 + 20_000)))
        .expect("timeout");
    let mut req = CreateTopicsRequest::default();
    req.topics = topics;
    req.timeout_ms = timeout_ms;
    req.validate_only = validate_only;
    let r: CreateTopicsResponse =
        raw::call(&mut s, ApiKey::CreateTopics, version, &req).expect("CreateTopics answered");
    r.topics
        .iter()
        .map(|t| {
            (
                t.error_code,
                t.error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn create_partitions(addr: &str, topic: &str, count: i32, validate_only: bool) -> i16 {
    let mut s = raw::connect(addr).expect("connect");
    let mut t = CreatePartitionsTopic::default();
    t.name = name(topic);
    t.count = count;
    // Null: the broker picks the replicas (an empty array would be a wrong assignment).
    t.assignments = None;
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    req.validate_only = validate_only;
    let r: CreatePartitionsResponse =
        raw::call(&mut s, ApiKey::CreatePartitions, 3, &req).expect("CreatePartitions answered");
    r.results[0].error_code
}

fn alter_config(addr: &str, topic: &str, key: &str, value: &str) -> i16 {
    let mut s = raw::connect(addr).expect("connect");
    let mut c = AlterableConfig::default();
    c.name = StrBytes::from_string(key.into());
    c.config_operation = 0;
    c.value = Some(StrBytes::from_string(value.into()));
    let mut res = AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.into());
    res.configs = vec![c];
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res];
    let r: IncrementalAlterConfigsResponse =
        raw::call(&mut s, ApiKey::IncrementalAlterConfigs, 1, &req).expect("answered");
    r.responses[0].error_code
}

fn raft_log(data_dir: &Path) -> PathBuf {
    data_dir.join("__raft").join("raft.log")
}

fn log_len(data_dir: &Path) -> u64 {
    std::fs::metadata(raft_log(data_dir)).map_or(0, |m| m.len())
}

/// Produce 3 records to `topic`-0 and see the log end move: the broker still serves.
fn serves(addr: &str, topic: &str) {
    let before = local_leo(addr, topic, 0).max(0);
    let mut code = -1;
    wait_until("a produce to succeed", 30, || {
        code = produce_once(addr, topic, 0, -1, 5000, 3).0;
        code == 0
    });
    assert_eq!(local_leo(addr, topic, 0), before + 3);
}

/// Every hostile request a client can send to the metadata path, with its Kafka error code.
fn send_hostile_requests(addr: &str) {
    for validate_only in [true, false] {
        let r = create_topics(
            addr,
            vec![new_topic("huge", i32::MAX, 1)],
            validate_only,
            10_000,
        );
        assert_eq!(r[0].0, INVALID_PARTITIONS, "{r:?}");
        let r = create_topics(
            addr,
            vec![new_topic("rf", 1, i16::MAX)],
            validate_only,
            10_000,
        );
        assert_eq!(r[0].0, INVALID_REPLICATION_FACTOR, "{r:?}");
        assert_eq!(
            create_partitions(addr, "ok", i32::MAX, validate_only),
            INVALID_PARTITIONS
        );
    }
    let mut bad_config = new_topic("cfg", 1, 1);
    let mut c = CreatableTopicConfig::default();
    c.name = StrBytes::from_static_str("retention.ms");
    c.value = Some(StrBytes::from_string("9".repeat(100_000)));
    bad_config.configs = vec![c];
    assert_eq!(
        create_topics(addr, vec![bad_config], false, 10_000)[0].0,
        INVALID_CONFIG
    );
    assert_eq!(
        alter_config(addr, "ok", "retention.ms", "never"),
        INVALID_CONFIG
    );
    assert_eq!(alter_config(addr, "ok", "no.such.key", "1"), INVALID_CONFIG);
    for internal in ["__consumer_offsets", "__transaction_state"] {
        let r = create_topics(addr, vec![new_topic(internal, 1, 1)], false, 10_000);
        assert_eq!(r[0].0, INVALID_REQUEST, "{r:?}");
    }
}

#[test]
fn a_create_topics_with_too_many_partitions_is_refused_and_not_logged_and_the_node_restarts() {
    let mut s = Server::start(&["--cores", "2"]);
    let addr = s.bootstrap();
    assert_eq!(
        create_topics(&addr, vec![new_topic("ok", 1, 1)], false, 10_000)[0].0,
        0
    );
    serves(&addr, "ok");
    let before = log_len(&s.data_dir);
    send_hostile_requests(&addr);
    // A mixed request: the good topic is created, the bad ones refused, in request order.
    let r = create_topics(
        &addr,
        vec![
            new_topic("bad", 0, 1),
            new_topic("good", 2, 1),
            new_topic("..", 1, 1),
        ],
        false,
        10_000,
    );
    let codes: Vec<i16> = r.iter().map(|x| x.0).collect();
    assert_eq!(codes, vec![INVALID_PARTITIONS, 0, INVALID_TOPIC_EXCEPTION]);
    // The commit record of that entry is written just after it: let it land before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let after_mixed = log_len(&s.data_dir);
    assert!(after_mixed > before, "the good topic was logged");
    // Nothing refused and nothing validate-only reached the log.
    send_hostile_requests(&addr);
    let r = create_topics(&addr, vec![new_topic("fine", 3, 1)], true, 10_000);
    assert_eq!(r[0].0, 0, "{r:?}");
    assert_eq!(
        log_len(&s.data_dir),
        after_mixed,
        "the Raft log did not grow"
    );
    serves(&addr, "ok");
    // SIGKILL and restart: the log replays and the broker serves.
    s.restart();
    serves(&addr, "ok");
    serves(&addr, "good");
}

#[test]
fn a_create_topics_with_a_32_kb_topic_name_is_answered_invalid_topic_exception() {
    let s = Server::start(&["--cores", "2"]);
    let addr = s.bootstrap();
    // v4 has 16-bit string lengths: a name of 32,000 bytes fits, but an error message that
    // echoed it whole did not, and the response could not be encoded (the connection closed).
    // v7 (compact strings) takes 32 KiB.
    for (version, len) in [(4, 32_000), (7, 32 * 1024)] {
        let long = "x".repeat(len);
        let r = create_topics_v(&addr, version, vec![new_topic(&long, 1, 1)], false, 10_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, INVALID_TOPIC_EXCEPTION, "v{version}: {}", &r[0].1);
        assert!(r[0].1.len() < 1024, "the message does not echo the name");
    }
    // The connection and the broker keep serving.
    assert_eq!(
        create_topics(&addr, vec![new_topic("after", 1, 1)], false, 10_000)[0].0,
        0
    );
    serves(&addr, "after");
}

#[test]
fn hostile_metadata_requests_to_a_three_node_cluster_are_refused_everywhere_and_it_restarts() {
    let mut c = Cluster::start(3, &["--cores", "2"]);
    let a1 = c.nodes[0].bootstrap();
    assert_eq!(
        create_topics(&a1, vec![new_topic("ok", 1, 3)], false, 15_000)[0].0,
        0
    );
    // Produce where the partition is led: after the restart below the controller may elect any
    // replica (whichever registers first) and moves leadership back to the preferred one only
    // at its next imbalance check, a minute later.
    let led_by = |c: &Cluster| {
        let id = leader_of(&c.nodes[0].bootstrap(), "ok", 0);
        (1..=3)
            .contains(&id)
            .then(|| c.nodes[(id - 1) as usize].bootstrap())
    };
    serves(&led_by(&c).expect("a leader"), "ok");
    let before: Vec<u64> = c.nodes.iter().map(|n| log_len(&n.data_dir)).collect();
    // Through every node: the receiving node refuses, whether or not it leads.
    for n in 0..3 {
        let addr = c.nodes[n].bootstrap();
        send_hostile_requests(&addr);
    }
    let after: Vec<u64> = c.nodes.iter().map(|n| log_len(&n.data_dir)).collect();
    assert_eq!(before, after, "no node's Raft log grew");
    // SIGKILL every node and start them again: the log replays everywhere.
    for n in c.nodes.iter_mut() {
        n.kill();
    }
    for n in c.nodes.iter_mut() {
        n.spawn();
    }
    for n in c.nodes.iter_mut() {
        n.wait_ready(3);
    }
    wait_until("the partition has a leader again", 60, || {
        led_by(&c).is_some_and(|a| produce_once(&a, "ok", 0, -1, 5000, 1).0 == 0)
    });
    serves(&led_by(&c).expect("a leader"), "ok");
    assert_eq!(
        create_topics(
            &c.nodes[2].bootstrap(),
            vec![new_topic("later", 2, 3)],
            false,
            15_000
        )[0]
        .0,
        0
    );
}

#[test]
fn a_full_raft_log_disk_delays_create_topics_with_an_error_and_it_works_again_once_space_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let Some(disk) = Tmpfs::mount(&data.join("__raft"), "2m") else {
        println!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    };
    let (mut s, addr) = node_on(&data);
    assert_eq!(
        create_topics(&addr, vec![new_topic("ok", 1, 1)], false, 10_000)[0].0,
        0
    );
    serves(&addr, "ok");

    let filler = disk.fill();
    // CreateTopics is answered with an error within its timeout (and the read timeout of the
    // connection), not held until space returns.
    let started = Instant::now();
    // An entry larger than a page: the log file's last, partly used page cannot hold it.
    let mut during = new_topic("during", 1, 1);
    let mut c = CreatableTopicConfig::default();
    c.name = StrBytes::from_static_str("chronik.note");
    c.value = Some(StrBytes::from_string("n".repeat(16_000)));
    during.configs = vec![c];
    let r = create_topics(&addr, vec![during], false, 3000);
    assert!(
        [REQUEST_TIMED_OUT, NOT_CONTROLLER].contains(&r[0].0),
        "answered {r:?} after {:?}",
        started.elapsed()
    );
    // The data path is independent of the metadata log.
    serves(&addr, "ok");

    std::fs::remove_file(&filler).expect("free space");
    let mut code = -1;
    wait_until("CreateTopics to work again", 60, || {
        code = create_topics(&addr, vec![new_topic("after", 1, 1)], false, 5000)[0].0;
        code == 0 || code == 36
    });
    serves(&addr, "after");
    let log = std::fs::read_to_string(s.log_path()).unwrap_or_default();
    assert!(log.contains("raft log: write failed"), "the write did fail");
    assert!(
        log.contains("raft log: writes succeed again"),
        "and recovered"
    );
    // The controller never stopped: a restart finds everything that was acknowledged.
    s.restart();
    serves(&addr, "after");
    serves(&addr, "ok");
    drop(s);
    drop(disk);
}

/// A one-node cluster (two shards) with its data in `data`, serving; and its address.
fn node_on(data: &Path) -> (Server, String) {
    let port = crate::common::free_port();
    let cport = crate::common::free_port();
    let quorum = format!("1@127.0.0.1:{cport}");
    let mut s = Server::node(
        1,
        port,
        cport,
        &quorum,
        data.to_path_buf(),
        &["--cores", "2"],
    );
    s.spawn();
    s.wait_ready(1);
    let addr = s.bootstrap();
    (s, addr)
}

/// A Metadata request for `topics` that asks the broker to create the missing ones; the error
/// code per topic.
fn metadata_auto_create(addr: &str, topics: &[String]) -> Vec<i16> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let mut s = raw::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = kafka_protocol::messages::MetadataRequest::default();
    req.topics = Some(
        topics
            .iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(name(n));
                t
            })
            .collect(),
    );
    req.allow_auto_topic_creation = true;
    let r: kafka_protocol::messages::MetadataResponse =
        raw::call(&mut s, ApiKey::Metadata, 9, &req).expect("Metadata answered");
    r.topics.iter().map(|t| t.error_code).collect()
}

/// Bytes of disk the files under `dir` occupy (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn new_partitions_take_almost_no_disk_and_are_refused_while_the_disk_is_nearly_full() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let Some(disk) = Tmpfs::mount(&data, "64m") else {
        println!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    };
    // The default reserve: 5% of 64 MiB, 3.2 MiB.
    let (s, addr) = node_on(&data);

    // The request from the report: one Metadata naming 30 unknown topics creates them all, and
    // each new partition takes at most 1 MiB of disk (it was 16 MiB).
    let names: Vec<String> = (0..30).map(|i| format!("auto-{i}")).collect();
    let mut codes = Vec::new();
    wait_until("30 topics to be auto-created", 60, || {
        codes = metadata_auto_create(&addr, &names);
        codes.iter().all(|c| *c == 0)
    });
    for n in &names {
        serves(&addr, n);
    }
    for n in &names {
        let used = disk_usage(&data.join(format!("{n}-0")));
        assert!(
            used <= 1 << 20,
            "partition {n}-0 takes {used} bytes of disk"
        );
    }
    // The shards' journals (32 MiB files) would take half of this disk: it keeps its room
    // for the logs.
    assert_eq!(disk_usage(&data.join(".journal")), 0);
    println!("30 partitions with 3 records each take {} bytes of disk", {
        names
            .iter()
            .map(|n| disk_usage(&data.join(format!("{n}-0"))))
            .sum::<u64>()
    });
    assert_eq!(
        create_topics(&addr, vec![new_topic("kept", 1, 1)], false, 10_000)[0].0,
        0
    );
    serves(&addr, "kept");

    // Nearly full: 1 MiB left, less than the reserve.
    let filler = disk.fill_leaving(1 << 20);
    for validate_only in [true, false] {
        let r = create_topics(
            &addr,
            vec![new_topic("refused", 1, 1)],
            validate_only,
            10_000,
        );
        assert_eq!(r[0].0, POLICY_VIOLATION, "{r:?}");
        assert!(r[0].1.contains("nearly full"), "{r:?}");
        assert_eq!(
            create_partitions(&addr, "kept", 2, validate_only),
            POLICY_VIOLATION
        );
    }
    let auto: Vec<String> = (0..30).map(|i| format!("late-{i}")).collect();
    assert!(
        metadata_auto_create(&addr, &auto)
            .iter()
            .all(|c| *c == UNKNOWN_TOPIC_OR_PARTITION),
        "auto-create is refused like a disabled auto-create"
    );
    let md = raw::metadata(&addr, Some(vec!["refused", "late-0"])).expect("metadata");
    assert!(
        md.topics
            .iter()
            .all(|t| t.error_code == UNKNOWN_TOPIC_OR_PARTITION),
        "nothing was created"
    );
    let kept = raw::metadata(&addr, Some(vec!["kept"])).expect("metadata");
    assert_eq!(kept.topics[0].partitions.len(), 1, "no partition was added");
    // The partitions it holds keep the space that is left.
    serves(&addr, "kept");
    serves(&addr, "auto-7");

    std::fs::remove_file(&filler).expect("free space");
    assert_eq!(
        create_topics(&addr, vec![new_topic("refused", 1, 1)], false, 10_000)[0].0,
        0
    );
    assert_eq!(create_partitions(&addr, "kept", 2, false), 0);
    serves(&addr, "refused");
    drop(s);
    drop(disk);
}
