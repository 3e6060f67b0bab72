//! The Kafka wire protocol: request headers, response framing, and the API dispatch table.

pub mod client;
pub mod dispatch;
pub mod errors;
pub mod handlers;
pub mod wire;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use std::net::IpAddr;

/// Why a request could not be served at all; the connection is closed and the reason logged.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of API {key}")]
    UnsupportedVersion { key: i16, version: i16 },
    #[error("encode failed: {0}")]
    Encode(String),
}

/// What a handler needs to know about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's address (None when the socket could not say), for DescribeGroups.
    pub peer: Option<IpAddr>,
    /// The broker this connection has proven to be (`net::broker_auth`); only then may it
    /// fetch as that broker's replica.
    pub broker: Option<i32>,
    /// The connection's incremental fetch sessions (KIP-227); None outside a connection.
    pub fetch_sessions: Option<std::rc::Rc<handlers::fetch_session::FetchSessions>>,
    /// The listener the connection came in on; Metadata, FindCoordinator and DescribeCluster
    /// answer with that listener's addresses. None (tests): the inter-broker endpoint.
    pub listener: Option<std::sync::Arc<str>>,
    /// Who the client proved to be (`User:CN=…` from its TLS certificate), for ACLs.
    pub principal: Option<std::sync::Arc<str>>,
}

impl RequestContext {
    /// The client's host as Kafka reports it (`InetAddress.toString()` of an unresolved
    /// address): `/127.0.0.1`, `/0:0:0:0:0:0:0:1`.
    pub fn client_host(&self) -> String {
        match self.peer.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => format!("/{v4}"),
            Some(IpAddr::V6(v6)) => {
                let groups: Vec<String> = v6.segments().iter().map(|s| format!("{s:x}")).collect();
                format!("/{}", groups.join(":"))
            }
            None => "/unknown".to_string(),
        }
    }

    /// A response buffer with room for the length prefix and the response header already written;
    /// the handler encodes its body after it and `finish_response` fills in the length.
    pub fn response_buf(&self, body_hint: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(16 + body_hint);
        buf.put_i32(0);
        buf.put_i32(self.correlation_id);
        // ApiVersions always answers with header v0 so old clients can read the error.
        let hv = if self.api_key == ApiKey::ApiVersions {
            0
        } else {
            self.api_key.response_header_version(self.api_version)
        };
        if hv >= 1 {
            buf.put_u8(0); // no tagged fields
        }
        buf
    }

    /// Encodes a kafka-protocol response message as a whole frame.
    pub fn encode<R: Encodable>(&self, resp: &R) -> Result<BytesMut, ProtocolError> {
        let err = |e: anyhow::Error| {
            ProtocolError::Encode(format!("{:?} v{}: {e}", self.api_key, self.api_version))
        };
        let size = resp.compute_size(self.api_version).map_err(err)?;
        let mut buf = self.response_buf(size);
        resp.encode(&mut buf, self.api_version).map_err(err)?;
        Ok(finish_response(buf))
    }
}

/// A response frame as the connection writer sends it.
#[derive(Debug)]
pub enum Response {
    /// The whole frame in one buffer (length prefix included).
    Frame(BytesMut),
    /// The frame as consecutive pieces (length prefix in the first), sent with one vectored
    /// write: large Fetch responses point at the log's record batches instead of copying them.
    Pieces(Vec<Bytes>),
}

impl From<BytesMut> for Response {
    fn from(frame: BytesMut) -> Self {
        Response::Frame(frame)
    }
}

impl Response {
    pub fn len(&self) -> usize {
        match self {
            Response::Frame(f) => f.len(),
            Response::Pieces(p) => p.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one contiguous buffer (copies the pieces; for tests and small frames).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Response::Frame(f) => Bytes::copy_from_slice(f),
            Response::Pieces(p) => {
                let mut out = BytesMut::with_capacity(self.len());
                for b in p {
                    out.extend_from_slice(b);
                }
                out.freeze()
            }
        }
    }
}

/// Writes the frame length into the first four bytes.
pub fn finish_response(mut buf: BytesMut) -> BytesMut {
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    buf
}

/// Decodes a request body with kafka-protocol.
pub fn decode<T: Decodable>(body: BytesMut, version: i16) -> Result<T, ProtocolError> {
    let mut b = body.freeze();
    T::decode(&mut b, version).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Parses the request header (v1 or v2) from the front of a frame, leaving the body; `peer` is
/// the connection's client address.
pub fn parse_header(
    frame: &mut BytesMut,
    peer: Option<IpAddr>,
) -> Result<RequestContext, ProtocolError> {
    use wire::Reader;
    let mut r = Reader::new(&frame[..]);
    let key = r.i16()?;
    let version = r.i16()?;
    let correlation_id = r.i32()?;
    let api_key = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApiKey(key))?;
    let client_id = r.nullable_string()?.map(str::to_string);
    if api_key.request_header_version(version) >= 2 {
        r.skip_tagged_fields()?;
    }
    let consumed = r.position();
    let _ = frame.split_to(consumed);
    Ok(RequestContext {
        api_key,
        api_version: version,
        correlation_id,
        client_id,
        peer,
        broker: None,
        fetch_sessions: None,
        listener: None,
        principal: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(peer: Option<&str>) -> RequestContext {
        RequestContext {
            api_key: ApiKey::JoinGroup,
            api_version: 5,
            correlation_id: 1,
            client_id: None,
            peer: peer.map(|p| p.parse().expect("an ip")),
            broker: None,
            fetch_sessions: None,
            listener: None,
            principal: None,
        }
    }

    #[test]
    fn client_host_is_written_as_kafka_writes_it() {
        assert_eq!(ctx(Some("127.0.0.1")).client_host(), "/127.0.0.1");
        assert_eq!(ctx(Some("::1")).client_host(), "/0:0:0:0:0:0:0:1");
        assert_eq!(ctx(Some("::ffff:10.0.0.7")).client_host(), "/10.0.0.7");
        assert_eq!(ctx(None).client_host(), "/unknown");
    }
}
