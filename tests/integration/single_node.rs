//! One real chronik-server, real librdkafka clients (rdkafka crate).

use crate::common::Server;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let a = admin(bootstrap);
    let r = block_on(a.create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create_topics");
    assert!(r[0].is_ok(), "create {name}: {:?}", r[0]);
}

/// (key, value, headers, offset) of one consumed message.
type Consumed = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Vec<u8>)>,
    i64,
);

/// Reads every message of `partition` from offset 0 until `count` arrived (or 30 s).
fn read_partition(bootstrap: &str, topic: &str, partition: i32, count: usize) -> Vec<Consumed> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < count && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume error");
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                headers,
                m.offset(),
            ));
        }
    }
    out
}

#[test]
fn ten_thousand_keyed_messages_with_headers_round_trip_in_order() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "orders", 3);
    let p = producer(&b, &[]);
    let mut sent: HashMap<i32, Vec<String>> = HashMap::new();
    for i in 0..10_000i32 {
        let key = format!("key-{}", i % 97);
        let value = format!("value-{i}");
        let part = i % 3;
        sent.entry(part).or_default().push(value.clone());
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(&i.to_string()),
        });
        loop {
            match p.send(
                BaseRecord::to("orders")
                    .key(&key)
                    .payload(&value)
                    .partition(part)
                    .headers(headers.clone()),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
    }
    assert_eq!(p.flush(Duration::from_secs(30)), Ok(()));
    assert_eq!(p.in_flight_count(), 0);
    for part in 0..3 {
        let want = &sent[&part];
        let got = read_partition(&b, "orders", part, want.len());
        assert_eq!(got.len(), want.len(), "partition {part} count");
        for (i, (k, v, h, off)) in got.iter().enumerate() {
            assert_eq!(*off, i as i64, "offsets contiguous");
            assert_eq!(
                v.as_deref(),
                Some(want[i].as_bytes()),
                "partition {part} order"
            );
            assert!(k.as_ref().is_some_and(|k| k.starts_with(b"key-")));
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].0, "seq");
        }
    }
}

#[test]
fn every_compression_codec_is_stored_and_served_as_sent() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&b, &topic, 1);
        let p = producer(&b, &[("compression.type", codec), ("linger.ms", "50")]);
        for i in 0..500 {
            p.send(
                BaseRecord::<str, str>::to(&topic)
                    .payload(&format!("{codec} message {i} {}", "x".repeat(100)))
                    .partition(0),
            )
            .expect("send");
        }
        p.flush(Duration::from_secs(30)).expect("flush");
        let got = read_partition(&b, &topic, 0, 500);
        assert_eq!(got.len(), 500, "{codec}");
        for (i, m) in got.iter().enumerate() {
            assert!(m
                .1
                .as_ref()
                .unwrap()
                .starts_with(format!("{codec} message {i} ").as_bytes()));
        }
    }
}

#[test]
fn large_messages_and_null_keys_and_values() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "big", 1);
    let p = producer(&b, &[("message.max.bytes", "2000000")]);
    let big = vec![7u8; 900 * 1024];
    for _ in 0..3 {
        p.send(
            BaseRecord::<[u8], [u8]>::to("big")
                .payload(&big[..])
                .partition(0),
        )
        .expect("send");
    }
    p.send(BaseRecord::<[u8], [u8]>::to("big").partition(0))
        .expect("null key and value");
    p.send(
        BaseRecord::<[u8], [u8]>::to("big")
            .key(&b"k"[..])
            .partition(0),
    )
    .expect("null value");
    p.flush(Duration::from_secs(30)).expect("flush");
    let got = read_partition(&b, "big", 0, 5);
    assert_eq!(got.len(), 5);
    for m in &got[..3] {
        assert_eq!(m.1.as_deref(), Some(&big[..]));
    }
    assert_eq!((got[3].0.clone(), got[3].1.clone()), (None, None));
    assert_eq!(
        (got[4].0.as_deref(), got[4].1.clone()),
        (Some(&b"k"[..]), None)
    );
}

