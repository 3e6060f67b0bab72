//! Our RPC over TCP: Raft traffic, forwarded proposals and broker heartbeats between controllers.
//!
//! One multiplexed connection per peer: each frame carries a request id, so many requests (a
//! replication stream, forwarded proposals from 64 submitters, heartbeats) share a connection
//! and answers may come back in any order. Frames are `len u32 | id u64 | bincode(body)`. The
//! writer side coalesces queued frames into one write, so a burst of requests costs one syscall.
//! A failed connection fails its pending calls; the next call dials again.
//!
//! Every connection authenticates both ways before any request is served: the caller sends a
//! `Hello` (its role: a controller of cluster X, or an operator tool; and a random nonce), the
//! server a `Challenge` (its cluster id and its nonce), the caller a `Proof` (HMAC-SHA256 under
//! the cluster secret of the role, the server's cluster id and both nonces), and the server its
//! own `Proof` over the same transcript with another label, so neither side can be made to
//! answer its own challenge. The secret never crosses the wire. A controller of another cluster
//! (as Kafka answers INCONSISTENT_CLUSTER_ID: a quorum string pointing at the wrong node, a port
//! reused by another cluster) or a wrong proof is closed at once; before authentication frames
//! are at most `MAX_HANDSHAKE_FRAME` bytes, the whole exchange has `HANDSHAKE_TIMEOUT`, and at
//! most `MAX_HANDSHAKES` connections may be in it at once. Operator tools may only use the
//! operator requests (Submit, Summary).
//!
//! With `--controller-tls` (`rpc_tls`) every connection is mutual TLS first and the handshake
//! above runs inside it. Without it, frames after the handshake are neither encrypted nor
//! MACed, so an attacker on the network path (or listening at an address the membership still
//! names) could take over an authenticated connection; such controller ports belong on a
//! private network.

use crate::command::{Command, CommandOutcome};
use crate::image::BrokerId;
use crate::rpc_tls::{BlockingStream, ControllerTls, ReadHalf, WriteHalf};
use crate::secret::{nonce, ClusterSecret};
use crate::types::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Frames above this are refused (a snapshot chunk is far smaller).
const MAX_FRAME: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Frames before authentication: a hello, challenge or proof is about 100 bytes.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// A connection that has not authenticated by then is closed (a silent one holds nothing long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the handshake at once; more are closed at accept. Each holds a task and an
/// 8 KiB read buffer for at most `HANDSHAKE_TIMEOUT`; the cap is high enough that a stranger
/// holding connections open cannot easily keep a restarting peer out.
const MAX_HANDSHAKES: usize = 1024;
/// First bytes of a `Hello`: tells another protocol (or an older chronik) from ours.
const MAGIC: [u8; 8] = *b"chronik1";
const CLIENT_LABEL: &[u8] = b"chronik-rpc client proof";
const SERVER_LABEL: &[u8] = b"chronik-rpc server proof";

#[derive(Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Proposals from a follower to the leader.
    Forward(Vec<Command>),
    /// A broker is alive (sent to the active controller).
    Heartbeat {
        broker: BrokerId,
    },
    /// An operator's command (`chronik-server cluster ...`): committed through the receiver,
    /// which forwards it to the leader like any local submission.
    Submit(Command),
    /// Brokers and every partition's replica state as the receiver's image has them (operator
    /// tools).
    Summary,
    /// Answer once every shard of the receiver serves metadata at `index` (or at the timeout).
    WaitServed {
        index: u64,
        timeout_ms: u64,
    },
    /// The metadata quorum as the receiver sees it (None unless it is the Raft leader).
    Quorum,
}

impl RpcRequest {
    /// Requests only a controller of the same cluster may send (not operator tools).
    fn is_peer_only(&self) -> bool {
        !matches!(self, RpcRequest::Submit(_) | RpcRequest::Summary)
    }
}

/// Who opens a connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Role {
    /// A controller of the named cluster.
    Peer { cluster_id: String },
    /// An operator tool (`chronik-server cluster ...`): Submit and Summary only.
    Operator,
}

/// The caller's first frame (request id 0).
#[derive(Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    role: Role,
    nonce: [u8; 32],
}

/// The server's answer to a `Hello`.
#[derive(Serialize, Deserialize)]
struct Challenge {
    cluster_id: String,
    nonce: [u8; 32],
}

/// HMAC-SHA256 over the transcript: the caller's, then the server's.
#[derive(Serialize, Deserialize)]
struct Proof {
    mac: [u8; 32],
}

