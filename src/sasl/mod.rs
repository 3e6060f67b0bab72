//! SASL building blocks (issue 21). Only the PLAIN and SCRAM exchanges are here so far:
//! SaslHandshake and SaslAuthenticate still answer that SASL is not enabled
//! (`kafka::handlers::sasl`), and no credentials are stored yet.

pub mod plain;
pub mod scram;
