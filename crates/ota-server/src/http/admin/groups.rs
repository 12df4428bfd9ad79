//! Named static groups of devices: `…/admin/groups[/{name}[/members]]`.

use axum::extract::State;
use axum::http::StatusCode;
use ota_core::GroupName;
use ota_core::wire::{DeviceRecord, Group, GroupPatch, MembersChange, MembersChanged, NewGroup, Page, Problem};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::devices::device_query;
use super::{page_bounds, record as audit};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AdminAuth, Json, Path, Query};
use crate::state::AppState;
use crate::store::{self, Members, is_unique_violation};

/// At most this many device ids in one membership change.
const MAX_IDS: usize = 10_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_group, list_groups))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(add_members, list_members))
        .routes(routes!(remove_members))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// 1 to 500, default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

fn group_name(name: &str) -> ApiResult<GroupName> {
    GroupName::parse(name).map_err(|e| ApiError::invalid("name", e))
}

fn no_group(name: &str) -> ApiError {
    ApiError::NotFound(format!("no group '{}'", name.chars().take(64).collect::<String>()))
}

/// Creates a group.
#[utoipa::path(
    post,
    path = "/api/ota/admin/groups",
    tag = "admin",
    request_body = NewGroup,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 201, description = "The group", body = Group),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A group of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid name or an unknown field", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_group(
    State(state): State<AppState>,
    admin: AdminAuth,
    Json(new): Json<NewGroup>,
) -> ApiResult<(StatusCode, axum::Json<Group>)> {
    let name = group_name(&new.name)?;
    let group = match state
        .store()
        .create_group(name.as_str(), new.description.as_deref())
        .await
    {
        Ok(group) => group,
        Err(e) if is_unique_violation(&e) => return Err(ApiError::Conflict(format!("group '{name}' exists"))),
        Err(e) => return Err(e.into()),
    };
    audit(
        &state,
        &admin,
        "group.create",
        "group",
        Some(name.to_string()),
        None::<&()>,
        Some(&group),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(group)))
}

/// Lists the groups, by name, with their member counts.
#[utoipa::path(
    get,
    path = "/api/ota/admin/groups",
    tag = "admin",
    params(PageQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of groups", body = Page<Group>),
        (status = 400, description = "A bad query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_groups(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Query(query): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Group>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let (items, total) = state.store().list_groups(limit, offset).await?;
    Ok(axum::Json(Page { items, total }))
}

/// One group.
#[utoipa::path(
    get,
    path = "/api/ota/admin/groups/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The group's name")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The group", body = Group),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_group(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Group>> {
    state
        .store()
        .group(&name)
        .await?
        .map(axum::Json)
        .ok_or_else(|| no_group(&name))
}

/// Changes a group's description (a name never changes: firmware and
/// rollouts target groups by name).
#[utoipa::path(
    patch,
    path = "/api/ota/admin/groups/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The group's name")),
    request_body = GroupPatch,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The group", body = Group),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown field", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_group(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(name): Path<String>,
    Json(patch): Json<GroupPatch>,
) -> ApiResult<axum::Json<Group>> {
    let store = state.store();
    let before = store.group(&name).await?.ok_or_else(|| no_group(&name))?;
    let after = match &patch.description {
        Some(description) => store
            .set_group_description(&name, description.as_deref())
            .await?
            .ok_or_else(|| no_group(&name))?,
        None => before.clone(),
    };
    audit(
        &state,
        &admin,
        "group.update",
        "group",
        Some(name),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Deletes a group and its memberships; refused while a firmware or a
/// rollout that is not over targets it.
#[utoipa::path(
    delete,
    path = "/api/ota/admin/groups/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The group's name")),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "The group as it was", body = Group),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A firmware or an unfinished rollout targets it", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_group(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Group>> {
    let store = state.store();
    let before = store.group(&name).await?.ok_or_else(|| no_group(&name))?;
    if let Some(user) = store.group_in_use(&name).await? {
        return Err(ApiError::Conflict(format!(
            "{user} targets group '{name}': change its target first"
        )));
    }
    if !store.delete_group(&name).await? {
        return Err(no_group(&name));
    }
    audit(
        &state,
        &admin,
        "group.delete",
        "group",
        Some(name),
        Some(&before),
        None::<&()>,
    )
    .await?;
    Ok(axum::Json(before))
}

