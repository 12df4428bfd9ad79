//! A rollout as people read it: where it is and why, its policy, a row per
//! stage, and for an A/B test a row per arm.

use std::collections::BTreeMap;

use ota_core::rollout::{Counts, Policy};
use ota_core::wire::{ArmProgress, Rollout};
use serde_json::json;

use crate::output;

/// `2/4 at 10 %`: the current stage, counted from 1, of all stages.
pub fn stage_text(r: &Rollout) -> String {
    format!("{}/{} at {} %", r.stage + 1, r.stages.len(), r.percent)
}

/// The whole status: fields, the stage table and, with a variant, the arms.
pub fn render(r: &Rollout) -> String {
    let mut pairs = vec![
        (
            "rollout",
            match &r.name {
                Some(name) => format!("{} ({})", r.id, output::text(&json!(name))),
                None => r.id.to_string(),
            },
        ),
        (
            "firmware",
            format!("{} ({} {})", r.firmware_id, r.device_type, r.version),
        ),
    ];
    if let Some(variant) = &r.variant {
        let version = r
            .arms
            .iter()
            .find(|arm| arm.firmware_id == variant.firmware_id)
            .map(|arm| format!(" ({} {})", r.device_type, arm.version))
            .unwrap_or_default();
        pairs.push((
            "variant",
            format!(
                "{}{version}, for {} % of each stage (arm b)",
                variant.firmware_id, variant.percent
            ),
        ));
    }
    pairs.extend([
        (
            "target",
            if r.groups.is_empty() {
                format!("every {} device", r.device_type)
            } else {
                format!("{} devices in {}", r.device_type, r.groups.join(", "))
            },
        ),
        ("state", r.state.as_str().to_owned()),
        (
            "reason",
            r.state_reason
                .as_ref()
                .map_or_else(|| "-".to_owned(), |reason| output::short(&json!(reason), 120)),
        ),
        (
            "stage",
            format!(
                "{} (stages {} %), since {}",
                stage_text(r),
                r.stages.iter().map(u8::to_string).collect::<Vec<_>>().join(", "),
                r.stage_started_at.format("%Y-%m-%d %H:%M:%S")
            ),
        ),
        ("policy", policy_text(&r.policy)),
        ("totals", counts_text(&r.totals)),
    ]);
    if r.variant.is_none()
        && let Some(arm) = r.arms.first()
        && !arm.failure_reasons.is_empty()
    {
        pairs.push(("failure reasons", reasons_text(&arm.failure_reasons)));
    }
    pairs.push((
        "created",
        format!(
            "{} by {}",
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            output::text(&json!(r.created_by))
        ),
    ));
    let mut text = output::fields(&pairs);
    text.push('\n');
    let rows: Vec<Vec<String>> = r
        .progress
        .iter()
        .map(|stage| {
            let mut row = vec![
                (stage.stage + 1).to_string(),
                format!("{} %", stage.percent),
                output::text(&json!(stage.state)),
            ];
            row.extend(count_cells(&stage.counts));
            row.push(rate_text(stage.counts.success_rate()));
            row
        })
        .collect();
    text.push_str(&output::table(
        &[
            "STAGE",
            "PERCENT",
            "STATE",
            "OFFERED",
            "IN PROGRESS",
            "SUCCEEDED",
            "FAILED",
            "ROLLED BACK",
            "SUCCESS RATE",
        ],
        &rows,
    ));
    if r.variant.is_some() {
        text.push('\n');
        let rows: Vec<Vec<String>> = r.arms.iter().map(arm_row).collect();
        text.push_str(&output::table(
            &[
                "ARM",
                "FIRMWARE",
                "VERSION",
                "SHARE",
                "OFFERED",
                "IN PROGRESS",
                "SUCCEEDED",
                "FAILED",
                "ROLLED BACK",
                "SUCCESS RATE",
                "FAILURE REASONS",
            ],
            &rows,
        ));
    }
    text
}

fn arm_row(arm: &ArmProgress) -> Vec<String> {
    let mut row = vec![
        arm.arm.as_str().to_owned(),
        arm.firmware_id.to_string(),
        output::text(&json!(arm.version)),
        format!("{} %", arm.percent),
    ];
    row.extend(count_cells(&arm.counts));
    row.push(rate_text(arm.success_rate));
    row.push(if arm.failure_reasons.is_empty() {
        "-".into()
    } else {
        reasons_text(&arm.failure_reasons)
    });
    row
}

/// Offered, in progress, succeeded, failed, rolled back.
fn count_cells(counts: &Counts) -> Vec<String> {
    vec![
        counts.offered.to_string(),
        counts.in_progress.to_string(),
        counts.succeeded.to_string(),
        counts.failed.to_string(),
        counts.rolled_back.to_string(),
    ]
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1} %"))
}

fn counts_text(c: &Counts) -> String {
    format!(
        "offered {}, in progress {}, succeeded {}, failed {}, rolled back {}",
        c.offered, c.in_progress, c.succeeded, c.failed, c.rolled_back
    )
}

fn reasons_text(reasons: &BTreeMap<String, u64>) -> String {
    let mut reasons: Vec<(&String, &u64)> = reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    reasons
        .into_iter()
        .map(|(reason, n)| format!("{} {n}", output::text(&json!(reason))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `advance after a 1h soak and 10 confirmed updates; halt above 10 %
/// failures once 10 have finished`.
pub fn policy_text(p: &Policy) -> String {
    format!(
        "advance after a {} soak and {} confirmed updates; halt above {} % failures once {} have finished",
        duration_text(p.soak_seconds),
        p.min_successes,
        p.max_failure_rate,
        p.min_finished
    )
}

/// `1h30m`, `45s`, `2d`.
fn duration_text(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")]
        .iter()
        .scan(seconds, |left, (unit, name)| {
            let n = *left / unit;
            *left %= unit;
            Some((n, name))
        })
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n}{name}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_they_are_typed() {
        assert_eq!(duration_text(3600), "1h");
        assert_eq!(duration_text(5400), "1h30m");
        assert_eq!(duration_text(90_061), "1d1h1m1s");
        assert_eq!(duration_text(0), "0s");
    }

    #[test]
    fn the_policy_says_when_a_stage_advances_and_when_it_halts() {
        assert_eq!(
            policy_text(&Policy::default()),
            "advance after a 1h soak and 10 confirmed updates; halt above 10 % failures once 10 have finished"
        );
    }
}
