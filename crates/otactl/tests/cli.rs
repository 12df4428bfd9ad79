//! The real `otactl` binary against the real `ota-server` binary, each test
//! on its own server (random loopback port, fresh data folder) and its own
//! empty config folder.

mod common;
#[path = "cli/device_types.rs"]
mod device_types;
#[path = "cli/esp_images.rs"]
mod esp_images;
#[path = "cli/fleet.rs"]
mod fleet;
#[path = "cli/groups.rs"]
mod groups;
#[path = "cli/inventory.rs"]
mod inventory;
#[path = "cli/recalls.rs"]
mod recalls;
#[path = "cli/rollouts.rs"]
mod rollouts;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::Command;
use common::*;
use predicates::prelude::*;
use serde_json::{Value, json};

/// A loopback URL where nothing listens.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// `otactl firmware upload FILE --device-type DEVICE_TYPE --version VERSION`,
/// ready for more arguments.
fn upload_cmd(server: &Server, file: &Path, version: &str) -> Command {
    let mut command = server.otactl();
    command
        .args(["firmware", "upload"])
        .arg(file)
        .args(["--device-type", DEVICE_TYPE, "--version", version]);
    command
}

/// Uploads and registers `version`; returns the firmware record.
fn publish(server: &Server, dir: &Path, version: &str, extra: &[&str]) -> Value {
    let file = image(dir, &format!("app-{version}.bin"), 40_000);
    let output = upload_cmd(server, &file, version)
        .args(["--json", "--register"])
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    json_of(&output)["firmware"].clone()
}

