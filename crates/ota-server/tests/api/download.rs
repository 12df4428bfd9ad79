//! `GET`/`HEAD /api/ota/download/{id}`.

use std::time::Duration;

use ota_core::{DeviceId, LinkSigner};
use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const LINK_KEY: &str = "test-link-signing-key-0123456789";

async fn app_with_firmware(size: usize) -> (TestApp, i64, Vec<u8>) {
    app_with_firmware_and(size, |_| {}).await
}

async fn app_with_firmware_and(
    size: usize,
    configure: impl FnOnce(&mut ota_server::config::Settings),
) -> (TestApp, i64, Vec<u8>) {
    let app = spawn_app_with(|s| {
        s.link_signing_key = Some(ota_server::config::Secret::new(LINK_KEY));
        configure(s);
    })
    .await;
    let bytes = firmware_bytes(size, 9);
    let firmware = app
        .publish(Build {
            bytes: bytes.clone(),
            ..Build::stable("1.1.0")
        })
        .await;
    (app, firmware["id"].as_i64().unwrap(), bytes)
}

#[tokio::test]
async fn a_device_downloads_the_whole_binary_uncompressed_with_validators() {
    let (app, id, bytes) = app_with_firmware(100_000).await;

    let response = app
        .download(id, &device_token("tab5-0001"))
        .await
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let hash = sha256_hex(&bytes);
    assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
    assert_eq!(headers[header::CONTENT_LENGTH], bytes.len().to_string().as_str());
    assert_eq!(headers[header::ETAG], format!("\"{hash}\"").as_str());
    assert_eq!(headers["x-firmware-sha256"], hash.as_str());
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    assert!(
        headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("scales_bridge_tab5-v1.1.0.bin")
    );
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn the_signed_link_from_check_works_without_a_token() {
    let (app, _, bytes) = app_with_firmware(5000).await;
    let offer = app.check_as("tab5-0001", "1.0.0").await;

    let response = app
        .client
        .get(offer["download_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn a_tampered_or_expired_link_is_403() {
    let (app, id, _) = app_with_firmware(5000).await;
    let offer = app.check_as("tab5-0001", "1.0.0").await;
    let url = offer["download_url"].as_str().unwrap().to_owned();
    let expires: i64 = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let device = DeviceId::parse("tab5-0001").unwrap();
    let signer = LinkSigner::new(LINK_KEY.as_bytes());
    let past = now() - 10;

    for tampered in [
        url.replace(&format!("expires={expires}"), &format!("expires={}", expires + 1000)),
        url.replace("device=tab5-0001", "device=tab5-0002"),
        format!("{}0", url),
        url.replace(&format!("/download/{id}?"), &format!("/download/{}?", id + 1)),
        app.url(&format!(
            "/api/ota/download/{id}?{}",
            signer.query(id, Some(&device), past)
        )),
    ] {
        let response = app.client.get(&tampered).send().await.unwrap();
        assert_problem(response, StatusCode::FORBIDDEN).await;
    }
}

#[tokio::test]
async fn a_signed_link_works_even_beside_an_expired_bearer_token() {
    let (app, _, bytes) = app_with_firmware(5000).await;
    let offer = app.check_as("tab5-0001", "1.0.0").await;
    let expired = sign_claims(serde_json::json!({"sub": "tab5-0001", "exp": now() - 3600}));

    let response = app
        .client
        .get(offer["download_url"].as_str().unwrap())
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), bytes.len());
}

#[tokio::test]
async fn a_download_without_credentials_is_401() {
    let (app, id, _) = app_with_firmware(5000).await;

    let response = app
        .client
        .get(app.url(&format!("/api/ota/download/{id}")))
        .send()
        .await
        .unwrap();

    assert!(
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

async fn ranged(app: &TestApp, id: i64, range: &str) -> reqwest::Response {
    app.download(id, &device_token("tab5-0001"))
        .await
        .header(header::RANGE, range)
        .send()
        .await
        .unwrap()
}

async fn assert_ranges_are_exact(app: &TestApp, id: i64, bytes: &[u8]) {
    let n = bytes.len();

    for (range, start, end) in [
        ("bytes=0-1023", 0, 1023),
        ("bytes=1024-", 1024, n - 1),
        ("bytes=-100", n - 100, n - 1),
        ("bytes=9000-10000", 9000, n - 1),
        ("bytes=9990-99999", 9990, n - 1),
    ] {
        let response = ranged(app, id, range).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            response.headers()[header::CONTENT_RANGE],
            format!("bytes {start}-{end}/{n}").as_str()
        );
        assert_eq!(
            response.headers()[header::CONTENT_LENGTH],
            (end - start + 1).to_string().as_str()
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[start..=end], "{range}");
    }
}

#[tokio::test]
async fn single_byte_ranges_answer_206_with_the_exact_bytes() {
    let (app, id, bytes) = app_with_firmware(10_000).await;
    assert_ranges_are_exact(&app, id, &bytes).await;
}

#[tokio::test]
async fn images_streamed_from_disk_answer_ranges_the_same() {
    let (app, id, bytes) = app_with_firmware_and(10_000, |s| s.blob_cache_bytes = 0).await;
    assert_ranges_are_exact(&app, id, &bytes).await;
    let whole = app.download_all(id, &device_token("d")).await;
    assert_eq!(whole.as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn a_file_damaged_on_disk_is_never_served_from_memory() {
    let (app, id, _) = app_with_firmware(10_000).await;
    let stored = "scales_bridge_tab5/v1.1.0.bin";
    let mut damaged = app.stored_object(stored).await.unwrap();
    damaged[5000] ^= 0xff;
    app.put_object(stored, &damaged).await;

    let response = app.download(id, &device_token("d")).await.send().await.unwrap();

    let problem = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(
        !problem["detail"].as_str().unwrap().contains("scales_bridge_tab5"),
        "no internals: {problem}"
    );
}

#[tokio::test]
async fn a_range_starting_past_the_end_is_416() {
    let (app, id, bytes) = app_with_firmware(10_000).await;

    let response = ranged(&app, id, "bytes=10000-").await;

    assert_eq!(
        response.headers()[header::CONTENT_RANGE],
        format!("bytes */{}", bytes.len()).as_str()
    );
    assert_problem(response, StatusCode::RANGE_NOT_SATISFIABLE).await;
}

#[tokio::test]
async fn several_ranges_or_a_bad_range_get_the_whole_file() {
    let (app, id, bytes) = app_with_firmware(10_000).await;

    for range in ["bytes=0-1,5-6", "bytes=5-1", "pages=1-2"] {
        let response = ranged(&app, id, range).await;
        assert_eq!(response.status(), StatusCode::OK, "{range}");
        assert_eq!(response.bytes().await.unwrap().len(), bytes.len());
    }
}

#[tokio::test]
async fn head_answers_200_with_the_full_length_and_no_body() {
    let (app, id, bytes) = app_with_firmware(70_000).await;

    let response = app
        .client
        .head(app.url(&format!("/api/ota/download/{id}")))
        .bearer_auth(device_token("tab5-0001"))
        .header(header::RANGE, "bytes=0-9")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_LENGTH],
        bytes.len().to_string().as_str()
    );
    assert_eq!(
        response.headers()[header::ETAG],
        format!("\"{}\"", sha256_hex(&bytes)).as_str()
    );
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn if_none_match_with_the_etag_answers_304() {
    let (app, id, bytes) = app_with_firmware(5000).await;
    let etag = format!("\"{}\"", sha256_hex(&bytes));

    let same = app
        .download(id, &device_token("d"))
        .await
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    let other = app
        .download(id, &device_token("d"))
        .await
        .header(header::IF_NONE_MATCH, "\"x\"")
        .send()
        .await
        .unwrap();

    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(same.headers()[header::ETAG], etag.as_str());
    for absent in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION, header::CONTENT_RANGE] {
        assert!(same.headers().get(&absent).is_none(), "a 304 carries no {absent}");
    }
    assert!(same.bytes().await.unwrap().is_empty());
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_range_honours_the_range_only_for_this_representation() {
    let (app, id, bytes) = app_with_firmware(5000).await;
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    let request = |if_range: &str| {
        let if_range = if_range.to_owned();
        let app = &app;
        async move {
            app.download(id, &device_token("d"))
                .await
                .header(header::RANGE, "bytes=100-199")
                .header(header::IF_RANGE, if_range)
                .send()
                .await
                .unwrap()
        }
    };

    let matching = request(&etag).await;
    let stale = request("\"0000\"").await;
    let weak = request(&format!("W/{etag}")).await;

    assert_eq!(matching.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(matching.bytes().await.unwrap().as_ref(), &bytes[100..200]);
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap().len(), bytes.len());
    assert_eq!(weak.status(), StatusCode::OK, "If-Range needs a strong validator");
}

#[tokio::test]
async fn deactivated_or_unknown_firmware_is_404() {
    let (app, id, _) = app_with_firmware(5000).await;
    app.admin_delete(&format!("/api/ota/admin/firmware/{id}")).await;

    assert_problem(
        app.download(id, &device_token("d")).await.send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.download(999, &device_token("d")).await.send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_device_may_not_download_another_device_types_firmware() {
    let (app, _, _) = app_with_firmware(5000).await;
    let build = Build::stable("2.0.0").with("register", "true");
    let other: Value = app.upload("other_product", &build).await.json().await.unwrap();
    let other_id = other["firmware"]["id"].as_i64().unwrap();

    let response = app
        .download(other_id, &device_token("tab5-0001"))
        .await
        .send()
        .await
        .unwrap();

    assert_problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn download_count_counts_each_device_once_whatever_its_ranges() {
    let (app, id, bytes) = app_with_firmware(200_000).await;
    let n = bytes.len();
    let token = device_token("tab5-0001");
    let head = app
        .client
        .head(app.url(&format!("/api/ota/download/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    for start in (0..n).step_by(65_536) {
        let range = format!("bytes={start}-{}", start + 65_535);
        assert_eq!(ranged(&app, id, &range).await.status(), StatusCode::PARTIAL_CONTENT);
    }
    app.download_all(id, &token).await;
    assert_eq!(app.firmware(id).await["download_count"], 1);

    app.download_all(id, &device_token("tab5-0002")).await;

    assert_eq!(app.firmware(id).await["download_count"], 2);
}

#[tokio::test]
async fn a_slow_reader_is_not_cut_off_while_bytes_flow() {
    let app = spawn_app_with(|s| s.idle_timeout = 1).await;
    let bytes = firmware_bytes(24 * 1024 * 1024, 3);
    let firmware = app
        .publish(Build {
            bytes: bytes.clone(),
            ..Build::stable("1.1.0")
        })
        .await;
    let mut response = app
        .download(firmware["id"].as_i64().unwrap(), &device_token("d"))
        .await
        .send()
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let mut received = Vec::with_capacity(bytes.len());
    let mut next_pause = 1024 * 1024;
    while let Some(chunk) = response.chunk().await.expect("the download is not cut off") {
        received.extend_from_slice(&chunk);
        if received.len() >= next_pause {
            tokio::time::sleep(Duration::from_millis(150)).await;
            next_pause += 1024 * 1024;
        }
    }

    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the download took longer than the idle timeout"
    );
    assert_eq!(received.len(), bytes.len());
    assert_eq!(sha256_hex(&received), sha256_hex(&bytes));
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_disconnected_after_the_idle_timeout() {
    let app = spawn_app_with(|s| s.idle_timeout = 1).await;
    let bytes = firmware_bytes(48 * 1024 * 1024, 4);
    let firmware = app
        .publish(Build {
            bytes: bytes.clone(),
            ..Build::stable("1.1.0")
        })
        .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /api/ota/download/{} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
        firmware["id"],
        device_token("stalled")
    );
    stream.write_all(request.as_bytes()).await.unwrap();

    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 20];
    let reading = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;

    assert!(reading.is_ok(), "the server closed the stalled connection");
    assert!(received < bytes.len(), "received {received} of {} bytes", bytes.len());
}

#[tokio::test]
async fn head_with_a_matching_etag_is_304_with_the_full_length() {
    let (app, id, bytes) = app_with_firmware(7000).await;

    let response = app
        .client
        .head(app.url(&format!("/api/ota/download/{id}")))
        .bearer_auth(device_token("d"))
        .header(header::IF_NONE_MATCH, format!("\"{}\"", sha256_hex(&bytes)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        response.headers()[header::CONTENT_LENGTH],
        bytes.len().to_string().as_str()
    );
}

#[tokio::test]
async fn if_range_with_the_last_modified_date_honours_the_range() {
    let (app, id, bytes) = app_with_firmware(5000).await;
    let full = app.download(id, &device_token("d")).await.send().await.unwrap();
    let last_modified = full.headers()[header::LAST_MODIFIED].to_str().unwrap().to_owned();

    let same_date = app
        .download(id, &device_token("d"))
        .await
        .header(header::RANGE, "bytes=10-19")
        .header(header::IF_RANGE, &last_modified)
        .send()
        .await
        .unwrap();
    let other_date = app
        .download(id, &device_token("d"))
        .await
        .header(header::RANGE, "bytes=10-19")
        .header(header::IF_RANGE, "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();

    assert_eq!(same_date.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(same_date.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    assert_eq!(other_date.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_download_by_signed_link_counts_for_the_device_it_names() {
    let (app, id, _) = app_with_firmware(5000).await;
    let offer = app.check_as("tab5-0001", "1.0.0").await;
    let url = offer["download_url"].as_str().unwrap().to_owned();

    app.client.get(&url).send().await.unwrap().bytes().await.unwrap();
    app.client
        .get(&url)
        .header(header::RANGE, "bytes=0-99")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    app.download_all(id, &device_token("tab5-0001")).await;

    assert_eq!(
        app.firmware(id).await["download_count"],
        1,
        "one device, counted once by link or token"
    );
}
