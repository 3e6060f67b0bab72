//! Broker authentication on the Kafka port: a follower's fetcher proves it is broker N before
//! it fetches as a replica (a follower fetch moves the high watermark and reads past it).
//!
//! It reuses the controller port's challenge–response (`chronik_raft::secret`): HMAC-SHA256
//! under the cluster secret, which never crosses the wire, over a transcript of both broker
//! ids and a fresh nonce from each side. Only the frames are Kafka-shaped:
//!
//! - API key `API_KEY` (32000, far above Kafka's own keys; no Kafka client sends it and
//!   ApiVersions does not list it), version 0, request header v1, response header v0.
//! - Hello: `step i8 = 0 | broker_id i32 | client nonce [32]`; answer
//!   `error_code i16 | server nonce [32]`.
//! - Proof: `step i8 = 1 | HMAC(client label, transcript) [32]`; answer
//!   `error_code i16 | HMAC(server label, transcript) [32]` under the key that matched, so the
//!   follower knows it reached a broker of its cluster too.
//!
//! Transcript: follower id (i32 BE) | leader id (i32 BE) | client nonce | server nonce. The
//! leader puts its own id in, so a proof made for one broker is useless at another.
//!
//! Bodies have one fixed size each; anything else is INVALID_REQUEST. Any failed step is
//! answered (UNSUPPORTED_VERSION, INVALID_REQUEST, ILLEGAL_SASL_STATE out of order,
//! SASL_AUTHENTICATION_FAILED for a wrong proof) and the connection closed. A connection
//! proves one broker id, once.

use crate::kafka::errors;
use crate::kafka::wire::Reader;
use bytes::{BufMut, BytesMut};
use chronik_raft::image::BrokerId;
use chronik_raft::secret::{nonce, ClusterSecret};
use std::sync::atomic::{AtomicU64, Ordering};

/// The internal API key.
pub const API_KEY: i16 = 32_000;
const VERSION: i16 = 0;
const HELLO: i8 = 0;
const PROOF: i8 = 1;
const HELLO_LEN: usize = 1 + 4 + 32;
const PROOF_LEN: usize = 1 + 32;
const CLIENT_LABEL: &[u8] = b"chronik-broker client proof v1";
const SERVER_LABEL: &[u8] = b"chronik-broker server proof v1";
/// What the fetcher sends as its client id.
const CLIENT_ID: &str = "chronik-broker-auth";

fn transcript_parts<'a>(
    label: &'a [u8],
    ids: &'a [u8; 8],
    client_nonce: &'a [u8; 32],
    server_nonce: &'a [u8; 32],
) -> [&'a [u8]; 4] {
    [label, ids, client_nonce, server_nonce]
}

fn ids(follower: BrokerId, leader: BrokerId) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&follower.to_be_bytes());
    b[4..].copy_from_slice(&leader.to_be_bytes());
    b
}

/// Whether a request frame (length removed) is one of ours: its first two bytes are the key.
pub fn is_auth_frame(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == API_KEY
}

/// One connection's side of the exchange (leader side).
#[derive(Default)]
pub enum ServerState {
    #[default]
    Fresh,
    Challenged {
        broker: BrokerId,
        client_nonce: [u8; 32],
        server_nonce: [u8; 32],
    },
    Proven(BrokerId),
    /// A step failed: the connection is being closed.
    Failed,
}

impl ServerState {
    /// The broker this connection has proven to be.
    pub fn proven(&self) -> Option<BrokerId> {
        match self {
            ServerState::Proven(b) => Some(*b),
            _ => None,
        }
    }
}

/// What serving one frame came to: the response frame (None when the header itself was
/// unreadable), and whether to close the connection after it.
pub struct Step {
    pub response: Option<BytesMut>,
    pub close: bool,
}

/// Serves one request frame (length removed) of the internal API on a connection in `state`;
/// `me` is this broker's id.
pub fn serve(state: &mut ServerState, secret: &ClusterSecret, me: BrokerId, frame: &[u8]) -> Step {
    let mut r = Reader::new(frame);
    let header = (|| {
        let _key = r.i16()?;
        let version = r.i16()?;
        let corr = r.i32()?;
        let _client_id = r.nullable_string()?;
        Ok::<_, crate::kafka::ProtocolError>((version, corr))
    })();
    let Ok((version, corr)) = header else {
        *state = ServerState::Failed;
        return Step {
            response: None,
            close: true,
        };
    };
    let body = &frame[r.position()..];
    let (error, payload) = step(state, secret, me, version, body);
    if error != errors::NONE {
        *state = ServerState::Failed;
        note_refused(error);
    }
    Step {
        response: Some(response_frame(corr, error, &payload)),
        close: error != errors::NONE,
    }
}

