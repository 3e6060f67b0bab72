//! TLS on the controller port (`--controller-tls`): every connection between controllers, and
//! from operator tools, is mutual TLS before the cluster-secret handshake of `network` runs
//! inside it. Both sides show a certificate that a CA of the configured roots signed, and the
//! caller checks the host it dialled against the server's certificate, so the secret handshake
//! and every frame after it are encrypted and cannot be taken over on the network path.
//!
//! The configs are built by the broker (it reads the same PEM files as its SSL listeners) and
//! replaced on SIGHUP: connections made from then on use the new ones.

use std::io;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A reading half of a controller connection, plain or TLS.
pub type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
/// A writing half of a controller connection, plain or TLS.
pub type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// The controller port's TLS configs: the server's (it must require client certificates) and
/// the caller's (it must show one).
pub struct ControllerTls {
    configs: Mutex<Configs>,
}

impl std::fmt::Debug for ControllerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControllerTls { .. }")
    }
}

#[derive(Clone)]
struct Configs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl ControllerTls {
    pub fn new(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Arc<ControllerTls> {
        Arc::new(ControllerTls {
            configs: Mutex::new(Configs { server, client }),
        })
    }

    /// New certificates (SIGHUP): connections made from now on use them.
    pub fn replace(&self, server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) {
        *self.lock() = Configs { server, client };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Configs> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn server(&self) -> Arc<rustls::ServerConfig> {
        self.lock().server.clone()
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        self.lock().client.clone()
    }
}

/// The host part of `HOST:PORT` (`[v6]:port` too), as the name the server's certificate must
/// carry.
pub fn server_name(addr: &str) -> io::Result<rustls::pki_types::ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))
}

/// The server's side of an accepted connection: the TLS handshake (a caller without a
/// certificate the roots vouch for fails it), then the two halves.
pub async fn accept(
    stream: TcpStream,
    tls: Option<&ControllerTls>,
) -> io::Result<(ReadHalf, WriteHalf)> {
    match tls {
        None => {
            let (rd, wr) = stream.into_split();
            Ok((Box::new(rd), Box::new(wr)))
        }
        Some(tls) => {
            let s = tokio_rustls::TlsAcceptor::from(tls.server())
                .accept(stream)
                .await?;
            let (rd, wr) = tokio::io::split(s);
            Ok((Box::new(rd), Box::new(wr)))
        }
    }
}

/// The caller's side of a connection to `addr`: the TLS handshake (the server's certificate
/// must name the host dialled), then one stream to run the secret handshake on.
pub async fn connect(
    stream: TcpStream,
    addr: &str,
    tls: Option<&ControllerTls>,
) -> io::Result<Stream> {
    match tls {
        None => Ok(Stream::Plain(stream)),
        Some(tls) => {
            let name = server_name(addr)?;
            let s = tokio_rustls::TlsConnector::from(tls.client())
                .connect(name, stream)
                .await?;
            Ok(Stream::Tls(Box::new(s)))
        }
    }
}

/// A caller's connection before it is split.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (rd, wr) = s.into_split();
                (Box::new(rd), Box::new(wr))
            }
            Stream::Tls(s) => {
                let (rd, wr) = tokio::io::split(*s);
                (Box::new(rd), Box::new(wr))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An operator tool's blocking connection: plain, or TLS showing the tool's certificate.
pub enum BlockingStream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl BlockingStream {
    pub fn new(
        s: std::net::TcpStream,
        addr: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> io::Result<BlockingStream> {
        match tls {
            None => Ok(BlockingStream::Plain(s)),
            Some(config) => {
                let conn = rustls::ClientConnection::new(config, server_name(addr)?)
                    .map_err(io::Error::other)?;
                Ok(BlockingStream::Tls(Box::new(rustls::StreamOwned::new(
                    conn, s,
                ))))
            }
        }
    }

    pub fn tcp(&self) -> &std::net::TcpStream {
        match self {
            BlockingStream::Plain(s) => s,
            BlockingStream::Tls(s) => s.get_ref(),
        }
    }
}

impl io::Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.read(buf),
            BlockingStream::Tls(s) => s.read(buf),
        }
    }
}