#[test]
fn oversized_batch_is_refused_with_message_too_large() {
    let s = Server::start(&["--message-max-bytes", "100000"]);
    let b = s.bootstrap();
    create_topic(&b, "small", 1);
    let p: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("message.max.bytes", "2000000")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let big = vec![1u8; 200_000];
    let r = block_on(
        p.send(
            rdkafka::producer::FutureRecord::<[u8], [u8]>::to("small")
                .payload(&big[..])
                .partition(0),
            Duration::from_secs(10),
        ),
    );
    let err = r.expect_err("oversized must fail").0;
    assert_eq!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "{err}"
    );
    // the broker still works afterwards
    let r = block_on(
        p.send(
            rdkafka::producer::FutureRecord::<[u8], [u8]>::to("small")
                .payload(&b"ok"[..])
                .partition(0),
            Duration::from_secs(10),
        ),
    );
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn list_offsets_earliest_latest_and_by_time() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "times", 1);
    let p = producer(&b, &[("linger.ms", "0")]);
    let base = 1_700_000_000_000i64;
    for i in 0..10 {
        p.send(
            BaseRecord::<str, str>::to("times")
                .payload("x")
                .partition(0)
                .timestamp(base + i * 1000),
        )
        .expect("send");
        p.flush(Duration::from_secs(10)).expect("flush");
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "x")
        .create()
        .unwrap();
    let (lo, hi) = c
        .fetch_watermarks("times", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((lo, hi), (0, 10));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(base + 4500))
        .unwrap();
    let r = c
        .offsets_for_times(tpl, Duration::from_secs(10))
        .expect("offsets_for_times");
    assert_eq!(
        r.find_partition("times", 0).unwrap().offset(),
        Offset::Offset(5)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(base + 100_000))
        .unwrap();
    let r = c
        .offsets_for_times(tpl, Duration::from_secs(10))
        .expect("offsets_for_times");
    assert_eq!(r.find_partition("times", 0).unwrap().offset(), Offset::End);
}

#[test]
fn idempotent_producer_writes_each_message_once() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "idem", 1);
    let p = producer(
        &b,
        &[
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("linger.ms", "1"),
        ],
    );
    for i in 0..5000 {
        loop {
            match p.send(
                BaseRecord::<str, str>::to("idem")
                    .payload(&i.to_string())
                    .partition(0),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let got = read_partition(&b, "idem", 0, 5000);
    assert_eq!(got.len(), 5000);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.1.as_deref(), Some(i.to_string().as_bytes()));
    }
}

#[test]
fn auto_create_delete_topics_and_bad_names() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    let p = producer(&b, &[]);
    // producing to an unknown topic creates it
    p.send(BaseRecord::<str, str>::to("auto-made").payload("hello"))
        .expect("send");
    p.flush(Duration::from_secs(30))
        .expect("flush auto-created");
    let md = crate::common::raw::metadata(&b, Some(vec!["auto-made"])).unwrap();
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 1);

    let a = admin(&b);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let r = block_on(a.create_topics(
        &[NewTopic::new("bad name!", 1, TopicReplication::Fixed(1))],
        &opts,
    ))
    .unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidTopic);
    let r = block_on(a.create_topics(
        &[NewTopic::new("auto-made", 1, TopicReplication::Fixed(1))],
        &opts,
    ))
    .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );
    let r = block_on(a.create_topics(
        &[NewTopic::new("rf-too-big", 1, TopicReplication::Fixed(3))],
        &opts,
    ))
    .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidReplicationFactor
    );

    let r = block_on(a.delete_topics(&["auto-made"], &opts)).unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let md = crate::common::raw::metadata(&b, Some(vec!["auto-made"])).unwrap();
    assert_eq!(md.topics[0].error_code, 3, "deleted topic is unknown");
    let r = block_on(a.delete_topics(&["never-was"], &opts)).unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
}

