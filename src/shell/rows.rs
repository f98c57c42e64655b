//! What the shell client's rows hold: a backup (`ls`), a target (`targets`) or an instance
//! (`report`), taken from the gateway's answers, and their CSV columns in order.

use serde::Serialize;

use crate::pb;

/// The CSV columns of `ls`, in order (`BackupRow`'s fields).
pub const BACKUP_COLUMNS: [&str; 14] = [
    "project_id",
    "project_name",
    "region",
    "instance_id",
    "instance_name",
    "backup_id",
    "backup_name",
    "backup_type",
    "status",
    "size_kb",
    "created",
    "updated",
    "account_id",
    "account_name",
];

/// The CSV columns of `targets`, in order (`TargetRow`'s fields).
pub const TARGET_COLUMNS: [&str; 11] = [
    "project_id",
    "project_name",
    "region",
    "endpoint",
    "credential",
    "source",
    "last_success",
    "last_error",
    "account_id",
    "account_name",
    "account_status",
];

/// The CSV columns of `report`, in order (`ReportRow`'s fields).
pub const REPORT_COLUMNS: [&str; 14] = [
    "project_id",
    "project_name",
    "region",
    "instance_id",
    "instance_name",
    "instance_status",
    "protection",
    "backup_count",
    "total_size_kb",
    "newest_backup_time",
    "oldest_backup_time",
    "newest_auto_backup_time",
    "account_id",
    "account_name",
];

/// One instance, as `report` writes it (the CSV columns, in order).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReportRow {
    pub project_id: String,
    pub project_name: String,
    pub region: String,
    pub instance_id: String,
    pub instance_name: String,
    pub instance_status: String,
    /// `protected`, `stale`, `unprotected`, `orphaned` or `unknown`.
    pub protection: String,
    pub backup_count: u64,
    pub total_size_kb: f64,
    pub newest_backup_time: String,
    pub oldest_backup_time: String,
    pub newest_auto_backup_time: String,
    /// The member account (empty for our own projects).
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub account_name: String,
}

/// A protection class's word in the shell client's output and flags.
pub fn protection_word(p: pb::Protection) -> &'static str {
    match p {
        pb::Protection::Protected => "protected",
        pb::Protection::Stale => "stale",
        pb::Protection::Unprotected => "unprotected",
        pb::Protection::Orphaned => "orphaned",
        pb::Protection::Unknown => "unknown",
        pb::Protection::Unspecified => "",
    }
}

impl From<&pb::InstanceSummary> for ReportRow {
    fn from(r: &pb::InstanceSummary) -> Self {
        ReportRow {
            project_id: r.project_id.clone(),
            project_name: r.project_name.clone(),
            region: r.region.clone(),
            instance_id: r.instance_id.clone(),
            instance_name: r.instance_name.clone(),
            instance_status: r.instance_status.clone(),
            protection: protection_word(r.protection()).to_owned(),
            backup_count: r.backup_count,
            total_size_kb: r.total_size_kb,
            newest_backup_time: time(&r.newest_backup_time),
            oldest_backup_time: time(&r.oldest_backup_time),
            newest_auto_backup_time: time(&r.newest_auto_backup_time),
            account_id: r.account_id.clone(),
            account_name: r.account_name.clone(),
        }
    }
}

/// One backup, as `ls` writes it (the CSV columns, in order).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct BackupRow {
    pub project_id: String,
    pub project_name: String,
    pub region: String,
    pub instance_id: String,
    pub instance_name: String,
    pub backup_id: String,
    pub backup_name: String,
    pub backup_type: String,
    pub status: String,
    pub size_kb: f64,
    pub created: String,
    pub updated: String,
    /// The member account (empty for our own projects).
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub account_name: String,
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl From<&pb::Backup> for BackupRow {
    fn from(b: &pb::Backup) -> Self {
        BackupRow {
            project_id: b.project_id.clone(),
            project_name: b.project_name.clone(),
            region: b.region.clone(),
            instance_id: b.instance_id.clone(),
            instance_name: b.instance_name.clone(),
            backup_id: b.id.clone(),
            backup_name: b.name.clone(),
            backup_type: b.backup_type_name.clone(),
            status: b.status.clone(),
            size_kb: b.file_size_kb,
            created: time(&b.created),
            updated: time(&b.updated),
            account_id: b.account_id.clone(),
            account_name: b.account_name.clone(),
        }
    }
}

/// One target, as `targets` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TargetRow {
    pub project_id: String,
    pub project_name: String,
    pub region: String,
    pub endpoint: String,
    pub credential: String,
    pub source: String,
    pub last_success: String,
    pub last_error: String,
    /// The member account (empty for our own projects) and its status.
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub account_name: String,
    #[serde(default)]
    pub account_status: String,
}

impl From<&pb::Target> for TargetRow {
    fn from(t: &pb::Target) -> Self {
        TargetRow {
            project_id: t.project_id.clone(),
            project_name: t.project_name.clone(),
            region: t.region.clone(),
            endpoint: t.endpoint.clone(),
            credential: t.credential.clone(),
            source: t.source.clone(),
            last_success: time(&t.last_success),
            last_error: t
                .last_error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default(),
            account_id: t.account_id.clone(),
            account_name: t.account_name.clone(),
            account_status: t.account_status.clone(),
        }
    }
}
