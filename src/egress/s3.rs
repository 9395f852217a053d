//! The AWS SDK's HTTP client under the egress policy: a DNS resolver that checks every address
//! a name resolves to (hyper's connector asks it for each new connection), a connector that
//! checks IP-literal hosts (hyper skips the resolver for those) before handing the request on,
//! and caps on what is read back: error replies at [`cap::ERROR_BODY_CAP`], replies the SDK
//! buffers (everything but an object download) at [`cap::BUFFERED_REPLY_CAP`]. Object
//! downloads stream; whoever reads one whole caps it themselves ([`cap::collect_capped`]).
//!
//! Through a proxy ([`super::proxy`]; `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`), the destination
//! host is resolved and checked by the policy first, then the request goes to the proxy: a
//! `CONNECT` tunnel for `https://` endpoints, an absolute-form request for `http://` ones (the
//! SDK client's own proxy support does both). The proxy's address is not checked: it is the
//! platform's configuration, not a tenant's.
//!
//! Only the S3 calls use this client. The SDK's credential providers (instance metadata, EKS
//! Pod Identity, STS) keep the default client: they reach the platform's own endpoints, never a
//! tenant's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_smithy_async::rt::sleep::SharedAsyncSleep;

use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

use super::cap::{self, CappedBody};
use super::proxy::Route;
use super::{EgressError, EgressPolicy, ip_literal};

/// The SDK HTTP client for tenant S3 endpoints under `policy`, one per policy per process
/// (building one loads the TLS roots).
pub fn http_client(policy: &EgressPolicy) -> SharedHttpClient {
    static CLIENTS: OnceLock<Mutex<HashMap<EgressPolicy, SharedHttpClient>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
    clients
        .entry(policy.clone())
        .or_insert_with(|| {
            let inner = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_with_resolver(PolicyResolver {
                    policy: policy.clone(),
                });
            SharedHttpClient::new(PolicyClient {
                inner,
                policy: policy.clone(),
                proxied: ProxiedConnectors::default(),
            })
        })
        .clone()
}

/// The SDK's default HTTPS client (rustls/ring), for credential providers: not for tenant
/// endpoints.
pub fn platform_http_client() -> SharedHttpClient {
    static HTTP: OnceLock<SharedHttpClient> = OnceLock::new();
    HTTP.get_or_init(|| {
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https()
    })
    .clone()
}

/// Resolves names and refuses any whose addresses the policy refuses.
#[derive(Debug, Clone)]
struct PolicyResolver {
    policy: EgressPolicy,
}

impl ResolveDns for PolicyResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            self.policy
                .resolve(name)
                .await
                .map_err(ResolveDnsError::new)
        })
    }
}

struct PolicyClient {
    inner: SharedHttpClient,
    policy: EgressPolicy,
    /// Connectors through each proxy, per connector settings (each keeps its connection pool).
    proxied: ProxiedConnectors,
}

/// A proxy (its key, without credentials) and the timeouts of the connectors through it.
type ProxiedKey = (String, Option<Duration>, Option<Duration>);
type ProxiedConnectors = Arc<Mutex<HashMap<ProxiedKey, SharedHttpConnector>>>;

impl std::fmt::Debug for PolicyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HttpClient for PolicyClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(PolicyConnector {
            inner: self.inner.http_connector(settings, components),
            policy: self.policy.clone(),
            settings: settings.clone(),
            sleep: components.sleep_impl(),
            proxied: self.proxied.clone(),
        })
    }
}

struct PolicyConnector {
    inner: SharedHttpConnector,
    policy: EgressPolicy,
    settings: HttpConnectorSettings,
    sleep: Option<SharedAsyncSleep>,
    proxied: ProxiedConnectors,
}

impl std::fmt::Debug for PolicyConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyConnector")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl PolicyConnector {
    /// The connector through the proxy at `url` (credentials included, never shown), made on
    /// first use: the SDK client's proxy support (a `CONNECT` tunnel for https, absolute form
    /// and `Proxy-Authorization` for http), resolving the proxy's host with the system
    /// resolver (the proxy is not a tenant's address).
    fn through(&self, key: &str, url: &str) -> Result<SharedHttpConnector, ConnectorError> {
        let cache_key = (
            key.to_string(),
            self.settings.connect_timeout(),
            self.settings.read_timeout(),
        );
        let mut cache = self.proxied.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&cache_key) {
            return Ok(c.clone());
        }
        let config = aws_smithy_http_client::proxy::ProxyConfig::all(url)
            .map_err(|_| ConnectorError::user(format!("the proxy {key} cannot be used").into()))?;
        let mut builder = aws_smithy_http_client::Connector::builder()
            .connector_settings(self.settings.clone())
            .proxy_config(config);
        builder.set_sleep_impl(self.sleep.clone());
        let connector = SharedHttpConnector::new(
            builder
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::Ring,
                ))
                .build(),
        );
        cache.insert(cache_key, connector.clone());
        Ok(connector)
    }
}

