//! Decoding of every bincode structure the controller did not make itself (log records and
//! snapshots read back from disk, frames from peers on the controller port): bincode with a
//! byte limit, so a corrupt or hostile length can never allocate more than the bytes present.

use bincode::Options;
use serde::de::DeserializeOwned;

/// The options `bincode::serialize` writes with (fixed-size integers, trailing bytes allowed),
/// plus a limit of the input's own length.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> bincode::Result<T> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_prefix_larger_than_the_input_is_an_error_not_an_allocation() {
        // A Vec<u64> claiming 2^61 elements, followed by 8 bytes.
        let mut bytes = (1u64 << 61).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        assert!(decode::<Vec<u64>>(&bytes).is_err());
        let s = String::from("x").repeat(10);
        let enc = bincode::serialize(&s).expect("encode");
        assert_eq!(decode::<String>(&enc).expect("decode"), s);
    }

    #[test]
    fn a_snapshot_declaring_a_huge_topic_map_is_an_error_not_an_allocation() {
        use crate::metadata::MetaState;
        let mut state = MetaState::default();
        state.image.cluster_id = "c".into();
        let mut bytes = bincode::serialize(&state).expect("encode");
        // applied_index u64, cluster_id (u64 length + 1 byte), controller_id None (1 byte),
        // brokers (u64 length 0), then the topics map's u64 length: 2^40 entries.
        let at = 8 + 8 + 1 + 1 + 8;
        assert_eq!(bytes[at..at + 8], [0; 8]);
        bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<MetaState>(&bytes).is_err());
        // The input the raft_apply fuzz target found, as a snapshot's payload.
        let mut found = [0u8; 61];
        found[0x1b] = 0x35;
        found[0x36] = 0xfa;
        assert!(decode::<crate::snapshot::StoredSnapshot>(&found).is_err());
        bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(decode::<MetaState>(&bytes).expect("decode"), state);
    }
}
