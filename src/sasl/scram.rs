//! The server side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks it:
//! no channel binding, credentials kept as salted keys (never the password). A pure exchange:
//! the caller brings the client's messages, the credential lookup and the server nonce, and
//! gets back the messages to send, so it runs on any shard without I/O of its own.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

/// Kafka's bounds on SCRAM iterations (`ScramMechanism.minIterations` / `maxIterations`).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;
/// Longest client message taken (Kafka's usernames and nonces are short; this bounds parsing).
const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    /// Kafka's mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    pub(crate) fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    pub(crate) fn len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }
}

/// What the broker keeps of a user's password for one mechanism (Kafka's `ScramCredential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The credential of `password` (RFC 5802: SaltedPassword, then ClientKey → StoredKey and
    /// ServerKey). `iterations` is checked against Kafka's bounds.
    pub fn from_password(
        mech: Mechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Credential, ScramError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::BadIterations(iterations));
        }
        let salted = salted_password(mech, password, salt, iterations);
        Ok(Credential::from_salted(mech, &salted, salt, iterations))
    }

    /// The credential of an already salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(mech: Mechanism, salted: &[u8], salt: &[u8], iterations: u32) -> Credential {
        let client_key = mac(mech, salted, b"Client Key");
        let stored_key = digest::digest(mech.digest(), &client_key).as_ref().to_vec();
        let server_key = mac(mech, salted, b"Server Key");
        Credential {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        }
    }
}

pub(crate) fn salted_password(
    mech: Mechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0u8; mech.len()];
    let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(mech.pbkdf2(), rounds, salt, password, &mut out);
    out
}

pub(crate) fn mac(mech: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(mech.hmac(), key), data)
        .as_ref()
        .to_vec()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM extensions are not supported")]
    Extension,
    #[error("authentication failed: invalid credentials")]
    BadProof,
    #[error("SCRAM iterations {0} outside {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    BadIterations(u32),
}

/// After the client's first message: what the server sent, waiting for the client's proof.
#[derive(Debug)]
pub struct AwaitingProof {
    mech: Mechanism,
    user: String,
    /// None: an unknown user, answered with a made-up salt so it looks like any other; the
    /// proof then fails.
    credential: Option<Credential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// The combined nonce: the client's, then the server's.
    nonce: String,
    /// How much of `nonce` is the client's.
    client_nonce_len: usize,
}

