//! Slowing down sources that keep failing authentication, and the budget
//! of failure audit records (a flood is summarised, never recorded line by
//! line). Pure bookkeeping: the server decides what to do with a
//! [`Penalty`]; [`LimitKey::for_peer`] (in `api::auth`) names the source.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

/// Whom failures and connections are counted against: an address (IPv6
/// by /64, since one host usually owns a whole /64), a local uid, or
/// loopback as a whole (any local user can send from any 127.x.y.z, so
/// those addresses are one source, not sixteen million).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKey {
    Loopback,
    Ip(IpAddr),
    Uid(u32),
}

/// Most addresses tracked at once, so a flood of sources cannot grow memory
/// without bound; the oldest windows are dropped first.
pub const MAX_TRACKED: usize = 4096;

/// First imposed delay; it doubles with every further failure.
const BASE_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Counts authentication failures per [`LimitKey`] within a window, and
/// keeps the global budget of failure audit records.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    windows: Mutex<HashMap<LimitKey, Window>>,
    audit: Mutex<AuditWindow>,
}

/// Most distinct sources a summary names; the rest are only counted.
pub const SUMMARY_SOURCES: usize = 32;

/// Failures not audited one by one in a window, for its summary record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureSummary {
    /// Failures in the window that have no record of their own.
    pub count: u64,
    /// Up to [`SUMMARY_SOURCES`] sources and their failures.
    pub sources: std::collections::BTreeMap<String, u64>,
    /// Distinct sources, named or not.
    pub sources_total: u64,
    /// Unix times of the first and last counted failure.
    pub first: i64,
    pub last: i64,
}

impl FailureSummary {
    fn add(&mut self, source: &str, at: i64) {
        if self.count == 0 {
            self.first = at;
        }
        self.count += 1;
        self.last = at;
        if let Some(n) = self.sources.get_mut(source) {
            *n += 1;
        } else {
            // Sources beyond the named ones are counted as distinct only
            // approximately (each first sighting past the cap counts): the
            // record stays bounded whatever the flood.
            self.sources_total += 1;
            if self.sources.len() < SUMMARY_SOURCES {
                self.sources.insert(source.to_string(), 1);
            }
        }
    }
}

/// The global window of failure audit records.
#[derive(Debug, Default)]
struct AuditWindow {
    start: Option<Instant>,
    recorded: u32,
    pending: FailureSummary,
}

impl AuditWindow {
    /// Ends the window when it is over; returns its summary if any
    /// failure went unrecorded in it.
    fn roll(&mut self, now: Instant, window: Duration) -> Option<FailureSummary> {
        let over = self
            .start
            .is_some_and(|s| now.saturating_duration_since(s) >= window);
        if !over {
            return None;
        }
        self.start = None;
        self.recorded = 0;
        let done = std::mem::take(&mut self.pending);
        (done.count > 0).then_some(done)
    }
}

/// What [`FailureLimiter::record`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Penalty {
    /// Failures from this key in the current window, this one included.
    pub failures: u32,
    /// How long to hold the answer back.
    pub delay: Duration,
    /// Whether this failure gets an audit record of its own: the first of
    /// a source's window and the one where slowing down starts, while the
    /// global budget (`auth.audit_records_per_window`) lasts. Every other
    /// failure is counted in the window's [`FailureSummary`].
    pub audit: bool,
    /// A finished window's summary, to be written now.
    pub summary: Option<FailureSummary>,
}

impl FailureLimiter {
    /// Counts one failure of `key` (`source` names it for the summary,
    /// `at` is the wall-clock time).
    pub fn record(
        &self,
        key: LimitKey,
        source: &str,
        now: Instant,
        at: i64,
        cfg: &AuthConfig,
    ) -> Penalty {
        let mut p = self.count(key, now, cfg);
        let window = Duration::from_secs(cfg.failure_window_secs);
        let mut a = match self.audit.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        p.summary = a.roll(now, window);
        a.start.get_or_insert(now);
        if p.audit && a.recorded < cfg.audit_records_per_window {
            a.recorded += 1;
        } else {
            p.audit = false;
            a.pending.add(source, at);
        }
        p
    }

