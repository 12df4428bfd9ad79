//! Fleet control from the command line: `devices` (filters, show, pins,
//! summary), and the usage errors of the fleet commands.

use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::{Value, json};

use crate::common::*;
use crate::publish;

/// The device ids of a page, in order.
pub fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `otactl --json devices list ARGS`, asked again until `ready` holds.
fn devices_until(server: &Server, args: &[&str], ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut list = vec!["devices", "list"];
    list.extend(args);
    loop {
        let page = server.json(&list);
        if ready(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tab5-1 on 1.0.0, tab5-2 and tab5-3 on 1.1.0, other-1 of another type.
pub fn small_fleet(server: &Server) {
    server.check_in("tab5-1", DEVICE_TYPE, "1.0.0");
    server.check_in("tab5-2", DEVICE_TYPE, "1.1.0");
    server.check_in("tab5-3", DEVICE_TYPE, "1.1.0");
    server.check_in("other-1", "other_type", "1.0.0");
    server.wait_for_devices(4);
}

#[test]
fn devices_are_listed_by_every_filter() {
    let server = Server::start();
    small_fleet(&server);

    let list = |args: &[&str]| {
        let mut all = vec!["devices", "list"];
        all.extend(args);
        ids(&server.json(&all))
    };

    assert_eq!(list(&[]), ["other-1", "tab5-1", "tab5-2", "tab5-3"]);
    assert_eq!(
        list(&["--device-type", DEVICE_TYPE, "--version", "1.1.0"]),
        ["tab5-2", "tab5-3"]
    );
    assert_eq!(list(&["-t", "other_type"]), ["other-1"]);
    assert_eq!(list(&["--search", "5-1"]), ["tab5-1"]);
    assert_eq!(list(&["--channel", "stable", "--seen-within-days", "1"]).len(), 4);
    assert!(list(&["--not-seen-days", "1"]).is_empty());
    assert!(list(&["--channel", "beta"]).is_empty());
    assert!(list(&["--pinned"]).is_empty());
    assert_eq!(
        list(&["--not-pinned", "--limit", "2", "--offset", "1"]),
        ["tab5-1", "tab5-2"]
    );
    let table = stdout_of(
        &server
            .otactl()
            .args(["devices", "list", "--version", "1.0.0"])
            .output()
            .unwrap(),
    );
    assert!(table.starts_with("DEVICE ") && table.contains("PINNED"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
}

#[test]
fn a_failed_update_shows_in_the_status_filter_and_the_device_history() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.2.0", &["--stable"]);
    let (offer, token) = server.check_in("tab5-1", DEVICE_TYPE, "1.1.0");
    server.check_in("tab5-2", DEVICE_TYPE, "1.2.0");
    assert_eq!(offer["firmware_id"], firmware["id"], "{offer}");
    server.groups_create("lab");
    server.json(&["groups", "add", "lab", "tab5-1"]);

    server.device_post(
        &token,
        "/api/ota/status",
        json!({"firmware_id": firmware["id"], "status": "failed", "error_message": "download: timed out"}),
    );

    let failed = devices_until(&server, &["--status", "failed"], |page| page["total"] == 1);
    assert_eq!(ids(&failed), ["tab5-1"]);
    assert_eq!(failed["items"][0]["last_error"], "download: timed out");
    let detail = server.json(&["devices", "show", "tab5-1"]);
    assert_eq!(detail["groups"], json!(["lab"]));
    assert_eq!(detail["history"][0]["status"], "failed");
    assert_eq!(detail["history"][0]["failure_reason"], "download");
    let shown = server.otactl().args(["devices", "show", "tab5-1"]).output().unwrap();
    let text = stdout_of(&shown);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.contains("groups          lab"), "{text}");
    assert!(text.contains("last error      download: timed out"), "{text}");
    assert!(text.contains("Update history"), "{text}");
    let row = text.lines().find(|l| l.contains("1.1.0 → 1.2.0")).unwrap_or_default();
    assert!(row.contains("failed") && row.contains("download"), "{text}");
}

#[test]
fn a_device_is_pinned_to_an_older_version_and_unpinned() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let old = publish(&server, dir.path(), "1.0.0", &["--stable"]);
    let new = publish(&server, dir.path(), "1.1.0", &["--stable"]);
    server.check_in("tab5-1", DEVICE_TYPE, "1.1.0");
    server.check_in("tab5-2", DEVICE_TYPE, "1.1.0");
    server.wait_for_devices(2);

    let pinned = server.json(&["devices", "pin", "tab5-1", "--version", "1.0.0"]);

    assert_eq!(pinned["pinned_firmware_id"], old["id"]);
    assert_eq!(ids(&server.json(&["devices", "list", "--pinned"])), ["tab5-1"]);
    assert_eq!(ids(&server.json(&["devices", "list", "--not-pinned"])), ["tab5-2"]);
    let (offer, _) = server.check_in("tab5-1", DEVICE_TYPE, "1.1.0");
    assert_eq!(offer["firmware_id"], old["id"], "{offer}");
    assert_eq!(offer["is_downgrade"], true, "{offer}");
    server
        .otactl()
        .args(["devices", "pin", "tab5-2", "--firmware-id", &new["id"].to_string()])
        .assert()
        .success()
        .stdout(predicate::str::contains("Pinned tab5-2 to firmware").and(predicate::str::contains("pinned to")));
    let summary = server.json(&["devices", "summary", "-t", DEVICE_TYPE]);
    assert_eq!(summary["items"][0]["pinned"], 2, "{summary}");

    let unpinned = server.json(&["devices", "unpin", "tab5-1"]);

    assert_eq!(unpinned["pinned_firmware_id"], Value::Null);
    assert_eq!(ids(&server.json(&["devices", "list", "--pinned"])), ["tab5-2"]);
}

#[test]
fn a_pin_the_server_refuses_is_exit_code_1_with_its_reason() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let other = publish(&server, dir.path(), "0.9.0", &[]);
    server.check_in("other-1", "other_type", "1.0.0");
    server.wait_for_devices(1);

    server
        .otactl()
        .args(["devices", "pin", "other-1", "--firmware-id", &other["id"].to_string()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Conflict (HTTP 409)").and(predicate::str::contains("other_type")));
    server
        .otactl()
        .args(["devices", "pin", "nobody", "--version", "1.0.0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 404").and(predicate::str::contains("nobody")));
}

#[test]
fn the_fleet_summary_counts_devices_per_version_and_status() {
    let server = Server::start();
    small_fleet(&server);

    let summary = server.json(&["devices", "summary"]);

    assert_eq!(summary["total"], 2, "one per device type: {summary}");
    let tab5 = summary["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["device_type"] == DEVICE_TYPE)
        .unwrap();
    assert_eq!(tab5["devices"], 3);
    assert_eq!(tab5["by_version"], json!({"1.0.0": 1, "1.1.0": 2}));
    assert_eq!(tab5["not_seen_days"], 7);
    assert_eq!(tab5["not_seen"], 0);
    let only = server.json(&["devices", "summary", "-t", "other_type", "--not-seen-days", "0"]);
    assert_eq!(only["total"], 1);
    assert_eq!(only["items"][0]["not_seen"], 1, "seen before now: {only}");
    let text = stdout_of(&server.otactl().args(["devices", "summary"]).output().unwrap());
    assert!(
        text.contains("scales_bridge_tab5: 3 devices, 0 not seen for 7 days, 0 pinned"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("1.1.0"))
        .unwrap_or_default();
    assert!(row.contains(" 2 ") && row.ends_with("67 %"), "{text}");
}

#[test]
fn bad_fleet_arguments_are_exit_code_2_before_anything_is_sent() {
    let server = Server::start();
    // Nothing listens here: a command that sent anything would end with 3.
    let dead = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    };

    for args in [
        vec!["devices", "list", "--version", "one"],
        vec!["devices", "list", "--status", "exploded"],
        vec!["devices", "list", "--group", "Beta Testers"],
        vec!["devices", "list", "--pinned", "--not-pinned"],
        vec!["devices", "list", "--not-seen-days", "-1"],
        vec!["devices", "pin", "tab5-1"],
        vec!["devices", "pin", "tab5-1", "--firmware-id", "1", "--version", "1.0.0"],
        vec!["devices", "pin", "..", "--version", "1.0.0"],
        vec!["devices", "summary", "-t", "../etc"],
        vec!["groups", "create", "Beta!"],
        vec!["groups", "set", "beta"],
        vec!["groups", "set", "beta", "--description", "x", "--no-description"],
        vec!["groups", "add", "beta"],
        vec!["groups", "add", "beta", "tab5-1", "--device-type", DEVICE_TYPE],
        vec!["groups", "remove", "beta", "tab5-1", "--search", "tab5"],
        vec!["groups", "remove", "beta"],
        vec!["groups", "add", "beta", "has space"],
        vec!["firmware", "set", "1", "--groups", "Not A Group"],
        vec!["firmware", "recall"],
        vec!["audit", "--since", "last tuesday"],
        vec!["audit", "--limit", "0"],
    ] {
        let output = server.otactl().env("OTA_SERVER", &dead).args(&args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    server
        .otactl()
        .env("OTA_SERVER", &dead)
        .args(["groups", "add", "beta", "tab5-1", "--search", "tab5"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not both"));
}

#[test]
fn the_new_commands_and_aliases_have_examples() {
    let server = Server::start();
    for args in [
        vec!["devices", "--help"],
        vec!["devices", "list", "--help"],
        vec!["devices", "pin", "--help"],
        vec!["devices", "summary", "--help"],
        vec!["groups", "--help"],
        vec!["groups", "add", "--help"],
        vec!["group", "remove", "--help"],
        vec!["rollout", "create", "--help"],
        vec!["rollouts", "show", "--help"],
        vec!["firmware", "recall", "--help"],
        vec!["audit", "--help"],
    ] {
        server
            .bare_otactl()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}
