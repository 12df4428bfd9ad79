//! What humans read: aligned tables and short values. Scripts use `--json`,
//! which prints the API's own answer.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Prints JSON for scripts, pretty, on stdout.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Columns padded to their widest cell, two spaces apart; the last column
/// is not padded, so no line ends in spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `items` of a page answer; anything else is not the API's answer.
pub fn items(page: &Value) -> crate::failure::Result<&Vec<Value>> {
    page["items"].as_array().ok_or_else(|| {
        crate::failure::Failure::failed("the server's answer has no list of items (is it an OTA server?)")
    })
}

/// `key  value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:width$}  {value}\n").replace(" \n", "\n"))
        .collect()
}

/// `1.5 MiB`.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0)),
        n if n >= 1024.0 * 1024.0 => format!("{:.1} MiB", n / (1024.0 * 1024.0)),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}

/// `2026-11-27 15:04:05` (UTC), from the API's RFC 3339 text.
pub fn time(value: &Value) -> String {
    match value.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S").to_string(),
        None => "-".into(),
    }
}

/// A string, number or bool field as text; `-` when absent or null.
/// Control characters (a device's error message may hold any) are shown
/// as `�`, so no answer can move the cursor or retitle the terminal;
/// line breaks are kept for multi-line notes.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s
            .chars()
            .map(|c| if c.is_control() && c != '\n' { '\u{FFFD}' } else { c })
            .collect(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// The first line of a text, cut to `max` characters.
pub fn short(value: &Value, max: usize) -> String {
    let full = text(value);
    let line = full.lines().next().unwrap_or("");
    if line.chars().count() > max || full.lines().nth(1).is_some() {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// Tells a human that the list goes on, and how to see more.
pub fn page_note(page: &Value, offset: i64, shown: usize) {
    let total = page["total"].as_i64().unwrap_or(0);
    if shown == 0 && total == 0 {
        eprintln!("Nothing matches.");
    } else if shown == 0 {
        eprintln!("Nothing at offset {offset}: {total} match.");
    } else if offset + (shown as i64) < total {
        eprintln!(
            "Showing {}-{} of {total}; see more with --offset {}.",
            offset + 1,
            offset + shown as i64,
            offset + shown as i64
        );
    }
}

/// Prints a page of a list: the API's answer with `--json`, else a table of
/// one row per item and a note on paging.
pub fn print_page(
    page: &Value,
    json: bool,
    offset: i64,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> crate::failure::Result<()> {
    if json {
        print_json(page);
        return Ok(());
    }
    let items = items(page)?;
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    print!("{}", table(headers, &rows));
    page_note(page, offset, items.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns_and_end_lines_cleanly() {
        let out = table(
            &["ID", "VERSION", "NOTES"],
            &[
                vec!["1".into(), "1.0.0".into(), "first".into()],
                vec!["12".into(), "1.10.0-rc.1".into(), "".into()],
            ],
        );
        assert_eq!(out, "ID  VERSION      NOTES\n1   1.0.0        first\n12  1.10.0-rc.1\n");
    }

    #[test]
    fn values_read_as_humans_expect() {
        assert_eq!(bytes(1_572_864), "1.5 MiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(time(&json!("2026-11-27T15:04:05Z")), "2026-11-27 15:04:05");
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&json!(true)), "yes");
        assert_eq!(short(&json!("line one\nline two"), 40), "line one…");
        assert_eq!(short(&json!("abcdef"), 4), "abc…");
        assert_eq!(
            text(&json!("bad\u{1b}]0;owned\u{7}\u{1b}[2J")),
            "bad\u{FFFD}]0;owned\u{FFFD}\u{FFFD}[2J"
        );
        assert_eq!(text(&json!("two\nlines\r")), "two\nlines\u{FFFD}");
    }
}
