//! The simulator's side of auth.md: IAM users and their tokens, static tokens, and AK/SK
//! verification with the API gateway's lockout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, Uri};
use secrecy::{ExposeSecret, SecretString};

use crate::ddm::sign;

/// An IAM user the simulator knows.
#[derive(Clone)]
pub struct SimUser {
    pub domain: String,
    pub name: String,
    pub password: SecretString,
}

/// An access key pair the simulator knows.
#[derive(Clone)]
pub struct SimKey {
    pub access_key: String,
    pub secret_key: SecretString,
}

/// Auth settings of the simulator.
#[derive(Clone)]
pub struct AuthOptions {
    /// Static tokens accepted in `X-Auth-Token` for every project.
    pub tokens: Vec<SecretString>,
    pub users: Vec<SimUser>,
    pub keys: Vec<SimKey>,
    /// How long an IAM token lives (24 h upstream).
    pub token_lifetime: Duration,
    /// Consecutive signature failures an access key may have before it is locked.
    pub lockout_failures: u32,
    pub lockout_duration: Duration,
    /// How far `X-Sdk-Date` may be from the simulator's clock.
    pub max_clock_skew: Duration,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            tokens: Vec::new(),
            users: Vec::new(),
            keys: Vec::new(),
            token_lifetime: Duration::from_secs(24 * 3600),
            lockout_failures: 5,
            lockout_duration: Duration::from_secs(5 * 60),
            max_clock_skew: Duration::from_secs(15 * 60),
        }
    }
}

/// Why a request was refused: the gateway's 401 `APIGW.0301` / `APIGW.0307` messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    fn incorrect(detail: &str) -> Self {
        Rejection {
            status: 401,
            code: "APIGW.0301",
            message: format!("Incorrect IAM authentication information: {detail}"),
        }
    }
}

/// A token IAM issued.
struct Issued {
    /// `None`: scoped to the user's domain.
    project: Option<String>,
    /// The IAM user's domain; `None` for agency tokens (which cannot assume agencies).
    user_domain: Option<String>,
    valid_until: Instant,
}

#[derive(Default)]
struct KeyState {
    consecutive_failures: u32,
    locked_until: Option<Instant>,
}

#[derive(Default)]
pub(super) struct AuthState {
    tokens: Mutex<HashMap<String, Issued>>,
    /// Tokens issued per scope (project id, or "" for domain tokens).
    issued: Mutex<HashMap<String, u64>>,
    /// `assume_role` requests per member account name.
    assumes: Mutex<HashMap<String, u64>>,
    keys: Mutex<HashMap<String, KeyState>>,
    /// Every token issued and signature received, so tests can look for them where they must
    /// not be (logs, errors).
    seen: Mutex<Vec<String>>,
}

/// What identifies the caller of one request.
pub(super) enum Caller {
    /// A static token or an IAM token for `scope` (None: domain-scoped).
    Token {
        scope: Option<String>,
    },
    Static,
    AccessKey,
}

pub(super) struct RequestParts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AuthState {
    pub fn issue_token(
        &self,
        options: &AuthOptions,
        project: Option<String>,
        user_domain: Option<String>,
    ) -> (String, i64, i64) {
        let token = format!(
            "MIIT{}",
            (0..24)
                .map(|_| format!("{:032x}", fastrand::u128(..)))
                .collect::<String>()
        );
        let issued_at = unix_now();
        let lifetime = options.token_lifetime;
        let expires_at = issued_at + lifetime.as_secs() as i64;
        *lock(&self.issued)
            .entry(project.clone().unwrap_or_default())
            .or_default() += 1;
        // Issued tokens are secrets too: the leak tests look for them.
        lock(&self.seen).push(token.clone());
        lock(&self.tokens).insert(
            token.clone(),
            Issued {
                project,
                user_domain,
                valid_until: Instant::now() + lifetime,
            },
        );
        (token, issued_at, expires_at)
    }

    pub(super) fn count_assume(&self, account: &str) {
        *lock(&self.assumes).entry(account.to_owned()).or_default() += 1;
    }

    pub fn assume_requests(&self, account: &str) -> u64 {
        lock(&self.assumes).get(account).copied().unwrap_or(0)
    }

