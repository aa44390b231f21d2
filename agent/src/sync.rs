//! Scheduling a push: per-profile exponential backoff with full jitter (capped),
//! `Retry-After` as a floor, a bounded drain rate, and the "credential rejected" state
//! that is retried only at the cap. `drain` pushes one profile's outbox once.

use std::time::Duration;

use keytally_protocol::api::{DevicesClient, Failure};
use rand::Rng;

use crate::outbox::{unix_now, Outbox, OutboxError, SyncState};

/// Backoff policy: delay = uniform(0, min(cap, base·2^failures)), never below `Retry-After`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(15 * 60) }
    }
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1-based).
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let exp = self.base.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(self.cap);
        let jittered = Duration::from_millis(rng.random_range(0..=exp.as_millis() as u64));
        match retry_after {
            // The server's word is a floor; a little positive jitter spreads the herd.
            Some(ra) => jittered.max(ra + Duration::from_millis(rng.random_range(0..=(ra.as_millis() as u64 / 10).max(250)))),
            None => jittered,
        }
    }

    /// The wait after a credential was rejected: the cap (plus up to 10 %).
    pub fn credential_delay(&self, rng: &mut impl Rng) -> Duration {
        self.cap + Duration::from_millis(rng.random_range(0..=self.cap.as_millis() as u64 / 10))
    }
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
) -> Result<DrainReport, OutboxError> {
    let mut report = DrainReport::default();
    let mut state = outbox.sync_state(profile)?;
    let now = unix_now();
    if let Some(until) = state.next_attempt_at.filter(|t| *t > now) {
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
            let now = unix_now();
            match result {
                Ok(p) => {
                    outbox.ack(&entry, now)?;
                    report.pushed += 1;
                    report.bytes += p.body_bytes as u64;
                    if state.consecutive_failures > 0 || state.credential_rejected {
                        tracing::info!(profile, "server accepts records again; leaving backoff");
                    }
                    state.last_success_at = Some(now);
                    state.consecutive_failures = 0;
                    state.credential_rejected = false;
                    state.next_attempt_at = None;
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
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    let wait = backoff.delay(state.consecutive_failures, f.retry_after(), &mut rand::rng());
                    let until = now + wait.as_secs().max(1);
                    tracing::warn!(profile, error = %f, wait_s = wait.as_secs(), "push failed; backing off");
                    state.last_error = Some(f.to_string());
                    state.last_error_at = Some(now);
                    state.next_attempt_at = Some(until);
                    report.stopped = Some(Stopped::BackingOff { until, reason: f.to_string() });
                    break 'outer;
                }
                Err(f @ Failure::CredentialRejected { .. }) => {
                    let until = now + backoff.credential_delay(&mut rand::rng()).as_secs();
                    tracing::error!(profile, error = %f, "credential rejected; not pushing with it until the backoff cap");
                    state.credential_rejected = true;
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    state.last_error = Some(f.to_string());
                    state.last_error_at = Some(now);
                    state.next_attempt_at = Some(until);
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

/// The sync state for display.
pub fn describe(state: &SyncState) -> &'static str {
    if state.credential_rejected {
        "credential rejected"
    } else if state.next_attempt_at.is_some_and(|t| t > unix_now()) {
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
