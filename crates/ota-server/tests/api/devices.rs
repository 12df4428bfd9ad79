//! `POST /api/ota/admin/devices/{device_id}/token`: device tokens minted by
//! the server, and the start-up checks of a configured private key.

use jsonwebtoken::Algorithm;
use ota_server::app::Application;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const DAY: i64 = 24 * 3600;

fn check_body(device_type: &str) -> Value {
    json!({"device_type": device_type, "current_version": "1.0.0"})
}

fn token_of(minted: &Value) -> &str {
    minted["token"].as_str().expect("the answer carries the token")
}

fn parse_time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value.as_str().unwrap();
    assert!(text.ends_with('Z'), "{text} is not UTC with a Z");
    chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[tokio::test]
async fn a_minted_token_is_created_once_and_never_cached() {
    let app = spawn_app().await;

    let response = app
        .mint_token("tab5-0001", json!({"device_type": DEVICE_TYPE, "ttl_seconds": 3600}))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "application/json");
    let minted: Value = response.json().await.unwrap();
    assert_eq!(minted["device_id"], "tab5-0001");
    assert_eq!(minted["device_type"], DEVICE_TYPE);
    assert_eq!(minted["algorithm"], "HS256");
    let mut fields: Vec<&String> = minted.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "algorithm",
            "device_id",
            "device_type",
            "expires_at",
            "issued_at",
            "token"
        ]
    );
}

#[tokio::test]
async fn a_minted_token_passes_check_for_its_device_type() {
    let app = spawn_app().await;
    let minted = app.minted_token("tab5-0001").await;

    let response = app.check(token_of(&minted), check_body(DEVICE_TYPE)).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["update_available"], false);
}

#[tokio::test]
async fn a_minted_token_carries_the_device_its_type_and_its_lifetime() {
    let app = spawn_app().await;
    let before = now();

    let response = app
        .mint_token("tab5-0001", json!({"device_type": DEVICE_TYPE, "ttl_seconds": 3600}))
        .await;

    let minted: Value = response.json().await.unwrap();
    let (header, claims) = jwt_parts(token_of(&minted));
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["sub"], "tab5-0001");
    assert_eq!(claims["device_type"], DEVICE_TYPE);
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert_eq!(exp - iat, 3600);
    assert!((before..=now()).contains(&iat), "iat {iat} is not the time of minting");
    assert_eq!(parse_time(&minted["issued_at"]).timestamp(), iat);
    assert_eq!(parse_time(&minted["expires_at"]).timestamp(), exp);
    let jti = uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).unwrap();
    assert_eq!(jti.get_version_num(), 4);
    assert!(claims.get("iss").is_none() && claims.get("aud").is_none(), "{claims}");
}

#[tokio::test]
async fn each_minted_token_has_its_own_jti() {
    let app = spawn_app().await;

    let first = app.minted_token("tab5-0001").await;
    let second = app.minted_token("tab5-0001").await;

    assert_ne!(
        jwt_parts(token_of(&first)).1["jti"],
        jwt_parts(token_of(&second)).1["jti"]
    );
}

#[tokio::test]
async fn a_minted_token_is_403_for_another_device_type() {
    let app = spawn_app().await;
    let minted = app.minted_token("tab5-0001").await;

    let response = app.check(token_of(&minted), check_body("other_product")).await;

    assert_problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn the_default_lifetime_is_365_days() {
    let app = spawn_app().await;

    let minted = app.minted_token("tab5-0001").await;

    let (_, claims) = jwt_parts(token_of(&minted));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        365 * DAY
    );
    assert_eq!(
        parse_time(&minted["expires_at"]) - parse_time(&minted["issued_at"]),
        chrono::TimeDelta::days(365)
    );
}

#[tokio::test]
async fn lifetimes_of_one_minute_and_of_3650_days_are_accepted() {
    let app = spawn_app().await;

    for ttl in [60, 3650 * DAY] {
        let response = app
            .mint_token("tab5-0001", json!({"device_type": DEVICE_TYPE, "ttl_seconds": ttl}))
            .await;

        assert_eq!(response.status(), StatusCode::CREATED, "ttl_seconds {ttl}");
        let minted: Value = response.json().await.unwrap();
        let (_, claims) = jwt_parts(token_of(&minted));
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), ttl);
    }
}

