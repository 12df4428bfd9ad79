//! Firmware in an S3-compatible bucket (`OTA_STORAGE_URL=s3://…`): uploads,
//! downloads from the bucket, presigned redirects, CDN links, readiness.
//!
//! These need the test bucket: `. scripts/lib/s3.sh && start_s3` runs
//! s3s-fs and exports `OTA_TEST_STORAGE_URL`. Without it they pass as
//! skipped (the first pass of `scripts/test.sh`, on the local folder); the
//! second pass sets `OTA_TEST_REQUIRE_S3=1`, under which a missing bucket
//! fails them, so they are never skipped silently there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_server::config::DownloadRedirect;
use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;
use crate::storage::{TestStorage, on_s3};

/// Whether the S3 tests can run here; in the S3 pass they must.
fn s3_is_here() -> bool {
    if on_s3() {
        return true;
    }
    assert!(
        std::env::var_os("OTA_TEST_REQUIRE_S3").is_none_or(|required| required.is_empty()),
        "OTA_TEST_STORAGE_URL is not set: this pass must run the S3 tests (. scripts/lib/s3.sh && start_s3)"
    );
    eprintln!("skipped: OTA_TEST_STORAGE_URL is not set (. scripts/lib/s3.sh && start_s3)");
    false
}

/// Larger than two parts of a multipart upload (5 MiB each).
const LARGE: usize = 11 * 1024 * 1024 + 123;

async fn published(app: &TestApp, version: &str, bytes: &[u8]) -> Value {
    app.publish(Build {
        bytes: bytes.to_vec(),
        ..Build::stable(version)
    })
    .await
}

async fn ranged(app: &TestApp, id: i64, range: &str) -> reqwest::Response {
    app.download(id, &device_token("tab5-0001"))
        .await
        .header(header::RANGE, range)
        .send()
        .await
        .unwrap()
}

async fn assert_downloads_exactly(app: &TestApp, id: i64, bytes: &[u8]) {
    let etag = format!("\"{}\"", sha256_hex(bytes));

    let whole = app.download(id, &device_token("tab5-0001")).await.send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[header::ETAG], etag.as_str());
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes);

    let first_part_end = 5 * 1024 * 1024 + 10;
    let across_parts = ranged(app, id, &format!("bytes=5242000-{first_part_end}")).await;
    assert_eq!(across_parts.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        across_parts.headers()[header::CONTENT_RANGE],
        format!("bytes 5242000-{first_part_end}/{}", bytes.len()).as_str()
    );
    assert_eq!(across_parts.headers()[header::ETAG], etag.as_str());
    assert_eq!(
        across_parts.bytes().await.unwrap().as_ref(),
        &bytes[5242000..=first_part_end]
    );

    let one_past_the_end = ranged(app, id, &format!("bytes=100-{}", bytes.len())).await;
    assert_eq!(one_past_the_end.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(one_past_the_end.bytes().await.unwrap().as_ref(), &bytes[100..]);

    let stale = app
        .download(id, &device_token("tab5-0001"))
        .await
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "\"another\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK, "a stale If-Range gets the whole file");
    assert_eq!(stale.bytes().await.unwrap().len(), bytes.len());
}

#[tokio::test]
async fn an_upload_to_s3_is_one_object_under_its_final_key() {
    if !s3_is_here() {
        return;
    }
    let app = spawn_app().await;
    let bytes = firmware_bytes(LARGE, 3);

    let response = app
        .upload(
            DEVICE_TYPE,
            &Build {
                bytes: bytes.clone(),
                ..Build::stable("1.1.0")
            },
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["file_hash"], sha256_hex(&bytes));
    assert_eq!(
        app.stored_objects().await,
        ["scales_bridge_tab5/v1.1.0.bin"],
        "no temporary is left"
    );
    assert_eq!(app.stored_object("scales_bridge_tab5/v1.1.0.bin").await, Some(bytes));
}

