//! Our RPC over TCP: Raft traffic, forwarded proposals and broker heartbeats between controllers.
//!
//! One multiplexed connection per peer: each frame carries a request id, so many requests (a
//! replication stream, forwarded proposals from 64 submitters, heartbeats) share a connection
//! and answers may come back in any order. Frames are `len u32 | id u64 | bincode(body)`. The
//! writer side coalesces queued frames into one write, so a burst of requests costs one syscall.
//! A failed connection fails its pending calls; the next call dials again.
//!
//! The first frame on a connection is a `Hello` naming the caller's cluster id. A controller
//! refuses a peer of another cluster (as Kafka answers INCONSISTENT_CLUSTER_ID): a quorum string
//! pointing at the wrong node, or a port reused by another cluster, must not feed it foreign log
//! entries. Operator tools name no cluster and may only use the operator requests.

use crate::command::{Command, CommandOutcome};
use crate::image::BrokerId;
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
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Frames above this are refused (a snapshot chunk is far smaller).
const MAX_FRAME: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

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
}

impl RpcRequest {
    /// Requests only a controller of the same cluster may send (not operator tools).
    fn is_peer_only(&self) -> bool {
        !matches!(self, RpcRequest::Submit(_) | RpcRequest::Summary)
    }
}

/// The first frame of every connection (request id 0).
#[derive(Serialize, Deserialize)]
struct Hello {
    /// The caller's cluster id; None for operator tools.
    cluster_id: Option<String>,
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

/// One blocking request/response on a fresh connection: for operator tools outside the
/// controller's runtime (the `chronik-server cluster` commands).
pub fn blocking_call(
    addr: &str,
    req: &RpcRequest,
    timeout: Duration,
) -> Result<RpcResponse, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(
        &sock,
        CONNECT_TIMEOUT.max(timeout.min(Duration::from_secs(5))),
    )
    .map_err(|e| format!("cannot reach the controller at {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut frame = encode_frame(0, &Hello { cluster_id: None }).map_err(|e| e.to_string())?;
    frame.extend(encode_frame(1, req).map_err(|e| e.to_string())?);
    s.write_all(&frame).map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .map_err(|e| format!("{addr}: {e}"))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(8..=MAX_FRAME).contains(&len) {
        return Err(format!("{addr}: bad frame length {len}"));
    }
    let mut body = vec![0u8; len - 8];
    s.read_exact(&mut body)
        .map_err(|e| format!("{addr}: {e}"))?;
    bincode::deserialize(&body).map_err(|e| format!("{addr}: undecodable answer: {e}"))
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

/// A lazily (re)connecting client for one peer address.
pub struct RpcClient {
    addr: String,
    /// Announced in the `Hello` of every connection.
    cluster_id: Arc<str>,
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
    pub fn new(addr: String, cluster_id: Arc<str>) -> Self {
        RpcClient {
            addr,
            cluster_id,
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
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let hello = Hello {
            cluster_id: Some(self.cluster_id.to_string()),
        };
        let frame = encode_frame(0, &hello).map_err(|e| CallError::Encode(e.to_string()))?;
        // Queued before any request, so it is the connection's first frame.
        let _ = tx.send(frame);
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
        let conn = self.connection().await?;
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

async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R) -> io::Result<(u64, Vec<u8>)> {
    let len = rd.read_u32_le().await? as usize;
    if !(8..=MAX_FRAME).contains(&len) {
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
    mut wr: tokio::net::tcp::OwnedWriteHalf,
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
        if wr.write_all(&buf).await.is_err() {
            break;
        }
    }
    alive.store(false, Ordering::Release);
    // Requests that may not have been sent will never be answered: fail them now.
    lock(&pending).clear();
}

async fn read_responses(
    rd: tokio::net::tcp::OwnedReadHalf,
    pending: Pending,
    alive: Arc<AtomicBool>,
) {
    let mut rd = BufReader::new(rd);
    loop {
        let (id, body) = match read_frame(&mut rd).await {
            Ok(f) => f,
            Err(_) => break,
        };
        let resp: RpcResponse = match bincode::deserialize(&body) {
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
/// forwarded proposal does not hold up Raft traffic on the same connection.
pub async fn serve<S: RpcService>(listener: TcpListener, service: Arc<S>, cluster_id: Arc<str>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "rpc: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let ours = cluster_id.clone();
        tokio::spawn(async move {
            let (rd, wr) = stream.into_split();
            let mut rd = BufReader::new(rd);
            let hello = read_frame(&mut rd)
                .await
                .ok()
                .and_then(|(_, body)| bincode::deserialize::<Hello>(&body).ok());
            let Some(hello) = hello else { return };
            let operator = match hello.cluster_id {
                None => true,
                Some(theirs) if *theirs == *ours => false,
                Some(theirs) => {
                    refused(
                        || tracing::warn!(%peer, theirs, ours = &*ours, "rpc: refusing a controller of another cluster (check --controller-quorum)"),
                    );
                    return;
                }
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let alive = Arc::new(AtomicBool::new(true));
            tokio::spawn(write_frames(wr, rx, alive, Pending::default()));
            loop {
                let (id, body) = match read_frame(&mut rd).await {
                    Ok(f) => f,
                    Err(_) => break,
                };
                let req: RpcRequest = match bincode::deserialize(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "rpc: undecodable request; closing connection");
                        break;
                    }
                };
                if operator && req.is_peer_only() {
                    refused(
                        || tracing::warn!(%peer, "rpc: a peer request without a cluster id; closing connection"),
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
    cluster_id: Arc<str>,
}

impl Peers {
    pub fn new(cluster_id: Arc<str>) -> Self {
        Peers {
            clients: Arc::default(),
            cluster_id,
        }
    }

    pub fn client(&self, addr: &str) -> Arc<RpcClient> {
        lock(&self.clients)
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(RpcClient::new(addr.to_string(), self.cluster_id.clone())))
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
