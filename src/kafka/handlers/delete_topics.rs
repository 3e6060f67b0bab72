//! DeleteTopics by name (v1–5) or by id (v6). Internal topics are refused as to a client
//! without the right to delete them (TOPIC_AUTHORIZATION_FAILED): only the broker manages them.

use super::produce::is_internal_topic;
use super::{str_bytes, topic_name, topics};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use chronik_raft::Command;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use std::rc::Rc;
use std::time::Duration;

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DeleteTopicsRequest = decode(body, ctx.api_version)?;
    let mut resp = DeleteTopicsResponse::default();
    // (requested name or None, topic id asked for, resolved name)
    let mut entries: Vec<(Option<String>, uuid::Uuid, Option<String>)> = Vec::new();
    for n in &req.topic_names {
        entries.push((
            Some(n.0.to_string()),
            uuid::Uuid::nil(),
            Some(n.0.to_string()),
        ));
    }
    for t in &req.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string());
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => {
                shard.with_image(|i| i.topic_by_id(t.topic_id.as_bytes()).map(|t| t.name.clone()))
            }
        };
        entries.push((name, t.topic_id, resolved));
    }
    // DELETE on each topic, as Kafka.
    let subject = crate::acl::Subject::of(&shard, &ctx);
    let may_delete =
        |n: &str| shard.with_image(|i| subject.may(i, Operation::Delete, ResourceType::Topic, n));
    let names: Vec<String> = entries
        .iter()
        .filter_map(|e| e.2.clone())
        .filter(|n| !is_internal_topic(n) && may_delete(n))
        .collect();
    let results = if names.is_empty() {
        Vec::new()
    } else {
        let timeout = Duration::from_millis(req.timeout_ms.clamp(1000, 60_000) as u64);
        topics::submit_per_topic(
            &shard,
            Command::DeleteTopics {
                names: names.clone(),
            },
            &names,
            timeout,
        )
        .await
    };
    for (asked, id, resolved) in entries {
        let mut r = DeletableTopicResult::default();
        r.name = resolved.as_deref().or(asked.as_deref()).map(topic_name);
        r.topic_id = id;
        if resolved.as_deref().is_some_and(|n| !may_delete(n)) {
            r.error_code = TOPIC_AUTHORIZATION_FAILED;
            r.error_message = Some(str_bytes("Authorization failed."));
            resp.responses.push(r);
            continue;
        }
        if resolved.as_deref().is_some_and(is_internal_topic) {
            r.error_code = TOPIC_AUTHORIZATION_FAILED;
            r.error_message = Some(str_bytes("internal topics cannot be deleted by clients"));
            resp.responses.push(r);
            continue;
        }
        match resolved.and_then(|n| results.iter().find(|(x, _)| *x == n)) {
            Some((_, Ok(_))) => r.error_code = errors::NONE,
            Some((_, Err(e))) => {
                r.error_code = e.code;
                r.error_message = Some(str_bytes(&e.message));
            }
            None => r.error_code = errors::UNKNOWN_TOPIC_ID,
        }
        resp.responses.push(r);
    }
    ctx.encode(&resp).map(Some)
}
