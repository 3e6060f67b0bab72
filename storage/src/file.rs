//! One segment file, driven through io_uring by glommio: O_DIRECT (`DmaFile`) where the file
//! system accepts it, buffered (`BufferedFile`) where it refuses O_DIRECT or a test asks.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};

use crate::error::{glommio_io, StorageError};

/// All DMA writes and the tail-page rewrite use this alignment (a multiple of every
/// logical block size we meet: 512 and 4096).
pub(crate) const PAGE: u64 = 4096;

static WARNED_BUFFERED: AtomicBool = AtomicBool::new(false);
static WARNED_READ_FALLBACK: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Devices whose io_uring poll support this executor thread has already probed.
    static PROBED_DEVICES: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// glommio decides once per device and thread whether reads may use the io_uring poll ring,
/// by reading the first block of the first O_DIRECT file opened there. On an empty file that
/// read succeeds at EOF whatever the device supports, and every later read then fails with
/// EOPNOTSUPP on devices without polling (virtio disks). So before the first segment on a
/// device is opened, open a file that has data and let glommio probe that.
async fn probe_device_once(dir: &Path) {
    let Ok(md) = std::fs::metadata(dir) else {
        return;
    };
    let dev = md.dev();
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return;
    }
    let probe = dir.join(".chronik-iopoll-probe.tmp");
    if std::fs::write(&probe, vec![0xA5u8; PAGE as usize]).is_ok() {
        if let Ok(f) = OpenOptions::new().read(true).dma_open(&probe).await {
            let _ = f.close().await;
        }
        let _ = std::fs::remove_file(&probe);
    }
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(dev));
}

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(PAGE - 1)
}
pub(crate) fn align_up(v: u64) -> u64 {
    (v + PAGE - 1) & !(PAGE - 1)
}

pub(crate) enum SegFile {
    Dma {
        file: DmaFile,
        path: PathBuf,
        /// Buffered reader used if O_DIRECT reads are refused (see `read`).
        read_fallback: RefCell<Option<Rc<BufferedFile>>>,
    },
    Buffered {
        file: BufferedFile,
        path: PathBuf,
    },
    /// The empty first segment of a log whose directory is not created yet (see
    /// `PartitionLog::open_or_defer`): it holds no bytes, so reads find nothing and syncs have
    /// nothing to do. The log replaces it with a real file before its first write.
    NotCreated {
        path: PathBuf,
    },
}

