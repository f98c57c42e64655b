//! The protection report's domain rows and totals, as `SummarizeBackupsResponse` says them.

use crate::pb;
use crate::report::{InstanceRow, Protection, ReportEvent, Totals};

pub fn protection(p: Protection) -> pb::Protection {
    match p {
        Protection::Protected => pb::Protection::Protected,
        Protection::Stale => pb::Protection::Stale,
        Protection::Unprotected => pb::Protection::Unprotected,
        Protection::Orphaned => pb::Protection::Orphaned,
        Protection::Unknown => pb::Protection::Unknown,
    }
}

fn row(r: InstanceRow) -> pb::InstanceSummary {
    let (account_id, account_name) = match &r.account {
        Some(a) => (a.id.clone(), a.name.clone()),
        None => Default::default(),
    };
    pb::InstanceSummary {
        account_id,
        account_name,
        project_id: r.project_id.to_string(),
        project_name: r.project_name,
        region: r.region,
        instance_id: r.instance_id,
        instance_name: r.instance_name,
        instance_status: r.instance_status,
        protection: protection(r.protection) as i32,
        backup_count: r.backup_count,
        total_size_kb: r.total_size_kb,
        newest_backup_time: r.newest,
        oldest_backup_time: r.oldest,
        newest_auto_backup_time: r.newest_auto,
    }
}

fn totals(t: Totals) -> pb::ProtectionTotals {
    pb::ProtectionTotals {
        protected: t.of(Protection::Protected),
        stale: t.of(Protection::Stale),
        unprotected: t.of(Protection::Unprotected),
        orphaned: t.of(Protection::Orphaned),
        unknown: t.of(Protection::Unknown),
        backups: t.backups,
        total_size_kb: t.total_size_kb,
        region: t.region,
    }
}

pub fn response(event: ReportEvent) -> pb::SummarizeBackupsResponse {
    match event {
        ReportEvent::Rows(rows) => pb::SummarizeBackupsResponse {
            instances: rows.into_iter().map(row).collect(),
            ..Default::default()
        },
        ReportEvent::TargetDone(t) => pb::SummarizeBackupsResponse {
            targets: vec![(*t).into()],
            ..Default::default()
        },
        ReportEvent::Totals(all) => pb::SummarizeBackupsResponse {
            totals: all.into_iter().map(totals).collect(),
            ..Default::default()
        },
    }
}
