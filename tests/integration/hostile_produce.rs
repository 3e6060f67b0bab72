//! Hostile record batches and client writes to internal topics, sent to a real chronik-server:
//! each is refused with the error Kafka answers, the log is left as it was, and the broker keeps
//! serving; a poisoned `__consumer_offsets` record already on disk is skipped at load.

use crate::common::cluster_util::{create, produce_batch, produce_once};
use crate::common::{raw, Server};
use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const NONE: i16 = 0;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const INVALID_TIMESTAMP: i16 = 32;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;
const OFFSETS: &str = "__consumer_offsets";
/// RLE blocks of 128 KiB in a zstd bomb: 800 KB on the wire (under the 1 MB message limit, which
/// would refuse a larger one before it is looked at), 26 GB inflated.
const BOMB_BLOCKS: usize = 200_000;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// The records section of a valid uncompressed batch of `n` small records.
fn plain_records(n: usize) -> Vec<u8> {
    chronik_storage::testing::build_batch_of(n, 10, b'v', 1_700_000_000_000)[61..].to_vec()
}

/// A batch around `section` with a correct length and CRC, so only what is inside is wrong.
fn batch(section: &[u8], count: i32, last_delta: i32, attributes: i16) -> Bytes {
    let mut b = Vec::with_capacity(61 + section.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&last_delta.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&(1_700_000_000_000i64 + i64::from(last_delta.max(0))).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(section);
    seal(&mut b);
    Bytes::from(b)
}

fn seal(b: &mut [u8]) {
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A zstd frame (window 128 KiB, no content size) of one raw block of `prefix`, then `blocks`
/// RLE blocks of 128 KiB of `byte`: 4 bytes per 128 KiB, built by hand.
fn zstd_frame(prefix: &[u8], blocks: usize, byte: u8) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x38];
    if !prefix.is_empty() {
        let hdr = ((prefix.len() as u32) << 3) | u32::from(blocks == 0);
        out.extend_from_slice(&hdr.to_le_bytes()[..3]);
        out.extend_from_slice(prefix);
    }
    for i in 0..blocks {
        let hdr = (131_072u32 << 3) | (1 << 1) | u32::from(i + 1 == blocks);
        out.extend_from_slice(&hdr.to_le_bytes()[..3]);
        out.push(byte);
    }
    out
}

/// One record with a null key, `value` and the raw header-count varint `headers` (no headers).
fn record_with_header_count(value: &[u8], headers: i64) -> Vec<u8> {
    let mut body = vec![0u8, 0, 0];
    put_varint(&mut body, -1);
    put_varint(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    put_varint(&mut body, headers);
    let mut out = Vec::new();
    put_varint(&mut out, body.len() as i64);
    out.extend(body);
    out
}

/// The hostile batches of issue 18 and Kafka's answer to each.
fn hostile_batches() -> Vec<(&'static str, Bytes, i16)> {
    let three = plain_records(3);
    let mut lying_length = three.clone();
    lying_length[0] += 4; // the first record claims 2 more bytes than its fields
    let junk: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
    let mut gzip_junk = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff];
    gzip_junk.extend_from_slice(&junk);
    let mut zstd_junk = vec![0x28, 0xB5, 0x2F, 0xFD];
    zstd_junk.extend_from_slice(&junk);
    // A record claiming a 2 GB value, its bytes an RLE run: well framed, so only the bound on
    // decompressed bytes stops it.
    let mut huge_value = Vec::new();
    put_varint(&mut huge_value, i64::from(i32::MAX));
    huge_value.extend_from_slice(&[0, 0, 0, 1]);
    put_varint(&mut huge_value, i64::from(i32::MAX) - 10);
    let out_of_order = {
        // Two records whose offset deltas are 0 and 2.
        let mut s = record_with_header_count(b"a", 0);
        let mut second = record_with_header_count(b"b", 0);
        second[3] = 4; // offset delta 2 (zig-zag)
        s.extend(second);
        s
    };
    let mut bad_crc = batch(&three, 3, 2, 0).to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    vec![
        (
            "count 1000 with 3 records",
            batch(&three, 1000, 999, 0),
            INVALID_RECORD,
        ),
        (
            "count 2^31-1 with 3 records",
            batch(&three, i32::MAX, i32::MAX - 1, 0),
            INVALID_RECORD,
        ),
        ("garbage gzip", batch(&gzip_junk, 3, 2, 1), CORRUPT_MESSAGE),
        ("garbage zstd", batch(&zstd_junk, 3, 2, 4), CORRUPT_MESSAGE),
        ("codec 7", batch(&three, 3, 2, 7), CORRUPT_MESSAGE),
        (
            "lying record length",
            batch(&lying_length, 3, 2, 0),
            INVALID_RECORD,
        ),
        (
            "zstd bomb: 800 KB of zeros inflating to 26 GB",
            batch(&zstd_frame(&[], BOMB_BLOCKS, 0), 1000, 999, 4),
            INVALID_RECORD,
        ),
        (
            "zstd bomb of one 2 GB value",
            batch(&zstd_frame(&huge_value, BOMB_BLOCKS, b'x'), 1, 0, 4),
            MESSAGE_TOO_LARGE,
        ),
        (
            "header count 2^31-1",
            batch(
                &record_with_header_count(b"v", i64::from(i32::MAX)),
                1,
                0,
                0,
            ),
            INVALID_RECORD,
        ),
        (
            "offset deltas 0, 2",
            batch(&out_of_order, 2, 1, 0),
            INVALID_RECORD,
        ),
        ("bad CRC", Bytes::from(bad_crc), CORRUPT_MESSAGE),
        ("control batch", batch(&three, 3, 2, 0x20), INVALID_RECORD),
        (
            "LogAppendTime from a producer",
            batch(&three, 3, 2, 0x08),
            INVALID_TIMESTAMP,
        ),
    ]
}

