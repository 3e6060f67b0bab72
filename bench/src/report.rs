//! Output: a progress line every report interval, the final text summary, and the same fields
//! as JSON and CSV.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cpu::CpuTimes;
use crate::metadata::ReplicaLogEnd;
use crate::stats::{LatencySummary, Stats};

/// Everything a run reports. JSON and CSV carry exactly these fields.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunReport {
    pub mode: String,
    pub bootstrap_servers: String,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub message_size: usize,
    pub concurrency: usize,
    pub acks: String,
    pub compression: String,
    pub batch_size: usize,
    pub linger_ms: u64,
    pub client_cores: usize,
    pub duration_secs: f64,
    pub messages: u64,
    pub bytes: u64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    /// What the latency figures measure: produce-batch, end-to-end, fetch-request, topic-visible.
    pub latency_kind: String,
    pub latency_count: u64,
    pub latency_mean_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub latency_max_ms: f64,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub failed_messages: u64,
    /// Messages the broker acknowledged (warm-up included); empty with acks=0.
    pub acknowledged: Option<u64>,
    /// Growth of the partitions' end offsets over the run (ListOffsets).
    pub stored: Option<i64>,
    /// Each partition's end offset after a produce run, as its leader answers a consumer.
    pub end_offsets: BTreeMap<i32, i64>,
    /// Each replica's own log end after a produce run (ListOffsets with replica id -2 to every
    /// broker holding a replica): whether the followers hold what the leader stored.
    pub replica_log_ends: Vec<ReplicaLogEnd>,
    /// --transactional: transactions committed and aborted, and the EndTxn(commit) round trip.
    pub transactions_committed: Option<u64>,
    pub transactions_aborted: Option<u64>,
    pub commit_latency_p50_ms: Option<f64>,
    pub commit_latency_p99_ms: Option<f64>,
    /// --transactional: EndTxn answered → the next transaction's AddPartitionsToTxn accepted.
    pub marker_wait_p50_ms: Option<f64>,
    pub marker_wait_p99_ms: Option<f64>,
    pub validation: Option<String>,
    pub validation_passed: Option<bool>,
    pub cpu_user_secs: f64,
    pub cpu_system_secs: f64,
    /// Average cores the bench itself used over the run.
    pub cpu_cores_used: f64,
    pub passed: bool,
    pub failure: Option<String>,
    /// Extra notes (secondary latencies, group details) for people reading the text output.
    pub notes: Vec<String>,
}

impl RunReport {
    pub fn set_throughput(&mut self, messages: u64, bytes: u64, elapsed: Duration) {
        self.messages = messages;
        self.bytes = bytes;
        self.duration_secs = elapsed.as_secs_f64();
        let secs = elapsed.as_secs_f64().max(1e-9);
        self.msgs_per_sec = messages as f64 / secs;
        self.mb_per_sec = bytes as f64 / secs / (1024.0 * 1024.0);
    }

    pub fn set_latency(&mut self, kind: &str, l: &LatencySummary) {
        self.latency_kind = kind.to_string();
        self.latency_count = l.count;
        self.latency_mean_ms = l.mean_ms;
        self.latency_p50_ms = l.p50_ms;
        self.latency_p90_ms = l.p90_ms;
        self.latency_p99_ms = l.p99_ms;
        self.latency_p999_ms = l.p999_ms;
        self.latency_max_ms = l.max_ms;
    }

    pub fn set_cpu(&mut self, cpu: CpuTimes, wall: Duration) {
        self.cpu_user_secs = cpu.user.as_secs_f64();
        self.cpu_system_secs = cpu.system.as_secs_f64();
        self.cpu_cores_used = cpu.cores(wall);
    }

    /// The validation's outcome (`--validate`); a failed one fails the run.
    pub fn set_validation(&mut self, summary: &crate::validate::ValidationSummary) {
        self.validation_passed = Some(summary.passed());
        self.validation = Some(summary.describe());
        if !summary.passed() {
            self.fail(format!("validation failed: {}", summary.describe()));
        }
    }

