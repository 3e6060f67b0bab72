//! The periodic loops about brokers: this node's registration and heartbeats, and on the
//! active controller, fencing silent brokers and moving leadership back to preferred replicas.

use super::node::Node;
use super::submit::submit_local;
use crate::command::{BrokerRegistration, Command, CommandOutcome, PartitionRef};
use crate::network::{HeartbeatReply, RpcRequest, RpcResponse};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Register this node's broker once a leader exists (and again whenever it finds itself fenced
/// or unknown), and heartbeat to the active controller every interval.
pub(super) async fn broker_loop(node: Arc<Node>, reg: BrokerRegistration, interval: Duration) {
    // Registration runs as its own task so heartbeats keep flowing while it waits for a commit.
    let registering = Arc::new(AtomicBool::new(false));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = reg.id;
    let mut removed_logged = false;
    loop {
        ticker.tick().await;
        let Some(leader) = node.leader() else {
            continue;
        };
        let image = node.shared.hub.current();
        let once = node.shared.registered_at.load(Ordering::Acquire) > 0;
        let stopping = node.shared.stopping.load(Ordering::Acquire);
        let needs_registration = !stopping
            && match image.broker(me) {
                Some(b) => !once || b.fenced,
                None if !once => true,
                // Registered before and now gone: an operator removed this broker (`cluster
                // remove-node`). Registering again would undo that; a restart rejoins.
                None => {
                    if !removed_logged {
                        tracing::warn!(
                            broker = me,
                            "this broker was removed from the cluster; stop it"
                        );
                        removed_logged = true;
                    }
                    false
                }
            };
        if needs_registration && !registering.swap(true, Ordering::AcqRel) {
            let (node, reg, registering) = (node.clone(), reg.clone(), registering.clone());
            tokio::spawn(async move {
                match submit_local(&node, Command::RegisterBroker(reg)).await {
                    Ok(s) if s.outcome == CommandOutcome::Done => {
                        node.shared
                            .registered_at
                            .fetch_max(s.index, Ordering::AcqRel);
                        // Wait until our own image shows it, so we do not register twice.
                        let deadline = Instant::now() + node.tuning.request_timeout;
                        let _ = node.shared.hub.wait_applied(s.index, deadline).await;
                        tracing::info!(broker = me, index = s.index, "broker registered");
                    }
                    Ok(s) => {
                        tracing::warn!(broker = me, outcome = ?s.outcome, "broker registration refused")
                    }
                    Err(e) => {
                        tracing::debug!(broker = me, error = %e, "broker registration failed; will retry")
                    }
                }
                registering.store(false, Ordering::Release);
            });
        }
        let accepted = if leader == node.id {
            node.liveness.heartbeat(me, Instant::now());
            // The active controller is reachable only while it still leads a quorum (a leader
            // cut off from the other voters does not step down by itself).
            let check = node.raft.ensure_linearizable();
            matches!(
                tokio::time::timeout(interval.max(Duration::from_millis(200)), check).await,
                Ok(Ok(_))
            )
        } else if let Some(addr) = node.leader_addr(leader) {
            let client = node.peers.client(&addr);
            matches!(
                client
                    .call(
                        &RpcRequest::Heartbeat { broker: me },
                        interval.max(Duration::from_millis(200)),
                    )
                    .await,
                Ok(RpcResponse::Heartbeat(HeartbeatReply { accepted: true }))
            )
        } else {
            false
        };
        if accepted {
            let ms = node.shared.born.elapsed().as_millis().max(1) as u64;
            node.shared
                .controller_contact_ms
                .store(ms, Ordering::Release);
        }
    }
}

/// On the active controller: fence brokers whose heartbeats stopped for a session timeout.
pub(super) async fn fence_loop(node: Arc<Node>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let image = node.shared.hub.current();
        for broker in node.liveness.to_fence(&image, Instant::now()) {
            tracing::warn!(broker, "broker session expired; fencing");
            let node = node.clone();
            tokio::spawn(async move {
                let r = node
                    .propose_all(vec![Command::FenceBroker { id: broker }])
                    .await;
                if !matches!(r.first(), Some(Ok(_))) {
                    node.liveness.fence_failed(broker);
                }
            });
        }
    }
}

/// On the active controller: give leadership back to preferred replicas once they are live and
/// in the ISR again (after a fence and return), so leaders stay spread.
pub(super) async fn rebalance_loop(node: Arc<Node>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if !node.liveness.is_leader() {
            continue;
        }
        let image = node.shared.hub.current();
        let mut partitions: Vec<PartitionRef> = Vec::new();
        for t in image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                let live = image.broker(preferred).map(|b| !b.fenced).unwrap_or(false);
                if p.leader != preferred && live && p.isr.contains(&preferred) {
                    partitions.push(PartitionRef {
                        topic: t.name.clone(),
                        partition: i as i32,
                    });
                }
            }
        }
        if !partitions.is_empty() {
            tracing::info!(
                count = partitions.len(),
                "moving leadership back to preferred replicas"
            );
            let _ = node
                .propose_all(vec![Command::ElectLeaders {
                    partitions,
                    preferred: true,
                }])
                .await;
        }
    }
}
