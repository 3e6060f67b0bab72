//! The SASL settings of SASL_PLAINTEXT / SASL_SSL listeners: which mechanisms are offered, the
//! bootstrap users, the session lifetime (KIP-368), and how replica fetchers log in.

use crate::sasl::SaslMechanism;
use std::path::{Path, PathBuf};

/// Longest bootstrap-users file read (a few thousand users).
const MAX_BOOTSTRAP_FILE: u64 = 1 << 20;

/// How this broker's replica fetchers log in on a SASL inter-broker listener.
#[derive(Clone, PartialEq, Eq)]
pub struct InterBrokerLogin {
    pub mechanism: SaslMechanism,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for InterBrokerLogin {
    /// Without the password (the config is logged at debug level).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterBrokerLogin")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct SaslConfig {
    /// Offered on SASL listeners, in the order given.
    pub mechanisms: Vec<SaslMechanism>,
    /// `name:password` pairs of `--sasl-bootstrap-users`.
    pub bootstrap_users: Vec<(String, String)>,
    /// 0: sessions never expire.
    pub reauth_ms: u64,
    /// Set when the inter-broker listener is SASL.
    pub inter_broker: Option<InterBrokerLogin>,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self
            .bootstrap_users
            .iter()
            .map(|(u, _)| u.as_str())
            .collect();
        f.debug_struct("SaslConfig")
            .field("mechanisms", &self.mechanisms)
            .field("bootstrap_users", &users)
            .field("reauth_ms", &self.reauth_ms)
            .field("inter_broker", &self.inter_broker)
            .finish()
    }
}

/// `PLAIN,SCRAM-SHA-256,…` → the mechanisms, each once; an unknown one is an error.
pub fn parse_mechanisms(s: &str) -> Result<Vec<SaslMechanism>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m = SaslMechanism::from_name(&name.to_ascii_uppercase()).ok_or_else(|| {
            format!(
                "sasl-enabled-mechanisms: unknown mechanism `{name}` (PLAIN, SCRAM-SHA-256, \
                 SCRAM-SHA-512)"
            )
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err("sasl-enabled-mechanisms is empty".into());
    }
    Ok(out)
}

/// `name:password` lines (blank lines and `#` comments skipped); the password is everything
/// after the first colon.
pub fn parse_bootstrap_users(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (name, password) = line
            .split_once(':')
            .ok_or_else(|| format!("sasl-bootstrap-users line {}: not name:password", i + 1))?;
        let name = name.trim();
        chronik_raft::scram::user_name(name)
            .map_err(|e| format!("sasl-bootstrap-users line {}: {}", i + 1, e.message))?;
        if password.is_empty() {
            return Err(format!(
                "sasl-bootstrap-users line {}: empty password",
                i + 1
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!(
                "sasl-bootstrap-users line {}: user {name} is given twice",
                i + 1
            ));
        }
        out.push((name.to_string(), password.to_string()));
    }
    Ok(out)
}

fn read_small(path: &Path, what: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if meta.len() > MAX_BOOTSTRAP_FILE {
        return Err(format!("{what} {}: larger than 1 MiB", path.display()));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The settings as given, before checking.
pub struct SaslSettings<'a> {
    pub any_sasl_listener: bool,
    pub inter_broker_sasl: bool,
    pub mechanisms: &'a str,
    pub bootstrap_users: Option<PathBuf>,
    pub reauth_ms: u64,
    pub inter_broker_mechanism: &'a str,
    pub inter_broker_user: Option<String>,
    pub inter_broker_password_file: Option<PathBuf>,
}

pub fn resolve(s: SaslSettings) -> Result<SaslConfig, String> {
    let mechanisms = parse_mechanisms(s.mechanisms)?;
    let bootstrap_users = match &s.bootstrap_users {
        Some(p) => parse_bootstrap_users(&read_small(p, "sasl-bootstrap-users")?)?,
        None => Vec::new(),
    };
    let inter_broker = if s.inter_broker_sasl {
        let (Some(user), Some(file)) = (s.inter_broker_user, s.inter_broker_password_file) else {
            return Err(
                "a SASL inter-broker listener needs --sasl-inter-broker-user and \
                        --sasl-inter-broker-password-file"
                    .into(),
            );
        };
        let text = read_small(&file, "sasl-inter-broker-password-file")?;
        let password = text.lines().next().unwrap_or("").to_string();
        if password.is_empty() {
            return Err(format!(
                "sasl-inter-broker-password-file {}: the first line is empty",
                file.display()
            ));
        }
        let mechanism = SaslMechanism::from_name(&s.inter_broker_mechanism.to_ascii_uppercase())
            .ok_or_else(|| {
                format!(
                    "sasl-mechanism-inter-broker-protocol: unknown mechanism `{}`",
                    s.inter_broker_mechanism
                )
            })?;
        if !mechanisms.contains(&mechanism) {
            return Err(format!(
                "sasl-mechanism-inter-broker-protocol {} is not in --sasl-enabled-mechanisms",
                mechanism.name()
            ));
        }
        Some(InterBrokerLogin {
            mechanism,
            user,
            password,
        })
    } else {
        None
    };
    if !s.any_sasl_listener && !bootstrap_users.is_empty() {
        tracing::info!(
            "--sasl-bootstrap-users given without a SASL listener; users are still created"
        );
    }
    Ok(SaslConfig {
        mechanisms,
        bootstrap_users,
        reauth_ms: s.reauth_ms,
        inter_broker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronik_raft::scram::ScramMechanism;

    #[test]
    fn mechanisms_are_kafkas_three_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_mechanisms("PLAIN, scram-sha-512,PLAIN"),
            Ok(vec![
                SaslMechanism::Plain,
                SaslMechanism::Scram(ScramMechanism::Sha512)
            ])
        );
        assert!(parse_mechanisms("GSSAPI").is_err());
        assert!(parse_mechanisms(" , ").is_err());
    }

    #[test]
    fn bootstrap_users_are_name_colon_password_lines() {
        let u = parse_bootstrap_users("# admins\nadmin:pa:ss\n\nbob:x\r\n").expect("parse");
        assert_eq!(
            u,
            vec![
                ("admin".to_string(), "pa:ss".to_string()),
                ("bob".to_string(), "x".to_string())
            ]
        );
        assert!(parse_bootstrap_users("nopassword").is_err());
        assert!(parse_bootstrap_users("a:").is_err());
        assert!(parse_bootstrap_users(":pw").is_err());
        assert!(parse_bootstrap_users("a:1\na:2").is_err());
    }
}
