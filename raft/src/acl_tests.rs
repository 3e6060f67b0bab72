use super::*;
use crate::command::{Command, CommandOutcome, ProposedCommand};
use crate::metadata::{Defaults, MetaState};
use Operation::*;
use Permission::*;
use ResourceType::*;

fn binding(
    rt: ResourceType,
    name: &str,
    pattern: PatternType,
    principal: &str,
    op: Operation,
    perm: Permission,
) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.into(),
        pattern,
        principal: principal.into(),
        host: "*".into(),
        operation: op,
        permission: perm,
    }
}

fn lit(name: &str, principal: &str, op: Operation, perm: Permission) -> AclBinding {
    binding(Topic, name, PatternType::Literal, principal, op, perm)
}

fn set(b: &[AclBinding]) -> AclSet {
    AclSet::from_bindings(b.iter().cloned().collect())
}

const ALICE: &str = "User:CN=alice";

#[test]
fn no_binding_for_the_resource_is_no_acls_not_a_denial() {
    let s = set(&[lit("other", ALICE, Write, Allow)]);
    assert_eq!(
        s.verdict(ALICE, "1.2.3.4", Write, Topic, "t"),
        Verdict::NoAcls
    );
    // A binding for someone else on the resource makes it "found": Kafka then denies.
    let s = set(&[lit("t", "User:bob", Write, Allow)]);
    assert_eq!(
        s.verdict(ALICE, "1.2.3.4", Write, Topic, "t"),
        Verdict::Denied
    );
}

#[test]
fn an_allow_lets_the_principal_do_that_operation_and_what_it_implies() {
    let s = set(&[lit("t", ALICE, Write, Allow)]);
    assert_eq!(s.verdict(ALICE, "h", Write, Topic, "t"), Verdict::Allowed);
    assert_eq!(
        s.verdict(ALICE, "h", Describe, Topic, "t"),
        Verdict::Allowed
    );
    assert_eq!(s.verdict(ALICE, "h", Read, Topic, "t"), Verdict::Denied);
    let s = set(&[lit("t", ALICE, AlterConfigs, Allow)]);
    assert_eq!(
        s.verdict(ALICE, "h", DescribeConfigs, Topic, "t"),
        Verdict::Allowed
    );
    let s = set(&[lit("t", ALICE, All, Allow)]);
    assert_eq!(s.verdict(ALICE, "h", Delete, Topic, "t"), Verdict::Allowed);
}

#[test]
fn deny_wins_over_allow_but_does_not_imply_other_operations() {
    let s = set(&[lit("t", ALICE, All, Allow), lit("t", ALICE, Read, Deny)]);
    assert_eq!(s.verdict(ALICE, "h", Read, Topic, "t"), Verdict::Denied);
    assert_eq!(
        s.verdict(ALICE, "h", Describe, Topic, "t"),
        Verdict::Allowed
    );
    let s = set(&[
        lit("t", ALICE, Write, Allow),
        lit("*", WILDCARD_PRINCIPAL, All, Deny),
    ]);
    assert_eq!(s.verdict(ALICE, "h", Write, Topic, "t"), Verdict::Denied);
}

#[test]
fn wildcards_match_every_principal_host_and_literal_name() {
    let s = set(&[lit("*", WILDCARD_PRINCIPAL, Read, Allow)]);
    assert_eq!(s.verdict(ALICE, "h", Read, Topic, "any"), Verdict::Allowed);
    let mut b = lit("t", ALICE, Read, Allow);
    b.host = "10.0.0.1".into();
    let s = set(&[b]);
    assert_eq!(
        s.verdict(ALICE, "10.0.0.1", Read, Topic, "t"),
        Verdict::Allowed
    );
    assert_eq!(
        s.verdict(ALICE, "10.0.0.2", Read, Topic, "t"),
        Verdict::Denied
    );
}

#[test]
fn a_prefixed_binding_covers_every_name_that_starts_with_it() {
    let s = set(&[
        binding(Topic, "orders-", PatternType::Prefixed, ALICE, Write, Allow),
        binding(
            Topic,
            "orders-secret",
            PatternType::Prefixed,
            ALICE,
            Write,
            Deny,
        ),
    ]);
    assert_eq!(
        s.verdict(ALICE, "h", Write, Topic, "orders-eu"),
        Verdict::Allowed
    );
    assert_eq!(
        s.verdict(ALICE, "h", Write, Topic, "orders-secret-1"),
        Verdict::Denied
    );
    assert_eq!(
        s.verdict(ALICE, "h", Write, Topic, "orders"),
        Verdict::NoAcls
    );
    // Resource types are apart: a topic binding says nothing of a group of the same name.
    assert_eq!(
        s.verdict(ALICE, "h", Read, Group, "orders-eu"),
        Verdict::NoAcls
    );
}

