//! The `upload` scenario: what reading an ESP-IDF app image while it streams
//! in (`ImageParser` next to the SHA-256) costs an upload's throughput.
//!
//! The same server takes, in turns, the same ESP image for an `esp-app`
//! device type, the same image for a `raw` one, and a file of the same
//! length that is not an image for the `raw` one: the last is an upload with
//! nothing to parse, the reference.

use std::net::SocketAddr;
use std::time::Duration;

use ota_core::esp::Chip;
use ota_core::esp::build::app_image;
use serde_json::json;
use tokio::time::Instant;

use super::{ADMIN_TOKEN, BenchOptions, BenchRow, MIB, Scenario, Setup, create_device_type, image, multipart, rate};
use crate::http::{Conn, Request};

const ESP_TYPE: &str = "bench_esp_app";
const RAW_TYPE: &str = "bench_raw";

/// One kind of upload: a file for a device type.
struct Kind<'a> {
    device_type: &'static str,
    file: &'a [u8],
    /// The versions are the benchmark's, not the image's.
    override_version: bool,
}

/// Uploads over one kept-alive connection, each under a new version and
/// unregistered, so that none conflicts with another.
struct Uploader {
    addr: SocketAddr,
    conn: Option<Conn>,
    uploads: u64,
}

impl Uploader {
    /// Uploads `kind` once; returns the time from the first byte sent to the
    /// last byte of the answer.
    async fn upload(&mut self, kind: &Kind<'_>) -> anyhow::Result<Duration> {
        self.uploads += 1;
        let version = format!("1.0.{}", self.uploads);
        let mut fields = vec![
            ("device_type", kind.device_type),
            ("version", version.as_str()),
            ("register", "false"),
        ];
        if kind.override_version {
            fields.push(("override_version", "true"));
        }
        let (content_type, body) = multipart(&fields, kind.file);
        let request = Request {
            method: "POST",
            path: "/api/ota/admin/upload",
            headers: vec![format!("Authorization: Bearer {ADMIN_TOKEN}")],
            body: Some(&body),
            content_type: Some(&content_type),
        }
        .encode("127.0.0.1");
        let mut conn = match self.conn.take() {
            Some(conn) if conn.reusable() => conn,
            _ => Conn::connect(self.addr, None).await?,
        };
        let sent = Instant::now();
        let head = conn.send(&request).await?;
        let answer = conn.body().await?;
        let elapsed = sent.elapsed();
        anyhow::ensure!(
            head.status == 201,
            "an upload to {} answered {}: {}",
            kind.device_type,
            head.status,
            String::from_utf8_lossy(&answer)
        );
        if conn.reusable() {
            self.conn = Some(conn);
        }
        Ok(elapsed)
    }
}

pub(super) async fn upload(options: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    let setup = Setup::new()?;
    let server = setup.server(options, "upload").await?;
    create_device_type(
        server.addr,
        &json!({"name": ESP_TYPE, "image_format": "esp-app", "chip": "esp32p4"}),
    )
    .await?;
    create_device_type(server.addr, &json!({"name": RAW_TYPE, "image_format": "raw"})).await?;
    let size = if options.quick { 1 << 20 } else { 16 << 20 };
    let esp = app_image(Chip::Esp32p4, "1.0.0", "bench", 0, size);
    let not_an_image = image(esp.len());
    let kinds = [
        Kind {
            device_type: ESP_TYPE,
            file: &esp,
            override_version: true,
        },
        Kind {
            device_type: RAW_TYPE,
            file: &esp,
            override_version: false,
        },
        Kind {
            device_type: RAW_TYPE,
            file: &not_an_image,
            override_version: false,
        },
    ];
    let (warmups, rounds, per_round) = if options.quick { (1, 2, 1) } else { (2, 7, 3) };
    let mut uploader = Uploader {
        addr: server.addr,
        conn: None,
        uploads: 0,
    };
    for kind in &kinds {
        for _ in 0..warmups {
            uploader.upload(kind).await?;
        }
    }
    let mut rates: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (kind, rates) in kinds.iter().zip(&mut rates) {
            let mut elapsed = Duration::ZERO;
            for _ in 0..per_round {
                elapsed += uploader.upload(kind).await?;
            }
            rates.push((kind.file.len() * per_round) as f64 / MIB / elapsed.as_secs_f64());
        }
    }
    let [esp_app, raw_image, reference] = rates.map(median);
    let mib = esp.len() as f64 / MIB;
    let reference_text = format!(
        "raw type, a {mib:.0} MiB file that is not an image (SHA-256 + write): {}",
        rate(reference, "MiB/s")
    );
    let ratio = esp_app / reference;
    Ok(vec![
        BenchRow {
            scenario: Scenario::Upload,
            measure: format!("upload a {mib:.0} MiB ESP image to an esp-app type (parse + SHA-256 + write)"),
            ours: rate(esp_app, "MiB/s"),
            reference: reference_text.clone(),
            ratio: Some(ratio),
            target: "≥ 0.80×".into(),
            passed: Some(ratio >= 0.8),
        },
        BenchRow {
            scenario: Scenario::Upload,
            measure: format!("upload the same {mib:.0} MiB ESP image to a raw type"),
            ours: rate(raw_image, "MiB/s"),
            reference: reference_text,
            ratio: Some(raw_image / reference),
            target: "–".into(),
            passed: None,
        },
    ])
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
