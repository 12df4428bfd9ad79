//! Log retention: finished attempts age out by days or by a count per
//! device, in the background; open attempts, rollbacks and attempts of a
//! rollout under way stay.

use std::time::Duration;

use ota_server::retention::{Policy, sweep};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// `n` finished attempts of a device at a firmware, one after the other:
/// each a check that opens it and a `failed` report that ends it.
async fn failed_attempts(app: &TestApp, device_id: &str, firmware_id: i64, n: usize, message: &str) {
    for _ in 0..n {
        let offer = app.check_as(device_id, "1.0.0").await;
        assert_eq!(offer["firmware_id"], firmware_id, "{offer}");
        let response = app
            .report(
                &device_token(device_id),
                json!({"firmware_id": firmware_id, "status": "failed", "error_message": message}),
            )
            .await;
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }
}

async fn attempts_of(app: &TestApp, device_id: &str) -> Vec<Value> {
    app.logs(&format!("device_id={device_id}&limit=100")).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn the_background_sweep_keeps_the_newest_attempts_of_each_device() {
    let app = spawn_app_with(|s| {
        s.log_retention_per_device = 2;
        s.retention_interval = 1;
    })
    .await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    failed_attempts(&app, "tab5-0001", id, 5, "download: connection reset").await;
    failed_attempts(&app, "tab5-0002", id, 1, "download: connection reset").await;
    let newest: Vec<Value> = attempts_of(&app, "tab5-0001").await[..2]
        .iter()
        .map(|a| a["id"].clone())
        .collect();

    let started = std::time::Instant::now();
    while attempts_of(&app, "tab5-0001").await.len() > 2 {
        assert!(started.elapsed() < Duration::from_secs(15), "the sweep never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let kept: Vec<Value> = attempts_of(&app, "tab5-0001")
        .await
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(kept, newest, "not the newest two were kept");
    assert_eq!(attempts_of(&app, "tab5-0002").await.len(), 1);
}

#[tokio::test]
async fn attempts_older_than_the_retention_go_and_recent_ones_stay() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    failed_attempts(&app, "tab5-0001", id, 3, "download: connection reset").await;
    let old = attempts_of(&app, "tab5-0001").await[2]["id"].as_i64().unwrap();
    let long_ago = sql_timestamp(chrono::Utc::now() - chrono::Duration::days(200));
    let mut db = app.other_connection().await;
    db.execute(&format!(
        "UPDATE device_ota_log SET started_at = {long_ago}, updated_at = {long_ago}, completed_at = {long_ago} WHERE id = {old}"
    ))
    .await;

    let policy = Policy {
        days: 180,
        per_device: 0,
    };
    let deleted = sweep(app.state.store(), policy, &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(deleted, 1);
    let left: Vec<i64> = attempts_of(&app, "tab5-0001")
        .await
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&old), "the 200-day-old attempt is still there");
}

#[tokio::test]
async fn open_attempts_and_rollbacks_are_never_swept() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    failed_attempts(
        &app,
        "tab5-0001",
        id,
        1,
        "rollback: 1.0.0 runs again; 1.1.0 did not confirm itself",
    )
    .await;
    failed_attempts(&app, "tab5-0002", id, 3, "download: connection reset").await;
    let open = app.check_as("tab5-0002", "1.0.0").await;
    assert_eq!(open["update_available"], true, "{open}");
    // tab5-0001 fails at a later build too: its rollback is no longer its newest.
    let later = app.publish(Build::stable("1.2.0")).await["id"].as_i64().unwrap();
    failed_attempts(&app, "tab5-0001", later, 1, "download: connection reset").await;

    let policy = Policy { days: 0, per_device: 1 };
    let deleted = sweep(app.state.store(), policy, &CancellationToken::new())
        .await
        .unwrap();

    // tab5-0002: the open attempt stays, and so does the newest of its
    // three failures (one finished attempt is kept); the other two go.
    // tab5-0001: its one finished attempt that may go is its newest.
    assert_eq!(deleted, 2);
    let left = attempts_of(&app, "tab5-0002").await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0]["status"], "pending");
    assert_eq!(left[1]["status"], "failed");
    // A rollback keeps that firmware from the device: it stays, and does
    // not count among the finished attempts kept.
    let kept = attempts_of(&app, "tab5-0001").await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[1]["failure_reason"], "rollback");
    assert_eq!(kept[1]["firmware_id"], id);
    let offer = app.check_as("tab5-0001", "1.0.0").await;
    assert_eq!(offer["firmware_id"], later, "1.1.0 is offered again: {offer}");
}

#[tokio::test]
async fn attempts_of_a_rollout_under_way_stay_until_it_is_over() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    let created = app
        .admin_post("/api/ota/admin/rollouts", json!({"firmware_id": id, "stages": [100]}))
        .await;
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let rollout: Value = created.json().await.unwrap();
    failed_attempts(&app, "tab5-0001", id, 3, "download: connection reset").await;
    let policy = Policy { days: 0, per_device: 1 };

    let while_running = sweep(app.state.store(), policy, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(while_running, 0, "a running rollout's attempts were swept");

    let aborted = app
        .admin_post(&format!("/api/ota/admin/rollouts/{}/abort", rollout["id"]), json!({}))
        .await;
    assert!(aborted.status().is_success());
    let after_abort = sweep(app.state.store(), policy, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(after_abort, 2);
    assert_eq!(attempts_of(&app, "tab5-0001").await.len(), 1);
}

#[test]
fn nonsense_retention_settings_are_refused() {
    for (name, value) in [
        ("OTA_LOG_RETENTION_DAYS", "36501"),
        ("OTA_RETENTION_INTERVAL", "0"),
        ("OTA_LOG_RETENTION_PER_DEVICE", "-1"),
    ] {
        let env = |asked: &str| (asked == name).then(|| value.to_owned());
        let loaded = ota_server::config::Settings::load(None, &env);
        assert!(loaded.is_err(), "{name}={value} was taken");
    }
}

#[tokio::test]
async fn a_sweep_deletes_more_than_one_batch() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    let long_ago = sql_timestamp(chrono::Utc::now() - chrono::Duration::days(400));
    let rows: Vec<String> = (0..2500)
        .map(|n| {
            format!(
                "('old-{}', {id}, '1.1.0', 'failed', {long_ago}, {long_ago}, {long_ago})",
                n % 7
            )
        })
        .collect();
    let mut db = app.other_connection().await;
    let inserted = db
        .execute(&format!(
            "INSERT INTO device_ota_log (device_id, firmware_id, to_version, status, started_at, updated_at, completed_at) \
             VALUES {}",
            rows.join(", ")
        ))
        .await;
    assert_eq!(inserted, 2500);
    failed_attempts(&app, "tab5-0001", id, 1, "download: connection reset").await;

    let policy = Policy {
        days: 180,
        per_device: 0,
    };
    let deleted = sweep(app.state.store(), policy, &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(deleted, 2500);
    assert_eq!(db.count("SELECT COUNT(*) FROM device_ota_log").await, 1);
}
