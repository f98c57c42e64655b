//! Counting `BackupGateway` calls: a tower layer at the server sees every call, its method, its
//! final code (from the headers of a refused call or the trailers of an answered one) and the
//! caller the interceptor established.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use prometheus_client::metrics::gauge::Gauge;
use tonic::body::Body;

use super::{Metrics, code_name};

/// Where the caller interceptor writes the caller's name for the RPC metrics layer (which runs
/// outside it and cannot see the caller otherwise).
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<Arc<str>>>);

impl CallerSlot {
    pub fn set(&self, name: &Arc<str>) {
        let _ = self.0.set(Arc::clone(name));
    }

    fn name(&self) -> &str {
        self.0.get().map_or("", |n| n)
    }
}

const SERVICE_PATH: &str = "/backupgw.v1.BackupGateway/";
/// The methods of `BackupGateway`, the only values of the `method` label but `"unknown"`.
const METHODS: [&str; 3] = ["ListBackups", "ListTargets", "SummarizeBackups"];

/// Counts `BackupGateway` calls by method, final code and caller, and the calls open.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Metrics,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        RpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> tower::Service<http::Request<Body>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The service that was polled ready answers this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(asked) = request.uri().path().strip_prefix(SERVICE_PATH) else {
            return Box::pin(inner.call(request));
        };
        // A label from the request would let any caller grow the series without end.
        let method = METHODS
            .iter()
            .find(|m| **m == asked)
            .copied()
            .unwrap_or("unknown");
        let slot = CallerSlot::default();
        request.extensions_mut().insert(slot.clone());
        let call = OpenCall::new(self.metrics.clone(), method, slot);
        let started = std::time::Instant::now();
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            // An answer without a body (the call was refused) has its status in the headers.
            // Calls that were answered write their own line, with what they found.
            if let Some(code) = grpc_status(&parts.headers) {
                let reason = parts
                    .headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .map(|m| percent_encoding::percent_decode_str(m).decode_utf8_lossy())
                    .unwrap_or_default();
                tracing::info!(
                    caller = call.caller.name(),
                    method = call.method,
                    code = code_name(code),
                    reason = %reason,
                    elapsed = ?started.elapsed(),
                    "call refused"
                );
                call.finish(code);
                return Ok(http::Response::from_parts(parts, body));
            }
            let body = Body::new(MeteredBody {
                inner: body,
                call: Some(call),
            });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(value.parse().ok()?))
}

/// A call in progress: counted in `streams_open` until it finishes; a call dropped before its
/// status was sent (the client went away) counts as CANCELLED.
struct OpenCall {
    metrics: Metrics,
    method: &'static str,
    caller: CallerSlot,
    open: Gauge,
    done: bool,
}

impl OpenCall {
    fn new(metrics: Metrics, method: &'static str, caller: CallerSlot) -> Self {
        let open = metrics.stream_gauge(method);
        open.inc();
        OpenCall {
            metrics,
            method,
            caller,
            open,
            done: false,
        }
    }

    fn finish(mut self, code: tonic::Code) {
        self.record(code);
    }

    fn record(&mut self, code: tonic::Code) {
        if !self.done {
            self.done = true;
            self.open.dec();
            self.metrics
                .rpc_finished(self.method, code, self.caller.name());
        }
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

struct MeteredBody {
    inner: Body,
    call: Option<OpenCall>,
}

impl http_body::Body for MeteredBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = grpc_status(trailers)
            && let Some(call) = self.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