    /// The domain of the IAM user whose live token this is (agency tokens have none).
    pub(super) fn user_domain(&self, token: &str) -> Result<String, Rejection> {
        let tokens = lock(&self.tokens);
        let issued = tokens
            .get(token)
            .ok_or_else(|| Rejection::incorrect("decrypt token fail"))?;
        if Instant::now() >= issued.valid_until {
            return Err(Rejection {
                status: 401,
                code: "APIGW.0307",
                message: "The token must be updated".into(),
            });
        }
        issued
            .user_domain
            .clone()
            .ok_or_else(|| Rejection::incorrect("an agency token cannot do this"))
    }

    pub fn tokens_issued(&self, scope: &str) -> u64 {
        lock(&self.issued).get(scope).copied().unwrap_or(0)
    }

    pub fn secrets_seen(&self) -> Vec<String> {
        lock(&self.seen).clone()
    }

    /// Makes every IAM token issued so far expired.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in lock(&self.tokens).values_mut() {
            t.valid_until = now;
        }
    }

    /// Who is calling, by `Authorization` (AK/SK) or `X-Auth-Token`.
    pub fn authenticate(
        &self,
        options: &AuthOptions,
        request: &RequestParts<'_>,
    ) -> Result<Caller, Rejection> {
        if let Some(auth) = request.headers.get("authorization") {
            let auth = auth
                .to_str()
                .map_err(|_| Rejection::incorrect("verify aksk signature fail"))?;
            self.verify_signed(options, auth, request)?;
            return Ok(Caller::AccessKey);
        }
        let Some(token) = request.headers.get("x-auth-token") else {
            return Err(Rejection::incorrect("x-auth-token not found"));
        };
        if options
            .tokens
            .iter()
            .any(|t| t.expose_secret().as_bytes() == token.as_bytes())
        {
            return Ok(Caller::Static);
        }
        let token = token.to_str().unwrap_or_default();
        let tokens = lock(&self.tokens);
        let Some(issued) = tokens.get(token) else {
            return Err(Rejection::incorrect("decrypt token fail"));
        };
        if Instant::now() >= issued.valid_until {
            return Err(Rejection {
                status: 401,
                code: "APIGW.0307",
                message: "The token must be updated".into(),
            });
        }
        Ok(Caller::Token {
            scope: issued.project.clone(),
        })
    }

    fn verify_signed(
        &self,
        options: &AuthOptions,
        authorization: &str,
        request: &RequestParts<'_>,
    ) -> Result<(), Rejection> {
        let Some(parts) = sign::parse_authorization(authorization) else {
            return Err(Rejection::incorrect("verify aksk signature fail"));
        };
        lock(&self.seen).push(parts.signature.to_owned());
        let Some(key) = options
            .keys
            .iter()
            .find(|k| k.access_key == parts.access_key)
        else {
            return Err(Rejection::incorrect("verify aksk signature fail"));
        };
        let now = Instant::now();
        let mut keys = lock(&self.keys);
        let state = keys.entry(key.access_key.clone()).or_default();
        if state.locked_until.is_some_and(|until| now < until) {
            return Err(Rejection::incorrect(
                "the access key is locked after too many failed signatures",
            ));
        }
        match verify_signature(&parts, key, request, unix_now(), options.max_clock_skew) {
            Ok(()) => {
                *state = KeyState::default();
                Ok(())
            }
            Err(rejection) => {
                state.consecutive_failures += 1;
                if state.consecutive_failures > options.lockout_failures {
                    state.locked_until = Some(now + options.lockout_duration);
                    state.consecutive_failures = 0;
                }
                Err(rejection)
            }
        }
    }
}

