//! Admin views and deletions: ListGroups, DescribeGroups, DeleteGroups, OffsetDelete, and the
//! committed offsets the lag metric reads.

use super::host::{self, Shard};
use super::machine::{self, Clock};
use super::offsets_log::{self, LogRecord, RecordKey};
use super::offsets_partition::acquire;
use super::state::GroupState;
use crate::kafka::errors;
use bytes::Bytes;
use std::rc::Rc;

/// (group id, protocol type, state) of the groups this shard coordinates.
pub fn list_local(shard: &Shard) -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    for p in host::coordinator(shard).loaded_parts() {
        for g in p.groups.borrow().values() {
            let e = g.borrow();
            let g = &e.group;
            if g.state == GroupState::Dead {
                continue;
            }
            out.push((
                g.id.clone(),
                g.protocol_type.clone().unwrap_or_default(),
                g.state.name(),
            ));
        }
    }
    out
}

/// (group, topic, partition, committed offset) of every group this shard coordinates, for
/// the lag metric.
pub fn committed_offsets(shard: &Shard) -> Vec<(String, String, i32, i64)> {
    let mut out = Vec::new();
    for p in host::coordinator(shard).loaded_parts() {
        for g in p.groups.borrow().values() {
            let e = g.borrow();
            let g = &e.group;
            for ((topic, partition), v) in &g.offsets {
                out.push((g.id.clone(), topic.clone(), *partition, v.offset));
            }
        }
    }
    out
}

pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct Described {
    pub error: i16,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

pub async fn describe(shard: Rc<Shard>, group_id: String) -> Described {
    let dead = |error| Described {
        error,
        state: GroupState::Dead.name(),
        protocol_type: String::new(),
        protocol: String::new(),
        members: Vec::new(),
    };
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return dead(c),
    };
    let Some(g) = part.group(&group_id) else {
        return dead(errors::NONE);
    };
    let e = g.borrow();
    let g = &e.group;
    let stable = g.state == GroupState::Stable;
    let protocol = g.protocol.clone().unwrap_or_default();
    Described {
        error: errors::NONE,
        state: g.state.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if stable {
            protocol.clone()
        } else {
            String::new()
        },
        members: g
            .members
            .iter()
            .map(|m| DescribedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect(),
    }
}

/// Deletes an empty group and its offsets (tombstones in the log).
pub async fn delete_group(shard: Rc<Shard>, group_id: String) -> i16 {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    let Some(g) = part.group(&group_id) else {
        return errors::GROUP_ID_NOT_FOUND;
    };
    let records = {
        let mut e = g.borrow_mut();
        let gm = &mut e.group;
        if let Err(c) = machine::begin_delete(gm, &Clock::system()) {
            return c;
        }
        let mut r: Vec<LogRecord> = gm
            .offsets
            .keys()
            .map(|(t, p)| (offsets_log::offset_key(&group_id, t, *p), None))
            .collect();
        r.push((offsets_log::group_key(&group_id), None));
        r
    };
    let code = part.write(&shard, records).await;
    if code == errors::NONE {
        let mut groups = part.groups.borrow_mut();
        if groups.get(&group_id).is_some_and(|x| Rc::ptr_eq(x, &g)) {
            groups.remove(&group_id);
        }
    } else {
        machine::delete_failed(&mut g.borrow_mut().group, &Clock::system());
    }
    code
}

/// OffsetDelete: the group-level error and per topic, per partition errors.
pub async fn delete_offsets(
    shard: Rc<Shard>,
    group_id: String,
    topics: Vec<(String, Vec<i32>)>,
) -> (i16, Vec<(String, Vec<(i32, i16)>)>) {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return (c, Vec::new()),
    };
    let Some(g) = part.group(&group_id) else {
        return (errors::GROUP_ID_NOT_FOUND, Vec::new());
    };
    let (records, result) = {
        let e = g.borrow();
        let gm = &e.group;
        if gm.state == GroupState::Dead {
            return (errors::GROUP_ID_NOT_FOUND, Vec::new());
        }
        let subscribed = if gm.state == GroupState::Empty {
            Vec::new()
        } else {
            match gm.subscribed_topics() {
                Some(t) => t,
                None => return (errors::NON_EMPTY_GROUP, Vec::new()),
            }
        };
        let mut records = Vec::new();
        let mut result = Vec::new();
        for (t, ps) in &topics {
            let mut codes = Vec::new();
            for p in ps {
                if subscribed.contains(t) {
                    codes.push((*p, errors::GROUP_SUBSCRIBED_TO_TOPIC));
                } else {
                    if gm.offsets.contains_key(&(t.clone(), *p)) {
                        records.push((offsets_log::offset_key(&group_id, t, *p), None));
                    }
                    codes.push((*p, errors::NONE));
                }
            }
            result.push((t.clone(), codes));
        }
        (records, result)
    };
    let deleted: Vec<(String, i32)> = records
        .iter()
        .filter_map(|(k, _)| match offsets_log::decode_key(k) {
            Some(RecordKey::Offset {
                topic, partition, ..
            }) => Some((topic, partition)),
            _ => None,
        })
        .collect();
    let code = part.write(&shard, records).await;
    if code != errors::NONE {
        return (code, Vec::new());
    }
    let mut e = g.borrow_mut();
    for k in deleted {
        e.group.offsets.remove(&k);
    }
    (errors::NONE, result)
}

/// Used by tests and the bench: the number of loaded groups on this shard.
pub fn loaded_group_count(shard: &Shard) -> usize {
    host::coordinator(shard)
        .loaded_parts()
        .iter()
        .map(|p| p.groups.borrow().len())
        .sum()
}
