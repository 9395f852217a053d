//! Container probes (startup, readiness, liveness) as the kubelet's prober workers schedule and
//! count them — pure state, the kubelet runs the probes and applies the verdicts.
//!
//! Like `pkg/kubelet/prober/worker.go`: a worker ticks every `periodSeconds` from the container's
//! start; ticks within `initialDelaySeconds` are skipped; readiness and liveness wait until the
//! container has started (startup probe passed), the startup probe stops once it has; a result
//! changes only after `successThreshold` consecutive successes or `failureThreshold` consecutive
//! failures; a failed liveness or startup probe restarts the container and the worker holds
//! until the next run of the container. Initial results: readiness Failure (not ready), liveness
//! Success, startup Unknown (not started).

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use tokio::time::Instant;

/// Which probe a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// `startupProbe`.
    Startup,
    /// `readinessProbe`.
    Readiness,
    /// `livenessProbe`.
    Liveness,
}

impl ProbeKind {
    /// The word the kubelet uses in events (`Readiness probe failed: ...`).
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// What a probe result means for the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The worker's result did not change.
    Unchanged,
    /// The worker's result changed to this value.
    Changed(bool),
    /// Liveness or startup failed `failureThreshold` times: restart the container.
    Restart,
}

/// One probe of one run of a container.
#[derive(Debug, Clone)]
pub struct ProbeWorker {
    /// Which probe.
    pub kind: ProbeKind,
    /// The probe spec (handler, timeout).
    pub probe: Probe,
    started: Instant,
    initial_delay: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    next: Instant,
    last: Option<bool>,
    run: u32,
    result: bool,
    on_hold: bool,
}

fn secs(v: Option<i32>, default: i32, min: i32) -> u64 {
    v.unwrap_or(default).max(min) as u64
}

impl ProbeWorker {
    /// A worker for a container run that started at `started`.
    pub fn new(kind: ProbeKind, probe: &Probe, started: Instant) -> Self {
        ProbeWorker {
            kind,
            probe: probe.clone(),
            started,
            initial_delay: Duration::from_secs(secs(probe.initial_delay_seconds, 0, 0)),
            period: Duration::from_secs(secs(probe.period_seconds, 10, 1)),
            success_threshold: secs(probe.success_threshold, 1, 1) as u32,
            failure_threshold: secs(probe.failure_threshold, 3, 1) as u32,
            next: started,
            last: None,
            run: 0,
            result: kind == ProbeKind::Liveness,
            on_hold: false,
        }
    }

    /// The current result (ready / alive / started).
    pub fn result(&self) -> bool {
        self.result
    }

    /// When the next tick is due (`None` while on hold after a restart verdict).
    pub fn due(&self) -> Option<Instant> {
        (!self.on_hold).then_some(self.next)
    }

    /// Makes the next tick happen now (the kubelet triggers readiness when startup passes).
    pub fn trigger(&mut self, now: Instant) {
        self.next = now;
    }

    /// Consumes a due tick: schedules the next one and says whether to probe now (`false`
    /// within the initial delay, before the tick, or while the probe does not apply:
    /// readiness/liveness before the container started, startup after it did).
    pub fn tick(&mut self, now: Instant, container_started: bool) -> bool {
        if self.on_hold || now < self.next {
            return false;
        }
        while self.next <= now {
            self.next += self.period;
        }
        if now.duration_since(self.started) < self.initial_delay {
            return false;
        }
        match self.kind {
            ProbeKind::Startup => !container_started,
            ProbeKind::Readiness | ProbeKind::Liveness => container_started,
        }
    }

    /// Counts one probe result.
    pub fn record(&mut self, success: bool) -> Verdict {
        if self.last == Some(success) {
            self.run += 1;
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        if (!success && self.run < self.failure_threshold)
            || (success && self.run < self.success_threshold)
        {
            return Verdict::Unchanged;
        }
        if !success && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            self.on_hold = true;
            self.run = 0;
            self.result = false;
            return Verdict::Restart;
        }
        if self.result == success {
            Verdict::Unchanged
        } else {
            self.result = success;
            Verdict::Changed(success)
        }
    }
}

