//! One blocking Kafka connection for the command line: a request frame out, its response in,
//! framed by `kafka::client` (the same framing the replica fetcher uses).

use crate::kafka::client;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than the 15 s the topic commands give the broker (`timeout_ms`), so its own timeout
/// answers first.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A response larger than this is refused before anything is allocated for it.
const MAX_RESPONSE: usize = 64 << 20;

pub struct Conn {
    pub addr: String,
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> Result<Conn, String> {
        let addrs = addr.to_socket_addrs().map_err(|e| format!("{addr}: {e}"))?;
        let mut last = format!("{addr}: no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(IO_TIMEOUT))
                        .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)))
                        .map_err(|e| format!("{addr}: {e}"))?;
                    let _ = stream.set_nodelay(true);
                    return Ok(Conn {
                        addr: addr.to_string(),
                        stream,
                        correlation: 0,
                    });
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    }

    pub fn call<Req: Encodable + HeaderVersion, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, String> {
        self.correlation = self.correlation.wrapping_add(1);
        let corr = self.correlation;
        let addr = self.addr.clone();
        let at = |e: String| format!("{addr} ({key:?}): {e}");
        let frame = client::encode_request(key, version, corr, "chronik-cli", req).map_err(at)?;
        self.stream
            .write_all(&frame)
            .map_err(|e| at(e.to_string()))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| at(e.to_string()))?;
        let n = client::check_response_size(i32::from_be_bytes(len), MAX_RESPONSE).map_err(at)?;
        let mut buf = vec![0u8; n];
        self.stream
            .read_exact(&mut buf)
            .map_err(|e| at(e.to_string()))?;
        client::decode_response(key, version, corr, bytes::Bytes::from(buf)).map_err(at)
    }
}
