//! The DDM client: where a request leaves for the upstream. Builds `GET /v3/{project}/backups`,
//! authorises it, sends it with a time limit, retries what errors.md says to retry, and decodes
//! the answer strictly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::rate::Pace;

use super::auth::{Authorized, Credential, X_REQUEST_ID, header_string};
use super::error::{DdmError, shorten, upstream_error};
use super::model::decode_page;
pub use super::retry::RetryPolicy;
use super::retry::{retry_reason, throttled};
use super::sign::canonical_query;
use crate::wire::{EncodedPage, Owner};

/// The most the upstream serves in one page.
pub const MAX_PAGE_SIZE: u32 = 128;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time for one attempt: connect, send, and read the whole body.
    pub request_timeout: Duration,
    /// Larger bodies are refused (a page of 128 backups is about 64 KiB).
    pub max_body_bytes: usize,
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 8 << 20,
            retry: RetryPolicy::default(),
        }
    }
}

/// Filters the upstream applies itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Pushdown {
    pub instance_id: String,
    pub instance_name: String,
    pub backup_name: String,
}

/// One page to read.
pub struct PageRequest<'a> {
    /// `scheme://host[:port]`, no trailing slash.
    pub endpoint: &'a str,
    /// Whose backups these are: its project id is in the URL, and all of it is written into
    /// every backup of the page.
    pub owner: Owner<'a>,
    pub pushdown: &'a Pushdown,
    pub offset: u64,
    pub limit: u32,
    /// The caller's deadline: no attempt or backoff runs past it.
    pub deadline: Option<Instant>,
    /// Counts the HTTP requests actually sent.
    pub sent: &'a AtomicU64,
    /// What each attempt waits for before it is sent.
    pub gate: Gate<'a>,
    /// Set to the end of a backoff (Unix milliseconds) while one is waited out.
    pub backoff_until: Option<&'a AtomicU64>,
}

impl<'a> PageRequest<'a> {
    fn call(&self) -> Call<'a> {
        Call {
            url: page_url(self),
            project_id: self.owner.project_id,
            region: self.owner.region,
            offset: self.offset,
            deadline: self.deadline,
            sent: self.sent,
            gate: self.gate,
            backoff_until: self.backoff_until,
        }
    }
}

/// One upstream GET (a page of backups or of instances): where, for which project, under
/// which limits.
pub struct Call<'a> {
    pub url: String,
    pub project_id: &'a str,
    pub region: &'a str,
    /// For the log.
    pub offset: u64,
    /// The caller's deadline: no attempt or backoff runs past it.
    pub deadline: Option<Instant>,
    /// Counts the HTTP requests actually sent.
    pub sent: &'a AtomicU64,
    /// What each attempt waits for before it is sent.
    pub gate: Gate<'a>,
    /// Set to the end of a backoff (Unix milliseconds) while one is waited out.
    pub backoff_until: Option<&'a AtomicU64>,
}

/// Reads a successful body into what was asked for; `Err` says what is wrong with it.
pub type Decoder<'d, T> = &'d (dyn Fn(&[u8]) -> Result<T, String> + Sync);

/// What an attempt holds while it is in flight, and released while it backs off: a slot of
/// the global limit, a slot of its region's limit, and its turn in the region's request rate.
#[derive(Clone, Copy, Default)]
pub struct Gate<'a> {
    pub global: Option<&'a Semaphore>,
    pub region: Option<&'a Semaphore>,
    pub pace: Option<&'a Pace>,
}

impl Gate<'_> {
    async fn enter(
        &self,
    ) -> Result<(Option<SemaphorePermit<'_>>, Option<SemaphorePermit<'_>>), DdmError> {
        let closed = |_| DdmError::Transport("the gateway is shutting down".into());
        // Region first: a throttled region must not hold global slots while it waits.
        let region = match self.region {
            Some(s) => Some(s.acquire().await.map_err(closed)?),
            None => None,
        };
        if let Some(pace) = self.pace {
            pace.take().await;
        }
        let global = match self.global {
            Some(s) => Some(s.acquire().await.map_err(closed)?),
            None => None,
        };
        Ok((region, global))
    }
}

#[derive(Clone)]
pub struct DdmClient {
    http: reqwest::Client,
    options: ClientOptions,
    metrics: Option<Metrics>,
}

const X_PROJECT_ID: HeaderName = HeaderName::from_static("x-project-id");