fn step(
    state: &mut ServerState,
    secret: &ClusterSecret,
    me: BrokerId,
    version: i16,
    body: &[u8],
) -> (i16, [u8; 32]) {
    let fail = |code| (code, [0u8; 32]);
    if version != VERSION {
        return fail(errors::UNSUPPORTED_VERSION);
    }
    match (body.first().map(|b| *b as i8), &*state) {
        (Some(HELLO), ServerState::Fresh) => {
            let Some((broker, client_nonce)) = parse_hello(body) else {
                return fail(errors::INVALID_REQUEST);
            };
            let server_nonce = nonce();
            *state = ServerState::Challenged {
                broker,
                client_nonce,
                server_nonce,
            };
            (errors::NONE, server_nonce)
        }
        (
            Some(PROOF),
            ServerState::Challenged {
                broker,
                client_nonce,
                server_nonce,
            },
        ) => {
            let Some(mac) = parse_proof(body) else {
                return fail(errors::INVALID_REQUEST);
            };
            let ids = ids(*broker, me);
            let Some(key) = secret.verify(
                &transcript_parts(CLIENT_LABEL, &ids, client_nonce, server_nonce),
                &mac,
            ) else {
                return fail(errors::SASL_AUTHENTICATION_FAILED);
            };
            let ours = key.mac(&transcript_parts(
                SERVER_LABEL,
                &ids,
                client_nonce,
                server_nonce,
            ));
            *state = ServerState::Proven(*broker);
            (errors::NONE, ours)
        }
        (Some(HELLO | PROOF), _) => fail(errors::ILLEGAL_SASL_STATE),
        _ => fail(errors::INVALID_REQUEST),
    }
}

fn parse_hello(body: &[u8]) -> Option<(BrokerId, [u8; 32])> {
    if body.len() != HELLO_LEN {
        return None;
    }
    let broker = i32::from_be_bytes(body[1..5].try_into().ok()?);
    (broker >= 0).then_some(())?;
    Some((broker, body[5..].try_into().ok()?))
}

fn parse_proof(body: &[u8]) -> Option<[u8; 32]> {
    if body.len() != PROOF_LEN {
        return None;
    }
    body[1..].try_into().ok()
}

fn response_frame(corr: i32, error: i16, payload: &[u8; 32]) -> BytesMut {
    let mut b = BytesMut::with_capacity(4 + 4 + 2 + 32);
    b.put_i32(4 + 2 + 32);
    b.put_i32(corr);
    b.put_i16(error);
    b.put_slice(payload);
    b
}

/// Logs a refused exchange on the 1st, 2nd, 4th, 8th... time (a stranger may retry fast).
fn note_refused(error: i16) {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    let n = REFUSED.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    if n.is_power_of_two() {
        tracing::warn!(
            error,
            refused = n,
            "broker authentication on the Kafka port refused (wrong cluster secret, or not a broker)"
        );
    }
}

/// The follower's side, without I/O (the fetcher and tests drive it over their own sockets).
pub struct ClientAuth {
    me: BrokerId,
    leader: BrokerId,
    client_nonce: [u8; 32],
    server_nonce: Option<[u8; 32]>,
}

impl ClientAuth {
    /// Broker `me` about to prove itself to broker `leader`.
    pub fn new(me: BrokerId, leader: BrokerId) -> Self {
        ClientAuth {
            me,
            leader,
            client_nonce: nonce(),
            server_nonce: None,
        }
    }

    /// The Hello request frame (length included).
    pub fn hello(&self, corr: i32) -> BytesMut {
        let mut body = Vec::with_capacity(HELLO_LEN);
        body.push(HELLO as u8);
        body.extend_from_slice(&self.me.to_be_bytes());
        body.extend_from_slice(&self.client_nonce);
        request_frame(corr, &body)
    }

    /// Reads the Hello's answer (frame after the length) and makes the Proof request frame.
    pub fn proof(
        &mut self,
        secret: &ClusterSecret,
        corr: i32,
        answer: &[u8],
    ) -> Result<BytesMut, String> {
        let server_nonce = parse_answer(corr, answer)?;
        self.server_nonce = Some(server_nonce);
        let mac = secret.mac(&transcript_parts(
            CLIENT_LABEL,
            &ids(self.me, self.leader),
            &self.client_nonce,
            &server_nonce,
        ));
        let mut body = Vec::with_capacity(PROOF_LEN);
        body.push(PROOF as u8);
        body.extend_from_slice(&mac);
        Ok(request_frame(corr, &body))
    }

    /// Checks the Proof's answer: accepted, and the leader's own proof under our key.
    pub fn check_accepted(
        &self,
        secret: &ClusterSecret,
        corr: i32,
        answer: &[u8],
    ) -> Result<(), String> {
        let mac = parse_answer(corr, answer)?;
        let server_nonce = self.server_nonce.ok_or("no challenge yet")?;
        secret
            .proving_only()
            .verify(
                &transcript_parts(
                    SERVER_LABEL,
                    &ids(self.me, self.leader),
                    &self.client_nonce,
                    &server_nonce,
                ),
                &mac,
            )
            .map(|_| ())
            .ok_or_else(|| "the leader's proof is wrong: the cluster secrets differ".to_string())
    }
}

/// A request frame of the internal API: length, header v1, body.
fn request_frame(corr: i32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(64);
    b.put_i32((2 + 2 + 4 + 2 + CLIENT_ID.len() + body.len()) as i32);
    b.put_i16(API_KEY);
    b.put_i16(VERSION);
    b.put_i32(corr);
    b.put_i16(CLIENT_ID.len() as i16);
    b.put_slice(CLIENT_ID.as_bytes());
    b.put_slice(body);
    b
}