#[tokio::test]
async fn a_lifetime_under_a_minute_or_over_3650_days_is_422() {
    let app = spawn_app().await;

    for ttl in [
        json!(0),
        json!(59),
        json!(3650 * DAY + 1),
        json!(-3600),
        json!(3600.5),
        json!("3600"),
        json!(u64::MAX),
    ] {
        let response = app
            .mint_token("tab5-0001", json!({"device_type": DEVICE_TYPE, "ttl_seconds": ttl}))
            .await;

        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "ttl_seconds", "ttl_seconds {ttl}: {problem}");
    }
}

#[tokio::test]
async fn minting_without_an_admin_token_is_401() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/ota/admin/devices/tab5-0001/token"))
        .json(&json!({"device_type": DEVICE_TYPE}))
        .send()
        .await
        .unwrap();

    let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "{challenge}"
    );
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn minting_with_a_wrong_admin_token_is_401() {
    let app = spawn_app().await;

    for wrong in [JWT_SECRET, &ADMIN_TOKEN[1..], "nope"] {
        let response = app
            .client
            .post(app.url("/api/ota/admin/devices/tab5-0001/token"))
            .bearer_auth(wrong)
            .json(&json!({"device_type": DEVICE_TYPE}))
            .send()
            .await
            .unwrap();

        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("invalid_token"),
            "{challenge}"
        );
        let problem = assert_problem(response, StatusCode::UNAUTHORIZED).await;
        assert!(problem.get("token").is_none());
    }
}

#[tokio::test]
async fn a_device_token_cannot_mint_tokens() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/ota/admin/devices/tab5-0001/token"))
        .bearer_auth(device_token("tab5-0001"))
        .json(&json!({"device_type": DEVICE_TYPE}))
        .send()
        .await
        .unwrap();

    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn an_invalid_device_id_is_422() {
    let app = spawn_app().await;
    let too_long = "d".repeat(129);

    for device_id in ["tab5%200001", "t%C3%A4b5", "tab5%09", too_long.as_str()] {
        let response = app.mint_token(device_id, json!({"device_type": DEVICE_TYPE})).await;

        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "device_id", "{device_id}: {problem}");
    }
}

#[tokio::test]
async fn a_missing_or_invalid_device_type_is_422() {
    let app = spawn_app().await;

    for body in [
        json!({}),
        json!({"ttl_seconds": 3600}),
        json!({"device_type": null}),
        json!({"device_type": ""}),
        json!({"device_type": "Scales Bridge"}),
        json!({"device_type": "../etc"}),
        json!({"device_type": 5}),
    ] {
        let response = app.mint_token("tab5-0001", body.clone()).await;

        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "device_type", "{body}: {problem}");
    }
}

#[tokio::test]
async fn a_token_for_an_unknown_device_type_is_422_saying_how_to_create_it() {
    let app = spawn_app().await;

    let response = app
        .mint_token("tab5-0001", json!({"device_type": "no_such_product"}))
        .await;

    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "device_type");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("/api/ota/admin/device-types"),
        "{problem}"
    );
}

