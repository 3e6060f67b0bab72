//! A leader whose log failed a write asks the controller for a new leader epoch
//! (`Command::LeaderWriteFailed`): followers may already hold the batches the log dropped, and
//! only a new epoch makes them truncate those before the offsets are used again. Until then the
//! partition takes no appends (`Partition::awaits_new_epoch`). Run from the shard's ISR loop,
//! which a failed write wakes.

use crate::partition::manager::ReplicaManager;
use chronik_raft::{Command, CommandOutcome};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often an unanswered report is sent again (the controller may have been unreachable).
const REPORT_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// Reports every led partition of this shard that waits for a new epoch and was not reported
/// within `REPORT_AGAIN_AFTER`: at once after a failed write (`write_failures` raised), and
/// with `sweep` (the ISR loop's periodic turn) again for any still waiting.
pub fn report(replicas: &Rc<ReplicaManager>, sweep: bool) {
    if !replicas.write_failures.take() && !sweep {
        return;
    }
    let now = Instant::now();
    let me = replicas.shard.config.node_id;
    for p in replicas.all() {
        let Some(epoch) = p.write_failure_to_report(now, REPORT_AGAIN_AFTER) else {
            continue;
        };
        tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, epoch, "asking the controller for a new leader epoch after a failed write");
        let cmd = Command::LeaderWriteFailed {
            topic: p.tp.topic.to_string(),
            partition: p.tp.partition,
            leader: me,
            leader_epoch: epoch,
        };
        let s = replicas.shard.clone();
        glommio::spawn_local(async move {
            match s.controller.submit(cmd).await {
                Ok(sub) => {
                    if let CommandOutcome::Partition(Err(e)) = &sub.outcome {
                        // Already moved on (a new epoch or leader): nothing left to ask for.
                        tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, code = e.code, "new leader epoch not needed: {}", e.message);
                    }
                }
                Err(e) => tracing::warn!(topic = %p.tp.topic, partition = p.tp.partition, "new leader epoch not requested (asked again in {} s): {e:?}", REPORT_AGAIN_AFTER.as_secs()),
            }
        })
        .detach();
    }
}
