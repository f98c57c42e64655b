//! Who is calling, and what they may see: where the caller is checked.
//!
//! A caller is identified at the edge (an API key in `authorization: Bearer …`, or the subject
//! of a verified mTLS client certificate) and carries its allowed [`Scope`] into the domain:
//! target selection intersects with it for every RPC, so no handler can forget it.

use std::collections::HashMap;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::inventory::Target;
use crate::listener::ConnInfo;

/// Globs over names: `*` is any run of characters, `?` one, `[ab]` a class.
#[derive(Debug, Clone)]
pub struct Patterns {
    source: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for (i, p) in patterns.iter().enumerate() {
            if p.trim().is_empty() {
                return Err(format!("[{i}]: must not be empty"));
            }
            let glob = Glob::new(p).map_err(|e| format!("[{i}]: {p:?} is not a glob: {e}"))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Patterns {
            source: patterns.to_vec(),
            set,
        })
    }

    pub fn any() -> Self {
        Patterns::new(&["*".to_owned()]).expect("* is a glob")
    }

    pub fn matches(&self, text: &str) -> bool {
        self.set.is_match(text)
    }

    pub fn as_strings(&self) -> &[String] {
        &self.source
    }
}

/// What a caller may see: a target is allowed when its project (id or name) matches
/// `projects`, its region matches `regions` and, when `accounts` is set, it belongs to a member
/// account whose id or name matches (our own credentials' projects then are not visible).
#[derive(Debug, Clone)]
pub struct Scope {
    pub projects: Patterns,
    pub regions: Patterns,
    pub accounts: Option<Patterns>,
}

impl Scope {
    pub fn everything() -> Self {
        Scope {
            projects: Patterns::any(),
            regions: Patterns::any(),
            accounts: None,
        }
    }

    pub fn allows(&self, target: &Target) -> bool {
        self.regions.matches(&target.region)
            && (self.projects.matches(&target.project_id)
                || (!target.project_name.is_empty() && self.projects.matches(&target.project_name)))
            && self.accounts.as_ref().is_none_or(|allowed| {
                target.account.as_ref().is_some_and(|a| {
                    (!a.id.is_empty() && allowed.matches(&a.id)) || allowed.matches(&a.name)
                })
            })
    }
}

/// One configured caller.
#[derive(Debug)]
pub struct Caller {
    /// `""` when the gateway is open (no callers configured).
    pub name: Arc<str>,
    pub scope: Scope,
    /// Its `BackupGateway` calls in progress; `None`: unbounded.
    streams: Option<Arc<Semaphore>>,
    max_streams: usize,
}

impl Caller {
    pub fn new(name: &str, scope: Scope, max_concurrent_streams: Option<usize>) -> Self {
        Caller {
            name: name.into(),
            scope,
            streams: max_concurrent_streams.map(|n| Arc::new(Semaphore::new(n))),
            max_streams: max_concurrent_streams.unwrap_or(0),
        }
    }

    /// The anonymous caller of an open gateway: sees everything.
    pub fn anonymous() -> Self {
        Caller::new("", Scope::everything(), None)
    }

