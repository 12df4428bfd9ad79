//! Device types, firmware management and device tokens, behind the admin token.

mod audit;
mod device_types;
mod devices;
mod firmware;
mod groups;
mod image_check;
mod logs;
mod rollouts;
mod upload;

use utoipa_axum::router::OpenApiRouter;

use super::extract::AdminAuth;
use crate::state::AppState;
use crate::store::Change;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(device_types::router())
        .merge(upload::router())
        .merge(firmware::router())
        .merge(logs::router())
        .merge(devices::router())
        .merge(groups::router())
        .merge(rollouts::router())
        .merge(audit::router())
}

/// Records an admin change in the audit log: who (the token's name), what,
/// on what, and the record before and after.
pub(super) async fn record(
    state: &AppState,
    admin: &AdminAuth,
    action: &'static str,
    target_type: &'static str,
    target_id: Option<String>,
    before: Option<&(impl serde::Serialize + ?Sized)>,
    after: Option<&(impl serde::Serialize + ?Sized)>,
) -> Result<(), super::error::ApiError> {
    state
        .store()
        .record_change(Change {
            actor: admin.name.clone(),
            action,
            target_type,
            target_id,
            before: before.and_then(|v| serde_json::to_value(v).ok()),
            after: after.and_then(|v| serde_json::to_value(v).ok()),
        })
        .await?;
    Ok(())
}

/// `limit` and `offset` of a list, checked.
fn page_bounds(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), super::error::ApiError> {
    use super::error::ApiError;
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 500".into()));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::BadRequest("offset must not be negative".into()));
    }
    Ok((limit, offset))
}
