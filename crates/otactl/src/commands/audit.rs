//! `otactl audit`: the admin API's audit log, newest first.

use serde_json::Value;

use super::Ctx;
use super::logs::parse_since;
use crate::cli::AuditArgs;
use crate::failure::Result;
use crate::output;

pub fn audit(ctx: &Ctx, args: AuditArgs) -> Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let mut query = vec![
        ("limit", args.page.limit.to_string()),
        ("offset", args.page.offset.to_string()),
    ];
    for (key, value) in [
        ("actor", args.actor),
        ("action", args.action),
        ("target_type", args.target_type),
        ("target_id", args.target_id),
    ] {
        if let Some(value) = value {
            query.push((key, value));
        }
    }
    if let Some(since) = since {
        query.push(("since", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    let page = ctx.api()?.get("/api/ota/admin/audit", &query)?;
    output::print_page(
        &page,
        ctx.json(),
        args.page.offset,
        &["ID", "TIME (UTC)", "ACTOR", "ACTION", "TARGET", "DETAIL"],
        |entry| {
            vec![
                output::text(&entry["id"]),
                output::time(&entry["at"]),
                output::text(&entry["actor"]),
                output::text(&entry["action"]),
                match &entry["target_id"] {
                    Value::Null => output::text(&entry["target_type"]),
                    id => format!("{} {}", output::text(&entry["target_type"]), output::text(id)),
                },
                detail(entry),
            ]
        },
    )
}

/// The one thing worth a glance in an entry's `after`: a reason, a state, a
/// count of members changed.
fn detail(entry: &Value) -> String {
    let after = &entry["after"];
    let mut parts = Vec::new();
    if let Some(state) = after["state"].as_str() {
        parts.push(output::text(&Value::from(state)));
    }
    for key in ["added", "removed"] {
        if let Some(n) = after[key].as_i64() {
            parts.push(format!("{key} {n}"));
        }
    }
    for key in ["reason", "recall_reason", "state_reason"] {
        if after[key].is_string() {
            parts.push(output::short(&after[key], 60));
            break;
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_detail_is_a_state_a_count_or_a_reason() {
        let paused = json!({"after": {"state": "paused", "stage": 0, "reason": "battery drain"}});
        assert_eq!(detail(&paused), "paused: battery drain");
        let added = json!({"after": {"asked": {}, "added": 3, "members": 5}});
        assert_eq!(detail(&added), "added 3");
        assert_eq!(detail(&json!({"after": null})), "");
    }
}
