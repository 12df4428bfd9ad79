//! Rollouts: `POST/GET /api/ota/admin/rollouts[/{id}]` and the operator's
//! actions (`…/{id}/pause|resume|abort|advance`).

use axum::extract::State;
use axum::http::StatusCode;
use ota_core::rollout::{Action, Policy, RolloutState, Stages, apply_action};
use ota_core::wire::{NewRollout, Page, Problem, Rollout, RolloutActionRequest};
use ota_core::{DeviceType, GroupName};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_bounds;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Json, Path, Query};
use crate::rollouts::{evaluate, view};
use crate::state::AppState;
use crate::store::{self, Change, RolloutFilter, RolloutRecord, StateChange, is_unique_violation};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_rollout, list_rollouts))
        .routes(routes!(get_rollout))
        .routes(routes!(pause_rollout))
        .routes(routes!(resume_rollout))
        .routes(routes!(abort_rollout))
        .routes(routes!(advance_rollout))
}

/// The rollout with its progress, as the API shows it.
async fn shown(state: &AppState, rollout: RolloutRecord) -> ApiResult<Rollout> {
    let store = state.store();
    let tallies = store.rollout_tallies(rollout.id).await?;
    let mut versions = std::collections::HashMap::new();
    for (_, firmware_id, _) in rollout.arms() {
        if let Some(firmware) = store.firmware(firmware_id).await? {
            versions.insert(firmware_id, firmware.version);
        }
    }
    Ok(view(rollout, &tallies, |id| {
        versions.get(&id).cloned().unwrap_or_default()
    }))
}

fn no_rollout(id: i64) -> ApiError {
    ApiError::NotFound(format!("no rollout with id {id}"))
}

fn count(field: &'static str, value: Option<i64>, default: u64, max: u64) -> ApiResult<u64> {
    match value {
        None => Ok(default),
        Some(n) => u64::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| ApiError::invalid(field, format!("must be a whole number from 0 to {max}"))),
    }
}

