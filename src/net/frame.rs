//! Length-prefixed frames off a TCP stream, for the broker's client connections and its own
//! outgoing ones (replica fetchers): a bounded frame is split off a read buffer without copying.

use crate::net::idle::{ConnIdle, IdleSweeper, Kick};
use bytes::{Buf, BytesMut};
use glommio::net::TcpStream;
use std::os::fd::AsRawFd;

/// Size of a fresh read buffer. Request frames are split off it as views of the same
/// allocation and live on (queued for the log, in the read cache), so a buffer is rarely
/// reused: each one serves the next READ_BUF bytes of the stream and is then replaced.
const READ_BUF: usize = 256 * 1024;
/// Below this much free room the buffer is replaced (or reclaimed) before reading, so a read
/// syscall always has room for several pipelined requests.
const MIN_READ_ROOM: usize = 16 * 1024;
/// A client connection's link to its shard's idle sweeper (`None` for the broker's own outgoing
/// connections, which time out by their own rules).
pub(crate) type IdleLink<'a> = Option<(&'a IdleSweeper, &'a ConnIdle)>;

/// Reads the next length-prefixed frame through `buf` and splits it off (length removed).
/// `Ok(None)`: the peer closed the stream. A length outside `min..=max` is an `InvalidData`
/// error, found before anything is read or allocated for the frame. With an idle link, a
/// connection silent for `connections.max.idle.ms` gets a `TimedOut` error.
pub(crate) async fn read_frame<S: ByteSource>(
    s: &mut S,
    buf: &mut BytesMut,
    min: usize,
    max: usize,
    idle: IdleLink<'_>,
) -> std::io::Result<Option<BytesMut>> {
    while buf.len() < 4 {
        if s.read_more(buf, 4, idle).await? == 0 {
            return Ok(None);
        }
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = match usize::try_from(size) {
        Ok(n) if (min..=max).contains(&n) => n,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad frame size {size} (allowed {min}..={max})"),
            ))
        }
    };
    while buf.len() < 4 + size {
        if s.read_more(buf, 4 + size, idle).await? == 0 {
            return Ok(None);
        }
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size)))
}

/// Room made for a frame before its bytes arrive: a frame up to this size gets it all at once;
/// a larger one grows (doubling) with what actually arrives, so a length prefix alone cannot
/// make the broker allocate up to `socket.request.max.bytes`.
const TRUSTED_ROOM: usize = 1 << 20;

/// Where frames' bytes come from: a plain socket, or a TLS connection decrypting one
/// (`net::tls`).
pub(crate) trait ByteSource {
    /// Reads at least one byte into `buf` (room made with `make_room`); 0: the peer closed.
    async fn read_more(
        &mut self,
        buf: &mut BytesMut,
        frame_len: usize,
        idle: IdleLink<'_>,
    ) -> std::io::Result<usize>;
}

