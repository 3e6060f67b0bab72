use super::*;
use crate::kafka::client::{decode_response, encode_request};
use crate::sasl::client::{plain_message, ScramClient};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

fn all() -> Arc<[SaslMechanism]> {
    Arc::from(vec![
        SaslMechanism::Plain,
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
    ])
}

fn auth(reauth_ms: u64) -> Authenticator {
    Authenticator::new(all(), reauth_ms, decoy_key())
}

fn store(user: &str, mech: ScramMechanism) -> Option<ScramCredential> {
    (user == "alice" || user == "bob").then(|| {
        scram::Credential::from_password(mech.into(), b"s3cret", b"salt", 4096)
            .expect("cred")
            .into()
    })
}

fn frame<R: Encodable + HeaderVersion>(key: ApiKey, v: i16, r: &R) -> Vec<u8> {
    encode_request(key, v, 7, "test", r).expect("encode")[4..].to_vec()
}

fn handshake(v: i16, mech: &str) -> Vec<u8> {
    let mut r = SaslHandshakeRequest::default();
    r.mechanism = StrBytes::from_string(mech.to_string());
    frame(ApiKey::SaslHandshake, v, &r)
}

fn authenticate(v: i16, token: &[u8]) -> Vec<u8> {
    let mut r = SaslAuthenticateRequest::default();
    r.auth_bytes = Bytes::copy_from_slice(token);
    frame(ApiKey::SaslAuthenticate, v, &r)
}

fn metadata() -> Vec<u8> {
    frame(ApiKey::Metadata, 12, &MetadataRequest::default())
}

/// `on_frame` as the connection uses it: a PLAIN password check (which the connection runs
/// off the shard) run here, then its verdict.
trait Judge {
    fn judge(&mut self, frame: &[u8], now: Instant, creds: &dyn Credentials) -> Verdict;
}

impl Judge for Authenticator {
    fn judge(&mut self, frame: &[u8], now: Instant, creds: &dyn Credentials) -> Verdict {
        match self.on_frame(frame, now, creds) {
            Verdict::CheckPlain(check) => {
                let ok = check.verify_here();
                self.finish_plain(check, ok, now)
            }
            v => v,
        }
    }
}

fn answer(v: Verdict) -> BytesMut {
    match v {
        Verdict::Answer(f) => f,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn response<R: Decodable>(key: ApiKey, v: i16, f: &[u8]) -> R {
    decode_response(key, v, 7, bytes::Bytes::copy_from_slice(&f[4..])).expect("decodes")
}

fn plain_login(a: &mut Authenticator, user: &str, pw: &str, now: Instant) -> Verdict {
    answer(a.judge(&handshake(1, "PLAIN"), now, &store));
    a.judge(&authenticate(2, &plain_message(user, pw)), now, &store)
}

#[test]
fn plain_with_the_right_password_logs_the_user_in_and_then_requests_are_served() {
    let mut a = auth(0);
    let now = Instant::now();
    let v = a.judge(
        &frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        now,
        &store,
    );
    assert!(matches!(v, Verdict::Serve), "ApiVersions before login");
    let f = answer(plain_login(&mut a, "alice", "s3cret", now));
    let r: SaslAuthenticateResponse = response(ApiKey::SaslAuthenticate, 2, &f);
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 0));
    assert_eq!(a.principal().as_deref(), Some("User:alice"));
    assert!(matches!(a.judge(&metadata(), now, &store), Verdict::Serve));
}

#[test]
fn a_wrong_password_is_sasl_authentication_failed_and_closes() {
    let mut a = auth(0);
    let now = Instant::now();
    let Verdict::Close(Some(f), _) = plain_login(&mut a, "alice", "wrong", now) else {
        panic!("closes with an answer");
    };
    let r: SaslAuthenticateResponse = response(ApiKey::SaslAuthenticate, 2, &f);
    assert_eq!(r.error_code, errors::SASL_AUTHENTICATION_FAILED);
    assert!(a.principal().is_none());
    let mut a = auth(0);
    assert!(matches!(
        plain_login(&mut a, "nobody", "s3cret", now),
        Verdict::Close(Some(_), _)
    ));
}

#[test]
fn a_request_before_login_closes_the_connection_without_an_answer() {
    let mut a = auth(0);
    assert!(matches!(
        a.judge(&metadata(), Instant::now(), &store),
        Verdict::Close(None, _)
    ));
    let mut a = auth(0);
    answer(a.judge(&handshake(1, "PLAIN"), Instant::now(), &store));
    assert!(matches!(
        a.judge(&metadata(), Instant::now(), &store),
        Verdict::Close(None, _)
    ));
}

#[test]
fn an_unknown_or_disabled_mechanism_is_answered_with_the_enabled_ones_and_closes() {
    let mut a = Authenticator::new(Arc::from(vec![SaslMechanism::Plain]), 0, decoy_key());
    for mech in ["GSSAPI", "SCRAM-SHA-256"] {
        let Verdict::Close(Some(f), _) = a.judge(&handshake(1, mech), Instant::now(), &store)
        else {
            panic!("closes with an answer");
        };
        let r: SaslHandshakeResponse = response(ApiKey::SaslHandshake, 1, &f);
        assert_eq!(r.error_code, errors::UNSUPPORTED_SASL_MECHANISM);
        assert_eq!(r.mechanisms, vec![StrBytes::from_static_str("PLAIN")]);
    }
}

