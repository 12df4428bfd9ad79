//! ESP-IDF app images: uploads checked against their device type, metadata
//! on the record, versions read from the image, and anti-rollback.

use ota_core::esp::Chip;
use ota_core::esp::build::AppImageSpec;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// The Tab5 fleet: ESP32-P4 units of revisions v1.0 to v1.99.
pub(crate) async fn tab5_checks_images(app: &TestApp) {
    let response = app
        .admin_patch(
            &format!("/api/ota/admin/device-types/{DEVICE_TYPE}"),
            json!({"image_format": "esp-app", "chip": "esp32p4", "project_name": "scales_bridge",
                   "min_chip_revision": "v1.0", "max_chip_revision": "v1.99"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
}

/// A Tab5 build of `version` (as its app descriptor says it).
fn tab5_build(version: &str) -> AppImageSpec {
    AppImageSpec::new(Chip::Esp32p4)
        .chip_revisions(100, 199)
        .version(version)
        .project_name("scales_bridge")
        .secure_version(1)
        .target_len(8 * 1024)
}

/// Uploads `bytes` for the Tab5 with the given extra form fields.
pub(crate) async fn upload_image(app: &TestApp, bytes: Vec<u8>, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new().text("device_type", DEVICE_TYPE);
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    form = form.part("file", reqwest::multipart::Part::bytes(bytes).file_name("app.bin"));
    app.upload_form(form).await
}

/// A refused upload: 422 naming `field`, nothing stored, nothing registered.
async fn assert_refused(app: &TestApp, response: reqwest::Response, field: &str, says: &str) -> Value {
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], field, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(says), "'{says}' not in: {detail}");
    let stored: Vec<_> = app
        .stored_objects()
        .await
        .into_iter()
        .filter(|p| !p.starts_with(".incoming/"))
        .collect();
    assert!(stored.is_empty(), "a refused upload left {stored:?}");
    assert_eq!(admin_json(app, "/api/ota/admin/firmware").await["total"], 0);
    problem
}

#[tokio::test]
async fn an_image_uploaded_without_a_version_is_registered_under_its_own() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let bytes = tab5_build("v1.2.0").image();

    let response = upload_image(&app, bytes.clone(), &[("register", "true"), ("is_stable", "true")]).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["version"], "1.2.0");
    assert_eq!(uploaded["filename"], "v1.2.0.bin");
    assert_eq!(uploaded["image_format"], "esp-app");
    let firmware = &uploaded["firmware"];
    assert_eq!(firmware["version"], "1.2.0");
    assert_eq!(firmware["version_overridden"], false);
    let image = &firmware["image"];
    assert_eq!(image["header"]["chip"], "esp32p4");
    assert_eq!(image["header"]["chip_id"], 18);
    assert_eq!(image["header"]["min_chip_revision"], "v1.0");
    assert_eq!(image["header"]["max_chip_revision"], "v1.99");
    assert_eq!(image["app"]["version"], "v1.2.0");
    assert_eq!(image["app"]["project_name"], "scales_bridge");
    assert_eq!(image["app"]["secure_version"], 1);
    assert_eq!(image["signature"], Value::Null);
    let hashed = &bytes[..bytes.len() - 32];
    assert_eq!(image["validation_hash"], sha256_hex(hashed));
    assert_eq!(firmware["file_hash"], sha256_hex(&bytes));

    let shown = app.firmware(firmware["id"].as_i64().unwrap()).await;
    assert_eq!(shown["image"], *image);
    assert_eq!(shown["image_format"], "esp-app");
}

#[tokio::test]
async fn a_git_describe_version_is_read_as_commits_after_its_tag() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;

    let response = upload_image(
        &app,
        tab5_build("v1.2.0-3-gabc1234").image(),
        &[("register", "true"), ("is_stable", "true")],
    )
    .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["version"], "1.2.1-dev.3+gabc1234");
    // A device on the tag is offered the build; a device running it, which
    // reports its descriptor's version, is not offered it again.
    assert_eq!(
        app.check_as("tab5-0001", "v1.2.0").await["version"],
        "1.2.1-dev.3+gabc1234"
    );
    assert_eq!(
        app.check_as("tab5-0002", "v1.2.0-3-gabc1234").await["update_available"],
        false
    );
}