impl DdmClient {
    /// One client (one connection pool) serves every target.
    pub fn new(options: ClientOptions) -> Result<Self, DdmError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("backupgw/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            // The APIs never redirect. Following one would send the credential (an
            // `X-Auth-Token`, which no redirect policy strips, or the IAM password in a re-sent
            // POST body) wherever the answer pointed: a redirect is an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DdmError::Transport(format!("cannot build the HTTP client: {e}")))?;
        Ok(DdmClient {
            http,
            options,
            metrics: None,
        })
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Reads one page of backups, retrying transient failures.
    pub async fn list_backups(
        &self,
        page: &PageRequest<'_>,
        credential: &Credential,
    ) -> Result<EncodedPage, DdmError> {
        let owner = page.owner;
        let decode = |body: &[u8]| decode_page(body, owner).map_err(|e| e.to_string());
        self.get(&page.call(), credential, &decode).await
    }

    /// One GET, retrying transient failures. A credential the upstream rejects rests for its
    /// cool-down (see `standing`); its requests are answered at once meanwhile.
    pub async fn get<T>(
        &self,
        call: &Call<'_>,
        credential: &Credential,
        decode: Decoder<'_, T>,
    ) -> Result<T, DdmError> {
        let admitted = credential.standing().admit();
        let admission = match call.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, admitted)
                .await
                .map_err(|_| DdmError::DeadlineExceeded)?,
            None => admitted.await,
        };
        let _admission =
            admission.map_err(|(until, cause)| credential.cooling_down(until, &cause))?;
        let result = self.read(call, credential, decode).await;
        match &result {
            Ok(_) => credential.standing().accepted(),
            Err(e) if e.rejects_credential() => {
                tracing::warn!(
                    credential = credential.name(),
                    project = call.project_id,
                    error = %e,
                    "the upstream rejected the credential; it rests for its cool-down"
                );
                credential.standing().rejected(e);
            }
            Err(_) => {}
        }
        result.map_err(|e| credential.explain(e))
    }

    async fn read<T>(
        &self,
        call: &Call<'_>,
        credential: &Credential,
        decode: Decoder<'_, T>,
    ) -> Result<T, DdmError> {
        let retry = &self.options.retry;
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let (error, used) = match self.attempt(call, credential, decode).await {
                Ok(decoded) => return Ok(decoded),
                Err(e) => e,
            };
            if error.is_token_rejected()
                && !refreshed
                && let Some(used) = used
                && credential
                    .refresh_after_rejection(Some(call.project_id), &used)
                    .await
            {
                refreshed = true;
                tracing::info!(
                    project = call.project_id,
                    credential = credential.name(),
                    "token rejected, renewing it once"
                );
                continue;
            }
            if !error.is_retryable() || attempt >= retry.max_attempts {
                return Err(error);
            }
            // A wait the upstream asks for that we may not give: say so rather than wait.
            if let Some(advised) = error.retry_after()
                && advised > retry.max_delay
            {
                return Err(throttled(
                    error,
                    advised,
                    format!(
                        "the {} s this gateway waits (retry_max_delay_ms)",
                        retry.max_delay.as_secs_f64()
                    ),
                ));
            }
            let wait = retry.delay(attempt, &error);
            if let Some(deadline) = call.deadline
                && Instant::now() + wait >= deadline
            {
                return Err(match error.retry_after() {
                    Some(advised) => {
                        throttled(error, advised, "the caller's deadline leaves".into())
                    }
                    None => error,
                });
            }
            tracing::debug!(project = call.project_id, offset = call.offset, attempt, ?wait, %error, "retrying");
            if let Some(metrics) = &self.metrics {
                metrics.upstream_retry(call.region, retry_reason(&error));
            }
            if let Some(until) = call.backoff_until {
                until.store(unix_millis(SystemTime::now() + wait), Ordering::Relaxed);
            }
            tokio::time::sleep(wait).await;
            if let Some(until) = call.backoff_until {
                until.store(0, Ordering::Relaxed);
            }
        }
    }

    /// One attempt; on failure, also what authorised it (to renew exactly that token). Waiting
    /// for a slot or a token is bounded by the caller's deadline; `request_timeout` bounds the
    /// exchange with the upstream alone.
    async fn attempt<T>(
        &self,
        call: &Call<'_>,
        credential: &Credential,
        decode: Decoder<'_, T>,
    ) -> Result<T, (DdmError, Option<Authorized>)> {
        let mut request = self.request(call).map_err(|e| (e, None))?;
        let entered = async {
            let permits = call.gate.enter().await?;
            let authorized = credential
                .authorize(&self.http, &mut request, Some(call.project_id))
                .await?;
            Ok::<_, DdmError>((permits, authorized))
        };
        let entered = match call.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, entered)
                .await
                .unwrap_or(Err(DdmError::DeadlineExceeded)),
            None => entered.await,
        };
        let (_permits, authorized) = entered.map_err(|e| (e, None))?;
        let timeout = self.timeout(call).map_err(|e| (e, None))?;
        call.sent.fetch_add(1, Ordering::Relaxed);
        let max_body = self.options.max_body_bytes;
        let mut answered: Option<u16> = None;
        let started = Instant::now();
        let exchange = async {
            let response = self.http.execute(request).await.map_err(transport_error)?;
            let status = response.status().as_u16();
            answered = Some(status);
            let (request_id, retry_after) = request_id_and_retry_after(response.headers());
            let body = read_body(response, max_body).await.map_err(|e| match e {
                BodyError::TooLarge(message) => DdmError::Decode {
                    status,
                    message,
                    request_id: request_id.clone(),
                },
                // A cut-off body is a transport failure: asking again may well work.
                BodyError::Cut(message) => DdmError::Transport(message),
            })?;
            if !(200..300).contains(&status) {
                return Err(upstream_error(status, &body, request_id, retry_after));
            }
            decode(&body).map_err(|e| DdmError::Decode {
                status,
                message: format!("{e}; body starts: {}", shorten(&body)),
                request_id,
            })
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) if call.deadline.is_some_and(|d| Instant::now() >= d) => {
                Err(DdmError::DeadlineExceeded)
            }
            Err(_) => Err(DdmError::Timeout(timeout)),
        };
        if let Some(metrics) = &self.metrics {
            metrics.upstream_request(call.region, answered, started.elapsed());
        }
        result.map_err(|e| (e, Some(authorized)))
    }

    /// The GET of `call`, with its project's header.
    fn request(&self, call: &Call<'_>) -> Result<reqwest::Request, DdmError> {
        let mut request = self
            .http
            .get(&call.url)
            .build()
            .map_err(|e| DdmError::Transport(format!("cannot build the request: {e}")))?;
        let project = HeaderValue::from_str(call.project_id)
            .map_err(|_| DdmError::Transport("the project id is not a valid header".into()))?;
        request.headers_mut().insert(X_PROJECT_ID, project);
        Ok(request)
    }

    /// How long the exchange may take: `request_timeout`, or less when the deadline is nearer.
    fn timeout(&self, call: &Call<'_>) -> Result<Duration, DdmError> {
        let timeout = self.options.request_timeout;
        match call.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(DdmError::DeadlineExceeded);
                }
                Ok(timeout.min(left))
            }
            None => Ok(timeout),
        }
    }
}

