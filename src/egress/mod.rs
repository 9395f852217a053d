//! Where the operator and the agent may connect when a tenant names the address: BackupStorage
//! endpoints and webhook URLs. The check runs on the **resolved** address, inside the HTTP
//! clients' connectors, right before the socket is opened ([`s3`] for the AWS SDK, [`webhook`]
//! for notifications), so a name that resolves differently later (DNS rebinding) is checked again
//! on every new connection, and a refused address never sees a packet.
//!
//! - Link-local addresses (`169.254.0.0/16`, `fe80::/10`: cloud metadata services), the
//!   unspecified address, broadcast and multicast are refused always.
//! - Internal addresses — loopback, RFC 1918, CGNAT (`100.64.0.0/10`), IPv6 unique-local,
//!   and the other special-purpose ranges where cluster Pods and Services live — are refused
//!   unless the platform team allows a range with `--egress-allow-cidrs` /
//!   `DG_EGRESS_ALLOW_CIDRS` ([`EgressPolicy::from_list`]); the operator passes the same list to
//!   its agent Jobs ([`ENV_ALLOW_CIDRS`]).
//! - Everything else (public addresses) is allowed.
//!
//! IPv4 addresses embedded in IPv6 ones (`::ffff:a.b.c.d`, `64:ff9b::/96`, `2002::/16`) are
//! judged as the IPv4 address they reach. Errors name the policy and the host as written, never
//! the resolved address or anything the endpoint answered.
//!
//! [`cap`] bounds every read from such an endpoint.
//!
//! [`proxy`]: the same clients honour `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`. Through a proxy,
//! the destination host is resolved and checked before the request is handed to the proxy
//! (the proxy itself is platform configuration and is not checked).

pub mod cap;
pub mod proxy;
pub mod s3;
pub mod webhook;

pub use proxy::ProxyConfig;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

/// The environment variable (and the operator's and agent's flag `--egress-allow-cidrs`) that
/// lists the internal ranges tenants may reach, comma-separated.
pub const ENV_ALLOW_CIDRS: &str = "DG_EGRESS_ALLOW_CIDRS";

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?} (expected address/prefix, e.g. 10.0.0.0/8 or fd00::/8)")]
pub struct CidrError(pub String);

impl Cidr {
    /// Whether `ip` lies in this network (an IPv4 network never contains an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(first: u16, second: u16, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V6(Ipv6Addr::new(first, second, 0, 0, 0, 0, 0, 0)),
            prefix,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What kind of address a connection would reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// `169.254.0.0/16`, `fe80::/10`: cloud metadata and other on-link services.
    LinkLocal,
    /// `0.0.0.0/8`, `::` (Linux connects them to the local host).
    Unspecified,
    /// Multicast and the IPv4 broadcast address.
    Multicast,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// Carrier-grade NAT, `100.64.0.0/10` (often Pod or Service ranges).
    SharedAddressSpace,
    /// IPv6 unique-local `fc00::/7` (and the old site-local `fec0::/10`).
    UniqueLocal,
    /// Other special-purpose ranges (IETF, benchmarking, documentation, reserved).
    Reserved,
    /// A public address.
    Public,
}

impl AddressClass {
    /// Refused whatever the platform team allows.
    pub fn always_refused(self) -> bool {
        matches!(
            self,
            AddressClass::LinkLocal | AddressClass::Unspecified | AddressClass::Multicast
        )
    }

