//! Fleets with anti-rollback against an `esp-app` device type, with images
//! made by `ota-sim make-image`: the server never offers a device an image
//! below its eFuse counter, and the simulator counts it when one is.

use std::path::Path;
use std::time::Duration;

use ota_sim::bench::{JWT_SECRET, admin, create_device_type, publish_to};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{json_of, run_fleet, sim, start_server};

const TAB5: &str = "scales_bridge_tab5";

/// `ota-sim make-image` for the Tab5's ESP32-P4; returns the file's bytes.
fn make_image(dir: &Path, version: &str, secure_version: u32) -> Vec<u8> {
    let path = dir.join(format!("app-{version}.bin"));
    let secure_version = secure_version.to_string();
    let output = sim(&[
        "make-image",
        "-o",
        path.to_str().unwrap(),
        "--chip",
        "esp32p4",
        "--version",
        version,
        "--secure-version",
        &secure_version,
        "--size",
        "64KiB",
        "--min-chip-revision",
        "v1.0",
        "--max-chip-revision",
        "v1.99",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bytes = std::fs::read(&path).unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(&hex::encode(Sha256::digest(&bytes))),
        "the SHA-256 is not printed:\n{printed}"
    );
    bytes
}

/// Runs `ota-sim run --json` for `devices` Tab5s; returns its exit code and report.
fn run_tab5s(url: &str, devices: usize, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec![
        "--device-type",
        TAB5,
        "--start-spread",
        "0s",
        "--boot-time",
        "50ms",
        "--install-time",
        "10ms",
        "--timeout",
        "60s",
    ];
    args.extend_from_slice(extra);
    let output = run_fleet(url, devices, JWT_SECRET, &args);
    (output.status.code(), json_of(&output))
}

/// The inventory's records of the Tab5s, once `expected` of them report a
/// counter (check-ins are written about once a second).
async fn inventory_with_counters(addr: std::net::SocketAddr, expected: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for _ in 0..50 {
        let (status, page) = admin(
            addr,
            "GET",
            &format!("/api/ota/admin/devices?device_type={TAB5}&limit=500"),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{page:#}");
        items = page["items"].as_array().unwrap().clone();
        if items
            .iter()
            .filter(|device| !device["secure_version"].is_null())
            .count()
            >= expected
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_with_anti_rollback_are_never_offered_an_image_below_their_counter() {
    let (_data, server) = start_server().await;
    let work = tempfile::tempdir().unwrap();
    let url = format!("http://{}", server.addr);
    create_device_type(
        server.addr,
        &json!({"name": TAB5, "image_format": "esp-app", "chip": "esp32p4",
                "min_chip_revision": "v1.0", "max_chip_revision": "v1.99"}),
    )
    .await
    .unwrap();
    publish_to(server.addr, TAB5, None, &make_image(work.path(), "1.1.0", 2))
        .await
        .unwrap();

    // A fleet with anti-rollback updates, and confirming 1.1.0 raises its counter.
    let (code, first) = run_tab5s(&url, 20, &["--id-prefix", "arb-", "--secure-version", "1"]);
    assert_eq!(code, Some(0), "{first:#}");
    assert_eq!(first["updated"], 20, "{first:#}");
    assert_eq!(first["bricked"], 0, "{first:#}");
    assert_eq!(first["secure_versions"], json!({"2": 20}), "{first:#}");
    let devices = inventory_with_counters(server.addr, 20).await;
    assert_eq!(devices.len(), 20);
    for device in devices {
        assert_eq!(device["secure_version"], 2, "{device:#}");
        assert_eq!(device["current_version"], "1.1.0", "{device:#}");
    }

    // 1.2.0 comes from a branch whose secure_version was never raised.
    let unraised = publish_to(server.addr, TAB5, None, &make_image(work.path(), "1.2.0", 1))
        .await
        .unwrap();
    let (code, again) = run_tab5s(
        &url,
        20,
        &[
            "--id-prefix",
            "arb-",
            "--current-version",
            "1.1.0",
            "--secure-version",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "{again:#}");
    assert_eq!(again["up_to_date"], 20, "{again:#}");
    assert_eq!(again["bricked"], 0, "{again:#}");
    assert_eq!(again["bytes"], 0, "{again:#}");

    // Devices without anti-rollback take it.
    let (code, plain) = run_tab5s(&url, 20, &["--id-prefix", "plain-", "--current-version", "1.1.0"]);
    assert_eq!(code, Some(0), "{plain:#}");
    assert_eq!(plain["updated"], 20, "{plain:#}");
    assert_eq!(plain["anti_rollback"], false, "{plain:#}");
    let (_, detail) = admin(
        server.addr,
        "GET",
        &format!("/api/ota/admin/firmware/{unraised}"),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(detail["stats"]["success"], 20, "{detail:#}");
    assert_eq!(detail["download_count"], 20, "{detail:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_type_holds_back_an_esp_image_below_the_counter_too() {
    // A raw device type does not check its uploads against rules, but the
    // server still reads an ESP image's secure_version and never offers it
    // to a device with a higher counter: the run bricks nothing.
    let (_data, server) = start_server().await;
    let work = tempfile::tempdir().unwrap();
    let url = format!("http://{}", server.addr);
    create_device_type(server.addr, &json!({"name": TAB5, "image_format": "raw"}))
        .await
        .unwrap();
    publish_to(server.addr, TAB5, Some("1.1.0"), &make_image(work.path(), "1.1.0", 1))
        .await
        .unwrap();

    let (code, held) = run_tab5s(&url, 5, &["--secure-version", "2"]);
    assert_eq!(code, Some(0), "{held:#}");
    assert_eq!(held["up_to_date"], 5, "{held:#}");
    assert_eq!(held["bricked"], 0, "{held:#}");

    let (code, taken) = run_tab5s(&url, 5, &["--id-prefix", "low-", "--secure-version", "1"]);
    assert_eq!(code, Some(0), "{taken:#}");
    assert_eq!(taken["updated"], 5, "{taken:#}");
    assert_eq!(taken["bricked"], 0, "{taken:#}");
}
