//! Loopback ports and addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// The default listen address of every service: `127.0.0.1`.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Returns a TCP port on `127.0.0.1` that was free a moment ago.
///
/// The port is found by binding to port 0 and releasing it, so another process
/// may in theory take it before the caller binds; the services in this crate
/// retry with a new port when that happens.
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(LOCALHOST)).expect("binding an ephemeral port on 127.0.0.1")
}

/// Returns a TCP port that was free a moment ago on the given loopback address.
pub fn free_port_on(ip: IpAddr) -> Result<u16> {
    let ip = loopback(ip)?;
    let listener =
        TcpListener::bind((ip, 0)).context(|| format!("binding an ephemeral port on {ip}"))?;
    let port = listener
        .local_addr()
        .context(|| "reading the bound address".to_owned())?
        .port();
    Ok(port)
}

/// Parses `ip` and checks that it is a loopback address (127.0.0.0/8 or ::1).
///
/// Tests only ever target loopback addresses; anything else is refused.
pub fn parse_loopback(ip: &str) -> Result<IpAddr> {
    let parsed: IpAddr = ip
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("{ip:?} is not an IP address")))?;
    loopback(parsed)
}

/// Checks that `ip` is a loopback address.
pub fn loopback(ip: IpAddr) -> Result<IpAddr> {
    if ip.is_loopback() {
        Ok(ip)
    } else {
        Err(Error::InvalidArgument(format!(
            "{ip} is not a loopback address; test services only listen on 127.0.0.0/8 or ::1"
        )))
    }
}

/// Waits until a TCP connection to `addr` succeeds, polling every 20 ms.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("a TCP listener on {addr}"),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Returns true when nothing accepts TCP connections on `addr` any more.
pub fn port_is_closed(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
}

/// Formats `ip:port` for URLs, with brackets around IPv6 addresses.
pub(crate) fn host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((LOCALHOST, port)).expect("port is free");
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        assert!(parse_loopback("10.0.0.1").is_err());
        assert!(parse_loopback("not-an-ip").is_err());
        assert_eq!(
            parse_loopback("127.0.3.7").unwrap(),
            "127.0.3.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn free_port_on_other_loopback_ip() {
        let ip = parse_loopback("127.0.3.7").unwrap();
        let port = free_port_on(ip).unwrap();
        TcpListener::bind((ip, port)).expect("port is free on 127.0.3.7");
    }

    #[test]
    fn wait_for_port_times_out_on_closed_port() {
        let addr = SocketAddr::new(IpAddr::V4(LOCALHOST), free_port());
        let err = wait_for_port(addr, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(port_is_closed(addr));
    }
}
