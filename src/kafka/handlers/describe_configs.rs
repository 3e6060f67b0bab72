//! DescribeConfigs for topics (overrides over broker defaults, which follow dynamic broker
//! configs) and brokers (static settings with the dynamic overrides on top, as Kafka lists them).

use super::str_bytes;
use crate::config::BrokerConfig;
use crate::dynamic_config::{
    self, broker_chain, static_broker_configs, Sourced, SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_TOPIC,
};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::broker_config::is_dynamic;
use chronik_raft::image::MetadataImage;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use std::rc::Rc;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Which broker a BROKER resource name means: `None` for the cluster-wide default ("", or
/// "<default>" as Kafka's tools print it), else the id. Kafka: "Invalid broker name".
pub fn broker_resource(name: &str) -> Result<Option<i32>, String> {
    if name.is_empty() || name == "<default>" {
        return Ok(None);
    }
    match name.parse::<i32>() {
        Ok(id) if id >= 0 => Ok(Some(id)),
        _ => Err(format!(
            "Invalid broker name {}",
            chronik_raft::validate::shown(name)
        )),
    }
}

fn entry(
    name: &str,
    chain: &[Sourced],
    read_only: bool,
    synonyms: bool,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = str_bytes(name);
    if let Some(top) = chain.first() {
        c.value = Some(str_bytes(&top.value));
        c.config_source = top.source;
    }
    c.read_only = read_only;
    if synonyms {
        c.synonyms = chain
            .iter()
            .map(|s| {
                let mut y = DescribeConfigsSynonym::default();
                y.name = str_bytes(s.name);
                y.value = Some(str_bytes(&s.value));
                y.source = s.source;
                y
            })
            .collect();
    }
    c
}

/// A topic's configs as DescribeConfigs lists them (and CreateTopics v5+ answers them): every
/// known config with its override or its default, then overrides of configs not known here;
/// only those `wanted`, with their synonyms (the default chain) when `synonyms`.
pub fn topic_configs(
    cfg: &BrokerConfig,
    img: &MetadataImage,
    overrides: &std::collections::BTreeMap<String, String>,
    wanted: impl Fn(&str) -> bool,
    synonyms: bool,
) -> Vec<DescribeConfigsResourceResult> {
    let mut out = Vec::new();
    let defaults = dynamic_config::topic_defaults(cfg, img);
    for (k, (default, broker)) in &defaults {
        if !wanted(k) {
            continue;
        }
        let mut chain = Vec::new();
        if let Some(o) = overrides.get(*k) {
            chain.push(Sourced {
                name: k,
                value: o.clone(),
                source: SOURCE_TOPIC,
            });
        }
        match broker {
            Some(b) => chain.extend(b.iter().cloned()),
            None => chain.push(default.clone()),
        }
        // The entry's own value is the topic's or its default's, under its name.
        let mut e = entry(k, &chain, false, synonyms);
        if !overrides.contains_key(*k) {
            e.value = Some(str_bytes(&default.value));
            e.config_source = default.source;
        }
        out.push(e);
    }
    for (k, v) in overrides {
        if !defaults.contains_key(k.as_str()) && wanted(k) {
            let mut e = DescribeConfigsResourceResult::default();
            e.name = str_bytes(k);
            e.value = Some(str_bytes(v));
            e.config_source = SOURCE_TOPIC;
            out.push(e);
        }
    }
    out
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeConfigsRequest = decode(body, ctx.api_version)?;
    let cfg = &shard.config;
    let img = shard.image();
    // DescribeConfigs v0 has no synonyms field; v1+ asks.
    let synonyms = req.include_synonyms;
    let mut resp = DescribeConfigsResponse::default();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Some(code) = crate::acl::config_refusal(
            &subject,
            &img,
            res.resource_type,
            res.resource_name.as_str(),
            chronik_raft::acl::Operation::DescribeConfigs,
        ) {
            r.error_code = code;
            resp.results.push(r);
            continue;
        }
        let wanted = |k: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
        };
        match res.resource_type {
            RESOURCE_TOPIC => match img.topic(res.resource_name.as_str()) {
                Some(t) => r.configs = topic_configs(cfg, &img, &t.configs, wanted, synonyms),
                None => {
                    r.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    r.error_message = Some(str_bytes("unknown topic"));
                }
            },
            RESOURCE_BROKER => match broker_resource(res.resource_name.as_str()) {
                // The cluster-wide default: only the dynamic defaults that are set (Kafka).
                Ok(None) => {
                    for (k, v) in &img.broker_configs.cluster {
                        if wanted(k) {
                            let mut e = DescribeConfigsResourceResult::default();
                            e.name = str_bytes(k);
                            e.value = Some(str_bytes(v));
                            e.config_source = SOURCE_DYNAMIC_DEFAULT_BROKER;
                            if synonyms {
                                let mut y = DescribeConfigsSynonym::default();
                                y.name = str_bytes(k);
                                y.value = Some(str_bytes(v));
                                y.source = SOURCE_DYNAMIC_DEFAULT_BROKER;
                                e.synonyms.push(y);
                            }
                            r.configs.push(e);
                        }
                    }
                }
                Ok(Some(id)) if id == cfg.node_id => {
                    for (k, v) in static_broker_configs(cfg) {
                        if wanted(k) {
                            let chain = broker_chain(&img, Some(id), k, &v);
                            r.configs.push(entry(k, &chain, !is_dynamic(k), synonyms));
                        }
                    }
                }
                // Kafka: a broker describes only itself; the admin client sends it there.
                Ok(Some(id)) => {
                    r.error_code = errors::INVALID_REQUEST;
                    r.error_message = Some(str_bytes(&format!(
                        "Unexpected broker id, expected {} or empty string, but received {id}",
                        cfg.node_id
                    )));
                }
                Err(msg) => {
                    r.error_code = errors::INVALID_REQUEST;
                    r.error_message = Some(str_bytes(&msg));
                }
            },
            _ => {
                r.error_code = errors::INVALID_REQUEST;
                r.error_message = Some(str_bytes("unsupported resource type"));
            }
        }
        resp.results.push(r);
    }
    ctx.encode(&resp).map(Some)
}
