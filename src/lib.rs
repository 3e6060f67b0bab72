//! chronik: a Kafka-wire-compatible broker, thread-per-core on glommio.
