//! `spawn_app` and `TestApp`: one helper per endpoint.

use std::sync::Once;

use ota_server::app::Application;
use ota_server::config::{Secret, Settings};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const DEVICE_TYPE: &str = "scales_bridge_tab5";
/// A second product, for tests about keeping device types apart.
pub const OTHER_DEVICE_TYPE: &str = "other_product";
/// The device types every test server starts with, both `raw`: firmware
/// can only be uploaded for a device type that exists.
pub const DEVICE_TYPES: [&str; 2] = [DEVICE_TYPE, OTHER_DEVICE_TYPE];
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
pub const JWT_SECRET: &str = "test-device-jwt-secret-0123456789";

pub struct TestApp {
    pub address: String,
    pub metrics_address: Option<String>,
    pub state: ota_server::state::AppState,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    /// The database the server uses.
    pub database_url: String,
    /// The server stops when this is dropped, with the test.
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

fn init_test_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            tracing_subscriber::fmt()
                .with_env_filter("info,ota_server=debug")
                .with_test_writer()
                .init();
        }
    });
}

/// Settings for a test server: loopback port 0, a fresh data dir, known
/// secrets, no rate limit; firmware in the data dir, or in a fresh prefix
/// of the test bucket.
pub fn test_settings(data_dir: &TempDir) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.path().to_path_buf(),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        device_jwt_secret: Some(Secret::new(JWT_SECRET)),
        device_rate_limit: 0,
        shutdown_timeout: 5,
        storage_url: storage_url_for_test(),
        ..Settings::default()
    }
}

/// `None` (the data dir's firmware folder) unless `OTA_TEST_STORAGE_URL`
/// names a bucket (`s3://bucket`, made by `scripts/lib/s3.sh`'s `start_s3`);
/// then a prefix of it that is this test's own.
pub fn storage_url_for_test() -> Option<String> {
    let bucket = std::env::var("OTA_TEST_STORAGE_URL")
        .ok()
        .filter(|url| !url.is_empty())?;
    Some(format!(
        "{}/{}",
        bucket.trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    ))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_test_logging();
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&data_dir);
    settings.database_url = test_database().await;
    configure(&mut settings);
    let database_url = settings
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.path().join("ota.db").display()));
    let app = Application::build(settings).await.expect("the test server starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app.metrics_addr().map(|addr| format!("http://{addr}"));
    let state = app.state();
    create_raw_device_types(state.store(), &DEVICE_TYPES).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        address,
        metrics_address,
        state,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        data_dir,
        database_url,
        _shutdown: tx,
    }
}

/// Whether the tests run on PostgreSQL (`OTA_TEST_DATABASE_URL` set).
pub fn on_postgres() -> bool {
    std::env::var_os("OTA_TEST_DATABASE_URL").is_some()
}

/// A fresh database for one test server: `None` (SQLite in the test's data
/// dir) unless `OTA_TEST_DATABASE_URL` names a PostgreSQL database, made
/// for this run by `scripts/test.sh`; then a new schema of it, of this
/// test's own. The run's database is dropped after the run, and with it
/// every test's schema.
pub async fn test_database() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("OTA_TEST_DATABASE_URL").ok()?;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("OTA_TEST_DATABASE_URL: the test database answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}options[search_path]={schema}"))
}

/// A second connection to a test server's database, as another process or
/// another instance would hold it.
pub enum OtherConnection {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl OtherConnection {
    pub async fn open(database_url: &str) -> Self {
        use sqlx::Connection;
        if database_url.starts_with("postgres") {
            OtherConnection::Postgres(sqlx::PgConnection::connect(database_url).await.unwrap())
        } else {
            OtherConnection::Sqlite(sqlx::SqliteConnection::connect(database_url).await.unwrap())
        }
    }

    /// The one number a query answers (a count).
    pub async fn count(&mut self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            OtherConnection::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await.unwrap(),
            OtherConnection::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await.unwrap(),
        }
    }

    /// Runs one statement; the number of rows it touched.
    pub async fn execute(&mut self, sql: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            OtherConnection::Sqlite(c) => sqlx::query(sql).execute(c).await.unwrap().rows_affected(),
            OtherConnection::Postgres(c) => sqlx::query(sql).execute(c).await.unwrap().rows_affected(),
        }
    }
}

/// A timestamp as SQL text both backends read as the server writes it.
pub fn sql_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("'{}'", at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
}

/// Creates each device type as `raw` unless it exists (straight through the
/// store, so that the tests' own requests are the only ones the server sees).
pub async fn create_raw_device_types(store: &ota_server::store::Store, names: &[&str]) {
    for name in names {
        if store.device_type(name).await.unwrap().is_none() {
            store
                .insert_device_type(name, &ota_server::store::DeviceTypeValues::raw())
                .await
                .unwrap();
        }
    }
}

/// A device token signed with the test HS256 secret, valid for an hour.
pub fn device_token(device_id: &str) -> String {
    sign_claims(json!({"sub": device_id, "device_type": DEVICE_TYPE, "exp": now() + 3600}))
}

pub fn sign_claims(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}

/// The text of a file in `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

