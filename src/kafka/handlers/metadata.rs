//! Metadata: brokers, controller and per-partition leader/replicas/ISR, from the local image.

use super::{str_bytes, topic_name, topics, uuid};
use crate::acl::Subject;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType, ResourceType::Topic};
use chronik_raft::image::{MetadataImage, TopicImage, NO_LEADER};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use std::rc::Rc;

/// How long a Metadata request waits for this shard to install an image another shard of
/// this broker already serves (its delivery is queued on this executor: normally at once).
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: MetadataRequest = decode(body, ctx.api_version)?;
    // Never older than what another connection to this broker was shown (its shard may have
    // installed a newer image a moment before this one).
    shard.catch_up_with_node(CATCH_UP).await;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<(Option<String>, [u8; 16])>> = match req.topics {
        None => None,
        Some(ref t) if t.is_empty() && ctx.api_version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|x| (x.name.map(|n| n.0.to_string()), *x.topic_id.as_bytes()))
                .collect(),
        ),
    };
    let auto = ctx.api_version < 4 || req.allow_auto_topic_creation;
    let subject = Subject::of(&shard, &ctx);
    let mut create_errors = Vec::new();
    if let Some(list) = &requested {
        if auto && shard.config.auto_create_topics_enable {
            // As Kafka: only topics the client may see and create are auto-created.
            let missing: Vec<String> = list
                .iter()
                .filter_map(|(n, _)| n.clone())
                .filter(|n| {
                    shard.with_image(|i| {
                        i.topic(n).is_none()
                            && subject.may(i, Operation::Describe, Topic, n)
                            && crate::acl::may_create_topic(&subject, i, n)
                    })
                })
                .collect();
            if !missing.is_empty() {
                create_errors = topics::auto_create(&shard, missing).await;
            }
        }
    }
    let img = shard.image();
    let mut resp = MetadataResponse::default();
    resp.brokers = img
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = super::address_on(ctx.listener.as_deref(), b)?;
            let mut mb = MetadataResponseBroker::default();
            mb.node_id = BrokerId(b.id);
            mb.host = str_bytes(host);
            mb.port = i32::from(port);
            if ctx.api_version >= 1 {
                mb.rack = b.rack.as_deref().map(str_bytes);
            }
            Some(mb)
        })
        .collect();
    if ctx.api_version >= 2 {
        resp.cluster_id = Some(str_bytes(&img.cluster_id));
    }
    if ctx.api_version >= 1 {
        resp.controller_id = BrokerId(img.controller_id.unwrap_or(-1));
    }
    let topic_ops = ctx.api_version >= 8 && req.include_topic_authorized_operations;
    if (8..=10).contains(&ctx.api_version) && req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations =
            subject.operations(&img, ResourceType::Cluster, crate::acl::CLUSTER_NAME);
    }
    let entry = |t: &TopicImage| {
        let mut e = topic_entry(&img, t, ctx.api_version);
        if topic_ops {
            e.topic_authorized_operations = subject.operations(&img, Topic, &t.name);
        }
        e
    };
    let may_describe = |n: &str| subject.may(&img, Operation::Describe, Topic, n);
    match requested {
        None => {
            // Topics the client may not describe are left out, as Kafka does.
            let mut names: Vec<&String> = img.topics.keys().filter(|n| may_describe(n)).collect();
            names.sort();
            for n in names {
                if let Some(t) = img.topic(n) {
                    resp.topics.push(entry(t));
                }
            }
        }
        Some(list) => {
            for (name, id) in list {
                let found = match &name {
                    Some(n) => img.topic(n),
                    None => img.topic_by_id(&id),
                };
                let hidden = match (&name, found) {
                    (Some(n), _) => !may_describe(n),
                    (None, Some(t)) => !may_describe(&t.name),
                    (None, None) => false,
                };
                if hidden {
                    // By name: TOPIC_AUTHORIZATION_FAILED; by id: as if unknown, so ids do
                    // not reveal names (Kafka's answers).
                    let mut t = MetadataResponseTopic::default();
                    t.error_code = match &name {
                        Some(_) => errors::TOPIC_AUTHORIZATION_FAILED,
                        None => errors::UNKNOWN_TOPIC_ID,
                    };
                    t.name = name.as_deref().map(topic_name);
                    if ctx.api_version >= 10 && name.is_none() {
                        t.topic_id = uuid::Uuid::from_bytes(id);
                    }
                    t.topic_authorized_operations = crate::acl::OPERATIONS_NOT_REQUESTED;
                    resp.topics.push(t);
                    continue;
                }
                match found {
                    Some(t) => resp.topics.push(entry(t)),
                    None if name.as_deref().is_some_and(|n| {
                        auto && shard.config.auto_create_topics_enable
                            && topics::valid_topic_name(n)
                            && !crate::acl::may_create_topic(&subject, &img, n)
                    }) =>
                    {
                        let mut t = MetadataResponseTopic::default();
                        t.error_code = errors::TOPIC_AUTHORIZATION_FAILED;
                        t.name = name.as_deref().map(topic_name);
                        t.topic_authorized_operations = crate::acl::OPERATIONS_NOT_REQUESTED;
                        resp.topics.push(t);
                    }
                    None => {
                        let mut t = MetadataResponseTopic::default();
                        let n = name.clone().unwrap_or_default();
                        t.error_code = match create_errors.iter().find(|(c, _)| *c == n) {
                            Some((_, code)) if *code != errors::NONE => *code,
                            // created, but not visible yet: the client retries
                            Some(_) => errors::LEADER_NOT_AVAILABLE,
                            None if name.is_some() && !topics::valid_topic_name(&n) => {
                                errors::INVALID_TOPIC_EXCEPTION
                            }
                            None if name.is_none() => errors::UNKNOWN_TOPIC_ID,
                            None => errors::UNKNOWN_TOPIC_OR_PARTITION,
                        };
                        t.name = name.as_deref().map(topic_name);
                        if ctx.api_version >= 10 {
                            t.topic_id = uuid::Uuid::from_bytes(id);
                        }
                        t.topic_authorized_operations = i32::MIN;
                        resp.topics.push(t);
                    }
                }
            }
        }
    }
    ctx.encode(&resp).map(Some)
}

/// Fields a version lacks must stay at their defaults, or kafka-protocol refuses to encode.
fn topic_entry(img: &MetadataImage, t: &TopicImage, version: i16) -> MetadataResponseTopic {
    let mut mt = MetadataResponseTopic::default();
    mt.name = Some(topic_name(&t.name));
    if version >= 10 {
        mt.topic_id = uuid(&t.id);
    }
    if version >= 1 {
        mt.is_internal = t.name.starts_with("__");
    }
    mt.topic_authorized_operations = i32::MIN;
    mt.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = i as i32;
            mp.leader_id = BrokerId(p.leader);
            if version >= 7 {
                mp.leader_epoch = p.leader_epoch;
            }
            mp.error_code = if p.leader == NO_LEADER {
                errors::LEADER_NOT_AVAILABLE
            } else {
                errors::NONE
            };
            mp.replica_nodes = p.replicas.iter().map(|b| BrokerId(*b)).collect();
            mp.isr_nodes = p.isr.iter().map(|b| BrokerId(*b)).collect();
            if version >= 5 {
                mp.offline_replicas = p
                    .replicas
                    .iter()
                    .filter(|b| img.broker(**b).is_none_or(|x| x.fenced))
                    .map(|b| BrokerId(*b))
                    .collect();
            }
            mp
        })
        .collect();
    mt
}