/// The partition's latest offset as a consumer sees it (ListOffsets, timestamp -1).
fn latest(addr: &str, topic: &str, partition: i32) -> i64 {
    let mut s = raw::connect(addr).expect("connect");
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(sb(topic));
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = -1;
    p.current_leader_epoch = -1;
    t.partitions = vec![p];
    req.topics = vec![t];
    let r: ListOffsetsResponse =
        raw::call(&mut s, ApiKey::ListOffsets, 4, &req).expect("list offsets");
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, NONE, "list offsets of {topic}-{partition}");
    p.offset
}

/// One Produce of several partitions of `topic` at `version`; the error code of each.
fn produce_partitions(
    addr: &str,
    topic: &str,
    version: i16,
    batches: Vec<(i32, Bytes)>,
) -> Vec<i16> {
    let mut s = raw::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut td = TopicProduceData::default();
    td.name = TopicName(sb(topic));
    for (index, b) in batches {
        let mut pd = PartitionProduceData::default();
        pd.index = index;
        pd.records = Some(b);
        td.partition_data.push(pd);
    }
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let r: ProduceResponse = raw::call(&mut s, ApiKey::Produce, version, &req).expect("produce");
    r.responses[0]
        .partition_responses
        .iter()
        .map(|p| p.error_code)
        .collect()
}

fn start() -> Server {
    Server::start(&["--cores", "2", "--offsets-topic-num-partitions", "1"])
}

fn create_topic(s: &Server, name: &str, partitions: i32) {
    create(
        &s.bootstrap(),
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
    );
}

#[test]
fn hostile_batches_are_refused_with_kafkas_codes_and_leave_the_log_untouched() {
    let s = start();
    let addr = s.bootstrap();
    create_topic(&s, "t", 1);
    assert_eq!(produce_once(&addr, "t", 0, -1, 10_000, 5), (NONE, 0));
    for (what, b, code) in hostile_batches() {
        let (got, _) = produce_batch(&addr, "t", 0, -1, 10_000, b);
        if got != code {
            s.print_log_tail(20);
        }
        assert_eq!(got, code, "{what}");
        assert_eq!(
            latest(&addr, "t", 0),
            5,
            "{what} left the log end where it was"
        );
    }
    // A zstd batch in a Produce older than v7 is refused as Kafka does.
    let zstd_ok = batch(&zstd_frame(&plain_records(2), 0, 0), 2, 1, 4);
    assert_eq!(
        produce_partitions(&addr, "t", 6, vec![(0, zstd_ok.clone())]),
        vec![UNSUPPORTED_COMPRESSION_TYPE]
    );
    // The same zstd batch at v9, and an ordinary producer, still go through.
    assert_eq!(produce_batch(&addr, "t", 0, -1, 10_000, zstd_ok), (NONE, 5));
    assert_eq!(produce_once(&addr, "t", 0, -1, 10_000, 3), (NONE, 7));
    assert_eq!(latest(&addr, "t", 0), 10);
}