pub fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The header and the claims of a JWT, read without checking its signature.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine;
    let decode = |part: &str| -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let mut parts = token.split('.');
    let header = decode(parts.next().unwrap());
    let claims = decode(parts.next().unwrap());
    (header, claims)
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Deterministic firmware-like bytes of a given size, different per seed.
pub fn firmware_bytes(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| ((i * 31 + usize::from(seed) * 7) % 251) as u8)
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Asserts a problem document with this status and returns it.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "a refusal must be a problem document"
    );
    let body: Value = response.json().await.expect("a problem document is JSON");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["title"].is_string() && body["type"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// An uploaded firmware's options.
pub struct Build<'a> {
    pub version: &'a str,
    pub bytes: Vec<u8>,
    pub fields: Vec<(&'a str, String)>,
}

impl<'a> Build<'a> {
    pub fn stable(version: &'a str) -> Self {
        Build {
            version,
            bytes: firmware_bytes(4096, version.len() as u8),
            fields: vec![("is_stable", "true".into())],
        }
    }

    pub fn with(mut self, field: &'a str, value: impl Into<String>) -> Self {
        self.fields.retain(|(name, _)| *name != field);
        self.fields.push((field, value.into()));
        self
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Holds the database's write lock from a second connection, as another
    /// process could: SQLite's one writer lock; on PostgreSQL, locks that
    /// let reads through and stop every write to the tables. End it with
    /// `ROLLBACK` or `COMMIT`.
    pub async fn lock_the_database(&self) -> OtherConnection {
        let mut other_writer = self.other_connection().await;
        match other_writer {
            OtherConnection::Sqlite(_) => {
                other_writer.execute("BEGIN IMMEDIATE").await;
            }
            OtherConnection::Postgres(_) => {
                other_writer.execute("BEGIN").await;
                other_writer
                    .execute(
                        "LOCK TABLE firmware, device_types, devices, device_ota_log, firmware_download, \
                         device_groups, device_group_members, rollouts, rollout_firmware, audit_log IN EXCLUSIVE MODE",
                    )
                    .await;
            }
        }
        other_writer
    }

    /// Polls a device's inventory record (checks are written in batches,
    /// about once a second) until `ready`.
    pub async fn wait_for_device(&self, device_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            let response = self.admin_get(&format!("/api/ota/admin/devices/{device_id}")).await;
            if response.status() == StatusCode::OK {
                last = response.json().await.unwrap();
                if ready(&last) {
                    return last;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("device {device_id} never got there; last seen as {last}");
    }

    /// A second connection to the server's database.
    pub async fn other_connection(&self) -> OtherConnection {
        OtherConnection::open(&self.database_url).await
    }

    pub fn firmware_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().join("firmware")
    }

    pub async fn check(&self, token: &str, body: Value) -> Response {
        self.client
            .post(self.url("/api/ota/check"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `check` for a device of the test type running `version` on `stable`.
    pub async fn check_as(&self, device_id: &str, version: &str) -> Value {
        let response = self
            .check(
                &device_token(device_id),
                json!({"device_type": DEVICE_TYPE, "current_version": version}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn report(&self, token: &str, body: Value) -> Response {
        self.client
            .post(self.url("/api/ota/status"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn report_as(&self, device_id: &str, firmware_id: i64, status: &str) -> Response {
        self.report(
            &device_token(device_id),
            json!({"firmware_id": firmware_id, "status": status}),
        )
        .await
    }

    pub async fn upload(&self, device_type: &str, build: &Build<'_>) -> Response {
        let mut form = reqwest::multipart::Form::new()
            .text("device_type", device_type.to_owned())
            .text("version", build.version.to_owned());
        for (name, value) in &build.fields {
            form = form.text(name.to_string(), value.clone());
        }
        let part = reqwest::multipart::Part::bytes(build.bytes.clone()).file_name("app.bin");
        form = form.part("file", part);
        self.client
            .post(self.url("/api/ota/admin/upload"))
            .bearer_auth(ADMIN_TOKEN)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Uploads and registers a build of the test device type; returns the record.
    pub async fn publish(&self, build: Build<'_>) -> Value {
        let response = self.upload(DEVICE_TYPE, &build.with("register", "true")).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["firmware"].clone()
    }

    /// Sends a multipart form to the upload endpoint with the admin token.
    pub async fn upload_form(&self, form: reqwest::multipart::Form) -> Response {
        self.client
            .post(self.url("/api/ota/admin/upload"))
            .bearer_auth(ADMIN_TOKEN)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/ota/admin/logs?{query}`, which must answer 200.
    pub async fn logs(&self, query: &str) -> Value {
        let response = self.admin_get(&format!("/api/ota/admin/logs?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Downloads a whole firmware with a device token.
    pub async fn download_all(&self, firmware_id: i64, token: &str) -> bytes::Bytes {
        self.download(firmware_id, token)
            .await
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    /// The JSON of an unauthenticated `GET`.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/ota/admin/devices/{device_id}/token` with the admin token.
    pub async fn mint_token(&self, device_id: &str, body: Value) -> Response {
        self.admin_post(&format!("/api/ota/admin/devices/{device_id}/token"), body)
            .await
    }

    /// Mints a token for a device of the test type, which must answer 201;
    /// returns the answer's body.
    pub async fn minted_token(&self, device_id: &str) -> Value {
        let response = self.mint_token(device_id, json!({"device_type": DEVICE_TYPE})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn admin_patch(&self, path: &str, body: Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn firmware(&self, id: i64) -> Value {
        let response = self.admin_get(&format!("/api/ota/admin/firmware/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn download(&self, firmware_id: i64, token: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(&format!("/api/ota/download/{firmware_id}")))
            .bearer_auth(token)
    }
}

/// Every file under a folder, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}
