//! Device tokens and the admin token.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn check_body() -> Value {
    json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"})
}

async fn assert_refused(app: &TestApp, token: &str) -> Value {
    let response = app.check(token, check_body()).await;
    assert!(
        response
            .headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
        "401 answers carry WWW-Authenticate: Bearer"
    );
    assert_problem(response, StatusCode::UNAUTHORIZED).await
}

#[tokio::test]
async fn a_check_without_a_token_is_401() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/ota/check"))
        .json(&check_body())
        .send()
        .await
        .unwrap();

    let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "RFC 6750 3.1: {challenge}"
    );
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn expired_unsigned_and_wrongly_signed_tokens_are_401() {
    let app = spawn_app().await;
    let expired = sign_claims(json!({"sub": "tab5-0001", "exp": now() - 3600}));
    let no_exp = sign_claims(json!({"sub": "tab5-0001"}));
    let no_sub = sign_claims(json!({"exp": now() + 3600}));
    let wrong_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "tab5-0001", "exp": now() + 3600}),
        &EncodingKey::from_secret(b"another-secret-entirely-0123456789"),
    )
    .unwrap();
    let unsigned = {
        let encode = |v: &Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.",
            encode(&json!({"alg": "none", "typ": "JWT"})),
            encode(&json!({"sub": "x", "exp": now() + 60}))
        )
    };

    for token in [expired, no_exp, no_sub, wrong_key, unsigned, "not-a-jwt".to_owned()] {
        assert_refused(&app, &token).await;
    }
}

#[tokio::test]
async fn a_non_bearer_authorization_is_401() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/api/ota/check"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&check_body())
        .send()
        .await
        .unwrap();

    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

async fn assert_public_key_algorithm(algorithm: Algorithm, public: &str, private_key: EncodingKey) {
    let public_pem = fixture(public);
    let app = spawn_app_with(|s| s.device_jwt_public_key = Some(public_pem)).await;
    let claims = json!({"sub": "tab5-0001", "device_type": DEVICE_TYPE, "exp": now() + 600});
    let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &private_key).unwrap();

    let accepted = app.check(&token, check_body()).await;

    assert_eq!(accepted.status(), StatusCode::OK, "{algorithm:?}");
    let hs256 = sign_claims(claims);
    assert_refused(&app, &hs256).await;
}

#[tokio::test]
async fn rs256_tokens_verify_with_a_configured_public_key() {
    let key = EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap();
    assert_public_key_algorithm(Algorithm::RS256, "rsa_public.pem", key).await;
}

#[tokio::test]
async fn es256_tokens_verify_with_a_configured_public_key() {
    let key = EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).unwrap();
    assert_public_key_algorithm(Algorithm::ES256, "ec_public.pem", key).await;
}

#[tokio::test]
async fn eddsa_tokens_verify_with_a_configured_public_key() {
    let key = EncodingKey::from_ed_pem(fixture("ed_private.pem").as_bytes()).unwrap();
    assert_public_key_algorithm(Algorithm::EdDSA, "ed_public.pem", key).await;
}

#[tokio::test]
async fn a_public_key_can_be_given_as_a_path() {
    let path = format!("{}/tests/fixtures/ec_public.pem", env!("CARGO_MANIFEST_DIR"));
    let app = spawn_app_with(|s| s.device_jwt_public_key = Some(path)).await;
    let key = EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "d", "exp": now() + 600}),
        &key,
    )
    .unwrap();

    assert_eq!(app.check(&token, check_body()).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let app = spawn_app_with(|s| {
        s.device_jwt_issuer = Some("factory".into());
        s.device_jwt_audience = Some("ota".into());
    })
    .await;
    let token = |claims: Value| sign_claims(claims);

    let good = token(json!({"sub": "d", "exp": now() + 600, "iss": "factory", "aud": "ota"}));
    assert_eq!(app.check(&good, check_body()).await.status(), StatusCode::OK);
    for bad in [
        json!({"sub": "d", "exp": now() + 600, "aud": "ota"}),
        json!({"sub": "d", "exp": now() + 600, "iss": "factory"}),
        json!({"sub": "d", "exp": now() + 600, "iss": "elsewhere", "aud": "ota"}),
        json!({"sub": "d", "exp": now() + 600, "iss": "factory", "aud": "other"}),
    ] {
        assert_refused(&app, &token(bad)).await;
    }
}

#[tokio::test]
async fn a_token_without_a_device_type_claim_may_ask_for_any_type() {
    let app = spawn_app().await;
    let token = sign_claims(json!({"sub": "bench-01", "exp": now() + 600}));

    let response = app
        .check(
            &token,
            json!({"device_type": "other_product", "current_version": "1.0.0"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_admin_token_is_accepted_as_bearer_or_x_admin_token() {
    let app = spawn_app().await;

    let bearer = app
        .client
        .get(app.url("/api/ota/admin/firmware"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let header = app
        .client
        .get(app.url("/api/ota/admin/firmware"))
        .header("x-admin-token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let wrong = app
        .client
        .get(app.url("/api/ota/admin/firmware"))
        .header("x-admin-token", "nope")
        .send()
        .await
        .unwrap();
    let prefix = app
        .client
        .get(app.url("/api/ota/admin/firmware"))
        .bearer_auth(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])
        .send()
        .await
        .unwrap();

    assert_eq!(bearer.status(), StatusCode::OK);
    assert_eq!(header.status(), StatusCode::OK);
    assert_problem(wrong, StatusCode::UNAUTHORIZED).await;
    assert_problem(prefix, StatusCode::UNAUTHORIZED).await;
}
