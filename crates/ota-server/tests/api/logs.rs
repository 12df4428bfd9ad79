//! `GET /api/ota/admin/logs`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn logs_are_listed_newest_first_and_filtered() {
    let app = spawn_app().await;
    let old = app.publish(Build::stable("1.1.0")).await;
    let first = app.check_as("tab5-0001", "1.0.0").await["log_id"].as_i64().unwrap();
    let second = app.check_as("tab5-0002", "1.0.0").await["log_id"].as_i64().unwrap();
    app.report_as("tab5-0002", old["id"].as_i64().unwrap(), "failed").await;
    let new = app.publish(Build::stable("1.2.0")).await;
    let third = app.check_as("tab5-0001", "1.1.0").await["log_id"].as_i64().unwrap();

    let all = app.logs("").await;
    assert_eq!(ids(&all), [third, second, first]);
    assert_eq!(all["total"], 3);
    for field in [
        "id",
        "device_id",
        "firmware_id",
        "from_version",
        "to_version",
        "status",
        "progress",
        "error_message",
        "started_at",
        "updated_at",
        "completed_at",
    ] {
        assert!(all["items"][0].get(field).is_some(), "a log row lacks {field}");
    }

    assert_eq!(ids(&app.logs("device_id=tab5-0001").await), [third, first]);
    assert_eq!(ids(&app.logs(&format!("firmware_id={}", new["id"])).await), [third]);
    assert_eq!(ids(&app.logs("status=failed").await), [second]);
    assert_eq!(ids(&app.logs("limit=1&offset=1").await), [second]);
    assert_eq!(app.logs("limit=1").await["total"], 3);
    assert_eq!(app.logs("since=2999-01-01T00:00:00Z").await["total"], 0);
    assert_eq!(app.logs("since=2000-01-01T00:00:00Z").await["total"], 3);
}

#[tokio::test]
async fn a_bad_log_query_is_400() {
    let app = spawn_app().await;

    for query in ["status=done", "since=yesterday", "limit=1000", "firmware_id=x"] {
        let response = app.admin_get(&format!("/api/ota/admin/logs?{query}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn logs_need_the_admin_token() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/api/ota/admin/logs")).send().await.unwrap();

    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn since_compares_instants_whatever_the_offset_or_precision() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;
    app.check_as("tab5-0001", "1.0.0").await;
    let row = &app.logs("").await["items"][0];
    let started = chrono::DateTime::parse_from_rfc3339(row["started_at"].as_str().unwrap()).unwrap();
    let in_tokyo = |at: chrono::DateTime<chrono::FixedOffset>| {
        let tokyo = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        at.with_timezone(&tokyo).to_rfc3339().replace('+', "%2B")
    };

    let from_its_second = app.logs(&format!("since={}", in_tokyo(started))).await;
    let from_the_next = app
        .logs(&format!("since={}", in_tokyo(started + chrono::Duration::seconds(1))))
        .await;

    assert_eq!(
        from_its_second["total"], 1,
        "started_at is stored with sub-second precision, at or after its second"
    );
    assert_eq!(from_the_next["total"], 0);
}
