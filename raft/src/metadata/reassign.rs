//! Replica reassignment with the data copied before the switch (Kafka's KIP-455 shape), and
//! the two operations built on it: draining a broker and rebalancing the cluster.
//!
//! A reassignment first widens the replica set to target ∪ current; the added replicas follow
//! the leader like any follower and join the ISR once caught up (AlterPartition from the
//! leader). The AlterPartition that puts the last target replica into the ISR also completes
//! the move: the removed replicas leave the set and the ISR, and leadership moves into the
//! target if needed. Everything here runs inside `MetaState::apply`, so it is deterministic.

use super::*;
use std::collections::BTreeMap;

impl MetaState {
    /// Start (or, when nothing needs copying, finish at once) moving a partition to `target`.
    pub(super) fn reassign(
        &mut self,
        topic: &str,
        partition: i32,
        target: &[BrokerId],
    ) -> Result<PartitionState, MetaError> {
        let p = self.partition(topic, partition)?;
        if p.reassigning() && p.target_replicas() == target {
            return Ok(p.clone());
        }
        // A different target replaces a move in progress, as in Kafka (KIP-455): the new move
        // starts from the whole current set, so replicas added by the old one that the new
        // target leaves out become replicas being removed.
        validate::assignments(
            &self.image,
            std::slice::from_ref(&target.to_vec()),
            target.len(),
        )?;
        if let Some(b) = target.iter().find(|b| {
            !p.replicas.contains(b)
                && self
                    .image
                    .brokers
                    .get(b)
                    .is_none_or(|i| i.fenced || i.decommissioned)
        }) {
            return Err(MetaError::new(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!("broker {b} is fenced or being drained and cannot take a new replica"),
            ));
        }
        let removing: Vec<BrokerId> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        // Replicas a replaced move was still adding stay "adding" while the new target keeps
        // them: they may not hold the log yet.
        let adding: Vec<BrokerId> = target
            .iter()
            .copied()
            .filter(|b| !p.replicas.contains(b) || p.adding.contains(b))
            .collect();
        let live = self.live_set();
        let p = self.partition_mut(topic, partition)?;
        p.replicas = target.iter().chain(removing.iter()).copied().collect();
        p.adding = adding;
        p.removing = removing;
        p.partition_epoch += 1;
        maybe_complete(p, &live);
        Ok(p.clone())
    }

    /// Kafka's cancel (AlterPartitionReassignments with null replicas): back to the replicas
    /// the partition had before the move (the current set minus those being added), the ISR
    /// cut to them. If no original replica is in sync, only an unclean revert is possible,
    /// which Kafka allows only with `unclean.leader.election.enable`.
    pub(super) fn cancel_reassignment(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionState, MetaError> {
        let unclean = self.image.topic(topic).is_some_and(unclean_allowed);
        let p = self.partition(topic, partition)?;
        if !p.reassigning() {
            return Err(MetaError::new(
                codes::NO_REASSIGNMENT_IN_PROGRESS,
                format!(
                    "no reassignment of {}-{partition} is in progress",
                    validate::shown(topic)
                ),
            ));
        }
        let original: Vec<BrokerId> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !p.adding.contains(b))
            .collect();
        let mut isr: Vec<BrokerId> = p
            .isr
            .iter()
            .copied()
            .filter(|b| original.contains(b))
            .collect();
        let live = self.live_set();
        if isr.is_empty() {
            let pick = original.iter().copied().find(|b| live.contains(b));
            match pick {
                Some(b) if unclean => isr = vec![b],
                _ => {
                    return Err(MetaError::new(
                        codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                        "none of the original replicas is in sync; reverting would be an \
                         unclean leader election",
                    ))
                }
            }
        }
        let p = self.partition_mut(topic, partition)?;
        p.replicas = original;
        p.isr = isr;
        p.adding.clear();
        p.removing.clear();
        if !p.isr.contains(&p.leader) {
            p.leader = p
                .isr
                .iter()
                .copied()
                .find(|b| live.contains(b))
                .unwrap_or(NO_LEADER);
            p.leader_epoch += 1;
        }
        p.partition_epoch += 1;
        Ok(p.clone())
    }

    /// Mark a broker as draining and move every replica it holds to the least-loaded placeable
    /// broker that does not already hold that partition.
    pub(super) fn decommission(&mut self, id: BrokerId) -> CommandOutcome {
        if !self.image.brokers.contains_key(&id) {
            return CommandOutcome::Rejected(not_registered(id));
        }
        let mut load = self.replica_load();
        load.remove(&id);
        let mut moves = Vec::new();
        for (name, t) in self.sorted_topics() {
            for (idx, p) in t.partitions.iter().enumerate() {
                let current = p.target_replicas();
                if !current.contains(&id) {
                    continue;
                }
                let Some(to) = least_loaded(&load, &current) else {
                    return CommandOutcome::Rejected(MetaError::new(
                        codes::INVALID_REPLICATION_FACTOR,
                        format!(
                            "no other live broker can take {name}-{idx} from broker {id}; add a broker first"
                        ),
                    ));
                };
                *load.entry(to).or_default() += 1;
                let target: Vec<BrokerId> = current
                    .iter()
                    .map(|b| if *b == id { to } else { *b })
                    .collect();
                moves.push((name.clone(), idx as i32, target));
            }
        }
        if let Some(b) = self.image.brokers.get_mut(&id) {
            b.decommissioned = true;
        }
        self.apply_moves(moves)
    }

