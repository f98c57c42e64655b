//! Requests into queries. Every list and string of a request is bounded: a list past its bound
//! is reported once and not read further; at most `MAX_VIOLATIONS` problems are reported, each
//! quoting at most 64 bytes of what was sent.

use std::sync::Arc;
use std::time::Duration;

use prost_types::Timestamp;
use tokio::time::Instant;

use crate::callers::Caller;
use crate::ddm::Pushdown;
use crate::inventory::{Filter, InventoryError, Order, Query, Violations, quote};
use crate::pb;
use crate::report::{DEFAULT_STALE_AFTER, Protection, ReportQuery};

/// Longest string accepted in a filter or selector.
pub const MAX_TEXT_LEN: usize = 255;
/// Most entries in a repeated selector.
pub const MAX_LIST_LEN: usize = 1000;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, as protobuf's Timestamp allows.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

pub fn list_backups(
    r: pb::ListBackupsRequest,
    deadline: Instant,
    caller: Arc<Caller>,
) -> Result<Query, InventoryError> {
    let mut v = Violations::default();
    check_list("project_ids", &r.project_ids, &mut v);
    check_list("regions", &r.regions, &mut v);
    check_list("accounts", &r.accounts, &mut v);
    check_list("backup_types", &r.backup_types, &mut v);
    check_list("statuses", &r.statuses, &mut v);
    for (field, value) in [
        ("instance_id", &r.instance_id),
        ("instance_name", &r.instance_name),
        ("backup_name", &r.backup_name),
    ] {
        check_text(field, value, &mut v);
    }
    let mut times_ok = true;
    for (field, ts) in [
        ("created_after", &r.created_after),
        ("created_before", &r.created_before),
    ] {
        if let Some(ts) = ts {
            times_ok &= check_timestamp(field, ts, &mut v);
        }
    }
    if times_ok
        && let (Some(a), Some(b)) = (&r.created_after, &r.created_before)
        && (a.seconds, a.nanos) >= (b.seconds, b.nanos)
    {
        v.push("created_before", "must be later than created_after");
    }
    let order = match pb::Order::try_from(r.order) {
        Ok(pb::Order::Unspecified) => Order::Arrival,
        Ok(pb::Order::NewestFirst) => Order::NewestFirst,
        Ok(pb::Order::OldestFirst) => Order::OldestFirst,
        Err(_) => {
            v.push("order", format!("{} is not an Order", r.order));
            Order::Arrival
        }
    };
    let max_age = match r.max_age {
        None => None,
        Some(d) => match Duration::try_from(d) {
            Ok(d) => Some(d),
            Err(_) => {
                v.push("max_age", "must not be negative");
                None
            }
        },
    };
    v.into_result()?;
    Ok(Query {
        project_ids: r.project_ids,
        regions: r.regions,
        accounts: r.accounts,
        pushdown: Pushdown {
            instance_id: r.instance_id,
            instance_name: r.instance_name,
            backup_name: r.backup_name,
        },
        filter: Filter {
            backup_types: r.backup_types,
            statuses: r.statuses,
            created_after: r.created_after,
            created_before: r.created_before,
        },
        max_age,
        deadline: Some(deadline),
        caller,
        order,
    })
}

pub fn summarize(
    r: pb::SummarizeBackupsRequest,
    deadline: Instant,
    caller: Arc<Caller>,
) -> Result<ReportQuery, InventoryError> {
    let mut v = Violations::default();
    check_list("project_ids", &r.project_ids, &mut v);
    check_list("regions", &r.regions, &mut v);
    check_list("accounts", &r.accounts, &mut v);
    let mut duration = |field: &str, d: Option<prost_types::Duration>| match d {
        None => None,
        Some(d) => match Duration::try_from(d) {
            Ok(d) => Some(d),
            Err(_) => {
                v.push(field, "must not be negative");
                None
            }
        },
    };
    let stale_after = duration("stale_after", r.stale_after).unwrap_or(DEFAULT_STALE_AFTER);
    let max_age = duration("max_age", r.max_age);
    if stale_after.is_zero() {
        v.push("stale_after", "must be longer than zero");
    }
    let mut protections = Vec::new();
    for (i, p) in r.protections.iter().take(MAX_LIST_LEN).enumerate() {
        match pb::Protection::try_from(*p) {
            Ok(pb::Protection::Protected) => protections.push(Protection::Protected),
            Ok(pb::Protection::Stale) => protections.push(Protection::Stale),
            Ok(pb::Protection::Unprotected) => protections.push(Protection::Unprotected),
            Ok(pb::Protection::Orphaned) => protections.push(Protection::Orphaned),
            Ok(pb::Protection::Unknown) => protections.push(Protection::Unknown),
            _ => v.push(
                format!("protections[{i}]"),
                format!("{p} is not a Protection"),
            ),
        }
    }
    v.into_result()?;
    Ok(ReportQuery {
        project_ids: r.project_ids,
        regions: r.regions,
        accounts: r.accounts,
        stale_after,
        protections,
        max_age,
        deadline: Some(deadline),
        caller,
    })
}