impl SegFile {
    /// Opens (or creates) a segment read-write, falling back to buffered I/O when O_DIRECT is
    /// refused (EINVAL) and saying so once per process.
    pub async fn open(
        path: &Path,
        create: bool,
        force_buffered: bool,
    ) -> Result<SegFile, StorageError> {
        if !force_buffered {
            if let Some(dir) = path.parent() {
                probe_device_once(dir).await;
            }
            let res = OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .dma_open(path)
                .await;
            match res {
                Ok(file) => {
                    return Ok(SegFile::Dma {
                        file,
                        path: path.to_path_buf(),
                        read_fallback: RefCell::new(None),
                    })
                }
                Err(e) => {
                    let e = glommio_io(e);
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(StorageError::io(path, "open segment", e));
                    }
                    if !WARNED_BUFFERED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            path = %path.display(),
                            "O_DIRECT refused by the file system; partition logs fall back to buffered I/O"
                        );
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .buffered_open(path)
            .await
            .map_err(|e| StorageError::io(path, "open segment (buffered)", glommio_io(e)))?;
        Ok(SegFile::Buffered {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            SegFile::Dma { path, .. }
            | SegFile::Buffered { path, .. }
            | SegFile::NotCreated { path } => path,
        }
    }

    pub fn is_direct(&self) -> bool {
        matches!(self, SegFile::Dma { .. })
    }

    /// Writes `buf[..]` whose first `keep` bytes are the already-written partial page at
    /// `page_start` and whose next `new_len` bytes are new. O_DIRECT rewrites whole pages;
    /// buffered I/O writes only the new bytes.
    pub async fn write_pages(
        &self,
        page_start: u64,
        buf: DmaBuffer,
        keep: usize,
        new_len: usize,
    ) -> Result<(), StorageError> {
        match self {
            SegFile::Dma { file, path, .. } => {
                let want = buf.len();
                let n = file
                    .write_at(buf, page_start)
                    .await
                    .map_err(|e| StorageError::io(path, "write segment", glommio_io(e)))?;
                // A short O_DIRECT write means the device ran out of room mid-way.
                if n < keep + new_len && n < want {
                    return Err(StorageError::io(
                        path,
                        "write segment",
                        io::Error::new(
                            io::ErrorKind::StorageFull,
                            format!("short write: {n} of {want} bytes"),
                        ),
                    ));
                }
                Ok(())
            }
            SegFile::Buffered { file, path } => {
                let mut pos = 0;
                let data = &buf.as_bytes()[keep..keep + new_len];
                while pos < data.len() {
                    let n = file
                        .write_at(data[pos..].to_vec(), page_start + (keep + pos) as u64)
                        .await
                        .map_err(|e| StorageError::io(path, "write segment", glommio_io(e)))?;
                    if n == 0 {
                        return Err(StorageError::io(
                            path,
                            "write segment",
                            io::Error::new(io::ErrorKind::WriteZero, "zero-length write"),
                        ));
                    }
                    pos += n;
                }
                Ok(())
            }
            SegFile::NotCreated { path } => Err(not_created(path, "write segment")),
        }
    }

    /// Reads up to `len` bytes at `pos` (fewer at end of file). DMA reads are aligned internally.
    pub async fn read(&self, pos: u64, len: usize) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        match self {
            SegFile::NotCreated { .. } => Ok(Bytes::new()),
            SegFile::Buffered { file, path } => {
                let rr = file
                    .read_at(pos, len)
                    .await
                    .map_err(|e| StorageError::io(path, "read segment", glommio_io(e)))?;
                Ok(Bytes::copy_from_slice(&rr))
            }
            SegFile::Dma {
                file,
                path,
                read_fallback,
            } => {
                let fallback = read_fallback.borrow().clone();
                if let Some(f) = fallback {
                    let rr = f.read_at(pos, len).await.map_err(|e| {
                        StorageError::io(path, "read segment (buffered)", glommio_io(e))
                    })?;
                    return Ok(Bytes::copy_from_slice(&rr));
                }
                match file.read_at(pos, len).await.map_err(glommio_io) {
                    Ok(rr) => Ok(Bytes::copy_from_slice(&rr)),
                    // glommio routes reads to the io_uring poll ring when it believes the
                    // device supports polling; if that belief is wrong (it was probed on an
                    // empty file by other code on this thread) reads fail with EOPNOTSUPP.
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        if !WARNED_READ_FALLBACK.swap(true, Ordering::Relaxed) {
                            tracing::warn!(path = %path.display(), "O_DIRECT reads refused (EOPNOTSUPP from the io_uring poll ring); reading segments with buffered I/O");
                        }
                        let f = OpenOptions::new()
                            .read(true)
                            .buffered_open(path)
                            .await
                            .map_err(|e| {
                                StorageError::io(path, "open segment for reading", glommio_io(e))
                            })?;
                        let f = Rc::new(f);
                        *read_fallback.borrow_mut() = Some(f.clone());
                        let rr = f.read_at(pos, len).await.map_err(|e| {
                            StorageError::io(path, "read segment (buffered)", glommio_io(e))
                        })?;
                        Ok(Bytes::copy_from_slice(&rr))
                    }
                    Err(e) => Err(StorageError::io(path, "read segment", e)),
                }
            }
        }
    }

    pub async fn fdatasync(&self) -> Result<(), StorageError> {
        let (res, path) = match self {
            SegFile::Dma { file, path, .. } => (file.fdatasync().await, path),
            SegFile::Buffered { file, path } => (file.fdatasync().await, path),
            SegFile::NotCreated { .. } => return Ok(()),
        };
        res.map_err(|e| StorageError::io(path, "fdatasync segment", glommio_io(e)))
    }

    /// Reserves blocks up to `size` without changing the file size, so later writes and
    /// fdatasyncs need no block allocation; ENOSPC surfaces here as DiskFull.
    pub async fn pre_allocate(&self, size: u64) -> Result<(), StorageError> {
        let (res, path) = match self {
            SegFile::Dma { file, path, .. } => (file.pre_allocate(size, true).await, path),
            SegFile::Buffered { file, path } => (file.pre_allocate(size, true).await, path),
            SegFile::NotCreated { path } => return Err(not_created(path, "preallocate segment")),
        };
        match res.map_err(glommio_io) {
            Ok(()) => Ok(()),
            // Some file systems cannot preallocate; that only costs performance.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            Err(e) => Err(StorageError::io(path, "preallocate segment", e)),
        }
    }

