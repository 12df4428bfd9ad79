//! The simulator against the real `ota-server` binary: a small fleet with
//! drops, reboots, install failures and rollbacks runs to completion, and
//! the server's records agree with what the simulator says happened.

mod anti_rollback;
mod rollouts;

use std::path::PathBuf;
use std::process::{Command, Output};

use ota_sim::bench::{ADMIN_TOKEN, JWT_SECRET, ServerProcess, admin, image, publish};
use serde_json::Value;

/// The server binary, built by `cargo test --workspace` next to ours.
fn server_bin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ota-sim")).with_file_name("ota-server");
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (scripts/test.sh) or build ota-server first",
        path.display()
    );
    path
}

/// The server on a fresh data folder (dropped with the returned guard).
async fn start_server() -> (tempfile::TempDir, ServerProcess) {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&server_bin(), data.path()).await.unwrap();
    (data, server)
}

/// `ota-sim run --json` with `devices` devices against `url`, signing tokens with `secret`.
fn run_fleet(url: &str, devices: usize, secret: &str, extra: &[&str]) -> Output {
    let devices = devices.to_string();
    let mut args = vec![
        "run",
        "--server",
        url,
        "--devices",
        &devices,
        "--jwt-secret",
        secret,
        "--json",
    ];
    args.extend_from_slice(extra);
    sim(&args)
}

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ota-sim"))
        .args(args)
        .env_remove("OTA_DEVICE_JWT_SECRET")
        .env_remove("OTA_SERVER")
        .output()
        .expect("ota-sim runs")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "ota-sim printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_with_drops_and_reboots_updates_to_the_end() {
    let (_data, server) = start_server().await;
    let bytes = image(200 * 1024);
    let id = publish(server.addr, "1.1.0", &bytes).await.unwrap();
    let url = format!("http://{}", server.addr);

    let output = run_fleet(
        &url,
        200,
        JWT_SECRET,
        &[
            "--drop",
            "3",
            "--reboot",
            "15",
            "--install-fail",
            "3",
            "--rollback",
            "3",
            "--chunk-size",
            "16KiB",
            "--start-spread",
            "1s",
            "--boot-time",
            "100ms",
            "--install-time",
            "20ms",
            "--seed",
            "7",
            "--timeout",
            "120s",
        ],
    );
    let report = json_of(&output);
    assert!(
        output.status.success(),
        "{report:#}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let count = |field: &str| report[field].as_u64().unwrap();
    assert_eq!(count("errors"), 0, "{report:#}");
    assert_eq!(count("unfinished"), 0, "{report:#}");
    assert_eq!(
        count("updated") + count("install_failed") + count("rolled_back"),
        200,
        "{report:#}"
    );
    assert!(count("updated") >= 150, "{report:#}");
    assert!(count("injected_drops") > 0, "no connection was dropped: {report:#}");
    assert!(
        count("injected_reboots") > 0,
        "no device rebooted mid-download: {report:#}"
    );
    assert!(count("install_failed") > 0 && count("rolled_back") > 0, "{report:#}");
    // Each updated device downloaded the image at least once; reboots and
    // drops resume rather than start again, so few bytes are fetched twice.
    let image_bytes = bytes.len() as u64 * 200;
    assert!(count("bytes") >= image_bytes * count("updated") / 200, "{report:#}");
    assert!(count("bytes") < image_bytes * 2, "{report:#}");
    assert!(
        report["check"]["count"].as_u64().unwrap() >= 200 + count("updated"),
        "{report:#}"
    );

    // The server saw the same story.
    let (status, detail) = admin(server.addr, "GET", &format!("/api/ota/admin/firmware/{id}"), None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let stats = &detail["stats"];
    assert_eq!(stats["success"].as_u64().unwrap(), count("updated"), "{detail:#}");
    assert_eq!(
        stats["failed"].as_u64().unwrap(),
        count("install_failed") + count("rolled_back"),
        "{detail:#}"
    );
    for open in ["pending", "downloading", "installing"] {
        assert_eq!(stats[open], 0, "{open} rows left open: {detail:#}");
    }
    let (_, rollbacks) = admin(
        server.addr,
        "GET",
        &format!("/api/ota/admin/logs?firmware_id={id}&status=failed&limit=500"),
        None,
        None,
    )
    .await
    .unwrap();
    let reasons: Vec<&str> = rollbacks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["error_message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "rollback").count() as u64,
        count("rolled_back"),
        "{reasons:?}"
    );
    assert_eq!(detail["download_count"].as_u64().unwrap(), 200, "{detail:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_can_use_tokens_the_server_mints() {
    let (_data, server) = start_server().await;
    publish(server.addr, "1.1.0", &image(20 * 1024)).await.unwrap();
    let url = format!("http://{}", server.addr);

    let output = sim(&[
        "run",
        "--server",
        &url,
        "--devices",
        "30",
        "--admin-token",
        ADMIN_TOKEN,
        "--start-spread",
        "0s",
        "--json",
    ]);

    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_of(&output);
    assert_eq!(report["updated"], 30, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");

    let refused = sim(&[
        "run",
        "--server",
        &url,
        "--devices",
        "3",
        "--admin-token",
        "not-the-admin-token-123456",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("did not mint a token") && stderr.contains("401"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_the_server_refuses_end_in_error_and_fail_the_run() {
    let (_data, server) = start_server().await;
    let url = format!("http://{}", server.addr);
    let output = run_fleet(&url, 20, "not-the-server-secret-0123456789", &["--start-spread", "0s"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_of(&output);
    assert_eq!(report["errors"], 20, "{report:#}");
    assert_eq!(report["errors_by_kind"]["http 401"], 20, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_after_retries() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = run_fleet(&url, 3, JWT_SECRET, &["--start-spread", "0s", "--retries", "1"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(report["errors"], 3, "{report:#}");
    assert!(
        report["errors_by_kind"]["connection refused"].as_u64().unwrap() >= 3,
        "{report:#}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let output = sim(&["run", "--drop", "150"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("between 0 and 100"));
    let output = sim(&["run", "--jwt-secret-file", "/nonexistent/secret"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/secret"));
    let output = sim(&[
        "make-image",
        "-o",
        "/nonexistent/app.bin",
        "--min-chip-revision",
        "v3.0",
        "--max-chip-revision",
        "v1.99",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("below --min-chip-revision v3.0"));
    let output = sim(&["make-image", "-o", "app.bin", "--chip", "esp99"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a known chip"));
}

#[test]
fn every_bench_scenario_runs_in_quick_mode() {
    let out = tempfile::tempdir().unwrap();
    let table = out.path().join("bench.md");
    let output = sim(&[
        "bench",
        "--quick",
        "--server-bin",
        server_bin().to_str().unwrap(),
        "--markdown",
        table.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = std::fs::read_to_string(table).unwrap();
    for scenario in [
        "| check |",
        "| download |",
        "| slow |",
        "| status |",
        "| inventory |",
        "| upload |",
    ] {
        assert!(table.contains(scenario), "{scenario} missing:\n{table}");
    }
    // No quick run hides an error behind a figure.
    assert!(!table.contains("errors:"), "{table}");
    assert!(table.contains("| 200 (200) | acknowledged: 200 (200) |"), "{table}");
}