#[test]
fn fetch_long_poll_wakes_on_append() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "poll", 1);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "x")
        // The broker may hold the fetch this long; the message must arrive far sooner.
        .set("fetch.wait.max.ms", "60000")
        .set("fetch.min.bytes", "1")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("poll", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    // let the consumer park its long poll
    let _ = c.poll(Duration::from_millis(1500));
    let p = producer(&b, &[("linger.ms", "0")]);
    p.send(
        BaseRecord::<str, str>::to("poll")
            .payload("wake")
            .partition(0),
    )
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    let mut got = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.is_none() && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            got = Some(m.unwrap().payload().unwrap().to_vec());
        }
    }
    // Had the broker slept out its 60 s wait, nothing would have arrived in 30 s.
    assert_eq!(got.as_deref(), Some(&b"wake"[..]));
}

#[test]
fn a_fetch_naming_no_partitions_is_answered_at_once() {
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};
    // The Java consumer sends one when it closes its fetch session. The broker used to park it
    // forever (nothing to wake it), so the client's close() waited out its 30 s timeout.
    let s = Server::start(&[]);
    let mut conn = crate::common::raw::connect(&s.bootstrap()).unwrap();
    for version in [4, 12, 13] {
        let mut req = FetchRequest::default();
        req.max_wait_ms = 60_000; // longer than the raw client's 10 s read timeout
        req.min_bytes = 1;
        req.max_bytes = 1 << 20;
        req.session_id = 0;
        req.session_epoch = -1;
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        let r: FetchResponse = crate::common::raw::call(&mut conn, ApiKey::Fetch, version, &req)
            .unwrap_or_else(|e| panic!("Fetch v{version} with no partitions: {e}"));
        assert_eq!(r.error_code, 0, "v{version}");
        assert!(r.responses.is_empty(), "v{version}: {r:?}");
    }
}

