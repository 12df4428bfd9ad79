//! `otactl groups …`: named static sets of devices, and their members.

use ota_core::wire::{GroupPatch, MembersChange, MembersChanged, NewGroup};
use serde_json::Value;

use super::device::{DEVICE_HEADERS, device_row};
use super::{Ctx, body_of, decode};
use crate::cli::{GroupCreateArgs, GroupMembersArgs, GroupSetArgs, MembersChangeArgs, PageArgs};
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};

const GROUPS: &str = "/api/ota/admin/groups";

/// Whether `groups add` or `groups remove` was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
}

pub fn create(ctx: &Ctx, args: GroupCreateArgs) -> Result<()> {
    let request = NewGroup {
        name: args.name,
        description: args.description,
    };
    let group = ctx.api()?.post(GROUPS, &body_of(&request)?)?;
    report(ctx, &group, "Created group")
}

pub fn list(ctx: &Ctx, args: PageArgs) -> Result<()> {
    let query = [("limit", args.limit.to_string()), ("offset", args.offset.to_string())];
    let page = ctx.api()?.get(GROUPS, &query)?;
    output::print_page(
        &page,
        ctx.json(),
        args.offset,
        &["NAME", "MEMBERS", "UPDATED (UTC)", "DESCRIPTION"],
        |g| {
            vec![
                output::text(&g["name"]),
                output::text(&g["members"]),
                output::time(&g["updated_at"]),
                output::short(&g["description"], 60),
            ]
        },
    )
}

pub fn show(ctx: &Ctx, name: &str) -> Result<()> {
    let group = ctx.api()?.get(&path_of(name), &[])?;
    if ctx.json() {
        print_json(&group);
    } else {
        print!("{}", describe(&group));
    }
    Ok(())
}

pub fn set(ctx: &Ctx, args: GroupSetArgs) -> Result<()> {
    // An absent description clears it too: the patch always names it.
    let patch = GroupPatch {
        description: Some(args.description),
    };
    let group = ctx.api()?.patch(&path_of(&args.name), &body_of(&patch)?)?;
    report(ctx, &group, "Updated group")
}

pub fn delete(ctx: &Ctx, name: &str) -> Result<()> {
    let group = ctx.api()?.delete(&path_of(name))?;
    if ctx.json() {
        print_json(&group);
    } else {
        println!(
            "Deleted group {} and its {} memberships.",
            output::text(&group["name"]),
            output::text(&group["members"])
        );
    }
    Ok(())
}

pub fn members(ctx: &Ctx, args: GroupMembersArgs) -> Result<()> {
    let query = [
        ("limit", args.page.limit.to_string()),
        ("offset", args.page.offset.to_string()),
    ];
    let page = ctx.api()?.get(&format!("{}/members", path_of(&args.name)), &query)?;
    output::print_page(&page, ctx.json(), args.page.offset, &DEVICE_HEADERS, device_row)
}

/// Adds or removes devices by id or by filter: exactly one of the two.
pub fn change_members(ctx: &Ctx, args: MembersChangeArgs, change: Change) -> Result<()> {
    let filter = args.filter.to_filter();
    let by_filter = filter != Default::default();
    let request = match (args.device_ids.is_empty(), by_filter) {
        (false, false) => {
            for device_id in &args.device_ids {
                ota_core::DeviceId::parse(device_id)
                    .map_err(|e| Failure::usage(format!("DEVICE_ID `{device_id}`: {e}")))?;
            }
            MembersChange {
                device_ids: Some(args.device_ids),
                filter: None,
            }
        }
        (true, true) => MembersChange {
            device_ids: None,
            filter: Some(filter),
        },
        (false, true) => {
            return Err(Failure::usage(
                "give device ids or filter options (--device-type, --version, …), not both",
            ));
        }
        (true, false) => {
            return Err(Failure::usage(
                "give the devices: their ids, or filter options such as --device-type or --search (see --help)",
            ));
        }
    };
    let path = match change {
        Change::Add => format!("{}/members", path_of(&args.name)),
        Change::Remove => format!("{}/members/remove", path_of(&args.name)),
    };
    let answer = ctx.api()?.post(&path, &body_of(&request)?)?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let changed: MembersChanged = decode(&answer, "a membership change")?;
    let devices = |n: i64| {
        if n == 1 {
            "1 device".to_owned()
        } else {
            format!("{n} devices")
        }
    };
    match change {
        Change::Add => println!(
            "Added {} to {}; it has {} members.",
            devices(changed.changed),
            changed.group,
            changed.members
        ),
        Change::Remove => println!(
            "Removed {} from {}; it has {} members.",
            devices(changed.changed),
            changed.group,
            changed.members
        ),
    }
    Ok(())
}

/// The path of one group; a checked name needs no escaping.
fn path_of(name: &str) -> String {
    format!("{GROUPS}/{name}")
}

fn report(ctx: &Ctx, group: &Value, what: &str) -> Result<()> {
    if ctx.json() {
        print_json(group);
    } else {
        println!("{what} {}.", output::text(&group["name"]));
        print!("{}", describe(group));
    }
    Ok(())
}

fn describe(g: &Value) -> String {
    output::fields(&[
        ("name", output::text(&g["name"])),
        ("description", output::text(&g["description"])),
        ("members", output::text(&g["members"])),
        ("created", output::time(&g["created_at"])),
        ("updated", output::time(&g["updated_at"])),
    ])
}
