//! Credentials for the upstream: how one request gets authorised (auth.md).
//!
//! - a static token, sent as `X-Auth-Token`;
//! - an IAM user and password: a project-scoped token from `POST /v3/auth/tokens`, cached until
//!   shortly before it expires, one fetch in flight per project, renewed once on rejection
//!   (`token.rs`);
//! - an access key: every request signed with `SDK-HMAC-SHA256`;
//! - an agency into a member account: a token of that account's project, obtained with a user
//!   token of the central account (`agency.rs`).
//!
//! Secrets live in `SecretString` and in header values marked sensitive; `Debug` shows names only.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::{DdmError, upstream_error};
use super::sign;
use super::standing::Standing;
use super::token::{IamToken, Scope, TokenSlots};

pub(super) const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
const X_SDK_DATE: HeaderName = HeaderName::from_static("x-sdk-date");

/// One IAM request, answer included: start-up and discovery never hang on IAM.
pub(super) const IAM_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The global IAM endpoint, used when a credential names none.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iam.myhuaweicloud.com";

/// A named credential from the configuration.
pub struct Credential {
    name: String,
    kind: CredentialKind,
    standing: Standing,
}

pub enum CredentialKind {
    /// A static token sent as `X-Auth-Token`.
    Token(SecretString),
    /// An IAM user; tokens are obtained per project.
    IamPassword(IamPassword),
    /// An access key pair; requests are signed.
    AccessKey(AccessKey),
    /// One project of a member account, reached through its agency.
    Agency(super::agency::Agency),
}

pub struct IamPassword {
    pub iam_endpoint: String,
    pub domain: String,
    pub user: String,
    pub password: SecretString,
    pub(super) tokens: TokenSlots,
}

impl IamPassword {
    pub fn new(iam_endpoint: String, domain: String, user: String, password: SecretString) -> Self {
        IamPassword {
            iam_endpoint,
            domain,
            user,
            password,
            tokens: TokenSlots::default(),
        }
    }
}

pub struct AccessKey {
    pub iam_endpoint: String,
    pub access_key: String,
    pub secret_key: SecretString,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Credential");
        d.field("name", &self.name);
        match &self.kind {
            CredentialKind::Token(_) => d.field("kind", &"token"),
            CredentialKind::IamPassword(p) => d
                .field("kind", &"iam_password")
                .field("domain", &p.domain)
                .field("user", &p.user),
            CredentialKind::AccessKey(k) => {
                d.field("kind", &"aksk").field("access_key", &k.access_key)
            }
            CredentialKind::Agency(a) => d
                .field("kind", &"agency")
                .field("account", &a.account)
                .field("agency", &a.agency)
                .field("project", &a.project),
        };
        d.finish_non_exhaustive()
    }
}

/// What was used to authorise one request, so that a rejection renews exactly that token.
pub enum Authorized {
    Static,
    IamToken(Arc<IamToken>),
    Signed,
}

impl Credential {
    pub fn new(name: impl Into<String>, kind: CredentialKind) -> Self {
        // Tokens are not locked upstream; passwords and access keys are.
        let guarded = !matches!(kind, CredentialKind::Token(_) | CredentialKind::Agency(_));
        Credential {
            name: name.into(),
            kind,
            standing: Standing::new(guarded),
        }
    }

