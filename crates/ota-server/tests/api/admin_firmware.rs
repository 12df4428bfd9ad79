//! `/api/ota/admin/firmware`: register, list, show, change, deactivate.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn uploaded<'a>(app: &TestApp, version: &'a str) -> (Build<'a>, Value) {
    let build = Build {
        version,
        bytes: firmware_bytes(3000, 8),
        fields: Vec::new(),
    };
    let body: Value = app.upload(DEVICE_TYPE, &build).await.json().await.unwrap();
    (build, body)
}

#[tokio::test]
async fn registering_an_upload_returns_the_full_record() {
    let app = spawn_app().await;
    let (build, upload) = uploaded(&app, "1.1.0").await;

    let response = app
        .admin_post(
            "/api/ota/admin/firmware",
            json!({
                "device_type": DEVICE_TYPE, "version": "1.1.0", "build_number": 7,
                "filename": upload["filename"], "file_hash": upload["file_hash"],
                "release_notes": "pairing fix", "min_version": "1.0.0", "is_stable": true,
                "is_mandatory": true, "rollout_percentage": 25
            }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let record: Value = response.json().await.unwrap();
    for field in [
        "id",
        "device_type",
        "version",
        "build_number",
        "filename",
        "binary_path",
        "file_size",
        "file_hash",
        "release_notes",
        "min_version",
        "is_stable",
        "is_active",
        "is_mandatory",
        "rollout_percentage",
        "download_count",
        "created_at",
        "updated_at",
    ] {
        assert!(record.get(field).is_some(), "the record lacks {field}: {record}");
    }
    assert_eq!(record["file_size"], build.bytes.len());
    assert_eq!(record["binary_path"], "scales_bridge_tab5/v1.1.0.bin");
    assert_eq!(record["rollout_percentage"], 25);
    assert_eq!(record["is_mandatory"], true);
    assert_eq!(record["download_count"], 0);
    let created = record["created_at"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == 20,
        "RFC 3339 UTC seconds: {created}"
    );
}

#[tokio::test]
async fn registering_checks_the_file_hash_and_size() {
    let app = spawn_app().await;
    let (_, upload) = uploaded(&app, "1.1.0").await;
    let register = |overrides: Value| {
        let mut body = json!({"device_type": DEVICE_TYPE, "version": "1.1.0", "filename": "v1.1.0.bin",
                              "file_hash": upload["file_hash"]});
        body.as_object_mut()
            .unwrap()
            .extend(overrides.as_object().unwrap().clone());
        app.admin_post("/api/ota/admin/firmware", body)
    };

    let wrong_hash = register(json!({"file_hash": "0".repeat(64)})).await;
    let wrong_size = register(json!({"file_size": 1})).await;
    let missing = register(json!({"filename": "v9.9.9.bin"})).await;
    let bad_name = register(json!({"filename": "../secrets/admin_token"})).await;
    let bad_rollout = register(json!({"rollout_percentage": 101})).await;

    assert_eq!(
        assert_problem(wrong_hash, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "file_hash"
    );
    assert_eq!(
        assert_problem(wrong_size, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "file_size"
    );
    assert_eq!(
        assert_problem(missing, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "filename"
    );
    assert_eq!(
        assert_problem(bad_name, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "filename"
    );
    assert_eq!(
        assert_problem(bad_rollout, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "rollout_percentage"
    );
    let listed: Value = app.admin_get("/api/ota/admin/firmware").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
}

#[tokio::test]
async fn registering_a_version_twice_is_409() {
    let app = spawn_app().await;
    let (_, upload) = uploaded(&app, "1.1.0").await;
    let body = json!({"device_type": DEVICE_TYPE, "version": "1.1.0", "filename": "v1.1.0.bin",
                      "file_hash": upload["file_hash"]});
    assert_eq!(
        app.admin_post("/api/ota/admin/firmware", body.clone()).await.status(),
        StatusCode::CREATED
    );

    let again = app.admin_post("/api/ota/admin/firmware", body).await;

    assert_problem(again, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn the_list_shows_the_newest_version_first_with_filters_and_pages() {
    let app = spawn_app().await;
    for version in ["1.2.0", "1.10.0", "1.9.0", "1.10.0-rc.1"] {
        let is_stable = if version.contains("rc") { "false" } else { "true" };
        app.publish(Build::stable(version).with("is_stable", is_stable)).await;
    }
    let other = Build::stable("5.0.0").with("register", "true");
    app.upload("other_product", &other).await;

    let all: Value = app
        .admin_get("/api/ota/admin/firmware?device_type=scales_bridge_tab5")
        .await
        .json()
        .await
        .unwrap();
    let versions: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.10.0", "1.10.0-rc.1", "1.9.0", "1.2.0"]);
    assert_eq!(all["total"], 4);

    let stable: Value = app
        .admin_get("/api/ota/admin/firmware?is_stable=false")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stable["total"], 1);
    let page: Value = app
        .admin_get("/api/ota/admin/firmware?limit=2&offset=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 5);
    let paged: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["version"].as_str().unwrap())
        .collect();
    assert_eq!(paged, ["1.10.0", "1.10.0-rc.1"]);
}

#[tokio::test]
async fn a_bad_list_query_is_400() {
    let app = spawn_app().await;

    for query in ["limit=501", "limit=0", "offset=-1", "is_active=maybe", "limit=ten"] {
        let response = app.admin_get(&format!("/api/ota/admin/firmware?{query}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_record_shows_its_log_counts_per_status() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    app.check_as("tab5-0001", "1.0.0").await;
    app.check_as("tab5-0002", "1.0.0").await;
    app.report_as("tab5-0002", id, "failed").await;

    let detail = app.firmware(id).await;

    assert_eq!(detail["id"], id);
    assert_eq!(
        detail["stats"],
        json!({"pending": 1, "downloading": 0, "installing": 0, "success": 0, "failed": 1})
    );
}

#[tokio::test]
async fn an_unknown_or_malformed_id_is_404_or_400() {
    let app = spawn_app().await;

    assert_problem(app.admin_get("/api/ota/admin/firmware/42").await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.admin_patch("/api/ota/admin/firmware/42", json!({"is_stable": true}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.admin_delete("/api/ota/admin/firmware/42").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.admin_get("/api/ota/admin/firmware/abc").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn patch_changes_the_allowed_fields() {
    let app = spawn_app().await;
    let firmware = app
        .publish(
            Build::stable("1.1.0")
                .with("min_version", "1.0.0")
                .with("build_number", "3"),
        )
        .await;
    let path = format!("/api/ota/admin/firmware/{}", firmware["id"]);

    let response = app
        .admin_patch(
            &path,
            json!({"release_notes": "now stable", "is_stable": false, "is_mandatory": true,
                   "rollout_percentage": 10, "min_version": null, "build_number": 4}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["release_notes"], "now stable");
    assert_eq!(updated["is_stable"], false);
    assert_eq!(updated["is_mandatory"], true);
    assert_eq!(updated["rollout_percentage"], 10);
    assert_eq!(updated["min_version"], Value::Null);
    assert_eq!(updated["build_number"], 4);
    assert_eq!(
        app.firmware(firmware["id"].as_i64().unwrap()).await["rollout_percentage"],
        10
    );
}

#[tokio::test]
async fn patch_refuses_immutable_unknown_and_invalid_fields() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let path = format!("/api/ota/admin/firmware/{}", firmware["id"]);

    for (body, field) in [
        (json!({"version": "2.0.0"}), Some("version")),
        (json!({"device_type": "x"}), Some("device_type")),
        (json!({"file_hash": "0".repeat(64)}), Some("file_hash")),
        (json!({"filename": "x.bin"}), Some("filename")),
        (json!({"rollout_percentage": 101}), Some("rollout_percentage")),
        (json!({"is_stable": "yes"}), Some("is_stable")),
        (json!({"min_version": "one"}), Some("min_version")),
        (json!({"colour": "red"}), None),
    ] {
        let problem = assert_problem(
            app.admin_patch(&path, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["field"].as_str(), field, "{body}: {problem}");
    }
    assert_eq!(app.firmware(firmware["id"].as_i64().unwrap()).await["version"], "1.1.0");
}

#[tokio::test]
async fn delete_deactivates_and_keeps_the_binary_and_history() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    app.check_as("tab5-0001", "1.0.0").await;

    let response = app.admin_delete(&format!("/api/ota/admin/firmware/{id}")).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["is_active"], false);
    assert!(
        app.stored_objects()
            .await
            .contains(&"scales_bridge_tab5/v1.1.0.bin".to_owned())
    );
    let inactive: Value = app
        .admin_get("/api/ota/admin/firmware?is_active=false")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inactive["total"], 1);
    let logs = app.logs(&format!("firmware_id={id}")).await;
    assert_eq!(logs["total"], 1);
    assert_eq!(app.check_as("tab5-0002", "1.0.0").await["update_available"], false);
}

#[tokio::test]
async fn a_deactivation_whose_client_gave_up_still_reaches_devices() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let path = format!("/api/ota/admin/firmware/{}", firmware["id"]);
    assert_eq!(app.check_as("tab5-0001", "1.0.0").await["update_available"], true);
    let mut other_writer = app.lock_the_database().await;

    let gave_up = app
        .client
        .delete(app.url(&path))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the request was meant to time out while the database is locked"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    other_writer.execute("ROLLBACK").await;
    let mut is_active = Value::Bool(true);
    for _ in 0..80 {
        is_active = app.firmware(firmware["id"].as_i64().unwrap()).await["is_active"].clone();
        if is_active == false {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    assert_eq!(is_active, false, "the deactivation was committed");
    assert_eq!(
        app.check_as("tab5-0002", "1.0.0").await["update_available"],
        false,
        "and devices see it"
    );
}
