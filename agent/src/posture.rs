//! Posture in the agent: the warnings of a posture read (naming the reader or port), the
//! text view of `keytally scan --posture`, and when the long-running modes read it again
//! (at most once per key per `posture_every`, remembered in the state directory).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keytally_device::enumerate::{PostureWanted, ScannedKey};
use keytally_device::identify::Identified;
use keytally_device::posture::{Posture, PostureRead};
use keytally_protocol::mapping::posture_record;
use keytally_protocol::record::{DeviceRecord, Posture as RecordPosture};

/// How often the service and the kiosk read a key's posture again by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// `reader "NAME"` or `USB port 1-2`: where a key was read, as warnings name it.
pub fn place_words(reader: Option<&str>, port: Option<&str>) -> String {
    match (port, reader) {
        (Some(port), _) => format!("USB port {port}"),
        (None, Some(reader)) => format!("reader \"{reader}\""),
        (None, None) => "the key".into(),
    }
}

/// One line per applet whose posture could not be read, naming where the key was read.
pub fn warning_lines(place: &str, read: &PostureRead) -> Vec<String> {
    read.warnings.iter().map(|w| format!("keytally: warning: {place}: {w}")).collect()
}

/// Prints the posture warnings of every key of a scan on stderr.
pub fn warn(keys: &[ScannedKey]) {
    for k in keys {
        if let Some(read) = &k.posture {
            for line in warning_lines(&place_words(k.reader.as_deref(), k.port.as_deref()), read) {
                eprintln!("{line}");
            }
        }
    }
}

fn yes_no(v: Option<bool>, yes: &str, no: &str) -> String {
    v.map_or_else(|| "?".into(), |b| if b { yes.into() } else { no.into() })
}

fn num<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "?".into(), |n| n.to_string())
}

/// The posture as lines of text, one per applet; `?` where unknown.
pub fn lines(p: &Posture) -> Vec<String> {
    let tries = |t: Option<[u8; 3]>| match t {
        Some([pw1, rc, pw3]) => format!("PIN tries {pw1}, reset code tries {rc}, admin PIN tries {pw3}"),
        None => "PIN tries ?".into(),
    };
    let slots = |s: Option<[bool; 2]>| match s {
        Some([one, two]) => format!("slot 1 {}, slot 2 {}", if one { "programmed" } else { "empty" }, if two { "programmed" } else { "empty" }),
        None => "slots ?".into(),
    };
    vec![
        format!(
            "PIV      PIN {} (tries left: {}), PUK {} (tries left: {}), management key {}",
            yes_no(p.piv_pin_default, "default", "changed"),
            num(p.piv_pin_retries),
            yes_no(p.piv_puk_default, "default", "changed"),
            num(p.piv_puk_retries),
            yes_no(p.piv_management_key_default, "default", "changed"),
        ),
        format!(
            "FIDO2    PIN {}, fingerprints {}, force PIN change {}, min PIN length {}, discoverable credentials left {}",
            yes_no(p.fido2_pin_set, "set", "not set"),
            yes_no(p.fido2_uv_enrolled, "enrolled", "not enrolled"),
            yes_no(p.fido2_force_pin_change, "yes", "no"),
            num(p.fido2_min_pin_length),
            num(p.fido2_remaining_discoverable_credentials),
        ),
        format!("OpenPGP  {}", tries(p.openpgp_pin_retries)),
        format!("OATH     password {}", yes_no(p.oath_password_set, "set", "not set")),
        format!("OTP      {}", slots(p.otp_slots_configured)),
    ]
}

