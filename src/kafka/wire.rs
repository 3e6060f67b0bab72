//! Hand-parsed parts of the Kafka wire format on the hot path (request header, Produce
//! request), where kafka-protocol would allocate per field or copy records. The reader itself
//! is the storage crate's (`chronik_storage::byte_reader`), shared with its record walks; its
//! errors are malformed requests here.

pub use chronik_storage::byte_reader::{ReadError, Reader};

use super::ProtocolError;

impl From<ReadError> for ProtocolError {
    fn from(e: ReadError) -> Self {
        ProtocolError::Malformed(e.to_string())
    }
}