#[tokio::test]
async fn a_version_that_differs_from_the_image_is_refused_unless_overridden() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let bytes = tab5_build("v1.2.0").image();

    let refused = upload_image(&app, bytes.clone(), &[("version", "1.3.0"), ("register", "true")]).await;
    let problem = assert_refused(
        &app,
        refused,
        "version",
        "differs from the image's app descriptor version 'v1.2.0'",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("override_version=true"),
        "{problem}"
    );

    let same = upload_image(&app, bytes.clone(), &[("version", "v1.2.0"), ("register", "true")]).await;
    assert_eq!(same.status(), StatusCode::CREATED);
    let same: Value = same.json().await.unwrap();
    assert_eq!(same["firmware"]["version_overridden"], false);

    let kept = upload_image(
        &app,
        bytes,
        &[("version", "1.3.0"), ("override_version", "true"), ("register", "true")],
    )
    .await;
    assert_eq!(kept.status(), StatusCode::CREATED);
    let kept: Value = kept.json().await.unwrap();
    assert_eq!(kept["firmware"]["version"], "1.3.0");
    assert_eq!(kept["firmware"]["version_overridden"], true);
    assert_eq!(
        kept["firmware"]["image"]["app"]["version"], "v1.2.0",
        "the image's own is kept too"
    );
}

#[tokio::test]
async fn corrupt_images_are_refused_saying_what_is_wrong() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let good = tab5_build("1.2.0").image();

    let mut flipped = good.clone();
    flipped[4000] ^= 0x10;
    let response = upload_image(&app, flipped, &[]).await;
    assert_refused(&app, response, "file", "checksum mismatch").await;

    // The flash frequency is outside the checksum, but inside the hash.
    let mut header = good.clone();
    header[3] ^= 0x01;
    let response = upload_image(&app, header, &[]).await;
    assert_refused(&app, response, "file", "SHA-256 mismatch").await;

    let response = upload_image(&app, good[..good.len() - 100].to_vec(), &[]).await;
    assert_refused(&app, response, "file", "cut off").await;

    let mut magic = good.clone();
    magic[0] = 0x7F;
    let response = upload_image(&app, magic, &[]).await;
    assert_refused(&app, response, "file", "not 0xE9").await;

    let response = upload_image(&app, good[..1000].to_vec(), &[("version", "1.2.0")]).await;
    assert_refused(&app, response, "file", "refuses a shorter one").await;
}

#[tokio::test]
async fn an_image_for_another_chip_or_silicon_or_project_is_refused() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;

    let c6 = AppImageSpec::new(Chip::Esp32c6)
        .project_name("scales_bridge")
        .target_len(8192);
    let response = upload_image(&app, c6.image(), &[]).await;
    assert_refused(
        &app,
        response,
        "file",
        "built for esp32c6 (chip id 13), but this device type runs on esp32p4 (chip id 18)",
    )
    .await;

    let newer_silicon = tab5_build("1.2.0").chip_revisions(301, 399);
    let response = upload_image(&app, newer_silicon.image(), &[]).await;
    assert_refused(&app, response, "file", "needs chip revision v3.1 or later").await;

    let capped = tab5_build("1.2.0").chip_revisions(0, 101);
    let response = upload_image(&app, capped.image(), &[]).await;
    assert_refused(&app, response, "file", "up to v1.1").await;

    let other_project = tab5_build("1.2.0").project_name("thermostat");
    let response = upload_image(&app, other_project.image(), &[]).await;
    assert_refused(&app, response, "file", "project_name is 'thermostat'").await;
}

