//! Parsers of setting values that are more than one number: flush policy, quorum, addresses,
//! cluster id.

use super::FlushSetting;
use std::net::SocketAddr;
use std::path::PathBuf;

pub fn parse_flush(s: &str) -> Result<FlushSetting, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("always") {
        return Ok(FlushSetting::Always);
    }
    let ms = s.strip_suffix("ms").unwrap_or(s);
    ms.parse::<u64>()
        .map(FlushSetting::IntervalMs)
        .map_err(|_| format!("log-flush must be `always` or an interval in ms, got `{s}`"))
}

/// `1@127.0.0.1:10092,2@127.0.0.1:10093`
pub fn parse_quorum(s: &str) -> Result<Vec<(i32, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("controller-quorum entry `{part}` is not ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .map_err(|_| format!("controller-quorum id `{id}` is not a number"))?;
        if !addr.contains(':') {
            return Err(format!("controller-quorum address `{addr}` has no port"));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("controller-quorum lists node {id} twice"));
        }
        out.push((id, addr.to_string()));
    }
    if out.is_empty() {
        return Err("controller-quorum is empty".into());
    }
    Ok(out)
}

pub fn resolve_addr(s: &str, what: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{what} `{s}`: {e}"))?
        .next()
        .ok_or_else(|| format!("{what} `{s}` resolves to no address"))
}

/// A cluster id as Kafka writes them (base64url, `[A-Za-z0-9_-]`), at most 64 characters: it
/// travels in every controller connection's greeting and in Metadata responses.
pub fn parse_cluster_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "cluster-id `{s}` must be 1 to 64 characters of A-Z, a-z, 0-9, - and _"
        ))
    }
}

pub fn split_host_port(s: &str, what: &str) -> Result<(String, u16), String> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{what} `{s}` is not HOST:PORT"))?;
    let port = p
        .parse()
        .map_err(|_| format!("{what} `{s}` has a bad port"))?;
    Ok((h.trim_matches(|c| c == '[' || c == ']').to_string(), port))
}

/// A path option made absolute against the working directory at start-up. Every path the broker
/// keeps is absolute: glommio's `Directory::open` passes a relative path to `openat(-1, …)`, which
/// fails with EBADF, and a later change of working directory must not move the data.
pub fn absolute_dir(p: PathBuf) -> Result<PathBuf, String> {
    std::path::absolute(&p).map_err(|e| format!("data dir {}: {e}", p.display()))
}
