//! FindCoordinator: the broker leading the group's `__consumer_offsets` partition (key type 0)
//! or the transactional id's `__transaction_state` partition (key type 1). Creates the topic
//! on first use.

use super::str_bytes;
use crate::group::{partition_for, OFFSETS_TOPIC};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use crate::txn::TXN_TOPIC;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use std::rc::Rc;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

struct Found {
    error: i16,
    message: Option<&'static str>,
    node: i32,
    host: String,
    port: i32,
}

fn lookup(
    shard: &Services,
    listener: Option<&str>,
    key: &str,
    key_type: i8,
    ensure_error: i16,
    authorized: bool,
) -> Found {
    let fail = |error, message| Found {
        error,
        message,
        node: -1,
        host: String::new(),
        port: -1,
    };
    let topic = match key_type {
        KEY_TYPE_GROUP => OFFSETS_TOPIC,
        KEY_TYPE_TRANSACTION => TXN_TOPIC,
        _ => {
            return fail(
                errors::INVALID_REQUEST,
                Some("unknown coordinator key type"),
            )
        }
    };
    if key.is_empty() {
        return fail(errors::INVALID_REQUEST, Some("empty coordinator key"));
    }
    if !authorized {
        let code = if key_type == KEY_TYPE_TRANSACTION {
            errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        } else {
            errors::GROUP_AUTHORIZATION_FAILED
        };
        return fail(code, None);
    }
    if ensure_error != errors::NONE {
        return fail(ensure_error, None);
    }
    shard.with_image(|img| {
        let Some(t) = img.topic(topic) else {
            return fail(errors::COORDINATOR_NOT_AVAILABLE, None);
        };
        let p = partition_for(key, t.partitions.len() as i32);
        let leader = t.partitions.get(p as usize).map_or(-1, |ps| ps.leader);
        let found = img
            .broker(leader)
            .filter(|b| !b.fenced)
            .and_then(|b| Some((b.id, super::address_on(listener, b)?)));
        match found {
            Some((node, (host, port))) => Found {
                error: errors::NONE,
                message: None,
                node,
                host: host.to_string(),
                port: i32::from(port),
            },
            None => fail(errors::COORDINATOR_NOT_AVAILABLE, None),
        }
    })
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: FindCoordinatorRequest = decode(body, ctx.api_version)?;
    let keys: Vec<String> = if ctx.api_version >= 4 {
        req.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![req.key.to_string()]
    };
    // DESCRIBE on each group or transactional id (Kafka's check); the internal topic is
    // created only for a client that may find some coordinator.
    let subject = crate::acl::Subject::of(&shard, &ctx);
    let resource = if req.key_type == KEY_TYPE_TRANSACTION {
        ResourceType::TransactionalId
    } else {
        ResourceType::Group
    };
    let authorized: Vec<bool> = shard.with_image(|i| {
        keys.iter()
            .map(|k| subject.may(i, Operation::Describe, resource, k))
            .collect()
    });
    let ensure = match req.key_type {
        _ if !authorized.contains(&true) => errors::NONE,
        KEY_TYPE_GROUP => super::topics::ensure_offsets_topic(&shard).await,
        KEY_TYPE_TRANSACTION => super::topics::ensure_txn_topic(&shard).await,
        _ => errors::NONE,
    };
    let mut resp = FindCoordinatorResponse::default();
    if ctx.api_version >= 4 {
        for (k, authorized) in keys.into_iter().zip(authorized) {
            let f = lookup(
                &shard,
                ctx.listener.as_deref(),
                &k,
                req.key_type,
                ensure,
                authorized,
            );
            let mut c = Coordinator::default();
            c.key = str_bytes(&k);
            c.node_id = BrokerId(f.node);
            c.host = str_bytes(&f.host);
            c.port = f.port;
            c.error_code = f.error;
            c.error_message = f.message.map(str_bytes);
            resp.coordinators.push(c);
        }
    } else {
        let f = lookup(
            &shard,
            ctx.listener.as_deref(),
            &keys[0],
            req.key_type,
            ensure,
            authorized.first().copied().unwrap_or(false),
        );
        resp.error_code = f.error;
        resp.error_message = f.message.map(str_bytes);
        resp.node_id = BrokerId(f.node);
        resp.host = str_bytes(&f.host);
        resp.port = f.port;
    }
    ctx.encode(&resp).map(Some)
}
