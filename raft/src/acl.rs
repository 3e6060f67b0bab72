//! ACL bindings as Kafka defines them (KIP-11, KIP-290 prefixed patterns): their validation,
//! the filters of DescribeAcls and DeleteAcls, and `AclSet`, the bindings the image carries with
//! an index that answers "may this principal do this" without scanning every binding.
//!
//! The codes of every enum are Kafka's wire codes, so the broker converts with `from_code`.
//! The decision rules are Kafka's StandardAuthorizer's: a matching DENY wins over any ALLOW;
//! READ, WRITE, DELETE and ALTER imply DESCRIBE and ALTER_CONFIGS implies DESCRIBE_CONFIGS (for
//! ALLOW only); ALL matches every operation; `User:*` every principal and `*` every host; a
//! LITERAL `*` every resource of its type. Super users and "no ACL found" are the broker's
//! settings, decided above this module (`Verdict::NoAcls`).

use crate::command::{codes, MetaError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The one name a CLUSTER resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL resource name, principal or host that matches every one.
pub const WILDCARD: &str = "*";
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// Most bindings the cluster holds (Kafka has no limit; each one costs memory on every shard).
pub const MAX_ACLS: usize = 100_000;
/// Most bindings (or filters) one request may carry.
pub const MAX_PER_REQUEST: usize = 1_000;
pub const MAX_NAME_LEN: usize = 1_024;
pub const MAX_PRINCIPAL_LEN: usize = 1_024;
pub const MAX_HOST_LEN: usize = 255;

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident = $c:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($v),* }
        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$v),*];
            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$v => $c),* }
            }
            pub fn from_code(c: i8) -> Option<Self> {
                match c { $($c => Some($name::$v),)* _ => None }
            }
        }
    };
}

wire_enum!(
    /// Kafka's resource types. Bindings on DELEGATION_TOKEN and USER (KIP-373) are stored,
    /// listed and deleted like any other, so admin tools that manage them work; this broker
    /// serves no delegation-token API, so nothing checks them yet. New variants go last: the
    /// Raft log stores the variant's position.
    ResourceType {
        Topic = 2,
        Group = 3,
        Cluster = 4,
        TransactionalId = 5,
        DelegationToken = 6,
        User = 7,
    }
);
wire_enum!(PatternType { Literal = 3, Prefixed = 4 });
wire_enum!(Permission { Deny = 2, Allow = 3 });
wire_enum!(
    Operation {
        All = 2,
        Read = 3,
        Write = 4,
        Create = 5,
        Delete = 6,
        Alter = 7,
        Describe = 8,
        ClusterAction = 9,
        DescribeConfigs = 10,
        AlterConfigs = 11,
        IdempotentWrite = 12,
        CreateTokens = 13,
        DescribeTokens = 14,
    }
);

/// How many resource types the index keeps apart.
const RESOURCE_TYPES: usize = ResourceType::ALL_VALUES.len();

/// Kafka's wire codes of the filter-only values.
pub const CODE_ANY: i8 = 1;
pub const CODE_MATCH: i8 = 2;

impl ResourceType {
    /// The operations Kafka lists for the type (AclEntry.supportedOperations), which the
    /// `*_authorized_operations` bitfields are made of.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
        }
    }

    /// Its slot in the index: the types' wire codes run 2, 3, … without gaps.
    fn index(self) -> usize {
        (self.code() - ResourceType::Topic.code()) as usize
    }
}

impl Operation {
    /// Whether an ALLOW for `self` lets a principal do `op`.
    fn allows(self, op: Operation) -> bool {
        use Operation::*;
        self == All
            || self == op
            || (op == Describe && matches!(self, Read | Write | Delete | Alter))
            || (op == DescribeConfigs && self == AlterConfigs)
    }

    /// Whether a DENY for `self` forbids `op` (no implication: a DENY READ leaves DESCRIBE).
    fn denies(self, op: Operation) -> bool {
        self == Operation::All || self == op
    }
}

/// One ACL: who (principal, host) may or may not (permission) do what (operation) to which
/// resources (type, name, pattern).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Which patterns a filter selects: one type exactly, every type (ANY), or every pattern that
/// would apply to the filter's name (MATCH: LITERAL equal or `*`, PREFIXED a prefix of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    Any,
    Match,
    Exactly(PatternType),
}