#[test]
fn a_hostile_batch_fails_only_its_own_partition_of_the_request() {
    let s = start();
    let addr = s.bootstrap();
    create_topic(&s, "two", 2);
    let good = chronik_storage::testing::build_batch_of(4, 10, b'g', 1_700_000_000_000).freeze();
    let lie = batch(&plain_records(3), 1000, 999, 0);
    assert_eq!(
        produce_partitions(&addr, "two", 9, vec![(0, lie), (1, good)]),
        vec![INVALID_RECORD, NONE]
    );
    assert_eq!(latest(&addr, "two", 0), 0);
    assert_eq!(latest(&addr, "two", 1), 4);
}

/// FindCoordinator (creating `__consumer_offsets`), then a connection to the coordinator.
fn coordinator(addr: &str, group: &str) -> TcpStream {
    let mut s = raw::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = FindCoordinatorRequest::default();
        req.key = sb(group);
        let r: FindCoordinatorResponse =
            raw::call(&mut s, ApiKey::FindCoordinator, 3, &req).expect("find coordinator");
        if r.error_code == NONE {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "FindCoordinator: {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A simple (group-less) commit of `offset` for t-0, retried while the coordinator loads.
fn commit(s: &mut TcpStream, group: &str, offset: i64) -> i16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(sb(group));
        req.generation_id_or_member_epoch = -1;
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = TopicName(sb("t"));
        let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = offset;
        t.partitions.push(p);
        req.topics.push(t);
        let r: OffsetCommitResponse =
            raw::call(s, ApiKey::OffsetCommit, 7, &req).expect("offset commit");
        let code = r.topics[0].partitions[0].error_code;
        // 14 COORDINATOR_LOAD_IN_PROGRESS, 15 COORDINATOR_NOT_AVAILABLE: retriable.
        if !(code == 14 || code == 15) || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The committed offset of t-0 for `group` (-1 if none), retried while the coordinator loads.
fn committed(s: &mut TcpStream, group: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = OffsetFetchRequest::default();
        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
        g.group_id = GroupId(sb(group));
        g.topics = None;
        req.groups.push(g);
        let r: OffsetFetchResponse =
            raw::call(s, ApiKey::OffsetFetch, 8, &req).expect("offset fetch");
        let code = r.groups[0].error_code;
        if code == NONE {
            return r.groups[0]
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .map_or(-1, |p| p.committed_offset);
        }
        assert!(
            (code == 14 || code == 15) && Instant::now() < deadline,
            "OffsetFetch: {code}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn clients_cannot_produce_to_delete_or_trim_internal_topics_and_groups_still_commit() {
    let s = start();
    let addr = s.bootstrap();
    create_topic(&s, "t", 1);
    let mut c = coordinator(&addr, "g");
    assert_eq!(commit(&mut c, "g", 7), NONE);
    let offsets_end = latest(&addr, OFFSETS, 0);

    // Produce: refused before anything else is looked at (a well-formed batch).
    let good = chronik_storage::testing::build_batch_of(1, 10, b'x', 1_700_000_000_000).freeze();
    assert_eq!(
        produce_batch(&addr, OFFSETS, 0, -1, 10_000, good.clone()).0,
        INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(
        produce_batch(
            &addr,
            OFFSETS,
            0,
            -1,
            10_000,
            batch(&plain_records(3), 1000, 999, 0)
        )
        .0,
        INVALID_TOPIC_EXCEPTION
    );
    // __transaction_state does not exist: refused, and not auto-created by the attempt.
    assert_eq!(
        produce_batch(&addr, "__transaction_state", 0, -1, 10_000, good).0,
        INVALID_TOPIC_EXCEPTION
    );
    let md = raw::metadata(&addr, None).expect("metadata");
    assert!(
        !md.topics.iter().any(|t| t
            .name
            .as_ref()
            .is_some_and(|n| n.0.as_str() == "__transaction_state")),
        "a refused produce created __transaction_state"
    );

    // DeleteTopics by name: refused, the topic survives.
    let mut s2 = raw::connect(&addr).expect("connect");
    let mut req = DeleteTopicsRequest::default();
    let mut t = DeleteTopicState::default();
    t.name = Some(TopicName(sb(OFFSETS)));
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let r: DeleteTopicsResponse =
        raw::call(&mut s2, ApiKey::DeleteTopics, 6, &req).expect("delete topics");
    assert_eq!(r.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = vec![TopicName(sb(OFFSETS))];
    req.timeout_ms = 10_000;
    let r: DeleteTopicsResponse =
        raw::call(&mut s2, ApiKey::DeleteTopics, 5, &req).expect("delete topics");
    assert_eq!(r.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    let md = raw::metadata(&addr, Some(vec![OFFSETS])).expect("metadata");
    assert_eq!(md.topics[0].error_code, NONE, "{OFFSETS} survives");

    // DeleteRecords: refused, the log start stays.
    let mut req = DeleteRecordsRequest::default();
    let mut t = DeleteRecordsTopic::default();
    t.name = TopicName(sb(OFFSETS));
    let mut p = DeleteRecordsPartition::default();
    p.partition_index = 0;
    p.offset = -1;
    t.partitions = vec![p];
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let r: DeleteRecordsResponse =
        raw::call(&mut s2, ApiKey::DeleteRecords, 2, &req).expect("delete records");
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(
        latest(&addr, OFFSETS, 0),
        offsets_end,
        "nothing was written"
    );

    // The coordinator's own writes go on.
    assert_eq!(commit(&mut c, "g", 8), NONE);
    assert_eq!(committed(&mut c, "g"), 8);
}

/// Appends `batches` to the active segment of `dir` after its last batch, as a disk written
/// before the produce guard existed would hold them; each gets its offsets and leader epoch.
fn append_to_segment(dir: &Path, batches: &[Bytes]) {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let seg = segs.last().expect("a segment").clone();
    let mut data = std::fs::read(&seg).expect("read segment");
    let (mut pos, mut next, mut epoch) = (0usize, 0i64, 0i32);
    while pos + 61 <= data.len() {
        let base = i64::from_be_bytes(data[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap());
        if len <= 0 {
            break;
        }
        let delta = i32::from_be_bytes(data[pos + 23..pos + 27].try_into().unwrap());
        epoch = i32::from_be_bytes(data[pos + 12..pos + 16].try_into().unwrap());
        next = base + i64::from(delta) + 1;
        pos += 12 + len as usize;
    }
    assert!(next > 0, "the segment holds the committed offset");
    data.truncate(pos);
    for b in batches {
        let mut b = b.to_vec();
        b[0..8].copy_from_slice(&next.to_be_bytes());
        b[12..16].copy_from_slice(&epoch.to_be_bytes());
        let delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        next += i64::from(delta) + 1;
        data.extend_from_slice(&b);
    }
    std::fs::write(&seg, data).expect("write segment");
}

#[test]
fn a_poisoned_consumer_offsets_record_on_disk_is_skipped_and_the_broker_restarts() {
    let mut s = start();
    let addr = s.bootstrap();
    create_topic(&s, "t", 1);
    let mut c = coordinator(&addr, "g");
    assert_eq!(commit(&mut c, "g", 42), NONE);
    drop(c);
    assert_eq!(s.terminate(), Some(0));

    // Records in Kafka's offsets key format would be applied if they decoded; these do not.
    let poison = vec![
        batch(
            &record_with_header_count(b"v", i64::from(i32::MAX)),
            1,
            0,
            0,
        ),
        batch(&zstd_frame(&[], BOMB_BLOCKS, 0), 1000, 999, 4),
        batch(&plain_records(3), 1000, 999, 0),
        batch(&[0xde, 0xad, 0xbe, 0xef], 1, 0, 1),
    ];
    append_to_segment(&s.data_dir.join(format!("{OFFSETS}-0")), &poison);

    s.spawn();
    s.wait_ready(1);
    let mut c = coordinator(&addr, "g");
    assert_eq!(
        committed(&mut c, "g"),
        42,
        "the commit before the poison is loaded"
    );
    assert_eq!(commit(&mut c, "g", 43), NONE);
    assert_eq!(committed(&mut c, "g"), 43);
    drop(c);

    // And once more from disk, the new commit after the poison included.
    s.kill();
    s.spawn();
    s.wait_ready(1);
    let mut c = coordinator(&addr, "g");
    assert_eq!(committed(&mut c, "g"), 43);
}
