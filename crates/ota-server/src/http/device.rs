//! What devices call: `check` for an update and `status` to report progress.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use ota_core::wire::{CheckRequest, CheckResponse, NoUpdate, Offer, OtaLog, Problem, StatusReport};
use ota_core::{Candidate, Channel, DeviceFacts, DeviceType, OfferKind, OtaStatus, Transition, Version, choose};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RoutinePoll;
use super::error::{ApiError, ApiResult};
use super::extract::{DeviceAuth, Json};
use crate::catalogue::Snapshot;
use crate::state::AppState;
use crate::store::{DeviceReport, LogWrite, NewLog, RolloutMark, Sighting, is_unique_violation};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check))
        .routes(routes!(report_status))
}

/// Asks whether an update is available.
///
/// Offers the highest active version for the device type that is newer than
/// `current_version` (ties broken by `build_number`), whose `min_version` the
/// device meets, that is stable (unless the channel admits pre-releases) and
/// whose staged rollout includes this device. An offer opens a `pending` OTA
/// log row; asking again returns the same row. Its `download_url` is a link
/// to `GET /api/ota/download/{id}` signed for this device, or, with
/// `OTA_CDN_BASE_URL`, the unsigned `<cdn base>/<binary_path>`.
#[utoipa::path(
    post,
    path = "/api/ota/check",
    tag = "device",
    request_body = CheckRequest,
    security(("device_jwt" = [])),
    responses(
        (status = 200, description = "An offer, or `update_available: false`", body = CheckResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid device token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token is for another device type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid device_type, version or channel", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this device", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn check(
    State(state): State<AppState>,
    device: DeviceAuth,
    headers: HeaderMap,
    Json(request): Json<CheckRequest>,
) -> ApiResult<(Extension<RoutinePoll>, axum::Json<CheckResponse>)> {
    let device_type = DeviceType::parse(&request.device_type).map_err(|e| ApiError::invalid("device_type", e))?;
    device.ensure_device_type(device_type.as_str())?;
    let current = Version::parse(&request.current_version).map_err(|e| ApiError::invalid("current_version", e))?;
    let channel = match request.channel.as_deref() {
        Some(name) => Channel::parse(name).map_err(|e| ApiError::invalid("channel", e))?,
        None => Channel::stable(),
    };
    if request.build_number.is_some_and(|n| n < 0) {
        return Err(ApiError::invalid("build_number", "must not be negative"));
    }
    let reported_secure_version = request
        .secure_version
        .map(|n| {
            u32::try_from(n)
                .map_err(|_| ApiError::invalid("secure_version", "must be a whole number from 0 to 4294967295"))
        })
        .transpose()?;
    charge_request_budget(&state, &device)?;

    let current_version = current.to_string();
    state.inventory().seen(Sighting {
        device_id: device.device_id.to_string(),
        device_type: device_type.to_string(),
        current_version: current_version.clone(),
        build_number: request.build_number,
        channel: channel.to_string(),
        secure_version: reported_secure_version,
        seen_at: chrono::Utc::now(),
    });

    let catalogue = state.catalogue().snapshot().await?;
    let candidates: Vec<&Candidate> = catalogue
        .of_type(device_type.as_str())
        .iter()
        .map(|a| &a.candidate)
        .collect();
    let pinned = catalogue.pin_of(device.device_id.as_str());
    let mut facts = DeviceFacts {
        device_id: &device.device_id,
        current_version: &current,
        build_number: request.build_number,
        channel: &channel,
        secure_version: reported_secure_version,
        groups: catalogue.groups_of(device.device_id.as_str()),
        refused: &[],
    };
    let mut chosen = choose(&candidates, &facts, pinned);
    // What only the database knows is read only when something is about to
    // be offered, so the routine no-update answer stays free of reads:
    // * anti-rollback: the counter this device reported before still holds
    //   when it does not report one now (or a lower one: eFuses only grow);
    // * the firmware it rolled back from is not offered to it again.
    let refused;
    if let Some(choice) = chosen {
        let known = match choice.candidate.secure_version {
            Some(_) => {
                state
                    .inventory()
                    .secure_version(state.store(), device.device_id.as_str())
                    .await?
            }
            None => None,
        };
        refused = state.store().rolled_back_firmware(device.device_id.as_str()).await?;
        if known > facts.secure_version || !refused.is_empty() {
            facts.secure_version = facts.secure_version.max(known);
            facts.refused = &refused;
            chosen = choose(&candidates, &facts, pinned);
        }
    }
    let Some(choice) = chosen else {
        return Ok((
            Extension(RoutinePoll),
            axum::Json(CheckResponse::NoUpdate(NoUpdate {
                update_available: false,
                current_version,
            })),
        ));
    };
    let Some(firmware) = catalogue.get(choice.candidate.firmware_id).map(|a| &a.record) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the chosen firmware is not in the catalogue"
        )));
    };

    // A pin or a recall goes around rollouts: such an attempt is no rollout's.
    let rollout = match choice.kind {
        OfferKind::Update => rollout_mark(choice.candidate, &facts),
        OfferKind::Pinned | OfferKind::Recall => None,
    };
    let log = open_pending(
        &state,
        &device,
        firmware.id,
        Some(&current_version),
        &firmware.version,
        rollout,
    )
    .await?;
    metrics::counter!("ota_offers_total", "device_type" => device_type.to_string()).increment(1);
    tracing::info!(firmware_id = firmware.id, version = %firmware.version, log_id = log.id, "offered an update");

    let download_url = match &state.settings().cdn_base_url {
        Some(cdn) => cdn_url(cdn, &firmware.binary_path),
        None => {
            let expires = chrono::Utc::now().timestamp() + state.settings().download_url_ttl as i64;
            let query = state.links().query(firmware.id, Some(&device.device_id), expires);
            format!(
                "{}/api/ota/download/{}?{query}",
                public_base(&state, &headers),
                firmware.id
            )
        }
    };
    let offer = CheckResponse::Offer(Offer {
        update_available: true,
        firmware_id: firmware.id,
        version: firmware.version.clone(),
        build_number: firmware.build_number,
        file_size: firmware.file_size,
        file_hash: firmware.file_hash.clone(),
        download_url,
        release_notes: firmware.release_notes.clone(),
        is_mandatory: firmware.is_mandatory,
        log_id: log.id,
        is_downgrade: choice.downgrade,
    });
    Ok((Extension(RoutinePoll), axum::Json(offer)))
}