/// A DescribeAcls or DeleteAcls filter; `None` fields match everything (Kafka's null and ANY).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Every binding.
    pub fn any() -> Self {
        AclFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Kafka's ResourcePatternFilter.matches and AccessControlEntryFilter.matches.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let eq = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.pattern_matches(b)
            && eq(&self.principal, &b.principal)
            && eq(&self.host, &b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }

    fn pattern_matches(&self, b: &AclBinding) -> bool {
        if let PatternFilter::Exactly(p) = self.pattern {
            if p != b.pattern {
                return false;
            }
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        match (self.pattern, b.pattern) {
            (PatternFilter::Match, PatternType::Literal) => {
                *name == b.resource_name || b.resource_name == WILDCARD
            }
            (PatternFilter::Match, PatternType::Prefixed) => name.starts_with(&b.resource_name),
            _ => *name == b.resource_name,
        }
    }
}

fn invalid(msg: impl Into<String>) -> Result<(), MetaError> {
    Err(MetaError::new(codes::INVALID_REQUEST, msg))
}

/// Kafka's principal form `Type:name`: a non-empty type without `:`, then any name (empty
/// names are refused here; Kafka would take them but they name no one).
pub fn valid_principal(p: &str) -> bool {
    match p.split_once(':') {
        Some((ty, name)) => !ty.is_empty() && !name.is_empty(),
        None => false,
    }
}

/// The checks Kafka makes before it stores a binding (InvalidRequestException, here
/// INVALID_REQUEST), and our size bounds.
pub fn validate_binding(b: &AclBinding) -> Result<(), MetaError> {
    if b.resource_name.is_empty() || b.resource_name.len() > MAX_NAME_LEN {
        return invalid(format!(
            "resource name must be 1 to {MAX_NAME_LEN} bytes long"
        ));
    }
    if b.resource_type == ResourceType::Cluster && b.resource_name != CLUSTER_NAME {
        return invalid(format!(
            "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        ));
    }
    if b.principal.len() > MAX_PRINCIPAL_LEN || !valid_principal(&b.principal) {
        return invalid(format!(
            "invalid principal {}: expected Type:name",
            crate::validate::shown(&b.principal)
        ));
    }
    if b.host.is_empty() || b.host.len() > MAX_HOST_LEN {
        return invalid(format!("host must be 1 to {MAX_HOST_LEN} bytes long"));
    }
    Ok(())
}

/// A filter's strings within the sizes a binding may have (a filter is written to the log).
pub fn validate_filter(f: &AclFilter) -> Result<(), MetaError> {
    let long = |v: &Option<String>, max: usize| v.as_ref().is_some_and(|v| v.len() > max);
    if long(&f.resource_name, MAX_NAME_LEN)
        || long(&f.principal, MAX_PRINCIPAL_LEN)
        || long(&f.host, MAX_HOST_LEN)
    {
        return invalid("a filter's name, principal or host is longer than any binding's");
    }
    Ok(())
}

/// What the bindings say about one request, before the broker's own settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// No binding names the resource at all (any principal, any operation): Kafka then
    /// applies `allow.everyone.if.no.acl.found`.
    NoAcls,
}

/// The principal/host/operation/permission part of a binding, as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    principal: Arc<str>,
    host: Arc<str>,
    operation: Operation,
    permission: Permission,
}

/// Bindings of one resource type by pattern: literal names (with `*`) and prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TypeIndex {
    literal: HashMap<String, Vec<Entry>>,
    prefixed: HashMap<String, Vec<Entry>>,
    /// Lengths of the prefixes present, so a check looks up only those.
    prefix_lens: BTreeSet<usize>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Inner {
    bindings: BTreeSet<AclBinding>,
    by_type: [TypeIndex; RESOURCE_TYPES],
}

/// The cluster's ACL bindings and their index. Cloning is O(1) (images are cloned to publish);
/// a change rebuilds the index, which is fine: ACLs change rarely and are read on every request.
/// Serialized as the sorted list of bindings; the index is rebuilt on reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclSet {
    inner: Arc<Inner>,
}