/// What an answer's headers say: its request id (for errors) and `Retry-After` (seconds).
fn request_id_and_retry_after(headers: &HeaderMap) -> (Option<String>, Option<Duration>) {
    let request_id = header_string(headers, X_REQUEST_ID);
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    (request_id, retry_after)
}

/// Installs the rustls crypto provider (ring) once per process: reqwest panics without one.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The URL with its query in canonical order, as the official SDK sends it (and AK/SK signs it).
fn page_url(page: &PageRequest<'_>) -> String {
    let offset = page.offset.to_string();
    let limit = page.limit.to_string();
    let mut pairs = vec![("offset", offset.as_str()), ("limit", limit.as_str())];
    for (key, value) in [
        ("instance_id", &page.pushdown.instance_id),
        ("instance_name", &page.pushdown.instance_name),
        ("backup_name", &page.pushdown.backup_name),
    ] {
        if !value.is_empty() {
            pairs.push((key, value));
        }
    }
    format!(
        "{}/v3/{}/backups?{}",
        page.endpoint,
        page.owner.project_id,
        canonical_query(pairs)
    )
}

enum BodyError {
    TooLarge(String),
    Cut(String),
}

/// The whole body, at most `max` bytes. A body that arrived in one piece is used as it is; one
/// in several pieces is joined once.
async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Bytes, BodyError> {
    let expected = response.content_length().unwrap_or(0) as usize;
    if expected > max {
        return Err(BodyError::TooLarge(format!(
            "the body is {expected} bytes, more than the {max} allowed"
        )));
    }
    let too_large =
        || BodyError::TooLarge(format!("the body is more than the {max} bytes allowed"));
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Cut(format!("the body was cut off: {}", error_chain(&e))))?
    {
        let so_far = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if so_far + chunk.len() > max {
            return Err(too_large());
        }
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.reserve(expected.max(earlier.len() + chunk.len()));
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn transport_error(e: reqwest::Error) -> DdmError {
    DdmError::Transport(error_chain(&e))
}

/// "error sending request: connection refused": reqwest's own message hides the cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_canonical_query() {
        let sent = AtomicU64::new(0);
        let pushdown = Pushdown {
            instance_name: "ddm a/b".into(),
            ..Default::default()
        };
        let page = PageRequest {
            endpoint: "http://127.0.0.1:1",
            owner: Owner {
                project_id: "0123456789abcdef0123456789abcdef",
                region: "r",
                ..Owner::default()
            },
            pushdown: &pushdown,
            offset: 256,
            limit: 128,
            deadline: None,
            sent: &sent,
            gate: Gate::default(),
            backoff_until: None,
        };
        assert_eq!(
            page_url(&page),
            "http://127.0.0.1:1/v3/0123456789abcdef0123456789abcdef/backups?instance_name=ddm%20a%2Fb&limit=128&offset=256"
        );
    }
}
