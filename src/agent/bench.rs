//! `dataguardian agent bench`: the data path's core — compression, age encryption and SHA-256,
//! exactly as a backup runs them ([`super::pipeline::encode_stream`]) — on generated data of
//! mixed compressibility, into a sink that discards it. It answers "how fast can this node
//! back up, and with how much memory?" without a database or a storage, and it is what the CI
//! performance gate measures (instructions per MiB under callgrind, peak RSS; `tests/perf_gate.rs`).
//!
//! The data is deterministic for a seed: a third random bytes (incompressible, like already
//! compressed columns), two thirds CSV-like rows with counters and repeated words (like a
//! dump's COPY lines). A fresh age key is made for each run; nothing is written anywhere.
//!
//! `--jobs N` runs N such streams at once, as a parallel backup does (the data split among
//! them, stream `i` generated from `seed + i`, zstd's threads shared among the streams as in
//! a backup: [`zstd_workers`]), so the memory of the parallel layout's data path is measured
//! the same way.

use std::io::{self, Read, Write};
use std::time::Instant;

use super::compress::{Compression, zstd_workers};
use super::crypto::Recipients;
use super::error::{AgentError, Result};
use super::pipeline::{StreamStats, encode_stream};
use super::progress::Progress;
use super::storage::SinkWriter;

/// What one bench run measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// Bytes fed to the pipeline.
    pub raw_bytes: u64,
    /// Bytes the pipeline produced (compressed and encrypted).
    pub stored_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// MiB of input per second.
    pub mib_per_second: f64,
    /// The process's peak resident set size so far, in KiB (`getrusage`).
    pub peak_rss_kib: u64,
    /// The peak of the process's anonymous resident memory (heap and stacks: what the data
    /// path allocates), in KiB, sampled from `/proc/self/status` every few milliseconds while
    /// the streams run; 0 where `/proc` is not available.
    pub peak_rss_anon_kib: u64,
    /// The process's resident file-backed pages (mostly the binary's own code) at the end, in
    /// KiB; 0 where `/proc` is not available. It depends on the binary's size and build profile,
    /// not on the data path.
    pub rss_file_kib: u64,
    /// The compression used.
    pub compression: String,
    /// Streams run at once.
    pub jobs: usize,
}

/// Generated input: `remaining` bytes, in 64 KiB blocks alternating between random and
/// row-like content.
pub struct MixedData {
    remaining: u64,
    state: u64,
    block: Vec<u8>,
    pos: usize,
    blocks: u64,
    row: u64,
}

const BLOCK: usize = 64 << 10;

