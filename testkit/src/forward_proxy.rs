//! An HTTP forward proxy on loopback, as corporate egress proxies work: `CONNECT host:port`
//! opens a tunnel (HTTPS), an absolute-form request (`GET http://host:port/path`) is forwarded
//! in origin form (plain HTTP). It records every request it got, so a test can prove that a
//! client went through it (or bypassed it), and can require proxy credentials (`407` without
//! them). Upstreams must be loopback addresses.
//!
//! Each forwarded plain-HTTP request gets its own upstream connection (`Connection: close`
//! both ways), which keeps the proxy free of response framing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{IoContext, Result};
use crate::net::{LOCALHOST, host_port, loopback};

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// `CONNECT`, `GET`, `PUT`, …
    pub method: String,
    /// The request target as sent: `host:port` for CONNECT, the absolute URL otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header, if any.
    pub proxy_authorization: Option<String>,
    /// Whether the proxy let it through (credentials accepted, upstream reached).
    pub forwarded: bool,
}

#[derive(Debug)]
struct Shared {
    seen: Mutex<Vec<ProxiedRequest>>,
    /// `Basic …` value required in `Proxy-Authorization`, when credentials are required.
    required: Option<String>,
    stopping: AtomicBool,
}

/// A forward proxy on a free port of `127.0.0.1`; stops on drop.
#[derive(Debug)]
pub struct ForwardProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl ForwardProxy {
    /// A proxy that forwards everything.
    pub fn start() -> Result<ForwardProxy> {
        Self::start_inner(None)
    }