/// What both proofs cover: role, the server's cluster id and both nonces, each unambiguous.
struct Transcript {
    role: [u8; 1],
    cluster_id_len: [u8; 4],
    cluster_id: String,
    client_nonce: [u8; 32],
    server_nonce: [u8; 32],
}

impl Transcript {
    fn new(role: &Role, cluster_id: &str, client_nonce: [u8; 32], server_nonce: [u8; 32]) -> Self {
        Transcript {
            role: [match role {
                Role::Peer { .. } => 1,
                Role::Operator => 2,
            }],
            cluster_id_len: (cluster_id.len() as u32).to_le_bytes(),
            cluster_id: cluster_id.to_string(),
            client_nonce,
            server_nonce,
        }
    }

    fn parts<'a>(&'a self, label: &'a [u8]) -> [&'a [u8]; 6] {
        [
            label,
            &self.role,
            &self.cluster_id_len,
            self.cluster_id.as_bytes(),
            &self.client_nonce,
            &self.server_nonce,
        ]
    }
}

/// The caller's side of the handshake, without I/O (shared by the async and blocking clients).
struct ClientHandshake {
    role: Role,
    nonce: [u8; 32],
}

impl ClientHandshake {
    fn new(role: Role) -> Self {
        ClientHandshake {
            role,
            nonce: nonce(),
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            magic: MAGIC,
            role: self.role.clone(),
            nonce: self.nonce,
        }
    }

    /// Our proof for the server's challenge, and the transcript its proof must cover.
    fn answer(&self, secret: &ClusterSecret, body: &[u8]) -> Result<(Proof, Transcript), String> {
        let ch: Challenge =
            crate::codec::decode(body).map_err(|_| "not a chronik controller".to_string())?;
        if let Role::Peer { cluster_id } = &self.role {
            if *cluster_id != ch.cluster_id {
                return Err(format!(
                    "it belongs to cluster {}, not {cluster_id} (check --controller-quorum)",
                    ch.cluster_id
                ));
            }
        }
        let t = Transcript::new(&self.role, &ch.cluster_id, self.nonce, ch.nonce);
        let mac = secret.mac(&t.parts(CLIENT_LABEL));
        Ok((Proof { mac }, t))
    }
}

fn check_server_proof(secret: &ClusterSecret, t: &Transcript, body: &[u8]) -> Result<(), String> {
    let refused = || {
        "it refused our proof or failed its own: the cluster secrets differ (check --cluster-secret-file)".to_string()
    };
    let p: Proof = crate::codec::decode(body).map_err(|_| refused())?;
    // Only under the key we proved with: the server answers with the key that matched ours.
    secret
        .proving_only()
        .verify(&t.parts(SERVER_LABEL), &p.mac)
        .map(|_| ())
        .ok_or_else(refused)
}

/// Why the server closed a connection during the handshake.
enum Refusal {
    /// `--controller-tls`: no certificate the CA vouches for, or no TLS at all.
    Tls(io::Error),
    Io,
    Malformed,
    ForeignCluster(String),
    BadProof,
}

/// The server's side: returns the caller's role once it has proven knowledge of an accepted
/// secret and we have proven ours.
async fn server_handshake<R, W>(
    rd: &mut R,
    wr: &mut W,
    ours: &str,
    secret: &ClusterSecret,
) -> Result<Role, Refusal>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let (_, body) = read_frame(rd, MAX_HANDSHAKE_FRAME)
        .await
        .map_err(|_| Refusal::Io)?;
    let hello: Hello = crate::codec::decode(&body).map_err(|_| Refusal::Malformed)?;
    if hello.magic != MAGIC {
        return Err(Refusal::Malformed);
    }
    if let Role::Peer { cluster_id } = &hello.role {
        if cluster_id != ours {
            return Err(Refusal::ForeignCluster(cluster_id.clone()));
        }
    }
    let server_nonce = nonce();
    let ch = Challenge {
        cluster_id: ours.to_string(),
        nonce: server_nonce,
    };
    let frame = encode_frame(0, &ch).map_err(|_| Refusal::Io)?;
    send(wr, &frame).await.map_err(|_| Refusal::Io)?;
    let (_, body) = read_frame(rd, MAX_HANDSHAKE_FRAME)
        .await
        .map_err(|_| Refusal::Io)?;
    let proof: Proof = crate::codec::decode(&body).map_err(|_| Refusal::BadProof)?;
    let t = Transcript::new(&hello.role, ours, hello.nonce, server_nonce);
    let key = secret
        .verify(&t.parts(CLIENT_LABEL), &proof.mac)
        .ok_or(Refusal::BadProof)?;
    let ours = Proof {
        mac: key.mac(&t.parts(SERVER_LABEL)),
    };
    let frame = encode_frame(0, &ours).map_err(|_| Refusal::Io)?;
    send(wr, &frame).await.map_err(|_| Refusal::Io)?;
    Ok(hello.role)
}

