//! ReplicaFetcher: a follower shard's stream of Kafka Fetch requests (with its replica id) to one
//! leader broker, for the partitions this shard owns and follows there.
//!
//! Before fetching a partition under a new leader epoch the follower asks the leader for the end
//! offset of its own latest epoch (OffsetForLeaderEpoch) and truncates what diverges.
//!
//! Each connection first proves to the leader that it is this broker (`net::broker_auth`): a
//! leader serves follower fetches only on such connections.
//!
//! Two lanes per leader, each its own connection and fetch session: the active lane fetches
//! the partitions that got records lately, round after round; a partition with none for
//! `QUIET_AFTER` moves to the quiet lane (which takes it just before its next fetch, so one
//! lane's fetch in flight always watches it), whose long polls (`QUIET_MAX_WAIT_MS`) the
//! leader answers as soon as any of its partitions gets records, and which keeps such a
//! partition (its next fetch reports the new log end at once) until the active lane takes it
//! back before its own next fetch. A leader reads every partition of a session at each fetch (KIP-227 lists only the
//! changed ones, but looks at all), and the follower plans each fetch over all of them: with
//! hundreds of idle partitions beside a few busy ones, that per-round cost slowed the busy
//! ones by a quarter. Quiet partitions are still fetched every `QUIET_MAX_WAIT_MS`, so their
//! followers stay in the ISR.

use crate::config::sasl::InterBrokerLogin;
use crate::kafka::client;
use crate::kafka::errors;
use crate::net::broker_auth::ClientAuth;
use crate::net::frame::{read_frame, ByteSource, IdleLink};
use crate::net::tls::{self, CipherBuf, TlsShared, TlsSink, TlsSource};
use crate::partition::manager::{FollowerSync, ReplicaManager};
use crate::partition::Partition;
use crate::sasl::client::ScramClient;
use crate::sasl::SaslMechanism;
use crate::shard::event::LocalEvent;
use crate::shard::{Shard, TopicPartition};
use bytes::{Bytes, BytesMut};
use chronik_raft::image::BrokerId;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId as KBrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
const MAX_WAIT_MS: i32 = 250;
/// A partition without records for this long leaves the active lane.
const QUIET_AFTER: Duration = Duration::from_secs(1);
/// The quiet lane's long poll: well under any `replica.lag.time.max.ms` worth setting.
const QUIET_MAX_WAIT_MS: i32 = 500;
/// The active lane's long poll while the quiet lane holds partitions: bounds how long a
/// partition handed back waits for its first active fetch (an acks=all produce waits for it).
const HANDBACK_MAX_WAIT_MS: i32 = 20;
const PARTITION_MAX_BYTES: i32 = 8 << 20;
const MAX_RESPONSE: usize = 256 << 20;
/// After a local write fails (disk full, I/O error) the fetcher waits this long before fetching
/// again, as Kafka's replica.fetch.backoff.ms: retrying at once would spin on the failing disk.
const STORAGE_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per fetcher this often while its writes keep failing.
const STORAGE_WARN_EVERY: Duration = Duration::from_secs(30);
/// Connecting and proving who we are to the leader (two small round trips) takes at most this.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning per fetcher this often while the leader refuses our proof.
const AUTH_WARN_EVERY: Duration = Duration::from_secs(30);
/// After a round in which the leader answered every partition with an error (most often one it
/// does not lead yet: a new topic reaches each broker's metadata at its own moment), the
/// fetcher asks again after this, doubling up to `IDLE_BACKOFF_MAX` while it lasts. A flat
/// 100 ms held a new topic's first acks=all produces that long (issue 24).
const IDLE_BACKOFF_MIN: Duration = Duration::from_millis(5);
const IDLE_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// The wait after an idle round that followed a wait of `last`.
fn next_idle_backoff(last: Duration) -> Duration {
    (last * 2).clamp(IDLE_BACKOFF_MIN, IDLE_BACKOFF_MAX)
}

#[derive(Debug, Clone, Copy)]
struct FollowState {
    leader_epoch: i32,
    /// Checked against the leader's epoch history since the last leader change.
    truncated: bool,
    /// When a fetch last brought records (or the partition was followed from this epoch).
    last_records: Instant,
}

impl FollowState {
    fn new(leader_epoch: i32, now: Instant) -> FollowState {
        FollowState {
            leader_epoch,
            truncated: false,
            last_records: now,
        }
    }
}

/// Which of a fetcher's two fetch streams follows a partition (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Active,
    Quiet,
}

/// One lane's partitions, and the event that wakes its loop when they change.
#[derive(Default)]
struct LaneState {
    partitions: RefCell<BTreeMap<TopicPartition, FollowState>>,
    changed: LocalEvent,
}

/// What the follower asks of one partition: its fetch offset (log end) and leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    fetch_offset: i64,
    leader_epoch: i32,
    log_start_offset: i64,
}

/// The follower's half of its fetch session with one leader (KIP-227): the first fetch is full
/// and opens a session; later ones name only partitions whose fetch offset or leader epoch
/// changed (or that are new) and forget the ones no longer followed. Any top-level error, a
/// response for another session, or a reconnect starts over with a full fetch.
#[derive(Debug, Default)]
struct FollowerSession {
    /// (session id, epoch of the next incremental fetch); None: the next fetch is full.
    open: Option<(i32, i32)>,
    /// What the leader's session holds of each partition.
    sent: BTreeMap<TopicPartition, Want>,
}

/// One fetch to send: the session fields, the partitions to name and those to forget.
#[derive(Debug, PartialEq, Eq)]
struct SessionFetch {
    session_id: i32,
    epoch: i32,
    send: Vec<(TopicPartition, Want)>,
    forget: Vec<TopicPartition>,
}

