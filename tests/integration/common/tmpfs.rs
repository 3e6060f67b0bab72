//! A small tmpfs mounted over a node's data dir (or part of it), to run a disk out of space.

use std::path::{Path, PathBuf};

/// A tmpfs of a given size mounted at a directory for the test; unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it (needs root: None otherwise; callers print SKIPPED).
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    pub fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {} with size {size}", self.0.display());
    }

    /// Fills it with one file until writes fail, or until only `leave` bytes are free; returns
    /// the file.
    pub fn fill_leaving(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        // Bounded: the file systems of tests are a few MiB.
        for _ in 0..100_000 {
            if self.free() <= leave + chunk.len() as u64 || f.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }

    /// Fills it until writes fail.
    pub fn fill(&self) -> PathBuf {
        self.fill_leaving(0)
    }

    /// Bytes free for an unprivileged writer.
    pub fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the broker may still hold files open when a failing test unwinds.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
