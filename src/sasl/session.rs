//! One connection's SASL state on a SASL listener, as Kafka's `SaslServerAuthenticator` keeps
//! it. The connection hands every request frame here first (`on_frame`) and gets a verdict:
//! serve the request as usual, send this answer, or close.
//!
//! - Before authentication only ApiVersions, SaslHandshake and SaslAuthenticate are taken;
//!   any other request closes the connection (Kafka's IllegalSaslStateException).
//! - SaslHandshake v1 is followed by SaslAuthenticate requests; v0 by the mechanism's raw
//!   tokens, each a length-prefixed frame without a Kafka header, answered the same way.
//! - A failed login is answered SASL_AUTHENTICATION_FAILED (raw tokens: not answered), then
//!   the connection is closed. An unsupported mechanism is answered UNSUPPORTED_SASL_MECHANISM
//!   with the enabled ones, then closed.
//! - KIP-368: with `connections.max.reauth.ms` the session ends that long after login;
//!   SaslAuthenticate v1+ tells the client, which logs in again on the same connection
//!   (as the same user, with the same mechanism). A request other than SaslHandshake on an
//!   expired session closes the connection.
//!
//! Every byte here is the client's: frames are decoded totally (errors close the connection),
//! and the mechanisms bound their messages.

use super::plain;
use super::scram::{self, AwaitingProof, ScramError};
use super::SaslMechanism;
use crate::kafka::errors;
use crate::kafka::{decode, parse_header, RequestContext};
use bytes::Bytes;
use bytes::{BufMut, BytesMut};
use chronik_raft::scram::{ScramCredential, ScramMechanism};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest SASL token taken (PLAIN and SCRAM messages are well under; the mechanisms check
/// their own smaller bounds).
pub const MAX_TOKEN: usize = 8192;
const HANDSHAKE_MAX_VERSION: i16 = 1;
const AUTHENTICATE_MAX_VERSION: i16 = 2;

/// Where the session's credentials come from: the shard's image.
pub trait Credentials {
    fn scram(&self, user: &str, mech: ScramMechanism) -> Option<ScramCredential>;
}

impl<F: Fn(&str, ScramMechanism) -> Option<ScramCredential>> Credentials for F {
    fn scram(&self, user: &str, mech: ScramMechanism) -> Option<ScramCredential> {
        self(user, mech)
    }
}

/// What the connection does with a frame.
#[derive(Debug)]
pub enum Verdict {
    /// An ordinary request on an authenticated session (or ApiVersions before): serve it.
    Serve,
    /// Send this whole frame (length included) and go on reading.
    Answer(BytesMut),
    /// Send the frame, if any, then close.
    Close(Option<BytesMut>, String),
    /// A PLAIN password to check (milliseconds of PBKDF2): run `PlainCheck::verify_off_shard`,
    /// then hand the outcome to `Authenticator::finish_plain` for the verdict.
    CheckPlain(PlainCheck),
}

/// A PLAIN login waiting for its password check. PBKDF2 with thousands of rounds takes
/// milliseconds, long enough to stall every connection and partition of the shard, so the
/// connection runs it on the executor's blocking-thread pool instead.
#[derive(Debug)]
pub struct PlainCheck {
    user: String,
    /// The SaslAuthenticate request to answer; `None`: a bare token (after a v0 handshake).
    ctx: Option<RequestContext>,
    job: PlainJob,
}

/// The check itself: only owned, thread-safe data, so it can leave the shard.
#[derive(Debug, Clone)]
struct PlainJob {
    mech: scram::Mechanism,
    credential: scram::Credential,
    password: Vec<u8>,
}

impl PlainCheck {
    /// Runs the check on the calling thread (unit tests and fuzzing).
    pub fn verify_here(&self) -> bool {
        let j = &self.job;
        plain::password_matches(j.mech, &j.credential, &j.password)
    }

    /// Runs the check on the executor's blocking-thread pool; the shard serves meanwhile.
    pub async fn verify_off_shard(&self) -> bool {
        let j = self.job.clone();
        glommio::executor()
            .spawn_blocking(move || plain::password_matches(j.mech, &j.credential, &j.password))
            .await
    }
}

/// A logged-in session.
#[derive(Debug, Clone)]
struct Session {
    user: String,
    principal: Arc<str>,
    mech: SaslMechanism,
    /// None: never expires.
    expires: Option<Instant>,
}

#[derive(Debug)]
enum Step {
    /// Waiting for SaslHandshake.
    Start,
    /// The mechanism is chosen; its first message comes next (`raw`: as a bare token).
    Chosen { mech: SaslMechanism, raw: bool },
    /// SCRAM's server-first was sent; the client's proof comes next.
    ScramProof {
        mech: ScramMechanism,
        raw: bool,
        exchange: Box<AwaitingProof>,
    },
    /// Logged in; a SaslHandshake starts a re-authentication.
    Done,
}

pub struct Authenticator {
    enabled: Arc<[SaslMechanism]>,
    reauth: Option<Duration>,
    /// Keys the decoy salt of unknown users, so it stays the same across attempts, shards and
    /// nodes (a changing salt would tell an attacker the user does not exist).
    decoy_key: Arc<[u8; 32]>,
    step: Step,
    session: Option<Session>,
}

impl Authenticator {
    /// `reauth_ms` 0: sessions never expire.
    pub fn new(enabled: Arc<[SaslMechanism]>, reauth_ms: u64, decoy_key: Arc<[u8; 32]>) -> Self {
        Authenticator {
            enabled,
            reauth: (reauth_ms > 0).then(|| Duration::from_millis(reauth_ms)),
            decoy_key,
            step: Step::Start,
            session: None,
        }
    }

    /// `User:<name>` once logged in (kept while a re-authentication is under way).
    pub fn principal(&self) -> Option<Arc<str>> {
        self.session.as_ref().map(|s| s.principal.clone())
    }

    /// Whether frames are bare SASL tokens now (after a SaslHandshake v0): they may be shorter
    /// than a request header.
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.step,
            Step::Chosen { raw: true, .. } | Step::ScramProof { raw: true, .. }
        )
    }

    fn session_live(&self, now: Instant) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.expires.is_none_or(|t| now < t))
    }

    /// Judges one request frame (length removed).
    pub fn on_frame(&mut self, frame: &[u8], now: Instant, creds: &dyn Credentials) -> Verdict {
        if self.expects_raw_token() {
            return self.raw_token(frame, now, creds);
        }
        let key = match frame.get(..2) {
            Some(k) => i16::from_be_bytes([k[0], k[1]]),
            None => return close("frame shorter than a request header"),
        };
        let is_handshake = key == ApiKey::SaslHandshake as i16;
        let is_authenticate = key == ApiKey::SaslAuthenticate as i16;
        if !is_handshake && !is_authenticate {
            // Requests sent while a re-authentication is under way still have the session.
            if self.session_live(now) {
                return Verdict::Serve;
            }
            if self.session.is_some() {
                return close("SASL session expired without re-authentication");
            }
            if key == ApiKey::ApiVersions as i16 && matches!(self.step, Step::Start) {
                return Verdict::Serve;
            }
            return close(format!(
                "request with API key {key} before SASL authentication"
            ));
        }
        let mut body = BytesMut::from(frame);
        let ctx = match parse_header(&mut body, None) {
            Ok(c) => c,
            Err(e) => return close(e.to_string()),
        };
        if is_handshake {
            self.handshake(&ctx, body)
        } else {
            self.authenticate(&ctx, body, now, creds)
        }
    }

    fn handshake(&mut self, ctx: &RequestContext, body: BytesMut) -> Verdict {
        if !(0..=HANDSHAKE_MAX_VERSION).contains(&ctx.api_version) {
            return close(format!("SaslHandshake v{}", ctx.api_version));
        }
        match self.step {
            Step::Start => {}
            // KIP-368: a handshake on a logged-in connection starts a re-authentication.
            Step::Done if ctx.api_version >= 1 => self.step = Step::Start,
            _ => return close("SaslHandshake out of order"),
        }
        let req: SaslHandshakeRequest = match decode(body, ctx.api_version) {
            Ok(r) => r,
            Err(e) => return close(e.to_string()),
        };
        let wanted =
            SaslMechanism::from_name(req.mechanism.as_str()).filter(|m| self.enabled.contains(m));
        // Re-authentication keeps the mechanism (Kafka refuses a change).
        let wanted = match (&self.session, wanted) {
            (Some(s), Some(m)) if s.mech != m => None,
            (_, w) => w,
        };
        let mut resp = SaslHandshakeResponse::default();
        resp.mechanisms = match &self.session {
            Some(s) => vec![StrBytes::from_static_str(s.mech.name())],
            None => self
                .enabled
                .iter()
                .map(|m| StrBytes::from_static_str(m.name()))
                .collect(),
        };
        let Some(mech) = wanted else {
            resp.error_code = errors::UNSUPPORTED_SASL_MECHANISM;
            let why = format!("unsupported SASL mechanism {:?}", shown(&req.mechanism));
            return Verdict::Close(encoded(ctx, &resp), why);
        };
        self.step = Step::Chosen {
            mech,
            raw: ctx.api_version == 0,
        };
        match ctx.encode(&resp) {
            Ok(f) => Verdict::Answer(f),
            Err(e) => close(e.to_string()),
        }
    }

    fn authenticate(
        &mut self,
        ctx: &RequestContext,
        body: BytesMut,
        now: Instant,
        creds: &dyn Credentials,
    ) -> Verdict {
        if !(0..=AUTHENTICATE_MAX_VERSION).contains(&ctx.api_version) {
            return close(format!("SaslAuthenticate v{}", ctx.api_version));
        }
        if !matches!(
            self.step,
            Step::Chosen { raw: false, .. } | Step::ScramProof { raw: false, .. }
        ) {
            let mut resp = SaslAuthenticateResponse::default();
            resp.error_code = errors::ILLEGAL_SASL_STATE;
            resp.error_message = Some(StrBytes::from_static_str(
                "SaslAuthenticate before a SaslHandshake",
            ));
            return Verdict::Close(encoded(ctx, &resp), "SaslAuthenticate out of order".into());
        }
        let req: SaslAuthenticateRequest = match decode(body, ctx.api_version) {
            Ok(r) => r,
            Err(e) => return close(e.to_string()),
        };
        match self.exchange(&req.auth_bytes, now, creds) {
            Ok(Exchanged::CheckPlain(user, job)) => Verdict::CheckPlain(PlainCheck {
                user,
                ctx: Some(ctx.clone()),
                job,
            }),
            Ok(Exchanged::Token(token, done)) => self.respond(Some(ctx), Ok((token, done))),
            Err(why) => self.respond(Some(ctx), Err(why)),
        }
    }

    /// A bare token after SaslHandshake v0: answered as a bare token; a failure just closes.
    fn raw_token(&mut self, token: &[u8], now: Instant, creds: &dyn Credentials) -> Verdict {
        match self.exchange(token, now, creds) {
            Ok(Exchanged::CheckPlain(user, job)) => Verdict::CheckPlain(PlainCheck {
                user,
                ctx: None,
                job,
            }),
            Ok(Exchanged::Token(token, done)) => self.respond(None, Ok((token, done))),
            Err(why) => self.respond(None, Err(why)),
        }
    }

    /// The verdict on a PLAIN login once its password was checked (`ok`).
    pub fn finish_plain(&mut self, check: PlainCheck, ok: bool, now: Instant) -> Verdict {
        let outcome = if ok {
            self.logged_in(check.user, SaslMechanism::Plain, now)
                .map(|()| (Vec::new(), true))
        } else {
            Err("Authentication failed: Invalid username or password".into())
        };
        self.respond(check.ctx.as_ref(), outcome)
    }

    /// Answers one step: the token (and whether the login is complete) or the reason it
    /// failed, in a SaslAuthenticate response (`ctx`) or as a bare token (a failure then just
    /// closes).
    fn respond(
        &self,
        ctx: Option<&RequestContext>,
        outcome: Result<(Vec<u8>, bool), String>,
    ) -> Verdict {
        let Some(ctx) = ctx else {
            return match outcome {
                Ok((answer, _)) => {
                    let mut f = BytesMut::with_capacity(4 + answer.len());
                    f.put_u32(answer.len() as u32);
                    f.extend_from_slice(&answer);
                    Verdict::Answer(f)
                }
                Err(why) => Verdict::Close(None, why),
            };
        };
        let mut resp = SaslAuthenticateResponse::default();
        match outcome {
            Ok((token, done)) => {
                resp.auth_bytes = Bytes::from(token);
                if done {
                    resp.session_lifetime_ms = self.reauth.map_or(0, |d| d.as_millis() as i64);
                }
                match ctx.encode(&resp) {
                    Ok(f) => Verdict::Answer(f),
                    Err(e) => close(e.to_string()),
                }
            }
            Err(why) => {
                resp.error_code = errors::SASL_AUTHENTICATION_FAILED;
                resp.error_message = Some(StrBytes::from_string(why.clone()));
                Verdict::Close(encoded(ctx, &resp), why)
            }
        }
    }

    /// One step of the chosen mechanism. An error is the reason the login failed (the client
    /// sees it).
    fn exchange(
        &mut self,
        token: &[u8],
        now: Instant,
        creds: &dyn Credentials,
    ) -> Result<Exchanged, String> {
        if token.len() > MAX_TOKEN {
            self.step = Step::Start;
            return Err("SASL token too long".into());
        }
        match std::mem::replace(&mut self.step, Step::Start) {
            Step::Chosen {
                mech: SaslMechanism::Plain,
                ..
            } => {
                let req = plain::parse(token).map_err(|e| format!("Authentication failed: {e}"))?;
                let found = [ScramMechanism::Sha256, ScramMechanism::Sha512]
                    .iter()
                    .find_map(|&m| creds.scram(&req.user, m).map(|c| (m.into(), (&c).into())));
                // An unknown user costs the same check, against a decoy that never matches,
                // so the answer's timing does not tell whether the user exists.
                let (mech, credential) = found.unwrap_or_else(|| {
                    let salt = decoy_salt(&self.decoy_key, req.user.as_bytes());
                    (scram::Mechanism::Sha256, decoy_credential(salt))
                });
                Ok(Exchanged::CheckPlain(
                    req.user,
                    PlainJob {
                        mech,
                        credential,
                        password: req.password,
                    },
                ))
            }
            Step::Chosen {
                mech: SaslMechanism::Scram(m),
                raw,
            } => {
                let decoy = decoy_salt(&self.decoy_key, token);
                let (exchange, first) = scram::server_first(
                    m.into(),
                    token,
                    |user| creds.scram(user, m).map(|c| (&c).into()),
                    &scram::server_nonce(),
                    &decoy,
                )
                .map_err(|e| scram_failure(m, &e))?;
                self.step = Step::ScramProof {
                    mech: m,
                    raw,
                    exchange: Box::new(exchange),
                };
                Ok(Exchanged::Token(first.into_bytes(), false))
            }
            Step::ScramProof { mech, exchange, .. } => {
                let last =
                    scram::server_final(&exchange, token).map_err(|e| scram_failure(mech, &e))?;
                self.logged_in(exchange.user().to_string(), SaslMechanism::Scram(mech), now)?;
                Ok(Exchanged::Token(last.into_bytes(), true))
            }
            Step::Start | Step::Done => Err("SASL token out of order".into()),
        }
    }

    fn logged_in(&mut self, user: String, mech: SaslMechanism, now: Instant) -> Result<(), String> {
        if let Some(prev) = &self.session {
            if prev.user != user {
                // KIP-368: a connection keeps its principal.
                return Err(format!(
                    "Cannot change principals during re-authentication from User:{}: User:{user}",
                    prev.user
                ));
            }
        }
        self.session = Some(Session {
            principal: Arc::from(format!("User:{user}")),
            user,
            mech,
            expires: self.reauth.map(|d| now + d),
        });
        self.step = Step::Done;
        Ok(())
    }
}

