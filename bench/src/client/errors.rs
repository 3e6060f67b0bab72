//! Client-side failures and Kafka error codes, named the way they are reported.

use kafka_protocol::error::ResponseError;

/// Failures that are not Kafka error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// No response within --request-timeout-ms.
    Timeout,
    /// The connection broke (reset, closed, refused, bad frame); the text says why.
    Network(String),
    /// The broker cannot speak a version we need.
    UnsupportedVersion(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Timeout => f.write_str("request timed out"),
            ClientError::Network(why) => write!(f, "network error: {why}"),
            ClientError::UnsupportedVersion(why) => write!(f, "unsupported version: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A Kafka error code returned for a whole request (e.g. CreateTopics), with what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    pub code: i16,
    pub context: String,
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, error_name(self.code))
    }
}

impl std::error::Error for KafkaError {}

/// The report name of an error: the Kafka error name for codes, a fixed name for client failures.
pub fn classify(err: &anyhow::Error) -> String {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Timeout) => "CLIENT_REQUEST_TIMEOUT".into(),
        Some(ClientError::Network(_)) => "CLIENT_NETWORK_ERROR".into(),
        Some(ClientError::UnsupportedVersion(_)) => "CLIENT_UNSUPPORTED_VERSION".into(),
        None => match err.downcast_ref::<KafkaError>() {
            Some(k) => error_name(k.code),
            None => "CLIENT_PROTOCOL_ERROR".into(),
        },
    }
}

/// `NOT_LEADER_OR_FOLLOWER(6)` style name of a Kafka error code.
pub fn error_name(code: i16) -> String {
    let err = ResponseError::try_from_code(code);
    match err {
        Some(e) => format!("{}({code})", screaming(&e.to_string())),
        None => "NONE(0)".into(),
    }
}

/// Whether a produce/fetch error code is worth a retry after a metadata refresh.
pub fn is_retriable(code: i16) -> bool {
    match ResponseError::try_from_code(code) {
        Some(e) => e.is_retriable(),
        None => false,
    }
}

/// Whether the error means our idea of the partition's leader is stale.
pub fn needs_metadata_refresh(code: i16) -> bool {
    matches!(code, 3 | 5 | 6 | 7 | 13 | 19 | 20 | 56 | 74 | 75 | 100)
}

fn screaming(camel: &str) -> String {
    if camel.starts_with("Unknown error code") {
        return "UNKNOWN_CODE".into();
    }
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_like_kafka_constants() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER(6)");
        assert_eq!(error_name(19), "NOT_ENOUGH_REPLICAS(19)");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR(-1)");
        assert_eq!(error_name(999), "UNKNOWN_CODE(999)");
        assert!(is_retriable(6));
        assert!(!is_retriable(87));
        assert!(needs_metadata_refresh(6));
    }
}
