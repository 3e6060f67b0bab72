//! One client connection: a reader that cuts frames and starts each request at once
//! (pipelining), and a writer that sends responses strictly in request order.

use crate::kafka::dispatch::{dispatch, HandlerResult};
use crate::kafka::{parse_header, ProtocolError};
use crate::shard::Shard;
use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

/// Requests of one connection being served at once; more waits (back-pressure on the client).
const MAX_PIPELINED: usize = 256;
const READ_CHUNK: usize = 64 * 1024;

type Pending = (glommio::task::JoinHandle<HandlerResult>, StaticPermit);

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
                Some(Ok(Some(frame))) => {
                    if let Err(e) = writer.write_all(&frame).await {
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
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let max_frame = shard.config.socket_request_max_bytes;
    'conn: loop {
        // Ensure the 4-byte length is buffered.
        while buf.len() < 4 {
            match read_more(&mut reader, &mut buf, READ_CHUNK).await {
                Ok(0) | Err(_) => break 'conn,
                Ok(_) => {}
            }
        }
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size < 8 || size as usize > max_frame {
            // Checked before allocating anything for it.
            tracing::warn!(%peer, size, max_frame, "closing connection: bad frame size");
            break;
        }
        let size = size as usize;
        while buf.len() < 4 + size {
            let want = (4 + size - buf.len()).max(READ_CHUNK);
            match read_more(&mut reader, &mut buf, want).await {
                Ok(0) | Err(_) => break 'conn,
                Ok(_) => {}
            }
        }
        let _ = buf.split_to(4);
        let mut frame = buf.split_to(size);
        let cost = (size as u64).min(shard.config.max_inflight_bytes as u64);
        let permit = match budget.acquire_static_permit(cost).await {
            Ok(p) => p,
            Err(_) => break,
        };
        let ctx = match parse_header(&mut frame, peer_ip) {
            Ok(c) => c,
            Err(e) => {
                log_protocol_error(&peer, &e);
                break;
            }
        };
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

/// Reads at least one byte into `buf`, growing it by up to `want` bytes.
async fn read_more(s: &mut TcpStream, buf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
    let old = buf.len();
    buf.resize(old + want, 0);
    let r = s.read(&mut buf[old..]).await;
    let n = *r.as_ref().unwrap_or(&0);
    buf.truncate(old + n);
    r
}