/// How much of a reply may be read: `None` = streamed to the caller (an object download).
fn reply_cap(request_query: Option<&str>, status: u16) -> Option<u64> {
    if !(200..300).contains(&status) {
        return Some(cap::ERROR_BODY_CAP);
    }
    let download = request_query.is_some_and(|q| {
        q.split('&')
            .any(|p| p.eq_ignore_ascii_case("x-id=GetObject"))
    });
    (!download).then_some(cap::BUFFERED_REPLY_CAP)
}

impl HttpConnector for PolicyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let uri: Option<hyper::Uri> = request.uri().parse().ok();
        let host = uri
            .as_ref()
            .and_then(|u| u.host())
            .unwrap_or_default()
            .to_string();
        let query = uri.as_ref().and_then(|u| u.query()).map(str::to_string);
        let route = uri
            .as_ref()
            .map_or(Route::Direct, |u| self.policy.proxy().route(u));
        let response = match route {
            Route::Direct => {
                // Names are checked by the resolver at connect time; hyper never resolves an
                // IP literal, so it is checked here.
                if let Some(ip) = ip_literal(&host)
                    && let Err(e) = self.policy.check(&host, ip)
                {
                    return HttpConnectorFuture::ready(Err(ConnectorError::user(Box::new(e))));
                }
                self.inner.call(request)
            }
            Route::Proxy { key, url, .. } => {
                let through = match self.through(&key, &url) {
                    Ok(c) => c,
                    Err(e) => return HttpConnectorFuture::ready(Err(e)),
                };
                let policy = self.policy.clone();
                // The proxy resolves the destination itself: it is resolved and checked here
                // first, as a direct connection would be.
                HttpConnectorFuture::new(async move {
                    if let Err(e) = policy.resolve(&host).await {
                        return Err(match e {
                            EgressError::Unresolved { .. } => ConnectorError::io(Box::new(e)),
                            refused => ConnectorError::user(Box::new(refused)),
                        });
                    }
                    through.call(request).await
                })
            }
        };
        HttpConnectorFuture::new(async move {
            let response = response.await?;
            let status = response.status().as_u16();
            Ok(match reply_cap(query.as_deref(), status) {
                Some(limit) => {
                    response.map(|body| SdkBody::from_body_1_x(CappedBody::new(body, limit)))
                }
                None => response,
            })
        })
    }
}

/// What an S3 error may say in status, Events and logs: the egress refusal or read cap when
/// that is what stopped it, the S3 error code and (shortened) message when the endpoint
/// answered as S3 does, otherwise only the kind of failure — never a reply body or a
/// transport detail from whatever answered.
pub fn error_text<E>(
    e: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> String
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    if let Some(refused) = super::refusal(e) {
        return refused.to_string();
    }
    if let Some(cap) = find::<cap::CapExceeded>(e) {
        return cap.to_string();
    }
    match e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("an unrecognised error");
            let status = s.raw().status().as_u16();
            match s.err().message() {
                Some(m) => format!("HTTP {status}, {}: {}", clean(code, 64), clean(m, 200)),
                None => format!("HTTP {status}, {}", clean(code, 64)),
            }
        }
        SdkError::TimeoutError(_) => "the endpoint did not answer in time".into(),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            "the endpoint did not answer in time".into()
        }
        SdkError::DispatchFailure(d) if d.is_io() => "could not connect to the endpoint".into(),
        SdkError::DispatchFailure(_) => "the request could not be sent".into(),
        SdkError::ResponseError(_) => "the endpoint's reply is not an S3 reply".into(),
        SdkError::ConstructionFailure(_) => "the request could not be built".into(),
        _ => "the S3 request failed".into(),
    }
}

fn find<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// At most `max` characters of `text`, without control characters.
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_stream_and_everything_else_is_capped() {
        assert_eq!(reply_cap(Some("x-id=GetObject"), 200), None);
        assert_eq!(reply_cap(Some("versionId=1&x-id=GetObject"), 206), None);
        assert_eq!(
            reply_cap(Some("list-type=2&prefix=a"), 200),
            Some(cap::BUFFERED_REPLY_CAP)
        );
        assert_eq!(reply_cap(None, 200), Some(cap::BUFFERED_REPLY_CAP));
        assert_eq!(
            reply_cap(Some("x-id=GetObject"), 403),
            Some(cap::ERROR_BODY_CAP)
        );
        assert_eq!(reply_cap(None, 500), Some(cap::ERROR_BODY_CAP));
    }
}
