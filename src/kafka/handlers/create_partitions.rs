//! CreatePartitions: grow a topic's partition count through the controller.

use super::{str_bytes, topic_name, topics};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use chronik_raft::{validate, Command, MetaError};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: CreatePartitionsRequest = decode(body, ctx.api_version)?;
    let subject = crate::acl::Subject::of(&shard, &ctx);
    // Every topic of the request, in order, with a refusal decided here (None: submitted).
    let early: Vec<(String, Option<MetaError>)> = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            // ALTER on the topic, as Kafka.
            let e = if !shard
                .with_image(|i| subject.may(i, Operation::Alter, ResourceType::Topic, &name))
            {
                Some(MetaError::new(
                    errors::TOPIC_AUTHORIZATION_FAILED,
                    "Authorization failed.",
                ))
            } else {
                validate::client_may_grow(&name).err()
            };
            (name, e)
        })
        .collect();
    let names: Vec<String> = early
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let topics_arg: Vec<_> = req
        .topics
        .iter()
        .zip(&early)
        .filter(|(_, (_, e))| e.is_none())
        .map(|(t, _)| {
            (
                t.name.0.to_string(),
                t.count,
                t.assignments.as_ref().map(|a| {
                    a.iter()
                        .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                }),
            )
        })
        .collect();
    let cmd = (!topics_arg.is_empty()).then_some(Command::CreatePartitions {
        topics: topics_arg,
        validate_only: req.validate_only,
    });
    let results = topics::submit_checked(&shard, early, cmd, &names, req.timeout_ms).await;
    let mut resp = CreatePartitionsResponse::default();
    for (name, r) in results {
        let mut tr = CreatePartitionsTopicResult::default();
        tr.name = topic_name(&name);
        match r {
            Ok(_) => tr.error_code = errors::NONE,
            Err(e) => {
                tr.error_code = e.code;
                tr.error_message = Some(str_bytes(&e.message));
            }
        }
        resp.results.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
