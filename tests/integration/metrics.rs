//! The Prometheus endpoint (`--metrics-listen`): /metrics counters move with traffic, /health
//! follows registration and the controller, `none` turns it off, and junk on the port gets an
//! HTTP error without hurting the endpoint.

use crate::common::{free_port, new_secret_file, Server};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `request` as is and returns (status, body); the endpoint closes after one answer.
fn http_raw(addr: &str, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub(crate) fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// The value of the sample whose name and labels are exactly `series`, if present.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `series` satisfies `ok` (60 s at most); returns the last scrape.
fn scrape_until(s: &Server, series: &str, ok: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = get(&s.metrics(), "/metrics").expect("scrape");
        assert_eq!(status, 200);
        if sample(&text, series).is_some_and(&ok) {
            return text;
        }
        if Instant::now() > deadline {
            s.print_log_tail(30);
            panic!("{series} never reached the expected value; last scrape:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let a: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let r = futures_lite::future::block_on(a.create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create_topics");
    assert!(r[0].is_ok(), "create {name}: {:?}", r[0]);
}

fn produce(bootstrap: &str, topic: &str, n: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for i in 0..n {
        let v = format!("value-{i:05}");
        p.send(BaseRecord::<(), _>::to(topic).payload(&v))
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Reads `count` records of partition 0 from the start (30 s at most); returns how many came.
fn consume(bootstrap: &str, topic: &str, count: usize) -> usize {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).expect("assign");
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < count && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            m.expect("consume");
            got += 1;
        }
    }
    got
}

#[test]
fn counters_move_after_produce_fetch_and_commit_and_each_api_is_counted_by_its_name() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "metered", 1);
    produce(&b, "metered", 300);
    let text = scrape_until(
        &s,
        "chronik_records_produced_total{topic=\"metered\"}",
        |v| v == 300.0,
    );
    let bytes = sample(&text, "chronik_bytes_produced_total{topic=\"metered\"}").unwrap();
    assert!(bytes > 300.0 * 11.0, "produced bytes {bytes}");
    assert!(sample(&text, "chronik_log_size_bytes{topic=\"metered\"}").unwrap() > 0.0);
    assert!(
        sample(
            &text,
            "chronik_requests_total{api=\"Produce\",error=\"NONE\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(sample(
        &text,
        "chronik_requests_total{api=\"Metadata\",error=\"NONE\"}"
    )
    .is_some());
    assert!(
        sample(
            &text,
            "chronik_request_latency_seconds_count{api=\"Produce\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(text.contains("chronik_request_latency_seconds_bucket{api=\"Produce\",le=\"+Inf\"}"));
    assert_eq!(
        sample(&text, "chronik_partitions{state=\"leader\"}"),
        Some(1.0)
    );
    // Every replica here was written to (or loaded, for offsets), so each has its log open.
    let replicas = sample(&text, "chronik_partitions{state=\"leader\"}").unwrap()
        + sample(&text, "chronik_partitions{state=\"follower\"}").unwrap();
    assert_eq!(sample(&text, "chronik_open_logs"), Some(replicas));
    assert_eq!(sample(&text, "chronik_controller_is_leader"), Some(1.0));
    assert!(sample(&text, "chronik_raft_commit_index").unwrap() > 0.0);
    assert!(sample(&text, "chronik_shard_busy_ratio{shard=\"1\"}").is_some());
    assert_eq!(
        sample(&text, "chronik_under_replicated_partitions"),
        Some(0.0)
    );

    assert_eq!(consume(&b, "metered", 300), 300);
    let text = scrape_until(
        &s,
        "chronik_records_fetched_total{topic=\"metered\"}",
        |v| v >= 300.0,
    );
    assert!(sample(&text, "chronik_bytes_fetched_total{topic=\"metered\"}").unwrap() >= bytes);
    assert!(sample(
        &text,
        "chronik_requests_total{api=\"Fetch\",error=\"NONE\"}"
    )
    .is_some());

    // A group that committed offset 100 of 300 lags by 200 on its coordinator.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "lagging")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("metered", 0, Offset::Offset(100))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    scrape_until(
        &s,
        "chronik_consumer_group_lag{group=\"lagging\",topic=\"metered\"}",
        |v| v == 200.0,
    );
}

#[test]
fn metrics_listen_none_disables_the_endpoint() {
    let s = Server::start(&["--metrics-listen", "none"]);
    assert!(
        TcpStream::connect(s.metrics()).is_err(),
        "something listens on the metrics port"
    );
}

#[test]
fn junk_on_the_metrics_port_gets_an_http_error_and_the_endpoint_keeps_serving() {
    let s = Server::start(&[]);
    let m = s.metrics();
    assert_eq!(get(&m, "/nowhere").unwrap().0, 404);
    let post = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(http_raw(&m, post).unwrap().0, 405);
    assert_eq!(http_raw(&m, b"\x00\x01garbage\r\n\r\n").unwrap().0, 400);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    // The endpoint answers 431 once its head buffer is full and closes; the rest of what the
    // client sends may then be refused by the kernel (a reset), which is fine too.
    if let Ok((status, _)) = http_raw(&m, huge.as_bytes()) {
        assert!(status == 431 || status == 0, "status {status}");
    }
    // A client that connects and sends nothing does not hold up others.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&m).unwrap()).collect();
    let (status, text) = get(&m, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE chronik_records_produced_total counter"));
    drop(idle);
}

#[test]
fn health_is_refused_until_the_broker_registers_and_again_when_the_controller_quorum_is_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let secret = tmp.path().join("cluster.secret");
    new_secret_file(&secret);
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let quorum = ports
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, (p, c))| {
            let id = i as i32 + 1;
            let mut s = Server::node(id, *p, *c, &quorum, tmp.path().join(format!("n{id}")), &[]);
            s.secret_file = Some(secret.clone());
            s
        })
        .collect();
    // Node 1 alone has no quorum: no controller, so it cannot register.
    nodes[0].spawn();
    let m = nodes[0].metrics();
    let wait_for = |what: &str, ok: &dyn Fn(u16, &str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((status, body)) = get(&m, "/health") {
                if ok(status, &body) {
                    return body;
                }
            }
            assert!(Instant::now() < deadline, "/health never {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let body = wait_for("answered", &|status, _| status != 0);
    let (status, body2) = get(&m, "/health").unwrap();
    assert_eq!(status, 503, "{body} / {body2}");
    assert!(body2.contains("not registered"), "{body2}");
    assert!(body2.contains("controller"), "{body2}");

    nodes[1].spawn();
    wait_for("became 200 with a quorum", &|status, _| status == 200);

    // Node 2 gone: node 1 alone cannot reach an active controller any more.
    nodes[1].kill();
    let body = wait_for("refused after losing the quorum", &|status, _| {
        status == 503
    });
    assert!(body.contains("controller"), "{body}");
    for n in nodes.iter_mut() {
        n.kill();
    }
}
