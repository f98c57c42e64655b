//! The simulator's instance list, `GET /v1/{project_id}/instances` (ddm-list-instances.md):
//! newest `created` first (ties by id), `offset` read as items or as 0-based pages
//! (`--instances-offset-mode`), `instances` left out of an empty page, v1 error bodies.

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::data::{SimInstance, SimProject};
use super::faults::ddm_error;
use super::http::{RegionState, SimRequest, admitted, parse_params};
use crate::ddm::time::format_upstream_time;

/// How `offset` is read: the contract leaves it open, so the simulator serves either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OffsetMode {
    /// An item index (the current international page).
    #[default]
    Item,
    /// A 0-based page index (the older European pages).
    Page,
}

fn parameter_error() -> Response {
    // The v1 API's error shape.
    let body = json!({"externalMessage": "Parameter error.", "errCode": "DBS.280001"});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

pub(super) async fn list_instances(
    State(state): State<RegionState>,
    Path(project_id): Path<String>,
    request: SimRequest,
) -> Response {
    let shared = &state.shared;
    shared
        .stats
        .instance_requests
        .fetch_add(1, Ordering::Relaxed);
    let request_id = &request.request_id;
    let (index, faults) = match admitted(&state, &project_id, &request.parts(), request_id).await {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    // The same `offset` and `limit` rules as ListBackups; the v1 API's error shape.
    let Some(params) = parse_params(request.query()) else {
        return parameter_error();
    };
    let (offset, limit) = (params.offset, params.limit);
    if faults.fail_instances {
        shared.stats.faults.fetch_add(1, Ordering::Relaxed);
        return ddm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "DBS.200412",
            "Server failure.",
        );
    }
    let project = &shared.data.projects[index];
    let mode = shared.options.instances_offset_mode;
    axum::Json(page(project, offset, limit, mode)).into_response()
}

/// One page of a project's listed instances.
fn page(project: &SimProject, offset: u64, limit: u64, mode: OffsetMode) -> serde_json::Value {
    let listed = project.listed_instances();
    let total = listed.len() as u64;
    let (start, page_no) = match mode {
        OffsetMode::Item => (offset, offset / limit + 1),
        OffsetMode::Page => (offset.saturating_mul(limit), offset + 1),
    };
    let items: Vec<serde_json::Value> = listed
        .iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|i| render(project, i))
        .collect();
    let mut body = json!({
        "instance_num": total,
        "page_no": page_no,
        "page_size": limit,
        "total_record": total,
        "total_page": total.div_ceil(limit),
    });
    // An empty page leaves `instances` out, as the usage guide allows.
    if !items.is_empty() {
        body["instances"] = serde_json::Value::Array(items);
    }
    body
}

fn render(project: &SimProject, i: &SimInstance) -> serde_json::Value {
    let n = u64::from_str_radix(&i.id[..8], 16).unwrap_or(0);
    json!({
        "id": i.id,
        "status": i.status,
        "name": i.name,
        "created": format_upstream_time(i.created, 0),
        "updated": format_upstream_time(i.created + 600, 0),
        "available_zone": format!("{}a", project.region),
        "vpc_id": format!("{:08x}-2c4a-4e7b-9f10-5a6b7c8d9e0f", n),
        "subnet_id": format!("{:08x}-4a5b-4c6d-8e9f-0a1b2c3d4e5f", n),
        "security_group_id": format!("{:08x}-5a4f-4e3d-2c1b-0a9f8e7d6c5b", n),
        "node_count": 2,
        "access_ip": format!("192.168.{}.{}", n % 250, n % 200 + 10),
        "access_port": "5066",
        "core_count": "4",
        "ram_capacity": "8",
        "node_status": "RUNNING",
        "enterprise_project_id": "0",
        "project_id": project.id,
        "engine_version": "3.0.8.5",
    })
}
