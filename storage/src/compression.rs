//! Compressing a batch's records section with the batch's own codec, as Kafka's log cleaner
//! does when it rewrites a compressed batch. The encoders are the crates whose decoders read
//! these batches (flate2, snap, lz4, zstd), set up as Kafka's Java producer writes each codec,
//! so every client that reads Kafka's batches reads these.

use std::io::Write;

use crate::batch::{BatchError, BatchHeader, BATCH_HEADER_LEN};
use crate::batch_validation::XERIAL_MAGIC;

/// Snappy blocks of the xerial framing are this big, as snappy-java writes them.
const XERIAL_BLOCK: usize = 32 << 10;

/// A batch's codec, with the snappy framing its producer used (the Java client's xerial
/// framing or librdkafka's one raw block), so a rewritten batch is framed as the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Codec {
    pub id: u8,
    pub xerial: bool,
}

impl Codec {
    /// The codec of the batch `bytes` with header `h`.
    pub fn of(bytes: &[u8], h: &BatchHeader) -> Codec {
        let id = h.compression();
        let xerial = id == 2
            && bytes
                .get(BATCH_HEADER_LEN..BATCH_HEADER_LEN + XERIAL_MAGIC.len())
                .is_some_and(|m| m == XERIAL_MAGIC);
        Codec { id, xerial }
    }

    /// `data` compressed with this codec (`data` itself when uncompressed).
    pub fn compress(&self, data: &[u8]) -> Result<Vec<u8>, BatchError> {
        let bad = |_| BatchError::BadCompression;
        match self.id {
            0 => Ok(data.to_vec()),
            1 => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 2 + 64),
                    flate2::Compression::default(),
                );
                e.write_all(data).map_err(bad)?;
                e.finish().map_err(bad)
            }
            2 if self.xerial => {
                // Header: magic, version 1, compatible version 1; then length-prefixed blocks.
                let mut out = Vec::with_capacity(data.len() / 2 + 64);
                out.extend_from_slice(XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let mut enc = snap::raw::Encoder::new();
                for block in data.chunks(XERIAL_BLOCK) {
                    let c = enc
                        .compress_vec(block)
                        .map_err(|_| BatchError::BadCompression)?;
                    out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                    out.extend_from_slice(&c);
                }
                Ok(out)
            }
            2 => snap::raw::Encoder::new()
                .compress_vec(data)
                .map_err(|_| BatchError::BadCompression),
            3 => {
                // Kafka's KafkaLZ4BlockOutputStream: 64 KiB independent blocks, no checksums.
                let mut e = lz4::EncoderBuilder::new()
                    .block_size(lz4::BlockSize::Max64KB)
                    .block_mode(lz4::BlockMode::Independent)
                    .checksum(lz4::ContentChecksum::NoChecksum)
                    .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
                    .build(Vec::with_capacity(data.len() / 2 + 64))
                    .map_err(bad)?;
                e.write_all(data).map_err(bad)?;
                let (out, res) = e.finish();
                res.map_err(bad)?;
                Ok(out)
            }
            4 => zstd::bulk::compress(data, zstd::DEFAULT_COMPRESSION_LEVEL).map_err(bad),
            id => Err(BatchError::UnknownCompression(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batch;
    use crate::batch_validation::{self, decompress_records, Limits};
    use crate::records::{build_run, parse_records};
    use crate::testing::build_batch;
    use bytes::BytesMut;

    /// `plain` (an uncompressed batch) with its records compressed by `codec`.
    fn compressed(plain: &[u8], codec: Codec) -> BytesMut {
        let h = validate_batch(plain).expect("valid");
        let recs = parse_records(plain, &h).expect("records");
        let mut hc = h;
        hc.attributes = (h.attributes & !7) | i16::from(codec.id);
        let mut out = BytesMut::new();
        build_run(&hc, codec, &recs, &mut out).expect("built");
        out
    }

    #[test]
    fn a_run_recompressed_with_each_codec_decompresses_to_the_same_records() {
        let kv: Vec<(Vec<u8>, Vec<u8>)> = (0..200)
            .map(|i| (format!("key-{i}").into_bytes(), vec![b'x'; 100 + i]))
            .collect();
        let recs: Vec<_> = kv
            .iter()
            .map(|(k, v)| (Some(&k[..]), Some(&v[..])))
            .collect();
        let plain = build_batch(&recs, 5_000);
        let ph = validate_batch(&plain).expect("valid");
        for codec in [
            Codec {
                id: 1,
                xerial: false,
            },
            Codec {
                id: 2,
                xerial: false,
            },
            Codec {
                id: 2,
                xerial: true,
            },
            Codec {
                id: 3,
                xerial: false,
            },
            Codec {
                id: 4,
                xerial: false,
            },
        ] {
            let b = compressed(&plain, codec);
            assert!(b.len() < plain.len(), "{codec:?} compresses");
            // What produce validation accepts, and the same codec and framing read back.
            let s = batch_validation::validate_batch(&b, &Limits::default())
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(s.records_bytes, plain.len() - BATCH_HEADER_LEN);
            assert_eq!(Codec::of(&b, &s.header), codec);
            let mut out = Vec::new();
            decompress_records(&b, &s.header, 1 << 20, &mut out).expect("decompress");
            assert_eq!(out, plain[BATCH_HEADER_LEN..], "{codec:?}");
            assert_eq!(s.header.max_timestamp, ph.max_timestamp);
            // Past the bound it stops, whatever the codec.
            let mut out = Vec::new();
            assert_eq!(
                decompress_records(&b, &s.header, 1000, &mut out),
                Err(BatchError::TooLargeUncompressed),
                "{codec:?}"
            );
        }
    }
}
