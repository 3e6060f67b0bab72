//! Message values: a pool of pre-generated payloads (no per-record generation cost), and the
//! optional 28-byte header used by `--validate` and round-trip mode:
//!
//! ```text
//! magic u32 "CBv1" | producer u32 | seq u64 | timestamp_us i64 | crc32c u32
//! ```
//! The CRC-32C covers the header's first 24 bytes and everything after the header, so a value that
//! was cut, padded or altered anywhere is caught.

use rand::{Rng, SeedableRng};

use crate::cli::PayloadPattern;

pub const HEADER_LEN: usize = 28;
pub const MAGIC: u32 = 0x4342_7631; // "CBv1"
const POOL_SIZE: usize = 64;

/// Pre-generated values, picked round-robin by the producers.
pub struct PayloadPool {
    values: Vec<Vec<u8>>,
}

impl PayloadPool {
    pub fn new(pattern: PayloadPattern, size: usize) -> PayloadPool {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let count = if pattern == PayloadPattern::Zeros {
            1
        } else {
            POOL_SIZE
        };
        let values = (0..count)
            .map(|i| match pattern {
                PayloadPattern::Zeros => vec![0u8; size],
                PayloadPattern::Random => (0..size).map(|_| rng.gen::<u8>()).collect(),
                PayloadPattern::Text => text_value(size, i),
            })
            .collect();
        PayloadPool { values }
    }

    pub fn get(&self, n: u64) -> &[u8] {
        let idx = (n % self.values.len() as u64) as usize;
        &self.values[idx]
    }
}

fn text_value(size: usize, variant: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "stream",
        "broker",
        "partition",
        "offset",
        "replica",
        "leader",
        "segment",
        "record",
        "batch",
        "consumer",
        "producer",
        "topic",
        "commit",
        "fetch",
        "log",
        "epoch",
    ];
    let mut out = Vec::with_capacity(size + 16);
    let mut i = variant;
    while out.len() < size {
        out.extend_from_slice(WORDS[i % WORDS.len()].as_bytes());
        out.push(b' ');
        i = i.wrapping_mul(7).wrapping_add(3);
    }
    out.truncate(size);
    out
}

/// What the header of a bench-made value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    pub producer: u32,
    pub seq: u64,
    pub timestamp_us: i64,
}

/// Fills a record's value from the pool bytes `src` and, when `stamp`, writes the validation
/// header of `producer`'s record `seq` into it (what every producer writes per record).
pub fn fill(dst: &mut [u8], src: &[u8], stamp_header: bool, producer: u32, seq: u64) {
    dst.copy_from_slice(src);
    if stamp_header {
        stamp(
            dst,
            PayloadHeader {
                producer,
                seq,
                timestamp_us: now_us(),
            },
        );
    }
}

/// Writes the header into `value` (which already holds the pool bytes) and seals it with the CRC.
pub fn stamp(value: &mut [u8], header: PayloadHeader) {
    debug_assert!(value.len() >= HEADER_LEN);
    value[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    value[4..8].copy_from_slice(&header.producer.to_be_bytes());
    value[8..16].copy_from_slice(&header.seq.to_be_bytes());
    value[16..24].copy_from_slice(&header.timestamp_us.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&value[0..24]), &value[HEADER_LEN..]);
    value[24..28].copy_from_slice(&crc.to_be_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadCheck {
    Intact(PayloadHeader),
    /// Has our magic but the checksum does not match: altered in transit or at rest.
    Corrupt,
    /// Not written by chronik-bench with a header (too short or no magic).
    Foreign,
}

pub fn check(value: &[u8]) -> PayloadCheck {
    if value.len() < HEADER_LEN || read_u32(value, 0) != MAGIC {
        return PayloadCheck::Foreign;
    }
    let stored = read_u32(value, 24);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&value[0..24]), &value[HEADER_LEN..]);
    if crc != stored {
        return PayloadCheck::Corrupt;
    }
    PayloadCheck::Intact(PayloadHeader {
        producer: read_u32(value, 4),
        seq: read_u64(value, 8),
        timestamp_us: read_u64(value, 16) as i64,
    })
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Microseconds since the Unix epoch (comparable between producer and consumer processes).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_values_check_intact_and_detect_damage() {
        let pool = PayloadPool::new(PayloadPattern::Random, 100);
        let mut v = pool.get(3).to_vec();
        let h = PayloadHeader {
            producer: 7,
            seq: 42,
            timestamp_us: 1_700_000_000_000_000,
        };
        stamp(&mut v, h);
        assert_eq!(check(&v), PayloadCheck::Intact(h));
        v[60] ^= 1;
        assert_eq!(check(&v), PayloadCheck::Corrupt);
        assert_eq!(check(&v[..20]), PayloadCheck::Foreign);
        assert_eq!(check(&[0u8; 64]), PayloadCheck::Foreign);
    }

    #[test]
    fn patterns_have_the_requested_size() {
        for p in [
            PayloadPattern::Random,
            PayloadPattern::Zeros,
            PayloadPattern::Text,
        ] {
            let pool = PayloadPool::new(p, 1024);
            assert_eq!(pool.get(0).len(), 1024);
            assert_eq!(pool.get(99).len(), 1024);
        }
        assert!(PayloadPool::new(PayloadPattern::Zeros, 10)
            .get(5)
            .iter()
            .all(|b| *b == 0));
        assert!(PayloadPool::new(PayloadPattern::Text, 50).get(1).is_ascii());
    }
}
