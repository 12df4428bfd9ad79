//! Device types, firmware management and device tokens, behind the admin token.

mod device_types;
mod devices;
mod firmware;
mod image_check;
mod logs;
mod upload;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(device_types::router())
        .merge(upload::router())
        .merge(firmware::router())
        .merge(logs::router())
        .merge(devices::router())
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
