//! What a caller asks (a validated `Query`), the gateway-side filter, and what can be wrong with
//! a request.

use std::sync::Arc;
use std::time::Duration;

use prost_types::Timestamp;
use tokio::time::Instant;

use super::TargetResult;
use crate::callers::Caller;
use crate::ddm::Pushdown;
use crate::wire::BackupMeta;

/// A caller's question, validated.
#[derive(Debug, Clone)]
pub struct Query {
    pub project_ids: Vec<String>,
    pub regions: Vec<String>,
    pub accounts: Vec<String>,
    pub pushdown: Pushdown,
    pub filter: Filter,
    /// Cached pages older than this are read again; `None`: the cache TTL.
    pub max_age: Option<Duration>,
    /// When the caller stops waiting; unfinished targets are reported as timed out before it.
    pub deadline: Option<Instant>,
    /// Who asks: its scope bounds the targets, its name is on the log lines.
    pub caller: Arc<Caller>,
    pub order: super::Order,
}

impl Query {
    pub fn selection(&self) -> super::Selection<'_> {
        super::Selection {
            project_ids: &self.project_ids,
            regions: &self.regions,
            accounts: &self.accounts,
        }
    }
}

impl Default for Query {
    fn default() -> Self {
        Query {
            project_ids: Vec::new(),
            regions: Vec::new(),
            accounts: Vec::new(),
            pushdown: Pushdown::default(),
            filter: Filter::default(),
            max_age: None,
            deadline: None,
            caller: Arc::new(Caller::anonymous()),
            order: super::Order::Arrival,
        }
    }
}

/// Gateway-side filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The upstream's words (`metadata`) or the enum's names (`BACKUP_TYPE_METADATA`), in any
    /// case; `BACKUP_TYPE_OTHER` is every type this gateway does not know, and
    /// `BACKUP_TYPE_UNSPECIFIED` a backup without one.
    pub backup_types: Vec<String>,
    /// The upstream's words, in any case.
    pub statuses: Vec<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

impl Filter {
    pub(super) fn matches(&self, b: &BackupMeta<'_>) -> bool {
        (self.backup_types.is_empty()
            || self
                .backup_types
                .iter()
                .any(|t| type_matches(t, b.backup_type_name)))
            && (self.statuses.is_empty()
                || self
                    .statuses
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(b.status)))
            && self.created_in_range(b.created.as_ref())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.backup_types.is_empty()
            && self.statuses.is_empty()
            && self.created_after.is_none()
            && self.created_before.is_none()
    }

    fn created_in_range(&self, created: Option<&Timestamp>) -> bool {
        if self.created_after.is_none() && self.created_before.is_none() {
            return true;
        }
        let Some(c) = created else { return false };
        let key = |t: &Timestamp| (t.seconds, t.nanos);
        self.created_after.as_ref().is_none_or(|a| key(c) >= key(a))
            && self.created_before.as_ref().is_none_or(|b| key(c) < key(b))
    }
}

/// Whether a backup type asked for (an upstream word, or an enum name) is the upstream's
/// `actual` one.
fn type_matches(wanted: &str, actual: &str) -> bool {
    let enum_name = wanted
        .get(..12)
        .filter(|prefix| prefix.eq_ignore_ascii_case("backup_type_"))
        .map(|_| &wanted[12..]);
    match enum_name {
        Some(name) if name.eq_ignore_ascii_case("other") => {
            !matches!(actual, "" | "auto_metadata" | "metadata")
        }
        Some(name) if name.eq_ignore_ascii_case("unspecified") => actual.is_empty(),
        Some(name) => name.eq_ignore_ascii_case(actual),
        None => wanted.eq_ignore_ascii_case(actual),
    }
}

/// A field of the request that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Most problems reported for one request.
pub const MAX_VIOLATIONS: usize = 10;

/// What is wrong with a request: the first `MAX_VIOLATIONS` problems, and how many more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations {
    listed: Vec<FieldViolation>,
    more: usize,
}

impl Violations {
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.listed.len() < MAX_VIOLATIONS {
            self.listed.push(FieldViolation {
                field: field.into(),
                description: description.into(),
            });
        } else {
            self.more += 1;
        }
    }

    /// Whether further problems would only be counted.
    pub fn is_full(&self) -> bool {
        self.listed.len() >= MAX_VIOLATIONS
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldViolation> {
        self.listed.iter()
    }

    pub fn into_result(self) -> Result<(), InventoryError> {
        if self.listed.is_empty() {
            Ok(())
        } else {
            Err(InventoryError::InvalidRequest(self))
        }
    }
}

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, v) in self.listed.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        if self.more > 0 {
            write!(f, "; and {} more", self.more)?;
        }
        Ok(())
    }
}