impl FollowerSession {
    fn plan(&self, wanted: &BTreeMap<TopicPartition, Want>) -> SessionFetch {
        let Some((id, epoch)) = self.open else {
            // Full fetch, asking for a session (epoch 0).
            return SessionFetch {
                session_id: 0,
                epoch: 0,
                send: wanted.iter().map(|(tp, w)| (tp.clone(), *w)).collect(),
                forget: Vec::new(),
            };
        };
        // As Kafka's FetchSessionHandler: a partition is named again when anything it says
        // changed. The log start matters too: the leader answers DeleteRecords only once every
        // in-sync follower has reported its own log start past the offset deleted.
        let changed = |tp: &TopicPartition, w: &Want| {
            self.sent.get(tp).is_none_or(|s| {
                (s.fetch_offset, s.leader_epoch, s.log_start_offset)
                    != (w.fetch_offset, w.leader_epoch, w.log_start_offset)
            })
        };
        SessionFetch {
            session_id: id,
            epoch,
            send: wanted
                .iter()
                .filter(|(tp, w)| changed(tp, w))
                .map(|(tp, w)| (tp.clone(), *w))
                .collect(),
            forget: self
                .sent
                .keys()
                .filter(|tp| !wanted.contains_key(*tp))
                .cloned()
                .collect(),
        }
    }

    /// The leader answered `plan` (made from `wanted`) with this top-level error and session id.
    fn answered(
        &mut self,
        plan: &SessionFetch,
        wanted: BTreeMap<TopicPartition, Want>,
        error: i16,
        session_id: i32,
    ) {
        let next = match self.open {
            _ if error != errors::NONE || session_id == 0 => None,
            None => Some((session_id, 1)),
            Some((id, _)) if id == session_id => Some((id, next_epoch(plan.epoch))),
            Some(_) => None,
        };
        self.open = next;
        self.sent = if next.is_some() {
            wanted
        } else {
            BTreeMap::new()
        };
    }

    fn reset(&mut self) {
        *self = FollowerSession::default();
    }
}

/// Kafka's session epoch sequence: 1, 2, ..., i32::MAX, 1, ...
fn next_epoch(epoch: i32) -> i32 {
    if epoch < i32::MAX {
        epoch + 1
    } else {
        1
    }
}

struct Fetcher {
    leader: BrokerId,
    active: LaneState,
    quiet: LaneState,
    /// Active partitions due to go quiet. The quiet lane takes them just before it sends its
    /// next fetch (`adopt_quiet`), and the active lane fetches them until then: moved at
    /// once, a partition was watched by neither lane while the quiet lane's long poll in
    /// flight (sent without it) lasted, and a record arriving then waited up to
    /// `QUIET_MAX_WAIT_MS` (the 1,000-partition run's p99 followed that constant, issue 24).
    going_quiet: RefCell<BTreeSet<TopicPartition>>,
    /// Quiet partitions that got records. The active lane takes them just before it sends its
    /// next fetch (`adopt_active`), and the quiet lane fetches them until then: handed over at
    /// once, a partition's new log end was reported (and the leader's high watermark moved,
    /// answering acks=all produces) only by the active lane's next fetch, after its poll in
    /// flight (up to `HANDBACK_MAX_WAIT_MS`): a record to an idle partition waited ~10-20 ms
    /// more than one to a busy partition (issue 24).
    going_active: RefCell<BTreeSet<TopicPartition>>,
    stopped: Cell<bool>,
    /// When the last failed-write warning was logged, and failures since then.
    storage_warned: Cell<Option<Instant>>,
    storage_failures: Cell<u64>,
    /// When a refused authentication was last logged.
    auth_warned: Cell<Option<Instant>>,
}

/// What a round of requests to the leader came to.
enum Round {
    /// Something was fetched or checked: go again at once.
    Progress,
    /// Nothing to do yet.
    Idle,
    /// A local write failed: back off longer.
    StorageFailed,
}

impl Fetcher {
    fn lane(&self, lane: Lane) -> &LaneState {
        match lane {
            Lane::Active => &self.active,
            Lane::Quiet => &self.quiet,
        }
    }

    fn is_empty(&self) -> bool {
        self.active.partitions.borrow().is_empty() && self.quiet.partitions.borrow().is_empty()
    }

    fn stop(&self) {
        self.stopped.set(true);
        self.active.changed.notify();
        self.quiet.changed.notify();
    }

    /// The quiet lane, before each fetch: takes the partitions due to go quiet that still are
    /// (followed, checked against the leader's epochs, and without records for `QUIET_AFTER`).
    fn adopt_quiet(&self, now: Instant) {
        let due = std::mem::take(&mut *self.going_quiet.borrow_mut());
        if due.is_empty() {
            return;
        }
        let mut active = self.active.partitions.borrow_mut();
        let mut quiet = self.quiet.partitions.borrow_mut();
        for tp in due {
            let still = active.get(&tp).is_some_and(|st| {
                st.truncated && now.saturating_duration_since(st.last_records) >= QUIET_AFTER
            });
            if still {
                if let Some(st) = active.remove(&tp) {
                    quiet.insert(tp, st);
                }
            }
        }
    }

    /// The active lane, before each fetch: takes the quiet partitions that got records and
    /// are still followed in the quiet lane (a new epoch may have moved one already).
    fn adopt_active(&self) {
        let due = std::mem::take(&mut *self.going_active.borrow_mut());
        if due.is_empty() {
            return;
        }
        let mut quiet = self.quiet.partitions.borrow_mut();
        let mut active = self.active.partitions.borrow_mut();
        for tp in due {
            if let Some(st) = quiet.remove(&tp) {
                active.entry(tp).or_insert(st);
            }
        }
    }

    /// Logs a failed replica write, rate-limited: a full disk fails every round.
    fn note_storage_failure(&self, tp: &TopicPartition, e: &chronik_storage::StorageError) {
        let n = self.storage_failures.get() + 1;
        let due = self
            .storage_warned
            .get()
            .is_none_or(|t| t.elapsed() >= STORAGE_WARN_EVERY);
        if due {
            tracing::warn!(
                topic = %tp.topic,
                partition = tp.partition,
                failures = n,
                "replica append: {e}; fetching again every {}s",
                STORAGE_BACKOFF.as_secs()
            );
            self.storage_warned.set(Some(Instant::now()));
            self.storage_failures.set(0);
        } else {
            self.storage_failures.set(n);
        }
    }

    /// A round wrote again after failures: say so once.
    fn note_storage_recovered(&self) {
        if self.storage_warned.take().is_some() {
            tracing::info!(leader = self.leader, "replica appends succeed again");
            self.storage_failures.set(0);
        }
    }
}