    /// A proxy that answers `407 Proxy Authentication Required` unless the request carries
    /// `Proxy-Authorization: Basic base64(user:password)`.
    pub fn with_credentials(user: &str, password: &str) -> Result<ForwardProxy> {
        Self::start_inner(Some(format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes())
        )))
    }

    fn start_inner(required: Option<String>) -> Result<ForwardProxy> {
        let listener =
            TcpListener::bind((LOCALHOST, 0)).context(|| "binding the forward proxy".to_owned())?;
        let addr = listener
            .local_addr()
            .context(|| "reading the proxy address".to_owned())?;
        let shared = Arc::new(Shared {
            seen: Mutex::default(),
            required,
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("testkit-forward-proxy".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if shared.stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let shared = Arc::clone(&shared);
                        let _ = std::thread::Builder::new()
                            .name("testkit-forward-proxy-conn".into())
                            .spawn(move || {
                                let _ = serve(conn, &shared);
                            });
                    }
                })
                .context(|| "spawning the proxy thread".to_owned())?
        };
        Ok(ForwardProxy {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for `HTTPS_PROXY`/`HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", host_port(self.addr.ip(), self.addr.port()))
    }

    /// `http://user:password@127.0.0.1:<port>`.
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!(
            "http://{user}:{password}@{}",
            host_port(self.addr.ip(), self.addr.port())
        )
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Reads a request head (up to the blank line).
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
        if lines.len() > 200 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `host:port` (port defaulting to `default_port`) → a loopback socket address.
fn upstream_of(authority: &str, default_port: u16) -> Option<SocketAddr> {
    let authority = authority.rsplit('@').next()?;
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addr = with_port.to_socket_addrs().ok()?.next()?;
    loopback(addr.ip()).ok()?;
    Some(addr)
}

fn serve(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let authorization = header(&head, "proxy-authorization").map(str::to_string);
    let mut record = ProxiedRequest {
        method: method.clone(),
        target: target.clone(),
        proxy_authorization: authorization.clone(),
        forwarded: false,
    };
    let mut client = client;
    if let Some(required) = &shared.required
        && authorization.as_deref() != Some(required.as_str())
    {
        push(shared, record);
        client.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"testkit\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    if method == "CONNECT" {
        let Some(addr) = upstream_of(&target, 443) else {
            push(shared, record);
            client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        };
        let Ok(upstream) = TcpStream::connect(addr) else {
            push(shared, record);
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        };
        record.forwarded = true;
        push(shared, record);
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        // Bytes the client sent after the head (a TLS ClientHello) are in the reader's buffer.
        let buffered = reader.buffer().to_vec();
        let mut up = upstream.try_clone()?;
        up.write_all(&buffered)?;
        return pump(client, upstream);
    }
    // Absolute form: http://host[:port]/path?query
    let Some(rest) = target.strip_prefix("http://") else {
        push(shared, record);
        client.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some(addr) = upstream_of(authority, 80) else {
        push(shared, record);
        client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    let Ok(mut upstream) = TcpStream::connect(addr) else {
        push(shared, record);
        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    record.forwarded = true;
    push(shared, record);
    let version = head[0].rsplit(' ').next().unwrap_or("HTTP/1.1");
    let mut out = format!("{method} {path} {version}\r\n");
    for line in head.iter().skip(1) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["proxy-authorization", "proxy-connection", "connection"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes())?;
    upstream.write_all(reader.buffer())?;
    // The rest of the request body, while the answer comes back.
    let up = upstream.try_clone()?;
    let client_reader = client.try_clone()?;
    let body = std::thread::spawn(move || copy(client_reader, up));
    // The answer: its head gets `Connection: close` (this connection ends with it).
    let mut from_upstream = BufReader::new(upstream.try_clone()?);
    let answer = read_head(&mut from_upstream)?;
    let mut out = String::new();
    for (i, line) in answer.iter().enumerate() {
        if i > 0
            && line
                .split(':')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;
    client.write_all(from_upstream.buffer())?;
    let mut rest = from_upstream.into_inner();
    let _ = std::io::copy(&mut rest, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = body.join();
    Ok(())
}

fn push(shared: &Shared, record: ProxiedRequest) {
    shared
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(record);
}

/// Copies both ways until either side closes.
fn pump(client: TcpStream, upstream: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(None)?;
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || copy(c2, u2));
    copy(upstream, client);
    let _ = up.join();
    Ok(())
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn forwards_absolute_form_and_tunnels_connect() {
        // An upstream that answers every request with its request line.
        let upstream = TcpListener::bind((LOCALHOST, 0)).unwrap();
        let up_addr = upstream.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in upstream.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let head = read_head(&mut reader).unwrap_or_default();
                let line = head.first().cloned().unwrap_or_default();
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{line}",
                    line.len()
                );
            }
        });
        let proxy = ForwardProxy::with_credentials("u", "p").unwrap();
        let auth = format!("Basic {}", base64(b"u:p"));
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        write!(
            s,
            "GET http://{up_addr}/x?y=1 HTTP/1.1\r\nHost: {up_addr}\r\nProxy-Authorization: {auth}\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with("GET /x?y=1 HTTP/1.1"),
            "origin form upstream: {answer}"
        );

        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        write!(
            s,
            "CONNECT {up_addr} HTTP/1.1\r\nHost: {up_addr}\r\nProxy-Authorization: {auth}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let head = read_head(&mut reader).unwrap();
        assert!(head[0].contains("200"), "{head:?}");
        write!(s, "GET /tunnelled HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let head = read_head(&mut reader).unwrap();
        assert!(head[0].contains("200"), "{head:?}");

        // Without credentials: 407, nothing forwarded.
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        write!(s, "CONNECT {up_addr} HTTP/1.1\r\nHost: {up_addr}\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");

        let seen = proxy.requests();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].target, format!("http://{up_addr}/x?y=1"));
        assert!(seen[0].forwarded);
        assert_eq!(seen[1].method, "CONNECT");
        assert_eq!(seen[1].target, up_addr.to_string());
        assert!(seen[1].forwarded);
        assert!(!seen[2].forwarded);
        assert_eq!(seen[2].proxy_authorization, None);
    }
}
