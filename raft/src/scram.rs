//! SCRAM credentials in the cluster metadata (Kafka's `UserScramCredentialRecord`): per user and
//! mechanism the salt, the iteration count, and the stored and server keys — never a password,
//! nor the salted password. Written by AlterUserScramCredentials and the bootstrap users, read
//! by every shard from its image to authenticate SASL clients.
//!
//! Every change is checked here before it is applied (on the proposing node first, then again
//! on every node while applying), so a hostile or stale proposal changes nothing.

use crate::command::{codes, MetaError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Kafka's bounds on SCRAM iterations (`ScramMechanism.minIterations` / `maxIterations`).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;
/// Longest user name kept (Kafka sets none; this bounds the image and every SCRAM exchange).
pub const MAX_USER_NAME: usize = 256;
/// Salt length bounds, bytes (Kafka refuses an empty salt; clients send 32 to 64 bytes).
pub const MAX_SALT: usize = 1024;
/// Most users the cluster keeps credentials for.
pub const MAX_USERS: usize = 100_000;
/// Most changes in one command (one AlterUserScramCredentials request).
pub const MAX_CHANGES: usize = 10_000;

/// Kafka's `ScramMechanism` type ids, as AlterUserScramCredentials carries them.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's wire id: 1 = SCRAM-SHA-256, 2 = SCRAM-SHA-512 (0 is UNKNOWN).
    pub fn from_type(t: i8) -> Option<ScramMechanism> {
        match t {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn type_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Length of its keys (the hash's output), bytes.
    pub fn key_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

/// What the broker keeps of one user's password for one mechanism.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// A user's credential to set (AlterUserScramCredentials upsertion, keys already derived).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramUpsert {
    pub user: String,
    pub mechanism: ScramMechanism,
    pub credential: ScramCredential,
}

/// A user's credential to remove.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramDelete {
    pub user: String,
    pub mechanism: ScramMechanism,
}

/// A user's credentials, by mechanism.
pub type UserCredentials = BTreeMap<ScramMechanism, ScramCredential>;

/// Every user's credentials, by user then mechanism. Carried in the image (and snapshots).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramUsers {
    /// Shared between consecutive images (publishing one clones the image): copied only when a
    /// command changes a credential. Serialized as the map itself.
    pub users: Arc<BTreeMap<String, UserCredentials>>,
    /// Set by the first `BootstrapScramUsers` applied: later ones (every node's restart with
    /// `--sasl-bootstrap-users`) change nothing.
    pub bootstrapped: bool,
}

impl ScramUsers {
    pub fn get(&self, user: &str, mech: ScramMechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mech)
    }

    /// Per user of the request (in the order first named), its outcome; a user with any
    /// refused change changes nothing. `Ok` results are applied unless `dry`.
    pub fn alter(
        &mut self,
        upserts: &[ScramUpsert],
        deletes: &[ScramDelete],
        dry: bool,
    ) -> Vec<(String, Result<(), MetaError>)> {
        let mut order: Vec<&str> = Vec::new();
        let mut named: BTreeSet<&str> = BTreeSet::new();
        let mut errors: BTreeMap<&str, MetaError> = BTreeMap::new();
        let too_many = upserts.len() + deletes.len() > MAX_CHANGES;
        let mut seen: BTreeSet<(&str, ScramMechanism)> = BTreeSet::new();
        let names = upserts
            .iter()
            .map(|u| (u.user.as_str(), u.mechanism))
            .chain(deletes.iter().map(|d| (d.user.as_str(), d.mechanism)));
        for (user, mech) in names {
            if named.insert(user) {
                order.push(user);
            }
            if too_many {
                errors.entry(user).or_insert_with(|| {
                    MetaError::new(
                        codes::INVALID_REQUEST,
                        format!("at most {MAX_CHANGES} credential changes per request"),
                    )
                });
            }
            if !seen.insert((user, mech)) {
                // Kafka: DUPLICATE_RESOURCE for a user's mechanism altered twice.
                errors.entry(user).or_insert_with(|| {
                    MetaError::new(
                        codes::DUPLICATE_RESOURCE,
                        "A user credential cannot be altered twice in the same request",
                    )
                });
            }
        }
        for u in upserts {
            if let Err(e) = check_upsert(u) {
                errors.entry(u.user.as_str()).or_insert(e);
            }
        }
        for d in deletes {
            let e = if let Err(e) = user_name(&d.user) {
                e
            } else if self.get(&d.user, d.mechanism).is_none() {
                MetaError::new(
                    codes::RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist",
                )
            } else {
                continue;
            };
            errors.entry(d.user.as_str()).or_insert(e);
        }
        // Room for the users this request adds.
        let mut count = self.users.len();
        for u in upserts {
            if errors.contains_key(u.user.as_str()) || self.users.contains_key(&u.user) {
                continue;
            }
            if count >= MAX_USERS {
                errors.entry(u.user.as_str()).or_insert_with(|| {
                    MetaError::new(
                        codes::UNACCEPTABLE_CREDENTIAL,
                        format!("the cluster keeps credentials for at most {MAX_USERS} users"),
                    )
                });
            } else {
                count += 1;
            }
        }
        let changes = upserts
            .iter()
            .map(|u| &u.user)
            .chain(deletes.iter().map(|d| &d.user))
            .any(|u| !errors.contains_key(u.as_str()));
        if !dry && changes {
            let users = Arc::make_mut(&mut self.users);
            for u in upserts {
                if !errors.contains_key(u.user.as_str()) {
                    users
                        .entry(u.user.clone())
                        .or_default()
                        .insert(u.mechanism, u.credential.clone());
                }
            }
            for d in deletes {
                if errors.contains_key(d.user.as_str()) {
                    continue;
                }
                if let Some(m) = users.get_mut(&d.user) {
                    m.remove(&d.mechanism);
                    if m.is_empty() {
                        users.remove(&d.user);
                    }
                }
            }
        }
        order
            .into_iter()
            .map(|u| (u.to_string(), errors.remove(u).map_or(Ok(()), Err)))
            .collect()
    }

    /// The bootstrap users, once per cluster: the first such command sets them (each checked
    /// as an upsertion; a refused one is skipped and reported) and marks the cluster
    /// bootstrapped; later ones change nothing and return no results.
    pub fn bootstrap(&mut self, upserts: &[ScramUpsert]) -> Vec<(String, Result<(), MetaError>)> {
        if self.bootstrapped {
            return Vec::new();
        }
        self.bootstrapped = true;
        let mut out = Vec::new();
        for u in upserts.iter().take(MAX_CHANGES) {
            let r = check_upsert(u).and_then(|()| {
                if !self.users.contains_key(&u.user) && self.users.len() >= MAX_USERS {
                    return Err(MetaError::new(
                        codes::UNACCEPTABLE_CREDENTIAL,
                        "too many users",
                    ));
                }
                Ok(())
            });
            if r.is_ok() {
                Arc::make_mut(&mut self.users)
                    .entry(u.user.clone())
                    .or_default()
                    .insert(u.mechanism, u.credential.clone());
            }
            out.push((u.user.clone(), r));
        }
        out
    }
}

