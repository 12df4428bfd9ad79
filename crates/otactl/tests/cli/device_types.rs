//! `otactl device-type`: create, list, show, set, and the server's refusals.

use predicates::prelude::*;

use crate::common::*;

/// `otactl device-type create kiosk_p4` for ESP32-P4 units v1.0 to v1.99.
fn create_kiosk(server: &Server) -> std::process::Output {
    server
        .otactl()
        .args(["device-type", "create", "kiosk_p4", "--image-format", "esp-app"])
        .args(["--chip", "ESP32-P4", "--project-name", "scales_bridge"])
        .args(["--min-chip-revision", "v1.0", "--max-chip-revision", "v1.99"])
        .args(["--description", "Kiosk on a Tab5"])
        .output()
        .unwrap()
}

#[test]
fn a_device_type_is_created_listed_shown_and_changed() {
    let server = Server::start();

    let created = create_kiosk(&server);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let text = stdout_of(&created);
    assert!(text.contains("Created device type kiosk_p4."), "{text}");
    assert!(text.contains("esp32p4") && text.contains("v1.0 to v1.99"), "{text}");

    let list = server.otactl().args(["device-type", "list"]).output().unwrap();
    let table = stdout_of(&list);
    assert!(table.starts_with("NAME "), "{table}");
    let row = table.lines().find(|l| l.starts_with("kiosk_p4")).unwrap_or_default();
    assert!(
        row.contains("esp-app") && row.contains("scales_bridge") && row.contains("v1.0 to v1.99"),
        "{table}"
    );
    let page = json_of(&server.otactl().args(["--json", "dt", "ls"]).output().unwrap());
    assert_eq!(
        page["total"], 3,
        "the two raw types every test server has, and this one"
    );

    let shown = json_of(
        &server
            .otactl()
            .args(["--json", "device-type", "show", "kiosk_p4"])
            .output()
            .unwrap(),
    );
    assert_eq!(shown["chip"], "esp32p4");
    assert_eq!(shown["project_name"], "scales_bridge");

    let changed = server
        .otactl()
        .args(["--json", "device-type", "set", "kiosk_p4", "--no-project-name"])
        .args(["--max-chip-revision", "v1.50", "--description", "Any kiosk build"])
        .output()
        .unwrap();
    assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
    let record = json_of(&changed);
    assert_eq!(record["project_name"], serde_json::Value::Null);
    assert_eq!(record["max_chip_revision"], "v1.50");
    assert_eq!(record["min_chip_revision"], "v1.0", "what was not given stays");
    assert_eq!(record["description"], "Any kiosk build");
    server
        .otactl()
        .args(["device-type", "set", "kiosk_p4", "--no-max-chip-revision"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("Updated device type kiosk_p4.").and(predicate::str::contains("v1.0 and later")),
        );
}

#[test]
fn a_chip_the_server_does_not_know_is_refused_with_its_reason() {
    let server = Server::start();

    server
        .otactl()
        .args([
            "device-type",
            "create",
            "kiosk",
            "--image-format",
            "esp-app",
            "--chip",
            "esp99",
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("HTTP 422")
                .and(predicate::str::contains("'esp99' is not a chip"))
                .and(predicate::str::contains("[field: chip]")),
        );
    server
        .otactl()
        .args(["device-type", "show", "kiosk"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 404"));
}

#[test]
fn an_existing_name_and_esp_fields_on_a_raw_type_are_refused() {
    let server = Server::start();

    server
        .otactl()
        .args(["device-type", "create", DEVICE_TYPE, "--image-format", "raw"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 409"));
    server
        .otactl()
        .args(["device-type", "set", DEVICE_TYPE, "--project-name", "scales_bridge"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 422").and(predicate::str::contains("project_name")));
}
