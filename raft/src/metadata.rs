//! The metadata state and the deterministic application of commands to it.
//!
//! This is the heart of the controller and knows nothing of Raft: the state machine feeds it
//! committed commands in log order, and every node computes the same state. Each command is first
//! validated against the current state and only then applied, so an invalid command (or topic of
//! a request) changes nothing.

use crate::acl::{self, AclBinding, AclFilter};
use crate::command::{
    codes, BrokerRegistration, Command, CommandOutcome, MetaError, NewTopic, PartitionRef,
    ProposedCommand,
};
use crate::image::{
    BrokerId, BrokerInfo, MetadataImage, PartitionState, TopicId, TopicImage, NO_LEADER,
};
use crate::placement::{place, PlacementBroker};
use crate::topic_config::UNCLEAN_LEADER_ELECTION;
use crate::validate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// Largest producer-id block one request may take.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1_000_000;

/// Everything the replicated state machine holds. Persisted in snapshots (see `snapshot.rs`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MetaState {
    /// Brokers and topics. `cluster_id` and `controller_id` are filled in when publishing;
    /// `applied_index` is kept up to date by the state machine.
    pub image: MetadataImage,
    /// First id of the next producer-id block.
    pub next_producer_id: i64,
    /// Start offset for the next placement, so leaders of consecutive topics land on different
    /// brokers.
    pub placement_cursor: u64,
}

/// Config values the cluster uses when a request says -1.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// Most listeners a broker may register (Kafka has no limit; every Metadata answer scans them).
const MAX_LISTENERS: usize = 64;

impl MetaState {
    pub fn apply(&mut self, pc: &ProposedCommand, defaults: Defaults) -> CommandOutcome {
        let outcome = match &pc.cmd {
            Command::RegisterBroker(reg) => self.register_broker(reg),
            Command::RegisterBrokerV1(reg) => self.register_broker(&reg.clone().into()),
            Command::FenceBroker { id } => self.fence_broker(*id),
            Command::UnfenceBroker { id } => self.unfence_broker(*id),
            Command::CreateTopics {
                topics,
                validate_only,
            } => self.create_topics(topics, &pc.topic_ids, *validate_only, defaults),
            Command::DeleteTopics { names } => self.delete_topics(names),
            Command::CreatePartitions {
                topics,
                validate_only,
            } => self.create_partitions(topics, *validate_only),
            Command::AlterConfigs {
                topic,
                set,
                delete,
                validate_only,
            } => self.alter_configs(topic, set, delete, *validate_only),
            Command::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => CommandOutcome::Partition(self.alter_partition(
                topic,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                new_isr,
            )),
            Command::ElectLeaders {
                partitions,
                preferred,
            } => self.elect_leaders(partitions, *preferred),
            Command::LeaderWriteFailed {
                topic,
                partition,
                leader,
                leader_epoch,
            } => CommandOutcome::Partition(self.leader_write_failed(
                topic,
                *partition,
                *leader,
                *leader_epoch,
            )),
            Command::ReassignPartitions {
                topic,
                partition,
                replicas,
            } => CommandOutcome::Partitions(vec![(
                PartitionRef {
                    topic: topic.clone(),
                    partition: *partition,
                },
                self.reassign(topic, *partition, replicas),
            )]),
            Command::CancelReassignment { topic, partition } => CommandOutcome::Partitions(vec![(
                PartitionRef {
                    topic: topic.clone(),
                    partition: *partition,
                },
                self.cancel_reassignment(topic, *partition),
            )]),
            Command::DecommissionBroker { id } => self.decommission(*id),
            Command::UnregisterBroker { id } => self.unregister(*id),
            Command::Rebalance => self.rebalance(),
            Command::ControlledShutdown { id, incarnation } => {
                match validate::controlled_shutdown(&self.image, *id, *incarnation) {
                    Ok(()) => self.fence_broker(*id),
                    Err(e) => CommandOutcome::Rejected(e),
                }
            }
            Command::AlterBrokerConfigs {
                broker,
                set,
                delete,
                validate_only,
            } => {
                let configs = &mut self.image.broker_configs;
                match configs.check(*broker, set, delete) {
                    Ok(()) => {
                        if !*validate_only {
                            configs.apply(*broker, set, delete);
                        }
                        CommandOutcome::Done
                    }
                    Err(e) => CommandOutcome::Rejected(e),
                }
            }
            Command::AllocateProducerIds { broker, count } => {
                CommandOutcome::ProducerIds(self.allocate_producer_ids(*broker, *count))
            }
            Command::CreateAcls { acls } => self.create_acls(acls),
            Command::DeleteAcls { filters } => self.delete_acls(filters),
            Command::AlterScramCredentials { upserts, deletes } => {
                CommandOutcome::Users(self.image.scram.alter(upserts, deletes, false))
            }
            Command::BootstrapScramUsers { upserts } => {
                CommandOutcome::Users(self.image.scram.bootstrap(upserts))
            }
            Command::AddNode { .. } | Command::RemoveNode { .. } => {
                CommandOutcome::Rejected(MetaError::new(
                    codes::INVALID_REQUEST,
                    "membership changes are not normal log entries",
                ))
            }
        };
        self.debug_check_invariants();
        outcome
    }

