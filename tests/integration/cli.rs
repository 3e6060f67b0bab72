//! `chronik-server topic …` and `group …` run as an operator runs them, against real nodes:
//! table and JSON output (the JSON parsed), lag of a group with a live consumer, offset resets
//! refused while the group has members, the Kafka error names of refusals, and a 3-node cluster
//! driven through a node that is neither the controller nor a partition's leader.

use crate::common::cluster_util::{leader_of, produce_once, wait_until, FAST};
use crate::common::{free_port, raw, Cluster, Server};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }

    /// Succeeded (exit 0), else fails the test showing what it printed.
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Refused with exit code 1 and this Kafka error name on stderr.
    fn refused_with(self, error: &str) -> Run {
        assert_eq!(
            self.code, 1,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(error),
            "expected {error} in stderr:\n{}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

/// `chronik-server <args> --brokers <brokers>`.
fn cli(brokers: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_chronik-server"))
        .args(args)
        .arg("--brokers")
        .arg(brokers)
        .output()
        .expect("run chronik-server");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ chronik-server {}\n{}{}",
        args.join(" "),
        r.stdout,
        r.stderr
    );
    r
}

fn json_of(brokers: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    cli(brokers, &a).ok().json()
}

fn config<'a>(described: &'a Value, key: &str) -> &'a Value {
    described["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["name"] == key)
        .unwrap_or_else(|| panic!("no config {key} in {described}"))
}

fn partition<'a>(described: &'a Value, topic: &str, p: i64) -> &'a Value {
    described["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|x| x["partition"] == p && (x.get("topic").is_none() || x["topic"] == topic))
        .unwrap_or_else(|| panic!("no partition {topic}-{p} in {described}"))
}

#[test]
fn topic_commands_create_list_describe_alter_and_delete_and_refusals_name_the_kafka_error() {
    let s = Server::start(&[]);
    let b = s.bootstrap();

    let created = cli(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-r",
            "1",
            "-c",
            "cleanup.policy=compact",
            "-c",
            "segment.ms=3600000",
        ],
    )
    .ok();
    assert!(created.stdout.contains("orders") && created.stdout.contains("OK"));
    let again = json_of_refused(&b, &["topic", "create", "orders"], "TOPIC_ALREADY_EXISTS");
    assert_eq!(again[0]["name"], "orders");
    assert_eq!(again[0]["error"], "TOPIC_ALREADY_EXISTS");
    cli(&b, &["topic", "create", "bad", "-c", "retention.ms=soon"]).refused_with("INVALID_CONFIG");
    cli(&b, &["topic", "create", "bad", "-p", "0"]).refused_with("INVALID_PARTITIONS");

    let listed = cli(&b, &["topic", "list"]).ok().stdout;
    let line = listed
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_else(|| panic!("orders listed: {listed}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["orders", "3", "1"]
    );
    assert!(!listed.contains("bad"), "{listed}");
    let listed = json_of(&b, &["topic", "list"]);
    let orders = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["name"] == "orders")
        .expect("orders in the JSON list");
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["replicas"], 1);

    let (code, _) = produce_once(&b, "orders", 1, -1, 10_000, 7);
    assert_eq!(code, 0);
    let d = json_of(&b, &["topic", "describe", "orders"]);
    assert_eq!(d["name"], "orders");
    assert_eq!(d["partitions"].as_array().map(|a| a.len()), Some(3));
    let p1 = partition(&d, "orders", 1);
    assert_eq!(p1["leader"], 1);
    assert_eq!(p1["replicas"], serde_json::json!([1]));
    assert_eq!(p1["isr"], serde_json::json!([1]));
    assert_eq!(p1["log_start_offset"], 0);
    assert_eq!(p1["log_end_offset"], 7);
    assert_eq!(partition(&d, "orders", 0)["log_end_offset"], 0);
    assert_eq!(config(&d, "cleanup.policy")["value"], "compact");
    assert_eq!(
        config(&d, "cleanup.policy")["source"],
        "DYNAMIC_TOPIC_CONFIG"
    );
    assert_eq!(config(&d, "retention.ms")["source"], "DEFAULT_CONFIG");
    let table = cli(&b, &["topic", "describe", "orders"]).ok().stdout;
    for needle in [
        "SUMMARY",
        "CONFIGS",
        "PARTITIONS",
        "cleanup.policy",
        "LOG-END-OFFSET",
    ] {
        assert!(table.contains(needle), "{needle} in:\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("partition 1's row in:\n{table}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["1", "1", "0", "[1]", "[1]", "0", "7"]
    );

    cli(
        &b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=3600000",
            "--delete",
            "cleanup.policy",
        ],
    )
    .ok();
    let d = json_of(&b, &["topic", "describe", "orders"]);
    assert_eq!(config(&d, "retention.ms")["value"], "3600000");
    assert_eq!(config(&d, "retention.ms")["source"], "DYNAMIC_TOPIC_CONFIG");
    assert_eq!(config(&d, "cleanup.policy")["value"], "delete");
    assert_ne!(
        config(&d, "cleanup.policy")["source"],
        "DYNAMIC_TOPIC_CONFIG"
    );
    cli(
        &b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=soon",
        ],
    )
    .refused_with("INVALID_CONFIG");
    cli(
        &b,
        &[
            "topic",
            "alter-config",
            "nope",
            "--set",
            "retention.ms=1000",
        ],
    )
    .refused_with("UNKNOWN_TOPIC_OR_PARTITION");
    cli(&b, &["topic", "describe", "nope"]).refused_with("UNKNOWN_TOPIC_OR_PARTITION");

    let deleted = json_of(&b, &["topic", "delete", "orders"]);
    assert_eq!(deleted[0]["name"], "orders");
    assert_eq!(deleted[0]["error"], Value::Null);
    cli(&b, &["topic", "delete", "orders"]).refused_with("UNKNOWN_TOPIC_OR_PARTITION");
    let listed = json_of(&b, &["topic", "list"]);
    assert!(!listed.to_string().contains("orders"), "{listed}");
}

