//! TLS on SSL listeners (and replica fetchers' connections to an SSL inter-broker listener),
//! fitted to the shard model: each connection's `rustls::Connection` is a sans-I/O state
//! machine that lives on the shard owning the socket, shared by that connection's reader and
//! writer tasks through an `Rc<RefCell<…>>` that is borrowed only between awaits. No thread
//! hop, no lock: the shard's own syscalls move the ciphertext.
//!
//! Ordering of outgoing TLS records: bytes leave rustls's queue straight into the socket with a
//! non-blocking send, so whoever sends (the writer, or the reader answering a KeyUpdate) takes
//! them from the front of the one queue. Only when the socket is full does the writer take the
//! queued bytes out and await their send; it marks that with `writing`, and the reader then
//! leaves its bytes in the queue for the writer's next flush.

use crate::config::tls::{ClientAuth, TlsFiles};
use crate::net::frame::{make_room, wait_readable, ByteSource, IdleLink, WakeMark};
use crate::net::pieces::PieceCursor;
use bytes::{Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

/// Ciphertext read per `recv`: rustls takes it 4 KiB at a time from memory, so one syscall
/// brings several records.
const CIPHER_READ: usize = 64 * 1024;
/// Encrypted bytes rustls queues before the writer must send them.
const SEND_QUEUE: usize = 256 * 1024;
/// Pieces of a response handed to rustls in one vectored write.
const MAX_SLICES: usize = 64;

/// Reads the certificate chain, key and (to verify clients) CAs into a rustls server config,
/// TLS 1.2 and 1.3, ring as the crypto provider.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    load_server(files, files.client_auth)
}

/// The controller port's configs with `--controller-tls`: mutual TLS whatever
/// `--ssl-client-auth` says (a peer or operator tool must show a certificate of
/// `--ssl-ca-file`), and the client side every controller dials its peers with.
pub fn load_controller(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), String> {
    Ok((
        load_server(files, ClientAuth::Required)?,
        load_client(files)?,
    ))
}