/// The probe workers of a container run, in the order startup, readiness, liveness.
pub fn workers_for(
    startup: Option<&Probe>,
    readiness: Option<&Probe>,
    liveness: Option<&Probe>,
    started: Instant,
) -> Vec<ProbeWorker> {
    [
        (ProbeKind::Startup, startup),
        (ProbeKind::Readiness, readiness),
        (ProbeKind::Liveness, liveness),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.map(|p| ProbeWorker::new(k, p, started)))
    .collect()
}

/// Whether a container with these workers counts as started (no startup probe, or it passed)
/// and as ready (started, and no readiness probe or it passed).
pub fn started_and_ready(workers: &[ProbeWorker]) -> (bool, bool) {
    let started = workers
        .iter()
        .find(|w| w.kind == ProbeKind::Startup)
        .is_none_or(ProbeWorker::result);
    let ready = started
        && workers
            .iter()
            .find(|w| w.kind == ProbeKind::Readiness)
            .is_none_or(ProbeWorker::result);
    (started, ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
        Probe {
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn readiness_needs_success_threshold_and_failure_threshold() {
        let t0 = Instant::now();
        let mut w = ProbeWorker::new(ProbeKind::Readiness, &probe(0, 1, 2, 3), t0);
        assert!(!w.result());
        assert!(w.tick(t0, true));
        assert_eq!(w.record(true), Verdict::Unchanged);
        assert!(!w.tick(t0, true), "next tick one period later");
        assert_eq!(w.due(), Some(t0 + Duration::from_secs(1)));
        assert!(w.tick(t0 + Duration::from_secs(1), true));
        assert_eq!(w.record(true), Verdict::Changed(true));
        assert_eq!(w.record(false), Verdict::Unchanged);
        assert_eq!(w.record(false), Verdict::Unchanged);
        assert_eq!(w.record(false), Verdict::Changed(false));
        assert_eq!(w.record(false), Verdict::Unchanged);
    }

    #[test]
    fn initial_delay_and_startup_gate() {
        let t0 = Instant::now();
        let mut r = ProbeWorker::new(ProbeKind::Readiness, &probe(3, 1, 1, 3), t0);
        assert!(!r.tick(t0, true));
        assert!(!r.tick(t0 + Duration::from_secs(2), true));
        assert!(r.tick(t0 + Duration::from_secs(3), true));
        let mut s = ProbeWorker::new(ProbeKind::Startup, &probe(0, 1, 1, 2), t0);
        assert!(s.tick(t0, false));
        assert!(
            !s.tick(t0 + Duration::from_secs(1), true),
            "startup stops once started"
        );
        let mut r2 = ProbeWorker::new(ProbeKind::Readiness, &probe(0, 1, 1, 3), t0);
        assert!(!r2.tick(t0, false), "readiness waits for startup");
    }

    #[test]
    fn liveness_failure_restarts_and_holds() {
        let t0 = Instant::now();
        let mut l = ProbeWorker::new(ProbeKind::Liveness, &probe(0, 1, 1, 2), t0);
        assert!(l.result());
        assert_eq!(l.record(false), Verdict::Unchanged);
        assert_eq!(l.record(false), Verdict::Restart);
        assert_eq!(l.due(), None);
        assert!(!l.tick(t0 + Duration::from_secs(9), true));
    }

    #[test]
    fn started_and_ready_follow_the_workers() {
        let t0 = Instant::now();
        assert_eq!(started_and_ready(&[]), (true, true));
        let mut ws = workers_for(Some(&probe(0, 1, 1, 3)), Some(&probe(0, 1, 1, 3)), None, t0);
        assert_eq!(started_and_ready(&ws), (false, false));
        assert_eq!(ws[0].record(true), Verdict::Changed(true));
        assert_eq!(started_and_ready(&ws), (true, false));
        assert_eq!(ws[1].record(true), Verdict::Changed(true));
        assert_eq!(started_and_ready(&ws), (true, true));
    }
}
