//! IncrementalAlterConfigs and the legacy AlterConfigs for topics and brokers, through the
//! controller.
//!
//! Both end in one `Command::AlterConfigs` (keys to set, keys to delete) per topic, or one
//! `Command::AlterBrokerConfigs` per BROKER resource ("" the cluster-wide default, "<id>" one
//! broker). The legacy API replaces a resource's whole set of overrides: keys it does not name
//! go back to the default.

use super::describe_configs::{broker_resource, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{str_bytes, topics};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::Operation::AlterConfigs;
use chronik_raft::broker_config::is_dynamic;
use chronik_raft::topic_config::is_list_config;
use chronik_raft::{Command, CommandOutcome};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// The outcome for one resource: an error code and its message.
type Outcome = (i16, Option<String>);

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: IncrementalAlterConfigsRequest = decode(body, ctx.api_version)?;
    let mut resp = IncrementalAlterConfigsResponse::default();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for res in req.resources {
        let name = res.resource_name.to_string();
        let changes = |broker: bool| {
            let current = |k: &str| current_value(&shard, &name, k);
            let current: Option<CurrentValue<'_>> = (!broker).then_some(&current);
            incremental_changes(&res.configs, current)
                .map_err(|m| (errors::INVALID_CONFIG, Some(m)))
        };
        let (code, message) = alter_resource(
            &shard,
            &subject,
            res.resource_type,
            &name,
            req.validate_only,
            changes,
        )
        .await;
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        out.error_code = code;
        out.error_message = message.as_deref().map(str_bytes);
        resp.responses.push(out);
    }
    ctx.encode(&resp).map(Some)
}

/// Legacy AlterConfigs (API 33): the named configs become the topic's whole set of overrides.
pub async fn handle_legacy(
    shard: Rc<Services>,
    ctx: RequestContext,
    body: BytesMut,
) -> HandlerResult {
    let req: AlterConfigsRequest = decode(body, ctx.api_version)?;
    let mut resp = AlterConfigsResponse::default();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for res in req.resources {
        let name = res.resource_name.to_string();
        let changes = |broker: bool| {
            let mut set = BTreeMap::new();
            for c in &res.configs {
                match &c.value {
                    Some(v) => {
                        set.insert(c.name.to_string(), v.to_string());
                    }
                    // A broker config without a value is left out; a topic's is refused.
                    None if broker => {}
                    None => {
                        let msg = format!("null value not supported for topic config {}", c.name);
                        return Err((errors::INVALID_REQUEST, Some(msg)));
                    }
                }
            }
            let delete = if broker {
                let b = broker_resource(&name).map_err(|m| (errors::INVALID_REQUEST, Some(m)))?;
                shard.with_image(|i| not_named(i.broker_configs.of(b), &set))
            } else {
                shard.with_image(|i| not_named(i.topic(&name).map(|t| &t.configs), &set))
            };
            Ok((set, delete))
        };
        let (code, message) = alter_resource(
            &shard,
            &subject,
            res.resource_type,
            &name,
            req.validate_only,
            changes,
        )
        .await;
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        out.error_code = code;
        out.error_message = message.as_deref().map(str_bytes);
        resp.responses.push(out);
    }
    ctx.encode(&resp).map(Some)
}

/// What an AlterConfigs resource asks for: the configs to set and those to delete (back to
/// their defaults), or the answer that refuses it.
type Changes = Result<(BTreeMap<String, String>, Vec<String>), Outcome>;

/// One resource of either AlterConfigs: refused by the ACLs, not alterable, or the changes
/// `changes(is_broker)` reads from the request applied to the broker or the topic.
async fn alter_resource(
    shard: &Rc<Services>,
    subject: &crate::acl::Subject<'_>,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    changes: impl FnOnce(bool) -> Changes,
) -> Outcome {
    if let Some(code) = refusal(shard, subject, resource_type, name) {
        return (code, None);
    }
    let broker = resource_type == RESOURCE_BROKER;
    if !broker && resource_type != RESOURCE_TOPIC {
        return not_a_topic();
    }
    match changes(broker) {
        Err(refused) => refused,
        Ok((set, delete)) if broker => alter_broker(shard, name, set, delete, validate_only).await,
        Ok((set, delete)) => alter(shard, name.to_string(), set, delete, validate_only).await,
    }
}

/// The ACL refusal for altering this resource, if any.
fn refusal(
    shard: &Services,
    subject: &crate::acl::Subject,
    resource_type: i8,
    name: &str,
) -> Option<i16> {
    shard.with_image(|i| crate::acl::config_refusal(subject, i, resource_type, name, AlterConfigs))
}