/// Lists a group's members that have checked in, by device id.
#[utoipa::path(
    get,
    path = "/api/ota/admin/groups/{name}/members",
    tag = "admin",
    params(("name" = String, Path, description = "The group's name"), PageQuery),
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "A page of member devices", body = Page<DeviceRecord>),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_members(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<DeviceRecord>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let store = state.store();
    store.group(&name).await?.ok_or_else(|| no_group(&name))?;
    let filter = store::DeviceQuery {
        group: Some(name),
        ..Default::default()
    };
    let (items, total) = store.list_devices(&filter, limit, offset).await?;
    Ok(axum::Json(Page { items, total }))
}

/// The devices a change is about: ids (which need not have checked in
/// yet), or every device of the inventory a filter matches now.
fn members(change: MembersChange) -> ApiResult<Members> {
    match (change.device_ids, change.filter) {
        (Some(ids), None) => {
            if ids.len() > MAX_IDS {
                return Err(ApiError::invalid("device_ids", format!("at most {MAX_IDS} at a time")));
            }
            let ids = ids
                .iter()
                .map(|id| {
                    ota_core::DeviceId::parse(id)
                        .map(String::from)
                        .map_err(|e| ApiError::invalid("device_ids", format!("'{id}': {e}")))
                })
                .collect::<ApiResult<Vec<_>>>()?;
            Ok(Members::Ids(ids))
        }
        (None, Some(filter)) => {
            if filter == Default::default() {
                return Err(ApiError::invalid(
                    "filter",
                    "is empty: name at least one field (device_type matches a whole type)",
                ));
            }
            Ok(Members::Matching(device_query(filter)?))
        }
        _ => Err(ApiError::Invalid {
            field: None,
            detail: "give either device_ids or filter".into(),
        }),
    }
}

/// Adds devices to a group, by id or by a filter on the inventory.
///
/// A filter is applied once, now: the group stays static, and devices that
/// match later are not added.
#[utoipa::path(
    post,
    path = "/api/ota/admin/groups/{name}/members",
    tag = "admin",
    params(("name" = String, Path, description = "The group's name")),
    request_body = MembersChange,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "How many devices were added", body = MembersChanged),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither or both of device_ids and filter, an invalid id or filter", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn add_members(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(name): Path<String>,
    Json(change): Json<MembersChange>,
) -> ApiResult<axum::Json<MembersChanged>> {
    change_members(state, admin, name, change, true).await
}

/// Removes devices from a group, by id or by a filter on the inventory.
#[utoipa::path(
    post,
    path = "/api/ota/admin/groups/{name}/members/remove",
    tag = "admin",
    params(("name" = String, Path, description = "The group's name")),
    request_body = MembersChange,
    security(("admin_token" = []), ("admin_token_header" = [])),
    responses(
        (status = 200, description = "How many devices were removed", body = MembersChanged),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither or both of device_ids and filter, an invalid id or filter", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn remove_members(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(name): Path<String>,
    Json(change): Json<MembersChange>,
) -> ApiResult<axum::Json<MembersChanged>> {
    change_members(state, admin, name, change, false).await
}

async fn change_members(
    state: AppState,
    admin: AdminAuth,
    name: String,
    change: MembersChange,
    add: bool,
) -> ApiResult<axum::Json<MembersChanged>> {
    let asked = serde_json::to_value(&change).ok();
    let members = members(change)?;
    let store = state.store();
    let changed = if add {
        store.add_members(&name, members).await?
    } else {
        store.remove_members(&name, members).await?
    }
    .ok_or_else(|| no_group(&name))?;
    let group = store.group(&name).await?.ok_or_else(|| no_group(&name))?;
    let answer = MembersChanged {
        group: name.clone(),
        changed,
        members: group.members,
    };
    let (action, detail) = if add {
        ("group.add_members", "added")
    } else {
        ("group.remove_members", "removed")
    };
    let after = serde_json::json!({ "asked": asked, detail: changed, "members": group.members });
    audit(&state, &admin, action, "group", Some(name), None::<&()>, Some(&after)).await?;
    Ok(axum::Json(answer))
}
