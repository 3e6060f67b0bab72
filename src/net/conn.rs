//! One client connection: a reader that cuts frames and starts each request at once
//! (pipelining), and a writer that sends responses strictly in request order. On an SSL
//! listener both go through the connection's TLS state (`net::tls`); a plaintext connection
//! reads and writes the socket directly (zero-copy pieces). On a SASL listener every frame
//! passes the connection's login state (`sasl::session`) first, on the reader, in order.

use crate::kafka::dispatch::{dispatch, DispatchResult};
use crate::kafka::handlers::fetch_session::FetchSessions;
use crate::kafka::{parse_header, ProtocolError, Response};
use crate::net::broker_auth;
use crate::net::frame::{read_frame, ByteSource};
use crate::net::pieces::PieceCursor;
use crate::net::tls::{self, CipherBuf, TlsShared, TlsSink, TlsSource};
use crate::sasl::session::{Authenticator, Verdict};
use crate::services::Services;
use bytes::{Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use kafka_protocol::messages::ApiKey;
use std::cell::RefCell;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::Arc;

/// Requests of one connection being served at once; more waits (back-pressure on the client).
const MAX_PIPELINED: usize = 256;
/// iovecs per sendmsg call when writing a response in pieces.
const MAX_IOVECS: usize = 128;

type Pending = (glommio::task::JoinHandle<DispatchResult>, StaticPermit);

/// The listener a shard accepted a connection on.
pub struct Origin {
    /// Its name, which requests carry so Metadata answers with this listener's addresses.
    pub name: Arc<str>,
    /// Its TLS config (SSL listeners), swapped in place when certificates are reloaded.
    pub tls: Option<Rc<RefCell<Arc<rustls::ServerConfig>>>>,
    /// SASL_PLAINTEXT / SASL_SSL: clients log in before anything else (`sasl::session`).
    pub sasl: bool,
}

/// Where a connection's responses go.
enum Sink {
    Plain(TcpStream),
    Tls(TlsSink),
}

pub async fn serve(shard: Rc<Services>, reader: TcpStream, origin: Rc<Origin>) {
    serve_connection(&shard, reader, &origin).await;
    shard
        .connections
        .set(shard.connections.get().saturating_sub(1));
}

async fn serve_connection(shard: &Rc<Services>, mut reader: TcpStream, origin: &Origin) {
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
    let idle = shard.idle.register();
    let conn = Conn {
        peer,
        peer_ip,
        listener: origin.name.clone(),
        principal: None,
        sasl: origin.sasl.then(|| {
            Authenticator::new(
                shard.sasl_mechanisms.clone(),
                shard.config.sasl.reauth_ms,
                shard.sasl_decoy_key.clone(),
            )
        }),
    };
    let Some(config) = &origin.tls else {
        let reader = crate::net::frame::PlainSource::new(reader);
        return run(shard, reader, Sink::Plain(writer), conn, idle).await;
    };
    let config = config.borrow().clone();
    let state = match TlsShared::new(config, reader.as_raw_fd()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(peer = %conn.peer, "TLS setup failed: {e}");
            return;
        }
    };
    let mut cipher = CipherBuf::default();
    let link = Some((&shard.idle, &*idle));
    if let Err(e) = tls::handshake(&mut reader, &state, &mut cipher, link).await {
        // A plaintext client on an SSL port ends here.
        tracing::debug!(peer = %conn.peer, "closing connection: TLS handshake failed: {e}");
        let _ = reader.shutdown(Shutdown::Both).await;
        return;
    }
    let conn = Conn {
        principal: state.principal().map(Arc::from),
        ..conn
    };
    tracing::debug!(peer = %conn.peer, principal = ?conn.principal, "TLS connection");
    let source = TlsSource::new(reader, state.clone(), cipher);
    let sink = Sink::Tls(TlsSink {
        stream: writer,
        tls: state,
    });
    run(shard, source, sink, conn, idle).await
}

/// What requests learn about the connection they came on.
struct Conn {
    peer: String,
    peer_ip: Option<std::net::IpAddr>,
    listener: Arc<str>,
    principal: Option<Arc<str>>,
    /// On a SASL listener: the client's login, which every frame passes first.
    sasl: Option<Authenticator>,
}

/// Largest frame read before a SASL client has logged in (Kafka's
/// `sasl.server.max.receive.size`): an unauthenticated client cannot make the broker buffer a
/// 100 MB request.
const MAX_UNAUTHENTICATED_FRAME: usize = 524_288;

/// Queues an answer the reader made itself (SASL, broker authentication) behind the responses
/// already queued, so answers keep request order. False: the writer is gone.
async fn queue_answer(
    tx: &glommio::channels::local_channel::LocalSender<Pending>,
    frame: BytesMut,
    permit: StaticPermit,
) -> bool {
    let answer =
        glommio::spawn_local(async move { Ok(Some(Response::Frame(frame))) as DispatchResult })
            .detach();
    tx.send((answer, permit)).await.is_ok()
}

