//! Incremental fetch sessions (KIP-227), leader side: the state of one connection's sessions
//! and the rules that turn a Fetch's (session id, epoch, partitions, forgotten partitions)
//! into what to read and which partitions the response lists.
//!
//! Sessions belong to the connection that created them (dropped with it, no shared state): a
//! client that reconnects and names an old session gets FETCH_SESSION_ID_NOT_FOUND and starts
//! over with a full fetch, as every Kafka client does. Everything is bounded: sessions per
//! connection and per shard, cached partitions per session and per shard (see the constants).
//! Broker connections (followers) are counted apart from the shard-wide client bounds, as
//! Kafka's cache privileges followers, so clients cannot crowd replication out.

use crate::kafka::errors;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Kafka's INVALID_SESSION_ID: no session.
pub const NO_SESSION: i32 = 0;
/// Epoch of a full fetch that creates a session.
pub const INITIAL_EPOCH: i32 = 0;
/// Epoch of a full fetch that wants no session (and closes the one named).
pub const FINAL_EPOCH: i32 = -1;

pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
pub const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// Sessions one connection may hold (Kafka's clients use one per broker connection).
pub const MAX_SESSIONS_PER_CONNECTION: usize = 4;
/// Client sessions per shard: Kafka's max.incremental.fetch.session.cache.slots default (1000
/// per broker), here per shard. When full, a full fetch is answered sessionless.
pub const MAX_CLIENT_SESSIONS_PER_SHARD: usize = 1000;
/// Partitions cached over all client sessions of a shard (~50 B each: a few MiB).
pub const MAX_CLIENT_PARTITIONS_PER_SHARD: usize = 200_000;
/// Partitions in one session (a follower's included).
pub const MAX_SESSION_PARTITIONS: usize = 100_000;

/// How a Fetch names a topic: by name (v12 and older) or by id (v13+). A session keeps the
/// form it was created with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TopicKey {
    Name(Rc<str>),
    Id(uuid::Uuid),
}

/// What the client wants of one partition: the fields a Fetch partition carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub fetch_offset: i64,
    pub max_bytes: usize,
    pub current_leader_epoch: i32,
    /// The fetching replica's log start offset (a follower's; -1 from a consumer).
    pub log_start_offset: i64,
}

/// What the last response of the session said of a partition (None: not yet listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    wanted: Wanted,
    sent: Option<Sent>,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    uses_ids: bool,
    /// Whether it counts against the shard's client bounds.
    client: bool,
    topics: BTreeMap<TopicKey, BTreeMap<i32, Cached>>,
    partitions: usize,
}

/// A Fetch's session fields and partitions, as decoded.
pub struct SessionRequest<'a> {
    pub session_id: i32,
    pub epoch: i32,
    /// v13+: topics are named by id.
    pub uses_ids: bool,
    /// A proven broker (follower) connection.
    pub broker: bool,
    pub partitions: &'a [(TopicKey, Vec<(i32, Wanted)>)],
    pub forgotten: &'a [(TopicKey, Vec<i32>)],
}

/// What to do with a Fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Read the request's partitions, list them all, answer with session id 0.
    Sessionless,
    /// A new session: read the request's partitions, list them all, answer with `id`.
    Full { id: i32 },
    /// Read every partition of session `id` (these), list only those with news.
    Incremental {
        id: i32,
        topics: Vec<(TopicKey, Vec<(i32, Wanted)>)>,
    },
    /// Answer only this top-level error (session id 0, no partitions).
    Error(i16),
}

/// The shard's count of client sessions and their partitions (bounds across connections).
#[derive(Debug, Default)]
pub struct SessionBudget {
    sessions: Cell<usize>,
    partitions: Cell<usize>,
    /// Sessions of broker (follower) connections: counted for the metrics, not bounded here.
    replica_sessions: Cell<usize>,
}

impl SessionBudget {
    pub fn replica_sessions(&self) -> usize {
        self.replica_sessions.get()
    }
    pub fn sessions(&self) -> usize {
        self.sessions.get()
    }
    pub fn partitions(&self) -> usize {
        self.partitions.get()
    }
}

/// One connection's fetch sessions. Not shared: requests of the connection reach it through
/// their `RequestContext`; no borrow is held across an await.
#[derive(Debug)]
pub struct FetchSessions {
    budget: Rc<SessionBudget>,
    sessions: RefCell<HashMap<i32, Session>>,
}

