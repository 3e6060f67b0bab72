//! `MetadataImage`: the immutable picture of cluster metadata that every shard reads.
//!
//! The controller builds a new image after each applied batch of Raft entries and hands an
//! `Arc<MetadataImage>` to every subscriber. Topics are `Arc`-shared between consecutive images so
//! an image swap after a small change copies only the map of pointers, not every partition.

use crate::acl::AclSet;
use crate::broker_config::BrokerConfigs;
use crate::scram::ScramUsers;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Persistent (structurally shared) map: cloning an image to publish it is O(1), and a change
/// copies only the path to the changed entry, so metadata throughput does not fall as topics
/// grow.
pub type SharedMap<K, V> = imbl::HashMap<K, V>;
use std::sync::Arc;

pub type BrokerId = i32;
/// A topic id is a UUID, kept as its 16 bytes (Kafka's wire form).
pub type TopicId = [u8; 16];

/// No leader (Kafka uses -1 on the wire).
pub const NO_LEADER: BrokerId = -1;

/// One advertised listener of a broker: its name (`PLAINTEXT`, `SSL`, `INTERNAL`…) and the
/// address clients that come in on a listener of that name are told to use.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerEndpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: BrokerId,
    /// The endpoint of its inter-broker listener (replica fetchers connect to it).
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Its advertised listeners, by name (Kafka's `advertised.listeners`).
    pub listeners: Vec<ListenerEndpoint>,
    /// Bumped on every registration, so a restarted broker is told apart from its old self.
    pub incarnation: u64,
    /// Fenced brokers are not given leadership or new replicas, and are not listed to clients.
    pub fenced: bool,
    /// Being drained for removal (`cluster remove-node`): gets no new replicas; kept across
    /// re-registration.
    pub decommissioned: bool,
}

