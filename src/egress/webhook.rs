//! The notification HTTP client's connector under the egress policy: hyper's connector asks
//! [`PolicyResolver`] for every new connection to a name, and [`PolicyGate`] refuses an
//! IP-literal host (which hyper never resolves) before the connector opens a socket.
//!
//! Through a proxy ([`super::proxy`]), [`PolicyGate`] resolves and checks the receiver's host
//! first, then connects to the proxy (with the system resolver: the proxy is platform
//! configuration): an `https://` receiver gets a `CONNECT` tunnel (hyper-util's `Tunnel`, the
//! TLS wrapper then speaks TLS with the receiver through it), an `http://` receiver gets its
//! request sent to the proxy in absolute form ([`GateStream`] tells hyper so); the caller adds
//! `Proxy-Authorization` to such a request ([`proxy_authorization`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper::header::HeaderValue;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::proxy::Route;
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

/// A TCP connector that checks IP-literal hosts itself and names through [`PolicyResolver`],
/// and goes through the policy's proxy where it applies.
#[derive(Debug, Clone)]
pub struct PolicyGate {
    inner: HttpConnector<PolicyResolver>,
    /// For connections to the proxy itself.
    plain: HttpConnector,
    policy: EgressPolicy,
}

impl PolicyGate {
    /// A plain TCP connector (http and, under a TLS wrapper, https) for `policy`.
    pub fn new(policy: EgressPolicy) -> Self {
        let mut inner = HttpConnector::new_with_resolver(PolicyResolver {
            policy: policy.clone(),
        });
        inner.enforce_http(false);
        let mut plain = HttpConnector::new();
        plain.enforce_http(false);
        PolicyGate {
            inner,
            plain,
            policy,
        }
    }
}

/// The `Proxy-Authorization` value a plain-HTTP request to `uri` must carry under `policy`
/// (an `https://` request authenticates in its `CONNECT` instead).
pub fn proxy_authorization(policy: &EgressPolicy, uri: &Uri) -> Option<HeaderValue> {
    match policy.proxy().route(uri) {
        Route::Proxy { authorization, .. } if uri.scheme_str() != Some("https") => authorization,
        _ => None,
    }
}

/// A connection made by [`PolicyGate`]: to the receiver (directly or tunnelled), or to a
/// proxy that takes absolute-form requests.
#[derive(Debug)]
pub struct GateStream {
    io: TokioIo<TcpStream>,
    absolute_form: bool,
}

impl Connection for GateStream {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        if self.absolute_form {
            connected.proxy(true)
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for GateStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for GateStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl Service<Uri> for PolicyGate {
    type Response = GateStream;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_string();
        match self.policy.proxy().route(&uri) {
            Route::Direct => {
                if let Some(ip) = ip_literal(&host)
                    && let Err(e) = self.policy.check(&host, ip)
                {
                    return Box::pin(async move { Err(Box::new(e) as BoxError) });
                }
                let connecting = self.inner.call(uri);
                Box::pin(async move {
                    let io = connecting.await?;
                    Ok(GateStream {
                        io,
                        absolute_form: false,
                    })
                })
            }
            Route::Proxy {
                proxy,
                authorization,
                ..
            } => {
                let policy = self.policy.clone();
                let mut plain = self.plain.clone();
                Box::pin(async move {
                    // The proxy would resolve the receiver itself: resolve and check it first.
                    policy.resolve(&host).await?;
                    if uri.scheme_str() == Some("https") {
                        let mut tunnel = Tunnel::new(proxy, plain);
                        if let Some(auth) = authorization {
                            tunnel = tunnel.with_auth(auth);
                        }
                        std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
                        let io = tunnel.call(uri).await?;
                        Ok(GateStream {
                            io,
                            absolute_form: false,
                        })
                    } else {
                        std::future::poll_fn(|cx| plain.poll_ready(cx)).await?;
                        let io = plain.call(proxy).await?;
                        Ok(GateStream {
                            io,
                            absolute_form: true,
                        })
                    }
                })
            }
        }
    }
}
