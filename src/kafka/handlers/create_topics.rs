//! CreateTopics: one controller entry for the whole request; answered once this node applied it.

use super::describe_configs::{topic_configs, RESOURCE_TOPIC};
use super::{str_bytes, topic_name, topics, uuid};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::Operation;
use chronik_raft::{validate, Command, MetaError, NewTopic};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use std::collections::BTreeMap;
use std::rc::Rc;

/// A created topic's configs as CreateTopics v5+ lists them: DescribeConfigs' entries without
/// synonyms.
fn created_configs(
    shard: &Services,
    img: &chronik_raft::image::MetadataImage,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    topic_configs(&shard.config, img, overrides, |_| true, false)
        .into_iter()
        .map(|e| {
            let mut c = CreatableTopicConfigs::default();
            c.name = e.name;
            c.value = e.value;
            c.read_only = e.read_only;
            c.config_source = e.config_source;
            c.is_sensitive = e.is_sensitive;
            c
        })
        .collect()
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: CreateTopicsRequest = decode(body, ctx.api_version)?;
    // Every topic of the request, in order, with a refusal decided here (None: submitted).
    let mut early = Vec::with_capacity(req.topics.len());
    let mut names = Vec::new();
    let mut new_topics = Vec::new();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for t in &req.topics {
        let name = t.name.0.to_string();
        // CREATE on the cluster or on the topic, as Kafka.
        if !shard.with_image(|i| crate::acl::may_create_topic(&subject, i, &name)) {
            let e = MetaError::new(errors::TOPIC_AUTHORIZATION_FAILED, "Authorization failed.");
            early.push((name, Some(e)));
            continue;
        }
        if let Err(e) = validate::client_may_create(&name) {
            early.push((name, Some(e)));
            continue;
        }
        let assignments = if t.assignments.is_empty() {
            None
        } else {
            let mut a: Vec<_> = t.assignments.iter().collect();
            a.sort_by_key(|x| x.partition_index);
            // Kafka: partition indexes must be 0-based and consecutive.
            if a.iter()
                .enumerate()
                .any(|(i, x)| x.partition_index != i as i32)
            {
                let e = MetaError::new(
                    chronik_raft::command::codes::INVALID_REPLICA_ASSIGNMENT,
                    "partitions should be 0-based and consecutive",
                );
                early.push((name, Some(e)));
                continue;
            }
            Some(
                a.into_iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect(),
            )
        };
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        names.push(name.clone());
        early.push((name.clone(), None));
        new_topics.push(NewTopic {
            name,
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments,
            configs,
        });
    }
    let cmd = (!new_topics.is_empty()).then_some(Command::CreateTopics {
        topics: new_topics,
        validate_only: req.validate_only,
    });
    let results = topics::submit_checked(&shard, early, cmd, &names, req.timeout_ms).await;
    let img = shard.image();
    let mut resp = CreateTopicsResponse::default();
    for (name, r) in results {
        let mut tr = CreatableTopicResult::default();
        tr.name = topic_name(&name);
        tr.num_partitions = -1;
        tr.replication_factor = -1;
        match r {
            Ok(id) => {
                tr.error_code = errors::NONE;
                if ctx.api_version >= 7 {
                    tr.topic_id = uuid(&id);
                }
                if let Some(t) = img.topic(&name).filter(|_| ctx.api_version >= 5) {
                    tr.num_partitions = t.partitions.len() as i32;
                    tr.replication_factor =
                        t.partitions.first().map_or(-1, |p| p.replicas.len() as i16);
                    // v5+ answers the new topic's configs, to a client that may describe
                    // them (Kafka: TOPIC_AUTHORIZATION_FAILED in topic_config_error_code).
                    match crate::acl::config_refusal(
                        &subject,
                        &img,
                        RESOURCE_TOPIC,
                        &name,
                        Operation::DescribeConfigs,
                    ) {
                        Some(code) => {
                            tr.topic_config_error_code = code;
                            tr.configs = None;
                        }
                        None => tr.configs = Some(created_configs(&shard, &img, &t.configs)),
                    }
                }
            }
            Err(e) => {
                tr.error_code = e.code;
                tr.error_message = Some(str_bytes(&e.message));
            }
        }
        resp.topics.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
