//! The simulator's organization (iam-agency.md): agency tokens through `assume_role`, and
//! Organizations' `ListAccounts` with marker paging. Our account is the organization's
//! management account: the domain of the first IAM user the simulator knows. Every member's
//! agency trusts it.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::SimState;
use super::auth::Caller;
use super::data::{SimAccount, SimAgency, SimProject};
use super::http::{RegionState, SimRequest};
use super::iam::{iam_error, iam_time};

/// Why IAM or Organizations refused, answered in IAM's other error shape (`error_msg`,
/// `error_code`), as its agency pages show it.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        Refusal {
            status,
            code,
            message: message.to_owned(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error_msg": self.message, "error_code": self.code});
        (self.status, axum::Json(body)).into_response()
    }
}

/// The management account: the first IAM user's domain.
fn central_domain(shared: &SimState) -> Option<&str> {
    shared.options.auth.users.first().map(|u| u.domain.as_str())
}

/// `POST /v3/auth/tokens` with `assume_role`: a token of a member account's project, for a user
/// of the management account.
pub(super) fn assume_role(shared: &SimState, headers: &HeaderMap, auth: &Value) -> Response {
    let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) else {
        return iam_error(StatusCode::UNAUTHORIZED, "X-Auth-Token is missing.");
    };
    let caller_domain = match shared.auth.user_domain(token) {
        Ok(d) => d,
        Err(r) => return iam_error(StatusCode::UNAUTHORIZED, &r.message),
    };
    let assumed = match assumable(shared, &caller_domain, auth) {
        Ok(assumed) => assumed,
        Err(refused) => return refused.into_response(),
    };
    let Assumed {
        index,
        account,
        agency,
        project,
    } = assumed;
    let (token, issued_at, expires_at) =
        shared
            .auth
            .issue_token(&shared.options.auth, Some(project.id.clone()), None);
    let domain = json!({"id": account.id, "name": account.name});
    let body = json!({"token": {
        "methods": ["assume_role"],
        "issued_at": iam_time(issued_at),
        "expires_at": iam_time(expires_at),
        "user": {"id": format!("{:032x}", index + 1), "name": format!("{}/{}", account.name, agency.name), "domain": domain},
        "project": {"id": project.id, "name": project.name, "domain": domain},
        "roles": [{"id": "0", "name": "ddm_readonly"}],
        "assumed_by": {"user": {"id": "0", "name": "central", "domain": {"id": "0", "name": caller_domain}}},
    }});
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", v);
    }
    response
}

/// What an `assume_role` reaches: a member account, its agency and one of its projects.
struct Assumed<'a> {
    /// The account's index in `DataSet::accounts`.
    index: usize,
    account: &'a SimAccount,
    agency: &'a SimAgency,
    project: &'a SimProject,
}

/// The account, agency and project `auth` asks for, if a user of `caller_domain` may assume
/// the agency there; else IAM's refusal.
fn assumable<'a>(
    shared: &'a SimState,
    caller_domain: &str,
    auth: &Value,
) -> Result<Assumed<'a>, Refusal> {
    let role = &auth["identity"]["assume_role"];
    let Some(agency_name) = role["agency_name"].as_str().or(role["xrole_name"].as_str()) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "IAM.0011",
            "agency_name is missing.",
        ));
    };
    let found = shared.data.accounts.iter().enumerate().find(|(_, a)| {
        role["domain_id"].as_str() == Some(a.id.as_str())
            || role["domain_name"].as_str() == Some(a.name.as_str())
    });
    let Some((index, account)) = found else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "IAM.0004",
            "Could not find the domain.",
        ));
    };
    shared.auth.count_assume(&account.name);
    if Some(caller_domain) != central_domain(shared) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "IAM.0003",
            "Policy doesn't allow iam:agencies:assume to be performed.",
        ));
    }
    if account.status != "active" {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "IAM.0003",
            "The account is suspended.",
        ));
    }
    let Some(agency) = account.agency.as_ref().filter(|a| a.name == agency_name) else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "IAM.0017",
            &format!("Could not find agency {agency_name} in this account."),
        ));
    };
    let project = agency_project(shared, index, agency, &auth["scope"]["project"])?;
    Ok(Assumed {
        index,
        account,
        agency,
        project,
    })
}

