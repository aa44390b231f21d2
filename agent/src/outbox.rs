//! The durable outbox: every observed record is written here (SQLite, WAL,
//! `synchronous=FULL`) before any push, and leaves only after a 2xx for that exact
//! version. One pending entry per (profile, key): a newer state replaces an older one.
//! A size bound drops the oldest entries and counts every drop; records the server
//! rejects for good are quarantined with its reason. The schema carries a version and
//! is migrated forward on open.
//!
//! A record reaches the outbox typed ([`DeviceRecord`]) and is serialized here, once
//! ([`Serialized::of`]): the body that is stored and sent, and the fingerprint that tells an
//! unchanged state from a new one.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keytally_protocol::record::DeviceRecord;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use uuid::Uuid;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 3;

/// Default bound on pending entries.
pub const DEFAULT_MAX_PENDING: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error(
        "outbox {path} has schema version {found}, newer than this keytally understands ({SCHEMA_VERSION}); \
         upgrade keytally or move the file away"
    )]
    TooNew { path: String, found: i64 },
}

/// One pending record version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub profile: String,
    pub unique_id: String,
    /// The version's UUID; sent as `Idempotency-Key`.
    pub version: Uuid,
    pub body: Vec<u8>,
    pub attempts: u32,
    pub enqueued_at: u64,
}

/// A quarantined record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    pub profile: String,
    pub unique_id: String,
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub quarantined_at: u64,
}

/// What `enqueue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new version is pending (replacing an older pending one, if any).
    Queued { dropped: u64 },
    /// Same fingerprint as the last delivered or pending state, and no heartbeat due.
    Unchanged,
}

/// A record as the outbox takes it: its key, the body to store and send, and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serialized {
    /// `yubikey.uniqueId`, never empty.
    pub unique_id: String,
    /// What the server should see as "the same state": the record without its volatile
    /// sighting times (`lastUsed`, `lastUpdate`, `observedAt`), so an unchanged key is not
    /// re-pushed on every scan.
    pub fingerprint: String,
    /// The JSON body of `PUT /devices/{uniqueId}`.
    pub body: Vec<u8>,
}

impl Serialized {
    /// Serializes a record the agent made; `None` when it has no uniqueId.
    pub fn of(record: &DeviceRecord) -> Result<Option<Self>, serde_json::Error> {
        Ok(Self::from_json(serde_json::to_value(record)?))
    }

    /// Serializes records the agent made, skipping any without a uniqueId.
    pub fn all(records: &[DeviceRecord]) -> Result<Vec<Self>, serde_json::Error> {
        let mut serialized = Vec::with_capacity(records.len());
        for r in records {
            serialized.extend(Self::of(r)?);
        }
        Ok(serialized)
    }

    /// A record given as JSON (a records file: `keytally sync --records`), taken as it is;
    /// `None` when it has no `yubikey.uniqueId`.
    pub fn from_json(record: Value) -> Option<Self> {
        let Some(unique_id) = record.pointer("/yubikey/uniqueId").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
        else {
            tracing::warn!("skipping a record without yubikey.uniqueId");
            return None;
        };
        let body = serde_json::to_vec(&record).ok()?;
        Some(Serialized { unique_id, fingerprint: fingerprint(record), body })
    }
}

impl Serialized {
    /// A JSON array of device records (the output of `keytally scan --json`), each taken as it
    /// is; with the array's length (records without a uniqueId are counted, then skipped).
    /// `name` names the input in the error.
    pub fn from_json_array(text: &[u8], name: &str) -> Result<(usize, Vec<Self>), String> {
        match serde_json::from_slice::<Value>(text).map_err(|e| format!("{name} is not JSON: {e}"))? {
            Value::Array(a) => Ok((a.len(), a.into_iter().filter_map(Self::from_json).collect())),
            _ => Err(format!("{name}: expected a JSON array of device records")),
        }
    }
}

/// The serialized record without its volatile sighting times (see [`Serialized::fingerprint`]).
fn fingerprint(mut record: Value) -> String {
    if let Some(y) = record.get_mut("yubikey").and_then(Value::as_object_mut) {
        y.remove("lastUsed");
        y.remove("lastUpdate");
    }
    if let Some(o) = record.get_mut("observation").and_then(Value::as_object_mut) {
        o.remove("observedAt");
    }
    record.to_string()
}