    /// Marks the run failed (the first reason is kept first).
    pub fn fail(&mut self, why: String) {
        self.passed = false;
        self.failure = Some(match self.failure.take() {
            Some(prev) => format!("{prev}; {why}"),
            None => why,
        });
    }

    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// A header line and one row; maps are `key=value;...`, lists `a | b`, absent values empty.
    pub fn to_csv(&self) -> Result<String> {
        let value = serde_json::to_value(self)?;
        let serde_json::Value::Object(map) = value else {
            anyhow::bail!("report did not serialize to an object");
        };
        let mut header = Vec::new();
        let mut row = Vec::new();
        for (k, v) in map {
            header.push(k);
            row.push(csv_field(&csv_value(&v)));
        }
        Ok(format!("{}\n{}\n", header.join(","), row.join(",")))
    }

    pub fn write_outputs(&self, json: Option<&Path>, csv: Option<&Path>) -> Result<()> {
        if let Some(p) = json {
            std::fs::write(p, self.to_json()? + "\n")
                .with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(p) = csv {
            std::fs::write(p, self.to_csv()?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    pub fn text_summary(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, text: String| {
            s.push_str(&text);
            s.push('\n');
        };
        line(&mut s, "─".repeat(72));
        line(
            &mut s,
            format!(
                "chronik-bench {} · topic {} · {} partition(s) · {} B messages{} · {} · concurrency {}",
                self.mode,
                self.topic,
                self.partitions,
                self.message_size,
                if self.acks.is_empty() { String::new() } else { format!(" · acks={}", self.acks) },
                self.compression,
                self.concurrency
            ),
        );
        line(
            &mut s,
            format!("  messages     {:>14}", group_digits(self.messages)),
        );
        line(
            &mut s,
            format!(
                "  bytes        {:>14}  ({:.1} MiB)",
                group_digits(self.bytes),
                self.bytes as f64 / 1048576.0
            ),
        );
        line(
            &mut s,
            format!("  duration     {:>14.2} s", self.duration_secs),
        );
        line(
            &mut s,
            format!(
                "  throughput   {:>14} msg/s  {:.2} MB/s",
                group_digits(self.msgs_per_sec as u64),
                self.mb_per_sec
            ),
        );
        if self.latency_count > 0 {
            line(
                &mut s,
                format!(
                    "  latency ({})  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
                    self.latency_kind,
                    self.latency_p50_ms,
                    self.latency_p90_ms,
                    self.latency_p99_ms,
                    self.latency_p999_ms,
                    self.latency_max_ms,
                    self.latency_count
                ),
            );
        }
        if let (Some(c), Some(a)) = (self.transactions_committed, self.transactions_aborted) {
            line(
                &mut s,
                format!(
                    "  transactions {:>14} committed  {a} aborted  commit (EndTxn) p50 {:.2} ms  p99 {:.2} ms",
                    group_digits(c),
                    self.commit_latency_p50_ms.unwrap_or(0.0),
                    self.commit_latency_p99_ms.unwrap_or(0.0),
                ),
            );
            line(
                &mut s,
                format!(
                    "  next transaction waited for the markers  p50 {:.2} ms  p99 {:.2} ms",
                    self.marker_wait_p50_ms.unwrap_or(0.0),
                    self.marker_wait_p99_ms.unwrap_or(0.0),
                ),
            );
        }
        if self.errors_total == 0 {
            line(&mut s, "  errors       0".to_string());
        } else {
            line(
                &mut s,
                format!(
                    "  errors       {} ({} messages given up)",
                    self.errors_total, self.failed_messages
                ),
            );
            for (k, v) in &self.errors {
                line(&mut s, format!("    {k:<40} {v}"));
            }
        }
        match (self.acknowledged, self.stored) {
            (Some(a), Some(st)) => line(
                &mut s,
                format!("  stored vs acknowledged: {st} stored / {a} acknowledged"),
            ),
            (None, Some(st)) => line(
                &mut s,
                format!("  stored: {st} (acks=0: nothing was acknowledged)"),
            ),
            _ => {}
        }
        for l in self.replica_lines() {
            line(&mut s, l);
        }
        if let Some(v) = &self.validation {
            line(&mut s, format!("  validation   {v}"));
        }
        line(
            &mut s,
            format!(
                "  bench CPU    {:.2} cores of {} (user {:.1} s, system {:.1} s)",
                self.cpu_cores_used, self.client_cores, self.cpu_user_secs, self.cpu_system_secs
            ),
        );
        for n in &self.notes {
            line(&mut s, format!("  note: {n}"));
        }
        match &self.failure {
            None => line(&mut s, "  result       PASS".to_string()),
            Some(f) => line(&mut s, format!("  result       FAIL: {f}")),
        }
        line(&mut s, "─".repeat(72));
        s
    }

    /// `replicas` summary (nothing when no replica was asked): whether every replica sits at its
    /// partition's end, then per partition `p0 end 906615: 1:906615 2:906615 3:906615`, a
    /// replica off the end marked with the difference (or its error).
    fn replica_lines(&self) -> Vec<String> {
        let mut by_partition: BTreeMap<i32, Vec<&ReplicaLogEnd>> = BTreeMap::new();
        for r in &self.replica_log_ends {
            by_partition.entry(r.partition).or_default().push(r);
        }
        let mut off_end = 0;
        let mut rows = Vec::new();
        for (p, replicas) in &by_partition {
            let end = self.end_offsets.get(p).copied();
            let mut all_at_end = true;
            let mut cells = Vec::with_capacity(replicas.len());
            for r in replicas {
                cells.push(match (r.log_end, end) {
                    (Some(le), Some(e)) if le != e => {
                        all_at_end = false;
                        format!("{}:{le} ({:+})", r.broker, le - e)
                    }
                    (Some(le), _) => format!("{}:{le}", r.broker),
                    (None, _) => {
                        all_at_end = false;
                        let why = r.error.as_deref().unwrap_or("no answer");
                        format!("{}:? ({why})", r.broker)
                    }
                });
            }
            if !all_at_end {
                off_end += 1;
            }
            if by_partition.len() <= MAX_REPLICA_LINES || !all_at_end {
                let end_text = end.map_or("?".to_string(), |e| e.to_string());
                rows.push(format!("    p{p} end {end_text}: {}", cells.join(" ")));
            }
        }
        if by_partition.is_empty() {
            return rows;
        }
        let head = if off_end == 0 {
            format!(
                "  replicas     every replica's own log end = its partition's end ({} replicas, {} partitions)",
                self.replica_log_ends.len(),
                by_partition.len()
            )
        } else {
            format!(
                "  replicas     {off_end} of {} partitions have a replica off the end (lagging, out of the ISR or not answering)",
                by_partition.len()
            )
        };
        std::iter::once(head).chain(rows).collect()
    }
}

/// Partitions listed one per line in the summary; beyond this only those with a replica off
/// the partition's end are.
const MAX_REPLICA_LINES: usize = 12;

fn csv_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", csv_value(v)))
            .collect::<Vec<_>>()
            .join(";"),
        serde_json::Value::Array(a) => a.iter().map(csv_value).collect::<Vec<_>>().join(" | "),
        other => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints a progress line every `interval` until dropped.
pub struct Progress {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub fn spawn_progress(label: &'static str, stats: Arc<Stats>, interval: Duration) -> Progress {
    let handle = tokio::spawn(async move {
        let start = Instant::now();
        let mut last = stats.snapshot();
        let mut last_cpu = CpuTimes::now();
        let mut last_t = Instant::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let snap = stats.snapshot();
            let window = stats.take_window();
            let cpu = CpuTimes::now();
            let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
            let msgs = snap.messages.saturating_sub(last.messages) as f64 / dt;
            let mb = snap.bytes.saturating_sub(last.bytes) as f64 / dt / 1048576.0;
            let warm = if stats.is_measuring() {
                ""
            } else {
                " (warm-up)"
            };
            let mut out = std::io::stderr().lock();
            let _ = writeln!(
                out,
                "[{:>7.1}s] {label}{warm}: {:>10} msg/s {:>8.1} MB/s  p99 {:>7.2} ms (this interval: p99 {:.2} max {:.2})  errors {}  total {}  bench cpu {:.2} cores",
                start.elapsed().as_secs_f64(),
                group_digits(msgs as u64),
                mb,
                snap.latency.p99_ms,
                window.p99_ms,
                window.max_ms,
                snap.error_count,
                group_digits(snap.all_messages),
                cpu.since(&last_cpu).cores(now.duration_since(last_t)),
            );
            last = snap;
            last_cpu = cpu;
            last_t = now;
        }
    });
    Progress { handle }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunReport {
        let mut r = RunReport {
            mode: "produce".into(),
            topic: "t,1".into(),
            passed: true,
            ..Default::default()
        };
        r.set_throughput(1000, 1024 * 1000, Duration::from_secs(2));
        r.errors.insert("NOT_LEADER_OR_FOLLOWER(6)".into(), 3);
        r.errors.insert("CLIENT_REQUEST_TIMEOUT".into(), 1);
        r.errors_total = 4;
        r.acknowledged = Some(1000);
        r.stored = Some(1000);
        r
    }

    #[test]
    fn replica_log_ends_off_the_partition_end_are_marked() {
        let mut r = RunReport {
            end_offsets: [(0, 100), (1, 50)].into_iter().collect(),
            ..RunReport::default()
        };
        let rep = |partition, broker, log_end: Option<i64>, error: Option<&str>| ReplicaLogEnd {
            partition,
            broker,
            log_end,
            error: error.map(str::to_string),
        };
        r.replica_log_ends = vec![rep(0, 1, Some(100), None), rep(0, 2, Some(100), None)];
        let all = r.replica_lines();
        assert_eq!(
            all[0],
            "  replicas     every replica's own log end = its partition's end (2 replicas, 1 partitions)"
        );
        assert_eq!(all[1], "    p0 end 100: 1:100 2:100");

        r.replica_log_ends = vec![
            rep(0, 1, Some(100), None),
            rep(0, 2, Some(95), None),
            rep(1, 1, Some(50), None),
            rep(1, 3, None, Some("broker 3 unreachable")),
        ];
        let text = r.text_summary();
        assert!(
            text.contains("2 of 2 partitions have a replica off the end"),
            "{text}"
        );
        assert!(text.contains("    p0 end 100: 1:100 2:95 (-5)"), "{text}");
        assert!(
            text.contains("    p1 end 50: 1:50 3:? (broker 3 unreachable)"),
            "{text}"
        );
    }

    #[test]
    fn json_and_csv_carry_the_same_fields() {
        let r = sample();
        let json: serde_json::Value =
            serde_json::from_str(&r.to_json().expect("json")).expect("parses");
        let csv = r.to_csv().expect("csv");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(header, keys);
        assert!(csv.contains("\"t,1\""));
        assert!(csv.contains("CLIENT_REQUEST_TIMEOUT=1;NOT_LEADER_OR_FOLLOWER(6)=3"));
        assert_eq!(json["msgs_per_sec"], 500.0);
        assert_eq!(json["stored"], 1000);
    }

    #[test]
    fn the_summary_says_pass_or_why_it_failed() {
        let mut r = sample();
        assert!(r.text_summary().contains("PASS"));
        r.fail("stored 5 of 10 acknowledged".into());
        let t = r.text_summary();
        assert!(t.contains("FAIL: stored 5 of 10 acknowledged"));
        assert!(t.contains("NOT_LEADER_OR_FOLLOWER(6)"));
        assert!(!r.passed);
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(1234567), "1,234,567");
    }
}