impl MixedData {
    /// `bytes` of data for `seed`.
    pub fn new(bytes: u64, seed: u64) -> Self {
        MixedData {
            remaining: bytes,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            block: Vec::with_capacity(BLOCK),
            pos: 0,
            blocks: 0,
            row: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn refill(&mut self) {
        self.block.clear();
        self.pos = 0;
        if self.blocks.is_multiple_of(3) {
            while self.block.len() < BLOCK {
                let v = self.next_u64();
                self.block.extend_from_slice(&v.to_le_bytes());
            }
        } else {
            const WORDS: [&str; 8] = [
                "shipped", "pending", "refunded", "paid", "cart", "gift", "express", "standard",
            ];
            while self.block.len() < BLOCK {
                self.row += 1;
                let r = self.next_u64();
                let line = format!(
                    "{}\tcustomer-{}\t{}\t{}.{:02}\t2026-12-{:02} 10:{:02}:{:02}+00\t{}\n",
                    self.row,
                    r % 50_000,
                    WORDS[(r >> 16) as usize % WORDS.len()],
                    (r >> 24) % 1000,
                    (r >> 34) % 100,
                    1 + (r >> 40) % 28,
                    (r >> 45) % 60,
                    (r >> 51) % 60,
                    WORDS[(r >> 57) as usize % WORDS.len()],
                );
                self.block.extend_from_slice(line.as_bytes());
            }
            self.block.truncate(BLOCK);
        }
        self.blocks += 1;
    }
}

impl Read for MixedData {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.pos == self.block.len() {
            self.refill();
        }
        let n = buf
            .len()
            .min(self.block.len() - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A sink that keeps nothing.
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SinkWriter for Discard {
    fn close(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

/// The process's peak RSS in KiB.
pub fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc == 0 {
        u64::try_from(usage.ru_maxrss).unwrap_or(0)
    } else {
        0
    }
}

/// A `kB` field of `/proc/self/status` (e.g. `RssAnon`), in KiB.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Runs the pipeline core over `mib` MiB of data for `seed`, in `jobs` concurrent streams.
pub fn run(mib: u64, seed: u64, compression: Compression, jobs: usize) -> Result<BenchReport> {
    if mib == 0 {
        return Err(AgentError::Config("--mib must be at least 1".into()));
    }
    if jobs == 0 || jobs as u64 > mib {
        return Err(AgentError::Config(format!(
            "--jobs must be between 1 and --mib ({mib}), got {jobs}"
        )));
    }
    let identity = age::x25519::Identity::generate();
    let recipients = Recipients::parse([identity.to_public().to_string().as_str()])?;
    let progress = Progress::new("backup");
    let workers = zstd_workers(jobs);
    let total = mib << 20;
    let share = total / jobs as u64;
    let start = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut peak_anon = proc_status_kib("RssAnon").unwrap_or(0);
    let results: Vec<Result<StreamStats>> = std::thread::scope(|scope| {
        let (done, peak_anon) = (&done, &mut peak_anon);
        scope.spawn(move || {
            use std::sync::atomic::Ordering;
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = proc_status_kib("RssAnon") {
                    *peak_anon = (*peak_anon).max(kib);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let handles: Vec<_> = (0..jobs as u64)
            .map(|i| {
                // The first stream takes the remainder of the split.
                let bytes = if i == 0 {
                    total - share * (jobs as u64 - 1)
                } else {
                    share
                };
                let (recipients, progress) = (&recipients, &progress);
                scope.spawn(move || {
                    encode_stream(
                        MixedData::new(bytes, seed.wrapping_add(i)),
                        Box::new(Discard),
                        compression,
                        workers,
                        recipients,
                        progress,
                        None,
                    )
                })
            })
            .collect();
        let results = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(AgentError::Io(io::Error::other("a bench stream panicked")))
                })
            })
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        results
    });
    let seconds = start.elapsed().as_secs_f64();
    let (mut raw_bytes, mut stored_bytes) = (0, 0);
    for stats in results {
        let stats = stats?;
        raw_bytes += stats.raw_bytes;
        stored_bytes += stats.stored_bytes;
    }
    Ok(BenchReport {
        raw_bytes,
        stored_bytes,
        seconds,
        mib_per_second: (raw_bytes as f64 / 1_048_576.0) / seconds.max(1e-9),
        peak_rss_kib: peak_rss_kib(),
        peak_rss_anon_kib: peak_anon,
        rss_file_kib: proc_status_kib("RssFile").unwrap_or(0),
        compression: compression.to_string(),
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn the_data_is_deterministic_sized_and_of_mixed_compressibility() {
        let a = all(MixedData::new(1 << 20, 7));
        assert_eq!(a.len(), 1 << 20);
        assert_eq!(a, all(MixedData::new(1 << 20, 7)));
        assert_ne!(a, all(MixedData::new(1 << 20, 8)));
        let odd = all(MixedData::new(100_001, 7));
        assert_eq!(odd.len(), 100_001);
        let packed = zstd::encode_all(&a[..], 3).unwrap();
        let ratio = packed.len() as f64 / a.len() as f64;
        assert!(
            (0.3..0.8).contains(&ratio),
            "a third random, two thirds rows: {ratio}"
        );
    }

    #[test]
    fn a_run_reports_what_went_through() {
        let r = run(2, 1, Compression::Zstd { level: 3 }, 1).unwrap();
        assert_eq!(r.raw_bytes, 2 << 20);
        assert!(r.stored_bytes > 0 && r.stored_bytes < r.raw_bytes, "{r:?}");
        assert!(r.peak_rss_kib > 0);
        // Linux has /proc: the sampled heap peak is there, below the whole process's peak.
        assert!(r.peak_rss_anon_kib > 0 && r.peak_rss_anon_kib <= r.peak_rss_kib);
        assert!(r.rss_file_kib > 0);
        assert!(run(0, 1, Compression::None, 1).is_err());
    }

    #[test]
    fn parallel_streams_split_the_data_and_add_up() {
        // 3 MiB in 2 streams (1.5 MiB each) and in 3 (1 MiB each): every byte goes through once.
        for jobs in [2, 3] {
            let r = run(3, 1, Compression::Zstd { level: 3 }, jobs).unwrap();
            assert_eq!(r.raw_bytes, 3 << 20, "{jobs} jobs");
            assert_eq!(r.jobs, jobs);
            assert!(r.stored_bytes > 0 && r.stored_bytes < r.raw_bytes, "{r:?}");
        }
        // Uncompressed, the stored bytes are the raw bytes plus each stream's age overhead.
        let one = run(3, 1, Compression::None, 1).unwrap();
        let three = run(3, 1, Compression::None, 3).unwrap();
        assert!(three.stored_bytes > one.stored_bytes, "{one:?} {three:?}");
        assert!(run(3, 1, Compression::None, 0).is_err());
        assert!(run(3, 1, Compression::None, 4).is_err());
    }
}
