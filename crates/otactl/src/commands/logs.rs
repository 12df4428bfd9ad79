//! `otactl logs`: the fleet's update attempts, and `--follow` to watch them
//! start and move.

use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Ctx;
use crate::api::Api;
use crate::cli::LogsArgs;
use crate::failure::{Failure, Result};
use crate::output;

const HEADERS: [&str; 8] = [
    "ID",
    "DEVICE",
    "FIRMWARE",
    "FROM → TO",
    "STATUS",
    "PROGRESS",
    "UPDATED (UTC)",
    "ERROR",
];

pub fn logs(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    if let Some(status) = &args.status {
        status
            .parse::<ota_core::OtaStatus>()
            .map_err(|e| Failure::usage(format!("--status: {e}")))?;
    }
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let mut query = Vec::new();
    if let Some(device_id) = &args.device_id {
        query.push(("device_id", device_id.clone()));
    }
    if let Some(firmware_id) = args.firmware_id {
        query.push(("firmware_id", firmware_id.to_string()));
    }
    if let Some(status) = &args.status {
        query.push(("status", status.clone()));
    }
    if let Some(since) = since {
        query.push(("since", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    let api = ctx.api()?;
    if args.follow {
        return follow(ctx, &api, query, args.limit, args.interval);
    }
    query.push(("limit", args.limit.to_string()));
    query.push(("offset", args.offset.to_string()));
    let page = api.get("/api/ota/admin/logs", &query)?;
    output::print_page(&page, ctx.json(), args.offset, &HEADERS, row)
}

/// Prints the newest `limit` rows, oldest first, then every row that
/// appears or changes, until interrupted. With `--json`, one JSON object per
/// line (NDJSON). Watches the newest 500 rows matching the filter.
fn follow(
    ctx: &Ctx,
    api: &Api,
    mut query: Vec<(&'static str, String)>,
    limit: i64,
    interval: std::time::Duration,
) -> Result<()> {
    query.push(("limit", "500".into()));
    let mut seen: HashMap<i64, Value> = HashMap::new();
    let mut first = true;
    let mut failing = false;
    loop {
        let page = match api.get("/api/ota/admin/logs", &query) {
            Ok(page) => {
                if failing {
                    eprintln!("otactl: the server answers again");
                    failing = false;
                }
                page
            }
            // The first answer decides whether we can follow at all; later
            // a restart or a network blip must not end the watch.
            Err(failure) if first => return Err(failure),
            Err(failure) if passing(&failure) => {
                if !failing {
                    eprintln!("{failure} (retrying every {})", humanize(interval));
                    failing = true;
                }
                std::thread::sleep(interval);
                continue;
            }
            Err(refused) => return Err(refused),
        };
        let mut items = output::items(&page)?.clone();
        items.reverse();
        if first {
            let skip = items.len().saturating_sub(limit as usize);
            for item in &items[..skip] {
                seen.insert(item["id"].as_i64().unwrap_or(0), changing_part(item));
            }
            items.drain(..skip);
            if !ctx.json() {
                print!("{}", follow_line(&HEADERS.map(String::from)));
            }
        }
        let mut out = std::io::stdout().lock();
        for item in items {
            let id = item["id"].as_i64().unwrap_or(0);
            let now = changing_part(&item);
            if seen.get(&id) == Some(&now) {
                continue;
            }
            seen.insert(id, now);
            let line = if ctx.json() {
                format!("{item}\n")
            } else {
                follow_line(&row(&item))
            };
            // A closed pipe (`| head`) ends the watch quietly.
            if out.write_all(line.as_bytes()).and_then(|_| out.flush()).is_err() {
                return Ok(());
            }
        }
        first = false;
        std::thread::sleep(interval);
    }
}

/// A failure that a watch waits out: no answer, an odd answer, a server
/// that is not ready (5xx) or asks us to slow down (429).
pub(super) fn passing(failure: &Failure) -> bool {
    match failure {
        Failure::Unreachable(_) | Failure::Failed(_) => true,
        Failure::Refused(problem) => problem.status >= 500 || problem.status == 429,
        Failure::Usage(_) => false,
    }
}

/// What a later poll compares to decide that a row moved.
fn changing_part(item: &Value) -> Value {
    serde_json::json!([
        item["status"],
        item["progress"],
        item["updated_at"],
        item["error_message"]
    ])
}

/// Rows of a follow cannot be aligned to widths known in advance: fixed
/// widths that fit typical ids and versions.
fn follow_line(cells: &[String]) -> String {
    const WIDTHS: [usize; 7] = [7, 20, 8, 20, 11, 8, 19];
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        match WIDTHS.get(i) {
            Some(width) => line.push_str(&format!("{cell:width$}  ")),
            None => line.push_str(cell),
        }
    }
    format!("{}\n", line.trim_end())
}

fn row(log: &Value) -> Vec<String> {
    vec![
        output::text(&log["id"]),
        output::text(&log["device_id"]),
        output::text(&log["firmware_id"]),
        format!(
            "{} → {}",
            output::text(&log["from_version"]),
            output::text(&log["to_version"])
        ),
        output::text(&log["status"]),
        match log["progress"].as_i64() {
            Some(p) => format!("{p} %"),
            None => "-".into(),
        },
        output::time(&log["updated_at"]),
        if log["error_message"].is_null() {
            String::new()
        } else {
            output::short(&log["error_message"], 60)
        },
    ]
}

/// `--since`: a duration back from now (`30m`, `1h`, `7d`) or an RFC 3339 time.
pub(super) fn parse_since(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let back = ota_core::units::parse_duration(text).map_err(|e| {
        Failure::usage(format!(
            "--since `{text}` is neither a duration like 1h nor a time like 2026-11-27T15:04:05Z ({e})"
        ))
    })?;
    let back =
        chrono::Duration::from_std(back).map_err(|_| Failure::usage(format!("--since `{text}` is too long ago")))?;
    Utc::now()
        .checked_sub_signed(back)
        .ok_or_else(|| Failure::usage(format!("--since `{text}` is too long ago")))
}

pub(super) fn humanize(interval: std::time::Duration) -> String {
    format!("{:.1?}", interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let hour_ago = parse_since("1h").unwrap();
        let expected = Utc::now() - chrono::Duration::hours(1);
        assert!((hour_ago - expected).num_seconds().abs() < 5);
        assert_eq!(
            parse_since("2026-11-27T15:04:05Z").unwrap().to_rfc3339(),
            "2026-11-27T15:04:05+00:00"
        );
        assert_eq!(parse_since("yesterday").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_row_changes_when_its_status_or_progress_does() {
        let a = serde_json::json!({"id": 1, "status": "downloading", "progress": 10, "updated_at": "t1"});
        let b = serde_json::json!({"id": 1, "status": "downloading", "progress": 20, "updated_at": "t2"});
        assert_ne!(changing_part(&a), changing_part(&b));
        assert_eq!(changing_part(&a), changing_part(&a.clone()));
    }
}