impl AwaitingProof {
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the client-final nonce is the combined nonce. librdkafka before 2.6.1 (Debian
    /// 12's kcat has 2.0.2) sends its own nonce once more in front of it; Kafka accepts that
    /// since 3.8.1 (any prefix: `endsWith`). Only that one known prefix is taken here. The proof
    /// covers the message as sent, so the server's nonce is still what makes it fresh.
    fn echoed(&self, nonce: &str) -> bool {
        nonce == self.nonce
            || nonce.strip_suffix(self.nonce.as_str()) == Some(&self.nonce[..self.client_nonce_len])
    }
}

/// Takes the client's first message (`n,,n=user,r=nonce`): returns the server's first message
/// and the state that checks the proof. `lookup` gives the user's credential; `server_nonce` is
/// fresh random printable text (`server_nonce()`); `decoy_salt` answers an unknown user.
pub fn server_first(
    mech: Mechanism,
    client_first: &[u8],
    lookup: impl FnOnce(&str) -> Option<Credential>,
    server_nonce: &str,
    decoy_salt: &[u8],
) -> Result<(AwaitingProof, String), ScramError> {
    if client_first.len() > MAX_MESSAGE {
        return Err(ScramError::Malformed("message too long"));
    }
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header: cbind-flag "," [authzid] ","
    let (flag, rest) = text
        .split_once(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    let authzid = match authzid {
        "" => None,
        a => Some(decode_name(
            a.strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authzid"))?,
        )?),
    };
    let gs2_header = format!("{flag},{},", authzid_text(rest));
    let mut attrs = bare.split(',');
    let user = match attrs.next() {
        Some(a) if a.starts_with("m=") => return Err(ScramError::Extension),
        Some(a) => decode_name(
            a.strip_prefix("n=")
                .ok_or(ScramError::Malformed("no user"))?,
        )?,
        None => return Err(ScramError::Malformed("no user")),
    };
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(is_nonce_char))
        .ok_or(ScramError::Malformed("bad nonce"))?;
    // Further attributes are extensions; Kafka's only one is `tokenauth`, for delegation tokens.
    if attrs.next().is_some() {
        return Err(ScramError::Extension);
    }
    if authzid.as_deref().is_some_and(|a| a != user) {
        return Err(ScramError::Malformed("authzid differs from the user"));
    }
    let credential = lookup(&user);
    let (salt, iterations) = match &credential {
        Some(c) => (c.salt.as_slice(), c.iterations),
        None => (decoy_salt, MIN_ITERATIONS),
    };
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
    let state = AwaitingProof {
        mech,
        user,
        credential,
        gs2_header,
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
        nonce,
        client_nonce_len: client_nonce.len(),
    };
    Ok((state, server_first))
}

/// The authzid part of the GS2 header as the client wrote it (`a=…` or empty).
fn authzid_text(rest_after_flag: &str) -> &str {
    rest_after_flag.split(',').next().unwrap_or("")
}

/// Takes the client's final message (`c=…,r=…,p=…`): the server's final message (`v=…`) if the
/// proof is right.
pub fn server_final(state: &AwaitingProof, client_final: &[u8]) -> Result<String, ScramError> {
    if client_final.len() > MAX_MESSAGE {
        return Err(ScramError::Malformed("message too long"));
    }
    let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or(ScramError::Malformed("no proof"))?;
    let mut attrs = without_proof.split(',');
    let binding = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(ScramError::Malformed("no channel binding"))?;
    let binding = B64
        .decode(binding)
        .map_err(|_| ScramError::Malformed("bad channel binding"))?;
    if binding != state.gs2_header.as_bytes() {
        return Err(ScramError::Malformed(
            "channel binding differs from the GS2 header",
        ));
    }
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("no nonce"))?;
    if !state.echoed(nonce) {
        return Err(ScramError::Malformed("nonce differs"));
    }
    if attrs.next().is_some() {
        return Err(ScramError::Extension);
    }
    let proof = B64
        .decode(proof)
        .map_err(|_| ScramError::Malformed("bad proof"))?;
    let Some(cred) = &state.credential else {
        return Err(ScramError::BadProof);
    };
    let auth_message = format!(
        "{},{},{without_proof}",
        state.client_first_bare, state.server_first
    );
    let client_signature = mac(state.mech, &cred.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Err(ScramError::BadProof);
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    let stored = digest::digest(state.mech.digest(), &client_key);
    if !bool::from(stored.as_ref().ct_eq(&cred.stored_key)) {
        return Err(ScramError::BadProof);
    }
    let server_signature = mac(state.mech, &cred.server_key, auth_message.as_bytes());
    Ok(format!("v={}", B64.encode(server_signature)))
}

/// 32 random printable characters for the server's part of the nonce.
pub fn server_nonce() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    // The system RNG does not fail on Linux; a zero nonce would still be unique per client nonce.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    B64.encode(bytes).replace(',', "-")
}

