//! chronik-bench-plot: turns the JSON reports of a suite run into a Markdown table and an SVG
//! plot (throughput, and latency percentiles, per scenario).
//!
//! usage: chronik-bench-plot --svg OUT.svg --markdown OUT.md NAME=report.json ...

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

struct Row {
    name: String,
    r: Value,
}

impl Row {
    fn f(&self, k: &str) -> f64 {
        self.r.get(k).and_then(Value::as_f64).unwrap_or(0.0)
    }
    fn s(&self, k: &str) -> String {
        match self.r.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chronik-bench-plot: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<()> {
    let mut svg: Option<PathBuf> = None;
    let mut md: Option<PathBuf> = None;
    let mut rows = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--svg" => svg = it.next().map(PathBuf::from),
            "--markdown" => md = it.next().map(PathBuf::from),
            spec => {
                let (name, path) = spec.split_once('=').unwrap_or((spec, spec));
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                let r: Value =
                    serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
                rows.push(Row {
                    name: name.to_string(),
                    r,
                });
            }
        }
    }
    if rows.is_empty() {
        bail!("usage: chronik-bench-plot --svg OUT.svg --markdown OUT.md NAME=report.json ...");
    }
    if let Some(p) = md {
        std::fs::write(&p, markdown(&rows)).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = svg {
        plot(&rows, &p)?;
    }
    Ok(())
}

fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| scenario | mode | partitions | size | acks | conc. | msg/s | MB/s | latency | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | stored / acked | bench CPU (cores) | result |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let stored = match (r.s("stored").as_str(), r.s("acknowledged").as_str()) {
            ("", _) => String::new(),
            (st, "") => st.to_string(),
            (st, a) => format!("{st} / {a}"),
        };
        let result = if r.r.get("passed").and_then(Value::as_bool).unwrap_or(false) {
            "pass".to_string()
        } else {
            format!("FAIL: {}", r.s("failure").replace('|', "/"))
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.2} | {} |\n",
            r.name,
            r.s("mode"),
            r.s("partitions"),
            r.s("message_size"),
            r.s("acks"),
            r.s("concurrency"),
            r.f("msgs_per_sec"),
            r.f("mb_per_sec"),
            r.s("latency_kind"),
            r.f("latency_p50_ms"),
            r.f("latency_p90_ms"),
            r.f("latency_p99_ms"),
            r.f("latency_p999_ms"),
            r.f("latency_max_ms"),
            r.s("errors_total"),
            stored,
            r.f("cpu_cores_used"),
            result
        ));
    }
    s
}

/// Axis label: the first two parts of the scenario name ("2a-produce"); the table has the rest.
fn short_name(name: &str) -> String {
    name.splitn(3, '-').take(2).collect::<Vec<_>>().join("-")
}

fn plot(rows: &[Row], path: &PathBuf) -> Result<()> {
    let n = rows.len();
    let width = (260 + 140 * n as u32).max(900);
    let root = SVGBackend::new(path, (width, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(440);
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing: {e:?}");

    let label = |x: &f64| -> String {
        let i = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 1e-6 && i < n {
            short_name(&rows[i].name)
        } else {
            String::new()
        }
    };

    let max_tp = rows.iter().map(|r| r.f("msgs_per_sec")).fold(1.0, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption("throughput (messages/s)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..n as f64, 0f64..max_tp)
        .map_err(err)?;
    c.configure_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&|v| format!("{:.0}", v))
        .light_line_style(WHITE)
        .disable_x_mesh()
        .draw()
        .map_err(err)?;
    c.draw_series(rows.iter().enumerate().map(|(i, r)| {
        Rectangle::new(
            [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, r.f("msgs_per_sec"))],
            BLUE.mix(0.7).filled(),
        )
    }))
    .map_err(err)?;

    let keys = [
        ("latency_p50_ms", "p50", GREEN),
        ("latency_p90_ms", "p90", BLUE),
        ("latency_p99_ms", "p99", MAGENTA),
        ("latency_p999_ms", "p99.9", RED),
    ];
    let max_lat = rows
        .iter()
        .flat_map(|r| keys.iter().map(move |(k, _, _)| r.f(k)))
        .fold(0.01, f64::max)
        * 2.0;
    let mut c = ChartBuilder::on(&bottom)
        .caption("latency percentiles (ms, log scale)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..n as f64, (0.01f64..max_lat).log_scale())
        .map_err(err)?;
    c.configure_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&label)
        .light_line_style(WHITE)
        .disable_x_mesh()
        .draw()
        .map_err(err)?;
    for (k, (key, name, color)) in keys.iter().enumerate() {
        c.draw_series(rows.iter().enumerate().map(|(i, r)| {
            let x0 = i as f64 + 0.1 + k as f64 * 0.2;
            Rectangle::new(
                [(x0, 0.01), (x0 + 0.18, r.f(key).max(0.01))],
                color.mix(0.8).filled(),
            )
        }))
        .map_err(err)?
        .label(*name)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