impl BrokerInfo {
    /// The address advertised on listener `name`; `None` when this broker has no such listener
    /// (Kafka then leaves it out of the answer to that listener's clients).
    pub fn endpoint(&self, name: &str) -> Option<(&str, u16)> {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| (l.host.as_str(), l.port))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionState {
    /// Assigned replicas; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// `NO_LEADER` when no ISR member is alive.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    /// Bumped on every change to this partition (ISR, leader, replicas); AlterPartition is checked
    /// against it.
    pub partition_epoch: i32,
    /// A reassignment in progress (Kafka's KIP-455 shape): `replicas` is the target set followed
    /// by `removing`; `adding` replicas copy the log as followers, and once every target
    /// replica is in the ISR the controller drops `removing` in the same step.
    pub adding: Vec<BrokerId>,
    pub removing: Vec<BrokerId>,
}

impl PartitionState {
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replica set the partition is moving to (all of `replicas` when not reassigning).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: TopicId,
    pub partitions: Vec<PartitionState>,
    /// Topic-level config overrides (Kafka names, e.g. `retention.ms`, `min.insync.replicas`).
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn config(&self, key: &str) -> Option<&str> {
        self.configs.get(key).map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetadataImage {
    /// Raft log index of the last entry reflected in this image.
    pub applied_index: u64,
    pub cluster_id: String,
    /// Node id of the active controller (Raft leader), if known.
    pub controller_id: Option<BrokerId>,
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    #[serde(deserialize_with = "deserialize_shared_map")]
    pub topics: SharedMap<String, Arc<TopicImage>>,
    #[serde(deserialize_with = "deserialize_shared_map")]
    pub topic_names_by_id: SharedMap<TopicId, String>,
    /// Dynamic broker configs. Snapshots of format 1 end before it (`MetadataImageV1`).
    pub broker_configs: BrokerConfigs,
    /// ACL bindings, indexed for the authorizer. Snapshots of formats 1 to 3 end before it
    /// (`MetadataImageV3`).
    pub acls: AclSet,
    /// SASL/SCRAM users. Last: snapshots of formats 1 to 3 end before it.
    pub scram: ScramUsers,
}

/// The image as snapshots of formats 1 to 3 hold it: without the ACLs and SCRAM users that
/// end today's image, with brokers of type `B` (formats 1 and 2: `BrokerInfoV1`, before
/// listeners) and after the topics `R` (format 1: nothing, `()`; formats 2 and 3: the dynamic
/// broker configs). bincode writes a struct's fields in order with no names, so this one
/// generic struct reads the three layouts.
#[derive(Deserialize)]
pub(crate) struct OlderImage<B, R> {
    applied_index: u64,
    cluster_id: String,
    controller_id: Option<BrokerId>,
    brokers: BTreeMap<BrokerId, B>,
    #[serde(deserialize_with = "deserialize_shared_map")]
    topics: SharedMap<String, Arc<TopicImage>>,
    #[serde(deserialize_with = "deserialize_shared_map")]
    topic_names_by_id: SharedMap<TopicId, String>,
    broker_configs: R,
}

pub(crate) type MetadataImageV3 = OlderImage<BrokerInfo, BrokerConfigs>;
pub(crate) type MetadataImageV2 = OlderImage<BrokerInfoV1, BrokerConfigs>;
pub(crate) type MetadataImageV1 = OlderImage<BrokerInfoV1, ()>;

impl<B: Into<BrokerInfo>, R: Into<BrokerConfigs>> From<OlderImage<B, R>> for MetadataImage {
    fn from(v: OlderImage<B, R>) -> Self {
        MetadataImage {
            applied_index: v.applied_index,
            cluster_id: v.cluster_id,
            controller_id: v.controller_id,
            brokers: v
                .brokers
                .into_iter()
                .map(|(id, b)| (id, b.into()))
                .collect(),
            topics: v.topics,
            topic_names_by_id: v.topic_names_by_id,
            broker_configs: v.broker_configs.into(),
            acls: AclSet::default(),
            scram: ScramUsers::default(),
        }
    }
}

/// Format 1 had no dynamic broker configs: none are set.
impl From<()> for BrokerConfigs {
    fn from(_: ()) -> Self {
        BrokerConfigs::default()
    }
}

/// A broker as snapshots of formats 1 and 2 hold it (before listeners).
#[derive(Deserialize)]
pub(crate) struct BrokerInfoV1 {
    id: BrokerId,
    host: String,
    port: u16,
    rack: Option<String>,
    incarnation: u64,
    fenced: bool,
    decommissioned: bool,
}

impl From<BrokerInfoV1> for BrokerInfo {
    fn from(v: BrokerInfoV1) -> Self {
        BrokerInfo {
            id: v.id,
            host: v.host,
            port: v.port,
            rack: v.rack,
            // Filled in when the broker registers again (every start does).
            listeners: Vec::new(),
            incarnation: v.incarnation,
            fenced: v.fenced,
            decommissioned: v.decommissioned,
        }
    }
}

/// Reads a `SharedMap` entry by entry. imbl's own `Deserialize` first reserves room for as many
/// entries as the input declares (a 64-byte snapshot payload asked for 128 GB and aborted the
/// process; found by the `raft_apply` fuzz target); here memory follows the entries actually
/// read. The format is unchanged: a map, as imbl serializes it.
fn deserialize_shared_map<'de, D, K, V>(d: D) -> Result<SharedMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + std::hash::Hash + Eq + Clone,
    V: Deserialize<'de> + Clone,
{
    struct Entries<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K, V> serde::de::Visitor<'de> for Entries<K, V>
    where
        K: Deserialize<'de> + std::hash::Hash + Eq + Clone,
        V: Deserialize<'de> + Clone,
    {
        type Value = SharedMap<K, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut map = SharedMap::new();
            while let Some((k, v)) = a.next_entry()? {
                map.insert(k, v);
            }
            Ok(map)
        }
    }
    d.deserialize_map(Entries(std::marker::PhantomData))
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name).map(|t| t.as_ref())
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicImage> {
        self.topic_names_by_id.get(id).and_then(|n| self.topic(n))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        let t = self.topic(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.partitions.get(p))
    }

    pub fn broker(&self, id: BrokerId) -> Option<&BrokerInfo> {
        self.brokers.get(&id)
    }

    /// Brokers clients may talk to: registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Live brokers that may receive new replicas (not being drained).
    pub fn placeable_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.live_brokers().filter(|b| !b.decommissioned)
    }
}
