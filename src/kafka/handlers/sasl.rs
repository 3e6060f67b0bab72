//! SaslHandshake / SaslAuthenticate reaching the handlers: on a PLAINTEXT or SSL listener, where
//! SASL is not enabled. On SASL listeners the connection's authenticator takes these requests
//! before dispatch (`sasl::session`).

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateResponse, SaslHandshakeResponse};
use std::rc::Rc;

pub async fn handle(_shard: Rc<Services>, ctx: RequestContext, _body: BytesMut) -> HandlerResult {
    if ctx.api_key == ApiKey::SaslHandshake {
        let mut r = SaslHandshakeResponse::default();
        // Kafka's KafkaApis answers a handshake that reaches it ILLEGAL_SASL_STATE.
        r.error_code = errors::ILLEGAL_SASL_STATE;
        ctx.encode(&r).map(Some)
    } else {
        let mut r = SaslAuthenticateResponse::default();
        r.error_code = errors::ILLEGAL_SASL_STATE;
        r.error_message = Some(super::str_bytes(
            "SASL authentication is not enabled on this listener",
        ));
        ctx.encode(&r).map(Some)
    }
}
