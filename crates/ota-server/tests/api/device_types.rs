//! `/api/ota/admin/device-types`: create, list, show, change; and firmware
//! only for device types that exist.

use ota_core::esp::build::AppImageSpec;
use ota_core::esp::{Chip, EspImage};
use ota_core::wire::ImageFormat;
use ota_server::store::NewFirmware;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const TYPES: &str = "/api/ota/admin/device-types";

/// The documented example: M5Stack Tab5 units are ESP32-P4 v1.0 to v1.3.
fn tab5(name: &str) -> Value {
    json!({
        "name": name, "image_format": "esp-app", "chip": "esp32p4", "project_name": null,
        "min_chip_revision": "v1.0", "max_chip_revision": "v1.99",
        "description": "M5Stack Tab5 bridge"
    })
}

impl TestApp {
    async fn create_device_type(&self, body: Value) -> reqwest::Response {
        self.admin_post(TYPES, body).await
    }

    async fn device_type(&self, name: &str) -> Value {
        let response = self.admin_get(&format!("{TYPES}/{name}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn patch_device_type(&self, name: &str, body: Value) -> reqwest::Response {
        self.admin_patch(&format!("{TYPES}/{name}"), body).await
    }

    /// Registers a record straight in the store, with the image metadata
    /// an ESP app upload would carry.
    async fn insert_esp_firmware(&self, device_type: &str, version: &str, image: EspImage) -> i64 {
        let new = NewFirmware {
            device_type: device_type.into(),
            version: version.into(),
            build_number: None,
            filename: format!("v{version}.bin"),
            binary_path: format!("{device_type}/v{version}.bin"),
            file_size: image.file_len as i64,
            file_hash: "a".repeat(64),
            release_notes: None,
            min_version: None,
            is_stable: true,
            is_mandatory: false,
            rollout_percentage: 100,
            image_format: ImageFormat::EspApp,
            image: Some(image),
            version_overridden: false,
        };
        self.state.store().insert_firmware(&new).await.unwrap().id
    }
}

/// A P4 app image for revisions `min_full` to `max_full`.
fn p4_image(min_full: u16, max_full: u16, project: &str) -> EspImage {
    let bytes = AppImageSpec::new(Chip::Esp32p4)
        .chip_revisions(min_full, max_full)
        .project_name(project)
        .secure_version(2)
        .image();
    EspImage::parse(&bytes).unwrap()
}

#[tokio::test]
async fn creating_an_esp_app_device_type_returns_the_record() {
    let app = spawn_app().await;

    let response = app.create_device_type(tab5("kiosk_tab5")).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let record: Value = response.json().await.unwrap();
    let mut fields: Vec<&str> = record.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "chip",
            "created_at",
            "description",
            "firmware_count",
            "image_format",
            "max_chip_revision",
            "min_chip_revision",
            "name",
            "project_name",
            "updated_at"
        ]
    );
    assert_eq!(record["name"], "kiosk_tab5");
    assert_eq!(record["image_format"], "esp-app");
    assert_eq!(record["chip"], "esp32p4");
    assert_eq!(record["project_name"], Value::Null);
    assert_eq!(record["min_chip_revision"], "v1.0");
    assert_eq!(record["max_chip_revision"], "v1.99");
    assert_eq!(record["firmware_count"], 0);
    assert_eq!(app.device_type("kiosk_tab5").await, record);
}

#[tokio::test]
async fn a_raw_device_type_needs_only_a_name() {
    let app = spawn_app().await;

    let response = app
        .create_device_type(json!({"name": "gateway", "image_format": "raw", "chip": "ESP32-S3"}))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["image_format"], "raw");
    assert_eq!(
        record["chip"], "esp32s3",
        "kept as documentation, in esptool's spelling"
    );
    assert_eq!(record["min_chip_revision"], "v0.0");
    assert_eq!(record["max_chip_revision"], Value::Null);
    assert_eq!(record["description"], Value::Null);
}

