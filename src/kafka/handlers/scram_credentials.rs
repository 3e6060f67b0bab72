//! AlterUserScramCredentials and DescribeUserScramCredentials: SASL/SCRAM users in the cluster
//! metadata (`chronik_raft::scram`).
//!
//! Alter: the broker that takes the request derives each credential's stored and server keys
//! from the salted password the client sent (so the salted password never reaches the Raft
//! log), then commits one `Command::AlterScramCredentials` through the controller. Results are
//! per user, as Kafka answers: a user with any refused change changes nothing.

use super::{str_bytes, topics};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::sasl::scram::Credential;
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::Operation;
use chronik_raft::command::codes;
use chronik_raft::scram::{ScramDelete, ScramMechanism, ScramUpsert, MAX_SALT};
use chronik_raft::{Command, CommandOutcome, MetaError};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

/// Longest salted password taken (it is a hash output: 32 or 64 bytes).
const MAX_SALTED_PASSWORD: usize = 1024;

fn unknown_mechanism() -> MetaError {
    MetaError::new(
        errors::UNSUPPORTED_SASL_MECHANISM,
        "Unknown SCRAM mechanism",
    )
}

/// A request's upsertion as the command carries it, or why it is refused here.
fn upsert_of(
    u: &kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion,
) -> Result<ScramUpsert, MetaError> {
    let user = u.name.to_string();
    chronik_raft::scram::user_name(&user)?;
    let mechanism = ScramMechanism::from_type(u.mechanism).ok_or_else(unknown_mechanism)?;
    let iterations = u32::try_from(u.iterations).unwrap_or(0);
    if u.salt.is_empty() || u.salt.len() > MAX_SALT {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            format!("the salt must be 1 to {MAX_SALT} bytes"),
        ));
    }
    if u.salted_password.is_empty() || u.salted_password.len() > MAX_SALTED_PASSWORD {
        return Err(MetaError::new(
            codes::UNACCEPTABLE_CREDENTIAL,
            "the salted password must be 1 to 1024 bytes",
        ));
    }
    let credential =
        Credential::from_salted(mechanism.into(), &u.salted_password, &u.salt, iterations);
    let upsert = ScramUpsert {
        user,
        mechanism,
        credential: credential.into(),
    };
    // Iterations and the rest, as the controller checks them again.
    chronik_raft::scram::check_upsert(&upsert)?;
    Ok(upsert)
}

pub async fn handle_alter(
    shard: Rc<Services>,
    ctx: RequestContext,
    body: BytesMut,
) -> HandlerResult {
    let req: AlterUserScramCredentialsRequest = decode(body, ctx.api_version)?;
    // ALTER on the cluster, as Kafka; refused, every user answers so.
    let subject = crate::acl::Subject::of(&shard, &ctx);
    if !shard.with_image(|i| subject.may_on_cluster(i, Operation::Alter)) {
        let mut resp = AlterUserScramCredentialsResponse::default();
        let users = req.deletions.iter().map(|d| &d.name);
        let mut named = BTreeSet::new();
        for user in users.chain(req.upsertions.iter().map(|u| &u.name)) {
            if named.insert(user.to_string()) {
                let mut out = AlterUserScramCredentialsResult::default();
                out.user = user.clone();
                out.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
                resp.results.push(out);
            }
        }
        return ctx.encode(&resp).map(Some);
    }
    let mut order: Vec<String> = Vec::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    let mut early: BTreeMap<String, MetaError> = BTreeMap::new();
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let mut note = |user: &str, order: &mut Vec<String>| {
        if named.insert(user.to_string()) {
            order.push(user.to_string());
        }
    };
    for d in &req.deletions {
        let user = d.name.to_string();
        note(&user, &mut order);
        let checked = chronik_raft::scram::user_name(&user)
            .and_then(|()| ScramMechanism::from_type(d.mechanism).ok_or_else(unknown_mechanism));
        match checked {
            Ok(mechanism) => deletes.push(ScramDelete { user, mechanism }),
            Err(e) => {
                early.entry(user).or_insert(e);
            }
        }
    }
    for u in &req.upsertions {
        let user = u.name.to_string();
        note(&user, &mut order);
        match upsert_of(u) {
            Ok(up) => upserts.push(up),
            Err(e) => {
                early.entry(user).or_insert(e);
            }
        }
    }
    // A user refused here changes nothing: none of its changes are proposed.
    upserts.retain(|u| !early.contains_key(&u.user));
    deletes.retain(|d| !early.contains_key(&d.user));
    let mut committed: BTreeMap<String, Result<(), MetaError>> = BTreeMap::new();
    if !upserts.is_empty() || !deletes.is_empty() {
        let cmd = Command::AlterScramCredentials { upserts, deletes };
        match topics::submit_served(&shard, cmd, Duration::from_secs(30)).await {
            Ok(CommandOutcome::Users(v)) => committed.extend(v),
            Ok(CommandOutcome::Rejected(e)) | Err(e) => {
                for u in &order {
                    committed.insert(u.clone(), Err(e.clone()));
                }
            }
            Ok(other) => {
                let e = MetaError::new(
                    errors::UNKNOWN_SERVER_ERROR,
                    format!("unexpected controller outcome {other:?}"),
                );
                for u in &order {
                    committed.insert(u.clone(), Err(e.clone()));
                }
            }
        }
    }
    let mut resp = AlterUserScramCredentialsResponse::default();
    for user in order {
        let r = match early.remove(&user) {
            Some(e) => Err(e),
            None => committed.remove(&user).unwrap_or(Ok(())),
        };
        let mut out = AlterUserScramCredentialsResult::default();
        out.user = str_bytes(&user);
        if let Err(e) = r {
            out.error_code = e.code;
            out.error_message = Some(str_bytes(&e.message));
        }
        resp.results.push(out);
    }
    ctx.encode(&resp).map(Some)
}

