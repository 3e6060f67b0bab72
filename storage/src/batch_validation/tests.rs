use super::*;
use crate::testing::{build_batch, build_batch_of};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::Instant;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// One record's bytes (length prefix included) with `headers` (key, value) pairs.
fn record(offset_delta: i64, value: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    put_varint(&mut body, offset_delta); // timestamp delta = offset delta
    put_varint(&mut body, offset_delta);
    put_varint(&mut body, -1); // null key
    put_varint(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    put_varint(&mut body, headers.len() as i64);
    for (k, v) in headers {
        put_varint(&mut body, k.len() as i64);
        body.extend_from_slice(k);
        put_varint(&mut body, v.len() as i64);
        body.extend_from_slice(v);
    }
    let mut out = Vec::new();
    put_varint(&mut out, body.len() as i64);
    out.extend_from_slice(&body);
    out
}

fn records(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| record(i as i64, b"value", &[(b"h", b"v")]))
        .collect()
}

/// A batch around `section` (the records, compressed or not), with a correct length and CRC.
fn batch(section: &[u8], count: i32, last_delta: i32, attributes: i16) -> Vec<u8> {
    let mut b = Vec::with_capacity(BATCH_HEADER_LEN + section.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&last_delta.to_be_bytes());
    b.extend_from_slice(&1000i64.to_be_bytes()); // base timestamp
    b.extend_from_slice(&(1000i64 + i64::from(last_delta)).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(section);
    seal(&mut b);
    b
}

/// Rewrites the length field and CRC so a mutation reaches the record checks.
fn seal(b: &mut [u8]) {
    if b.len() < BATCH_HEADER_LEN {
        return;
    }
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn snappy_raw(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("snappy")
}

/// xerial framing as the Java client writes it, in blocks of 32 KiB.
fn snappy_xerial(data: &[u8]) -> Vec<u8> {
    let mut out = XERIAL_MAGIC.to_vec();
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    for chunk in data.chunks(32 << 10) {
        let c = snappy_raw(chunk);
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(&c);
    }
    out
}

fn lz4(data: &[u8]) -> Vec<u8> {
    let mut e = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
    e.write_all(data).expect("lz4");
    let (out, r) = e.finish();
    r.expect("lz4");
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd")
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB of `byte`: ~4 bytes of input per 128 KiB
/// of output, written by hand so a 34 GB bomb costs nothing to build.
fn zstd_rle_bomb(prefix: &[u8], blocks: usize, byte: u8) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x38]; // magic, no FCS, window 2^17
    if !prefix.is_empty() {
        // A raw block carrying `prefix` first.
        let hdr = (prefix.len() as u32) << 3;
        out.extend_from_slice(&hdr.to_le_bytes()[..3]);
        out.extend_from_slice(prefix);
    }
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let hdr = (131_072u32 << 3) | (1 << 1) | last;
        out.extend_from_slice(&hdr.to_le_bytes()[..3]);
        out.push(byte);
    }
    out
}

fn compress(codec: u8, data: &[u8]) -> Vec<u8> {
    match codec {
        1 => gzip(data),
        2 => snappy_xerial(data),
        3 => lz4(data),
        4 => zstd(data),
        _ => data.to_vec(),
    }
}

#[test]
fn a_valid_batch_passes_with_its_true_max_timestamp() {
    let b = build_batch(&[(Some(b"k"), Some(b"v")), (None, Some(b"v2"))], 1000);
    let s = validate_batch(&b, &Limits::default()).expect("valid");
    assert_eq!(s.header.records_count, 2);
    assert_eq!(s.max_timestamp, 1001);
    assert_eq!(s.records_bytes, b.len() - BATCH_HEADER_LEN);
    check_client_batch(&s.header).expect("a client batch");
}

#[test]
fn batches_of_every_codec_pass_and_count_their_decompressed_bytes() {
    let plain = records(50);
    for codec in 1..=4u8 {
        let b = batch(&compress(codec, &plain), 50, 49, i16::from(codec));
        let s =
            validate_batch(&b, &Limits::default()).unwrap_or_else(|e| panic!("codec {codec}: {e}"));
        assert_eq!(s.records_bytes, plain.len(), "codec {codec}");
        assert_eq!(s.max_timestamp, 1049);
    }
    // librdkafka's snappy: one raw block, no xerial framing.
    let b = batch(&snappy_raw(&plain), 50, 49, 2);
    validate_batch(&b, &Limits::default()).expect("raw snappy");
}

