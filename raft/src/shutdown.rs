//! Controlled shutdown (Kafka's ControlledShutdown; KRaft's heartbeat with wantShutDown): before
//! a broker stops, the controller moves leadership of its partitions to other in-sync replicas
//! and takes it out of every ISR it shares — one committed entry, `Command::ControlledShutdown`,
//! applied like a fence. The broker stops once every live broker serves that entry, so clients
//! and followers switch to the new leaders at once instead of a session timeout after it died.
//!
//! Kafka keeps the broker unfenced "in controlled shutdown" while leaders move over several
//! records, then fences it; here both happen in one entry, so there is no state in between.

use crate::command::{Command, CommandOutcome, MetaError};
use crate::controller::{Controller, ControllerError};
use crate::image::MetadataImage;
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq)]
pub enum ShutdownOutcome {
    /// No partition shares its ISR with this broker and another: nothing to hand over.
    NothingToMove,
    /// This process never got registered, so it holds nothing the controller would move.
    NotRegistered,
    /// Committed. `leading` partitions changed leader and `sharing` ISRs lost this broker;
    /// `confirmed` of `peers` other live brokers confirmed serving it before the deadline.
    Moved {
        leading: usize,
        sharing: usize,
        confirmed: usize,
    },
    /// The controller refused it (e.g. this broker re-registered meanwhile).
    Refused(MetaError),
    /// Not committed before the deadline: no quorum, or the controller is unreachable.
    Failed(ControllerError),
}

/// (partitions this broker leads with another ISR member, partitions whose ISR it shares).
pub fn held(image: &MetadataImage, me: i32) -> (usize, usize) {
    let mut leading = 0;
    let mut sharing = 0;
    for t in image.topics.values() {
        for p in &t.partitions {
            if p.isr.len() > 1 && p.isr.contains(&me) {
                sharing += 1;
                leading += usize::from(p.leader == me);
            }
        }
    }
    (leading, sharing)
}

impl Controller {
    /// Hand this broker's leaderships and ISR places to the others and wait until every live
    /// broker serves the change; gives up at `timeout` (the broker then stops anyway). From
    /// here on the broker does not register again when it sees itself fenced.
    pub async fn controlled_shutdown(&self, timeout: Duration) -> ShutdownOutcome {
        let deadline = Instant::now() + timeout;
        self.begin_stopping();
        if !self.registration_applied() {
            return ShutdownOutcome::NotRegistered;
        }
        let me = self.node_id();
        let image = self.current_image();
        let Some(incarnation) = image
            .broker(me)
            .filter(|b| !b.fenced)
            .map(|b| b.incarnation)
        else {
            return ShutdownOutcome::NotRegistered;
        };
        let (leading, sharing) = held(&image, me);
        if sharing == 0 {
            return ShutdownOutcome::NothingToMove;
        }
        let left = || deadline.saturating_duration_since(Instant::now());
        let cmd = Command::ControlledShutdown {
            id: me,
            incarnation,
        };
        let s = match self.submit_within(cmd, left()).await {
            Ok(s) => s,
            Err(e) => return ShutdownOutcome::Failed(e),
        };
        match s.outcome {
            CommandOutcome::Done => {}
            CommandOutcome::Rejected(e) => return ShutdownOutcome::Refused(e),
            other => {
                return ShutdownOutcome::Refused(MetaError::new(
                    crate::command::codes::INVALID_REQUEST,
                    format!("unexpected outcome {other:?}"),
                ))
            }
        }
        match self.wait_served_everywhere(s.index, left()).await {
            Ok(confirmed) => ShutdownOutcome::Moved {
                leading,
                sharing,
                confirmed,
            },
            Err(e) => ShutdownOutcome::Failed(e),
        }
    }
}