impl AclSet {
    pub fn from_bindings(bindings: BTreeSet<AclBinding>) -> Self {
        let mut by_type: [TypeIndex; RESOURCE_TYPES] = Default::default();
        for b in &bindings {
            let idx = &mut by_type[b.resource_type.index()];
            let map = match b.pattern {
                PatternType::Literal => &mut idx.literal,
                PatternType::Prefixed => {
                    idx.prefix_lens.insert(b.resource_name.len());
                    &mut idx.prefixed
                }
            };
            map.entry(b.resource_name.clone()).or_default().push(Entry {
                principal: Arc::from(b.principal.as_str()),
                host: Arc::from(b.host.as_str()),
                operation: b.operation,
                permission: b.permission,
            });
        }
        AclSet {
            inner: Arc::new(Inner { bindings, by_type }),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.bindings.is_empty()
    }

    pub fn bindings(&self) -> impl Iterator<Item = &AclBinding> {
        self.inner.bindings.iter()
    }

    pub fn contains(&self, b: &AclBinding) -> bool {
        self.inner.bindings.contains(b)
    }

    /// The bindings `filter` selects, in order.
    pub fn matching<'a>(&'a self, filter: &'a AclFilter) -> impl Iterator<Item = &'a AclBinding> {
        self.bindings().filter(move |b| filter.matches(b))
    }

    /// What the bindings say about `principal` at `host` doing `op` on the resource.
    pub fn verdict(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Verdict {
        let idx = &self.inner.by_type[resource_type.index()];
        let mut found = false;
        let mut allowed = false;
        let mut visit = |entries: &[Entry]| -> bool {
            found = true;
            for e in entries {
                let who = &*e.principal == principal || &*e.principal == WILDCARD_PRINCIPAL;
                let from = &*e.host == host || &*e.host == WILDCARD;
                if !(who && from) {
                    continue;
                }
                match e.permission {
                    Permission::Deny if e.operation.denies(op) => return true,
                    Permission::Allow if e.operation.allows(op) => allowed = true,
                    _ => {}
                }
            }
            false
        };
        let literal = [name, WILDCARD]
            .into_iter()
            .take(if name == WILDCARD { 1 } else { 2 });
        for n in literal {
            if let Some(entries) = idx.literal.get(n) {
                if visit(entries) {
                    return Verdict::Denied;
                }
            }
        }
        for &len in idx.prefix_lens.range(..=name.len()) {
            let Some(prefix) = name.get(..len) else {
                continue;
            };
            if let Some(entries) = idx.prefixed.get(prefix) {
                if visit(entries) {
                    return Verdict::Denied;
                }
            }
        }
        match (found, allowed) {
            (false, _) => Verdict::NoAcls,
            (true, true) => Verdict::Allowed,
            (true, false) => Verdict::Denied,
        }
    }

    /// Whether some binding of `resource_type` lets `principal` do `op` on some resource of
    /// that type, undenied on its own name: Kafka's `authorizeByResourceType`, by which an
    /// idempotent producer without CLUSTER IDEMPOTENT_WRITE still gets an id if it may WRITE
    /// some topic.
    pub fn any_allow(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        let idx = &self.inner.by_type[resource_type.index()];
        let allows = |entries: &Vec<Entry>| {
            entries.iter().any(|e| {
                (&*e.principal == principal || &*e.principal == WILDCARD_PRINCIPAL)
                    && (&*e.host == host || &*e.host == WILDCARD)
                    && e.permission == Permission::Allow
                    && e.operation.allows(op)
            })
        };
        idx.literal
            .iter()
            .chain(idx.prefixed.iter())
            .filter(|(_, entries)| allows(entries))
            .any(|(name, _)| {
                self.verdict(principal, host, op, resource_type, name) == Verdict::Allowed
            })
    }

    /// The set after adding `add`; `None` when it would pass `MAX_ACLS`.
    pub fn with_added(&self, add: &[AclBinding]) -> Option<AclSet> {
        let mut b = self.inner.bindings.clone();
        b.extend(add.iter().cloned());
        (b.len() <= MAX_ACLS).then(|| AclSet::from_bindings(b))
    }

    /// The set without `remove`.
    pub fn without(&self, remove: &BTreeSet<AclBinding>) -> AclSet {
        let b = self
            .inner
            .bindings
            .iter()
            .filter(|b| !remove.contains(*b))
            .cloned()
            .collect();
        AclSet::from_bindings(b)
    }
}

impl Serialize for AclSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.inner.bindings.iter())
    }
}

impl<'de> Deserialize<'de> for AclSet {
    /// Element by element (bincode's length prefix is bounded by the input, `codec`), then the
    /// bindings are checked as CreateAcls checks them: a snapshot is input too.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq;
        impl<'de> serde::de::Visitor<'de> for Seq {
            type Value = BTreeSet<AclBinding>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of ACL bindings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = BTreeSet::new();
                while let Some(b) = a.next_element::<AclBinding>()? {
                    if out.len() >= MAX_ACLS {
                        return Err(serde::de::Error::custom("too many ACL bindings"));
                    }
                    validate_binding(&b).map_err(serde::de::Error::custom)?;
                    out.insert(b);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq).map(AclSet::from_bindings)
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
