//! The agent's progress log line: every few seconds (and once at the end) the agent logs one
//! structured `tracing` event; in the JSON log format (what Jobs ask for, see
//! [`super::LOG_FORMAT_JSON`]) it is one line such as
//!
//! ```text
//! {"timestamp":"…","level":"INFO","message":"progress","phase":"backup","done":false,
//!  "bytes_in":300,"bytes_out":90,"bytes_per_second":100,"elapsed_seconds":4.0,
//!  "target":"dataguardian::progress"}
//! ```
//!
//! [`ProgressLine::log`] writes it (agent); [`last_progress`] finds the newest one in a chunk of
//! the agent container's log (operator). The field names are `tracing` field names, so they are
//! snake_case, unlike the summary.

use serde::Deserialize;

/// The `tracing` target of progress events.
pub const PROGRESS_TARGET: &str = "dataguardian::progress";

/// The message of progress events.
pub const PROGRESS_MESSAGE: &str = "progress";

/// One progress event, as the agent logs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressLine<'a> {
    /// `backup`, `restore` or `verify`.
    pub phase: &'a str,
    /// Whether this is the last line of the phase.
    pub done: bool,
    /// Bytes read from the source (dump output on backup, stored bytes on restore).
    pub bytes_in: u64,
    /// Bytes written to the destination (stored bytes on backup, restored bytes on restore).
    pub bytes_out: u64,
    /// `bytes_in` per second since the start, rounded.
    pub bytes_per_second: u64,
    /// Seconds since the start, rounded to a tenth.
    pub elapsed_seconds: f64,
}

impl ProgressLine<'_> {
    /// Emits the event (an INFO event on [`PROGRESS_TARGET`]).
    pub fn log(&self) {
        tracing::info!(
            target: PROGRESS_TARGET,
            phase = self.phase,
            done = self.done,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            bytes_per_second = self.bytes_per_second,
            elapsed_seconds = self.elapsed_seconds,
            "{PROGRESS_MESSAGE}"
        );
    }
}

/// One progress sample from the agent's log, as the operator keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ProgressSample {
    /// Bytes read from the source so far.
    pub bytes_in: u64,
    /// Bytes written to the destination so far.
    pub bytes_out: u64,
    /// Recent rate of `bytes_in`.
    #[serde(default)]
    pub bytes_per_second: u64,
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(flatten)]
    sample: Option<ProgressSample>,
}