/// Writes and flushes: over TLS the bytes may otherwise wait in the session's buffer.
async fn send<W: AsyncWrite + Unpin + ?Sized>(wr: &mut W, bytes: &[u8]) -> io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// The caller's side over an async stream.
async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &ClusterSecret,
    role: Role,
) -> Result<(), String> {
    let hs = ClientHandshake::new(role);
    let io = |e: io::Error| {
        format!(
            "connection closed during authentication ({e}): the cluster secrets or ids may differ"
        )
    };
    let frame = encode_frame(0, &hs.hello()).map_err(|e| e.to_string())?;
    send(s, &frame).await.map_err(io)?;
    let (_, body) = read_frame(s, MAX_HANDSHAKE_FRAME).await.map_err(io)?;
    let (proof, t) = hs.answer(secret, &body)?;
    let frame = encode_frame(0, &proof).map_err(|e| e.to_string())?;
    send(s, &frame).await.map_err(io)?;
    let (_, body) = read_frame(s, MAX_HANDSHAKE_FRAME).await.map_err(io)?;
    check_server_proof(secret, &t, &body)
}

#[derive(Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// Per forwarded command, in order: (log index, outcome), or why it was not committed.
    Forward(Vec<Result<(u64, CommandOutcome), ForwardError>>),
    Heartbeat(HeartbeatReply),
    /// True when the receiver serves the index, false at its timeout.
    WaitServed(bool),
    /// (log index, outcome), or why it could not be committed.
    Submit(Result<(u64, CommandOutcome), String>),
    Summary(ImageSummary),
    Quorum(Option<crate::quorum::QuorumStatus>),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageSummary {
    pub applied_index: u64,
    pub brokers: Vec<crate::image::BrokerInfo>,
    /// In (topic, partition) order.
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionInfo {
    pub topic: String,
    pub partition: i32,
    pub state: crate::image::PartitionState,
}

/// One blocking request/response on a fresh connection, authenticated as an operator with
/// `secret` (over TLS with `tls`: a controller port with `--controller-tls`): for operator
/// tools outside the controller's runtime (`chronik-server cluster`).
pub fn blocking_call(
    addr: &str,
    secret: &ClusterSecret,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: &RpcRequest,
    timeout: Duration,
) -> Result<RpcResponse, String> {
    use std::io::Write;
    use std::net::ToSocketAddrs;
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let tcp = std::net::TcpStream::connect_timeout(
        &sock,
        CONNECT_TIMEOUT.max(timeout.min(Duration::from_secs(5))),
    )
    .map_err(|e| format!("cannot reach the controller at {addr}: {e}"))?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut s = BlockingStream::new(tcp, addr, tls).map_err(|e| format!("{addr}: {e}"))?;
    let hs = ClientHandshake::new(Role::Operator);
    let closed = |e: io::Error| {
        format!(
            "{addr}: connection closed during authentication ({e}): check --cluster-secret-file \
             (and, with --controller-tls, the certificates)"
        )
    };
    let frame = encode_frame(0, &hs.hello()).map_err(|e| e.to_string())?;
    s.write_all(&frame)
        .and_then(|_| s.flush())
        .map_err(closed)?;
    let body = read_frame_blocking(&mut s, MAX_HANDSHAKE_FRAME).map_err(closed)?;
    let (proof, t) = hs
        .answer(secret, &body)
        .map_err(|e| format!("{addr}: {e}"))?;
    let frame = encode_frame(0, &proof).map_err(|e| e.to_string())?;
    s.write_all(&frame)
        .and_then(|_| s.flush())
        .map_err(closed)?;
    let body = read_frame_blocking(&mut s, MAX_HANDSHAKE_FRAME).map_err(closed)?;
    check_server_proof(secret, &t, &body).map_err(|e| format!("{addr}: {e}"))?;
    s.tcp()
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let frame = encode_frame(1, req).map_err(|e| e.to_string())?;
    s.write_all(&frame)
        .and_then(|_| s.flush())
        .map_err(|e| format!("{addr}: {e}"))?;
    let body = read_frame_blocking(&mut s, MAX_FRAME).map_err(|e| format!("{addr}: {e}"))?;
    crate::codec::decode(&body).map_err(|e| format!("{addr}: undecodable answer: {e}"))
}

/// One frame's body from a blocking stream, refused above `max` bytes.
fn read_frame_blocking(s: &mut BlockingStream, max: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(8..=max).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len}"),
        ));
    }
    let mut body = vec![0u8; len - 8];
    s.read_exact(&mut body)?;
    Ok(body)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ForwardError {
    /// The receiver is not the leader; it names the leader if it knows one.
    NotLeader {
        leader: Option<NodeId>,
    },
    Failed(String),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// False when the receiver is not the active controller.
    pub accepted: bool,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<RpcResponse>>>>;

struct Conn {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

/// What a controller authenticates its connections with.
pub struct Credentials {
    pub cluster_id: Arc<str>,
    pub secret: ClusterSecret,
    /// `--controller-tls`: mutual TLS around every connection.
    pub tls: Option<Arc<ControllerTls>>,
}

/// A lazily (re)connecting client for one peer address.
pub struct RpcClient {
    addr: String,
    creds: Arc<Credentials>,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, io::Error),
    #[error("connection to {0} lost")]
    Lost(String),
    #[error("request to {0} timed out")]
    Timeout(String),
    #[error("encode: {0}")]
    Encode(String),
}

impl RpcClient {
    pub fn new(addr: String, creds: Arc<Credentials>) -> Self {
        RpcClient {
            addr,
            creds,
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                CallError::Unreachable(
                    self.addr.clone(),
                    io::Error::new(io::ErrorKind::TimedOut, "connect"),
                )
            })?
            .map_err(|e| CallError::Unreachable(self.addr.clone(), e))?;
        let _ = stream.set_nodelay(true);
        let role = Role::Peer {
            cluster_id: self.creds.cluster_id.to_string(),
        };
        let tls = self.creds.tls.as_deref();
        let auth = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let mut s = crate::rpc_tls::connect(stream, &self.addr, tls)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            client_handshake(&mut s, &self.creds.secret, role).await?;
            Ok::<_, String>(s)
        })
        .await
        .unwrap_or_else(|_| Err("no answer to the authentication".into()));
        let stream = match auth {
            Ok(s) => s,
            Err(e) => {
                refused(
                    || tracing::warn!(peer = %self.addr, "rpc: cannot authenticate to a peer: {e}"),
                );
                return Err(CallError::Unreachable(
                    self.addr.clone(),
                    io::Error::new(io::ErrorKind::PermissionDenied, e),
                ));
            }
        };
        let (rd, wr) = stream.split();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(write_frames(wr, rx, alive.clone(), pending.clone()));
        tokio::spawn(read_responses(rd, pending.clone(), alive.clone()));
        let c = Arc::new(Conn {
            frames: tx,
            pending,
            alive,
        });
        *guard = Some(c.clone());
        Ok(c)
    }

    pub async fn call(
        &self,
        req: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, CallError> {
        // Connecting (and authenticating) counts against the call's time too: a frozen peer
        // accepts TCP but never answers the handshake.
        let conn = tokio::time::timeout(timeout, self.connection())
            .await
            .map_err(|_| CallError::Timeout(self.addr.clone()))??;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(id, req).map_err(|e| CallError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        // The reader marks the connection dead before failing what is pending; a call that
        // registered after that would otherwise wait for its whole timeout.
        if !conn.alive.load(Ordering::Acquire) || conn.frames.send(frame).is_err() {
            lock(&conn.pending).remove(&id);
            conn.alive.store(false, Ordering::Release);
            return Err(CallError::Lost(self.addr.clone()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(CallError::Lost(self.addr.clone())),
            Err(_) => {
                lock(&conn.pending).remove(&id);
                Err(CallError::Timeout(self.addr.clone()))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode_frame<T: Serialize>(id: u64, body: &T) -> bincode::Result<Vec<u8>> {
    let len = bincode::serialized_size(body)? as usize + 8;
    let mut buf = Vec::with_capacity(len + 4);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&id.to_le_bytes());
    bincode::serialize_into(&mut buf, body)?;
    Ok(buf)
}

/// One frame, refused above `max` bytes (checked before allocating).
async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R, max: usize) -> io::Result<(u64, Vec<u8>)> {
    let len = rd.read_u32_le().await? as usize;
    if !(8..=max).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len}"),
        ));
    }
    let id = rd.read_u64_le().await?;
    let mut body = vec![0u8; len - 8];
    rd.read_exact(&mut body).await?;
    Ok((id, body))
}

async fn write_frames(
    mut wr: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    alive: Arc<AtomicBool>,
    pending: Pending,
) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
            if buf.len() > (1 << 20) {
                break;
            }
        }
        if send(&mut wr, &buf).await.is_err() {
            break;
        }
    }
    alive.store(false, Ordering::Release);
    // Requests that may not have been sent will never be answered: fail them now.
    lock(&pending).clear();
}

