//! A TCP proxy that injects faults: cut connections after N bytes or N requests,
//! or refuse everything — to test S3 (or a database) failing mid-transfer.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{IoContext, Result};
use crate::http_framing::RequestTracker;
use crate::net::{LOCALHOST, host_port, loopback};

/// What the proxy does to the traffic. Byte and request counts are client→upstream
/// (uploads) and start from zero whenever a plan is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPlan {
    /// Forward everything.
    PassThrough,
    /// Reset every new connection right after accepting it (the server is "down").
    RefuseAll,
    /// Cut every connection once it alone has forwarded this many bytes upstream.
    CutEachConnectionAfterBytes(u64),
    /// Cut the connection during which the total upload passes this many bytes, then
    /// refuse everything: the storage went away for good.
    CutAfterBytes(u64),
    /// Cut the connection during which the total upload passes this many bytes, then
    /// forward normally again: a transient failure that a retry survives.
    CutOnceAfterBytes(u64),
    /// Forward the first N HTTP requests; cut the connection as request N+1 begins and
    /// refuse everything afterwards.
    CutAfterRequests(u64),
    /// Cut only the N-th HTTP request (1-based) as it begins; all others pass.
    CutRequest(u64),
}

/// Counters of what the proxy has seen since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted (including refused ones).
    pub connections: u64,
    /// Connections reset without forwarding anything.
    pub refused: u64,
    /// Connections cut by a fault.
    pub cuts: u64,
    /// HTTP requests that began (including the ones that were cut).
    pub requests: u64,
    /// Bytes forwarded client→upstream.
    pub bytes_up: u64,
    /// Bytes forwarded upstream→client.
    pub bytes_down: u64,
}

#[derive(Debug)]
struct State {
    plan: FaultPlan,
    /// Upload bytes since the plan was set.
    plan_bytes: u64,
    /// Requests since the plan was set.
    plan_requests: u64,
    /// A one-shot fault fired (CutOnceAfterBytes) or a permanent one tripped.
    tripped: bool,
    stats: ProxyStats,
    /// Sockets of open connections, so they can be cut from outside.
    open: Vec<(u64, TcpStream, TcpStream)>,
    next_id: u64,
}

impl State {
    fn refusing(&self) -> bool {
        match self.plan {
            FaultPlan::RefuseAll => true,
            FaultPlan::CutAfterBytes(_) | FaultPlan::CutAfterRequests(_) => self.tripped,
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
    upstream: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A pump thread that panicked leaves consistent counters behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fault-injecting TCP proxy on loopback; stops and cuts all its connections on drop.
#[derive(Debug)]
pub struct FaultyProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultyProxy {
    /// Proxies a free port on `127.0.0.1` to `upstream` (a loopback address).
    pub fn start(upstream: SocketAddr, plan: FaultPlan) -> Result<FaultyProxy> {
        FaultyProxy::start_on(IpAddr::V4(LOCALHOST), upstream, plan)
    }

    /// Like [`FaultyProxy::start`], listening on another loopback IP.
    pub fn start_on(listen: IpAddr, upstream: SocketAddr, plan: FaultPlan) -> Result<FaultyProxy> {
        let listen = loopback(listen)?;
        loopback(upstream.ip())?;
        let listener = TcpListener::bind((listen, 0))
            .context(|| format!("binding the fault proxy on {listen}"))?;
        let addr = listener
            .local_addr()
            .context(|| "reading the proxy address".to_owned())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                plan,
                plan_bytes: 0,
                plan_requests: 0,
                tripped: false,
                stats: ProxyStats::default(),
                open: Vec::new(),
                next_id: 0,
            }),
            stopping: AtomicBool::new(false),
            upstream,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("testkit-proxy-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .context(|| "spawning the proxy thread".to_owned())?
        };
        Ok(FaultyProxy {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The proxy's listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<ip>:<port>` of the proxy, for S3 clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", host_port(self.addr.ip(), self.addr.port()))
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Replaces the plan; its byte and request counters start from zero.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut state = self.shared.lock();
        state.plan = plan;
        state.plan_bytes = 0;
        state.plan_requests = 0;
        state.tripped = false;
    }

    /// The current plan.
    pub fn plan(&self) -> FaultPlan {
        self.shared.lock().plan
    }

    /// What the proxy has seen so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.lock().stats
    }

    /// Resets every open connection now (the plan stays as it is).
    pub fn cut_all(&self) {
        let mut state = self.shared.lock();
        let open = std::mem::take(&mut state.open);
        state.stats.cuts += open.len() as u64;
        drop(state);
        for (_, client, upstream) in open {
            reset(&client);
            reset(&upstream);
        }
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let open = std::mem::take(&mut self.shared.lock().open);
        for (_, client, upstream) in open {
            reset(&client);
            reset(&upstream);
        }
    }
}

/// Closes a socket with a TCP reset (linger 0) and wakes any thread blocked on it.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Both);
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = incoming else { continue };
        let refuse = {
            let mut state = shared.lock();
            state.stats.connections += 1;
            let refuse = state.refusing();
            if refuse {
                state.stats.refused += 1;
            }
            refuse
        };
        if refuse {
            reset(&client);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))
        else {
            shared.lock().stats.refused += 1;
            reset(&client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("testkit-proxy-conn".into())
            .spawn(move || serve(client, upstream, shared));
    }
}

/// Runs one proxied connection until either side closes or a fault cuts it.
fn serve(client: TcpStream, upstream: TcpStream, shared: Arc<Shared>) {
    let (Ok(client_w), Ok(upstream_r), Ok(client_reg), Ok(upstream_reg)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        reset(&client);
        reset(&upstream);
        return;
    };
    let id = {
        let mut state = shared.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.open.push((id, client_reg, upstream_reg));
        id
    };
    let down = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || pump_down(upstream_r, client_w, &shared))
    };
    pump_up(client, upstream, &shared, id);
    let _ = down.join();
    shared.lock().open.retain(|(open_id, _, _)| *open_id != id);
}

