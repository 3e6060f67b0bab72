//! Replica placement: which brokers hold each new partition.
//!
//! Deterministic for the same input (the same live brokers, the same start offset), because every
//! node runs it while applying the same log entry and must reach the same assignment.
//!
//! - Partition p takes the next `rf` brokers of one round-robin sequence over the broker list,
//!   starting at `start`: replicas are distinct, and every broker holds within one replica of
//!   every other for the topic. `start` rotates between topics (the controller advances it).
//! - The leader (first replica) is the row member leading the fewest partitions so far, so
//!   leaders spread evenly too.
//! - With racks, the broker list alternates racks (a1, b1, c1, a2, b2, ...), as Kafka does, so
//!   any `rf` consecutive brokers sit on distinct racks when racks are the same size.

use crate::command::{codes, MetaError};
use crate::image::BrokerId;
use std::collections::BTreeMap;

/// A broker that may receive replicas: registered and not fenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementBroker {
    pub id: BrokerId,
    pub rack: Option<String>,
}

/// Assign `num_partitions` partitions of `replication_factor` replicas each.
pub fn place(
    brokers: &[PlacementBroker],
    num_partitions: usize,
    replication_factor: usize,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, MetaError> {
    if replication_factor == 0 {
        return Err(MetaError::new(
            codes::INVALID_REPLICATION_FACTOR,
            "replication factor must be at least 1",
        ));
    }
    // Callers validate both counts first; this keeps an unchecked count from being allocated.
    if num_partitions > crate::validate::MAX_PARTITIONS_PER_TOPIC {
        return Err(MetaError::new(
            codes::INVALID_PARTITIONS,
            format!(
                "{num_partitions} partitions; a topic may have at most {}",
                crate::validate::MAX_PARTITIONS_PER_TOPIC
            ),
        ));
    }
    if replication_factor > brokers.len() {
        return Err(MetaError::new(
            codes::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {} is larger than the {} available brokers",
                replication_factor,
                brokers.len()
            ),
        ));
    }
    let order = rack_alternated(brokers);
    let n = order.len();
    let mut leader_counts = vec![0usize; n];
    let mut out = Vec::with_capacity(num_partitions);
    for p in 0..num_partitions {
        // Row p takes the next `replication_factor` brokers of one long round-robin sequence:
        // distinct within the row (rf <= n), and over the topic every broker gets within one
        // replica of every other.
        let first = start + p * replication_factor;
        let mut row: Vec<usize> = (0..replication_factor).map(|j| (first + j) % n).collect();
        // Lead with the row member that leads the fewest partitions so far (first in row order
        // on ties), which spreads leaders even when rf and the broker count share a factor.
        let lead_pos = (0..row.len())
            .min_by_key(|&k| (leader_counts[row[k]], k))
            .unwrap_or(0);
        let leader = row.remove(lead_pos);
        row.insert(0, leader);
        leader_counts[leader] += 1;
        out.push(row.into_iter().map(|i| order[i].id).collect());
    }
    Ok(out)
}

/// Brokers ordered so racks alternate; within a rack by id. Without racks: by id.
fn rack_alternated(brokers: &[PlacementBroker]) -> Vec<PlacementBroker> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<&PlacementBroker>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b);
    }
    for list in by_rack.values_mut() {
        list.sort_by_key(|b| b.id);
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while out.len() < brokers.len() {
        for list in by_rack.values() {
            if let Some(b) = list.get(round) {
                out.push((*b).clone());
            }
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::{HashMap, HashSet};

    fn brokers(n: usize, racks: usize) -> Vec<PlacementBroker> {
        (0..n)
            .map(|i| PlacementBroker {
                id: (i as i32) * 3 + 1,
                rack: if racks == 0 {
                    None
                } else {
                    Some(format!("r{}", i % racks))
                },
            })
            .collect()
    }

    fn spread(counts: &HashMap<BrokerId, usize>, all: &[PlacementBroker]) -> usize {
        let v: Vec<usize> = all
            .iter()
            .map(|b| counts.get(&b.id).copied().unwrap_or(0))
            .collect();
        v.iter().max().copied().unwrap_or(0) - v.iter().min().copied().unwrap_or(0)
    }

    #[test]
    fn placement_is_balanced_rack_aware_and_deterministic_over_many_seeds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..3000 {
            let n = rng.gen_range(1..=12);
            // Equal-sized racks (or none), so both balance and rack spread are achievable.
            let racks = match rng.gen_range(0..3) {
                0 => 0,
                _ => {
                    let divisors: Vec<usize> = (1..=n).filter(|d| n % d == 0).collect();
                    divisors[rng.gen_range(0..divisors.len())]
                }
            };
            let bs = brokers(n, racks);
            let rf = rng.gen_range(1..=n);
            let parts = rng.gen_range(1..=40);
            let start = rng.gen_range(0..100);
            let a = place(&bs, parts, rf, start).expect("valid placement");
            assert_eq!(a, place(&bs, parts, rf, start).expect("valid placement"));
            assert_eq!(a.len(), parts);
            let mut replicas = HashMap::new();
            let mut leaders = HashMap::new();
            for r in &a {
                assert_eq!(r.len(), rf);
                let distinct: HashSet<_> = r.iter().collect();
                assert_eq!(distinct.len(), rf, "duplicate replica in {r:?}");
                *leaders.entry(r[0]).or_insert(0) += 1;
                for b in r {
                    *replicas.entry(*b).or_insert(0) += 1;
                }
                if racks > 0 {
                    let rack_of = |id: &BrokerId| {
                        bs.iter().find(|b| b.id == *id).and_then(|b| b.rack.clone())
                    };
                    let distinct_racks: HashSet<_> = r.iter().map(rack_of).collect();
                    assert_eq!(
                        distinct_racks.len(),
                        rf.min(racks),
                        "racks not spread: {r:?} n={n} racks={racks}"
                    );
                }
            }
            assert!(
                spread(&replicas, &bs) <= 1,
                "replicas unbalanced n={n} racks={racks} rf={rf} p={parts}: {a:?}"
            );
            assert!(
                spread(&leaders, &bs) <= 1,
                "leaders unbalanced n={n} rf={rf} p={parts}: {a:?}"
            );
        }
    }

    #[test]
    fn replication_factor_above_live_brokers_is_rejected() {
        let err = place(&brokers(2, 0), 3, 3, 0).expect_err("rf 3 on 2 brokers");
        assert_eq!(err.code, codes::INVALID_REPLICATION_FACTOR);
    }
}
