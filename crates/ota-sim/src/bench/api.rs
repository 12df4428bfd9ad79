//! The admin calls a benchmark or a test makes before it measures: device
//! types and firmware uploads.

use std::net::SocketAddr;

use super::{ADMIN_TOKEN, DEVICE_TYPE};
use crate::http::{Conn, Request};

const BOUNDARY: &str = "ota-sim-bench-boundary-7d1e";

/// An admin request; returns the status and the JSON answer.
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut conn = Conn::connect(addr, None).await?;
    let request = Request {
        method,
        path,
        headers: vec![format!("Authorization: Bearer {ADMIN_TOKEN}")],
        body,
        content_type,
    }
    .encode("127.0.0.1");
    let head = conn.send(&request).await?;
    let answer = conn.body().await?;
    Ok((head.status, serde_json::from_slice(&answer).unwrap_or_default()))
}

/// Creates a device type from its record (`{"name", "image_format", …}`);
/// one of that name that exists already is fine.
pub async fn create_device_type(addr: SocketAddr, record: &serde_json::Value) -> anyhow::Result<()> {
    let body = serde_json::to_vec(record)?;
    let (status, answer) = admin(
        addr,
        "POST",
        "/api/ota/admin/device-types",
        Some("application/json"),
        Some(&body),
    )
    .await?;
    anyhow::ensure!(
        status == 201 || status == 409,
        "creating the device type {} answered {status}: {answer}",
        record["name"]
    );
    Ok(())
}

/// Creates the benchmark's device type as `raw` (the server takes firmware
/// only for device types that exist); one that exists already is fine.
pub async fn ensure_device_type(addr: SocketAddr) -> anyhow::Result<()> {
    create_device_type(addr, &serde_json::json!({"name": DEVICE_TYPE, "image_format": "raw"})).await
}

/// A `multipart/form-data` body of text `fields` and then the file;
/// returns the content type and the body.
pub fn multipart(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let mut body = Vec::with_capacity(file.len() + 1024);
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"app.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// Uploads and registers a stable firmware of `device_type`, which must
/// exist; `version: None` leaves it to the image (`esp-app` types). Returns
/// the firmware's id.
pub async fn publish_to(
    addr: SocketAddr,
    device_type: &str,
    version: Option<&str>,
    bytes: &[u8],
) -> anyhow::Result<i64> {
    let mut fields = vec![
        ("device_type", device_type),
        ("is_stable", "true"),
        ("register", "true"),
    ];
    fields.extend(version.map(|version| ("version", version)));
    let (content_type, body) = multipart(&fields, bytes);
    let (status, answer) = admin(addr, "POST", "/api/ota/admin/upload", Some(&content_type), Some(&body)).await?;
    anyhow::ensure!(
        status == 201,
        "upload of {device_type} {} answered {status}: {answer}",
        version.unwrap_or("(version from the image)")
    );
    answer["firmware"]["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("the upload answer has no firmware id: {answer}"))
}

/// Uploads and registers a stable firmware of the benchmark's device type
/// (created first if need be); returns its id.
pub async fn publish(addr: SocketAddr, version: &str, bytes: &[u8]) -> anyhow::Result<i64> {
    ensure_device_type(addr).await?;
    publish_to(addr, DEVICE_TYPE, Some(version), bytes).await
}
