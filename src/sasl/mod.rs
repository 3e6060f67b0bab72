//! SASL building blocks (issue 21). Only the SCRAM exchange is here so far; SaslHandshake and
//! SaslAuthenticate still answer that SASL is not enabled (`kafka::handlers::sasl`), and no
//! credentials are stored yet.

pub mod scram;
