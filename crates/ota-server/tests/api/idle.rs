//! Idle connections are closed; busy ones are not, however slow the handler.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// Reads until the server closes the connection; `None` if it stays open.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(received)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|s| s.idle_timeout = 1).await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = Instant::now();

    let closed = read_until_closed(&mut stream, Duration::from_secs(10)).await;

    assert!(closed.is_some(), "the idle connection stayed open");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_upload_that_stalls_is_closed_and_leaves_nothing() {
    let app = spawn_app_with(|s| s.idle_timeout = 1).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let boundary = "stalledboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"device_type\"\r\n\r\n{DEVICE_TYPE}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"app.bin\"\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/ota/admin/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{head}",
        head.len() + 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&firmware_bytes(256 * 1024, 1)).await.unwrap();

    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;

    let answer = String::from_utf8_lossy(&answer.expect("the stalled upload's connection stayed open")).into_owned();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    let stored = app.stored_objects().await;
    assert!(stored.is_empty(), "{stored:?}");
}

#[tokio::test]
async fn a_handler_slower_than_the_idle_timeout_still_answers() {
    let app = spawn_app_with(|s| s.idle_timeout = 1).await;
    let publishing = app.state.lock_publication().await.unwrap();
    let build = Build::stable("1.1.0");
    let upload = app.upload(DEVICE_TYPE, &build);
    let release = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(publishing);
    };

    let (response, ()) = tokio::join!(upload, release);

    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "the upload waited 2.5 s for the publish lock"
    );
}

#[tokio::test]
async fn a_connection_is_closed_when_idle_after_a_slow_handler() {
    let app = spawn_app_with(|s| s.idle_timeout = 1).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let publishing = app.state.lock_publication().await.unwrap();
    let boundary = "slowhandlerboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"device_type\"\r\n\r\n{DEVICE_TYPE}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"app.bin\"\r\n\r\n\
         firmware-bytes\r\n--{boundary}--\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/ota/admin/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(publishing);

    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;

    let answer = String::from_utf8_lossy(&answer.expect("the connection stayed open after the answer")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );
}