/// The newest progress sample in a chunk of the agent's JSON log (other lines are ignored).
pub fn last_progress(log: &str) -> Option<ProgressSample> {
    log.lines().rev().find_map(|line| {
        let parsed: LogLine = serde_json::from_str(line.trim()).ok()?;
        let is_progress = parsed.message.as_deref() == Some(PROGRESS_MESSAGE)
            || parsed.target.as_deref() == Some(PROGRESS_TARGET);
        if is_progress { parsed.sample } else { None }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what a `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// What the agent's JSON logging (`cli/agent` `init_logging`, `telemetry::logging::init`)
    /// writes for `f`'s events.
    fn json_log(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_written_line_is_the_one_the_operator_reads() {
        let first = ProgressLine {
            phase: "backup",
            done: false,
            bytes_in: 100,
            bytes_out: 40,
            bytes_per_second: 50,
            elapsed_seconds: 2.0,
        };
        let last = ProgressLine {
            bytes_in: 300,
            bytes_out: 90,
            bytes_per_second: 100,
            elapsed_seconds: 4.1,
            done: true,
            ..first
        };
        let log = json_log(|| {
            first.log();
            tracing::info!(target: "dataguardian::agent", "artifact stored");
            last.log();
            tracing::info!(target: "dataguardian::agent", "manifest written");
        });
        assert_eq!(log.lines().count(), 4, "{log}");
        let line: serde_json::Value = serde_json::from_str(log.lines().nth(2).unwrap()).unwrap();
        assert_eq!(line["message"], "progress");
        assert_eq!(line["target"], "dataguardian::progress");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["phase"], "backup");
        assert_eq!(line["done"], true);
        assert_eq!(line["bytes_in"], 300);
        assert_eq!(line["bytes_out"], 90);
        assert_eq!(line["bytes_per_second"], 100);
        assert_eq!(line["elapsed_seconds"], 4.1);
        assert_eq!(
            last_progress(&log),
            Some(ProgressSample {
                bytes_in: 300,
                bytes_out: 90,
                bytes_per_second: 100
            })
        );
    }

    #[test]
    fn finds_the_newest_progress_line() {
        let log = concat!(
            r#"{"timestamp":"t","level":"INFO","message":"starting","target":"dataguardian::agent"}"#,
            "\n",
            r#"{"timestamp":"t","level":"INFO","message":"progress","target":"dataguardian::progress","phase":"backup","done":false,"bytes_in":100,"bytes_out":40,"bytes_per_second":50,"elapsed_seconds":2.0}"#,
            "\n",
            r#"{"timestamp":"t","level":"INFO","message":"progress","target":"dataguardian::progress","phase":"backup","done":false,"bytes_in":300,"bytes_out":90,"bytes_per_second":100,"elapsed_seconds":4.0}"#,
            "\n",
            "not json\n",
        );
        assert_eq!(
            last_progress(log),
            Some(ProgressSample {
                bytes_in: 300,
                bytes_out: 90,
                bytes_per_second: 100
            })
        );
        assert_eq!(last_progress("nothing here"), None);
        // A line without a rate still counts; a line of another target never does.
        assert_eq!(
            last_progress(r#"{"target":"dataguardian::progress","bytes_in":1,"bytes_out":2}"#),
            Some(ProgressSample {
                bytes_in: 1,
                bytes_out: 2,
                bytes_per_second: 0
            })
        );
        assert_eq!(
            last_progress(
                r#"{"message":"stored","target":"dataguardian::agent","bytes_in":1,"bytes_out":2}"#
            ),
            None
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// A log line that is not a progress line: any text without a line break.
        fn other_line() -> impl Strategy<Value = String> {
            prop_oneof![
                "[^\\n\\r]{0,80}",
                Just(r#"{"message":"progress"}"#.to_owned()),
                Just(r#"{"target":"dataguardian::progress","bytes_in":"x"}"#.to_owned()),
                Just(r#"{"message":"artifact stored","bytes_in":1,"bytes_out":2}"#.to_owned()),
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_config(128))]

            /// Whatever a container writes to its log, reading progress from it never panics.
            #[test]
            fn any_log_text_is_read_without_panicking(log in any::<String>()) {
                let _ = last_progress(&log);
            }

            /// The operator finds the newest progress line the agent wrote, whatever other lines
            /// (malformed, half-progress, other events) surround it.
            #[test]
            fn the_newest_written_sample_is_found(
                samples in proptest::collection::vec(
                    (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()), 1..5),
                noise in proptest::collection::vec(other_line(), 0..5),
            ) {
                let mut log = String::new();
                for (i, (bytes_in, bytes_out, bytes_per_second, done)) in samples.iter().enumerate() {
                    if let Some(n) = noise.get(i) {
                        log.push_str(n);
                        log.push('\n');
                    }
                    log.push_str(&json_log(|| {
                        ProgressLine {
                            phase: "backup",
                            done: *done,
                            bytes_in: *bytes_in,
                            bytes_out: *bytes_out,
                            bytes_per_second: *bytes_per_second,
                            elapsed_seconds: 1.5,
                        }
                        .log()
                    }));
                }
                for n in noise.iter().skip(samples.len()) {
                    log.push_str(n);
                    log.push('\n');
                }
                let (bytes_in, bytes_out, bytes_per_second, _) = *samples.last().unwrap();
                prop_assert_eq!(
                    last_progress(&log),
                    Some(ProgressSample { bytes_in, bytes_out, bytes_per_second })
                );
            }
        }
    }
}
