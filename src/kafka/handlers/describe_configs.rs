//! DescribeConfigs for topics (overrides over broker defaults) and brokers (static settings).

use super::str_bytes;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::shard::Shard;
use bytes::BytesMut;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use std::rc::Rc;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn entry(name: &str, value: &str, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = str_bytes(name);
    c.value = Some(str_bytes(value));
    c.config_source = source;
    c.read_only = read_only;
    c
}

pub async fn handle(shard: Rc<Shard>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeConfigsRequest = decode(body, ctx.api_version)?;
    let defaults = shard.config.broker_defaults();
    let img = shard.image();
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let wanted = |k: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
        };
        match res.resource_type {
            RESOURCE_TOPIC => match img.topic(res.resource_name.as_str()) {
                Some(t) => {
                    for (k, v) in &defaults {
                        if !wanted(k) {
                            continue;
                        }
                        match t.configs.get(*k) {
                            Some(o) => r.configs.push(entry(k, o, SOURCE_DYNAMIC_TOPIC, false)),
                            None => r.configs.push(entry(k, v, SOURCE_DEFAULT, false)),
                        }
                    }
                    for (k, v) in &t.configs {
                        if !defaults.contains_key(k.as_str()) && wanted(k) {
                            r.configs.push(entry(k, v, SOURCE_DYNAMIC_TOPIC, false));
                        }
                    }
                }
                None => {
                    r.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    r.error_message = Some(str_bytes("unknown topic"));
                }
            },
            RESOURCE_BROKER => {
                let me = shard.config.node_id.to_string();
                if !res.resource_name.is_empty() && res.resource_name.as_str() != me {
                    r.error_code = errors::INVALID_REQUEST;
                    r.error_message = Some(str_bytes("describe a broker on that broker"));
                } else {
                    for (k, v) in &defaults {
                        if wanted(k) {
                            r.configs.push(entry(k, v, SOURCE_STATIC_BROKER, true));
                        }
                    }
                }
            }
            _ => {
                r.error_code = errors::INVALID_REQUEST;
                r.error_message = Some(str_bytes("unsupported resource type"));
            }
        }
        resp.results.push(r);
    }
    ctx.encode(&resp).map(Some)
}
