//! A TCP proxy that injects faults: cut connections after N bytes or N requests,
//! or refuse everything — to test S3 (or a database) failing mid-transfer.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{IoContext, Result};
use crate::http_framing::RequestTracker;
use crate::net::{LOCALHOST, host_port, loopback};

/// What the proxy does to the traffic. "Upload" is client→upstream, "download" is
/// upstream→client. Byte and request counts start from zero whenever a plan is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPlan {
    /// Forward everything.
    PassThrough,
    /// Reset every new connection right after accepting it, and open ones as soon as they
    /// move data (the server is "down").
    RefuseAll,
    /// Cut every connection once it alone has uploaded this many bytes.
    CutEachConnectionAfterBytes(u64),
    /// Cut the connection during which the total upload passes this many bytes, then
    /// refuse everything: the storage went away for good.
    CutAfterBytes(u64),
    /// Cut the connection during which the total upload passes this many bytes, then
    /// forward normally again: a transient failure that a retry survives.
    CutOnceAfterBytes(u64),
    /// Like [`FaultPlan::CutAfterBytes`], counting downloaded bytes (a restore's read).
    CutDownloadAfterBytes(u64),
    /// Like [`FaultPlan::CutOnceAfterBytes`], counting downloaded bytes.
    CutDownloadOnceAfterBytes(u64),
    /// Forward the first N HTTP requests; cut the connection as request N+1 begins and
    /// refuse everything afterwards.
    CutAfterRequests(u64),
    /// Cut only the N-th HTTP request (1-based) as it begins; all others pass.
    CutRequest(u64),
    /// Stop moving bytes in both directions on every connection, without closing
    /// anything (a hung server), until another plan is set.
    Stall,
    /// Forward this many upload bytes, then behave like [`FaultPlan::Stall`].
    StallAfterBytes(u64),
    /// Forward this many download bytes, then behave like [`FaultPlan::Stall`].
    StallDownloadAfterBytes(u64),
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
    plan_up: u64,
    /// Download bytes since the plan was set.
    plan_down: u64,
    /// Requests since the plan was set.
    plan_requests: u64,
    /// The plan's fault has fired (one-shot faults pass again; permanent ones refuse).
    tripped: bool,
    stats: ProxyStats,
    /// Sockets of open connections, so they can be cut from outside.
    open: Vec<(u64, TcpStream, TcpStream)>,
    next_id: u64,
}

impl State {
    /// New connections are reset.
    fn refusing(&self) -> bool {
        match self.plan {
            FaultPlan::RefuseAll => true,
            FaultPlan::CutAfterBytes(_)
            | FaultPlan::CutDownloadAfterBytes(_)
            | FaultPlan::CutAfterRequests(_) => self.tripped,
            _ => false,
        }
    }

    /// No bytes move in either direction.
    fn stalled(&self) -> bool {
        match self.plan {
            FaultPlan::Stall => true,
            FaultPlan::StallAfterBytes(_) | FaultPlan::StallDownloadAfterBytes(_) => self.tripped,
            _ => false,
        }
    }

    fn is_open(&self, id: u64) -> bool {
        self.open.iter().any(|(open_id, _, _)| *open_id == id)
    }
}

/// What to do with (part of) a chunk that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Everything was forwarded.
    Continue,
    /// Forward the allowed bytes, then reset the connection.
    Cut,
    /// Forward the allowed bytes, then hold the rest until the stall ends.
    Stall,
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
                plan_up: 0,
                plan_down: 0,
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
        state.plan_up = 0;
        state.plan_down = 0;
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
        std::thread::spawn(move || pump(upstream_r, client_w, &shared, id, Direction::Down))
    };
    pump(client, upstream, &shared, id, Direction::Up);
    let _ = down.join();
    shared.lock().open.retain(|(open_id, _, _)| *open_id != id);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// client → upstream
    Up,
    /// upstream → client
    Down,
}

