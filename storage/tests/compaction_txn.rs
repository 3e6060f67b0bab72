//! Log compaction with transactions, as Kafka's cleaner does it: aborted transactions' data
//! leaves the log and never shadows a committed record, committed transactional records are
//! compacted by key, nothing at or past the last stable offset is touched, markers go in a
//! later round once their transaction has no data left and delete.retention.ms has passed,
//! and each producer's last batch keeps its offsets and sequence for recovery.

mod common;

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use chronik_storage::testing::{build_batch_with_timestamps, set_producer, Record};
use chronik_storage::{
    build_marker_batch, parse_header, parse_marker, AbortedRange, BatchHeader, CleanStats,
    CleanerLimits, CleanupPolicy, CompactionConfig, LogConfig, PartitionLog, ProducerTail,
    TxnContext, TxnMarker,
};
use common::*;

const TS0: i64 = 1_700_000_000_000;
const RETENTION_MS: i64 = 60_000;
/// Markers written at TS0 are past delete.retention.ms at this time.
const LATER: i64 = TS0 + 10 * RETENTION_MS;

fn compact_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        cleanup: CleanupPolicy {
            delete: false,
            compact: true,
        },
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.01,
            delete_retention_ms: RETENTION_MS as u64,
            ..CompactionConfig::default()
        },
        ..cfg(true)
    }
}

/// A batch of `(key, value)` records, transactional or not, of producer `pid` (-1: none).
fn data(pid: i64, seq: i32, transactional: bool, recs: &[(&str, &str)]) -> BytesMut {
    let records: Vec<Record<'_>> = recs
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes())))
        .collect();
    let mut b = build_batch_with_timestamps(&records, &[TS0]);
    if transactional {
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    }
    if pid >= 0 {
        set_producer(&mut b, pid, 0, seq);
    }
    b
}

fn marker(pid: i64, commit: bool, ts: i64) -> BytesMut {
    let m = TxnMarker {
        commit,
        coordinator_epoch: 0,
    };
    build_marker_batch(pid, 0, m, ts)
}

async fn append(log: &PartitionLog, b: BytesMut) -> i64 {
    log.append(b, 0).await.expect("append").base_offset
}

/// A keyless batch larger than a segment's room: everything before it is in sealed segments.
async fn roll(log: &PartitionLog) {
    let filler = vec![0u8; 4000];
    let recs: Vec<Record<'_>> = vec![(None, Some(&filler[..]))];
    append(log, build_batch_with_timestamps(&recs, &[TS0])).await;
}

/// Every batch of the log: (header, bytes).
async fn batches(log: &PartitionLog) -> Vec<(BatchHeader, Bytes)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let leo = log.log_end_offset();
    while next < leo {
        let got = log.read(next, 64 << 10, leo).await.expect("read");
        assert!(!got.is_empty(), "read at {next} found nothing");
        for mut b in got {
            while let Ok(h) = parse_header(&b) {
                let one = b.split_to(h.total_len());
                chronik_storage::validate_batch(&one).expect("valid batch");
                next = h.last_offset() + 1;
                out.push((h, one));
            }
        }
    }
    out
}

/// (offset, key, value) of each keyed data record, as a read_uncommitted consumer sees them.
async fn records(log: &PartitionLog) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    for (h, b) in batches(log).await {
        if h.is_control() {
            continue;
        }
        let mut p = 61;
        while p < b.len() {
            let len = varint(&b, &mut p) as usize;
            let end = p + len;
            p += 1;
            varint(&b, &mut p);
            let od = varint(&b, &mut p);
            let kl = varint(&b, &mut p);
            let k = kl >= 0;
            let key = if k {
                let s = String::from_utf8_lossy(&b[p..p + kl as usize]).into_owned();
                p += kl as usize;
                Some(s)
            } else {
                None
            };
            let vl = varint(&b, &mut p);
            let v = String::from_utf8_lossy(&b[p..p + vl.max(0) as usize]).into_owned();
            if let Some(key) = key {
                out.push((h.base_offset + od, key, v));
            }
            p = end;
        }
    }
    out
}

