//! The submit path of every node: a command is checked against the local image, queued, and
//! delivered in batches to the leader's proposer (here, or by one Forward RPC), retried across
//! leader changes until its deadline.

use super::handle::Shared;
use super::node::Node;
use super::Submitted;
use crate::command::{Command, CommandOutcome};
use crate::error::ControllerError;
use crate::network::{ForwardError, RpcRequest, RpcResponse};
use crate::validate::{self, Precheck};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub(super) struct Submission {
    pub(super) cmd: Command,
    pub(super) reply: async_channel::Sender<Result<Submitted, ControllerError>>,
    pub(super) deadline: Instant,
}

/// Every node: drain local submissions and deliver them, batched, to the leader.
pub(super) async fn dispatch_loop(node: Arc<Node>, rx: async_channel::Receiver<Submission>) {
    let in_flight = Arc::new(Semaphore::new(8));
    while let Ok(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < node.tuning.max_batch {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            deliver(&node, batch).await;
        });
    }
}

/// Deliver a batch, retrying what was not committed across leader changes until each deadline.
async fn deliver(node: &Node, mut pending: Vec<Submission>) {
    let mut backoff = Duration::from_millis(5);
    while !pending.is_empty() {
        let now = Instant::now();
        let leader = node.leader();
        pending.retain(|s| {
            if now >= s.deadline {
                let e = if leader.is_none() {
                    ControllerError::NoLeader
                } else {
                    ControllerError::Timeout
                };
                let _ = s.reply.try_send(Err(e));
                false
            } else {
                true
            }
        });
        if pending.is_empty() {
            return;
        }
        // A round never outlives the earliest deadline: a Raft core stalled on its disk (a full
        // log volume) must not hold the callers past their timeouts.
        let earliest = pending.iter().map(|s| s.deadline).min().unwrap_or(now);
        let stalled = || {
            vec![Err(ForwardError::Failed("no answer before the deadline".into())); pending.len()]
        };
        let results: Vec<Result<(u64, CommandOutcome), ForwardError>> = match leader {
            None => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
                continue;
            }
            Some(l) if l == node.id => {
                let all = node.propose_all(pending.iter().map(|s| s.cmd.clone()).collect());
                tokio::time::timeout_at(earliest.into(), all)
                    .await
                    .unwrap_or_else(|_| stalled())
            }
            Some(l) => {
                let Some(addr) = node.leader_addr(l) else {
                    tokio::time::sleep(backoff).await;
                    continue;
                };
                let req = RpcRequest::Forward(pending.iter().map(|s| s.cmd.clone()).collect());
                let timeout = earliest
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                match node.peers.client(&addr).call(&req, timeout).await {
                    Ok(RpcResponse::Forward(r)) if r.len() == pending.len() => r,
                    Ok(_) => {
                        vec![Err(ForwardError::Failed("bad forward reply".into())); pending.len()]
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "forward to leader failed; retrying");
                        vec![Err(ForwardError::Failed(e.to_string())); pending.len()]
                    }
                }
            }
        };
        let mut retry = Vec::new();
        for (s, r) in pending.into_iter().zip(results) {
            match r {
                Ok((index, outcome)) => {
                    let _ = s.reply.try_send(Ok(Submitted { index, outcome }));
                }
                // Not committed (or unknown after a lost connection): try again, the leader may
                // have moved. Commands are validated on apply, so a retried duplicate at worst
                // reports e.g. TOPIC_ALREADY_EXISTS.
                Err(e) => {
                    tracing::debug!(error = ?e, "proposal not committed; retrying");
                    retry.push(s);
                }
            }
        }
        pending = retry;
        if !pending.is_empty() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }
}

/// Submit from inside the controller thread (same path as the handle's `submit`).
pub(super) async fn submit_local(node: &Node, cmd: Command) -> Result<Submitted, ControllerError> {
    submit_checked(&node.shared, cmd, node.tuning.request_timeout).await
}

/// Check the command against this node's image first (`validate::precheck`): what is decided
/// there (validate-only requests, refused topics) is answered with index 0 and never reaches
/// the log; the rest is proposed and the answers merged back in request order.
pub(super) async fn submit_checked(
    shared: &Shared,
    cmd: Command,
    timeout: Duration,
) -> Result<Submitted, ControllerError> {
    let image = shared.hub.current();
    match validate::precheck(&image, cmd, shared.defaults) {
        Precheck::Answer(outcome) => Ok(Submitted { index: 0, outcome }),
        Precheck::Propose { cmd, early } => {
            let s = submit_via(&shared.submit_tx, timeout, cmd).await?;
            Ok(Submitted {
                index: s.index,
                outcome: validate::merge(early, s.outcome),
            })
        }
    }
}

/// Hands a command to the proposer and waits for its outcome (it retries across leader
/// changes until `timeout`).
async fn submit_via(
    submit_tx: &async_channel::Sender<Submission>,
    timeout: Duration,
    cmd: Command,
) -> Result<Submitted, ControllerError> {
    let (tx, rx) = async_channel::bounded(1);
    submit_tx
        .send(Submission {
            cmd,
            reply: tx,
            deadline: Instant::now() + timeout,
        })
        .await
        .map_err(|_| ControllerError::Shutdown)?;
    rx.recv().await.map_err(|_| ControllerError::Shutdown)?
}
