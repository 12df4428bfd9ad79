//! Extractors: who is calling (`DeviceAuth`, `AdminAuth`) and request
//! bodies and parameters whose refusals are problem documents.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use ota_core::{DeviceId, DeviceType};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::admin_token_name;
use crate::state::AppState;

/// A JSON body; malformed JSON is 400, well-formed but wrong values 422.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest(format!("malformed JSON: {detail}")),
        JsonRejection::JsonDataError(_) => ApiError::Invalid { field: None, detail },
        JsonRejection::MissingJsonContentType(_) => ApiError::Status {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            detail: "expected a body with Content-Type: application/json".into(),
        },
        other => ApiError::Status {
            status: other.status(),
            detail,
        },
    }
}

/// Query parameters; a bad one is 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// A path parameter; one of the wrong shape (`/firmware/abc`) is 400.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// The token of an `Authorization: Bearer` header; another scheme counts as
/// no bearer token at all.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not readable".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => match token.trim() {
            "" => Err(ApiError::Unauthorized("the bearer token is empty".into())),
            token => Ok(Some(token)),
        },
        _ => Ok(None),
    }
}

/// An administrator: `Authorization: Bearer <ADMIN_TOKEN>` or `X-Admin-Token`,
/// known by the token's name.
#[derive(Debug)]
pub struct AdminAuth {
    pub name: String,
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = match bearer(&parts.headers)? {
            Some(token) => token,
            None => match parts.headers.get("x-admin-token") {
                Some(value) => value
                    .to_str()
                    .map_err(|_| ApiError::Unauthorized("the X-Admin-Token header is not readable".into()))?,
                None => return Err(ApiError::MissingCredentials("an admin token is required".into())),
            },
        };
        if let Some(name) = admin_token_name(presented, state.admin_tokens()) {
            Ok(AdminAuth { name: name.to_owned() })
        } else {
            Err(ApiError::Unauthorized("the admin token is not valid".into()))
        }
    }
}

/// A device, identified by a verified bearer JWT.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    pub device_id: DeviceId,
    /// The `device_type` claim, when the token carries one.
    pub device_type: Option<DeviceType>,
}

impl DeviceAuth {
    /// Refuses (403) a request about another device type than the token's.
    pub fn ensure_device_type(&self, requested: &str) -> Result<(), ApiError> {
        match &self.device_type {
            Some(own) if own.as_str() != requested => Err(ApiError::Forbidden(format!(
                "this device is a '{own}' and may not act on '{requested}' firmware"
            ))),
            _ => Ok(()),
        }
    }

    /// Verifies the bearer token of a request, if it has one.
    pub fn from_headers(headers: &HeaderMap, state: &AppState) -> Result<Option<Self>, ApiError> {
        let Some(token) = bearer(headers)? else {
            return Ok(None);
        };
        let claims = state.device_tokens().verify(token).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let reason = match e.kind() {
                ErrorKind::ExpiredSignature => "the device token has expired",
                ErrorKind::InvalidSignature => "the device token's signature is not valid",
                ErrorKind::InvalidAlgorithm => "the device token uses an algorithm this server does not accept",
                ErrorKind::MissingRequiredClaim(_) => "the device token lacks a required claim (sub, exp)",
                ErrorKind::InvalidIssuer => "the device token's issuer is not accepted",
                ErrorKind::InvalidAudience => "the device token's audience is not accepted",
                _ => "the device token is not valid",
            };
            ApiError::Unauthorized(reason.into())
        })?;
        let device_id =
            DeviceId::parse(&claims.sub).map_err(|e| ApiError::Unauthorized(format!("the device token's sub {e}")))?;
        let device_type = claims
            .device_type
            .map(|value| DeviceType::parse(&value))
            .transpose()
            .map_err(|e| ApiError::Unauthorized(format!("the device token's device_type {e}")))?;
        Ok(Some(DeviceAuth { device_id, device_type }))
    }
}

impl FromRequestParts<AppState> for DeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let device = DeviceAuth::from_headers(&parts.headers, state)?
            .ok_or_else(|| ApiError::MissingCredentials("a device bearer token is required".into()))?;
        // The request span declares the field: every line of this request
        // names the device, without a span of its own per handler.
        tracing::Span::current().record("device_id", device.device_id.as_str());
        Ok(device)
    }
}
