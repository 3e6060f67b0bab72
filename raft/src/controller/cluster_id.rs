//! The cluster id: kept in the data dir, checked against the configured one, derived from the
//! initial quorum at the first start.

use super::ControllerConfig;
use crate::error::ControllerError;

/// The persisted cluster id, else the configured one, else one derived from the initial quorum
/// (identical on every initial node); persisted at the first start. A configured id that
/// differs from the persisted one is refused: the node would otherwise join another cluster
/// with this one's data.
pub(super) fn resolve_cluster_id(cfg: &ControllerConfig) -> Result<String, ControllerError> {
    let path = cfg.data_dir.join("cluster_id");
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let configured = Some(cfg.cluster_id.clone()).filter(|s| !s.is_empty());
    let id = match (stored.clone(), configured) {
        (Some(stored), Some(configured)) if stored != configured => {
            return Err(ControllerError::InconsistentClusterId { stored, configured })
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => derive_cluster_id(&cfg.quorum),
    };
    if stored.as_deref() != Some(id.as_str()) {
        let tmp = cfg.data_dir.join("cluster_id.tmp");
        std::fs::write(&tmp, id.as_bytes())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&cfg.data_dir)?.sync_all()?;
    }
    Ok(id)
}

/// 16 bytes of FNV-1a over the sorted quorum, base64url without padding (Kafka's cluster-id form).
pub fn derive_cluster_id(quorum: &[(i32, String)]) -> String {
    let mut q: Vec<String> = quorum.iter().map(|(i, a)| format!("{i}@{a}")).collect();
    q.sort();
    let text = q.join(",");
    let fnv = |seed: u64| {
        let mut h: u64 = 0xcbf29ce484222325 ^ seed;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0).to_le_bytes());
    bytes[8..].copy_from_slice(&fnv(0x9e3779b97f4a7c15).to_le_bytes());
    base64url(&bytes)
}

fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
