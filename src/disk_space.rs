//! Room on the data disk for new partitions.
//!
//! Creating a partition costs almost no disk (segments reserve space only as they are written),
//! but every new partition will be written to. Near a full disk the broker refuses to create
//! more, so the disk's last bytes go to the partitions it already holds.

use std::path::Path;

/// Default reserve: 5% of the data disk, at most this.
const MAX_DEFAULT_RESERVE: u64 = 256 << 20;

pub use chronik_storage::disk::free_and_total;

/// The free space kept for existing partitions: `configured`, else 5% of the disk up to 256 MiB.
pub fn reserve(configured: Option<u64>, total: u64) -> u64 {
    configured.unwrap_or((total / 20).min(MAX_DEFAULT_RESERVE))
}

/// Why new partitions may not be created on this node now (None: they may). A disk that
/// cannot be looked at does not block creation: opening the partition will report it.
pub fn creation_refusal(data_dir: &Path, configured: Option<u64>) -> Option<String> {
    let (free, total) = free_and_total(data_dir).ok()?;
    let keep = reserve(configured, total);
    (free < keep).then(|| {
        format!(
            "the data disk of this broker is nearly full ({free} bytes free, {keep} kept for \
             existing partitions): new partitions are refused"
        )
    })
}

/// Logs a refused auto-create, at most once a minute per process (clients ask again and again).
pub fn warn_refused(reason: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SECS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_SECS.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST_SECS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!("auto-create refused: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_reserve_is_five_percent_of_the_disk_up_to_256_mib() {
        assert_eq!(reserve(None, 200 << 20), 10 << 20);
        assert_eq!(reserve(None, 1 << 40), 256 << 20);
        assert_eq!(reserve(Some(7), 1 << 40), 7);
    }

    #[test]
    fn a_disk_with_room_allows_creation() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(creation_refusal(dir.path(), Some(0)), None);
        assert!(creation_refusal(dir.path(), Some(u64::MAX)).is_some());
    }
}
