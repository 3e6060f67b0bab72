//! The client side of PLAIN and SCRAM, for the broker's own login (replica fetchers on a SASL
//! inter-broker listener). Pure: the caller carries the messages over SaslAuthenticate.

use super::scram::{
    is_nonce_char, mac, salted_password, Mechanism, MAX_ITERATIONS, MIN_ITERATIONS,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::digest;
use subtle::ConstantTimeEq;

/// PLAIN's one message: `NUL user NUL password`.
pub fn plain_message(user: &str, password: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(user.len() + password.len() + 2);
    m.push(0);
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(password.as_bytes());
    m
}

/// One SCRAM login in progress.
pub struct ScramClient {
    mech: Mechanism,
    password: String,
    nonce: String,
    client_first_bare: String,
    /// The server signature the final message must carry, once the proof is sent.
    expected: Option<Vec<u8>>,
}

/// saslname: `,` and `=` escaped.
fn encode_name(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    pub fn new(mech: Mechanism, user: &str, password: &str) -> ScramClient {
        let nonce = super::scram::server_nonce();
        ScramClient {
            mech,
            password: password.to_string(),
            client_first_bare: format!("n={},r={nonce}", encode_name(user)),
            nonce,
            expected: None,
        }
    }

    /// `n,,n=user,r=nonce`.
    pub fn first_message(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Takes the server's first message (`r=…,s=…,i=…`), returns the final message with the
    /// proof. The iteration count is held to Kafka's bounds (a hostile server could otherwise
    /// make us hash for minutes).
    pub fn final_message(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first not UTF-8")?;
        let mut attrs = text.split(',');
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len())
            .filter(|n| n.bytes().all(is_nonce_char))
            .ok_or("server-first: bad nonce")?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .filter(|s| !s.is_empty())
            .ok_or("server-first: bad salt")?;
        let iterations: u32 = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
            .ok_or("server-first: bad iteration count")?;
        let salted = salted_password(self.mech, self.password.as_bytes(), &salt, iterations);
        let client_key = mac(self.mech, &salted, b"Client Key");
        let stored_key = digest::digest(self.mech.digest(), &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = mac(self.mech, stored_key.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mac(self.mech, &salted, b"Server Key");
        self.expected = Some(mac(self.mech, &server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message (`v=…`): the server knew our credential too.
    pub fn check_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let expected = self.expected.as_ref().ok_or("no proof sent yet")?;
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("server refused: {e}"));
        }
        let v = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or("server-final: no verifier")?;
        if bool::from(v.ct_eq(expected)) {
            Ok(())
        } else {
            Err("server-final: wrong server signature".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::scram::{server_final, server_first, Credential};

    #[test]
    fn the_client_logs_in_against_the_server_exchange_and_checks_its_signature() {
        for mech in [Mechanism::Sha256, Mechanism::Sha512] {
            let cred = Credential::from_password(mech, b"pw", b"salty", 4096).expect("cred");
            let mut c = ScramClient::new(mech, "bro,ker=1", "pw");
            let (state, first) = server_first(
                mech,
                &c.first_message(),
                |u| (u == "bro,ker=1").then(|| cred.clone()),
                "srvnonce",
                b"decoy",
            )
            .expect("server first");
            let last = c.final_message(first.as_bytes()).expect("final");
            let verifier = server_final(&state, &last).expect("accepted");
            c.check_server_final(verifier.as_bytes())
                .expect("server verified");
            assert!(c.check_server_final(b"v=AAAA").is_err());
        }
    }

    #[test]
    fn a_server_first_message_with_hostile_values_is_refused() {
        let mut c = ScramClient::new(Mechanism::Sha256, "u", "pw");
        let n = c.nonce.clone();
        for bad in [
            "".to_string(),
            format!("r={n}"),
            "r=other,s=c2FsdA==,i=4096".to_string(),
            format!("r={n}x,s=,i=4096"),
            format!("r={n}x,s=c2FsdA==,i=100000000"),
            format!("r={n}x,s=c2FsdA==,i=1"),
        ] {
            assert!(c.final_message(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
