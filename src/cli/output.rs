//! Printing: aligned columns as `rpk` prints them (tabwriter, Go's text/tabwriter), or JSON.

use serde::Serialize;
use std::io::Write;

/// Columns under upper-case headers, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let head = headers.iter().map(|h| h.to_string()).collect();
    columns(std::iter::once(&head).chain(rows))
}

/// `KEY  value` lines for a summary.
pub fn pairs(rows: &[(&str, String)]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![k.to_string(), v.clone()])
        .collect();
    columns(rows.iter())
}

fn columns<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(2);
    for r in rows {
        // Writing to a Vec cannot fail.
        let _ = writeln!(tw, "{}", r.join("\t"));
    }
    let bytes = tw.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A section title as rpk underlines it.
pub fn section(title: &str) -> String {
    format!("{title}\n{}\n", "=".repeat(title.len()))
}

/// Prints `items` as JSON, or as a table with one row each.
pub fn list<T: Serialize>(
    format: super::Format,
    items: &[T],
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) {
    match format {
        super::Format::Json => print!("{}", json(&items)),
        super::Format::Table => {
            let rows: Vec<Vec<String>> = items.iter().map(row).collect();
            print!("{}", table(headers, &rows));
        }
    }
}

pub fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
}

/// An optional offset: "-" when there is none.
pub fn opt(v: Option<i64>) -> String {
    v.map_or("-".to_string(), |x| x.to_string())
}

pub fn ids(v: &[i32]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