/// What one step of a mechanism gives.
enum Exchanged {
    /// The token to send back, and whether the login is complete.
    Token(Vec<u8>, bool),
    /// A PLAIN user and the password check that decides the login.
    CheckPlain(String, PlainJob),
}

/// A credential no password matches (its stored key is not a SHA-256 digest of anything
/// findable), salted like a real one.
fn decoy_credential(salt: Vec<u8>) -> scram::Credential {
    scram::Credential {
        salt,
        iterations: scram::MIN_ITERATIONS,
        stored_key: vec![0; 32],
        server_key: vec![0; 32],
    }
}

fn scram_failure(m: ScramMechanism, e: &ScramError) -> String {
    match e {
        ScramError::BadProof => format!(
            "Authentication failed during authentication due to invalid credentials with SASL \
             mechanism {}",
            m.name()
        ),
        other => format!("Authentication failed: {other}"),
    }
}

/// A salt for a user without credentials: the same for the same client-first user name.
fn decoy_salt(key: &[u8; 32], client_first: &[u8]) -> Vec<u8> {
    let user = std::str::from_utf8(client_first)
        .ok()
        .and_then(|t| t.split(',').find_map(|a| a.strip_prefix("n=")))
        .unwrap_or("");
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, user.as_bytes()).as_ref().to_vec()
}

/// The key of decoy salts, derived from the cluster secret: every shard and node, and every
/// restart, answers an unknown user with the same salt, as it would a real user's.
pub fn decoy_key_from(secret: &[u8]) -> Arc<[u8; 32]> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&k, b"chronik SCRAM decoy salt v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag.as_ref()[..32]);
    Arc::new(out)
}

/// A random key for decoy salts (tests; the broker derives its own with `decoy_key_from`).
pub fn decoy_key() -> Arc<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut k = [0u8; 32];
    let _ = ring::rand::SystemRandom::new().fill(&mut k);
    Arc::new(k)
}

fn close(why: impl Into<String>) -> Verdict {
    Verdict::Close(None, why.into())
}

fn encoded<R: kafka_protocol::protocol::Encodable>(
    ctx: &RequestContext,
    r: &R,
) -> Option<BytesMut> {
    ctx.encode(r).ok()
}

/// A client's mechanism name, bounded for logs.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
