//! Kafka transactions against real chronik-server processes with librdkafka's transactional
//! producer (rdkafka crate): commit and abort seen by read_committed and read_uncommitted
//! consumers, fencing of a zombie producer, offsets committed in a transaction
//! (consume-transform-produce), and a transaction coordinator on another broker than the
//! partition leaders (markers sent with WriteTxnMarkers).

use crate::common::{Cluster, Server};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn create_topic(bootstrap: &str, name: &str, partitions: i32, rf: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let r = futures_lite::future::block_on(admin.create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(rf))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create_topics");
    assert!(r[0].is_ok(), "create {name}: {:?}", r[0]);
}

fn txn_producer(bootstrap: &str, id: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    p.init_transactions(T).expect("init_transactions");
    p
}

fn send(p: &BaseProducer, topic: &str, partition: i32, value: &str) {
    loop {
        match p.send(
            BaseRecord::<(), _>::to(topic)
                .payload(value)
                .partition(partition),
        ) {
            Ok(()) => return,
            Err((e, _)) => {
                assert!(matches!(e, KafkaError::MessageProduction(_)), "send: {e}");
                p.poll(Duration::from_millis(10));
            }
        }
    }
}

/// Every value in `topic` (all `partitions`) a consumer with `isolation` reads before nothing
/// new arrives for 3 s after it has at least `at_least`.
fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    at_least: usize,
) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{isolation}-{topic}"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v = m.payload().map(|b| String::from_utf8_lossy(b).to_string());
                out.push(v.unwrap_or_default());
                quiet_since = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer error (retried): {e}"),
            None => {}
        }
        if out.len() >= at_least && quiet_since.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    out
}

/// Commit 100 records, abort 50: read_committed sees exactly the 100, read_uncommitted 150.
fn commit_100_abort_50(bootstrap: &str, topic: &str, partitions: i32) {
    let p = txn_producer(bootstrap, &format!("txn-{topic}"));
    p.begin_transaction().expect("begin");
    for i in 0..100 {
        send(&p, topic, i % partitions, &format!("c{i}"));
    }
    p.commit_transaction(T).expect("commit");
    p.begin_transaction().expect("begin");
    for i in 0..50 {
        send(&p, topic, i % partitions, &format!("a{i}"));
    }
    p.flush(T).expect("flush");
    p.abort_transaction(T).expect("abort");
    let mut committed = read_all(bootstrap, topic, partitions, "read_committed", 100);
    committed.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    want.sort();
    assert_eq!(
        committed, want,
        "read_committed sees exactly the committed 100"
    );
    let all = read_all(bootstrap, topic, partitions, "read_uncommitted", 150);
    assert_eq!(
        all.len(),
        150,
        "read_uncommitted sees the aborted 50 as well"
    );
}

#[test]
fn read_committed_sees_the_committed_transaction_and_not_the_aborted_one() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "txn-basic", 3, 1);
    commit_100_abort_50(&b, "txn-basic", 3);
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "txn-fence", 1, 1);
    let zombie = txn_producer(&b, "fenced-id");
    zombie.begin_transaction().expect("begin");
    send(&zombie, "txn-fence", 0, "zombie");
    zombie.flush(T).expect("flush");
    // The new instance aborts the zombie's open transaction and bumps the epoch.
    let fresh = txn_producer(&b, "fenced-id");
    let r = zombie.commit_transaction(T);
    assert!(r.is_err(), "the fenced producer may not commit: {r:?}");
    fresh.begin_transaction().expect("begin");
    send(&fresh, "txn-fence", 0, "fresh");
    fresh.commit_transaction(T).expect("commit");
    let seen = read_all(&b, "txn-fence", 1, "read_committed", 1);
    assert_eq!(seen, vec!["fresh".to_string()]);
}

