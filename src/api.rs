//! The gRPC service: where a request enters. Thin: validates the request into a `Query`, hands
//! it to the inventory, and maps domain errors to gRPC status codes in one table.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::config::is_project_id;
use crate::ddm::Pushdown;
use crate::inventory::{Event, FieldViolation, Filter, Inventory, InventoryError, Query};
use crate::pb;
use crate::pb::backup_gateway_server::BackupGateway;

/// Longest string accepted in a filter.
const MAX_FILTER_LEN: usize = 255;
/// Most entries in a repeated selector.
const MAX_LIST_LEN: usize = 1000;

pub struct Gateway {
    inventory: Arc<Inventory>,
}

impl Gateway {
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Gateway { inventory }
    }
}

/// The one table from domain errors to gRPC status.
pub fn status_of(error: &InventoryError) -> Status {
    match error {
        InventoryError::InvalidRequest(violations) => {
            let mut details = ErrorDetails::new();
            for v in violations {
                details.add_bad_request_violation(&v.field, &v.description);
            }
            Status::with_error_details(tonic::Code::InvalidArgument, error.to_string(), details)
        }
        InventoryError::NothingAnswered { .. } => Status::unavailable(error.to_string()),
        InventoryError::Internal(_) => Status::internal(error.to_string()),
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::ListBackupsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BackupGateway for Gateway {
    type ListBackupsStream = ResponseStream;

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<Self::ListBackupsStream>, Status> {
        let deadline = grpc_deadline(request.metadata());
        let query = to_query(request.into_inner(), deadline).map_err(|e| status_of(&e))?;
        let events = self.inventory.list(query).map_err(|e| status_of(&e))?;
        let responses = events.map(|event| match event {
            Ok(Event::Backups(batch)) => Ok(pb::ListBackupsResponse {
                encoded_backups: batch.encoded,
                ..Default::default()
            }),
            Ok(Event::TargetDone(target)) => Ok(pb::ListBackupsResponse {
                targets: vec![target],
                ..Default::default()
            }),
            Ok(Event::Finished(summary)) => Ok(pb::ListBackupsResponse {
                summary: Some(summary),
                ..Default::default()
            }),
            Err(e) => Err(status_of(&e)),
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let r = request.into_inner();
        let targets = self
            .inventory
            .select(&r.project_ids, &r.regions)
            .map_err(|e| status_of(&e))?;
        let targets = targets
            .iter()
            .map(|t| {
                let health = self.inventory.health(&t.project_id);
                let last_error = health.last_error();
                pb::Target {
                    project_id: t.project_id.to_string(),
                    project_name: t.project_name.clone(),
                    region: t.region.clone(),
                    endpoint: t.endpoint.to_string(),
                    credential: t.credential.name().to_owned(),
                    source: t.source.as_str().to_owned(),
                    last_success: health.last_success().map(Into::into),
                    last_error_at: last_error.as_ref().map(|(at, _)| (*at).into()),
                    last_error: last_error.map(|(_, e)| e),
                    backoff_until: health.backoff_until().map(Into::into),
                }
            })
            .collect();
        Ok(Response::new(pb::ListTargetsResponse { targets }))
    }
}

/// The caller's deadline, less a margin so the last messages arrive before it.
fn grpc_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    let timeout = parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    let margin = (timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(250));
    Some(Instant::now() + timeout.saturating_sub(margin))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn to_query(r: pb::ListBackupsRequest, deadline: Option<Instant>) -> Result<Query, InventoryError> {
    let mut violations = Vec::new();
    check_list("project_ids", &r.project_ids, &mut violations);
    for (i, id) in r.project_ids.iter().enumerate() {
        if !is_project_id(id) {
            violations.push(FieldViolation::new(
                format!("project_ids[{i}]"),
                format!("{id:?} is not a project id (32 lowercase hex characters)"),
            ));
        }
    }
    check_list("regions", &r.regions, &mut violations);
    check_list("backup_types", &r.backup_types, &mut violations);
    check_list("statuses", &r.statuses, &mut violations);
    for (field, value) in [
        ("instance_id", &r.instance_id),
        ("instance_name", &r.instance_name),
        ("backup_name", &r.backup_name),
    ] {
        check_text(field, value, &mut violations);
    }
    for (field, ts) in [
        ("created_after", &r.created_after),
        ("created_before", &r.created_before),
    ] {
        if let Some(ts) = ts
            && !(0..1_000_000_000).contains(&ts.nanos)
        {
            violations.push(FieldViolation::new(
                field,
                "nanos must be within 0..999999999",
            ));
        }
    }
    if let (Some(a), Some(b)) = (&r.created_after, &r.created_before)
        && (a.seconds, a.nanos) >= (b.seconds, b.nanos)
    {
        violations.push(FieldViolation::new(
            "created_before",
            "must be later than created_after",
        ));
    }
    let max_age = match r.max_age {
        None => None,
        Some(d) => match Duration::try_from(d) {
            Ok(d) => Some(d),
            Err(_) => {
                violations.push(FieldViolation::new("max_age", "must not be negative"));
                None
            }
        },
    };
    if !violations.is_empty() {
        return Err(InventoryError::InvalidRequest(violations));
    }
    Ok(Query {
        project_ids: r.project_ids,
        regions: r.regions,
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
        deadline,
    })
}

fn check_list(field: &str, values: &[String], violations: &mut Vec<FieldViolation>) {
    if values.len() > MAX_LIST_LEN {
        violations.push(FieldViolation::new(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    for (i, v) in values.iter().enumerate() {
        if v.trim().is_empty() {
            violations.push(FieldViolation::new(
                format!("{field}[{i}]"),
                "must not be empty",
            ));
        } else {
            check_text(&format!("{field}[{i}]"), v, violations);
        }
    }
}

fn check_text(field: &str, value: &str, violations: &mut Vec<FieldViolation>) {
    if value.len() > MAX_FILTER_LEN {
        violations.push(FieldViolation::new(
            field,
            format!("at most {MAX_FILTER_LEN} bytes"),
        ));
    } else if value.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("1000m"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "123456789m", "10x", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_requests_list_every_violation() {
        let r = pb::ListBackupsRequest {
            project_ids: vec!["nope".into()],
            regions: vec!["".into()],
            instance_name: "x".repeat(300),
            created_after: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            created_before: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        let Err(InventoryError::InvalidRequest(v)) = to_query(r, None) else {
            panic!("accepted")
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "project_ids[0]",
                "regions[0]",
                "instance_name",
                "created_before"
            ]
        );
    }
}