#[test]
fn a_release_goes_from_upload_to_full_rollout() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 300_000);

    // Upload and register at 10 %, not yet stable.
    let output = server
        .otactl()
        .args(["--json", "firmware", "upload"])
        .arg(&file)
        .args([
            "-t",
            DEVICE_TYPE,
            "-v",
            "1.2.0",
            "--build",
            "7",
            "--notes",
            "Fixes drift",
        ])
        .args(["--register", "--rollout", "10"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let uploaded = json_of(&output);
    assert_eq!(uploaded["file_hash"], sha256_of(&file));
    assert_eq!(uploaded["binary_path"], "scales_bridge_tab5/v1.2.0.bin");
    let firmware = &uploaded["firmware"];
    assert_eq!(firmware["rollout_percentage"], 10);
    assert_eq!(firmware["is_stable"], false);
    assert_eq!(firmware["build_number"], 7);
    let id = firmware["id"].as_i64().unwrap();
    let stored = std::fs::read(server.firmware_dir().join("scales_bridge_tab5/v1.2.0.bin")).unwrap();
    assert_eq!(stored, std::fs::read(&file).unwrap());

    // Promote, then open to everyone.
    let promoted = json_of(
        &server
            .otactl()
            .args(["--json", "firmware", "promote", &id.to_string()])
            .output()
            .unwrap(),
    );
    assert_eq!(promoted["is_stable"], true);
    let set = server
        .otactl()
        .args([
            "--json",
            "firmware",
            "set",
            &id.to_string(),
            "--rollout",
            "100",
            "--mandatory",
        ])
        .output()
        .unwrap();
    assert!(set.status.success());
    assert_eq!(json_of(&set)["rollout_percentage"], 100);
    assert_eq!(json_of(&set)["is_mandatory"], true);

    // A device with a token minted by otactl is offered it and updates.
    let token_output = server
        .otactl()
        .args([
            "device",
            "token",
            "tab5-000001",
            "--device-type",
            DEVICE_TYPE,
            "--ttl",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(token_output.status.success());
    let token = stdout_of(&token_output).trim().to_owned();
    assert_eq!(token.matches('.').count(), 2, "only the JWT on stdout: {token}");
    let offer = server.device_post(
        &token,
        "/api/ota/check",
        json!({"device_type": DEVICE_TYPE, "current_version": "1.1.0"}),
    );
    assert_eq!(offer["firmware_id"], id);
    for status in ["downloading", "installing", "success"] {
        server.device_post(&token, "/api/ota/status", json!({"firmware_id": id, "status": status}));
    }

    // The logs and the firmware's counts show it.
    let logs = json_of(
        &server
            .otactl()
            .args(["--json", "logs", "--firmware-id", &id.to_string()])
            .output()
            .unwrap(),
    );
    assert_eq!(logs["total"], 1);
    assert_eq!(logs["items"][0]["device_id"], "tab5-000001");
    assert_eq!(logs["items"][0]["status"], "success");
    let shown = json_of(
        &server
            .otactl()
            .args(["--json", "firmware", "show", &id.to_string()])
            .output()
            .unwrap(),
    );
    assert_eq!(shown["stats"]["success"], 1);
    assert_eq!(shown["release_notes"], "Fixes drift");
}

#[test]
fn humans_get_aligned_tables() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    publish(&server, dir.path(), "1.0.0", &["--stable"]);
    publish(&server, dir.path(), "1.10.0-rc.1", &[]);

    let output = server.otactl().args(["firmware", "list"]).output().unwrap();

    assert!(output.status.success());
    let text = stdout_of(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID  DEVICE TYPE         VERSION"), "{text}");
    let column = lines[0].find("STABLE").unwrap();
    assert_eq!(&lines[1][column..column + 3], "no ", "newest version first: {text}");
    assert_eq!(&lines[2][column..column + 3], "yes", "{text}");
}

#[test]
fn the_seed_spellings_are_aliases() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 10_000);

    let upload = server
        .otactl()
        .args(["--json", "upload"])
        .arg(&file)
        .args(["-t", DEVICE_TYPE, "-v", "2.0.0"])
        .output()
        .unwrap();
    assert!(upload.status.success(), "{}", String::from_utf8_lossy(&upload.stderr));
    assert!(json_of(&upload).get("firmware").is_none(), "registered only when asked");
    let register = server
        .otactl()
        .args(["--json", "register", "-t", DEVICE_TYPE, "-v", "2.0.0", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        register.status.success(),
        "{}",
        String::from_utf8_lossy(&register.stderr)
    );
    assert_eq!(json_of(&register)["file_hash"], sha256_of(&file));

    let list = json_of(&server.otactl().args(["--json", "list"]).output().unwrap());
    let firmware_list = json_of(&server.otactl().args(["--json", "firmware", "list"]).output().unwrap());
    assert_eq!(list, firmware_list);
    assert_eq!(list["total"], 1);
    server.otactl().args(["logs"]).assert().success();
}

#[test]
fn list_filters_by_device_type_activity_and_stability() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    publish(&server, dir.path(), "1.0.0", &["--stable"]);
    let second = publish(&server, dir.path(), "1.1.0", &[]);
    server
        .otactl()
        .args(["firmware", "deactivate", &second["id"].to_string()])
        .assert()
        .success()
        .stdout(predicate::str::contains("deactivated"));

    let versions = |args: &[&str]| -> Vec<String> {
        let page = json_of(
            &server
                .otactl()
                .args(["--json", "firmware", "list"])
                .args(args)
                .output()
                .unwrap(),
        );
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["version"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(versions(&[]), ["1.1.0", "1.0.0"]);
    assert_eq!(versions(&["--active"]), ["1.0.0"]);
    assert_eq!(versions(&["--inactive"]), ["1.1.0"]);
    assert_eq!(versions(&["--stable"]), ["1.0.0"]);
    assert!(versions(&["--device-type", "other_type"]).is_empty());
}

#[test]
fn a_missing_file_is_a_usage_error_and_sends_nothing() {
    let server = Server::start();

    server
        .otactl()
        .args([
            "firmware",
            "upload",
            "/nonexistent/app.bin",
            "-t",
            DEVICE_TYPE,
            "-v",
            "1.0.0",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read /nonexistent/app.bin"));

    let page = json_of(&server.otactl().args(["--json", "firmware", "list"]).output().unwrap());
    assert_eq!(page["total"], 0);
}

#[test]
fn a_wrong_token_is_refused_and_never_printed() {
    let server = Server::start();
    let wrong = "wrong-token-7f3a9c1e5b2d8046";

    let output = server
        .otactl()
        .args(["firmware", "list"])
        .env("OTA_ADMIN_TOKEN", wrong)
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Unauthorized (HTTP 401)"), "{stderr}");
    assert!(stderr.contains("the admin token is not valid"), "{stderr}");
    assert!(
        !stderr.contains(wrong) && !stdout_of(&output).contains(wrong),
        "{stderr}"
    );
}

#[test]
fn no_token_at_all_says_where_one_comes_from() {
    let server = Server::start();

    server
        .bare_otactl()
        .args(["--server", &server.url, "firmware", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("otactl login"));
}

#[test]
fn an_unknown_id_prints_the_problem() {
    let server = Server::start();

    for args in [
        vec!["firmware", "show", "4242"],
        vec!["firmware", "promote", "4242"],
        vec!["firmware", "set", "4242", "--rollout", "5"],
        vec!["firmware", "deactivate", "4242"],
    ] {
        server
            .otactl()
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("Not Found (HTTP 404)").and(predicate::str::contains("4242")));
    }
}

#[test]
fn an_unreachable_server_is_exit_code_3() {
    let server = Server::start();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");

    for args in [vec!["firmware", "list"], vec!["status"], vec!["logs"]] {
        let output = server.otactl().env("OTA_SERVER", &url).args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot be reached") && stderr.contains("Connection refused"),
            "{stderr}"
        );
        assert!(!stderr.contains(ADMIN_TOKEN), "{stderr}");
    }
}

#[test]
fn uploads_the_server_refuses_are_exit_code_1_and_leave_nothing() {
    let server = Server::start_with(&[("OTA_MAX_UPLOAD_BYTES", "65536")]);
    let dir = tempfile::tempdir().unwrap();
    publish(&server, dir.path(), "1.0.0", &[]);

    // The same version again: 409, and the stored file is untouched.
    let before = std::fs::read(server.firmware_dir().join("scales_bridge_tab5/v1.0.0.bin")).unwrap();
    let other = image(dir.path(), "other.bin", 20_000);
    upload_cmd(&server, &other, "1.0.0")
        .args(["--register"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Conflict (HTTP 409)").and(predicate::str::contains("already registered")));
    let after = std::fs::read(server.firmware_dir().join("scales_bridge_tab5/v1.0.0.bin")).unwrap();
    assert_eq!(before, after);

    // Over the server's maximum: 413, and no file appears.
    let big = image(dir.path(), "big.bin", 200_000);
    upload_cmd(&server, &big, "3.0.0")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 413"));
    assert!(!server.firmware_dir().join("scales_bridge_tab5/v3.0.0.bin").exists());
}

#[test]
fn bad_arguments_are_exit_code_2_before_anything_is_sent() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 1_000);
    let file = file.to_str().unwrap();
    // Nothing listens here: a command that sent anything would end with 3.
    let dead = dead_url();
    let hash = "a".repeat(64);

    for args in [
        vec!["firmware", "set", "1"],
        vec!["firmware", "set", "1", "--rollout", "150"],
        vec!["firmware", "set", "1", "--stable", "--unstable"],
        vec!["firmware", "upload", file, "-t", DEVICE_TYPE, "-v", "not-a-version"],
        vec!["firmware", "upload", file, "-t", "../etc", "-v", "1.0.0"],
        vec!["firmware", "upload", file, "-t", DEVICE_TYPE, "-v", "1.0.0", "--stable"],
        vec![
            "firmware",
            "upload",
            file,
            "-t",
            DEVICE_TYPE,
            "-v",
            "1.0.0",
            "--build",
            "4",
        ],
        vec![
            "firmware",
            "upload",
            file,
            "-t",
            DEVICE_TYPE,
            "-v",
            "1.0.0",
            "--notes",
            "x",
        ],
        vec!["firmware", "upload", file, "-t", DEVICE_TYPE, "--override-version"],
        vec!["firmware", "register", "-t", DEVICE_TYPE, "--hash", &hash],
        vec!["device-type", "create", "kiosk"],
        vec!["device-type", "create", "kiosk", "--image-format", "jpeg"],
        vec!["device-type", "create", "Kiosk!", "--image-format", "raw"],
        vec![
            "device-type",
            "create",
            "kiosk",
            "--image-format",
            "esp-app",
            "--min-chip-revision",
            "banana",
        ],
        vec!["device-type", "show", "../etc"],
        vec!["device-type", "set", DEVICE_TYPE],
        vec![
            "device-type",
            "set",
            DEVICE_TYPE,
            "--project-name",
            "x",
            "--no-project-name",
        ],
        vec!["device", "list", "-t", "../etc"],
        vec!["device", "show", ".."],
        vec!["image", "inspect", "/nonexistent.bin"],
        vec![
            "firmware",
            "upload",
            "/nonexistent.bin",
            "-t",
            DEVICE_TYPE,
            "-v",
            "1.0.0",
        ],
        vec![
            "firmware",
            "register",
            "-t",
            DEVICE_TYPE,
            "-v",
            "1.0.0",
            "--hash",
            "xyz",
        ],
        vec!["firmware", "show", "twelve"],
        vec!["logs", "--status", "exploded"],
        vec!["logs", "--since", "last tuesday"],
        vec!["device", "token", "tab5-1"],
        vec!["device", "token", "tab5-1", "-t", DEVICE_TYPE, "--ttl", "forever"],
        vec!["device", "token", "tab5-1", "-t", DEVICE_TYPE, "--ttl", "10s"],
        vec!["device", "token", "tab5-1", "-t", DEVICE_TYPE, "--ttl", "3651d"],
        vec!["logs", "--follow", "--interval", "0s"],
        vec!["--timeout", "0s", "status"],
        vec!["frobnicate"],
    ] {
        let output = server.otactl().env("OTA_SERVER", &dead).args(&args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let page = json_of(&server.otactl().args(["--json", "firmware", "list"]).output().unwrap());
    assert_eq!(page["total"], 0);
}

#[test]
fn flags_beat_the_environment_which_beats_the_config_file() {
    let server = Server::start();
    let config = server.config_file();
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let dead = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    };
    std::fs::write(
        &config,
        format!("server = \"{}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n", server.url),
    )
    .unwrap();

    // The config file alone is enough.
    server.bare_otactl().args(["firmware", "list"]).assert().success();
    // The environment beats it: a wrong token is refused, a dead server unreachable.
    server
        .bare_otactl()
        .env("OTA_ADMIN_TOKEN", "env-wrong-token")
        .args(["firmware", "list"])
        .assert()
        .code(1);
    server
        .bare_otactl()
        .env("OTA_SERVER", &dead)
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["firmware", "list"])
        .assert()
        .code(3);
    // Flags beat the environment.
    server
        .bare_otactl()
        .env("OTA_ADMIN_TOKEN", "env-wrong-token")
        .env("OTA_SERVER", &dead)
        .args([
            "--server",
            &server.url,
            "--admin-token",
            ADMIN_TOKEN,
            "firmware",
            "list",
        ])
        .assert()
        .success();
    server
        .bare_otactl()
        .args(["--admin-token", "flag-wrong-token", "firmware", "list"])
        .assert()
        .code(1);
}

#[test]
#[cfg(unix)]
fn login_saves_a_private_config_that_later_commands_use() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();

    // A wrong token is refused and nothing is saved.
    server
        .bare_otactl()
        .args(["login", "--server", &server.url])
        .write_stdin("not-the-token\n")
        .assert()
        .code(1);
    assert!(!server.config_file().exists());

    server
        .bare_otactl()
        .args(["login", "--server", &server.url])
        .write_stdin(format!("{ADMIN_TOKEN}\n"))
        .assert()
        .success()
        .stdout(predicate::str::contains("Logged in"));
    let mode = std::fs::metadata(server.config_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    server.bare_otactl().args(["firmware", "list"]).assert().success();

    server.bare_otactl().arg("logout").assert().success();
    let text = std::fs::read_to_string(server.config_file()).unwrap();
    assert!(!text.contains(ADMIN_TOKEN) && text.contains(&server.url), "{text}");
    server.bare_otactl().args(["firmware", "list"]).assert().code(2);
}

#[test]
fn login_reads_a_token_file() {
    let server = Server::start();
    let token_file = server.data.path().join("secrets-copy");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();

    server
        .bare_otactl()
        .args(["login", "--server", &server.url, "--token-file"])
        .arg(&token_file)
        .assert()
        .success();
    server.bare_otactl().args(["status"]).assert().success();
    server.bare_otactl().args(["firmware", "list"]).assert().success();
}

#[test]
fn uploads_draw_no_progress_bar_when_not_on_a_terminal() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 2_000_000);

    let output = upload_cmd(&server, &file, "1.0.0").output().unwrap();

    assert!(output.status.success());
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout_of(&output).contains("the server's hash matches"));
    assert!(!stdout_of(&output).contains('\r'));
}

#[test]
fn status_shows_health_readiness_and_version() {
    let server = Server::start();

    let output = server
        .bare_otactl()
        .args(["--server", &server.url, "--json", "status"])
        .output()
        .unwrap();

    assert!(output.status.success());
    let status = json_of(&output);
    assert_eq!(status["healthz"]["status"], "ok");
    assert_eq!(status["readyz"]["status"], "ready");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    server
        .bare_otactl()
        .args(["--server", &server.url, "status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("ready").and(predicate::str::contains("version")));
}

#[test]
fn device_tokens_refused_by_the_server_are_exit_code_1() {
    // A server that verifies tokens with a public key cannot sign them.
    let public_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ota-server/tests/fixtures/ec_public.pem"
    );
    let server = Server::start_with(&[("OTA_DEVICE_JWT_PUBLIC_KEY", public_key)]);

    server
        .otactl()
        .args(["device", "token", "tab5-1", "-t", DEVICE_TYPE])
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("HTTP 409").and(predicate::str::contains("OTA_DEVICE_JWT_PRIVATE_KEY")));
}

#[test]
fn logs_follow_prints_attempts_as_they_move() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.1.0", &["--stable"]);
    let id = firmware["id"].as_i64().unwrap();
    let token_output = server
        .otactl()
        .args(["device", "token", "tab5-000009", "-t", DEVICE_TYPE])
        .output()
        .unwrap();
    let token = stdout_of(&token_output).trim().to_owned();

    let mut follow = StdCommand::new(env!("CARGO_BIN_EXE_otactl"))
        .args([
            "--json",
            "logs",
            "-f",
            "--interval",
            "100ms",
            "--firmware-id",
            &id.to_string(),
        ])
        .env("OTA_SERVER", &server.url)
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("XDG_CONFIG_HOME", server.config_home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next_status = || -> String {
        let line = received
            .recv_timeout(Duration::from_secs(15))
            .expect("a line from --follow");
        let row: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(row["device_id"], "tab5-000009");
        format!("{} {}", row["status"].as_str().unwrap(), row["progress"])
    };

    server.device_post(
        &token,
        "/api/ota/check",
        json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"}),
    );
    assert_eq!(next_status(), "pending null");
    server.device_post(
        &token,
        "/api/ota/status",
        json!({"firmware_id": id, "status": "downloading", "progress": 50}),
    );
    assert_eq!(next_status(), "downloading 50");
    server.device_post(
        &token,
        "/api/ota/status",
        json!({"firmware_id": id, "status": "installing"}),
    );
    assert!(next_status().starts_with("installing"));
    server.device_post(
        &token,
        "/api/ota/status",
        json!({"firmware_id": id, "status": "success"}),
    );
    assert!(next_status().starts_with("success"));

    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let server = Server::start();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef otactl"),
        ("fish", "complete -c otactl"),
    ] {
        server
            .bare_otactl()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains(marker).and(predicate::str::contains("firmware")));
    }
    server.bare_otactl().args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn every_help_shows_an_example() {
    let server = Server::start();
    for args in [
        vec!["--help"],
        vec!["firmware", "--help"],
        vec!["firmware", "upload", "--help"],
        vec!["firmware", "set", "--help"],
        vec!["logs", "--help"],
        vec!["device", "token", "--help"],
        vec!["device", "list", "--help"],
        vec!["device-type", "--help"],
        vec!["device-type", "set", "--help"],
        vec!["dt", "create", "--help"],
        vec!["image", "inspect", "--help"],
        vec!["upload", "--help"],
    ] {
        server
            .bare_otactl()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

#[test]
fn uploads_draw_a_progress_bar_on_a_terminal() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 4_000_000);
    // util-linux's `script` gives otactl a pseudo-terminal (Debian: bsdutils, always installed).
    let command = format!(
        "{} firmware upload {} -t {DEVICE_TYPE} -v 1.0.0",
        env!("CARGO_BIN_EXE_otactl"),
        file.display()
    );

    let output = StdCommand::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("OTA_SERVER", &server.url)
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("XDG_CONFIG_HOME", server.config_home.path())
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs");

    let terminal = stdout_of(&output);
    assert!(output.status.success(), "{terminal}");
    assert!(
        terminal.contains("uploading") && terminal.contains("B/s") && terminal.contains("ETA"),
        "{terminal}"
    );
    assert!(terminal.contains("the server's hash matches"), "{terminal}");
}

