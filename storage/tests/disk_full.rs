//! Disk full: on a 2 MiB tmpfs mounted for the test (needs root; skipped with a message
//! otherwise), appends fail with `StorageError::DiskFull`, the log stays consistent and
//! readable, and it accepts appends again once retention frees space.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chronik_storage::{LogConfig, StorageError};
use common::*;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy unmount: a descriptor still closing must not leave the mount behind.
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount_small_tmpfs(dir: &Path) -> Option<Mount> {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir)
        .status();
    match status {
        Ok(s) if s.success() => Some(Mount(dir.to_path_buf())),
        other => {
            println!(
                "SKIPPED disk-full test: cannot mount a 2 MiB tmpfs at {} ({other:?})",
                dir.display()
            );
            None
        }
    }
}

#[test]
fn disk_full_fails_appends_with_a_typed_error_and_keeps_the_log_consistent() {
    for buffered in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(mount) = mount_small_tmpfs(dir.path()) else {
            return;
        };
        let path = mount.0.join("topic-0");
        run(move || async move {
            let c = LogConfig {
                segment_bytes: 256 << 10,
                retention_ms: None,
                ..cfg(buffered)
            };
            let log = open(&path, c.clone(), 1 << 20).await;
            let mut acked = 0i64;
            let mut err = None;
            for i in 0..1000 {
                match log
                    .append(
                        chronik_storage::testing::build_batch_of(16, 1000, i as u8, 0),
                        0,
                    )
                    .await
                {
                    Ok(r) => acked = r.last_offset + 1,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            let err = err.expect("a 2 MiB file system must fill up");
            assert!(matches!(err, StorageError::DiskFull { .. }), "got {err}");
            println!("buffered={buffered}: disk full after {acked} offsets: {err}");
            assert_eq!(log.log_end_offset(), acked);
            assert_eq!(read_all(&log).await.last().map_or(0, |b| b.1 + 1), acked);
            log.check_consistency()
                .await
                .expect("consistent after ENOSPC");
            // A retry waiting on a queued batch gets the write's failure, not a success.
            let failing = log.append(chronik_storage::testing::build_batch_of(16, 1000, 0, 0), 0);
            let retry = log.wait_appended(acked);
            assert!(failing.await.is_err());
            assert!(retry.await.is_err(), "the original's write failed");
            assert!(matches!(
                log.wait_appended(acked).await,
                Err(StorageError::NotWritten { .. })
            ));
            assert_eq!(
                log.log_end_offset(),
                acked,
                "a failed append changes nothing"
            );

            // Retention frees whole segments; appends work again.
            log.set_config(LogConfig {
                retention_bytes: Some(1),
                ..c.clone()
            });
            assert!(log.apply_retention(0).await.expect("retention") > 0);
            let r = log
                .append(chronik_storage::testing::build_batch_of(4, 100, 1, 0), 0)
                .await
                .expect("append after freeing space");
            assert_eq!(r.base_offset, acked);
            log.close().await.expect("close");
            let log = open(&path, c, 0).await;
            assert_eq!(log.log_end_offset(), acked + 4);
            log.check_consistency()
                .await
                .expect("consistent after reopen");
            log.close().await.expect("close");
        });
        drop(mount);
    }
}
