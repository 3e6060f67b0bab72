//! One TCP connection to one broker, shared by many tasks. Requests are pipelined: a writer task
//! sends frames as they come (several in flight), a reader task reads responses and hands each to
//! its caller. Kafka answers in request order on a connection, so the reader matches the next
//! outstanding correlation id and fails the connection on a mismatch. Frames are encoded,
//! size-checked and decoded by the broker's own client framing (`chronik::kafka::client`);
//! only the socket layer (tokio tasks, pipelining) is here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytes::{Bytes, BytesMut};
use chronik::kafka::client;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use super::errors::ClientError;
use super::security::{self, Security};

/// Largest response frame we accept. Fetch requests ask for far less; a broker that sends more
/// than this gets its connection closed with a clear reason rather than an unbounded allocation.
pub const MAX_RESPONSE_FRAME: usize = 256 * 1024 * 1024;

type Reply = oneshot::Sender<Bytes>;

struct Outgoing {
    frame: Bytes,
    pending: Option<(i32, Reply)>,
}

struct Shared {
    broken: AtomicBool,
    reason: Mutex<Option<String>>,
    shutdown: Notify,
}

impl Shared {
    fn fail(&self, why: String) {
        if let Ok(mut r) = self.reason.lock() {
            if r.is_none() {
                *r = Some(why);
            }
        }
        self.broken.store(true, Ordering::SeqCst);
        self.shutdown.notify_one();
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "connection closed".to_string())
    }
}

/// The API key of request type `R`.
fn api_key<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))
}

/// A pipelined connection to one broker.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    tx: mpsc::Sender<Outgoing>,
    correlation: AtomicI32,
    shared: Arc<Shared>,
    versions: OnceLock<HashMap<i16, (i16, i16)>>,
    security: Arc<Security>,
}

