//! HTTP(S) proxies from the standard environment variables, for the clients that reach
//! tenant endpoints (S3, notification webhooks) — the operator's and the agent's.
//!
//! - `HTTPS_PROXY` / `https_proxy`: the proxy for `https://` destinations (a `CONNECT` tunnel,
//!   TLS end to end with the destination);
//! - `HTTP_PROXY` / `http_proxy`: the proxy for `http://` destinations (the request is sent to
//!   the proxy in absolute form);
//! - `ALL_PROXY` / `all_proxy`: either, when the specific variable is unset;
//! - `NO_PROXY` / `no_proxy`: destinations reached directly — comma-separated host names
//!   (`example.com` and `.example.com` both match the domain and its subdomains), IP addresses,
//!   CIDR ranges (`10.0.0.0/8`), or `*` for everything. Matching is hyper-util's
//!   `client::proxy::matcher` (curl's rules).
//!
//! The upper-case variable wins when both spellings are set. A proxy URL is `http://host:port`
//! (a missing scheme means `http://`), optionally with `user:password@` for Basic
//! authentication; a proxy spoken to over TLS (`https://`) or SOCKS is refused at start-up.
//! Credentials never appear in logs or errors ([`ProxyConfig`]'s `Display` and `Debug` redact
//! them) and are never copied into agent Jobs ([`ProxyConfig::job_env`]).
//!
//! The egress policy still judges the destination, not the proxy: `egress::s3` and
//! `egress::webhook` resolve and check the destination host before a request is handed to the
//! proxy, exactly as they would before connecting directly. The proxy itself is platform
//! configuration (like the API server's address) and is not subject to the tenant egress
//! policy.

use std::fmt;
use std::sync::Arc;

use hyper_util::client::proxy::matcher::Matcher;

/// The environment variables read, in precedence order per setting.
const HTTPS_VARS: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const HTTP_VARS: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const ALL_VARS: [&str; 2] = ["ALL_PROXY", "all_proxy"];
const NO_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// A proxy setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={url}: {reason}")]
pub struct ProxyError {
    /// The variable it came from.
    pub variable: &'static str,
    /// The value with any credentials masked.
    pub url: String,
    pub reason: String,
}

/// One proxy: its URL as configured (credentials included: never print it), and the same
/// without credentials (for logs and errors).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Proxy {
    url: String,
    shown: String,
    has_credentials: bool,
}

impl Proxy {
    fn parse(variable: &'static str, value: &str) -> Result<Proxy, ProxyError> {
        let value = value.trim();
        let with_scheme = if value.contains("://") {
            value.to_string()
        } else {
            format!("http://{value}")
        };
        let (scheme, rest) = with_scheme.split_once("://").unwrap_or(("http", ""));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let shown = match userinfo {
            Some(_) => format!("{scheme}://***@{host_port}"),
            None => format!("{scheme}://{host_port}"),
        };
        let error = |reason: &str| ProxyError {
            variable,
            url: shown.clone(),
            reason: reason.to_string(),
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(error(
                "only HTTP proxies are supported (http://host:port; HTTPS destinations go through them in a CONNECT tunnel)",
            ));
        }
        let parsed: hyper::Uri = format!("http://{host_port}/")
            .parse()
            .map_err(|_| error("not a proxy URL (expected http://host:port)"))?;
        if parsed.host().is_none_or(str::is_empty) {
            return Err(error("not a proxy URL (expected http://host:port)"));
        }
        Ok(Proxy {
            url: match userinfo {
                Some(u) => format!("http://{u}@{host_port}"),
                None => format!("http://{host_port}"),
            },
            shown,
            has_credentials: userinfo.is_some(),
        })
    }
}

/// Where a request goes: straight to its destination, or through a proxy.
#[derive(Clone)]
pub enum Route {
    Direct,
    /// Through the proxy at `proxy` (no credentials in it); `authorization` is the
    /// `Proxy-Authorization` value to send (a `CONNECT` carries it; a plain-HTTP request
    /// carries it in its own headers).
    Proxy {
        proxy: hyper::Uri,
        authorization: Option<hyper::header::HeaderValue>,
        /// Stable key of this proxy (for connection pools), without credentials.
        key: String,
        /// The proxy URL as configured, credentials included: never print it.
        url: String,
    },
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("Direct"),
            Route::Proxy { proxy, .. } => write!(f, "Proxy({proxy})"),
        }
    }
}

/// The proxies for `http://` and `https://` destinations and the `NO_PROXY` exceptions.
/// Cheap to clone; compares and hashes by its settings.
#[derive(Clone, Default)]
pub struct ProxyConfig {
    http: Option<Proxy>,
    https: Option<Proxy>,
    no_proxy: String,
    matcher: Option<Arc<Matcher>>,
}

impl PartialEq for ProxyConfig {
    fn eq(&self, other: &Self) -> bool {
        self.http == other.http && self.https == other.https && self.no_proxy == other.no_proxy
    }
}

impl Eq for ProxyConfig {}

impl std::hash::Hash for ProxyConfig {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.http.hash(state);
        self.https.hash(state);
        self.no_proxy.hash(state);
    }
}