#[test]
fn scram_over_sasl_authenticate_logs_in_and_the_client_verifies_the_server() {
    for (name, mech) in [
        ("SCRAM-SHA-256", ScramMechanism::Sha256),
        ("SCRAM-SHA-512", ScramMechanism::Sha512),
    ] {
        let mut a = auth(60_000);
        let now = Instant::now();
        answer(a.judge(&handshake(1, name), now, &store));
        let mut c = ScramClient::new(mech.into(), "bob", "s3cret");
        let f = answer(a.judge(&authenticate(1, &c.first_message()), now, &store));
        let r: SaslAuthenticateResponse = response(ApiKey::SaslAuthenticate, 1, &f);
        let last = c.final_message(&r.auth_bytes).expect("final");
        let f = answer(a.judge(&authenticate(1, &last), now, &store));
        let r: SaslAuthenticateResponse = response(ApiKey::SaslAuthenticate, 1, &f);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.session_lifetime_ms, 60_000);
        c.check_server_final(&r.auth_bytes)
            .expect("server signature");
        assert_eq!(a.principal().as_deref(), Some("User:bob"));
    }
}

#[test]
fn after_a_v0_handshake_the_tokens_are_bare_frames_both_ways() {
    let mut a = auth(0);
    let now = Instant::now();
    answer(a.judge(&handshake(0, "SCRAM-SHA-256"), now, &store));
    assert!(a.expects_raw_token());
    let mut c = ScramClient::new(scram::Mechanism::Sha256, "alice", "s3cret");
    let f = answer(a.judge(&c.first_message(), now, &store));
    let last = c.final_message(&f[4..]).expect("final");
    let f = answer(a.judge(&last, now, &store));
    c.check_server_final(&f[4..]).expect("server signature");
    assert_eq!(a.principal().as_deref(), Some("User:alice"));
    assert!(!a.expects_raw_token());
    // A wrong password over bare tokens: closed without an answer.
    let mut a = auth(0);
    answer(a.judge(&handshake(0, "PLAIN"), now, &store));
    assert!(matches!(
        a.judge(&plain_message("alice", "x"), now, &store),
        Verdict::Close(None, _)
    ));
}

#[test]
fn an_expired_session_closes_on_the_next_request_unless_the_client_logs_in_again() {
    let mut a = auth(1000);
    let t0 = Instant::now();
    answer(plain_login(&mut a, "alice", "s3cret", t0));
    let later = t0 + Duration::from_millis(1500);
    // Re-authentication as the same user renews the session.
    answer(plain_login(&mut a, "alice", "s3cret", later));
    assert!(matches!(
        a.judge(&metadata(), later, &store),
        Verdict::Serve
    ));
    let expired = later + Duration::from_millis(1001);
    assert!(matches!(
        a.judge(&metadata(), expired, &store),
        Verdict::Close(None, _)
    ));
    // Re-authentication as someone else fails.
    let mut a = auth(1000);
    answer(plain_login(&mut a, "alice", "s3cret", t0));
    assert!(matches!(
        plain_login(&mut a, "bob", "s3cret", t0),
        Verdict::Close(Some(_), _)
    ));
}

#[test]
fn hostile_frames_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let prefixes: Vec<Vec<u8>> = vec![
        handshake(1, "PLAIN"),
        handshake(0, "SCRAM-SHA-512"),
        authenticate(2, b"n,,n=alice,r=abc"),
        Vec::new(),
    ];
    for i in 0..20_000 {
        let mut a = auth(if i % 2 == 0 { 0 } else { 5 });
        let now = Instant::now();
        for step in 0..4 {
            let mut f = if step == 0 {
                prefixes[i % prefixes.len()].clone()
            } else {
                let n = rng.gen_range(0..64);
                (0..n).map(|_| rng.gen()).collect()
            };
            // Flip a few bytes of the well-formed ones too.
            for _ in 0..rng.gen_range(0..3) {
                if !f.is_empty() {
                    let j = rng.gen_range(0..f.len());
                    f[j] = rng.gen();
                }
            }
            if let Verdict::Close(..) = a.judge(&f, now, &store) {
                break;
            }
        }
    }
}

#[test]
fn an_unknown_user_gets_the_same_salt_from_every_authenticator_of_the_cluster() {
    let key = decoy_key_from(&[7u8; 32]);
    let salt_of = |user: &str| {
        let mut a = Authenticator::new(all(), 0, key.clone());
        answer(a.judge(&handshake(1, "SCRAM-SHA-256"), Instant::now(), &store));
        let first = format!("n,,n={user},r=abc");
        let f = answer(a.judge(&authenticate(2, first.as_bytes()), Instant::now(), &store));
        let r: SaslAuthenticateResponse = response(ApiKey::SaslAuthenticate, 2, &f);
        let text = String::from_utf8(r.auth_bytes.to_vec()).expect("utf8");
        text.split(',').nth(1).expect("salt").to_string()
    };
    assert_eq!(salt_of("nobody"), salt_of("nobody"));
    assert_ne!(salt_of("nobody"), salt_of("someone"));
}

#[test]
fn a_plain_password_is_checked_outside_on_frame_and_an_unknown_user_costs_the_same_check() {
    let now = Instant::now();
    for user in ["alice", "nobody"] {
        let mut a = auth(0);
        answer(a.judge(&handshake(1, "PLAIN"), now, &store));
        let v = a.on_frame(&authenticate(2, &plain_message(user, "x")), now, &store);
        let Verdict::CheckPlain(check) = v else {
            panic!("expected a password check for {user}, got {v:?}");
        };
        assert!(!check.verify_here());
        assert!(a.principal().is_none());
        let Verdict::Close(Some(f), _) = a.finish_plain(check, false, now) else {
            panic!("a failed PLAIN login closes with an answer");
        };
        let r: SaslAuthenticateResponse = response(ApiKey::SaslAuthenticate, 2, &f);
        assert_eq!(r.error_code, errors::SASL_AUTHENTICATION_FAILED);
    }
}
