//! What the handle asks of the controller thread besides submissions: waits for an index to be
//! served (here and by every live broker), and the quorum status (DescribeQuorum).

use super::node::Node;
use crate::error::ControllerError;
use crate::hub::ImageHub;
use crate::image::BrokerId;
use crate::network::{RpcRequest, RpcResponse};
use crate::quorum::QuorumStatus;
use crate::types::NodeId;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct EverywhereWait {
    pub(super) index: u64,
    pub(super) deadline: Instant,
    pub(super) reply: async_channel::Sender<usize>,
}

/// Resolves `wait_applied` callers when subscribers report serving a new image, and expires
/// the ones past their deadline.
pub(super) async fn expire_waiters(hub: Arc<ImageHub>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = ticker.tick() => hub.expire_waiters(Instant::now()),
            _ = hub.served_rung() => hub.resolve_waiters(),
        }
    }
}

/// Waits until every live, unfenced broker other than this one serves `index` (see
/// `Controller::wait_served_everywhere`). A broker that is unreachable or does not answer by
/// `deadline` is skipped: the command is committed and that broker catches up when it can.
async fn wait_served_by_peers(node: Arc<Node>, index: u64, deadline: Instant) -> usize {
    let image = node.shared.hub.current();
    let me = node.id as BrokerId;
    let mut calls = tokio::task::JoinSet::new();
    for (id, addr) in image
        .brokers
        .values()
        .filter(|b| b.id != me && !b.fenced)
        .filter_map(|b| node.leader_addr(b.id as NodeId).map(|a| (b.id, a)))
    {
        let node = node.clone();
        calls.spawn(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = RpcRequest::WaitServed {
                index,
                timeout_ms: left.as_millis() as u64,
            };
            match node
                .peers
                .client(&addr)
                .call(&req, left + Duration::from_millis(200))
                .await
            {
                Ok(RpcResponse::WaitServed(true)) => true,
                other => {
                    tracing::debug!(
                        broker = id,
                        index,
                        ok = other.is_ok(),
                        "peer did not confirm serving the index"
                    );
                    false
                }
            }
        });
    }
    let mut confirmed = 0;
    while let Some(r) = calls.join_next().await {
        confirmed += usize::from(r.unwrap_or(false));
    }
    confirmed
}

/// Serves `Controller::wait_served_everywhere` requests on the controller thread.
pub(super) async fn everywhere_loop(node: Arc<Node>, rx: async_channel::Receiver<EverywhereWait>) {
    while let Ok(w) = rx.recv().await {
        let node = node.clone();
        tokio::spawn(async move {
            let n = wait_served_by_peers(node, w.index, w.deadline).await;
            let _ = w.reply.try_send(n);
        });
    }
}

/// A `Controller::quorum` call waiting for the controller thread.
pub(super) struct QuorumQuery {
    pub(super) deadline: Instant,
    pub(super) reply: async_channel::Sender<Result<QuorumStatus, ControllerError>>,
}

/// Serves `Controller::quorum` on the controller thread: from this node's Raft metrics when it
/// leads, else from the leader's over controller RPC.
pub(super) async fn quorum_loop(node: Arc<Node>, rx: async_channel::Receiver<QuorumQuery>) {
    while let Ok(q) = rx.recv().await {
        let node = node.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout_at(q.deadline.into(), node.quorum())
                .await
                .unwrap_or(Err(ControllerError::Timeout));
            let _ = q.reply.try_send(r);
        });
    }
}

impl Node {
    pub(super) fn local_quorum(&self) -> Option<QuorumStatus> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        crate::quorum::from_metrics(&self.raft.metrics().borrow(), now_ms)
    }

    pub(super) async fn quorum(&self) -> Result<QuorumStatus, ControllerError> {
        let leader = self.leader().ok_or(ControllerError::NoLeader)?;
        if leader == self.id {
            return self.local_quorum().ok_or(ControllerError::NoLeader);
        }
        let addr = self.leader_addr(leader).ok_or(ControllerError::NoLeader)?;
        match self
            .peers
            .client(&addr)
            .call(&RpcRequest::Quorum, self.shared.request_timeout)
            .await
        {
            Ok(RpcResponse::Quorum(Some(q))) => Ok(q),
            // The leader moved since we looked: the caller may ask again.
            Ok(_) => Err(ControllerError::NoLeader),
            Err(e) => Err(ControllerError::Raft(e.to_string())),
        }
    }
}