impl ProxyConfig {
    /// No proxy: every destination is reached directly.
    pub fn none() -> Self {
        Self::default()
    }

    /// From the process environment (see the module docs).
    pub fn from_env() -> Result<Self, ProxyError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From variables looked up with `get` (the environment, or a test's map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyError> {
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        let parse = |found: Option<(&'static str, String)>| {
            found.map(|(n, v)| Proxy::parse(n, &v)).transpose()
        };
        let all = parse(first(ALL_VARS))?;
        let https = parse(first(HTTPS_VARS))?.or_else(|| all.clone());
        let http = parse(first(HTTP_VARS))?.or(all);
        let no_proxy = first(NO_VARS).map(|(_, v)| v).unwrap_or_default();
        Ok(Self::build(http, https, no_proxy))
    }

    /// Explicit settings (what the variables would hold).
    pub fn new(
        http: Option<&str>,
        https: Option<&str>,
        no_proxy: &str,
    ) -> Result<Self, ProxyError> {
        let http = http.map(|v| Proxy::parse(HTTP_VARS[0], v)).transpose()?;
        let https = https.map(|v| Proxy::parse(HTTPS_VARS[0], v)).transpose()?;
        Ok(Self::build(http, https, no_proxy.to_string()))
    }

    fn build(http: Option<Proxy>, https: Option<Proxy>, no_proxy: String) -> Self {
        if http.is_none() && https.is_none() {
            return ProxyConfig {
                no_proxy,
                ..Default::default()
            };
        }
        let mut builder = Matcher::builder().no(no_proxy.clone());
        if let Some(p) = &http {
            builder = builder.http(p.url.clone());
        }
        if let Some(p) = &https {
            builder = builder.https(p.url.clone());
        }
        ProxyConfig {
            http,
            https,
            no_proxy,
            matcher: Some(Arc::new(builder.build())),
        }
    }

    /// Whether any destination goes through a proxy.
    pub fn is_enabled(&self) -> bool {
        self.matcher.is_some()
    }

    /// The route of a request to `uri`.
    pub fn route(&self, uri: &hyper::Uri) -> Route {
        // `*` means every destination (curl's rule); hyper-util's matcher applies it to names
        // only, not to IP addresses.
        if self.no_proxy.split(',').any(|e| e.trim() == "*") {
            return Route::Direct;
        }
        let Some(intercept) = self.matcher.as_ref().and_then(|m| m.intercept(uri)) else {
            return Route::Direct;
        };
        let key = intercept.uri().to_string();
        // The matcher picks the proxy by the destination's scheme, as here.
        let configured = if uri.scheme_str() == Some("https") {
            &self.https
        } else {
            &self.http
        };
        let url = configured
            .as_ref()
            .map_or_else(|| key.clone(), |p| p.url.clone());
        Route::Proxy {
            proxy: intercept.uri().clone(),
            authorization: intercept.basic_auth().cloned(),
            key,
            url,
        }
    }

    /// The variables that give an agent Job the same proxies, or `None` when a proxy URL
    /// carries credentials: a Job's environment is readable by whoever may read Jobs or Pods
    /// in the tenant's namespace, so the platform's proxy credentials are never copied there.
    pub fn job_env(&self) -> Option<Vec<(&'static str, String)>> {
        if !self.is_enabled() {
            return Some(Vec::new());
        }
        if self
            .http
            .iter()
            .chain(self.https.iter())
            .any(|p| p.has_credentials)
        {
            return None;
        }
        let mut env = Vec::new();
        if let Some(p) = &self.https {
            env.push((HTTPS_VARS[0], p.url.clone()));
        }
        if let Some(p) = &self.http {
            env.push((HTTP_VARS[0], p.url.clone()));
        }
        if !self.no_proxy.trim().is_empty() {
            env.push((NO_VARS[0], self.no_proxy.clone()));
        }
        Some(env)
    }

    /// The names of every variable this module reads (a Job builder removes them from
    /// anything else before setting its own).
    pub fn variables() -> impl Iterator<Item = &'static str> {
        HTTPS_VARS
            .into_iter()
            .chain(HTTP_VARS)
            .chain(ALL_VARS)
            .chain(NO_VARS)
    }
}

