//! Fault injection: what a real cloud does to a client on a bad day, per region or per project.
//!
//! The most specific entry applies as a whole: a project's faults, else its region's, else `all`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// Faults for every region, some regions, some projects (`backupgw sim --faults FILE`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    pub all: Faults,
    pub regions: BTreeMap<String, Faults>,
    pub projects: BTreeMap<String, Faults>,
}

impl FaultPlan {
    /// The faults for a project, and the scope they come from (a throttle is per scope).
    pub fn for_project<'a>(
        &'a self,
        region: &'a str,
        project_id: &'a str,
    ) -> (&'a str, &'a Faults) {
        if let Some(f) = self.projects.get(project_id) {
            (project_id, f)
        } else if let Some(f) = self.regions.get(region) {
            (region, f)
        } else {
            ("all", &self.all)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added to the simulator's latency, plus up to `jitter_ms` at random.
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// What goes wrong with a ListBackups request, if anything.
    pub fail_with: Option<FailWith>,
    /// Only the first N requests of each project fail (unset: every one).
    pub fail_count: Option<u64>,
    /// Each project's first N requests are answered normally; failures start after them (a
    /// region that goes bad during the day).
    pub fail_after: u64,
    /// Of the requests that may fail, this fraction does.
    pub fail_rate: f64,
    /// Answers 429 `APIGW.0308` above this many requests a second (per scope).
    pub throttle_rps: Option<f64>,
    pub throttle_burst: u32,
    /// Sent as `Retry-After` (seconds) with 429s; unset: no header.
    pub retry_after_s: Option<u64>,
    /// For `stall`: how long before answering.
    pub stall_ms: u64,
    /// For `slow_body`: the pause between two 64-byte pieces of the body.
    pub slow_body_ms: u64,
    /// For `huge_body`: the body's size.
    pub huge_body_bytes: usize,
    /// For `redirect`: where to.
    pub redirect_to: String,
    /// Churn, at each ListBackups request: new backups appear at the front…
    pub churn_add: u32,
    /// …and the oldest expire.
    pub churn_expire: u32,
    /// The instance list answers 500 `DBS.200412`.
    pub fail_instances: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            jitter_ms: 0,
            fail_with: None,
            fail_count: None,
            fail_after: 0,
            fail_rate: 1.0,
            throttle_rps: None,
            throttle_burst: 1,
            retry_after_s: None,
            stall_ms: 3_600_000,
            slow_body_ms: 1_000,
            huge_body_bytes: 16 << 20,
            redirect_to: "http://127.0.0.1:9/".into(),
            churn_add: 0,
            churn_expire: 0,
            fail_instances: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailWith {
    /// 500 `APIGW.0601`.
    ServerError,
    /// 503 `APIGW.0613`.
    Unavailable,
    /// 502 with a proxy's HTML page.
    BadGatewayHtml,
    /// 504 with a proxy's HTML page.
    GatewayTimeoutHtml,
    /// 400 `DBS.300005` (DDM lists "failed to process the request" as a 400).
    DdmBusy,
    /// 429 `APIGW.0308`.
    Throttled,
    /// 400 `DBS.280001`: not to be retried.
    ParameterError,
    /// The connection is dropped before an answer.
    Reset,
    /// Half the body, then the connection is dropped.
    Truncate,
    /// No answer for `stall_ms`.
    Stall,
    /// 200 with a body that is not JSON.
    MalformedJson,
    /// 200 with JSON of the wrong shape.
    WrongTypes,
    /// 200 with one item whose `created` is not a time.
    BadTimestamp,
    /// 200 with a body of `huge_body_bytes`.
    HugeBody,
    /// 200 with the body trickling in (slow-loris).
    SlowBody,
    /// 302 to `redirect_to` (a moved host, a login page): what a client must not follow.
    Redirect,
}

impl Faults {
    pub fn extra_latency(&self) -> Duration {
        let mut wait = Duration::from_millis(self.latency_ms);
        if self.jitter_ms > 0 {
            wait += Duration::from_millis(fastrand::u64(..=self.jitter_ms));
        }
        wait
    }

    /// Whether request number `n` (from 0) of a project fails.
    pub fn fails(&self, n: u64) -> Option<FailWith> {
        let kind = self.fail_with?;
        let n = n.checked_sub(self.fail_after)?;
        let in_count = self.fail_count.is_none_or(|count| n < count);
        (in_count && fastrand::f64() < self.fail_rate).then_some(kind)
    }

    pub fn throttled(&self, request_id: &str) -> Response {
        let mut response = gateway_error(
            StatusCode::TOO_MANY_REQUESTS,
            "APIGW.0308",
            "The throttling threshold has been reached: policy user over ratelimit,limit:100,time:1 minute",
            request_id,
        );
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// An API gateway error (`APIGW.*`): these carry the request id in the body too.
pub fn gateway_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = json!({"error_msg": message, "error_code": code, "request_id": request_id});
    (status, axum::Json(body)).into_response()
}

/// A DDM error (`DBS.*`).
pub fn ddm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error_code": code, "error_msg": message})),
    )
        .into_response()
}

fn html(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{} {reason}</title></head>\r\n<body>\r\n<center><h1>{} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
        status.as_u16(),
        status.as_u16()
    );
    (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

fn json_body(body: impl Into<Body>, length: Option<usize>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(n) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    response
}

/// A body that sends `head` and then breaks the connection.
fn broken_body(head: Bytes) -> Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(head),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected fault",
        )),
    ];
    Body::from_stream(futures_util::stream::iter(pieces))
}