/// Copies one direction of a connection, applying the fault plan to every chunk.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, id: u64, dir: Direction) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut tracker = RequestTracker::default();
    let mut conn_bytes = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut starts: VecDeque<usize> = match dir {
            Direction::Up => tracker.feed(&buf[..n]).into(),
            Direction::Down => VecDeque::new(),
        };
        let mut offset = 0;
        while offset < n {
            let (forward, then) = decide(shared, dir, offset, n - offset, &mut starts, conn_bytes);
            if forward > 0 && to.write_all(&buf[offset..offset + forward]).is_err() {
                return finish(shared, id, &from, &to, false);
            }
            offset += forward;
            conn_bytes += forward as u64;
            match then {
                Then::Continue => {}
                Then::Cut => return finish(shared, id, &from, &to, true),
                Then::Stall => {
                    if !wait_out_stall(shared, id) {
                        return finish(shared, id, &from, &to, false);
                    }
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Ends a pump: on a cut, counts it and resets both sockets.
fn finish(shared: &Shared, id: u64, from: &TcpStream, to: &TcpStream, cut: bool) {
    if cut {
        let mut state = shared.lock();
        if state.is_open(id) {
            state.stats.cuts += 1;
            state.open.retain(|(open_id, _, _)| *open_id != id);
        }
    }
    reset(from);
    reset(to);
}

/// Sleeps while the proxy is stalled; false if the connection was cut or the proxy stops.
fn wait_out_stall(shared: &Shared, id: u64) -> bool {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        {
            let state = shared.lock();
            if !state.is_open(id) {
                return false;
            }
            if !state.stalled() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Decides how many bytes of `chunk[offset..offset + len]` to forward and what happens
/// next, and updates the counters for what is forwarded. `starts` holds the chunk offsets
/// where HTTP requests begin that have not been counted yet.
fn decide(
    shared: &Shared,
    dir: Direction,
    offset: usize,
    len: usize,
    starts: &mut VecDeque<usize>,
    conn_bytes: u64,
) -> (usize, Then) {
    let mut state = shared.lock();
    if state.stalled() {
        return (0, Then::Stall);
    }
    if state.refusing() {
        // A permanent fault tripped (here or on another connection): this one dies too.
        return (0, Then::Cut);
    }
    let mut forward = len;
    let mut then = Then::Continue;
    // Request-based plans: count the requests that begin in the forwarded range.
    while let Some(&start) = starts.front() {
        if start >= offset + forward {
            break;
        }
        starts.pop_front();
        state.plan_requests += 1;
        state.stats.requests += 1;
        let number = state.plan_requests;
        let cut_here = match state.plan {
            FaultPlan::CutAfterRequests(n) => number > n,
            FaultPlan::CutRequest(n) => number == n,
            _ => false,
        };
        if cut_here {
            forward = start - offset;
            then = Then::Cut;
            if matches!(state.plan, FaultPlan::CutAfterRequests(_)) {
                state.tripped = true;
            }
            break;
        }
    }
    // Byte-based plans.
    let (up, down) = (state.plan_up, state.plan_down);
    let budget = match (state.plan, dir) {
        (FaultPlan::CutEachConnectionAfterBytes(n), Direction::Up) => {
            Some((n.saturating_sub(conn_bytes), Then::Cut))
        }
        (FaultPlan::CutAfterBytes(n) | FaultPlan::CutOnceAfterBytes(n), Direction::Up)
            if !state.tripped =>
        {
            Some((n.saturating_sub(up), Then::Cut))
        }
        (
            FaultPlan::CutDownloadAfterBytes(n) | FaultPlan::CutDownloadOnceAfterBytes(n),
            Direction::Down,
        ) if !state.tripped => Some((n.saturating_sub(down), Then::Cut)),
        (FaultPlan::StallAfterBytes(n), Direction::Up) => Some((n.saturating_sub(up), Then::Stall)),
        (FaultPlan::StallDownloadAfterBytes(n), Direction::Down) => {
            Some((n.saturating_sub(down), Then::Stall))
        }
        _ => None,
    };
    if let Some((budget, fault)) = budget
        && (forward as u64) > budget
    {
        forward = budget as usize;
        then = fault;
        if !matches!(state.plan, FaultPlan::CutEachConnectionAfterBytes(_)) {
            state.tripped = true;
        }
    }
    match dir {
        Direction::Up => {
            state.plan_up += forward as u64;
            state.stats.bytes_up += forward as u64;
        }
        Direction::Down => {
            state.plan_down += forward as u64;
            state.stats.bytes_down += forward as u64;
        }
    }
    (forward, then)
}
