//! Client networking.

pub mod broker_auth;
pub mod conn;
pub mod frame;
pub mod idle;
pub mod listener;
pub mod pieces;
pub mod tls;