/// The member's project that `scope` names, if the agency covers its region.
fn agency_project<'a>(
    shared: &'a SimState,
    index: usize,
    agency: &SimAgency,
    scope: &Value,
) -> Result<&'a SimProject, Refusal> {
    let project = shared
        .data
        .projects
        .iter()
        .filter(|p| p.account as usize == index + 1)
        .find(|p| {
            scope["id"].as_str() == Some(p.id.as_str())
                || scope["name"].as_str() == Some(p.name.as_str())
        });
    let Some(project) = project else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "IAM.0005",
            "Could not find the project.",
        ));
    };
    if agency
        .regions
        .as_ref()
        .is_some_and(|r| !r.contains(&project.region))
    {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "IAM.0003",
            &format!(
                "Policy doesn't allow the agency to act in region {}.",
                project.region
            ),
        ));
    }
    Ok(project)
}

/// Markers name the index of the next account.
fn marker(index: usize) -> String {
    format!("acct-{index:08}")
}

/// `GET /v1/organizations/accounts`: the member accounts, `limit` (at most the simulator's page
/// size) per page, for the management account (a user token or its access key).
pub(super) async fn list_accounts(
    State(state): State<RegionState>,
    request: SimRequest,
) -> Response {
    let shared = &state.shared;
    shared
        .stats
        .organizations_requests
        .fetch_add(1, Ordering::Relaxed);
    if let Err(refused) = may_list_accounts(shared, &request) {
        return refused.into_response();
    }
    let (limit, start) = match paging(request.query().unwrap_or_default()) {
        Ok(paging) => paging,
        Err(refused) => return refused.into_response(),
    };
    let page_size = match shared.options.org_page_size {
        0 => 200,
        n => n,
    };
    let limit = limit.min(page_size);
    let left = shared
        .left
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let members: Vec<&SimAccount> = shared
        .data
        .accounts
        .iter()
        .filter(|a| !left.contains(&a.name))
        .collect();
    let page: Vec<Value> = members
        .iter()
        .skip(start)
        .take(limit)
        .map(|a| {
            json!({"id": a.id, "name": a.name, "urn": format!("organizations::0:account:{}", a.id),
                   "join_method": "created", "status": a.status, "joined_at": "2024-06-01T08:00:00Z"})
        })
        .collect();
    let next = start + page.len();
    let next_marker = (next < members.len()).then(|| marker(next));
    axum::Json(json!({"accounts": page, "page_info": {"next_marker": next_marker, "current_count": page.len()}}))
        .into_response()
}

/// Only the management account may list its members: a user token of its domain, or its
/// access key.
fn may_list_accounts(shared: &SimState, request: &SimRequest) -> Result<(), Refusal> {
    let allowed = match request
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
    {
        Some(token) => shared
            .auth
            .user_domain(token)
            .map(|d| Some(d.as_str()) == central_domain(shared)),
        None => shared
            .auth
            .authenticate(&shared.options.auth, &request.parts())
            .map(|c| matches!(c, Caller::AccessKey)),
    };
    match allowed {
        Err(r) => Err(Refusal::new(StatusCode::UNAUTHORIZED, r.code, &r.message)),
        Ok(false) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Organizations.1001",
            "Only the management account or a delegated administrator may list accounts.",
        )),
        Ok(true) => Ok(()),
    }
}

/// `limit` and `marker`: how many accounts, from which one.
fn paging(query: &str) -> Result<(usize, usize), Refusal> {
    let (mut limit, mut start) = (200usize, 0usize);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "limit" => match v.parse() {
                Ok(n) if (1..=2000).contains(&n) => limit = n,
                _ => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "Organizations.0001",
                        "limit must be 1 to 2000.",
                    ));
                }
            },
            "marker" => match v.strip_prefix("acct-").and_then(|n| n.parse().ok()) {
                Some(n) => start = n,
                None => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "Organizations.0002",
                        "The marker is not valid.",
                    ));
                }
            },
            _ => {}
        }
    }
    Ok((limit, start))
}