/// ring's cipher suites with AES-128-GCM first. The server chooses (`ignore_client_order`), so a
/// client that offers AES-128-GCM gets it even when it lists AES-256-GCM first, as OpenSSL (and
/// so librdkafka) does: 10 AES rounds a block instead of 14, on the broker and on the client.
/// AES-128-GCM is TLS 1.3's mandatory suite; clients that offer only the others still get them.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// `load` with this client authentication.
fn load_server(files: &TlsFiles, client_auth: ClientAuth) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = load_cert_and_key(files)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (client_auth, &files.ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("ssl-ca-file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("ssl-cert-file / ssl-key-file: {e}"))?;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The config replica fetchers connect to an SSL inter-broker listener with (and controllers
/// to each other with `--controller-tls`): the other broker's certificate must be signed by a
/// CA of `--ssl-ca-file`, and the broker shows its own certificate (so leaders that require
/// client certificates accept it).
pub fn load_client(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    let Some(ca) = &files.ca else {
        return Err("verifying the other brokers over TLS needs --ssl-ca-file".into());
    };
    let roots = load_roots(ca)?;
    let (certs, key) = load_cert_and_key(files)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("ssl-cert-file / ssl-key-file: {e}"))?;
    Ok(Arc::new(config))
}

/// The broker's certificate chain and private key (PEM), shown to clients and, by replica
/// fetchers, to leaders.
fn load_cert_and_key(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("ssl-cert-file {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ssl-cert-file {}: no certificate in it",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("ssl-key-file {}: {e}", files.key.display()))?;
    Ok((certs, key))
}

/// The CAs of `--ssl-ca-file` (PEM), which verify clients and other brokers.
fn load_roots(ca: &std::path::Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("ssl-ca-file {}: {e}", ca.display()))?;
    for c in cas {
        roots
            .add(c)
            .map_err(|e| format!("ssl-ca-file {}: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A shard's own copy of the config: rustls's session cache (resumption) sits behind a mutex,
/// so each shard gets its own and no lock is shared between shards. A client resuming on
/// another shard makes a full handshake.
pub fn for_shard(shared: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut own = (**shared).clone();
    own.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Arc::new(own)
}

/// Sessions each shard remembers for resumption.
const SESSION_CACHE: usize = 1024;

/// Kafka's principal for a TLS client: `User:` and its certificate's subject as RFC 2253 writes
/// it (`User:CN=app,O=acme`); None without a client certificate (anonymous).
pub fn principal(conn: &ServerConnection) -> Option<String> {
    principal_of(conn.peer_certificates()?.first()?)
}

/// The principal of a DER certificate (`principal`); None if it does not parse.
pub fn principal_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(format!("User:{}", rfc2253(cert.subject())))
}

/// RFC 2253: the last RDN first, attributes by their short names, values escaped.
fn rfc2253(name: &x509_parser::x509::X509Name) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|rdn| {
            let attrs: Vec<String> = rdn
                .iter()
                .map(|a| {
                    let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| a.attr_type().to_id_string());
                    let value = match a.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => {
                            let hex: String = a
                                .attr_value()
                                .data
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{key}={value}")
                })
                .collect();
            attrs.join("+")
        })
        .collect();
    rdns.join(",")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One connection's TLS state, shared by its reader and writer on the same shard (a client's
/// connection, or a replica fetcher's to its leader).
pub struct TlsShared {
    conn: RefCell<Connection>,
    /// The writer has taken queued bytes out and is awaiting their send.
    writing: Cell<bool>,
    fd: RawFd,
}

impl TlsShared {
    pub fn new(config: Arc<ServerConfig>, fd: RawFd) -> std::io::Result<Rc<TlsShared>> {
        let conn = ServerConnection::new(config).map_err(std::io::Error::other)?;
        Ok(TlsShared::with(conn.into(), fd))
    }

    /// The client side, for a connection to `server_name` (checked against its certificate).
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: &str,
        fd: RawFd,
    ) -> std::io::Result<Rc<TlsShared>> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        Ok(TlsShared::with(conn.into(), fd))
    }

    fn with(mut conn: Connection, fd: RawFd) -> Rc<TlsShared> {
        conn.set_buffer_limit(Some(SEND_QUEUE));
        Rc::new(TlsShared {
            conn: RefCell::new(conn),
            writing: Cell::new(false),
            fd,
        })
    }

    /// The client's principal, once the handshake is done.
    pub fn principal(&self) -> Option<String> {
        match &*self.conn.borrow() {
            Connection::Server(s) => principal(s),
            Connection::Client(_) => None,
        }
    }

    /// Sends what fits now of what rustls has queued (alerts, KeyUpdate answers), unless the
    /// writer holds queued bytes of its own (then they go at its next flush, in order).
    fn send_queued_now(&self) {
        if self.writing.get() {
            return;
        }
        let mut c = self.conn.borrow_mut();
        while c.wants_write() {
            if c.write_tls(&mut Fd(self.fd)).is_err() {
                break;
            }
        }
    }
}