/// Runs with `--format json`, expects a refusal naming `error`, returns the JSON it printed.
fn json_of_refused(brokers: &str, args: &[&str], error: &str) -> Value {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    cli(brokers, &a).refused_with(error).json()
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", "lag-test-client")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// Subscribes and polls until the consumer owns `n` partitions of `topic`.
fn join(c: &BaseConsumer, topic: &str, n: usize) {
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.assignment().map(|a| a.count()).unwrap_or(0) < n {
        assert!(Instant::now() < deadline, "no assignment of {topic}");
        let _ = c.poll(Duration::from_millis(100));
    }
}

fn commit(c: &BaseConsumer, topic: &str, offsets: &[(i32, i64)]) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("offset");
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn committed_offset(b: &str, group: &str, topic: &str, p: i64) -> Value {
    let d = json_of(b, &["group", "describe", group]);
    partition(&d, topic, p)["committed_offset"].clone()
}

#[test]
fn group_describe_shows_lag_per_partition_and_offsets_are_reset_only_once_the_group_is_empty() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    cli(&b, &["topic", "create", "events", "-p", "2", "-r", "1"]).ok();
    assert_eq!(produce_once(&b, "events", 0, -1, 10_000, 10).0, 0);
    assert_eq!(produce_once(&b, "events", 1, -1, 10_000, 10).0, 0);

    let c = consumer(&b, "billing");
    join(&c, "events", 2);
    commit(&c, "events", &[(0, 4), (1, 7)]);

    let listed = json_of(&b, &["group", "list"]);
    let g = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|g| g["group"] == "billing")
        .unwrap_or_else(|| panic!("billing listed: {listed}"));
    assert_eq!(g["state"], "Stable");
    assert!(cli(&b, &["group", "list"]).ok().stdout.contains("billing"));
    // The groups' internal topic exists now; it is listed only with -i.
    assert!(!cli(&b, &["topic", "list"])
        .ok()
        .stdout
        .contains("__consumer_offsets"));
    assert!(json_of(&b, &["topic", "list", "-i"])
        .to_string()
        .contains("__consumer_offsets"));

    let d = json_of(&b, &["group", "describe", "billing"]);
    assert_eq!(d["state"], "Stable");
    assert_eq!(d["members"].as_array().map(|m| m.len()), Some(1));
    let member = d["members"][0]["member_id"].clone();
    assert_eq!(d["members"][0]["client_id"], "lag-test-client");
    let p0 = partition(&d, "events", 0);
    assert_eq!(p0["committed_offset"], 4);
    assert_eq!(p0["log_end_offset"], 10);
    assert_eq!(p0["lag"], 6);
    assert_eq!(p0["member_id"], member);
    assert_eq!(p0["client_id"], "lag-test-client");
    assert!(p0["host"].as_str().is_some_and(|h| !h.is_empty()), "{p0}");
    let p1 = partition(&d, "events", 1);
    assert_eq!(p1["lag"], 3);
    assert_eq!(p1["member_id"], member);
    assert_eq!(d["total_lag"], 9);
    let table = cli(&b, &["group", "describe", "billing"]).ok().stdout;
    let total = table
        .lines()
        .find(|l| l.starts_with("TOTAL-LAG"))
        .unwrap_or_else(|| panic!("TOTAL-LAG in:\n{table}"));
    assert_eq!(total.split_whitespace().nth(1), Some("9"));
    let row = table
        .lines()
        .find(|l| l.starts_with("events") && l.split_whitespace().nth(1) == Some("0"))
        .unwrap_or_else(|| panic!("events-0 in:\n{table}"));
    assert_eq!(
        row.split_whitespace().take(6).collect::<Vec<_>>(),
        ["events", "0", "4", "0", "10", "6"]
    );

    // A member is active: Kafka refuses a commit from outside the group, and its deletion.
    cli(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-earliest",
        ],
    )
    .refused_with("UNKNOWN_MEMBER_ID");
    cli(&b, &["group", "delete", "billing"]).refused_with("NON_EMPTY_GROUP");
    assert_eq!(committed_offset(&b, "billing", "events", 0), 4);

    drop(c);
    wait_until("the group to be empty", 30, || {
        json_of(&b, &["group", "describe", "billing"])["state"] == "Empty"
    });
    let reset = json_of(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events:0",
            "--to-offset",
            "2",
        ],
    );
    assert_eq!(reset.as_array().map(|r| r.len()), Some(1));
    assert_eq!(reset[0]["previous_offset"], 4);
    assert_eq!(reset[0]["new_offset"], 2);
    assert_eq!(committed_offset(&b, "billing", "events", 0), 2);
    assert_eq!(committed_offset(&b, "billing", "events", 1), 7);
    // Past the end is kept at the end, as Kafka's tool does.
    cli(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-offset",
            "99",
        ],
    )
    .ok();
    let d = json_of(&b, &["group", "describe", "billing"]);
    assert_eq!(partition(&d, "events", 0)["committed_offset"], 10);
    assert_eq!(d["total_lag"], 0);
    let dry = json_of(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-earliest",
            "--dry-run",
        ],
    );
    assert_eq!(dry[1]["new_offset"], 0);
    assert_eq!(committed_offset(&b, "billing", "events", 1), 10);
    cli(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-earliest",
        ],
    )
    .ok();
    let d = json_of(&b, &["group", "describe", "billing"]);
    assert_eq!(d["total_lag"], 20);
    cli(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "nope",
            "--to-latest",
        ],
    )
    .refused_with("UNKNOWN_TOPIC_OR_PARTITION");

    let deleted = json_of(&b, &["group", "delete", "billing"]);
    assert_eq!(deleted[0]["error"], Value::Null);
    cli(&b, &["group", "describe", "billing"]).refused_with("GROUP_ID_NOT_FOUND");
    cli(&b, &["group", "delete", "billing"]).refused_with("GROUP_ID_NOT_FOUND");
}