/// The fetchers of one shard, one per leader broker.
pub struct Fetchers {
    /// The cluster secret: followers prove with it who they are (`net::broker_auth`).
    secret: chronik_raft::secret::ClusterSecret,
    /// Set when the inter-broker listener is SSL: fetchers connect with TLS, with the config
    /// here when they (re)connect (replaced when certificates are reloaded).
    tls: Rc<RefCell<Option<Arc<rustls::ClientConfig>>>>,
    by_leader: RefCell<HashMap<BrokerId, Rc<Fetcher>>>,
}

impl FollowerSync for Fetchers {
    fn follow(
        &self,
        replicas: &Rc<ReplicaManager>,
        tp: &TopicPartition,
        leader: BrokerId,
        epoch: i32,
    ) {
        Fetchers::follow(self, replicas, tp, leader, epoch);
    }

    fn unfollow(&self, tp: &TopicPartition) {
        Fetchers::unfollow(self, tp);
    }
}

impl Fetchers {
    pub fn new(secret: chronik_raft::secret::ClusterSecret) -> Rc<Fetchers> {
        Rc::new(Fetchers {
            secret,
            tls: Rc::new(RefCell::new(None)),
            by_leader: RefCell::new(HashMap::new()),
        })
    }

    /// Makes fetchers connect with TLS from their next connection on (an SSL inter-broker
    /// listener, or its certificates reloaded).
    pub fn set_tls(&self, config: Arc<rustls::ClientConfig>) {
        *self.tls.borrow_mut() = Some(config);
    }

    /// One request to broker `to` on a fresh connection that proves it is this broker
    /// (`net::broker_auth`), over TLS when the inter-broker listener is SSL: the transaction
    /// coordinator's WriteTxnMarkers. Bounded by `timeout` as a whole.
    pub async fn call_broker<Req: Encodable + HeaderVersion, Resp: Decodable>(
        &self,
        shard: &Shard,
        to: BrokerId,
        key: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> std::io::Result<Resp> {
        let addr = leader_addr(shard, to).ok_or(std::io::ErrorKind::NotConnected)?;
        let config = self.tls.borrow().clone();
        let call = async {
            let mut c = LeaderConn::connect(&addr, config).await?;
            c.authenticate(&self.secret, shard.config.node_id, to)
                .await?;
            c.call(key, version, req).await
        };
        let timed_out = async {
            glommio::timer::sleep(timeout).await;
            Err(std::io::ErrorKind::TimedOut.into())
        };
        futures_lite::future::or(call, timed_out).await
    }

    /// Makes `tp` follow `leader` at `leader_epoch` (no-op when already so).
    pub fn follow(
        &self,
        replicas: &Rc<ReplicaManager>,
        tp: &TopicPartition,
        leader: BrokerId,
        epoch: i32,
    ) {
        self.unfollow_except(tp, Some(leader));
        let f = self
            .by_leader
            .borrow_mut()
            .entry(leader)
            .or_insert_with(|| {
                let f = Rc::new(Fetcher {
                    leader,
                    active: LaneState::default(),
                    quiet: LaneState::default(),
                    going_quiet: RefCell::new(BTreeSet::new()),
                    going_active: RefCell::new(BTreeSet::new()),
                    stopped: Cell::new(false),
                    storage_warned: Cell::new(None),
                    storage_failures: Cell::new(0),
                    auth_warned: Cell::new(None),
                });
                for lane in [Lane::Active, Lane::Quiet] {
                    let (secret, tls) = (self.secret.clone(), self.tls.clone());
                    glommio::spawn_local(run(replicas.clone(), secret, tls, f.clone(), lane))
                        .detach();
                }
                f
            })
            .clone();
        let now = Instant::now();
        {
            // A quiet partition stays quiet under the same epoch; a new epoch starts over in
            // the active lane (its log is checked against the leader's epochs there).
            let mut quiet = f.quiet.partitions.borrow_mut();
            match quiet.get(tp) {
                Some(st) if st.leader_epoch == epoch => return,
                Some(_) => {
                    quiet.remove(tp);
                }
                None => {}
            }
        }
        let mut parts = f.active.partitions.borrow_mut();
        let st = parts
            .entry(tp.clone())
            .or_insert(FollowState::new(epoch, now));
        if st.leader_epoch != epoch {
            *st = FollowState::new(epoch, now);
        }
        drop(parts);
        f.active.changed.notify();
    }

    pub fn unfollow(&self, tp: &TopicPartition) {
        self.unfollow_except(tp, None);
    }

    fn unfollow_except(&self, tp: &TopicPartition, keep: Option<BrokerId>) {
        let mut map = self.by_leader.borrow_mut();
        for (leader, f) in map.iter() {
            if Some(*leader) != keep {
                f.active.partitions.borrow_mut().remove(tp);
                f.quiet.partitions.borrow_mut().remove(tp);
            }
        }
        map.retain(|_, f| {
            let keep_it = !f.is_empty();
            if !keep_it {
                f.stop();
            }
            keep_it
        });
    }

    pub fn stop_all(&self) {
        for f in self.by_leader.borrow().values() {
            f.stop();
        }
        self.by_leader.borrow_mut().clear();
    }
}

/// A leader connection's bytes: the socket itself, or TLS over it (an SSL inter-broker
/// listener), driven on this shard like a client connection's (`net::tls`).
enum LeaderIo {
    Plain(TcpStream),
    Tls { source: TlsSource, sink: TlsSink },
}

impl LeaderIo {
    async fn write_all(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            LeaderIo::Plain(s) => s.write_all(frame).await,
            LeaderIo::Tls { sink, .. } => {
                sink.send_slice(frame).await?;
                sink.flush().await
            }
        }
    }
}

impl ByteSource for LeaderIo {
    async fn read_more(
        &mut self,
        buf: &mut BytesMut,
        frame_len: usize,
        idle: IdleLink<'_>,
    ) -> std::io::Result<usize> {
        match self {
            LeaderIo::Plain(s) => s.read_more(buf, frame_len, idle).await,
            LeaderIo::Tls { source, .. } => source.read_more(buf, frame_len, idle).await,
        }
    }
}

/// A blocking-style request/response client over one glommio connection.
struct LeaderConn {
    stream: LeaderIo,
    next_corr: i32,
    /// Responses are cut from this buffer like request frames on the server side
    /// (`net::conn::read_frame`): one `recv` usually brings a whole response, nothing is zeroed,
    /// and the record batches stay views of it on their way into the log.
    buf: BytesMut,
}

