//! Rollouts and recalls with thousands of simulated devices against the real
//! `ota-server`: a bad release halts in its first stage, a good one walks
//! every stage to 100 %, and a recall takes the devices that installed a
//! bad release back to the previous version.

use std::net::SocketAddr;
use std::time::Duration;

use ota_core::DeviceId;
use ota_core::rollout::{Stages, cohort_bucket, stage_of};
use ota_sim::bench::{JWT_SECRET, ServerProcess, admin, image, publish};
use serde_json::{Value, json};

use super::{json_of, run_fleet, server_bin};

const FLEET: usize = 2000;

async fn start_server(settings: &[(&str, &str)]) -> (tempfile::TempDir, ServerProcess) {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&server_bin(), data.path(), settings)
        .await
        .unwrap();
    (data, server)
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let (status, answer) = admin(addr, method, path, Some("application/json"), bytes.as_deref())
        .await
        .unwrap();
    assert!((200..300).contains(&status), "{method} {path}: {status} {answer:#}");
    answer
}

/// The ids `ota-sim` gives its devices, and the rollout stage each joins
/// a rollout of `firmware_id` in.
fn stage_of_device(index: usize, firmware_id: i64, stages: &Stages) -> usize {
    let id = DeviceId::parse(&format!("sim-{index:06}")).unwrap();
    stage_of(cohort_bucket(&id, firmware_id), stages.as_slice()).unwrap()
}

/// Devices that were offered the firmware: those with an attempt at it.
async fn devices_with_attempts(addr: SocketAddr, firmware_id: i64) -> Vec<String> {
    let mut devices = Vec::new();
    let mut offset = 0;
    loop {
        let page = call(
            addr,
            "GET",
            &format!("/api/ota/admin/logs?firmware_id={firmware_id}&limit=500&offset={offset}"),
            None,
        )
        .await;
        let items = page["items"].as_array().unwrap();
        devices.extend(items.iter().map(|row| row["device_id"].as_str().unwrap().to_owned()));
        offset += items.len();
        if items.is_empty() || offset as u64 >= page["total"].as_u64().unwrap() {
            break;
        }
    }
    devices.sort();
    devices.dedup();
    devices
}