#[test]
fn device_ids_with_url_characters_get_their_own_token() {
    use base64::Engine;
    let server = Server::start();
    for device_id in ["site/7?x#y%z", "..%2F..", "aa:bb:cc:dd:ee:ff"] {
        let output = server
            .otactl()
            .args(["device", "token", device_id, "-t", DEVICE_TYPE])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{device_id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = stdout_of(&output);
        let payload = token.trim().split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], device_id);
        assert_eq!(claims["device_type"], DEVICE_TYPE);
    }
    server
        .otactl()
        .args(["device", "token", "..", "-t", DEVICE_TYPE])
        .assert()
        .code(2);
}

#[test]
fn a_saved_token_is_never_sent_to_another_server() {
    let server = Server::start();
    server
        .bare_otactl()
        .args(["login", "--server", &server.url])
        .write_stdin(format!("{ADMIN_TOKEN}\n"))
        .assert()
        .success();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_url = format!("http://{}", other.local_addr().unwrap());

    for run in [
        server
            .bare_otactl()
            .args(["--server", &other_url, "firmware", "list"])
            .output()
            .unwrap(),
        server
            .bare_otactl()
            .env("OTA_SERVER", &other_url)
            .args(["firmware", "list"])
            .output()
            .unwrap(),
    ] {
        assert_eq!(run.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("the saved admin token is for"), "{stderr}");
    }
    assert!(other.accept().is_err(), "no connection reached the other server");
    // The same server, written with a trailing slash, still gets it.
    server
        .bare_otactl()
        .args(["--server", &format!("{}/", server.url), "firmware", "list"])
        .assert()
        .success();
}

