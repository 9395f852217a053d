//! Live progress: byte counters shared by the pipeline and a structured log line every few
//! seconds, so `kubectl logs -f` shows a running backup or restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::contract::ProgressLine;

/// Byte counters of one pipeline run.
#[derive(Debug)]
pub struct Progress {
    phase: &'static str,
    started: Instant,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressSnapshot {
    /// Bytes read from the source (dump output on backup, stored bytes on restore).
    pub bytes_in: u64,
    /// Bytes written to the destination (stored bytes on backup, restored bytes on restore).
    pub bytes_out: u64,
    /// Seconds since the start.
    pub elapsed_seconds: f64,
    /// `bytes_in` per second since the start.
    pub bytes_per_second: f64,
}

impl Progress {
    /// New counters for `phase` (`backup`, `restore`, `verify`).
    pub fn new(phase: &'static str) -> Arc<Self> {
        Arc::new(Self {
            phase,
            started: Instant::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        })
    }

    /// Count bytes read from the source.
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Count bytes written to the destination.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let elapsed = self.started.elapsed().as_secs_f64();
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        ProgressSnapshot {
            bytes_in,
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            elapsed_seconds: elapsed,
            bytes_per_second: if elapsed > 0.0 {
                bytes_in as f64 / elapsed
            } else {
                0.0
            },
        }
    }

    /// Emit one structured progress log line.
    pub fn log(&self, done: bool) {
        let s = self.snapshot();
        ProgressLine {
            phase: self.phase,
            done,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            bytes_per_second: s.bytes_per_second.round() as u64,
            elapsed_seconds: (s.elapsed_seconds * 10.0).round() / 10.0,
        }
        .log();
    }

    /// Log every `interval` until the returned guard is dropped (then log a final line).
    pub fn start_reporter(self: &Arc<Self>, interval: Duration) -> ReporterGuard {
        let me = Arc::clone(self);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.log(false);
            }
        });
        ReporterGuard {
            handle,
            progress: Arc::clone(self),
        }
    }
}

/// Stops the periodic progress log on drop and writes a last line.
pub struct ReporterGuard {
    handle: tokio::task::JoinHandle<()>,
    progress: Arc<Progress>,
}

impl Drop for ReporterGuard {
    fn drop(&mut self) {
        self.handle.abort();
        self.progress.log(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rate() {
        let p = Progress::new("backup");
        p.add_in(1000);
        p.add_out(400);
        p.add_in(24);
        let s = p.snapshot();
        assert_eq!((s.bytes_in, s.bytes_out), (1024, 400));
        assert!(s.bytes_per_second > 0.0);
    }
}
