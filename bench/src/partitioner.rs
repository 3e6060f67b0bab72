//! Keys and partitions. Keyed records go where Kafka's default partitioner puts them
//! (murmur2(key) mod partitions, positive), so `--key-pattern fixed` lands on one partition
//! exactly as it would with the Java client.

use rand::Rng;

use crate::cli::KeyPattern;

/// Kafka's murmur2 (the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    let seed: u32 = 0x9747_b28c;
    let m: u32 = 0x5bd1_e995;
    let r = 24;
    let len = data.len();
    let mut h: u32 = seed ^ (len as u32);
    let chunks = len / 4;
    for i in 0..chunks {
        let i4 = i * 4;
        let mut k = u32::from_le_bytes([data[i4], data[i4 + 1], data[i4 + 2], data[i4 + 3]]);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let tail = &data[chunks * 4..];
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(m);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(m);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `toPositive(murmur2(key)) % numPartitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 1 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Produces record keys for one producer task and picks their partitions.
pub struct KeyGenerator {
    pattern: KeyPattern,
    producer: u32,
    counter: u64,
    buf: Vec<u8>,
}

pub const FIXED_KEY: &[u8] = b"chronik-bench-key";

impl KeyGenerator {
    pub fn new(pattern: KeyPattern, producer: u32) -> KeyGenerator {
        KeyGenerator {
            pattern,
            producer,
            counter: 0,
            buf: Vec::with_capacity(32),
        }
    }

    /// The next key (valid until the next call).
    pub fn next_key<R: Rng>(&mut self, rng: &mut R) -> &[u8] {
        self.buf.clear();
        match self.pattern {
            KeyPattern::Fixed => self.buf.extend_from_slice(FIXED_KEY),
            KeyPattern::Random => {
                let v: u64 = rng.gen();
                write_hex(&mut self.buf, v);
            }
            KeyPattern::Sequential => {
                self.buf.extend_from_slice(b"key-");
                write_decimal(&mut self.buf, self.producer as u64);
                self.buf.push(b'-');
                write_decimal(&mut self.buf, self.counter);
                self.counter += 1;
            }
        }
        &self.buf
    }
}

fn write_hex(buf: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..16).rev() {
        buf.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

fn write_decimal(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's UtilsTest / the Java client's DefaultPartitioner.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for n in [1, 3, 12, 100] {
            for i in 0..1000u32 {
                let key = format!("key-{i}");
                let p = partition_for_key(key.as_bytes(), n);
                assert!((0..n).contains(&p));
                assert_eq!(p, partition_for_key(key.as_bytes(), n));
            }
        }
    }

    #[test]
    fn random_keys_spread_and_fixed_keys_do_not() {
        let mut rng = rand::thread_rng();
        let mut gen = KeyGenerator::new(KeyPattern::Random, 0);
        let mut seen = [0u32; 12];
        for _ in 0..12_000 {
            let p = partition_for_key(gen.next_key(&mut rng), 12);
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|c| *c > 500), "{seen:?}");
        let mut fixed = KeyGenerator::new(KeyPattern::Fixed, 0);
        let first = partition_for_key(fixed.next_key(&mut rng), 12);
        for _ in 0..100 {
            assert_eq!(partition_for_key(fixed.next_key(&mut rng), 12), first);
        }
    }

    #[test]
    fn sequential_keys_count_up() {
        let mut rng = rand::thread_rng();
        let mut gen = KeyGenerator::new(KeyPattern::Sequential, 3);
        assert_eq!(gen.next_key(&mut rng), b"key-3-0");
        assert_eq!(gen.next_key(&mut rng), b"key-3-1");
        for _ in 0..8 {
            gen.next_key(&mut rng);
        }
        assert_eq!(gen.next_key(&mut rng), b"key-3-10");
    }
}
