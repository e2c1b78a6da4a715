//! The API's metrics, and the Prometheus exporter a node serves every
//! Coffer metric with.
//!
//! [`RpcMetricsLayer`] is a tower layer on the gRPC server: every request is
//! counted by service, method and gRPC status code, and timed:
//!
//! - `coffer_rpc_requests_total{service, method, code}` (counter; `code` is
//!   the canonical name, `OK`, `UNAVAILABLE`, ...);
//! - `coffer_rpc_request_duration_seconds{service, method}` (histogram).
//!
//! The code is the one in the response headers: every failure a handler
//! returns is answered there (a "trailers-only" response); a response
//! without one counts as `OK` — for a streaming call (`SubscribeChanges`),
//! that the stream started, and the time is until it started. Labels are
//! bounded: only the known services are named, and at most
//! [`RPC_METHODS_LABELLED_MAX`] methods; anything else is `other`.
//!
//! [`install_exporter`] installs the process's metrics recorder and serves
//! the Prometheus text format over HTTP (any path; `/metrics` by
//! convention). Histograms are exported with the buckets below.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use tonic::codegen::{http, Service};
use tonic::Code;

/// Distinct (service, method) labels at most; further methods count as `other`.
pub const RPC_METHODS_LABELLED_MAX: usize = 64;
/// The longest method name given a label of its own.
const METHOD_NAME_LEN_MAX: usize = 64;
/// Buckets of every `*_seconds` histogram: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS_SECONDS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Buckets of every `*_events` histogram: 1 event to a full batch (8,189).
pub const EVENTS_BUCKETS: [f64; 8] = [1.0, 8.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8189.0];
/// The gRPC services a node serves; requests to others are labelled `other`.
const KNOWN_SERVICES: [&str; 6] = [
    "coffer.v1.LedgerService",
    "coffer.dr.v1.DrService",
    "coffer.v1.AdminService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];
/// The label of a service or method that gets none of its own.
const OTHER: &str = "other";

/// Why the exporter could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("metrics exporter on {address}: {source}")]
pub struct MetricsError {
    /// The address it was to listen on.
    pub address: SocketAddr,
    /// The failure (the address is taken, a recorder is already installed).
    pub source: BuildError,
}

/// Installs the process's metrics recorder and serves it, in the Prometheus
/// text format, over HTTP on `address`. Call it once, inside a tokio
/// runtime, before starting the node: metric handles taken before it record
/// nothing.
pub fn install_exporter(address: SocketAddr) -> Result<(), MetricsError> {
    let failed = |source| MetricsError { address, source };
    PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)
        .and_then(|builder| builder.set_buckets_for_metric(Matcher::Suffix("_events".into()), &EVENTS_BUCKETS))
        .and_then(PrometheusBuilder::install)
        .map_err(failed)?;
    metrics::describe_counter!("coffer_rpc_requests_total", "gRPC requests, by service, method and status code");
    let latency = "gRPC request latency, until the response (or a stream's start)";
    metrics::describe_histogram!("coffer_rpc_request_duration_seconds", metrics::Unit::Seconds, latency);
    Ok(())
}

/// The tower layer that counts and times every gRPC request (see the module
/// docs). Clones share the bound on labelled methods.
#[derive(Clone, Debug, Default)]
pub struct RpcMetricsLayer {
    methods: Arc<Mutex<BTreeSet<String>>>,
}

impl RpcMetricsLayer {
    /// A layer with no method labelled yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner, methods: self.methods.clone() }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the gRPC routes.
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
    methods: Arc<Mutex<BTreeSet<String>>>,
}

impl<S> RpcMetrics<S> {
    /// The `(service, method)` labels of a request to `path`
    /// (`/coffer.v1.LedgerService/CreateTransfers`), bounded.
    fn labels(&self, path: &str) -> (&'static str, String) {
        let Some((service, method)) = path.strip_prefix('/').and_then(|path| path.split_once('/')) else {
            return (OTHER, OTHER.to_owned());
        };
        let Some(service) = KNOWN_SERVICES.into_iter().find(|known| *known == service) else {
            return (OTHER, OTHER.to_owned());
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if method.is_empty() || method.len() > METHOD_NAME_LEN_MAX || !method.chars().all(plain) {
            return (service, OTHER.to_owned());
        }
        let key = format!("{service}/{method}");
        let mut methods = self.methods.lock().unwrap_or_else(PoisonError::into_inner);
        if methods.contains(&key) || methods.len() < RPC_METHODS_LABELLED_MAX {
            methods.insert(key);
            (service, method.to_owned())
        } else {
            (service, OTHER.to_owned())
        }
    }
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for RpcMetrics<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResponseBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let (service, method) = self.labels(request.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => response_code(response),
                Err(_) => code_name(Code::Unknown),
            };
            let duration = started.elapsed();
            metrics::counter!("coffer_rpc_requests_total", "service" => service, "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("coffer_rpc_request_duration_seconds", "service" => service, "method" => method)
                .record(duration);
            result
        })
    }
}

/// The gRPC status code of a response, from its headers (see the module docs).
fn response_code<B>(response: &http::Response<B>) -> &'static str {
    match response.headers().get("grpc-status") {
        Some(value) => {
            let code = value.to_str().ok().and_then(|text| text.parse::<i32>().ok());
            code_name(code.map_or(Code::Unknown, Code::from_i32))
        }
        None if response.status() == http::StatusCode::OK => code_name(Code::Ok),
        None => code_name(Code::Unknown),
    }
}

/// The canonical name of a gRPC status code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_service() -> RpcMetrics<()> {
        tower_layer::Layer::layer(&RpcMetricsLayer::new(), ())
    }

    #[test]
    fn known_methods_are_labelled_and_anything_else_is_other() {
        let service = layer_service();
        assert_eq!(
            service.labels("/coffer.v1.LedgerService/CreateTransfers"),
            ("coffer.v1.LedgerService", "CreateTransfers".to_owned())
        );
        assert_eq!(service.labels("/evil.Service/Method"), (OTHER, OTHER.to_owned()));
        assert_eq!(service.labels("/coffer.v1.AdminService/a-b"), ("coffer.v1.AdminService", OTHER.to_owned()));
        assert_eq!(service.labels("no-slash"), (OTHER, OTHER.to_owned()));
    }

    #[test]
    fn labelled_methods_are_bounded() {
        let service = layer_service();
        for i in 0..RPC_METHODS_LABELLED_MAX {
            assert_eq!(service.labels(&format!("/grpc.health.v1.Health/M{i}")).1, format!("M{i}"));
        }
        assert_eq!(service.labels("/grpc.health.v1.Health/OneTooMany").1, OTHER);
        assert_eq!(service.labels("/grpc.health.v1.Health/M0").1, "M0", "a method already labelled keeps its label");
    }

    #[test]
    fn the_code_comes_from_the_headers_or_is_ok() {
        let ok = http::Response::new(());
        assert_eq!(response_code(&ok), "OK");
        let mut failed = http::Response::new(());
        failed.headers_mut().insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(response_code(&failed), "UNAVAILABLE");
        let mut garbled = http::Response::new(());
        garbled.headers_mut().insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(response_code(&garbled), "UNKNOWN");
    }
}