impl LeaderConn {
    async fn connect(
        addr: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<LeaderConn> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let stream = match tls {
            None => LeaderIo::Plain(stream),
            Some(config) => {
                // The leader's certificate must name the host it advertises.
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr, |(h, _)| h)
                    .trim_matches(|c| c == '[' || c == ']');
                let state = TlsShared::client(config, host, stream.as_raw_fd())?;
                let mut cipher = CipherBuf::default();
                tls::handshake(&mut stream, &state, &mut cipher, None).await?;
                // glommio streams cannot be split; the writer gets a dup'd descriptor.
                let wfd = unsafe { libc::dup(stream.as_raw_fd()) };
                if wfd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: wfd is a fresh descriptor we own, referring to a connected socket.
                let writer = unsafe { TcpStream::from_raw_fd(wfd) };
                LeaderIo::Tls {
                    source: TlsSource::new(stream, state.clone(), cipher),
                    sink: TlsSink {
                        stream: writer,
                        tls: state,
                    },
                }
            }
        };
        Ok(LeaderConn {
            stream,
            next_corr: 1,
            buf: BytesMut::new(),
        })
    }

    /// Proves to the leader that this connection is broker `me` (and checks the leader's own
    /// proof). A refusal is a `PermissionDenied` error.
    async fn authenticate(
        &mut self,
        secret: &chronik_raft::secret::ClusterSecret,
        me: BrokerId,
        leader: BrokerId,
    ) -> std::io::Result<()> {
        let denied = |e: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e);
        let mut auth = ClientAuth::new(me, leader);
        let corr = self.next_corr;
        let answer = self.raw_call(&auth.hello(corr)).await?;
        let proof = auth.proof(secret, corr, &answer).map_err(denied)?;
        let answer = self.raw_call(&proof).await?;
        auth.check_accepted(secret, corr, &answer).map_err(denied)
    }

    /// Logs in on a SASL inter-broker listener as `--sasl-inter-broker-user` (SaslHandshake v1,
    /// then SaslAuthenticate v2). A refusal is a `PermissionDenied` error.
    async fn sasl_login(&mut self, login: &InterBrokerLogin) -> std::io::Result<()> {
        use kafka_protocol::messages::{
            SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
            SaslHandshakeResponse,
        };
        let denied = |e: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e);
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = kafka_protocol::protocol::StrBytes::from_static_str(login.mechanism.name());
        let r: SaslHandshakeResponse = self.call(ApiKey::SaslHandshake, 1, &hs).await?;
        if r.error_code != 0 {
            return Err(denied(format!(
                "SaslHandshake {}: error {}",
                login.mechanism.name(),
                r.error_code
            )));
        }
        let step = |token: Vec<u8>| {
            let mut req = SaslAuthenticateRequest::default();
            req.auth_bytes = bytes::Bytes::from(token);
            req
        };
        let check = |r: SaslAuthenticateResponse| {
            if r.error_code == 0 {
                Ok(r.auth_bytes)
            } else {
                Err(denied(format!(
                    "SASL login as {}: error {} ({})",
                    login.user,
                    r.error_code,
                    r.error_message.as_deref().unwrap_or("")
                )))
            }
        };
        match login.mechanism {
            SaslMechanism::Plain => {
                let req = step(crate::sasl::client::plain_message(
                    &login.user,
                    &login.password,
                ));
                check(self.call(ApiKey::SaslAuthenticate, 2, &req).await?)?;
            }
            SaslMechanism::Scram(m) => {
                let mut c = ScramClient::new(m.into(), &login.user, &login.password);
                let first = step(c.first_message());
                let server_first = check(self.call(ApiKey::SaslAuthenticate, 2, &first).await?)?;
                let last = step(c.final_message(&server_first).map_err(denied)?);
                let server_final = check(self.call(ApiKey::SaslAuthenticate, 2, &last).await?)?;
                c.check_server_final(&server_final).map_err(denied)?;
            }
        }
        Ok(())
    }

    /// Writes a whole request frame and reads one small response (after its length).
    async fn raw_call(&mut self, frame: &[u8]) -> std::io::Result<BytesMut> {
        self.stream.write_all(frame).await?;
        // A leader that refuses the exchange answers, then closes.
        read_frame(&mut self.stream, &mut self.buf, 4, 64, None)
            .await?
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the leader closed the connection during broker authentication",
                )
            })
    }

    async fn call<Req: Encodable + HeaderVersion, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        let corr = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1);
        let frame = client::encode_request(key, version, corr, "chronik-replica-fetcher", req)
            .map_err(bad)?;
        self.stream.write_all(&frame).await?;
        let body = read_frame(&mut self.stream, &mut self.buf, 4, MAX_RESPONSE, None)
            .await?
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        client::decode_response(key, version, corr, body.freeze()).map_err(bad)
    }
}