    fn create_acls(&mut self, acls: &[AclBinding]) -> CommandOutcome {
        if acls.len() > acl::MAX_PER_REQUEST {
            return CommandOutcome::Rejected(too_many_acls(acls.len()));
        }
        let results: Vec<Result<(), MetaError>> = acls.iter().map(acl::validate_binding).collect();
        let valid: Vec<AclBinding> = acls
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(b, _)| b.clone())
            .collect();
        if valid.is_empty() {
            return CommandOutcome::AclsCreated(results);
        }
        match self.image.acls.with_added(&valid) {
            Some(set) => {
                self.image.acls = set;
                CommandOutcome::AclsCreated(results)
            }
            None => {
                let e = MetaError::new(
                    codes::INVALID_REQUEST,
                    format!("the cluster may hold at most {} ACLs", acl::MAX_ACLS),
                );
                CommandOutcome::AclsCreated(
                    results
                        .into_iter()
                        .map(|r| r.and_then(|_| Err(e.clone())))
                        .collect(),
                )
            }
        }
    }

    fn delete_acls(&mut self, filters: &[AclFilter]) -> CommandOutcome {
        if filters.len() > acl::MAX_PER_REQUEST {
            return CommandOutcome::Rejected(too_many_acls(filters.len()));
        }
        let mut removed = BTreeSet::new();
        let results: Vec<Result<Vec<AclBinding>, MetaError>> = filters
            .iter()
            .map(|f| {
                acl::validate_filter(f)?;
                let mine: Vec<AclBinding> = self
                    .image
                    .acls
                    .matching(f)
                    .filter(|b| !removed.contains(*b))
                    .cloned()
                    .collect();
                removed.extend(mine.iter().cloned());
                Ok(mine)
            })
            .collect();
        if !removed.is_empty() {
            self.image.acls = self.image.acls.without(&removed);
        }
        CommandOutcome::AclsDeleted(results)
    }

    fn is_live(&self, id: BrokerId) -> bool {
        self.image
            .brokers
            .get(&id)
            .map(|b| !b.fenced)
            .unwrap_or(false)
    }

    fn live_set(&self) -> HashSet<BrokerId> {
        self.image.live_brokers().map(|b| b.id).collect()
    }

    fn placement_brokers(&self) -> Vec<PlacementBroker> {
        self.image
            .placeable_brokers()
            .map(|b| PlacementBroker {
                id: b.id,
                rack: b.rack.clone(),
            })
            .collect()
    }

    fn register_broker(&mut self, reg: &BrokerRegistration) -> CommandOutcome {
        let bad_listener = reg.listeners.len() > MAX_LISTENERS
            || reg
                .listeners
                .iter()
                .any(|l| l.name.is_empty() || l.host.is_empty() || l.port == 0);
        if reg.id < 0 || reg.host.is_empty() || reg.port == 0 || bad_listener {
            return CommandOutcome::Rejected(MetaError::new(
                codes::INVALID_REQUEST,
                format!("invalid broker registration {reg:?}"),
            ));
        }
        let previous = self.image.brokers.get(&reg.id).cloned();
        let incarnation = previous.as_ref().map(|b| b.incarnation + 1).unwrap_or(1);
        self.image.brokers.insert(
            reg.id,
            BrokerInfo {
                id: reg.id,
                host: reg.host.clone(),
                port: reg.port,
                rack: reg.rack.clone(),
                listeners: reg.listeners.clone(),
                incarnation,
                fenced: false,
                decommissioned: previous.as_ref().is_some_and(|b| b.decommissioned),
            },
        );
        if previous.is_some() {
            // A restarted broker may have lost its unflushed tail, or its whole disk: it must
            // not lead or count as in sync on what it had before. It leaves every ISR it
            // shares with others and rejoins as it catches up (AlterPartition from the leader).
            self.drop_from_isrs(reg.id);
        }
        self.elect_leaderless_partitions();
        CommandOutcome::Done
    }

    fn unfence_broker(&mut self, id: BrokerId) -> CommandOutcome {
        match self.image.brokers.get_mut(&id) {
            None => CommandOutcome::Rejected(not_registered(id)),
            Some(b) => {
                b.fenced = false;
                self.elect_leaderless_partitions();
                CommandOutcome::Done
            }
        }
    }

    /// Fence a broker and, in the same step, move leadership of its partitions to live ISR
    /// members and drop it from every ISR (never below one member).
    fn fence_broker(&mut self, id: BrokerId) -> CommandOutcome {
        match self.image.brokers.get_mut(&id) {
            None => return CommandOutcome::Rejected(not_registered(id)),
            Some(b) if b.fenced => return CommandOutcome::Done,
            Some(b) => b.fenced = true,
        }
        self.drop_from_isrs(id);
        CommandOutcome::Done
    }

    /// Move leadership of `id`'s partitions to other live ISR members and drop it from every
    /// ISR (never below one member).
    fn drop_from_isrs(&mut self, id: BrokerId) {
        let mut live = self.live_set();
        live.remove(&id);
        for topic in self.image.topics.iter_mut().map(|(_, v)| v) {
            let touches = topic
                .partitions
                .iter()
                .any(|p| p.leader == id || p.isr.contains(&id));
            if !touches {
                continue;
            }
            let unclean = unclean_allowed(topic);
            let t = Arc::make_mut(topic);
            for p in t.partitions.iter_mut() {
                remove_from_partition(p, id, &live, unclean);
            }
        }
    }

    /// Give a leader to every leaderless partition that has a live ISR member (or, where unclean
    /// election is enabled, a live replica).
    fn elect_leaderless_partitions(&mut self) {
        let live = self.live_set();
        for topic in self.image.topics.iter_mut().map(|(_, v)| v) {
            let unclean = unclean_allowed(topic);
            let electable = |p: &PartitionState| {
                p.leader == NO_LEADER
                    && (p.isr.iter().any(|b| live.contains(b))
                        || (unclean && p.replicas.iter().any(|b| live.contains(b))))
            };
            if !topic.partitions.iter().any(electable) {
                continue;
            }
            let t = Arc::make_mut(topic);
            for p in t.partitions.iter_mut() {
                if electable(p) {
                    elect(p, &live, unclean);
                }
            }
        }
    }

    fn create_topics(
        &mut self,
        topics: &[NewTopic],
        ids: &[TopicId],
        validate_only: bool,
        defaults: Defaults,
    ) -> CommandOutcome {
        let mut results = Vec::with_capacity(topics.len());
        let mut seen = HashSet::new();
        // Partitions held by the cluster, counting the ones this request creates as it goes.
        let mut total = validate::total_partitions(&self.image);
        for (i, nt) in topics.iter().enumerate() {
            let r = (|| {
                if !seen.insert(nt.name.as_str()) {
                    return Err(MetaError::new(
                        codes::INVALID_REQUEST,
                        format!(
                            "topic {} appears more than once in the request",
                            validate::shown(&nt.name)
                        ),
                    ));
                }
                let id = ids.get(i).copied().ok_or_else(|| {
                    MetaError::new(codes::INVALID_REQUEST, "proposal carries no topic id")
                })?;
                let topic = self.plan_topic(nt, id, defaults, total)?;
                let n = topic.partitions.len();
                total += n;
                if !validate_only {
                    self.image.topic_names_by_id.insert(id, nt.name.clone());
                    self.image.topics.insert(nt.name.clone(), Arc::new(topic));
                    self.placement_cursor = self.placement_cursor.wrapping_add(n as u64);
                }
                Ok(id)
            })();
            results.push((nt.name.clone(), r));
        }
        CommandOutcome::Topics(results)
    }

    /// Validate one new topic and compute its partitions, without changing anything. `total` is
    /// the partition count of the cluster so far.
    fn plan_topic(
        &self,
        nt: &NewTopic,
        id: TopicId,
        defaults: Defaults,
        total: usize,
    ) -> Result<TopicImage, MetaError> {
        validate::new_topic_shape(nt)?;
        if self.image.topics.contains_key(&nt.name) {
            return Err(MetaError::new(
                codes::TOPIC_ALREADY_EXISTS,
                format!("Topic '{}' already exists.", nt.name),
            ));
        }
        if let Some(other) = validate::collision(&self.image, &nt.name) {
            return Err(MetaError::new(
                codes::INVALID_TOPIC_EXCEPTION,
                format!("Topic '{}' collides with existing topic: {other}", nt.name),
            ));
        }
        if id == [0u8; 16] || self.image.topic_names_by_id.contains_key(&id) {
            return Err(MetaError::new(codes::INVALID_REQUEST, "topic id collides"));
        }
        let assignments = match &nt.assignments {
            Some(a) => {
                let rf = a.first().map_or(0, Vec::len);
                validate::assignments(&self.image, a, rf)?;
                validate::cluster_room(total, a.len())?;
                a.clone()
            }
            None => {
                let partitions =
                    validate::partition_count(nt.num_partitions, defaults.num_partitions)?;
                let brokers = self.placement_brokers();
                let rf = validate::replication_factor(
                    nt.replication_factor,
                    defaults.replication_factor,
                    brokers.len(),
                )?;
                validate::cluster_room(total, partitions)?;
                let start = cursor_start(self.placement_cursor, brokers.len());
                place(&brokers, partitions, rf, start)?
            }
        };
        let live = self.live_set();
        Ok(TopicImage {
            name: nt.name.clone(),
            id,
            partitions: assignments
                .into_iter()
                .map(|r| new_partition(r, &live))
                .collect(),
            configs: nt.configs.clone(),
        })
    }

    fn delete_topics(&mut self, names: &[String]) -> CommandOutcome {
        let results = names
            .iter()
            .map(|name| {
                let r = match self.image.topics.remove(name) {
                    Some(t) => {
                        self.image.topic_names_by_id.remove(&t.id);
                        Ok(t.id)
                    }
                    None => Err(unknown_topic(name)),
                };
                (name.clone(), r)
            })
            .collect();
        CommandOutcome::Topics(results)
    }

    fn create_partitions(
        &mut self,
        topics: &[(String, i32, Option<Vec<Vec<BrokerId>>>)],
        validate_only: bool,
    ) -> CommandOutcome {
        let mut results = Vec::with_capacity(topics.len());
        let mut total = validate::total_partitions(&self.image);
        let mut seen = HashSet::new();
        for (name, count, assignments) in topics {
            let r = if !seen.insert(name.as_str()) {
                Err(MetaError::new(
                    codes::INVALID_REQUEST,
                    format!(
                        "topic {} appears more than once in the request",
                        validate::shown(name)
                    ),
                ))
            } else {
                self.plan_partitions(name, *count, assignments.as_deref(), total)
                    .map(|(id, new)| {
                        total += new.len();
                        if !validate_only && !new.is_empty() {
                            self.placement_cursor =
                                self.placement_cursor.wrapping_add(new.len() as u64);
                            if let Some(t) = self.image.topics.get_mut(name) {
                                Arc::make_mut(t).partitions.extend(new);
                            }
                        }
                        id
                    })
            };
            results.push((name.clone(), r));
        }
        CommandOutcome::Topics(results)
    }

    fn plan_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<BrokerId>]>,
        total: usize,
    ) -> Result<(TopicId, Vec<PartitionState>), MetaError> {
        let topic = self
            .image
            .topics
            .get(name)
            .ok_or_else(|| unknown_topic(name))?;
        let current = topic.partitions.len();
        if count < 0 || (count as usize) <= current {
            return Err(MetaError::new(
                codes::INVALID_PARTITIONS,
                format!(
                    "Topic currently has {current} partitions, which is higher than or equal to \
                     the requested {count}."
                ),
            ));
        }
        let count = count as usize;
        if count > validate::MAX_PARTITIONS_PER_TOPIC {
            return Err(MetaError::new(
                codes::INVALID_PARTITIONS,
                format!(
                    "{count} partitions; a topic may have at most {}",
                    validate::MAX_PARTITIONS_PER_TOPIC
                ),
            ));
        }
        let adding = count - current;
        validate::cluster_room(total, adding)?;
        let rf = topic
            .partitions
            .first()
            .map(|p| p.replicas.len())
            .unwrap_or(1);
        let replicas = match assignments {
            Some(a) => {
                if a.len() != adding {
                    return Err(MetaError::new(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        format!("{} assignments for {adding} new partitions", a.len()),
                    ));
                }
                validate::assignments(&self.image, a, rf)?;
                a.to_vec()
            }
            None => {
                let brokers = self.placement_brokers();
                let start = cursor_start(self.placement_cursor, brokers.len());
                place(&brokers, adding, rf, start)?
            }
        };
        let live = self.live_set();
        Ok((
            topic.id,
            replicas
                .into_iter()
                .map(|r| new_partition(r, &live))
                .collect(),
        ))
    }

    fn alter_configs(
        &mut self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
        validate_only: bool,
    ) -> CommandOutcome {
        let r = (|| {
            let topic = self
                .image
                .topics
                .get(name)
                .ok_or_else(|| unknown_topic(name))?;
            validate::configs(set)?;
            validate::deleted_configs(delete)?;
            let after = topic
                .configs
                .keys()
                .filter(|k| !delete.contains(k) && !set.contains_key(*k))
                .count()
                + set.len();
            if after > validate::MAX_CONFIGS {
                return Err(MetaError::new(
                    codes::INVALID_CONFIG,
                    format!(
                        "{after} configs; at most {} are allowed",
                        validate::MAX_CONFIGS
                    ),
                ));
            }
            let id = topic.id;
            if !validate_only {
                if let Some(t) = self.image.topics.get_mut(name) {
                    let t = Arc::make_mut(t);
                    for k in delete {
                        t.configs.remove(k);
                    }
                    for (k, v) in set {
                        t.configs.insert(k.clone(), v.clone());
                    }
                }
                // Turning unclean election on may make leaderless partitions electable at once.
                self.elect_leaderless_partitions();
            }
            Ok(id)
        })();
        CommandOutcome::Topics(vec![(name.to_string(), r)])
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[BrokerId],
    ) -> Result<PartitionState, MetaError> {
        let p = self.partition(topic, partition)?;
        check_current_leader(p, leader, leader_epoch)?;
        if partition_epoch != p.partition_epoch {
            return Err(MetaError::new(
                codes::INVALID_UPDATE_VERSION,
                format!(
                    "partition epoch {partition_epoch} is not the current {}",
                    p.partition_epoch
                ),
            ));
        }
        if !new_isr.contains(&leader) {
            return Err(MetaError::new(
                codes::INELIGIBLE_REPLICA,
                "the new ISR must contain the leader",
            ));
        }
        let distinct: BTreeSet<_> = new_isr.iter().collect();
        if distinct.len() != new_isr.len() {
            return Err(MetaError::new(
                codes::INVALID_REQUEST,
                "duplicate broker in the new ISR",
            ));
        }
        if let Some(b) = new_isr
            .iter()
            .find(|b| !p.replicas.contains(b) || !self.is_live(**b))
        {
            return Err(MetaError::new(
                codes::INELIGIBLE_REPLICA,
                format!("broker {b} is not a live replica of {topic}-{partition}"),
            ));
        }
        let live = self.live_set();
        let p = self.partition_mut(topic, partition)?;
        p.isr = new_isr.to_vec();
        p.partition_epoch += 1;
        reassign::maybe_complete(p, &live);
        Ok(p.clone())
    }

    /// A new leader epoch after the leader's failed write (see `Command::LeaderWriteFailed`):
    /// the first live ISR member other than the failed leader, in replica order, leads; the
    /// same broker if there is none. The ISR stays: the old leader still holds everything up
    /// to the high watermark.
    fn leader_write_failed(
        &mut self,
        topic: &str,
        partition: i32,
        leader: BrokerId,
        leader_epoch: i32,
    ) -> Result<PartitionState, MetaError> {
        let live = self.live_set();
        let p = self.partition(topic, partition)?;
        check_current_leader(p, leader, leader_epoch)?;
        let (Some(next_epoch), Some(next_pe)) = (
            p.leader_epoch.checked_add(1),
            p.partition_epoch.checked_add(1),
        ) else {
            return Err(MetaError::new(
                codes::INVALID_REQUEST,
                "the partition's epochs are exhausted",
            ));
        };
        let next = p
            .replicas
            .iter()
            .copied()
            .find(|b| *b != leader && p.isr.contains(b) && live.contains(b))
            .unwrap_or(leader);
        let p = self.partition_mut(topic, partition)?;
        p.leader = next;
        p.leader_epoch = next_epoch;
        p.partition_epoch = next_pe;
        Ok(p.clone())
    }

    fn elect_leaders(&mut self, partitions: &[PartitionRef], preferred: bool) -> CommandOutcome {
        let targets: Vec<PartitionRef> = if partitions.is_empty() {
            all_partitions(&self.image)
        } else {
            partitions.to_vec()
        };
        let live = self.live_set();
        let mut results = Vec::with_capacity(targets.len());
        for pr in targets {
            let r = (|| {
                let unclean_cfg = self
                    .image
                    .topics
                    .get(&pr.topic)
                    .map(|t| unclean_allowed(t))
                    .unwrap_or(false);
                let p = self.partition(&pr.topic, pr.partition)?;
                let new_leader = if preferred {
                    let want = p.replicas.first().copied().unwrap_or(NO_LEADER);
                    if p.leader == want {
                        return Err(MetaError::new(
                            codes::ELECTION_NOT_NEEDED,
                            "the preferred replica already leads",
                        ));
                    }
                    if !live.contains(&want) || !p.isr.contains(&want) {
                        return Err(MetaError::new(
                            codes::PREFERRED_LEADER_NOT_AVAILABLE,
                            format!("preferred replica {want} is not a live ISR member"),
                        ));
                    }
                    want
                } else {
                    if p.leader != NO_LEADER && live.contains(&p.leader) {
                        return Err(MetaError::new(
                            codes::ELECTION_NOT_NEEDED,
                            "the partition has a live leader",
                        ));
                    }
                    // An explicit unclean election request allows a replica outside the ISR, as
                    // Kafka's ElectLeaders(UNCLEAN) does; the topic config is not needed for it.
                    let _ = unclean_cfg;
                    match pick_leader(p, &live, true) {
                        Some(l) => l,
                        None => {
                            return Err(MetaError::new(
                                codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                                "no live replica to elect",
                            ))
                        }
                    }
                };
                let p = self.partition_mut(&pr.topic, pr.partition)?;
                if !p.isr.contains(&new_leader) {
                    p.isr = vec![new_leader];
                }
                p.leader = new_leader;
                p.leader_epoch += 1;
                p.partition_epoch += 1;
                Ok(p.clone())
            })();
            results.push((pr, r));
        }
        CommandOutcome::Partitions(results)
    }

    /// Replace a partition's replica set. The ISR keeps only members that stay replicas; new
    /// replicas join it later through AlterPartition once the leader sees them caught up.
    fn allocate_producer_ids(&mut self, broker: BrokerId, count: u32) -> Result<i64, MetaError> {
        if !self.image.brokers.contains_key(&broker) {
            return Err(not_registered(broker));
        }
        if count == 0 || count > MAX_PRODUCER_ID_BLOCK {
            return Err(MetaError::new(
                codes::INVALID_REQUEST,
                format!("producer id block size must be 1..={MAX_PRODUCER_ID_BLOCK}, got {count}"),
            ));
        }
        let first = self.next_producer_id;
        let next = first
            .checked_add(count as i64)
            .ok_or_else(|| MetaError::new(codes::INVALID_REQUEST, "producer ids exhausted"))?;
        self.next_producer_id = next;
        Ok(first)
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<&PartitionState, MetaError> {
        self.image
            .partition(topic, partition)
            .ok_or_else(|| unknown_partition(topic, partition))
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut PartitionState, MetaError> {
        let t = self
            .image
            .topics
            .get_mut(topic)
            .ok_or_else(|| unknown_partition(topic, partition))?;
        let idx = usize::try_from(partition).map_err(|_| unknown_partition(topic, partition))?;
        Arc::make_mut(t)
            .partitions
            .get_mut(idx)
            .ok_or_else(|| unknown_partition(topic, partition))
    }

    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            for t in self.image.topics.values() {
                debug_assert_eq!(self.image.topic_names_by_id.get(&t.id), Some(&t.name));
                for p in &t.partitions {
                    debug_assert!(!p.isr.is_empty(), "empty ISR in {}", t.name);
                    debug_assert!(
                        p.leader == NO_LEADER || p.isr.contains(&p.leader),
                        "leader outside ISR in {}: {p:?}",
                        t.name
                    );
                    debug_assert!(p.isr.iter().all(|b| p.replicas.contains(b)));
                }
            }
            debug_assert_eq!(self.image.topics.len(), self.image.topic_names_by_id.len());
        }
    }
}