#[tokio::test]
async fn ranges_stream_from_s3_with_the_sha256_etag() {
    if !s3_is_here() {
        return;
    }
    let app = spawn_app_with(|s| s.blob_cache_bytes = 0).await;
    let bytes = firmware_bytes(LARGE, 4);
    let id = published(&app, "1.1.0", &bytes).await["id"].as_i64().unwrap();

    assert_downloads_exactly(&app, id, &bytes).await;
}

#[tokio::test]
async fn the_hot_cache_serves_ranges_of_images_read_from_s3() {
    if !s3_is_here() {
        return;
    }
    let app = spawn_app().await;
    let bytes = firmware_bytes(LARGE, 5);
    let id = published(&app, "1.1.0", &bytes).await["id"].as_i64().unwrap();

    assert_downloads_exactly(&app, id, &bytes).await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ota_hot_image_requests_total{result=\"memory\"}"),
        "served from memory"
    );
}

#[tokio::test]
async fn a_cut_off_upload_to_s3_leaves_no_object() {
    if !s3_is_here() {
        return;
    }
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let boundary = "cutoffboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"device_type\"\r\n\r\n{DEVICE_TYPE}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"app.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/ota/admin/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{head}",
        head.len() + 30 * 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Enough for two parts to be sent to the bucket before the cut.
    stream.write_all(&firmware_bytes(12 * 1024 * 1024, 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    drop(stream);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.stored_objects().await, Vec::<String>::new(), "no completed object");
    let listed: Value = app.admin_get("/api/ota/admin/firmware").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
    let after = app.upload(DEVICE_TYPE, &Build::stable("1.0.0")).await;
    assert_eq!(after.status(), StatusCode::CREATED, "the store takes the next upload");
}

#[tokio::test]
async fn a_young_temporary_of_another_instance_survives_a_start() {
    if !s3_is_here() {
        return;
    }
    let storage_url = storage_url_for_test().unwrap();
    let bucket = TestStorage::bucket(&storage_url);
    bucket.write(".incoming/other-instance.part", b"in flight").await;

    let app = spawn_app_with(|s| s.storage_url = Some(storage_url.clone())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(app.stored_objects().await, [".incoming/other-instance.part"]);
}

/// A client that shows redirects instead of following them.
fn not_following() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn presigned_redirects_send_devices_to_the_bucket_for_the_bytes() {
    if !s3_is_here() {
        return;
    }
    let app = spawn_app_with(|s| s.download_redirect = DownloadRedirect::Presigned).await;
    let bytes = firmware_bytes(200_000, 6);
    let id = published(&app, "1.1.0", &bytes).await["id"].as_i64().unwrap();
    let link = app.check_as("tab5-0001", "1.0.0").await["download_url"]
        .as_str()
        .unwrap()
        .to_owned();

    let redirected = not_following().get(&link).send().await.unwrap();

    assert_eq!(redirected.status(), StatusCode::FOUND);
    assert_eq!(redirected.headers()[header::CACHE_CONTROL], "private, no-store");
    let location = redirected.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let presigned = url::Url::parse(&location).expect("an absolute Location");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    assert!(location.starts_with(&endpoint), "{location} is the bucket's");
    let expires: u64 = presigned
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Expires")
        .map(|(_, v)| v.parse().unwrap())
        .expect("a presigned URL says how long it lives");
    assert!((3590..=3600).contains(&expires), "as long as the link lives: {expires}");
    assert_eq!(
        app.firmware(id).await["download_count"],
        1,
        "counted before the redirect"
    );

    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let fetched = plain.get(&location).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let resumed = plain
        .get(&location)
        .header(header::RANGE, "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resumed.bytes().await.unwrap().as_ref(), &bytes[1000..]);

    let head = not_following().head(&link).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK, "HEAD is answered by the server");
    assert_eq!(head.headers()[header::CONTENT_LENGTH], bytes.len().to_string().as_str());
    assert_eq!(
        head.headers()[header::ETAG],
        format!("\"{}\"", sha256_hex(&bytes)).as_str()
    );
}

#[tokio::test]
async fn a_matching_if_none_match_is_answered_304_by_the_server_not_redirected() {
    if !s3_is_here() {
        return;
    }
    let app = spawn_app_with(|s| s.download_redirect = DownloadRedirect::Presigned).await;
    let bytes = firmware_bytes(10_000, 7);
    let id = published(&app, "1.1.0", &bytes).await["id"].as_i64().unwrap();

    let response = not_following()
        .get(app.url(&format!("/api/ota/download/{id}")))
        .bearer_auth(device_token("tab5-0001"))
        .header(header::IF_NONE_MATCH, format!("\"{}\"", sha256_hex(&bytes)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn with_a_cdn_check_answers_link_the_object_key_under_the_cdn() {
    if !s3_is_here() {
        return;
    }
    let app = spawn_app_with(|s| s.cdn_base_url = Some("https://cdn.example.com/firmware/".into())).await;
    let bytes = firmware_bytes(10_000, 8);
    let id = published(&app, "1.2.0+build.7", &bytes).await["id"].as_i64().unwrap();

    let offer = app.check_as("tab5-0001", "1.0.0").await;

    let url = offer["download_url"].as_str().unwrap();
    assert_eq!(
        url,
        "https://cdn.example.com/firmware/scales_bridge_tab5/v1.2.0%2Bbuild.7.bin"
    );
    assert_eq!(
        app.stored_object("scales_bridge_tab5/v1.2.0+build.7.bin").await,
        Some(bytes.clone()),
        "the URL's path under the CDN base is the object's key under the prefix"
    );
    assert_eq!(
        app.download_all(id, &device_token("tab5-0001")).await.as_ref(),
        bytes.as_slice(),
        "the server's own download endpoint still works"
    );
}

#[tokio::test]
async fn readyz_is_503_while_the_bucket_is_unreachable_and_recovers_by_itself() {
    if !s3_is_here() {
        return;
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let proxy = Proxy::start(endpoint.trim_start_matches("http://")).await;
    let storage_url = format!("{}?endpoint=http://{}", storage_url_for_test().unwrap(), proxy.address);
    let app = spawn_app_with(|s| s.storage_url = Some(storage_url)).await;
    let readyz = || app.client.get(app.url("/readyz")).send();
    assert_eq!(readyz().await.unwrap().status(), StatusCode::OK);

    proxy.stop();
    let while_down = readyz().await.unwrap();

    let problem = assert_problem(while_down, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("storage"), "{problem}");
    assert!(!detail.contains(&proxy.address), "no internals: {problem}");
    proxy.resume().await;
    assert_eq!(readyz().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_server_pointed_at_a_closed_port_starts_and_is_not_ready() {
    if !s3_is_here() {
        return;
    }
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let storage_url = format!("{}?endpoint=http://{closed}", storage_url_for_test().unwrap());

    let app = spawn_app_with(|s| s.storage_url = Some(storage_url)).await;

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    let upload = app.upload(DEVICE_TYPE, &Build::stable("1.0.0")).await;
    assert!(upload.status().is_server_error(), "{}", upload.status());
}

/// A TCP proxy to the S3 server that can be taken down (every connection
/// cut, new ones refused) and brought back on the same port.
struct Proxy {
    address: String,
    target: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            address: listener.local_addr().unwrap().to_string(),
            target: target.to_owned(),
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target.clone(), Arc::clone(&self.tasks));
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(connection);
            }
        });
        self.tasks.lock().unwrap().push(accepting);
    }

    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn resume(&self) {
        let started = std::time::Instant::now();
        loop {
            match TcpListener::bind(&self.address).await {
                Ok(listener) => return self.serve(listener),
                Err(e) if started.elapsed() > Duration::from_secs(5) => panic!("rebinding {}: {e}", self.address),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}