    /// How errors name the class.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::LinkLocal => "link-local (cloud metadata)",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast/broadcast",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private (RFC 1918)",
            AddressClass::SharedAddressSpace => "shared (CGNAT)",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Reserved => "special-purpose",
            AddressClass::Public => "public",
        }
    }

    /// The class of `ip`; an IPv6 address that embeds an IPv4 one is judged by the stricter.
    pub fn of(ip: IpAddr) -> AddressClass {
        match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => {
                let own = classify_v6(v6);
                match embedded_v4(v6) {
                    Some(v4) => stricter(own, classify_v4(v4)),
                    None => own,
                }
            }
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn stricter(a: AddressClass, b: AddressClass) -> AddressClass {
    let rank = |c: AddressClass| {
        if c.always_refused() {
            2
        } else if c == AddressClass::Public {
            0
        } else {
            1
        }
    };
    if rank(b) > rank(a) { b } else { a }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    const TABLE: &[(Cidr, AddressClass)] = &[
        (Cidr::v4(169, 254, 0, 0, 16), AddressClass::LinkLocal),
        (Cidr::v4(0, 0, 0, 0, 8), AddressClass::Unspecified),
        (Cidr::v4(224, 0, 0, 0, 4), AddressClass::Multicast),
        (Cidr::v4(255, 255, 255, 255, 32), AddressClass::Multicast),
        (Cidr::v4(127, 0, 0, 0, 8), AddressClass::Loopback),
        (Cidr::v4(10, 0, 0, 0, 8), AddressClass::Private),
        (Cidr::v4(172, 16, 0, 0, 12), AddressClass::Private),
        (Cidr::v4(192, 168, 0, 0, 16), AddressClass::Private),
        (
            Cidr::v4(100, 64, 0, 0, 10),
            AddressClass::SharedAddressSpace,
        ),
        (Cidr::v4(192, 0, 0, 0, 24), AddressClass::Reserved),
        (Cidr::v4(192, 0, 2, 0, 24), AddressClass::Reserved),
        (Cidr::v4(198, 18, 0, 0, 15), AddressClass::Reserved),
        (Cidr::v4(198, 51, 100, 0, 24), AddressClass::Reserved),
        (Cidr::v4(203, 0, 113, 0, 24), AddressClass::Reserved),
        (Cidr::v4(240, 0, 0, 0, 4), AddressClass::Reserved),
    ];
    lookup(TABLE, IpAddr::V4(ip))
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    const TABLE: &[(Cidr, AddressClass)] = &[
        (Cidr::v6(0xfe80, 0, 10), AddressClass::LinkLocal),
        (Cidr::v6(0xff00, 0, 8), AddressClass::Multicast),
        (Cidr::v6(0xfc00, 0, 7), AddressClass::UniqueLocal),
        (Cidr::v6(0xfec0, 0, 10), AddressClass::UniqueLocal),
        (Cidr::v6(0x2001, 0x0db8, 32), AddressClass::Reserved),
        (Cidr::v6(0x0100, 0, 64), AddressClass::Reserved),
    ];
    lookup(TABLE, IpAddr::V6(ip))
}

fn lookup(table: &[(Cidr, AddressClass)], ip: IpAddr) -> AddressClass {
    table
        .iter()
        .find(|(c, _)| c.contains(ip))
        .map_or(AddressClass::Public, |(_, class)| *class)
}

/// The IPv4 address an IPv6 address reaches: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |a: u16, b: u16| Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8);
    if let Some(v4) = ip.to_ipv4() {
        // `to_ipv4` also maps `::1` to 0.0.0.1; loopback is classified on its own.
        return (!ip.is_loopback()).then_some(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
        return Some(low(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

/// Why a connection was refused before it was opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The address is of a kind nothing may reach (cloud metadata among them).
    #[error(
        "egress policy refused {host}: it is a {class} address, which DataGuardian never connects to"
    )]
    AlwaysRefused { host: String, class: AddressClass },
    /// An internal address the platform team has not allowed.
    #[error(
        "egress policy refused {host}: it is a {class} address and not in the operator's allowed ranges (--egress-allow-cidrs / DG_EGRESS_ALLOW_CIDRS)"
    )]
    NotAllowed { host: String, class: AddressClass },
    /// The name did not resolve.
    #[error("could not resolve {host}")]
    Unresolved { host: String },
}

/// The operator-wide egress policy (cheap to clone): the internal ranges tenants may reach,
/// and the proxies connections go through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EgressPolicy {
    inner: Arc<Policy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Policy {
    allowed: Vec<Cidr>,
    proxy: ProxyConfig,
}

impl EgressPolicy {
    /// A policy that allows these internal ranges.
    pub fn allowing(allowed: Vec<Cidr>) -> Self {
        EgressPolicy {
            inner: Arc::new(Policy {
                allowed,
                proxy: ProxyConfig::none(),
            }),
        }
    }

    /// The same policy, its connections going through `proxy` (destinations are still checked).
    pub fn with_proxy(mut self, proxy: ProxyConfig) -> Self {
        Arc::make_mut(&mut self.inner).proxy = proxy;
        self
    }

    /// The proxies connections go through.
    pub fn proxy(&self) -> &ProxyConfig {
        &self.inner.proxy
    }

    /// Reads a comma-separated list of CIDRs (empty = no internal range allowed).
    pub fn from_list(list: &str) -> Result<Self, CidrError> {
        let allowed = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::allowing(allowed))
    }

    /// The allowed ranges, as [`EgressPolicy::from_list`] reads them.
    pub fn to_list(&self) -> String {
        self.inner
            .allowed
            .iter()
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether a connection to `ip` (for `host`, as the tenant wrote it) may be opened.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), EgressError> {
        let class = AddressClass::of(ip);
        let host = host.to_string();
        if class.always_refused() {
            return Err(EgressError::AlwaysRefused { host, class });
        }
        if class == AddressClass::Public {
            return Ok(());
        }
        let targets = std::iter::once(ip).chain(match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        });
        let mut allowed = false;
        for target in targets {
            allowed |= self.inner.allowed.iter().any(|c| c.contains(target));
        }
        if allowed {
            Ok(())
        } else {
            Err(EgressError::NotAllowed { host, class })
        }
    }

    /// Resolves `host` and checks every address it resolves to: one refused address refuses
    /// the name (a resolver answering with a public and an internal address cannot smuggle
    /// the internal one through).
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, EgressError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check(host, ip)?;
            return Ok(vec![ip]);
        }
        let unresolved = || EgressError::Unresolved {
            host: host.to_string(),
        };
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((bare, 0))
            .await
            .map_err(|_| unresolved())?
            .map(|a| a.ip())
            .collect();
        if addrs.is_empty() {
            return Err(unresolved());
        }
        for ip in &addrs {
            self.check(host, *ip)?;
        }
        Ok(addrs)
    }
}

/// Whether `host` (from a URI; IPv6 in brackets) is an IP literal, and which.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The egress refusal somewhere in `error`'s source chain, if that is why it failed.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<EgressError>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