pub async fn handle_describe(
    shard: Rc<Services>,
    ctx: RequestContext,
    body: BytesMut,
) -> HandlerResult {
    let req: DescribeUserScramCredentialsRequest = decode(body, ctx.api_version)?;
    let mut resp = DescribeUserScramCredentialsResponse::default();
    // DESCRIBE on the cluster, as Kafka.
    let subject = crate::acl::Subject::of(&shard, &ctx);
    if !shard.with_image(|i| subject.may_on_cluster(i, Operation::Describe)) {
        resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let info = |mechs: &BTreeMap<ScramMechanism, chronik_raft::scram::ScramCredential>| {
        mechs
            .iter()
            .map(|(m, c)| {
                let mut i = CredentialInfo::default();
                i.mechanism = m.type_id();
                i.iterations = i32::try_from(c.iterations).unwrap_or(i32::MAX);
                i
            })
            .collect::<Vec<_>>()
    };
    resp.results = shard.with_image(|img| {
        let users = &img.scram.users;
        let wanted: Vec<String> = match &req.users {
            // Kafka: no list or an empty one describes every user.
            Some(list) if !list.is_empty() => list.iter().map(|u| u.name.to_string()).collect(),
            _ => {
                return users
                    .iter()
                    .map(|(name, mechs)| {
                        let mut r = DescribeUserScramCredentialsResult::default();
                        r.user = str_bytes(name);
                        r.credential_infos = info(mechs);
                        r
                    })
                    .collect();
            }
        };
        let mut seen = BTreeSet::new();
        let mut dup = BTreeSet::new();
        for u in &wanted {
            if !seen.insert(u.as_str()) {
                dup.insert(u.as_str());
            }
        }
        let mut done = BTreeSet::new();
        wanted
            .iter()
            .filter(|u| done.insert(u.as_str()))
            .map(|u| {
                let mut r = DescribeUserScramCredentialsResult::default();
                r.user = str_bytes(u);
                if dup.contains(u.as_str()) {
                    r.error_code = codes::DUPLICATE_RESOURCE;
                    r.error_message = Some(str_bytes(
                        "Cannot describe SCRAM credentials for the same user twice in a single \
                         request",
                    ));
                } else if let Some(mechs) = users.get(u) {
                    r.credential_infos = info(mechs);
                } else {
                    r.error_code = codes::RESOURCE_NOT_FOUND;
                    r.error_message = Some(str_bytes(
                        "Attempt to describe a user credential that does not exist",
                    ));
                }
                r
            })
            .collect()
    });
    ctx.encode(&resp).map(Some)
}
