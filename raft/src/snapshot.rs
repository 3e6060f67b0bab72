//! State-machine snapshots on disk: one current snapshot file, replaced atomically.
//!
//! File = magic | version u32 | crc32 u32 | bincode(StoredSnapshot). The same bytes are what we
//! send to a lagging follower, so installing a received snapshot is "verify, then write".

use crate::image::{MetadataImage, MetadataImageV1, MetadataImageV2, MetadataImageV3};
use crate::metadata::MetaState;
use crate::types::SnapshotMeta;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"CHRSNAP1";
/// 2: the image carries dynamic broker configs. 3: brokers carry their listeners. 4: the image
/// carries ACL bindings and SCRAM credentials. Formats 1 to 3 are still read (`decode`).
const VERSION: u32 = 4;
const FILE: &str = "current.snap";
/// After a snapshot could not be written, builds are skipped this long (a full disk would
/// otherwise fail one after every applied batch).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub state: MetaState,
}

pub fn encode(s: &StoredSnapshot) -> io::Result<Vec<u8>> {
    let payload =
        bincode::serialize(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(framed(VERSION, &payload))
}

/// The file layout of every format: magic, format number, CRC of the payload, payload.
fn framed(format: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn decode(bytes: &[u8]) -> io::Result<StoredSnapshot> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {why}"));
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if !(1..=VERSION).contains(&version) {
        return Err(bad(&format!("unsupported version {version}")));
    }
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let payload = &bytes[16..];
    if crc32fast::hash(payload) != crc {
        return Err(bad("checksum mismatch"));
    }
    let older = match version {
        1 => Some(decode_older::<MetadataImageV1>(payload)),
        2 => Some(decode_older::<MetadataImageV2>(payload)),
        3 => Some(decode_older::<MetadataImageV3>(payload)),
        _ => None,
    };
    if let Some(r) = older {
        return r.map_err(|e| bad(&e));
    }
    crate::codec::decode(payload).map_err(|e| bad(&e.to_string()))
}

fn decode_older<I>(payload: &[u8]) -> Result<StoredSnapshot, String>
where
    I: serde::de::DeserializeOwned + Into<MetadataImage>,
{
    let v: OlderSnapshot<I> = crate::codec::decode(payload).map_err(|e| e.to_string())?;
    Ok(v.into())
}

/// A snapshot of formats 1 to 3: the same fields, with the image as that format held it
/// (`MetadataImageV1`, `V2`, `V3`).
#[derive(Deserialize)]
struct OlderSnapshot<I> {
    meta: SnapshotMeta,
    state: OlderMetaState<I>,
}

#[derive(Deserialize)]
struct OlderMetaState<I> {
    image: I,
    next_producer_id: i64,
    placement_cursor: u64,
}

impl<I: Into<MetadataImage>> From<OlderSnapshot<I>> for StoredSnapshot {
    fn from(v: OlderSnapshot<I>) -> Self {
        StoredSnapshot {
            meta: v.meta,
            state: MetaState {
                image: v.state.image.into(),
                next_producer_id: v.state.next_producer_id,
                placement_cursor: v.state.placement_cursor,
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
    /// Index of the snapshot on disk. Held while writing, so a slow build of an older snapshot
    /// never replaces a newer one installed from the leader meanwhile.
    written: Arc<Mutex<Option<u64>>>,
    /// When the last write failed.
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl SnapshotFiles {
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(SnapshotFiles {
            dir: dir.to_path_buf(),
            written: Arc::new(Mutex::new(None)),
            failed_at: Arc::new(Mutex::new(None)),
        })
    }

    pub fn note_failure(&self) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether a write failed less than `RETRY_AFTER` ago.
    pub fn recently_failed(&self) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
    }

    /// The current snapshot's bytes, if any.
    pub fn read(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(FILE)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Durably replace the current snapshot: write a temp file, fsync, rename, fsync the dir.
    pub fn write(&self, bytes: &[u8], index: Option<u64>) -> io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.is_some() && *written > index {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(FILE))?;
        File::open(&self.dir)?.sync_all()?;
        *written = index;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{MetadataImage, TopicImage};
    use std::sync::Arc;

    /// Format 1 as it was written: the image without `broker_configs`.
    #[derive(Serialize)]
    struct ImageV1<'a> {
        applied_index: u64,
        cluster_id: &'a str,
        controller_id: Option<i32>,
        brokers: std::collections::BTreeMap<i32, BrokerV1>,
        topics: std::collections::BTreeMap<String, TopicImage>,
        topic_names_by_id: std::collections::BTreeMap<[u8; 16], String>,
    }

    /// A broker as formats 1 and 2 wrote it: no listeners.
    #[derive(Serialize)]
    struct BrokerV1 {
        id: i32,
        host: String,
        port: u16,
        rack: Option<String>,
        incarnation: u64,
        fenced: bool,
        decommissioned: bool,
    }

    /// Format 2 as it was written: brokers without listeners.
    #[derive(Serialize)]
    struct ImageV2<'a> {
        applied_index: u64,
        cluster_id: &'a str,
        controller_id: Option<i32>,
        brokers: std::collections::BTreeMap<i32, BrokerV1>,
        topics: std::collections::BTreeMap<String, TopicImage>,
        topic_names_by_id: std::collections::BTreeMap<[u8; 16], String>,
        broker_configs: crate::broker_config::BrokerConfigs,
    }

    /// Format 3 as it was written: the image without SCRAM credentials.
    #[derive(Serialize)]
    struct ImageV3<'a> {
        applied_index: u64,
        cluster_id: &'a str,
        controller_id: Option<i32>,
        brokers: std::collections::BTreeMap<i32, crate::image::BrokerInfo>,
        topics: std::collections::BTreeMap<String, TopicImage>,
        topic_names_by_id: std::collections::BTreeMap<[u8; 16], String>,
        broker_configs: crate::broker_config::BrokerConfigs,
    }

    #[test]
    fn a_snapshot_of_format_3_still_decodes_with_no_scram_users_and_format_4_keeps_them() {
        let image = ImageV3 {
            applied_index: 9,
            cluster_id: "c",
            controller_id: Some(1),
            brokers: Default::default(),
            topics: Default::default(),
            topic_names_by_id: Default::default(),
            broker_configs: Default::default(),
        };
        let meta = SnapshotMeta::default();
        let payload = bincode::serialize(&(&meta, (&image, 42i64, 3u64))).expect("encode");
        let bytes = framed(3, &payload);
        let snap = decode(&bytes).expect("format 3 decodes");
        assert_eq!(snap.state.next_producer_id, 42);
        assert_eq!(snap.state.image.applied_index, 9);
        assert_eq!(snap.state.image.scram, Default::default());

        use crate::scram::{ScramCredential, ScramMechanism, ScramUpsert};
        let mut state = MetaState::default();
        state.image.scram.bootstrap(&[ScramUpsert {
            user: "alice".into(),
            mechanism: ScramMechanism::Sha256,
            credential: ScramCredential {
                salt: b"salt".to_vec(),
                iterations: 4096,
                stored_key: vec![1; 32],
                server_key: vec![2; 32],
            },
        }]);
        let enc = encode(&StoredSnapshot {
            meta: SnapshotMeta::default(),
            state: state.clone(),
        })
        .expect("encode");
        let back = decode(&enc).expect("decode").state;
        assert!(back.image.scram.bootstrapped);
        assert_eq!(back, state);
    }

    #[test]
    fn a_snapshot_of_format_3_still_decodes_with_no_acls_or_scram_users_and_format_4_keeps_acls() {
        use crate::acl::{AclBinding, AclSet, Operation, PatternType, Permission, ResourceType};
        // Format 3 is today's image without the trailing ACLs and SCRAM users.
        let mut state = MetaState::default();
        state.image.applied_index = 7;
        state
            .image
            .broker_configs
            .cluster
            .insert("message.max.bytes".into(), "100".into());
        let full = bincode::serialize(&(&SnapshotMeta::default(), &state)).expect("encode");
        // The (empty) ACLs and SCRAM users end the image, just before next_producer_id and
        // placement_cursor.
        let size = |v: &[u8]| v.len();
        let tail = size(&bincode::serialize(&state.image.acls).expect("acls"))
            + size(&bincode::serialize(&state.image.scram).expect("scram"))
            + 16;
        let mut payload = full[..full.len() - tail].to_vec();
        payload.extend_from_slice(&full[full.len() - 16..]);
        let bytes = framed(3, &payload);
        let snap = decode(&bytes).expect("format 3 decodes");
        assert_eq!(snap.state, state);

        let b = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            pattern: PatternType::Prefixed,
            principal: "User:CN=alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        state.image.acls = AclSet::from_bindings([b].into());
        let enc = encode(&StoredSnapshot {
            meta: SnapshotMeta::default(),
            state: state.clone(),
        })
        .expect("encode");
        assert_eq!(decode(&enc).expect("decode").state, state);
    }

    #[test]
    fn a_snapshot_of_format_2_still_decodes_with_brokers_without_listeners() {
        let broker = BrokerV1 {
            id: 2,
            host: "h2".into(),
            port: 9093,
            rack: Some("r".into()),
            incarnation: 4,
            fenced: true,
            decommissioned: false,
        };
        let image = ImageV2 {
            applied_index: 9,
            cluster_id: "c",
            controller_id: Some(1),
            brokers: [(2, broker)].into(),
            topics: Default::default(),
            topic_names_by_id: Default::default(),
            broker_configs: Default::default(),
        };
        let meta = SnapshotMeta::default();
        let payload = bincode::serialize(&(&meta, (&image, 42i64, 3u64))).expect("encode");
        let bytes = framed(2, &payload);
        let snap = decode(&bytes).expect("format 2 decodes");
        let b = snap.state.image.broker(2).expect("broker 2");
        assert_eq!((b.host.as_str(), b.port, b.incarnation), ("h2", 9093, 4));
        assert!(b.fenced && b.listeners.is_empty());
        assert_eq!(snap.state.next_producer_id, 42);
    }

    #[test]
    fn a_snapshot_of_format_1_still_decodes_with_no_broker_configs() {
        let topic = TopicImage {
            name: "t".into(),
            id: [7; 16],
            partitions: Vec::new(),
            configs: [("retention.ms".to_string(), "5".to_string())].into(),
        };
        let image = ImageV1 {
            applied_index: 9,
            cluster_id: "c",
            controller_id: Some(1),
            brokers: Default::default(),
            topics: [("t".to_string(), topic.clone())].into(),
            topic_names_by_id: [([7; 16], "t".to_string())].into(),
        };
        let meta = SnapshotMeta::default();
        let payload = bincode::serialize(&(&meta, (&image, 42i64, 3u64))).expect("encode");
        let bytes = framed(1, &payload);
        let snap = decode(&bytes).expect("format 1 decodes");
        assert_eq!(snap.state.next_producer_id, 42);
        assert_eq!(snap.state.placement_cursor, 3);
        assert_eq!(snap.state.image.topic("t"), Some(&topic));
        assert_eq!(snap.state.image.broker_configs, Default::default());

        // And the current format round-trips the broker configs.
        let mut state = MetaState {
            image: MetadataImage::default(),
            ..Default::default()
        };
        state.image.topics.insert("t".into(), Arc::new(topic));
        state
            .image
            .broker_configs
            .cluster
            .insert("message.max.bytes".into(), "100".into());
        let enc = encode(&StoredSnapshot {
            meta: SnapshotMeta::default(),
            state: state.clone(),
        })
        .expect("encode");
        assert_eq!(decode(&enc).expect("decode").state, state);
    }
}
