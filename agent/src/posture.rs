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
            "PIV      PIN {} ({} tries left), PUK {} ({} tries left), management key {}",
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

/// When each key's posture was last read, kept in `posture-read.json` in the state directory
/// so a restart does not read every key again. A key is its serial, or (without one) its
/// name, firmware and form factor.
#[derive(Clone)]
pub struct PostureSchedule {
    every: Duration,
    file: Option<PathBuf>,
    last: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl PostureSchedule {
    /// A schedule kept in `state_dir` (`None`: in memory only).
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

    /// Whether `key`'s posture is due: never read, or read `every` ago or more.
    pub fn due(&self, key: &Identified) -> bool {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.get(&Self::key_id(key)).is_none_or(|t| Self::now().saturating_sub(*t) >= self.every.as_secs())
    }

    /// The policy for a read: the keys that are due.
    pub fn wanted(&self) -> PostureWanted {
        let this = self.clone();
        PostureWanted::When(Arc::new(move |key: &Identified| this.due(key)))
    }

    /// Notes that `key`'s posture was read now, and saves the schedule (best effort: a state
    /// directory that cannot be written means posture is read again after a restart).
    pub fn read_now(&self, key: &Identified) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.insert(Self::key_id(key), Self::now());
        if let Some(file) = &self.file {
            let tmp = file.with_extension("json.tmp");
            let saved = serde_json::to_vec(&*last)
                .map_err(io::Error::from)
                .and_then(|bytes| fs::write(&tmp, bytes))
                .and_then(|()| fs::rename(&tmp, file));
            if let Err(e) = saved {
                tracing::info!("cannot save when posture was read ({}): {e}", file.display());
            }
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
    fn a_key_is_due_once_per_period_and_the_schedule_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let schedule = PostureSchedule::new(DEFAULT_EVERY, Some(dir.path()));
        let wanted = schedule.wanted();
        assert!(wanted.wants(&key(1)));
        schedule.read_now(&key(1));
        assert!(!wanted.wants(&key(1)), "read a moment ago");
        assert!(wanted.wants(&key(2)), "another key is still due");
        let restarted = PostureSchedule::new(DEFAULT_EVERY, Some(dir.path()));
        assert!(!restarted.due(&key(1)));
        // A zero period reads every time.
        assert!(PostureSchedule::new(Duration::ZERO, Some(dir.path())).due(&key(1)));
    }

    #[test]
    fn unknown_fields_read_as_question_marks() {
        let p = Posture { piv_pin_default: Some(true), piv_pin_retries: Some(3), otp_slots_configured: Some([false, true]), ..Posture::default() };
        let text = lines(&p).join("\n");
        assert!(text.contains("PIN default (3 tries left), PUK ? (? tries left)"), "{text}");
        assert!(text.contains("slot 1 empty, slot 2 programmed"), "{text}");
        assert!(text.contains("OATH     password ?"), "{text}");
        let read = PostureRead { warnings: vec![], ..PostureRead::default() };
        assert!(warning_lines("reader \"R\"", &read).is_empty());
    }
}