#[tokio::test]
async fn the_list_is_sorted_by_name_and_paged() {
    let app = spawn_app().await;
    for name in ["zz_last", "aa_first"] {
        let response = app
            .create_device_type(json!({"name": name, "image_format": "raw"}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    let all: Value = app.admin_get(TYPES).await.json().await.unwrap();
    let page: Value = app
        .admin_get(&format!("{TYPES}?limit=1&offset=1"))
        .await
        .json()
        .await
        .unwrap();

    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["aa_first", OTHER_DEVICE_TYPE, DEVICE_TYPE, "zz_last"]);
    assert_eq!(all["total"], 4);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["name"], OTHER_DEVICE_TYPE);
    assert_eq!(page["total"], 4);
    assert_problem(
        app.admin_get(&format!("{TYPES}?limit=0")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn the_firmware_count_counts_active_firmware() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;
    let retired = app.publish(Build::stable("1.2.0")).await;
    app.admin_delete(&format!("/api/ota/admin/firmware/{}", retired["id"]))
        .await;

    assert_eq!(app.device_type(DEVICE_TYPE).await["firmware_count"], 1);
    assert_eq!(app.device_type(OTHER_DEVICE_TYPE).await["firmware_count"], 0);
}

#[tokio::test]
async fn an_unknown_device_type_is_404() {
    let app = spawn_app().await;

    for name in ["no_such_type", "Not%20A%20Name"] {
        let response = app.admin_get(&format!("{TYPES}/{name}")).await;
        assert_problem(response, StatusCode::NOT_FOUND).await;
        let response = app.patch_device_type(name, json!({"description": "x"})).await;
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn a_device_type_of_an_existing_name_is_409() {
    let app = spawn_app().await;

    let response = app
        .create_device_type(json!({"name": DEVICE_TYPE, "image_format": "raw"}))
        .await;

    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().unwrap().contains("PATCH"), "{problem}");
}

#[tokio::test]
async fn invalid_device_types_are_422_naming_the_field() {
    let app = spawn_app().await;
    let with = |changes: Value| {
        let mut body = tab5("new_type");
        for (key, value) in changes.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let cases = [
        (with(json!({"name": "Tab5 Bridge"})), Some("name")),
        (with(json!({"name": "../etc"})), Some("name")),
        (with(json!({"image_format": "esp"})), Some("image_format")),
        (with(json!({"chip": "esp8266"})), Some("chip")),
        (with(json!({"chip": null})), Some("chip")),
        (with(json!({"min_chip_revision": "1.100"})), Some("min_chip_revision")),
        (with(json!({"max_chip_revision": "two"})), Some("max_chip_revision")),
        (
            with(json!({"min_chip_revision": "v3.0", "max_chip_revision": "v1.99"})),
            Some("max_chip_revision"),
        ),
        (with(json!({"project_name": ""})), Some("project_name")),
        (with(json!({"project_name": "x".repeat(32)})), Some("project_name")),
        (with(json!({"description": "d".repeat(1025)})), Some("description")),
        (with(json!({"colour": "red"})), None),
        (json!({"name": "new_type"}), None),
    ];

    for (body, field) in cases {
        let response = app.create_device_type(body.clone()).await;

        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"].as_str(), field, "{body}: {problem}");
    }
    assert_problem(app.admin_get(&format!("{TYPES}/new_type")).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn an_unknown_chip_is_refused_with_the_known_ones() {
    let app = spawn_app().await;
    let mut body = tab5("new_type");
    body["chip"] = json!("esp8266");

    let problem = assert_problem(app.create_device_type(body).await, StatusCode::UNPROCESSABLE_ENTITY).await;

    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("esp8266") && detail.contains("esp32p4, "), "{detail}");
}

#[tokio::test]
async fn revisions_and_project_names_only_apply_to_esp_apps() {
    let app = spawn_app().await;

    for (field, value) in [
        ("project_name", "scales_bridge"),
        ("min_chip_revision", "v0.0"),
        ("max_chip_revision", "v1.99"),
    ] {
        let body = json!({"name": "plain", "image_format": "raw", field: value});
        let problem = assert_problem(app.create_device_type(body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("esp-app"), "{problem}");
    }
}

#[tokio::test]
async fn device_types_need_the_admin_token() {
    let app = spawn_app().await;
    let path = format!("{TYPES}/{DEVICE_TYPE}");

    for request in [
        app.client.get(app.url(TYPES)),
        app.client.post(app.url(TYPES)).json(&tab5("kiosk_tab5")),
        app.client.get(app.url(&path)),
        app.client.patch(app.url(&path)).json(&json!({"description": "x"})),
        app.client
            .get(app.url(TYPES))
            .bearer_auth("not-the-admin-token-0123456789"),
    ] {
        assert_problem(request.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    }
    assert_problem(
        app.admin_get(&format!("{TYPES}/kiosk_tab5")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_patch_changes_the_given_fields_and_null_clears() {
    let app = spawn_app().await;
    let mut body = tab5("kiosk_tab5");
    body["project_name"] = json!("scales_bridge");
    app.create_device_type(body).await;

    let response = app
        .patch_device_type(
            "kiosk_tab5",
            json!({"project_name": null, "max_chip_revision": null, "min_chip_revision": "v1.1",
                   "description": "revised"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["project_name"], Value::Null);
    assert_eq!(record["max_chip_revision"], Value::Null);
    assert_eq!(record["min_chip_revision"], "v1.1");
    assert_eq!(record["description"], "revised");
    assert_eq!(record["chip"], "esp32p4", "left alone");
    assert_eq!(app.device_type("kiosk_tab5").await, record);
}

#[tokio::test]
async fn switching_to_raw_clears_the_esp_only_fields() {
    let app = spawn_app().await;
    app.create_device_type(tab5("kiosk_tab5")).await;

    let response = app
        .patch_device_type("kiosk_tab5", json!({"image_format": "raw"}))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["image_format"], "raw");
    assert_eq!(record["chip"], "esp32p4");
    assert_eq!(record["min_chip_revision"], "v0.0");
    assert_eq!(record["max_chip_revision"], Value::Null);
}

#[tokio::test]
async fn a_patch_refuses_the_name_unknown_fields_and_invalid_values() {
    let app = spawn_app().await;
    app.create_device_type(tab5("kiosk_tab5")).await;

    for (body, field) in [
        (json!({"name": "renamed"}), Some("name")),
        (json!({"firmware_count": 3}), Some("firmware_count")),
        (json!({"colour": "red"}), None),
        (json!({"image_format": "elf"}), Some("image_format")),
        (json!({"image_format": null}), Some("image_format")),
        (json!({"min_chip_revision": null}), Some("min_chip_revision")),
        (json!({"chip": "esp8266"}), Some("chip")),
        (json!({"chip": null}), Some("chip")),
        (json!({"min_chip_revision": "v2.0"}), Some("max_chip_revision")),
        (json!({"max_chip_revision": "v0.99"}), Some("max_chip_revision")),
        (
            json!({"image_format": "raw", "project_name": "x"}),
            Some("project_name"),
        ),
    ] {
        let response = app.patch_device_type("kiosk_tab5", body.clone()).await;

        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"].as_str(), field, "{body}: {problem}");
    }
    let unchanged = app.device_type("kiosk_tab5").await;
    assert_eq!(unchanged["name"], "kiosk_tab5");
    assert_eq!(unchanged["image_format"], "esp-app");
    assert_eq!(unchanged["min_chip_revision"], "v1.0");
}

#[tokio::test]
async fn a_type_with_active_raw_firmware_cannot_become_an_esp_app() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    let switch = json!({"image_format": "esp-app", "chip": "esp32p4"});

    let refused = app.patch_device_type(DEVICE_TYPE, switch.clone()).await;

    let problem = assert_problem(refused, StatusCode::CONFLICT).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("firmware {id} (1.1.0)")), "{detail}");
    assert!(
        detail.contains("not an ESP app image") && detail.contains("Deactivate"),
        "{detail}"
    );
    assert_eq!(app.device_type(DEVICE_TYPE).await["image_format"], "raw");

    app.admin_delete(&format!("/api/ota/admin/firmware/{id}")).await;
    let accepted = app.patch_device_type(DEVICE_TYPE, switch).await;

    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(accepted.json::<Value>().await.unwrap()["image_format"], "esp-app");
}

#[tokio::test]
async fn new_rules_are_refused_only_for_the_firmware_they_would_not_fit() {
    let app = spawn_app().await;
    app.create_device_type(tab5("kiosk_tab5")).await;
    let fits = app
        .insert_esp_firmware("kiosk_tab5", "1.0.0", p4_image(0, 199, "scales_bridge"))
        .await;
    let other = app
        .insert_esp_firmware("kiosk_tab5", "1.1.0", p4_image(100, 199, "other_app"))
        .await;

    let named = app
        .patch_device_type("kiosk_tab5", json!({"project_name": "scales_bridge"}))
        .await;
    let narrower = app
        .patch_device_type("kiosk_tab5", json!({"max_chip_revision": "v1.3"}))
        .await;

    let problem = assert_problem(named, StatusCode::CONFLICT).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("firmware {other} (1.1.0)")), "{detail}");
    assert!(detail.contains("'other_app'"), "says why: {detail}");
    assert!(!detail.contains(&format!("firmware {fits} ")), "{detail}");
    assert_eq!(app.device_type("kiosk_tab5").await["project_name"], Value::Null);
    assert_eq!(narrower.status(), StatusCode::OK, "both images boot on v1.0 to v1.3");
}

#[tokio::test]
async fn firmware_records_carry_their_image_metadata() {
    let app = spawn_app().await;
    app.create_device_type(tab5("kiosk_tab5")).await;
    let image = p4_image(0, 199, "scales_bridge");
    let id = app.insert_esp_firmware("kiosk_tab5", "1.0.0", image.clone()).await;
    let raw = app.publish(Build::stable("1.1.0")).await;

    let record = app.firmware(id).await;

    assert_eq!(record["image_format"], "esp-app");
    assert_eq!(record["version_overridden"], false);
    assert_eq!(record["image"], serde_json::to_value(&image).unwrap());
    assert_eq!(record["image"]["app"]["project_name"], "scales_bridge");
    assert_eq!(raw["image_format"], "raw");
    assert_eq!(raw["image"], Value::Null);
    assert_eq!(raw["version_overridden"], false);
}

#[tokio::test]
async fn an_upload_for_an_unknown_device_type_is_422_and_stores_nothing() {
    let app = spawn_app().await;

    let response = app
        .upload("unknown_product", &Build::stable("1.0.0").with("register", "true"))
        .await;

    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "device_type");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("unknown device type 'unknown_product'") && detail.contains("POST /api/ota/admin/device-types"),
        "{detail}"
    );
    assert!(
        detail.contains(r#"{"name":"unknown_product","image_format":"raw"}"#),
        "{detail}"
    );
    assert!(app.stored_objects().await.is_empty());
    let listed: Value = app.admin_get("/api/ota/admin/firmware").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
}

#[tokio::test]
async fn registering_for_an_unknown_device_type_is_422_and_creates_no_record() {
    let app = spawn_app().await;
    let bytes = firmware_bytes(2048, 3);
    app.put_object("unknown_product/v1.0.0.bin", &bytes).await;

    let response = app
        .admin_post(
            "/api/ota/admin/firmware",
            json!({"device_type": "unknown_product", "version": "1.0.0", "filename": "v1.0.0.bin",
                   "file_hash": sha256_hex(&bytes)}),
        )
        .await;

    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "device_type");
    let listed: Value = app.admin_get("/api/ota/admin/firmware").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
}

#[tokio::test]
async fn device_types_in_use_before_the_migration_become_raw() {
    let before = tempfile::tempdir().unwrap();
    let database = before.path().join("ota.db");
    legacy_database(&database).await;

    let app = spawn_app_with(|s| s.database_url = Some(format!("sqlite://{}", database.display()))).await;

    let listed: Value = app.admin_get(TYPES).await.json().await.unwrap();
    let legacy: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("legacy_"))
        .collect();
    assert_eq!(legacy.len(), 2, "{listed}");
    assert_eq!(legacy[0]["name"], "legacy_kiosk");
    assert_eq!(legacy[0]["firmware_count"], 0);
    assert_eq!(legacy[1]["name"], "legacy_scale");
    assert_eq!(legacy[1]["firmware_count"], 1);
    for kind in &legacy {
        assert_eq!(kind["image_format"], "raw");
        assert_eq!(kind["chip"], Value::Null);
        assert_eq!(kind["created_at"], "2026-11-20T08:00:00Z");
    }
    let firmware = app.firmware(1).await;
    assert_eq!(firmware["image_format"], "raw");
    assert_eq!(firmware["image"], Value::Null);
    assert_eq!(firmware["version_overridden"], false);
    let upload = app.upload("legacy_scale", &Build::stable("1.1.0")).await;
    assert_eq!(
        upload.status(),
        StatusCode::CREATED,
        "a legacy type keeps taking uploads"
    );
}

/// A database as the first release left it: only the initial migration,
/// one firmware of `legacy_scale` and one device of `legacy_kiosk`.
async fn legacy_database(path: &std::path::Path) {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let migrations = tempfile::tempdir().unwrap();
    let initial = "20261127000001_initial.sql";
    std::fs::copy(
        format!("{}/migrations/sqlite/{initial}", env!("CARGO_MANIFEST_DIR")),
        migrations.path().join(initial),
    )
    .unwrap();
    let pool = SqlitePoolOptions::new()
        .connect_with(SqliteConnectOptions::new().filename(path).create_if_missing(true))
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(migrations.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let at = "2026-11-20T08:00:00Z";
    sqlx::query(
        "INSERT INTO firmware (device_type, version, filename, binary_path, file_size, file_hash, \
         is_stable, created_at, updated_at) \
         VALUES ('legacy_scale', '1.0.0', 'v1.0.0.bin', 'legacy_scale/v1.0.0.bin', 4, $1, TRUE, $2, $2)",
    )
    .bind("b".repeat(64))
    .bind(at)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (device_id, device_type, current_version, first_seen, last_seen) \
         VALUES ('kiosk-1', 'legacy_kiosk', '1.0.0', $1, $1)",
    )
    .bind(at)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}
