//! The Kafka listener socket. glommio's own `bind` sets SO_REUSEPORT but not SO_REUSEADDR, so a
//! broker restarted after a crash could not bind its port while a client still held a
//! connection to the old process (its socket lingers in FIN-WAIT-2 / TIME-WAIT).

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};

fn socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    Ok(s)
}

/// Fails if another process is listening on `addr` (no SO_REUSEPORT here, so a second broker
/// on the same port is refused), but not because of lingering connections of a dead one.
pub fn check_free(addr: SocketAddr) -> std::io::Result<()> {
    let s = socket(addr)?;
    s.bind(&addr.into())?;
    s.listen(1)?;
    Ok(())
}

/// `check_free`, retried for up to 3 s while the address is in use: a broker restarted right
/// after its previous process was killed may find that process's listener not yet torn down.
pub fn wait_free(addr: SocketAddr) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match check_free(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// One shard's listener: every shard binds the same address (SO_REUSEPORT) and the kernel
/// spreads connections over them.
pub fn bind_shard(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    let s = socket(addr)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    // SAFETY: the fd is a bound, listening TCP socket that we own and hand over.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(s.into_raw_fd()) })
}
