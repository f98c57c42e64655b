//! The sections about the gateway's own edge: `[server]`, `[[callers]]`, `[tls]`,
//! `[metrics]`, `[log]` and `[shared]`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Problems;
use super::raw::{RawCaller, RawLog, RawMetrics, RawServer, RawShared, RawTls};
use super::secrets::SecretFiles;
use crate::callers::{Caller, CallerBook, Credential, Patterns, Scope};
use crate::server::ServerOptions;
use crate::shared::SharedOptions;
use crate::tls::TlsFiles;

/// How the server writes its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// One JSON object a line; else text.
    pub json: bool,
    /// A filter like `info` or `backupgw=debug,info`; `BACKUPGW_LOG` wins over it.
    pub level: Option<String>,
}

pub(super) fn server(raw: &RawServer, p: &mut Problems) -> ServerOptions {
    let any = u64::MAX;
    for (key, value, most) in [
        (
            "server.max_request_bytes",
            raw.max_request_bytes as u64,
            any,
        ),
        (
            "server.default_deadline_seconds",
            raw.default_deadline_seconds,
            any,
        ),
        (
            "server.handshake_timeout_seconds",
            raw.handshake_timeout_seconds,
            any,
        ),
        (
            "server.max_connections",
            raw.max_connections as u64,
            super::MAX_AT_ONCE,
        ),
        (
            "server.max_concurrent_streams_per_connection",
            u64::from(raw.max_concurrent_streams_per_connection),
            any,
        ),
        (
            "server.http2_keepalive_interval_seconds",
            raw.http2_keepalive_interval_seconds,
            any,
        ),
    ] {
        p.count(key, value, most);
    }
    if raw.max_request_bytes < 1024 {
        p.push(
            "server.max_request_bytes",
            "must be at least 1024 (a request with a few selectors is a few hundred bytes)",
        );
    }
    let health_listen = raw.health_listen.as_ref().and_then(|h| {
        p.take(
            h.parse::<SocketAddr>()
                .map_err(|_| format!("{h:?} is not an address like 0.0.0.0:50052")),
            "server.health_listen",
        )
    });
    ServerOptions {
        health_listen,
        max_request_bytes: raw.max_request_bytes,
        default_deadline: Duration::from_secs(raw.default_deadline_seconds),
        handshake_timeout: Duration::from_secs(raw.handshake_timeout_seconds),
        max_connections: raw.max_connections,
        max_concurrent_streams_per_connection: raw.max_concurrent_streams_per_connection,
        http2_keepalive_interval: Duration::from_secs(raw.http2_keepalive_interval_seconds),
        shutdown_grace: Duration::from_secs(raw.shutdown_grace_seconds),
    }
}

pub(super) fn callers(raw: &[RawCaller], mtls: bool, p: &mut Problems) -> Arc<CallerBook> {
    let mut callers = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, c) in raw.iter().enumerate() {
        let key = format!("callers[{i}]");
        if c.name.trim().is_empty() {
            p.push(format!("{key}.name"), "must not be empty");
        } else if !names.insert(c.name.as_str()) {
            p.push(
                format!("{key}.name"),
                format!("another caller is named {:?}", c.name),
            );
        }
        let credential = caller_credential(&key, c, mtls, p);
        let scope = scope(&key, c, p);
        if c.max_concurrent_streams == Some(0) {
            p.push(
                format!("{key}.max_concurrent_streams"),
                "must be at least 1",
            );
        }
        if let (Some(credential), Some(scope)) = (credential, scope) {
            let caller = Caller::new(&c.name, scope, c.max_concurrent_streams);
            callers.push((Arc::new(caller), credential));
        }
    }
    Arc::new(CallerBook::new(callers))
}

/// How a caller is recognized: the SHA-256 of its API key, or its client certificate.
fn caller_credential(key: &str, c: &RawCaller, mtls: bool, p: &mut Problems) -> Option<Credential> {
    match (&c.api_key_sha256, &c.client_cert_subject) {
        (Some(hash), None) => {
            let mut bytes = [0u8; 32];
            match hex::decode_to_slice(hash.trim().to_ascii_lowercase(), &mut bytes) {
                Ok(()) => Some(Credential::ApiKeySha256(bytes)),
                Err(_) => {
                    p.push(
                        format!("{key}.api_key_sha256"),
                        "must be 64 hex characters: the SHA-256 of the key (`printf %s KEY | sha256sum`)",
                    );
                    None
                }
            }
        }
        (None, Some(subject)) => {
            if !mtls {
                p.push(
                    format!("{key}.client_cert_subject"),
                    "client certificates are only verified with [tls] client_ca_file",
                );
            }
            Some(Credential::ClientCertSubject(subject.trim().to_owned()))
        }
        _ => {
            p.push(
                key,
                "give exactly one of api_key_sha256 or client_cert_subject",
            );
            None
        }
    }
}