fn bad(msg: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn leader_addr(shard: &Shard, leader: BrokerId) -> Option<String> {
    shard.with_image(|img| {
        img.broker(leader)
            .filter(|b| !b.fenced)
            .map(|b| format!("{}:{}", b.host, b.port))
    })
}

async fn run(
    replicas: Rc<ReplicaManager>,
    secret: chronik_raft::secret::ClusterSecret,
    tls: Rc<RefCell<Option<Arc<rustls::ClientConfig>>>>,
    f: Rc<Fetcher>,
    lane: Lane,
) {
    let shard = replicas.shard.clone();
    let mut conn: Option<LeaderConn> = None;
    // Lives as long as the connection: the leader keeps sessions per connection.
    let mut session = FollowerSession::default();
    let backoff = Duration::from_millis(100);
    let mut idle_backoff = IDLE_BACKOFF_MIN;
    while !f.stopped.get() && !shard.shutting_down.get() {
        match lane {
            Lane::Quiet => f.adopt_quiet(Instant::now()),
            Lane::Active => f.adopt_active(),
        }
        let parts: Vec<(TopicPartition, FollowState)> = f
            .lane(lane)
            .partitions
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if parts.is_empty() {
            futures_lite::future::or(
                f.lane(lane).changed.listen(),
                glommio::timer::sleep(Duration::from_secs(1)),
            )
            .await;
            continue;
        }
        if conn.is_none() {
            let Some(addr) = leader_addr(&shard, f.leader) else {
                glommio::timer::sleep(backoff).await;
                continue;
            };
            let connected = async {
                let config = tls.borrow().clone();
                let mut c = LeaderConn::connect(&addr, config).await?;
                if let Some(login) = &shard.config.sasl.inter_broker {
                    c.sasl_login(login).await?;
                }
                c.authenticate(&secret, shard.config.node_id, f.leader)
                    .await?;
                Ok::<_, std::io::Error>(c)
            };
            // A leader that accepts but never answers (frozen) must not hold the fetcher.
            let timed_out = async {
                glommio::timer::sleep(AUTH_TIMEOUT).await;
                Err(std::io::ErrorKind::TimedOut.into())
            };
            match futures_lite::future::or(connected, timed_out).await {
                Ok(c) => {
                    conn = Some(c);
                    session.reset();
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    // A configuration problem (different cluster secrets): say so, not often.
                    let due = f
                        .auth_warned
                        .get()
                        .is_none_or(|t| t.elapsed() >= AUTH_WARN_EVERY);
                    if due {
                        tracing::warn!(
                            leader = f.leader,
                            "replica fetcher cannot authenticate to the leader: {e}"
                        );
                        f.auth_warned.set(Some(Instant::now()));
                    }
                    glommio::timer::sleep(backoff * 2).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(leader = f.leader, "replica fetcher connect: {e}");
                    glommio::timer::sleep(backoff * 2).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let result = if parts.iter().any(|(_, s)| !s.truncated) {
            truncate_round(&replicas, &f, lane, c, &parts).await
        } else {
            fetch_round(&replicas, &f, lane, c, &mut session, &parts).await
        };
        match result {
            Ok(Round::Progress) => idle_backoff = IDLE_BACKOFF_MIN,
            Ok(Round::Idle) => {
                glommio::timer::sleep(idle_backoff).await;
                idle_backoff = next_idle_backoff(idle_backoff);
            }
            Ok(Round::StorageFailed) => glommio::timer::sleep(STORAGE_BACKOFF).await,
            Err(e) => {
                tracing::debug!(leader = f.leader, "replica fetcher: {e}");
                conn = None;
                glommio::timer::sleep(backoff).await;
            }
        }
    }
}

/// OffsetForLeaderEpoch for every partition not yet checked; truncates divergent tails.
async fn truncate_round(
    replicas: &ReplicaManager,
    f: &Fetcher,
    lane: Lane,
    c: &mut LeaderConn,
    parts: &[(TopicPartition, FollowState)],
) -> std::io::Result<Round> {
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = KBrokerId(replicas.shard.config.node_id);
    let mut by_topic: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked = Vec::new();
    for (tp, st) in parts.iter().filter(|(_, s)| !s.truncated) {
        let Some(p) = replicas.get(tp) else {
            continue;
        };
        let Some(latest) = p.log.latest_epoch() else {
            // Empty log (or no epochs yet): nothing can diverge.
            mark_truncated(f, lane, tp, st.leader_epoch);
            continue;
        };
        let mut op = OffsetForLeaderPartition::default();
        op.partition = tp.partition;
        op.current_leader_epoch = st.leader_epoch;
        op.leader_epoch = latest;
        by_topic.entry(&tp.topic).or_default().push(op);
        asked.push((tp.clone(), *st));
    }
    if asked.is_empty() {
        return Ok(Round::Progress);
    }
    req.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut ot = OffsetForLeaderTopic::default();
            ot.topic = TopicName(StrBytes::from_string(t.to_string()));
            ot.partitions = ps;
            ot
        })
        .collect();
    let resp: OffsetForLeaderEpochResponse = c
        .call(ApiKey::OffsetForLeaderEpoch, EPOCH_VERSION, &req)
        .await?;
    let mut progress = false;
    for t in resp.topics {
        for r in t.partitions {
            let tp = TopicPartition::new(t.topic.0.as_str(), r.partition);
            let Some((_, st)) = asked.iter().find(|(x, _)| *x == tp) else {
                continue;
            };
            if r.error_code != errors::NONE {
                continue;
            }
            let Some(p) = replicas.get(&tp) else {
                continue;
            };
            let leo = p.log.log_end_offset();
            if r.end_offset >= 0 && r.end_offset < leo {
                tracing::info!(topic = %tp.topic, partition = tp.partition, from = leo, to = r.end_offset, "truncating divergent log tail");
                if let Err(e) = p.log.truncate_to(r.end_offset).await {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, "truncate: {e}");
                    continue;
                }
                p.truncate_state(r.end_offset).await;
            }
            mark_truncated(f, lane, &tp, st.leader_epoch);
            progress = true;
        }
    }
    Ok(if progress {
        Round::Progress
    } else {
        Round::Idle
    })
}

fn mark_truncated(f: &Fetcher, lane: Lane, tp: &TopicPartition, epoch: i32) {
    if let Some(s) = f.lane(lane).partitions.borrow_mut().get_mut(tp) {
        if s.leader_epoch == epoch {
            s.truncated = true;
        }
    }
}

/// One Fetch of the session (full the first time, then incremental); appends what arrives.
async fn fetch_round(
    replicas: &ReplicaManager,
    f: &Fetcher,
    lane: Lane,
    c: &mut LeaderConn,
    session: &mut FollowerSession,
    parts: &[(TopicPartition, FollowState)],
) -> std::io::Result<Round> {
    let mut wanted = BTreeMap::new();
    for (tp, st) in parts {
        let Some(p) = replicas.get(tp) else {
            continue;
        };
        let w = Want {
            fetch_offset: p.log.log_end_offset(),
            leader_epoch: st.leader_epoch,
            log_start_offset: p.log.log_start_offset(),
        };
        wanted.insert(tp.clone(), w);
    }
    if wanted.is_empty() {
        return Ok(Round::Idle);
    }
    let plan = session.plan(&wanted);
    let mut req = FetchRequest::default();
    req.replica_id = KBrokerId(replicas.shard.config.node_id);
    req.max_wait_ms = match lane {
        // A partition the quiet lane hands back is fetched (and its new log end reported, which
        // moves the leader's high watermark) only after the active lane's poll in flight ends.
        // The quiet lane may hold partitions during this poll if it does or is due to.
        Lane::Active
            if !f.quiet.partitions.borrow().is_empty() || !f.going_quiet.borrow().is_empty() =>
        {
            HANDBACK_MAX_WAIT_MS
        }
        Lane::Active => MAX_WAIT_MS,
        Lane::Quiet => QUIET_MAX_WAIT_MS,
    };
    req.min_bytes = 1;
    req.max_bytes = 64 << 20;
    req.session_id = plan.session_id;
    req.session_epoch = plan.epoch;
    let mut by_topic: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (tp, w) in &plan.send {
        let mut fp = FetchPartition::default();
        fp.partition = tp.partition;
        fp.current_leader_epoch = w.leader_epoch;
        fp.fetch_offset = w.fetch_offset;
        fp.last_fetched_epoch = -1;
        fp.log_start_offset = w.log_start_offset;
        fp.partition_max_bytes = PARTITION_MAX_BYTES;
        by_topic.entry(&tp.topic).or_default().push(fp);
    }
    req.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut ft = FetchTopic::default();
            ft.topic = TopicName(StrBytes::from_string(t.to_string()));
            ft.partitions = ps;
            ft
        })
        .collect();
    let mut forget: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in &plan.forget {
        forget.entry(&tp.topic).or_default().push(tp.partition);
    }
    req.forgotten_topics_data = forget
        .into_iter()
        .map(|(t, ps)| {
            let mut ft = ForgottenTopic::default();
            ft.topic = TopicName(StrBytes::from_string(t.to_string()));
            ft.partitions = ps;
            ft
        })
        .collect();
    let resp: FetchResponse = match c.call(ApiKey::Fetch, FETCH_VERSION, &req).await {
        Ok(r) => r,
        Err(e) => {
            session.reset();
            return Err(e);
        }
    };
    let incremental = plan.session_id != 0;
    session.answered(&plan, wanted, resp.error_code, resp.session_id);
    if resp.error_code != errors::NONE {
        // FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH: start over with a full fetch.
        tracing::debug!(
            leader = f.leader,
            error = resp.error_code,
            "fetch session refused; fetching in full"
        );
        return Ok(Round::Progress);
    }
    // An incremental response that lists nothing: nothing new after the long poll.
    let listed_none = incremental && resp.responses.iter().all(|t| t.partitions.is_empty());
    let mut any_ok = false;
    let mut moved_away = false;
    let mut wrote = false;
    let mut failed = false;
    let mut writes = Vec::new();
    for t in resp.responses {
        for pd in t.partitions {
            let tp = TopicPartition::new(t.topic.0.as_str(), pd.partition_index);
            let Some(p) = replicas.get(&tp) else {
                continue;
            };
            if !f.lane(lane).partitions.borrow().contains_key(&tp) {
                // The other lane took it since this fetch was sent; the next one forgets it
                // here, so fetching again at once cannot spin.
                moved_away = true;
                continue;
            }
            if p.is_leader() {
                continue;
            }
            match pd.error_code {
                errors::NONE => {}
                errors::OFFSET_OUT_OF_RANGE => {
                    // Our end is outside the leader's log: re-check epochs (divergence), and if
                    // we are below its log start, start over from there.
                    if p.log.log_end_offset() < pd.log_start_offset {
                        tracing::info!(topic = %tp.topic, partition = tp.partition, from = p.log.log_end_offset(), to = pd.log_start_offset, "log ends below the leader's log start: starting over there");
                        match p.log.restart_at(pd.log_start_offset).await {
                            Ok(()) => p.truncate_state(0).await,
                            Err(e) => {
                                tracing::warn!(topic = %tp.topic, partition = tp.partition, "start over at the leader's log start: {e}")
                            }
                        }
                    }
                    if let Some(s) = f.lane(lane).partitions.borrow_mut().get_mut(&tp) {
                        s.truncated = false;
                    }
                    continue;
                }
                _ => continue,
            }
            any_ok = true;
            // Each partition's batches are written by a task of its own, all started before
            // any is awaited: a response naming many partitions (each its own log file) costs
            // one round of concurrent disk writes, not one write after another.
            writes.push((
                tp,
                glommio::spawn_local(append_then_follow_hw(
                    p,
                    pd.records,
                    pd.high_watermark,
                    pd.log_start_offset,
                ))
                .detach(),
            ));
        }
    }
    let mut got_records = Vec::new();
    for (tp, write) in writes {
        match write.await {
            Some(Ok(n)) => {
                wrote |= n > 0;
                if n > 0 {
                    got_records.push(tp);
                }
            }
            Some(Err(e)) => {
                f.note_storage_failure(&tp, &e);
                failed = true;
            }
            None => failed = true,
        }
    }
    sort_lanes(f, lane, &got_records);
    if failed {
        return Ok(Round::StorageFailed);
    }
    if wrote {
        f.note_storage_recovered();
    }
    Ok(if any_ok || listed_none || moved_away {
        Round::Progress
    } else {
        Round::Idle
    })
}

