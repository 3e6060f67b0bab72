//! CreateAcls, DescribeAcls and DeleteAcls (v1–3: with pattern types). Creations and
//! deletions are Raft commands (`Command::CreateAcls`, `Command::DeleteAcls`), answered once
//! this node serves them; DescribeAcls reads this shard's image.
//!
//! As Kafka: with the authorizer off all three answer SECURITY_DISABLED; CreateAcls and
//! DeleteAcls need ALTER on the cluster and DescribeAcls DESCRIBE (else
//! CLUSTER_AUTHORIZATION_FAILED); a binding or filter that does not parse is INVALID_REQUEST
//! for itself alone.

use super::{str_bytes, topics};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{
    self, AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
    CODE_ANY, CODE_MATCH,
};
use chronik_raft::{Command, CommandOutcome, MetaError};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use std::rc::Rc;
use std::time::Duration;

/// How long a creation or deletion may take to commit and be served here.
const TIMEOUT: Duration = Duration::from_secs(30);
const NO_AUTHORIZER: &str = "No Authorizer is configured.";

fn invalid(msg: impl Into<String>) -> MetaError {
    MetaError::new(errors::INVALID_REQUEST, msg)
}

fn refused(code: i16, msg: &str) -> MetaError {
    MetaError::new(code, msg)
}

/// Why the client may not use the ACL APIs at all, if it may not: the authorizer off, or `op`
/// on the cluster refused.
fn gate(shard: &Services, ctx: &RequestContext, op: Operation) -> Option<MetaError> {
    if !shard.config.authorizer.enabled {
        return Some(refused(errors::SECURITY_DISABLED, NO_AUTHORIZER));
    }
    if !crate::acl::cluster_allowed(shard, ctx, op) {
        return Some(refused(
            errors::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        ));
    }
    None
}

