//! IncrementalAlterConfigs for topics, through the controller.

use super::describe_configs::RESOURCE_TOPIC;
use super::{str_bytes, topics};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::shard::Shard;
use bytes::BytesMut;
use chronik_raft::Command;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub async fn handle(shard: Rc<Shard>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: IncrementalAlterConfigsRequest = decode(body, ctx.api_version)?;
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        if res.resource_type != RESOURCE_TOPIC {
            out.error_code = errors::INVALID_REQUEST;
            out.error_message = Some(str_bytes("only topic configs can be altered at runtime"));
            resp.responses.push(out);
            continue;
        }
        let mut set = BTreeMap::new();
        let mut delete = Vec::new();
        let mut bad = None;
        for c in &res.configs {
            match (c.config_operation, &c.value) {
                (OP_SET, Some(v)) => {
                    set.insert(c.name.to_string(), v.to_string());
                }
                (OP_DELETE, _) => delete.push(c.name.to_string()),
                (op, _) => bad = Some(format!("operation {op} on {} is not supported", c.name)),
            }
        }
        if let Some(msg) = bad {
            out.error_code = errors::INVALID_CONFIG;
            out.error_message = Some(str_bytes(&msg));
            resp.responses.push(out);
            continue;
        }
        let name = res.resource_name.to_string();
        let r = topics::submit_per_topic(
            &shard,
            Command::AlterConfigs {
                topic: name.clone(),
                set,
                delete,
                validate_only: req.validate_only,
            },
            std::slice::from_ref(&name),
            Duration::from_secs(10),
        )
        .await;
        match r.into_iter().next() {
            Some((_, Ok(_))) => out.error_code = errors::NONE,
            Some((_, Err(e))) => {
                out.error_code = e.code;
                out.error_message = Some(str_bytes(&e.message));
            }
            None => out.error_code = errors::UNKNOWN_SERVER_ERROR,
        }
        resp.responses.push(out);
    }
    ctx.encode(&resp).map(Some)
}