/// Creates a rollout and starts it at its first stage.
///
/// A rollout offers a firmware to a growing share of its target (the
/// device type, or the members of `groups`): `stages` are cumulative
/// percentages (default 1, 10, 50, 100). Which devices come first is a
/// hash of device and firmware id, so a device keeps its place. A stage
/// advances by itself once it has run `soak_seconds` and its devices have
/// confirmed `min_successes` updates; the rollout halts by itself when
/// failures (rollbacks included) pass `max_failure_rate` percent of the
/// attempts finished in the stage (or in the whole rollout), once
/// `min_finished` have finished. With `variant`, each stage's cohort is
/// split between two firmware: `percent` of it gets the variant (arm b).
/// The firmware's own `rollout_percentage` no longer applies while a
/// rollout holds it.
#[utoipa::path(
    post,
    path = "/api/ota/admin/rollouts",
    tag = "admin",
    request_body = NewRollout,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 201, description = "The rollout, running", body = Rollout),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such firmware or group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A firmware is inactive, recalled, or in another rollout that is not over; the variant is of another type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid stages, policy, variant or an unknown field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_rollout(
    State(state): State<AppState>,
    admin: AdminAuth,
    Json(request): Json<NewRollout>,
) -> ApiResult<(StatusCode, axum::Json<Rollout>)> {
    let store = state.store();
    let stages = match &request.stages {
        Some(stages) => Stages::parse(stages).map_err(|e| ApiError::invalid("stages", e))?,
        None => Stages::default_stages(),
    };
    let defaults = Policy::default();
    let asked = request.policy.clone().unwrap_or_default();
    let policy = Policy {
        min_successes: count(
            "policy.min_successes",
            asked.min_successes,
            defaults.min_successes,
            1_000_000,
        )?,
        soak_seconds: count(
            "policy.soak_seconds",
            asked.soak_seconds,
            defaults.soak_seconds,
            366 * 24 * 3600,
        )?,
        max_failure_rate: count(
            "policy.max_failure_rate",
            asked.max_failure_rate,
            u64::from(defaults.max_failure_rate),
            100,
        )? as u8,
        min_finished: count(
            "policy.min_finished",
            asked.min_finished,
            defaults.min_finished,
            1_000_000,
        )?,
    };
    let usable = |firmware: &ota_core::wire::Firmware| -> ApiResult<()> {
        if !firmware.is_active || firmware.recalled_at.is_some() {
            return Err(ApiError::Conflict(format!(
                "firmware {} ({}) is {}",
                firmware.id,
                firmware.version,
                if firmware.is_active { "recalled" } else { "deactivated" }
            )));
        }
        Ok(())
    };
    let firmware = store
        .firmware(request.firmware_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no firmware with id {}", request.firmware_id)))?;
    usable(&firmware)?;
    let variant = match &request.variant {
        None => None,
        Some(variant) => {
            if !(1..=99).contains(&variant.percent) {
                return Err(ApiError::invalid("variant.percent", "must be from 1 to 99"));
            }
            if variant.firmware_id == firmware.id {
                return Err(ApiError::invalid("variant.firmware_id", "must differ from firmware_id"));
            }
            let other = store
                .firmware(variant.firmware_id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no firmware with id {}", variant.firmware_id)))?;
            usable(&other)?;
            if other.device_type != firmware.device_type {
                return Err(ApiError::Conflict(format!(
                    "the variant is for {}, the firmware for {}",
                    other.device_type, firmware.device_type
                )));
            }
            Some((other.id, variant.percent as u8))
        }
    };
    let mut groups = Vec::new();
    for name in &request.groups {
        let name = GroupName::parse(name).map_err(|e| ApiError::invalid("groups", e))?;
        if store.group(name.as_str()).await?.is_none() {
            return Err(ApiError::NotFound(format!("no group '{name}'")));
        }
        if !groups.contains(&name.to_string()) {
            groups.push(name.to_string());
        }
    }
    let device_type = DeviceType::parse(&firmware.device_type).map_err(|e| ApiError::Internal(e.into()))?;
    let new = store::NewRollout {
        name: request.name.clone().filter(|n| !n.trim().is_empty()),
        device_type: device_type.to_string(),
        firmware_id: firmware.id,
        variant,
        groups,
        stages: stages.as_slice().iter().map(|p| p.get()).collect(),
        policy,
        created_by: admin.name.clone(),
    };
    let change = Change {
        actor: admin.name.clone(),
        action: "rollout.create",
        target_type: "rollout",
        target_id: None,
        before: None,
        after: serde_json::to_value(&request).ok(),
    };
    let rollout = match store.insert_rollout(new, change).await {
        Ok(rollout) => rollout,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::Conflict(
                "a firmware of this rollout is in another rollout that is not over: abort it first".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(rollout_id = rollout.id, firmware_id = firmware.id, "rollout created");
    Ok((StatusCode::CREATED, axum::Json(shown(&state, rollout).await?)))
}

/// Filters and page of the rollout list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RolloutQuery {
    /// running, paused, halted, aborted or completed.
    state: Option<String>,
    device_type: Option<String>,
    /// Rollouts of this firmware (either arm).
    firmware_id: Option<i64>,
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Lists rollouts, newest first, with their progress.
#[utoipa::path(
    get,
    path = "/api/ota/admin/rollouts",
    tag = "admin",
    params(RolloutQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of rollouts", body = Page<Rollout>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_rollouts(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<RolloutQuery>,
) -> ApiResult<axum::Json<Page<Rollout>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let filter = RolloutFilter {
        state: query
            .state
            .as_deref()
            .map(str::parse::<RolloutState>)
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        device_type: query.device_type,
        firmware_id: query.firmware_id,
    };
    let (records, total) = state.store().list_rollouts(&filter, limit, offset).await?;
    let mut items = Vec::with_capacity(records.len());
    for record in records {
        items.push(shown(&state, record).await?);
    }
    Ok(axum::Json(Page { items, total }))
}

/// One rollout with its progress: per stage and per arm, the devices
/// offered, in progress, succeeded, failed and rolled back (each device
/// counted once, by its latest attempt), success rates and failure reasons.
#[utoipa::path(
    get,
    path = "/api/ota/admin/rollouts/{id}",
    tag = "admin",
    params(("id" = i64, Path, description = "Rollout id")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The rollout", body = Rollout),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rollout", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_rollout(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Rollout>> {
    // A look is also a chance to decide (a soak time may have run out).
    let rollout = match evaluate(state.store(), id).await? {
        Some(moved) => moved,
        None => state.store().rollout(id).await?.ok_or_else(|| no_rollout(id))?,
    };
    Ok(axum::Json(shown(&state, rollout).await?))
}

/// The optional body of an action: nothing, or a [`RolloutActionRequest`].
fn action_request(body: &[u8]) -> ApiResult<Option<RolloutActionRequest>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        if e.is_data() {
            ApiError::Invalid {
                field: None,
                detail: format!("the body is not a rollout action: {e}"),
            }
        } else {
            ApiError::BadRequest(format!("the body is not JSON: {e}"))
        }
    })
}

async fn act(
    state: AppState,
    admin: AdminAuth,
    id: i64,
    action: Action,
    request: Option<RolloutActionRequest>,
) -> ApiResult<axum::Json<Rollout>> {
    let store = state.store();
    let rollout = store.rollout(id).await?.ok_or_else(|| no_rollout(id))?;
    let to = apply_action(rollout.state, action, rollout.stage, rollout.stages.len())
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let reason = request
        .and_then(|r| r.reason)
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| format!("{} by {}", action.as_str(), admin.name));
    let audit = Change {
        actor: admin.name.clone(),
        action: match action {
            Action::Pause => "rollout.pause",
            Action::Resume => "rollout.resume",
            Action::Abort => "rollout.abort",
            Action::Advance => "rollout.advance",
        },
        target_type: "rollout",
        target_id: Some(id.to_string()),
        before: Some(serde_json::json!({"state": rollout.state, "stage": rollout.stage})),
        after: Some(serde_json::json!({"state": to.0, "stage": to.1, "reason": reason})),
    };
    let change = StateChange {
        from: (rollout.state, rollout.stage),
        to,
        reason: Some(reason),
    };
    let moved = store
        .change_rollout(id, change, audit)
        .await?
        .ok_or_else(|| ApiError::Conflict("the rollout moved while this was asked; look at it and ask again".into()))?;
    tracing::info!(rollout_id = id, action = action.as_str(), state = %moved.state, stage = moved.stage, "rollout changed");
    Ok(axum::Json(shown(&state, moved).await?))
}

/// Pauses a running rollout: nobody is offered its firmware, nothing advances.
#[utoipa::path(
    post,
    path = "/api/ota/admin/rollouts/{id}/pause",
    tag = "admin",
    params(("id" = i64, Path, description = "Rollout id")),
    request_body(content = Option<RolloutActionRequest>, description = "An optional reason"),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The rollout", body = Rollout),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Its state does not allow this", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn pause_rollout(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Rollout>> {
    act(state, admin, id, Action::Pause, action_request(&body)?).await
}

/// Resumes a paused or halted rollout at its current stage.
#[utoipa::path(
    post,
    path = "/api/ota/admin/rollouts/{id}/resume",
    tag = "admin",
    params(("id" = i64, Path, description = "Rollout id")),
    request_body(content = Option<RolloutActionRequest>, description = "An optional reason"),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The rollout", body = Rollout),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Its state does not allow this", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn resume_rollout(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Rollout>> {
    act(state, admin, id, Action::Resume, action_request(&body)?).await
}

/// Aborts a rollout for good: its firmware is offered to nobody through it.
#[utoipa::path(
    post,
    path = "/api/ota/admin/rollouts/{id}/abort",
    tag = "admin",
    params(("id" = i64, Path, description = "Rollout id")),
    request_body(content = Option<RolloutActionRequest>, description = "An optional reason"),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The rollout", body = Rollout),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is over already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn abort_rollout(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Rollout>> {
    act(state, admin, id, Action::Abort, action_request(&body)?).await
}

/// Moves a running or paused rollout to its next stage now (running), or
/// completes it from its last stage.
#[utoipa::path(
    post,
    path = "/api/ota/admin/rollouts/{id}/advance",
    tag = "admin",
    params(("id" = i64, Path, description = "Rollout id")),
    request_body(content = Option<RolloutActionRequest>, description = "An optional reason"),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The rollout", body = Rollout),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Its state does not allow this (a halted rollout is resumed first)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn advance_rollout(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Rollout>> {
    act(state, admin, id, Action::Advance, action_request(&body)?).await
}