/// Runs the handshake on the connection's own task, before its reader and writer start. A client
/// that speaks anything but TLS fails it, and the connection is closed.
pub async fn handshake(
    stream: &mut TcpStream,
    tls: &TlsShared,
    cipher: &mut CipherBuf,
    idle: IdleLink<'_>,
) -> std::io::Result<()> {
    let mut scratch = BytesMut::new();
    loop {
        flush_queued(stream, tls).await?;
        if !tls.conn.borrow().is_handshaking() {
            return Ok(());
        }
        if cipher.is_empty() {
            match cipher.fill(tls.fd) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !wait_readable(stream, &mut scratch, idle).await? {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = feed(tls, cipher) {
            // rustls queued an alert saying why; it goes out before the close.
            let _ = flush_queued(stream, tls).await;
            return Err(e);
        }
    }
}

/// Hands buffered ciphertext to rustls and processes it. A TLS error is `InvalidData`.
///
/// rustls takes at most 4 KiB a `read_tls` and buffers up to one full record and a bit, so
/// everything it will take goes in before one `process_new_packets`: a 16 KiB record costs one
/// pass over the records instead of five.
fn feed(tls: &TlsShared, cipher: &mut CipherBuf) -> std::io::Result<()> {
    let mut c = tls.conn.borrow_mut();
    // Never with nothing to give: a zero-byte read_tls means end of stream to rustls.
    while !cipher.is_empty() {
        let mut pending = cipher.pending();
        match c.read_tls(&mut pending) {
            Ok(n) => cipher.consume(n),
            // Its record buffer is full: it holds a whole record (or a bad one, which
            // process_new_packets refuses).
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => break,
            Err(e) => return Err(e),
        }
    }
    c.process_new_packets()
        .map(|_| ())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("TLS: {e}")))
}

/// Sends everything rustls has queued; while the socket is full the bytes are taken out and
/// their send awaited (only the task that owns sending may do this).
async fn flush_queued(stream: &mut TcpStream, tls: &TlsShared) -> std::io::Result<()> {
    loop {
        let held = {
            let mut c = tls.conn.borrow_mut();
            let mut full = false;
            while c.wants_write() {
                match c.write_tls(&mut Fd(tls.fd)) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        full = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !full {
                return Ok(());
            }
            let mut held = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut held)?;
            }
            held
        };
        tls.writing.set(true);
        let sent = stream.write_all(&held).await;
        tls.writing.set(false);
        sent?;
    }
}

/// Ciphertext read from the socket and not yet handed to rustls. Allocated when a read needs it
/// and given back while the connection waits with nothing buffered, so an idle TLS connection
/// does not hold 64 KiB.
#[derive(Default)]
pub struct CipherBuf {
    /// `len()` is the end of what was read.
    buf: Vec<u8>,
    start: usize,
}

impl CipherBuf {
    fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.is_empty() {
            self.start = 0;
            self.buf.clear();
        }
    }

    /// Gives the memory back (only when empty).
    fn release(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// One non-blocking `recv` into the free room (called only when empty): no zeroing, the
    /// kernel writes into the spare capacity.
    fn fill(&mut self, fd: RawFd) -> std::io::Result<usize> {
        if self.buf.capacity() < CIPHER_READ {
            self.buf = Vec::with_capacity(CIPHER_READ);
            self.start = 0;
        }
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: recv writes at most spare.len() bytes into the spare capacity through the raw
        // pointer; no reference to uninitialized memory is made.
        let n = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: recv initialized the first n bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(n)
    }
}

/// The reading half of a TLS connection: frames come out of rustls's decrypted plaintext.
pub struct TlsSource {
    pub stream: TcpStream,
    pub tls: Rc<TlsShared>,
    pub cipher: CipherBuf,
    mark: WakeMark,
}

impl TlsSource {
    pub fn new(stream: TcpStream, tls: Rc<TlsShared>, cipher: CipherBuf) -> Self {
        TlsSource {
            stream,
            tls,
            cipher,
            mark: WakeMark::default(),
        }
    }

    /// Before sleeping on an empty socket: wake only once the ciphertext still needed for the
    /// frame being read has arrived, not at every TLS record. Clients send a request in records
    /// of at most 16 KiB, each its own segment, so without this a 1 MiB produce request wakes
    /// this shard (and costs the sender a wakeup) some 64 times. At least `missing` plaintext
    /// bytes are still to come as ciphertext, less what rustls may already hold of a record
    /// begun (at most one record's plaintext).
    fn wake_when_frame_arrives(&mut self, frame_len: usize, have: usize) {
        let missing = frame_len.saturating_sub(have);
        self.mark
            .set(self.tls.fd, missing.saturating_sub(MAX_RECORD_PLAINTEXT));
    }
}