/// The current overrides a legacy AlterConfigs does not name: they go back to the default.
fn not_named(
    current: Option<&BTreeMap<String, String>>,
    named: &BTreeMap<String, String>,
) -> Vec<String> {
    current.map_or_else(Vec::new, |m| {
        m.keys()
            .filter(|k| !named.contains_key(*k))
            .cloned()
            .collect()
    })
}

fn not_a_topic() -> Outcome {
    (
        errors::INVALID_REQUEST,
        Some("only topic and broker configs can be altered at runtime".into()),
    )
}

/// Alters dynamic broker configs: read-only broker configs are refused with INVALID_REQUEST
/// as Kafka does, the rest checked (INVALID_CONFIG) and committed by the controller.
async fn alter_broker(
    shard: &Rc<Services>,
    resource: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Outcome {
    let broker = match broker_resource(resource) {
        Ok(b) => b,
        Err(msg) => return (errors::INVALID_REQUEST, Some(msg)),
    };
    let read_only: Vec<&str> = set
        .keys()
        .chain(delete.iter())
        .map(String::as_str)
        .filter(|k| !is_dynamic(k) && crate::dynamic_config::is_broker_config(&shard.config, k))
        .collect();
    if !read_only.is_empty() {
        return (
            errors::INVALID_REQUEST,
            Some(format!(
                "Cannot update these configs dynamically: Set({})",
                read_only.join(", ")
            )),
        );
    }
    let cmd = Command::AlterBrokerConfigs {
        broker,
        set,
        delete,
        validate_only,
    };
    let timeout = Duration::from_secs(10);
    // Answered once every broker applies the change (read-your-writes on any node).
    match topics::submit_served(shard, cmd, timeout).await {
        Ok(CommandOutcome::Done) => (errors::NONE, None),
        Ok(CommandOutcome::Rejected(e)) | Err(e) => (e.code, Some(e.message)),
        Ok(other) => (
            errors::UNKNOWN_SERVER_ERROR,
            Some(format!("unexpected controller outcome {other:?}")),
        ),
    }
}

/// A resource's current value for a config key.
type CurrentValue<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The keys to set and to delete for IncrementalAlterConfigs' operations. APPEND and SUBTRACT
/// work on list-typed configs only, against `current` (a topic's override or default); a
/// resource without list configs (a broker) passes None and gets SET and DELETE only.
fn incremental_changes(
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    current: Option<CurrentValue<'_>>,
) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for c in configs {
        let key = c.name.to_string();
        match (c.config_operation, &c.value) {
            (OP_SET, Some(v)) => {
                set.insert(key, v.to_string());
            }
            (OP_SET, None) => return Err(format!("null value not supported for {key}")),
            (OP_DELETE, _) => delete.push(key),
            (op @ (OP_APPEND | OP_SUBTRACT), v) => {
                let Some(current_of) = current.filter(|_| is_list_config(&key)) else {
                    return Err(format!(
                        "config value append/subtract is not allowed for config key {key}"
                    ));
                };
                let current = set
                    .get(&key)
                    .cloned()
                    .or_else(|| current_of(&key))
                    .unwrap_or_default();
                let mut items: Vec<String> = split_list(&current);
                for item in split_list(v.as_deref().unwrap_or("")) {
                    if op == OP_APPEND {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    } else {
                        items.retain(|x| *x != item);
                    }
                }
                set.insert(key, items.join(","));
            }
            (op, _) => return Err(format!("unknown config operation {op} on {key}")),
        }
    }
    Ok((set, delete))
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A topic's value for `key`: its override, else the broker default.
fn current_value(shard: &Services, topic: &str, key: &str) -> Option<String> {
    shard.with_image(|i| {
        i.topic(topic)
            .and_then(|t| t.configs.get(key).cloned())
            .or_else(|| {
                crate::dynamic_config::topic_defaults(&shard.config, i)
                    .remove(key)
                    .map(|(d, _)| d.value)
            })
    })
}

async fn alter(
    shard: &Rc<Services>,
    topic: String,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Outcome {
    let r = topics::submit_per_topic(
        shard,
        Command::AlterConfigs {
            topic: topic.clone(),
            set,
            delete,
            validate_only,
        },
        std::slice::from_ref(&topic),
        Duration::from_secs(10),
    )
    .await;
    match r.into_iter().next() {
        Some((_, Ok(_))) => (errors::NONE, None),
        Some((_, Err(e))) => (e.code, Some(e.message)),
        None => (errors::UNKNOWN_SERVER_ERROR, None),
    }
}
