//! The cluster secret: the key with which controllers and operator tools prove, on the
//! controller RPC port, that they belong to the cluster (the handshake is in network.rs). It
//! never crosses the wire and no Kafka API exposes it.
//!
//! A secret file holds one to four secrets, one per line, each 32 bytes as 64 hex digits
//! (`openssl rand -hex 32`); `#` starts a comment. The first one is the one this node proves
//! itself with; every one is accepted from others, which is how a secret is rotated without
//! stopping the cluster (README: "Cluster secret").
//!
//! A node keeps its copy in `<data-dir>/cluster.secret` (mode 0600). A node alone in its quorum
//! generates one at its first start; any other node must be given the cluster's file.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const SECRET_LEN: usize = 32;
/// The node's copy, in the broker's data dir.
pub const SECRET_FILE: &str = "cluster.secret";
/// A rotation needs two (current and next); a few more leave room for mistakes, not for abuse.
const MAX_SECRETS: usize = 4;
/// Larger files are not secret files (checked before reading them whole).
const MAX_FILE_BYTES: u64 = 4096;

type HmacSha256 = Hmac<Sha256>;

/// The secrets a node accepts; the first is the one it proves itself with.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    keys: Vec<[u8; SECRET_LEN]>,
}

impl fmt::Debug for ClusterSecret {
    // Never print key material (configs are logged with {:?}).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} key(s), redacted)", self.keys.len())
    }
}

