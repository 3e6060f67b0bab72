//! ElectLeaders: preferred (type 0; the only kind in v0) or unclean (type 1) leader elections
//! through the controller, answered per partition with Kafka's errors: ELECTION_NOT_NEEDED,
//! PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION.
//! A null topic list means every partition, and then (as Kafka) partitions already led by the
//! right replica are left out of the answer.

use super::partition_commands::{self, PartitionResult};
use super::{str_bytes, topic_name};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::{Command, MetaError, PartitionRef};
use kafka_protocol::messages::elect_leaders_response::{
    PartitionResult as WirePartition, ReplicaElectionResult,
};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: ElectLeadersRequest = decode(body, ctx.api_version)?;
    let all_partitions = req.topic_partitions.is_none();
    // ALTER on the cluster, as Kafka; refused, every partition asked for carries the error
    // too (none for "every partition": the names are not revealed).
    let authorized = crate::acl::cluster_allowed(&shard, &ctx, chronik_raft::acl::Operation::Alter);
    let wanted: Vec<PartitionRef> = match &req.topic_partitions {
        None if !authorized => Vec::new(),
        None => shard.with_image(chronik_raft::metadata::all_partitions),
        // Duplicates are answered once, as Kafka turns the list into a set.
        Some(topics) => {
            let mut seen = BTreeSet::new();
            topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| PartitionRef {
                        topic: t.topic.0.to_string(),
                        partition: *p,
                    })
                })
                .filter(|p| seen.insert(p.clone()))
                .collect()
        }
    };
    let preferred = match (ctx.api_version, req.election_type) {
        (0, _) | (_, PREFERRED) => Some(true),
        (_, UNCLEAN) => Some(false),
        _ => None,
    };
    let mut results: BTreeMap<PartitionRef, Result<(), MetaError>> = BTreeMap::new();
    let mut top_error = errors::NONE;
    match preferred {
        _ if !authorized => {
            if ctx.api_version >= 1 {
                top_error = errors::CLUSTER_AUTHORIZATION_FAILED;
            }
            let e = MetaError::new(
                errors::CLUSTER_AUTHORIZATION_FAILED,
                "Authorization failed.",
            );
            for p in &wanted {
                results.insert(p.clone(), Err(e.clone()));
            }
        }
        None => {
            top_error = errors::INVALID_REQUEST;
            let e = MetaError::new(
                errors::INVALID_REQUEST,
                format!("unknown election type {}", req.election_type),
            );
            for p in &wanted {
                results.insert(p.clone(), Err(e.clone()));
            }
        }
        Some(_) if wanted.is_empty() => {}
        Some(preferred) => {
            let cmd = |partitions| Command::ElectLeaders {
                partitions,
                preferred,
            };
            // Validate before proposing: only partitions the dry run would change go to Raft.
            let dry = partition_commands::dry_run(&shard, &cmd(wanted.clone()));
            let mut propose = Vec::new();
            for (p, r) in dry {
                match r {
                    Ok(_) => propose.push(p),
                    Err(e) => {
                        results.insert(p, Err(e));
                    }
                }
            }
            if !propose.is_empty() {
                let timeout = partition_commands::timeout_of(req.timeout_ms);
                let done: Vec<PartitionResult> =
                    partition_commands::submit(&shard, cmd(propose.clone()), &propose, timeout)
                        .await;
                for (p, r) in done {
                    results.insert(p, r.map(|_| ()));
                }
            }
        }
    }
    let mut resp = ElectLeadersResponse::default();
    resp.error_code = top_error;
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for p in &wanted {
        let r = results
            .get(p)
            .cloned()
            .unwrap_or_else(|| Err(MetaError::new(errors::UNKNOWN_SERVER_ERROR, "no outcome")));
        if all_partitions && matches!(&r, Err(e) if e.code == errors::ELECTION_NOT_NEEDED) {
            continue;
        }
        let mut wp = WirePartition::default();
        wp.partition_id = p.partition;
        match r {
            Ok(()) => wp.error_code = errors::NONE,
            Err(e) => {
                wp.error_code = e.code;
                wp.error_message = Some(str_bytes(&e.message));
            }
        }
        match by_topic.last_mut() {
            Some(t) if t.topic.0.as_str() == p.topic => t.partition_result.push(wp),
            _ => {
                let mut t = ReplicaElectionResult::default();
                t.topic = topic_name(&p.topic);
                t.partition_result.push(wp);
                by_topic.push(t);
            }
        }
    }
    resp.replica_election_results = by_topic;
    ctx.encode(&resp).map(Some)
}