#[test]
fn acknowledged_records_survive_sigkill_and_restart() {
    let mut s = Server::start(&["--log-flush", "always"]);
    let b = s.bootstrap();
    create_topic(&b, "durable", 2);
    let p = producer(&b, &[]);
    for i in 0..2000 {
        p.send(
            BaseRecord::<str, str>::to("durable")
                .payload(&format!("m{i}"))
                .partition(i % 2),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).expect("all acknowledged");
    drop(p);
    s.restart();
    for part in 0..2 {
        let got = read_partition(&b, "durable", part, 1000);
        assert_eq!(got.len(), 1000, "partition {part} after restart");
    }
    // and it accepts new writes on top
    let p = producer(&b, &[]);
    p.send(
        BaseRecord::<str, str>::to("durable")
            .payload("after")
            .partition(0),
    )
    .unwrap();
    p.flush(Duration::from_secs(30))
        .expect("produce after restart");
    let got = read_partition(&b, "durable", 0, 1001);
    assert_eq!(got.len(), 1001);
    assert_eq!(got[1000].3, 1000);
}

#[test]
fn a_crashed_broker_restarts_on_its_port_while_old_client_connections_linger() {
    let mut s = Server::start(&[]);
    // A client that keeps its connection open across the crash: the dead broker's end of it
    // lingers in FIN-WAIT-2, which must not keep the new process from binding the port.
    let held = std::net::TcpStream::connect(s.bootstrap()).expect("connect");
    s.kill();
    s.spawn();
    s.wait_ready(1);
    drop(held);
    // And a second broker on a port that is really in use is refused.
    let mut other = Server::start(&[]);
    other.kill();
    other.port = s.port;
    other.spawn();
    let status = other.child.as_mut().expect("child").wait().expect("wait");
    assert!(!status.success(), "a second broker bound a port in use");
    other.child = None;
}

/// mimalloc maps its heap with MADV_HUGEPAGE, and each fresh 2 MiB was zeroed in one fault on
/// a shard's thread; the broker turns transparent huge pages off for itself at start.
#[test]
fn the_broker_runs_without_transparent_huge_pages() {
    let s = Server::start(&[]);
    create_topic(&s.bootstrap(), "t", 2);
    let pid = s.child.as_ref().expect("the server runs").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    // A kernel that does not report it leaves nothing to check here.
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}

#[test]
fn sigterm_exits_cleanly() {
    let mut s = Server::start(&[]);
    create_topic(&s.bootstrap(), "t", 1);
    assert_eq!(s.terminate(), Some(0));
}

#[test]
fn garbage_frames_close_only_their_connection() {
    use std::io::{Read, Write};
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "steady", 1);
    let p = producer(&b, &[("linger.ms", "0")]);
    let mut sent = 0;
    let mut send_one = |p: &ThreadedProducer<DefaultProducerContext>| {
        p.send(
            BaseRecord::<str, str>::to("steady")
                .payload("ok")
                .partition(0),
        )
        .unwrap();
        p.flush(Duration::from_secs(10))
            .expect("normal client keeps working");
        sent += 1;
    };
    send_one(&p);
    let closed = |mut c: std::net::TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        // the broker closes the connection (EOF or reset), it does not hang
        matches!(c.read(&mut buf), Ok(0) | Err(_))
    };
    // 1. random bytes
    let mut c = std::net::TcpStream::connect(&b).unwrap();
    let junk: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let _ = c.write_all(&junk);
    assert!(closed(c), "random bytes");
    send_one(&p);
    // 2. a frame claiming 2 GiB
    let mut c = std::net::TcpStream::connect(&b).unwrap();
    c.write_all(&0x7fff_ffffu32.to_be_bytes()).unwrap();
    c.write_all(&[0u8; 16]).unwrap();
    assert!(closed(c), "2 GiB frame");
    send_one(&p);
    // 3. an unknown API key in a well-formed frame
    let mut c = std::net::TcpStream::connect(&b).unwrap();
    let mut f = Vec::new();
    f.extend_from_slice(&10i32.to_be_bytes());
    f.extend_from_slice(&9999i16.to_be_bytes()); // api key
    f.extend_from_slice(&0i16.to_be_bytes()); // version
    f.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    f.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    c.write_all(&f).unwrap();
    assert!(closed(c), "unknown api key");
    send_one(&p);
    // 4. a truncated frame, then the client goes away
    let mut c = std::net::TcpStream::connect(&b).unwrap();
    c.write_all(&100i32.to_be_bytes()).unwrap();
    c.write_all(&[0, 18, 0, 3]).unwrap();
    drop(c);
    // 5. a malformed body of a known API (Metadata v9 with a bogus array length)
    let mut c = std::net::TcpStream::connect(&b).unwrap();
    let mut f = Vec::new();
    let body: Vec<u8> = vec![0, 3, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f];
    f.extend_from_slice(&(body.len() as i32).to_be_bytes());
    f.extend_from_slice(&body);
    c.write_all(&f).unwrap();
    assert!(closed(c), "malformed metadata");
    send_one(&p);
    assert_eq!(read_partition(&b, "steady", 0, sent).len(), sent);
}

/// Names in the data directory that belong to `topic`'s partitions.
fn partition_dirs(data_dir: &std::path::Path, topic: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir)
        .expect("list data dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(topic)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|p| p.parse::<u32>().is_ok())
        })
        .collect();
    names.sort();
    names
}

