//! openraft state machine: applies committed batches to `MetaState`, publishes an image after
//! each applied batch, and builds/installs snapshots.

use crate::command::{BatchOutcome, CommandOutcome};
use crate::hub::ImageHub;
use crate::metadata::{Defaults, MetaState};
use crate::snapshot::{self, SnapshotFiles, StoredSnapshot};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotId};
use std::io::{self, Cursor};
use std::sync::{Arc, Mutex, MutexGuard};

struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: MetaState,
}

#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<Mutex<Applied>>,
    files: SnapshotFiles,
    defaults: Defaults,
    /// Wakes the image publisher thread.
    publish: std::sync::mpsc::SyncSender<()>,
}

/// Builds and publishes images off the Raft task. Copying an image is O(topics) (its maps own
/// their keys), so doing it inside every `apply` made metadata throughput fall as topics grew.
/// Instead `apply` only marks the state changed and this thread publishes the latest state,
/// coalescing every batch applied meanwhile; `wait_applied` still returns only once an image
/// with the index is published.
pub struct ImagePublisher {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ImagePublisher {
    /// Stops once every `StateMachineStore` clone (the wake-up senders) is gone.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl StateMachineStore {
    /// Load the latest snapshot (if any) and publish its image.
    pub fn open(
        files: SnapshotFiles,
        hub: Arc<ImageHub>,
        defaults: Defaults,
    ) -> io::Result<(Self, ImagePublisher)> {
        let mut applied = Applied {
            last_applied: None,
            membership: StoredMembership::default(),
            state: MetaState::default(),
        };
        if let Some(bytes) = files.read()? {
            let snap = snapshot::decode(&bytes)?;
            applied.last_applied = snap.meta.last_log_id;
            applied.membership = snap.meta.last_membership.clone();
            applied.state = snap.state;
            applied.state.image.applied_index = applied.last_applied.map(|l| l.index).unwrap_or(0);
            hub.publish(applied.state.image.clone());
        }
        let applied = Arc::new(Mutex::new(applied));
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (applied2, hub2) = (applied.clone(), hub);
        let thread = std::thread::Builder::new()
            .name("chronik-raft-image".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let image = {
                        let a = applied2.lock().unwrap_or_else(|p| p.into_inner());
                        a.state.image.clone()
                    };
                    hub2.publish(image);
                }
            })?;
        Ok((
            StateMachineStore {
                applied,
                files,
                defaults,
                publish: tx,
            },
            ImagePublisher {
                thread: Some(thread),
            },
        ))
    }

    fn request_publish(&self) {
        // A full channel means a publish is already pending and will see this state too.
        let _ = self.publish.try_send(());
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Voters and learners with their Raft addresses, as last applied.
    pub fn membership(&self) -> StoredMembership {
        self.lock().membership.clone()
    }
}

fn sm_err(verb: ErrorVerb, e: io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, e)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.lock();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        {
            let mut a = self.lock();
            for e in entries {
                a.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(BatchOutcome::default()),
                    EntryPayload::Normal(batch) => {
                        let outcomes: Vec<CommandOutcome> = batch
                            .commands
                            .iter()
                            .map(|pc| a.state.apply(pc, self.defaults))
                            .collect();
                        out.push(BatchOutcome { outcomes });
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(BatchOutcome::default());
                    }
                }
            }
            a.state.image.applied_index = a.last_applied.map(|l| l.index).unwrap_or(0);
        }
        self.request_publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // A consistent copy taken now (cheap: topics are Arc-shared), serialized later off the
        // Raft task.
        let a = self.lock();
        SnapshotBuilder {
            snapshot: StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: a.last_applied,
                    last_membership: a.membership.clone(),
                    snapshot_id: snapshot_id(a.last_applied),
                },
                state: a.state.clone(),
            },
            files: self.files.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = data.into_inner();
        let snap = snapshot::decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let files = self.files.clone();
        let index = meta.last_log_id.map(|l| l.index);
        tokio::task::spawn_blocking(move || files.write(&bytes, index))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, io::Error::other(e.to_string())))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        {
            let mut a = self.lock();
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
            a.state = snap.state;
            a.state.image.applied_index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        }
        self.request_publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let files = self.files.clone();
        let bytes = tokio::task::spawn_blocking(move || files.read())
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, io::Error::other(e.to_string())))?
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let Some(bytes) = bytes else { return Ok(None) };
        let snap = snapshot::decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: snap.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

fn snapshot_id(last: Option<LogId>) -> SnapshotId {
    match last {
        Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
        None => format!("empty-{}", rand::random::<u32>()),
    }
}

pub struct SnapshotBuilder {
    snapshot: StoredSnapshot,
    files: SnapshotFiles,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// A snapshot that cannot be written (disk full, I/O error) is not an error for openraft,
    /// which would stop the controller for good: the failure is logged and the snapshot already
    /// on disk is returned instead. openraft then keeps its log (it purges only up to a newer
    /// snapshot than it has) and builds again after more entries, at most once per
    /// `snapshot::RETRY_AFTER`.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snap = self.snapshot.clone();
        let files = self.files.clone();
        let meta = snap.meta.clone();
        if files.recently_failed() {
            return self.previous().await;
        }
        // Serialization and fsync run on the blocking pool so Raft heartbeats keep flowing.
        let written = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let bytes = snapshot::encode(&snap)?;
            files.write(&bytes, snap.meta.last_log_id.map(|l| l.index))?;
            Ok(bytes)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        match written {
            Ok(bytes) => Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            }),
            Err(e) => {
                self.files.note_failure();
                tracing::warn!(
                    index = meta.last_log_id.map(|l| l.index),
                    "cannot write a metadata snapshot: {e}; the Raft log is kept and the \
                     snapshot is tried again in {}s",
                    snapshot::RETRY_AFTER.as_secs()
                );
                self.previous().await
            }
        }
    }
}

impl SnapshotBuilder {
    /// The snapshot on disk (or none: an empty one at no log id), which openraft already has.
    async fn previous(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let files = self.files.clone();
        let on_disk = tokio::task::spawn_blocking(move || files.read())
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, io::Error::other(e.to_string())))?
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        if let Some(bytes) = on_disk {
            let snap = snapshot::decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            return Ok(Snapshot {
                meta: snap.meta,
                snapshot: Box::new(Cursor::new(bytes)),
            });
        }
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: snapshot_id(None),
            },
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}
