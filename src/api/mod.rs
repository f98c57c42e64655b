//! The gRPC service: where a request enters. Thin: takes the caller the interceptor established
//! (`server::identify_caller`), validates the request into a `Query`, hands it to the inventory,
//! and maps domain errors to gRPC status codes in one table.

mod outcome;
mod summary;
mod validate;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::callers::{Caller, CallerError};
use crate::inventory::{Event, InventoryError, NothingAnsweredCause, Selection};
use crate::pb;
use crate::pb::backup_gateway_server::BackupGateway;
use crate::server::{Generation, Live};

pub use validate::{MAX_LIST_LEN, MAX_TEXT_LEN};

/// Longest `grpc-message` sent: default clients refuse headers over 8 KiB.
const MAX_STATUS_MESSAGE: usize = 2000;

pub struct Gateway {
    live: Arc<Live>,
}

impl Gateway {
    pub fn new(live: Arc<Live>) -> Self {
        Gateway { live }
    }

    /// The caller and the configuration the interceptor saw. Without an interceptor, the
    /// request is identified here with no credentials: an open gateway lets it in, one with
    /// callers refuses it (never open by mistake).
    fn context<T>(&self, request: &Request<T>) -> Result<(Arc<Caller>, Arc<Generation>), Status> {
        let generation = request
            .extensions()
            .get::<Arc<Generation>>()
            .cloned()
            .unwrap_or_else(|| self.live.current());
        let caller = match request.extensions().get::<Arc<Caller>>() {
            Some(caller) => Arc::clone(caller),
            None => generation
                .callers
                .identify(None, None)
                .map_err(|e| caller_status(&e))?,
        };
        Ok((caller, generation))
    }
}

/// The one table from domain errors to gRPC status. The code tells a client whether asking
/// again can help: UNAVAILABLE (yes, later), DEADLINE_EXCEEDED (yes, with more time),
/// FAILED_PRECONDITION (not until the configuration or credentials change), INVALID_ARGUMENT and
/// PERMISSION_DENIED (never as it is).
pub fn status_of(error: &InventoryError) -> Status {
    let message = bounded(error.to_string());
    match error {
        InventoryError::InvalidRequest(violations) => {
            let mut details = ErrorDetails::new();
            for v in violations.iter() {
                details.add_bad_request_violation(&v.field, &v.description);
            }
            Status::with_error_details(tonic::Code::InvalidArgument, message, details)
        }
        InventoryError::PermissionDenied { .. } => Status::permission_denied(message),
        InventoryError::AnswerTooLarge { .. } => Status::resource_exhausted(message),
        InventoryError::NothingAnswered { cause, .. } => match cause {
            NothingAnsweredCause::Auth => Status::failed_precondition(message),
            NothingAnsweredCause::Deadline => Status::deadline_exceeded(message),
            NothingAnsweredCause::Unavailable => Status::unavailable(message),
        },
        InventoryError::Internal(_) => Status::internal(message),
    }
}

pub fn caller_status(error: &CallerError) -> Status {
    match error {
        CallerError::Unauthenticated => Status::unauthenticated(error.to_string()),
        CallerError::TooManyStreams { .. } => Status::resource_exhausted(error.to_string()),
    }
}

