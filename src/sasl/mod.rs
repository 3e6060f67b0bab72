//! SASL on SASL_PLAINTEXT / SASL_SSL listeners (Kafka's SaslHandshake and SaslAuthenticate):
//! PLAIN and SCRAM-SHA-256/512 against the SCRAM credentials of the cluster metadata, which
//! every shard reads from its own image.
//!
//! - `plain`, `scram`: the mechanisms' exchanges (pure functions, no I/O).
//! - `session`: one connection's authentication state, fed the connection's frames.
//! - `client`: the broker's own login (replica fetchers on a SASL inter-broker listener).

pub mod client;
pub mod plain;
pub mod scram;
pub mod session;

use chronik_raft::scram::{ScramCredential, ScramMechanism};

/// A mechanism a SASL listener may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        match name {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::Scram(ScramMechanism::Sha256)),
            "SCRAM-SHA-512" => Some(SaslMechanism::Scram(ScramMechanism::Sha512)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

impl From<ScramMechanism> for scram::Mechanism {
    fn from(m: ScramMechanism) -> Self {
        match m {
            ScramMechanism::Sha256 => scram::Mechanism::Sha256,
            ScramMechanism::Sha512 => scram::Mechanism::Sha512,
        }
    }
}

impl From<&ScramCredential> for scram::Credential {
    fn from(c: &ScramCredential) -> Self {
        scram::Credential {
            salt: c.salt.clone(),
            iterations: c.iterations,
            stored_key: c.stored_key.clone(),
            server_key: c.server_key.clone(),
        }
    }
}

impl From<scram::Credential> for ScramCredential {
    fn from(c: scram::Credential) -> Self {
        ScramCredential {
            salt: c.salt,
            iterations: c.iterations,
            stored_key: c.stored_key,
            server_key: c.server_key,
        }
    }
}

/// A fresh random 32-byte salt for a new credential.
pub fn random_salt() -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut salt = vec![0u8; 32];
    // The system RNG does not fail on Linux.
    let _ = ring::rand::SystemRandom::new().fill(&mut salt);
    salt
}

/// The credentials of `password` for both SCRAM mechanisms with `iterations` (bootstrap users).
pub fn credentials_of(
    user: &str,
    password: &str,
    iterations: u32,
) -> Result<Vec<chronik_raft::scram::ScramUpsert>, scram::ScramError> {
    ScramMechanism::ALL
        .iter()
        .map(|&m| {
            let c = scram::Credential::from_password(
                m.into(),
                password.as_bytes(),
                &random_salt(),
                iterations,
            )?;
            Ok(chronik_raft::scram::ScramUpsert {
                user: user.to_string(),
                mechanism: m,
                credential: c.into(),
            })
        })
        .collect()
}
