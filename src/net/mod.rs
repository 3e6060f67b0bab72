//! Client networking.

pub mod conn;
pub mod idle;
pub mod listener;