#[test]
fn unreachable_brokers_give_a_clear_message_and_a_non_zero_exit() {
    let nobody = format!("127.0.0.1:{}", free_port());
    for args in [
        &["topic", "list"][..],
        &["topic", "create", "t"],
        &["group", "list"],
        &["group", "describe", "g"],
    ] {
        let r = cli(&nobody, args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("no broker reachable"), "{}", r.stderr);
        assert!(r.stderr.contains(&nobody), "{}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // A bad flag is a usage error (exit 2), before any connection.
    let r = cli(&nobody, &["topic", "create", "t", "-c", "novalue"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// The coordinator of `group`, as FindCoordinator answers.
fn coordinator_of(addr: &str, group: &str) -> i32 {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    let mut s = raw::connect(addr).expect("connect");
    let mut req = FindCoordinatorRequest::default();
    req.key = kafka_protocol::protocol::StrBytes::from_string(group.to_string());
    let r: FindCoordinatorResponse =
        raw::call(&mut s, ApiKey::FindCoordinator, 3, &req).expect("find coordinator");
    assert_eq!(r.error_code, 0);
    r.node_id.0
}

#[test]
fn the_commands_work_through_a_node_that_is_neither_the_controller_nor_the_leader() {
    let mut c = Cluster::start(3, FAST);
    let meta = raw::metadata(&c.nodes[0].bootstrap(), Some(vec![])).expect("metadata");
    let controller = meta.controller_id.0;
    assert!(controller > 0, "a controller: {controller}");
    let via_id = (1..=3).find(|id| *id != controller).expect("another node");
    let via = c.node(via_id).bootstrap();

    cli(&via, &["topic", "create", "spread", "-p", "6", "-r", "1"]).ok();
    wait_until("every partition to have a leader", 30, || {
        (0..6).all(|p| leader_of(&via, "spread", p) > 0)
    });
    // A partition led by another node: its offsets come from that leader.
    let p = (0..6)
        .find(|p| leader_of(&via, "spread", *p) != via_id)
        .expect("a partition led elsewhere");
    let leader = leader_of(&via, "spread", p);
    assert_eq!(
        produce_once(&c.node(leader).bootstrap(), "spread", p, -1, 10_000, 5).0,
        0
    );
    let d = json_of(&via, &["topic", "describe", "spread"]);
    assert_eq!(partition(&d, "spread", p as i64)["leader"], leader);
    assert_eq!(partition(&d, "spread", p as i64)["log_end_offset"], 5);
    cli(
        &via,
        &[
            "topic",
            "alter-config",
            "spread",
            "--set",
            "retention.ms=60000",
        ],
    )
    .ok();
    let d = json_of(&via, &["topic", "describe", "spread"]);
    assert_eq!(config(&d, "retention.ms")["value"], "60000");

    // A group coordinated by another node than the one we talk to.
    let group = (0..200)
        .map(|i| format!("g{i}"))
        .find(|g| coordinator_of(&via, g) != via_id)
        .expect("a group coordinated elsewhere");
    let member = consumer(&c.bootstrap(), &group);
    join(&member, "spread", 6);
    commit(&member, "spread", &[(p, 2)]);
    drop(member);
    wait_until("the group to be empty", 30, || {
        json_of(&via, &["group", "describe", &group])["state"] == "Empty"
    });
    let d = json_of(&via, &["group", "describe", &group]);
    assert_ne!(d["coordinator"], via_id);
    assert_eq!(partition(&d, "spread", p as i64)["lag"], 3);
    assert!(json_of(&via, &["group", "list"])
        .to_string()
        .contains(&group));
    cli(
        &via,
        &[
            "group",
            "reset-offsets",
            &group,
            "--topic",
            "spread",
            "--to-latest",
        ],
    )
    .ok();
    assert_eq!(
        json_of(&via, &["group", "describe", &group])["total_lag"],
        0
    );
    cli(&via, &["group", "delete", &group]).ok();
    cli(&via, &["topic", "delete", "spread"]).ok();
    cli(&via, &["topic", "describe", "spread"]).refused_with("UNKNOWN_TOPIC_OR_PARTITION");
}
