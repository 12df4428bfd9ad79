//! ESP-IDF app images: uploads that take the image's own version, the
//! server's refusals, and `otactl image inspect` before an upload.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ota_core::esp::Chip;
use ota_core::esp::build::app_image;
use predicates::prelude::*;

use crate::common::*;

/// The esp-app device type of these tests: ESP32-P4 units v1.0 to v1.99
/// running the `scales_bridge` project.
const P4_TYPE: &str = "kiosk_p4";

fn create_p4_type(server: &Server) {
    server
        .otactl()
        .args([
            "device-type",
            "create",
            P4_TYPE,
            "--image-format",
            "esp-app",
            "--chip",
            "esp32p4",
        ])
        .args(["--project-name", "scales_bridge", "--min-chip-revision", "v1.0"])
        .args(["--max-chip-revision", "v1.99"])
        .assert()
        .success();
}

/// An app image of about 64 KiB, secure_version 1, written to `dir/name`.
fn esp_image(dir: &Path, name: &str, chip: Chip, version: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, app_image(chip, version, "scales_bridge", 1, 64 * 1024)).unwrap();
    path
}

fn upload(server: &Server, file: &Path) -> Command {
    let mut command = server.otactl();
    command.args(["firmware", "upload"]).arg(file).args(["-t", P4_TYPE]);
    command
}

#[test]
fn an_image_uploaded_without_a_version_is_registered_under_its_own() {
    let server = Server::start();
    create_p4_type(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = esp_image(dir.path(), "app.bin", Chip::Esp32p4, "v1.2.0");

    let output = upload(&server, &file).args(["--register", "--json"]).output().unwrap();

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer = json_of(&output);
    assert_eq!(answer["version"], "1.2.0");
    assert_eq!(answer["image_format"], "esp-app");
    assert_eq!(answer["image"]["app"]["secure_version"], 1);
    assert_eq!(answer["firmware"]["version"], "1.2.0");
    assert_eq!(answer["firmware"]["version_overridden"], false);
    assert!(server.firmware_dir().join("kiosk_p4/v1.2.0.bin").exists());
    let id = answer["firmware"]["id"].to_string();
    let shown = stdout_of(&server.otactl().args(["firmware", "show", &id]).output().unwrap());
    for expected in [
        "image format  esp-app",
        "image:",
        "esp32p4 (chip id 18)",
        "scales_bridge",
        "secure_version",
        "validation hash",
        "unsigned",
        "v5.5.1",
    ] {
        assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
    }
    assert!(!shown.contains("version overridden"), "{shown}");
}

#[test]
fn a_human_upload_says_what_the_image_is() {
    let server = Server::start();
    create_p4_type(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = esp_image(dir.path(), "app.bin", Chip::Esp32p4, "v1.2.3-4-gabc1234");

    let output = upload(&server, &file).output().unwrap();

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = stdout_of(&output);
    assert!(text.contains("stored as version 1.2.4-dev.4+gabc1234"), "{text}");
    assert!(
        text.contains("esp32p4 (chip id 18)") && text.contains("v1.2.3-4-gabc1234"),
        "{text}"
    );
    assert!(
        text.contains("Next: otactl firmware register -t kiosk_p4 -v 1.2.4-dev.4+gabc1234 --file"),
        "{text}"
    );
}

#[test]
fn a_version_that_differs_from_the_image_is_refused_unless_overridden() {
    let server = Server::start();
    create_p4_type(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = esp_image(dir.path(), "app.bin", Chip::Esp32p4, "1.2.0");

    upload(&server, &file)
        .args(["--version", "1.3.0", "--register"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("HTTP 422")
                .and(predicate::str::contains("[field: version]"))
                .and(predicate::str::contains("1.3.0")),
        );
    assert!(!server.firmware_dir().join("kiosk_p4/v1.3.0.bin").exists());

    let output = upload(&server, &file)
        .args(["--version", "1.3.0", "--override-version", "--register", "--json"])
        .output()
        .unwrap();

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: stored as version 1.3.0") && stderr.contains("'1.2.0'"),
        "{stderr}"
    );
    let firmware = &json_of(&output)["firmware"];
    assert_eq!(firmware["version"], "1.3.0");
    assert_eq!(firmware["version_overridden"], true);
    server
        .otactl()
        .args(["firmware", "show", &firmware["id"].to_string()])
        .assert()
        .success()
        .stdout(predicate::str::contains("version overridden  yes"));
}

#[test]
fn an_image_for_another_chip_is_refused_with_the_servers_reason() {
    let server = Server::start();
    create_p4_type(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = esp_image(dir.path(), "c6.bin", Chip::Esp32c6, "1.2.0");

    upload(&server, &file).arg("--register").assert().code(1).stderr(
        predicate::str::contains("HTTP 422")
            .and(predicate::str::contains("built for esp32c6 (chip id 13)"))
            .and(predicate::str::contains("esp32p4 (chip id 18)")),
    );
    let page = json_of(&server.otactl().args(["--json", "firmware", "list"]).output().unwrap());
    assert_eq!(page["total"], 0);
}

#[test]
fn a_raw_device_type_still_needs_a_version() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 4_000);

    server
        .otactl()
        .args(["firmware", "upload"])
        .arg(&file)
        .args(["-t", DEVICE_TYPE])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("[field: version]").and(predicate::str::contains("raw device type")));
}

#[test]
fn inspect_prints_what_an_image_holds_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = esp_image(dir.path(), "app.bin", Chip::Esp32p4, "v1.2.0");

    let output = otactl_offline(dir.path())
        .args(["image", "inspect"])
        .arg(&file)
        .output()
        .unwrap();

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = stdout_of(&output);
    for expected in [
        "ESP-IDF app image",
        "esp32p4 (chip id 18)",
        "scales_bridge",
        "secure_version   1",
        "uploads as       version 1.2.0",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let json = json_of(
        &otactl_offline(dir.path())
            .args(["--json", "image", "inspect"])
            .arg(&file)
            .output()
            .unwrap(),
    );
    assert_eq!(json["image"]["header"]["chip"], "esp32p4");
    assert_eq!(json["version"], "1.2.0");
}

#[test]
fn inspect_refuses_a_corrupted_image() {
    let dir = tempfile::tempdir().unwrap();
    let file = esp_image(dir.path(), "app.bin", Chip::Esp32p4, "1.2.0");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0x200] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let output = otactl_offline(dir.path())
        .args(["image", "inspect"])
        .arg(&file)
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a valid ESP-IDF app image"), "{stderr}");
    assert!(stderr.contains("checksum") || stderr.contains("SHA-256"), "{stderr}");
    assert!(stdout_of(&output).is_empty());
}