/// printable = %x21-2B / %x2D-7E (no comma).
pub(crate) fn is_nonce_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// saslname: `=2C` is a comma, `=3D` an equals sign; any other `=` is malformed.
fn decode_name(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(ScramError::Malformed("empty name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        match esc {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn the_rfc_7677_example_exchange_succeeds_with_the_rfcs_server_signature() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let cred = Credential::from_password(Mechanism::Sha256, b"pencil", &salt, 4096)
            .expect("credential");
        let (state, first) = server_first(
            Mechanism::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| cred.clone()),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            b"decoy",
        )
        .expect("first");
        assert_eq!(
            first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = server_final(
            &state,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .expect("final");
        assert_eq!(last, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// The client side of the exchange, as a Kafka client computes it.
    fn client_final(
        mech: Mechanism,
        password: &[u8],
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        client_final_with_prefix(mech, password, client_first_bare, server_first, "")
    }

    /// A client-final message whose nonce has `prefix` in front of the combined nonce, with the
    /// proof computed over it as sent (what librdkafka before 2.6.1 does with its own nonce).
    fn client_final_with_prefix(
        mech: Mechanism,
        password: &[u8],
        client_first_bare: &str,
        server_first: &str,
        prefix: &str,
    ) -> String {
        let mut parts = server_first.split(',');
        let nonce = parts.next().unwrap().strip_prefix("r=").unwrap();
        let nonce = format!("{prefix}{nonce}");
        let salt = B64
            .decode(parts.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = parts
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted = salted_password(mech, password, &salt, iterations);
        let client_key = mac(mech, &salted, b"Client Key");
        let stored_key = digest::digest(mech.digest(), &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mac(mech, stored_key.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn scram_sha_512_accepts_the_right_password_and_refuses_a_wrong_one() {
        let cred = Credential::from_password(Mechanism::Sha512, b"s3cret", b"saltsalt", 4096)
            .expect("credential");
        for (password, ok) in [(&b"s3cret"[..], true), (&b"wrong"[..], false)] {
            let (state, first) = server_first(
                Mechanism::Sha512,
                b"n,,n=alice,r=abc123",
                |_| Some(cred.clone()),
                &server_nonce(),
                b"decoy",
            )
            .expect("first");
            let last = client_final(Mechanism::Sha512, password, "n=alice,r=abc123", &first);
            assert_eq!(server_final(&state, last.as_bytes()).is_ok(), ok);
        }
    }

    #[test]
    fn an_unknown_user_gets_a_normal_looking_challenge_and_then_fails() {
        let (state, first) = server_first(
            Mechanism::Sha256,
            b"n,,n=nobody,r=xyz",
            |_| None,
            "srv",
            b"decoy-salt",
        )
        .expect("first");
        assert!(first.starts_with("r=xyzsrv,s=") && first.ends_with(",i=4096"));
        let last = client_final(Mechanism::Sha256, b"any", "n=nobody,r=xyz", &first);
        assert_eq!(
            server_final(&state, last.as_bytes()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn malformed_or_unsupported_client_messages_are_errors() {
        let first =
            |m: &[u8]| server_first(Mechanism::Sha256, m, |_| None, "s", b"d").map(|(_, f)| f);
        assert_eq!(
            first(b"p=tls-unique,,n=u,r=x"),
            Err(ScramError::ChannelBinding)
        );
        assert_eq!(first(b"n,,m=ext,n=u,r=x"), Err(ScramError::Extension));
        assert_eq!(
            first(b"n,,n=u,r=x,tokenauth=true"),
            Err(ScramError::Extension)
        );
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,n=,r=x",
            b"n,,n=u",
            b"n,,n=u,r=",
            b"n,,n=a=5,r=x",
            b"q,,n=u,r=x",
            b"n,a=other,n=u,r=x",
            &[0xff, 0xfe],
        ] {
            assert!(
                matches!(first(bad), Err(ScramError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(first(&vec![b'n'; MAX_MESSAGE + 1]).is_err());
        assert!(first(b"n,a=u,n=u,r=x").is_ok());
    }

    #[test]
    fn a_final_message_with_another_nonce_or_binding_is_refused() {
        let cred = Credential::from_password(Mechanism::Sha256, b"pw", b"salt", 4096).unwrap();
        let (state, first) = server_first(
            Mechanism::Sha256,
            b"n,,n=u,r=abc",
            |_| Some(cred.clone()),
            "def",
            b"d",
        )
        .unwrap();
        let good = client_final(Mechanism::Sha256, b"pw", "n=u,r=abc", &first);
        assert!(server_final(&state, good.as_bytes()).is_ok());
        let other_nonce = good.replace("r=abcdef", "r=abcdeg");
        assert!(matches!(
            server_final(&state, other_nonce.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let other_binding = good.replace("c=biws", "c=eSws");
        assert!(matches!(
            server_final(&state, other_binding.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        assert!(server_final(&state, b"c=biws").is_err());
    }

    #[test]
    fn a_final_message_with_the_client_nonce_sent_twice_is_accepted_as_kafka_does() {
        let cred = Credential::from_password(Mechanism::Sha512, b"pw", b"salt", 4096).unwrap();
        let (state, first) = server_first(
            Mechanism::Sha512,
            b"n,,n=u,r=abc",
            |_| Some(cred.clone()),
            "def",
            b"d",
        )
        .unwrap();
        let doubled =
            client_final_with_prefix(Mechanism::Sha512, b"pw", "n=u,r=abc", &first, "abc");
        assert!(doubled.starts_with("c=biws,r=abcabcdef,p="));
        assert!(server_final(&state, doubled.as_bytes()).is_ok());
        // Any other prefix is refused, as is a wrong password with the doubled nonce.
        let other = client_final_with_prefix(Mechanism::Sha512, b"pw", "n=u,r=abc", &first, "xyz");
        assert!(matches!(
            server_final(&state, other.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let wrong = client_final_with_prefix(Mechanism::Sha512, b"no", "n=u,r=abc", &first, "abc");
        assert!(matches!(
            server_final(&state, wrong.as_bytes()),
            Err(ScramError::BadProof)
        ));
    }

    #[test]
    fn names_unescape_commas_and_equals_signs() {
        assert_eq!(decode_name("a=2Cb=3Dc"), Ok("a,b=c".to_string()));
        assert!(decode_name("a=").is_err());
        assert!(decode_name("a=2").is_err());
    }

    #[test]
    fn iterations_outside_kafkas_bounds_are_refused() {
        for i in [0, 4095, 16385] {
            assert_eq!(
                Credential::from_password(Mechanism::Sha256, b"p", b"s", i),
                Err(ScramError::BadIterations(i))
            );
        }
    }
}