/// Checks one signature: the canonical request is rebuilt from the headers the client listed.
pub(super) fn verify_signature(
    parts: &sign::AuthorizationParts<'_>,
    key: &SimKey,
    request: &RequestParts<'_>,
    now_unix: i64,
    max_skew: Duration,
) -> Result<(), Rejection> {
    let fail = || Rejection::incorrect("verify aksk signature fail");
    if !parts.signed_headers.contains(&"x-sdk-date") {
        return Err(fail());
    }
    let date_text = request
        .headers
        .get("x-sdk-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(fail)?;
    let date = sign::parse_sdk_date(date_text).ok_or_else(fail)?;
    if date.abs_diff(now_unix) > max_skew.as_secs() {
        return Err(Rejection::incorrect("signature expired"));
    }
    let mut headers = Vec::new();
    for name in &parts.signed_headers {
        let value = match request.headers.get(*name) {
            Some(v) => v.to_str().map_err(|_| fail())?,
            // HTTP/2 carries the host in the URI.
            None if *name == "host" => request
                .uri
                .authority()
                .map(|a| a.as_str())
                .ok_or_else(fail)?,
            None => return Err(fail()),
        };
        headers.push((*name, value));
    }
    let headers = sign::signable_headers(headers);
    if headers.len() != parts.signed_headers.len() {
        return Err(fail()); // an underscore name or a duplicate was listed
    }
    let canonical = sign::Canonical {
        method: request.method.as_str(),
        path: request.uri.path(),
        query: request.uri.query().unwrap_or_default(),
        headers: &headers,
        body: request.body,
    };
    let string_to_sign = canonical.string_to_sign(date_text);
    if sign::verify_signature(
        key.secret_key.expose_secret().as_bytes(),
        &string_to_sign,
        parts.signature,
    ) {
        Ok(())
    } else {
        Err(fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: &str = "0123456789abcdef0123456789abcdef";
    const HOST: &str = "ddm.cn-north-4.myhuaweicloud.com";
    const VECTOR_TIME: i64 = 1_739_933_420; // 20250219T025020Z

    fn key() -> SimKey {
        SimKey {
            access_key: "HPUAEXAMPLEAKEXAMPLE".into(),
            secret_key: SecretString::from("ExampleSecretKey0123456789abcdefghijklmn"),
        }
    }

    struct Req {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Req {
        fn check(&self, key: &SimKey, now: i64) -> Result<(), Rejection> {
            let auth = self.headers["authorization"].to_str().unwrap();
            let parts = sign::parse_authorization(auth).unwrap();
            let request = RequestParts {
                method: &self.method,
                uri: &self.uri,
                headers: &self.headers,
                body: &self.body,
            };
            verify_signature(&parts, key, &request, now, Duration::from_secs(900))
        }
    }

    /// The request of vector B (or C with `query`) as the Python SDK sends it.
    fn sdk_request(query: &str, signature: &str) -> Req {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert(
            "user-agent",
            "huaweicloud-usdk-python/3.0; test".parse().unwrap(),
        );
        headers.insert("x-project-id", PID.parse().unwrap());
        headers.insert("x-sdk-date", "20250219T025020Z".parse().unwrap());
        headers.insert("host", HOST.parse().unwrap());
        headers.insert(
            "authorization",
            format!("SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKEXAMPLE, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature={signature}").parse().unwrap(),
        );
        Req {
            method: Method::GET,
            uri: format!("/v3/{PID}/backups?{query}").parse().unwrap(),
            headers,
            body: Vec::new(),
        }
    }

    fn vector_b() -> Req {
        sdk_request(
            "limit=128&offset=0",
            "2777b861ee2378f0b10536364397572ff7f9cb442a67b6ac92cce2069d7f6b8e",
        )
    }

    fn vector_c() -> Req {
        sdk_request(
            "backup_name=x%2By%2Az&instance_name=ddm%20a%2Fb~%E4%B8%AD&limit=10&offset=0",
            "5dd902c40fcc98fc9f93bc5dc3e7f59234c636ed655dbc17b867d8efc515fbbd",
        )
    }

    fn vector_a() -> Req {
        let mut headers = HeaderMap::new();
        headers.insert("host", HOST.parse().unwrap());
        headers.insert("x-project-id", PID.parse().unwrap());
        headers.insert("x-sdk-date", "20250219T025020Z".parse().unwrap());
        headers.insert("authorization", "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKEXAMPLE, SignedHeaders=host;x-project-id;x-sdk-date, Signature=a9e5bd9e2eecd99ca5f7810c5f43b572932acc4ae543d77e37d40ab6e8abd1ba".parse().unwrap());
        Req {
            method: Method::GET,
            uri: format!("/v3/{PID}/backups?limit=128&offset=0")
                .parse()
                .unwrap(),
            headers,
            body: Vec::new(),
        }
    }

    #[test]
    fn accepts_the_vectors_and_the_official_sdk() {
        for (name, req) in [("A", vector_a()), ("B", vector_b()), ("C", vector_c())] {
            assert_eq!(req.check(&key(), VECTOR_TIME), Ok(()), "vector {name}");
            // Within 15 minutes either way.
            assert_eq!(
                req.check(&key(), VECTOR_TIME + 899),
                Ok(()),
                "vector {name}"
            );
            assert_eq!(
                req.check(&key(), VECTOR_TIME - 899),
                Ok(()),
                "vector {name}"
            );
        }
    }

    #[test]
    fn accepts_vector_f_with_a_body() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/json;charset=UTF-8".parse().unwrap(),
        );
        headers.insert("host", "iam.cn-north-4.myhuaweicloud.com".parse().unwrap());
        headers.insert("x-sdk-date", "20250219T025020Z".parse().unwrap());
        headers.insert("authorization", "SDK-HMAC-SHA256 Access=AK, SignedHeaders=content-type;host;x-sdk-date, Signature=3809b8442b658428744e426b99a7a70d25c3ff0e4719ec6d240639307db1e984".parse().unwrap());
        let mut req = Req {
            method: Method::POST,
            uri: "/v3/auth/tokens".parse().unwrap(),
            headers,
            body: br#"{"a":1}"#.to_vec(),
        };
        let key = SimKey {
            access_key: "AK".into(),
            secret_key: SecretString::from("SK"),
        };
        assert_eq!(req.check(&key, VECTOR_TIME), Ok(()));
        req.body = br#"{"a":2}"#.to_vec();
        assert!(req.check(&key, VECTOR_TIME).is_err(), "a changed body");
    }

    #[test]
    fn rejects_any_change() {
        let mut r = vector_b();
        r.headers
            .insert("user-agent", "something-else".parse().unwrap());
        assert!(
            r.check(&key(), VECTOR_TIME).is_err(),
            "a changed signed header"
        );

        let mut r = vector_b();
        r.uri = format!("/v3/{PID}/instances?limit=128&offset=0")
            .parse()
            .unwrap();
        assert!(r.check(&key(), VECTOR_TIME).is_err(), "a changed path");

        let mut r = vector_b();
        r.uri = format!("/v3/{PID}/backups?limit=128&offset=128")
            .parse()
            .unwrap();
        assert!(r.check(&key(), VECTOR_TIME).is_err(), "a changed query");

        let mut r = vector_b();
        r.method = Method::POST;
        assert!(r.check(&key(), VECTOR_TIME).is_err(), "a changed method");

        let mut r = vector_b();
        r.body = b"{}".to_vec();
        assert!(r.check(&key(), VECTOR_TIME).is_err(), "a changed body");

        let stale = vector_b().check(&key(), VECTOR_TIME + 901).unwrap_err();
        assert!(stale.message.contains("signature expired"), "{stale:?}");
        assert!(
            vector_b().check(&key(), VECTOR_TIME - 901).is_err(),
            "a date from the future"
        );

        let wrong = SimKey {
            secret_key: SecretString::from("another secret"),
            ..key()
        };
        assert!(
            vector_b().check(&wrong, VECTOR_TIME).is_err(),
            "a wrong key"
        );

        // The date is sent but not signed.
        let mut r = vector_a();
        r.headers.insert("authorization", "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKEXAMPLE, SignedHeaders=host;x-project-id, Signature=a9e5bd9e2eecd99ca5f7810c5f43b572932acc4ae543d77e37d40ab6e8abd1ba".parse().unwrap());
        assert!(r.check(&key(), VECTOR_TIME).is_err(), "an unsigned date");

        // A signed header that is missing.
        let mut r = vector_a();
        r.headers.remove("x-project-id");
        assert!(
            r.check(&key(), VECTOR_TIME).is_err(),
            "a missing signed header"
        );
    }

    #[test]
    fn locks_an_access_key_after_more_than_five_failures() {
        let options = AuthOptions {
            keys: vec![key()],
            ..AuthOptions::default()
        };
        let state = AuthState::default();
        // Vector A's date is long past: every try fails as expired.
        let r = vector_a();
        let parts = RequestParts {
            method: &r.method,
            uri: &r.uri,
            headers: &r.headers,
            body: &r.body,
        };
        let auth = r.headers["authorization"].to_str().unwrap();
        for _ in 0..6 {
            let e = state.verify_signed(&options, auth, &parts).unwrap_err();
            assert!(e.message.contains("expired"), "{e:?}");
        }
        let e = state.verify_signed(&options, auth, &parts).unwrap_err();
        assert!(e.message.contains("locked"), "{e:?}");
    }
}
