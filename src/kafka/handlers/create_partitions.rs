//! CreatePartitions: grow a topic's partition count through the controller.

use super::{str_bytes, topic_name, topics};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::{validate, Command, MetaError};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: CreatePartitionsRequest = decode(body, ctx.api_version)?;
    // Every topic of the request, in order, with a refusal decided here (None: submitted).
    let early: Vec<(String, Option<MetaError>)> = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let e = validate::client_may_grow(&name).err();
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
        .filter(|t| !validate::is_internal_topic(&t.name.0))
        .map(|t| {
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