fn cursor_start(cursor: u64, brokers: usize) -> usize {
    if brokers == 0 {
        0
    } else {
        (cursor % brokers as u64) as usize
    }
}

fn new_partition(replicas: Vec<BrokerId>, live: &HashSet<BrokerId>) -> PartitionState {
    // Explicit assignments may name a fenced broker first: lead with the first live one.
    let leader = replicas
        .iter()
        .copied()
        .find(|b| live.contains(b))
        .unwrap_or(NO_LEADER);
    let isr = if leader == NO_LEADER {
        replicas.clone()
    } else {
        replicas
            .iter()
            .copied()
            .filter(|b| live.contains(b))
            .collect()
    };
    PartitionState {
        isr,
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
        replicas,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

/// A request made by `leader` under `leader_epoch` is still the partition's leader's own.
fn check_current_leader(
    p: &PartitionState,
    leader: BrokerId,
    leader_epoch: i32,
) -> Result<(), MetaError> {
    if leader_epoch != p.leader_epoch {
        return Err(MetaError::new(
            codes::FENCED_LEADER_EPOCH,
            format!(
                "leader epoch {leader_epoch} is not the current {}",
                p.leader_epoch
            ),
        ));
    }
    if leader != p.leader {
        return Err(MetaError::new(
            codes::NOT_LEADER_OR_FOLLOWER,
            format!("broker {leader} is not the leader ({})", p.leader),
        ));
    }
    Ok(())
}

fn unclean_allowed(t: &TopicImage) -> bool {
    t.config(UNCLEAN_LEADER_ELECTION)
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

/// First live ISR member; with `unclean`, else the first live replica.
fn pick_leader(p: &PartitionState, live: &HashSet<BrokerId>, unclean: bool) -> Option<BrokerId> {
    p.isr
        .iter()
        .copied()
        .find(|b| live.contains(b))
        .or_else(|| {
            if unclean {
                p.replicas.iter().copied().find(|b| live.contains(b))
            } else {
                None
            }
        })
}

/// Elect a leader for a leaderless partition; an unclean pick resets the ISR to the new leader.
fn elect(p: &mut PartitionState, live: &HashSet<BrokerId>, unclean: bool) {
    if let Some(l) = pick_leader(p, live, unclean) {
        if !p.isr.contains(&l) {
            p.isr = vec![l];
        }
        p.leader = l;
        p.leader_epoch += 1;
        p.partition_epoch += 1;
    }
}

/// Drop a fenced broker from a partition: out of the ISR (keeping at least one member) and, if it
/// led, hand leadership to the first live ISR member or to nobody.
fn remove_from_partition(
    p: &mut PartitionState,
    gone: BrokerId,
    live: &HashSet<BrokerId>,
    unclean: bool,
) {
    let mut changed = false;
    if p.isr.len() > 1 && p.isr.contains(&gone) {
        p.isr.retain(|b| *b != gone);
        changed = true;
    }
    if p.leader == gone {
        let old_epoch = p.leader_epoch;
        match pick_leader(p, live, unclean) {
            Some(l) => {
                if !p.isr.contains(&l) {
                    p.isr = vec![l];
                }
                p.leader = l;
            }
            None => p.leader = NO_LEADER,
        }
        p.leader_epoch = old_epoch + 1;
        changed = true;
    }
    if changed {
        p.partition_epoch += 1;
    }
}

fn too_many_acls(n: usize) -> MetaError {
    MetaError::new(
        codes::INVALID_REQUEST,
        format!("{n} ACLs in one request; at most {}", acl::MAX_PER_REQUEST),
    )
}

fn not_registered(id: BrokerId) -> MetaError {
    MetaError::new(
        codes::BROKER_ID_NOT_REGISTERED,
        format!("broker {id} is not registered"),
    )
}

fn unknown_topic(name: &str) -> MetaError {
    MetaError::new(
        codes::UNKNOWN_TOPIC_OR_PARTITION,
        format!("unknown topic {}", validate::shown(name)),
    )
}

fn unknown_partition(topic: &str, partition: i32) -> MetaError {
    MetaError::new(
        codes::UNKNOWN_TOPIC_OR_PARTITION,
        format!("unknown partition {}-{partition}", validate::shown(topic)),
    )
}

/// Every partition of `img`, sorted (ElectLeaders for "all partitions").
pub fn all_partitions(img: &MetadataImage) -> Vec<PartitionRef> {
    let mut all: Vec<PartitionRef> = img
        .topics
        .values()
        .flat_map(|t| {
            (0..t.partitions.len()).map(|i| PartitionRef {
                topic: t.name.clone(),
                partition: i as i32,
            })
        })
        .collect();
    all.sort();
    all
}

#[cfg(test)]
#[path = "metadata_tests.rs"]
mod tests;

mod reassign;