/// Per-profile sync state shown by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncState {
    pub last_success_at: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    pub credential_rejected: bool,
    /// Unix seconds before which the profile is not tried again.
    pub next_attempt_at: Option<u64>,
    pub consecutive_failures: u32,
    /// After a failure while only heartbeats were pending: Unix seconds before which a
    /// heartbeat-only backlog is not retried (a state change still goes at `next_attempt_at`).
    pub heartbeat_retry_at: Option<u64>,
    /// A one-way fingerprint of the credential the server refused (see
    /// `keytally_protocol::secret::fingerprint`), never the credential.
    pub rejected_fingerprint: Option<String>,
}

pub struct Outbox {
    db: Connection,
    path: String,
    max_pending: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A time the outbox keeps (Unix seconds) as RFC 3339, UTC, to the second.
pub fn fmt_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE pending(
        profile TEXT NOT NULL,
        unique_id TEXT NOT NULL,
        version TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        body BLOB NOT NULL,
        seq INTEGER NOT NULL,
        enqueued_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        PRIMARY KEY(profile, unique_id));
     CREATE INDEX pending_seq ON pending(profile, seq);
     CREATE TABLE delivered(
        profile TEXT NOT NULL,
        unique_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        delivered_at INTEGER NOT NULL,
        PRIMARY KEY(profile, unique_id));
     CREATE TABLE quarantine(
        profile TEXT NOT NULL,
        unique_id TEXT NOT NULL,
        version TEXT NOT NULL,
        body BLOB NOT NULL,
        status INTEGER NOT NULL,
        reason TEXT NOT NULL,
        quarantined_at INTEGER NOT NULL,
        PRIMARY KEY(profile, unique_id));
     CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     CREATE TABLE sync_state(
        profile TEXT PRIMARY KEY,
        last_success_at INTEGER,
        last_error TEXT,
        last_error_at INTEGER,
        credential_rejected INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        consecutive_failures INTEGER NOT NULL DEFAULT 0);",
    // 1 -> 2: heartbeat-only backlogs are retried on their own (longer) schedule.
    "ALTER TABLE sync_state ADD COLUMN heartbeat_retry_at INTEGER;",
    // 2 -> 3: which credential was refused, so a replaced one lifts the block at once.
    "ALTER TABLE sync_state ADD COLUMN rejected_fingerprint TEXT;",
];

