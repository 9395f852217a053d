//! Compression stage: zstd (multi-threaded when cores allow), gzip, or none.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A compression algorithm and level, as written on the command line (`zstd:3`, `gzip`, `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard with a level (1–22; default 3).
    Zstd { level: i32 },
    /// gzip (deflate) with a level (0–9; default 6).
    Gzip { level: u32 },
    /// Stored as is.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

impl Compression {
    /// The file-name suffix for this compression (`.zst`, `.gz`, or empty).
    pub fn suffix(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => ".zst",
            Compression::Gzip { .. } => ".gz",
            Compression::None => "",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::None => f.write_str("none"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, level) = match s.split_once(':') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let parse_level = |l: &str| {
            l.parse::<i64>()
                .map_err(|_| format!("invalid compression level {l:?}"))
        };
        match alg.to_ascii_lowercase().as_str() {
            "zstd" => {
                let level = level.map(parse_level).transpose()?.unwrap_or(3);
                if !(1..=22).contains(&level) {
                    return Err(format!("zstd level must be 1..=22, got {level}"));
                }
                Ok(Compression::Zstd {
                    level: level as i32,
                })
            }
            "gzip" => {
                let level = level.map(parse_level).transpose()?.unwrap_or(6);
                if !(0..=9).contains(&level) {
                    return Err(format!("gzip level must be 0..=9, got {level}"));
                }
                Ok(Compression::Gzip {
                    level: level as u32,
                })
            }
            "none" if level.is_none() => Ok(Compression::None),
            _ => Err(format!(
                "unknown compression {s:?} (expected zstd[:LEVEL], gzip[:LEVEL] or none)"
            )),
        }
    }
}

/// How many zstd worker threads each of `streams` concurrent backup streams uses on this
/// machine: [`zstd_workers_for`] with the available cores.
pub fn zstd_workers(streams: usize) -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    zstd_workers_for(cores, streams)
}

/// zstd worker threads per stream (pure): the cores are shared among the `streams` running at
/// once, and each stream's own thread (it encrypts and hashes) counts as one of its share; at
/// most 4 per stream. 0 means single-threaded zstd, whose context is the smallest (one window,
/// no job buffers): a multi-threaded context costs about 7 MiB more per stream at level 3, so
/// once the streams alone fill the cores (2 or more jobs on 2 cores) they compress in their own
/// threads and the memory of a parallel backup stays near the single stream's.
pub fn zstd_workers_for(cores: usize, streams: usize) -> u32 {
    let share = cores / streams.max(1);
    share.saturating_sub(1).min(4) as u32
}

/// A compressing writer; call [`CompressWriter::finish`] to write the trailer.
pub enum CompressWriter<W: Write> {
    /// zstd encoder.
    Zstd(ZstdWriter<W>),
    /// gzip encoder.
    Gzip(flate2::write::GzEncoder<W>),
    /// Pass-through.
    None(W),
}

impl<W: Write> CompressWriter<W> {
    /// Start compressing into `inner`; zstd uses `workers` threads besides the caller's (0:
    /// single-threaded; see [`zstd_workers`]).
    pub fn new(inner: W, compression: Compression, workers: u32) -> io::Result<Self> {
        Ok(match compression {
            Compression::Zstd { level } => {
                CompressWriter::Zstd(ZstdWriter::new(inner, level, workers)?)
            }
            Compression::Gzip { level } => CompressWriter::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
            Compression::None => CompressWriter::None(inner),
        })
    }

    /// Flush the trailer and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            CompressWriter::Zstd(e) => e.finish(),
            CompressWriter::Gzip(e) => e.finish(),
            CompressWriter::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressWriter::Zstd(e) => e.write(buf),
            CompressWriter::Gzip(e) => e.write(buf),
            CompressWriter::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressWriter::Zstd(e) => e.flush(),
            CompressWriter::Gzip(e) => e.flush(),
            CompressWriter::None(w) => w.flush(),
        }
    }
}

