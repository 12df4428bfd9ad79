//! What `firmware recall` and `firmware set --groups` do to the offers a
//! fleet gets.

use predicates::prelude::*;
use serde_json::json;

use crate::common::*;
use crate::publish;
use crate::rollouts::create_rollout;

#[test]
fn a_recalled_firmware_is_never_offered_and_its_devices_go_back() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let good = publish(&server, dir.path(), "1.0.0", &["--stable"]);
    let bad = publish(&server, dir.path(), "1.1.0", &["--stable"]);
    let rollout = create_rollout(&server, &bad, &["--stages", "100"])["id"].to_string();
    let bad_id = bad["id"].to_string();

    server
        .otactl()
        .args(["firmware", "recall", &bad_id, "--reason", "boot loop on v1.0 units"])
        .assert()
        .success()
        .stdout(predicate::str::contains("is recalled").and(predicate::str::contains("boot loop on v1.0 units")));

    let shown = server.json(&["firmware", "show", &bad_id]);
    assert!(shown["recalled_at"].is_string(), "{shown}");
    assert_eq!(shown["recall_reason"], "boot loop on v1.0 units");
    let (back, _) = server.check_in("tab5-1", DEVICE_TYPE, "1.1.0");
    assert_eq!(back["firmware_id"], good["id"], "{back}");
    assert_eq!(back["is_downgrade"], true, "{back}");
    let (stays, _) = server.check_in("tab5-2", DEVICE_TYPE, "1.0.0");
    assert_eq!(stays["update_available"], false, "{stays}");
    assert_eq!(server.json(&["rollout", "status", &rollout])["state"], "halted");
    let list = stdout_of(&server.otactl().args(["firmware", "list"]).output().unwrap());
    let row = list.lines().find(|l| l.contains("1.1.0")).unwrap_or_default();
    assert!(row.contains("recalled"), "{list}");
    server
        .otactl()
        .args(["firmware", "recall", &bad_id])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Conflict (HTTP 409)").and(predicate::str::contains("recalled already")));
    let audit = server.json(&["audit", "--action", "firmware.recall"]);
    assert_eq!(audit["total"], 1);
    assert_eq!(audit["items"][0]["actor"], "admin");
    assert_eq!(audit["items"][0]["target_id"], bad_id.as_str());
}

#[test]
fn a_firmware_targets_groups_and_then_everyone_again() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.0.0", &[]);
    let id = firmware["id"].to_string();
    server.groups_create("lab");
    server.groups_create("beta");

    let targeted = server.json(&["firmware", "set", &id, "--groups", "lab,beta"]);
    assert_eq!(targeted["target_groups"], json!(["lab", "beta"]));
    server
        .otactl()
        .args(["firmware", "show", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains("lab, beta"));

    let everyone = server.json(&["firmware", "set", &id, "--target-groups", ""]);
    assert_eq!(everyone["target_groups"], json!([]));
    server
        .otactl()
        .args(["firmware", "set", &id, "--groups", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 404").and(predicate::str::contains("nope")));
}
