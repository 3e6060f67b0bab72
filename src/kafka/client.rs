//! Request framing for chronik's own Kafka clients (the replica fetcher, `cluster` admin
//! commands): one place that writes a request frame and reads a response body, whatever the
//! transport (blocking std socket or glommio stream).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// A whole request frame: length, header, body.
pub fn encode_request<Req: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    req: &Req,
) -> Result<BytesMut, String> {
    let mut hdr = RequestHeader::default();
    hdr.request_api_key = key as i16;
    hdr.request_api_version = version;
    hdr.correlation_id = correlation_id;
    hdr.client_id = Some(StrBytes::from_static_str(client_id));
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    hdr.encode(&mut buf, Req::header_version(version))
        .map_err(|e| e.to_string())?;
    req.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Checks a response frame size read off the wire before anything is allocated for it.
pub fn check_response_size(n: i32, max: usize) -> Result<usize, String> {
    if n < 4 || n as usize > max {
        return Err(format!("bad response size {n}"));
    }
    Ok(n as usize)
}

/// Decodes a response frame's contents (after the length): header, then body.
pub fn decode_response<Resp: Decodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut b: Bytes,
) -> Result<Resp, String> {
    if b.remaining() < 4 || b.get_i32() != correlation_id {
        return Err("correlation id mismatch".into());
    }
    if key.response_header_version(version) >= 1 {
        let mut r = super::wire::Reader::new(&b[..]);
        r.skip_tagged_fields().map_err(|e| e.to_string())?;
        let used = r.position();
        b.advance(used);
    }
    Resp::decode(&mut b, version).map_err(|e| e.to_string())
}