#[tokio::test]
async fn an_unknown_field_is_422_rather_than_ignored() {
    let app = spawn_app().await;

    let response = app
        .mint_token("tab5-0001", json!({"device_type": DEVICE_TYPE, "ttl": 60}))
        .await;

    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(problem["detail"].as_str().unwrap().contains("'ttl'"), "{problem}");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/ota/admin/devices/tab5-0001/token"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"device_type": "scales_bridge_tab5""#)
        .send()
        .await
        .unwrap();

    assert_problem(response, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/ota/admin/devices/tab5-0001/token"))
        .bearer_auth(ADMIN_TOKEN)
        .body("device_type=scales_bridge_tab5")
        .send()
        .await
        .unwrap();

    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn minted_tokens_carry_the_configured_issuer_and_audience() {
    let app = spawn_app_with(|s| {
        s.device_jwt_issuer = Some("factory".into());
        s.device_jwt_audience = Some("ota".into());
    })
    .await;

    let minted = app.minted_token("tab5-0001").await;

    let (_, claims) = jwt_parts(token_of(&minted));
    assert_eq!(claims["iss"], "factory");
    assert_eq!(claims["aud"], "ota");
    let response = app.check(token_of(&minted), check_body(DEVICE_TYPE)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn minting_counts_in_the_metrics() {
    let app = spawn_app().await;
    app.minted_token("tab5-0001").await;

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(
        text.contains("ota_device_tokens_issued_total{device_type=\"scales_bridge_tab5\"}"),
        "/metrics lacks ota_device_tokens_issued_total"
    );
}

async fn assert_mints_with_a_private_key(algorithm: Algorithm, public: &str, private: &str) {
    let (public_pem, private_pem) = (fixture(public), fixture(private));
    let app = spawn_app_with(|s| {
        s.device_jwt_public_key = Some(public_pem);
        s.device_jwt_private_key = Some(ota_server::config::Secret::new(private_pem));
    })
    .await;

    let minted = app.minted_token("tab5-0001").await;

    let name = format!("{algorithm:?}");
    assert_eq!(minted["algorithm"], name.as_str());
    assert_eq!(jwt_parts(token_of(&minted)).0["alg"], name.as_str());
    let response = app.check(token_of(&minted), check_body(DEVICE_TYPE)).await;
    assert_eq!(response.status(), StatusCode::OK, "{name}");
}

#[tokio::test]
async fn rs256_tokens_are_minted_with_a_configured_private_key() {
    assert_mints_with_a_private_key(Algorithm::RS256, "rsa_public.pem", "rsa_private.pem").await;
}

#[tokio::test]
async fn es256_tokens_are_minted_with_a_configured_private_key() {
    assert_mints_with_a_private_key(Algorithm::ES256, "ec_public.pem", "ec_private.pem").await;
}

#[tokio::test]
async fn eddsa_tokens_are_minted_with_a_configured_private_key() {
    assert_mints_with_a_private_key(Algorithm::EdDSA, "ed_public.pem", "ed_private.pem").await;
}

#[tokio::test]
async fn a_private_key_can_be_given_as_a_path() {
    let app = spawn_app_with(|s| {
        s.device_jwt_public_key = Some(fixture_path("ec_public.pem"));
        s.device_jwt_private_key = Some(ota_server::config::Secret::new(fixture_path("ec_private.pem")));
    })
    .await;

    let minted = app.minted_token("tab5-0001").await;

    let response = app.check(token_of(&minted), check_body(DEVICE_TYPE)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_public_key_without_a_private_key_makes_minting_409() {
    let public_pem = fixture("ec_public.pem");
    let app = spawn_app_with(|s| s.device_jwt_public_key = Some(public_pem)).await;

    let response = app.mint_token("tab5-0001", json!({"device_type": DEVICE_TYPE})).await;

    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("only verifies device tokens"), "{detail}");
    assert!(detail.contains("provisioning"), "{detail}");
    assert!(detail.contains("OTA_DEVICE_JWT_PRIVATE_KEY"), "{detail}");
}

async fn start_error(configure: impl FnOnce(&mut ota_server::config::Settings)) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&data_dir);
    configure(&mut settings);
    match Application::build(settings).await {
        Ok(_) => panic!("the server started"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn a_private_key_that_does_not_match_the_public_key_stops_the_start() {
    let other_private = fixture("ec_private_other.pem");

    let error = start_error(|s| {
        s.device_jwt_public_key = Some(fixture("ec_public.pem"));
        s.device_jwt_private_key = Some(ota_server::config::Secret::new(other_private.clone()));
    })
    .await;

    assert!(
        error.contains("OTA_DEVICE_JWT_PRIVATE_KEY does not match OTA_DEVICE_JWT_PUBLIC_KEY"),
        "{error}"
    );
    assert!(!error.contains(other_private.lines().nth(1).unwrap()), "{error}");
}

#[tokio::test]
async fn a_private_key_of_another_kind_than_the_public_key_stops_the_start() {
    let error = start_error(|s| {
        s.device_jwt_public_key = Some(fixture("ec_public.pem"));
        s.device_jwt_private_key = Some(ota_server::config::Secret::new(fixture("ed_private.pem")));
    })
    .await;

    assert!(error.contains("OTA_DEVICE_JWT_PRIVATE_KEY"), "{error}");
    assert!(error.contains("ES256"), "{error}");
}

#[tokio::test]
async fn a_private_key_without_a_public_key_stops_the_start() {
    let error = start_error(|s| {
        s.device_jwt_private_key = Some(ota_server::config::Secret::new(fixture("ec_private.pem")));
    })
    .await;

    assert!(
        error.contains("OTA_DEVICE_JWT_PRIVATE_KEY is set without OTA_DEVICE_JWT_PUBLIC_KEY"),
        "{error}"
    );
}
