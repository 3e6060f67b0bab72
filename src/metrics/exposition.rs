//! The Prometheus text exposition format (version 0.0.4), written by hand: the values are
//! snapshots summed at scrape time, not metric objects a registry owns (the model of the
//! `prometheus`/`prometheus-client` crates), and the format for counters, gauges and one
//! histogram is a few lines. The tests parse it with Prometheus' own client parser and a real
//! Prometheus server (tests/interop/test_prometheus.py).

use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Default)]
pub struct Exposition {
    out: String,
}

pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line: `name{l1="v1",…} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A histogram's samples from per-bucket (not cumulative) counts; `counts` has one more
    /// entry than `bounds` (the +Inf bucket).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            let le = bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label_into(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_values_printed_as_prometheus_reads_them() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "a\\b\nc");
        e.sample("x_total", &[("topic", "a\"b\\c\nd")], 3.0);
        e.sample("x_total", &[], 0.25);
        e.sample("x_total", &[], f64::INFINITY);
        let s = e.finish();
        assert_eq!(
            s,
            "# HELP x_total a\\\\b\\nc\n# TYPE x_total counter\n\
             x_total{topic=\"a\\\"b\\\\c\\nd\"} 3\nx_total 0.25\nx_total +Inf\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_and_count() {
        let mut e = Exposition::default();
        e.histogram("h", &[("api", "Fetch")], &[0.5, 1.0], &[1, 2, 3], 4.5);
        let s = e.finish();
        assert_eq!(
            s,
            "h_bucket{api=\"Fetch\",le=\"0.5\"} 1\nh_bucket{api=\"Fetch\",le=\"1\"} 3\n\
             h_bucket{api=\"Fetch\",le=\"+Inf\"} 6\nh_sum{api=\"Fetch\"} 4.5\n\
             h_count{api=\"Fetch\"} 6\n"
        );
    }
}
