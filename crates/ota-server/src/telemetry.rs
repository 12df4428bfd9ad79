//! Logs (tracing) and metrics (Prometheus).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, Settings};

/// Installs the global log subscriber. `RUST_LOG` wins over the `log` setting.
///
/// Lines are written to stdout by a thread of their own, so a request never
/// waits on the stdout lock or a `write` call (one access line per request
/// adds up on the check path). The writer blocks rather than drops when it
/// falls behind: no line is lost. Keep the guard until the process ends; it
/// flushes what is left when dropped.
pub fn init_logging(settings: &Settings) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("ota-log-writer")
        .finish(std::io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log));
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE);
    let result = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if result.is_err() {
        tracing::debug!("a log subscriber was already installed");
    }
    guard
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("ota_http_request_duration_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
                    ],
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "ota_http_requests_total",
        "HTTP requests by matched route, method and status"
    );
    metrics::describe_histogram!(
        "ota_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to the response head, by matched route, method and status"
    );
    metrics::describe_counter!(
        "ota_download_bytes_total",
        metrics::Unit::Bytes,
        "Firmware bytes in download responses (counted when a response starts)"
    );
    metrics::describe_counter!("ota_offers_total", "Updates offered to devices, by device type");
    metrics::describe_counter!(
        "ota_hot_image_requests_total",
        "Downloads served from memory (result=memory) and images loaded into memory (result=load)"
    );
    metrics::describe_counter!("ota_status_transitions_total", "OTA log status changes, by new status");
    metrics::describe_counter!(
        "ota_device_tokens_issued_total",
        "Device tokens minted by administrators, by device type"
    );
}
