//! `POST /api/ota/check`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn check_offers_the_highest_stable_version_with_a_signed_link() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;
    let newest = app
        .publish(Build::stable("1.2.0").with("release_notes", "faster scale pairing"))
        .await;
    app.publish(Build::stable("1.3.0-beta.1").with("is_stable", "false"))
        .await;

    let offer = app.check_as("tab5-0001", "1.0.0").await;

    assert_eq!(offer["update_available"], true);
    assert_eq!(offer["firmware_id"], newest["id"]);
    assert_eq!(offer["version"], "1.2.0");
    assert_eq!(offer["file_size"], newest["file_size"]);
    assert_eq!(offer["file_hash"], newest["file_hash"]);
    assert_eq!(offer["release_notes"], "faster scale pairing");
    assert_eq!(offer["is_mandatory"], false);
    assert!(offer["log_id"].as_i64().unwrap() > 0);
    let url = offer["download_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/api/ota/download/{}?", app.address, newest["id"])),
        "{url}"
    );
    assert!(
        url.contains("expires=") && url.contains("sig=") && url.contains("device=tab5-0001"),
        "{url}"
    );
}

#[tokio::test]
async fn check_answers_no_update_to_a_device_that_is_up_to_date() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.2.0")).await;

    let answer = app.check_as("tab5-0001", "v1.2.0").await;

    assert_eq!(answer, json!({"update_available": false, "current_version": "1.2.0"}));
}

#[tokio::test]
async fn check_accepts_a_git_describe_version_with_a_leading_v() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.2.0")).await;

    let offer = app.check_as("tab5-0001", "v1.1.0-3-gabc1234").await;

    assert_eq!(offer["version"], "1.2.0");
}

#[tokio::test]
async fn asking_again_does_not_open_another_pending_row() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;

    let first = app.check_as("tab5-0001", "1.0.0").await;
    let second = app.check_as("tab5-0001", "1.0.0").await;

    assert_eq!(first["log_id"], second["log_id"]);
    let logs = app.logs("device_id=tab5-0001").await;
    assert_eq!(logs["total"], 1);
    assert_eq!(logs["items"][0]["status"], "pending");
    assert_eq!(logs["items"][0]["from_version"], "1.0.0");
    assert_eq!(logs["items"][0]["to_version"], "1.1.0");
}

#[tokio::test]
async fn racing_checks_of_one_device_share_one_pending_row() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;

    let answers = futures_util::future::join_all((0..16).map(|_| app.check_as("tab5-0001", "1.0.0"))).await;

    let first = &answers[0]["log_id"];
    assert!(answers.iter().all(|a| &a["log_id"] == first), "{answers:?}");
    let logs = app.logs("device_id=tab5-0001").await;
    assert_eq!(logs["total"], 1);
}

#[tokio::test]
async fn a_prerelease_channel_gets_builds_not_marked_stable() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;
    let beta = app
        .publish(Build::stable("1.2.0-beta.1").with("is_stable", "false"))
        .await;
    let token = device_token("tab5-beta");

    let response = app
        .check(
            &token,
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0", "channel": "beta"}),
        )
        .await;

    let offer: Value = response.json().await.unwrap();
    assert_eq!(offer["firmware_id"], beta["id"]);
}

#[tokio::test]
async fn a_higher_build_number_of_the_running_version_is_offered() {
    let app = spawn_app().await;
    let rebuilt = app.publish(Build::stable("1.0.0").with("build_number", "7")).await;
    let token = device_token("tab5-0001");

    let on_build_3 = app
        .check(
            &token,
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0", "build_number": 3}),
        )
        .await;
    let on_build_7 = app
        .check(
            &token,
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0", "build_number": 7}),
        )
        .await;

    assert_eq!(on_build_3.json::<Value>().await.unwrap()["firmware_id"], rebuilt["id"]);
    assert_eq!(on_build_7.json::<Value>().await.unwrap()["update_available"], false);
}

