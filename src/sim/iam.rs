//! The simulator's IAM: password and agency tokens (`POST /v3/auth/tokens`) and the project
//! list (`GET /v3/auth/projects`), with IAM's own error bodies and times.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SimState;
use super::auth::SimUser;
use super::data::SimProject;
use super::http::{RegionState, SimRequest};

/// IAM's error body.
pub(super) fn iam_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "title": status.canonical_reason()}});
    (status, axum::Json(body)).into_response()
}

/// `POST /v3/auth/tokens`: a password token scoped to a project (by id or name) or a domain;
/// or an agency token (`assume_role`, in `org.rs`).
pub(super) async fn iam_tokens(
    State(state): State<RegionState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &state.shared;
    shared
        .stats
        .iam_token_requests
        .fetch_add(1, Ordering::Relaxed);
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return iam_error(StatusCode::BAD_REQUEST, "The request body is not JSON.");
    };
    let auth = &body["auth"];
    let methods = &auth["identity"]["methods"];
    if methods
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m == "assume_role"))
    {
        return super::org::assume_role(shared, &headers, auth);
    }
    if !methods
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m == "password"))
    {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "Only the password method is supported here.",
        );
    }
    let Some(known) = known_user(shared, &auth["identity"]["password"]["user"]) else {
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "The username or password is wrong.",
        );
    };
    let project = match token_scope(shared, &auth["scope"], known) {
        Ok(project) => project,
        Err((status, message)) => return iam_error(status, message),
    };
    let (token, issued_at, expires_at) = shared.auth.issue_token(
        &shared.options.auth,
        project.map(|p| p.id.clone()),
        Some(known.domain.clone()),
    );
    let domain_json = json!({"id": format!("{:032x}", fastrand::u128(..)), "name": known.domain});
    let mut token_json = json!({
        "methods": ["password"],
        "expires_at": iam_time(expires_at),
        "issued_at": iam_time(issued_at),
        "user": {"id": format!("{:032x}", fastrand::u128(..)), "name": known.name, "domain": domain_json},
        "roles": [{"id": "0", "name": "ddm_readonly"}],
    });
    match project {
        Some(p) => {
            token_json["project"] = json!({"id": p.id, "name": p.name, "domain": domain_json})
        }
        None => token_json["domain"] = domain_json,
    }
    let mut response = (
        StatusCode::CREATED,
        axum::Json(json!({"token": token_json})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", v);
    }
    response
}

/// The IAM user whose name, domain and password `user` gives.
fn known_user<'a>(shared: &'a SimState, user: &serde_json::Value) -> Option<&'a SimUser> {
    let (name, password, domain) = (
        user["name"].as_str(),
        user["password"].as_str(),
        user["domain"]["name"].as_str(),
    );
    shared.options.auth.users.iter().find(|u| {
        use secrecy::ExposeSecret;
        Some(u.name.as_str()) == name
            && Some(u.domain.as_str()) == domain
            && Some(u.password.expose_secret()) == password
    })
}

/// What a password token is scoped to: one of our own projects (by id or name), or the user's
/// domain (`None`).
fn token_scope<'a>(
    shared: &'a SimState,
    scope: &serde_json::Value,
    user: &SimUser,
) -> Result<Option<&'a SimProject>, (StatusCode, &'static str)> {
    if scope["project"].is_object() {
        let p = &scope["project"];
        // Only our own account's projects: the members' are reached through agencies.
        let found = match (p["id"].as_str(), p["name"].as_str()) {
            (Some(id), _) => shared.data.project(id),
            (None, Some(name)) => shared.data.projects.iter().find(|q| q.name == name),
            _ => None,
        }
        .filter(|p| p.account == 0);
        match found {
            Some(p) => Ok(Some(p)),
            None => Err((StatusCode::NOT_FOUND, "Could not find the project.")),
        }
    } else if scope["domain"]["name"].as_str() == Some(user.domain.as_str()) {
        Ok(None)
    } else {
        Err((
            StatusCode::BAD_REQUEST,
            "The scope must be a project or the user's domain.",
        ))
    }
}

/// `2020-01-04T09:05:22.701000Z`: UTC with microseconds.
pub(super) fn iam_time(unix: i64) -> String {
    let mut s = prost_types::Timestamp {
        seconds: unix,
        nanos: 0,
    }
    .to_string();
    s.pop();
    s.push_str(".000000Z");
    s
}

/// `GET /v3/auth/projects` and `GET /v3/projects`: every project, plus IAM's `MOS`.
pub(super) async fn iam_projects(
    State(state): State<RegionState>,
    request: SimRequest,
) -> Response {
    let shared = &state.shared;
    if let Err(r) = shared
        .auth
        .authenticate(&shared.options.auth, &request.parts())
    {
        return iam_error(StatusCode::UNAUTHORIZED, &r.message);
    }
    let (mut name, mut page, mut per_page) = (None, 1usize, 5000usize);
    for (k, v) in form_urlencoded::parse(request.query().unwrap_or_default().as_bytes()) {
        match &*k {
            "name" => name = Some(v.into_owned()),
            "page" => match v.parse() {
                Ok(p) if p >= 1 => page = p,
                _ => return iam_error(StatusCode::BAD_REQUEST, "page must be a positive integer."),
            },
            "per_page" => match v.parse() {
                Ok(p) if (1..=5000).contains(&p) => per_page = p,
                _ => return iam_error(StatusCode::BAD_REQUEST, "per_page must be 1 to 5000."),
            },
            _ => {}
        }
    }
    let parent = format!("{:032x}", 7u128);
    let mut all: Vec<serde_json::Value> = shared
        .data
        .projects
        .iter()
        .filter(|p| p.account == 0)
        .map(|p| json!({"id": p.id, "name": p.name, "enabled": true, "is_domain": false,
                        "domain_id": parent, "parent_id": parent, "description": "", "links": {"self": ""}}))
        .collect();
    all.push(json!({"id": format!("{:032x}", 1u128), "name": "MOS", "enabled": true, "is_domain": false,
                    "domain_id": parent, "parent_id": parent, "description": "", "links": {"self": ""}}));
    let projects: Vec<_> = all
        .into_iter()
        .filter(|p| name.as_deref().is_none_or(|n| p["name"] == n))
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    axum::Json(json!({"links": {"self": "", "previous": null, "next": null}, "projects": projects}))
        .into_response()
}