    /// Remove a drained broker from the cluster's broker list.
    pub(super) fn unregister(&mut self, id: BrokerId) -> CommandOutcome {
        if !self.image.brokers.contains_key(&id) {
            return CommandOutcome::Rejected(not_registered(id));
        }
        let held = self
            .image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.replicas.contains(&id))
            .count();
        if held > 0 {
            return CommandOutcome::Rejected(MetaError::new(
                codes::INVALID_REQUEST,
                format!("broker {id} still holds {held} replicas; drain it first"),
            ));
        }
        self.image.brokers.remove(&id);
        CommandOutcome::Done
    }

    /// Even out replica counts over the placeable brokers (moving as few replicas as possible),
    /// then preferred leaders (by reordering replica lists), as reassignments.
    pub(super) fn rebalance(&mut self) -> CommandOutcome {
        let brokers: Vec<BrokerId> = self.image.placeable_brokers().map(|b| b.id).collect();
        if brokers.is_empty() {
            return CommandOutcome::Rejected(MetaError::new(
                codes::INVALID_REQUEST,
                "no live brokers to balance over",
            ));
        }
        let mut load: BTreeMap<BrokerId, usize> = brokers.iter().map(|b| (*b, 0)).collect();
        let mut plan: Vec<(String, i32, Vec<BrokerId>)> = Vec::new();
        for (name, t) in self.sorted_topics() {
            for (idx, p) in t.partitions.iter().enumerate() {
                if p.reassigning() {
                    continue;
                }
                for b in &p.replicas {
                    *load.entry(*b).or_default() += 1;
                }
                plan.push((name.clone(), idx as i32, p.replicas.clone()));
            }
        }
        let total: usize = plan.iter().map(|(_, _, r)| r.len()).sum();
        let n = brokers.len();
        let ceil = total.div_ceil(n);
        // Move replicas off brokers above the ceiling, or off brokers that are not placeable
        // (drained), onto the least-loaded brokers below it.
        for (_, _, replicas) in plan.iter_mut() {
            for i in 0..replicas.len() {
                let b = replicas[i];
                let over = !load.contains_key(&b) || load.get(&b).copied().unwrap_or(0) > ceil;
                if !over {
                    continue;
                }
                let placeable: BTreeMap<BrokerId, usize> = brokers
                    .iter()
                    .map(|x| (*x, load.get(x).copied().unwrap_or(0)))
                    .collect();
                if let Some(to) = least_loaded(&placeable, replicas) {
                    if placeable[&to] < ceil || !load.contains_key(&b) {
                        if let Some(c) = load.get_mut(&b) {
                            *c -= 1;
                        }
                        *load.entry(to).or_default() += 1;
                        replicas[i] = to;
                    }
                }
            }
        }
        // Preferred leaders: put first, in each list, the replica that leads the fewest so far.
        let mut leads: BTreeMap<BrokerId, usize> = BTreeMap::new();
        for (_, _, replicas) in plan.iter_mut() {
            if let Some((pos, _)) = replicas
                .iter()
                .enumerate()
                .min_by_key(|(i, b)| (leads.get(b).copied().unwrap_or(0), *i))
            {
                replicas[..=pos].rotate_right(1);
            }
            if let Some(first) = replicas.first() {
                *leads.entry(*first).or_default() += 1;
            }
        }
        let moves: Vec<(String, i32, Vec<BrokerId>)> = plan
            .into_iter()
            .filter(|(name, idx, target)| {
                self.image
                    .partition(name, *idx)
                    .is_some_and(|p| &p.replicas != target)
            })
            .collect();
        self.apply_moves(moves)
    }

    fn apply_moves(&mut self, moves: Vec<(String, i32, Vec<BrokerId>)>) -> CommandOutcome {
        let results = moves
            .into_iter()
            .map(|(topic, partition, target)| {
                let r = self.reassign(&topic, partition, &target);
                (PartitionRef { topic, partition }, r)
            })
            .collect();
        CommandOutcome::Partitions(results)
    }

    /// Replicas per live broker (counting reassignment targets, not replicas being removed).
    fn replica_load(&self) -> BTreeMap<BrokerId, usize> {
        let mut load: BTreeMap<BrokerId, usize> =
            self.image.placeable_brokers().map(|b| (b.id, 0)).collect();
        for t in self.image.topics.values() {
            for p in &t.partitions {
                for b in p.target_replicas() {
                    if let Some(c) = load.get_mut(&b) {
                        *c += 1;
                    }
                }
            }
        }
        load
    }

    /// Topics in name order, so plans do not depend on hash-map order.
    fn sorted_topics(&self) -> Vec<(String, Arc<TopicImage>)> {
        let mut v: Vec<(String, Arc<TopicImage>)> = self
            .image
            .topics
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The broker with the fewest replicas (lowest id on ties) among `load`, not in `exclude`.
fn least_loaded(load: &BTreeMap<BrokerId, usize>, exclude: &[BrokerId]) -> Option<BrokerId> {
    load.iter()
        .filter(|(b, _)| !exclude.contains(b))
        .min_by_key(|(b, n)| (**n, **b))
        .map(|(b, _)| *b)
}

/// Finish a reassignment once every target replica is in the ISR: drop the removed replicas
/// from the set and the ISR, and move leadership into the target set if it was outside.
pub(super) fn maybe_complete(p: &mut PartitionState, live: &HashSet<BrokerId>) {
    if !p.reassigning() {
        return;
    }
    let target = p.target_replicas();
    if !target.iter().all(|b| p.isr.contains(b)) {
        return;
    }
    p.isr.retain(|b| target.contains(b));
    p.replicas = target;
    p.adding.clear();
    p.removing.clear();
    if !p.replicas.contains(&p.leader) {
        p.leader = p
            .replicas
            .iter()
            .copied()
            .find(|b| p.isr.contains(b) && live.contains(b))
            .unwrap_or(NO_LEADER);
        p.leader_epoch += 1;
    }
    p.partition_epoch += 1;
}
