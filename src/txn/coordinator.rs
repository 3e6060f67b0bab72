//! The shell of the transaction coordinator on one shard: the `__transaction_state`
//! partitions this shard leads and the transactional ids in them. Every decision is made by
//! `state`; here each new state is written to the partition with acks=all before anything is
//! done on it (answered, markers written), and the markers of a Prepare state are written in
//! the background, then its Complete state persisted.
//!
//! A request that finds its id between EndTxn and the end of the marker round (a Prepare
//! state, or a state write in flight) is held, not refused: a producer sends its next
//! AddPartitionsToTxn right after EndTxn, and answering CONCURRENT_TRANSACTIONS would make it
//! sleep its retry back-off (Kafka's Java client: 20 ms) for a round that takes about a
//! millisecond. The hold is bounded (`HOLD_LIMIT`, far below clients' request timeouts) and
//! ends with NOT_COORDINATOR when this broker stops coordinating the id, so nothing hangs.

use super::markers::{self, MarkerSpec};
pub use super::partitions::{TxnCoordinator, TxnPartition};
use super::state::{self, EndPlan, InitPlan, TopicPartitionName, TxnMeta};
use super::{log, now_ms, TXN_TOPIC};
use crate::kafka::errors;
use crate::partition::replay::{forget_failed_load, held_at_epoch};
use crate::services::Services;
use crate::shard::event::LocalEvent;
use crate::shard::TopicPartition;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a write to `__transaction_state` may wait for acks=all.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request is held while its id's previous transaction completes; past it the
/// request is answered CONCURRENT_TRANSACTIONS and the client retries (a marker round that
/// takes this long has a partition without a leader or replicas). Clients' request timeouts
/// are 30 s (Java, KafkaJS) to 60 s (librdkafka's socket timeout).
const HOLD_LIMIT: Duration = Duration::from_secs(3);

/// How often a held request re-checks that this broker still leads its partition (a
/// leadership move has no event of its own here).
const HOLD_RECHECK: Duration = Duration::from_millis(250);

/// The loaded partition coordinating `index`, loading it first if this broker just became
/// its leader. Kafka's codes: NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
/// COORDINATOR_LOAD_IN_PROGRESS.
pub async fn acquire(shard: &Rc<Services>, index: i32) -> Result<Rc<TxnPartition>, i16> {
    let me = shard.config.node_id;
    let Some((leader, epoch)) = shard.with_image(|i| {
        i.partition(TXN_TOPIC, index)
            .map(|p| (p.leader, p.leader_epoch))
    }) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let coord = &shard.txns;
    let held = held_at_epoch(coord, index, (leader, epoch), me)?;
    if let Some(p) = held {
        // Being loaded (by `run_loader`, which starts when leadership arrives, just when
        // clients find the new coordinator, or by another request): wait for it, within
        // `LOAD_WAIT`, rather than send the client into a retry back-off.
        let deadline = Instant::now() + LOAD_WAIT;
        while !p.loaded.get() && p.active.get() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            futures_lite::future::or(p.changed.listen(), glommio::timer::sleep(deadline - now))
                .await;
        }
        return if p.loaded.get() && p.active.get() {
            Ok(p)
        } else {
            Err(errors::COORDINATOR_LOAD_IN_PROGRESS)
        };
    }
    let part = Rc::new(TxnPartition {
        index,
        leader_epoch: epoch,
        loaded: Cell::new(false),
        active: Cell::new(true),
        txns: RefCell::new(HashMap::new()),
        busy: RefCell::new(HashSet::new()),
        changed: LocalEvent::new(),
    });
    coord.parts.borrow_mut().insert(index, part.clone());
    match load(shard, &part).await {
        Ok(()) => {
            part.loaded.set(true);
            part.changed.notify();
            // A previous coordinator may have persisted a Prepare state and died before its
            // markers were all written: finish them.
            for (id, m) in part.snapshot() {
                if m.state.is_preparing() {
                    spawn_completion(shard, &part, id, m);
                }
            }
            Ok(part)
        }
        Err(code) => {
            forget_failed_load(&coord.parts, index, &part);
            part.active.set(false);
            part.changed.notify();
            Err(code)
        }
    }
}