async fn read_responses(rd: ReadHalf, pending: Pending, alive: Arc<AtomicBool>) {
    let mut rd = BufReader::new(rd);
    loop {
        let (id, body) = match read_frame(&mut rd, MAX_FRAME).await {
            Ok(f) => f,
            Err(_) => break,
        };
        let resp: RpcResponse = match crate::codec::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "rpc: undecodable response; dropping connection");
                break;
            }
        };
        if let Some(tx) = lock(&pending).remove(&id) {
            let _ = tx.send(resp);
        }
    }
    alive.store(false, Ordering::Release);
    // Dropping the senders fails every call still waiting on this connection.
    lock(&pending).clear();
}

/// What the server side does with a request.
pub trait RpcService: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: RpcRequest,
    ) -> Pin<Box<dyn Future<Output = RpcResponse> + Send>>;
}

/// Accept connections until the task is dropped; each request runs as its own task so a slow
/// forwarded proposal does not hold up Raft traffic on the same connection. Nothing is served
/// on a connection before it has authenticated (see the module doc).
pub async fn serve<S: RpcService>(listener: TcpListener, service: Arc<S>, creds: Arc<Credentials>) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "rpc: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            refused(|| tracing::warn!(%peer, "rpc: too many connections authenticating; closing"));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let creds = creds.clone();
        tokio::spawn(async move {
            let ours = &*creds.cluster_id;
            let auth = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                // With --controller-tls a caller without a certificate the CA vouches for
                // ends here, before it may send a byte of our protocol.
                let (rd, mut wr) = crate::rpc_tls::accept(stream, creds.tls.as_deref())
                    .await
                    .map_err(Refusal::Tls)?;
                let mut rd = BufReader::new(rd);
                let role = server_handshake(&mut rd, &mut wr, ours, &creds.secret).await?;
                Ok::<_, Refusal>((role, rd, wr))
            })
            .await;
            drop(permit);
            let (operator, mut rd, wr) = match auth {
                Ok(Ok((role, rd, wr))) => (role == Role::Operator, rd, wr),
                Ok(Err(Refusal::Tls(e))) => {
                    refused(
                        || tracing::warn!(%peer, "rpc: refusing a connection whose TLS handshake failed (check --ssl-ca-file and the certificates): {e}"),
                    );
                    return;
                }
                Ok(Err(Refusal::ForeignCluster(theirs))) => {
                    refused(
                        || tracing::warn!(%peer, theirs, ours, "rpc: refusing a controller of another cluster (check --controller-quorum)"),
                    );
                    return;
                }
                Ok(Err(Refusal::BadProof)) => {
                    refused(
                        || tracing::warn!(%peer, "rpc: refusing a connection that does not know the cluster secret (check --cluster-secret-file)"),
                    );
                    return;
                }
                Ok(Err(Refusal::Malformed)) => {
                    refused(
                        || tracing::warn!(%peer, "rpc: refusing a connection that does not speak the controller protocol (or an older version of it)"),
                    );
                    return;
                }
                Ok(Err(Refusal::Io)) => return,
                Err(_) => {
                    refused(
                        || tracing::warn!(%peer, "rpc: closing a connection that did not authenticate in time"),
                    );
                    return;
                }
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let alive = Arc::new(AtomicBool::new(true));
            tokio::spawn(write_frames(wr, rx, alive, Pending::default()));
            loop {
                let (id, body) = match read_frame(&mut rd, MAX_FRAME).await {
                    Ok(f) => f,
                    Err(_) => break,
                };
                let req: RpcRequest = match crate::codec::decode(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "rpc: undecodable request; closing connection");
                        break;
                    }
                };
                if operator && req.is_peer_only() {
                    refused(
                        || tracing::warn!(%peer, "rpc: a peer request from an operator tool; closing connection"),
                    );
                    break;
                }
                let service = service.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let resp = service.handle(req).await;
                    match encode_frame(id, &resp) {
                        Ok(frame) => {
                            let _ = tx.send(frame);
                        }
                        Err(e) => tracing::warn!(error = %e, "rpc: cannot encode response"),
                    }
                });
            }
        });
    }
}

