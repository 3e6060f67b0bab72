//! SASL PLAIN (RFC 4616) as Kafka checks it: `[authzid] NUL user NUL password`, the authzid
//! empty or the user itself. The password is checked against the user's SCRAM credential
//! (the broker keeps no passwords), by deriving the key again with the credential's salt.

use super::scram::{Credential, Mechanism};
use subtle::ConstantTimeEq;

/// Longest PLAIN message taken: Kafka's usernames and passwords are short, and a PBKDF2 run per
/// attempt is what an attacker could make the broker do, not a long parse.
const MAX_MESSAGE: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRequest {
    pub user: String,
    pub password: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("malformed SASL/PLAIN message: {0}")]
    Malformed(&'static str),
    #[error("authorization id differs from the user")]
    OtherAuthzid,
}

pub fn parse(message: &[u8]) -> Result<PlainRequest, PlainError> {
    if message.len() > MAX_MESSAGE {
        return Err(PlainError::Malformed("message too long"));
    }
    let mut parts = message.splitn(3, |b| *b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed(
            "expected authzid NUL user NUL password",
        ));
    };
    if password.contains(&0) {
        return Err(PlainError::Malformed("NUL in the password"));
    }
    let user = std::str::from_utf8(user).map_err(|_| PlainError::Malformed("user not UTF-8"))?;
    if user.is_empty() || password.is_empty() {
        return Err(PlainError::Malformed("empty user or password"));
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(PlainError::OtherAuthzid);
    }
    Ok(PlainRequest {
        user: user.to_string(),
        password: password.to_vec(),
    })
}

/// Whether `password` is the one `credential` was made from.
pub fn password_matches(mech: Mechanism, credential: &Credential, password: &[u8]) -> bool {
    match Credential::from_password(mech, password, &credential.salt, credential.iterations) {
        Ok(c) => bool::from(c.stored_key.ct_eq(&credential.stored_key)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_message_gives_the_user_and_password() {
        let r = parse(b"\0alice\0s3cret").expect("parse");
        assert_eq!(r.user, "alice");
        assert_eq!(r.password, b"s3cret");
        assert_eq!(
            parse(b"alice\0alice\0pw").expect("same authzid").user,
            "alice"
        );
    }

    #[test]
    fn malformed_plain_messages_and_another_authzid_are_refused() {
        assert_eq!(parse(b"bob\0alice\0pw"), Err(PlainError::OtherAuthzid));
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0\0pw",
            b"\0alice\0",
            b"\0alice\0p\0w",
            b"\0\xff\0pw",
        ] {
            assert!(
                matches!(parse(bad), Err(PlainError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(parse(&vec![b'a'; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn the_password_is_checked_against_the_scram_credential() {
        for mech in [Mechanism::Sha256, Mechanism::Sha512] {
            let cred = Credential::from_password(mech, b"s3cret", b"salt", 4096).expect("cred");
            assert!(password_matches(mech, &cred, b"s3cret"));
            assert!(!password_matches(mech, &cred, b"s3cret "));
        }
    }
}
