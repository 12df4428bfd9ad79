//! Staged rollouts from the command line: `otactl rollout …`, their
//! states, progress, A/B arms and `--watch`.

use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::{Value, json};

use crate::common::*;
use crate::publish;

/// `otactl --json rollout create FIRMWARE_ID ARGS`: the new rollout.
pub fn create_rollout(server: &Server, firmware: &Value, args: &[&str]) -> Value {
    let id = firmware["id"].to_string();
    let mut all = vec!["rollout", "create", id.as_str()];
    all.extend(args);
    server.json(&all)
}

/// A device that was offered `firmware_id` installs it.
fn install(server: &Server, token: &str, firmware_id: &Value) {
    for status in ["downloading", "installing", "success"] {
        server.device_post(
            token,
            "/api/ota/status",
            json!({"firmware_id": firmware_id, "status": status}),
        );
    }
}

#[test]
fn a_rollout_is_paused_resumed_advanced_and_aborted() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.2.0", &["--stable"]);

    let created = create_rollout(
        &server,
        &firmware,
        &[
            "--name",
            "spring",
            "--soak",
            "30m",
            "--min-successes",
            "5",
            "--max-failure-rate",
            "20",
            "--min-finished",
            "4",
        ],
    );

    assert_eq!(created["state"], "running");
    assert_eq!(created["name"], "spring");
    assert_eq!(created["stages"], json!([1, 10, 50, 100]), "the default stages");
    assert_eq!(
        (created["stage"].clone(), created["percent"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        created["policy"],
        json!({"min_successes": 5, "soak_seconds": 1800, "max_failure_rate": 20, "min_finished": 4})
    );
    assert_eq!(created["created_by"], "admin");
    let id = created["id"].to_string();

    let paused = server.json(&["rollout", "pause", &id, "--reason", "battery drain reports"]);
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["state_reason"], "battery drain reports");
    server
        .otactl()
        .args(["rollout", "resume", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("Rollout {id} is running again.")));
    let advanced = server.json(&["rollout", "advance", &id]);
    assert_eq!(advanced["state"], "running");
    assert_eq!(
        (advanced["stage"].clone(), advanced["percent"].clone()),
        (json!(1), json!(10))
    );

    let status = server.otactl().args(["rollout", "status", &id]).output().unwrap();
    let text = stdout_of(&status);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("2/4 at 10 %") && text.contains("spring"), "{text}");
    assert!(
        text.contains("advance after a 30m soak and 5 confirmed updates"),
        "{text}"
    );
    assert!(text.contains("STAGE  PERCENT  STATE"), "{text}");
    let stage_two = text.lines().find(|l| l.starts_with("2 ")).unwrap_or_default();
    assert!(stage_two.contains("10 %") && stage_two.contains("current"), "{text}");
    assert!(!text.contains("ARM "), "no arm table without a variant: {text}");

    let aborted = server.json(&["rollout", "abort", &id, "--reason", "superseded"]);
    assert_eq!(aborted["state"], "aborted");
    assert_eq!(aborted["state_reason"], "superseded");
    server
        .otactl()
        .args(["rollout", "advance", &id])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Conflict (HTTP 409)").and(predicate::str::contains("cannot advance")));
}

#[test]
fn advancing_past_the_last_stage_completes_the_rollout() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.2.0", &["--stable"]);
    let id = create_rollout(&server, &firmware, &["--stages", "50,100"])["id"].to_string();

    assert_eq!(server.json(&["rollout", "advance", &id])["percent"], 100);
    server
        .otactl()
        .args(["rollout", "advance", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("Rollout {id} is completed.")));

    assert_eq!(server.json(&["rollout", "show", &id])["state"], "completed");
    server
        .otactl()
        .args(["rollout", "pause", &id])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 409"));
}

#[test]
fn a_failing_rollout_halts_itself_and_resumes_when_asked() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.2.0", &["--stable"]);
    let id = create_rollout(
        &server,
        &firmware,
        &["--stages", "100", "--max-failure-rate", "0", "--min-finished", "1"],
    )["id"]
        .to_string();
    let (offer, token) = server.check_in("tab5-1", DEVICE_TYPE, "1.1.0");
    assert_eq!(offer["firmware_id"], firmware["id"], "{offer}");

    server.device_post(
        &token,
        "/api/ota/status",
        json!({"firmware_id": firmware["id"], "status": "failed", "error_message": "rollback: did not confirm"}),
    );

    let halted = server.json(&["rollout", "status", &id]);
    assert_eq!(halted["state"], "halted", "{halted}");
    assert!(halted["state_reason"].is_string(), "{halted}");
    assert_eq!(halted["totals"]["rolled_back"], 1, "{halted}");
    assert_eq!(halted["arms"][0]["failure_reasons"], json!({"rollback": 1}), "{halted}");
    let text = stdout_of(&server.otactl().args(["rollout", "status", &id]).output().unwrap());
    assert!(text.contains("halted") && text.contains("rollback 1"), "{text}");
    let decided = server.json(&["audit", "--actor", "system", "--target-type", "rollout"]);
    assert_eq!(decided["items"][0]["action"], "rollout.halt", "{decided}");
    assert_eq!(decided["items"][0]["target_id"], id.as_str());

    let resumed = server.json(&["rollout", "resume", &id, "--reason", "fixed the test rig"]);
    assert_eq!(resumed["state"], "running");
}

