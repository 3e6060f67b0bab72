//! Consumer groups for `--consumer-group` (consume mode) and the rebalance mode: real group
//! members speaking the classic protocol, each reading only the partitions it is assigned.
//!
//! - `protocol`: the embedded consumer protocol and the range assignor.
//! - `member`: one member's requests and their error handling.
//! - `runner`: a member at work (join, read, heartbeat, commit, rejoin on rebalance, leave).
//! - `board`: when each member got which generation (rebalance timing).
//! - `consumed`: which offsets each member read (exactly-once check across rebalances).

pub mod board;
pub mod consumed;
pub mod member;
pub mod protocol;
pub mod runner;

pub use member::{Assignment, GroupMember, MemberSettings};
pub use protocol::{decode_assignment, encode_assignment, range_assign};