    /// How long the credential rests after the upstream rejected it.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.standing.set_cooldown(cooldown);
        self
    }

    pub fn standing(&self) -> &Standing {
        &self.standing
    }

    /// Until when the credential is cooling down after an authentication failure.
    pub fn failing_until(&self) -> Option<SystemTime> {
        self.standing.failing().map(|(until, _)| until)
    }

    /// The error for a request not sent because the credential is cooling down.
    pub fn cooling_down(&self, until: SystemTime, cause: &DdmError) -> DdmError {
        let until = prost_types::Timestamp::from(until);
        DdmError::Auth {
            credential: self.name.clone(),
            message: format!(
                "not used until {until} after an authentication failure (a reload lifts this): {cause}"
            ),
            upstream: match cause {
                DdmError::Upstream { .. } => Some(Box::new(cause.clone())),
                other => other.upstream_cause().cloned().map(Box::new),
            },
        }
    }

    /// An upstream answer that rejects the credential itself, as an `Auth` error naming it.
    pub fn explain(&self, error: DdmError) -> DdmError {
        match error {
            DdmError::Upstream {
                status: 401,
                ref message,
                ..
            } => DdmError::Auth {
                credential: self.name.clone(),
                message: format!(
                    "the upstream rejected this {} credential: {message}",
                    self.kind_name()
                ),
                upstream: Some(Box::new(error)),
            },
            other => other,
        }
    }

    pub fn token(name: impl Into<String>, token: SecretString) -> Self {
        Self::new(name, CredentialKind::Token(token))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            CredentialKind::Token(_) => "token",
            CredentialKind::IamPassword(_) => "iam_password",
            CredentialKind::AccessKey(_) => "aksk",
            CredentialKind::Agency(_) => "agency",
        }
    }

    pub fn kind(&self) -> &CredentialKind {
        &self.kind
    }

    pub(super) fn auth_error(
        &self,
        message: impl Into<String>,
        upstream: Option<DdmError>,
    ) -> DdmError {
        DdmError::Auth {
            credential: self.name.clone(),
            message: message.into(),
            upstream: upstream.map(Box::new),
        }
    }

    /// Adds what proves who we are to a request for `project_id` (None: an IAM request).
    pub async fn authorize(
        &self,
        http: &reqwest::Client,
        request: &mut reqwest::Request,
        project_id: Option<&str>,
    ) -> Result<Authorized, DdmError> {
        match &self.kind {
            CredentialKind::Token(token) => {
                let value = sensitive_header(token.expose_secret())
                    .map_err(|m| self.auth_error(m, None))?;
                request.headers_mut().insert(X_AUTH_TOKEN, value);
                Ok(Authorized::Static)
            }
            CredentialKind::IamPassword(iam) => {
                let scope = match project_id {
                    Some(p) => Scope::Project(p),
                    None => Scope::Domain,
                };
                let token = self.iam_token(http, iam, scope).await?;
                let value = sensitive_header(token.value.expose_secret())
                    .map_err(|m| self.auth_error(m, None))?;
                request.headers_mut().insert(X_AUTH_TOKEN, value);
                Ok(Authorized::IamToken(token))
            }
            CredentialKind::AccessKey(key) => {
                sign_request(request, key, unix_now()).map_err(|m| self.auth_error(m, None))?;
                Ok(Authorized::Signed)
            }
            CredentialKind::Agency(agency) => {
                let token = self.agency_token(http, agency).await?;
                let value = token.header().map_err(|m| self.auth_error(m, None))?;
                request.headers_mut().insert(X_AUTH_TOKEN, value);
                Ok(Authorized::IamToken(token))
            }
        }
    }

    /// A token of this IAM user's own domain (what assumes agencies and lists accounts).
    pub async fn user_token(&self, http: &reqwest::Client) -> Result<Arc<IamToken>, DdmError> {
        match &self.kind {
            CredentialKind::IamPassword(iam) => self.iam_token(http, iam, Scope::Domain).await,
            _ => Err(self.auth_error(
                format!(
                    "assuming an agency takes an IAM user's token; this credential is {}",
                    self.kind_name()
                ),
                None,
            )),
        }
    }

    /// The upstream rejected `used`: whether a second try with a fresh token makes sense. Only
    /// the token that was rejected is dropped, so concurrent rejections renew it once.
    pub async fn refresh_after_rejection(
        &self,
        project_id: Option<&str>,
        used: &Authorized,
    ) -> bool {
        let Authorized::IamToken(rejected) = used else {
            // A static token cannot be renewed by us; AK/SK must never be retried (lockout).
            return false;
        };
        let slot = match &self.kind {
            CredentialKind::IamPassword(iam) => iam.tokens.slot(project_id.unwrap_or("")),
            CredentialKind::Agency(agency) => agency.slot(),
            _ => return false,
        };
        let mut slot = slot.lock().await;
        if slot
            .token
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, rejected))
        {
            slot.token = None;
        }
        true
    }

    /// A GET of a global service (IAM, Organizations) as this credential's user: the status,
    /// `X-Request-Id` and the body.
    pub(super) async fn get_as_user(
        &self,
        http: &reqwest::Client,
        url: &str,
    ) -> Result<(u16, Option<String>, bytes::Bytes), DdmError> {
        let mut request = http
            .get(url)
            .timeout(IAM_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| DdmError::Transport(e.to_string()))?;
        self.authorize(http, &mut request, None).await?;
        let response = http
            .execute(request)
            .await
            .map_err(|e| DdmError::Transport(format!("{url} did not answer: {e}")))?;
        let status = response.status().as_u16();
        let request_id = header_string(response.headers(), X_REQUEST_ID);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| DdmError::Transport(e.to_string()))?;
        Ok((status, request_id, bytes))
    }

    /// The projects this credential's user may access (`GET /v3/auth/projects`).
    pub async fn list_projects(&self, http: &reqwest::Client) -> Result<Vec<IamProject>, DdmError> {
        let endpoint = match &self.kind {
            CredentialKind::IamPassword(p) => &p.iam_endpoint,
            CredentialKind::AccessKey(k) => &k.iam_endpoint,
            CredentialKind::Token(_) | CredentialKind::Agency(_) => DEFAULT_IAM_ENDPOINT,
        };
        let (status, request_id, bytes) = self
            .get_as_user(http, &format!("{endpoint}/v3/auth/projects"))
            .await?;
        if !(200..300).contains(&status) {
            return Err(self.auth_error(
                "IAM would not list the projects",
                Some(upstream_error(status, &bytes, request_id, None)),
            ));
        }
        #[derive(Deserialize)]
        struct Projects {
            projects: Vec<IamProject>,
        }
        let parsed: Projects = serde_json::from_slice(&bytes).map_err(|e| DdmError::Decode {
            status,
            message: format!("not a project list: {e}"),
            request_id,
        })?;
        Ok(parsed.projects)
    }
}