impl ClusterSecret {
    /// 32 random bytes from the operating system.
    pub fn generate() -> ClusterSecret {
        let mut key = [0u8; SECRET_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        ClusterSecret { keys: vec![key] }
    }

    /// The text of a secret file (see the module doc).
    pub fn parse(text: &str) -> Result<ClusterSecret, String> {
        let mut keys = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut key = [0u8; SECRET_LEN];
            hex::decode_to_slice(line, &mut key).map_err(|_| {
                "a cluster secret must be 64 hex digits (32 bytes) per line".to_string()
            })?;
            if keys.len() == MAX_SECRETS {
                return Err(format!("at most {MAX_SECRETS} secrets per file"));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no secret in the file".into());
        }
        Ok(ClusterSecret { keys })
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for k in &self.keys {
            s.push_str(&hex::encode(k));
            s.push('\n');
        }
        s
    }

    /// Reads and parses a secret file; errors name the file.
    pub fn read_file(path: &Path) -> Result<ClusterSecret, String> {
        let named = |e: String| format!("cluster secret file {}: {e}", path.display());
        let f = std::fs::File::open(path).map_err(|e| named(e.to_string()))?;
        let mut text = String::new();
        f.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| named(e.to_string()))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(named(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        ClusterSecret::parse(&text).map_err(named)
    }

    /// Writes the file readable by its owner only (0600), atomically (temp file, fsync,
    /// rename, fsync of the directory).
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(self.to_text().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// The key this node proves itself with.
    pub fn proving_key(&self) -> &[u8; SECRET_LEN] {
        &self.keys[0]
    }

    /// Only the proving key (a caller checks the server's proof under the key it proved with).
    pub fn proving_only(&self) -> ClusterSecret {
        ClusterSecret {
            keys: vec![self.keys[0]],
        }
    }

    /// The secret with `next` accepted too (tests of rotation).
    pub fn with_next(mut self, next: &ClusterSecret) -> ClusterSecret {
        self.keys.extend(next.keys.iter().take(MAX_SECRETS - 1));
        self
    }

    /// HMAC-SHA256 of `parts` under the proving key.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        mac_with(self.proving_key(), parts)
    }

    /// The accepted key under which `tag` is the HMAC of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8; 32]) -> Option<ClusterSecret> {
        self.keys.iter().find_map(|k| {
            let mut m = keyed(k);
            for p in parts {
                m.update(p);
            }
            m.verify_slice(tag)
                .ok()
                .map(|()| ClusterSecret { keys: vec![*k] })
        })
    }
}

fn keyed(key: &[u8; SECRET_LEN]) -> HmacSha256 {
    // HMAC takes keys of any length; a 32-byte key cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn mac_with(key: &[u8; SECRET_LEN], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = keyed(key);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// 32 random bytes from the operating system: the fresh nonce each side of a challenge–response
/// contributes, so no proof can be replayed on another connection.
pub fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Where a node's secret came from (logged at start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--cluster-secret-file` (and copied into the data dir).
    Given,
    /// The copy in the data dir.
    Stored,
    /// Generated now: a new single-node cluster.
    Generated,
}

/// The secret a node runs with: the given file (its copy in `data_dir` replaced when it
/// differs), else the copy in `data_dir`, else — only for a node alone in its quorum, which
/// founds a cluster by itself — a new one. A node of a larger cluster cannot make one up: its
/// peers would refuse it, so it fails with what to do instead.
pub fn resolve(
    data_dir: &Path,
    given: Option<&Path>,
    sole_voter: bool,
) -> Result<(ClusterSecret, Origin), String> {
    let stored_path = data_dir.join(SECRET_FILE);
    let stored = match std::fs::metadata(&stored_path) {
        Ok(_) => Some(ClusterSecret::read_file(&stored_path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", stored_path.display())),
    };
    let write = |s: &ClusterSecret| {
        std::fs::create_dir_all(data_dir)
            .and_then(|()| s.write_file(&stored_path))
            .map_err(|e| format!("cannot write {}: {e}", stored_path.display()))
    };
    if let Some(path) = given {
        let secret = ClusterSecret::read_file(path)?;
        if stored.as_ref() != Some(&secret) {
            write(&secret)?;
        }
        return Ok((secret, Origin::Given));
    }
    if let Some(s) = stored {
        return Ok((s, Origin::Stored));
    }
    if !sole_voter {
        return Err(format!(
            "no cluster secret: {} does not exist. A node of a multi-node cluster needs the \
             cluster's secret file at its first start: pass --cluster-secret-file FILE (for a \
             new cluster, the same new file on every node: `openssl rand -hex 32 > FILE`; to \
             join a running one, a copy of any node's {SECRET_FILE})",
            stored_path.display()
        ));
    }
    let s = ClusterSecret::generate();
    write(&s)?;
    Ok((s, Origin::Generated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_round_trips_and_garbage_is_refused() {
        let a = ClusterSecret::generate();
        let b = ClusterSecret::generate();
        assert_ne!(a, b);
        let both = a.clone().with_next(&b);
        assert_eq!(ClusterSecret::parse(&both.to_text()).unwrap(), both);
        let commented = format!(
            "# current\n{}\n\n# next\n{}",
            hex::encode(a.keys[0]),
            hex::encode(b.keys[0])
        );
        assert_eq!(ClusterSecret::parse(&commented).unwrap(), both);
        for bad in [
            "",
            "# nothing",
            "abc",
            &"00".repeat(31),
            &"zz".repeat(32),
            &"00".repeat(33),
        ] {
            assert!(ClusterSecret::parse(bad).is_err(), "{bad:?}");
        }
        let five = (0..5)
            .map(|_| "00".repeat(32))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(ClusterSecret::parse(&five).is_err());
    }

    #[test]
    fn a_proof_verifies_under_any_accepted_key_and_not_under_others() {
        let a = ClusterSecret::generate();
        let b = ClusterSecret::generate();
        let parts: &[&[u8]] = &[b"label", b"nonce"];
        let tag = b.mac(parts);
        assert!(a.verify(parts, &tag).is_none());
        let matched = a
            .clone()
            .with_next(&b)
            .verify(parts, &tag)
            .expect("b accepted");
        assert_eq!(matched, b);
        assert!(b.verify(&[b"label", b"other"], &tag).is_none());
    }

    #[test]
    fn only_a_sole_voter_makes_up_a_secret_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        assert!(resolve(&d, None, false)
            .unwrap_err()
            .contains("--cluster-secret-file"));
        let (s, origin) = resolve(&d, None, true).unwrap();
        assert_eq!(origin, Origin::Generated);
        let mode = std::fs::metadata(d.join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            resolve(&d, None, false).unwrap(),
            (s.clone(), Origin::Stored)
        );
        // A given file wins and replaces the copy.
        let other = ClusterSecret::generate();
        let f = dir.path().join("given");
        other.write_file(&f).unwrap();
        assert_eq!(
            resolve(&d, Some(&f), true).unwrap(),
            (other.clone(), Origin::Given)
        );
        assert_eq!(resolve(&d, None, true).unwrap(), (other, Origin::Stored));
    }
}
