//! IAM tokens: `POST /v3/auth/tokens` for an IAM user's project- or domain-scoped token, and the
//! slot that keeps each one until shortly before it expires, with one fetch in flight (auth.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use super::auth::{
    Credential, IAM_REQUEST_TIMEOUT, IamPassword, X_AUTH_TOKEN, X_REQUEST_ID, header_string,
    sensitive_header, unix_now,
};
use super::error::{DdmError, upstream_error};

/// Where IAM puts the token it issued.
const X_SUBJECT_TOKEN: &str = "x-subject-token";
/// An IAM user's token is renewed at most this long before it expires (a tenth of its life if
/// that is less; agencies have their own margin).
const RENEW_AHEAD: Duration = Duration::from_secs(15 * 60);

pub struct IamToken {
    pub(super) value: SecretString,
    pub(super) refresh_at: Instant,
}

impl IamToken {
    /// A token IAM issued at `issued` (its clock) to expire at `expires`, asked for at
    /// `asked_at` (ours): renewed ahead of expiry by a tenth of its life, at most `most_ahead`,
    /// with jitter so that many projects do not renew at once. Lifetimes are measured by IAM's
    /// own clock (ours may be skewed).
    pub(super) fn new(
        value: SecretString,
        asked_at: Instant,
        issued: Option<i64>,
        expires: i64,
        most_ahead: Duration,
    ) -> Self {
        let lifetime = expires - issued.unwrap_or_else(unix_now);
        let lifetime = Duration::from_secs(lifetime.max(0) as u64);
        let margin = (lifetime / 10)
            .min(most_ahead)
            .mul_f64(1.0 + fastrand::f64() * 0.5);
        IamToken {
            value,
            refresh_at: asked_at + lifetime.saturating_sub(margin),
        }
    }

    pub(super) fn header(&self) -> Result<HeaderValue, String> {
        sensitive_header(self.value.expose_secret())
    }
}

/// A project's cached token, behind an async lock: one fetch in flight per project.
#[derive(Default)]
pub(super) struct TokenSlot {
    pub(super) token: Option<Arc<IamToken>>,
    /// The last failed fetch, shared with the callers that waited for it.
    pub(super) failure: Option<(Instant, DdmError)>,
}

impl TokenSlot {
    /// The slot's token while it is fresh; else one fetch for everyone waiting, whose failure
    /// is shared with those that waited for it (not with those that come after).
    pub(super) async fn fresh_or_fetch<F, Fut>(
        slot: &tokio::sync::Mutex<TokenSlot>,
        fetch: F,
    ) -> Result<Arc<IamToken>, DdmError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<IamToken, DdmError>>,
    {
        let waited_since = Instant::now();
        let mut slot = slot.lock().await;
        if let Some(token) = &slot.token
            && Instant::now() < token.refresh_at
        {
            return Ok(Arc::clone(token));
        }
        if let Some((at, error)) = &slot.failure
            && *at >= waited_since
        {
            return Err(error.clone());
        }
        match fetch().await {
            Ok(token) => {
                let token = Arc::new(token);
                slot.token = Some(Arc::clone(&token));
                slot.failure = None;
                Ok(token)
            }
            Err(e) => {
                slot.token = None;
                slot.failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
}

#[derive(Default)]
pub(super) struct TokenSlots(Mutex<HashMap<String, Arc<tokio::sync::Mutex<TokenSlot>>>>);

impl TokenSlots {
    pub(super) fn slot(&self, scope: &str) -> Arc<tokio::sync::Mutex<TokenSlot>> {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(scope.to_owned()).or_default())
    }
}

/// What a token is scoped to.
pub(super) enum Scope<'a> {
    Project(&'a str),
    /// For listing the user's projects.
    Domain,
}

impl Credential {
    pub(super) async fn iam_token(
        &self,
        http: &reqwest::Client,
        iam: &IamPassword,
        scope: Scope<'_>,
    ) -> Result<Arc<IamToken>, DdmError> {
        let key = match scope {
            Scope::Project(p) => p,
            Scope::Domain => "",
        };
        let slot = iam.tokens.slot(key);
        TokenSlot::fresh_or_fetch(&slot, || self.fetch_iam_token(http, iam, scope)).await
    }

    async fn fetch_iam_token(
        &self,
        http: &reqwest::Client,
        iam: &IamPassword,
        scope: Scope<'_>,
    ) -> Result<IamToken, DdmError> {
        let scope_json = match scope {
            Scope::Project(id) => serde_json::json!({"project": {"id": id}}),
            Scope::Domain => serde_json::json!({"domain": {"name": iam.domain}}),
        };
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"],
                         "password": {"user": {"name": iam.user,
                                               "password": iam.password.expose_secret(),
                                               "domain": {"name": iam.domain}}}},
            "scope": scope_json}});
        let asked_at = Instant::now();
        let TokenAnswer {
            status,
            request_id,
            subject,
            body: bytes,
        } = post_tokens(http, &iam.iam_endpoint, &body, None)
            .await
            .map_err(|e| {
                self.auth_error(
                    format!("IAM at {} did not answer", iam.iam_endpoint),
                    Some(e),
                )
            })?;
        if status != 201 && status != 200 {
            let e = upstream_error(status, &bytes, request_id, None);
            let what = match status {
                401 => format!(
                    "IAM refused the password of user {:?} in domain {:?}",
                    iam.user, iam.domain
                ),
                403 => format!(
                    "IAM does not let user {:?} have a token for this scope",
                    iam.user
                ),
                _ => "IAM could not issue a token".to_owned(),
            };
            return Err(self.auth_error(what, Some(e)));
        }
        let Some(value) = subject else {
            return Err(self.auth_error("IAM answered without an X-Subject-Token header", None));
        };
        let unreadable = |what: String| self.auth_error(format!("IAM's token answer {what}"), None);
        TokenBody::read(&bytes)
            .and_then(|body| body.token(value, asked_at, RENEW_AHEAD))
            .map_err(unreadable)
    }
}