/// After a fetch of `lane`: partitions that got records are active (a quiet one moves back at
/// once); active ones without records for `QUIET_AFTER` (and checked against the leader's
/// epochs) are due to go quiet, and the quiet lane takes them before its next fetch.
fn sort_lanes(f: &Fetcher, lane: Lane, got_records: &[TopicPartition]) {
    let now = Instant::now();
    match lane {
        Lane::Quiet => {
            if got_records.is_empty() {
                return;
            }
            {
                let mut parts = f.quiet.partitions.borrow_mut();
                let mut due = f.going_active.borrow_mut();
                for tp in got_records {
                    if let Some(st) = parts.get_mut(tp) {
                        st.last_records = now;
                        due.insert(tp.clone());
                    }
                }
            }
            // An active lane without partitions waits on this, not in a fetch.
            f.active.changed.notify();
        }
        Lane::Active => {
            let added = {
                let mut parts = f.active.partitions.borrow_mut();
                for tp in got_records {
                    if let Some(st) = parts.get_mut(tp) {
                        st.last_records = now;
                    }
                }
                let mut due = f.going_quiet.borrow_mut();
                let before = due.len();
                due.extend(
                    parts
                        .iter()
                        .filter(|(_, st)| {
                            st.truncated
                                && now.saturating_duration_since(st.last_records) >= QUIET_AFTER
                        })
                        .map(|(tp, _)| tp.clone()),
                );
                due.len() > before
            };
            if added {
                f.quiet.changed.notify();
            }
        }
    }
}