#[test]
fn an_ab_rollout_shows_each_arm_of_the_cohort() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let a = publish(&server, dir.path(), "1.2.0", &["--stable"]);
    let b = publish(&server, dir.path(), "1.2.1", &["--stable"]);
    let id = create_rollout(
        &server,
        &a,
        &[
            "--stages",
            "100",
            "--variant",
            &b["id"].to_string(),
            "--variant-percent",
            "50",
        ],
    )["id"]
        .to_string();

    for n in 1..=6 {
        let (offer, token) = server.check_in(&format!("tab5-{n}"), DEVICE_TYPE, "1.0.0");
        assert!(
            offer["firmware_id"] == a["id"] || offer["firmware_id"] == b["id"],
            "{offer}"
        );
        install(&server, &token, &offer["firmware_id"]);
    }

    let rollout = server.json(&["rollout", "status", &id]);
    assert_eq!(rollout["variant"], json!({"firmware_id": b["id"], "percent": 50}));
    assert_eq!(rollout["totals"]["offered"], 6, "{rollout}");
    assert_eq!(rollout["totals"]["succeeded"], 6, "{rollout}");
    let arms = rollout["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2, "{rollout}");
    assert_eq!(
        (arms[0]["arm"].clone(), arms[0]["version"].clone()),
        (json!("a"), json!("1.2.0"))
    );
    assert_eq!(
        (arms[1]["arm"].clone(), arms[1]["version"].clone()),
        (json!("b"), json!("1.2.1"))
    );
    let offered: u64 = arms.iter().map(|arm| arm["offered"].as_u64().unwrap()).sum();
    assert_eq!(offered, 6);
    let text = stdout_of(&server.otactl().args(["rollout", "status", &id]).output().unwrap());
    assert!(text.contains("ARM  FIRMWARE  VERSION"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("b ") && l.contains("1.2.1") && l.contains("50 %")),
        "{text}"
    );
}

#[test]
fn rollouts_are_listed_by_state_device_type_and_firmware() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let first = publish(&server, dir.path(), "1.1.0", &["--stable"]);
    let second = publish(&server, dir.path(), "1.2.0", &["--stable"]);
    let older = create_rollout(&server, &first, &[])["id"].as_i64().unwrap();
    let newer = create_rollout(&server, &second, &["--name", "second"])["id"]
        .as_i64()
        .unwrap();
    server.json(&["rollout", "pause", &older.to_string()]);

    let ids = |args: &[&str]| -> Vec<i64> {
        let mut all = vec!["rollout", "list"];
        all.extend(args);
        let page = server.json(&all);
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&[]), [newer, older], "newest first");
    assert_eq!(ids(&["--state", "paused"]), [older]);
    assert_eq!(ids(&["--state", "running", "-t", DEVICE_TYPE]), [newer]);
    assert_eq!(ids(&["--firmware-id", &first["id"].to_string()]), [older]);
    assert!(ids(&["--device-type", "other_type"]).is_empty());
    let table = stdout_of(&server.otactl().args(["rollouts", "ls"]).output().unwrap());
    assert!(table.starts_with("ID  NAME"), "{table}");
    let row = table.lines().find(|l| l.contains("second")).unwrap_or_default();
    assert!(row.contains("running") && row.contains("1/4 at 1 %"), "{table}");

    server
        .otactl()
        .args(["rollout", "create", &first["id"].to_string()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Conflict (HTTP 409)").and(predicate::str::contains("another rollout")));
}

#[test]
fn watching_a_rollout_ends_when_it_is_over() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let firmware = publish(&server, dir.path(), "1.2.0", &["--stable"]);
    let id = create_rollout(&server, &firmware, &[])["id"].to_string();
    let mut watch = StdCommand::new(env!("CARGO_BIN_EXE_otactl"))
        .args(["--json", "rollout", "status", &id, "--watch", "--interval", "100ms"])
        .env("OTA_SERVER", &server.url)
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("XDG_CONFIG_HOME", server.config_home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next_state = || -> String {
        let line = received
            .recv_timeout(Duration::from_secs(15))
            .expect("a line from --watch");
        let rollout: Value = serde_json::from_str(&line).unwrap();
        rollout["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(next_state(), "running");

    server.json(&["rollout", "pause", &id]);
    assert_eq!(next_state(), "paused");
    server.json(&["rollout", "abort", &id]);
    assert_eq!(next_state(), "aborted");

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            panic!("--watch did not end after the rollout was aborted");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
}

#[test]
fn bad_rollout_arguments_are_exit_code_2_before_anything_is_sent() {
    let server = Server::start();
    let dead = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    };

    for args in [
        vec!["rollout", "create"],
        vec!["rollout", "create", "twelve"],
        vec!["rollout", "create", "12", "--stages", "10,5,100"],
        vec!["rollout", "create", "12", "--stages", "10,50"],
        vec!["rollout", "create", "12", "--soak", "soon"],
        vec!["rollout", "create", "12", "--max-failure-rate", "101"],
        vec!["rollout", "create", "12", "--variant", "13"],
        vec!["rollout", "create", "12", "--variant-percent", "50"],
        vec!["rollout", "create", "12", "--variant", "13", "--variant-percent", "100"],
        vec!["rollout", "create", "12", "--groups", "Beta Testers"],
        vec!["rollout", "list", "--state", "sleeping"],
        vec!["rollout", "status", "3", "--interval", "1s"],
        vec!["rollout", "status", "3", "--watch", "--interval", "0s"],
        vec!["rollout", "pause"],
        vec!["rollout", "explode", "3"],
    ] {
        let output = server.otactl().env("OTA_SERVER", &dead).args(&args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
