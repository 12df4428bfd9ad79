//! Fleet control (issue 7): the inventory and its filters, the fleet
//! summary, success and rollback read off check-ins, failure reasons,
//! groups, pins, recalls, rollouts (staged, self-advancing, self-halting,
//! A/B) and the audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use ota_core::esp::Chip;
use ota_core::esp::build::AppImageSpec;
use ota_server::config::Secret;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::esp_images::upload_image;
use crate::helpers::*;

const ALICE_TOKEN: &str = "alice-token-0123456789";
const ROLLBACK: &str = "rollback: the new app did not confirm itself";

// ---------------------------------------------------------------------------
// Helpers of this file

fn id_of(record: &Value) -> i64 {
    record["id"].as_i64().unwrap_or_else(|| panic!("no id in {record}"))
}

/// The body of a successful answer (any 2xx), failing with the body otherwise.
async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn get(app: &TestApp, path: &str) -> Value {
    ok_json(app.admin_get(path).await).await
}

async fn admin_put(app: &TestApp, path: &str, body: Value) -> Response {
    app.client
        .put(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A request with alice's named admin token.
fn as_alice(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(ALICE_TOKEN)
}

/// `check` with a full body for a device of the test type; must answer 200.
async fn ask(app: &TestApp, device_id: &str, body: Value) -> Value {
    let mut request = json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"});
    for (key, value) in body.as_object().unwrap() {
        request[key] = value.clone();
    }
    ok_json(app.check(&device_token(device_id), request).await).await
}

/// The firmware a check offers, or `None` for no update.
async fn offered(app: &TestApp, device_id: &str, version: &str) -> Option<i64> {
    let answer = app.check_as(device_id, version).await;
    match answer["update_available"].as_bool() {
        Some(true) => Some(answer["firmware_id"].as_i64().unwrap()),
        Some(false) => None,
        None => panic!("not a check answer: {answer}"),
    }
}

/// A status report that must be accepted; the log row.
async fn report(app: &TestApp, device_id: &str, firmware_id: i64, status: &str, error: Option<&str>) -> Value {
    let mut body = json!({"firmware_id": firmware_id, "status": status});
    if let Some(error) = error {
        body["error_message"] = json!(error);
    }
    ok_json(app.report(&device_token(device_id), body).await).await
}

async fn install(app: &TestApp, device_id: &str, firmware_id: i64) -> Value {
    report(app, device_id, firmware_id, "downloading", None).await;
    report(app, device_id, firmware_id, "installing", None).await;
    report(app, device_id, firmware_id, "success", None).await
}

async fn roll_back(app: &TestApp, device_id: &str, firmware_id: i64) -> Value {
    report(app, device_id, firmware_id, "downloading", None).await;
    report(app, device_id, firmware_id, "installing", None).await;
    report(app, device_id, firmware_id, "failed", Some(ROLLBACK)).await
}

async fn publish(app: &TestApp, version: &str) -> i64 {
    id_of(&app.publish(Build::stable(version)).await)
}

/// Publishes a stable ESP-IDF app image with this anti-rollback counter
/// (the test device type is `raw`: the image's counter is kept anyway).
async fn publish_secure(app: &TestApp, version: &str, secure_version: u32) -> i64 {
    let bytes = AppImageSpec::new(Chip::Esp32p4)
        .chip_revisions(100, 199)
        .version(&format!("v{version}"))
        .project_name("scales_bridge")
        .secure_version(secure_version)
        .target_len(8 * 1024)
        .image();
    let response = upload_image(
        app,
        bytes,
        &[("version", version), ("register", "true"), ("is_stable", "true")],
    )
    .await;
    let uploaded = ok_json(response).await;
    assert_eq!(uploaded["firmware"]["secure_version"], secure_version, "{uploaded}");
    id_of(&uploaded["firmware"])
}

/// Polls a rollout until `ready`.
async fn wait_rollout(app: &TestApp, id: i64, ready: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = get(app, &format!("/api/ota/admin/rollouts/{id}")).await;
        if ready(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rollout {id} never got there; last seen as {last}");
}

/// The device ids of `GET /api/ota/admin/devices?{query}`.
async fn listed(app: &TestApp, query: &str) -> Vec<String> {
    let page = get(app, &format!("/api/ota/admin/devices?{query}")).await;
    let ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page["total"], ids.len(), "{query}: {page}");
    ids
}

async fn create_group(app: &TestApp, name: &str) -> Value {
    let response = app.admin_post("/api/ota/admin/groups", json!({"name": name})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn add_members(app: &TestApp, group: &str, body: Value) -> Value {
    ok_json(
        app.admin_post(&format!("/api/ota/admin/groups/{group}/members"), body)
            .await,
    )
    .await
}

async fn create_rollout(app: &TestApp, body: Value) -> Value {
    let response = app.admin_post("/api/ota/admin/rollouts", body).await;
    let status = response.status();
    let rollout = ok_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{rollout}");
    rollout
}

async fn act(app: &TestApp, id: i64, action: &str, body: Value) -> Response {
    app.admin_post(&format!("/api/ota/admin/rollouts/{id}/{action}"), body)
        .await
}

async fn audit(app: &TestApp, query: &str) -> Value {
    get(app, &format!("/api/ota/admin/audit?limit=500&{query}")).await
}

fn actions(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

fn counts(value: &Value) -> [i64; 5] {
    ["offered", "in_progress", "succeeded", "failed", "rolled_back"]
        .map(|k| value[k].as_i64().unwrap_or_else(|| panic!("no {k} in {value}")))
}

fn other_type_token(device_id: &str) -> String {
    sign_claims(json!({"sub": device_id, "device_type": OTHER_DEVICE_TYPE, "exp": now() + 3600}))
}

/// Moves a device's `last_seen` back, as if it had been silent for `days`.
async fn silent_for(app: &TestApp, device_id: &str, days: i64) {
    let at = sql_timestamp(chrono::Utc::now() - chrono::Duration::days(days));
    let mut db = app.other_connection().await;
    let done = db
        .execute(&format!(
            "UPDATE devices SET last_seen = {at} WHERE device_id = '{device_id}'"
        ))
        .await;
    assert_eq!(done, 1);
}

// ---------------------------------------------------------------------------
// 1. Inventory

#[tokio::test]
async fn a_check_and_status_reports_fill_the_device_row() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;

    let offer = ask(
        &app,
        "inv-1",
        json!({"build_number": 7, "channel": "beta", "secure_version": 3}),
    )
    .await;
    assert_eq!(offer["firmware_id"], firmware);
    let device = app.wait_for_device("inv-1", |_| true).await;
    assert_eq!(device["device_type"], DEVICE_TYPE);
    assert_eq!(device["current_version"], "1.0.0");
    assert_eq!(device["build_number"], 7);
    assert_eq!(device["channel"], "beta");
    assert_eq!(device["secure_version"], 3);
    assert_eq!(device["last_status"], Value::Null);
    assert_eq!(device["last_error"], Value::Null);
    assert_eq!(device["pinned_firmware_id"], Value::Null);

    report(&app, "inv-1", firmware, "downloading", None).await;
    let device = get(&app, "/api/ota/admin/devices/inv-1").await;
    assert_eq!(device["last_status"], "downloading");
    report(
        &app,
        "inv-1",
        firmware,
        "failed",
        Some("flash: write failed at 0x10000"),
    )
    .await;
    let device = get(&app, "/api/ota/admin/devices/inv-1").await;
    assert_eq!(device["last_status"], "failed");
    assert_eq!(device["last_error"], "flash: write failed at 0x10000");
    assert_eq!(device["current_version"], "1.0.0");

    // A retry opens a new attempt; a success clears the error.
    install(&app, "inv-1", firmware).await;
    let device = get(&app, "/api/ota/admin/devices/inv-1").await;
    assert_eq!(device["last_status"], "success");
    assert_eq!(device["last_error"], Value::Null);
    assert_eq!(device["current_version"], "1.1.0");
    assert_eq!(device["secure_version"], 3);

    let history = device["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{device}");
    assert_eq!(history[0]["status"], "success", "newest first");
    assert_eq!(history[1]["status"], "failed");
    assert_eq!(history[1]["failure_reason"], "flash");
    assert!(history[0]["id"].as_i64() > history[1]["id"].as_i64());
    assert_eq!(device["groups"], json!([]));
}

/// The first check of a device and a status report right after it (the
/// usual flow: check, get an offer, start downloading at once) must not
/// lose what the check said about the device.
#[tokio::test]
async fn a_report_right_after_the_first_check_keeps_what_the_check_said() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;

    ask(&app, "race-1", json!({"build_number": 7, "channel": "beta"})).await;
    report(&app, "race-1", firmware, "downloading", None).await;

    let device = app
        .wait_for_device("race-1", |d| d["build_number"] == 7 && d["channel"] == "beta")
        .await;
    assert_eq!(device["last_status"], "downloading");
}

/// Four devices of the test type and one of the other: what the filter tests look at.
async fn a_small_fleet(app: &TestApp) -> i64 {
    let firmware = publish(app, "1.1.0").await;
    ask(app, "tab5-a1", json!({"current_version": "1.0.0"})).await;
    ask(app, "tab5-a2", json!({"current_version": "1.1.0", "channel": "beta"})).await;
    ask(app, "tab5-b3", json!({"current_version": "1.0.0"})).await;
    ask(app, "tab5-old", json!({"current_version": "0.9.0"})).await;
    let other = app
        .check(
            &other_type_token("other-1"),
            json!({"device_type": OTHER_DEVICE_TYPE, "current_version": "2.0.0"}),
        )
        .await;
    assert_eq!(other.status(), StatusCode::OK);
    for id in ["tab5-a1", "tab5-a2", "tab5-b3", "tab5-old", "other-1"] {
        app.wait_for_device(id, |_| true).await;
    }
    report(app, "tab5-b3", firmware, "failed", Some("download: timed out")).await;
    firmware
}

#[tokio::test]
async fn the_inventory_filters_combine() {
    let app = spawn_app().await;
    let firmware = a_small_fleet(&app).await;
    silent_for(&app, "tab5-old", 10).await;
    create_group(&app, "beta-testers").await;
    add_members(&app, "beta-testers", json!({"device_ids": ["tab5-a1", "tab5-old"]})).await;
    let pin = admin_put(
        &app,
        "/api/ota/admin/devices/tab5-a2/pin",
        json!({"firmware_id": firmware}),
    )
    .await;
    assert_eq!(pin.status(), StatusCode::OK);

    assert_eq!(
        listed(&app, "").await,
        ["other-1", "tab5-a1", "tab5-a2", "tab5-b3", "tab5-old"]
    );
    assert_eq!(
        listed(&app, &format!("device_type={DEVICE_TYPE}")).await,
        ["tab5-a1", "tab5-a2", "tab5-b3", "tab5-old"]
    );
    assert_eq!(
        listed(&app, &format!("device_type={OTHER_DEVICE_TYPE}")).await,
        ["other-1"]
    );
    assert_eq!(listed(&app, "version=1.0.0").await, ["tab5-a1", "tab5-b3"]);
    assert_eq!(listed(&app, "version=v1.1.0").await, ["tab5-a2"]);
    assert_eq!(listed(&app, "channel=beta").await, ["tab5-a2"]);
    assert_eq!(listed(&app, "status=failed").await, ["tab5-b3"]);
    assert_eq!(listed(&app, "search=-a").await, ["tab5-a1", "tab5-a2"]);
    assert_eq!(listed(&app, "search=5-b").await, ["tab5-b3"]);
    assert_eq!(listed(&app, "search=%25").await, Vec::<String>::new(), "% is literal");
    assert_eq!(listed(&app, "group=beta-testers").await, ["tab5-a1", "tab5-old"]);
    assert_eq!(listed(&app, "pinned=true").await, ["tab5-a2"]);
    assert_eq!(
        listed(&app, "pinned=false").await,
        ["other-1", "tab5-a1", "tab5-b3", "tab5-old"]
    );
    assert_eq!(listed(&app, "not_seen_days=7").await, ["tab5-old"]);
    assert_eq!(
        listed(&app, "seen_within_days=7").await,
        ["other-1", "tab5-a1", "tab5-a2", "tab5-b3"]
    );
    assert_eq!(
        listed(&app, "group=beta-testers&seen_within_days=7&version=1.0.0").await,
        ["tab5-a1"]
    );
    assert_eq!(
        listed(&app, "group=beta-testers&status=failed").await,
        Vec::<String>::new()
    );

    let page = get(
        &app,
        &format!("/api/ota/admin/devices?device_type={DEVICE_TYPE}&limit=2&offset=1"),
    )
    .await;
    assert_eq!(page["total"], 4);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tab5-a2", "tab5-b3"]);
}

#[tokio::test]
async fn a_bad_filter_value_is_422_naming_it() {
    let app = spawn_app().await;

    for (query, field) in [
        ("status=done", "status"),
        ("version=not-a-version", "version"),
        ("device_type=Bad%20Type", "device_type"),
        ("channel=Bad%20Channel", "channel"),
        ("group=Bad%20Group", "group"),
        ("not_seen_days=-1", "not_seen_days"),
        ("seen_within_days=100000", "seen_within_days"),
    ] {
        let response = app.admin_get(&format!("/api/ota/admin/devices?{query}")).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{query}: {problem}");
    }
}

#[tokio::test]
async fn a_device_shows_its_groups_and_its_history_newest_first() {
    let app = spawn_app().await;
    let first = publish(&app, "1.1.0").await;
    app.check_as("hist-1", "1.0.0").await;
    app.wait_for_device("hist-1", |_| true).await;
    install(&app, "hist-1", first).await;
    let second = publish(&app, "1.2.0").await;
    assert_eq!(offered(&app, "hist-1", "1.1.0").await, Some(second));
    for group in ["zeta", "alpha"] {
        create_group(&app, group).await;
        add_members(&app, group, json!({"device_ids": ["hist-1"]})).await;
    }

    let device = get(&app, "/api/ota/admin/devices/hist-1").await;

    assert_eq!(device["device_id"], "hist-1");
    assert_eq!(device["groups"], json!(["alpha", "zeta"]));
    let history = device["history"].as_array().unwrap();
    let seen: Vec<(i64, &str)> = history
        .iter()
        .map(|h| (h["firmware_id"].as_i64().unwrap(), h["status"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [(second, "pending"), (first, "success")]);
    assert_eq!(history[0]["from_version"], "1.1.0");
    assert_eq!(history[0]["to_version"], "1.2.0");
    assert_problem(
        app.admin_get("/api/ota/admin/devices/nobody-here").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn the_fleet_summary_counts_versions_statuses_silence_and_pins() {
    let app = spawn_app().await;
    let firmware = a_small_fleet(&app).await;
    silent_for(&app, "tab5-old", 10).await;
    ok_json(
        admin_put(
            &app,
            "/api/ota/admin/devices/tab5-a1/pin",
            json!({"firmware_id": firmware}),
        )
        .await,
    )
    .await;

    let fleet = get(&app, "/api/ota/admin/fleet").await;

    assert_eq!(fleet["total"], 2, "{fleet}");
    let tab5 = fleet["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["device_type"] == DEVICE_TYPE)
        .unwrap();
    assert_eq!(tab5["devices"], 4);
    assert_eq!(tab5["by_version"], json!({"0.9.0": 1, "1.0.0": 2, "1.1.0": 1}));
    assert_eq!(tab5["by_status"], json!({"failed": 1, "none": 3}));
    assert_eq!(tab5["not_seen_days"], 7);
    assert_eq!(tab5["not_seen"], 1);
    assert_eq!(tab5["pinned"], 1);

    let other = get(&app, &format!("/api/ota/admin/fleet?device_type={OTHER_DEVICE_TYPE}")).await;
    assert_eq!(other["total"], 1);
    assert_eq!(other["items"][0]["device_type"], OTHER_DEVICE_TYPE);
    assert_eq!(other["items"][0]["by_version"], json!({"2.0.0": 1}));
    assert_eq!(other["items"][0]["pinned"], 0);

    let longer = get(
        &app,
        &format!("/api/ota/admin/fleet?device_type={DEVICE_TYPE}&not_seen_days=30"),
    )
    .await;
    assert_eq!(longer["items"][0]["not_seen"], 0);
    assert_eq!(longer["items"][0]["not_seen_days"], 30);
    let problem = assert_problem(
        app.admin_get("/api/ota/admin/fleet?not_seen_days=-3").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["field"], "not_seen_days");
}

// ---------------------------------------------------------------------------
// 2. Success and rollback read off a check-in

#[tokio::test]
async fn a_device_that_checks_in_running_the_new_version_succeeded() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    app.check_as("quiet-1", "1.0.0").await;
    report(&app, "quiet-1", firmware, "downloading", None).await;
    report(&app, "quiet-1", firmware, "installing", None).await;

    // It rebooted into the new image and never said "success".
    assert_eq!(offered(&app, "quiet-1", "1.1.0").await, None);

    // The row and the history are two reads: wait for the commit to show in both.
    let device = app
        .wait_for_device("quiet-1", |d| {
            d["history"][0]["status"] == "success" && d["last_status"] == "success"
        })
        .await;
    assert_eq!(device["current_version"], "1.1.0");
    assert_eq!(device["history"][0]["firmware_id"], firmware);
    assert!(device["history"][0]["completed_at"].is_string(), "{device}");
}

#[tokio::test]
async fn a_device_that_checks_in_running_its_old_version_after_installing_rolled_back() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    app.check_as("back-1", "1.0.0").await;
    report(&app, "back-1", firmware, "downloading", None).await;
    report(&app, "back-1", firmware, "installing", None).await;

    // The bootloader went back to 1.0.0.
    app.check_as("back-1", "1.0.0").await;

    let device = app
        .wait_for_device("back-1", |d| {
            d["history"][0]["status"] == "failed" && d["last_status"] == "failed"
        })
        .await;
    let attempt = &device["history"][0];
    assert_eq!(attempt["failure_reason"], "rollback", "{attempt}");
    assert!(
        attempt["error_message"].as_str().unwrap().starts_with("rollback"),
        "{attempt}"
    );
    assert_eq!(device["last_status"], "failed");
    assert_eq!(device["current_version"], "1.0.0");
    // Never offered to it again, still to the others.
    assert_eq!(offered(&app, "back-1", "1.0.0").await, None);
    assert_eq!(offered(&app, "back-2", "1.0.0").await, Some(firmware));
}

#[tokio::test]
async fn a_device_that_reported_a_rollback_is_not_offered_that_firmware_again() {
    let app = spawn_app().await;
    let older = publish(&app, "1.1.0").await;
    let newer = publish(&app, "1.2.0").await;
    app.check_as("back-3", "1.0.0").await;

    roll_back(&app, "back-3", newer).await;

    assert_eq!(offered(&app, "back-3", "1.0.0").await, Some(older));
    assert_eq!(offered(&app, "back-4", "1.0.0").await, Some(newer));
}

// ---------------------------------------------------------------------------
// 3. Failure reasons

#[tokio::test]
async fn a_failure_reason_is_read_off_the_error_message() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;

    for (device, message, reason) in [
        ("why-1", Some("rollback: app did not confirm"), "rollback"),
        ("why-2", Some("hash_mismatch: expected ab12, got cd34"), "hash_mismatch"),
        ("why-3", Some("the cat sat on the board"), "other"),
        ("why-4", None, "other"),
    ] {
        app.check_as(device, "1.0.0").await;
        report(&app, device, firmware, "downloading", None).await;
        let row = report(&app, device, firmware, "failed", message).await;
        assert_eq!(row["failure_reason"], reason, "{device}: {row}");
        let logs = app.logs(&format!("device_id={device}")).await;
        assert_eq!(logs["items"][0]["failure_reason"], reason, "{device}");
    }
    // A success has none.
    app.check_as("why-5", "1.0.0").await;
    let row = install(&app, "why-5", firmware).await;
    assert_eq!(row["failure_reason"], Value::Null);
}

// ---------------------------------------------------------------------------
// 4. Groups

#[tokio::test]
async fn groups_are_created_once_with_valid_names_and_404_when_unknown() {
    let app = spawn_app().await;

    let response = app
        .admin_post(
            "/api/ota/admin/groups",
            json!({"name": "beta-testers", "description": "early birds"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let group: Value = response.json().await.unwrap();
    assert_eq!(group["name"], "beta-testers");
    assert_eq!(group["description"], "early birds");
    assert_eq!(group["members"], 0);

    let again = app
        .admin_post("/api/ota/admin/groups", json!({"name": "beta-testers"}))
        .await;
    assert_problem(again, StatusCode::CONFLICT).await;
    for bad in ["Beta Testers", "", "a/b", &"x".repeat(65)] {
        let response = app.admin_post("/api/ota/admin/groups", json!({"name": bad})).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "name", "{bad}: {problem}");
    }
    let unknown_field = app
        .admin_post("/api/ota/admin/groups", json!({"name": "x", "colour": "red"}))
        .await;
    assert_problem(unknown_field, StatusCode::UNPROCESSABLE_ENTITY).await;

    let patched = ok_json(
        app.admin_patch(
            "/api/ota/admin/groups/beta-testers",
            json!({"description": "late birds"}),
        )
        .await,
    )
    .await;
    assert_eq!(patched["description"], "late birds");
    let untouched = ok_json(app.admin_patch("/api/ota/admin/groups/beta-testers", json!({})).await).await;
    assert_eq!(
        untouched["description"], "late birds",
        "an absent field is left as it is"
    );
    let cleared = ok_json(
        app.admin_patch("/api/ota/admin/groups/beta-testers", json!({"description": null}))
            .await,
    )
    .await;
    assert_eq!(cleared["description"], Value::Null, "null clears it");
    let list = get(&app, "/api/ota/admin/groups").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["name"], "beta-testers");

    for response in [
        app.admin_get("/api/ota/admin/groups/nope").await,
        app.admin_get("/api/ota/admin/groups/nope/members").await,
        app.admin_patch("/api/ota/admin/groups/nope", json!({"description": "x"}))
            .await,
        app.admin_delete("/api/ota/admin/groups/nope").await,
        app.admin_post("/api/ota/admin/groups/nope/members", json!({"device_ids": ["d-1"]}))
            .await,
        app.admin_post(
            "/api/ota/admin/groups/nope/members/remove",
            json!({"device_ids": ["d-1"]}),
        )
        .await,
    ] {
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn members_are_added_by_id_or_filter_removed_and_listed() {
    let app = spawn_app().await;
    for (device, version) in [
        ("g-1", "1.0.0"),
        ("g-2", "1.0.0"),
        ("g-3", "1.0.0"),
        ("g-4", "1.0.1"),
        ("g-5", "1.0.1"),
    ] {
        app.check_as(device, version).await;
    }
    for device in ["g-1", "g-2", "g-3", "g-4", "g-5"] {
        app.wait_for_device(device, |_| true).await;
    }
    create_group(&app, "beta").await;

    let added = add_members(&app, "beta", json!({"device_ids": ["g-1", "g-2"]})).await;
    assert_eq!(added, json!({"group": "beta", "changed": 2, "members": 2}));
    let again = add_members(&app, "beta", json!({"device_ids": ["g-2", "g-3"]})).await;
    assert_eq!(
        (again["changed"].as_i64(), again["members"].as_i64()),
        (Some(1), Some(3))
    );
    let by_filter = add_members(&app, "beta", json!({"filter": {"version": "1.0.1", "search": "-5"}})).await;
    assert_eq!(
        (by_filter["changed"].as_i64(), by_filter["members"].as_i64()),
        (Some(1), Some(4))
    );
    let removed = ok_json(
        app.admin_post(
            "/api/ota/admin/groups/beta/members/remove",
            json!({"device_ids": ["g-1", "g-4"]}),
        )
        .await,
    )
    .await;
    assert_eq!(removed, json!({"group": "beta", "changed": 1, "members": 3}));
    let removed_by_filter = ok_json(
        app.admin_post(
            "/api/ota/admin/groups/beta/members/remove",
            json!({"filter": {"version": "1.0.1"}}),
        )
        .await,
    )
    .await;
    assert_eq!(removed_by_filter["changed"], 1);
    add_members(&app, "beta", json!({"device_ids": ["g-5", "not-seen-yet"]})).await;

    let members = get(&app, "/api/ota/admin/groups/beta/members").await;
    let ids: Vec<&str> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g-2", "g-3", "g-5"], "members known to the inventory");
    assert_eq!(get(&app, "/api/ota/admin/groups/beta").await["members"], 4);
    assert_eq!(get(&app, "/api/ota/admin/devices/g-2").await["groups"], json!(["beta"]));

    for (body, field) in [
        (json!({}), Value::Null),
        (
            json!({"device_ids": ["g-1"], "filter": {"version": "1.0.0"}}),
            Value::Null,
        ),
        (json!({"filter": {}}), json!("filter")),
        (json!({"filter": {"status": "done"}}), json!("status")),
        (json!({"device_ids": ["has space"]}), json!("device_ids")),
    ] {
        let response = app.admin_post("/api/ota/admin/groups/beta/members", body.clone()).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        if !field.is_null() {
            assert_eq!(problem["field"], field, "{body}: {problem}");
        }
    }
}

#[tokio::test]
async fn a_firmware_for_a_group_is_offered_to_its_members_only_and_holds_the_group() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    create_group(&app, "canary").await;
    add_members(&app, "canary", json!({"device_ids": ["bird-1"]})).await;

    let patched = ok_json(
        app.admin_patch(
            &format!("/api/ota/admin/firmware/{firmware}"),
            json!({"target_groups": ["canary"]}),
        )
        .await,
    )
    .await;
    assert_eq!(patched["target_groups"], json!(["canary"]));

    assert_eq!(offered(&app, "bird-1", "1.0.0").await, Some(firmware));
    assert_eq!(offered(&app, "cat-1", "1.0.0").await, None);
    let unknown = app
        .admin_patch(
            &format!("/api/ota/admin/firmware/{firmware}"),
            json!({"target_groups": ["no-such-group"]}),
        )
        .await;
    assert_problem(unknown, StatusCode::NOT_FOUND).await;

    let held = assert_problem(
        app.admin_delete("/api/ota/admin/groups/canary").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(held["detail"].as_str().unwrap().contains("firmware"), "{held}");

    ok_json(
        app.admin_patch(
            &format!("/api/ota/admin/firmware/{firmware}"),
            json!({"target_groups": []}),
        )
        .await,
    )
    .await;
    assert_eq!(offered(&app, "cat-1", "1.0.0").await, Some(firmware));
    let deleted = ok_json(app.admin_delete("/api/ota/admin/groups/canary").await).await;
    assert_eq!(deleted["name"], "canary");
    assert_eq!(deleted["members"], 1);
    assert_problem(
        app.admin_get("/api/ota/admin/groups/canary").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(get(&app, "/api/ota/admin/groups").await["total"], 0);
}

// ---------------------------------------------------------------------------
// 5. Pins

#[tokio::test]
async fn a_pinned_device_is_offered_its_pin_and_nothing_else() {
    let app = spawn_app().await;
    let v100 = publish(&app, "1.0.0").await;
    let v110 = publish(&app, "1.1.0").await;
    let v120 = publish(&app, "1.2.0").await;
    assert_eq!(offered(&app, "pin-1", "1.2.0").await, None);
    assert_eq!(offered(&app, "pin-2", "1.0.0").await, Some(v120));
    app.wait_for_device("pin-1", |_| true).await;
    app.wait_for_device("pin-2", |_| true).await;

    // Back to an older version: a deliberate downgrade.
    let pinned = ok_json(admin_put(&app, "/api/ota/admin/devices/pin-1/pin", json!({"firmware_id": v100})).await).await;
    assert_eq!(pinned["device_id"], "pin-1");
    assert_eq!(pinned["pinned_firmware_id"], v100);
    let offer = app.check_as("pin-1", "1.2.0").await;
    assert_eq!(offer["firmware_id"], v100, "{offer}");
    assert_eq!(offer["version"], "1.0.0");
    assert_eq!(offer["is_downgrade"], true);
    assert_eq!(offered(&app, "pin-1", "1.0.0").await, None, "it runs its pin");

    // Pinned to what it runs: nothing newer is offered.
    ok_json(admin_put(&app, "/api/ota/admin/devices/pin-2/pin", json!({"version": "1.0.0"})).await).await;
    assert_eq!(offered(&app, "pin-2", "1.0.0").await, None);
    // By version, to a newer one: an ordinary update.
    let by_version =
        ok_json(admin_put(&app, "/api/ota/admin/devices/pin-2/pin", json!({"version": "v1.1.0"})).await).await;
    assert_eq!(by_version["pinned_firmware_id"], v110);
    let offer = app.check_as("pin-2", "1.0.0").await;
    assert_eq!(offer["firmware_id"], v110);
    assert_eq!(offer["is_downgrade"], false);

    // Unpinned: the newest again.
    let unpinned = ok_json(app.admin_delete("/api/ota/admin/devices/pin-2/pin").await).await;
    assert_eq!(unpinned["pinned_firmware_id"], Value::Null);
    ok_json(app.admin_delete("/api/ota/admin/devices/pin-1/pin").await).await;
    let offer = app.check_as("pin-2", "1.0.0").await;
    assert_eq!(offer["firmware_id"], v120);
    assert_eq!(offer["is_downgrade"], false);
    assert_eq!(offered(&app, "pin-1", "1.2.0").await, None);
}

#[tokio::test]
async fn a_pin_is_refused_when_the_device_could_not_take_it() {
    let app = spawn_app().await;
    let ours = publish(&app, "1.1.0").await;
    app.check_as("pin-3", "1.0.0").await;
    app.wait_for_device("pin-3", |_| true).await;
    let other_build = Build::stable("1.1.0").with("register", "true");
    let theirs = id_of(&ok_json(app.upload(OTHER_DEVICE_TYPE, &other_build).await).await["firmware"]);

    let response = admin_put(&app, "/api/ota/admin/devices/pin-3/pin", json!({"firmware_id": theirs})).await;
    assert_problem(response, StatusCode::CONFLICT).await;
    for body in [json!({"firmware_id": 4242}), json!({"version": "9.9.9"})] {
        let response = admin_put(&app, "/api/ota/admin/devices/pin-3/pin", body).await;
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    for body in [json!({}), json!({"firmware_id": ours, "version": "1.1.0"})] {
        let response = admin_put(&app, "/api/ota/admin/devices/pin-3/pin", body).await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    for response in [
        admin_put(&app, "/api/ota/admin/devices/nobody/pin", json!({"firmware_id": ours})).await,
        app.admin_delete("/api/ota/admin/devices/nobody/pin").await,
    ] {
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    // A recalled firmware cannot be pinned.
    ok_json(
        app.admin_post(&format!("/api/ota/admin/firmware/{ours}/recall"), json!({}))
            .await,
    )
    .await;
    let response = admin_put(&app, "/api/ota/admin/devices/pin-3/pin", json!({"firmware_id": ours})).await;
    assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        get(&app, "/api/ota/admin/devices/pin-3").await["pinned_firmware_id"],
        Value::Null
    );
}

#[tokio::test]
async fn a_pin_below_the_device_anti_rollback_counter_is_409() {
    let app = spawn_app().await;
    let old = publish_secure(&app, "1.0.0", 1).await;
    let current = publish_secure(&app, "1.1.0", 2).await;
    ask(&app, "pin-sv", json!({"current_version": "1.1.0", "secure_version": 2})).await;
    app.wait_for_device("pin-sv", |d| d["secure_version"] == 2).await;

    let response = admin_put(&app, "/api/ota/admin/devices/pin-sv/pin", json!({"firmware_id": old})).await;
    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("secure_version"),
        "{problem}"
    );

    // A device whose counter allows it may be pinned back.
    ask(
        &app,
        "pin-sv1",
        json!({"current_version": "1.1.0", "secure_version": 1}),
    )
    .await;
    app.wait_for_device("pin-sv1", |_| true).await;
    ok_json(admin_put(&app, "/api/ota/admin/devices/pin-sv1/pin", json!({"firmware_id": old})).await).await;
    let offer = ask(
        &app,
        "pin-sv1",
        json!({"current_version": "1.1.0", "secure_version": 1}),
    )
    .await;
    assert_eq!(offer["firmware_id"], old);
    assert_eq!(offer["is_downgrade"], true);
    assert_ne!(offer["firmware_id"], current);
}

// ---------------------------------------------------------------------------
// 6. Recall

#[tokio::test]
async fn a_recalled_firmware_is_taken_back_to_the_previous_good_version() {
    let app = spawn_app().await;
    let good = publish(&app, "1.0.0").await;
    let bad = publish(&app, "1.1.0").await;
    let early = app.check_as("rec-0", "1.0.0").await;
    assert_eq!(early["firmware_id"], bad);
    let link = early["download_url"].as_str().unwrap().to_owned();

    let recalled = ok_json(
        app.admin_post(
            &format!("/api/ota/admin/firmware/{bad}/recall"),
            json!({"reason": "bricks the scale pairing"}),
        )
        .await,
    )
    .await;
    assert!(recalled["recalled_at"].is_string(), "{recalled}");
    assert_eq!(recalled["recall_reason"], "bricks the scale pairing");
    assert_eq!(app.firmware(bad).await["recall_reason"], "bricks the scale pairing");

    assert_eq!(offered(&app, "rec-0", "1.0.0").await, None, "not offered any more");
    let back = app.check_as("rec-1", "1.1.0").await;
    assert_eq!(back["firmware_id"], good, "{back}");
    assert_eq!(back["version"], "1.0.0");
    assert_eq!(back["is_downgrade"], true);

    // Its links stop working, with a token or signed.
    let response = app.download(bad, &device_token("rec-0")).await.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app.client.get(&link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let still = app.download(good, &device_token("rec-1")).await.send().await.unwrap();
    assert_eq!(still.status(), StatusCode::OK);

    let twice = app
        .admin_post(&format!("/api/ota/admin/firmware/{bad}/recall"), json!({}))
        .await;
    assert_problem(twice, StatusCode::CONFLICT).await;
    let unknown = app.admin_post("/api/ota/admin/firmware/4242/recall", json!({})).await;
    assert_problem(unknown, StatusCode::NOT_FOUND).await;

    // A fix forward wins over going back.
    let fixed = publish(&app, "1.1.1").await;
    let forward = app.check_as("rec-1", "1.1.0").await;
    assert_eq!(forward["firmware_id"], fixed);
    assert_eq!(forward["is_downgrade"], false);
    assert_eq!(offered(&app, "rec-0", "1.0.0").await, Some(fixed));
}

#[tokio::test]
async fn a_recall_never_goes_below_the_device_anti_rollback_counter() {
    let app = spawn_app().await;
    let previous = publish_secure(&app, "1.0.0", 1).await;
    let bad = publish_secure(&app, "1.1.0", 2).await;
    ok_json(
        app.admin_post(&format!("/api/ota/admin/firmware/{bad}/recall"), json!({}))
            .await,
    )
    .await;

    let burnt = ask(&app, "sv-hi", json!({"current_version": "1.1.0", "secure_version": 2})).await;
    assert_eq!(burnt["update_available"], false, "{burnt}");
    let not_burnt = ask(&app, "sv-lo", json!({"current_version": "1.1.0", "secure_version": 1})).await;
    assert_eq!(not_burnt["firmware_id"], previous, "{not_burnt}");
    assert_eq!(not_burnt["is_downgrade"], true);
}

// ---------------------------------------------------------------------------
// 7. Rollouts

#[tokio::test]
async fn a_rollout_starts_running_at_its_first_stage_with_the_defaults() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;

    let rollout = create_rollout(&app, json!({"firmware_id": firmware, "name": "spring"})).await;

    assert!(id_of(&rollout) > 0);
    assert_eq!(rollout["name"], "spring");
    assert_eq!(rollout["device_type"], DEVICE_TYPE);
    assert_eq!(rollout["firmware_id"], firmware);
    assert_eq!(rollout["version"], "1.1.0");
    assert_eq!(rollout["stages"], json!([1, 10, 50, 100]));
    assert_eq!(rollout["stage"], 0);
    assert_eq!(rollout["percent"], 1);
    assert_eq!(rollout["state"], "running");
    assert_eq!(rollout["groups"], json!([]));
    assert_eq!(rollout["variant"], Value::Null);
    assert_eq!(
        rollout["policy"],
        json!({"min_successes": 10, "soak_seconds": 3600, "max_failure_rate": 10, "min_finished": 10})
    );
    assert_eq!(rollout["created_by"], "admin");
    assert_eq!(counts(&rollout["totals"]), [0; 5]);
    let states: Vec<&str> = rollout["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["current", "waiting", "waiting", "waiting"]);
    assert_eq!(rollout["arms"].as_array().unwrap().len(), 1);
    assert_eq!(rollout["arms"][0]["arm"], "a");
    assert_eq!(rollout["arms"][0]["firmware_id"], firmware);
    assert_eq!(rollout["arms"][0]["percent"], 100);

    let shown = get(&app, &format!("/api/ota/admin/rollouts/{}", id_of(&rollout))).await;
    assert_eq!(shown["id"], rollout["id"]);
    let list = get(
        &app,
        &format!("/api/ota/admin/rollouts?firmware_id={firmware}&state=running"),
    )
    .await;
    assert_eq!(list["total"], 1);
    assert_eq!(get(&app, "/api/ota/admin/rollouts?state=paused").await["total"], 0);
    assert_problem(
        app.admin_get("/api/ota/admin/rollouts/4242").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn an_invalid_rollout_is_refused() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let other = publish(&app, "1.2.0").await;

    for (body, field) in [
        (
            json!({"firmware_id": firmware, "stages": [10, 5, 100]}),
            json!("stages"),
        ),
        (json!({"firmware_id": firmware, "stages": [10, 50]}), json!("stages")),
        (json!({"firmware_id": firmware, "stages": []}), json!("stages")),
        (json!({"firmware_id": firmware, "stages": [0, 100]}), json!("stages")),
        (
            json!({"firmware_id": firmware, "variant": {"firmware_id": other, "percent": 0}}),
            json!("variant.percent"),
        ),
        (
            json!({"firmware_id": firmware, "variant": {"firmware_id": other, "percent": 100}}),
            json!("variant.percent"),
        ),
        (
            json!({"firmware_id": firmware, "policy": {"max_failure_rate": 101}}),
            json!("policy.max_failure_rate"),
        ),
        (
            json!({"firmware_id": firmware, "policy": {"min_successes": -1}}),
            json!("policy.min_successes"),
        ),
        (json!({"firmware_id": firmware, "stagez": [100]}), Value::Null),
        (json!({"firmware_id": firmware, "policy": {"soak": 1}}), Value::Null),
    ] {
        let response = app.admin_post("/api/ota/admin/rollouts", body.clone()).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        if !field.is_null() {
            assert_eq!(problem["field"], field, "{body}: {problem}");
        }
    }
    for body in [
        json!({"firmware_id": 4242}),
        json!({"firmware_id": firmware, "variant": {"firmware_id": 4242, "percent": 50}}),
        json!({"firmware_id": firmware, "groups": ["no-such-group"]}),
    ] {
        let response = app.admin_post("/api/ota/admin/rollouts", body).await;
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    assert_eq!(get(&app, "/api/ota/admin/rollouts").await["total"], 0);
}

#[tokio::test]
async fn one_rollout_at_a_time_holds_a_firmware() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let variant = publish(&app, "1.2.0").await;
    let first = create_rollout(&app, json!({"firmware_id": firmware})).await;

    let second = app
        .admin_post("/api/ota/admin/rollouts", json!({"firmware_id": firmware}))
        .await;
    assert_problem(second, StatusCode::CONFLICT).await;
    // Not as the other arm of an A/B rollout either.
    let as_variant = app
        .admin_post(
            "/api/ota/admin/rollouts",
            json!({"firmware_id": variant, "variant": {"firmware_id": firmware, "percent": 50}}),
        )
        .await;
    assert_problem(as_variant, StatusCode::CONFLICT).await;
    // Paused or halted is not over either.
    ok_json(act(&app, id_of(&first), "pause", json!({})).await).await;
    let while_paused = app
        .admin_post("/api/ota/admin/rollouts", json!({"firmware_id": firmware}))
        .await;
    assert_problem(while_paused, StatusCode::CONFLICT).await;

    ok_json(act(&app, id_of(&first), "abort", json!({})).await).await;
    let after = create_rollout(&app, json!({"firmware_id": firmware})).await;
    assert_ne!(after["id"], first["id"]);
}

#[tokio::test]
async fn a_paused_rollout_offers_nothing_until_it_is_resumed() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let rollout = create_rollout(&app, json!({"firmware_id": firmware, "stages": [100]})).await;
    let id = id_of(&rollout);
    assert_eq!(offered(&app, "p-1", "1.0.0").await, Some(firmware));

    let paused = ok_json(act(&app, id, "pause", json!({"reason": "weekend"})).await).await;
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["state_reason"], "weekend");
    assert_eq!(offered(&app, "p-1", "1.0.0").await, None);
    assert_eq!(offered(&app, "p-2", "1.0.0").await, None);
    assert_problem(act(&app, id, "pause", json!({})).await, StatusCode::CONFLICT).await;

    let resumed = ok_json(act(&app, id, "resume", json!({})).await).await;
    assert_eq!(resumed["state"], "running");
    assert_problem(act(&app, id, "resume", json!({})).await, StatusCode::CONFLICT).await;
    assert_eq!(offered(&app, "p-2", "1.0.0").await, Some(firmware));
    assert_problem(act(&app, 4242, "pause", json!({})).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn advancing_moves_the_stage_and_an_abort_is_final() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(&create_rollout(&app, json!({"firmware_id": firmware})).await);

    let advanced = ok_json(act(&app, id, "advance", json!({})).await).await;
    assert_eq!(advanced["stage"], 1);
    assert_eq!(advanced["percent"], 10);
    assert_eq!(advanced["state"], "running");
    assert_eq!(advanced["progress"][0]["state"], "done");
    assert_eq!(advanced["progress"][1]["state"], "current");
    // From paused too, and it runs again.
    ok_json(act(&app, id, "pause", json!({})).await).await;
    let advanced = ok_json(act(&app, id, "advance", json!({})).await).await;
    assert_eq!(
        (advanced["stage"].as_i64(), advanced["state"].as_str()),
        (Some(2), Some("running"))
    );

    let aborted = ok_json(act(&app, id, "abort", json!({"reason": "bad build"})).await).await;
    assert_eq!(aborted["state"], "aborted");
    assert_eq!(aborted["state_reason"], "bad build");
    for action in ["resume", "advance", "pause", "abort"] {
        assert_problem(act(&app, id, action, json!({})).await, StatusCode::CONFLICT).await;
    }
    for n in 0..20 {
        assert_eq!(offered(&app, &format!("ab-{n}"), "1.0.0").await, None);
    }
}

#[tokio::test]
async fn the_last_stage_meeting_its_policy_completes_the_rollout_by_itself() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(
        &create_rollout(
            &app,
            json!({"firmware_id": firmware, "stages": [100], "policy": {"min_successes": 1, "soak_seconds": 0}}),
        )
        .await,
    );
    assert_eq!(offered(&app, "c-1", "1.0.0").await, Some(firmware));

    install(&app, "c-1", firmware).await;

    let done = wait_rollout(&app, id, |r| r["state"] == "completed").await;
    assert_eq!(done["progress"][0]["state"], "done");
    assert_eq!(counts(&done["totals"]), [1, 0, 1, 0, 0]);
    assert_eq!(done["arms"][0]["success_rate"], 100.0);
    let entries = audit(
        &app,
        &format!("target_type=rollout&target_id={id}&action=rollout.complete"),
    )
    .await;
    assert_eq!(entries["total"], 1);
    assert_eq!(entries["items"][0]["actor"], "system");
    // A completed rollout offers its firmware to everyone, and is over.
    assert_eq!(offered(&app, "c-2", "1.0.0").await, Some(firmware));
    assert_problem(act(&app, id, "pause", json!({})).await, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn stages_advance_by_themselves_once_they_have_soaked() {
    let app = spawn_app_with(|s| s.rollout_interval = 1).await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(
        &create_rollout(
            &app,
            json!({"firmware_id": firmware, "stages": [50, 100], "policy": {"min_successes": 0, "soak_seconds": 1}}),
        )
        .await,
    );

    let advanced = wait_rollout(&app, id, |r| r["stage"] == 1 || r["state"] == "completed").await;
    assert_eq!(advanced["stages"], json!([50, 100]));
    wait_rollout(&app, id, |r| r["state"] == "completed").await;

    let entries = audit(&app, &format!("target_type=rollout&target_id={id}&actor=system")).await;
    assert_eq!(actions(&entries), ["rollout.complete", "rollout.advance"]);
    let advance = &entries["items"][1];
    assert_eq!(advance["before"], json!({"state": "running", "stage": 0}));
    assert_eq!(advance["after"]["stage"], 1);
}

#[tokio::test]
async fn rollbacks_past_the_failure_rate_halt_the_rollout_by_itself() {
    let app = spawn_app_with(|s| s.rollout_interval = 1).await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(
        &create_rollout(
            &app,
            json!({"firmware_id": firmware, "stages": [100],
                   "policy": {"max_failure_rate": 10, "min_finished": 2}}),
        )
        .await,
    );
    for device in ["h-1", "h-2"] {
        assert_eq!(offered(&app, device, "1.0.0").await, Some(firmware));
    }

    roll_back(&app, "h-1", firmware).await;
    let one = get(&app, &format!("/api/ota/admin/rollouts/{id}")).await;
    assert_eq!(one["state"], "running", "one of one is below min_finished");
    roll_back(&app, "h-2", firmware).await;

    let halted = wait_rollout(&app, id, |r| r["state"] == "halted").await;
    let reason = halted["state_reason"].as_str().unwrap();
    assert!(reason.contains("2 of 2") && reason.contains("rolled back"), "{reason}");
    assert_eq!(counts(&halted["totals"]), [2, 0, 0, 0, 2]);
    assert_eq!(offered(&app, "h-3", "1.0.0").await, None, "nobody is offered");
    let entries = audit(&app, &format!("target_type=rollout&target_id={id}&action=rollout.halt")).await;
    assert_eq!(entries["total"], 1);
    assert_eq!(entries["items"][0]["actor"], "system");
    assert_eq!(entries["items"][0]["after"]["state"], "halted");
}

#[tokio::test]
async fn rollbacks_seen_at_check_in_halt_the_rollout_too() {
    let app = spawn_app_with(|s| s.rollout_interval = 1).await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(
        &create_rollout(
            &app,
            json!({"firmware_id": firmware, "stages": [100],
                   "policy": {"max_failure_rate": 10, "min_finished": 2}}),
        )
        .await,
    );
    for device in ["hc-1", "hc-2"] {
        assert_eq!(offered(&app, device, "1.0.0").await, Some(firmware));
        report(&app, device, firmware, "downloading", None).await;
        report(&app, device, firmware, "installing", None).await;
        // Back on the old image, without a word about it.
        app.check_as(device, "1.0.0").await;
    }

    let halted = wait_rollout(&app, id, |r| r["state"] == "halted").await;
    assert_eq!(counts(&halted["totals"]), [2, 0, 0, 0, 2]);
    assert_eq!(halted["arms"][0]["failure_reasons"], json!({"rollback": 2}));
}

#[tokio::test]
async fn progress_counts_each_device_once_per_stage_by_its_latest_attempt() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(
        &create_rollout(
            &app,
            json!({"firmware_id": firmware, "stages": [50, 100],
                   "policy": {"min_successes": 1000, "max_failure_rate": 100, "min_finished": 1000}}),
        )
        .await,
    );
    let devices: Vec<String> = (0..30).map(|n| format!("pr-{n:02}")).collect();
    let mut first = Vec::new();
    let mut later = Vec::new();
    for device in &devices {
        match offered(&app, device, "1.0.0").await {
            Some(offer) => {
                assert_eq!(offer, firmware);
                first.push(device.as_str());
            }
            None => later.push(device.as_str()),
        }
    }
    assert!(first.len() >= 4 && later.len() >= 2, "{first:?} / {later:?}");

    install(&app, first[0], firmware).await;
    roll_back(&app, first[1], firmware).await;
    report(&app, first[2], firmware, "downloading", None).await;
    report(&app, first[2], firmware, "failed", Some("hash_mismatch: got 00ff")).await;
    report(&app, first[3], firmware, "downloading", None).await;
    let attempt = &get(&app, &format!("/api/ota/admin/devices/{}", first[0])).await["history"][0];
    assert_eq!(attempt["rollout_id"], id);
    assert_eq!(attempt["rollout_stage"], 0);
    assert_eq!(attempt["rollout_arm"], "a");

    ok_json(act(&app, id, "advance", json!({})).await).await;
    for device in &later {
        assert_eq!(offered(&app, device, "1.0.0").await, Some(firmware), "{device}");
    }
    install(&app, later[0], firmware).await;

    let rollout = get(&app, &format!("/api/ota/admin/rollouts/{id}")).await;
    let (n0, n1) = (first.len() as i64, later.len() as i64);
    let stage0 = &rollout["progress"][0];
    let stage1 = &rollout["progress"][1];
    assert_eq!(counts(stage0), [n0, n0 - 3, 1, 1, 1], "{stage0}");
    assert_eq!(stage0["state"], "done");
    assert_eq!(stage0["percent"], 50);
    assert_eq!(counts(&stage0["arms"][0]), counts(stage0));
    assert_eq!(counts(stage1), [n1, n1 - 1, 1, 0, 0], "{stage1}");
    assert_eq!(stage1["state"], "current");
    assert_eq!(counts(&rollout["totals"]), [30, 26, 2, 1, 1]);
    let arm = &rollout["arms"][0];
    assert_eq!(counts(arm), [30, 26, 2, 1, 1]);
    assert_eq!(arm["success_rate"], 50.0);
    assert_eq!(arm["failure_reasons"], json!({"hash_mismatch": 1, "rollback": 1}));
    assert_eq!(rollout["state"], "running");
}

#[tokio::test]
async fn an_ab_rollout_offers_each_device_one_arm_and_compares_them() {
    let app = spawn_app().await;
    let a = publish(&app, "1.1.0").await;
    let b = publish(&app, "1.2.0").await;
    let rollout = create_rollout(
        &app,
        json!({"firmware_id": a, "stages": [100], "variant": {"firmware_id": b, "percent": 50},
               "policy": {"min_successes": 1000, "max_failure_rate": 100}}),
    )
    .await;
    let id = id_of(&rollout);
    assert_eq!(rollout["variant"], json!({"firmware_id": b, "percent": 50}));

    let devices: Vec<String> = (0..200).map(|n| format!("ab-{n:03}")).collect();
    let answers: Vec<(String, Option<i64>)> = futures_util::stream::iter(devices.iter())
        .map(|device| {
            let app = &app;
            async move { (device.clone(), offered(app, device, "1.0.0").await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut arms: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (device, offer) in answers {
        let offer = offer.unwrap_or_else(|| panic!("{device} was offered nothing"));
        arms.entry(offer).or_default().push(device);
    }
    assert_eq!(arms.keys().copied().collect::<BTreeSet<_>>(), BTreeSet::from([a, b]));
    let (in_a, in_b) = (arms[&a].clone(), arms[&b].clone());
    assert!((70..=130).contains(&in_b.len()), "a {} b {}", in_a.len(), in_b.len());
    // The same arm every time.
    for device in in_a.iter().take(5) {
        assert_eq!(offered(&app, device, "1.0.0").await, Some(a));
    }
    for device in in_b.iter().take(5) {
        assert_eq!(offered(&app, device, "1.0.0").await, Some(b));
    }

    install(&app, &in_a[0], a).await;
    install(&app, &in_a[1], a).await;
    roll_back(&app, &in_a[2], a).await;
    install(&app, &in_b[0], b).await;
    report(&app, &in_b[1], b, "downloading", None).await;
    report(&app, &in_b[1], b, "failed", Some("hash_mismatch: short read")).await;

    let rollout = get(&app, &format!("/api/ota/admin/rollouts/{id}")).await;
    let arm_a = &rollout["arms"][0];
    let arm_b = &rollout["arms"][1];
    assert_eq!(
        (arm_a["arm"].as_str(), arm_a["firmware_id"].as_i64()),
        (Some("a"), Some(a))
    );
    assert_eq!(
        (arm_b["arm"].as_str(), arm_b["firmware_id"].as_i64()),
        (Some("b"), Some(b))
    );
    assert_eq!(arm_a["percent"], 50);
    assert_eq!(arm_b["version"], "1.2.0");
    let (na, nb) = (in_a.len() as i64, in_b.len() as i64);
    assert_eq!(counts(arm_a), [na, na - 3, 2, 0, 1], "{arm_a}");
    assert_eq!(counts(arm_b), [nb, nb - 2, 1, 1, 0], "{arm_b}");
    let rate_a = arm_a["success_rate"].as_f64().unwrap();
    assert!((rate_a - 200.0 / 3.0).abs() < 0.01, "{rate_a}");
    assert_eq!(arm_b["success_rate"], 50.0);
    assert_eq!(arm_a["failure_reasons"], json!({"rollback": 1}));
    assert_eq!(arm_b["failure_reasons"], json!({"hash_mismatch": 1}));
    assert_eq!(counts(&rollout["totals"]), [200, 195, 3, 1, 1]);
    let log_b = &get(&app, &format!("/api/ota/admin/devices/{}", in_b[0])).await["history"][0];
    assert_eq!(log_b["rollout_arm"], "b");
}

#[tokio::test]
async fn a_rollout_for_groups_reaches_their_members_only_and_holds_them() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    create_group(&app, "canary").await;
    add_members(&app, "canary", json!({"device_ids": ["in-1"]})).await;
    let id = id_of(
        &create_rollout(
            &app,
            json!({"firmware_id": firmware, "stages": [100], "groups": ["canary"]}),
        )
        .await,
    );

    assert_eq!(offered(&app, "in-1", "1.0.0").await, Some(firmware));
    assert_eq!(offered(&app, "out-1", "1.0.0").await, None);
    assert_problem(
        app.admin_delete("/api/ota/admin/groups/canary").await,
        StatusCode::CONFLICT,
    )
    .await;

    ok_json(act(&app, id, "abort", json!({})).await).await;
    ok_json(app.admin_delete("/api/ota/admin/groups/canary").await).await;
}

// ---------------------------------------------------------------------------
// 8. Audit

#[tokio::test]
async fn every_admin_change_is_in_the_audit_log_under_the_name_of_its_token() {
    let app = spawn_app_with(|s| s.admin_tokens = Some(Secret::new(format!("alice:{ALICE_TOKEN}")))).await;
    use reqwest::Method;
    let alice = |method: Method, path: &str, body: Value| as_alice(&app, method, path).json(&body).send();

    // admin creates a group, alice describes it and adds a device.
    create_group(&app, "audited").await;
    ok_json(
        alice(
            Method::PATCH,
            "/api/ota/admin/groups/audited",
            json!({"description": "for the record"}),
        )
        .await
        .unwrap(),
    )
    .await;
    ok_json(
        alice(
            Method::POST,
            "/api/ota/admin/groups/audited/members",
            json!({"device_ids": ["aud-1", "aud-2"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    ok_json(
        app.admin_post(
            "/api/ota/admin/groups/audited/members/remove",
            json!({"device_ids": ["aud-2"]}),
        )
        .await,
    )
    .await;
    // admin uploads, alice targets the group and clears it, admin deletes the group.
    let firmware = publish(&app, "1.1.0").await;
    let path = format!("/api/ota/admin/firmware/{firmware}");
    ok_json(
        alice(Method::PATCH, &path, json!({"target_groups": ["audited"]}))
            .await
            .unwrap(),
    )
    .await;
    ok_json(alice(Method::PATCH, &path, json!({"target_groups": []})).await.unwrap()).await;
    ok_json(app.admin_delete("/api/ota/admin/groups/audited").await).await;
    // alice pins, admin unpins.
    app.check_as("aud-1", "1.0.0").await;
    app.wait_for_device("aud-1", |_| true).await;
    ok_json(
        alice(
            Method::PUT,
            "/api/ota/admin/devices/aud-1/pin",
            json!({"firmware_id": firmware}),
        )
        .await
        .unwrap(),
    )
    .await;
    ok_json(app.admin_delete("/api/ota/admin/devices/aud-1/pin").await).await;
    // alice creates a rollout and pauses it; admin resumes, alice advances, admin aborts.
    let rollout = ok_json(
        alice(
            Method::POST,
            "/api/ota/admin/rollouts",
            json!({"firmware_id": firmware}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(rollout["created_by"], "alice");
    let rollout_id = id_of(&rollout);
    let action_path = |action: &str| format!("/api/ota/admin/rollouts/{rollout_id}/{action}");
    ok_json(alice(Method::POST, &action_path("pause"), json!({})).await.unwrap()).await;
    ok_json(act(&app, rollout_id, "resume", json!({})).await).await;
    ok_json(alice(Method::POST, &action_path("advance"), json!({})).await.unwrap()).await;
    ok_json(act(&app, rollout_id, "abort", json!({"reason": "enough"})).await).await;
    // admin recalls.
    ok_json(
        app.admin_post(
            &format!("/api/ota/admin/firmware/{firmware}/recall"),
            json!({"reason": "audit me"}),
        )
        .await,
    )
    .await;

    let log = audit(&app, "").await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(log["total"], items.len());
    let ids: Vec<i64> = items.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let firmware_id = firmware.to_string();
    let rollout_key = rollout_id.to_string();
    let expected: [(&str, &str, &str, &str); 16] = [
        ("group.create", "admin", "group", "audited"),
        ("group.update", "alice", "group", "audited"),
        ("group.add_members", "alice", "group", "audited"),
        ("group.remove_members", "admin", "group", "audited"),
        ("group.delete", "admin", "group", "audited"),
        ("firmware.create", "admin", "firmware", &firmware_id),
        ("firmware.update", "alice", "firmware", &firmware_id),
        ("firmware.recall", "admin", "firmware", &firmware_id),
        ("device.pin", "alice", "device", "aud-1"),
        ("device.unpin", "admin", "device", "aud-1"),
        ("rollout.create", "alice", "rollout", &rollout_key),
        ("rollout.pause", "alice", "rollout", &rollout_key),
        ("rollout.resume", "admin", "rollout", &rollout_key),
        ("rollout.advance", "alice", "rollout", &rollout_key),
        ("rollout.abort", "admin", "rollout", &rollout_key),
        ("firmware.upload", "admin", "file", ""),
    ];
    for (action, actor, target_type, target_id) in expected {
        let found = items.iter().find(|e| {
            e["action"] == action
                && e["actor"] == actor
                && e["target_type"] == target_type
                && (target_id.is_empty() || e["target_id"] == target_id)
        });
        assert!(
            found.is_some(),
            "no {action} by {actor} on {target_type} {target_id}: {log}"
        );
    }
    assert_eq!(items.iter().filter(|e| e["action"] == "firmware.update").count(), 2);

    // Filters.
    let by_alice = audit(&app, "actor=alice").await;
    assert_eq!(by_alice["total"], 8, "{by_alice}");
    assert!(
        by_alice["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "alice")
    );
    let pauses = audit(&app, "action=rollout.pause").await;
    assert_eq!(pauses["total"], 1);
    assert_eq!(pauses["items"][0]["before"]["state"], "running");
    assert_eq!(pauses["items"][0]["after"]["state"], "paused");
    let group = audit(&app, "target_type=group&target_id=audited").await;
    assert_eq!(
        actions(&group),
        [
            "group.delete",
            "group.remove_members",
            "group.add_members",
            "group.update",
            "group.create"
        ]
    );
    let device = audit(&app, "target_type=device&target_id=aud-1").await;
    assert_eq!(actions(&device), ["device.unpin", "device.pin"]);
    let rollout_log = audit(&app, &format!("target_type=rollout&target_id={rollout_id}")).await;
    assert_eq!(
        actions(&rollout_log),
        [
            "rollout.abort",
            "rollout.advance",
            "rollout.resume",
            "rollout.pause",
            "rollout.create"
        ]
    );
    assert_eq!(audit(&app, "actor=nobody").await["total"], 0);
    assert_eq!(audit(&app, "since=2999-01-01T00:00:00Z").await["total"], 0);
    assert_eq!(audit(&app, "since=2000-01-01T00:00:00Z").await["total"], log["total"]);
    assert_problem(
        app.admin_get("/api/ota/admin/audit?since=yesterday").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let paged = get(&app, "/api/ota/admin/audit?limit=2&offset=1").await;
    assert_eq!(paged["items"].as_array().unwrap().len(), 2);
    assert_eq!(paged["items"][0]["id"], ids[1]);

    // Before and after.
    let entry = |action: &str| items.iter().find(|e| e["action"] == action).unwrap().clone();
    for creation in ["group.create", "rollout.create", "firmware.create"] {
        let created = entry(creation);
        assert_eq!(created["before"], Value::Null, "{created}");
        assert!(created["after"].is_object(), "{created}");
    }
    let described = entry("group.update");
    assert_eq!(described["before"]["description"], Value::Null);
    assert_eq!(described["after"]["description"], "for the record");
    let deleted = entry("group.delete");
    assert_eq!(deleted["before"]["name"], "audited");
    assert_eq!(deleted["after"], Value::Null);
    let pinned = entry("device.pin");
    assert_eq!(pinned["before"]["pinned_firmware_id"], Value::Null);
    assert_eq!(pinned["after"]["pinned_firmware_id"], firmware);
    let recalled = entry("firmware.recall");
    assert_eq!(recalled["before"]["recalled_at"], Value::Null);
    assert_eq!(recalled["after"]["recall_reason"], "audit me");
    // Newest first: the older of the two updates set the target.
    let targeted = items.iter().rfind(|e| e["action"] == "firmware.update").unwrap();
    assert_eq!(targeted["before"]["target_groups"], json!([]));
    assert_eq!(targeted["after"]["target_groups"], json!(["audited"]));
    let aborted = entry("rollout.abort");
    assert_eq!(aborted["after"]["reason"], "enough");
}

// ---------------------------------------------------------------------------
// 9. A recall halts the firmware's rollouts

#[tokio::test]
async fn a_recall_halts_the_running_rollout_of_its_firmware() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(&create_rollout(&app, json!({"firmware_id": firmware, "stages": [100]})).await);
    let other = publish(&app, "1.0.5").await;
    let untouched = id_of(&create_rollout(&app, json!({"firmware_id": other, "stages": [100]})).await);
    assert_eq!(offered(&app, "rh-1", "1.0.0").await, Some(firmware));

    ok_json(
        app.admin_post(
            &format!("/api/ota/admin/firmware/{firmware}/recall"),
            json!({"reason": "bad"}),
        )
        .await,
    )
    .await;

    let halted = get(&app, &format!("/api/ota/admin/rollouts/{id}")).await;
    assert_eq!(halted["state"], "halted");
    assert!(
        halted["state_reason"].as_str().unwrap().contains("recalled"),
        "{halted}"
    );
    assert_eq!(
        get(&app, &format!("/api/ota/admin/rollouts/{untouched}")).await["state"],
        "running"
    );
    let listed = get(&app, "/api/ota/admin/rollouts?state=halted").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], id);
    assert_eq!(offered(&app, "rh-1", "1.0.0").await, Some(other));
    // A recalled firmware gets no new rollout.
    let again = app
        .admin_post("/api/ota/admin/rollouts", json!({"firmware_id": firmware}))
        .await;
    assert_problem(again, StatusCode::CONFLICT).await;
}

/// The halt a recall causes is a change of the rollout like any other: the
/// rollout's own audit trail must show it, or its history (created,
/// running, … then halted with no entry) does not add up.
#[tokio::test]
async fn the_halt_a_recall_causes_is_in_the_rollouts_audit_trail() {
    let app = spawn_app().await;
    let firmware = publish(&app, "1.1.0").await;
    let id = id_of(&create_rollout(&app, json!({"firmware_id": firmware})).await);

    ok_json(
        app.admin_post(&format!("/api/ota/admin/firmware/{firmware}/recall"), json!({}))
            .await,
    )
    .await;

    assert_eq!(
        get(&app, &format!("/api/ota/admin/rollouts/{id}")).await["state"],
        "halted"
    );
    let trail = audit(&app, &format!("target_type=rollout&target_id={id}")).await;
    assert_eq!(actions(&trail), ["rollout.halt", "rollout.create"], "{trail}");
    assert_eq!(trail["items"][0]["after"]["state"], "halted");
}