#[tokio::test]
async fn min_version_holds_back_devices_that_are_too_old() {
    let app = spawn_app().await;
    app.publish(Build::stable("2.0.0").with("min_version", "1.5.0")).await;

    assert_eq!(app.check_as("tab5-old", "1.0.0").await["update_available"], false);
    assert_eq!(app.check_as("tab5-new", "1.5.0").await["version"], "2.0.0");
}

#[tokio::test]
async fn a_rollout_reaches_the_same_devices_every_time_and_none_at_zero() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    app.admin_patch(
        &format!("/api/ota/admin/firmware/{id}"),
        json!({"rollout_percentage": 50}),
    )
    .await;

    let mut reached = Vec::new();
    for n in 0..40 {
        let device = format!("tab5-{n:04}");
        let first = app.check_as(&device, "1.0.0").await["update_available"] == true;
        let again = app.check_as(&device, "1.0.0").await["update_available"] == true;
        assert_eq!(first, again, "{device} got a different answer on a second check");
        reached.push(first);
    }
    let count = reached.iter().filter(|r| **r).count();
    assert!(
        (8..=32).contains(&count),
        "a 50 % rollout reached {count} of 40 devices"
    );

    app.admin_patch(
        &format!("/api/ota/admin/firmware/{id}"),
        json!({"rollout_percentage": 0}),
    )
    .await;
    assert_eq!(app.check_as("tab5-9999", "1.0.0").await["update_available"], false);
}

#[tokio::test]
async fn deactivated_firmware_is_not_offered() {
    let app = spawn_app().await;
    let older = app.publish(Build::stable("1.1.0")).await;
    let newer = app.publish(Build::stable("1.2.0")).await;
    app.admin_delete(&format!("/api/ota/admin/firmware/{}", newer["id"]))
        .await;

    assert_eq!(app.check_as("tab5-0001", "1.0.0").await["firmware_id"], older["id"]);
}

#[tokio::test]
async fn check_uses_the_configured_public_url_for_links() {
    let app = spawn_app_with(|s| s.public_url = Some("https://ota.example.com/".into())).await;
    let firmware = app.publish(Build::stable("1.1.0")).await;

    let offer = app.check_as("tab5-0001", "1.0.0").await;

    let expected = format!("https://ota.example.com/api/ota/download/{}?", firmware["id"]);
    assert!(
        offer["download_url"].as_str().unwrap().starts_with(&expected),
        "{offer}"
    );
}

#[tokio::test]
async fn check_refuses_invalid_values_with_the_field_named() {
    let app = spawn_app().await;
    let token = device_token("tab5-0001");
    for (body, field) in [
        (
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.x"}),
            "current_version",
        ),
        (json!({"device_type": "", "current_version": "1.0.0"}), "device_type"),
        (
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0", "channel": "Not A Channel"}),
            "channel",
        ),
        (
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0", "build_number": -1}),
            "build_number",
        ),
    ] {
        let problem = assert_problem(app.check(&token, body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{problem}");
    }
}

#[tokio::test]
async fn check_refuses_a_body_without_required_fields_with_422() {
    let app = spawn_app().await;

    let response = app
        .check(&device_token("tab5-0001"), json!({"device_type": DEVICE_TYPE}))
        .await;

    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn check_refuses_malformed_json_with_400() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/ota/check"))
        .bearer_auth(device_token("tab5-0001"))
        .header("content-type", "application/json")
        .body("{\"device_type\": ")
        .send()
        .await
        .unwrap();

    assert_problem(response, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_device_may_not_ask_for_another_device_type() {
    let app = spawn_app().await;

    let response = app
        .check(
            &device_token("tab5-0001"),
            json!({"device_type": "other_product", "current_version": "1.0.0"}),
        )
        .await;

    assert_problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_device_over_its_request_budget_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| s.device_rate_limit = 3).await;
    for _ in 0..3 {
        app.check_as("tab5-0001", "1.0.0").await;
    }

    let response = app
        .check(
            &device_token("tab5-0001"),
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"}),
        )
        .await;

    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        app.check_as("tab5-0002", "1.0.0").await["update_available"],
        false,
        "others are not limited"
    );
}
