//! ISR maintenance on the leader: a follower that has not caught up for
//! `replica.lag.time.max.ms` leaves the ISR; one that reached the high watermark rejoins. Both
//! are AlterPartition proposals to the controller, checked there against the partition epoch.
//!
//! The decision (`decide`) is a pure function of the partition's replica state and the time,
//! so every transition is unit-tested without a cluster or a real clock; `run` applies it to
//! the partitions this shard leads: at once for a follower whose fetch may take it back in, and
//! in a sweep every quarter of `replica.lag.time.max.ms` (250 ms to 2 s) for those falling
//! behind.

use crate::partition::manager::ReplicaManager;
use crate::partition::{FollowerState, Partition};
use chronik_raft::image::BrokerId;
use chronik_raft::{Command, CommandOutcome};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where the ISR check reads the time (a fixed clock in tests).
pub trait Clock {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What the leader knows of one partition when it decides its ISR.
pub struct IsrState<'a> {
    pub me: BrokerId,
    pub replicas: &'a [BrokerId],
    /// The ISR in the metadata image.
    pub isr: &'a [BrokerId],
    pub high_watermark: i64,
    /// When this broker became leader (followers not heard from since are judged by it).
    pub leader_since: Instant,
    pub followers: &'a HashMap<BrokerId, FollowerState>,
}

/// Why no decision could be made: the state breaks an invariant the controller keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrError {
    #[error("the leader {0} is not in the ISR")]
    LeaderNotInIsr(BrokerId),
    #[error("ISR member {0} is not a replica")]
    NotAReplica(BrokerId),
}

/// The ISR to propose, or `None` to keep it. Members other than the leader stay while they
/// caught up within `lag_max` (one never heard from since this leader took over, within
/// `lag_max` of that); a live replica outside rejoins once it reached the high watermark and
/// is caught up. The leader always stays. `live(b)`: broker `b` is registered and unfenced (the
/// controller refuses a fenced one, Kafka's KIP-841 rule, so it is not asked).
pub fn decide(
    st: &IsrState<'_>,
    lag_max: Duration,
    live: impl Fn(BrokerId) -> bool,
    now: Instant,
) -> Result<Option<Vec<BrokerId>>, IsrError> {
    if !st.isr.contains(&st.me) {
        return Err(IsrError::LeaderNotInIsr(st.me));
    }
    if let Some(b) = st.isr.iter().find(|b| !st.replicas.contains(b)) {
        return Err(IsrError::NotAReplica(*b));
    }
    let caught_up = |f: &FollowerState| now.saturating_duration_since(f.caught_up_at) <= lag_max;
    let leader_age = now.saturating_duration_since(st.leader_since);
    let mut new_isr: Vec<BrokerId> = st
        .isr
        .iter()
        .copied()
        .filter(|b| {
            *b == st.me
                || match st.followers.get(b) {
                    Some(f) => caught_up(f),
                    None => leader_age <= lag_max,
                }
        })
        .collect();
    for r in st.replicas {
        if new_isr.contains(r) || !live(*r) {
            continue;
        }
        if let Some(f) = st.followers.get(r) {
            if f.log_end_offset >= st.high_watermark && caught_up(f) {
                new_isr.push(*r);
            }
        }
    }
    let mut a = new_isr.clone();
    let mut b = st.isr.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    Ok((a != b).then_some(new_isr))
}

/// The sweep interval for a given `replica.lag.time.max.ms`: a quarter of it, within
/// [250 ms, 2 s]. A lagging follower leaves the ISR at most this long after its lag passed the
/// limit (Kafka checks every half of the limit).
pub fn sweep_interval(lag_max: Duration) -> Duration {
    (lag_max / 4).clamp(Duration::from_millis(250), Duration::from_secs(2))
}

