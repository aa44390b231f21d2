//! Scheduling a push: per-profile exponential backoff with full jitter (capped),
//! `Retry-After` as a floor, a bounded drain rate, and the "credential rejected" state
//! that is retried only at the cap. `drain` pushes one profile's outbox once.
//!
//! Every decision reads the time from a [`Clock`], so tests and the fleet simulation
//! (`sync/sim.rs`) drive the same code through hours of virtual time.
//!
//! Herd control after an outage. A backlog of *state changes* is retried with capped full
//! jitter (15 minutes by default). A backlog of *heartbeats only* (unchanged records re-sent
//! to refresh `lastUsed`) is retried at a uniformly random point within the next heartbeat
//! interval instead: during an outage of length D a fleet accumulates D worth of heartbeats,
//! and re-sending them all within the 15-minute cap would multiply the server's load after
//! recovery (see the simulation). Spread over the heartbeat interval they add only a small
//! fraction of the steady rate, and each is still delivered, at most one interval late.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keytally_protocol::http::Failure;
use keytally_protocol::DevicesClient;
use rand::Rng;

use crate::outbox::{unix_now, Outbox, OutboxError, SyncState};

/// Where the scheduler reads the time (Unix seconds).
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        unix_now()
    }
}

/// A clock that moves only when told to (tests and simulations).
#[derive(Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct ManualClock(AtomicU64);

#[cfg_attr(not(test), allow(dead_code))]
impl ManualClock {
    pub fn at(t: u64) -> Self {
        ManualClock(AtomicU64::new(t))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Backoff policy: delay = uniform(0, min(cap, base·2^failures)), never below `Retry-After`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// The heartbeat interval: a heartbeat-only backlog is retried within it.
    pub heartbeat: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(15 * 60), heartbeat: Duration::from_secs(6 * 3600) }
    }
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1-based).
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let exp = self.base.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(self.cap);
        floor_retry_after(Duration::from_millis(rng.random_range(0..=exp.as_millis() as u64)), retry_after, rng)
    }

    /// The wait before a heartbeat-only backlog is retried: uniform within one heartbeat
    /// interval (at least the cap), never below `Retry-After`.
    pub fn heartbeat_delay(&self, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let window = self.heartbeat.max(self.cap);
        floor_retry_after(Duration::from_millis(rng.random_range(0..=window.as_millis() as u64)), retry_after, rng)
    }

    /// The wait after a credential was rejected: the cap (plus up to 10 %).
    pub fn credential_delay(&self, rng: &mut impl Rng) -> Duration {
        self.cap + Duration::from_millis(rng.random_range(0..=self.cap.as_millis() as u64 / 10))
    }
}

/// The server's `Retry-After` is a floor; a little positive jitter spreads the herd.
fn floor_retry_after(d: Duration, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
    match retry_after {
        Some(ra) => d.max(ra + Duration::from_millis(rng.random_range(0..=(ra.as_millis() as u64 / 10).max(250)))),
        None => d,
    }
}

/// Whether a profile may send now: `None` if so, else the Unix time it may send again.
/// `has_changes`: a state change is pending (not only heartbeats).
pub fn blocked_until(state: &SyncState, now: u64, has_changes: bool) -> Option<u64> {
    let mut until = state.next_attempt_at.unwrap_or(0);
    if !has_changes && !state.credential_rejected {
        until = until.max(state.heartbeat_retry_at.unwrap_or(0));
    }
    (until > now).then_some(until)
}

/// A 2xx: the profile is healthy again.
pub fn note_success(state: &mut SyncState, now: u64) {
    state.last_success_at = Some(now);
    state.consecutive_failures = 0;
    state.credential_rejected = false;
    state.next_attempt_at = None;
    state.heartbeat_retry_at = None;
}

/// A retryable failure: schedules the next attempt (for changes, and for heartbeats only).
/// Returns the Unix time the pending backlog will be tried again.
pub fn note_retryable(state: &mut SyncState, now: u64, f: &Failure, has_changes: bool, backoff: &Backoff, rng: &mut impl Rng) -> u64 {
    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    let wait = backoff.delay(state.consecutive_failures, f.retry_after(), rng);
    let hb_wait = backoff.heartbeat_delay(f.retry_after(), rng).max(wait);
    state.next_attempt_at = Some(now + wait.as_secs().max(1));
    state.heartbeat_retry_at = Some(now + hb_wait.as_secs().max(1));
    state.last_error = Some(f.to_string());
    state.last_error_at = Some(now);
    blocked_until(state, now, has_changes).unwrap_or(now + 1)
}

/// The credential was refused: the next attempt is at the backoff cap.
pub fn note_credential_rejected(state: &mut SyncState, now: u64, f: &Failure, backoff: &Backoff, rng: &mut impl Rng) -> u64 {
    let until = now + backoff.credential_delay(rng).as_secs();
    state.credential_rejected = true;
    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    state.last_error = Some(f.to_string());
    state.last_error_at = Some(now);
    state.next_attempt_at = Some(until);
    state.heartbeat_retry_at = None;
    until
}

/// Bounds on one drain.
#[derive(Debug, Clone, Copy)]
pub struct DrainLimits {
    /// The least time between two requests (bounded drain rate after an outage).
    pub min_interval: Duration,
    /// Most records pushed in one drain.
    pub max_records: usize,
}

impl Default for DrainLimits {
    fn default() -> Self {
        DrainLimits { min_interval: Duration::from_millis(100), max_records: 10_000 }
    }
}

