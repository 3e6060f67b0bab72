//! Client networking.

pub mod conn;