#[tokio::test]
async fn signed_images_are_accepted_with_their_signature_described() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let signed = tab5_build("1.2.0").signed(ota_core::esp::SignatureScheme::SecureBootV2Ecdsa);

    let response = upload_image(&app, signed.image(), &[("register", "true")]).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: Value = response.json().await.unwrap();
    let signature = &uploaded["image"]["signature"];
    assert_eq!(signature["scheme"], "secure-boot-v2-ecdsa");
    assert_eq!(signature["blocks"], 1);
}

#[tokio::test]
async fn registering_a_stored_file_checks_it_the_same_way() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let good = tab5_build("1.4.0").image();
    app.put_object(&format!("{DEVICE_TYPE}/v1.4.0.bin"), &good).await;
    let mut bad = good.clone();
    bad[5000] ^= 1;
    app.put_object(&format!("{DEVICE_TYPE}/v1.5.0.bin"), &bad).await;

    let refused = app
        .admin_post(
            "/api/ota/admin/firmware",
            json!({"device_type": DEVICE_TYPE, "filename": "v1.5.0.bin", "file_hash": sha256_hex(&bad)}),
        )
        .await;
    let problem = assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "file");

    let registered = app
        .admin_post(
            "/api/ota/admin/firmware",
            json!({"device_type": DEVICE_TYPE, "filename": "v1.4.0.bin", "file_hash": sha256_hex(&good)}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let record: Value = registered.json().await.unwrap();
    assert_eq!(record["version"], "1.4.0", "the version came from the image");
    assert_eq!(record["image"]["header"]["chip"], "esp32p4");
}

#[tokio::test]
async fn a_raw_device_type_takes_any_file_but_needs_a_version() {
    let app = spawn_app().await;
    let response = upload_image(&app, firmware_bytes(2048, 1), &[]).await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "version");
    assert!(
        problem["detail"].as_str().unwrap().contains("raw device type"),
        "{problem}"
    );

    let response = upload_image(
        &app,
        firmware_bytes(2048, 1),
        &[("version", "1.0.0"), ("register", "true")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["firmware"]["image_format"], "raw");
    assert_eq!(uploaded["firmware"]["image"], Value::Null);
}

/// Publishes a stable Tab5 build with this anti-rollback counter.
async fn publish_secure(app: &TestApp, version: &str, secure_version: u32) -> i64 {
    let bytes = tab5_build(version).secure_version(secure_version).image();
    let response = upload_image(app, bytes, &[("register", "true"), ("is_stable", "true")]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: Value = response.json().await.unwrap();
    uploaded["firmware"]["id"].as_i64().unwrap()
}

async fn check_with(app: &TestApp, device_id: &str, secure_version: Option<i64>) -> Value {
    let mut body = json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"});
    if let Some(n) = secure_version {
        body["secure_version"] = json!(n);
    }
    let response = app.check(&device_token(device_id), body).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_image_below_the_device_anti_rollback_counter_is_never_offered() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let counter_2 = publish_secure(&app, "1.1.0", 2).await;
    // A newer build from a branch whose counter was never raised.
    publish_secure(&app, "1.2.0", 1).await;

    assert_eq!(check_with(&app, "tab5-fresh", None).await["version"], "1.2.0");
    let offer = check_with(&app, "tab5-0001", Some(2)).await;
    assert_eq!(offer["firmware_id"], counter_2);
    assert_eq!(check_with(&app, "tab5-0002", Some(3)).await["update_available"], false);

    // At once, before the inventory is written, a check without the counter
    // is still held to it.
    assert_eq!(check_with(&app, "tab5-0001", None).await["firmware_id"], counter_2);
    // The inventory keeps the counter: a later check without one, or with a
    // lower one, is still held to it.
    let device = app.wait_for_device("tab5-0001", |d| d["secure_version"] == 2).await;
    assert_eq!(device["device_type"], DEVICE_TYPE);
    assert_eq!(check_with(&app, "tab5-0001", None).await["firmware_id"], counter_2);
    assert_eq!(check_with(&app, "tab5-0001", Some(0)).await["firmware_id"], counter_2);
}

#[tokio::test]
async fn a_secure_version_out_of_range_is_refused() {
    let app = spawn_app().await;
    for bad in [json!(-1), json!(4_294_967_296i64)] {
        let response = app
            .check(
                &device_token("tab5-0001"),
                json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0", "secure_version": bad}),
            )
            .await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "secure_version");
    }
}

async fn admin_json(app: &TestApp, path: &str) -> Value {
    let response = app.admin_get(path).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_inventory_lists_devices_and_404s_an_unknown_one() {
    let app = spawn_app().await;
    check_with(&app, "tab5-0002", Some(4)).await;
    check_with(&app, "tab5-0001", None).await;
    app.wait_for_device("tab5-0001", |_| true).await;
    app.wait_for_device("tab5-0002", |_| true).await;

    let page = admin_json(&app, &format!("/api/ota/admin/devices?device_type={DEVICE_TYPE}")).await;
    assert_eq!(page["total"], 2);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tab5-0001", "tab5-0002"]);
    assert_eq!(page["items"][1]["secure_version"], 4);
    assert_eq!(page["items"][0]["current_version"], "1.0.0");
    assert_eq!(
        admin_json(&app, "/api/ota/admin/devices?device_type=nobody").await["total"],
        0
    );

    let missing = app.admin_get("/api/ota/admin/devices/tab5-9999").await;
    assert_problem(missing, StatusCode::NOT_FOUND).await;
    let bad_page = app.admin_get("/api/ota/admin/devices?limit=0").await;
    assert_problem(bad_page, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_build_the_rules_now_refuse_cannot_be_reactivated() {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let id = publish_secure(&app, "1.1.0", 1).await;
    assert_eq!(
        app.admin_delete(&format!("/api/ota/admin/firmware/{id}"))
            .await
            .status(),
        StatusCode::OK
    );
    // The fleet turns out to include v3.1 silicon, which this build does not run on.
    let response = app
        .admin_patch(
            &format!("/api/ota/admin/device-types/{DEVICE_TYPE}"),
            json!({"max_chip_revision": "v3.1"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let refused = app
        .admin_patch(&format!("/api/ota/admin/firmware/{id}"), json!({"is_active": true}))
        .await;

    let problem = assert_problem(refused, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("cannot be reactivated"),
        "{problem}"
    );
    assert_eq!(app.firmware(id).await["is_active"], false);
    let allowed = app
        .admin_patch(
            &format!("/api/ota/admin/firmware/{id}"),
            json!({"release_notes": "kept"}),
        )
        .await;
    assert_eq!(allowed.status(), StatusCode::OK, "other changes still go through");
}

#[tokio::test]
async fn switching_a_raw_type_to_esp_app_adopts_stored_files_that_are_fitting_images() {
    let app = spawn_app().await;
    // Before device types checked images: a real Tab5 build stored as raw.
    let bytes = tab5_build("v1.1.0").secure_version(3).image();
    let response = upload_image(
        &app,
        bytes,
        &[("version", "1.1.0"), ("register", "true"), ("is_stable", "true")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["firmware"]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(app.firmware(id).await["image_format"], "raw");
    // As a server from before this release stored it: no metadata at all.
    let mut legacy = app.lock_the_database().await;
    legacy
        .execute(&format!(
            "UPDATE firmware SET image_info = NULL, secure_version = NULL, chip = NULL WHERE id = {id}"
        ))
        .await;
    legacy.execute("COMMIT").await;
    drop(legacy);
    assert_eq!(app.firmware(id).await["image"], Value::Null);

    tab5_checks_images(&app).await;

    let adopted = app.firmware(id).await;
    assert_eq!(adopted["image_format"], "esp-app");
    assert_eq!(adopted["image"]["header"]["chip"], "esp32p4");
    assert_eq!(adopted["image"]["app"]["secure_version"], 3);
    assert_eq!(adopted["version_overridden"], false);
    // Its counter now counts: a device at 4 is not offered it.
    assert_eq!(check_with(&app, "tab5-0001", Some(4)).await["update_available"], false);
    assert_eq!(check_with(&app, "tab5-0002", Some(3)).await["firmware_id"], id);
}

#[tokio::test]
async fn the_openapi_document_describes_the_image_metadata() {
    let app = spawn_app().await;
    let document = app.get_json("/api/openapi.json").await;
    let schemas = &document["components"]["schemas"];
    for name in [
        "EspImage",
        "ImageHeader",
        "AppDescriptor",
        "Signature",
        "DeviceTypeRecord",
        "DeviceRecord",
    ] {
        assert!(schemas[name].is_object(), "no {name} schema");
    }
    let firmware = &schemas["Firmware"]["properties"];
    assert!(
        firmware["image"].is_object() && firmware["image_format"].is_object(),
        "{firmware}"
    );
    assert!(schemas["CheckRequest"]["properties"]["secure_version"].is_object());
    assert!(schemas["AppDescriptor"]["properties"]["secure_version"].is_object());
}

#[tokio::test]
async fn an_esp_image_in_a_raw_type_keeps_its_counter_and_is_held_to_it() {
    let app = spawn_app().await;
    let bytes = tab5_build("v1.2.0").secure_version(1).image();

    let response = upload_image(
        &app,
        bytes,
        &[("version", "1.2.0"), ("register", "true"), ("is_stable", "true")],
    )
    .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let firmware = response.json::<Value>().await.unwrap()["firmware"].clone();
    assert_eq!(firmware["image_format"], "raw", "not checked against rules");
    assert_eq!(firmware["secure_version"], 1);
    assert_eq!(firmware["image"]["app"]["version"], "v1.2.0");
    assert_eq!(check_with(&app, "tab5-0001", Some(3)).await["update_available"], false);
    assert_eq!(check_with(&app, "tab5-0002", Some(1)).await["version"], "1.2.0");
}

#[tokio::test]
async fn a_raw_build_deactivated_before_the_switch_is_read_when_reactivated() {
    let app = spawn_app().await;
    let bytes = tab5_build("v1.0.0").image();
    let response = upload_image(&app, bytes, &[("version", "1.0.0"), ("register", "true")]).await;
    let id = response.json::<Value>().await.unwrap()["firmware"]["id"]
        .as_i64()
        .unwrap();
    let junk = upload_image(
        &app,
        firmware_bytes(4096, 3),
        &[("version", "1.1.0"), ("register", "true")],
    )
    .await;
    let junk = junk.json::<Value>().await.unwrap()["firmware"]["id"].as_i64().unwrap();
    for firmware in [id, junk] {
        assert_eq!(
            app.admin_delete(&format!("/api/ota/admin/firmware/{firmware}"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    tab5_checks_images(&app).await;

    let back = app
        .admin_patch(&format!("/api/ota/admin/firmware/{id}"), json!({"is_active": true}))
        .await;
    assert_eq!(back.status(), StatusCode::OK);
    let record: Value = back.json().await.unwrap();
    assert_eq!(record["is_active"], true);
    assert_eq!(
        app.firmware(id).await["image_format"],
        "esp-app",
        "its file was read and fits"
    );

    let refused = app
        .admin_patch(&format!("/api/ota/admin/firmware/{junk}"), json!({"is_active": true}))
        .await;
    let problem = assert_problem(refused, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("not an ESP app image"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_device_type_field_of_the_wrong_json_type_is_named() {
    let app = spawn_app().await;
    let response = app
        .admin_patch(
            &format!("/api/ota/admin/device-types/{DEVICE_TYPE}"),
            json!({"min_chip_revision": 5}),
        )
        .await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "min_chip_revision");
}