/// zstd's streaming compressor over a writer, waiting instead of spinning while the workers
/// are busy.
///
/// A multi-threaded zstd context takes no input while every job buffer waits for a worker, and
/// returns at once having done nothing. The zstd crate's writer calls it again at once, so the
/// stream's thread spun on zstd's pool mutex for as long as the worker compressed — up to a core
/// of its own, and the worker slowed by the contended mutex (measured with perf: 0.2–1.0 CPU
/// seconds per GiB of dump, more under a CPU limit). This writer yields, then sleeps
/// [`IDLE_SLEEP`], whenever a call made no progress.
pub struct ZstdWriter<W: Write> {
    enc: zstd::stream::raw::Encoder<'static>,
    out: Vec<u8>,
    inner: W,
}

/// How long a stream waits for a busy zstd worker before asking again (about 1–2 % of the
/// time a worker takes for a 1 MiB job).
const IDLE_SLEEP: std::time::Duration = std::time::Duration::from_micros(50);

/// Calls that made no progress in a row, and the wait before the next one.
#[derive(Default)]
struct Idle(u32);

impl Idle {
    fn after(&mut self, progressed: bool) {
        if progressed {
            self.0 = 0;
            return;
        }
        self.0 += 1;
        if self.0 <= 2 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(IDLE_SLEEP);
        }
    }
}

impl<W: Write> ZstdWriter<W> {
    /// Compresses at `level` into `inner`, with `workers` threads besides the caller's (0:
    /// single-threaded), and zstd's content checksum.
    pub fn new(inner: W, level: i32, workers: u32) -> io::Result<Self> {
        use zstd::zstd_safe::CParameter;
        let mut enc = zstd::stream::raw::Encoder::new(level)?;
        enc.set_parameter(CParameter::ChecksumFlag(true))?;
        if workers > 0 {
            enc.set_parameter(CParameter::NbWorkers(workers))?;
            // Small jobs keep memory flat: each worker holds about two jobs.
            enc.set_parameter(CParameter::JobSize(1 << 20))?;
        }
        Ok(Self {
            enc,
            out: vec![0; zstd::zstd_safe::CCtx::out_size()],
            inner,
        })
    }

    /// Runs `step` on the output buffer until it returns `Some`, writing what it produced;
    /// waits (see [`Idle`]) after a call that neither produced output nor finished.
    fn drive<T>(
        &mut self,
        mut step: impl FnMut(
            &mut zstd::stream::raw::Encoder<'static>,
            &mut zstd::stream::raw::OutBuffer<'_, [u8]>,
        ) -> io::Result<Option<T>>,
    ) -> io::Result<T> {
        let mut idle = Idle::default();
        loop {
            let mut dst = zstd::stream::raw::OutBuffer::around(&mut self.out[..]);
            let done = step(&mut self.enc, &mut dst)?;
            let produced = dst.pos();
            if produced > 0 {
                self.inner.write_all(&self.out[..produced])?;
            }
            if let Some(done) = done {
                return Ok(done);
            }
            idle.after(produced > 0);
        }
    }

