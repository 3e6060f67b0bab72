//! `Node`: the state the tasks on the controller thread share, the controller RPCs it serves,
//! and the task that follows who leads.

use super::handle::Shared;
use super::propose::Proposal;
use super::submit::submit_local;
use super::Tuning;
use crate::command::{BrokerRegistration, BrokerRegistrationV1, Command, CommandOutcome};
use crate::image::BrokerId;
use crate::liveness::Liveness;
use crate::network::{
    ForwardError, HeartbeatReply, ImageSummary, PartitionInfo, Peers, RpcRequest, RpcResponse,
    RpcService,
};
use crate::types::{NodeId, Raft};
use openraft::ServerState;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// State shared by the tasks on the controller thread.
pub(super) struct Node {
    pub(super) id: NodeId,
    pub(super) raft: Raft,
    pub(super) peers: Peers,
    pub(super) proposals: mpsc::UnboundedSender<Proposal>,
    pub(super) liveness: Liveness,
    pub(super) shared: Arc<Shared>,
    pub(super) tuning: Tuning,
}

impl RpcService for Node {
    fn handle(
        self: Arc<Self>,
        req: RpcRequest,
    ) -> Pin<Box<dyn Future<Output = RpcResponse> + Send>> {
        Box::pin(async move {
            match req {
                RpcRequest::AppendEntries(r) => {
                    RpcResponse::AppendEntries(self.raft.append_entries(r).await)
                }
                RpcRequest::Vote(r) => RpcResponse::Vote(self.raft.vote(r).await),
                RpcRequest::InstallSnapshot(r) => {
                    RpcResponse::InstallSnapshot(self.raft.install_snapshot(r).await)
                }
                RpcRequest::Forward(cmds) => RpcResponse::Forward(self.propose_all(cmds).await),
                RpcRequest::Submit(cmd) => RpcResponse::Submit(
                    submit_local(&self, cmd)
                        .await
                        .map(|s| (s.index, s.outcome))
                        .map_err(|e| e.to_string()),
                ),
                RpcRequest::Summary => {
                    let img = self.shared.hub.current();
                    let mut v: Vec<PartitionInfo> = img
                        .topics
                        .values()
                        .flat_map(|t| {
                            t.partitions.iter().enumerate().map(|(i, p)| PartitionInfo {
                                topic: t.name.clone(),
                                partition: i as i32,
                                state: p.clone(),
                            })
                        })
                        .collect();
                    v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                    RpcResponse::Summary(ImageSummary {
                        applied_index: img.applied_index,
                        brokers: img.brokers.values().cloned().collect(),
                        partitions: v,
                    })
                }
                RpcRequest::WaitServed { index, timeout_ms } => {
                    let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(60_000));
                    RpcResponse::WaitServed(
                        self.shared.hub.wait_applied(index, deadline).await.is_ok(),
                    )
                }
                RpcRequest::Quorum => RpcResponse::Quorum(self.local_quorum()),
                RpcRequest::Heartbeat { broker } => {
                    let accepted = self.liveness.is_leader();
                    if accepted {
                        self.liveness.heartbeat(broker, Instant::now());
                    }
                    RpcResponse::Heartbeat(HeartbeatReply { accepted })
                }
            }
        })
    }
}

impl Node {
    pub(super) fn leader(&self) -> Option<NodeId> {
        let l = self.shared.leader.load(Ordering::Acquire);
        (l >= 0).then_some(l as NodeId)
    }

    pub(super) fn leader_addr(&self, leader: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&leader).map(|n| n.addr.clone())
    }

    /// Queue commands to this node's proposer (it must be the leader) and wait for each.
    pub(super) async fn propose_all(
        &self,
        cmds: Vec<Command>,
    ) -> Vec<Result<(u64, CommandOutcome), ForwardError>> {
        let mut rxs = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            if let Command::RegisterBroker(BrokerRegistration { id, .. })
            | Command::RegisterBrokerV1(BrokerRegistrationV1 { id, .. }) = &cmd
            {
                // A registration starts a fresh session, as in Kafka: the broker's last
                // heartbeat may date from before it died, and the liveness check must not fence
                // it again before its first heartbeat of this life arrives.
                self.liveness.heartbeat(*id, Instant::now());
            }
            let (tx, rx) = oneshot::channel();
            if self.proposals.send(Proposal { cmd, reply: tx }).is_err() {
                drop(rx);
                rxs.push(None);
            } else {
                rxs.push(Some(rx));
            }
        }
        let mut out = Vec::with_capacity(rxs.len());
        for rx in rxs {
            out.push(match rx {
                Some(rx) => rx
                    .await
                    .unwrap_or_else(|_| Err(ForwardError::Failed("controller stopping".into()))),
                None => Err(ForwardError::Failed("controller stopping".into())),
            });
        }
        out
    }
}

/// Track the Raft leader: publish it in the image, and start/stop liveness tracking.
pub(super) async fn watch_leader(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut was_leader = false;
    loop {
        let (leader, is_leader) = {
            let m = rx.borrow_and_update();
            (m.current_leader, m.state == ServerState::Leader)
        };
        node.shared
            .leader
            .store(leader.map(|l| l as i64).unwrap_or(-1), Ordering::Release);
        node.shared
            .hub
            .set_controller(leader.map(|l| l as BrokerId));
        if is_leader && !was_leader {
            tracing::info!(node = node.id, "became the active controller");
            node.liveness.became_leader(Instant::now());
        } else if !is_leader && was_leader {
            node.liveness.lost_leadership();
        }
        was_leader = is_leader;
        if rx.changed().await.is_err() {
            return;
        }
    }
}