/// The ISR check of one shard. A follower that may rejoin is checked as soon as its fetch says
/// so (`ReplicaManager::follower_fetched` wakes this loop); leaving the ISR is a matter of
/// time, so every led partition is swept once per `sweep_interval`.
pub async fn run(replicas: Rc<ReplicaManager>) {
    let lag_max = Duration::from_millis(replicas.shard.config.replica_lag_time_max_ms);
    let every = sweep_interval(lag_max);
    let mut next_sweep = Instant::now() + every;
    loop {
        let now = Instant::now();
        if now < next_sweep
            && !replicas.has_isr_candidates()
            && !replicas.write_failures.is_raised()
        {
            let woken = futures_lite::future::or(
                replicas.isr_wake.listen(),
                replicas.write_failures.listen(),
            );
            futures_lite::future::or(woken, glommio::timer::sleep(next_sweep - now)).await;
        }
        if replicas.shard.shutting_down.get() {
            return;
        }
        let queued = replicas.take_isr_candidates();
        if Instant::now() >= next_sweep {
            check_all(&replicas, &SystemClock);
            super::write_failure::report(&replicas, true);
            next_sweep = Instant::now() + every;
        } else {
            super::write_failure::report(&replicas, false);
            for tp in queued {
                if let Some(p) = replicas.get(&tp) {
                    check_partition(&replicas, &p, lag_max, Instant::now());
                }
            }
        }
    }
}

fn check_all(replicas: &Rc<ReplicaManager>, clock: &dyn Clock) {
    let lag_max = Duration::from_millis(replicas.shard.config.replica_lag_time_max_ms);
    let now = clock.now();
    for p in replicas.all() {
        if p.is_leader() {
            // Batches whose appender went away (closed connection) are written by the log's
            // background flusher with no one to move the HW past them: do it here.
            p.maybe_advance_hw();
        }
        check_partition(replicas, &p, lag_max, now);
    }
}