#[test]
fn an_upload_with_a_wrong_token_is_refused_before_the_file_is_sent() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 3_000_000);

    server
        .otactl()
        .env("OTA_ADMIN_TOKEN", "wrong-token-for-upload-1234")
        .args(["firmware", "upload"])
        .arg(&file)
        .args(["-t", DEVICE_TYPE, "-v", "1.0.0", "--register"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Unauthorized (HTTP 401)"));
    assert!(!server.firmware_dir().join("scales_bridge_tab5").exists());
}

#[test]
fn a_hash_the_server_gets_wrong_registers_nothing() {
    let fake = FakeServer::start(|request| match (request.method.as_str(), request.path.as_str()) {
        ("GET", _) => (200, r#"{"items": [], "total": 0}"#.to_owned()),
        ("POST", "/api/ota/admin/upload") => (
            201,
            format!(
                r#"{{"filename": "v1.0.0.bin", "binary_path": "t/v1.0.0.bin", "file_size": 5000, "file_hash": "{}"}}"#,
                "00".repeat(32)
            ),
        ),
        _ => (500, r#"{"title": "unexpected", "status": 500}"#.to_owned()),
    });
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 5_000);

    let output = Command::cargo_bin("otactl")
        .unwrap()
        .env("OTA_SERVER", &fake.url)
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("XDG_CONFIG_HOME", dir.path())
        .args(["--json", "firmware", "upload"])
        .arg(&file)
        .args(["-t", DEVICE_TYPE, "-v", "1.0.0", "--register"])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("it was not registered"), "{stderr}");
    let seen = fake.requests();
    assert!(seen.iter().any(|r| r.path == "/api/ota/admin/upload"), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|r| r.path == "/api/ota/admin/firmware" && r.method == "POST"),
        "{seen:?}"
    );
    assert_eq!(json_of(&output)["type"], "urn:otactl:failed");
}