fn send_to(bootstrap: &str, topic: &str, partition: i32, n: usize) {
    let p = producer(bootstrap, &[]);
    for i in 0..n {
        p.send(
            BaseRecord::<str, str>::to(topic)
                .payload(&format!("m{i}"))
                .partition(partition),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).expect("all acknowledged");
}

#[test]
fn a_new_partition_creates_its_directory_with_its_first_record_and_keeps_it_across_restarts() {
    let mut s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "lazy", 8);
    // Every partition (on both shards) is open and answers with an empty log...
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .expect("consumer");
    for part in 0..8 {
        let w = c
            .fetch_watermarks("lazy", part, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(w, (0, 0), "partition {part}");
    }
    // ...yet none has touched the disk.
    assert_eq!(partition_dirs(&s.data_dir, "lazy"), Vec::<String>::new());

    send_to(&b, "lazy", 3, 10);
    assert_eq!(partition_dirs(&s.data_dir, "lazy"), vec!["lazy-3"]);
    assert!(s
        .data_dir
        .join("lazy-3")
        .join("partition.metadata")
        .is_file());

    // A clean stop leaves the idle partitions without directories; all eight still serve.
    assert_eq!(s.terminate(), Some(0));
    s.spawn();
    s.wait_ready(1);
    assert_eq!(partition_dirs(&s.data_dir, "lazy"), vec!["lazy-3"]);
    assert_eq!(read_partition(&b, "lazy", 3, 10).len(), 10);
    send_to(&b, "lazy", 6, 5);

    // After a SIGKILL both written partitions recover their records; the rest are still empty.
    s.restart();
    assert_eq!(
        partition_dirs(&s.data_dir, "lazy"),
        vec!["lazy-3", "lazy-6"]
    );
    assert_eq!(read_partition(&b, "lazy", 3, 10).len(), 10);
    let six = read_partition(&b, "lazy", 6, 5);
    assert_eq!(
        six.iter().map(|m| m.3).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .expect("consumer");
    for part in [0, 1, 2, 4, 5, 7] {
        let w = c
            .fetch_watermarks("lazy", part, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(w, (0, 0), "partition {part}");
    }
}

/// Bytes the partition's segment files hold (their lengths; preallocation keeps the size).
fn segment_bytes(data_dir: &std::path::Path, dir: &str) -> u64 {
    std::fs::read_dir(data_dir.join(dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn journal_files(data_dir: &std::path::Path) -> usize {
    std::fs::read_dir(data_dir.join(".journal"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|shard| std::fs::read_dir(shard.path()).ok())
                .flat_map(|files| files.filter_map(|f| f.ok()))
                .filter(|f| f.file_name().to_string_lossy().ends_with(".journal"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn records_acknowledged_from_the_shard_journal_survive_a_sigkill_and_a_clean_stop_releases_it() {
    let mut s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "spread", 12);
    for part in 0..12 {
        send_to(&b, "spread", part, 4);
    }
    // Small appends were acknowledged from the shard journals (both shards hold partitions):
    // the segments have not been written yet.
    assert!(journal_files(&s.data_dir) >= 1, "a journal file exists");
    let in_segments: u64 = (0..12)
        .map(|p| segment_bytes(&s.data_dir, &format!("spread-{p}")))
        .sum();
    assert_eq!(in_segments, 0, "the records are only in the journal so far");

    // SIGKILL: the start replays the journals into the partition logs, then removes them.
    s.restart();
    assert_eq!(
        journal_files(&s.data_dir),
        0,
        "replayed journals are removed"
    );
    for part in 0..12 {
        assert!(
            segment_bytes(&s.data_dir, &format!("spread-{part}")) > 0,
            "partition {part} got its records from the journal"
        );
        let got = read_partition(&b, "spread", part, 4);
        assert_eq!(
            got.iter().map(|m| m.3).collect::<Vec<_>>(),
            vec![0, 1, 2, 3],
            "partition {part}"
        );
    }

    // More small appends, then a clean stop: every log writes its journaled records at close
    // and the journal files are released.
    for part in 0..12 {
        send_to(&b, "spread", part, 2);
    }
    assert!(journal_files(&s.data_dir) >= 1);
    assert_eq!(s.terminate(), Some(0));
    assert_eq!(
        journal_files(&s.data_dir),
        0,
        "a clean stop leaves no journal"
    );
    s.spawn();
    s.wait_ready(1);
    for part in 0..12 {
        assert_eq!(
            read_partition(&b, "spread", part, 6).len(),
            6,
            "partition {part}"
        );
    }
}