    /// Ends the frame (trailer and checksum) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        use zstd::stream::raw::Operation;
        self.drive(|enc, dst| Ok((enc.finish(dst, true)? == 0).then_some(())))?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use zstd::stream::raw::{InBuffer, Operation};
        if buf.is_empty() {
            return Ok(0);
        }
        self.drive(|enc, dst| {
            let mut src = InBuffer::around(buf);
            enc.run(&mut src, dst)?;
            Ok((src.pos() > 0).then_some(src.pos()))
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        use zstd::stream::raw::Operation;
        self.drive(|enc, dst| Ok((enc.flush(dst)? == 0).then_some(())))?;
        self.inner.flush()
    }
}

/// A decompressing reader for the restore side.
pub fn decompress_reader<'a, R: Read + Send + 'a>(
    inner: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(inner)?),
        Compression::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Compression::None => Box::new(inner),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        assert_eq!(
            "zstd".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            "zstd:19".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert_eq!(
            "GZIP:1".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 1 }
        );
        assert_eq!(
            "gzip".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 6 }
        );
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert!("zstd:0".parse::<Compression>().is_err());
        assert!("gzip:10".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
        assert!("none:1".parse::<Compression>().is_err());
        assert_eq!(Compression::Zstd { level: 5 }.to_string(), "zstd:5");
    }

    #[test]
    fn round_trips_every_algorithm() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 1 },
            Compression::None,
        ] {
            // Single-threaded (a parallel backup's streams) and with a worker.
            for workers in [0, 1] {
                let mut w = CompressWriter::new(Vec::new(), c, workers).unwrap();
                w.write_all(&data).unwrap();
                let out = w.finish().unwrap();
                let mut back = Vec::new();
                decompress_reader(&out[..], c)
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, data, "{c}, {workers} workers");
            }
        }
    }

    #[test]
    fn zstd_workers_share_the_cores_among_the_streams() {
        // One stream: one less than the cores (its own thread encrypts and hashes), at most 4.
        assert_eq!(zstd_workers_for(1, 1), 0);
        assert_eq!(zstd_workers_for(2, 1), 1);
        assert_eq!(zstd_workers_for(4, 1), 3);
        assert_eq!(zstd_workers_for(16, 1), 4);
        // Parallel streams split the cores; once they fill them, each compresses on its own
        // thread (the smallest zstd context).
        assert_eq!(zstd_workers_for(2, 2), 0);
        assert_eq!(zstd_workers_for(2, 4), 0);
        assert_eq!(zstd_workers_for(8, 2), 3);
        assert_eq!(zstd_workers_for(8, 4), 1);
        assert_eq!(zstd_workers_for(8, 5), 0);
        assert_eq!(zstd_workers_for(0, 0), 0);
    }

    #[test]
    fn the_zstd_writer_writes_the_frame_the_zstd_crate_writes() {
        // Same parameters, same library, writes of every size (empty ones included) and a
        // flush in the middle: the same bytes single-threaded, the same data back from the
        // frames of 1 and 2 workers.
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8 ^ (i / 7) as u8)
            .collect();
        for workers in [0u32, 1, 2] {
            let mut reference = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            reference.include_checksum(true).unwrap();
            if workers > 0 {
                reference.multithread(workers).unwrap();
                reference
                    .set_parameter(zstd::zstd_safe::CParameter::JobSize(1 << 20))
                    .unwrap();
            }
            let mut ours = ZstdWriter::new(Vec::new(), 3, workers).unwrap();
            let mut at = 0;
            for (i, size) in [0usize, 1, 1000, 65_536, 2_000_000]
                .iter()
                .cycle()
                .enumerate()
            {
                if at >= data.len() {
                    break;
                }
                let end = (at + size).min(data.len());
                reference.write_all(&data[at..end]).unwrap();
                ours.write_all(&data[at..end]).unwrap();
                if i == 7 {
                    reference.flush().unwrap();
                    ours.flush().unwrap();
                }
                at = end;
            }
            let (reference, ours) = (reference.finish().unwrap(), ours.finish().unwrap());
            let back = zstd::stream::decode_all(&ours[..]).unwrap();
            assert_eq!(back, data, "{workers} workers");
            if workers == 0 {
                // Multi-threaded frames depend on how input met the jobs; single-threaded
                // ones only on the data and the flushes.
                assert_eq!(ours, reference);
            }
        }
    }

    #[test]
    fn zstd_detects_corruption() {
        let data = vec![7u8; 100_000];
        let mut w = CompressWriter::new(Vec::new(), Compression::Zstd { level: 3 }, 1).unwrap();
        w.write_all(&data).unwrap();
        let mut out = w.finish().unwrap();
        let n = out.len();
        out[n - 2] ^= 0xff; // inside the content checksum
        let mut back = Vec::new();
        let r = decompress_reader(&out[..], Compression::Zstd { level: 3 })
            .unwrap()
            .read_to_end(&mut back);
        assert!(r.is_err());
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(crate::proptest_config(256))]

            /// `--compression` values: any text parses or is refused without panicking, and what
            /// the agent prints (summaries, manifests) parses back to the same setting.
            #[test]
            fn any_value_parses_or_is_refused_and_printed_ones_read_back(
                text in any::<String>(),
                setting in prop_oneof![
                    (1i32..=22).prop_map(|level| Compression::Zstd { level }),
                    (0u32..=9).prop_map(|level| Compression::Gzip { level }),
                    Just(Compression::None),
                ],
            ) {
                let _ = text.parse::<Compression>();
                prop_assert_eq!(setting.to_string().parse::<Compression>(), Ok(setting));
            }
        }
    }
}
