//! One scrape: every shard's snapshot (sent to it over its inbox, as `Mesh::run_on` does),
//! summed, plus the gauges the metadata image and the controller hold; and the health check.

use super::exposition::{Exposition, Kind};
use super::{ShardSnapshot, Totals, LATENCY_BOUNDS, REQUEST_OUTCOMES};
use crate::shard::ShardTask;
use chronik_raft::image::MetadataImage;
use chronik_raft::Controller;
use kafka_protocol::messages::ApiKey;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a scrape waits for the shards' answers.
const SHARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What a shard's context `C` gives a scrape (implemented by the shard's services, above).
pub trait ShardSource: 'static {
    /// A copy of the shard's counters and of what it holds.
    fn snapshot(&self) -> ShardSnapshot;
    /// The shard is serving (not shutting down).
    fn serving(&self) -> bool;
}

/// What the metrics endpoint reads from: the shards' inboxes and the controller handle.
pub struct Sources<C: ShardSource> {
    pub shards: Vec<async_channel::Sender<ShardTask<C>>>,
    pub controller: Controller,
    pub node_id: i32,
    /// The active controller must have accepted a heartbeat this recently for /health.
    pub controller_contact_max: Duration,
}

impl<C: ShardSource> Clone for Sources<C> {
    fn clone(&self) -> Self {
        Sources {
            shards: self.shards.clone(),
            controller: self.controller.clone(),
            node_id: self.node_id,
            controller_contact_max: self.controller_contact_max,
        }
    }
}

