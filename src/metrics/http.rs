//! The metrics port: `GET /metrics` and `GET /health` over HTTP/1.x, one request per
//! connection. It runs on its own thread, off the shards: a scrape costs a shard one task that
//! copies its counters, nothing more. The port is hostile input like any other: the request head
//! is bounded in size and time, connections are capped, and only two paths answer. Requests
//! are parsed with `httparse` (a full HTTP server crate would bring its own runtime for two
//! GET routes).

use super::scrape::{ShardSource, Sources};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request head read; a longer one gets 431 and the connection closes.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;
/// Connections served at once; more are closed at once (Prometheus scrapes one at a time).
const MAX_CONNECTIONS: usize = 8;
/// The whole request head must arrive within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running endpoint; `stop` ends its thread.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Binds `addr` (so a taken port is reported before the broker starts anything).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

impl MetricsServer {
    pub fn start<C: ShardSource>(
        listener: TcpListener,
        sources: Sources<C>,
    ) -> std::io::Result<MetricsServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chronik-metrics".into())
            .spawn(move || accept_loop(listener, sources, stop2))?;
        tracing::info!(%addr, "metrics endpoint listening (/metrics, /health)");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop<C: ShardSource>(listener: TcpListener, sources: Sources<C>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = conn else {
            // EMFILE and the like: do not spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (sources, active2) = (sources.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("chronik-metrics-conn".into())
            .spawn(move || {
                serve(stream, &sources);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve<C: ShardSource>(mut stream: TcpStream, sources: &Sources<C>) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (status, content_type, body) = match read_head(&mut stream) {
        Ok(head) => route(&head, sources),
        Err(status) => (status, "text/plain", String::new()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

/// The parsed request line: method and path.
struct Head {
    method: String,
    path: String,
}

/// Reads up to the end of the request head (bounded in size and time) and parses it.
fn read_head(stream: &mut TcpStream) -> Result<Head, u16> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(408);
        }
        let _ = stream.set_read_timeout(Some(left));
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(400),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(408),
        };
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return Ok(Head {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                })
            }
            Ok(httparse::Status::Partial) if len == buf.len() => return Err(431),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(_) => return Err(400),
        }
    }
}

fn route<C: ShardSource>(head: &Head, sources: &Sources<C>) -> (u16, &'static str, String) {
    // Query strings are ignored (Prometheus sends none; curl users may).
    let path = head.path.split('?').next().unwrap_or_default();
    if head.method != "GET" {
        return (405, "text/plain", "only GET\n".into());
    }
    match path {
        "/metrics" => (200, super::exposition::CONTENT_TYPE, sources.render()),
        "/health" => match sources.health() {
            Ok(()) => (200, "text/plain", "ok\n".into()),
            Err(why) => (503, "text/plain", why.join("\n") + "\n"),
        },
        _ => (404, "text/plain", "try /metrics or /health\n".into()),
    }
}