#[test]
fn control_characters_from_devices_never_reach_the_terminal() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.1.0", &["--stable"]);
    let token = stdout_of(
        &server
            .otactl()
            .args(["device", "token", "tab5-7", "-t", DEVICE_TYPE])
            .output()
            .unwrap(),
    );
    let token = token.trim();
    server.device_post(
        token,
        "/api/ota/check",
        json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"}),
    );
    server.device_post(
        token,
        "/api/ota/status",
        json!({"firmware_id": firmware["id"], "status": "failed", "error_message": "flash\u{1b}]0;owned\u{7}\u{1b}[2J"}),
    );

    let output = server.otactl().args(["logs"]).output().unwrap();

    assert!(output.status.success());
    let text = stdout_of(&output);
    assert!(
        text.contains("flash") && !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
}

#[test]
fn an_empty_token_variable_counts_as_unset() {
    let server = Server::start();
    std::fs::create_dir_all(server.config_file().parent().unwrap()).unwrap();
    std::fs::write(
        server.config_file(),
        format!("server = \"{}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n", server.url),
    )
    .unwrap();

    server
        .bare_otactl()
        .env("OTA_ADMIN_TOKEN", "")
        .args(["firmware", "list"])
        .assert()
        .success();
    std::fs::remove_file(server.config_file()).unwrap();
    server
        .bare_otactl()
        .env("OTA_ADMIN_TOKEN", "")
        .env("OTA_SERVER", &server.url)
        .arg("status")
        .assert()
        .success();
}

