//! [`RegionHeadersLayer`]: on a node of one of two regions, every response
//! says which region answered, its role and its epoch, in the headers
//! `coffer-region`, `coffer-role` and `coffer-epoch` (failures included).
//! A client that follows both regions keeps the highest epoch it saw and
//! distrusts answers of a lower one: only the primary of the highest epoch
//! accepts writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use coffer_dr::Dr;
use tonic::codegen::{http, Service};

/// The header naming the region that answered.
pub const REGION_HEADER: &str = "coffer-region";
/// The header with the answering region's role (`primary`, `standby`).
pub const ROLE_HEADER: &str = "coffer-role";
/// The header with the answering region's epoch.
pub const EPOCH_HEADER: &str = "coffer-epoch";

/// The layer: adds the headers when the node runs disaster recovery.
#[derive(Clone, Debug, Default)]
pub struct RegionHeadersLayer {
    dr: Option<Arc<Dr>>,
}

impl RegionHeadersLayer {
    /// The headers of `dr`'s region (none without disaster recovery).
    pub fn new(dr: Option<Arc<Dr>>) -> Self {
        Self { dr }
    }
}

impl<S> tower_layer::Layer<S> for RegionHeadersLayer {
    type Service = RegionHeaders<S>;

    fn layer(&self, inner: S) -> RegionHeaders<S> {
        RegionHeaders { inner, dr: self.dr.clone() }
    }
}

/// The service [`RegionHeadersLayer`] wraps around the gRPC routes.
#[derive(Clone, Debug)]
pub struct RegionHeaders<S> {
    inner: S,
    dr: Option<Arc<Dr>>,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for RegionHeaders<S>
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
        let dr = self.dr.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(dr) = dr {
                let region = dr.node().view().region;
                let headers = response.headers_mut();
                let values = [
                    (REGION_HEADER, dr.config().region.clone()),
                    (ROLE_HEADER, coffer_dr::role_name(region.role).to_owned()),
                    (EPOCH_HEADER, region.epoch.to_string()),
                ];
                for (name, value) in values {
                    if let Ok(value) = http::HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
            }
            Ok(response)
        })
    }
}