pub fn list_targets(r: &pb::ListTargetsRequest) -> Result<(), InventoryError> {
    let mut v = Violations::default();
    check_list("project_ids", &r.project_ids, &mut v);
    check_list("regions", &r.regions, &mut v);
    check_list("accounts", &r.accounts, &mut v);
    v.into_result()
}

/// A list: at most `MAX_LIST_LEN` entries, each a non-empty, bounded string. Entries past the
/// bound are not looked at.
fn check_list(field: &str, values: &[String], v: &mut Violations) {
    if values.len() > MAX_LIST_LEN {
        v.push(
            field,
            format!("at most {MAX_LIST_LEN} entries (got {})", values.len()),
        );
    }
    for (i, value) in values.iter().take(MAX_LIST_LEN).enumerate() {
        if v.is_full() {
            return;
        }
        if value.trim().is_empty() {
            v.push(format!("{field}[{i}]"), "must not be empty");
        } else {
            check_text(&format!("{field}[{i}]"), value, v);
        }
    }
}

fn check_text(field: &str, value: &str, v: &mut Violations) {
    if value.len() > MAX_TEXT_LEN {
        v.push(
            field,
            format!(
                "at most {MAX_TEXT_LEN} bytes (got {}, {})",
                value.len(),
                quote(value)
            ),
        );
    } else if value.chars().any(char::is_control) {
        v.push(
            field,
            format!("must not contain control characters: {}", quote(value)),
        );
    }
}

fn check_timestamp(field: &str, ts: &Timestamp, v: &mut Violations) -> bool {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        v.push(field, "nanos must be within 0..999999999");
        false
    } else if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        v.push(field, "must be within the years 0001 to 9999");
        false
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(r: pb::ListBackupsRequest) -> Result<Query, InventoryError> {
        list_backups(r, Instant::now(), Arc::new(Caller::anonymous()))
    }

    #[test]
    fn bad_requests_list_every_violation() {
        let r = pb::ListBackupsRequest {
            project_ids: vec!["x".into(), "\u{7}".into()],
            regions: vec!["".into()],
            instance_name: "x".repeat(300),
            created_after: Some(Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            created_before: Some(Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        let Err(InventoryError::InvalidRequest(v)) = query(r) else {
            panic!("accepted")
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "project_ids[1]",
                "regions[0]",
                "instance_name",
                "created_before"
            ]
        );
    }

    #[test]
    fn huge_requests_get_short_answers() {
        let r = pb::ListBackupsRequest {
            project_ids: vec!["\u{1}".repeat(200); 100_000],
            backup_name: "é".repeat(200),
            ..Default::default()
        };
        let Err(e @ InventoryError::InvalidRequest(_)) = query(r) else {
            panic!("accepted")
        };
        let InventoryError::InvalidRequest(v) = &e else {
            unreachable!()
        };
        assert_eq!(v.iter().count(), 10);
        assert_eq!(v.iter().next().unwrap().field, "project_ids");
        for violation in v.iter() {
            assert!(violation.description.len() < 160, "{violation:?}");
        }
        let message = e.to_string();
        assert!(message.len() < 2048, "{} bytes", message.len());
        assert!(message.contains("more"), "{message}");
    }

    #[test]
    fn times_outside_0001_to_9999_are_refused() {
        for seconds in [MIN_SECONDS - 1, MAX_SECONDS + 1, i64::MIN, i64::MAX] {
            let r = pb::ListBackupsRequest {
                created_after: Some(Timestamp { seconds, nanos: 0 }),
                ..Default::default()
            };
            assert!(query(r).is_err(), "{seconds}");
        }
        let r = pb::ListBackupsRequest {
            created_after: Some(Timestamp {
                seconds: MIN_SECONDS,
                nanos: 0,
            }),
            created_before: Some(Timestamp {
                seconds: MAX_SECONDS,
                nanos: 999_999_999,
            }),
            ..Default::default()
        };
        assert!(query(r).is_ok());
    }
}