/// Kafka refuses an empty user name (UNACCEPTABLE_CREDENTIAL); we also bound its length and
/// refuse control characters (they would be unreadable in logs and tools).
pub fn user_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty() {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            "Username must not be empty",
        ));
    }
    if name.len() > MAX_USER_NAME || name.chars().any(char::is_control) {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            format!("user names are 1 to {MAX_USER_NAME} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Kafka's checks of an upsertion (iterations within bounds, a salt) plus the shape of the keys.
pub fn check_upsert(u: &ScramUpsert) -> Result<(), MetaError> {
    user_name(&u.user)?;
    let c = &u.credential;
    if c.iterations < MIN_ITERATIONS {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            format!("Too few iterations (minimum {MIN_ITERATIONS})"),
        ));
    }
    if c.iterations > MAX_ITERATIONS {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            format!("Too many iterations (maximum {MAX_ITERATIONS})"),
        ));
    }
    if c.salt.is_empty() || c.salt.len() > MAX_SALT {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            format!("the salt must be 1 to {MAX_SALT} bytes"),
        ));
    }
    let n = u.mechanism.key_len();
    if c.stored_key.len() != n || c.server_key.len() != n {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            format!("{} keys are {n} bytes", u.mechanism.name()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(mech: ScramMechanism, iterations: u32) -> ScramCredential {
        ScramCredential {
            salt: b"salt".to_vec(),
            iterations,
            stored_key: vec![1; mech.key_len()],
            server_key: vec![2; mech.key_len()],
        }
    }

    fn up(user: &str, mech: ScramMechanism, iterations: u32) -> ScramUpsert {
        ScramUpsert {
            user: user.into(),
            mechanism: mech,
            credential: cred(mech, iterations),
        }
    }

    fn del(user: &str, mech: ScramMechanism) -> ScramDelete {
        ScramDelete {
            user: user.into(),
            mechanism: mech,
        }
    }

    fn code(r: &(String, Result<(), MetaError>)) -> i16 {
        r.1.as_ref().err().map_or(0, |e| e.code)
    }

    use ScramMechanism::{Sha256, Sha512};

    #[test]
    fn an_upsertion_within_kafkas_bounds_is_stored_and_a_deletion_removes_it() {
        let mut s = ScramUsers::default();
        let r = s.alter(
            &[up("alice", Sha256, 4096), up("alice", Sha512, 16384)],
            &[],
            false,
        );
        assert_eq!(r.len(), 1);
        assert_eq!(code(&r[0]), 0);
        assert_eq!(s.get("alice", Sha512).map(|c| c.iterations), Some(16384));
        let r = s.alter(&[], &[del("alice", Sha256), del("alice", Sha512)], false);
        assert_eq!(code(&r[0]), 0);
        assert!(s.users.is_empty());
    }

    #[test]
    fn bad_iterations_empty_names_and_bad_keys_are_unacceptable_credentials() {
        let mut s = ScramUsers::default();
        let mut short_key = up("c", Sha512, 4096);
        short_key.credential.stored_key.pop();
        let mut no_salt = up("d", Sha256, 4096);
        no_salt.credential.salt.clear();
        let r = s.alter(
            &[
                up("a", Sha256, 4095),
                up("b", Sha256, 16385),
                short_key,
                no_salt,
                up("", Sha256, 4096),
                up(&"x".repeat(MAX_USER_NAME + 1), Sha256, 4096),
            ],
            &[],
            false,
        );
        assert!(
            r.iter().all(|x| code(x) == codes::UNACCEPTABLE_CREDENTIAL),
            "{r:?}"
        );
        assert!(s.users.is_empty());
    }

    #[test]
    fn a_user_mechanism_named_twice_is_a_duplicate_and_changes_nothing_for_that_user() {
        let mut s = ScramUsers::default();
        let r = s.alter(
            &[up("a", Sha256, 4096), up("b", Sha256, 4096)],
            &[del("a", Sha256)],
            false,
        );
        assert_eq!(r[0].0, "a");
        assert_eq!(code(&r[0]), codes::DUPLICATE_RESOURCE);
        assert_eq!(code(&r[1]), 0);
        assert!(s.get("a", Sha256).is_none() && s.get("b", Sha256).is_some());
    }

    #[test]
    fn deleting_a_credential_that_does_not_exist_is_resource_not_found() {
        let mut s = ScramUsers::default();
        s.alter(&[up("a", Sha256, 4096)], &[], false);
        let r = s.alter(&[], &[del("a", Sha512), del("nobody", Sha256)], false);
        assert!(r.iter().all(|x| code(x) == codes::RESOURCE_NOT_FOUND));
        assert!(s.get("a", Sha256).is_some());
    }

    #[test]
    fn a_dry_run_reports_without_changing_anything() {
        let mut s = ScramUsers::default();
        let r = s.alter(&[up("a", Sha256, 4096)], &[], true);
        assert_eq!(code(&r[0]), 0);
        assert!(s.users.is_empty());
    }

    #[test]
    fn bootstrap_users_are_applied_once_per_cluster() {
        let mut s = ScramUsers::default();
        let r = s.bootstrap(&[up("admin", Sha512, 4096), up("bad", Sha512, 1)]);
        assert_eq!(code(&r[0]), 0);
        assert_eq!(code(&r[1]), codes::UNACCEPTABLE_CREDENTIAL);
        assert!(s.bootstrapped && s.get("admin", Sha512).is_some());
        s.alter(&[], &[del("admin", Sha512)], false);
        assert!(s.bootstrap(&[up("admin", Sha512, 4096)]).is_empty());
        assert!(
            s.get("admin", Sha512).is_none(),
            "a second bootstrap changes nothing"
        );
    }

    #[test]
    fn mechanism_type_ids_are_kafkas() {
        assert_eq!(ScramMechanism::from_type(1), Some(Sha256));
        assert_eq!(ScramMechanism::from_type(2), Some(Sha512));
        assert_eq!(ScramMechanism::from_type(0), None);
        assert_eq!(ScramMechanism::from_type(-1), None);
        assert_eq!(Sha512.type_id(), 2);
    }
}