    /// A slot for one more call, held until the call (its whole stream) ends.
    pub fn start_call(&self) -> Result<Option<OwnedSemaphorePermit>, CallerError> {
        match &self.streams {
            None => Ok(None),
            Some(s) => Arc::clone(s).try_acquire_owned().map(Some).map_err(|_| {
                CallerError::TooManyStreams {
                    caller: self.name.to_string(),
                    max: self.max_streams,
                }
            }),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallerError {
    /// The same message for a missing and a wrong key: nothing to learn by guessing.
    #[error("a known API key (authorization: Bearer <key>) or client certificate is required")]
    Unauthenticated,
    #[error("caller {caller:?} already has {max} calls in progress; wait for one to end")]
    TooManyStreams { caller: String, max: usize },
}

/// How a caller is recognised.
#[derive(Debug)]
pub enum Credential {
    /// SHA-256 of the API key.
    ApiKeySha256([u8; 32]),
    /// The subject of a verified client certificate, as `CN=…`.
    ClientCertSubject(String),
}

/// Every configured caller; an empty book means the gateway is open.
#[derive(Debug, Default)]
pub struct CallerBook {
    keys: Vec<([u8; 32], Arc<Caller>)>,
    subjects: HashMap<String, Arc<Caller>>,
    anonymous: Option<Arc<Caller>>,
}

impl CallerBook {
    /// No callers configured: everyone is let in and sees everything.
    pub fn open() -> Self {
        CallerBook {
            anonymous: Some(Arc::new(Caller::anonymous())),
            ..CallerBook::default()
        }
    }

    pub fn new(callers: Vec<(Arc<Caller>, Credential)>) -> Self {
        if callers.is_empty() {
            return CallerBook::open();
        }
        let mut book = CallerBook::default();
        for (caller, credential) in callers {
            match credential {
                Credential::ApiKeySha256(hash) => book.keys.push((hash, caller)),
                Credential::ClientCertSubject(subject) => {
                    book.subjects.insert(subject, caller);
                }
            }
        }
        book
    }

    pub fn is_open(&self) -> bool {
        self.anonymous.is_some()
    }

    /// The caller behind a request: its API key, else its client certificate.
    pub fn identify(
        &self,
        authorization: Option<&[u8]>,
        conn: Option<&ConnInfo>,
    ) -> Result<Arc<Caller>, CallerError> {
        if let Some(anonymous) = &self.anonymous {
            return Ok(Arc::clone(anonymous));
        }
        if let Some(key) = authorization.and_then(bearer) {
            let hash: [u8; 32] = Sha256::digest(key).into();
            // Every hash is compared, in constant time: the time taken says nothing.
            let mut found = None;
            for (known, caller) in &self.keys {
                if bool::from(known.ct_eq(&hash)) {
                    found = Some(caller);
                }
            }
            return found.map(Arc::clone).ok_or(CallerError::Unauthenticated);
        }
        conn.and_then(|c| c.client_subject.as_deref())
            .and_then(|subject| self.subjects.get(subject))
            .map(Arc::clone)
            .ok_or(CallerError::Unauthenticated)
    }
}

/// The key of `Bearer <key>`.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))?;
    let key = value.trim_ascii();
    (!key.is_empty()).then_some(key)
}

/// The subject of a DER certificate as RFC 4514 text (`CN=ops.backup.svc`).
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate().subject().to_string())
}

/// The hex SHA-256 of an API key, as `api_key_sha256` wants it.
pub fn api_key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddm::Credential as DdmCredential;
    use crate::inventory::TargetSource;
    use secrecy::SecretString;

    fn target(id: &str, name: &str, region: &str) -> Target {
        Target {
            project_id: id.into(),
            project_name: name.into(),
            region: region.into(),
            endpoint: "http://127.0.0.1:1".into(),
            credential: Arc::new(DdmCredential::token("t", SecretString::from("x"))),
            source: TargetSource::Config,
            account: None,
        }
    }

    #[test]
    fn scopes_intersect_projects_and_regions() {
        let scope = Scope {
            projects: Patterns::new(&["*_payments".into(), "0123".into()]).unwrap(),
            regions: Patterns::new(&["cn-*".into()]).unwrap(),
            accounts: None,
        };
        assert!(scope.allows(&target("aa", "cn-north-4_payments", "cn-north-4")));
        assert!(scope.allows(&target("0123", "", "cn-east-3")));
        assert!(!scope.allows(&target("aa", "ap-southeast-1_payments", "ap-southeast-1")));
        assert!(!scope.allows(&target("bb", "cn-north-4", "cn-north-4")));
    }

    #[test]
    fn keys_and_certificates_identify_callers() {
        let billing = Arc::new(Caller::new("billing", Scope::everything(), Some(1)));
        let ops = Arc::new(Caller::new("ops", Scope::everything(), None));
        let mut hash = [0u8; 32];
        hex::decode_to_slice(api_key_sha256("s3cret"), &mut hash).unwrap();
        let book = CallerBook::new(vec![
            (Arc::clone(&billing), Credential::ApiKeySha256(hash)),
            (ops, Credential::ClientCertSubject("CN=ops".into())),
        ]);
        let who = |auth: Option<&str>, subject: Option<&str>| {
            let conn = ConnInfo {
                remote: None,
                client_subject: subject.map(Arc::from),
            };
            book.identify(auth.map(str::as_bytes), Some(&conn))
                .map(|c| c.name.to_string())
        };
        assert_eq!(who(Some("Bearer s3cret"), None).unwrap(), "billing");
        assert_eq!(who(None, Some("CN=ops")).unwrap(), "ops");
        assert!(
            who(Some("Bearer wrong"), Some("CN=ops")).is_err(),
            "a wrong key is not ignored"
        );
        assert!(who(None, None).is_err());
        assert!(who(Some("Basic s3cret"), None).is_err());
        let first = billing.start_call().unwrap();
        assert!(matches!(
            billing.start_call(),
            Err(CallerError::TooManyStreams { max: 1, .. })
        ));
        drop(first);
        assert!(billing.start_call().is_ok());
    }
}