#[test]
fn offsets_sent_to_a_transaction_are_committed_only_with_it() {
    let mut s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "ctp-in", 1, 1);
    create_topic(&b, "ctp-out", 1, 1);
    let seed: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .expect("producer");
    for i in 0..20 {
        send(&seed, "ctp-in", 0, &format!("in{i}"));
    }
    seed.flush(T).expect("flush");
    let group = "ctp-group";
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ctp-in", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let p = txn_producer(&b, "ctp-txn");
    // Two rounds of 10: the first aborted (its offsets must not count), the second committed.
    for commit in [false, true] {
        p.begin_transaction().expect("begin");
        let mut last = -1;
        let mut n = 0;
        let deadline = Instant::now() + T;
        while n < 10 && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                send(&p, "ctp-out", 0, &format!("out-{v}"));
                last = m.offset();
                n += 1;
            }
        }
        assert_eq!(n, 10, "consumed a round");
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("ctp-in", 0, Offset::Offset(last + 1))
            .expect("offsets");
        let meta = consumer.group_metadata().expect("group metadata");
        p.send_offsets_to_transaction(&offsets, &meta, T)
            .expect("send_offsets_to_transaction");
        if commit {
            p.commit_transaction(T).expect("commit");
        } else {
            p.flush(T).expect("flush");
            p.abort_transaction(T).expect("abort");
            // The aborted round's offsets are not committed: still nothing for the group.
            let c = consumer
                .committed_offsets(tpl.clone(), T)
                .expect("committed");
            let off = c.find_partition("ctp-in", 0).map(|e| e.offset());
            assert!(
                matches!(off, Some(Offset::Invalid) | None),
                "aborted offsets are invisible: {off:?}"
            );
        }
    }
    let c = consumer
        .committed_offsets(tpl.clone(), T)
        .expect("committed");
    assert_eq!(
        c.find_partition("ctp-in", 0).map(|e| e.offset()),
        Some(Offset::Offset(20)),
        "the committed round's offsets count"
    );
    let out = read_all(&b, "ctp-out", 1, "read_committed", 10);
    assert_eq!(out.len(), 10, "only the committed round's output: {out:?}");
    // Reloaded from the offsets log after a restart: the committed round's offsets only.
    drop((consumer, p));
    s.restart();
    let again: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let deadline = Instant::now() + T;
    loop {
        match again.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(c) => {
                assert_eq!(
                    c.find_partition("ctp-in", 0).map(|e| e.offset()),
                    Some(Offset::Offset(20)),
                    "after a restart"
                );
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "committed offsets: {e}"),
        }
    }
}

#[test]
fn markers_reach_partitions_led_by_other_brokers() {
    let c = Cluster::start(3, &[]);
    let b = c.nodes[0].bootstrap();
    create_topic(&b, "txn-spread", 6, 3);
    commit_100_abort_50(&b, "txn-spread", 6);
}

/// The coordinator's broker is SIGKILLed in the middle of a transaction: the new leader of its
/// `__transaction_state` partition loads the open transaction from the log and commits it.
#[test]
fn a_transaction_survives_the_loss_of_its_coordinator() {
    let mut c = Cluster::start(3, &[]);
    let b = c.nodes[0].bootstrap();
    create_topic(&b, "txn-failover", 3, 3);
    let p = txn_producer(&b, "failover-id");
    p.begin_transaction().expect("begin");
    for i in 0..30 {
        send(&p, "txn-failover", i % 3, &format!("f{i}"));
    }
    p.flush(T).expect("flush");
    let coordinator = hostile::coordinator_node(&b, "failover-id");
    let victim = c
        .nodes
        .iter()
        .position(|n| n.node_id == coordinator)
        .expect("coordinator is a node");
    c.nodes[victim].kill();
    let alive = c.nodes[(victim + 1) % 3].bootstrap();
    p.commit_transaction(Duration::from_secs(60))
        .expect("commit through the new coordinator");
    let mut seen = read_all(&alive, "txn-failover", 3, "read_committed", 30);
    seen.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}

mod hostile {
    use crate::common::{raw, Server};
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    const INVALID_TXN_STATE: i16 = 48;
    const PRODUCER_FENCED: i16 = 90;
    const INVALID_PRODUCER_EPOCH: i16 = 47;

    /// The node id of `id`'s transaction coordinator.
    pub fn coordinator_node(addr: &str, id: &str) -> i32 {
        let a = coordinator_of(addr, id);
        let mut s = raw::connect(addr).expect("connect");
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(id.to_string());
        req.key_type = 1;
        let r: FindCoordinatorResponse =
            raw::call(&mut s, ApiKey::FindCoordinator, 3, &req).expect("find");
        assert_eq!(format!("{}:{}", r.host.as_str(), r.port), a);
        r.node_id.0
    }

