//! The TLS settings of SSL listeners: PEM files and whether clients must show a certificate
//! (Kafka's `ssl.client.auth`).

use std::path::PathBuf;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    None,
    /// Asked; a client without one is served, one with a bad one is refused.
    Requested,
    /// A client without a certificate the CA vouches for is refused.
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Result<ClientAuth, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!(
                "ssl-client-auth must be none, requested or required, got `{other}`"
            )),
        }
    }
}

/// What SSL listeners serve with; read (and re-read on SIGHUP) by `net::tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The broker's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CAs that vouch for client certificates, PEM; needed only to verify clients.
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// What speaks TLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uses {
    /// Some listener is SSL or SASL_SSL.
    pub listener: bool,
    /// The inter-broker listener is (replica fetchers are TLS clients).
    pub inter_broker: bool,
    /// `--controller-tls`.
    pub controller: bool,
}

/// Checks the TLS settings against what uses them: an SSL listener or the controller port
/// needs a certificate and key, verifying clients or other brokers needs a CA.
pub fn resolve(
    uses: Uses,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_auth: &str,
) -> Result<Option<TlsFiles>, String> {
    let client_auth = ClientAuth::parse(client_auth)?;
    if !uses.listener && !uses.controller {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        let what = if uses.listener {
            "an SSL listener"
        } else {
            "--controller-tls"
        };
        return Err(format!(
            "{what} needs --ssl-cert-file and --ssl-key-file (PEM files)"
        ));
    };
    if uses.controller && ca.is_none() {
        return Err(
            "--controller-tls needs --ssl-ca-file: controllers verify each other's certificates"
                .into(),
        );
    }
    if uses.inter_broker && ca.is_none() {
        return Err(
            "an SSL inter-broker listener needs --ssl-ca-file to verify the other brokers".into(),
        );
    }
    if client_auth != ClientAuth::None && ca.is_none() {
        return Err(
            "ssl-client-auth requested or required needs --ssl-ca-file to verify clients".into(),
        );
    }
    Ok(Some(TlsFiles {
        cert,
        key,
        ca,
        client_auth,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_takes_kafkas_three_values() {
        assert_eq!(ClientAuth::parse("none"), Ok(ClientAuth::None));
        assert_eq!(ClientAuth::parse("Requested"), Ok(ClientAuth::Requested));
        assert_eq!(ClientAuth::parse("required"), Ok(ClientAuth::Required));
        assert!(ClientAuth::parse("yes").is_err());
    }

    #[test]
    fn an_ssl_listener_needs_a_certificate_and_key_and_client_auth_needs_a_ca() {
        let p = |s: &str| Some(PathBuf::from(s));
        let none = Uses::default();
        let listener = Uses {
            listener: true,
            ..none
        };
        let inter_broker = Uses {
            inter_broker: true,
            ..listener
        };
        assert_eq!(resolve(none, None, None, None, "none"), Ok(None));
        assert!(resolve(listener, p("c"), None, None, "none").is_err());
        assert!(resolve(listener, p("c"), p("k"), None, "required").is_err());
        let t = resolve(listener, p("c"), p("k"), p("ca"), "required")
            .unwrap()
            .unwrap();
        assert_eq!(t.client_auth, ClientAuth::Required);
        assert!(resolve(listener, p("c"), p("k"), None, "none")
            .unwrap()
            .is_some());
        // Brokers verify each other over an SSL inter-broker listener.
        assert!(resolve(inter_broker, p("c"), p("k"), None, "none").is_err());
        assert!(resolve(inter_broker, p("c"), p("k"), p("ca"), "none").is_ok());
    }

    #[test]
    fn controller_tls_needs_a_certificate_key_and_ca_even_without_an_ssl_listener() {
        let p = |s: &str| Some(PathBuf::from(s));
        let controller = Uses {
            controller: true,
            ..Uses::default()
        };
        assert!(resolve(controller, None, None, p("ca"), "none").is_err());
        assert!(resolve(controller, p("c"), p("k"), None, "none").is_err());
        assert!(resolve(controller, p("c"), p("k"), p("ca"), "none")
            .unwrap()
            .is_some());
    }
}