#[test]
fn a_write_on_some_topic_counts_for_authorization_by_resource_type() {
    let s = set(&[binding(
        Topic,
        "p-",
        PatternType::Prefixed,
        ALICE,
        Write,
        Allow,
    )]);
    assert!(s.any_allow(ALICE, "h", Write, Topic));
    assert!(!s.any_allow("User:bob", "h", Write, Topic));
    let s = set(&[lit("t", ALICE, Write, Allow), lit("*", ALICE, Write, Deny)]);
    assert!(!s.any_allow(ALICE, "h", Write, Topic));
}

#[test]
fn filters_match_as_kafka_resource_pattern_filters_do() {
    let l = lit("orders", ALICE, Read, Allow);
    let w = lit("*", ALICE, Read, Allow);
    let p = binding(Topic, "ord", PatternType::Prefixed, ALICE, Read, Allow);
    let named = |pattern| AclFilter {
        resource_name: Some("orders".into()),
        pattern,
        ..AclFilter::any()
    };
    let m = named(PatternFilter::Match);
    assert!(m.matches(&l) && m.matches(&w) && m.matches(&p));
    let any = named(PatternFilter::Any);
    assert!(any.matches(&l) && !any.matches(&w) && !any.matches(&p));
    let exact = named(PatternFilter::Exactly(PatternType::Prefixed));
    assert!(!exact.matches(&l) && !exact.matches(&p));
    let by_op = AclFilter {
        operation: Some(Write),
        ..AclFilter::any()
    };
    assert!(!by_op.matches(&l));
    assert!(AclFilter::any().matches(&p));
}

#[test]
fn bindings_are_refused_with_a_bad_principal_cluster_name_or_size() {
    assert!(validate_binding(&lit("t", ALICE, Read, Allow)).is_ok());
    for bad in ["alice", ":alice", "User:", ""] {
        assert!(
            validate_binding(&lit("t", bad, Read, Allow)).is_err(),
            "{bad}"
        );
    }
    let c = binding(Cluster, "c", PatternType::Literal, ALICE, Alter, Allow);
    assert!(validate_binding(&c).is_err());
    let c = binding(
        Cluster,
        CLUSTER_NAME,
        PatternType::Literal,
        ALICE,
        Alter,
        Allow,
    );
    assert!(validate_binding(&c).is_ok());
    assert!(validate_binding(&lit("", ALICE, Read, Allow)).is_err());
    assert!(validate_binding(&lit(&"x".repeat(MAX_NAME_LEN + 1), ALICE, Read, Allow)).is_err());
    let mut b = lit("t", ALICE, Read, Allow);
    b.host = String::new();
    assert!(validate_binding(&b).is_err());
}

const D: Defaults = Defaults {
    num_partitions: 1,
    replication_factor: 1,
};

#[test]
fn create_and_delete_acls_change_the_image_binding_by_binding() {
    let mut s = MetaState::default();
    let good = lit("t", ALICE, Write, Allow);
    let bad = lit("t", "nobody", Write, Allow);
    let out = s.apply(
        &ProposedCommand::new(Command::CreateAcls {
            acls: vec![good.clone(), bad],
        }),
        D,
    );
    let CommandOutcome::AclsCreated(r) = out else {
        panic!("{out:?}")
    };
    assert!(r[0].is_ok() && r[1].is_err());
    assert_eq!(s.image.acls.len(), 1);
    assert_eq!(
        s.image.acls.verdict(ALICE, "h", Write, Topic, "t"),
        Verdict::Allowed
    );
    let filters = vec![
        AclFilter {
            principal: Some(ALICE.into()),
            ..AclFilter::any()
        },
        AclFilter::any(),
    ];
    let out = s.apply(&ProposedCommand::new(Command::DeleteAcls { filters }), D);
    assert_eq!(
        out,
        CommandOutcome::AclsDeleted(vec![Ok(vec![good]), Ok(vec![])])
    );
    assert!(s.image.acls.is_empty());
}

#[test]
fn an_acl_set_round_trips_through_bincode_and_refuses_invalid_bindings() {
    let s = set(&[
        lit("t", ALICE, Write, Allow),
        binding(Group, "g", PatternType::Prefixed, ALICE, Read, Deny),
    ]);
    let bytes = bincode::serialize(&s).expect("encode");
    let back: AclSet = crate::codec::decode(&bytes).expect("decode");
    assert_eq!(back, s);
    assert_eq!(back.verdict(ALICE, "h", Read, Group, "g1"), Verdict::Denied);
    let bad = vec![lit("t", "no-colon", Write, Allow)];
    let bytes = bincode::serialize(&bad).expect("encode");
    assert!(crate::codec::decode::<AclSet>(&bytes).is_err());
}