/// What a caller may see: its projects, regions and accounts.
fn scope(key: &str, c: &RawCaller, p: &mut Problems) -> Option<Scope> {
    let projects = p.take(
        if c.projects.is_empty() {
            Err("must name at least one project glob (\"*\": every project)".to_owned())
        } else {
            Patterns::new(&c.projects)
        },
        format!("{key}.projects"),
    );
    let regions = match &c.regions {
        None => Some(Patterns::any()),
        Some(r) => p.take(Patterns::new(r), format!("{key}.regions")),
    };
    // An allow-list of accounts: `None` (the key absent) leaves accounts unrestricted.
    let accounts = match &c.accounts {
        None => Some(None),
        Some(a) if a.is_empty() => {
            p.push(
                format!("{key}.accounts"),
                "must name at least one account glob, or be left out",
            );
            None
        }
        Some(a) => p
            .take(Patterns::new(a), format!("{key}.accounts"))
            .map(Some),
    };
    Some(Scope {
        projects: projects?,
        regions: regions?,
        accounts: accounts?,
    })
}

pub(super) fn tls(
    raw: Option<&RawTls>,
    base: &Path,
    read_files: bool,
    p: &mut Problems,
) -> (Option<TlsFiles>, Option<Arc<rustls::ServerConfig>>) {
    let Some(raw) = raw else {
        return (None, None);
    };
    let files = TlsFiles {
        cert_file: base.join(&raw.cert_file),
        key_file: base.join(&raw.key_file),
        client_ca_file: raw.client_ca_file.as_ref().map(|f| base.join(f)),
    };
    if !read_files {
        return (Some(files), None);
    }
    match files.load() {
        Ok(config) => (Some(files), Some(Arc::new(config))),
        Err(e) => {
            p.push(format!("tls.{}", e.file), e.problem);
            (Some(files), None)
        }
    }
}

pub(super) fn metrics(raw: Option<&RawMetrics>, p: &mut Problems) -> Option<SocketAddr> {
    let raw = raw?;
    p.take(
        raw.listen
            .parse::<SocketAddr>()
            .map_err(|_| format!("{:?} is not an address like 127.0.0.1:9464", raw.listen)),
        "metrics.listen",
    )
}

pub(super) fn log(raw: &RawLog, p: &mut Problems) -> LogOptions {
    let json = match raw.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            p.push(
                "log.format",
                format!("{other:?} is not a log format; use \"json\" or \"text\""),
            );
            false
        }
    };
    if let Some(level) = &raw.level
        && tracing_subscriber::EnvFilter::try_new(level).is_err()
    {
        p.push(
            "log.level",
            format!("{level:?} is not a level or filter like \"info\" or \"backupgw=debug,info\""),
        );
    }
    LogOptions {
        json,
        level: raw.level.clone(),
    }
}

/// `[shared]`: Redis, shared by the replicas (its password from the environment or a file).
pub(super) fn shared(
    raw: Option<&RawShared>,
    files: &mut SecretFiles<'_>,
    p: &mut Problems,
) -> Option<SharedOptions> {
    let raw = raw?;
    let url = raw.redis_url.trim();
    let tls = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("redis") => false,
        Some("rediss") => true,
        _ => {
            p.push(
                "shared.redis_url",
                "must be a redis:// (or rediss://, TLS) URL like redis://127.0.0.1:6379/0",
            );
            return None;
        }
    };
    let ca_pem = match (&raw.ca_file, tls) {
        (None, _) => None,
        (Some(_), false) => {
            p.push("shared.ca_file", "is for rediss:// (TLS) only");
            return None;
        }
        (Some(_), true) if !files.read => None,
        (Some(path), true) => {
            let path = files.base.join(path);
            match std::fs::read(&path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    p.push(
                        "shared.ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
    };
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
        p.push("shared.redis_url", format!("not a Redis URL: {e}"));
        return None;
    }
    if url.contains('@') {
        p.push(
            "shared.redis_url",
            "must not carry a password: give password_file or password_env",
        );
        return None;
    }
    for (key, value) in [
        ("shared.timeout_ms", raw.timeout_ms),
        ("shared.lease_ms", raw.lease_ms),
    ] {
        if value == 0 {
            p.push(key, "must be at least 1");
        }
    }
    let password = if raw.password_env.is_some() || raw.password_file.is_some() {
        p.keep(super::secrets::secret(
            "shared",
            "password",
            raw.password_env.as_deref(),
            raw.password_file.as_deref(),
            files,
        ))
    } else {
        None
    };
    Some(SharedOptions {
        ca_pem,
        password,
        key_prefix: raw.key_prefix.clone(),
        timeout: Duration::from_millis(raw.timeout_ms.max(1)),
        retry_after: Duration::from_millis(raw.retry_after_ms),
        lease: Duration::from_millis(raw.lease_ms.max(1)),
        ..SharedOptions::new(url)
    })
}
