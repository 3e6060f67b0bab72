//! AlterPartitionReassignments: move partitions to new replica sets with the replica-move
//! machinery `cluster rebalance` uses (the new replicas copy the log as followers; the
//! controller switches once they are in sync), or cancel a move (null replicas) back to the
//! replicas the partition had. Kafka's errors per partition: INVALID_REPLICA_ASSIGNMENT,
//! INVALID_REPLICATION_FACTOR (v1 with allowReplicationFactorChange false),
//! NO_REASSIGNMENT_IN_PROGRESS, UNKNOWN_TOPIC_OR_PARTITION. The answer comes once the move
//! is started (committed), not finished: ListPartitionReassignments shows it until then.

use super::partition_commands::{self, PartitionResult};
use super::{str_bytes, topic_name};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::{Command, MetaError, PartitionRef};
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: AlterPartitionReassignmentsRequest = decode(body, ctx.api_version)?;
    if !crate::acl::cluster_allowed(&shard, &ctx, chronik_raft::acl::Operation::Alter) {
        let mut resp = AlterPartitionReassignmentsResponse::default();
        resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    // v0 has no flag and always allows a new replication factor.
    let allow_rf_change = ctx.api_version < 1 || req.allow_replication_factor_change;
    let timeout = partition_commands::timeout_of(req.timeout_ms);
    // Per partition of the request, in order: a refusal decided here, or the running proposal.
    let mut pending: Vec<(PartitionRef, Pending)> = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let pr = PartitionRef {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
            };
            let cmd = match &p.replicas {
                None => Command::CancelReassignment {
                    topic: pr.topic.clone(),
                    partition: pr.partition,
                },
                Some(r) => Command::ReassignPartitions {
                    topic: pr.topic.clone(),
                    partition: pr.partition,
                    replicas: r.iter().map(|b| b.0).collect(),
                },
            };
            let refused = rf_change_refused(&shard, &cmd, allow_rf_change).or_else(|| {
                // Validate before proposing: a dry run on this node's image.
                partition_commands::dry_run(&shard, &cmd)
                    .into_iter()
                    .find_map(|(_, r)| r.err())
            });
            let state = match refused {
                Some(e) => Pending::Done(Err(e)),
                None => {
                    let (shard, on_error) = (shard.clone(), vec![pr.clone()]);
                    Pending::Running(glommio::spawn_local(async move {
                        partition_commands::submit(&shard, cmd, &on_error, timeout).await
                    }))
                }
            };
            pending.push((pr, state));
        }
    }
    let mut resp = AlterPartitionReassignmentsResponse::default();
    resp.allow_replication_factor_change = allow_rf_change;
    for (pr, state) in pending {
        let r: Result<(), MetaError> = match state {
            Pending::Done(r) => r,
            Pending::Running(task) => {
                let done: Vec<PartitionResult> = task.await;
                done.into_iter()
                    .next()
                    .map(|(_, r)| r.map(|_| ()))
                    .unwrap_or_else(|| {
                        Err(MetaError::new(errors::UNKNOWN_SERVER_ERROR, "no outcome"))
                    })
            }
        };
        let mut wp = ReassignablePartitionResponse::default();
        wp.partition_index = pr.partition;
        match r {
            Ok(()) => wp.error_code = errors::NONE,
            Err(e) => {
                wp.error_code = e.code;
                wp.error_message = Some(str_bytes(&e.message));
            }
        }
        match resp
            .responses
            .iter_mut()
            .find(|t| t.name.0.as_str() == pr.topic)
        {
            Some(t) => t.partitions.push(wp),
            None => {
                let mut t = ReassignableTopicResponse::default();
                t.name = topic_name(&pr.topic);
                t.partitions.push(wp);
                resp.responses.push(t);
            }
        }
    }
    ctx.encode(&resp).map(Some)
}

enum Pending {
    Done(Result<(), MetaError>),
    Running(glommio::Task<Vec<PartitionResult>>),
}

/// KIP-860: with allowReplicationFactorChange false a move must keep the replica count.
fn rf_change_refused(shard: &Services, cmd: &Command, allow: bool) -> Option<MetaError> {
    let Command::ReassignPartitions {
        topic,
        partition,
        replicas,
    } = cmd
    else {
        return None;
    };
    if allow {
        return None;
    }
    let current = shard.with_image(|img| {
        img.partition(topic, *partition)
            .map(|p| p.target_replicas().len())
    })?;
    (current != replicas.len()).then(|| {
        MetaError::new(
            errors::INVALID_REPLICATION_FACTOR,
            format!(
                "The replication factor is changed from {current} to {}",
                replicas.len()
            ),
        )
    })
}