async fn run<S: ByteSource>(
    shard: &Rc<Services>,
    mut reader: S,
    writer: Sink,
    conn: Conn,
    idle: Rc<crate::net::idle::ConnIdle>,
) {
    let Conn {
        peer,
        peer_ip,
        listener,
        principal,
        mut sasl,
    } = conn;
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
                    let res = match (&mut writer, &resp) {
                        (Sink::Plain(w), Response::Frame(frame)) => w.write_all(frame).await,
                        (Sink::Plain(w), Response::Pieces(pieces)) => write_pieces(w, pieces).await,
                        (Sink::Tls(w), Response::Frame(frame)) => match w.send_slice(frame).await {
                            Ok(()) => w.flush().await,
                            Err(e) => Err(e),
                        },
                        (Sink::Tls(w), Response::Pieces(pieces)) => w.send(pieces).await,
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
        let mut writer = match writer {
            Sink::Plain(w) => w,
            Sink::Tls(mut w) => {
                w.close_notify();
                w.stream
            }
        };
        let _ = writer.shutdown(Shutdown::Both).await;
        let _ = writer.close().await;
    })
    .detach();

    let mut buf = BytesMut::new();
    let max_frame = shard.config.socket_request_max_bytes;
    let max_budget = shard.config.max_inflight_bytes as u64;
    let mut auth = broker_auth::ServerState::default();
    // Dropped with the connection (its sessions with it, their slots given back).
    let fetch_sessions = Rc::new(FetchSessions::new(shard.fetch_session_budget.clone()));
    loop {
        let link = Some((&shard.idle, &*idle));
        // SASL tokens after a v0 handshake have no header and may be a few bytes long.
        let (min, max) = match &sasl {
            Some(a) if a.expects_raw_token() => (1, MAX_UNAUTHENTICATED_FRAME),
            Some(a) if a.principal().is_none() => (8, MAX_UNAUTHENTICATED_FRAME),
            _ => (8, max_frame),
        };
        let mut frame = match read_frame(&mut reader, &mut buf, min, max, link).await {
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
        if let Some(a) = sasl.as_mut() {
            // Served in order on the reader, so requests read after a login carry its result.
            let lookup = |user: &str, mech| shard.with_image(|i| i.scram.get(user, mech).cloned());
            let mut verdict = a.on_frame(&frame, std::time::Instant::now(), &lookup);
            if let Verdict::CheckPlain(check) = verdict {
                let ok = check.verify_off_shard().await;
                verdict = a.finish_plain(check, ok, std::time::Instant::now());
            }
            match verdict {
                Verdict::Serve => {}
                Verdict::CheckPlain(_) => unreachable!("finish_plain gives the final verdict"),
                Verdict::Answer(resp) => {
                    if !queue_answer(&tx, resp, permit).await {
                        break;
                    }
                    continue;
                }
                Verdict::Close(resp, why) => {
                    tracing::debug!(%peer, "closing connection: {why}");
                    // The writer sends what is already queued and this answer, then closes.
                    if let Some(resp) = resp {
                        let _ = queue_answer(&tx, resp, permit).await;
                    }
                    break;
                }
            }
        }
        if broker_auth::is_auth_frame(&frame) {
            // Served in order on the reader, so requests read after a proof carry its result.
            let step = broker_auth::serve(&mut auth, &shard.secret, shard.config.node_id, &frame);
            if let Some(resp) = step.response {
                if !queue_answer(&tx, resp, permit).await {
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
        if ctx.api_key == ApiKey::Fetch {
            ctx.fetch_sessions = Some(fetch_sessions.clone());
        }
        ctx.listener = Some(listener.clone());
        // On SASL_SSL the SASL login is the principal, as in Kafka, not the certificate.
        ctx.principal = match &sasl {
            Some(a) => a.principal(),
            None => principal.clone(),
        };
        let s = shard.clone();
        let handle = glommio::spawn_local(async move { dispatch(s, ctx, frame).await }).detach();
        if tx.send((handle, permit)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = write_task.await;
}

fn log_protocol_error(peer: &str, e: &ProtocolError) {
    tracing::warn!(%peer, "closing connection: {e}");
}

/// Writes a response given in pieces with vectored sends (`sendmsg`, non-blocking). When the
/// socket is full, the rest of the current piece goes through the stream's own write, which
/// waits for room; then vectored sends resume.
async fn write_pieces(w: &mut TcpStream, pieces: &[Bytes]) -> std::io::Result<()> {
    let fd = w.as_raw_fd();
    let mut at = PieceCursor::default();
    while let Some((i, off)) = at.next_unwritten(pieces) {
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
        let sent = if sent < 0 {
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
        at.advance(pieces, sent);
    }
    Ok(())
}
