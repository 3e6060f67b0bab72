//! DescribeLogDirs: this broker's one log dir (the data dir) with every partition replica it
//! holds: size on disk and offset lag. Kafka reports lag as max(HW − LEO, 0) of the local log,
//! which on a follower is nearly always 0 (its HW never passes its LEO); here a follower
//! reports how far its log end trails the leader's high watermark as of its last fetch, which
//! is what tools read the field for. Leaders report 0. From v4, the file system's total and
//! usable bytes. A null topic list means every partition.

use super::topic_name;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Kafka's value for unknown volume sizes.
const UNKNOWN_VOLUME_BYTES: i64 = -1;

/// One replica held by this broker.
struct Replica {
    topic: String,
    partition: i32,
    size: i64,
    offset_lag: i64,
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeLogDirsRequest = decode(body, ctx.api_version)?;
    if !crate::acl::cluster_allowed(&shard, &ctx, chronik_raft::acl::Operation::Describe) {
        let mut resp = DescribeLogDirsResponse::default();
        if ctx.api_version >= 3 {
            resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        }
        return ctx.encode(&resp).map(Some);
    }
    // topic -> partitions asked for (None: every partition of every topic).
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.as_ref().map(|ts| {
        let mut m: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for t in ts {
            m.entry(t.topic.0.to_string())
                .or_default()
                .extend(t.partitions.iter().copied());
        }
        m
    });
    let wanted = Rc::new(wanted);
    let mut replicas: Vec<Replica> = Vec::new();
    for target in 0..shard.nshards {
        let w = (*wanted).clone();
        let part = shard
            .run_on(
                target,
                move |s| async move { local_replicas(&s, w.as_ref()) },
            )
            .await
            .unwrap_or_default();
        replicas.extend(part);
    }
    replicas.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));

    let dir = &shard.config.data_dir;
    let mut result = DescribeLogDirsResult::default();
    result.error_code = errors::NONE;
    result.log_dir = super::str_bytes(
        &std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.clone())
            .display()
            .to_string(),
    );
    let (usable, total) = crate::disk_space::free_and_total(dir)
        .map(|(f, t)| (to_i64(f), to_i64(t)))
        .unwrap_or((UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES));
    result.total_bytes = total;
    result.usable_bytes = usable;
    for r in replicas {
        let mut p = DescribeLogDirsPartition::default();
        p.partition_index = r.partition;
        p.partition_size = r.size;
        p.offset_lag = r.offset_lag;
        p.is_future_key = false;
        match result.topics.last_mut() {
            Some(t) if t.name.0.as_str() == r.topic => t.partitions.push(p),
            _ => {
                let mut t = DescribeLogDirsTopic::default();
                t.name = topic_name(&r.topic);
                t.partitions.push(p);
                result.topics.push(t);
            }
        }
    }
    let mut resp = DescribeLogDirsResponse::default();
    resp.error_code = errors::NONE;
    resp.results.push(result);
    ctx.encode(&resp).map(Some)
}

/// The replicas this shard holds open that this broker is assigned, filtered by `wanted`.
fn local_replicas(shard: &Services, wanted: Option<&BTreeMap<String, Vec<i32>>>) -> Vec<Replica> {
    let me = shard.config.node_id;
    let img = shard.image();
    shard
        .replicas
        .all()
        .into_iter()
        .filter(|p| {
            wanted.is_none_or(|w| {
                w.get(p.tp.topic.as_ref())
                    .is_some_and(|ps| ps.contains(&p.tp.partition))
            })
        })
        .filter(|p| {
            img.partition(&p.tp.topic, p.tp.partition)
                .is_some_and(|s| s.replicas.contains(&me))
        })
        .map(|p| {
            let leo = p.log.log_end_offset();
            let offset_lag = if p.is_leader() {
                0
            } else {
                (p.leader_high_watermark() - leo).max(0)
            };
            Replica {
                topic: p.tp.topic.to_string(),
                partition: p.tp.partition,
                size: to_i64(p.log.size_bytes()),
                offset_lag,
            }
        })
        .collect()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