#[test]
fn a_count_larger_than_the_records_is_an_invalid_record() {
    for (count, delta) in [(1000, 999), (i32::MAX, i32::MAX - 1), (4, 3)] {
        let b = batch(&records(3), count, delta, 0);
        assert!(
            matches!(
                validate_batch(&b, &Limits::default()),
                Err(BatchError::InvalidRecord(_))
            ),
            "count {count}"
        );
        let z = batch(&zstd(&records(3)), count, delta, 4);
        assert!(matches!(
            validate_batch(&z, &Limits::default()),
            Err(BatchError::InvalidRecord(_))
        ));
    }
}

#[test]
fn a_count_smaller_than_the_records_or_off_its_offset_delta_is_refused() {
    let b = batch(&records(3), 2, 1, 0);
    assert!(matches!(
        validate_batch(&b, &Limits::default()),
        Err(BatchError::InvalidRecord(_))
    ));
    let b = batch(&records(3), 3, 5, 0);
    assert_eq!(
        validate_batch(&b, &Limits::default()),
        Err(BatchError::BadRecordCount)
    );
    let b = batch(&[], 0, -1, 0);
    assert_eq!(
        validate_batch(&b, &Limits::default()),
        Err(BatchError::BadRecordCount)
    );
}

#[test]
fn offset_deltas_out_of_order_are_refused() {
    let mut section = record(0, b"a", &[]);
    section.extend(record(2, b"b", &[]));
    let b = batch(&section, 2, 1, 0);
    assert!(matches!(
        validate_batch(&b, &Limits::default()),
        Err(BatchError::InvalidRecord(_))
    ));
}

#[test]
fn lying_record_lengths_are_refused_either_way() {
    let good = record(0, b"value", &[]);
    // Claims one byte more than its fields (and swallows nothing else: it is the last).
    let mut longer = good.clone();
    longer[0] += 2; // zig-zag: +1
    longer.push(0);
    // Claims one byte less than its fields.
    let mut shorter = good.clone();
    shorter[0] -= 2;
    // Claims more than the batch holds.
    let mut beyond = vec![];
    put_varint(&mut beyond, 1 << 20);
    beyond.extend_from_slice(&good[1..]);
    for section in [longer, shorter, beyond] {
        for codec in [0u8, 1, 4] {
            let b = batch(&compress(codec, &section), 1, 0, i16::from(codec));
            assert!(
                matches!(
                    validate_batch(&b, &Limits::default()),
                    Err(BatchError::InvalidRecord(_))
                ),
                "codec {codec}"
            );
        }
    }
}

#[test]
fn a_header_count_beyond_the_bytes_is_refused() {
    let mut body = vec![0u8, 0, 0, 1, 0]; // attrs, ts, offset, null key, empty value
    put_varint(&mut body, i64::from(i32::MAX)); // header count
    let mut section = vec![];
    put_varint(&mut section, body.len() as i64);
    section.extend(body);
    for codec in [0u8, 4] {
        let b = batch(&compress(codec, &section), 1, 0, i16::from(codec));
        assert!(matches!(
            validate_batch(&b, &Limits::default()),
            Err(BatchError::InvalidRecord(_))
        ));
    }
}

#[test]
fn garbage_payloads_and_unknown_codecs_are_refused() {
    let junk: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
    for codec in 1..=4u8 {
        let b = batch(&junk, 3, 2, i16::from(codec));
        let e = validate_batch(&b, &Limits::default()).expect_err("garbage");
        assert!(
            matches!(e, BatchError::BadCompression | BatchError::InvalidRecord(_)),
            "codec {codec}: {e:?}"
        );
    }
    for codec in 5..=7i16 {
        let b = batch(&records(3), 3, 2, codec);
        assert_eq!(
            validate_batch(&b, &Limits::default()),
            Err(BatchError::UnknownCompression(codec as u8))
        );
    }
}

#[test]
fn a_zstd_bomb_is_refused_without_inflating_it() {
    // 262,144 blocks: 1 MB that inflates to 34 GB of zeros. Zeros are no record (length 0
    // with fields after it), so this ends at the first record, as in Kafka.
    let b = batch(&zstd_rle_bomb(&[], 262_144, 0), 1000, 999, 4);
    let started = Instant::now();
    assert!(matches!(
        validate_batch(&b, &Limits::default()),
        Err(BatchError::InvalidRecord(_))
    ));
    // A record whose value is 2 GB of the bomb's bytes: valid framing, so the bound stops it.
    let mut head = vec![];
    put_varint(&mut head, i64::from(i32::MAX));
    head.extend_from_slice(&[0, 0, 0, 1]); // attrs, ts, offset, null key
    put_varint(&mut head, i64::from(i32::MAX) - 10); // value length
    let b = batch(&zstd_rle_bomb(&head, 262_144, b'x'), 1, 0, 4);
    let limits = Limits {
        max_uncompressed_bytes: 4 << 20,
    };
    assert_eq!(
        validate_batch(&b, &limits),
        Err(BatchError::TooLargeUncompressed)
    );
    // Not a timing assertion: a guard that the bound, not the 34 GB, decided the answer.
    assert!(started.elapsed().as_secs() < 60);
}