fn varint(b: &[u8], p: &mut usize) -> i64 {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let x = b[*p];
        *p += 1;
        v |= ((x & 0x7f) as u64) << shift;
        if x & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The markers left in the log: offset → (producer, commit).
async fn markers(log: &PartitionLog) -> BTreeMap<i64, (i64, bool)> {
    batches(log)
        .await
        .into_iter()
        .filter_map(|(h, b)| Some((h.base_offset, (h.producer_id, parse_marker(&b, &h)?.commit))))
        .collect()
}

/// What a partition derives from its log before the first cleaning: the aborted transactions
/// and each producer's epoch and last data offset (as `ProducerStateTable` keeps them).
async fn context_of(log: &PartitionLog) -> TxnContext {
    let mut open: HashMap<i64, i64> = HashMap::new();
    let mut ctx = TxnContext::default();
    for (h, b) in batches(log).await {
        if h.producer_id < 0 {
            continue;
        }
        if let Some(m) = parse_marker(&b, &h) {
            if let Some(first) = open.remove(&h.producer_id) {
                if !m.commit {
                    ctx.aborted.push(AbortedRange {
                        producer_id: h.producer_id,
                        first_offset: first,
                        marker_offset: h.base_offset,
                    });
                }
            }
            ctx.producers.entry(h.producer_id).or_insert(ProducerTail {
                epoch: h.producer_epoch,
                last_data_offset: None,
            });
            continue;
        }
        if h.is_transactional() {
            open.entry(h.producer_id).or_insert(h.base_offset);
        }
        ctx.producers.insert(
            h.producer_id,
            ProducerTail {
                epoch: h.producer_epoch,
                last_data_offset: Some(h.last_offset()),
            },
        );
    }
    ctx
}

async fn clean(log: &PartitionLog, ctx: &TxnContext, now: i64, upper_bound: i64) -> CleanStats {
    let limits = CleanerLimits {
        upper_bound,
        txns: ctx.clone(),
        ..CleanerLimits::new(1 << 20, now)
    };
    log.clean(&limits)
        .await
        .expect("clean")
        .expect("a round ran")
}

/// The latest value of each key, checking each key appears once.
fn one_per_key(recs: &[(i64, String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (_, k, v) in recs {
        assert!(
            out.insert(k.clone(), v.clone()).is_none(),
            "key {k} appears twice: {recs:?}"
        );
    }
    out
}

#[test]
fn aborted_data_leaves_the_log_and_never_shadows_a_committed_record_while_committed_ones_compact_by_key(
) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let log = open(&dir, compact_cfg(), 1 << 20).await;
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let recs = |v: &str| -> Vec<(String, String)> {
            keys.iter()
                .map(|k| (k.clone(), format!("{k}-{v}")))
                .collect()
        };
        let c1 = recs("c1");
        let a1 = recs("aborted");
        let c2: Vec<(String, String)> = recs("c2").into_iter().take(5).collect();
        fn pairs(r: &[(String, String)]) -> Vec<(&str, &str)> {
            r.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }
        // Producer 1 commits k0..k9; producer 2 aborts a newer k0..k9 (its last batch);
        // producer 3 aborts k0..k9 too and then commits; producer 1 commits k0..k4 again.
        append(&log, data(1, 0, true, &pairs(&c1))).await;
        append(&log, marker(1, true, TS0)).await;
        let aborted_2 = append(&log, data(2, 0, true, &pairs(&a1))).await;
        append(&log, marker(2, false, TS0)).await;
        append(&log, data(3, 0, true, &pairs(&a1))).await;
        let abort_3 = append(&log, marker(3, false, TS0)).await;
        append(&log, data(3, 10, true, &[("x", "x-c")])).await;
        append(&log, marker(3, true, TS0)).await;
        append(&log, data(1, 10, true, &pairs(&c2))).await;
        append(&log, marker(1, true, TS0)).await;
        roll(&log).await;
        let leo = log.log_end_offset();
        let ctx = context_of(&log).await;
        assert_eq!(ctx.aborted.len(), 2);

        let stats = clean(&log, &ctx, TS0 + 100, leo).await;
        assert!(stats.records_removed >= 25, "{stats:?}");
        let mut want: BTreeMap<String, String> = (0..10)
            .map(|i| {
                (
                    format!("k{i}"),
                    format!("k{i}-c{}", if i < 5 { 2 } else { 1 }),
                )
            })
            .collect();
        want.insert("x".into(), "x-c".into());
        let after = records(&log).await;
        assert_eq!(
            one_per_key(&after),
            want,
            "the latest committed value of each key"
        );
        assert!(after.iter().all(|(_, _, v)| !v.contains("aborted")));
        // Producer 2's aborted batch was its last: its header stays, without records.
        let all = batches(&log).await;
        let (h, _) = all
            .iter()
            .find(|(h, _)| h.base_offset == aborted_2)
            .expect("producer 2's last batch is kept");
        assert_eq!((h.records_count, h.last_offset()), (0, aborted_2 + 9));
        assert_eq!((h.producer_id, h.base_sequence), (2, 0));
        // Producer 3's aborted transaction has no data left; producer 2's keeps its header.
        assert_eq!(
            stats.aborted_without_data,
            vec![AbortedRange {
                producer_id: 3,
                first_offset: abort_3 - 10,
                marker_offset: abort_3,
            }]
        );
        // Every marker is still there: their data was seen in this round.
        assert_eq!(markers(&log).await.len(), 5);
        log.check_consistency().await.expect("consistent");

        // A crash (no close) and a reopen: the same records, empty batch included.
        drop(log);
        let log = open(&dir, compact_cfg(), 1 << 20).await;
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(one_per_key(&records(&log).await), want);
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
    });
}

