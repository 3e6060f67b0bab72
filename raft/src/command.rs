//! Commands the controller accepts, and their outcomes.
//!
//! A `Command` is what a caller submits; the leader wraps it in a `ProposedCommand` that also
//! carries everything that must not be recomputed differently on each node (random topic ids).
//! Everything else (placement, elections) is computed deterministically while applying, so every
//! node reaches the same state from the same log.

use crate::acl::{AclBinding, AclFilter};
use crate::image::{BrokerId, ListenerEndpoint, PartitionState, TopicId};
use crate::scram::{ScramDelete, ScramUpsert};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    /// The endpoint of the inter-broker listener (replica fetchers connect to it).
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Every advertised listener, by name; Metadata answers with the one the client came in on.
    pub listeners: Vec<ListenerEndpoint>,
}

/// A registration as logs written before listeners hold it (`Command::RegisterBrokerV1`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerRegistrationV1 {
    pub id: BrokerId,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

impl From<BrokerRegistrationV1> for BrokerRegistration {
    fn from(v: BrokerRegistrationV1) -> Self {
        BrokerRegistration {
            id: v.id,
            host: v.host,
            port: v.port,
            rack: v.rack,
            listeners: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1: the cluster default.
    pub num_partitions: i32,
    /// -1: the cluster default.
    pub replication_factor: i16,
    /// Explicit replica lists, one per partition (then partitions and RF must be -1).
    pub assignments: Option<Vec<Vec<BrokerId>>>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    /// A registration of before listeners, still read from older logs (it keeps variant 0);
    /// brokers now send `RegisterBroker`.
    RegisterBrokerV1(BrokerRegistrationV1),
    FenceBroker {
        id: BrokerId,
    },
    UnfenceBroker {
        id: BrokerId,
    },
    /// One log entry for the whole request; each topic succeeds or fails on its own.
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    /// (topic, new total partition count, optional replica lists for the new partitions).
    CreatePartitions {
        topics: Vec<(String, i32, Option<Vec<Vec<BrokerId>>>)>,
        validate_only: bool,
    },
    AlterConfigs {
        topic: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        validate_only: bool,
    },
    AlterPartition {
        topic: String,
        partition: i32,
        leader: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<BrokerId>,
    },
    /// An empty `partitions` list means every partition of every topic.
    ElectLeaders {
        partitions: Vec<PartitionRef>,
        preferred: bool,
    },
    ReassignPartitions {
        topic: String,
        partition: i32,
        replicas: Vec<BrokerId>,
    },
    AllocateProducerIds {
        broker: BrokerId,
        count: u32,
    },
    /// Membership: add as a learner (it receives the metadata log and serves it), and with
    /// `voter` promote it to a voter once it has caught up.
    AddNode {
        id: u64,
        raft_addr: String,
        voter: bool,
    },
    RemoveNode {
        id: u64,
    },
    /// Start draining a broker: it gets no new replicas, and every partition it holds starts a
    /// reassignment to another broker.
    DecommissionBroker {
        id: BrokerId,
    },
    /// Forget a broker that holds no replicas any more (after a drain).
    UnregisterBroker {
        id: BrokerId,
    },
    /// Even out replicas and preferred leaders over the placeable brokers, as reassignments.
    Rebalance,
    /// A broker stopping on purpose (Kafka's controlled shutdown): in one entry, leadership of
    /// its partitions moves to other live ISR members and it leaves every ISR it shares, as a
    /// fence does, so clients and followers switch before it exits rather than a session
    /// timeout after. `incarnation` is the registration it was sent from: a request that
    /// commits only after the broker restarted must not fence the new one (Kafka's broker
    /// epoch check). Last in the enum: older log entries keep their variant numbers.
    ControlledShutdown {
        id: BrokerId,
        incarnation: u64,
    },
    /// AlterPartitionReassignments with null replicas (Kafka's cancel): the partition goes back
    /// to the replicas it had before the move; the replicas being added are dropped.
    CancelReassignment {
        topic: String,
        partition: i32,
    },
    /// Dynamic broker configs (`broker_config`): `None` changes the cluster-wide defaults,
    /// `Some(id)` one broker's own values. Appended: older entries keep their variant numbers.
    AlterBrokerConfigs {
        broker: Option<BrokerId>,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        validate_only: bool,
    },
    /// A broker (re)starting, with its advertised listeners. Appended: older entries keep their
    /// variant numbers.
    RegisterBroker(BrokerRegistration),
    /// CreateAcls: each binding is checked (`acl::validate_binding`) and added on its own;
    /// adding one that exists succeeds, as in Kafka. Appended with `DeleteAcls`: older entries
    /// keep their variant numbers.
    CreateAcls {
        acls: Vec<AclBinding>,
    },
    /// DeleteAcls: each filter removes the bindings it matches (a binding matched by several
    /// filters is reported by the first).
    DeleteAcls {
        filters: Vec<AclFilter>,
    },
    /// AlterUserScramCredentials: keys already derived by the broker that took the request
    /// (the salted password never reaches the log). Per user, all or nothing.
    AlterScramCredentials {
        upserts: Vec<ScramUpsert>,
        deletes: Vec<ScramDelete>,
    },
    /// `--sasl-bootstrap-users`: applied by the first such entry of the cluster only.
    BootstrapScramUsers {
        upserts: Vec<ScramUpsert>,
    },
    /// A leader's log failed a write (I/O error, disk full) after followers may already have
    /// copied the batches it then dropped. The partition gets a new leader epoch, so those
    /// followers truncate them (OffsetForLeaderEpoch) before anything is appended at those
    /// offsets again; leadership moves to another live ISR member if there is one, as Kafka
    /// moves it off a failed log directory, and stays otherwise. Appended: older entries keep
    /// their variant numbers.
    LeaderWriteFailed {
        topic: String,
        partition: i32,
        leader: BrokerId,
        leader_epoch: i32,
    },
}

impl Command {
    /// Membership changes go through openraft's own change-membership path, not a normal entry.
    pub fn is_membership(&self) -> bool {
        matches!(self, Command::AddNode { .. } | Command::RemoveNode { .. })
    }
}

/// A Kafka error code with a human-readable reason.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetaError {
    pub code: i16,
    pub message: String,
}

impl MetaError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        MetaError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for MetaError {}

/// Kafka error codes the controller produces.
pub mod codes {
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
    pub const INELIGIBLE_REPLICA: i16 = 108;
    pub const INVALID_UPDATE_VERSION: i16 = 119;
    pub const REASSIGNMENT_IN_PROGRESS: i16 = 60;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const DUPLICATE_RESOURCE: i16 = 92;
    pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CommandOutcome {
    Done,
    /// CreateTopics/DeleteTopics/CreatePartitions/AlterConfigs: per topic, in request order.
    Topics(Vec<(String, Result<TopicId, MetaError>)>),
    /// AlterPartition.
    Partition(Result<PartitionState, MetaError>),
    /// ElectLeaders.
    Partitions(Vec<(PartitionRef, Result<PartitionState, MetaError>)>),
    /// First id of the allocated block.
    ProducerIds(Result<i64, MetaError>),
    /// The whole command was invalid; nothing changed.
    Rejected(MetaError),
    /// CreateAcls: per binding, in request order.
    AclsCreated(Vec<Result<(), MetaError>>),
    /// DeleteAcls: per filter, in request order, the bindings it removed.
    AclsDeleted(Vec<Result<Vec<AclBinding>, MetaError>>),
    /// AlterScramCredentials / BootstrapScramUsers: per user, in request order.
    Users(Vec<(String, Result<(), MetaError>)>),
}

/// A command as it is written to the log: with the data only the proposer may choose.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProposedCommand {
    pub cmd: Command,
    /// For CreateTopics: one fresh UUID per requested topic, in request order.
    pub topic_ids: Vec<TopicId>,
}

impl ProposedCommand {
    /// Called on the node that proposes (the Raft leader), never while applying.
    pub fn new(cmd: Command) -> Self {
        let topic_ids = match &cmd {
            Command::CreateTopics { topics, .. } => {
                topics.iter().map(|_| random_uuid_v4()).collect()
            }
            _ => Vec::new(),
        };
        ProposedCommand { cmd, topic_ids }
    }
}

/// The payload of one normal Raft entry: every command that was waiting when it was proposed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CommandBatch {
    /// Format version of the persisted entry.
    pub version: u8,
    pub commands: Vec<ProposedCommand>,
}

/// One outcome per command of a batch, same order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    pub outcomes: Vec<CommandOutcome>,
}

/// UUID version 4 (random), RFC 4122 variant; never the all-zero id Kafka reserves.
pub fn random_uuid_v4() -> TopicId {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}
