//! One blocking Kafka connection for the command line: a request frame out, its response in,
//! framed by `kafka::client` (the same framing the replica fetcher uses).

use crate::kafka::client;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
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
        client::call_blocking(
            &mut self.stream,
            key,
            version,
            self.correlation,
            "chronik-cli",
            MAX_RESPONSE,
            req,
        )
        .map_err(|e| format!("{} ({key:?}): {e}", self.addr))
    }
}