/// upstream → client: plain copy with a byte counter.
fn pump_down(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                shared.lock().stats.bytes_down += n as u64;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// client → upstream: applies the fault plan to every chunk.
fn pump_up(mut from: TcpStream, mut to: TcpStream, shared: &Shared, id: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut tracker = RequestTracker::default();
    let mut conn_bytes = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let starts = tracker.feed(chunk);
        let (forward, cut) = decide(shared, chunk.len(), &starts, conn_bytes);
        if forward > 0 && to.write_all(&chunk[..forward]).is_err() {
            break;
        }
        conn_bytes += forward as u64;
        if cut {
            let mut state = shared.lock();
            state.stats.cuts += 1;
            state.open.retain(|(open_id, _, _)| *open_id != id);
            drop(state);
            reset(&from);
            reset(&to);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Decides how many bytes of a chunk to forward and whether to cut afterwards.
/// Updates the shared counters for what is forwarded.
fn decide(shared: &Shared, len: usize, starts: &[usize], conn_bytes: u64) -> (usize, bool) {
    let mut state = shared.lock();
    let mut forward = len;
    let mut cut = false;
    // Request-based plans: find the first request start that must be cut.
    for &start in starts {
        if start >= forward {
            break;
        }
        state.plan_requests += 1;
        state.stats.requests += 1;
        let number = state.plan_requests;
        let cut_here = match state.plan {
            FaultPlan::CutAfterRequests(n) => number > n,
            FaultPlan::CutRequest(n) => number == n,
            _ => false,
        };
        if cut_here {
            forward = start;
            cut = true;
            if matches!(state.plan, FaultPlan::CutAfterRequests(_)) {
                state.tripped = true;
            }
        }
    }
    // Byte-based plans.
    let budget = match state.plan {
        FaultPlan::CutEachConnectionAfterBytes(n) => Some(n.saturating_sub(conn_bytes)),
        FaultPlan::CutAfterBytes(n) if !state.tripped => Some(n.saturating_sub(state.plan_bytes)),
        FaultPlan::CutOnceAfterBytes(n) if !state.tripped => {
            Some(n.saturating_sub(state.plan_bytes))
        }
        FaultPlan::RefuseAll => Some(0),
        _ => None,
    };
    if let Some(budget) = budget
        && (forward as u64) > budget
    {
        forward = budget as usize;
        cut = true;
        if matches!(
            state.plan,
            FaultPlan::CutAfterBytes(_) | FaultPlan::CutOnceAfterBytes(_)
        ) {
            state.tripped = true;
        }
    }
    if state.refusing() && !cut && matches!(state.plan, FaultPlan::CutAfterBytes(_)) {
        // Another connection tripped the permanent fault: this one dies too.
        forward = 0;
        cut = true;
    }
    state.plan_bytes += forward as u64;
    state.stats.bytes_up += forward as u64;
    (forward, cut)
}
