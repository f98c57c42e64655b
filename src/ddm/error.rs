//! Typed failures of one upstream call, carrying what support asks for (code, status, request id).
//! No variant ever holds a credential: messages are built from the upstream's answer or ours.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DdmError {
    /// The upstream answered with an error status.
    #[error(
        "upstream answered HTTP {status}{}: {message}{}",
        code_suffix(*status, code),
        request_id_suffix(request_id)
    )]
    Upstream {
        status: u16,
        /// `error_code` / `errCode` from the body, or the HTTP status as a string.
        code: String,
        message: String,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, TLS, protocol error.
    #[error("no answer from the upstream: {0}")]
    Transport(String),
    /// The upstream did not answer (or finish answering) in time.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// An answer we cannot read (not JSON, wrong shape, too large).
    #[error(
        "cannot read the upstream answer (HTTP {status}): {message}{}",
        request_id_suffix(request_id)
    )]
    Decode {
        status: u16,
        message: String,
        request_id: Option<String>,
    },
    /// Credentials could not be obtained or applied (e.g. IAM refused the password).
    #[error("credential {credential:?}: {message}")]
    Auth {
        credential: String,
        message: String,
        /// The IAM error as the upstream sent it, if any.
        upstream: Option<Box<DdmError>>,
    },
    /// The caller's deadline ran out before this call could finish.
    #[error("the caller's deadline ran out")]
    DeadlineExceeded,
    /// The upstream throttles and asks for a wait longer than we may wait.
    #[error("throttled: the upstream asks to wait {}s, more than {limit}; {upstream}", retry_after.as_secs())]
    Throttled {
        retry_after: Duration,
        /// What bounds our wait (`retry_max_delay_ms`, or the caller's deadline).
        limit: String,
        upstream: Box<DdmError>,
    },
}

/// The code after the status, unless it only repeats the status.
fn code_suffix(status: u16, code: &str) -> String {
    if code.is_empty() || code == status.to_string() {
        String::new()
    } else {
        format!(" {code}")
    }
}

fn request_id_suffix(id: &Option<String>) -> String {
    id.as_deref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

impl DdmError {
    /// The upstream answer behind an `Auth` or `Throttled` error.
    pub fn upstream_cause(&self) -> Option<&DdmError> {
        match self {
            DdmError::Auth {
                upstream: Some(e), ..
            } => Some(e),
            DdmError::Throttled { upstream, .. } => Some(upstream),
            _ => None,
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            DdmError::Upstream { status, .. } | DdmError::Decode { status, .. } => *status,
            _ => self.upstream_cause().map_or(0, DdmError::http_status),
        }
    }

    pub fn code(&self) -> &str {
        match self {
            DdmError::Upstream { code, .. } => code,
            _ => self.upstream_cause().map_or("", DdmError::code),
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            DdmError::Upstream { request_id, .. } | DdmError::Decode { request_id, .. } => {
                request_id.as_deref()
            }
            _ => self.upstream_cause().and_then(DdmError::request_id),
        }
    }

    /// Whether the upstream refused the credential itself (not a project or a scope): a wrong
    /// signature or token (401), or IAM refusing the password (401).
    pub fn rejects_credential(&self) -> bool {
        match self {
            DdmError::Upstream { status: 401, .. } => true,
            DdmError::Auth {
                upstream: Some(e), ..
            } => matches!(**e, DdmError::Upstream { status: 401, .. }),
            _ => false,
        }
    }

    /// Whether the same request may succeed if sent again (errors.md's table).
    pub fn is_retryable(&self) -> bool {
        match self {
            DdmError::Upstream { status, code, .. } => match *status {
                429 | 500 | 502 | 503 | 504 => true,
                400 => matches!(code.as_str(), "DBS.300002" | "DBS.300005"),
                _ => false,
            },
            DdmError::Transport(_) | DdmError::Timeout(_) => true,
            // A proxy's HTML error page comes with a 5xx status.
            DdmError::Decode { status, .. } => *status >= 500,
            DdmError::Auth {
                upstream: Some(e), ..
            } => e.is_retryable() && !e.rejects_credential(),
            DdmError::Auth { .. } | DdmError::DeadlineExceeded | DdmError::Throttled { .. } => {
                false
            }
        }
    }

    /// Whether asking again later may succeed (what `TargetError.retryable` tells a client):
    /// what this gateway retries itself, and what it gave up on for lack of time.
    pub fn may_succeed_later(&self) -> bool {
        self.is_retryable()
            || matches!(
                self,
                DdmError::DeadlineExceeded | DdmError::Throttled { .. }
            )
    }

    /// A 401 that a fresh IAM token may cure (APIGW.0307, or APIGW.0301 about the token).
    pub fn is_token_rejected(&self) -> bool {
        matches!(self, DdmError::Upstream { status: 401, code, .. }
            if code == "APIGW.0307" || code == "APIGW.0301")
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DdmError::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// One word for the kind of failure (TargetError.kind).
    pub fn kind(&self) -> &'static str {
        match self {
            DdmError::Upstream { .. } => "upstream",
            DdmError::Transport(_) | DdmError::Timeout(_) => "transport",
            DdmError::Decode { .. } => "decode",
            DdmError::Auth { .. } => "auth",
            DdmError::DeadlineExceeded => "deadline_exceeded",
            DdmError::Throttled { .. } => "throttled",
        }
    }
}

/// Error bodies in the three shapes errors.md lists.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    error_code: Option<String>,
    error_msg: Option<String>,
    #[serde(rename = "errCode")]
    err_code: Option<String>,
    #[serde(rename = "externalMessage")]
    external_message: Option<String>,
    request_id: Option<String>,
    /// IAM's form: `{"error": {"code": 401, "message": "...", "title": "Unauthorized"}}`.
    error: Option<IamErrorBody>,
}

