//! `otactl device list` and `show`: the inventory the server keeps of the
//! devices that check in.

use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::{Value, json};

use crate::common::*;

/// `otactl --json device list …`, asked again until `ready` holds (the
/// server writes check-ins in batches, about once a second).
fn devices_once(server: &Server, args: &[&str], ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = json_of(
            &server
                .otactl()
                .args(["--json", "device", "list"])
                .args(args)
                .output()
                .unwrap(),
        );
        if ready(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_device_that_checked_in_is_listed_with_its_secure_version() {
    let server = Server::start();
    let token = stdout_of(
        &server
            .otactl()
            .args(["device", "token", "tab5-000042", "-t", DEVICE_TYPE])
            .output()
            .unwrap(),
    );
    server.device_post(
        token.trim(),
        "/api/ota/check",
        json!({"device_type": DEVICE_TYPE, "current_version": "1.1.0", "secure_version": 3}),
    );

    let page = devices_once(&server, &["-t", DEVICE_TYPE], |page| page["total"] == 1);

    assert_eq!(page["total"], 1, "{page}");
    let device = &page["items"][0];
    assert_eq!(device["device_id"], "tab5-000042");
    assert_eq!(device["current_version"], "1.1.0");
    assert_eq!(device["secure_version"], 3);
    let other = json_of(
        &server
            .otactl()
            .args(["--json", "device", "list", "-t", "other_type"])
            .output()
            .unwrap(),
    );
    assert_eq!(other["total"], 0);
    let table = stdout_of(&server.otactl().args(["device", "list"]).output().unwrap());
    assert!(table.starts_with("DEVICE ") && table.contains("SECURE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("tab5-000042") && l.contains("1.1.0")),
        "{table}"
    );
    server
        .otactl()
        .args(["device", "show", "tab5-000042"])
        .assert()
        .success()
        .stdout(predicate::str::contains("secure_version  3").and(predicate::str::contains("scales_bridge_tab5")));
}

#[test]
fn a_device_that_never_checked_in_is_not_found() {
    let server = Server::start();

    server
        .otactl()
        .args(["device", "show", "site/7?x"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 404").and(predicate::str::contains("site/7?x")));
}