#[test]
fn nothing_at_or_past_the_last_stable_offset_is_cleaned() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let log = open(&dir, compact_cfg(), 1 << 20).await;
        // Two sealed segments of versions of k, then an open transaction (the LSO is its
        // first offset) and more versions of k behind it.
        for v in 0..3 {
            append(&log, data(-1, 0, false, &[("k", &format!("v{v}"))])).await;
            roll(&log).await;
        }
        let lso = append(&log, data(9, 0, true, &[("k", "open")])).await;
        append(&log, data(-1, 0, false, &[("k", "v3")])).await;
        roll(&log).await;
        assert!(
            log.cleanable_ratio(TS0, 0).is_none(),
            "nothing below an LSO of 0"
        );
        clean(&log, &TxnContext::default(), TS0 + 100, lso).await;
        let values: Vec<String> = records(&log).await.into_iter().map(|r| r.2).collect();
        assert_eq!(
            values,
            ["v2", "open", "v3"],
            "below the LSO only the latest version stays; nothing past it is touched"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn a_marker_goes_in_a_later_round_than_its_data_after_delete_retention_and_once_the_index_forgot_it(
) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let log = open(&dir, compact_cfg(), 1 << 20).await;
        // Producer 4 commits k=v1 and then k=v2: the first transaction's data is superseded.
        // Producer 5 aborts. A young marker (producer 6's) is within delete.retention.ms.
        // Each producer writes again afterwards, so no marker is its producer's last entry.
        append(&log, data(4, 0, true, &[("k", "v1")])).await;
        let commit_1 = append(&log, marker(4, true, TS0)).await;
        append(&log, data(5, 0, true, &[("k", "aborted")])).await;
        let abort = append(&log, marker(5, false, TS0)).await;
        append(&log, data(6, 0, true, &[("j", "j1")])).await;
        let young = append(&log, marker(6, true, LATER)).await;
        append(&log, data(4, 1, true, &[("k", "v2")])).await;
        let commit_2 = append(&log, marker(4, true, TS0)).await;
        for pid in [5, 6] {
            append(&log, data(pid, 1, false, &[("j", "j2")])).await;
        }
        roll(&log).await;
        let mut ctx = context_of(&log).await;
        let all = markers(&log).await;
        assert_eq!(all.len(), 4);

        // Round 1, long after every marker but the young one: data goes, markers stay.
        let stats = clean(&log, &ctx, LATER, log.log_end_offset()).await;
        assert_eq!(
            markers(&log).await,
            all,
            "markers outlive their data's round"
        );
        assert_eq!(stats.aborted_without_data.len(), 1);

        // Round 2 while the index still lists the aborted transaction: its marker stays; the
        // first commit marker, whose data went in round 1, goes.
        append(&log, data(-1, 0, false, &[("z", "z1")])).await;
        roll(&log).await;
        let stats = clean(&log, &ctx, LATER, log.log_end_offset()).await;
        let left = markers(&log).await;
        assert!(!left.contains_key(&commit_1), "{left:?}");
        assert!(left.contains_key(&abort), "still listed by the index");
        assert!(
            left.contains_key(&commit_2),
            "its transaction's record is live"
        );
        assert!(
            left.contains_key(&young),
            "younger than delete.retention.ms"
        );
        assert_eq!(stats.aborted_without_data.len(), 1, "reported again");

        // Round 3 after the index forgot it: the abort marker goes.
        ctx.aborted.clear();
        append(&log, data(-1, 0, false, &[("z", "z2")])).await;
        roll(&log).await;
        clean(&log, &ctx, LATER, log.log_end_offset()).await;
        let left: Vec<i64> = markers(&log).await.into_keys().collect();
        assert_eq!(left, vec![young, commit_2]);
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
    });
}