/// Replays the partition from its log start: the last record of each id wins.
async fn load(shard: &Rc<Services>, part: &TxnPartition) -> Result<(), i16> {
    let tp = TopicPartition::new(TXN_TOPIC, part.index);
    let mut records = 0u64;
    crate::partition::replay::replay_led_partition(&shard.replicas, &tp, |_, batch| {
        for (k, v) in crate::group::offsets_log::batch_records(&batch) {
            let Some(id) = k.as_deref().and_then(log::decode_key) else {
                continue;
            };
            records += 1;
            match v.as_deref().and_then(log::decode_value) {
                Some(m) => {
                    part.txns.borrow_mut().insert(id, m);
                }
                None => {
                    part.txns.borrow_mut().remove(&id);
                }
            }
        }
    })
    .await?;
    if records > 0 {
        tracing::info!(
            partition = part.index,
            ids = part.txns.borrow().len(),
            records,
            "loaded transaction state partition"
        );
    }
    Ok(())
}

/// The loaded `__transaction_state` partition that coordinates `id` (INVALID_REQUEST for an
/// empty or oversized id; the coordinator errors of `acquire`).
async fn partition_of(shard: &Rc<Services>, id: &str) -> Result<Rc<TxnPartition>, i16> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(errors::INVALID_REQUEST);
    }
    let (index, _) = super::route(shard, id);
    acquire(shard, index).await
}

/// Writes `meta` for `id` to the partition with acks=all: NONE once it is replicated. The
/// append is issued at the first poll (the log assigns offsets when an append is called and
/// the partition is open), which `complete` relies on to order its write before the next one.
async fn write_state(shard: &Rc<Services>, part: &TxnPartition, id: &str, meta: &TxnMeta) -> i16 {
    if !part.active.get() {
        return errors::NOT_COORDINATOR;
    }
    let records = vec![(log::key(id), Some(log::value(meta)))];
    let batch = crate::group::offsets_log::build_batch(&records, now_ms());
    let tp = TopicPartition::new(TXN_TOPIC, part.index);
    let code = shard
        .replicas
        .append_internal(tp, batch, -1, WRITE_TIMEOUT)
        .await
        .error;
    match code {
        errors::NONE if part.active.get() => errors::NONE,
        errors::NONE | errors::NOT_LEADER_OR_FOLLOWER | errors::KAFKA_STORAGE_ERROR => {
            errors::NOT_COORDINATOR
        }
        _ => errors::COORDINATOR_NOT_AVAILABLE,
    }
}

/// Persists `meta` for `id` with acks=all and, once written, makes it the id's state.
async fn persist(shard: &Rc<Services>, part: &TxnPartition, id: &str, meta: &TxnMeta) -> i16 {
    let code = write_state(shard, part, id, meta).await;
    if code == errors::NONE {
        part.txns.borrow_mut().insert(id.to_string(), meta.clone());
        part.changed.notify();
    }
    code
}

/// Clears an id's busy mark when its state change ends, however it ends (a request's future
/// may be dropped with its connection).
struct BusyMark<'a> {
    part: &'a TxnPartition,
    id: &'a str,
}

impl Drop for BusyMark<'_> {
    fn drop(&mut self) {
        self.part.busy.borrow_mut().remove(self.id);
        self.part.changed.notify();
    }
}

/// Runs `f` with `id` marked busy (one state change at a time per id).
async fn exclusive<T>(
    part: &TxnPartition,
    id: &str,
    busy: T,
    f: impl std::future::Future<Output = T>,
) -> T {
    if !part.busy.borrow_mut().insert(id.to_string()) {
        return busy;
    }
    let _mark = BusyMark { part, id };
    f.await
}