#[derive(Debug, serde::Deserialize)]
struct IamErrorBody {
    code: Option<serde_json::Value>,
    message: Option<String>,
}

/// Builds the error for a non-success answer. Like the official SDK: when the body has no
/// recognisable code, the code is the HTTP status and the message the (shortened) raw body.
pub fn upstream_error(
    status: u16,
    body: &[u8],
    request_id: Option<String>,
    retry_after: Option<Duration>,
) -> DdmError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, message, body_request_id) = match parsed {
        Some(b) if b.error_code.is_some() || b.err_code.is_some() => (
            b.error_code.or(b.err_code).unwrap_or_default(),
            b.error_msg.or(b.external_message).unwrap_or_default(),
            b.request_id,
        ),
        Some(ErrorBody {
            error: Some(iam), ..
        }) => (
            match iam.code {
                Some(serde_json::Value::String(c)) => c,
                Some(c) => c.to_string(),
                None => status.to_string(),
            },
            iam.message.unwrap_or_default(),
            None,
        ),
        _ if (300..400).contains(&status) => (
            status.to_string(),
            format!(
                "a redirect (HTTP {status}), not followed: the API does not redirect, so the endpoint is likely wrong"
            ),
            None,
        ),
        _ => (status.to_string(), readable(body), None),
    };
    DdmError::Upstream {
        status,
        code,
        message,
        request_id: request_id.or(body_request_id),
        retry_after,
    }
}

/// A body for a message: an HTML page (a proxy's error page) reduced to its title or text.
fn readable(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    let lower = trimmed
        .get(..trimmed.len().min(512))
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(lower.starts_with("<!doctype")
        || lower.starts_with("<html")
        || lower.starts_with("<?xml")
        || lower.contains("<body"))
    {
        return shorten(body);
    }
    let title = trimmed
        .to_ascii_lowercase()
        .find("<title>")
        .and_then(|start| {
            let rest = &trimmed[start + 7..];
            rest.to_ascii_lowercase()
                .find("</title>")
                .map(|end| rest[..end].trim().to_owned())
        })
        .filter(|t| !t.is_empty());
    let text = title.unwrap_or_else(|| {
        // The text between the tags, its white space folded.
        let mut out = String::new();
        let mut in_tag = false;
        for c in trimmed.chars() {
            match c {
                '<' => {
                    in_tag = true;
                    out.push(' ');
                }
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    });
    format!("an HTML page: {}", shorten(text.as_bytes()))
}

/// At most 200 characters of a body, for messages.
pub fn shorten(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_three_shapes_and_raw_bodies() {
        let e = upstream_error(
            400,
            br#"{"error_code":"DBS.280001","error_msg":"Parameter error."}"#,
            Some("r1".into()),
            None,
        );
        assert_eq!(
            (e.code(), e.http_status(), e.request_id()),
            ("DBS.280001", 400, Some("r1"))
        );
        assert!(!e.is_retryable());
        let e = upstream_error(
            429,
            br#"{"error_msg":"over","error_code":"APIGW.0308","request_id":"abc"}"#,
            None,
            None,
        );
        assert_eq!((e.code(), e.request_id()), ("APIGW.0308", Some("abc")));
        assert!(e.is_retryable());
        let e = upstream_error(
            400,
            br#"{"errCode":"DBS.300005","externalMessage":"failed"}"#,
            None,
            None,
        );
        assert_eq!(e.code(), "DBS.300005");
        assert!(e.is_retryable());
        let e = upstream_error(502, b"<html><body>Bad Gateway</body></html>", None, None);
        assert_eq!(e.code(), "502");
        assert_eq!(
            e.to_string(),
            "upstream answered HTTP 502: an HTML page: Bad Gateway"
        );
        assert!(e.is_retryable());
        let e = upstream_error(
            504,
            b"<!DOCTYPE html>\n<html><head><title>504 Gateway Time-out</title></head><body><h1>x</h1></body></html>",
            None,
            None,
        );
        assert_eq!(
            e.to_string(),
            "upstream answered HTTP 504: an HTML page: 504 Gateway Time-out"
        );
        let e = upstream_error(
            401,
            br#"{"error_code":"APIGW.0307","error_msg":"The token must be updated"}"#,
            None,
            None,
        );
        assert!(e.is_token_rejected() && !e.is_retryable());
    }

    #[test]
    fn shorten_cuts_on_characters() {
        let long = "é".repeat(300);
        let s = shorten(long.as_bytes());
        assert_eq!(s.chars().count(), 201);
    }
}
