//! A small Kafka client: framed, pipelined connections with version negotiation.

pub mod connection;
pub mod errors;

pub use connection::Connection;
pub use errors::{classify, error_name, ClientError};
