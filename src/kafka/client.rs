//! chronik's own Kafka client framing: a size-prefixed request (header with a correlation id,
//! then the body, both encoded by kafka-protocol), and its response frame checked for size,
//! matched by correlation id and decoded. The one implementation every client in the project
//! uses; each brings only its socket layer:
//! - blocking std sockets, `call_blocking` below: the command line (`cli::conn`) and the
//!   integration tests' raw requests (`tests/integration/common`);
//! - glommio: the replica fetcher (`replication::fetcher`);
//! - tokio, pipelined (many requests in flight on one connection): chronik-bench.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::io::{Read, Write};

/// A whole request frame: length, header, body.
pub fn encode_request<Req: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: impl Into<StrBytes>,
    req: &Req,
) -> Result<BytesMut, String> {
    let mut hdr = RequestHeader::default();
    hdr.request_api_key = key as i16;
    hdr.request_api_version = version;
    hdr.correlation_id = correlation_id;
    hdr.client_id = Some(client_id.into());
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    hdr.encode(&mut buf, Req::header_version(version))
        .map_err(|e| e.to_string())?;
    req.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| "request frame over 2 GiB".to_string())?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Checks a response frame size read off the wire before anything is allocated for it: at
/// least a correlation id, at most `max`.
pub fn check_response_size(n: i32, max: usize) -> Result<usize, String> {
    if n < 4 || n as usize > max {
        return Err(format!("response frame of {n} bytes (limit {max})"));
    }
    Ok(n as usize)
}

/// The correlation id a response frame's contents (after the length) start with.
pub fn response_correlation_id(frame: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(..4)?.try_into().ok()?))
}

/// Decodes a response frame's contents (after the length): header, then body.
pub fn decode_response<Resp: Decodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut b: Bytes,
) -> Result<Resp, String> {
    match response_correlation_id(&b) {
        Some(c) if c == correlation_id => b.advance(4),
        Some(c) => return Err(format!("correlation id {c}, expected {correlation_id}")),
        None => return Err("response shorter than its correlation id".into()),
    }
    if key.response_header_version(version) >= 1 {
        let mut r = super::wire::Reader::new(&b[..]);
        r.skip_tagged_fields().map_err(|e| e.to_string())?;
        let used = r.position();
        b.advance(used);
    }
    Resp::decode(&mut b, version).map_err(|e| format!("{key:?} v{version} response: {e}"))
}

fn invalid(e: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Reads one response frame from a blocking socket and returns its contents (after the
/// length), refusing a length over `max` before allocating.
pub fn read_frame_blocking<S: Read>(stream: &mut S, max: usize) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let n = check_response_size(i32::from_be_bytes(len), max).map_err(invalid)?;
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// One request on a blocking socket: writes its frame, reads the response (at most `max`
/// bytes) and decodes it. Socket errors keep their kind (a read timeout, a closed connection);
/// a bad frame or a mismatched correlation id is `InvalidData`.
#[allow(clippy::too_many_arguments)]
pub fn call_blocking<S: Read + Write, Req: Encodable + HeaderVersion, Resp: Decodable>(
    stream: &mut S,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: impl Into<StrBytes>,
    max: usize,
    req: &Req,
) -> std::io::Result<Resp> {
    let frame = encode_request(key, version, correlation_id, client_id, req).map_err(invalid)?;
    stream.write_all(&frame)?;
    let body = read_frame_blocking(stream, max)?;
    decode_response(key, version, correlation_id, body).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataResponse};

    /// A socket that answers from a script and keeps what was written.
    struct Scripted {
        input: std::io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(b)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn response_frame(corr: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let len = 4 + usize::from(flexible) + body.len();
        f.extend_from_slice(&(len as i32).to_be_bytes());
        f.extend_from_slice(&corr.to_be_bytes());
        if flexible {
            f.push(0);
        }
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_request_is_framed_with_its_length_and_header_and_its_response_decoded() {
        let mut resp = ApiVersionsResponse::default();
        resp.error_code = 35;
        let mut body = BytesMut::new();
        resp.encode(&mut body, 3).unwrap();
        let mut s = Scripted {
            input: std::io::Cursor::new(response_frame(9, false, &body)),
            written: Vec::new(),
        };
        let got: ApiVersionsResponse = call_blocking(
            &mut s,
            ApiKey::ApiVersions,
            3,
            9,
            "me",
            1 << 20,
            &ApiVersionsRequest::default(),
        )
        .unwrap();
        assert_eq!(got.error_code, 35);
        let w = &s.written;
        assert_eq!(
            i32::from_be_bytes(w[..4].try_into().unwrap()) as usize,
            w.len() - 4
        );
        assert_eq!(i16::from_be_bytes([w[4], w[5]]), ApiKey::ApiVersions as i16);
        assert_eq!(i16::from_be_bytes([w[6], w[7]]), 3);
        assert_eq!(response_correlation_id(&w[8..]), Some(9));
    }

    #[test]
    fn a_wrong_correlation_id_or_an_oversized_frame_is_refused() {
        let mut s = Scripted {
            input: std::io::Cursor::new(response_frame(8, true, &[])),
            written: Vec::new(),
        };
        let r: std::io::Result<MetadataResponse> = call_blocking(
            &mut s,
            ApiKey::Metadata,
            12,
            9,
            "me",
            1 << 20,
            &kafka_protocol::messages::MetadataRequest::default(),
        );
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        let mut huge = Scripted {
            input: std::io::Cursor::new(i32::MAX.to_be_bytes().to_vec()),
            written: Vec::new(),
        };
        let e = read_frame_blocking(&mut huge, 1 << 20).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            check_response_size(3, 100).is_err(),
            "shorter than a correlation id"
        );
    }
}