    fn coordinator_of(addr: &str, id: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut s = raw::connect(addr).expect("connect");
            let mut req = FindCoordinatorRequest::default();
            req.key = StrBytes::from_string(id.to_string());
            req.key_type = 1;
            let r: FindCoordinatorResponse =
                raw::call(&mut s, ApiKey::FindCoordinator, 3, &req).expect("find");
            if r.error_code == 0 {
                return format!("{}:{}", r.host.as_str(), r.port);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no coordinator: {}",
                r.error_code
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn init(addr: &str, id: &str) -> (i64, i16) {
        init_with_timeout(addr, id, 60_000)
    }

    fn init_with_timeout(addr: &str, id: &str, timeout_ms: i32) -> (i64, i16) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut s = raw::connect(addr).expect("connect");
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = Some(TransactionalId(StrBytes::from_string(id.to_string())));
            req.transaction_timeout_ms = timeout_ms;
            req.producer_id = ProducerId(-1);
            req.producer_epoch = -1;
            let r: InitProducerIdResponse =
                raw::call(&mut s, ApiKey::InitProducerId, 4, &req).expect("init");
            if r.error_code == 0 {
                return (r.producer_id.0, r.producer_epoch);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "init: {}",
                r.error_code
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn end(addr: &str, id: &str, pid: i64, epoch: i16, version: i16) -> i16 {
        let mut s = raw::connect(addr).expect("connect");
        let mut req = EndTxnRequest::default();
        req.transactional_id = TransactionalId(StrBytes::from_string(id.to_string()));
        req.producer_id = ProducerId(pid);
        req.producer_epoch = epoch;
        req.committed = true;
        let r: EndTxnResponse = raw::call(&mut s, ApiKey::EndTxn, version, &req).expect("end");
        r.error_code
    }

    #[test]
    fn write_txn_markers_from_a_client_is_refused_on_every_partition() {
        let s = Server::start(&[]);
        super::create_topic(&s.bootstrap(), "hostile-markers", 2, 1);
        let mut conn = raw::connect(&s.bootstrap()).expect("connect");
        let mut t = WritableTxnMarkerTopic::default();
        t.name = TopicName(StrBytes::from_string("hostile-markers".to_string()));
        t.partition_indexes = vec![0, 1];
        let mut m = WritableTxnMarker::default();
        m.producer_id = ProducerId(1);
        m.producer_epoch = 0;
        m.transaction_result = false;
        m.topics = vec![t];
        let mut req = WriteTxnMarkersRequest::default();
        req.markers = vec![m];
        let r: WriteTxnMarkersResponse =
            raw::call(&mut conn, ApiKey::WriteTxnMarkers, 1, &req).expect("answered");
        let codes: Vec<i16> = r.markers[0].topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, vec![CLUSTER_AUTHORIZATION_FAILED; 2]);
    }

    #[test]
    fn end_txn_with_a_stale_epoch_or_unknown_producer_or_nothing_open_gets_kafkas_errors() {
        let s = Server::start(&[]);
        let c = coordinator_of(&s.bootstrap(), "hostile-txn");
        let (pid, e0) = init(&c, "hostile-txn");
        let (pid2, e1) = init(&c, "hostile-txn");
        assert_eq!((pid2, e1), (pid, e0 + 1), "a re-init bumps the epoch");
        assert_eq!(end(&c, "hostile-txn", pid, e0, 3), PRODUCER_FENCED);
        assert_eq!(end(&c, "hostile-txn", pid, e0, 1), INVALID_PRODUCER_EPOCH);
        assert_eq!(
            end(&c, "hostile-txn", pid + 1, e1, 3),
            INVALID_PRODUCER_ID_MAPPING
        );
        assert_eq!(
            end(&c, "hostile-txn", pid, e1, 3),
            INVALID_TXN_STATE,
            "nothing open"
        );
        // The broker still serves.
        assert!(raw::metadata(&s.bootstrap(), None).is_ok());
    }

    /// ListOffsets latest of partition 0 with `isolation` (0 uncommitted, 1 committed).
    fn latest(addr: &str, topic: &str, isolation: i8) -> i64 {
        latest_of(addr, topic, 0, isolation)
    }

    fn latest_of(addr: &str, topic: &str, partition: i32, isolation: i8) -> i64 {
        try_latest_of(addr, topic, partition, isolation)
            .unwrap_or_else(|code| panic!("ListOffsets {topic}-{partition}: error {code}"))
    }

    /// ListOffsets latest, or the partition's error code (e.g. while a restarted broker
    /// opens it).
    fn try_latest_of(addr: &str, topic: &str, partition: i32, isolation: i8) -> Result<i64, i16> {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let mut s = raw::connect(addr).expect("connect");
        let mut p = ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.isolation_level = isolation;
        req.topics = vec![t];
        let r: ListOffsetsResponse =
            raw::call(&mut s, ApiKey::ListOffsets, 5, &req).expect("list offsets");
        let p = &r.topics[0].partitions[0];
        if p.error_code == 0 {
            Ok(p.offset)
        } else {
            Err(p.error_code)
        }
    }

    /// Opens a transaction of `id` (timeout `timeout_ms`) with 5 records in partition 0 of
    /// `topic` and leaves it open, as a producer that disappears does: (producer id, epoch).
    fn abandon_a_transaction(
        b: &str,
        c: &str,
        id: &str,
        topic: &str,
        timeout_ms: i32,
    ) -> (i64, i16) {
        let (pid, epoch) = init_with_timeout(c, id, timeout_ms);
        let mut conn = raw::connect(c).expect("connect");
        let mut t = kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![0];
        let mut req = AddPartitionsToTxnRequest::default();
        req.v3_and_below_transactional_id = TransactionalId(StrBytes::from_string(id.to_string()));
        req.v3_and_below_producer_id = ProducerId(pid);
        req.v3_and_below_producer_epoch = epoch;
        req.v3_and_below_topics = vec![t];
        let r: AddPartitionsToTxnResponse =
            raw::call(&mut conn, ApiKey::AddPartitionsToTxn, 3, &req).expect("add partitions");
        assert_eq!(
            r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
        let mut batch = chronik_storage::testing::build_batch_of(5, 10, b'x', 1_700_000_000_000);
        batch[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
        chronik_storage::testing::set_producer(&mut batch, pid, epoch, 0);
        let (code, _) = crate::common::cluster_util::produce_batch_as(
            b,
            Some(id),
            topic,
            0,
            -1,
            10_000,
            batch.freeze(),
        );
        assert_eq!(code, 0);
        assert_eq!(latest(b, topic, 0), 5);
        (pid, epoch)
    }

    /// Until the LSO of partition 0 of `topic` passes the aborted transaction (its 5 records
    /// and the abort marker), within 20 s.
    fn wait_lso_released(b: &str, topic: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut lso = Err(-1);
        while lso != Ok(6) {
            assert!(
                std::time::Instant::now() < deadline,
                "the LSO stays held back: {lso:?}"
            );
            lso = try_latest_of(b, topic, 0, 1);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// A producer that opens a transaction and disappears holds the LSO back only until the
    /// coordinator aborts the transaction at its timeout.
    #[test]
    fn an_abandoned_transaction_is_aborted_at_its_timeout_and_releases_the_lso() {
        let s = Server::start(&[]);
        let b = s.bootstrap();
        super::create_topic(&b, "txn-expire", 1, 1);
        let c = coordinator_of(&b, "abandoned");
        let (pid, epoch) = abandon_a_transaction(&b, &c, "abandoned", "txn-expire", 1_000);
        // The first read may already come after the abort (1 s timeout, 1 s sweep): 0 or 6.
        let first = latest(&b, "txn-expire", 1);
        assert!(first == 0 || first == 6, "LSO {first}");
        wait_lso_released(&b, "txn-expire");
        // The abort fenced the producer's epoch.
        assert_eq!(end(&c, "abandoned", pid, epoch, 3), PRODUCER_FENCED);
    }

    /// The same when the coordinator is SIGKILLed and restarted while the transaction is open,
    /// and nothing asks about the id afterwards: the restarted broker loads its transaction
    /// state partitions when it leads them, not at the first request for an id, so the
    /// transaction still times out (and one left in a Prepare state still gets its markers).
    #[test]
    fn an_abandoned_transaction_is_aborted_at_its_timeout_after_its_coordinator_restarts() {
        let mut s = Server::start(&[]);
        let b = s.bootstrap();
        super::create_topic(&b, "txn-expire-restart", 1, 1);
        let c = coordinator_of(&b, "abandoned-restart");
        // Long enough that the old process does not abort it before its SIGKILL.
        abandon_a_transaction(&b, &c, "abandoned-restart", "txn-expire-restart", 5_000);
        s.restart();
        wait_lso_released(&b, "txn-expire-restart");
        assert_eq!(
            latest(&b, "txn-expire-restart", 0),
            6,
            "5 records and the abort marker"
        );
    }

    /// KIP-890 part 1: the partition leader asks the coordinator before it appends a
    /// producer's first transactional batch.
    #[test]
    fn a_transactional_write_to_a_partition_never_added_to_the_transaction_is_refused() {
        let s = Server::start(&[]);
        let b = s.bootstrap();
        super::create_topic(&b, "txn-unregistered", 2, 1);
        let c = coordinator_of(&b, "unregistered");
        let (pid, epoch) = init(&c, "unregistered");
        let mut conn = raw::connect(&c).expect("connect");
        let mut t = kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
        t.name = TopicName(StrBytes::from_string("txn-unregistered".to_string()));
        t.partitions = vec![0];
        let mut req = AddPartitionsToTxnRequest::default();
        req.v3_and_below_transactional_id =
            TransactionalId(StrBytes::from_string("unregistered".to_string()));
        req.v3_and_below_producer_id = ProducerId(pid);
        req.v3_and_below_producer_epoch = epoch;
        req.v3_and_below_topics = vec![t];
        let r: AddPartitionsToTxnResponse =
            raw::call(&mut conn, ApiKey::AddPartitionsToTxn, 3, &req).expect("add partitions");
        assert_eq!(
            r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
        let batch = |seq| {
            let mut batch =
                chronik_storage::testing::build_batch_of(3, 10, b'x', 1_700_000_000_000);
            batch[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
            chronik_storage::testing::set_producer(&mut batch, pid, epoch, seq);
            batch.freeze()
        };
        let produce = |id: Option<&str>, partition, seq| {
            crate::common::cluster_util::produce_batch_as(
                &b,
                id,
                "txn-unregistered",
                partition,
                -1,
                10_000,
                batch(seq),
            )
            .0
        };
        let id = Some("unregistered");
        assert_eq!(
            produce(id, 1, 0),
            INVALID_TXN_STATE,
            "partition 1 was never added"
        );
        assert_eq!(
            latest_of(&b, "txn-unregistered", 1, 0),
            0,
            "nothing appended"
        );
        const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
        assert_eq!(
            produce(None, 0, 0),
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "transactional records without a transactional id"
        );
        assert_eq!(produce(id, 0, 0), 0, "partition 0 was added");
        assert_eq!(produce(id, 0, 3), 0, "the transaction is open there now");
        assert_eq!(latest_of(&b, "txn-unregistered", 0, 0), 6);
        // Verifying is for brokers: a client's AddPartitionsToTxn v4 is refused.
        let mut v = kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default();
        v.transactional_id = TransactionalId(StrBytes::from_string("unregistered".to_string()));
        v.producer_id = ProducerId(pid);
        v.producer_epoch = epoch;
        v.verify_only = true;
        let mut req = AddPartitionsToTxnRequest::default();
        req.transactions = vec![v];
        let r: AddPartitionsToTxnResponse =
            raw::call(&mut conn, ApiKey::AddPartitionsToTxn, 4, &req).expect("answered");
        assert_eq!(r.error_code, CLUSTER_AUTHORIZATION_FAILED);
    }

    #[test]
    fn describe_and_list_transactions_show_an_open_transaction() {
        let s = Server::start(&[]);
        let b = s.bootstrap();
        super::create_topic(&b, "txn-described", 2, 1);
        let c = coordinator_of(&b, "described");
        let (pid, epoch) = init(&c, "described");
        let mut conn = raw::connect(&c).expect("connect");
        let mut t = kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
        t.name = TopicName(StrBytes::from_string("txn-described".to_string()));
        t.partitions = vec![1];
        let mut req = AddPartitionsToTxnRequest::default();
        req.v3_and_below_transactional_id =
            TransactionalId(StrBytes::from_string("described".to_string()));
        req.v3_and_below_producer_id = ProducerId(pid);
        req.v3_and_below_producer_epoch = epoch;
        req.v3_and_below_topics = vec![t];
        let _: AddPartitionsToTxnResponse =
            raw::call(&mut conn, ApiKey::AddPartitionsToTxn, 3, &req).expect("add partitions");
        let mut d = DescribeTransactionsRequest::default();
        d.transactional_ids = vec![
            TransactionalId(StrBytes::from_string("described".to_string())),
            TransactionalId(StrBytes::from_string("never-seen".to_string())),
        ];
        let r: DescribeTransactionsResponse =
            raw::call(&mut conn, ApiKey::DescribeTransactions, 0, &d).expect("describe");
        let st = &r.transaction_states[0];
        assert_eq!(
            (st.error_code, st.transaction_state.as_str()),
            (0, "Ongoing")
        );
        assert_eq!((st.producer_id.0, st.producer_epoch), (pid, epoch));
        assert_eq!(st.topics[0].topic.0.as_str(), "txn-described");
        assert_eq!(st.topics[0].partitions, vec![1]);
        const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
        assert_eq!(
            r.transaction_states[1].error_code,
            TRANSACTIONAL_ID_NOT_FOUND
        );
        let mut l = ListTransactionsRequest::default();
        l.state_filters = vec![
            StrBytes::from_string("Ongoing".to_string()),
            StrBytes::from_string("Bogus".to_string()),
        ];
        l.duration_filter = -1;
        let r: ListTransactionsResponse =
            raw::call(&mut conn, ApiKey::ListTransactions, 1, &l).expect("list");
        assert_eq!(r.unknown_state_filters.len(), 1);
        let ids: Vec<&str> = r
            .transaction_states
            .iter()
            .map(|t| t.transactional_id.0.as_str())
            .collect();
        assert_eq!(ids, vec!["described"]);
    }
}