/// Makes room in `buf` for (part of) a `frame_len`-byte frame. The buffer is reused in place
/// when every frame split off it has been dropped, otherwise a new one is allocated and only the
/// unfinished frame's bytes move over.
pub(crate) fn make_room(buf: &mut BytesMut, frame_len: usize) {
    let missing = frame_len.saturating_sub(buf.len());
    let need = missing.min(TRUSTED_ROOM.max(buf.len())).max(MIN_READ_ROOM);
    // `try_reclaim` never allocates; when it fails, a fresh buffer is cheaper than
    // `reserve`, which would size it from the old one.
    if !buf.try_reclaim(need) {
        let mut fresh = BytesMut::with_capacity(READ_BUF.max(buf.len() + need));
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

impl ByteSource for TcpStream {
    /// Hot path: no per-read allocation and no zeroing. `recv` writes straight into the
    /// buffer's spare capacity.
    async fn read_more(
        &mut self,
        buf: &mut BytesMut,
        frame_len: usize,
        idle: IdleLink<'_>,
    ) -> std::io::Result<usize> {
        read_plain(self, buf, frame_len, idle, None).await
    }
}

/// A client's plaintext connection: `TcpStream`'s reads, parked until the rest of the frame has
/// arrived rather than woken at every segment (see `WakeMark`).
pub struct PlainSource {
    pub stream: TcpStream,
    mark: WakeMark,
}

impl PlainSource {
    pub fn new(stream: TcpStream) -> Self {
        PlainSource {
            stream,
            mark: WakeMark::default(),
        }
    }
}

impl ByteSource for PlainSource {
    async fn read_more(
        &mut self,
        buf: &mut BytesMut,
        frame_len: usize,
        idle: IdleLink<'_>,
    ) -> std::io::Result<usize> {
        read_plain(&mut self.stream, buf, frame_len, idle, Some(&mut self.mark)).await
    }
}

/// The most a reader asks the kernel to gather before waking it.
const LOWAT_CAP: usize = 256 * 1024;

/// A socket's SO_RCVLOWAT as its reader last set it (the kernel's default is 1). Poll readiness
/// (and so the reactor) and the kernel's data-ready wakeup both wait for that many queued bytes;
/// EOF and errors wake regardless. A reader about to park on an empty socket sets it to what the
/// frame it is reading still lacks, so a request sent in many segments wakes it once, not per
/// segment: each wakeup costs the parked shard and the sender (on loopback the sender's
/// `write` runs the wakeup). Only a change costs a setsockopt.
#[derive(Debug)]
pub struct WakeMark(usize);

impl Default for WakeMark {
    fn default() -> Self {
        WakeMark(1)
    }
}

impl WakeMark {
    /// Wake once `bytes` (at least 1, at most `LOWAT_CAP`) are queued on `fd`.
    pub fn set(&mut self, fd: std::os::fd::RawFd, bytes: usize) {
        let want = bytes.clamp(1, LOWAT_CAP);
        if want == self.0 {
            return;
        }
        self.0 = want;
        let v = want as libc::c_int;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int. A failure only
        // costs wakeups, so it is ignored.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&v as *const libc::c_int).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

async fn read_plain(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    frame_len: usize,
    idle: IdleLink<'_>,
    mut mark: Option<&mut WakeMark>,
) -> std::io::Result<usize> {
    let fd = s.as_raw_fd();
    loop {
        make_room(buf, frame_len);
        let spare = buf.spare_capacity_mut();
        // SAFETY: the kernel writes at most `spare.len()` bytes into the spare capacity through
        // the raw pointer; no reference to uninitialized memory is created.
        let n = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: `recv` initialized the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            if let Some((sweeper, conn)) = idle {
                conn.active(sweeper);
            }
            return Ok(n);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            // Nothing buffered: sleep in the reactor until data (or EOF) arrives, then recv.
            std::io::ErrorKind::WouldBlock => {
                if let Some(m) = mark.as_deref_mut() {
                    m.set(fd, frame_len.saturating_sub(buf.len()));
                }
                if !wait_readable(s, buf, idle).await? {
                    return Ok(0);
                }
            }
            _ => return Err(e),
        }
    }
}

/// Waits until the socket has data (`true`) or EOF (`false`). A client connection silent for a
/// sweeper tick gives back its read buffer unless it holds part of a frame (an idle connection
/// then costs a few hundred bytes, not a 256 KiB buffer), and one silent for the idle limit ends
/// with `TimedOut`.
pub(crate) async fn wait_readable(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    idle: IdleLink<'_>,
) -> std::io::Result<bool> {
    let Some((_, conn)) = idle else {
        return Ok(s.peek(&mut [0u8; 1]).await? > 0);
    };
    loop {
        let mut probe = [0u8; 1];
        let woke = futures_lite::future::or(async { s.peek(&mut probe).await.map(Ok) }, async {
            Ok(Err(conn.kicked().await))
        })
        .await?;
        match woke {
            Ok(n) => return Ok(n > 0),
            Err(Kick::Release) | Err(Kick::None) => {
                if buf.is_empty() {
                    *buf = BytesMut::new();
                }
                conn.mark_released();
            }
            Err(Kick::Expire) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle longer than connections.max.idle.ms",
                ))
            }
        }
    }
}
