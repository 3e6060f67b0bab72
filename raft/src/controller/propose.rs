//! The leader's proposer: every command queued to it (local or forwarded) in one log entry, so
//! commands arriving together share one fsync; membership changes go through openraft's own
//! calls.

use super::node::Node;
use crate::command::{Command, CommandBatch, CommandOutcome, MetaError, ProposedCommand};
use crate::network::ForwardError;
use crate::types::{NodeId, Raft};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// A command waiting for the leader's proposer.
pub(super) struct Proposal {
    pub(super) cmd: Command,
    pub(super) reply: oneshot::Sender<Result<(u64, CommandOutcome), ForwardError>>,
}

/// The leader's proposer: everything queued becomes one log entry.
pub(super) async fn propose_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    // A few entries in flight at once keep the pipeline full; under load, more commands wait
    // and each entry grows, which is what amortizes the fsync.
    let in_flight = Arc::new(Semaphore::new(4));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < node.tuning.max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (membership, normal): (Vec<Proposal>, Vec<Proposal>) =
            batch.into_iter().partition(|p| p.cmd.is_membership());
        for p in membership {
            let node = node.clone();
            tokio::spawn(async move {
                let r = change_membership(&node.raft, &p.cmd).await;
                let _ = p.reply.send(r);
            });
        }
        if normal.is_empty() {
            drop(permit);
            continue;
        }
        let raft = node.raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (cmds, replies): (Vec<Command>, Vec<_>) =
                normal.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let entry = CommandBatch {
                version: 1,
                commands: cmds.into_iter().map(ProposedCommand::new).collect(),
            };
            match raft.client_write(entry).await {
                Ok(resp) => {
                    let index = resp.log_id.index;
                    let mut outcomes = resp.data.outcomes.into_iter();
                    for reply in replies {
                        let r = match outcomes.next() {
                            Some(o) => Ok((index, o)),
                            None => Err(ForwardError::Failed("missing outcome".into())),
                        };
                        let _ = reply.send(r);
                    }
                }
                Err(e) => {
                    let fe = forward_error(e);
                    for reply in replies {
                        let _ = reply.send(Err(fe.clone()));
                    }
                }
            }
        });
    }
}

fn forward_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader {
            leader: f.leader_id,
        },
        other => ForwardError::Failed(other.to_string()),
    }
}

/// AddNode: join as a learner (catching up first), then promote to voter. RemoveNode: drop it.
async fn change_membership(
    raft: &Raft,
    cmd: &Command,
) -> Result<(u64, CommandOutcome), ForwardError> {
    match cmd {
        Command::AddNode {
            id,
            raft_addr,
            voter,
        } => {
            // A learner that is not running yet must not block the caller; a voter must have
            // caught up before it counts toward the quorum.
            let r = raft
                .add_learner(
                    *id,
                    BasicNode {
                        addr: raft_addr.clone(),
                    },
                    *voter,
                )
                .await
                .map_err(forward_error)?;
            if !*voter {
                return Ok((r.log_id.index, CommandOutcome::Done));
            }
            let r = raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await
                .map_err(forward_error)?;
            Ok((r.log_id.index, CommandOutcome::Done))
        }
        Command::RemoveNode { id } => {
            let membership = raft.metrics().borrow().membership_config.clone();
            let ids = BTreeSet::from([*id]);
            let change = if membership.membership().voter_ids().any(|v| v == *id) {
                ChangeMembers::RemoveVoters(ids)
            } else if membership.membership().get_node(id).is_some() {
                ChangeMembers::RemoveNodes(ids)
            } else {
                // Index 0: nothing was written, so waiting for it returns at once.
                return Ok((
                    0,
                    CommandOutcome::Rejected(MetaError::new(
                        crate::command::codes::INVALID_REQUEST,
                        format!("node {id} is not a member of the metadata quorum"),
                    )),
                ));
            };
            let r = raft
                .change_membership(change, false)
                .await
                .map_err(forward_error)?;
            Ok((r.log_id.index, CommandOutcome::Done))
        }
        _ => Err(ForwardError::Failed("not a membership command".into())),
    }
}