impl Connection {
    /// Connects (with TLS when `security` says so), starts the reader and writer tasks, asks
    /// the broker's API versions and logs in (SASL) when `security` says so.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
        security: &Arc<Security>,
    ) -> Result<Arc<Connection>> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ClientError::Network(format!("connect {addr}: {e}")).into()),
            Err(_) => return Err(ClientError::Network(format!("connect {addr}: timed out")).into()),
        };
        let _ = stream.set_nodelay(true);
        let conn = match &security.tls {
            None => {
                let (rd, wr) = stream.into_split();
                Self::start_tasks(addr, client_id, rd, wr, security)
            }
            Some(config) => {
                let name = Security::server_name(addr)?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = match tokio::time::timeout(timeout, connector.connect(name, stream)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return Err(ClientError::Network(format!("TLS to {addr}: {e}")).into())
                    }
                    Err(_) => {
                        return Err(ClientError::Network(format!("TLS to {addr}: timed out")).into())
                    }
                };
                let (rd, wr) = tokio::io::split(tls);
                Self::start_tasks(addr, client_id, rd, wr, security)
            }
        };
        let resp: ApiVersionsResponse = conn
            .call(&ApiVersionsRequest::default(), 0, timeout)
            .await?;
        if resp.error_code != 0 {
            bail!(
                "{addr}: ApiVersions failed with error code {}",
                resp.error_code
            );
        }
        let table = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let _ = conn.versions.set(table);
        if let Some(login) = &security.sasl {
            security::login(&conn, login, timeout).await?;
        }
        Ok(conn)
    }

    fn start_tasks<R, W>(
        addr: &str,
        client_id: &str,
        rd: R,
        wr: W,
        security: &Arc<Security>,
    ) -> Arc<Connection>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Outgoing>(4096);
        let (pending_tx, pending_rx) = mpsc::unbounded_channel::<(i32, Reply)>();
        let shared = Arc::new(Shared {
            broken: AtomicBool::new(false),
            reason: Mutex::new(None),
            shutdown: Notify::new(),
        });
        tokio::spawn(write_loop(wr, rx, pending_tx, shared.clone()));
        tokio::spawn(read_loop(rd, pending_rx, shared.clone(), addr.to_string()));
        Arc::new(Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            tx,
            correlation: AtomicI32::new(1),
            shared,
            versions: OnceLock::new(),
            security: security.clone(),
        })
    }

    /// How this connection reached its broker: other connections of the same run (a group's
    /// or a transaction's coordinator) go the same way.
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_broken(&self) -> bool {
        self.shared.broken.load(Ordering::Relaxed)
    }

    /// The highest version both sides speak within `[min, max]` for `api_key`.
    pub fn version(&self, api_key: i16, min: i16, max: i16) -> Result<i16> {
        let Some(table) = self.versions.get() else {
            return Ok(min);
        };
        let Some(&(bmin, bmax)) = table.get(&api_key) else {
            return Err(ClientError::UnsupportedVersion(format!(
                "{} does not support API key {api_key}",
                self.addr
            ))
            .into());
        };
        let v = bmax.min(max);
        if v < min || v < bmin {
            return Err(ClientError::UnsupportedVersion(format!(
                "{}: API key {api_key} versions {bmin}..={bmax}, we need {min}..={max}",
                self.addr
            ))
            .into());
        }
        Ok(v)
    }

    /// The version for request type `R` within `[min, max]`.
    pub fn version_of<R: Request>(&self, min: i16, max: i16) -> Result<i16> {
        self.version(R::KEY, min, max)
    }

    fn encode<R: Request>(&self, req: &R, version: i16, correlation_id: i32) -> Result<Bytes> {
        let frame = client::encode_request(
            api_key::<R>()?,
            version,
            correlation_id,
            self.client_id.clone(),
            req,
        )
        .map_err(|e| anyhow!("cannot encode request (api {} v{version}): {e}", R::KEY))?;
        Ok(frame.freeze())
    }

    /// Sends a request and waits (at most `timeout`) for its response.
    pub async fn call<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let (corr, rx) = self.send(req, version).await?;
        Self::wait::<R>(&self.shared, corr, rx, version, timeout).await
    }

    /// Queues a request and returns a future for its response, so callers can put several
    /// requests in flight before awaiting any.
    pub async fn start<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<impl std::future::Future<Output = Result<R::Response>> + Send + 'static>
    where
        R::Response: Send + 'static,
    {
        let (corr, rx) = self.send(req, version).await?;
        let shared = self.shared.clone();
        Ok(async move { Self::wait::<R>(&shared, corr, rx, version, timeout).await })
    }

    /// Queues a request; returns its correlation id and where its response will arrive.
    async fn send<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<(i32, oneshot::Receiver<Bytes>)> {
        if self.is_broken() {
            return Err(
                ClientError::Network(format!("{}: {}", self.addr, self.shared.reason())).into(),
            );
        }
        let corr = self.correlation.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(req, version, corr)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                frame,
                pending: Some((corr, reply_tx)),
            })
            .await
            .map_err(|e| {
                ClientError::Network(format!("{}: cannot queue request: {e}", self.addr))
            })?;
        Ok((corr, reply_rx))
    }

    async fn wait<R: Request>(
        shared: &Shared,
        corr: i32,
        rx: oneshot::Receiver<Bytes>,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let body = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return Err(ClientError::Network(shared.reason()).into()),
            Err(_) => return Err(ClientError::Timeout.into()),
        };
        client::decode_response(api_key::<R>()?, version, corr, body)
            .map_err(|e| anyhow!("cannot decode response (api {} v{version}): {e}", R::KEY))
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_no_response<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        if self.is_broken() {
            return Err(
                ClientError::Network(format!("{}: {}", self.addr, self.shared.reason())).into(),
            );
        }
        let corr = self.correlation.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(req, version, corr)?;
        self.tx
            .send(Outgoing {
                frame,
                pending: None,
            })
            .await
            .map_err(|e| {
                ClientError::Network(format!("{}: cannot queue request: {e}", self.addr))
            })?;
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.shutdown.notify_one();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::Receiver<Outgoing>,
    pending: mpsc::UnboundedSender<(i32, Reply)>,
    shared: Arc<Shared>,
) {
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut written = 0usize;
        while let Some(out) = next.take() {
            if let Some(p) = out.pending {
                // Registered before the bytes leave, so the reader always finds it.
                if pending.send(p).is_err() {
                    shared.fail("reader stopped".into());
                    return;
                }
            }
            written += out.frame.len();
            if let Err(e) = wr.write_all(&out.frame).await {
                shared.fail(format!("write failed: {e}"));
                return;
            }
            if written < 1024 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = wr.flush().await {
            shared.fail(format!("write failed: {e}"));
            return;
        }
        if shared.broken.load(Ordering::Relaxed) {
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: R,
    mut pending: mpsc::UnboundedReceiver<(i32, Reply)>,
    shared: Arc<Shared>,
    addr: String,
) {
    let mut rd = BufReader::with_capacity(256 * 1024, rd);
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd) => f,
            _ = shared.shutdown.notified() => {
                shared.fail("connection closed by the client".into());
                return;
            }
        };
        let body = match frame {
            Ok(b) => b,
            Err(why) => {
                shared.fail(format!("{addr}: {why}"));
                return;
            }
        };
        // The frame holds at least a correlation id (`client::check_response_size`).
        let corr = client::response_correlation_id(&body).unwrap_or_default();
        let Ok((expected, reply)) = pending.try_recv() else {
            shared.fail(format!(
                "{addr}: response with correlation id {corr} that no request is waiting for"
            ));
            return;
        };
        if corr != expected {
            shared.fail(format!(
                "{addr}: response correlation id {corr}, expected {expected}"
            ));
            return;
        }
        // The caller may have timed out and gone; that is fine.
        let _ = reply.send(body);
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
) -> std::result::Result<Bytes, String> {
    let len = rd
        .read_i32()
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    let len = client::check_response_size(len, MAX_RESPONSE_FRAME)?;
    let mut body = BytesMut::zeroed(len);
    rd.read_exact(&mut body)
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    Ok(body.freeze())
}