/// The rollout that offers this firmware to this device, with the stage it
/// joined in and its arm.
fn rollout_mark(candidate: &Candidate, facts: &DeviceFacts<'_>) -> Option<RolloutMark> {
    let gate = candidate.gate.as_ref()?;
    Some(RolloutMark {
        rollout_id: gate.rollout_id,
        stage: gate.device_stage(facts)?,
        arm: gate.arm.map(|(arm, _)| arm).unwrap_or(ota_core::rollout::Arm::A),
    })
}

/// Counts a request against the device's per-minute budget (429 when spent).
fn charge_request_budget(state: &AppState, device: &DeviceAuth) -> ApiResult<()> {
    state
        .rate_limiter()
        .check(device.device_id.as_str())
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })
}

/// Records or reports the device's open attempt at a firmware.
async fn open_pending(
    state: &AppState,
    device: &DeviceAuth,
    firmware_id: i64,
    from_version: Option<&str>,
    to_version: &str,
    rollout: Option<RolloutMark>,
) -> ApiResult<OtaLog> {
    let store = state.store();
    if let Some(open) = store.open_log(device.device_id.as_str(), firmware_id).await? {
        return Ok(open);
    }
    let new = NewLog {
        device_id: device.device_id.as_str(),
        firmware_id,
        from_version,
        to_version,
        status: OtaStatus::Pending,
        progress: None,
        error_message: None,
        rollout,
    };
    match store.insert_log(&new).await {
        Ok(log) => {
            metrics::counter!("ota_status_transitions_total", "status" => "pending").increment(1);
            Ok(log)
        }
        // Another request of the same device opened it first: that row is the one.
        Err(e) if is_unique_violation(&e) => store
            .open_log(device.device_id.as_str(), firmware_id)
            .await?
            .ok_or_else(|| ApiError::Conflict("the update attempt changed while it was being opened; retry".into())),
        Err(e) => Err(e.into()),
    }
}

/// `<cdn base>/<binary_path>`: where a CDN in front of the firmware store
/// serves the object. Not signed, and the same for every device, so that
/// the CDN keeps one copy. Each path segment is percent-encoded beyond
/// the unreserved characters (a version's `+` is `%2B`: S3 reads a bare
/// `+` in a path as a space).
fn cdn_url(base: &str, binary_path: &str) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in binary_path.split('/') {
        url.push('/');
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    url
}

/// The scheme and host download links start with: `OTA_PUBLIC_URL`, or the
/// request's own `Host`.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.settings().public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| state.settings().listen.to_string());
    format!("http://{host}")
}