/// Decides the ISR of one partition led here and proposes a change to the controller.
fn check_partition(
    replicas: &Rc<ReplicaManager>,
    p: &Rc<Partition>,
    lag_max: Duration,
    now: Instant,
) {
    let shard = &replicas.shard;
    let me = shard.config.node_id;
    if !p.is_leader() || p.isr_change_pending.get() {
        return;
    }
    let Some(ps) = shard.with_image(|i| i.partition(&p.tp.topic, p.tp.partition).cloned()) else {
        return;
    };
    if ps.leader != me {
        return;
    }
    let followers = p.follower_states();
    let st = IsrState {
        me,
        replicas: &ps.replicas,
        isr: &ps.isr,
        high_watermark: p.high_watermark(),
        leader_since: p.leader_since(),
        followers: &followers,
    };
    let live = |b: BrokerId| shard.with_image(|i| i.broker(b).is_some_and(|x| !x.fenced));
    let new_isr = match decide(&st, lag_max, live, now) {
        Ok(Some(isr)) => isr,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(topic = %p.tp.topic, partition = p.tp.partition, "ISR check: {e}");
            return;
        }
    };
    tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, from = ?ps.isr, to = ?new_isr, "proposing ISR change");
    p.isr_change_pending.set(true);
    let cmd = Command::AlterPartition {
        topic: p.tp.topic.to_string(),
        partition: p.tp.partition,
        leader: me,
        leader_epoch: ps.leader_epoch,
        partition_epoch: ps.partition_epoch,
        new_isr,
    };
    let s = shard.clone();
    let p = p.clone();
    glommio::spawn_local(async move {
        match s.controller.submit(cmd).await {
            Ok(sub) => {
                if let CommandOutcome::Partition(Err(e)) = &sub.outcome {
                    tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, code = e.code, "ISR change refused: {}", e.message);
                }
                s.wait_for_image(sub.index, Duration::from_secs(5)).await;
            }
            Err(e) => tracing::warn!("ISR change not submitted: {e:?}"),
        }
        p.isr_change_pending.set(false);
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::{decide, IsrError, IsrState};
    use crate::partition::FollowerState;
    use chronik_raft::image::BrokerId;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    const LAG: Duration = Duration::from_secs(10);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    /// A follower last caught up at `caught_up`, with log end `leo`.
    fn follower(leo: i64, caught_up: Instant) -> FollowerState {
        FollowerState::new(leo, caught_up)
    }

    fn state<'a>(
        isr: &'a [BrokerId],
        replicas: &'a [BrokerId],
        leader_since: Instant,
        followers: &'a HashMap<BrokerId, FollowerState>,
    ) -> IsrState<'a> {
        IsrState {
            me: 1,
            replicas,
            isr,
            high_watermark: 100,
            leader_since,
            followers,
        }
    }

    fn all_live(_: BrokerId) -> bool {
        true
    }

    #[test]
    fn a_follower_caught_up_within_the_lag_limit_keeps_the_isr_as_it_is() {
        let t0 = Instant::now();
        let f = HashMap::from([(2, follower(100, at(t0, 5))), (3, follower(100, at(t0, 5)))]);
        let st = state(&[1, 2, 3], &[1, 2, 3], t0, &f);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 15)), Ok(None));
        // The ISR's order does not matter.
        let st = state(&[3, 1, 2], &[1, 2, 3], t0, &f);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 15)), Ok(None));
    }

    #[test]
    fn a_follower_not_caught_up_for_longer_than_the_limit_leaves_the_isr() {
        let t0 = Instant::now();
        let f = HashMap::from([(2, follower(40, at(t0, 1))), (3, follower(100, at(t0, 20)))]);
        let st = state(&[1, 2, 3], &[1, 2, 3], t0, &f);
        assert_eq!(
            decide(&st, LAG, all_live, at(t0, 11)),
            Ok(None),
            "exactly the limit is not over it"
        );
        assert_eq!(decide(&st, LAG, all_live, at(t0, 12)), Ok(Some(vec![1, 3])));
    }

    #[test]
    fn a_follower_never_heard_from_stays_until_the_leader_is_older_than_the_limit() {
        let t0 = Instant::now();
        let f = HashMap::new();
        let st = state(&[1, 2], &[1, 2], t0, &f);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 10)), Ok(None));
        assert_eq!(decide(&st, LAG, all_live, at(t0, 11)), Ok(Some(vec![1])));
    }

    #[test]
    fn the_leader_stays_in_the_isr_whatever_its_own_state() {
        let t0 = Instant::now();
        // No follower state at all, a leader long in office: only the others leave.
        let f = HashMap::new();
        let st = state(&[1, 2, 3], &[1, 2, 3], t0, &f);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 1000)), Ok(Some(vec![1])));
        // A leader alone in its ISR stays there.
        let st = state(&[1], &[1, 2, 3], t0, &f);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 1000)), Ok(None));
    }

    #[test]
    fn a_live_replica_that_reached_the_high_watermark_rejoins() {
        let t0 = Instant::now();
        let f = HashMap::from([(2, follower(100, at(t0, 50)))]);
        let st = state(&[1], &[1, 2], t0, &f);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 55)), Ok(Some(vec![1, 2])));
    }

    #[test]
    fn a_replica_below_the_high_watermark_lagging_or_fenced_does_not_rejoin() {
        let t0 = Instant::now();
        let below = HashMap::from([(2, follower(99, at(t0, 50)))]);
        let st = state(&[1], &[1, 2], t0, &below);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 55)), Ok(None));
        let stale = HashMap::from([(2, follower(100, at(t0, 30)))]);
        let st = state(&[1], &[1, 2], t0, &stale);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 55)), Ok(None));
        let caught_up = HashMap::from([(2, follower(100, at(t0, 50)))]);
        let st = state(&[1], &[1, 2], t0, &caught_up);
        assert_eq!(decide(&st, LAG, |b| b != 2, at(t0, 55)), Ok(None));
        // Never heard from: nothing shows it caught up.
        let none = HashMap::new();
        let st = state(&[1], &[1, 2], t0, &none);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 1)), Ok(None));
    }

    #[test]
    fn shrink_and_expand_happen_in_one_decision() {
        let t0 = Instant::now();
        let f = HashMap::from([(2, follower(10, t0)), (3, follower(100, at(t0, 50)))]);
        let st = state(&[1, 2], &[1, 2, 3], t0, &f);
        assert_eq!(decide(&st, LAG, all_live, at(t0, 55)), Ok(Some(vec![1, 3])));
    }

    #[test]
    fn a_state_that_breaks_the_invariants_gets_no_decision() {
        let t0 = Instant::now();
        let f = HashMap::new();
        let st = state(&[2, 3], &[1, 2, 3], t0, &f);
        assert_eq!(
            decide(&st, LAG, all_live, t0),
            Err(IsrError::LeaderNotInIsr(1))
        );
        let st = state(&[1, 4], &[1, 2, 3], t0, &f);
        assert_eq!(
            decide(&st, LAG, all_live, t0),
            Err(IsrError::NotAReplica(4))
        );
    }

    #[test]
    fn the_sweep_runs_every_quarter_of_the_lag_limit_within_250_ms_and_2_s() {
        use super::sweep_interval;
        assert_eq!(
            sweep_interval(Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(30)),
            Duration::from_secs(2)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(100)),
            Duration::from_millis(250)
        );
    }
}
