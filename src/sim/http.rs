//! The simulator's HTTP side: DDM's `ListBackups` as ddm-list-backups.md and errors.md describe
//! it, one listener per region, with the API gateway's auth and error bodies in front.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::SimState;
use crate::ddm::model::PageBody;

#[derive(Clone)]
pub(super) struct RegionState {
    pub shared: Arc<SimState>,
    pub region: String,
}

/// The request id of the request being answered (every answer carries it).
#[derive(Clone)]
struct RequestId(String);

pub(super) fn router(state: RegionState) -> Router {
    let api = Router::new()
        .route("/v3/{project_id}/backups", get(list_backups))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count_and_tag));
    Router::new()
        .route("/_sim/stats", get(stats))
        .merge(api)
        .with_state(state)
}

/// Counts requests (and those in flight) and gives each an `X-Request-Id`.
async fn count_and_tag(
    State(state): State<RegionState>,
    mut request: Request,
    next: Next,
) -> Response {
    let stats = &state.shared.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    // Decrements even when the client goes away and the handler is dropped.
    let _in_flight = InFlight(Arc::clone(&state.shared));
    let id = format!("{:032x}", fastrand::u128(..));
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

struct InFlight(Arc<SimState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn stats(State(state): State<RegionState>) -> Response {
    axum::Json(state.shared.stats_snapshot()).into_response()
}

/// An API gateway error (`APIGW.*`): these carry the request id in the body too.
fn gateway_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = json!({"error_msg": message, "error_code": code, "request_id": request_id});
    (status, axum::Json(body)).into_response()
}

/// A DDM error (`DBS.*`).
fn ddm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error_code": code, "error_msg": message})),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    gateway_error(
        StatusCode::NOT_FOUND,
        "APIGW.0101",
        "The API does not exist or has not been published in the environment",
        &id,
    )
}

fn parameter_error() -> Response {
    ddm_error(StatusCode::BAD_REQUEST, "DBS.280001", "Parameter error.")
}

#[derive(Default)]
struct ListParams {
    offset: u64,
    limit: u64,
    instance_id: Option<String>,
    instance_name: Option<String>,
    backup_name: Option<String>,
}

fn parse_params(raw: Option<&str>) -> Option<ListParams> {
    let mut p = ListParams {
        limit: 10,
        ..Default::default()
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "offset" => p.offset = value.parse().ok()?,
            "limit" => p.limit = value.parse().ok().filter(|l| (1..=128).contains(l))?,
            "instance_id" => p.instance_id = Some(value.into_owned()),
            "instance_name" => p.instance_name = Some(value.into_owned()),
            "backup_name" => p.backup_name = Some(value.into_owned()),
            _ => {} // the upstream ignores parameters it does not know
        }
    }
    Some(p)
}

async fn list_backups(
    State(state): State<RegionState>,
    Path(project_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
) -> Response {
    let shared = &state.shared;
    shared.stats.list_requests.fetch_add(1, Ordering::Relaxed);
    shared.options.delay().await;

    match headers.get("x-auth-token") {
        None => {
            return gateway_error(
                StatusCode::UNAUTHORIZED,
                "APIGW.0301",
                "Incorrect IAM authentication information: x-auth-token not found",
                &request_id,
            );
        }
        Some(token) if !shared.options.accepts_token(token.as_bytes()) => {
            return gateway_error(
                StatusCode::UNAUTHORIZED,
                "APIGW.0301",
                "Incorrect IAM authentication information: decrypt token fail",
                &request_id,
            );
        }
        Some(_) => {}
    }

    let Some(project) = shared.data.project(&project_id) else {
        return gateway_error(
            StatusCode::FORBIDDEN,
            "APIGW.0310",
            "The project is unavailable",
            &request_id,
        );
    };
    if project.region != state.region {
        let message = format!(
            "The project is unavailable: project {project_id} is not in region {}",
            state.region
        );
        return gateway_error(StatusCode::FORBIDDEN, "APIGW.0310", &message, &request_id);
    }
    let Some(params) = parse_params(query.as_deref()) else {
        return parameter_error();
    };

    // Pushdown: instance_id and instance_name match exactly, backup_name matches a substring.
    let matching = project.backups.iter().filter(|b| {
        let instance = &project.instances[b.instance as usize];
        params
            .instance_id
            .as_ref()
            .is_none_or(|id| *id == instance.id)
            && params
                .instance_name
                .as_ref()
                .is_none_or(|n| *n == instance.name)
            && params.backup_name.as_ref().is_none_or(|n| {
                project
                    .render(b)
                    .name
                    .is_some_and(|name| name.contains(n.as_str()))
            })
    });
    let mut total = 0u64;
    let mut backups = Vec::new();
    for (index, b) in matching.enumerate() {
        total += 1;
        if index as u64 >= params.offset && (backups.len() as u64) < params.limit {
            backups.push(project.render(b));
        }
    }
    let body = PageBody {
        backups,
        total,
        offset: params.offset,
        limit: params.limit,
    };
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_follow_the_contract() {
        let p = parse_params(None).unwrap();
        assert_eq!((p.offset, p.limit), (0, 10));
        let p = parse_params(Some("limit=128&offset=256&instance_name=ddm%20a")).unwrap();
        assert_eq!((p.offset, p.limit), (256, 128));
        assert_eq!(p.instance_name.as_deref(), Some("ddm a"));
        for bad in ["limit=0", "limit=129", "offset=-1", "limit=abc", "offset="] {
            assert!(parse_params(Some(bad)).is_none(), "{bad}");
        }
    }
}