impl Drop for FetchSessions {
    fn drop(&mut self) {
        let ids: Vec<i32> = self.sessions.borrow().keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
    }
}

/// Kafka's epoch sequence: 1, 2, ..., i32::MAX, 1, ...
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < i32::MAX {
        epoch + 1
    } else {
        1
    }
}

/// A random positive session id (std's per-process random hash keys; no extra crate).
fn random_id() -> i32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() as i32) & i32::MAX
}

/// Whether a partition of an incremental fetch goes into the response (Kafka's
/// `CachedPartition.maybeUpdateResponseData`): records, an error, or offsets that changed since
/// the session last listed it.
pub fn has_news(last: Option<Sent>, now: Sent, error: i16, has_records: bool) -> bool {
    has_records || error != errors::NONE || last != Some(now)
}

impl FetchSessions {
    pub fn new(budget: Rc<SessionBudget>) -> FetchSessions {
        FetchSessions {
            budget,
            sessions: RefCell::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, id: i32) {
        if let Some(s) = self.sessions.borrow_mut().remove(&id) {
            let b = &self.budget;
            if s.client {
                b.sessions.set(b.sessions.get().saturating_sub(1));
                b.partitions
                    .set(b.partitions.get().saturating_sub(s.partitions));
            } else {
                b.replica_sessions
                    .set(b.replica_sessions.get().saturating_sub(1));
            }
        }
    }

    /// Applies a Fetch's session fields (Kafka's `FetchManager.newContext`).
    pub fn begin(&self, req: &SessionRequest<'_>) -> Plan {
        let full = req.epoch == INITIAL_EPOCH || req.epoch == FINAL_EPOCH;
        if full {
            // A full fetch closes the session it names.
            if req.session_id != NO_SESSION {
                self.remove(req.session_id);
            }
            if req.epoch == FINAL_EPOCH {
                return Plan::Sessionless;
            }
            return self.create(req);
        }
        let mut sessions = self.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(&req.session_id) else {
            return Plan::Error(FETCH_SESSION_ID_NOT_FOUND);
        };
        if s.next_epoch != req.epoch {
            return Plan::Error(INVALID_FETCH_SESSION_EPOCH);
        }
        if s.uses_ids != req.uses_ids {
            return Plan::Error(FETCH_SESSION_TOPIC_ID_ERROR);
        }
        let before = s.partitions;
        for (topic, parts) in req.forgotten {
            if let Some(t) = s.topics.get_mut(topic) {
                for p in parts {
                    if t.remove(p).is_some() {
                        s.partitions -= 1;
                    }
                }
                if t.is_empty() {
                    s.topics.remove(topic);
                }
            }
        }
        for (topic, parts) in req.partitions {
            let t = s.topics.entry(topic.clone()).or_default();
            for (p, wanted) in parts {
                match t.get_mut(p) {
                    Some(c) => c.wanted = *wanted,
                    None => {
                        t.insert(
                            *p,
                            Cached {
                                wanted: *wanted,
                                sent: None,
                            },
                        );
                        s.partitions += 1;
                    }
                }
            }
            if t.is_empty() {
                s.topics.remove(topic);
            }
        }
        let (client, after) = (s.client, s.partitions);
        let b = &self.budget;
        let over = after > MAX_SESSION_PARTITIONS
            || (client
                && after > before
                && b.partitions.get() + (after - before) > MAX_CLIENT_PARTITIONS_PER_SHARD);
        if client {
            // Kept in step with the session before any early return below removes it.
            b.partitions
                .set((b.partitions.get() + after).saturating_sub(before));
        }
        if over || after == 0 {
            drop(sessions);
            self.remove(req.session_id);
            // Grown past the bounds: the client starts over (and gets a sessionless answer if
            // its full fetch is still too large). Emptied: Kafka answers sessionless.
            return if over {
                Plan::Error(FETCH_SESSION_ID_NOT_FOUND)
            } else {
                Plan::Sessionless
            };
        }
        s.next_epoch = next_epoch(req.epoch);
        let topics = s
            .topics
            .iter()
            .map(|(k, ps)| (k.clone(), ps.iter().map(|(p, c)| (*p, c.wanted)).collect()))
            .collect();
        Plan::Incremental {
            id: req.session_id,
            topics,
        }
    }

    fn create(&self, req: &SessionRequest<'_>) -> Plan {
        let mut topics: BTreeMap<TopicKey, BTreeMap<i32, Cached>> = BTreeMap::new();
        let mut count = 0usize;
        for (topic, parts) in req.partitions {
            let t = topics.entry(topic.clone()).or_default();
            for (p, wanted) in parts {
                let c = Cached {
                    wanted: *wanted,
                    sent: None,
                };
                if t.insert(*p, c).is_none() {
                    count += 1;
                }
            }
            if count > MAX_SESSION_PARTITIONS {
                return Plan::Sessionless;
            }
        }
        let b = &self.budget;
        let client = !req.broker;
        let full = self.len() >= MAX_SESSIONS_PER_CONNECTION
            || (client
                && (b.sessions.get() >= MAX_CLIENT_SESSIONS_PER_SHARD
                    || b.partitions.get() + count > MAX_CLIENT_PARTITIONS_PER_SHARD));
        if full {
            return Plan::Sessionless;
        }
        let mut sessions = self.sessions.borrow_mut();
        // Kafka's ids are random positive ints (not guessable across connections).
        let id = loop {
            let id = random_id();
            if id != NO_SESSION && !sessions.contains_key(&id) {
                break id;
            }
        };
        sessions.insert(
            id,
            Session {
                next_epoch: next_epoch(INITIAL_EPOCH),
                uses_ids: req.uses_ids,
                client,
                topics,
                partitions: count,
            },
        );
        if client {
            b.sessions.set(b.sessions.get() + 1);
            b.partitions.set(b.partitions.get() + count);
        } else {
            b.replica_sessions.set(b.replica_sessions.get() + 1);
        }
        Plan::Full { id }
    }

    /// Records what the response of session `id` says of each partition read (`reads`: topic,
    /// partition, offsets, error, whether records came) and returns, in the same order,
    /// whether each goes into the response: all of them for the full fetch that created the
    /// session (`full`), only those with news for an incremental one. A session closed in the
    /// meantime (a later request of the connection) lists everything.
    pub fn finish(
        &self,
        id: i32,
        full: bool,
        reads: &[(&TopicKey, i32, Sent, i16, bool)],
    ) -> Vec<bool> {
        let mut sessions = self.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(&id) else {
            return vec![true; reads.len()];
        };
        reads
            .iter()
            .map(|(topic, p, now, error, records)| {
                let Some(c) = s.topics.get_mut(*topic).and_then(|t| t.get_mut(p)) else {
                    return true;
                };
                let listed = full || has_news(c.sent, *now, *error, *records);
                if listed {
                    c.sent = Some(*now);
                }
                listed
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> TopicKey {
        TopicKey::Name(Rc::from(n))
    }

    fn want(offset: i64) -> Wanted {
        Wanted {
            fetch_offset: offset,
            max_bytes: 1024,
            current_leader_epoch: -1,
            log_start_offset: -1,
        }
    }

    fn req<'a>(
        session_id: i32,
        epoch: i32,
        partitions: &'a [(TopicKey, Vec<(i32, Wanted)>)],
        forgotten: &'a [(TopicKey, Vec<i32>)],
    ) -> SessionRequest<'a> {
        SessionRequest {
            session_id,
            epoch,
            uses_ids: false,
            broker: false,
            partitions,
            forgotten,
        }
    }

    fn sent(hw: i64) -> Sent {
        Sent {
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: 0,
        }
    }

    fn created(s: &FetchSessions, parts: &[(TopicKey, Vec<(i32, Wanted)>)]) -> i32 {
        match s.begin(&req(0, 0, parts, &[])) {
            Plan::Full { id } => {
                assert!(id > 0);
                id
            }
            p => panic!("expected a new session, got {p:?}"),
        }
    }

    fn incremental(plan: Plan) -> Vec<(TopicKey, Vec<(i32, Wanted)>)> {
        match plan {
            Plan::Incremental { topics, .. } => topics,
            p => panic!("expected an incremental fetch, got {p:?}"),
        }
    }

    #[test]
    fn epoch_minus_one_without_a_session_is_a_sessionless_full_fetch() {
        let s = FetchSessions::new(Rc::default());
        assert_eq!(
            s.begin(&req(0, -1, &[(name("t"), vec![(0, want(0))])], &[])),
            Plan::Sessionless
        );
        assert!(s.is_empty());
    }

    #[test]
    fn epoch_zero_creates_a_session_whose_next_epoch_is_one() {
        let budget = Rc::new(SessionBudget::default());
        let s = FetchSessions::new(budget.clone());
        let parts = [(name("t"), vec![(0, want(5)), (1, want(7))])];
        let id = created(&s, &parts);
        assert_eq!((budget.sessions(), budget.partitions()), (1, 2));
        let topics = incremental(s.begin(&req(id, 1, &[], &[])));
        assert_eq!(topics, vec![(name("t"), vec![(0, want(5)), (1, want(7))])]);
        // And then 2.
        incremental(s.begin(&req(id, 2, &[], &[])));
    }

    #[test]
    fn an_incremental_fetch_adds_updates_and_forgets_partitions() {
        let s = FetchSessions::new(Rc::default());
        let id = created(&s, &[(name("t"), vec![(0, want(5)), (1, want(7))])]);
        let changes = [
            (name("t"), vec![(0, want(9))]),
            (name("u"), vec![(3, want(1))]),
        ];
        let forget = [(name("t"), vec![1, 42]), (name("nope"), vec![0])];
        let topics = incremental(s.begin(&req(id, 1, &changes, &forget)));
        assert_eq!(
            topics,
            vec![
                (name("t"), vec![(0, want(9))]),
                (name("u"), vec![(3, want(1))])
            ],
            "0 updated, 1 forgotten, u-3 added; forgetting unknown partitions is harmless"
        );
    }

    #[test]
    fn a_wrong_epoch_is_invalid_fetch_session_epoch_and_leaves_the_session_as_it_was() {
        let s = FetchSessions::new(Rc::default());
        let id = created(&s, &[(name("t"), vec![(0, want(5))])]);
        for bad in [2, 0x7fff_ffff, -5, i32::MIN] {
            assert_eq!(
                s.begin(&req(id, bad, &[], &[])),
                Plan::Error(INVALID_FETCH_SESSION_EPOCH),
                "epoch {bad}"
            );
        }
        incremental(s.begin(&req(id, 1, &[], &[])));
    }

    #[test]
    fn an_unknown_session_id_is_fetch_session_id_not_found() {
        let s = FetchSessions::new(Rc::default());
        let id = created(&s, &[(name("t"), vec![(0, want(5))])]);
        let other = if id == 1 { 2 } else { 1 };
        assert_eq!(
            s.begin(&req(other, 1, &[], &[])),
            Plan::Error(FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(
            s.begin(&req(0, 3, &[], &[])),
            Plan::Error(FETCH_SESSION_ID_NOT_FOUND),
            "session 0 with a positive epoch names no session"
        );
    }

    #[test]
    fn epoch_minus_one_closes_the_named_session_and_answers_sessionless() {
        let budget = Rc::new(SessionBudget::default());
        let s = FetchSessions::new(budget.clone());
        let id = created(&s, &[(name("t"), vec![(0, want(5))])]);
        assert_eq!(s.begin(&req(id, -1, &[], &[])), Plan::Sessionless);
        assert_eq!((budget.sessions(), budget.partitions()), (0, 0));
        assert_eq!(
            s.begin(&req(id, 1, &[], &[])),
            Plan::Error(FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn forgetting_every_partition_closes_the_session() {
        let s = FetchSessions::new(Rc::default());
        let id = created(&s, &[(name("t"), vec![(0, want(5))])]);
        assert_eq!(
            s.begin(&req(id, 1, &[], &[(name("t"), vec![0])])),
            Plan::Sessionless
        );
        assert!(s.is_empty());
    }

    #[test]
    fn a_full_cache_answers_sessionless() {
        let budget = Rc::new(SessionBudget::default());
        let parts = [(name("t"), vec![(0, want(0))])];
        let conn = FetchSessions::new(budget.clone());
        for _ in 0..MAX_SESSIONS_PER_CONNECTION {
            created(&conn, &parts);
        }
        assert_eq!(
            conn.begin(&req(0, 0, &parts, &[])),
            Plan::Sessionless,
            "per connection"
        );
        let mut conns = vec![conn];
        while budget.sessions() < MAX_CLIENT_SESSIONS_PER_SHARD {
            let c = FetchSessions::new(budget.clone());
            created(&c, &parts);
            conns.push(c);
        }
        let last = FetchSessions::new(budget.clone());
        assert_eq!(
            last.begin(&req(0, 0, &parts, &[])),
            Plan::Sessionless,
            "per shard"
        );
        // A follower's session is not crowded out by clients.
        let mut r = req(0, 0, &parts, &[]);
        r.broker = true;
        assert!(matches!(last.begin(&r), Plan::Full { .. }));
        assert_eq!(budget.replica_sessions(), 1);
        // Closed connections give their slots back.
        conns.clear();
        assert_eq!(budget.sessions(), 0);
        drop(last);
        assert_eq!(budget.replica_sessions(), 0);
        let last = FetchSessions::new(budget.clone());
        created(&last, &parts);
    }

    #[test]
    fn a_session_that_grows_past_its_bound_is_dropped() {
        let budget = Rc::new(SessionBudget::default());
        let s = FetchSessions::new(budget.clone());
        let id = created(&s, &[(name("t"), vec![(0, want(0))])]);
        let many: Vec<(i32, Wanted)> = (0..MAX_SESSION_PARTITIONS as i32)
            .map(|p| (p + 1, want(0)))
            .collect();
        let add = [(name("t"), many)];
        assert_eq!(
            s.begin(&req(id, 1, &add, &[])),
            Plan::Error(FETCH_SESSION_ID_NOT_FOUND)
        );
        assert!(s.is_empty());
        assert_eq!((budget.sessions(), budget.partitions()), (0, 0));
        let too_many = [(
            name("t"),
            (0..=MAX_SESSION_PARTITIONS as i32)
                .map(|p| (p, want(0)))
                .collect(),
        )];
        assert_eq!(
            s.begin(&req(0, 0, &too_many, &[])),
            Plan::Sessionless,
            "too large to cache: answered sessionless"
        );
    }

    #[test]
    fn topic_ids_and_names_do_not_mix_in_one_session() {
        let s = FetchSessions::new(Rc::default());
        let id = created(&s, &[(name("t"), vec![(0, want(0))])]);
        let mut r = req(id, 1, &[], &[]);
        r.uses_ids = true;
        assert_eq!(s.begin(&r), Plan::Error(FETCH_SESSION_TOPIC_ID_ERROR));
    }

    #[test]
    fn an_incremental_response_lists_only_partitions_with_news() {
        let s = FetchSessions::new(Rc::default());
        let (t, u) = (name("t"), name("u"));
        let id = created(
            &s,
            &[
                (t.clone(), vec![(0, want(0)), (1, want(0))]),
                (u.clone(), vec![(0, want(0))]),
            ],
        );
        let first = [
            (&t, 0, sent(3), 0, true),
            (&t, 1, sent(0), 0, false),
            (&u, 0, sent(0), 0, false),
        ];
        assert_eq!(
            s.finish(id, true, &first),
            vec![true; 3],
            "the full fetch lists all"
        );
        incremental(s.begin(&req(id, 1, &[], &[])));
        let quiet = [
            (&t, 0, sent(3), 0, false),
            (&t, 1, sent(0), 0, false),
            (&u, 0, sent(0), 0, false),
        ];
        assert_eq!(s.finish(id, false, &quiet), vec![false; 3], "nothing new");
        let news = [
            (&t, 0, sent(4), 0, false),
            (&t, 1, sent(0), 0, true),
            (&u, 0, sent(0), errors::NOT_LEADER_OR_FOLLOWER, false),
        ];
        assert_eq!(
            s.finish(id, false, &news),
            vec![true; 3],
            "a moved high watermark, records, an error"
        );
        let start_moved = Sent {
            log_start_offset: 2,
            ..sent(4)
        };
        let again = [(&t, 0, start_moved, 0, false), (&t, 1, sent(0), 0, false)];
        assert_eq!(
            s.finish(id, false, &again),
            vec![true, false],
            "a moved log start"
        );
        // A partition added by an incremental fetch is listed the first time.
        incremental(s.begin(&req(id, 2, &[(t.clone(), vec![(9, want(0))])], &[])));
        assert_eq!(
            s.finish(id, false, &[(&t, 9, sent(0), 0, false)]),
            vec![true]
        );
    }

    #[test]
    fn epochs_wrap_to_one() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