impl Outbox {
    pub fn open(path: &Path, max_pending: u64) -> Result<Outbox, OutboxError> {
        let p = path.display().to_string();
        let err = |source| OutboxError::Sqlite { path: p.clone(), source };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut db = Connection::open(path).map_err(err)?;
        db.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        db.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        migrate(&mut db).map_err(|e| match e {
            MigrateError::Sqlite(s) => err(s),
            MigrateError::TooNew(found) => OutboxError::TooNew { path: p.clone(), found },
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Outbox { db, path: p, max_pending: max_pending.max(1) })
    }

    fn err(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Sqlite { path: self.path.clone(), source }
    }

    #[allow(dead_code)] // used by tests and kept for a future `status --verbose`
    pub fn schema_version(&self) -> Result<i64, OutboxError> {
        self.db.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// Queues a new version of `unique_id` for `profile`, unless `fingerprint` equals the
    /// last delivered (or pending) one and `heartbeat_after` has not passed since that
    /// delivery. Enforces the size bound in the same transaction.
    pub fn enqueue(
        &mut self,
        profile: &str,
        unique_id: &str,
        fingerprint: &str,
        body: &[u8],
        heartbeat_after: Option<Duration>,
        now: u64,
    ) -> Result<Enqueued, OutboxError> {
        let max = self.max_pending;
        let path = self.path.clone();
        let err = move |source: rusqlite::Error| OutboxError::Sqlite { path: path.clone(), source };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err.clone())?;
        let r = (|| -> rusqlite::Result<Enqueued> {
            let pending_fp: Option<String> = tx
                .query_row("SELECT fingerprint FROM pending WHERE profile=?1 AND unique_id=?2", params![profile, unique_id], |r| r.get(0))
                .optional()?;
            let delivered: Option<(String, i64)> = tx
                .query_row(
                    "SELECT fingerprint, delivered_at FROM delivered WHERE profile=?1 AND unique_id=?2",
                    params![profile, unique_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let heartbeat_due = |at: i64| match heartbeat_after {
                Some(h) => now.saturating_sub(at.max(0) as u64) >= h.as_secs(),
                None => false,
            };
            let unchanged = match (&pending_fp, &delivered) {
                (Some(fp), _) => fp == fingerprint,
                (None, Some((fp, at))) => fp == fingerprint && !heartbeat_due(*at),
                (None, None) => false,
            };
            if unchanged {
                return Ok(Enqueued::Unchanged);
            }
            let seq: i64 = tx.query_row(
                "INSERT INTO counters(name, value) VALUES('seq', 1)
                 ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
                [],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO pending(profile, unique_id, version, fingerprint, body, seq, enqueued_at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(profile, unique_id) DO UPDATE SET
                   version=excluded.version, fingerprint=excluded.fingerprint, body=excluded.body,
                   seq=excluded.seq, enqueued_at=excluded.enqueued_at, attempts=0, last_error=NULL",
                params![profile, unique_id, Uuid::new_v4().to_string(), fingerprint, body, seq, now as i64],
            )?;
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0))?;
            let over = (count as u64).saturating_sub(max);
            if over > 0 {
                tx.execute(
                    "DELETE FROM pending WHERE rowid IN (SELECT rowid FROM pending ORDER BY seq LIMIT ?1)",
                    [over as i64],
                )?;
                tx.execute(
                    "INSERT INTO counters(name, value) VALUES('dropped', ?1)
                     ON CONFLICT(name) DO UPDATE SET value = value + ?1",
                    [over as i64],
                )?;
                tracing::warn!(dropped = over, bound = max, "outbox full: dropped the oldest pending records");
            }
            Ok(Enqueued::Queued { dropped: over })
        })();
        match r {
            Ok(v) => {
                tx.commit().map_err(err)?;
                Ok(v)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// The oldest pending entries of `profile`.
    pub fn next_batch(&self, profile: &str, limit: usize) -> Result<Vec<Entry>, OutboxError> {
        let mut st = self
            .db
            .prepare_cached(
                "SELECT unique_id, version, body, attempts, enqueued_at FROM pending WHERE profile=?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![profile, limit as i64], |r| {
                let v: String = r.get(1)?;
                Ok(Entry {
                    profile: profile.to_owned(),
                    unique_id: r.get(0)?,
                    version: Uuid::parse_str(&v).unwrap_or_default(),
                    body: r.get(2)?,
                    attempts: r.get::<_, i64>(3)?.max(0) as u32,
                    enqueued_at: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// A 2xx arrived for exactly this version: remove it (a newer pending version stays)
    /// and remember what was delivered. Returns whether the entry was removed.
    pub fn ack(&mut self, e: &Entry, now: u64) -> Result<bool, OutboxError> {
        let path = self.path.clone();
        let err = move |source: rusqlite::Error| OutboxError::Sqlite { path: path.clone(), source };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err.clone())?;
        let r = (|| -> rusqlite::Result<bool> {
            let fp: Option<String> = tx
                .query_row(
                    "DELETE FROM pending WHERE profile=?1 AND unique_id=?2 AND version=?3 RETURNING fingerprint",
                    params![e.profile, e.unique_id, e.version.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(fp) = &fp {
                tx.execute(
                    "INSERT INTO delivered(profile, unique_id, fingerprint, delivered_at) VALUES(?1, ?2, ?3, ?4)
                     ON CONFLICT(profile, unique_id) DO UPDATE SET fingerprint=excluded.fingerprint, delivered_at=excluded.delivered_at",
                    params![e.profile, e.unique_id, fp, now as i64],
                )?;
            }
            Ok(fp.is_some())
        })();
        match r {
            Ok(v) => {
                tx.commit().map_err(err)?;
                Ok(v)
            }
            Err(x) => Err(err(x)),
        }
    }

    /// The server rejected this version for good: move it to quarantine with the reason.
    pub fn quarantine(&mut self, e: &Entry, status: u16, reason: &str, now: u64) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let err = move |source: rusqlite::Error| OutboxError::Sqlite { path: path.clone(), source };
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err.clone())?;
        let r = (|| -> rusqlite::Result<()> {
            let n = tx.execute(
                "DELETE FROM pending WHERE profile=?1 AND unique_id=?2 AND version=?3",
                params![e.profile, e.unique_id, e.version.to_string()],
            )?;
            if n > 0 {
                tx.execute(
                    "INSERT INTO quarantine(profile, unique_id, version, body, status, reason, quarantined_at)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(profile, unique_id) DO UPDATE SET version=excluded.version, body=excluded.body,
                       status=excluded.status, reason=excluded.reason, quarantined_at=excluded.quarantined_at",
                    params![e.profile, e.unique_id, e.version.to_string(), e.body, status, reason, now as i64],
                )?;
            }
            Ok(())
        })();
        r.map_err(err.clone())?;
        tx.commit().map_err(err)
    }

    /// A retryable failure for this entry.
    pub fn note_attempt(&mut self, e: &Entry, error: &str) -> Result<(), OutboxError> {
        self.db
            .execute(
                "UPDATE pending SET attempts = attempts + 1, last_error=?4 WHERE profile=?1 AND unique_id=?2 AND version=?3",
                params![e.profile, e.unique_id, e.version.to_string(), error],
            )
            .map(|_| ())
            .map_err(|x| self.err(x))
    }

    /// Whether `profile` has a pending entry that is a state change (its fingerprint differs
    /// from the last delivered one, or the key was never delivered), as opposed to only
    /// heartbeats (an unchanged state re-sent to refresh `lastUsed`).
    pub fn has_pending_changes(&self, profile: &str) -> Result<bool, OutboxError> {
        self.db
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM pending p LEFT JOIN delivered d ON d.profile=p.profile AND d.unique_id=p.unique_id
                  WHERE p.profile=?1 AND (d.fingerprint IS NULL OR d.fingerprint != p.fingerprint))",
                [profile],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v != 0)
            .map_err(|e| self.err(e))
    }

    pub fn depth(&self, profile: Option<&str>) -> Result<u64, OutboxError> {
        let n: i64 = match profile {
            Some(p) => self.db.query_row("SELECT COUNT(*) FROM pending WHERE profile=?1", [p], |r| r.get(0)),
            None => self.db.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0)),
        }
        .map_err(|e| self.err(e))?;
        Ok(n.max(0) as u64)
    }

    pub fn dropped(&self) -> Result<u64, OutboxError> {
        let n: Option<i64> = self
            .db
            .query_row("SELECT value FROM counters WHERE name='dropped'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    pub fn quarantined(&self) -> Result<Vec<Quarantined>, OutboxError> {
        let mut st = self
            .db
            .prepare("SELECT profile, unique_id, version, status, reason, quarantined_at FROM quarantine ORDER BY quarantined_at, unique_id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Quarantined {
                    profile: r.get(0)?,
                    unique_id: r.get(1)?,
                    version: r.get(2)?,
                    status: r.get::<_, i64>(3)?.clamp(0, 999) as u16,
                    reason: r.get(4)?,
                    quarantined_at: r.get::<_, i64>(5)?.max(0) as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    pub fn sync_state(&self, profile: &str) -> Result<SyncState, OutboxError> {
        self.db
            .query_row(
                "SELECT last_success_at, last_error, last_error_at, credential_rejected, next_attempt_at, consecutive_failures,
                        heartbeat_retry_at, rejected_fingerprint
                 FROM sync_state WHERE profile=?1",
                [profile],
                |r| {
                    Ok(SyncState {
                        last_success_at: r.get::<_, Option<i64>>(0)?.map(|v| v.max(0) as u64),
                        last_error: r.get(1)?,
                        last_error_at: r.get::<_, Option<i64>>(2)?.map(|v| v.max(0) as u64),
                        credential_rejected: r.get::<_, i64>(3)? != 0,
                        next_attempt_at: r.get::<_, Option<i64>>(4)?.map(|v| v.max(0) as u64),
                        consecutive_failures: r.get::<_, i64>(5)?.max(0) as u32,
                        heartbeat_retry_at: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
                        rejected_fingerprint: r.get(7)?,
                    })
                },
            )
            .optional()
            .map(|o| o.unwrap_or_default())
            .map_err(|e| self.err(e))
    }

    pub fn set_sync_state(&self, profile: &str, s: &SyncState) -> Result<(), OutboxError> {
        self.db
            .execute(
                "INSERT INTO sync_state(profile, last_success_at, last_error, last_error_at, credential_rejected, next_attempt_at,
                   consecutive_failures, heartbeat_retry_at, rejected_fingerprint)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(profile) DO UPDATE SET last_success_at=excluded.last_success_at, last_error=excluded.last_error,
                   last_error_at=excluded.last_error_at, credential_rejected=excluded.credential_rejected,
                   next_attempt_at=excluded.next_attempt_at, consecutive_failures=excluded.consecutive_failures,
                   heartbeat_retry_at=excluded.heartbeat_retry_at, rejected_fingerprint=excluded.rejected_fingerprint",
                params![
                    profile,
                    s.last_success_at.map(|v| v as i64),
                    s.last_error,
                    s.last_error_at.map(|v| v as i64),
                    s.credential_rejected as i64,
                    s.next_attempt_at.map(|v| v as i64),
                    s.consecutive_failures as i64,
                    s.heartbeat_retry_at.map(|v| v as i64),
                    s.rejected_fingerprint
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Whether any profile still has a version of `unique_id` waiting to be pushed.
    pub fn is_pending(&self, unique_id: &str) -> Result<bool, OutboxError> {
        self.db
            .query_row("SELECT EXISTS(SELECT 1 FROM pending WHERE unique_id=?1)", [unique_id], |r| r.get::<_, i64>(0))
            .map(|v| v != 0)
            .map_err(|e| self.err(e))
    }

    /// `PRAGMA integrity_check` says "ok".
    #[allow(dead_code)]
    pub fn integrity_ok(&self) -> bool {
        self.db.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).map(|s| s == "ok").unwrap_or(false)
    }
}

enum MigrateError {
    Sqlite(rusqlite::Error),
    TooNew(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], one migration per transaction.
fn migrate(db: &mut Connection) -> Result<(), MigrateError> {
    db.execute_batch("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)")?;
    let mut current: i64 = match db.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()? {
        Some(v) => v,
        None => {
            db.execute("INSERT INTO schema_version(version) VALUES(0)", [])?;
            0
        }
    };
    if current > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(current));
    }
    while current < SCHEMA_VERSION {
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let v: i64 = tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?;
        if v == current {
            tx.execute_batch(MIGRATIONS[current as usize])?;
            tx.execute("UPDATE schema_version SET version=?1", [current + 1])?;
        }
        tx.commit()?;
        current = db.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typed record and the same record as JSON serialize alike; the fingerprint leaves out
    /// the sighting times but not the tap time, and a record without a uniqueId is skipped.
    #[test]
    fn a_record_is_serialized_once_with_its_fingerprint() {
        let mut r = crate::inventory::test_record("7", "YubiKey 5 NFC", Some("7"));
        let typed = Serialized::of(&r).unwrap().unwrap();
        let json = Serialized::from_json(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(typed, json);
        assert_eq!(typed.unique_id, "7");
        let sent: Value = serde_json::from_slice(&typed.body).unwrap();
        assert_eq!(sent, serde_json::to_value(&r).unwrap());
        r.yubikey.last_used = Some("2026-01-02T00:00:00.000Z".into());
        r.observation.as_mut().unwrap().observed_at = "2026-01-02T00:00:00.000Z".into();
        let seen_again = Serialized::of(&r).unwrap().unwrap();
        assert_eq!(seen_again.fingerprint, typed.fingerprint);
        assert_ne!(seen_again.body, typed.body);
        r.observation.as_mut().unwrap().tapped_at = Some("2026-01-02T00:00:00.000Z".into());
        assert_ne!(Serialized::of(&r).unwrap().unwrap().fingerprint, typed.fingerprint, "a tap is a new state");
        r.yubikey.unique_id.clear();
        assert_eq!(Serialized::of(&r).unwrap(), None);
        let (n, all) = Serialized::from_json_array(br#"[{"yubikey": {"uniqueId": "1"}}, {"yubikey": {}}]"#, "t").unwrap();
        assert_eq!((n, all.len()), (2, 1));
        assert!(Serialized::from_json_array(b"{}", "t").unwrap_err().contains("expected a JSON array"));
    }

    fn open(dir: &tempfile::TempDir, max: u64) -> Outbox {
        Outbox::open(&dir.path().join("outbox.sqlite"), max).unwrap()
    }

    #[test]
    fn fresh_file_gets_schema_version_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let ob = open(&dir, 10);
        assert_eq!(ob.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = ob.db.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        drop(ob);
        // Re-opening does not migrate twice.
        assert_eq!(open(&dir, 10).schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn version_1_file_is_migrated_keeping_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            // A state directory written by the previous release (schema 1).
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE schema_version(version INTEGER NOT NULL); INSERT INTO schema_version VALUES(1);").unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute("INSERT INTO sync_state(profile, last_success_at, consecutive_failures) VALUES('p', 42, 3)", []).unwrap();
            c.execute(
                "INSERT INTO pending(profile, unique_id, version, fingerprint, body, seq, enqueued_at) VALUES('p','k',?1,'f',x'7b7d',1,1)",
                [Uuid::new_v4().to_string()],
            )
            .unwrap();
        }
        let ob = Outbox::open(&path, 10).unwrap();
        assert_eq!(ob.schema_version().unwrap(), 3);
        let st = ob.sync_state("p").unwrap();
        assert_eq!((st.last_success_at, st.consecutive_failures, st.heartbeat_retry_at), (Some(42), 3, None));
        assert_eq!(ob.depth(None).unwrap(), 1);
    }

    #[test]
    fn heartbeat_only_backlog_is_told_apart_from_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(&dir, 10);
        ob.enqueue("p", "k", "a", b"{}", Some(Duration::from_secs(60)), 0).unwrap();
        assert!(ob.has_pending_changes("p").unwrap(), "never delivered: a change");
        let e = ob.next_batch("p", 1).unwrap().remove(0);
        ob.ack(&e, 1).unwrap();
        ob.enqueue("p", "k", "a", b"{}", Some(Duration::from_secs(60)), 100).unwrap();
        assert_eq!(ob.depth(None).unwrap(), 1, "the heartbeat is queued");
        assert!(!ob.has_pending_changes("p").unwrap(), "same fingerprint: a heartbeat");
        ob.enqueue("p", "k", "b", b"{}", Some(Duration::from_secs(60)), 101).unwrap();
        assert!(ob.has_pending_changes("p").unwrap());
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(&dir, 10));
        let c = Connection::open(dir.path().join("outbox.sqlite")).unwrap();
        c.execute("UPDATE schema_version SET version=99", []).unwrap();
        drop(c);
        let e = Outbox::open(&dir.path().join("outbox.sqlite"), 10).err().unwrap();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    #[test]
    fn latest_state_per_key_and_ack_only_exact_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(&dir, 10);
        ob.enqueue("p", "k1", "a", b"{\"v\":1}", None, 100).unwrap();
        let first = ob.next_batch("p", 10).unwrap().remove(0);
        ob.enqueue("p", "k1", "b", b"{\"v\":2}", None, 101).unwrap();
        assert_eq!(ob.depth(None).unwrap(), 1, "compacted per key");
        // The 2xx for the old version must not delete the newer state.
        assert!(!ob.ack(&first, 102).unwrap());
        let e = ob.next_batch("p", 10).unwrap().remove(0);
        assert_eq!(e.body, b"{\"v\":2}");
        assert_ne!(e.version, first.version);
        assert!(ob.ack(&e, 103).unwrap());
        assert_eq!(ob.depth(None).unwrap(), 0);
        // Unchanged fingerprint: not queued again, until the heartbeat is due.
        assert_eq!(ob.enqueue("p", "k1", "b", b"{}", Some(Duration::from_secs(60)), 120).unwrap(), Enqueued::Unchanged);
        assert!(matches!(ob.enqueue("p", "k1", "b", b"{}", Some(Duration::from_secs(60)), 200).unwrap(), Enqueued::Queued { .. }));
        // Profiles are independent.
        ob.enqueue("q", "k1", "b", b"{}", None, 200).unwrap();
        assert_eq!(ob.depth(Some("q")).unwrap(), 1);
    }

    #[test]
    fn size_bound_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(&dir, 3);
        for i in 0..5 {
            ob.enqueue("p", &format!("k{i}"), "f", b"{}", None, i).unwrap();
        }
        assert_eq!(ob.depth(None).unwrap(), 3);
        assert_eq!(ob.dropped().unwrap(), 2);
        let ids: Vec<_> = ob.next_batch("p", 10).unwrap().into_iter().map(|e| e.unique_id).collect();
        assert_eq!(ids, ["k2", "k3", "k4"]);
    }

    #[test]
    fn quarantine_keeps_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(&dir, 10);
        ob.enqueue("p", "bad", "f", b"{}", None, 1).unwrap();
        let e = ob.next_batch("p", 1).unwrap().remove(0);
        ob.quarantine(&e, 422, "uniqueId mismatch", 2).unwrap();
        assert_eq!(ob.depth(None).unwrap(), 0);
        let q = ob.quarantined().unwrap();
        assert_eq!((q[0].unique_id.as_str(), q[0].status, q[0].reason.as_str()), ("bad", 422, "uniqueId mismatch"));
    }

    #[test]
    fn sync_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let ob = open(&dir, 10);
        assert_eq!(ob.sync_state("p").unwrap(), SyncState::default());
        let s = SyncState { last_success_at: Some(5), last_error: Some("x".into()), credential_rejected: true, ..Default::default() };
        ob.set_sync_state("p", &s).unwrap();
        assert_eq!(ob.sync_state("p").unwrap(), s);
    }

    #[test]
    fn write_latency_figure() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(&dir, 100_000);
        let body = vec![b'x'; 1500];
        let n = 200;
        let t = std::time::Instant::now();
        for i in 0..n {
            ob.enqueue("p", &format!("k{i}"), &i.to_string(), &body, None, 1).unwrap();
        }
        let per = t.elapsed() / n;
        eprintln!("FIGURE outbox enqueue latency (synchronous=FULL, 1.5 KB record): {per:?} per write");
    }

    /// Child half of the kill -9 test: enqueues versions forever, printing each committed one.
    #[test]
    #[ignore = "run only as the child of kill9_mid_write_loses_nothing"]
    fn kill9_child_writer() {
        use std::io::Write;
        let Ok(path) = std::env::var("KEYTALLY_KILL9_DB") else { return };
        let mut ob = Outbox::open(Path::new(&path), 1_000_000).unwrap();
        let body = vec![b'y'; 4000];
        let mut out = std::io::stdout();
        for v in 0u64.. {
            let key = format!("k{}", v % 50);
            ob.enqueue("p", &key, &v.to_string(), &body, None, v).unwrap();
            let _ = writeln!(out, "{key} {v}");
            let _ = out.flush();
        }
    }

    #[cfg(unix)]
    #[test]
    fn kill9_mid_write_loses_nothing() {
        use std::collections::HashMap;
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("outbox.sqlite");
        drop(Outbox::open(&db, 1_000_000).unwrap());
        for round in 0..5u64 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "outbox::tests::kill9_child_writer", "--ignored", "--nocapture", "--test-threads=1"])
                .env("KEYTALLY_KILL9_DB", &db)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let mut committed: HashMap<String, u64> = HashMap::new();
            let stop_after = 40 + round * 37;
            let mut n = 0;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                let Some((k, v)) = line.split_once(' ') else { continue };
                let Ok(v) = v.parse::<u64>() else { continue };
                committed.insert(k.to_owned(), v);
                n += 1;
                if n >= stop_after {
                    break;
                }
            }
            assert!(n >= stop_after, "round {round}: the child wrote only {n} records");
            // SIGKILL while it keeps writing.
            child.kill().unwrap();
            let _ = child.wait();
            let ob = Outbox::open(&db, 1_000_000).unwrap();
            assert!(ob.integrity_ok(), "round {round}: integrity_check failed");
            let pending: HashMap<String, u64> = ob
                .next_batch("p", 10_000)
                .unwrap()
                .into_iter()
                .map(|e| {
                    let fp: String = ob
                        .db
                        .query_row("SELECT fingerprint FROM pending WHERE unique_id=?1", [&e.unique_id], |r| r.get(0))
                        .unwrap();
                    (e.unique_id, fp.parse().unwrap())
                })
                .collect();
            for (k, v) in &committed {
                let got = pending.get(k).copied();
                assert!(got.is_some_and(|g| g >= *v), "round {round}: {k} committed {v}, found {got:?}");
            }
        }
    }
}
