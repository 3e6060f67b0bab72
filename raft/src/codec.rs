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
}
