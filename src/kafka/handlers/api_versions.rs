//! ApiVersions: the versions of every API we serve.

use crate::kafka::dispatch::{HandlerResult, APIS};
use crate::kafka::{errors, ProtocolError, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use std::rc::Rc;

fn response(error: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error;
    r.api_keys = APIS
        .iter()
        .map(|a| {
            let mut v = ApiVersion::default();
            v.api_key = a.key as i16;
            v.min_version = a.min;
            v.max_version = a.max;
            v
        })
        .collect();
    r
}

pub async fn handle(_shard: Rc<Services>, ctx: RequestContext, _body: BytesMut) -> HandlerResult {
    // The request body (client software name/version) is informational only.
    ctx.encode(&response(errors::NONE)).map(Some)
}

/// Kafka's answer to an ApiVersions version it does not know: v0 body, UNSUPPORTED_VERSION.
pub fn unsupported(ctx: &RequestContext) -> Result<BytesMut, ProtocolError> {
    let mut c = ctx.clone();
    c.api_version = 0;
    c.encode(&response(errors::UNSUPPORTED_VERSION))
}