/// Reports the progress of an update attempt.
///
/// Moves the device's open OTA log row for the firmware (opening one if there
/// is none): `pending → downloading → installing → success`, any open state
/// to `failed`, and the same state again as a progress update. `success` and
/// `failed` are final (409), except that `pending` or `downloading` after
/// `failed` opens a new row: a retry.
#[utoipa::path(
    post,
    path = "/api/ota/status",
    tag = "device",
    request_body = StatusReport,
    security(("device_jwt" = [])),
    responses(
        (status = 200, description = "The updated OTA log row", body = OtaLog),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid device token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The firmware is for another device type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such firmware, or it is deactivated", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An illegal status transition", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown status or progress out of range", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this device", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(firmware_id = report.firmware_id))]
async fn report_status(
    State(state): State<AppState>,
    device: DeviceAuth,
    Json(report): Json<StatusReport>,
) -> ApiResult<axum::Json<OtaLog>> {
    let status: OtaStatus = report.status.parse().map_err(|e| ApiError::invalid("status", e))?;
    if let Some(progress) = report.progress
        && !(0..=100).contains(&progress)
    {
        return Err(ApiError::invalid("progress", "must be between 0 and 100"));
    }
    let error_message = report.error_message.as_deref().map(|m| truncate(m, 2000));
    charge_request_budget(&state, &device)?;
    let store = state.store();
    let catalogue = state.catalogue().snapshot().await?;
    let active = catalogue
        .get(report.firmware_id)
        .ok_or_else(|| ApiError::NotFound(format!("no active firmware with id {}", report.firmware_id)))?;
    let firmware = &active.record;
    device.ensure_device_type(&firmware.device_type)?;
    let device_id = device.device_id.as_str();

    // Two tries: a concurrent report may move the row between read and write.
    for _ in 0..2 {
        let latest = store.latest_log(device_id, firmware.id).await?;
        let step = ota_core::transition(latest.as_ref().map(|l| l.status), status)
            .map_err(|e| ApiError::Conflict(e.to_string()))?;
        let from_version = match step {
            Transition::OpenNew => store.device_version(device_id).await?,
            _ => None,
        };
        let write = match (step, latest) {
            (Transition::OpenNew, _) => LogWrite::Open(NewLog {
                device_id,
                firmware_id: firmware.id,
                from_version: from_version.as_deref(),
                to_version: &firmware.version,
                status,
                progress: report.progress,
                error_message,
                rollout: reported_rollout(&catalogue, &active.candidate, &device),
            }),
            (Transition::Advance | Transition::Repeat, Some(latest)) => LogWrite::Advance {
                id: latest.id,
                from: latest.status,
                to: status,
                progress: report.progress,
                error_message,
            },
            (_, None) => {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "a transition other than OpenNew with no attempt"
                )));
            }
        };
        let inventory = DeviceReport {
            device_id,
            device_type: &firmware.device_type,
            status,
            now_running: (status == OtaStatus::Success).then_some(firmware.version.as_str()),
            error_message,
        };
        let updated = match store.apply_report(&write, inventory).await {
            Ok(updated) => updated,
            Err(e) if is_unique_violation(&e) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(log) = updated {
            if step != Transition::Repeat {
                metrics::counter!("ota_status_transitions_total", "status" => status.as_str()).increment(1);
            }
            tracing::info!(log_id = log.id, status = %status, progress = ?log.progress, "status reported");
            if let Some(rollout_id) = log.rollout_id
                && status.is_final()
                && step != Transition::Repeat
            {
                state.rollouts().attempt_finished(rollout_id);
            }
            return Ok(axum::Json(log));
        }
    }
    Err(ApiError::Conflict(
        "the update attempt changed while this report was applied; retry".into(),
    ))
}

/// The rollout of an attempt a device opens by reporting on it (rather
/// than by a check): the firmware's rollout, if the device is in its target.
fn reported_rollout(catalogue: &Snapshot, candidate: &Candidate, device: &DeviceAuth) -> Option<RolloutMark> {
    // Only the ids and groups matter to a rollout's stage and arm.
    let unknown_version = Version::parse("0.0.0").expect("a valid version");
    let channel = Channel::stable();
    let facts = DeviceFacts {
        device_id: &device.device_id,
        current_version: &unknown_version,
        build_number: None,
        channel: &channel,
        secure_version: None,
        groups: catalogue.groups_of(device.device_id.as_str()),
        refused: &[],
    };
    rollout_mark(candidate, &facts)
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