impl<C: ShardSource> Sources<C> {
    /// Runs `f` on every shard and collects the answers that arrive within `timeout`.
    fn on_every_shard<T: Send + 'static>(&self, timeout: Duration, f: fn(&C) -> T) -> Vec<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(self.shards.len());
        let mut asked = 0;
        for inbox in &self.shards {
            let tx = tx.clone();
            let task: ShardTask<C> = Box::new(move |shard: Rc<C>| {
                Box::pin(async move {
                    let _ = tx.try_send(f(&shard));
                })
            });
            // Unbounded inboxes: this never waits; it fails only when the shard has stopped.
            if inbox.try_send(task).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(asked);
        while out.len() < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    /// The text of `/metrics`.
    pub fn render(&self) -> String {
        let snaps: Vec<ShardSnapshot> = self.on_every_shard(SHARD_TIMEOUT, C::snapshot);
        let totals = Totals::of(snaps);
        let image = self.controller.current_image();
        let mut e = Exposition::default();
        topic_counters(&mut e, &totals);
        requests(&mut e, &totals);
        partitions(&mut e, &image, self.node_id, self.is_active_controller());
        shard_gauges(&mut e, &totals);
        controller_gauges(&mut e, self, &image);
        e.finish()
    }

    fn is_active_controller(&self) -> bool {
        self.controller.raft_leader() == Some(self.node_id)
    }

    /// `/health`: Ok when the broker is registered (unfenced in this node's image), every
    /// shard answers, and the active controller accepted a heartbeat recently; else the
    /// reasons.
    pub fn health(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        let registered = self.controller.registration_applied()
            && self
                .controller
                .current_image()
                .broker(self.node_id)
                .is_some_and(|b| !b.fenced);
        if !registered {
            why.push("broker not registered with the controller (or fenced)".to_string());
        }
        let answered = self
            .on_every_shard(Duration::from_secs(1), C::serving)
            .into_iter()
            .filter(|serving| *serving)
            .count();
        if answered < self.shards.len() {
            why.push(format!(
                "{answered} of {} shards serving",
                self.shards.len()
            ));
        }
        match self.controller.since_controller_contact() {
            Some(d) if d <= self.controller_contact_max => {}
            Some(d) => why.push(format!(
                "no heartbeat accepted by the active controller for {} ms",
                d.as_millis()
            )),
            None => why.push("the active controller never accepted a heartbeat".into()),
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// The API's name as the Kafka protocol guide writes it (`Produce`, `ApiVersions`, …).
fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| key.to_string(), |k| format!("{k:?}"))
}

fn topic_counters(e: &mut Exposition, t: &Totals) {
    type Field = fn(&super::TopicCounters) -> u64;
    let families: [(&str, &str, Field); 4] = [
        (
            "chronik_records_produced_total",
            "Records appended by this broker as partition leader.",
            |c| c.records_produced,
        ),
        (
            "chronik_bytes_produced_total",
            "Record batch bytes appended by this broker as partition leader.",
            |c| c.bytes_produced,
        ),
        (
            "chronik_records_fetched_total",
            "Records sent to consumers in Fetch responses (replication excluded).",
            |c| c.records_fetched,
        ),
        (
            "chronik_bytes_fetched_total",
            "Record batch bytes sent to consumers in Fetch responses (replication excluded).",
            |c| c.bytes_fetched,
        ),
    ];
    for (name, help, field) in families {
        e.family(name, Kind::Counter, help);
        for (topic, c) in &t.topics {
            e.sample(name, &[("topic", topic)], field(c) as f64);
        }
    }
    e.family(
        "chronik_log_size_bytes",
        Kind::Gauge,
        "Bytes on disk of the partition replicas this broker holds, per topic.",
    );
    for (topic, b) in &t.log_bytes {
        e.sample("chronik_log_size_bytes", &[("topic", topic)], *b as f64);
    }
}

fn requests(e: &mut Exposition, t: &Totals) {
    e.family(
        "chronik_request_latency_seconds",
        Kind::Histogram,
        "Time from a request's frame being read to its response being ready, per Kafka API.",
    );
    for (key, a) in &t.apis {
        let api = api_name(*key);
        e.histogram(
            "chronik_request_latency_seconds",
            &[("api", &api)],
            &LATENCY_BOUNDS,
            &a.buckets,
            a.sum_ns as f64 / 1e9,
        );
    }
    e.family(
        "chronik_requests_total",
        Kind::Counter,
        "Requests served, per Kafka API and how the request ended (a Kafka error name; \
         errors inside an answered response count as NONE).",
    );
    for (key, a) in &t.apis {
        let api = api_name(*key);
        for (outcome, n) in REQUEST_OUTCOMES.iter().zip(a.outcomes) {
            if n > 0 {
                e.sample(
                    "chronik_requests_total",
                    &[("api", &api), ("error", outcome)],
                    n as f64,
                );
            }
        }
    }
}

fn partitions(e: &mut Exposition, image: &MetadataImage, me: i32, active_controller: bool) {
    let (mut leader, mut follower, mut under, mut offline) = (0u64, 0u64, 0u64, 0u64);
    for t in image.topics.values() {
        for p in &t.partitions {
            let live_leader = image.broker(p.leader).is_some_and(|b| !b.fenced);
            if !live_leader {
                offline += 1;
            }
            if p.leader == me {
                leader += 1;
                if p.isr.len() < p.replicas.len() {
                    under += 1;
                }
            } else if p.replicas.contains(&me) {
                follower += 1;
            }
        }
    }
    e.family(
        "chronik_partitions",
        Kind::Gauge,
        "Partition replicas on this broker, by role.",
    );
    e.sample("chronik_partitions", &[("state", "leader")], leader as f64);
    e.sample(
        "chronik_partitions",
        &[("state", "follower")],
        follower as f64,
    );
    e.family(
        "chronik_under_replicated_partitions",
        Kind::Gauge,
        "Partitions this broker leads whose ISR is smaller than their replica set.",
    );
    e.sample("chronik_under_replicated_partitions", &[], under as f64);
    e.family(
        "chronik_offline_partitions",
        Kind::Gauge,
        "Partitions without a live leader; reported by the active controller only (0 \
         elsewhere), as Kafka's OfflinePartitionsCount, so a sum over brokers is the count.",
    );
    let offline = if active_controller { offline } else { 0 };
    e.sample("chronik_offline_partitions", &[], offline as f64);
}

fn shard_gauges(e: &mut Exposition, t: &Totals) {
    e.family(
        "chronik_open_logs",
        Kind::Gauge,
        "Partition logs open on this node: the replicas it serves (below chronik_partitions while \
         logs open after a start, or when one could not be opened).",
    );
    e.sample("chronik_open_logs", &[], t.open_logs as f64);
    e.family(
        "chronik_isr_shrinks_total",
        Kind::Counter,
        "ISR changes of partitions led here that removed a replica.",
    );
    e.sample("chronik_isr_shrinks_total", &[], t.isr_shrinks as f64);
    e.family(
        "chronik_isr_expands_total",
        Kind::Counter,
        "ISR changes of partitions led here that added a replica.",
    );
    e.sample("chronik_isr_expands_total", &[], t.isr_expands as f64);
    e.family(
        "chronik_connections",
        Kind::Gauge,
        "Open client connections, per listener.",
    );
    e.sample(
        "chronik_connections",
        &[("listener", "PLAINTEXT")],
        t.connections as f64,
    );
    e.family(
        "chronik_fetch_sessions",
        Kind::Gauge,
        "Open incremental fetch sessions (KIP-227), of clients and of follower replicas.",
    );
    e.sample(
        "chronik_fetch_sessions",
        &[("kind", "client")],
        t.fetch_sessions.0 as f64,
    );
    e.sample(
        "chronik_fetch_sessions",
        &[("kind", "replica")],
        t.fetch_sessions.1 as f64,
    );
    e.family(
        "chronik_shard_busy_ratio",
        Kind::Gauge,
        "Share of wall time a shard's executor spent running tasks and polling I/O since the \
         previous scrape.",
    );
    for (shard, ratio) in &t.busy {
        e.sample(
            "chronik_shard_busy_ratio",
            &[("shard", &shard.to_string())],
            *ratio,
        );
    }
    e.family(
        "chronik_consumer_group_lag",
        Kind::Gauge,
        "Messages between a group's committed offsets and the high watermarks, per topic, on \
         the group's coordinator (partitions with a replica on this broker).",
    );
    for ((group, topic), lag) in &t.group_lag {
        e.sample(
            "chronik_consumer_group_lag",
            &[("group", group), ("topic", topic)],
            *lag as f64,
        );
    }
}

fn controller_gauges<C: ShardSource>(e: &mut Exposition, s: &Sources<C>, image: &MetadataImage) {
    e.family(
        "chronik_controller_is_leader",
        Kind::Gauge,
        "1 on the active controller (the metadata Raft leader), else 0.",
    );
    let leader = if s.is_active_controller() { 1.0 } else { 0.0 };
    e.sample("chronik_controller_is_leader", &[], leader);
    e.family(
        "chronik_raft_commit_index",
        Kind::Gauge,
        "Index of the last committed metadata log entry this node has applied.",
    );
    e.sample("chronik_raft_commit_index", &[], image.applied_index as f64);
}
