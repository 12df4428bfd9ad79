//! `otactl groups`: named sets of devices, by id and by filter, their
//! refusals, and the audit log that names who changed them.

use predicates::prelude::*;
use serde_json::json;

use crate::common::*;
use crate::fleet::{ids, small_fleet};
use crate::publish;

#[test]
fn groups_take_devices_by_id_and_by_filter() {
    let server = Server::start();
    small_fleet(&server);

    server
        .otactl()
        .args(["groups", "create", "beta-testers", "--description", "Staff units"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Created group beta-testers."));
    let by_id = server.json(&["groups", "add", "beta-testers", "tab5-1", "not-yet-seen"]);
    assert_eq!(by_id, json!({"group": "beta-testers", "changed": 2, "members": 2}));
    server
        .otactl()
        .args(["groups", "add", "beta-testers", "-t", DEVICE_TYPE, "--version", "1.1.0"])
        .assert()
        .success()
        .stdout("Added 2 devices to beta-testers; it has 4 members.\n");

    let list = stdout_of(&server.otactl().args(["groups", "list"]).output().unwrap());
    let row = list.lines().find(|l| l.starts_with("beta-testers")).unwrap_or_default();
    assert!(row.contains(" 4 ") && row.ends_with("Staff units"), "{list}");
    assert_eq!(
        ids(&server.json(&["groups", "members", "beta-testers"])),
        ["tab5-1", "tab5-2", "tab5-3"],
        "members that checked in"
    );
    assert_eq!(
        ids(&server.json(&["devices", "list", "--group", "beta-testers", "--version", "1.1.0"])),
        ["tab5-2", "tab5-3"]
    );

    let removed = server.json(&["groups", "remove", "beta-testers", "--search", "tab5-3"]);
    assert_eq!(removed["changed"], 1);
    server
        .otactl()
        .args(["groups", "remove", "beta-testers", "not-yet-seen"])
        .assert()
        .success()
        .stdout("Removed 1 device from beta-testers; it has 2 members.\n");
    let changed = server.json(&["groups", "set", "beta-testers", "--description", "Opted in"]);
    assert_eq!(changed["description"], "Opted in");
    assert_eq!(server.json(&["groups", "show", "beta-testers"])["members"], 2);

    server
        .otactl()
        .args(["groups", "delete", "beta-testers"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Deleted group beta-testers"));
    server
        .otactl()
        .args(["groups", "show", "beta-testers"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 404").and(predicate::str::contains("beta-testers")));
}

#[test]
fn a_group_in_use_or_taken_is_refused_with_the_problem_detail() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.0.0", &[]);
    server.groups_create("lab");
    server.json(&["firmware", "set", &firmware["id"].to_string(), "--groups", "lab"]);

    server
        .otactl()
        .args(["groups", "create", "lab"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Conflict (HTTP 409)").and(predicate::str::contains("lab")));
    let refused = server
        .otactl()
        .args(["--json", "groups", "delete", "lab"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let problem = json_of(&refused);
    assert_eq!(problem["status"], 409);
    assert!(problem["detail"].as_str().unwrap().contains("lab"), "{problem}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(problem["detail"].as_str().unwrap()), "{stderr}");
}

#[test]
fn the_audit_log_names_the_token_behind_each_change() {
    let alice = "alice-token-3f9a1c0e7b5d2846";
    let server = Server::start_with(&[("OTA_ADMIN_TOKENS", &format!("alice:{alice}"))]);
    server
        .otactl()
        .env("OTA_ADMIN_TOKEN", alice)
        .args(["groups", "create", "by-alice"])
        .assert()
        .success();
    server.groups_create("by-admin");

    let page = server.json(&["audit", "--target-type", "group"]);

    let actions: Vec<(String, String, String)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin".into(), "group.create".into(), "by-admin".into()),
            ("alice".into(), "group.create".into(), "by-alice".into()),
        ],
        "newest first"
    );
    let mine = server.json(&["audit", "--actor", "alice"]);
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["items"][0]["after"]["name"], "by-alice");
    let table = stdout_of(&server.otactl().args(["audit", "--since", "1h"]).output().unwrap());
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("alice") && l.contains("group.create") && l.contains("group by-alice")),
        "{table}"
    );
    assert_eq!(server.json(&["audit", "--since", "2999-01-01T00:00:00Z"])["total"], 0);
    assert_eq!(
        server.json(&["audit", "--action", "group.create", "--limit", "1"])["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