fn bounded(mut message: String) -> String {
    if message.len() > MAX_STATUS_MESSAGE {
        let mut cut = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

type ResponseStream = Streamed<pb::ListBackupsResponse>;
type SummaryStream = Streamed<pb::SummarizeBackupsResponse>;

#[tonic::async_trait]
impl BackupGateway for Gateway {
    type ListBackupsStream = ResponseStream;
    type SummarizeBackupsStream = SummaryStream;

    async fn summarize_backups(
        &self,
        request: Request<pb::SummarizeBackupsRequest>,
    ) -> Result<Response<Self::SummarizeBackupsStream>, Status> {
        let (caller, generation) = self.context(&request)?;
        let call = caller.start_call().map_err(|e| caller_status(&e))?;
        let deadline = grpc_deadline(request.metadata(), generation.default_deadline);
        let query = validate::summarize(request.into_inner(), deadline, caller)
            .map_err(|e| status_of(&e))?;
        let events =
            crate::report::summarize(&generation.inventory, query).map_err(|e| status_of(&e))?;
        let ended = crate::memory::CallMemory::start();
        let responses = events.map(move |event| {
            let _call = (&call, &ended);
            event.map(summary::response).map_err(|e| status_of(&e))
        });
        Ok(Response::new(until_shutdown(&self.live, responses)))
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<Self::ListBackupsStream>, Status> {
        let (caller, generation) = self.context(&request)?;
        let call = caller.start_call().map_err(|e| caller_status(&e))?;
        let deadline = grpc_deadline(request.metadata(), generation.default_deadline);
        let query = validate::list_backups(request.into_inner(), deadline, caller)
            .map_err(|e| status_of(&e))?;
        let events = generation
            .inventory
            .list(query)
            .map_err(|e| status_of(&e))?;
        let ended = crate::memory::CallMemory::start();
        let responses = events.map(move |event| {
            // The caller's slot is held as long as its stream is.
            let _call = (&call, &ended);
            match event {
                Ok(Event::Backups(batch)) => Ok(pb::ListBackupsResponse {
                    encoded_backups: batch.encoded,
                    ..Default::default()
                }),
                Ok(Event::TargetDone(target)) => Ok(pb::ListBackupsResponse {
                    targets: vec![(*target).into()],
                    ..Default::default()
                }),
                Ok(Event::Finished(summary)) => Ok(pb::ListBackupsResponse {
                    summary: Some(summary.into()),
                    ..Default::default()
                }),
                Err(e) => Err(status_of(&e)),
            }
        });
        Ok(Response::new(until_shutdown(&self.live, responses)))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let started = Instant::now();
        let (caller, generation) = self.context(&request)?;
        let _call = caller.start_call().map_err(|e| caller_status(&e))?;
        let r = request.into_inner();
        validate::list_targets(&r).map_err(|e| status_of(&e))?;
        let inventory = &generation.inventory;
        let selection = Selection {
            project_ids: &r.project_ids,
            regions: &r.regions,
            accounts: &r.accounts,
        };
        let targets = inventory
            .select(&selection, &caller.scope)
            .map_err(|e| status_of(&e))?;
        let targets: Vec<pb::Target> = targets
            .iter()
            .map(|t| {
                let health = inventory.health(t);
                let last_error = health.last_error();
                let (account_id, account_name) = t.account_id_and_name();
                pb::Target {
                    account_id: account_id.to_owned(),
                    account_name: account_name.to_owned(),
                    account_status: t
                        .account
                        .as_ref()
                        .map(|a| a.status.clone())
                        .unwrap_or_default(),
                    project_id: t.project_id.to_string(),
                    project_name: t.project_name.clone(),
                    region: t.region.to_string(),
                    endpoint: t.endpoint.to_string(),
                    credential: t.credential.name().to_owned(),
                    source: t.source.as_str().to_owned(),
                    last_success: health.last_success().map(Into::into),
                    last_error_at: last_error.as_ref().map(|(at, _)| (*at).into()),
                    last_error: last_error.map(|(_, e)| e.into()),
                    backoff_until: health.backoff_until().map(Into::into),
                    credential_failing_until: t.credential.failing_until().map(Into::into),
                }
            })
            .collect();
        tracing::info!(
            caller = &*caller.name,
            method = "ListTargets",
            projects = %crate::inventory::loggable(&r.project_ids),
            regions = %crate::inventory::loggable(&r.regions),
            targets = targets.len(),
            elapsed = ?started.elapsed(),
            "call finished"
        );
        Ok(Response::new(pb::ListTargetsResponse {
            targets,
            discoveries: inventory
                .discovery_states()
                .into_iter()
                .map(Into::into)
                .collect(),
        }))
    }
}

/// A response stream of a server-streaming RPC.
type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Ends a stream with UNAVAILABLE once the shutdown grace is over; what arrived stays arrived.
fn until_shutdown<T: Send + 'static>(
    live: &Arc<Live>,
    responses: impl Stream<Item = Result<T, Status>> + Send + 'static,
) -> Streamed<T> {
    let live = Arc::clone(live);
    let grace_over = Box::pin(async move { live.grace_over().await });
    let mut responses: Option<Streamed<T>> = Some(Box::pin(responses));
    let mut grace_over = Some(grace_over);
    Box::pin(futures_util::stream::poll_fn(move |cx| {
        if let Some(over) = &mut grace_over
            && over.as_mut().poll(cx).is_ready()
        {
            grace_over = None;
            // Dropping the inventory's stream stops its upstream work.
            responses = None;
            return std::task::Poll::Ready(Some(Err(Status::unavailable(
                "the gateway is shutting down; ask again (another replica will answer)",
            ))));
        }
        match &mut responses {
            Some(r) => r.as_mut().poll_next(cx),
            None => std::task::Poll::Ready(None),
        }
    }))
}

/// The caller's deadline (or the default one), less a margin so the last messages arrive
/// before it.
fn grpc_deadline(metadata: &tonic::metadata::MetadataMap, default: Duration) -> Instant {
    let timeout = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(default);
    let margin = (timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(250));
    Instant::now() + timeout.saturating_sub(margin)
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
    fn status_messages_stay_short() {
        let long = bounded("é".repeat(5000));
        assert!(long.len() <= MAX_STATUS_MESSAGE + 3);
    }
}
