//! A small Kafka client: framed, pipelined connections with version negotiation, over
//! PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.

pub mod connection;
pub mod errors;
pub mod security;

pub use connection::Connection;
pub use errors::{classify, error_name, ClientError};
pub use security::Security;