fn polling_fleet(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--check-interval",
        "2s",
        "--start-spread",
        "2s",
        "--boot-time",
        "50ms",
        "--install-time",
        "10ms",
        "--progress-step",
        "0",
        "--timeout",
        "120s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_on_thirty_percent_halts_in_its_first_stage() {
    let (_data, server) = start_server(&[]).await;
    let id = publish(server.addr, "1.1.0", &image(32 * 1024)).await.unwrap();
    let rollout = call(
        server.addr,
        "POST",
        "/api/ota/admin/rollouts",
        Some(json!({
            "firmware_id": id,
            "stages": [1, 10, 50, 100],
            "policy": {"min_successes": 5, "soak_seconds": 1, "max_failure_rate": 10, "min_finished": 5},
        })),
    )
    .await;
    let rollout_id = rollout["id"].as_i64().unwrap();
    let stages = Stages::default_stages();
    let first_stage: Vec<String> = (0..FLEET)
        .filter(|n| stage_of_device(*n, id, &stages) == 0)
        .map(|n| format!("sim-{n:06}"))
        .collect();

    // Every device polls for 14 s: long enough for the first stage to be
    // offered, fail and halt, and for every other device to ask again after.
    let args = polling_fleet(&["--rollback", "30", "--duration", "14s", "--seed", "11"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_fleet(&format!("http://{}", server.addr), FLEET, JWT_SECRET, &args);
    let report = json_of(&output);
    assert!(output.status.success(), "{report:#}");

    let status = call(
        server.addr,
        "GET",
        &format!("/api/ota/admin/rollouts/{rollout_id}"),
        None,
    )
    .await;
    assert_eq!(status["state"], "halted", "{status:#}");
    assert_eq!(status["stage"], 0, "it never left its first stage: {status:#}");
    let reason = status["state_reason"].as_str().unwrap();
    assert!(reason.contains("rolled back"), "{reason}");
    let received = devices_with_attempts(server.addr, id).await;
    assert!(
        received.iter().all(|device| first_stage.contains(device)),
        "only first-stage devices were offered the bad image: {received:?}"
    );
    let totals = &status["totals"];
    assert_eq!(
        totals["offered"].as_u64().unwrap() as usize,
        received.len(),
        "{status:#}"
    );
    assert!(totals["rolled_back"].as_u64().unwrap() >= 2, "{status:#}");
    let halts = call(
        server.addr,
        "GET",
        &format!("/api/ota/admin/audit?actor=system&action=rollout.halt&target_id={rollout_id}"),
        None,
    )
    .await;
    assert_eq!(halts["total"], 1, "{halts:#}");
    eprintln!(
        "bad release: {} of {FLEET} devices received it ({} in the first stage's cohort); \
         {} rolled back, {} confirmed, {} in progress at the halt: {reason}",
        received.len(),
        first_stage.len(),
        totals["rolled_back"],
        totals["succeeded"],
        totals["in_progress"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_release_walks_every_stage_to_completion() {
    let (_data, server) = start_server(&[("OTA_ROLLOUT_INTERVAL", "1")]).await;
    let id = publish(server.addr, "1.1.0", &image(32 * 1024)).await.unwrap();
    let rollout = call(
        server.addr,
        "POST",
        "/api/ota/admin/rollouts",
        Some(json!({
            "firmware_id": id,
            "stages": [1, 10, 50, 100],
            "policy": {"min_successes": 5, "soak_seconds": 1, "max_failure_rate": 10, "min_finished": 5},
        })),
    )
    .await;
    let rollout_id = rollout["id"].as_i64().unwrap();

    let args = polling_fleet(&["--duration", "40s", "--seed", "12"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_fleet(&format!("http://{}", server.addr), FLEET, JWT_SECRET, &args);
    let report = json_of(&output);
    assert!(output.status.success(), "{report:#}");

    // The last stage's soak may end just after the devices stop polling.
    let mut status = Value::Null;
    for _ in 0..10 {
        status = call(
            server.addr,
            "GET",
            &format!("/api/ota/admin/rollouts/{rollout_id}"),
            None,
        )
        .await;
        if status["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status["state"], "completed", "{status:#}\n{report:#}");
    let progress = status["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 4);
    for stage in progress {
        assert_eq!(stage["state"], "done", "{stage:#}");
        assert!(stage["succeeded"].as_u64().unwrap() >= 5, "{stage:#}");
        assert_eq!(stage["failed"], 0, "{stage:#}");
        assert_eq!(stage["rolled_back"], 0, "{stage:#}");
    }
    assert_eq!(
        status["totals"]["succeeded"].as_u64().unwrap() as usize,
        FLEET,
        "{status:#}"
    );
    // The server's own decisions are in the audit log: three advances, one completion.
    let decisions = call(
        server.addr,
        "GET",
        &format!("/api/ota/admin/audit?actor=system&target_type=rollout&target_id={rollout_id}"),
        None,
    )
    .await;
    let actions: Vec<&str> = decisions["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "rollout.advance",
            "rollout.advance",
            "rollout.advance",
            "rollout.complete"
        ]
    );
    // Wait for the inventory's batched writes, then every device runs 1.1.0.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fleet = call(
        server.addr,
        "GET",
        "/api/ota/admin/fleet?device_type=scales_bridge_tab5",
        None,
    )
    .await;
    assert_eq!(fleet["items"][0]["by_version"], json!({"1.1.0": FLEET}), "{fleet:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_brings_the_devices_that_installed_a_bad_release_back() {
    const DEVICES: usize = 300;
    let (_data, server) = start_server(&[]).await;
    let url = format!("http://{}", server.addr);
    let previous = publish(server.addr, "1.0.0", &image(24 * 1024)).await.unwrap();
    let bad = publish(server.addr, "1.1.0", &image(32 * 1024)).await.unwrap();
    let quick = [
        "--start-spread",
        "1s",
        "--boot-time",
        "20ms",
        "--install-time",
        "10ms",
        "--timeout",
        "60s",
    ];

    // The whole fleet installs the bad release.
    let output = run_fleet(&url, DEVICES, JWT_SECRET, &quick);
    let report = json_of(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["updated"].as_u64().unwrap() as usize, DEVICES, "{report:#}");

    let recalled = call(
        server.addr,
        "POST",
        &format!("/api/ota/admin/firmware/{bad}/recall"),
        Some(json!({"reason": "scales disconnect after an hour"})),
    )
    .await;
    assert!(recalled["recalled_at"].is_string(), "{recalled:#}");

    // The same devices, now running 1.1.0, check in: each is offered 1.0.0.
    let mut args = quick.to_vec();
    args.extend(["--current-version", "1.1.0"]);
    let output = run_fleet(&url, DEVICES, JWT_SECRET, &args);
    let report = json_of(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["updated"].as_u64().unwrap() as usize, DEVICES, "{report:#}");

    let detail = call(server.addr, "GET", &format!("/api/ota/admin/firmware/{previous}"), None).await;
    assert_eq!(
        detail["stats"]["success"].as_u64().unwrap() as usize,
        DEVICES,
        "{detail:#}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fleet = call(
        server.addr,
        "GET",
        "/api/ota/admin/fleet?device_type=scales_bridge_tab5",
        None,
    )
    .await;
    assert_eq!(fleet["items"][0]["by_version"], json!({"1.0.0": DEVICES}), "{fleet:#}");

    // Back on 1.0.0, they are offered nothing: the recalled build is never offered again.
    let output = run_fleet(&url, DEVICES, JWT_SECRET, &quick);
    let report = json_of(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["up_to_date"].as_u64().unwrap() as usize, DEVICES, "{report:#}");
}