/// A value as an error message quotes it, escaped: at most about 64 bytes of it.
pub fn quote(value: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("\"");
    for c in value.chars() {
        let escaped = c.escape_debug().to_string();
        if out.len() + escaped.len() > MAX {
            return format!("{out}…\" ({} bytes)", value.len());
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

/// A caller's selection as a log line shows it: the first few entries, each quoted short, and
/// how many more. What a caller sends never makes a log line long.
pub fn loggable(entries: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = entries.iter().take(SHOWN).map(|e| quote(e)).collect();
    if entries.len() > SHOWN {
        out.push(format!("and {} more", entries.len() - SHOWN));
    }
    format!("[{}]", out.join(", "))
}

/// Why not one target could be read, which tells a client whether asking again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NothingAnsweredCause {
    /// Every target failed on its credentials: not before they are mended.
    Auth,
    /// Every target ran out of the caller's time.
    Deadline,
    /// Anything else (the upstream down or throttling): later.
    Unavailable,
}

/// How the targets of one call ended: what its summary counts, and why nothing answered when
/// nothing did.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u32,
    pub failed: u32,
    auth: u32,
    deadline: u32,
}

impl Tally {
    pub fn count(&mut self, result: &TargetResult) {
        match &result.error {
            None => self.ok += 1,
            Some(e) => {
                self.failed += 1;
                match e.kind.as_str() {
                    "auth" => self.auth += 1,
                    "deadline_exceeded" => self.deadline += 1,
                    _ => {}
                }
            }
        }
    }

    /// The call's error when not one target could be read.
    pub fn nothing_answered(&self) -> Option<InventoryError> {
        if self.ok > 0 || self.failed == 0 {
            return None;
        }
        let cause = if self.auth == self.failed {
            NothingAnsweredCause::Auth
        } else if self.deadline == self.failed {
            NothingAnsweredCause::Deadline
        } else {
            NothingAnsweredCause::Unavailable
        };
        Some(InventoryError::NothingAnswered {
            failed: self.failed,
            cause,
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InventoryError {
    #[error("invalid request: {0}")]
    InvalidRequest(Violations),
    #[error("{field}: {message}")]
    PermissionDenied { field: String, message: String },
    #[error("none of the {failed} selected targets could be read; see targets[].error")]
    NothingAnswered {
        failed: u32,
        cause: NothingAnsweredCause,
    },
    #[error(
        "an ordered answer of more than {} MiB: narrow the selection, or ask without order",
        limit_bytes >> 20
    )]
    AnswerTooLarge { limit_bytes: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup<'a>(kind: &'a str, status: &'a str, created: Option<i64>) -> BackupMeta<'a> {
        BackupMeta {
            id: "b",
            backup_type_name: kind,
            status,
            created: created.map(|seconds| Timestamp { seconds, nanos: 0 }),
        }
    }

    #[test]
    fn filters_combine() {
        let f = Filter {
            backup_types: vec!["metadata".into()],
            statuses: vec![],
            created_after: Some(Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            created_before: Some(Timestamp {
                seconds: 200,
                nanos: 0,
            }),
        };
        assert!(f.matches(&backup("metadata", "normal", Some(100))));
        assert!(!f.matches(&backup("metadata", "normal", Some(200))));
        assert!(!f.matches(&backup("auto_metadata", "normal", Some(150))));
        assert!(!f.matches(&backup("metadata", "normal", None)));
        assert!(Filter::default().matches(&backup("x", "y", None)));
    }

    #[test]
    fn types_and_statuses_by_word_or_enum_name_in_any_case() {
        let by = |types: &[&str], statuses: &[&str]| Filter {
            backup_types: types.iter().map(|s| s.to_string()).collect(),
            statuses: statuses.iter().map(|s| s.to_string()).collect(),
            ..Filter::default()
        };
        let meta = backup("metadata", "normal", None);
        for t in [
            "metadata",
            "METADATA",
            "BACKUP_TYPE_METADATA",
            "backup_type_metadata",
        ] {
            assert!(by(&[t], &[]).matches(&meta), "{t}");
        }
        assert!(!by(&["BACKUP_TYPE_AUTO_METADATA"], &[]).matches(&meta));
        assert!(by(&["auto_metadata"], &[]).matches(&backup("auto_metadata", "normal", None)));
        // OTHER: whatever this gateway does not know; UNSPECIFIED: no type at all.
        assert!(by(&["BACKUP_TYPE_OTHER"], &[]).matches(&backup("incremental", "x", None)));
        assert!(!by(&["BACKUP_TYPE_OTHER"], &[]).matches(&meta));
        assert!(by(&["BACKUP_TYPE_UNSPECIFIED"], &[]).matches(&backup("", "x", None)));
        assert!(!by(&["BACKUP_TYPE_UNSPECIFIED"], &[]).matches(&meta));
        // An upstream word is never mistaken for an enum name.
        assert!(by(&["other"], &[]).matches(&backup("other", "x", None)));
        assert!(!by(&["other"], &[]).matches(&backup("incremental", "x", None)));
        assert!(by(&[], &["NORMAL"]).matches(&meta));
        assert!(!by(&[], &["failed"]).matches(&meta));
    }

    #[test]
    fn violations_are_capped_and_quoted_short() {
        let mut v = Violations::default();
        for i in 0..25 {
            v.push(format!("f[{i}]"), quote(&"x".repeat(1000)));
        }
        let text = v.to_string();
        assert_eq!(v.iter().count(), MAX_VIOLATIONS);
        assert!(text.ends_with("and 15 more"), "{text}");
        assert!(quote(&"é".repeat(100)).len() <= 64 + 20);
        assert!(quote(&"\u{1}".repeat(100)).len() <= 64 + 20);
        let many = vec!["x".repeat(255); 1000];
        let logged = loggable(&many);
        assert!(
            logged.len() < 500 && logged.ends_with("and 995 more]"),
            "{logged}"
        );
        assert_eq!(loggable(&["a".into()]), "[\"a\"]");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