#[test]
fn a_producers_last_batch_keeps_its_offsets_and_sequence_when_its_records_go() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let log = open(&dir, compact_cfg(), 1 << 20).await;
        // Idempotent producer 7: a batch (seq 0..2) whose records are all superseded later,
        // then its last batch (seq 3..5) whose last record is superseded.
        let first = append(
            &log,
            data(7, 0, false, &[("a", "1"), ("b", "1"), ("c", "1")]),
        )
        .await;
        let last = append(
            &log,
            data(7, 3, false, &[("d", "1"), ("e", "1"), ("f", "1")]),
        )
        .await;
        // Producer 8's last batch loses every record; its marker is its last entry too.
        let only = append(&log, data(8, 0, true, &[("g", "1")])).await;
        let fencing = append(&log, marker(8, true, TS0)).await;
        append(
            &log,
            data(
                -1,
                0,
                false,
                &[("a", "2"), ("b", "2"), ("c", "2"), ("f", "2"), ("g", "2")],
            ),
        )
        .await;
        roll(&log).await;
        let ctx = context_of(&log).await;
        clean(&log, &ctx, LATER, log.log_end_offset()).await;
        // Twice: the second round sees no data of producer 8's transaction.
        append(&log, data(-1, 0, false, &[("z", "z")])).await;
        roll(&log).await;
        clean(&log, &ctx, LATER, log.log_end_offset()).await;

        let all = batches(&log).await;
        let of = |pid: i64| -> Vec<(i64, i64, i32, i32)> {
            all.iter()
                .filter(|(h, _)| h.producer_id == pid && !h.is_control())
                .map(|(h, _)| {
                    (
                        h.base_offset,
                        h.last_offset(),
                        h.base_sequence,
                        h.records_count,
                    )
                })
                .collect()
        };
        assert!(
            of(7).iter().all(|b| b.0 > first + 2),
            "the superseded batch went whole"
        );
        assert_eq!(
            of(7),
            vec![(last, last + 1, 3, 2), (last + 2, last + 2, 5, 0)],
            "d and e stay; f's offset and sequence stay in an empty batch"
        );
        assert_eq!(
            of(8),
            vec![(only, only, 0, 0)],
            "an empty batch keeps producer 8's"
        );
        assert!(
            markers(&log).await.contains_key(&fencing),
            "a marker that is its producer's last entry carries the epoch that fences"
        );
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
    });
}
