//! The classic protocol's transitions, driven with a hand-stepped clock and counted member ids.

use super::*;
use crate::group::offsets_log::OffsetValue;
use std::cell::Cell;

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);
const DELAY: Duration = Duration::from_secs(3);

/// Member ids `<prefix>-1`, `<prefix>-2`, …
#[derive(Default)]
struct Counter(Cell<u32>);

impl MemberIds for Counter {
    fn next_member_id(&self, prefix: &str) -> String {
        self.0.set(self.0.get() + 1);
        format!("{prefix}-{}", self.0.get())
    }
}

struct Fixture {
    g: Group,
    ids: Counter,
    cfg: GroupConfig,
    clock: Clock,
}

impl Fixture {
    fn new() -> Fixture {
        let clock = Clock {
            now: Instant::now(),
            wall_ms: 1_700_000_000_000,
        };
        Fixture {
            g: Group::new("g", &clock),
            ids: Counter::default(),
            cfg: GroupConfig {
                initial_rebalance_delay: DELAY,
                ..GroupConfig::default()
            },
            clock,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.clock = self.clock.after(d);
    }

    fn join(&mut self, r: &JoinParams) -> (JoinOutcome, Effects) {
        join(&mut self.g, r, &self.cfg, &self.clock, &self.ids)
    }

    fn sync(
        &mut self,
        member: &str,
        generation: i32,
        assign: &[(&str, &str)],
    ) -> (SyncOutcome, Effects) {
        let r = SyncParams {
            group_id: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            assignments: assign
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
        };
        sync(&mut self.g, &r, &self.clock)
    }

    fn fire_join_timer(&mut self) -> JoinTimer {
        let seq = self.g.rebalance_seq;
        join_timer(&mut self.g, seq, &self.clock)
    }

    /// Two dynamic members `client-1` (leader) and `client-2` in generation 1, Stable, each
    /// assigned its own name.
    fn stable_pair() -> Fixture {
        let mut f = Fixture::new();
        f.join(&join_req(""));
        f.join(&join_req(""));
        f.advance(DELAY);
        assert!(matches!(f.fire_join_timer(), JoinTimer::Fired(_)));
        let assign = [("client-1", "a1"), ("client-2", "a2")];
        let (out, _) = f.sync("client-1", 1, &assign);
        assert!(matches!(
            out,
            SyncOutcome::Wait {
                persist: Some((1, _))
            }
        ));
        f.sync("client-2", 1, &[]);
        let fx = sync_persisted(&mut f.g, 1, errors::NONE, &f.cfg, &f.clock);
        assert_eq!(sync_replies(&fx).len(), 2);
        assert_eq!(f.g.state, GroupState::Stable);
        f
    }
}

fn join_req(member: &str) -> JoinParams {
    JoinParams {
        group_id: "g".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION.as_millis() as i32,
        rebalance_timeout_ms: REBALANCE.as_millis() as i32,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member: false,
    }
}

fn static_req(member: &str, instance: &str) -> JoinParams {
    JoinParams {
        instance_id: Some(instance.into()),
        ..join_req(member)
    }
}

/// (member, error, generation) of every JoinGroup answered.
fn join_replies(fx: &Effects) -> Vec<(String, i16, i32)> {
    fx.actions
        .iter()
        .filter_map(|a| match a {
            Effect::JoinReply(id, r) => Some((id.clone(), r.error, r.generation)),
            _ => None,
        })
        .collect()
}

/// (member, error, assignment) of every SyncGroup answered.
fn sync_replies(fx: &Effects) -> Vec<(String, i16, Bytes)> {
    fx.actions
        .iter()
        .filter_map(|a| match a {
            Effect::SyncReply(id, r) => Some((id.clone(), r.error, r.assignment.clone())),
            _ => None,
        })
        .collect()
}

fn done(o: JoinOutcome) -> JoinResult {
    match o {
        JoinOutcome::Done(r) => r,
        JoinOutcome::Wait => panic!("expected an immediate answer"),
    }
}

// ---------------------------------------------------------------------------------------------
// Empty → PreparingRebalance → CompletingRebalance → Stable

#[test]
fn a_first_join_parks_and_the_initial_delay_completes_generation_one() {
    let mut f = Fixture::new();
    let (out, fx) = f.join(&join_req(""));
    assert_eq!(out, JoinOutcome::Wait);
    assert_eq!(fx.actions, vec![Effect::ParkJoin("client-1".into())]);
    assert_eq!(fx.join_timer, Some(f.g.rebalance_seq));
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    // Everyone known has joined, but the initial delay waits for more.
    assert!(matches!(f.fire_join_timer(), JoinTimer::Wait(d) if d == f.clock.now + DELAY));
    f.advance(DELAY);
    let JoinTimer::Fired(fx) = f.fire_join_timer() else {
        panic!("the delay passed")
    };
    assert_eq!(
        join_replies(&fx),
        vec![("client-1".into(), errors::NONE, 1)]
    );
    assert_eq!(f.g.state, GroupState::CompletingRebalance);
    assert_eq!(f.g.leader.as_deref(), Some("client-1"));
    assert_eq!(f.g.protocol.as_deref(), Some("range"));
}

#[test]
fn a_member_joining_during_the_initial_delay_extends_it_up_to_the_rebalance_timeout() {
    let mut f = Fixture::new();
    f.join(&join_req(""));
    f.advance(Duration::from_secs(2));
    f.join(&join_req(""));
    assert_eq!(f.g.join_deadline, f.clock.now + DELAY);
    f.advance(Duration::from_secs(2));
    assert!(matches!(f.fire_join_timer(), JoinTimer::Wait(_)));
    f.advance(Duration::from_secs(1));
    let JoinTimer::Fired(fx) = f.fire_join_timer() else {
        panic!("the extended delay passed")
    };
    assert_eq!(join_replies(&fx).len(), 2);
}

#[test]
fn the_leaders_sync_stores_every_assignment_and_answers_all_members_once_written() {
    let mut f = Fixture::new();
    f.join(&join_req(""));
    f.join(&join_req(""));
    f.advance(DELAY);
    f.fire_join_timer();
    let (out, fx) = f.sync("client-2", 1, &[]);
    assert!(matches!(out, SyncOutcome::Wait { persist: None }));
    assert_eq!(fx.actions, vec![Effect::ParkSync("client-2".into())]);
    let (out, _) = f.sync("client-1", 1, &[("client-1", "a1"), ("client-2", "a2")]);
    let SyncOutcome::Wait {
        persist: Some((1, value)),
    } = out
    else {
        panic!("the leader's sync persists the assignment")
    };
    assert_eq!(value.members[1].assignment, Bytes::from("a2"));
    // Not Stable before the write is acknowledged.
    assert_eq!(f.g.state, GroupState::CompletingRebalance);
    let fx = sync_persisted(&mut f.g, 1, errors::NONE, &f.cfg, &f.clock);
    assert_eq!(f.g.state, GroupState::Stable);
    let mut replies = sync_replies(&fx);
    replies.sort();
    assert_eq!(
        replies,
        vec![
            ("client-1".into(), errors::NONE, Bytes::from("a1")),
            ("client-2".into(), errors::NONE, Bytes::from("a2")),
        ]
    );
}

#[test]
fn a_failed_assignment_write_answers_the_error_and_starts_a_new_rebalance() {
    let mut f = Fixture::new();
    f.join(&join_req(""));
    f.advance(DELAY);
    f.fire_join_timer();
    f.sync("client-1", 1, &[("client-1", "a1")]);
    let fx = sync_persisted(
        &mut f.g,
        1,
        errors::COORDINATOR_NOT_AVAILABLE,
        &f.cfg,
        &f.clock,
    );
    assert_eq!(
        sync_replies(&fx),
        vec![(
            "client-1".into(),
            errors::COORDINATOR_NOT_AVAILABLE,
            Bytes::new()
        )]
    );
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    assert!(fx.join_timer.is_some());
}

#[test]
fn a_write_acknowledged_after_the_group_moved_on_changes_nothing() {
    let mut f = Fixture::stable_pair();
    let before = f.g.generation;
    let fx = sync_persisted(&mut f.g, before - 1, errors::NONE, &f.cfg, &f.clock);
    assert!(fx.is_empty());
    assert_eq!(f.g.state, GroupState::Stable);
}

#[test]
fn a_sync_in_stable_returns_the_stored_assignment_at_once() {
    let mut f = Fixture::stable_pair();
    let (out, fx) = f.sync("client-2", 1, &[]);
    let SyncOutcome::Done(r) = out else {
        panic!("no waiting in Stable")
    };
    assert_eq!((r.error, r.assignment), (errors::NONE, Bytes::from("a2")));
    assert!(fx.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Illegal requests

#[test]
fn a_sync_with_a_stale_generation_is_illegal_generation() {
    let mut f = Fixture::stable_pair();
    let (out, _) = f.sync("client-1", 0, &[]);
    assert!(matches!(out, SyncOutcome::Done(r) if r.error == errors::ILLEGAL_GENERATION));
}

#[test]
fn a_sync_from_an_unknown_member_is_unknown_member_id() {
    let mut f = Fixture::stable_pair();
    let (out, _) = f.sync("stranger", 1, &[]);
    assert!(matches!(out, SyncOutcome::Done(r) if r.error == errors::UNKNOWN_MEMBER_ID));
}

#[test]
fn a_sync_with_another_protocol_is_inconsistent_group_protocol() {
    let mut f = Fixture::stable_pair();
    let r = SyncParams {
        group_id: "g".into(),
        generation: 1,
        member_id: "client-1".into(),
        instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol: Some("roundrobin".into()),
        assignments: Vec::new(),
    };
    let (out, _) = sync(&mut f.g, &r, &f.clock);
    assert!(matches!(out, SyncOutcome::Done(r) if r.error == errors::INCONSISTENT_GROUP_PROTOCOL));
}

#[test]
fn a_sync_while_preparing_a_rebalance_is_rebalance_in_progress() {
    let mut f = Fixture::stable_pair();
    f.join(&join_req("")); // a third member: rebalance
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    let (out, _) = f.sync("client-1", 1, &[]);
    assert!(matches!(out, SyncOutcome::Done(r) if r.error == errors::REBALANCE_IN_PROGRESS));
}

#[test]
fn a_join_with_an_unknown_member_id_is_unknown_member_id() {
    let mut f = Fixture::stable_pair();
    let r = done(f.join(&join_req("stranger")).0);
    assert_eq!(r.error, errors::UNKNOWN_MEMBER_ID);
    assert_eq!(f.g.state, GroupState::Stable);
}

#[test]
fn a_join_with_another_protocol_type_or_no_common_protocol_is_inconsistent() {
    let mut f = Fixture::stable_pair();
    let other_type = JoinParams {
        protocol_type: "connect".into(),
        ..join_req("")
    };
    assert_eq!(
        done(f.join(&other_type).0).error,
        errors::INCONSISTENT_GROUP_PROTOCOL
    );
    let other_protocol = JoinParams {
        protocols: vec![("sticky".into(), Bytes::new())],
        ..join_req("")
    };
    assert_eq!(
        done(f.join(&other_protocol).0).error,
        errors::INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(f.g.members.len(), 2);
}

#[test]
fn a_session_timeout_outside_the_broker_bounds_is_invalid_session_timeout() {
    let cfg = GroupConfig::default();
    let short = JoinParams {
        session_timeout_ms: cfg.min_session_timeout_ms - 1,
        ..join_req("")
    };
    let long = JoinParams {
        session_timeout_ms: cfg.max_session_timeout_ms + 1,
        ..join_req("")
    };
    assert_eq!(
        check_session_timeout(&short, &cfg),
        Err(errors::INVALID_SESSION_TIMEOUT)
    );
    assert_eq!(
        check_session_timeout(&long, &cfg),
        Err(errors::INVALID_SESSION_TIMEOUT)
    );
    assert_eq!(check_session_timeout(&join_req(""), &cfg), Ok(()));
}

#[test]
fn a_v4_join_without_member_id_gets_member_id_required_then_joins_with_that_id() {
    let mut f = Fixture::new();
    let first = JoinParams {
        require_known_member: true,
        ..join_req("")
    };
    let r = done(f.join(&first).0);
    assert_eq!(
        (r.error, r.member_id.as_str()),
        (errors::MEMBER_ID_REQUIRED, "client-1")
    );
    assert!(f.g.members.is_empty());
    let (out, fx) = f.join(&JoinParams {
        require_known_member: true,
        ..join_req("client-1")
    });
    assert_eq!(out, JoinOutcome::Wait);
    assert_eq!(fx.actions, vec![Effect::ParkJoin("client-1".into())]);
    assert!(f.g.pending.is_empty());
}

#[test]
fn a_handed_out_member_id_expires_after_the_session_timeout() {
    let mut f = Fixture::new();
    f.join(&JoinParams {
        require_known_member: true,
        ..join_req("")
    });
    assert_eq!(next_session_deadline(&f.g), Some(f.clock.now + SESSION));
    f.advance(SESSION);
    expire_sessions(&mut f.g, &f.cfg, &f.clock);
    assert!(f.g.pending.is_empty());
    let r = done(f.join(&join_req("client-1")).0);
    assert_eq!(r.error, errors::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_join_to_a_dead_group_is_coordinator_not_available() {
    let mut f = Fixture::new();
    assert_eq!(begin_delete(&mut f.g, &f.clock), Ok(()));
    let r = done(f.join(&join_req("")).0);
    assert_eq!(r.error, errors::COORDINATOR_NOT_AVAILABLE);
}

// ---------------------------------------------------------------------------------------------
// Rejoins and rebalances

#[test]
fn a_rejoin_with_unchanged_protocols_while_completing_returns_the_current_generation() {
    let mut f = Fixture::new();
    f.join(&join_req(""));
    f.join(&join_req(""));
    f.advance(DELAY);
    f.fire_join_timer();
    let seq = f.g.rebalance_seq;
    let r = done(f.join(&join_req("client-2")).0);
    assert_eq!((r.error, r.generation), (errors::NONE, 1));
    assert_eq!(f.g.state, GroupState::CompletingRebalance);
    assert_eq!(f.g.rebalance_seq, seq);
}

#[test]
fn a_rejoin_with_new_protocols_while_completing_restarts_the_rebalance_and_fails_parked_syncs() {
    let mut f = Fixture::new();
    f.join(&join_req(""));
    f.join(&join_req(""));
    f.advance(DELAY);
    f.fire_join_timer();
    f.sync("client-2", 1, &[]);
    let changed = JoinParams {
        protocols: vec![("range".into(), Bytes::from_static(b"new-sub"))],
        ..join_req("client-1")
    };
    let (out, fx) = f.join(&changed);
    assert_eq!(out, JoinOutcome::Wait);
    assert_eq!(
        sync_replies(&fx),
        vec![(
            "client-2".into(),
            errors::REBALANCE_IN_PROGRESS,
            Bytes::new()
        )]
    );
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    assert!(fx.join_timer.is_some());
}

#[test]
fn a_new_member_makes_a_stable_group_rebalance_and_everyone_rejoining_completes_it() {
    let mut f = Fixture::stable_pair();
    let (out, fx) = f.join(&join_req(""));
    assert_eq!(out, JoinOutcome::Wait);
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    assert!(!f.g.initial_phase);
    assert!(fx.join_timer.is_some());
    assert!(join_replies(&fx).is_empty());
    f.join(&join_req("client-1"));
    let (_, fx) = f.join(&join_req("client-2"));
    // The last one in completes the phase without waiting for the timer.
    let mut replies = join_replies(&fx);
    replies.sort();
    assert_eq!(
        replies,
        vec![
            ("client-1".into(), errors::NONE, 2),
            ("client-2".into(), errors::NONE, 2),
            ("client-3".into(), errors::NONE, 2),
        ]
    );
    assert_eq!(f.g.state, GroupState::CompletingRebalance);
    assert_eq!(f.g.leader.as_deref(), Some("client-1"));
}

#[test]
fn the_leader_rejoining_a_stable_group_starts_a_rebalance() {
    let mut f = Fixture::stable_pair();
    let (out, _) = f.join(&join_req("client-1"));
    assert_eq!(out, JoinOutcome::Wait);
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    // A follower rejoining unchanged while Stable just gets the current generation.
    let mut f = Fixture::stable_pair();
    let r = done(f.join(&join_req("client-2")).0);
    assert_eq!((r.error, r.generation), (errors::NONE, 1));
    assert_eq!(f.g.state, GroupState::Stable);
}

#[test]
fn a_second_join_of_the_same_member_answers_the_first_with_rebalance_in_progress() {
    let mut f = Fixture::stable_pair();
    f.join(&join_req("client-1"));
    let (_, fx) = f.join(&join_req("client-1"));
    assert_eq!(
        fx.actions,
        vec![
            Effect::JoinReply(
                "client-1".into(),
                JoinResult::error(errors::REBALANCE_IN_PROGRESS, "client-1")
            ),
            Effect::ParkJoin("client-1".into()),
        ]
    );
}

#[test]
fn rebalance_timeout_expiry_removes_members_that_did_not_rejoin() {
    let mut f = Fixture::stable_pair();
    // A follower rejoining with a new subscription starts the rebalance; the leader never rejoins.
    f.join(&JoinParams {
        protocols: vec![("range".into(), Bytes::from_static(b"new-sub"))],
        ..join_req("client-2")
    });
    f.advance(REBALANCE - Duration::from_millis(1));
    assert!(matches!(f.fire_join_timer(), JoinTimer::Wait(_)));
    f.advance(Duration::from_millis(1));
    let JoinTimer::Fired(fx) = f.fire_join_timer() else {
        panic!("the rebalance timeout passed")
    };
    assert_eq!(
        join_replies(&fx),
        vec![("client-2".into(), errors::NONE, 2)]
    );
    assert_eq!(f.g.members.len(), 1);
    // The leader was dropped: the member that rejoined leads.
    assert_eq!(f.g.leader.as_deref(), Some("client-2"));
}

#[test]
fn rebalance_timeout_expiry_with_nobody_rejoined_empties_the_group_and_persists_it() {
    let mut f = Fixture::stable_pair();
    let fx = leave(&mut f.g, &[("client-3".into(), None)], &f.cfg, &f.clock).1;
    assert!(fx.is_empty());
    // A new member joins, then leaves before the phase ends; the old ones never rejoin.
    let (_, _) = f.join(&join_req(""));
    let (codes, _) = leave(&mut f.g, &[("client-3".into(), None)], &f.cfg, &f.clock);
    assert_eq!(codes, vec![errors::NONE]);
    f.advance(REBALANCE);
    let JoinTimer::Fired(fx) = f.fire_join_timer() else {
        panic!("the rebalance timeout passed")
    };
    assert!(fx.persist_group);
    assert_eq!(f.g.state, GroupState::Empty);
    assert_eq!(f.g.generation, 2);
}

#[test]
fn a_join_timer_of_an_earlier_rebalance_does_nothing() {
    let mut f = Fixture::stable_pair();
    let old = f.g.rebalance_seq;
    f.join(&join_req("client-1"));
    f.advance(REBALANCE);
    assert!(matches!(
        join_timer(&mut f.g, old, &f.clock),
        JoinTimer::Stale
    ));
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
}

// ---------------------------------------------------------------------------------------------
// Static members

fn stable_static() -> Fixture {
    let mut f = Fixture::new();
    f.join(&static_req("", "i1"));
    f.advance(DELAY);
    f.fire_join_timer();
    f.sync("i1-1", 1, &[("i1-1", "a")]);
    sync_persisted(&mut f.g, 1, errors::NONE, &f.cfg, &f.clock);
    assert_eq!(f.g.state, GroupState::Stable);
    f
}

#[test]
fn a_static_member_rejoining_unchanged_takes_over_without_a_rebalance_and_fences_its_old_id() {
    let mut f = stable_static();
    let r = done(f.join(&static_req("", "i1")).0);
    assert_eq!((r.error, r.member_id.as_str()), (errors::NONE, "i1-2"));
    assert!(r.skip_assignment, "the leader keeps the current assignment");
    assert_eq!(f.g.state, GroupState::Stable);
    assert_eq!(f.g.leader.as_deref(), Some("i1-2"));
    let old = heartbeat(&mut f.g, 1, "i1-1", Some("i1"), &f.clock);
    assert_eq!(old, errors::FENCED_INSTANCE_ID);
    let (out, _) = sync(
        &mut f.g,
        &SyncParams {
            group_id: "g".into(),
            generation: 1,
            member_id: "i1-1".into(),
            instance_id: Some("i1".into()),
            protocol_type: None,
            protocol: None,
            assignments: Vec::new(),
        },
        &f.clock,
    );
    assert!(matches!(out, SyncOutcome::Done(r) if r.error == errors::FENCED_INSTANCE_ID));
}

#[test]
fn a_join_with_a_known_instance_id_and_another_member_id_is_fenced() {
    let mut f = stable_static();
    let r = done(f.join(&static_req("someone-else", "i1")).0);
    assert_eq!(r.error, errors::FENCED_INSTANCE_ID);
}

#[test]
fn a_static_member_taking_over_a_parked_join_fences_the_parked_request() {
    let mut f = Fixture::new();
    f.join(&static_req("", "i1"));
    f.join(&join_req(""));
    f.advance(DELAY);
    f.fire_join_timer();
    // i1-1 rejoins with a new subscription and waits for client-2 to rejoin.
    let (out, _) = f.join(&JoinParams {
        protocols: vec![("range".into(), Bytes::from_static(b"new-sub"))],
        ..static_req("i1-1", "i1")
    });
    assert_eq!(out, JoinOutcome::Wait);
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    let (out, fx) = f.join(&static_req("", "i1"));
    assert_eq!(out, JoinOutcome::Wait);
    assert_eq!(
        fx.actions[0],
        Effect::JoinReply(
            "i1-1".into(),
            JoinResult::error(errors::FENCED_INSTANCE_ID, "i1-1")
        )
    );
    assert_eq!(fx.actions[1], Effect::ParkJoin("i1-3".into()));
    assert_eq!(f.g.member("i1-3").map(|m| m.awaiting_join), Some(true));
    assert!(f.g.member("i1-1").is_none());
}

#[test]
fn a_leave_by_instance_id_with_another_member_id_is_fenced() {
    let mut f = stable_static();
    let (codes, _) = leave(
        &mut f.g,
        &[
            ("wrong".into(), Some("i1".into())),
            (String::new(), Some("unknown".into())),
        ],
        &f.cfg,
        &f.clock,
    );
    assert_eq!(
        codes,
        vec![errors::FENCED_INSTANCE_ID, errors::UNKNOWN_MEMBER_ID]
    );
    let (codes, fx) = leave(
        &mut f.g,
        &[(String::new(), Some("i1".into()))],
        &f.cfg,
        &f.clock,
    );
    assert_eq!(codes, vec![errors::NONE]);
    assert!(fx.persist_group, "the last member left: the group is empty");
    assert_eq!(f.g.state, GroupState::Empty);
}

// ---------------------------------------------------------------------------------------------
// Heartbeats, leaving, session expiry

#[test]
fn heartbeats_answer_by_state_and_generation() {
    let mut f = Fixture::stable_pair();
    let c = f.clock;
    assert_eq!(heartbeat(&mut f.g, 1, "client-2", None, &c), errors::NONE);
    assert_eq!(
        heartbeat(&mut f.g, 0, "client-2", None, &c),
        errors::ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut f.g, 1, "stranger", None, &c),
        errors::UNKNOWN_MEMBER_ID
    );
    f.join(&join_req("client-1"));
    assert_eq!(
        heartbeat(&mut f.g, 1, "client-2", None, &c),
        errors::REBALANCE_IN_PROGRESS
    );
}

#[test]
fn a_heartbeat_pushes_the_session_deadline_later() {
    let mut f = Fixture::stable_pair();
    f.advance(SESSION / 2);
    heartbeat(&mut f.g, 1, "client-1", None, &f.clock);
    heartbeat(&mut f.g, 1, "client-2", None, &f.clock);
    assert_eq!(next_session_deadline(&f.g), Some(f.clock.now + SESSION));
}

#[test]
fn a_member_whose_session_ran_out_is_removed_and_the_group_rebalances() {
    let mut f = Fixture::stable_pair();
    f.advance(SESSION / 2);
    heartbeat(&mut f.g, 1, "client-1", None, &f.clock);
    f.advance(SESSION / 2);
    // Exactly at the deadline the session has not run out yet.
    let (expired, fx) = expire_sessions(&mut f.g, &f.cfg, &f.clock);
    assert!(expired.is_empty() && fx.is_empty());
    f.advance(Duration::from_millis(1));
    let (expired, fx) = expire_sessions(&mut f.g, &f.cfg, &f.clock);
    assert_eq!(expired, vec!["client-2".to_string()]);
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
    assert!(fx.join_timer.is_some());
    assert_eq!(f.g.members.len(), 1);
}

#[test]
fn a_member_with_a_parked_request_does_not_expire() {
    let mut f = Fixture::stable_pair();
    f.join(&join_req("client-1"));
    f.advance(SESSION * 2);
    let (expired, _) = expire_sessions(&mut f.g, &f.cfg, &f.clock);
    assert_eq!(expired, vec!["client-2".to_string()]);
    // client-1 waits in JoinGroup, and was the only one left: the phase completes.
    assert_eq!(f.g.state, GroupState::CompletingRebalance);
    assert_eq!(f.g.member("client-1").map(|m| m.awaiting_join), Some(false));
}

#[test]
fn a_leave_during_a_rebalance_answers_the_leaver_and_completes_the_phase_for_the_rest() {
    let mut f = Fixture::stable_pair();
    f.join(&join_req("client-1"));
    let (codes, fx) = leave(&mut f.g, &[("client-2".into(), None)], &f.cfg, &f.clock);
    assert_eq!(codes, vec![errors::NONE]);
    assert_eq!(
        join_replies(&fx),
        vec![("client-1".into(), errors::NONE, 2)]
    );
    assert_eq!(f.g.state, GroupState::CompletingRebalance);
    // A parked member leaving gets UNKNOWN_MEMBER_ID on its JoinGroup.
    let mut f = Fixture::stable_pair();
    f.join(&join_req("client-1"));
    let (_, fx) = leave(&mut f.g, &[("client-1".into(), None)], &f.cfg, &f.clock);
    assert_eq!(
        join_replies(&fx),
        vec![("client-1".into(), errors::UNKNOWN_MEMBER_ID, -1)]
    );
    assert_eq!(f.g.leader.as_deref(), Some("client-2"));
}

#[test]
fn a_leave_while_completing_fails_the_parked_syncs_and_rebalances() {
    let mut f = Fixture::new();
    f.join(&join_req(""));
    f.join(&join_req(""));
    f.advance(DELAY);
    f.fire_join_timer();
    f.sync("client-2", 1, &[]);
    let (_, fx) = leave(&mut f.g, &[("client-1".into(), None)], &f.cfg, &f.clock);
    assert_eq!(
        sync_replies(&fx),
        vec![(
            "client-2".into(),
            errors::REBALANCE_IN_PROGRESS,
            Bytes::new()
        )]
    );
    assert_eq!(f.g.leader.as_deref(), Some("client-2"));
    assert_eq!(f.g.state, GroupState::PreparingRebalance);
}

#[test]
fn a_leave_of_an_unknown_member_changes_nothing() {
    let mut f = Fixture::stable_pair();
    let (codes, fx) = leave(&mut f.g, &[("stranger".into(), None)], &f.cfg, &f.clock);
    assert_eq!(codes, vec![errors::UNKNOWN_MEMBER_ID]);
    assert!(fx.is_empty());
    assert_eq!(f.g.state, GroupState::Stable);
}

// ---------------------------------------------------------------------------------------------
// Offset commits and deletion

#[test]
fn commits_are_checked_against_member_generation_and_state() {
    let mut f = Fixture::stable_pair();
    let c = f.clock;
    assert_eq!(check_commit(&mut f.g, 1, "client-1", None, &c), Ok(()));
    assert_eq!(
        check_commit(&mut f.g, 0, "client-1", None, &c),
        Err(errors::ILLEGAL_GENERATION)
    );
    assert_eq!(
        check_commit(&mut f.g, 1, "stranger", None, &c),
        Err(errors::UNKNOWN_MEMBER_ID)
    );
    // Without group management a commit to a group with members is from an unknown member.
    assert_eq!(
        check_commit(&mut f.g, -1, "", None, &c),
        Err(errors::UNKNOWN_MEMBER_ID)
    );
    f.join(&join_req("client-1"));
    assert_eq!(check_commit(&mut f.g, 1, "client-2", None, &c), Ok(()));
    f.join(&join_req("client-2"));
    assert_eq!(f.g.state, GroupState::CompletingRebalance);
    assert_eq!(
        check_commit(&mut f.g, 2, "client-2", None, &c),
        Err(errors::REBALANCE_IN_PROGRESS)
    );
}

#[test]
fn a_commit_counts_as_a_heartbeat() {
    let mut f = Fixture::stable_pair();
    f.advance(SESSION);
    check_commit(&mut f.g, 1, "client-1", None, &f.clock).unwrap();
    heartbeat(&mut f.g, 1, "client-2", None, &f.clock);
    f.advance(Duration::from_millis(1));
    let (expired, _) = expire_sessions(&mut f.g, &f.cfg, &f.clock);
    assert!(expired.is_empty());
}

#[test]
fn a_commit_without_group_management_is_accepted_only_by_an_empty_group() {
    let mut f = Fixture::new();
    assert_eq!(check_commit(&mut f.g, -1, "", None, &f.clock), Ok(()));
    begin_delete(&mut f.g, &f.clock).unwrap();
    assert_eq!(
        check_commit(&mut f.g, -1, "", None, &f.clock),
        Err(errors::COORDINATOR_NOT_AVAILABLE)
    );
}

#[test]
fn only_an_empty_group_may_be_deleted_and_a_failed_delete_restores_it() {
    let mut f = Fixture::stable_pair();
    assert_eq!(
        begin_delete(&mut f.g, &f.clock),
        Err(errors::NON_EMPTY_GROUP)
    );
    let mut f = Fixture::new();
    f.g.offsets.insert(
        ("t".into(), 0),
        OffsetValue {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        },
    );
    assert_eq!(begin_delete(&mut f.g, &f.clock), Ok(()));
    assert_eq!(f.g.state, GroupState::Dead);
    assert_eq!(
        begin_delete(&mut f.g, &f.clock),
        Err(errors::GROUP_ID_NOT_FOUND)
    );
    delete_failed(&mut f.g, &f.clock);
    assert_eq!(f.g.state, GroupState::Empty);
}

#[test]
fn state_changes_stamp_the_injected_wall_clock() {
    let mut f = Fixture::new();
    f.advance(Duration::from_secs(7));
    f.join(&join_req(""));
    assert_eq!(f.g.state_timestamp, 1_700_000_007_000);
}
