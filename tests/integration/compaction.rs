//! Log compaction with real chronik-server processes and librdkafka clients: a compacted
//! topic keeps the latest value of each key, survives SIGKILL during cleaning, and every
//! replica of a 3-node cluster serves the same key set after the leader dies.

use crate::common::cluster_util::{
    create, isr_of, leader_of, local_bytes, local_leo, wait_until, FAST,
};
use crate::common::{Cluster, Server};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const KEYS: usize = 100;
const VERSIONS: usize = 50;
/// k0..k9 end with a tombstone.
const TOMBSTONED: usize = 10;

/// Fast cleaning: the cleaner looks for work every 100 ms.
const CLEANER: &[&str] = &["--cores", "2", "--log-cleaner-backoff-ms", "100"];

fn compacted_topic(name: &str, replicas: i32) -> NewTopic<'_> {
    NewTopic::new(name, 1, TopicReplication::Fixed(replicas))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "8192")
        .set("segment.ms", "200")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "0")
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    producer_with(bootstrap, "none")
}

/// A producer compressing its batches with `compression` (librdkafka's compression.type).
fn producer_with(bootstrap: &str, compression: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", compression)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, value: Option<&str>) {
    loop {
        let mut r = BaseRecord::<str, str>::to(topic).key(key).partition(0);
        if let Some(v) = value {
            r = r.payload(v);
        }
        match p.send(r) {
            Ok(()) => return,
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

/// Writes `versions` versions of every key, starting at version `from`; with `tombstones`, the
/// last version of k0..k9 is a tombstone. Then, once segment.ms has passed, one record that
/// rolls the log so all of it sits in sealed (cleanable) segments.
fn write_versions(bootstrap: &str, topic: &str, from: usize, versions: usize, tombstones: bool) {
    write_versions_with(bootstrap, topic, from, versions, tombstones, "none")
}

fn write_versions_with(
    bootstrap: &str,
    topic: &str,
    from: usize,
    versions: usize,
    tombstones: bool,
    compression: &str,
) {
    let p = producer_with(bootstrap, compression);
    for v in from..from + versions {
        for i in 0..KEYS {
            let last = v == from + versions - 1;
            let value = format!("k{i}-v{v}");
            let value = (!(tombstones && last && i < TOMBSTONED)).then_some(value.as_str());
            send(&p, topic, &format!("k{i}"), value);
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    std::thread::sleep(Duration::from_millis(400));
    send(&p, topic, "roll", Some("roll"));
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Every record of partition 0 from the beginning up to the high watermark:
/// (offset, key, value).
fn read_all(bootstrap: &str, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        // Retention may delete the segment being read (OFFSET_OUT_OF_RANGE): go on from the new
        // log start, not from the end, where the last record would never come.
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let (_, high) = c
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if out.last().is_some_and(|(o, _, _)| *o >= high - 1) {
            break;
        }
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            ));
        }
    }
    assert!(
        out.last().is_some_and(|(o, _, _)| *o >= high - 1),
        "read up to the high watermark {high}"
    );
    out
}

/// The latest (offset, value) of each key, checking offsets strictly increase (no duplicate).
fn latest(recs: &[(i64, String, Option<String>)]) -> BTreeMap<String, (i64, Option<String>)> {
    let mut m = BTreeMap::new();
    let mut prev = -1;
    for (o, k, v) in recs {
        assert!(
            *o > prev,
            "offset {o} after {prev}: duplicated or out of order"
        );
        prev = *o;
        m.insert(k.clone(), (*o, v.clone()));
    }
    m
}

/// Whether the log is fully compacted: one record per key with the latest value of version
/// `last`, tombstoned keys gone.
fn compacted(recs: &[(i64, String, Option<String>)], last: usize, tombstones: bool) -> bool {
    let keyed: Vec<_> = recs.iter().filter(|(_, k, _)| k != "roll").collect();
    let live = if tombstones { KEYS - TOMBSTONED } else { KEYS };
    keyed.len() == live
        && keyed.iter().all(|(_, k, v)| {
            let i: usize = k[1..].parse().unwrap_or(usize::MAX);
            v.as_deref() == Some(format!("k{i}-v{last}").as_str())
        })
}

/// Every key's latest value is the one written last: nothing was lost.
fn assert_latest_values(recs: &[(i64, String, Option<String>)], last: usize, tombstones: bool) {
    let l = latest(recs);
    for i in 0..KEYS {
        let k = format!("k{i}");
        if tombstones && i < TOMBSTONED {
            assert!(
                l.get(&k).is_none_or(|(_, v)| v.is_none()),
                "{k} was deleted"
            );
        } else {
            assert_eq!(
                l.get(&k).map(|(_, v)| v.clone()),
                Some(Some(format!("k{i}-v{last}"))),
                "latest value of {k}"
            );
        }
    }
}

fn wait_compacted(bootstrap: &str, topic: &str, last: usize, tombstones: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let recs = read_all(bootstrap, topic);
        assert_latest_values(&recs, last, tombstones);
        if compacted(&recs, last, tombstones) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted within 60 s: {} records",
            recs.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn log_bytes(dir: &std::path::Path) -> u64 {
    topic_log_bytes(dir, "compact-me")
}

/// Bytes of the segment files of topics whose name contains `topic`.
fn topic_log_bytes(dir: &std::path::Path, topic: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".log") && p.to_string_lossy().contains(topic) {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

#[test]
fn a_compacted_topic_keeps_only_the_latest_value_of_each_key_and_drops_tombstones() {
    let s = Server::start(CLEANER);
    let b = s.bootstrap();
    create(&b, compacted_topic("compact-me", 1));
    write_versions(&b, "compact-me", 0, VERSIONS, true);
    wait_compacted(&b, "compact-me", VERSIONS - 1, true);
    // Disk use drops with the records (only the active segment is left uncleaned).
    wait_until("segment files shrink", 30, || {
        log_bytes(&s.data_dir) < 64 * 1024
    });
}

#[test]
fn compressed_batches_of_every_codec_are_cleaned_and_read_back_with_the_latest_values() {
    let s = Server::start(CLEANER);
    let b = s.bootstrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        // The same records in a topic that is not compacted: what the disk would hold.
        let reference = format!("uncompacted-{codec}");
        create(
            &b,
            NewTopic::new(&reference, 1, TopicReplication::Fixed(1)).set("segment.bytes", "8192"),
        );
        write_versions_with(&b, &reference, 0, VERSIONS, true, codec);
        let topic = format!("compressed-{codec}");
        create(&b, compacted_topic(&topic, 1));
        write_versions_with(&b, &topic, 0, VERSIONS, true, codec);
        wait_compacted(&b, &topic, VERSIONS - 1, true);
        // Kept records are compressed again with their codec: less than half is left. (What is
        // left includes the uncleaned active segment, about 4.7 KB whatever the codec, while the
        // uncompacted size depends on how well the producer's batches compressed: 21-51 KB.)
        let full = topic_log_bytes(&s.data_dir, &reference);
        let mut now = 0;
        wait_until(&format!("{codec}: segment files shrink"), 120, || {
            now = topic_log_bytes(&s.data_dir, &topic);
            now * 2 < full
        });
        println!("{codec}: {full} bytes uncompacted, {now} compacted");
    }
}

#[test]
fn a_delete_topic_is_not_compacted() {
    let s = Server::start(CLEANER);
    let b = s.bootstrap();
    create(
        &b,
        NewTopic::new("plain", 1, TopicReplication::Fixed(1))
            .set("segment.bytes", "8192")
            .set("segment.ms", "200"),
    );
    write_versions(&b, "plain", 0, 5, false);
    std::thread::sleep(Duration::from_secs(2));
    let recs = read_all(&b, "plain");
    assert_eq!(recs.len(), KEYS * 5 + 1, "every record is still there");
}

#[test]
fn sigkill_during_cleaning_loses_nothing_and_duplicates_nothing() {
    let mut s = Server::start(CLEANER);
    let b = s.bootstrap();
    create(&b, compacted_topic("compact-me", 1));
    let mut version = 0;
    for round in 0..5u64 {
        write_versions(&b, "compact-me", version, 10, false);
        version += 10;
        // Kill at a different moment of the cleaning each time.
        std::thread::sleep(Duration::from_millis(50 + round * 70));
        s.kill();
        s.spawn();
        s.wait_ready(1);
        let recs = read_all(&b, "compact-me");
        assert_latest_values(&recs, version - 1, false);
    }
    wait_compacted(&b, "compact-me", version - 1, false);
}

#[test]
fn after_compaction_a_new_leader_serves_the_same_key_set_and_a_wiped_replica_copies_its_gaps() {
    let mut extra: Vec<&str> = FAST.to_vec();
    extra.extend_from_slice(CLEANER);
    let mut c = Cluster::start(3, &extra);
    let b = c.nodes[0].bootstrap();
    create(&b, compacted_topic("compact-me", 3));
    write_versions(&c.bootstrap(), "compact-me", 0, VERSIONS, true);
    wait_compacted(&c.bootstrap(), "compact-me", VERSIONS - 1, true);
    let on_leader = latest(&read_all(&c.bootstrap(), "compact-me"));
    let leader = leader_of(&b, "compact-me", 0);
    c.node(leader).kill();
    let other = c
        .nodes
        .iter()
        .find(|n| n.node_id != leader)
        .expect("another node")
        .bootstrap();
    wait_until("a new leader", 30, || {
        let l = leader_of(&other, "compact-me", 0);
        l > 0 && l != leader
    });
    let alive: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.node_id != leader)
        .map(|n| n.bootstrap())
        .collect();
    let alive = alive.join(",");
    // The new leader compacts its own copy: the same keys with the same latest values.
    wait_compacted(&alive, "compact-me", VERSIONS - 1, true);
    let on_new = latest(&read_all(&alive, "compact-me"));
    let keys = |m: &BTreeMap<String, (i64, Option<String>)>| -> Vec<(String, Option<String>)> {
        m.iter()
            .filter(|(k, _)| *k != "roll")
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(keys(&on_leader), keys(&on_new));

    // The old leader comes back with an empty disk: it copies the new leader's compacted log,
    // gaps included, and ends with the same bytes.
    let dir = c.node(leader).data_dir.clone();
    std::fs::remove_dir_all(&dir).expect("wipe the old leader");
    c.node(leader).spawn();
    c.node(leader).wait_ready(3);
    let new_leader = leader_of(&other, "compact-me", 0);
    let laddr = c.node(new_leader).bootstrap();
    let waddr = c.node(leader).bootstrap();
    wait_until("the wiped replica back in the ISR", 60, || {
        isr_of(&other, "compact-me", 0).len() == 3
    });
    let end = local_leo(&laddr, "compact-me", 0);
    wait_until("the wiped replica at the leader's end", 60, || {
        local_leo(&waddr, "compact-me", 0) == end
    });
    let want = local_bytes(&laddr, "compact-me", 0, end);
    let got = local_bytes(&waddr, "compact-me", 0, end);
    assert!(
        (on_new.len() as i64) < end,
        "the compacted log has gaps: {} records below {end}",
        on_new.len()
    );
    assert!(got == want, "the wiped replica holds the leader's bytes");
}

#[test]
fn a_compact_delete_topic_also_drops_old_segments_by_time() {
    let s = Server::start(CLEANER);
    let b = s.bootstrap();
    create(
        &b,
        compacted_topic("compact-delete", 1)
            .set("cleanup.policy", "compact,delete")
            .set("retention.ms", "1000"),
    );
    write_versions(&b, "compact-delete", 0, 5, false);
    // Compaction keeps the latest value of every key ...
    wait_compacted(&b, "compact-delete", 4, false);
    // ... and retention then removes the segments holding them once they are older than
    // retention.ms (checked every 30 s), though no newer value replaced them.
    std::thread::sleep(Duration::from_millis(1200));
    let p = producer(&b);
    send(&p, "compact-delete", "late", Some("late"));
    p.flush(Duration::from_secs(30)).expect("flush");
    wait_until("old segments deleted by time", 60, || {
        read_all(&b, "compact-delete")
            .iter()
            .all(|(_, k, _)| !k.starts_with('k'))
    });
    let recs = read_all(&b, "compact-delete");
    assert!(
        recs.iter().any(|(_, k, _)| k == "late"),
        "the new record stays: {recs:?}"
    );
}
