//! The sandbox's SQLite store: devices (idempotent upsert keyed by uniqueId, with a
//! log of applied PUTs for ordering checks), API keys, OAuth2 access tokens and the
//! machine token.

use std::path::Path;

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

pub struct Store {
    db: Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Updated,
    /// The same Idempotency-Key was seen before: nothing was changed.
    Replayed,
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

impl Store {
    pub fn open(path: Option<&Path>) -> rusqlite::Result<Store> {
        let db = match path {
            Some(p) => Connection::open(p)?,
            None => Connection::open_in_memory()?,
        };
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS devices(unique_id TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, unique_id TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS put_log(seq INTEGER PRIMARY KEY AUTOINCREMENT, unique_id TEXT NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS api_keys(id TEXT PRIMARY KEY, name TEXT NOT NULL, key TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS access_tokens(token TEXT PRIMARY KEY, client_id TEXT NOT NULL, expires_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS revoked_clients(client_id TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS machine_tokens(token TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, current INTEGER NOT NULL);",
        )?;
        Ok(Store { db })
    }

    pub fn upsert(&mut self, unique_id: &str, record: &Value, idem: Option<&str>, now: u64) -> rusqlite::Result<Upsert> {
        let tx = self.db.transaction()?;
        if let Some(k) = idem {
            let seen: Option<String> =
                tx.query_row("SELECT unique_id FROM idempotency WHERE key=?1", [k], |r| r.get(0)).optional()?;
            if seen.is_some() {
                return Ok(Upsert::Replayed);
            }
            tx.execute("INSERT INTO idempotency(key, unique_id) VALUES(?1, ?2)", params![k, unique_id])?;
        }
        let stored: Option<String> =
            tx.query_row("SELECT body FROM devices WHERE unique_id=?1", [unique_id], |r| r.get(0)).optional()?;
        let existed = stored.is_some();
        let mut record = record.clone();
        if let Some(old) = stored.and_then(|b| serde_json::from_str::<Value>(&b).ok()) {
            keep_assignments(&mut record, &old);
        }
        let body = record.to_string();
        tx.execute(
            "INSERT INTO devices(unique_id, body, updated_at) VALUES(?1, ?2, ?3)
             ON CONFLICT(unique_id) DO UPDATE SET body=excluded.body, updated_at=excluded.updated_at",
            params![unique_id, body, now as i64],
        )?;
        tx.execute("INSERT INTO put_log(unique_id, body) VALUES(?1, ?2)", params![unique_id, body])?;
        tx.commit()?;
        Ok(if existed { Upsert::Updated } else { Upsert::Created })
    }

    pub fn device(&self, unique_id: &str) -> Option<Value> {
        self.db
            .query_row("SELECT body FROM devices WHERE unique_id=?1", [unique_id], |r| r.get::<_, String>(0))
            .optional()
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    pub fn device_count(&self) -> u64 {
        self.db.query_row("SELECT COUNT(*) FROM devices", [], |r| r.get::<_, i64>(0)).unwrap_or(0) as u64
    }

    pub fn puts_applied(&self) -> u64 {
        self.db.query_row("SELECT COUNT(*) FROM put_log", [], |r| r.get::<_, i64>(0)).unwrap_or(0) as u64
    }

    /// Every applied PUT for `unique_id`, oldest first.
    pub fn put_history(&self, unique_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if let Ok(mut st) = self.db.prepare("SELECT body FROM put_log WHERE unique_id=?1 ORDER BY seq") {
            if let Ok(rows) = st.query_map([unique_id], |r| r.get::<_, String>(0)) {
                out.extend(rows.flatten().filter_map(|s| serde_json::from_str(&s).ok()));
            }
        }
        out
    }

    pub fn list(&self, limit: u64, offset: u64) -> (Vec<Value>, u64) {
        let total = self.device_count();
        let mut items = Vec::new();
        if let Ok(mut st) = self.db.prepare("SELECT body FROM devices ORDER BY unique_id LIMIT ?1 OFFSET ?2") {
            if let Ok(rows) = st.query_map(params![limit as i64, offset as i64], |r| r.get::<_, String>(0)) {
                items.extend(rows.flatten().filter_map(|s| serde_json::from_str(&s).ok()));
            }
        }
        (items, total)
    }

    pub fn create_api_key(&mut self, name: &str) -> (String, String) {
        let id = uuid::Uuid::new_v4().to_string();
        let key = random_token("ktsk");
        let _ = self.db.execute(
            "INSERT INTO api_keys(id, name, key, created_at) VALUES(?1, ?2, ?3, strftime('%s','now'))",
            params![id, name, key],
        );
        (id, key)
    }

    pub fn list_api_keys(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if let Ok(mut st) = self.db.prepare("SELECT id, name, created_at FROM api_keys WHERE revoked=0 ORDER BY created_at, id") {
            if let Ok(rows) = st.query_map([], |r| {
                Ok(json!({"id": r.get::<_, String>(0)?, "name": r.get::<_, String>(1)?, "created_at": r.get::<_, i64>(2)?, "expires_at": null}))
            }) {
                out.extend(rows.flatten());
            }
        }
        out
    }

    pub fn revoke_api_key(&mut self, id: &str) -> bool {
        self.db.execute("UPDATE api_keys SET revoked=1 WHERE id=?1 AND revoked=0", [id]).map(|n| n > 0).unwrap_or(false)
    }

    pub fn issue_access_token(&mut self, client_id: &str, expires_at: u64) -> String {
        let t = random_token("ktat");
        let _ = self.db.execute(
            "INSERT INTO access_tokens(token, client_id, expires_at) VALUES(?1, ?2, ?3)",
            params![t, client_id, expires_at as i64],
        );
        t
    }

    /// Expires every access token now (the next API call gets a 401).
    pub fn expire_access_tokens(&mut self) {
        let _ = self.db.execute("UPDATE access_tokens SET expires_at=0", []);
    }

    pub fn client_revoked(&self, client_id: &str) -> bool {
        self.db.query_row("SELECT 1 FROM revoked_clients WHERE client_id=?1", [client_id], |_| Ok(())).optional().ok().flatten().is_some()
    }

    pub fn revoke_client(&mut self, client_id: &str) {
        let _ = self.db.execute("INSERT OR IGNORE INTO revoked_clients(client_id) VALUES(?1)", [client_id]);
        let _ = self.db.execute("UPDATE access_tokens SET revoked=1 WHERE client_id=?1", [client_id]);
    }

    /// Revokes every API key, access token and machine token.
    pub fn revoke_everything(&mut self) {
        let _ = self.db.execute_batch(
            "UPDATE api_keys SET revoked=1; UPDATE access_tokens SET revoked=1; UPDATE machine_tokens SET current=0;",
        );
    }

    pub fn set_machine_token_if_none(&mut self, token: &str) {
        if self.machine_token().is_none() {
            let _ = self.db.execute(
                "INSERT OR REPLACE INTO machine_tokens(token, expires_at, current) VALUES(?1, 0, 1)",
                [token],
            );
        }
    }

    pub fn machine_token(&self) -> Option<String> {
        self.db.query_row("SELECT token FROM machine_tokens WHERE current=1", [], |r| r.get(0)).optional().ok().flatten()
    }

    /// Revokes the current machine token and issues a new one (an unsigned JWT with `exp`).
    pub fn rotate_machine_token(&mut self, expires_at: u64) -> String {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let nonce: u64 = rand::rng().random();
        let token = format!(
            "{}.{}.{}",
            e.encode(br#"{"alg":"none","typ":"JWT"}"#),
            e.encode(format!(r#"{{"sub":"machine","exp":{expires_at},"n":{nonce}}}"#)),
            e.encode(b"sandbox")
        );
        let _ = self.db.execute("UPDATE machine_tokens SET current=0", []);
        let _ = self.db.execute(
            "INSERT INTO machine_tokens(token, expires_at, current) VALUES(?1, ?2, 1)",
            params![token, expires_at as i64],
        );
        token
    }

    pub fn token_valid(&self, token: &str, now: u64) -> bool {
        let one = |sql: &str, p: &[&dyn rusqlite::ToSql]| {
            self.db.query_row(sql, p, |_| Ok(())).optional().ok().flatten().is_some()
        };
        one("SELECT 1 FROM api_keys WHERE key=?1 AND revoked=0", &[&token])
            || one("SELECT 1 FROM access_tokens WHERE token=?1 AND revoked=0 AND expires_at>?2", &[&token, &(now as i64)])
            || one("SELECT 1 FROM machine_tokens WHERE token=?1 AND current=1", &[&token])
    }

    /// A revoked API key gets 403 (the key is known and was revoked), not 401.
    pub fn token_forbidden(&self, token: &str) -> bool {
        self.db.query_row("SELECT 1 FROM api_keys WHERE key=?1 AND revoked=1", [token], |_| Ok(())).optional().ok().flatten().is_some()
    }
}

/// Owner, tags and status are the server's to assign (an admin, or the enrollment desk that
/// sends them). A PUT that leaves them empty keeps what the server has, and an owner the
/// agent only suggests (`"suggested": true`, from the workstation's logged-in user) fills an
/// unassigned key but never replaces an assigned owner.
fn keep_assignments(new: &mut Value, old: &Value) {
    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(o) => o.get("items").and_then(Value::as_array).is_some_and(|a| a.is_empty()),
    };
    let suggested_only = |v: Option<&Value>| {
        v.and_then(|o| o.get("items")).and_then(Value::as_array).is_some_and(|items| {
            !items.is_empty() && items.iter().all(|i| i.get("suggested").and_then(Value::as_bool) == Some(true))
        })
    };
    let Some(obj) = new.as_object_mut() else { return };
    let old_owners = old.get("owners");
    let keep_owners = !empty(old_owners)
        && (empty(obj.get("owners")) || (suggested_only(obj.get("owners")) && !suggested_only(old_owners)));
    if keep_owners {
        if let Some(o) = old_owners {
            obj.insert("owners".into(), o.clone());
        }
    }
    for field in ["tags", "status"] {
        if empty(obj.get(field)) && !empty(old.get(field)) {
            if let Some(v) = old.get(field) {
                obj.insert(field.into(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &mut Store, body: Value) -> Value {
        store.upsert("7", &body, None, 1).unwrap();
        store.device("7").unwrap()
    }

    #[test]
    fn assignments_survive_an_agent_put_and_suggestions_fill_only_the_unassigned() {
        let mut store = Store::open(None).unwrap();
        let suggested = json!({"count": 1, "items": [{"name": "alice", "sid": "1000", "suggested": true}]});
        let assigned = json!({"count": 1, "items": [{"name": "Bob", "email": "bob@example.com"}]});
        let none = json!({"count": 0, "items": []});
        // An unassigned key takes the suggestion.
        let d = put(&mut store, json!({"yubikey": {"uniqueId": "7"}, "owners": suggested, "tags": [], "status": null}));
        assert_eq!(d["owners"], suggested);
        // The desk assigns an owner, tags and a status.
        let d = put(&mut store, json!({"yubikey": {"uniqueId": "7"}, "owners": assigned, "tags": [{"name": "desk"}], "status": {"name": "Active"}}));
        assert_eq!(d["owners"], assigned);
        // The agent's next PUT (a suggestion, or nothing) keeps them.
        let d = put(&mut store, json!({"yubikey": {"uniqueId": "7", "lastUsed": "x"}, "owners": suggested, "tags": [], "status": null}));
        assert_eq!((&d["owners"], &d["tags"][0]["name"], &d["status"]["name"]), (&assigned, &json!("desk"), &json!("Active")));
        assert_eq!(d["yubikey"]["lastUsed"], "x", "the agent's facts are updated");
        let d = put(&mut store, json!({"yubikey": {"uniqueId": "7"}, "owners": none, "tags": [], "status": null}));
        assert_eq!(d["owners"], assigned);
        // A new assignment replaces the old.
        let carol = json!({"count": 1, "items": [{"email": "carol@example.com"}]});
        assert_eq!(put(&mut store, json!({"yubikey": {"uniqueId": "7"}, "owners": carol}))["owners"], carol);
    }
}