    /// The summary of a window that is over (`force`: of the current one
    /// too, at shutdown), so a flood's tail is written without waiting
    /// for the next failure.
    pub fn take_summary(
        &self,
        now: Instant,
        cfg: &AuthConfig,
        force: bool,
    ) -> Option<FailureSummary> {
        let mut a = match self.audit.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        let window = if force {
            Duration::ZERO
        } else {
            Duration::from_secs(cfg.failure_window_secs)
        };
        a.roll(now, window)
    }

    fn count(&self, key: LimitKey, now: Instant, cfg: &AuthConfig) -> Penalty {
        let window = Duration::from_secs(cfg.failure_window_secs);
        let mut map = match self.windows.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            map.retain(|_, w| now.saturating_duration_since(w.start) < window);
            if map.len() >= MAX_TRACKED {
                if let Some(oldest) = map.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let w = map.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.start) >= window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        let failures = w.failures;
        let threshold = cfg.failures_before_delay;
        let delay = if failures >= threshold.max(1) {
            let steps = (failures - threshold.max(1)).min(20);
            (BASE_DELAY * (1u32 << steps)).min(Duration::from_millis(cfg.max_delay_ms))
        } else {
            Duration::ZERO
        };
        Penalty {
            failures,
            delay,
            audit: failures == 1 || failures == threshold,
            summary: None,
        }
    }

    pub fn tracked(&self) -> usize {
        match self.windows.lock() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Three failures before slowing down, a 60 s window.
    fn auth_cfg(max_delay_ms: u64, audit_records_per_window: u32) -> AuthConfig {
        AuthConfig {
            failures_before_delay: 3,
            failure_window_secs: 60,
            max_delay_ms,
            audit_records_per_window,
        }
    }
    #[test]
    fn failures_are_slowed_then_capped_and_windows_reset() {
        let cfg = auth_cfg(1000, 100);
        let l = FailureLimiter::default();
        let k = LimitKey::Ip("192.0.2.1".parse().unwrap());
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|_| l.record(k, "192.0.2.1", t0, 0, &cfg).delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![0, 0, 250, 500, 1000, 1000, 1000, 1000]);
        let p = l.record(k, "192.0.2.1", t0 + Duration::from_secs(61), 61, &cfg);
        assert_eq!((p.failures, p.delay, p.audit), (1, Duration::ZERO, true));
    }
    #[test]
    fn tracked_addresses_are_bounded() {
        let cfg = AuthConfig::default();
        let l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.record(
                LimitKey::Ip(ip),
                "x",
                t0 + Duration::from_millis(u64::from(i)),
                0,
                &cfg,
            );
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
    }
    /// A flood from many sources gets a bounded number of records, and the
    /// records plus the summaries still count every failure.
    #[test]
    fn failure_records_are_budgeted_and_summaries_count_the_rest() {
        let cfg = auth_cfg(1, 5);
        let l = FailureLimiter::default();
        let t0 = Instant::now();
        let (mut records, mut summarised, mut summaries) = (0u64, 0u64, 0u64);
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            // Two windows' worth: the first 500 in one, the rest in the next.
            let t = t0 + Duration::from_secs(if i < 500 { 1 } else { 70 });
            let p = l.record(LimitKey::Ip(ip), &ip.to_string(), t, i64::from(i), &cfg);
            records += u64::from(p.audit);
            if let Some(s) = p.summary {
                summaries += 1;
                summarised += s.count;
                assert_eq!(s.sources.len(), SUMMARY_SOURCES);
                assert_eq!((s.first, s.last), (5, 499));
            }
        }
        let last = l.take_summary(t0, &cfg, true).unwrap();
        summaries += 1;
        summarised += last.count;
        assert_eq!(last.sources_total, 495);
        assert_eq!(records, 10);
        assert_eq!(summaries, 2);
        assert_eq!(records + summarised, 1000);
        assert_eq!(l.take_summary(t0, &cfg, true), None);
    }
}