#[test]
fn a_token_that_starts_with_a_dash_is_taken_and_not_echoed() {
    let server = Server::start();
    let token = "--Secret-Looking-Like-A-Flag";

    let output = server
        .otactl()
        .args(["--admin-token", token, "firmware", "list"])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HTTP 401") && !stderr.contains(token), "{stderr}");
}

#[test]
fn json_errors_are_problem_documents_on_stdout() {
    let server = Server::start();

    let refused = server
        .otactl()
        .args(["--json", "firmware", "show", "4242"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let problem = json_of(&refused);
    assert_eq!(problem["status"], 404);
    assert!(problem["detail"].as_str().unwrap().contains("4242"));

    let unreachable = server
        .otactl()
        .env("OTA_SERVER", dead_url())
        .args(["--json", "firmware", "list"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(3));
    assert_eq!(json_of(&unreachable)["type"], "urn:otactl:unreachable");
    assert_eq!(json_of(&unreachable)["exit_code"], 3);
}

#[test]
fn login_prefers_a_piped_token_to_a_stale_environment() {
    let server = Server::start();

    server
        .bare_otactl()
        .env("OTA_ADMIN_TOKEN", "stale-token-from-the-environment")
        .args(["login", "--server", &server.url])
        .write_stdin(format!("{ADMIN_TOKEN}\n"))
        .assert()
        .success();
    server.bare_otactl().args(["firmware", "list"]).assert().success();
}

#[test]
fn a_firewall_page_or_a_redirect_is_explained() {
    let fake = FakeServer::start(|request| match request.path.as_str() {
        "/healthz" => (302, String::new()),
        _ => (403, r#"{"title": "Forbidden by WAF", "status": 403}"#.to_owned()),
    });

    Command::cargo_bin("otactl")
        .unwrap()
        .env("OTA_SERVER", &fake.url)
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["firmware", "list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Forbidden by WAF (HTTP 403)"));
    Command::cargo_bin("otactl")
        .unwrap()
        .env("OTA_SERVER", &fake.url)
        .arg("status")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("redirect"));
}
