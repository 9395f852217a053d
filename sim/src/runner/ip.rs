//! Pod IPs: each pod gets its own loopback address `127.N.x.y`.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so a server bound to `127.N.x.y:5432` in one pod does
//! not clash with the same port in another pod. `N` (the prefix) is claimed per runner with an
//! exclusive `flock` on `/tmp/kube-sim-ip-prefix-N.lock`, so that runners in concurrently running
//! test processes never hand out the same address.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::error::RunnerError;

/// A claimed second octet `N` for pod IPs `127.N.x.y`. The claim lasts as long as the value.
#[derive(Debug)]
pub struct IpPrefix {
    octet: u8,
    _lock: Option<File>,
}

impl IpPrefix {
    /// Claims the first free `N` in 1..=254 across all processes of this machine.
    pub fn claim() -> Result<Self, RunnerError> {
        let mut last_err = String::from("all prefixes are taken");
        for n in 1..=254u8 {
            let path = lock_path(n);
            let file = match std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) => {
                    last_err = format!("{}: {e}", path.display());
                    continue;
                }
            };
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(IpPrefix {
                    octet: n,
                    _lock: Some(file),
                });
            }
        }
        Err(RunnerError::NoIpPrefix(last_err))
    }

    /// A fixed prefix without a cross-process claim (for a runner known to be alone).
    pub fn fixed(octet: u8) -> Self {
        IpPrefix { octet, _lock: None }
    }

    /// The second octet.
    pub fn octet(&self) -> u8 {
        self.octet
    }
}

fn lock_path(n: u8) -> PathBuf {
    std::env::temp_dir().join(format!("kube-sim-ip-prefix-{n}.lock"))
}

/// Hands out unique addresses `127.N.x.y` (x in 0..=255, y in 1..=254), lowest free first, and
/// takes them back when a pod's processes are gone.
#[derive(Debug)]
pub struct IpPool {
    octet: u8,
    /// Addresses returned to the pool (below `next`), reused lowest first.
    free: BTreeSet<u32>,
    /// Index of the next never-used address.
    next: u32,
    in_use: usize,
}

/// Usable addresses per `x` block: y in 1..=254.
const PER_BLOCK: u32 = 254;

impl IpPool {
    /// A pool for `127.<octet>.x.y`.
    pub fn new(octet: u8) -> Self {
        IpPool {
            octet,
            free: BTreeSet::new(),
            // 127.0.0.y holds the host's own 127.0.0.1: never hand out that block.
            next: if octet == 0 { PER_BLOCK } else { 0 },
            in_use: 0,
        }
    }

    fn addr(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::new(
            127,
            self.octet,
            (index / PER_BLOCK) as u8,
            (index % PER_BLOCK + 1) as u8,
        )
    }

    /// The next free address, or `None` when all are in use.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let index = match self.free.pop_first() {
            Some(i) => i,
            None if self.next < 256 * PER_BLOCK => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.in_use += 1;
        Some(self.addr(index))
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        let [a, b, x, y] = ip.octets();
        if a != 127 || b != self.octet || y == 0 || y == 255 {
            return;
        }
        let index = x as u32 * PER_BLOCK + (y as u32 - 1);
        if index < self.next && self.free.insert(index) {
            self.in_use -= 1;
        }
    }

    /// How many addresses are handed out.
    pub fn in_use(&self) -> usize {
        self.in_use
    }
}