#[test]
fn snappy_blocks_claiming_impossible_sizes_are_refused_before_allocating() {
    // A raw snappy block whose length header claims 1 GiB.
    let mut claim = vec![];
    let mut n: u64 = 1 << 30;
    loop {
        if n < 0x80 {
            claim.push(n as u8);
            break;
        }
        claim.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    claim.extend_from_slice(&[0; 8]);
    let b = batch(&claim, 1, 0, 2);
    assert!(matches!(
        validate_batch(&b, &Limits::default()),
        Err(BatchError::TooLargeUncompressed | BatchError::BadCompression)
    ));
}

#[test]
fn client_rules_refuse_control_batches_offsets_and_missing_sequences() {
    let good = validate_batch(&build_batch_of(2, 5, b'x', 0), &Limits::default())
        .expect("valid")
        .header;
    check_client_batch(&good).expect("ok");
    let cases = [
        BatchHeader {
            base_offset: 5,
            ..good
        },
        BatchHeader {
            attributes: 0x20,
            ..good
        },
        BatchHeader {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: -1,
            ..good
        },
    ];
    for h in cases {
        assert!(matches!(
            check_client_batch(&h),
            Err(BatchError::InvalidRecord(_))
        ));
    }
    let lat = BatchHeader {
        attributes: 0x08,
        ..good
    };
    assert!(matches!(
        check_client_batch(&lat),
        Err(BatchError::InvalidTimestamp(_))
    ));
}

/// Random and mutated batches (re-sealed so mutations get past the CRC into the records):
/// validation answers every one without panicking, and valid ones still pass.
#[test]
fn random_and_mutated_batches_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let limits = Limits {
        max_uncompressed_bytes: 1 << 20,
    };
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for codec in 0..=4u8 {
        let plain = records(20);
        seeds.push(batch(&compress(codec, &plain), 20, 19, i16::from(codec)));
    }
    seeds.push(batch(&snappy_raw(&records(5)), 5, 4, 2));
    for s in &seeds {
        validate_batch(s, &limits).expect("seed is valid");
    }
    let mut outcomes = [0usize; 2];
    for round in 0..20_000 {
        let mut b = if round % 10 == 0 {
            let n = rng.gen_range(0..300);
            (0..n).map(|_| rng.gen()).collect()
        } else {
            seeds[rng.gen_range(0..seeds.len())].clone()
        };
        let mutations = rng.gen_range(1..4);
        for _ in 0..mutations {
            if b.is_empty() {
                break;
            }
            match rng.gen_range(0..4) {
                0 => {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
                1 => {
                    let i = rng.gen_range(0..b.len());
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
                2 => {
                    let i = rng.gen_range(0..b.len());
                    b.truncate(i.max(BATCH_HEADER_LEN.min(b.len())));
                }
                _ => {
                    let i = rng.gen_range(0..=b.len());
                    let extra: Vec<u8> = (0..rng.gen_range(1..8)).map(|_| rng.gen()).collect();
                    b.splice(i..i, extra);
                }
            }
        }
        if rng.gen_bool(0.9) {
            seal(&mut b);
        }
        outcomes[usize::from(validate_batch(&b, &limits).is_ok())] += 1;
    }
    assert!(outcomes[0] > 0, "mutations are refused");
}

/// Not a timing assertion: prints what validation costs beside the CRC pass it includes
/// (`cargo test -p chronik-storage --release validation_cost -- --ignored --nocapture`).
#[test]
#[ignore]
fn validation_cost() {
    let b = build_batch_of(64, 1024, b'x', 0);
    let n = 20_000u32;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(crate::batch::validate_batch(std::hint::black_box(&b)).is_ok());
    }
    let crc = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(validate_batch(std::hint::black_box(&b), &Limits::default()).is_ok());
    }
    let full = t.elapsed() / n;
    println!(
        "batch of 64 x 1 KiB ({} bytes): frame+CRC {crc:?}, full validation {full:?}",
        b.len()
    );
}