#[test]
fn wire_codes_are_kafkas() {
    assert_eq!(Topic.code(), 2);
    assert_eq!(TransactionalId.code(), 5);
    assert_eq!((DelegationToken.code(), User.code()), (6, 7));
    let slots: Vec<usize> = ResourceType::ALL_VALUES.iter().map(|t| t.index()).collect();
    assert_eq!(
        slots,
        (0..ResourceType::ALL_VALUES.len()).collect::<Vec<_>>()
    );
    assert_eq!(Operation::from_code(12), Some(IdempotentWrite));
    assert_eq!(Operation::from_code(14), Some(DescribeTokens));
    assert_eq!(Operation::from_code(1), None);
    assert_eq!(PatternType::Prefixed.code(), 4);
    assert_eq!(Allow.code(), 3);
}

#[test]
fn acl_commands_that_change_nothing_are_answered_before_the_log() {
    use crate::validate::{precheck, Precheck};
    let mut s = MetaState::default();
    let good = lit("t", ALICE, Write, Allow);
    let bad = lit("t", "nobody", Write, Allow);
    let create = |acls| Command::CreateAcls { acls };
    assert!(matches!(
        precheck(&s.image, create(vec![bad.clone()]), D),
        Precheck::Answer(CommandOutcome::AclsCreated(_))
    ));
    assert!(matches!(
        precheck(&s.image, create(vec![good.clone(), bad]), D),
        Precheck::Propose { .. }
    ));
    s.apply(&ProposedCommand::new(create(vec![good.clone()])), D);
    assert!(matches!(
        precheck(&s.image, create(vec![good]), D),
        Precheck::Answer(CommandOutcome::AclsCreated(_))
    ));
    let none = Command::DeleteAcls {
        filters: vec![AclFilter {
            principal: Some("User:bob".into()),
            ..AclFilter::any()
        }],
    };
    assert!(matches!(
        precheck(&s.image, none, D),
        Precheck::Answer(CommandOutcome::AclsDeleted(_))
    ));
    let too_long = Command::DeleteAcls {
        filters: vec![AclFilter {
            host: Some("h".repeat(MAX_HOST_LEN + 1)),
            ..AclFilter::any()
        }],
    };
    assert!(matches!(
        precheck(&s.image, too_long, D),
        Precheck::Answer(CommandOutcome::AclsDeleted(v)) if v[0].is_err()
    ));
    let all = Command::DeleteAcls {
        filters: vec![AclFilter::any()],
    };
    assert!(matches!(
        precheck(&s.image, all, D),
        Precheck::Propose { .. }
    ));
}

#[test]
fn user_and_delegation_token_bindings_are_kept_apart_from_other_types() {
    let s = set(&[
        binding(
            User,
            "User:bob",
            PatternType::Literal,
            ALICE,
            CreateTokens,
            Allow,
        ),
        binding(
            DelegationToken,
            "tok",
            PatternType::Prefixed,
            ALICE,
            Describe,
            Deny,
        ),
    ]);
    assert_eq!(
        s.verdict(ALICE, "h", CreateTokens, User, "User:bob"),
        Verdict::Allowed
    );
    assert_eq!(
        s.verdict(ALICE, "h", DescribeTokens, User, "User:bob"),
        Verdict::Denied
    );
    assert_eq!(
        s.verdict(ALICE, "h", Describe, DelegationToken, "tok-1"),
        Verdict::Denied
    );
    // A topic of the same name is another resource.
    assert_eq!(
        s.verdict(ALICE, "h", Read, Topic, "User:bob"),
        Verdict::NoAcls
    );
    let bytes = bincode::serialize(&s).expect("encode");
    let back: AclSet = crate::codec::decode(&bytes).expect("decode");
    assert_eq!(back, s);
}

#[test]
fn bindings_written_before_the_token_types_existed_still_decode() {
    // Variants are stored by position; the new ones were added last, so an old TRANSACTIONAL_ID
    // binding with IDEMPOTENT_WRITE keeps its meaning.
    let b = binding(
        TransactionalId,
        "x",
        PatternType::Literal,
        ALICE,
        IdempotentWrite,
        Allow,
    );
    let bytes = bincode::serialize(&b).expect("encode");
    assert_eq!(&bytes[..4], &3u32.to_le_bytes());
    let back: AclBinding = bincode::deserialize(&bytes).expect("decode");
    assert_eq!(back, b);
}