    pub async fn truncate(&self, size: u64) -> Result<(), StorageError> {
        let (res, path) = match self {
            SegFile::Dma { file, path, .. } => (file.truncate(size).await, path),
            SegFile::Buffered { file, path } => (file.truncate(size).await, path),
            SegFile::NotCreated { path } if size > 0 => {
                return Err(not_created(path, "truncate segment"))
            }
            SegFile::NotCreated { .. } => return Ok(()),
        };
        res.map_err(|e| StorageError::io(path, "truncate segment", glommio_io(e)))
    }

    /// Closes the descriptor now rather than on the reactor's next cycle.
    pub async fn close(self) {
        let _ = match self {
            SegFile::Dma {
                file,
                read_fallback,
                ..
            } => {
                if let Some(f) = read_fallback
                    .into_inner()
                    .and_then(|f| Rc::try_unwrap(f).ok())
                {
                    let _ = f.close().await;
                }
                file.close().await
            }
            SegFile::Buffered { file, .. } => file.close().await,
            SegFile::NotCreated { .. } => Ok(()),
        };
    }

    pub async fn size(&self) -> Result<u64, StorageError> {
        let (res, path) = match self {
            SegFile::Dma { file, path, .. } => (file.file_size().await, path),
            SegFile::Buffered { file, path } => (file.file_size().await, path),
            SegFile::NotCreated { .. } => return Ok(0),
        };
        res.map_err(|e| StorageError::io(path, "stat segment", glommio_io(e)))
    }
}

/// What a write to a segment that is not created yet gets: the log creates it first, so this
/// is a bug, reported as an I/O error rather than a panic.
fn not_created(path: &Path, op: &'static str) -> StorageError {
    StorageError::io(
        path,
        op,
        io::Error::new(io::ErrorKind::NotFound, "segment file not created yet"),
    )
}

/// Writes a small file atomically: temp file, fdatasync, rename, directory sync.
pub(crate) async fn write_small_file(
    dir: &Path,
    name: &str,
    bytes: Vec<u8>,
) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(&tmp)
        .await
        .map_err(|e| StorageError::io(&tmp, "create", glommio_io(e)))?;
    let len = bytes.len();
    let n = f
        .write_at(bytes, 0)
        .await
        .map_err(|e| StorageError::io(&tmp, "write", glommio_io(e)))?;
    if n != len {
        return Err(StorageError::io(
            &tmp,
            "write",
            io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write {n} of {len}"),
            ),
        ));
    }
    f.fdatasync()
        .await
        .map_err(|e| StorageError::io(&tmp, "fdatasync", glommio_io(e)))?;
    f.rename(&dst)
        .await
        .map_err(|e| StorageError::io(&dst, "rename", glommio_io(e)))?;
    f.close()
        .await
        .map_err(|e| StorageError::io(&dst, "close", glommio_io(e)))?;
    sync_dir(dir).await
}

/// Reads a whole small file; `Ok(None)` if it does not exist.
pub(crate) async fn read_small_file(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    let f = match BufferedFile::open(path).await.map_err(glommio_io) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, "open", e)),
    };
    let size = f
        .file_size()
        .await
        .map_err(|e| StorageError::io(path, "stat", glommio_io(e)))?;
    let rr = f
        .read_at(0, size as usize)
        .await
        .map_err(|e| StorageError::io(path, "read", glommio_io(e)))?;
    let out = rr.to_vec();
    let _ = f.close().await;
    Ok(Some(out))
}

/// Makes file creations, renames and removals in `dir` durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    // glommio 0.9's Directory::open hands a relative path to openat(-1, …), which fails with EBADF
    // (its file opens resolve relative paths, its directory open does not).
    let dir =
        &std::path::absolute(dir).map_err(|e| StorageError::io(dir, "resolve directory", e))?;
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| StorageError::io(dir, "open directory", glommio_io(e)))?;
    d.sync()
        .await
        .map_err(|e| StorageError::io(dir, "sync directory", glommio_io(e)))?;
    let _ = d.close().await;
    Ok(())
}

/// Runs a file system call that may wait on the file system's own journal (a create, rename or
/// unlink waits for ext4's running commit, which an fdatasync anywhere on the disk starts) on
/// glommio's blocking thread: on the shard's thread it stopped every task of the shard for that
/// commit, ~10 ms for each journal file removed under load (issue 24).
pub(crate) async fn off_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Removes `path` without waiting (off the shard's thread); a failure is logged.
pub(crate) fn remove_in_background(path: PathBuf) {
    glommio::spawn_local(async move {
        let shown = path.clone();
        match off_thread(move || std::fs::remove_file(&path)).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %shown.display(), %e, "cannot remove a released file"),
        }
    })
    .detach();
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, "remove", e)),
    }
}
