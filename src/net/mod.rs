//! Client networking.

pub mod conn;
pub mod listener;
