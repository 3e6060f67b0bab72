//! Background work of the coordinator, each driven by what it waits for rather than a shared
//! 250 ms scan:
//!
//! - loading the offsets partitions this broker leads runs when a new metadata image arrives
//!   (leadership only changes with an image), and retries every `LOAD_RETRY` only while a
//!   load failed or is in progress;
//! - session expiry is one timer per group (in `effects`);
//! - offset expiry runs every `offsets.retention.check.interval.ms`.

use super::host::{self, Shard};
use super::offsets_log::{self, LogRecord};
use super::offsets_partition::acquire_partition;
use super::partitions::{GroupRef, OffsetsPartition};
use super::state::{now_ms, Group, GroupState};
use crate::kafka::errors;
use std::rc::Rc;
use std::time::Duration;

/// How soon a failed (or still running) partition load is tried again.
const LOAD_RETRY: Duration = Duration::from_millis(250);
/// The longest the loader sleeps without a new image: a safety net, and how late it notices
/// shutdown.
const LOAD_RECHECK: Duration = Duration::from_secs(5);

pub async fn run_background(shard: Rc<Shard>) {
    glommio::spawn_local(run_offset_expiry(shard.clone())).detach();
    loop {
        if host::shutting_down(&shard) {
            return;
        }
        let seen = host::image_index(&shard);
        let settled = load_led_partitions(&shard).await;
        let wait = if settled { LOAD_RECHECK } else { LOAD_RETRY };
        host::wait_for_newer_image(&shard, seen, wait).await;
    }
}

/// Loads every offsets partition this shard owns and this broker leads (so ListGroups sees
/// its groups and members expire), and unloads those it no longer leads. Returns false when
/// some load failed or is still running (worth retrying soon).
async fn load_led_partitions(shard: &Rc<Shard>) -> bool {
    let wanted = host::owned_offsets_partitions(shard);
    let coord = host::coordinator(shard);
    crate::partition::replay::unload_not_led(coord, |idx, epoch| {
        wanted.contains(&(idx, Some(epoch)))
    });
    let mut settled = true;
    for (idx, epoch) in wanted {
        if epoch.is_none() {
            continue;
        }
        let existing = coord.parts.borrow().get(&idx).map(|p| p.loaded.get());
        match existing {
            Some(true) => {}
            // A request is loading it; look again soon in case that load fails.
            Some(false) => settled = false,
            None => settled &= acquire_partition(shard, idx).await.is_ok(),
        }
    }
    settled
}

// ---------------------------------------------------------------------------------------------
// Offset expiry

async fn run_offset_expiry(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(host::coordinator(&shard).config.retention_check_interval).await;
        if host::shutting_down(&shard) {
            return;
        }
        for part in host::coordinator(&shard).loaded_parts() {
            expire_offsets(&shard, &part).await;
        }
    }
}

/// The committed offsets of `g` past retention (`retention_ms`, counted from the later of the
/// commit and the moment the group became empty), and whether that is all of them. Only empty
/// groups lose offsets.
pub fn expired_offsets(
    g: &Group,
    now_ms: i64,
    retention_ms: i64,
) -> Option<(Vec<(String, i32)>, bool)> {
    if g.state != GroupState::Empty {
        return None;
    }
    let keys: Vec<(String, i32)> = g
        .offsets
        .iter()
        .filter(|(_, v)| now_ms - v.commit_timestamp.max(g.state_timestamp) > retention_ms)
        .map(|(k, _)| k.clone())
        .collect();
    let drop_group = keys.len() == g.offsets.len();
    (!keys.is_empty() || drop_group).then_some((keys, drop_group))
}

/// Expires offsets of empty groups older than offsets.retention.minutes and removes groups
/// left with nothing.
async fn expire_offsets(shard: &Rc<Shard>, part: &Rc<OffsetsPartition>) {
    let retention = host::coordinator(shard)
        .config
        .offsets_retention
        .as_millis() as i64;
    let now = now_ms();
    let groups: Vec<GroupRef> = part.groups.borrow().values().cloned().collect();
    for g in groups {
        let (records, keys, drop_group) = {
            let e = g.borrow();
            let gm = &e.group;
            let Some((keys, drop_group)) = expired_offsets(gm, now, retention) else {
                continue;
            };
            let mut records: Vec<LogRecord> = keys
                .iter()
                .map(|(t, p)| (offsets_log::offset_key(&gm.id, t, *p), None))
                .collect();
            if drop_group {
                records.push((offsets_log::group_key(&gm.id), None));
            }
            (records, keys, drop_group)
        };
        if part.write(shard, records).await != errors::NONE {
            continue;
        }
        let (id, empty) = {
            let mut e = g.borrow_mut();
            let gm = &mut e.group;
            for k in &keys {
                gm.offsets.remove(k);
            }
            tracing::info!(group = %gm.id, offsets = keys.len(), "expired committed offsets");
            (
                gm.id.clone(),
                gm.state == GroupState::Empty && gm.offsets.is_empty(),
            )
        };
        if drop_group && empty {
            part.groups.borrow_mut().remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::offsets_log::OffsetValue;
    use crate::group::state::Clock;
    use std::time::Instant;

    fn offset(commit_timestamp: i64) -> OffsetValue {
        OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp,
        }
    }

    #[test]
    fn only_an_empty_groups_offsets_past_retention_expire_counted_from_when_it_emptied() {
        let clock = Clock {
            now: Instant::now(),
            wall_ms: 1_000,
        };
        let mut g = Group::new("g", &clock);
        g.offsets.insert(("old".into(), 0), offset(0));
        g.offsets.insert(("new".into(), 0), offset(5_000));
        // Emptied at 1 000: the old commit counts from then.
        assert_eq!(expired_offsets(&g, 2_000, 1_500), None);
        let (keys, drop_group) = expired_offsets(&g, 3_000, 1_500).unwrap();
        assert_eq!((keys, drop_group), (vec![("old".to_string(), 0)], false));
        let (keys, drop_group) = expired_offsets(&g, 7_000, 1_500).unwrap();
        assert_eq!((keys.len(), drop_group), (2, true));
        g.state = GroupState::Stable;
        assert_eq!(expired_offsets(&g, 7_000, 1_500), None);
    }
}
