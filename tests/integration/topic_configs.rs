//! Topic configs through Kafka's three config APIs against a real broker: the legacy
//! AlterConfigs (librdkafka's `alter_configs`) replaces a topic's overrides, IncrementalAlterConfigs
//! sets, deletes, appends to and subtracts from list configs, DescribeConfigs shows the result.

use crate::common::cluster_util::{admin, block_on, create};
use crate::common::{raw, Server};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};

const INVALID_CONFIG: i16 = 40;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(15)))
}

/// The topic's value of `key` and whether it is an override (not the default).
fn describe(bootstrap: &str, topic: &str, key: &str) -> (String, bool) {
    let r =
        block_on(admin(bootstrap).describe_configs(&[ResourceSpecifier::Topic(topic)], &opts()))
            .expect("describe_configs");
    let res = r[0].as_ref().expect("described");
    let e = res.get(key).unwrap_or_else(|| panic!("{key} described"));
    (
        e.value.clone().unwrap_or_default(),
        matches!(e.source, ConfigSource::DynamicTopic),
    )
}

/// One IncrementalAlterConfigs of `(key, op, value)` on `topic`: its error code.
fn incremental(addr: &str, topic: &str, changes: &[(&str, i8, &str)]) -> i16 {
    let mut s = raw::connect(addr).expect("connect");
    let mut res = AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.into());
    res.configs = changes
        .iter()
        .map(|(k, op, v)| {
            let mut c = AlterableConfig::default();
            c.name = StrBytes::from_string(k.to_string());
            c.config_operation = *op;
            c.value = Some(StrBytes::from_string(v.to_string()));
            c
        })
        .collect();
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res];
    let r: IncrementalAlterConfigsResponse =
        raw::call(&mut s, ApiKey::IncrementalAlterConfigs, 1, &req).expect("answered");
    r.responses[0].error_code
}

/// One legacy AlterConfigs (v1) setting `configs` on `topic`: its error code.
fn legacy(addr: &str, topic: &str, configs: &[(&str, &str)]) -> i16 {
    use kafka_protocol::messages::alter_configs_request as req;
    let mut s = raw::connect(addr).expect("connect");
    let mut res = req::AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.into());
    res.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = req::AlterableConfig::default();
            c.name = StrBytes::from_string(k.to_string());
            c.value = Some(StrBytes::from_string(v.to_string()));
            c
        })
        .collect();
    let mut r = kafka_protocol::messages::AlterConfigsRequest::default();
    r.resources = vec![res];
    let resp: kafka_protocol::messages::AlterConfigsResponse =
        raw::call(&mut s, ApiKey::AlterConfigs, 1, &r).expect("answered");
    resp.responses[0].error_code
}

#[test]
fn legacy_alter_configs_replaces_every_override_of_a_topic() {
    let s = Server::start(&["--cores", "2"]);
    let b = s.bootstrap();
    create(&b, NewTopic::new("legacy", 2, TopicReplication::Fixed(1)));
    let set = AlterConfig::new(ResourceSpecifier::Topic("legacy"))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "3600000");
    let r = block_on(admin(&b).alter_configs(&[set], &opts())).expect("alter_configs");
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(
        describe(&b, "legacy", "cleanup.policy"),
        ("compact".into(), true)
    );
    assert_eq!(
        describe(&b, "legacy", "retention.ms"),
        ("3600000".into(), true)
    );

    // Naming only retention.ms: cleanup.policy goes back to the broker default.
    let set = AlterConfig::new(ResourceSpecifier::Topic("legacy")).set("retention.ms", "7200000");
    let r = block_on(admin(&b).alter_configs(&[set], &opts())).expect("alter_configs");
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(
        describe(&b, "legacy", "retention.ms"),
        ("7200000".into(), true)
    );
    assert_eq!(
        describe(&b, "legacy", "cleanup.policy"),
        ("delete".into(), false)
    );

    // A bad value or an unknown topic changes nothing.
    assert_eq!(
        legacy(&b, "legacy", &[("retention.ms", "-7")]),
        INVALID_CONFIG
    );
    assert_eq!(
        legacy(&b, "legacy", &[("no.such.config", "1")]),
        INVALID_CONFIG
    );
    assert_eq!(
        describe(&b, "legacy", "retention.ms"),
        ("7200000".into(), true)
    );
    assert_eq!(
        legacy(&b, "nope", &[("retention.ms", "1000")]),
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[test]
fn incremental_alter_configs_appends_to_and_subtracts_from_list_configs() {
    let s = Server::start(&["--cores", "2"]);
    let b = s.bootstrap();
    create(&b, NewTopic::new("lists", 1, TopicReplication::Fixed(1)));
    // APPEND starts from the default value, "delete".
    assert_eq!(
        incremental(&b, "lists", &[("cleanup.policy", 2, "compact")]),
        0
    );
    assert_eq!(
        describe(&b, "lists", "cleanup.policy"),
        ("delete,compact".into(), true)
    );
    // Appending what is there already changes nothing; subtracting removes.
    assert_eq!(
        incremental(&b, "lists", &[("cleanup.policy", 2, "compact")]),
        0
    );
    assert_eq!(
        incremental(&b, "lists", &[("cleanup.policy", 3, "delete")]),
        0
    );
    assert_eq!(
        describe(&b, "lists", "cleanup.policy"),
        ("compact".into(), true)
    );
    // Kafka allows APPEND and SUBTRACT only on list configs.
    assert_eq!(
        incremental(&b, "lists", &[("retention.ms", 2, "5")]),
        INVALID_CONFIG
    );
    // SET then DELETE: back to the default.
    assert_eq!(incremental(&b, "lists", &[("retention.ms", 0, "60000")]), 0);
    assert_eq!(
        describe(&b, "lists", "retention.ms"),
        ("60000".into(), true)
    );
    assert_eq!(incremental(&b, "lists", &[("retention.ms", 1, "")]), 0);
    assert!(!describe(&b, "lists", "retention.ms").1);
}