/// The answer for a request that fails with `kind`; `page` is the JSON it would have had.
pub async fn fail(
    kind: FailWith,
    faults: &Faults,
    page: impl FnOnce() -> serde_json::Value,
    request_id: &str,
) -> Response {
    match kind {
        FailWith::ServerError => gateway_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "APIGW.0601",
            "Internal server error",
            request_id,
        ),
        FailWith::Unavailable => gateway_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "APIGW.0613",
            "IAM unavailable",
            request_id,
        ),
        FailWith::BadGatewayHtml => html(StatusCode::BAD_GATEWAY),
        FailWith::GatewayTimeoutHtml => html(StatusCode::GATEWAY_TIMEOUT),
        FailWith::DdmBusy => ddm_error(
            StatusCode::BAD_REQUEST,
            "DBS.300005",
            "Failed to process the request.",
        ),
        FailWith::Throttled => faults.throttled(request_id),
        FailWith::ParameterError => {
            ddm_error(StatusCode::BAD_REQUEST, "DBS.280001", "Parameter error.")
        }
        FailWith::Reset => json_body(broken_body(Bytes::new()), Some(1024)),
        FailWith::Truncate => {
            let full = page().to_string().into_bytes();
            let half = Bytes::copy_from_slice(&full[..full.len() / 2]);
            json_body(broken_body(half), Some(full.len()))
        }
        FailWith::Stall => {
            tokio::time::sleep(Duration::from_millis(faults.stall_ms)).await;
            json_body(page().to_string(), None)
        }
        FailWith::MalformedJson => {
            let full = page().to_string();
            json_body(
                format!("{}<!-- upstream error -->", &full[..full.len() / 2]),
                None,
            )
        }
        FailWith::WrongTypes => json_body(
            json!({"backups": "none", "total": "many", "offset": 0}).to_string(),
            None,
        ),
        FailWith::BadTimestamp => {
            let mut v = page();
            if let Some(first) = v["backups"].get_mut(0) {
                first["created"] = json!("2025-13-45T99:00:00+0800");
            }
            json_body(v.to_string(), None)
        }
        FailWith::HugeBody => {
            let mut v = page();
            v["padding"] = json!("x".repeat(faults.huge_body_bytes));
            json_body(v.to_string(), None)
        }
        FailWith::Redirect => (
            StatusCode::FOUND,
            [(header::LOCATION, faults.redirect_to.clone())],
        )
            .into_response(),
        FailWith::SlowBody => json_body(
            slow_body(
                Bytes::from(page().to_string()),
                Duration::from_millis(faults.slow_body_ms),
            ),
            None,
        ),
    }
}

/// `full`, 64 bytes at a time, `pause` before each piece.
fn slow_body(full: Bytes, pause: Duration) -> Body {
    let pieces = futures_util::stream::unfold(0usize, move |at| {
        let full = full.clone();
        async move {
            if at >= full.len() {
                return None;
            }
            tokio::time::sleep(pause).await;
            let end = (at + 64).min(full.len());
            Some((Ok::<_, std::io::Error>(full.slice(at..end)), end))
        }
    });
    Body::from_stream(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_entry_applies() {
        let plan: FaultPlan = toml::from_str(
            r#"
            [all]
            latency_ms = 5
            [regions.cn-east-3]
            fail_with = "unavailable"
            fail_rate = 0.5
            [projects.p1]
            churn_add = 1
            "#,
        )
        .unwrap();
        assert_eq!(plan.for_project("cn-north-4", "p0").1.latency_ms, 5);
        assert_eq!(
            plan.for_project("cn-east-3", "p0").1.fail_with,
            Some(FailWith::Unavailable)
        );
        let (scope, f) = plan.for_project("cn-east-3", "p1");
        assert_eq!((scope, f.churn_add, f.fail_with), ("p1", 1, None));
        assert!(toml::from_str::<FaultPlan>("[all]\nfail_with = \"gremlins\"").is_err());
    }

    #[test]
    fn fail_count_limits_failures() {
        let f = Faults {
            fail_with: Some(FailWith::ServerError),
            fail_count: Some(2),
            ..Faults::default()
        };
        assert_eq!(f.fails(0), Some(FailWith::ServerError));
        assert_eq!(f.fails(1), Some(FailWith::ServerError));
        assert_eq!(f.fails(2), None);
        assert_eq!(Faults::default().fails(0), None);
    }

    #[test]
    fn fail_after_spares_the_first_requests() {
        let f = Faults {
            fail_with: Some(FailWith::ServerError),
            fail_after: 3,
            fail_count: Some(1),
            ..Faults::default()
        };
        assert_eq!(f.fails(2), None);
        assert_eq!(f.fails(3), Some(FailWith::ServerError));
        assert_eq!(f.fails(4), None);
    }
}