/// Whether this broker still leads `part` at the epoch it loaded it with.
fn still_leads(shard: &Services, part: &TxnPartition) -> bool {
    let me = shard.config.node_id;
    part.active.get()
        && shard.with_image(|i| {
            i.partition(TXN_TOPIC, part.index)
                .is_some_and(|p| p.leader == me && p.leader_epoch == part.leader_epoch)
        })
}

/// Holds a request until `id` is settled: no state write in flight and not in a Prepare state
/// (its markers being written). Ok then, and the caller acts on it before its next await, so
/// nothing changes in between. NOT_COORDINATOR once this broker stops leading the partition,
/// CONCURRENT_TRANSACTIONS past `HOLD_LIMIT` (the client retries).
async fn settled(shard: &Services, part: &TxnPartition, id: &str) -> Result<(), i16> {
    let deadline = Instant::now() + HOLD_LIMIT;
    loop {
        if !still_leads(shard, part) {
            return Err(errors::NOT_COORDINATOR);
        }
        let preparing = part
            .txns
            .borrow()
            .get(id)
            .is_some_and(|m| m.state.is_preparing());
        if !preparing && !part.busy.borrow().contains(id) {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        let nap = (deadline - now).min(HOLD_RECHECK);
        futures_lite::future::or(part.changed.listen(), glommio::timer::sleep(nap)).await;
    }
}

/// Writes the markers of a Prepare state in the background, then persists its Complete state.
fn spawn_completion(shard: &Rc<Services>, part: &Rc<TxnPartition>, id: String, m: TxnMeta) {
    let (shard, part) = (shard.clone(), part.clone());
    glommio::spawn_local(async move {
        complete(&shard, &part, id, m).await;
    })
    .detach();
}

/// The log end offset of `part`'s log here (-1: not open).
fn log_end(shard: &Services, part: &TxnPartition) -> i64 {
    shard
        .replicas
        .get(&TopicPartition::new(TXN_TOPIC, part.index))
        .map_or(-1, |p| p.log_end_offset())
}

async fn complete(shard: &Rc<Services>, part: &Rc<TxnPartition>, id: String, m: TxnMeta) {
    let spec = MarkerSpec {
        producer_id: m.producer_id,
        producer_epoch: m.producer_epoch,
        commit: m.state == state::TxnState::PrepareCommit,
        coordinator_epoch: part.leader_epoch,
    };
    let tps: Vec<TopicPartition> = m
        .partitions
        .iter()
        .map(|(t, p)| TopicPartition::new(t, *p))
        .collect();
    let watch = part.clone();
    if !markers::write_all(shard, spec, tps, move || watch.active.get()).await {
        return; // no longer the coordinator: the next one resumes
    }
    let Some(done) = state::complete(&m, now_ms()) else {
        return;
    };
    // Requests for the id are held while it is in the Prepare state, so it is still `m`
    // unless the partition was reloaded meanwhile (then another task completes it).
    if !part.active.get() || part.get(&id).as_ref() != Some(&m) {
        return;
    }
    // The Complete state takes effect as soon as its write is issued, and held requests go on
    // without waiting for its replication: their own writes are issued after it, and the log
    // keeps appends in the order they are issued, so the last record of the id is always its
    // newest state. (Were it lost, the Prepare state before it only makes the next coordinator
    // write the same markers again.)
    let mut write = Box::pin({
        let (shard, part, id, done) = (shard.clone(), part.clone(), id.clone(), done.clone());
        async move { write_state(&shard, &part, &id, &done).await }
    });
    let before = log_end(shard, part);
    let first = futures_lite::future::poll_once(&mut write).await;
    let issued = first.is_some() || log_end(shard, part) != before;
    if issued {
        part.txns.borrow_mut().insert(id.clone(), done.clone());
        part.changed.notify();
    }
    let mut code = match first {
        Some(code) => code,
        None => write.await,
    };
    if code == errors::NONE && !issued {
        part.txns.borrow_mut().insert(id.clone(), done.clone());
        part.changed.notify();
    }
    // A failed write is retried while the id is still in this transaction's Prepare or Complete
    // state (a newer state written after it supersedes it); markers are idempotent, so a
    // Prepare state left in the log only makes a later coordinator write them again.
    while code != errors::NONE {
        if !part.active.get() {
            return;
        }
        tracing::debug!(id, code, "persisting a completed transaction");
        glommio::timer::sleep(Duration::from_millis(100)).await;
        let current = part.get(&id);
        if current.as_ref() != Some(&m) && current.as_ref() != Some(&done) {
            return;
        }
        code = exclusive(part, &id, errors::CONCURRENT_TRANSACTIONS, async {
            persist(shard, part, &id, &done).await
        })
        .await;
    }
}

/// InitProducerId with a transactional id: (producer id, epoch). An open transaction of the id
/// is aborted first (under a bumped epoch, fencing its producer) and the answer waits for the
/// abort to complete, within `HOLD_LIMIT`.
pub async fn init_producer_id(
    shard: &Rc<Services>,
    id: String,
    timeout_ms: i32,
) -> Result<(i64, i16), i16> {
    let part = partition_of(shard, &id).await?;
    // At most twice: an abort of the open transaction, then the init itself.
    for _ in 0..2 {
        settled(shard, &part, &id).await?;
        let current = part.get(&id);
        // A fresh producer id is allocated only when one is needed (a new id, or the last
        // epoch).
        let needs_pid = current
            .as_ref()
            .is_none_or(|m| m.producer_epoch >= i16::MAX - 1);
        let fresh = if needs_pid {
            shard.next_producer_id().await?
        } else {
            -1
        };
        // The allocation may have waited: settle again before deciding on the current state.
        settled(shard, &part, &id).await?;
        let current = part.get(&id);
        let max = shard.config.groups.txn_max_timeout_ms;
        let plan = state::init_producer(current.as_ref(), timeout_ms, max, fresh, now_ms())?;
        let part2 = part.clone();
        let aborting = exclusive(&part, &id, Err(errors::CONCURRENT_TRANSACTIONS), async {
            match plan {
                InitPlan::Ready(m) => match persist(shard, &part2, &id, &m).await {
                    errors::NONE => Ok(Some((m.producer_id, m.producer_epoch))),
                    code => Err(code),
                },
                InitPlan::AbortFirst(m) => {
                    // The open transaction is aborted under a bumped epoch (fencing its
                    // producer); once its markers are written the init runs again.
                    match persist(shard, &part2, &id, &m).await {
                        errors::NONE => {
                            spawn_completion(shard, &part2, id.clone(), m);
                            Ok(None)
                        }
                        code => Err(code),
                    }
                }
            }
        })
        .await?;
        if let Some(ready) = aborting {
            return Ok(ready);
        }
    }
    Err(errors::CONCURRENT_TRANSACTIONS)
}

const MAX_ID: usize = super::MAX_TRANSACTIONAL_ID_LEN;

/// AddPartitionsToTxn / AddOffsetsToTxn: one error for all the partitions. Held while the id's
/// previous transaction completes.
pub async fn add_partitions(
    shard: &Rc<Services>,
    id: String,
    producer_id: i64,
    epoch: i16,
    parts: Vec<TopicPartitionName>,
) -> i16 {
    let id = &id;
    settled_and_exclusive(shard, id, |part, current| async move {
        match state::add_partitions(current.as_ref(), producer_id, epoch, &parts, now_ms()) {
            Ok(None) => errors::NONE,
            Ok(Some(m)) => persist(shard, &part, id, &m).await,
            Err(code) => code,
        }
    })
    .await
}

/// Runs `change` on the id's current state once its previous transaction has completed, with
/// no other change of the same id running (CONCURRENT_TRANSACTIONS if one is); the
/// coordinator's own errors otherwise.
async fn settled_and_exclusive<'a, F, Fut>(shard: &'a Rc<Services>, id: &'a str, change: F) -> i16
where
    F: FnOnce(Rc<TxnPartition>, Option<TxnMeta>) -> Fut,
    Fut: std::future::Future<Output = i16> + 'a,
{
    let part = match partition_of(shard, id).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(code) = settled(shard, &part, id).await {
        return code;
    }
    let current = part.get(id);
    exclusive(
        &part,
        id,
        errors::CONCURRENT_TRANSACTIONS,
        change(part.clone(), current),
    )
    .await
}

/// KIP-890 verification (a partition leader asking before it appends a producer's first
/// transactional batch): per partition, NONE when it is in the open transaction of this
/// producer id and epoch, INVALID_TXN_STATE when it is not (or nothing is open); the
/// producer's own errors (fenced epoch, unknown id) for all. Not held: the producer sends data
/// only after AddPartitionsToTxn was answered, by which time the state is in memory.
pub async fn verify(
    shard: &Rc<Services>,
    id: String,
    producer_id: i64,
    epoch: i16,
    parts: Vec<TopicPartitionName>,
) -> Result<Vec<i16>, i16> {
    let part = partition_of(shard, &id).await?;
    let m = part.get(&id).ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
    state::check_producer(&m, producer_id, epoch)?;
    Ok(parts
        .iter()
        .map(|p| {
            if m.state == state::TxnState::Ongoing && m.partitions.contains(p) {
                errors::NONE
            } else {
                errors::INVALID_TXN_STATE
            }
        })
        .collect())
}

/// EndTxn: answered once the Prepare state is persisted; the markers follow. A retry that
/// finds the Prepare state is held until it completes, then answered as done.
pub async fn end_txn(
    shard: &Rc<Services>,
    id: String,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> i16 {
    let id = &id;
    settled_and_exclusive(shard, id, |part, current| async move {
        match state::end_txn(current.as_ref(), producer_id, epoch, commit, now_ms()) {
            Ok(EndPlan::AlreadyDone) => errors::NONE,
            Ok(EndPlan::Prepare(m)) => match persist(shard, &part, id, &m).await {
                errors::NONE => {
                    spawn_completion(shard, &part, id.clone(), m);
                    errors::NONE
                }
                code => code,
            },
            Err(code) => code,
        }
    })
    .await
}

/// Aborts the open transactions past their timeout in the partitions this shard leads
/// (`transaction.timeout.ms`): each is fenced (its epoch bumped, so the producer's next
/// request fails) and its markers written as for an abort.
pub async fn abort_expired(shard: &Rc<Services>) {
    for part in shard.txns.loaded() {
        let now = now_ms();
        for (id, m) in part.snapshot() {
            if !state::is_expired(&m, now) {
                continue;
            }
            let Ok(InitPlan::AbortFirst(abort)) =
                state::init_producer(Some(&m), m.timeout_ms, i32::MAX, -1, now)
            else {
                continue;
            };
            tracing::info!(
                id,
                producer_id = m.producer_id,
                "aborting a transaction past its timeout"
            );
            let written = exclusive(&part, &id, errors::CONCURRENT_TRANSACTIONS, async {
                persist(shard, &part, &id, &abort).await
            })
            .await;
            if written == errors::NONE {
                spawn_completion(shard, &part, id, abort);
            }
        }
    }
}

/// How long a request waits for a load in progress before COORDINATOR_LOAD_IN_PROGRESS.
const LOAD_WAIT: Duration = Duration::from_secs(2);

/// How soon a failed (or still running) partition load is tried again.
const LOAD_RETRY: Duration = Duration::from_millis(250);

/// The longest the loader sleeps without a new image: a safety net, and how late it notices
/// shutdown.
const LOAD_RECHECK: Duration = Duration::from_secs(5);

/// The background loop of one shard that loads every `__transaction_state` partition it owns
/// as soon as this broker leads it, as Kafka's coordinator does on election, instead of at the
/// first request for one of its ids: a transaction that a dead coordinator left in a Prepare
/// state must get its markers even though its producer may never ask again (its EndTxn was
/// answered), and an open one must be aborted at its timeout; until then the last stable offset
/// of every partition in the transaction, `__consumer_offsets` included, stays held back.
/// Leadership only changes with a new image, so the loop runs on each; it retries every
/// `LOAD_RETRY` only while a load failed or is in progress.
pub async fn run_loader(shard: Rc<Services>) {
    while !shard.shutting_down.get() {
        let seen = shard.with_image(|i| i.applied_index);
        let wait = if load_led_partitions(&shard).await {
            LOAD_RECHECK
        } else {
            LOAD_RETRY
        };
        shard.wait_for_image(seen + 1, wait).await;
    }
}

/// Loads the partitions this shard owns and this broker leads, unloads those it no longer
/// leads (their background work stops). False when a load failed or is still running.
async fn load_led_partitions(shard: &Rc<Services>) -> bool {
    let me = shard.config.node_id;
    let led: HashMap<i32, i32> = shard.with_image(|i| {
        i.topic(TXN_TOPIC).map_or_else(HashMap::new, |t| {
            t.partitions
                .iter()
                .enumerate()
                .map(|(idx, p)| (idx as i32, p))
                .filter(|(idx, p)| p.leader == me && shard.owner_of(TXN_TOPIC, *idx) == shard.id)
                .map(|(idx, p)| (idx, p.leader_epoch))
                .collect()
        })
    });
    crate::partition::replay::unload_not_led(&shard.txns, |idx, epoch| {
        led.get(&idx) == Some(&epoch)
    });
    let mut settled = true;
    for (idx, epoch) in led {
        let existing = shard
            .txns
            .parts
            .borrow()
            .get(&idx)
            .filter(|p| p.leader_epoch == epoch)
            .map(|p| p.loaded.get());
        match existing {
            Some(true) => {}
            // A request is loading it; look again soon in case that load fails.
            Some(false) => settled = false,
            None => settled &= acquire(shard, idx).await.is_ok(),
        }
    }
    settled
}

/// The background loop of one shard: aborts expired transactions every `interval`.
pub async fn run_expiry(shard: Rc<Services>, interval: Duration) {
    while !shard.shutting_down.get() {
        glommio::timer::sleep(interval).await;
        abort_expired(&shard).await;
    }
}

/// DescribeTransactions of one id (this broker must coordinate it).
pub async fn describe(shard: &Rc<Services>, id: String) -> Result<TxnMeta, i16> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(errors::TRANSACTIONAL_ID_NOT_FOUND);
    }
    let part = partition_of(shard, &id).await?;
    part.get(&id).ok_or(errors::TRANSACTIONAL_ID_NOT_FOUND)
}

/// ListTransactions on this shard: (id, producer id, state name) of the ids it coordinates
/// that pass the filters (empty filters pass everything; `min_duration_ms` < 0: no filter,
/// else only transactions open at least that long).
pub fn list_local(
    shard: &Services,
    states: &[String],
    producer_ids: &[i64],
    min_duration_ms: i64,
) -> Vec<(String, i64, &'static str)> {
    let now = now_ms();
    let mut out = Vec::new();
    for part in shard.txns.loaded() {
        for (id, m) in part.snapshot() {
            let name = m.state.name();
            let passes = (states.is_empty() || states.iter().any(|s| s == name))
                && (producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
                && (min_duration_ms < 0
                    || (m.state == state::TxnState::Ongoing
                        && now.saturating_sub(m.start_ms) >= min_duration_ms));
            if passes {
                out.push((id, m.producer_id, name));
            }
        }
    }
    out
}
