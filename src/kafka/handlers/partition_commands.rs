//! Per-partition controller commands (ElectLeaders, AlterPartitionReassignments): what a dry
//! run on this node's image certainly refuses is answered at once, only the rest is proposed,
//! and the answer waits until the committed change is served (read-your-writes on any node).

use super::topics::submit_served;
use crate::services::Services;
use chronik_raft::image::PartitionState;
use chronik_raft::metadata::Defaults;
use chronik_raft::{validate, Command, CommandOutcome, MetaError, PartitionRef};
use std::rc::Rc;
use std::time::Duration;

pub type PartitionResult = (PartitionRef, Result<PartitionState, MetaError>);

/// The request's own timeout, bounded as CreateTopics bounds it.
pub fn timeout_of(timeout_ms: i32) -> Duration {
    Duration::from_millis(timeout_ms.clamp(1000, 60_000) as u64)
}

/// What `cmd` would do to this node's image now (nothing is changed).
pub fn dry_run(shard: &Services, cmd: &Command) -> Vec<PartitionResult> {
    let defaults = Defaults {
        num_partitions: shard.config.num_partitions,
        replication_factor: shard.config.default_replication_factor,
    };
    match shard.with_image(|img| validate::dry_run(img, cmd, defaults)) {
        CommandOutcome::Partitions(v) => v,
        other => unexpected(&other),
    }
}

/// Commits `cmd` and returns its per-partition outcome once this node and the other live
/// brokers serve it. Errors of the controller (unreachable, timed out) are reported for every
/// partition of `on_error`.
pub async fn submit(
    shard: &Rc<Services>,
    cmd: Command,
    on_error: &[PartitionRef],
    timeout: Duration,
) -> Vec<PartitionResult> {
    let all = |e: MetaError| -> Vec<PartitionResult> {
        on_error
            .iter()
            .map(|p| (p.clone(), Err(e.clone())))
            .collect()
    };
    match submit_served(shard, cmd, timeout).await {
        Ok(CommandOutcome::Partitions(v)) => v,
        Ok(CommandOutcome::Rejected(e)) | Err(e) => all(e),
        Ok(other) => unexpected(&other),
    }
}

fn unexpected(o: &CommandOutcome) -> Vec<PartitionResult> {
    tracing::warn!("unexpected controller outcome {o:?}");
    Vec::new()
}