/// Logs a refused connection on the 1st, 2nd, 4th, 8th... time: a foreign leader retries
/// every few milliseconds.
fn refused(log: impl FnOnce()) {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    if REFUSED
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1)
        .is_power_of_two()
    {
        log();
    }
}

/// Clients for every peer address, shared by Raft replication, forwarding and heartbeats.
#[derive(Clone)]
pub struct Peers {
    clients: Arc<Mutex<HashMap<String, Arc<RpcClient>>>>,
    creds: Arc<Credentials>,
}

impl Peers {
    pub fn new(creds: Arc<Credentials>) -> Self {
        Peers {
            clients: Arc::default(),
            creds,
        }
    }

    pub fn client(&self, addr: &str) -> Arc<RpcClient> {
        lock(&self.clients)
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(RpcClient::new(addr.to_string(), self.creds.clone())))
            .clone()
    }
}

/// openraft's view of the network.
#[derive(Clone)]
pub struct NetworkFactory {
    pub peers: Peers,
}

pub struct Network {
    target: NodeId,
    client: Arc<RpcClient>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            target,
            client: self.peers.client(&node.addr),
        }
    }
}

fn to_rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        // Unreachable makes openraft back off before retrying this peer.
        CallError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    let e = io::Error::new(io::ErrorKind::InvalidData, "unexpected response kind");
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .client
            .call(&RpcRequest::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcResponse::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .client
            .call(&RpcRequest::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcResponse::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .client
            .call(&RpcRequest::Vote(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcResponse::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Loopback/LAN peers: retry a dead peer soon so a restarted node catches up quickly.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Counts the requests it is asked to serve (also the TLS transport's tests' service).
    pub(crate) struct Counting(pub(crate) AtomicU64);

    impl RpcService for Counting {
        fn handle(
            self: Arc<Self>,
            _req: RpcRequest,
        ) -> Pin<Box<dyn Future<Output = RpcResponse> + Send>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { RpcResponse::WaitServed(true) })
        }
    }

    /// A `Forward` whose command list claims 2^61 entries, in 8 bytes of frame.
    fn lying_forward() -> Vec<u8> {
        let mut body = 3u32.to_le_bytes().to_vec(); // variant index of RpcRequest::Forward
        body.extend_from_slice(&(1u64 << 61).to_le_bytes());
        body.extend_from_slice(&[0; 8]);
        body
    }

    #[test]
    fn a_peer_request_claiming_more_than_its_bytes_is_an_error_not_an_allocation() {
        assert!(crate::codec::decode::<RpcRequest>(&lying_forward()).is_err());
        // A string of 2^40 bytes inside a response.
        let mut body = 7u32.to_le_bytes().to_vec(); // RpcResponse::Summary
        body.extend_from_slice(&1u64.to_le_bytes()); // applied_index
        body.extend_from_slice(&(1u64 << 40).to_le_bytes()); // brokers: Vec length
        assert!(crate::codec::decode::<RpcResponse>(&body).is_err());
    }

    #[test]
    fn an_authenticated_peer_sending_an_oversized_collection_is_dropped_unserved() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let creds = Arc::new(Credentials {
                cluster_id: "c1".into(),
                secret: ClusterSecret::generate(),
                tls: None,
            });
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let service = Arc::new(Counting(AtomicU64::new(0)));
            let server = tokio::spawn(serve(listener, service.clone(), creds.clone()));
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let role = Role::Peer {
                cluster_id: "c1".into(),
            };
            client_handshake(&mut s, &creds.secret, role)
                .await
                .expect("authenticated");
            // Served: a well-formed request on the authenticated connection.
            let frame = encode_frame(1, &RpcRequest::Summary).expect("encode");
            s.write_all(&frame).await.expect("send");
            let (id, _) =
                tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s, MAX_FRAME))
                    .await
                    .expect("answered in time")
                    .expect("answer");
            assert_eq!(id, 1);
            // The lying frame: refused at decode, the connection closed.
            let body = lying_forward();
            let mut frame = ((body.len() + 8) as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&2u64.to_le_bytes());
            frame.extend_from_slice(&body);
            s.write_all(&frame).await.expect("send");
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("closed in time")
                .unwrap_or(0);
            assert_eq!(n, 0, "the connection is closed");
            assert_eq!(
                service.0.load(Ordering::Relaxed),
                1,
                "only the good request was served"
            );
            server.abort();
        });
    }
}