/// Why a drain stopped before the outbox was empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Backing off after a retryable failure, until this Unix time.
    BackingOff { until: u64, reason: String },
    /// The credential was refused; next attempt at this Unix time.
    CredentialRejected { until: u64, reason: String },
    /// `max_records` reached.
    Limit,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub pushed: u64,
    pub quarantined: u64,
    pub requests: u64,
    pub bytes: u64,
    pub remaining: u64,
    pub stopped: Option<Stopped>,
}

/// Pushes `profile`'s pending records, oldest first, until the outbox is empty, a
/// failure calls for backoff, or the credential is refused. Persists the outcome in the
/// profile's sync state. Skips the profile while a persisted backoff is running.
pub async fn drain(
    client: &DevicesClient,
    outbox: &mut Outbox,
    profile: &str,
    limits: DrainLimits,
    backoff: Backoff,
    clock: &dyn Clock,
) -> Result<DrainReport, OutboxError> {
    let mut report = DrainReport::default();
    let mut state = outbox.sync_state(profile)?;
    let has_changes = outbox.has_pending_changes(profile)?;
    if state.credential_rejected && state.next_attempt_at.is_some() {
        lift_if_replaced(client, &mut state, profile);
    }
    if let Some(until) = blocked_until(&state, clock.now(), has_changes) {
        let reason = state.last_error.clone().unwrap_or_default();
        report.stopped = Some(if state.credential_rejected {
            Stopped::CredentialRejected { until, reason }
        } else {
            Stopped::BackingOff { until, reason }
        });
        report.remaining = outbox.depth(Some(profile))?;
        return Ok(report);
    }
    let mut last_send: Option<tokio::time::Instant> = None;
    let mut rng = rand::rng();
    'outer: loop {
        let batch = outbox.next_batch(profile, 64)?;
        if batch.is_empty() {
            break;
        }
        for entry in batch {
            if report.pushed + report.quarantined >= limits.max_records as u64 {
                report.stopped = Some(Stopped::Limit);
                break 'outer;
            }
            if let Some(t) = last_send {
                tokio::time::sleep_until(t + limits.min_interval).await;
            }
            last_send = Some(tokio::time::Instant::now());
            report.requests += 1;
            let result = client.put_device(&entry.unique_id, &entry.body, entry.version).await;
            let now = clock.now();
            match result {
                Ok(p) => {
                    outbox.ack(&entry, now)?;
                    report.pushed += 1;
                    report.bytes += p.body_bytes as u64;
                    if state.consecutive_failures > 0 || state.credential_rejected {
                        tracing::info!(profile, "server accepts records again; leaving backoff");
                    }
                    note_success(&mut state, now);
                }
                Err(Failure::Rejected { status, reason }) => {
                    tracing::warn!(profile, unique_id = %entry.unique_id, status, %reason, "record rejected for good; quarantined");
                    outbox.quarantine(&entry, status, &reason, now)?;
                    report.quarantined += 1;
                    state.last_error = Some(format!("HTTP {status}: {reason} (record {} quarantined)", entry.unique_id));
                    state.last_error_at = Some(now);
                }
                Err(f @ Failure::Retryable { .. }) => {
                    outbox.note_attempt(&entry, &f.to_string())?;
                    let has_changes = outbox.has_pending_changes(profile)?;
                    let until = note_retryable(&mut state, now, &f, has_changes, &backoff, &mut rng);
                    tracing::warn!(profile, error = %f, wait_s = until - now, "push failed; backing off");
                    report.stopped = Some(Stopped::BackingOff { until, reason: f.to_string() });
                    break 'outer;
                }
                Err(f @ Failure::CredentialRejected { .. }) => {
                    let until = note_credential_rejected(&mut state, now, &f, &backoff, &mut rng);
                    state.rejected_fingerprint = Some(client.auth().fingerprint());
                    tracing::error!(profile, error = %f, "credential rejected; not pushing with it until the backoff cap");
                    report.stopped = Some(Stopped::CredentialRejected { until, reason: f.to_string() });
                    break 'outer;
                }
            }
        }
    }
    outbox.set_sync_state(profile, &state)?;
    report.remaining = outbox.depth(Some(profile))?;
    Ok(report)
}

/// While a refused credential waits out its backoff: reads its source again (a file or
/// keyring entry an admin may have replaced) and, when the credential in use is no longer the
/// refused one, lets it be tried now instead of at the backoff cap.
fn lift_if_replaced(client: &DevicesClient, state: &mut SyncState, profile: &str) {
    if let Err(e) = client.auth().reread() {
        tracing::debug!(profile, "cannot read the credential again: {e}");
    }
    let Some(refused) = state.rejected_fingerprint.as_deref() else { return };
    if client.auth().fingerprint() != refused {
        tracing::info!(profile, "the credential changed since the server refused it; trying the new one now");
        state.next_attempt_at = None;
    }
}

/// The sync state for display.
pub fn describe(state: &SyncState) -> &'static str {
    if state.credential_rejected {
        "credential rejected"
    } else if state.consecutive_failures > 0 {
        "backing off"
    } else {
        "ok"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn full_jitter_is_capped_and_honours_retry_after() {
        let b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for f in 1..40 {
            let d = b.delay(f, None, &mut rng);
            assert!(d <= b.cap, "{f}: {d:?}");
        }
        // The jitter spans the whole range at the cap (not clamped to the cap).
        let ds: Vec<_> = (0..1000).map(|_| b.delay(30, None, &mut rng)).collect();
        assert!(ds.iter().any(|d| *d < b.cap / 4) && ds.iter().any(|d| *d > b.cap * 3 / 4));
        for _ in 0..100 {
            assert!(b.delay(1, Some(Duration::from_secs(30)), &mut rng) >= Duration::from_secs(30));
        }
        let c = b.credential_delay(&mut rng);
        assert!(c >= b.cap && c <= b.cap + b.cap / 10);
    }
}
