//! OffsetCommit and OffsetFetch: committed offsets are written to the offsets partition with
//! acks=all and applied to the group only once written.

use super::host::{self, Shard};
use super::machine::{self, Clock};
use super::offsets_log::{self, OffsetValue};
use super::offsets_partition::acquire;
use super::partitions::GroupRef;
use super::state::now_ms;
use crate::kafka::errors;

/// KIP-447: offsets of an open transaction are pending for this partition.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
use std::rc::Rc;

pub struct CommitPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

pub struct CommitParams {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

/// `code` for every partition of a refused commit, per topic in request order.
pub(super) fn every_partition(
    topics: &[(String, Vec<CommitPartition>)],
    code: i16,
) -> Vec<(String, Vec<(i32, i16)>)> {
    topics
        .iter()
        .map(|(t, ps)| (t.clone(), ps.iter().map(|p| (p.partition, code)).collect()))
        .collect()
}

/// Whether a commit of this generation and member may go to group `g` (Kafka's checks, now).
pub(super) fn check_member(
    g: &GroupRef,
    generation: i32,
    member_id: &str,
    instance_id: &Option<String>,
) -> Result<(), i16> {
    machine::check_commit(
        &mut g.borrow_mut().group,
        generation,
        member_id,
        instance_id.as_deref(),
        &Clock::system(),
    )
}

/// Per topic, per partition error codes in request order.
pub async fn commit(shard: Rc<Shard>, req: CommitParams) -> Vec<(String, Vec<(i32, i16)>)> {
    let part = match acquire(&shard, &req.group_id).await {
        Ok(p) => p,
        Err(c) => return every_partition(&req.topics, c),
    };
    let g = match part.group(&req.group_id) {
        Some(g) => g,
        // A consumer without group management (generation -1) may commit to a new group.
        None if req.generation < 0 => part.group_or_create(&req.group_id),
        None => return every_partition(&req.topics, errors::ILLEGAL_GENERATION),
    };
    if let Err(c) = check_member(&g, req.generation, &req.member_id, &req.instance_id) {
        return every_partition(&req.topics, c);
    }
    let max_meta = host::coordinator(&shard).config.max_metadata_bytes;
    let CommitRecords {
        records,
        values,
        mut result,
    } = commit_records(&req.group_id, &req.topics, max_meta, now_ms());
    let code = part.write(&shard, records).await;
    if code == errors::NONE {
        let mut e = g.borrow_mut();
        for (k, v) in values {
            e.group.offsets.insert(k, v);
        }
    } else {
        fail_accepted(&mut result, code);
    }
    result
}

/// What a commit writes: the offsets records, the values it applies once written, and per
/// partition codes in request order (NONE, or OFFSET_METADATA_TOO_LARGE for one left out).
pub(super) struct CommitRecords {
    pub records: Vec<offsets_log::LogRecord>,
    pub values: Vec<((String, i32), OffsetValue)>,
    pub result: Vec<(String, Vec<(i32, i16)>)>,
}

pub(super) fn commit_records(
    group_id: &str,
    topics: &[(String, Vec<CommitPartition>)],
    max_meta: usize,
    now: i64,
) -> CommitRecords {
    let mut out = CommitRecords {
        records: Vec::new(),
        values: Vec::new(),
        result: Vec::new(),
    };
    for (topic, parts) in topics {
        let mut codes = Vec::new();
        for p in parts {
            let meta = p.metadata.clone().unwrap_or_default();
            if meta.len() > max_meta {
                codes.push((p.partition, errors::OFFSET_METADATA_TOO_LARGE));
                continue;
            }
            let v = OffsetValue {
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                metadata: meta,
                commit_timestamp: now,
            };
            out.records.push((
                offsets_log::offset_key(group_id, topic, p.partition),
                Some(offsets_log::offset_value(&v)),
            ));
            out.values.push(((topic.clone(), p.partition), v));
            codes.push((p.partition, errors::NONE));
        }
        out.result.push((topic.clone(), codes));
    }
    out
}

/// A write that failed: every partition that was accepted answers its error.
pub(super) fn fail_accepted(result: &mut [(String, Vec<(i32, i16)>)], code: i16) {
    for (_, codes) in result.iter_mut() {
        for c in codes.iter_mut() {
            if c.1 == errors::NONE {
                c.1 = code;
            }
        }
    }
}

/// One fetched offset: (partition, offset, leader epoch, metadata, error).
pub type FetchedOffset = (i32, i64, i32, Option<String>, i16);

/// Committed offsets of a group: the requested partitions, or all when `topics` is None.
pub async fn fetch_offsets(
    shard: Rc<Shard>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (i16, Vec<(String, Vec<FetchedOffset>)>) {
    fetch_offsets_stable(shard, group_id, topics, false).await
}

/// `fetch_offsets`; with `require_stable` (OffsetFetch v7+, KIP-447) a partition with offsets
/// pending in an open transaction answers UNSTABLE_OFFSET_COMMIT (the client retries).
pub async fn fetch_offsets_stable(
    shard: Rc<Shard>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> (i16, Vec<(String, Vec<FetchedOffset>)>) {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => {
            let t = topics
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, -1, -1, None, c)).collect()))
                .collect();
            return (c, t);
        }
    };
    let g = part.group(&group_id);
    let g = g.as_ref().map(|g| g.borrow());
    let g = g.as_ref().map(|e| &e.group);
    let pending = |t: &str, p: i32| {
        require_stable && {
            let key = offsets_log::offset_key(&group_id, t, p);
            part.txn_pending
                .borrow()
                .values()
                .any(|records| records.iter().any(|(k, _)| *k == key))
        }
    };
    let lookup = |t: &str, p: i32| -> FetchedOffset {
        if pending(t, p) {
            return (p, -1, -1, None, UNSTABLE_OFFSET_COMMIT);
        }
        match g.as_ref().and_then(|g| g.offsets.get(&(t.to_string(), p))) {
            Some(v) => (
                p,
                v.offset,
                v.leader_epoch,
                Some(v.metadata.clone()),
                errors::NONE,
            ),
            None => (p, -1, -1, Some(String::new()), errors::NONE),
        }
    };
    let out = match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(t, ps)| {
                let v = ps.into_iter().map(|p| lookup(&t, p)).collect();
                (t, v)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<FetchedOffset>> =
                Default::default();
            if let Some(g) = g.as_ref() {
                for ((t, p), v) in g.offsets.iter() {
                    by_topic.entry(t.clone()).or_default().push((
                        *p,
                        v.offset,
                        v.leader_epoch,
                        Some(v.metadata.clone()),
                        errors::NONE,
                    ));
                }
            }
            by_topic
                .into_iter()
                .map(|(t, mut v)| {
                    v.sort_by_key(|x| x.0);
                    (t, v)
                })
                .collect()
        }
    };
    (errors::NONE, out)
}
