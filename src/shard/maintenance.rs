//! Periodic per-shard housekeeping: retention of old segments.

use super::Shard;
use std::rc::Rc;
use std::time::Duration;

const RETENTION_CHECK: Duration = Duration::from_secs(30);

pub async fn run(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(RETENTION_CHECK).await;
        if shard.shutting_down.get() {
            return;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let parts: Vec<_> = shard.partitions.borrow().values().cloned().collect();
        for p in parts {
            match p.log.apply_retention(now_ms).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, segments = n, "retention deleted segments")
                }
                Err(e) => {
                    tracing::warn!(topic = %p.tp.topic, partition = p.tp.partition, "retention: {e}")
                }
            }
        }
    }
}