/// The most plaintext one TLS record carries.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

impl ByteSource for TlsSource {
    async fn read_more(
        &mut self,
        buf: &mut BytesMut,
        frame_len: usize,
        idle: IdleLink<'_>,
    ) -> std::io::Result<usize> {
        loop {
            {
                let mut c = self.tls.conn.borrow_mut();
                let mut reader = c.reader();
                match reader.fill_buf() {
                    Ok([]) => return Ok(0),
                    Ok(chunk) => {
                        let n = chunk.len();
                        make_room(buf, frame_len);
                        buf.extend_from_slice(chunk);
                        reader.consume(n);
                        if let Some((sweeper, conn)) = idle {
                            conn.active(sweeper);
                        }
                        return Ok(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // The peer closed without close_notify: the end of this connection too.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            if !self.cipher.is_empty() {
                let fed = feed(&self.tls, &mut self.cipher);
                // Alerts, KeyUpdate answers.
                self.tls.send_queued_now();
                fed?;
                continue;
            }
            match self.cipher.fill(self.tls.fd) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.cipher.release();
                    self.wake_when_frame_arrives(frame_len, buf.len());
                    if !wait_readable(&mut self.stream, buf, idle).await? {
                        return Ok(0);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The writing half: responses are encrypted into rustls's queue a bounded amount at a time and
/// sent.
pub struct TlsSink {
    pub stream: TcpStream,
    pub tls: Rc<TlsShared>,
}

impl TlsSink {
    /// Sends a response given in pieces. The pieces go to rustls together (vectored), so small
    /// ones share full records instead of each costing a record of its own.
    pub async fn send(&mut self, pieces: &[Bytes]) -> std::io::Result<()> {
        let mut at = PieceCursor::default();
        while let Some((i, off)) = at.next_unwritten(pieces) {
            let slices: Vec<std::io::IoSlice<'_>> = pieces[i..]
                .iter()
                .take(MAX_SLICES)
                .enumerate()
                .map(|(k, p)| std::io::IoSlice::new(if k == 0 { &p[off..] } else { &p[..] }))
                .collect();
            let n = self
                .tls
                .conn
                .borrow_mut()
                .writer()
                .write_vectored(&slices)?;
            if n == 0 {
                // The queue is full: send it, then encrypt more.
                flush_queued(&mut self.stream, &self.tls).await?;
                continue;
            }
            at.advance(pieces, n);
        }
        flush_queued(&mut self.stream, &self.tls).await
    }

    pub async fn send_slice(&mut self, mut rest: &[u8]) -> std::io::Result<()> {
        while !rest.is_empty() {
            let n = self.tls.conn.borrow_mut().writer().write(rest)?;
            rest = &rest[n..];
            if n == 0 {
                // The queue is full: send it, then encrypt more.
                flush_queued(&mut self.stream, &self.tls).await?;
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        flush_queued(&mut self.stream, &self.tls).await
    }

    /// Says goodbye (close_notify) as well as the socket takes it now.
    pub fn close_notify(&mut self) {
        self.tls.conn.borrow_mut().send_close_notify();
        self.tls.send_queued_now();
    }
}

/// Non-blocking `send` on a socket the shard's reactor owns.
struct Fd(RawFd);

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        // SAFETY: msghdr is plain data; IoSlice is ABI-compatible with iovec and the slices
        // outlive the call, which only reads them.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len() as _;
            libc::sendmsg(self.0, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_gives_the_principal_user_and_its_subject_last_rdn_first() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app-1");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            principal_of(cert.der()).as_deref(),
            Some("User:CN=app-1,O=Acme\\, Inc")
        );
        assert_eq!(principal_of(b"not a certificate"), None);
    }

    #[test]
    fn rfc2253_escapes_special_characters() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(escape("#1"), "\\#1");
        assert_eq!(escape("plain"), "plain");
    }
}
