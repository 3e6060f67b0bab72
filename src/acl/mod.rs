//! The authorizer: whether the client of a request may do an operation on a resource, as
//! Kafka's StandardAuthorizer decides it. Handlers ask here and nowhere else.
//!
//! The bindings come from the shard's read-only metadata image (`chronik_raft::acl::AclSet`,
//! indexed by resource type, literal name and prefix), so a check takes no lock and does a few
//! hash lookups. Before the bindings: the authorizer off, a broker that proved itself with the
//! cluster secret (replica fetchers: inter-broker requests are authorized as the broker), and
//! the `--super-users` may do everything; a resource no binding names follows
//! `--allow-everyone-if-no-acl-found`.

use crate::kafka::RequestContext;
use crate::services::Services;
use chronik_raft::acl::{Operation, ResourceType, Verdict};
use chronik_raft::image::MetadataImage;

pub use chronik_raft::acl::CLUSTER_NAME;

/// The principal of a client that did not authenticate (Kafka's).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

pub use crate::config::authorizer::AuthorizerConfig;

/// Who sent a request, as the authorizer sees it; made once per request.
pub struct Subject<'a> {
    principal: &'a str,
    host: String,
    /// May do everything: the authorizer is off, or a super user or a proven broker asks.
    everything: bool,
    allow_if_no_acl: bool,
}

impl<'a> Subject<'a> {
    pub fn of(shard: &Services, ctx: &'a RequestContext) -> Subject<'a> {
        let config = &shard.config.authorizer;
        let principal = ctx.principal.as_deref().unwrap_or(ANONYMOUS);
        let everything = !config.enabled
            || ctx.broker.is_some()
            || config.super_users.iter().any(|s| s == principal);
        // Kafka's host is `InetAddress.getHostAddress()`: `/127.0.0.1` without the slash.
        let host = if everything {
            String::new()
        } else {
            ctx.client_host().trim_start_matches('/').to_string()
        };
        Subject {
            principal,
            host,
            everything,
            allow_if_no_acl: config.allow_if_no_acl,
        }
    }

    /// Whether this client may do `op` on the resource.
    pub fn may(
        &self,
        image: &MetadataImage,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.everything {
            return true;
        }
        match image
            .acls
            .verdict(self.principal, &self.host, op, resource_type, name)
        {
            Verdict::Allowed => true,
            Verdict::Denied => false,
            Verdict::NoAcls => self.allow_if_no_acl,
        }
    }

    /// `may` on the one CLUSTER resource.
    pub fn may_on_cluster(&self, image: &MetadataImage, op: Operation) -> bool {
        self.may(image, op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether this client may do `op` on some resource of the type (Kafka's
    /// `authorizeByResourceType`).
    pub fn may_on_some(
        &self,
        image: &MetadataImage,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        self.everything
            || image
                .acls
                .any_allow(self.principal, &self.host, op, resource_type)
            || (self.allow_if_no_acl && image.acls.is_empty())
    }

    /// Kafka's `authorized_operations` bitfield of the resource: a bit `1 << code` for each
    /// operation of the type the client may do (every one with the authorizer off, as Kafka
    /// answers without an authorizer).
    pub fn operations(
        &self,
        image: &MetadataImage,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        resource_type
            .operations()
            .iter()
            .filter(|op| self.may(image, **op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

/// Kafka's check before a topic is created (CreateTopics, auto-create): CREATE on the cluster
/// or on the topic.
pub fn may_create_topic(subject: &Subject, image: &MetadataImage, name: &str) -> bool {
    subject.may_on_cluster(image, Operation::Create)
        || subject.may(image, Operation::Create, ResourceType::Topic, name)
}

/// The refusal of a config request on a resource of DescribeConfigs/AlterConfigs type
/// `resource_type` (2 topic, 4 broker): `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on the topic,
/// or on the cluster for a broker, as Kafka checks; None when allowed (or another type).
pub fn config_refusal(
    subject: &Subject,
    image: &MetadataImage,
    resource_type: i8,
    name: &str,
    op: Operation,
) -> Option<i16> {
    use crate::kafka::errors;
    match resource_type {
        2 if !subject.may(image, op, ResourceType::Topic, name) => {
            Some(errors::TOPIC_AUTHORIZATION_FAILED)
        }
        4 if !subject.may_on_cluster(image, op) => Some(errors::CLUSTER_AUTHORIZATION_FAILED),
        _ => None,
    }
}

/// Whether the client of `ctx` may do `op` on the resource (one check; loops make a `Subject`).
pub fn allowed(
    shard: &Services,
    ctx: &RequestContext,
    op: Operation,
    resource_type: ResourceType,
    name: &str,
) -> bool {
    let subject = Subject::of(shard, ctx);
    shard.with_image(|i| subject.may(i, op, resource_type, name))
}

/// READ on the group: what every group membership API needs (Kafka's check).
pub fn group_read_allowed(shard: &Services, ctx: &RequestContext, group: &str) -> bool {
    allowed(shard, ctx, Operation::Read, ResourceType::Group, group)
}

/// WRITE on the transactional id: what every transactional API needs (Kafka's check).
pub fn transactional_id_allowed(shard: &Services, ctx: &RequestContext, id: &str) -> bool {
    allowed(
        shard,
        ctx,
        Operation::Write,
        ResourceType::TransactionalId,
        id,
    )
}

/// `allowed` on the CLUSTER resource.
pub fn cluster_allowed(shard: &Services, ctx: &RequestContext, op: Operation) -> bool {
    allowed(shard, ctx, op, ResourceType::Cluster, CLUSTER_NAME)
}

/// Kafka's value of an `authorized_operations` field the request did not ask for.
pub const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_users_are_semicolon_separated_principals() {
        let c =
            AuthorizerConfig::resolve(true, Some("User:admin; User:CN=ops"), false).expect("valid");
        assert_eq!(c.super_users, vec!["User:admin", "User:CN=ops"]);
        assert!(AuthorizerConfig::resolve(true, Some("admin"), false).is_err());
        assert!(AuthorizerConfig::resolve(false, None, false)
            .expect("none")
            .super_users
            .is_empty());
    }
}