impl io::Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.write(buf),
            BlockingStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlockingStream::Plain(s) => s.flush(),
            BlockingStream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::tests::Counting;
    use crate::network::{serve, Credentials, RpcClient, RpcRequest, RpcResponse};
    use crate::secret::ClusterSecret;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A CA and a certificate it signed for 127.0.0.1 (a controller's, used both ways).
    struct Pki {
        ca: CertificateDer<'static>,
        cert: CertificateDer<'static>,
        key: Vec<u8>,
    }

    fn pki() -> Pki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        Pki {
            ca: ca.der().clone(),
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(p: &Pki) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(p.ca.clone()).expect("ca");
        Arc::new(roots)
    }

    fn key(p: &Pki) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key.clone()))
    }

    /// The server requires a client certificate; the client shows one if `with_cert`.
    fn configs(p: &Pki, with_cert: bool) -> Arc<ControllerTls> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(p), provider())
                .build()
                .expect("verifier");
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![p.cert.clone()], key(p))
            .expect("server");
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots(p));
        let client = if with_cert {
            client
                .with_client_auth_cert(vec![p.cert.clone()], key(p))
                .expect("client cert")
        } else {
            client.with_no_client_auth()
        };
        ControllerTls::new(Arc::new(server), Arc::new(client))
    }

    fn creds(secret: &ClusterSecret, tls: Option<Arc<ControllerTls>>) -> Arc<Credentials> {
        Arc::new(Credentials {
            cluster_id: "c1".into(),
            secret: secret.clone(),
            tls,
        })
    }

    #[test]
    fn over_controller_tls_a_peer_with_a_certificate_is_served_and_one_without_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let p = pki();
            let secret = ClusterSecret::generate();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let service = Arc::new(Counting(AtomicU64::new(0)));
            let server_creds = creds(&secret, Some(configs(&p, true)));
            let server = tokio::spawn(serve(listener, service.clone(), server_creds));
            let call = |c: Arc<Credentials>| {
                let addr = addr.clone();
                async move {
                    RpcClient::new(addr, c)
                        .call(
                            &RpcRequest::WaitServed {
                                index: 1,
                                timeout_ms: 0,
                            },
                            Duration::from_secs(10),
                        )
                        .await
                }
            };
            // A peer with the secret and a certificate of the CA.
            let served = call(creds(&secret, Some(configs(&p, true)))).await;
            assert!(matches!(served, Ok(RpcResponse::WaitServed(true))));
            // The secret alone is not enough: no client certificate, or no TLS at all.
            assert!(call(creds(&secret, Some(configs(&p, false))))
                .await
                .is_err());
            assert!(call(creds(&secret, None)).await.is_err());
            // An operator tool over TLS with a certificate (blocking, on its own thread).
            let client = configs(&p, true).client();
            let (a, s) = (addr.clone(), secret.clone());
            let operator = tokio::task::spawn_blocking(move || {
                crate::network::blocking_call(
                    &a,
                    &s,
                    Some(client),
                    &RpcRequest::Summary,
                    Duration::from_secs(10),
                )
            })
            .await
            .expect("joined");
            assert!(matches!(operator, Ok(RpcResponse::WaitServed(true))));
            assert_eq!(
                service.0.load(Ordering::Relaxed),
                2,
                "only the two with certificates"
            );
            server.abort();
        });
    }

    #[test]
    fn the_server_name_is_the_host_of_the_address_dialled() {
        assert!(matches!(
            server_name("127.0.0.1:10092"),
            Ok(rustls::pki_types::ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:10092"),
            Ok(rustls::pki_types::ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("node-1.example.com:10092"),
            Ok(rustls::pki_types::ServerName::DnsName(_))
        ));
        assert!(server_name("bad host:1").is_err());
    }
}
