//! Health, readiness, metrics, the OpenAPI document, and refusals outside
//! any handler (unknown routes, wrong methods).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_answer_when_all_is_well() {
    let app = spawn_app().await;

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();

    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn healthz_and_readyz_name_the_server_version() {
    let app = spawn_app().await;

    let health: Value = app.get_json("/healthz").await;
    let ready: Value = app.get_json("/readyz").await;

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(health, json!({"status": "ok", "version": version}));
    assert_eq!(ready, json!({"status": "ready", "version": version}));
}

#[tokio::test]
async fn readyz_is_503_while_storage_is_gone_and_recovers_by_itself() {
    // It takes the firmware folder away; tests/api/s3.rs makes a bucket
    // unreachable instead.
    if crate::storage::on_s3() {
        eprintln!("skipped on S3: it moves the local firmware folder");
        return;
    }
    let app = spawn_app().await;
    let firmware = app.firmware_dir();
    let moved = app.data_dir.path().join("firmware-away");
    std::fs::rename(&firmware, &moved).unwrap();

    let while_gone = app.client.get(app.url("/readyz")).send().await.unwrap();
    let problem = assert_problem(while_gone, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(problem["detail"].as_str().unwrap().contains("storage"), "{problem}");
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap()
            .contains(app.data_dir.path().to_str().unwrap()),
        "no internals"
    );

    std::fs::rename(&moved, &firmware).unwrap();
    assert_eq!(
        app.client.get(app.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn requests_answer_503_when_the_database_is_unreachable() {
    let app = spawn_app().await;
    app.state.store().close().await;

    let check = app
        .check(
            &device_token("tab5-0001"),
            json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"}),
        )
        .await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();

    assert_problem(check, StatusCode::SERVICE_UNAVAILABLE).await;
    let problem = assert_problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(problem["detail"].as_str().unwrap().contains("database"), "{problem}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_offers_bytes_and_transitions() {
    let app = spawn_app().await;
    let firmware = app.publish(Build::stable("1.1.0")).await;
    let id = firmware["id"].as_i64().unwrap();
    app.check_as("metrics-device", "1.0.0").await;
    app.download_all(id, &device_token("metrics-device")).await;
    app.report_as("metrics-device", id, "downloading").await;

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "ota_http_requests_total{route=\"/api/ota/check\",method=\"POST\",status=\"200\"}",
        "ota_http_request_duration_seconds_bucket{route=\"/api/ota/download/{firmware_id}\"",
        "ota_offers_total{device_type=\"scales_bridge_tab5\"}",
        "ota_download_bytes_total",
        "ota_status_transitions_total{status=\"downloading\"}",
    ] {
        assert!(text.contains(expected), "/metrics lacks {expected}");
    }
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let app = spawn_app_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    app.client.get(app.url("/healthz")).send().await.unwrap();

    let on_main = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics_address = app.metrics_address.clone().expect("a metrics listener");
    let on_own = app
        .client
        .get(format!("{metrics_address}/metrics"))
        .send()
        .await
        .unwrap();

    assert_problem(on_main, StatusCode::NOT_FOUND).await;
    assert_eq!(on_own.status(), StatusCode::OK);
    assert!(on_own.text().await.unwrap().contains("ota_http_requests_total"));
}

/// Every route of the contract in `shared/API.md`.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/api/ota/check"),
    ("get", "/api/ota/download/{firmware_id}"),
    ("head", "/api/ota/download/{firmware_id}"),
    ("post", "/api/ota/status"),
    ("post", "/api/ota/admin/upload"),
    ("post", "/api/ota/admin/firmware"),
    ("get", "/api/ota/admin/firmware"),
    ("get", "/api/ota/admin/firmware/{id}"),
    ("patch", "/api/ota/admin/firmware/{id}"),
    ("delete", "/api/ota/admin/firmware/{id}"),
    ("get", "/api/ota/admin/logs"),
    ("get", "/api/ota/admin/devices"),
    ("get", "/api/ota/admin/devices/{device_id}"),
    ("post", "/api/ota/admin/devices/{device_id}/token"),
    ("post", "/api/ota/admin/device-types"),
    ("get", "/api/ota/admin/device-types"),
    ("get", "/api/ota/admin/device-types/{name}"),
    ("patch", "/api/ota/admin/device-types/{name}"),
    ("post", "/api/ota/admin/firmware/{id}/recall"),
    ("put", "/api/ota/admin/devices/{device_id}/pin"),
    ("delete", "/api/ota/admin/devices/{device_id}/pin"),
    ("get", "/api/ota/admin/fleet"),
    ("post", "/api/ota/admin/groups"),
    ("get", "/api/ota/admin/groups"),
    ("get", "/api/ota/admin/groups/{name}"),
    ("patch", "/api/ota/admin/groups/{name}"),
    ("delete", "/api/ota/admin/groups/{name}"),
    ("get", "/api/ota/admin/groups/{name}/members"),
    ("post", "/api/ota/admin/groups/{name}/members"),
    ("post", "/api/ota/admin/groups/{name}/members/remove"),
    ("post", "/api/ota/admin/rollouts"),
    ("get", "/api/ota/admin/rollouts"),
    ("get", "/api/ota/admin/rollouts/{id}"),
    ("post", "/api/ota/admin/rollouts/{id}/pause"),
    ("post", "/api/ota/admin/rollouts/{id}/resume"),
    ("post", "/api/ota/admin/rollouts/{id}/abort"),
    ("post", "/api/ota/admin/rollouts/{id}/advance"),
    ("get", "/api/ota/admin/audit"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
];

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let app = spawn_app().await;

    let document: Value = app.get_json("/api/openapi.json").await;

    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut contract: Vec<(String, String)> = CONTRACT.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    contract.sort();
    assert_eq!(
        documented, contract,
        "the document and the contract list different routes"
    );

    for (method, path) in &documented {
        let concrete = path
            .replace("{firmware_id}", "1")
            .replace("{id}", "1")
            .replace("{device_id}", "tab5-0001")
            .replace("{name}", DEVICE_TYPE);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is not served"
        );
        if response.status() == StatusCode::NOT_FOUND && method != reqwest::Method::HEAD {
            let body: Value = response.json().await.unwrap();
            assert_ne!(body["detail"], "no such route", "{method} {path} is not served");
        }
    }
}

#[tokio::test]
async fn every_documented_error_is_a_problem_document() {
    let document: Value = serde_json::from_str(&ota_server::http::openapi().to_json().unwrap()).unwrap();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"].get("application/problem+json").is_some(),
                        "{method} {path} {status} is not documented as problem+json"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_openapi_document_describes_minting_device_tokens() {
    let document: Value = serde_json::from_str(&ota_server::http::openapi().to_json().unwrap()).unwrap();

    let operation = &document["paths"]["/api/ota/admin/devices/{device_id}/token"]["post"];
    assert_eq!(operation["tags"], json!(["admin"]));
    assert_eq!(
        operation["security"],
        json!([{"admin_token": []}, {"admin_token_header": []}])
    );
    assert_eq!(operation["parameters"][0]["name"], "device_id");
    assert_eq!(
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/DeviceTokenRequest"
    );
    let mut statuses: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
    statuses.sort();
    assert_eq!(statuses, ["201", "400", "401", "409", "415", "422"]);
    let created = &operation["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/DeviceToken"
    );
    assert!(created["headers"].get("Cache-Control").is_some(), "{created}");

    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["DeviceTokenRequest"]["required"], json!(["device_type"]));
    assert!(schemas["DeviceTokenRequest"]["properties"].get("ttl_seconds").is_some());
    let mut required: Vec<&str> = schemas["DeviceToken"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(
        required,
        [
            "algorithm",
            "device_id",
            "device_type",
            "expires_at",
            "issued_at",
            "token"
        ]
    );
    assert_eq!(schemas["Health"]["required"], json!(["status", "version"]));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problem_documents() {
    let app = spawn_app().await;

    let unknown = app.client.get(app.url("/api/ota/nothing-here")).send().await.unwrap();
    let wrong_method = app.client.delete(app.url("/api/ota/check")).send().await.unwrap();

    assert_problem(unknown, StatusCode::NOT_FOUND).await;
    assert_eq!(wrong_method.headers()["allow"], "POST");
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_keeps_a_given_one() {
    let app = spawn_app().await;

    let fresh = app.client.get(app.url("/healthz")).send().await.unwrap();
    let given = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();

    assert!(!fresh.headers()["x-request-id"].is_empty());
    assert_eq!(given.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn the_readme_documents_every_setting() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();

    for name in ota_server::config::Settings::NAMES {
        let variable = format!("OTA_{}", name.to_uppercase());
        assert!(readme.contains(&variable), "README.md does not document {variable}");
    }
}

#[tokio::test]
async fn the_database_runs_in_wal_mode() {
    if on_postgres() {
        eprintln!("SQLite's write-ahead log: nothing to check on PostgreSQL");
        return;
    }
    let app = spawn_app().await;

    app.publish(Build::stable("1.1.0")).await;

    assert!(
        app.data_dir.path().join("ota.db-wal").exists(),
        "no write-ahead log next to ota.db"
    );
}

#[tokio::test]
async fn a_locked_database_answers_503_to_writes_and_recovers_by_itself() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;
    let mut other_writer = app.lock_the_database().await;

    let body = json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"});
    let while_locked = app.check(&device_token("tab5-0001"), body.clone()).await;
    assert!(while_locked.headers().contains_key("retry-after"));
    assert_problem(while_locked, StatusCode::SERVICE_UNAVAILABLE).await;

    other_writer.execute("ROLLBACK").await;
    assert_eq!(app.check_as("tab5-0001", "1.0.0").await["version"], "1.1.0");
}

#[tokio::test]
async fn a_check_without_an_offer_needs_no_database_write() {
    let app = spawn_app().await;
    app.publish(Build::stable("1.1.0")).await;
    let _other_writer = app.lock_the_database().await;

    let started = std::time::Instant::now();
    let answer = app.check_as("tab5-0001", "1.1.0").await;

    assert_eq!(answer["update_available"], false);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the check waited for the write lock"
    );
}

#[tokio::test]
async fn a_check_records_the_device_in_the_inventory() {
    let app = spawn_app().await;

    app.check_as("tab5-0001", "v1.0.3").await;

    let mut recorded = None;
    for _ in 0..50 {
        recorded = app.state.store().device_version("tab5-0001").await.unwrap();
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(recorded.as_deref(), Some("1.0.3"));
}
