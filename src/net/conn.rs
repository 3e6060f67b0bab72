//! One client connection: a reader that cuts frames and starts each request at once
//! (pipelining), and a writer that sends responses strictly in request order.

use crate::kafka::dispatch::{dispatch, DispatchResult};
use crate::kafka::{parse_header, ProtocolError, Response};
use crate::net::broker_auth;
use crate::net::idle::{ConnIdle, IdleSweeper, Kick};
use crate::shard::Shard;
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

/// Requests of one connection being served at once; more waits (back-pressure on the client).
const MAX_PIPELINED: usize = 256;
/// Size of a fresh read buffer. Request frames are split off it as views of the same
/// allocation and live on (queued for the log, in the read cache), so a buffer is rarely
/// reused: each one serves the next READ_BUF bytes of the stream and is then replaced.
const READ_BUF: usize = 256 * 1024;
/// Below this much free room the buffer is replaced (or reclaimed) before reading, so a read
/// syscall always has room for several pipelined requests.
const MIN_READ_ROOM: usize = 16 * 1024;
/// iovecs per sendmsg call when writing a response in pieces.
const MAX_IOVECS: usize = 128;

type Pending = (glommio::task::JoinHandle<DispatchResult>, StaticPermit);

pub async fn serve(shard: Rc<Shard>, reader: TcpStream) {
    let peer = reader
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let peer_ip = reader.peer_addr().ok().map(|a| a.ip());
    let _ = reader.set_nodelay(true);
    // glommio streams cannot be split; a dup'd descriptor gives the writer its own stream.
    let wfd = unsafe { libc::dup(reader.as_raw_fd()) };
    if wfd < 0 {
        tracing::warn!(%peer, "dup failed: {}", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: wfd is a fresh descriptor we own, referring to a connected TCP socket.
    let writer = unsafe { TcpStream::from_raw_fd(wfd) };
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<Pending>(MAX_PIPELINED);
    let budget = Rc::new(Semaphore::new(shard.config.max_inflight_bytes as u64));

    let peer_w = peer.clone();
    let write_task = glommio::spawn_local(async move {
        let mut writer = writer;
        while let Some((handle, permit)) = rx.recv().await {
            let result = handle.await;
            drop(permit);
            match result {
                Some(Ok(Some(resp))) => {
                    let res = match &resp {
                        Response::Frame(frame) => writer.write_all(frame).await,
                        Response::Pieces(pieces) => write_pieces(&mut writer, pieces).await,
                    };
                    if let Err(e) = res {
                        tracing::debug!(peer = %peer_w, "write failed: {e}");
                        break;
                    }
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => {
                    tracing::warn!(peer = %peer_w, "closing connection: {e}");
                    break;
                }
                None => break,
            }
        }
        // Wakes the reader if it is blocked in read.
        let _ = writer.shutdown(Shutdown::Both).await;
        let _ = writer.close().await;
    })
    .detach();

    let mut reader = reader;
    let mut buf = BytesMut::new();
    let max_frame = shard.config.socket_request_max_bytes;
    let idle = shard.idle.register();
    let max_budget = shard.config.max_inflight_bytes as u64;
    let mut auth = broker_auth::ServerState::default();
    loop {
        let link = Some((&shard.idle, &*idle));
        let mut frame = match read_frame(&mut reader, &mut buf, 8, max_frame, link).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                // Kafka's connections.max.idle.ms: a connection waiting on a long poll or on
                // acks=all is busy, not idle.
                if budget.available() < max_budget {
                    idle.active(&shard.idle);
                    continue;
                }
                tracing::debug!(%peer, "closing idle connection");
                break;
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    tracing::warn!(%peer, "closing connection: {e}");
                }
                break;
            }
        };
        let size = frame.len();
        let cost = (size as u64).min(shard.config.max_inflight_bytes as u64);
        let permit = match budget.acquire_static_permit(cost).await {
            Ok(p) => p,
            Err(_) => break,
        };
        if broker_auth::is_auth_frame(&frame) {
            // Served in order on the reader, so requests read after a proof carry its result.
            let step = broker_auth::serve(&mut auth, &shard.secret, shard.config.node_id, &frame);
            if let Some(resp) = step.response {
                let answer = glommio::spawn_local(async move {
                    Ok(Some(Response::Frame(resp))) as DispatchResult
                })
                .detach();
                if tx.send((answer, permit)).await.is_err() {
                    break;
                }
            }
            if step.close {
                // The writer sends the answer already queued, then closes.
                tracing::debug!(%peer, "closing connection: broker authentication failed");
                break;
            }
            continue;
        }
        let mut ctx = match parse_header(&mut frame, peer_ip) {
            Ok(c) => c,
            Err(e) => {
                log_protocol_error(&peer, &e);
                break;
            }
        };
        ctx.broker = auth.proven();
        let s = shard.clone();
        let handle = glommio::spawn_local(async move { dispatch(s, ctx, frame).await }).detach();
        if tx.send((handle, permit)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = write_task.await;
    shard
        .connections
        .set(shard.connections.get().saturating_sub(1));
}

fn log_protocol_error(peer: &str, e: &ProtocolError) {
    tracing::warn!(%peer, "closing connection: {e}");
}

/// A client connection's link to its shard's idle sweeper (`None` for the broker's own outgoing
/// connections, which time out by their own rules).
pub(crate) type IdleLink<'a> = Option<(&'a IdleSweeper, &'a ConnIdle)>;

/// Reads the next length-prefixed frame through `buf` and splits it off (length removed).
/// `Ok(None)`: the peer closed the stream. A length outside `min..=max` is an `InvalidData`
/// error, found before anything is read or allocated for the frame. With an idle link, a
/// connection silent for `connections.max.idle.ms` gets a `TimedOut` error.
pub(crate) async fn read_frame(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    min: usize,
    max: usize,
    idle: IdleLink<'_>,
) -> std::io::Result<Option<BytesMut>> {
    while buf.len() < 4 {
        if read_more(s, buf, 4, idle).await? == 0 {
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
        if read_more(s, buf, 4 + size, idle).await? == 0 {
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

/// Reads at least one byte into `buf`, making room first for (part of) a `frame_len`-byte frame.
/// Hot path: no per-read allocation and no zeroing. `recv` writes straight into the buffer's
/// spare capacity; the buffer is reused in place when every frame split off it has been dropped,
/// otherwise a new one is allocated and only the unfinished frame's bytes move over.
async fn read_more(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    frame_len: usize,
    idle: IdleLink<'_>,
) -> std::io::Result<usize> {
    let fd = s.as_raw_fd();
    loop {
        let missing = frame_len.saturating_sub(buf.len());
        let need = missing.min(TRUSTED_ROOM.max(buf.len())).max(MIN_READ_ROOM);
        // `try_reclaim` never allocates; when it fails, a fresh buffer is cheaper than
        // `reserve`, which would size it from the old one.
        if !buf.try_reclaim(need) {
            let mut fresh = BytesMut::with_capacity(READ_BUF.max(buf.len() + need));
            fresh.extend_from_slice(buf);
            *buf = fresh;
        }
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
async fn wait_readable(
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

/// Writes a response given in pieces with vectored sends (`sendmsg`, non-blocking). When the
/// socket is full, the rest of the current piece goes through the stream's own write, which
/// waits for room; then vectored sends resume.
async fn write_pieces(w: &mut TcpStream, pieces: &[Bytes]) -> std::io::Result<()> {
    let fd = w.as_raw_fd();
    let (mut i, mut off) = (0usize, 0usize);
    while i < pieces.len() {
        if off == pieces[i].len() {
            i += 1;
            off = 0;
            continue;
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        let mut n_iov = 0;
        for (k, p) in pieces[i..].iter().enumerate().take(MAX_IOVECS) {
            let from = if k == 0 { off } else { 0 };
            iov[n_iov] = libc::iovec {
                iov_base: p[from..].as_ptr() as *mut libc::c_void,
                iov_len: p.len() - from,
            };
            n_iov += 1;
        }
        // SAFETY: msghdr is plain data; the iovecs point into `pieces`, which outlive the call
        // and are only read by the kernel.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = n_iov as _;
            libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        let mut sent = if sent < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    let n = w.write(&pieces[i][off..]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    n
                }
                _ => return Err(e),
            }
        } else {
            sent as usize
        };
        while sent > 0 && i < pieces.len() {
            let left = pieces[i].len() - off;
            if sent < left {
                off += sent;
                sent = 0;
            } else {
                sent -= left;
                i += 1;
                off = 0;
            }
        }
    }
    Ok(())
}
