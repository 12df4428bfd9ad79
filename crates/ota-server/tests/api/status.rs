//! `POST /api/ota/status`: the update attempt's state machine.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn offered(app: &TestApp, device: &str) -> (i64, i64) {
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let offer = app.check_as(device, "1.0.0").await;
    (firmware["id"].as_i64().unwrap(), offer["log_id"].as_i64().unwrap())
}

#[tokio::test]
async fn an_update_moves_from_pending_to_success_on_one_row() {
    let app = spawn_app().await;
    let (firmware_id, log_id) = offered(&app, "tab5-0001").await;

    for status in ["downloading", "installing", "success"] {
        let response = app.report_as("tab5-0001", firmware_id, status).await;
        assert_eq!(response.status(), StatusCode::OK);
        let row: Value = response.json().await.unwrap();
        assert_eq!(row["id"], log_id);
        assert_eq!(row["status"], status);
    }

    let logs = app.logs("device_id=tab5-0001").await;
    assert_eq!(logs["total"], 1);
    let row = &logs["items"][0];
    assert_eq!(row["status"], "success");
    assert!(row["completed_at"].is_string(), "{row}");
    assert_eq!(app.check_as("tab5-0001", "1.1.0").await["update_available"], false);
}

#[tokio::test]
async fn repeating_the_current_state_records_progress() {
    let app = spawn_app().await;
    let (firmware_id, log_id) = offered(&app, "tab5-0001").await;
    let token = device_token("tab5-0001");
    app.report_as("tab5-0001", firmware_id, "downloading").await;

    let response = app
        .report(
            &token,
            json!({"firmware_id": firmware_id, "status": "downloading", "progress": 40}),
        )
        .await;

    let row: Value = response.json().await.unwrap();
    assert_eq!((row["id"].as_i64(), row["progress"].as_i64()), (Some(log_id), Some(40)));
    assert!(row["completed_at"].is_null());
}

#[tokio::test]
async fn skipping_a_step_is_409() {
    let app = spawn_app().await;
    let (firmware_id, _) = offered(&app, "tab5-0001").await;

    let response = app.report_as("tab5-0001", firmware_id, "success").await;

    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().unwrap().contains("pending"), "{problem}");
}

#[tokio::test]
async fn a_report_after_success_is_409() {
    let app = spawn_app().await;
    let (firmware_id, _) = offered(&app, "tab5-0001").await;
    for status in ["downloading", "installing", "success"] {
        app.report_as("tab5-0001", firmware_id, status).await;
    }

    for status in ["failed", "downloading", "pending", "success"] {
        assert_problem(
            app.report_as("tab5-0001", firmware_id, status).await,
            StatusCode::CONFLICT,
        )
        .await;
    }
}

#[tokio::test]
async fn a_failure_keeps_its_message_and_a_retry_opens_a_new_row() {
    let app = spawn_app().await;
    let (firmware_id, log_id) = offered(&app, "tab5-0001").await;
    let token = device_token("tab5-0001");
    app.report_as("tab5-0001", firmware_id, "downloading").await;
    let failed: Value = app
        .report(
            &token,
            json!({"firmware_id": firmware_id, "status": "failed", "error_message": "rolled back"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (failed["status"].as_str(), failed["error_message"].as_str()),
        (Some("failed"), Some("rolled back"))
    );

    assert_problem(
        app.report_as("tab5-0001", firmware_id, "installing").await,
        StatusCode::CONFLICT,
    )
    .await;
    let retry: Value = app
        .report_as("tab5-0001", firmware_id, "downloading")
        .await
        .json()
        .await
        .unwrap();

    assert_ne!(retry["id"].as_i64(), Some(log_id));
    assert_eq!(retry["status"], "downloading");
    let logs = app.logs("device_id=tab5-0001").await;
    assert_eq!(logs["total"], 2);
}

#[tokio::test]
async fn a_check_after_a_failure_opens_a_new_pending_row() {
    let app = spawn_app().await;
    let (firmware_id, log_id) = offered(&app, "tab5-0001").await;
    app.report_as("tab5-0001", firmware_id, "failed").await;

    let offer = app.check_as("tab5-0001", "1.0.0").await;

    assert_ne!(offer["log_id"].as_i64(), Some(log_id));
}

#[tokio::test]
async fn a_first_report_without_a_check_opens_a_row() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;

    let response = app
        .report_as("tab5-0001", firmware["id"].as_i64().unwrap(), "downloading")
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let row: Value = response.json().await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["to_version"].as_str()),
        (Some("downloading"), Some("1.1.0"))
    );
}

#[tokio::test]
async fn an_unknown_status_or_progress_out_of_range_is_422() {
    let app = spawn_app().await;
    let (firmware_id, _) = offered(&app, "tab5-0001").await;
    let token = device_token("tab5-0001");

    let unknown = app
        .report(&token, json!({"firmware_id": firmware_id, "status": "done"}))
        .await;
    let over = app
        .report(
            &token,
            json!({"firmware_id": firmware_id, "status": "downloading", "progress": 101}),
        )
        .await;

    assert_eq!(
        assert_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "status"
    );
    assert_eq!(
        assert_problem(over, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "progress"
    );
}

#[tokio::test]
async fn a_report_about_unknown_firmware_is_404() {
    let app = spawn_app().await;

    assert_problem(
        app.report_as("tab5-0001", 4242, "downloading").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_report_about_another_device_types_firmware_is_403() {
    let app = spawn_app().await;
    let build = Build::stable("1.1.0").with("register", "true");
    let other: Value = app.upload("other_product", &build).await.json().await.unwrap();

    let response = app
        .report_as("tab5-0001", other["firmware"]["id"].as_i64().unwrap(), "downloading")
        .await;

    assert_problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn racing_reports_leave_one_open_row() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();

    let answers = futures_util::future::join_all((0..12).map(|_| app.report_as("tab5-0001", id, "pending"))).await;

    assert!(
        answers
            .iter()
            .all(|r| r.status() == StatusCode::OK || r.status() == StatusCode::CONFLICT)
    );
    let logs = app.logs("device_id=tab5-0001").await;
    assert_eq!(logs["total"], 1);
}

#[tokio::test]
async fn a_report_about_deactivated_firmware_is_404() {
    let app = spawn_app().await;
    let (firmware_id, _) = offered(&app, "tab5-0001").await;
    app.admin_delete(&format!("/api/ota/admin/firmware/{firmware_id}"))
        .await;

    assert_problem(
        app.report_as("tab5-0001", firmware_id, "downloading").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