impl fmt::Display for ProxyConfig {
    /// The settings for a log line: proxies without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_enabled() {
            return f.write_str("no proxy");
        }
        let shown = |p: &Option<Proxy>| {
            p.as_ref()
                .map_or("direct", |p| p.shown.as_str())
                .to_string()
        };
        write!(
            f,
            "https via {}, http via {}, no_proxy {:?}",
            shown(&self.https),
            shown(&self.http),
            self.no_proxy
        )
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyConfig({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<ProxyConfig, ProxyError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(|n| map.get(n).cloned())
    }

    fn via(c: &ProxyConfig, url: &str) -> Option<String> {
        match c.route(&url.parse().unwrap()) {
            Route::Direct => None,
            Route::Proxy { proxy, .. } => Some(proxy.to_string()),
        }
    }

    #[test]
    fn https_and_http_destinations_use_their_own_proxy() {
        let c = config(&[
            ("HTTPS_PROXY", "http://secure.proxy:3128"),
            ("http_proxy", "plain.proxy:8080"),
        ])
        .unwrap();
        assert_eq!(
            via(&c, "https://s3.example.com/b").as_deref(),
            Some("http://secure.proxy:3128/")
        );
        assert_eq!(
            via(&c, "http://minio.example.com:9000/").as_deref(),
            Some("http://plain.proxy:8080/")
        );
        // Only one of them set: the other scheme goes direct.
        let c = config(&[("https_proxy", "http://p:1")]).unwrap();
        assert_eq!(via(&c, "http://a.example/"), None);
        assert!(via(&c, "https://a.example/").is_some());
        // ALL_PROXY fills in for both; the specific variable wins.
        let c = config(&[("ALL_PROXY", "http://all:1"), ("HTTP_PROXY", "http://h:2")]).unwrap();
        assert_eq!(via(&c, "https://x/").as_deref(), Some("http://all:1/"));
        assert_eq!(via(&c, "http://x/").as_deref(), Some("http://h:2/"));
        // Upper case wins over lower case.
        let c = config(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
        ])
        .unwrap();
        assert_eq!(via(&c, "https://x/").as_deref(), Some("http://upper:1/"));
        // Nothing set: everything direct.
        let c = config(&[]).unwrap();
        assert!(!c.is_enabled());
        assert_eq!(via(&c, "https://x/"), None);
    }

    #[test]
    fn no_proxy_matches_hosts_domains_ips_cidrs_and_star() {
        let c = config(&[
            ("HTTPS_PROXY", "http://p:3128"),
            (
                "NO_PROXY",
                "internal.corp, .svc.cluster.local,10.0.0.0/8, 192.168.1.7,[fd00::1]",
            ),
        ])
        .unwrap();
        for direct in [
            "https://internal.corp/",
            "https://s3.internal.corp/",
            "https://minio.backup.svc.cluster.local:9000/",
            "https://svc.cluster.local/",
            "https://10.1.2.3/",
            "https://192.168.1.7:9000/",
        ] {
            assert_eq!(via(&c, direct), None, "{direct}");
        }
        for proxied in [
            "https://s3.amazonaws.com/",
            "https://notinternal.corp/",
            "https://192.168.1.8/",
            "https://11.0.0.1/",
        ] {
            assert!(via(&c, proxied).is_some(), "{proxied}");
        }
        let c = config(&[("HTTPS_PROXY", "http://p:3128"), ("no_proxy", "*")]).unwrap();
        assert_eq!(via(&c, "https://anything.example/"), None);
        assert_eq!(
            via(&c, "https://10.1.2.3:9000/"),
            None,
            "`*` covers addresses too"
        );
    }

    #[test]
    fn credentials_become_basic_auth_and_are_never_shown() {
        let c = config(&[("HTTPS_PROXY", "http://svc-backup:s3cr%40t@proxy.corp:3128")]).unwrap();
        let Route::Proxy {
            proxy,
            authorization,
            key,
            ..
        } = c.route(&"https://s3.amazonaws.com/".parse().unwrap())
        else {
            panic!("not proxied");
        };
        assert_eq!(proxy.to_string(), "http://proxy.corp:3128/");
        assert!(!key.contains("s3cr"), "{key}");
        // base64("svc-backup:s3cr@t")
        assert_eq!(
            authorization.unwrap().to_str().unwrap(),
            "Basic c3ZjLWJhY2t1cDpzM2NyQHQ="
        );
        let shown = format!("{c} {c:?}");
        assert!(
            !shown.contains("s3cr") && !shown.contains("svc-backup"),
            "{shown}"
        );
        assert!(shown.contains("http://***@proxy.corp:3128"), "{shown}");
        assert_eq!(c.job_env(), None, "credentials never go into a Job");
    }

    #[test]
    fn unsupported_proxies_are_refused_without_showing_credentials() {
        for (value, reason) in [
            ("socks5://u:pw@p:1080", "only HTTP proxies"),
            ("https://u:pw@p:443", "only HTTP proxies"),
            ("http://", "not a proxy URL"),
        ] {
            let e = config(&[("HTTPS_PROXY", value)]).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(reason), "{value}: {text}");
            assert!(text.starts_with("HTTPS_PROXY="), "{text}");
            assert!(!text.contains("pw"), "{text}");
        }
    }

    #[test]
    fn jobs_get_the_same_proxies_without_credentials() {
        let c = config(&[
            ("https_proxy", "http://p:3128"),
            ("ALL_PROXY", "http://p:3128"),
            ("no_proxy", "10.0.0.0/8,.svc"),
        ])
        .unwrap();
        assert_eq!(
            c.job_env().unwrap(),
            vec![
                ("HTTPS_PROXY", "http://p:3128".to_string()),
                ("HTTP_PROXY", "http://p:3128".to_string()),
                ("NO_PROXY", "10.0.0.0/8,.svc".to_string()),
            ]
        );
        assert_eq!(ProxyConfig::none().job_env(), Some(Vec::new()));
        assert_eq!(c, c.clone());
        assert_ne!(c, ProxyConfig::none());
    }
}