/// An answer frame (after the length): the 32 bytes it carries, or why not.
fn parse_answer(corr: i32, answer: &[u8]) -> Result<[u8; 32], String> {
    if answer.len() != 4 + 2 + 32 {
        return Err(format!(
            "broker authentication: a {}-byte answer",
            answer.len()
        ));
    }
    if i32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]) != corr {
        return Err("broker authentication: correlation id mismatch".into());
    }
    let error = i16::from_be_bytes([answer[4], answer[5]]);
    if error != errors::NONE {
        return Err(match error {
            errors::SASL_AUTHENTICATION_FAILED => {
                "the leader refused our proof: the cluster secrets differ (check --cluster-secret-file)"
                    .to_string()
            }
            e => format!("broker authentication refused with error {e}"),
        });
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&answer[6..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame after its length prefix, as the server's reader hands it over.
    fn unframed(f: &BytesMut) -> Vec<u8> {
        f[4..].to_vec()
    }

    fn exchange(
        client_secret: &ClusterSecret,
        server_secret: &ClusterSecret,
        leader: BrokerId,
    ) -> (ServerState, Result<(), String>) {
        let mut st = ServerState::default();
        let mut c = ClientAuth::new(2, leader);
        let s1 = serve(&mut st, server_secret, 1, &unframed(&c.hello(1)));
        assert!(!s1.close);
        let a1 = s1.response.expect("answer");
        let proof = c.proof(client_secret, 1, &a1[4..]).expect("challenge");
        let s2 = serve(&mut st, server_secret, 1, &unframed(&proof));
        let a2 = s2.response.expect("answer");
        let r = c.check_accepted(client_secret, 1, &a2[4..]);
        assert_eq!(s2.close, r.is_err());
        (st, r)
    }

    #[test]
    fn a_broker_with_the_cluster_secret_proves_its_id_both_ways() {
        let s = ClusterSecret::generate();
        let (st, r) = exchange(&s, &s, 1);
        r.expect("accepted");
        assert_eq!(st.proven(), Some(2));
        // During a rotation the leader accepts the next key too and answers under it.
        let next = ClusterSecret::generate();
        let (st, r) = exchange(&next, &s.clone().with_next(&next), 1);
        r.expect("accepted under the next key");
        assert_eq!(st.proven(), Some(2));
    }

    #[test]
    fn a_wrong_secret_or_a_proof_made_for_another_broker_is_refused_and_closes() {
        let s = ClusterSecret::generate();
        let (st, r) = exchange(&ClusterSecret::generate(), &s, 1);
        assert!(r.unwrap_err().contains("secrets differ"));
        assert_eq!(st.proven(), None);
        // Proven for broker 3, presented to broker 1.
        let (st, r) = exchange(&s, &s, 3);
        assert!(r.is_err());
        assert_eq!(st.proven(), None);
    }

    #[test]
    fn out_of_order_malformed_and_repeated_steps_are_errors_that_close() {
        let s = ClusterSecret::generate();
        let c = ClientAuth::new(2, 1);
        let code = |st: &mut ServerState, frame: &[u8]| {
            let step = serve(st, &s, 1, frame);
            let r = step.response.expect("answered");
            assert!(step.close);
            i16::from_be_bytes([r[8], r[9]])
        };
        // A proof before any hello.
        let mut st = ServerState::default();
        let mut proof = unframed(&c.hello(1));
        proof.truncate(proof.len() - HELLO_LEN);
        proof.push(PROOF as u8);
        proof.extend_from_slice(&[0; 32]);
        assert_eq!(code(&mut st, &proof), errors::ILLEGAL_SASL_STATE);
        // A hello of the wrong size, an unknown step, another version.
        for cut in [1, 5, 36] {
            let mut st = ServerState::default();
            let mut f = unframed(&c.hello(1));
            f.truncate(f.len() - HELLO_LEN + cut);
            assert_eq!(code(&mut st, &f), errors::INVALID_REQUEST, "{cut}");
        }
        let mut f = unframed(&c.hello(1));
        f.push(0);
        assert_eq!(
            code(&mut ServerState::default(), &f),
            errors::INVALID_REQUEST
        );
        let mut f = unframed(&c.hello(1));
        f[2..4].copy_from_slice(&1i16.to_be_bytes());
        assert_eq!(
            code(&mut ServerState::default(), &f),
            errors::UNSUPPORTED_VERSION
        );
        // A second hello on a proven connection.
        let (mut st, r) = exchange(&s, &s, 1);
        r.expect("accepted");
        assert_eq!(
            code(&mut st, &unframed(&c.hello(1))),
            errors::ILLEGAL_SASL_STATE
        );
        assert_eq!(st.proven(), None);
        // A header cut short gets no answer, only the close.
        let step = serve(&mut ServerState::default(), &s, 1, &[0x7d, 0x00, 0]);
        assert!(step.response.is_none() && step.close);
    }
}
