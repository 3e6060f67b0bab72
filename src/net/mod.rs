//! Client networking.

pub mod broker_auth;
pub mod conn;
pub mod idle;
pub mod listener;