/// A binding from its wire fields; the values a binding may not hold (ANY, MATCH, UNKNOWN) are
/// INVALID_REQUEST, as Kafka refuses them.
#[allow(clippy::too_many_arguments)]
pub fn binding_of(
    resource_type: i8,
    name: &str,
    pattern: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, MetaError> {
    let b = AclBinding {
        resource_type: ResourceType::from_code(resource_type)
            .ok_or_else(|| invalid(format!("invalid resource type {resource_type}")))?,
        resource_name: name.to_string(),
        pattern: PatternType::from_code(pattern)
            .ok_or_else(|| invalid(format!("invalid pattern type {pattern}")))?,
        principal: principal.to_string(),
        host: host.to_string(),
        operation: Operation::from_code(operation)
            .ok_or_else(|| invalid(format!("invalid operation {operation}")))?,
        permission: Permission::from_code(permission)
            .ok_or_else(|| invalid(format!("invalid permission type {permission}")))?,
    };
    acl::validate_binding(&b)?;
    Ok(b)
}

/// A filter from its wire fields; UNKNOWN and out-of-range codes are INVALID_REQUEST.
#[allow(clippy::too_many_arguments)]
pub fn filter_of(
    resource_type: i8,
    name: Option<&str>,
    pattern: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, MetaError> {
    let resource_type = match resource_type {
        CODE_ANY => None,
        c => Some(
            ResourceType::from_code(c)
                .ok_or_else(|| invalid(format!("invalid resource type filter {c}")))?,
        ),
    };
    let pattern = match pattern {
        CODE_ANY => PatternFilter::Any,
        CODE_MATCH => PatternFilter::Match,
        c => PatternFilter::Exactly(
            PatternType::from_code(c)
                .ok_or_else(|| invalid(format!("invalid pattern type filter {c}")))?,
        ),
    };
    let operation = match operation {
        CODE_ANY => None,
        c => Some(
            Operation::from_code(c)
                .ok_or_else(|| invalid(format!("invalid operation filter {c}")))?,
        ),
    };
    let permission = match permission {
        CODE_ANY => None,
        c => Some(
            Permission::from_code(c)
                .ok_or_else(|| invalid(format!("invalid permission filter {c}")))?,
        ),
    };
    let filter = AclFilter {
        resource_type,
        resource_name: name.map(str::to_string),
        pattern,
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation,
        permission,
    };
    acl::validate_filter(&filter)?;
    Ok(filter)
}

pub async fn create(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: CreateAclsRequest = decode(body, ctx.api_version)?;
    let mut results: Vec<Result<(), MetaError>> = Vec::with_capacity(req.creations.len());
    if let Some(e) = gate(&shard, &ctx, Operation::Alter) {
        results.resize(req.creations.len(), Err(e));
    } else if req.creations.len() > acl::MAX_PER_REQUEST {
        let e = invalid(format!("at most {} ACLs per request", acl::MAX_PER_REQUEST));
        results.resize(req.creations.len(), Err(e));
    } else {
        // Parsed here; the valid ones go to the controller in one command, which answers each.
        let parsed: Vec<Result<AclBinding, MetaError>> = req
            .creations
            .iter()
            .map(|c| {
                binding_of(
                    c.resource_type,
                    &c.resource_name,
                    c.resource_pattern_type,
                    &c.principal,
                    &c.host,
                    c.operation,
                    c.permission_type,
                )
            })
            .collect();
        let valid: Vec<AclBinding> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
        let mut committed: Box<dyn Iterator<Item = Result<(), MetaError>>> = if valid.is_empty() {
            Box::new(std::iter::empty())
        } else {
            let n = valid.len();
            match topics::submit_served(&shard, Command::CreateAcls { acls: valid }, TIMEOUT).await
            {
                Ok(CommandOutcome::AclsCreated(v)) if v.len() == n => Box::new(v.into_iter()),
                Ok(CommandOutcome::Rejected(e)) | Err(e) => {
                    Box::new(std::iter::repeat_n(Err(e), n))
                }
                Ok(other) => {
                    let e = MetaError::new(
                        errors::UNKNOWN_SERVER_ERROR,
                        format!("unexpected controller outcome {other:?}"),
                    );
                    Box::new(std::iter::repeat_n(Err(e), n))
                }
            }
        };
        for p in parsed {
            results.push(match p {
                Ok(_) => committed.next().unwrap_or_else(|| {
                    Err(MetaError::new(errors::UNKNOWN_SERVER_ERROR, "no outcome"))
                }),
                Err(e) => Err(e),
            });
        }
    }
    let mut resp = CreateAclsResponse::default();
    resp.results = results
        .into_iter()
        .map(|r| {
            let mut out = AclCreationResult::default();
            if let Err(e) = r {
                out.error_code = e.code;
                out.error_message = Some(str_bytes(&e.message));
            }
            out
        })
        .collect();
    ctx.encode(&resp).map(Some)
}

pub async fn describe(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeAclsRequest = decode(body, ctx.api_version)?;
    let mut resp = DescribeAclsResponse::default();
    let filter = gate(&shard, &ctx, Operation::Describe)
        .map(Err)
        .unwrap_or_else(|| {
            filter_of(
                req.resource_type_filter,
                req.resource_name_filter.as_deref(),
                req.pattern_type_filter,
                req.principal_filter.as_deref(),
                req.host_filter.as_deref(),
                req.operation,
                req.permission_type,
            )
        });
    match filter {
        Err(e) => {
            resp.error_code = e.code;
            resp.error_message = Some(str_bytes(&e.message));
        }
        Ok(filter) => {
            let img = shard.image();
            // Bindings are sorted by resource first, so one resource's bindings are adjacent.
            for b in img.acls.matching(&filter) {
                let mut d = AclDescription::default();
                d.principal = str_bytes(&b.principal);
                d.host = str_bytes(&b.host);
                d.operation = b.operation.code();
                d.permission_type = b.permission.code();
                let same = resp.resources.last().is_some_and(|r| {
                    r.resource_type == b.resource_type.code()
                        && r.pattern_type == b.pattern.code()
                        && r.resource_name.as_str() == b.resource_name
                });
                if !same {
                    let mut r = DescribeAclsResource::default();
                    r.resource_type = b.resource_type.code();
                    r.resource_name = str_bytes(&b.resource_name);
                    r.pattern_type = b.pattern.code();
                    resp.resources.push(r);
                }
                if let Some(r) = resp.resources.last_mut() {
                    r.acls.push(d);
                }
            }
        }
    }
    ctx.encode(&resp).map(Some)
}

pub async fn delete(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DeleteAclsRequest = decode(body, ctx.api_version)?;
    let n = req.filters.len();
    let mut results: Vec<Result<Vec<AclBinding>, MetaError>> = Vec::with_capacity(n);
    if let Some(e) = gate(&shard, &ctx, Operation::Alter) {
        results.resize(n, Err(e));
    } else if n > acl::MAX_PER_REQUEST {
        let e = invalid(format!(
            "at most {} filters per request",
            acl::MAX_PER_REQUEST
        ));
        results.resize(n, Err(e));
    } else {
        let parsed: Vec<Result<AclFilter, MetaError>> = req
            .filters
            .iter()
            .map(|f| {
                filter_of(
                    f.resource_type_filter,
                    f.resource_name_filter.as_deref(),
                    f.pattern_type_filter,
                    f.principal_filter.as_deref(),
                    f.host_filter.as_deref(),
                    f.operation,
                    f.permission_type,
                )
            })
            .collect();
        let filters: Vec<AclFilter> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
        let mut committed: Box<dyn Iterator<Item = Result<Vec<AclBinding>, MetaError>>> = if filters
            .is_empty()
        {
            Box::new(std::iter::empty())
        } else {
            let k = filters.len();
            match topics::submit_served(&shard, Command::DeleteAcls { filters }, TIMEOUT).await {
                Ok(CommandOutcome::AclsDeleted(v)) if v.len() == k => Box::new(v.into_iter()),
                Ok(CommandOutcome::Rejected(e)) | Err(e) => {
                    Box::new(std::iter::repeat_n(Err(e), k))
                }
                Ok(other) => {
                    let e = MetaError::new(
                        errors::UNKNOWN_SERVER_ERROR,
                        format!("unexpected controller outcome {other:?}"),
                    );
                    Box::new(std::iter::repeat_n(Err(e), k))
                }
            }
        };
        for p in parsed {
            results.push(match p {
                Ok(_) => committed.next().unwrap_or_else(|| {
                    Err(MetaError::new(errors::UNKNOWN_SERVER_ERROR, "no outcome"))
                }),
                Err(e) => Err(e),
            });
        }
    }
    let mut resp = DeleteAclsResponse::default();
    resp.filter_results = results
        .into_iter()
        .map(|r| {
            let mut out = DeleteAclsFilterResult::default();
            match r {
                Ok(deleted) => {
                    out.matching_acls = deleted.iter().map(matching_acl).collect();
                }
                Err(e) => {
                    out.error_code = e.code;
                    out.error_message = Some(str_bytes(&e.message));
                }
            }
            out
        })
        .collect();
    ctx.encode(&resp).map(Some)
}

fn matching_acl(b: &AclBinding) -> DeleteAclsMatchingAcl {
    let mut m = DeleteAclsMatchingAcl::default();
    m.resource_type = b.resource_type.code();
    m.resource_name = str_bytes(&b.resource_name);
    m.pattern_type = b.pattern.code();
    m.principal = str_bytes(&b.principal);
    m.host = str_bytes(&b.host);
    m.operation = b.operation.code();
    m.permission_type = b.permission.code();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_cannot_hold_any_match_or_unknown_values() {
        let ok = binding_of(2, "t", 3, "User:a", "*", 4, 3).expect("valid");
        assert_eq!(ok.operation, Operation::Write);
        let user = binding_of(7, "User:b", 3, "User:a", "*", 13, 3).expect("valid");
        assert_eq!(user.resource_type, ResourceType::User);
        assert_eq!(user.operation, Operation::CreateTokens);
        for (rt, pt, op, perm) in [
            (1, 3, 4, 3),
            (2, 2, 4, 3),
            (2, 3, 1, 3),
            (2, 3, 4, 1),
            (0, 3, 4, 3),
        ] {
            let e = binding_of(rt, "t", pt, "User:a", "*", op, perm).expect_err("refused");
            assert_eq!(e.code, errors::INVALID_REQUEST);
        }
    }

    #[test]
    fn a_filter_takes_any_and_match_and_refuses_unknown() {
        let f = filter_of(1, None, 1, None, None, 1, 1).expect("valid");
        assert_eq!(f, AclFilter::any());
        let f = filter_of(2, Some("t"), 2, None, None, 8, 3).expect("valid");
        assert_eq!(f.pattern, PatternFilter::Match);
        assert_eq!(f.operation, Some(Operation::Describe));
        let f = filter_of(7, None, 1, None, None, 14, 1).expect("valid");
        assert_eq!(f.resource_type, Some(ResourceType::User));
        assert_eq!(f.operation, Some(Operation::DescribeTokens));
        assert!(filter_of(8, None, 1, None, None, 1, 1).is_err());
        assert!(filter_of(2, None, 1, None, None, 15, 1).is_err());
        assert!(filter_of(0, None, 1, None, None, 1, 1).is_err());
        assert!(filter_of(2, None, 0, None, None, 1, 1).is_err());
        let long = "x".repeat(acl::MAX_PRINCIPAL_LEN + 1);
        assert!(filter_of(1, None, 1, Some(&long), None, 1, 1).is_err());
    }
}
