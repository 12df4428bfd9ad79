//! `otactl rollout …`: create staged rollouts, list them, watch one, and
//! pause, resume, abort or advance it.

mod view;

use std::io::{IsTerminal, Write};

pub use ota_core::rollout::Action;
use ota_core::wire::{NewRollout, PolicyRequest, Rollout, RolloutActionRequest, VariantRequest};
use serde_json::Value;

use super::{Ctx, body_of, decode, logs};
use crate::api::Api;
use crate::cli::{RolloutActionArgs, RolloutCreateArgs, RolloutListArgs, RolloutStatusArgs};
use crate::failure::Result;
use crate::output::{self, print_json};

const ROLLOUTS: &str = "/api/ota/admin/rollouts";

pub fn create(ctx: &Ctx, args: RolloutCreateArgs) -> Result<()> {
    let policy = PolicyRequest {
        min_successes: args.min_successes,
        soak_seconds: args.soak.map(|soak| soak.as_secs() as i64),
        max_failure_rate: args.max_failure_rate.map(i64::from),
        min_finished: args.min_finished,
    };
    let any_policy = policy.min_successes.is_some()
        || policy.soak_seconds.is_some()
        || policy.max_failure_rate.is_some()
        || policy.min_finished.is_some();
    let request = NewRollout {
        firmware_id: args.firmware_id,
        name: args.name,
        groups: args.groups,
        stages: args
            .stages
            .map(|stages| stages.as_slice().iter().map(|p| i64::from(p.get())).collect()),
        policy: any_policy.then_some(policy),
        variant: args
            .variant
            .zip(args.variant_percent)
            .map(|(firmware_id, percent)| VariantRequest {
                firmware_id,
                percent: i64::from(percent),
            }),
    };
    let answer = ctx.api()?.post(ROLLOUTS, &body_of(&request)?)?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let rollout: Rollout = decode(&answer, "a rollout")?;
    println!(
        "Created rollout {} of firmware {} ({} {}).",
        rollout.id, rollout.firmware_id, rollout.device_type, rollout.version
    );
    print!("{}", view::render(&rollout));
    println!("Watch it with: otactl rollout status {} --watch", rollout.id);
    Ok(())
}

pub fn list(ctx: &Ctx, args: RolloutListArgs) -> Result<()> {
    let mut query = vec![
        ("limit", args.page.limit.to_string()),
        ("offset", args.page.offset.to_string()),
    ];
    if let Some(state) = args.state {
        query.push(("state", state.as_str().to_owned()));
    }
    if let Some(device_type) = &args.device_type {
        query.push(("device_type", device_type.clone()));
    }
    if let Some(firmware_id) = args.firmware_id {
        query.push(("firmware_id", firmware_id.to_string()));
    }
    let page = ctx.api()?.get(ROLLOUTS, &query)?;
    output::print_page(
        &page,
        ctx.json(),
        args.page.offset,
        &[
            "ID",
            "NAME",
            "DEVICE TYPE",
            "FIRMWARE",
            "STATE",
            "STAGE",
            "OFFERED",
            "SUCCEEDED",
            "FAILED",
            "CREATED (UTC)",
        ],
        list_row,
    )
}

fn list_row(r: &Value) -> Vec<String> {
    let stages = r["stages"].as_array().map_or(0, Vec::len);
    let firmware = match r["variant"]["firmware_id"].as_i64() {
        Some(variant) => format!(
            "{} {} (b: {variant})",
            output::text(&r["firmware_id"]),
            output::text(&r["version"])
        ),
        None => format!("{} {}", output::text(&r["firmware_id"]), output::text(&r["version"])),
    };
    let failed = r["totals"]["failed"].as_u64().unwrap_or(0) + r["totals"]["rolled_back"].as_u64().unwrap_or(0);
    vec![
        output::text(&r["id"]),
        output::short(&r["name"], 30),
        output::text(&r["device_type"]),
        firmware,
        output::text(&r["state"]),
        format!(
            "{}/{stages} at {} %",
            r["stage"].as_u64().map_or(0, |stage| stage + 1),
            output::text(&r["percent"])
        ),
        output::text(&r["totals"]["offered"]),
        output::text(&r["totals"]["succeeded"]),
        failed.to_string(),
        output::time(&r["created_at"]),
    ]
}

pub fn status(ctx: &Ctx, args: RolloutStatusArgs) -> Result<()> {
    let api = ctx.api()?;
    if args.watch {
        return watch(ctx, &api, args.id, args.interval);
    }
    let answer = api.get(&path_of(args.id), &[])?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let rollout: Rollout = decode(&answer, "a rollout")?;
    print!("{}", view::render(&rollout));
    Ok(())
}

/// Prints the rollout, then again each time it changes, until it is over
/// (completed or aborted). On a terminal each print replaces the last; with
/// `--json`, one JSON object per line.
fn watch(ctx: &Ctx, api: &Api, id: i64, interval: std::time::Duration) -> Result<()> {
    let terminal = !ctx.json() && std::io::stdout().is_terminal();
    let mut last: Option<Value> = None;
    let mut failing = false;
    loop {
        let answer = match api.get(&path_of(id), &[]) {
            Ok(answer) => {
                if failing {
                    eprintln!("otactl: the server answers again");
                    failing = false;
                }
                answer
            }
            // As `logs --follow`: the first answer decides, later blips are waited out.
            Err(failure) if last.is_none() => return Err(failure),
            Err(failure) if logs::passing(&failure) => {
                if !failing {
                    eprintln!("{failure} (retrying every {})", logs::humanize(interval));
                    failing = true;
                }
                std::thread::sleep(interval);
                continue;
            }
            Err(refused) => return Err(refused),
        };
        let rollout: Rollout = decode(&answer, "a rollout")?;
        if last.as_ref() != Some(&answer) {
            let text = if ctx.json() {
                format!("{answer}\n")
            } else if terminal {
                format!("\x1b[H\x1b[2J{}", view::render(&rollout))
            } else if last.is_some() {
                format!("\n{}", view::render(&rollout))
            } else {
                view::render(&rollout)
            };
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) ends the watch quietly.
            if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
                return Ok(());
            }
            last = Some(answer);
        }
        if rollout.state.is_final() {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

pub fn act(ctx: &Ctx, args: RolloutActionArgs, action: Action) -> Result<()> {
    let request = RolloutActionRequest { reason: args.reason };
    let path = format!("{}/{}", path_of(args.id), action.as_str());
    let answer = ctx.api()?.post(&path, &body_of(&request)?)?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let rollout: Rollout = decode(&answer, "a rollout")?;
    let done = match action {
        Action::Pause => "paused".to_owned(),
        Action::Resume => "running again".to_owned(),
        Action::Abort => "aborted".to_owned(),
        Action::Advance if rollout.state == ota_core::rollout::RolloutState::Completed => "completed".to_owned(),
        Action::Advance => format!("at stage {}", view::stage_text(&rollout)),
    };
    println!("Rollout {} is {done}.", rollout.id);
    print!("{}", view::render(&rollout));
    Ok(())
}

fn path_of(id: i64) -> String {
    format!("{ROLLOUTS}/{id}")
}