/// `scan --posture`'s text view: a block per key after the table.
pub fn write_blocks(out: &mut impl Write, keys: &[ScannedKey]) -> io::Result<()> {
    for k in keys {
        let Some(read) = &k.posture else { continue };
        let serial = k.key.info.serial.map_or_else(|| "no serial".into(), |s| s.to_string());
        writeln!(out)?;
        writeln!(out, "Posture of {} {} ({}):", k.key.name, serial, place_words(k.reader.as_deref(), k.port.as_deref()))?;
        for line in lines(&read.posture) {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

/// When each key's posture was last read, and what it was, kept in `posture-read.json` in the
/// state directory: a key's records between two reads carry the posture last read (also after
/// a restart), and a restart does not read every key again. A key is its serial, or (without
/// one) its name, firmware and form factor.
#[derive(Clone)]
pub struct PostureSchedule {
    every: Duration,
    file: Option<PathBuf>,
    last: Arc<Mutex<BTreeMap<String, LastRead>>>,
}

/// One key's last posture read.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LastRead {
    /// Seconds since the Unix epoch.
    at: u64,
    posture: RecordPosture,
}

impl PostureSchedule {
    /// A schedule kept in `state_dir` (`None`: in memory only); a key is due again `every`
    /// after its last read.
    pub fn new(every: Duration, state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|d| d.join("posture-read.json"));
        let last = file
            .as_ref()
            .and_then(|f| fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self { every, file, last: Arc::new(Mutex::new(last)) }
    }

    fn key_id(key: &Identified) -> String {
        match key.info.serial {
            Some(s) => s.to_string(),
            None => format!("{}|{}|{}", key.name, key.info.version, key.info.form_factor.code()),
        }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LastRead>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key`'s posture is due: never read, or read `every` ago or more.
    pub fn due(&self, key: &Identified) -> bool {
        self.lock().get(&Self::key_id(key)).is_none_or(|l| Self::now().saturating_sub(l.at) >= self.every.as_secs())
    }

    /// The policy for a read: the keys that are due.
    pub fn wanted(&self) -> PostureWanted {
        let this = self.clone();
        PostureWanted::When(Arc::new(move |key: &Identified| this.due(key)))
    }

    /// After a read: remembers the posture of each key whose posture was read (and saves the
    /// schedule), and gives each record whose key's posture was not read this time the
    /// posture last read. `records` are `keys`' records, in the same order.
    pub fn remember(&self, keys: &[&Identified], postures: &[Option<&PostureRead>], records: &mut [DeviceRecord]) {
        let mut last = self.lock();
        let mut changed = false;
        for ((key, read), record) in keys.iter().zip(postures).zip(records.iter_mut()) {
            let id = Self::key_id(key);
            match read {
                Some(read) => {
                    last.insert(id, LastRead { at: Self::now(), posture: posture_record(&read.posture) });
                    changed = true;
                }
                None => {
                    if let (Some(l), Some(o)) = (last.get(&id), record.observation.as_mut()) {
                        o.posture.get_or_insert_with(|| l.posture.clone());
                        // The advisories it settles, as on the day it was read.
                        keytally_protocol::mapping::settle_advisories(record);
                    }
                }
            }
        }
        if changed {
            self.save(&last);
        }
    }

    /// Saves the schedule (best effort: a state directory that cannot be written means
    /// posture is read again after a restart).
    fn save(&self, last: &BTreeMap<String, LastRead>) {
        let Some(file) = &self.file else { return };
        let tmp = file.with_extension("json.tmp");
        let saved = serde_json::to_vec(last)
            .map_err(io::Error::from)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, file));
        if let Err(e) = saved {
            tracing::info!("cannot save when posture was read ({}): {e}", file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keytally_device::caps::{Capabilities, FormFactor, Transport};
    use keytally_device::device_info::{DeviceInfo, PerTransport};
    use keytally_device::version::Version;

    fn key(serial: u32) -> Identified {
        let mut info = DeviceInfo::synthesized(Version::new(5, 7, 4), Some(serial), PerTransport { usb: Some(Capabilities(0x023F)), nfc: None });
        info.form_factor = FormFactor::UsbAKeychain;
        Identified { info, key_type: None, name: "YubiKey 5A".into(), transport: Transport::Usb, pid: None }
    }

    #[test]
    fn a_key_is_due_once_per_period_and_its_last_posture_fills_the_records_between() {
        let dir = tempfile::tempdir().unwrap();
        let schedule = PostureSchedule::new(DEFAULT_EVERY, Some(dir.path()));
        let wanted = schedule.wanted();
        let (one, two) = (key(1), key(2));
        assert!(wanted.wants(&one));
        let read = PostureRead { posture: Posture { oath_password_set: Some(true), ..Posture::default() }, ..PostureRead::default() };
        let mut records = vec![crate::inventory::test_record("1", "YubiKey 5A", Some("1"))];
        schedule.remember(&[&one], &[Some(&read)], &mut records);
        assert!(!wanted.wants(&one), "read a moment ago");
        assert!(wanted.wants(&two), "another key is still due");

        // After a restart: not due, and a record read without posture gets the last one.
        let restarted = PostureSchedule::new(DEFAULT_EVERY, Some(dir.path()));
        assert!(!restarted.due(&one));
        let mut records = vec![crate::inventory::test_record("1", "YubiKey 5A", Some("1")), crate::inventory::test_record("2", "YubiKey 5A", Some("2"))];
        restarted.remember(&[&one, &two], &[None, None], &mut records);
        assert_eq!(records[0].observation.as_ref().unwrap().posture.as_ref().unwrap().oath_password_set, Some(true));
        assert_eq!(records[1].observation.as_ref().unwrap().posture, None, "never read: absent");
        // A zero period reads every time.
        assert!(PostureSchedule::new(Duration::ZERO, Some(dir.path())).due(&one));
    }

    #[test]
    fn unknown_fields_read_as_question_marks() {
        let p = Posture { piv_pin_default: Some(true), piv_pin_retries: Some(3), otp_slots_configured: Some([false, true]), ..Posture::default() };
        let text = lines(&p).join("\n");
        assert!(text.contains("PIN default (tries left: 3), PUK ? (tries left: ?)"), "{text}");
        assert!(text.contains("slot 1 empty, slot 2 programmed"), "{text}");
        assert!(text.contains("OATH     password ?"), "{text}");
        let read = PostureRead { warnings: vec![], ..PostureRead::default() };
        assert!(warning_lines("reader \"R\"", &read).is_empty());
    }
}