/// One partition's part of a fetch response: its batches appended, then its high watermark
/// moved to the leader's (capped at what was written).
async fn append_then_follow_hw(
    p: Rc<Partition>,
    records: Option<Bytes>,
    leader_hw: i64,
    leader_log_start: i64,
) -> Result<usize, chronik_storage::StorageError> {
    let written = match records {
        Some(records) => append_batches(&p, records).await?,
        None => 0,
    };
    if let Err(e) = p.update_high_watermark(leader_hw) {
        tracing::debug!(topic = %p.tp.topic, partition = p.tp.partition, "replica fetch: {e}");
    }
    // The leader's log start moved (DeleteRecords, retention): ours follows, as far as our high
    // watermark, so records deleted there do not come back if this replica becomes leader.
    let start = leader_log_start.min(p.high_watermark());
    if start > p.log.log_start_offset() {
        if let Err(e) = p.log.delete_records_before(start).await {
            tracing::debug!(topic = %p.tp.topic, partition = p.tp.partition, "follow the leader's log start: {e}");
        }
    }
    Ok(written)
}

/// Splits a records blob into batches and appends each with its leader-assigned offsets.
/// Every batch is queued before any is awaited, so group commit writes the whole response in
/// one DMA write instead of one write (and one disk round trip) per batch. Returns how many
/// batches were written, or the first write's error.
async fn append_batches(
    p: &Partition,
    mut records: Bytes,
) -> Result<usize, chronik_storage::StorageError> {
    let mut pending = Vec::new();
    while records.len() >= 12 {
        let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let total = 12 + len.max(0) as usize;
        if len <= 0 || total > records.len() {
            break; // a partial trailing batch (max_bytes cut) is fetched again next round
        }
        let batch = records.split_to(total);
        let base = i64::from_be_bytes([
            batch[0], batch[1], batch[2], batch[3], batch[4], batch[5], batch[6], batch[7],
        ]);
        let Ok(header) = chronik_storage::parse_header(&batch) else {
            tracing::warn!(topic = %p.tp.topic, partition = p.tp.partition, "replica fetch: malformed batch header");
            break;
        };
        // The log end moves as each batch is queued, so this also skips repeats within the run.
        let leo = p.log.log_end_offset();
        if base < leo {
            // An empty log started at the leader's log start, which DeleteRecords may have put
            // inside a batch: the leader sends that whole batch. As Kafka does, the log then
            // starts at the batch's base offset and takes it; otherwise it is a batch we hold.
            let straddles = pending.is_empty()
                && leo == p.log.log_start_offset()
                && header.last_offset() >= leo;
            if !straddles {
                continue;
            }
            tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, from = leo, to = base, "the leader's first batch starts below our log start: starting the log there");
            p.log.restart_at(base).await?;
            p.truncate_state(0).await;
        }
        let marker = chronik_storage::parse_marker(&batch, &header);
        let fut = p.log.append_replicated(batch);
        // A batch that was not queued (its future yields the error) stops the run: the ones
        // after it would leave a gap.
        let queued = p.log.log_end_offset() > leo;
        pending.push((header, marker, fut));
        if !queued {
            break;
        }
    }
    let mut written = 0;
    for (header, marker, fut) in pending {
        fut.await?;
        p.record_replicated(&header, marker);
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::handlers::fetch_session::{
        FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH,
    };

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn want(offset: i64) -> Want {
        Want {
            fetch_offset: offset,
            leader_epoch: 3,
            log_start_offset: 0,
        }
    }

    fn wanted(of: &[(i32, i64)]) -> BTreeMap<TopicPartition, Want> {
        of.iter().map(|(p, o)| (tp(*p), want(*o))).collect()
    }

    fn fetcher() -> Fetcher {
        Fetcher {
            leader: 2,
            active: LaneState::default(),
            quiet: LaneState::default(),
            going_quiet: RefCell::new(BTreeSet::new()),
            going_active: RefCell::new(BTreeSet::new()),
            stopped: Cell::new(false),
            storage_warned: Cell::new(None),
            storage_failures: Cell::new(0),
            auth_warned: Cell::new(None),
        }
    }

    fn followed(last_records: Instant) -> FollowState {
        FollowState {
            leader_epoch: 3,
            truncated: true,
            last_records,
        }
    }

    fn lane_of(f: &Fetcher, p: i32) -> Option<Lane> {
        if f.active.partitions.borrow().contains_key(&tp(p)) {
            Some(Lane::Active)
        } else if f.quiet.partitions.borrow().contains_key(&tp(p)) {
            Some(Lane::Quiet)
        } else {
            None
        }
    }

    #[test]
    fn a_partition_due_to_go_quiet_is_fetched_by_the_active_lane_until_the_quiet_lane_takes_it() {
        let f = fetcher();
        let long_ago = Instant::now() - QUIET_AFTER * 2;
        f.active.partitions.borrow_mut().extend([
            (tp(0), followed(long_ago)),
            (tp(1), followed(long_ago)),
            (tp(2), followed(Instant::now())),
        ]);
        // Partition 1 got records in this round; 0 has had none for QUIET_AFTER.
        sort_lanes(&f, Lane::Active, &[tp(1)]);
        assert_eq!(lane_of(&f, 0), Some(Lane::Active), "still fetched actively");
        assert_eq!(*f.going_quiet.borrow(), BTreeSet::from([tp(0)]));
        // The quiet lane takes it just before its next fetch.
        f.adopt_quiet(Instant::now());
        assert_eq!(lane_of(&f, 0), Some(Lane::Quiet));
        assert_eq!(lane_of(&f, 1), Some(Lane::Active));
        assert_eq!(lane_of(&f, 2), Some(Lane::Active));
        assert!(f.going_quiet.borrow().is_empty());
    }

    #[test]
    fn a_partition_that_got_records_or_a_new_epoch_before_the_quiet_lane_took_it_stays_active() {
        let f = fetcher();
        let long_ago = Instant::now() - QUIET_AFTER * 2;
        f.active.partitions.borrow_mut().extend([
            (tp(0), followed(long_ago)),
            (tp(1), followed(long_ago)),
            (tp(2), followed(long_ago)),
        ]);
        sort_lanes(&f, Lane::Active, &[]);
        assert_eq!(f.going_quiet.borrow().len(), 3);
        // Then partition 0 gets records, 1 is followed under a new epoch (checked again) and
        // 2 is no longer followed here.
        sort_lanes(&f, Lane::Active, &[tp(0)]);
        f.active
            .partitions
            .borrow_mut()
            .insert(tp(1), FollowState::new(4, long_ago));
        f.active.partitions.borrow_mut().remove(&tp(2));
        f.adopt_quiet(Instant::now());
        assert_eq!(lane_of(&f, 0), Some(Lane::Active));
        assert_eq!(lane_of(&f, 1), Some(Lane::Active));
        assert_eq!(lane_of(&f, 2), None);
        assert!(f.quiet.partitions.borrow().is_empty());
    }

    #[test]
    fn a_quiet_partition_that_got_records_is_fetched_by_the_quiet_lane_until_the_active_lane_takes_it(
    ) {
        let f = fetcher();
        let long_ago = Instant::now() - QUIET_AFTER * 2;
        f.quiet.partitions.borrow_mut().extend([
            (tp(0), followed(long_ago)),
            (tp(1), followed(long_ago)),
            (tp(2), followed(long_ago)),
        ]);
        // Partitions 0 and 2 got records in the quiet lane's fetch: its next fetch still names
        // them (reporting their new log ends), and the active lane takes them before its own.
        sort_lanes(&f, Lane::Quiet, &[tp(0), tp(2)]);
        assert_eq!(
            lane_of(&f, 0),
            Some(Lane::Quiet),
            "still fetched by the quiet lane"
        );
        assert_eq!(*f.going_active.borrow(), BTreeSet::from([tp(0), tp(2)]));
        // Partition 2 is followed under a new epoch meanwhile (the active lane has it already).
        f.quiet.partitions.borrow_mut().remove(&tp(2));
        f.active
            .partitions
            .borrow_mut()
            .insert(tp(2), FollowState::new(4, Instant::now()));
        f.adopt_active();
        assert_eq!(lane_of(&f, 0), Some(Lane::Active));
        assert_eq!(lane_of(&f, 1), Some(Lane::Quiet));
        assert_eq!(f.active.partitions.borrow()[&tp(2)].leader_epoch, 4);
        assert!(f.going_active.borrow().is_empty());
        // Taken back, it has its records' time: it does not go quiet again at once.
        sort_lanes(&f, Lane::Active, &[]);
        assert!(f.going_quiet.borrow().is_empty());
    }

    /// Plans a fetch from `w` and has the leader answer it.
    fn round(
        s: &mut FollowerSession,
        w: &BTreeMap<TopicPartition, Want>,
        error: i16,
        id: i32,
    ) -> SessionFetch {
        let plan = s.plan(w);
        s.answered(&plan, w.clone(), error, id);
        plan
    }

    #[test]
    fn an_idle_fetcher_asks_again_after_5_ms_then_doubles_its_wait_up_to_100_ms() {
        let mut waits = vec![IDLE_BACKOFF_MIN];
        for _ in 0..6 {
            waits.push(next_idle_backoff(*waits.last().unwrap()));
        }
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![5, 10, 20, 40, 80, 100, 100]);
    }

    #[test]
    fn the_first_fetch_is_full_and_opens_a_session() {
        let mut s = FollowerSession::default();
        let w = wanted(&[(0, 5), (1, 7)]);
        let plan = round(&mut s, &w, 0, 42);
        assert_eq!((plan.session_id, plan.epoch, plan.send.len()), (0, 0, 2));
        assert_eq!(s.open, Some((42, 1)));
    }

    #[test]
    fn incremental_fetches_name_only_changed_added_and_forgotten_partitions() {
        let mut s = FollowerSession::default();
        round(&mut s, &wanted(&[(0, 5), (1, 7), (2, 9)]), 0, 42);
        let plan = round(&mut s, &wanted(&[(0, 5), (1, 7), (2, 9)]), 0, 42);
        assert_eq!(
            (plan.session_id, plan.epoch, plan.send, plan.forget),
            (42, 1, vec![], vec![]),
            "idle partitions are not named"
        );
        let plan = round(&mut s, &wanted(&[(0, 6), (1, 7), (3, 0)]), 0, 42);
        assert_eq!(plan.epoch, 2);
        assert_eq!(plan.send, vec![(tp(0), want(6)), (tp(3), want(0))]);
        assert_eq!(plan.forget, vec![tp(2)]);
        // A new leader epoch is a change too.
        let mut w = wanted(&[(0, 6), (1, 7), (3, 0)]);
        w.get_mut(&tp(1)).expect("followed").leader_epoch = 4;
        let plan = round(&mut s, &w, 0, 42);
        assert_eq!(
            plan.send
                .iter()
                .map(|(t, _)| t.partition)
                .collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(s.open, Some((42, 4)));
        // So is a new log start (the leader waits for it to answer DeleteRecords).
        w.get_mut(&tp(3)).expect("followed").log_start_offset = 2;
        let plan = round(&mut s, &w, 0, 42);
        assert_eq!(
            plan.send
                .iter()
                .map(|(t, w)| (t.partition, w.log_start_offset))
                .collect::<Vec<_>>(),
            vec![(3, 2)]
        );
    }

    #[test]
    fn a_session_error_or_a_refused_session_starts_over_with_a_full_fetch() {
        for (error, id) in [
            (FETCH_SESSION_ID_NOT_FOUND, 0),
            (INVALID_FETCH_SESSION_EPOCH, 0),
            (0, 0),
            (0, 99),
        ] {
            let mut s = FollowerSession::default();
            let w = wanted(&[(0, 5)]);
            round(&mut s, &w, 0, 42);
            round(&mut s, &w, error, id);
            assert_eq!(s.open, None, "error {error}, session {id}");
            let plan = s.plan(&w);
            assert_eq!((plan.session_id, plan.epoch, plan.send.len()), (0, 0, 1));
        }
        let mut s = FollowerSession::default();
        let w = wanted(&[(0, 5)]);
        round(&mut s, &w, 0, 42);
        s.reset();
        assert_eq!(s.plan(&w).epoch, 0, "a reconnect fetches in full");
    }
}