#[test]
fn inspect_with_a_device_type_checks_the_image_against_it() {
    let server = Server::start();
    create_p4_type(&server);
    let dir = tempfile::tempdir().unwrap();
    let p4 = esp_image(dir.path(), "p4.bin", Chip::Esp32p4, "1.2.0");
    let c6 = esp_image(dir.path(), "c6.bin", Chip::Esp32c6, "1.2.0");

    server
        .otactl()
        .args(["image", "inspect"])
        .arg(&p4)
        .args(["--device-type", P4_TYPE])
        .assert()
        .success()
        .stdout(predicate::str::contains("It fits device type kiosk_p4"));
    server
        .otactl()
        .args(["image", "inspect"])
        .arg(&c6)
        .args(["--device-type", P4_TYPE])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("esp32c6 (chip id 13)"))
        .stderr(predicate::str::contains("cannot run on kiosk_p4 devices").and(predicate::str::contains("esp32c6")));
    server
        .otactl()
        .args(["image", "inspect"])
        .arg(&c6)
        .args(["--device-type", DEVICE_TYPE])
        .assert()
        .success()
        .stdout(predicate::str::contains("raw device type").and(predicate::str::contains("any file")));
    server
        .otactl()
        .args(["image", "inspect"])
        .arg(&p4)
        .args(["--device-type", "no_such_type"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 404"));
}

/// `otactl` with no server, no token and an empty config folder.
fn otactl_offline(config_home: &Path) -> Command {
    let mut command = Command::cargo_bin("otactl").unwrap();
    command
        .env_remove("OTA_ADMIN_TOKEN")
        .env_remove("OTACTL_CONFIG")
        .env("OTA_SERVER", "http://127.0.0.1:9")
        .env("XDG_CONFIG_HOME", config_home)
        .env("HOME", config_home);
    command
}
