//! How a connection reaches a broker's listener, with Kafka's names: PLAINTEXT, SSL,
//! SASL_PLAINTEXT or SASL_SSL. TLS is rustls (the server's certificate checked against a CA
//! file and the address's host name); SASL is PLAIN or SCRAM-SHA-256/512 over SaslHandshake v1
//! and SaslAuthenticate, with the broker's own client side of those mechanisms
//! (`chronik::sasl::client`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chronik::sasl::client::{plain_message, ScramClient};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::Connection;

pub use chronik::config::listeners::SecurityProtocol;
pub use chronik::sasl::SaslMechanism;

/// `--security-protocol`: Kafka's names (the broker's own parser).
pub fn parse_security_protocol(s: &str) -> Result<SecurityProtocol, String> {
    SecurityProtocol::parse(s)
        .ok_or_else(|| format!("{s}: not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"))
}

/// `--sasl-mechanism`: Kafka's names (the broker's own parser).
pub fn parse_sasl_mechanism(s: &str) -> Result<SaslMechanism, String> {
    SaslMechanism::from_name(s)
        .ok_or_else(|| format!("{s}: not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// A SASL login: who, and how.
#[derive(Clone)]
pub struct SaslLogin {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

/// What every connection of a run does before its first request.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS client settings (SSL, SASL_SSL).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL login (SASL_PLAINTEXT, SASL_SSL).
    pub sasl: Option<SaslLogin>,
}

impl Security {
    /// Plaintext, no login.
    pub fn plaintext() -> Arc<Security> {
        Arc::new(Security::default())
    }

    /// From the command line's settings. The CA file (PEM) is what the brokers' certificates
    /// are checked against; TLS 1.2 and 1.3 as the broker offers.
    pub fn new(
        protocol: SecurityProtocol,
        ca_file: Option<&std::path::Path>,
        sasl: Option<SaslLogin>,
    ) -> Result<Arc<Security>> {
        let tls = if protocol.uses_tls() {
            let ca = ca_file
                .ok_or_else(|| anyhow!("--ssl-ca-file is needed for {}", protocol.name()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading {}", ca.display()))?
            {
                let cert = cert.with_context(|| format!("reading {}", ca.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate of {}", ca.display()))?;
            }
            if roots.is_empty() {
                bail!("{} holds no certificate", ca.display());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        let sasl = if protocol.uses_sasl() {
            Some(sasl.ok_or_else(|| {
                anyhow!(
                    "--sasl-username and --sasl-password are needed for {}",
                    protocol.name()
                )
            })?)
        } else {
            None
        };
        Ok(Arc::new(Security { tls, sasl }))
    }

    /// The name the broker's certificate must carry: the host of `addr` (`host:port`).
    pub fn server_name(addr: &str) -> Result<ServerName<'static>> {
        let host = match addr.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => addr,
        };
        ServerName::try_from(host.to_string()).map_err(|e| anyhow!("server name {host}: {e}"))
    }
}

/// Logs `conn` in (SaslHandshake v1, then SaslAuthenticate), as a Kafka client does right after
/// ApiVersions. A refused login is an error naming the broker's message.
pub async fn login(conn: &Connection, login: &SaslLogin, timeout: Duration) -> Result<()> {
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str(login.mechanism.name());
    let resp = conn.call(&hs, 1, timeout).await?;
    if resp.error_code != 0 {
        bail!(
            "{}: SaslHandshake {} refused (error {}; the broker offers {:?})",
            conn.addr(),
            login.mechanism.name(),
            resp.error_code,
            resp.mechanisms
                .iter()
                .map(|m| m.as_str().to_string())
                .collect::<Vec<_>>()
        );
    }
    let version = conn.version_of::<SaslAuthenticateRequest>(0, 2)?;
    let step = |bytes: Vec<u8>| async move {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = bytes.into();
        let resp = conn.call(&req, version, timeout).await?;
        if resp.error_code != 0 {
            bail!(
                "{}: SASL authentication failed (error {}): {}",
                conn.addr(),
                resp.error_code,
                resp.error_message
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("")
            );
        }
        Ok(resp.auth_bytes.to_vec())
    };
    match login.mechanism {
        SaslMechanism::Plain => {
            step(plain_message(&login.username, &login.password)).await?;
        }
        SaslMechanism::Scram(mech) => {
            let mut scram = ScramClient::new(mech.into(), &login.username, &login.password);
            let server_first = step(scram.first_message()).await?;
            let client_final = scram
                .final_message(&server_first)
                .map_err(|e| anyhow!("{}: SCRAM: {e}", conn.addr()))?;
            let server_final = step(client_final).await?;
            scram
                .check_server_final(&server_final)
                .map_err(|e| anyhow!("{}: SCRAM: {e}", conn.addr()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        let name = |a: &str| Security::server_name(a).map(|n| n.to_str().into_owned());
        assert_eq!(name("127.0.0.1:9093").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:9093").unwrap(), "::1");
        assert!(name("broker-1.example:9093")
            .unwrap()
            .contains("broker-1.example"));
        assert!(Security::server_name("bad name!:9093").is_err());
    }

    #[test]
    fn protocols_and_mechanisms_have_kafkas_names() {
        let p = |s: &str| parse_security_protocol(s).unwrap();
        assert_eq!(p("SASL_SSL"), SecurityProtocol::SaslSsl);
        assert_eq!(p("SASL_PLAINTEXT"), SecurityProtocol::SaslPlaintext);
        assert!(parse_security_protocol("TLS").is_err());
        let m = |s: &str| parse_sasl_mechanism(s).unwrap();
        assert_eq!(m("SCRAM-SHA-512").name(), "SCRAM-SHA-512");
        assert_eq!(m("PLAIN"), SaslMechanism::Plain);
        assert!(parse_sasl_mechanism("GSSAPI").is_err());
    }

    #[test]
    fn tls_needs_a_ca_file_and_sasl_needs_a_login() {
        let err = |r: Result<Arc<Security>>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(Security::new(SecurityProtocol::Ssl, None, None)).contains("--ssl-ca-file"));
        assert!(
            err(Security::new(SecurityProtocol::SaslPlaintext, None, None))
                .contains("--sasl-username")
        );
        let plain = Security::new(SecurityProtocol::Plaintext, None, None).unwrap();
        assert!(plain.tls.is_none() && plain.sasl.is_none());
    }
}