/// The `token` of IAM's answer: when it expires and was issued, and (agency tokens) what it
/// is scoped to.
#[derive(Deserialize)]
pub(super) struct TokenBody {
    expires_at: String,
    issued_at: Option<String>,
    pub project: Option<Named>,
    pub user: Option<Named>,
}

#[derive(Deserialize)]
pub(super) struct Named {
    pub id: Option<String>,
    pub domain: Option<Domain>,
}

#[derive(Deserialize)]
pub(super) struct Domain {
    pub id: Option<String>,
}

impl TokenBody {
    /// The `token` of an answer's body; `Err` says what is wrong with it.
    pub(super) fn read(body: &[u8]) -> Result<TokenBody, String> {
        #[derive(Deserialize)]
        struct Body {
            token: TokenBody,
        }
        serde_json::from_slice::<Body>(body)
            .map(|b| b.token)
            .map_err(|e| format!("is unreadable: {e}"))
    }

    /// The token `value` it describes, renewed up to `most_ahead` before it expires.
    pub(super) fn token(
        &self,
        value: SecretString,
        asked_at: Instant,
        most_ahead: Duration,
    ) -> Result<IamToken, String> {
        let expires: prost_types::Timestamp = self
            .expires_at
            .parse()
            .map_err(|_| "has an expires_at that is not a time".to_owned())?;
        let issued = self
            .issued_at
            .as_deref()
            .and_then(|t| t.parse::<prost_types::Timestamp>().ok())
            .map(|t| t.seconds);
        Ok(IamToken::new(
            value,
            asked_at,
            issued,
            expires.seconds,
            most_ahead,
        ))
    }
}

/// IAM's answer to `POST /v3/auth/tokens`.
pub(super) struct TokenAnswer {
    pub status: u16,
    pub request_id: Option<String>,
    /// The token, from `X-Subject-Token`.
    pub subject: Option<SecretString>,
    pub body: bytes::Bytes,
}

/// `POST {iam_endpoint}/v3/auth/tokens?nocatalog=true` with `body`, sent as `user_token` when
/// one is given (`assume_role`). `Err`: no whole answer.
pub(super) async fn post_tokens(
    http: &reqwest::Client,
    iam_endpoint: &str,
    body: &serde_json::Value,
    user_token: Option<HeaderValue>,
) -> Result<TokenAnswer, DdmError> {
    let mut request = http
        .post(format!("{iam_endpoint}/v3/auth/tokens?nocatalog=true"))
        .timeout(IAM_REQUEST_TIMEOUT)
        .header(CONTENT_TYPE, "application/json;charset=utf8")
        .body(body.to_string());
    if let Some(token) = user_token {
        request = request.header(X_AUTH_TOKEN, token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| DdmError::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let request_id = header_string(response.headers(), X_REQUEST_ID);
    let subject = response
        .headers()
        .get(X_SUBJECT_TOKEN)
        .and_then(|v| v.to_str().ok())
        .map(|v| SecretString::from(v.to_owned()));
    let body = response
        .bytes()
        .await
        .map_err(|e| DdmError::Transport(format!("the answer was cut off: {e}")))?;
    Ok(TokenAnswer {
        status,
        request_id,
        subject,
        body,
    })
}
