//! Data replication, Kafka's ISR model: followers fetch from leaders (`fetcher`), leaders move
//! the high watermark and propose ISR changes to the controller (`isr`).

pub mod fetcher;
pub mod isr;
pub mod write_failure;
