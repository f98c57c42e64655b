//! The simulator's HTTP side: DDM's `ListBackups` as ddm-list-backups.md and errors.md describe
//! it, one listener per region, with the API gateway's auth and error bodies in front. Each
//! listener also answers as IAM (`iam.rs`) and, for agencies, Organizations (`org.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::SimState;
use super::auth::{Caller, Rejection, RequestParts};
use super::data::SimProject;
use super::faults::{self, ddm_error, gateway_error};
use super::iam;

#[derive(Clone)]
pub(super) struct RegionState {
    pub shared: Arc<SimState>,
    pub region: String,
}

/// The request id of the request being answered (every answer carries it).
#[derive(Clone)]
pub(super) struct RequestId(pub String);

/// A request as the handlers look at it, whole: the API gateway verifies signatures over its
/// method, path, query, headers and body.
pub(super) struct SimRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_id: String,
}

impl SimRequest {
    pub fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: &self.body,
        }
    }

    /// The raw (still percent-encoded) query.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for SimRequest {
    type Rejection = Response;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 2 << 20)
            .await
            .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response())?;
        Ok(SimRequest {
            request_id: parts
                .extensions
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        })
    }
}

pub(super) fn router(state: RegionState) -> Router {
    let api = Router::new()
        .route("/v3/{project_id}/backups", get(list_backups))
        .route(
            "/v1/{project_id}/instances",
            get(super::instances::list_instances),
        )
        // IAM is served by every listener too (its paths do not collide with DDM's).
        .route("/v3/auth/tokens", axum::routing::post(iam::iam_tokens))
        .route("/v3/auth/projects", get(iam::iam_projects))
        .route("/v3/projects", get(iam::iam_projects))
        // Organizations too (a global service: any listener answers).
        .route("/v1/organizations/accounts", get(super::org::list_accounts))
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
pub(super) struct ListParams {
    pub offset: u64,
    pub limit: u64,
    pub instance_id: Option<String>,
    pub instance_name: Option<String>,
    pub backup_name: Option<String>,
}

pub(super) fn parse_params(raw: Option<&str>) -> Option<ListParams> {
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

fn rejected(r: Rejection, request_id: &str) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNAUTHORIZED);
    gateway_error(status, r.code, &r.message, request_id)
}

async fn list_backups(
    State(state): State<RegionState>,
    Path(project_id): Path<String>,
    request: SimRequest,
) -> Response {
    let shared = &state.shared;
    shared.stats.list_requests.fetch_add(1, Ordering::Relaxed);
    let request_id = &request.request_id;
    let (index, faults) = match admitted(&state, &project_id, &request.parts(), request_id).await {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let Some(params) = parse_params(request.query()) else {
        return parameter_error();
    };

    let n = shared.project_requests[index].fetch_add(1, Ordering::Relaxed);
    let failure = faults.fails(n);
    if failure.is_some() {
        shared.stats.faults.fetch_add(1, Ordering::Relaxed);
    }
    let page = shared.page(index, faults, &params);
    match failure {
        Some(kind) => {
            faults::fail(
                kind,
                faults,
                || serde_json::from_str(&page).unwrap_or_default(),
                request_id,
            )
            .await
        }
        None => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            page,
        )
            .into_response(),
    }
}

/// A request's latency (the simulator's, plus its faults'), then `admit`: the project's index
/// and the faults that apply to it, or the answer that refuses the request.
pub(super) async fn admitted<'s>(
    state: &'s RegionState,
    project_id: &'s str,
    request: &RequestParts<'_>,
    request_id: &str,
) -> Result<(usize, &'s super::faults::Faults), Box<Response>> {
    let (scope, faults) = state
        .shared
        .options
        .faults
        .for_project(&state.region, project_id);
    let wait = state.shared.options.latency(faults);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let index = admit(state, project_id, scope, faults, request, request_id)?;
    Ok((index, faults))
}

/// What the API gateway checks before DDM answers: the rate, who calls, and whether the project
/// is theirs and in this region. The project's index, or the answer that refuses the request.
pub(super) fn admit(
    state: &RegionState,
    project_id: &str,
    scope: &str,
    faults: &super::faults::Faults,
    request: &RequestParts<'_>,
    request_id: &str,
) -> Result<usize, Box<Response>> {
    let shared = &state.shared;
    // The API gateway throttles before anything else.
    if let Some(rps) = faults.throttle_rps
        && !shared.bucket(scope, rps, faults.throttle_burst).try_take()
    {
        shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
        return Err(Box::new(faults.throttled(request_id)));
    }
    let caller = shared
        .auth
        .authenticate(&shared.options.auth, request)
        .map_err(|r| Box::new(rejected(r, request_id)))?;
    let Some(index) = shared.data.project_index(project_id) else {
        return Err(Box::new(gateway_error(
            StatusCode::FORBIDDEN,
            "APIGW.0310",
            "The project is unavailable",
            request_id,
        )));
    };
    let project = &shared.data.projects[index];
    check_caller(caller, project, request.headers)
        .map_err(|r| Box::new(rejected(r, request_id)))?;
    if project.region != state.region {
        let message = format!(
            "The project is unavailable: project {project_id} is not in region {}",
            state.region
        );
        return Err(Box::new(gateway_error(
            StatusCode::FORBIDDEN,
            "APIGW.0310",
            &message,
            request_id,
        )));
    }
    Ok(index)
}

/// Whether this caller may read this project.
fn check_caller(
    caller: Caller,
    project: &SimProject,
    headers: &HeaderMap,
) -> Result<(), Rejection> {
    let refuse = |detail: &str| Rejection {
        status: 401,
        code: "APIGW.0301",
        message: format!("Incorrect IAM authentication information: {detail}"),
    };
    match caller {
        // Our account's static token: not the members' projects (those need an agency).
        Caller::Static if project.account != 0 => {
            Err(refuse("the token's account does not own this project"))
        }
        Caller::Static => Ok(()),
        Caller::Token { scope } if scope.as_deref() == Some(project.id.as_str()) => Ok(()),
        Caller::Token { .. } => Err(refuse("the token is not scoped to this project")),
        Caller::AccessKey if project.account != 0 => {
            Err(refuse("the access key's account does not own this project"))
        }
        Caller::AccessKey => {
            // X-Project-Id names the project the signature is for; sub-projects need it.
            let header = headers.get("x-project-id").and_then(|v| v.to_str().ok());
            if header.is_some_and(|h| h != project.id)
                || (header.is_none() && project.name.contains('_'))
            {
                Err(refuse("X-Project-Id does not match the project"))
            } else {
                Ok(())
            }
        }
    }
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
