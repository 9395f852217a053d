//! The notification HTTP client's connector under the egress policy: hyper's connector asks
//! [`PolicyResolver`] for every new connection to a name, and [`PolicyGate`] refuses an
//! IP-literal host (which hyper never resolves) before the connector opens a socket.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use tower_service::Service;

use super::{EgressPolicy, ip_literal};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Resolves names for hyper and refuses any whose addresses the policy refuses.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: EgressPolicy,
}

impl Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str()).await?;
            Ok(addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// A TCP connector that checks IP-literal hosts itself and names through [`PolicyResolver`].
#[derive(Debug, Clone)]
pub struct PolicyGate {
    inner: HttpConnector<PolicyResolver>,
    policy: EgressPolicy,
}

impl PolicyGate {
    /// A plain TCP connector (http and, under a TLS wrapper, https) for `policy`.
    pub fn new(policy: EgressPolicy) -> Self {
        let mut inner = HttpConnector::new_with_resolver(PolicyResolver {
            policy: policy.clone(),
        });
        inner.enforce_http(false);
        PolicyGate { inner, policy }
    }
}

impl Service<Uri> for PolicyGate {
    type Response = <HttpConnector<PolicyResolver> as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_string();
        if let Some(ip) = ip_literal(&host)
            && let Err(e) = self.policy.check(&host, ip)
        {
            return Box::pin(async move { Err(Box::new(e) as BoxError) });
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}