/// A project as IAM lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct IamProject {
    pub id: String,
    pub name: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// The request id every Huawei Cloud answer carries (quoted in errors).
pub(super) const X_REQUEST_ID: &str = "x-request-id";

pub(super) fn header_string(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signs a request as the SDK does: `Host`, `X-Sdk-Date` and every header already set (such as
/// `X-Project-Id`) are signed; the `Authorization` header carries the signature.
fn sign_request(request: &mut reqwest::Request, key: &AccessKey, now: i64) -> Result<(), String> {
    let url = request.url();
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err("the request has no host".into()),
    };
    let date = sign::sdk_date(now);
    let headers = request.headers_mut();
    headers.insert(
        HOST,
        HeaderValue::from_str(&host).map_err(|_| "the host is not a valid header")?,
    );
    headers.insert(
        X_SDK_DATE,
        HeaderValue::from_str(&date).map_err(|_| "bad date")?,
    );
    let signable = sign::signable_headers(
        request
            .headers()
            .iter()
            .filter(|(name, _)| *name != AUTHORIZATION)
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    );
    let body = request
        .body()
        .and_then(|b| b.as_bytes())
        .unwrap_or_default();
    let canonical = sign::Canonical {
        method: request.method().as_str(),
        path: request.url().path(),
        query: request.url().query().unwrap_or_default(),
        headers: &signable,
        body,
    };
    let signature = sign::signature(
        key.secret_key.expose_secret().as_bytes(),
        &canonical.string_to_sign(&date),
    );
    let value = sensitive_header(&sign::authorization(
        &key.access_key,
        &canonical.signed_headers(),
        &signature,
    ))?;
    request.headers_mut().insert(AUTHORIZATION, value);
    Ok(())
}

/// A header value marked sensitive (so hyper and reqwest never print it).
pub fn sensitive_header(secret: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(secret)
        .map_err(|_| "the secret contains characters not allowed in an HTTP header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_a_request_matches_vector_a() {
        // Vector A, sent to the real host: Host, X-Project-Id and X-Sdk-Date signed.
        let pid = "0123456789abcdef0123456789abcdef";
        let key = AccessKey {
            iam_endpoint: String::new(),
            access_key: "HPUAEXAMPLEAKEXAMPLE".into(),
            secret_key: SecretString::from("ExampleSecretKey0123456789abcdefghijklmn"),
        };
        super::super::client::install_crypto_provider();
        let client = reqwest::Client::builder().build().unwrap();
        let mut request = client
            .get(format!(
                "https://ddm.cn-north-4.myhuaweicloud.com/v3/{pid}/backups?limit=128&offset=0"
            ))
            .header("x-project-id", pid)
            .build()
            .unwrap();
        sign_request(&mut request, &key, 1_739_933_420).unwrap();
        let auth = request.headers()[AUTHORIZATION].to_str().unwrap();
        assert_eq!(
            auth,
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKEXAMPLE, SignedHeaders=host;x-project-id;x-sdk-date, Signature=a9e5bd9e2eecd99ca5f7810c5f43b572932acc4ae543d77e37d40ab6e8abd1ba"
        );
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
        // A non-default port is part of the signed host.
        let mut request = client
            .get("http://127.0.0.1:8080/v3/x/backups")
            .build()
            .unwrap();
        sign_request(&mut request, &key, 1_739_933_420).unwrap();
        assert_eq!(request.headers()[HOST], "127.0.0.1:8080");
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credential::new(
            "ops",
            CredentialKind::IamPassword(IamPassword::new(
                "https://iam".into(),
                "acme".into(),
                "bob".into(),
                SecretString::from("hunter2"),
            )),
        );
        let k = Credential::new(
            "keys",
            CredentialKind::AccessKey(AccessKey {
                iam_endpoint: String::new(),
                access_key: "AK1".into(),
                secret_key: SecretString::from("s3cr3t"),
            }),
        );
        let text = format!(
            "{c:?} {k:?} {:?}",
            Credential::token("t", SecretString::from("tok3n"))
        );
        assert!(
            !text.contains("hunter2") && !text.contains("s3cr3t") && !text.contains("tok3n"),
            "{text}"
        );
        assert!(text.contains("bob") && text.contains("AK1"), "{text}");
    }
}
