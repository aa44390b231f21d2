//! The Windows service's log: the Application event log, source `keytally` (the MSI registers
//! it under `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\keytally`).
//!
//! A service's stderr goes nowhere, so while running as the service the process's stderr is a
//! pipe whose lines become events: the very lines journald gets from `keytally run` on Linux
//! (tracing's, without timestamps, at the level `-v`/`RUST_LOG` set, and the `keytally: …`
//! lines a command prints, such as a configuration error). Errors and warnings keep their
//! event type; the rest are informational.

use std::io::{BufRead, BufReader};
use std::os::windows::io::AsRawHandle;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Console::{GetStdHandle, SetStdHandle, STD_ERROR_HANDLE};
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, RegisterEventSourceW, ReportEventW, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE,
    REPORT_EVENT_TYPE,
};

/// The event source (and the name the MSI registers).
pub const SOURCE: &str = "keytally";

/// While stderr is the event log: the pipe's write end, "the reader has reported everything"
/// (once that end is closed), and the stderr handle from before.
static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

struct Installed {
    writer: std::io::PipeWriter,
    done: mpsc::Receiver<()>,
    before: usize,
}

/// Makes stderr the event log: from now on every line written to stderr is an event.
/// Nothing changes when the pipe or the thread cannot be made (said on the old stderr).
pub fn capture_stderr() {
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keytally: cannot send the log to the event log: {e}");
            return;
        }
    };
    let (done_tx, done_rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("event-log".into()).spawn(move || {
        let source = EventSource::open();
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if !line.trim().is_empty() {
                source.report(event_type(&line), &line);
            }
        }
        let _ = done_tx.send(());
    });
    if let Err(e) = spawned {
        eprintln!("keytally: cannot send the log to the event log: {e}");
        return;
    }
    // SAFETY: the handle stays open as long as INSTALLED holds the writer; `flush` below
    // takes it out of stderr before closing it.
    let before = unsafe { GetStdHandle(STD_ERROR_HANDLE) };
    unsafe { SetStdHandle(STD_ERROR_HANDLE, writer.as_raw_handle() as HANDLE) };
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Installed { writer, done: done_rx, before: before as usize });
}

/// Before the process ends (or when it turns out not to be the service): stderr is what it
/// was before, and the lines still in the pipe are reported (waiting at most `wait`).
pub fn flush(wait: Duration) {
    let Some(Installed { writer, done, before }) = INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    // SAFETY: the handle stderr had before (a service's is null: "no stderr", which Rust's
    // eprintln and tracing's writer take as writing nothing, without failing).
    unsafe { SetStdHandle(STD_ERROR_HANDLE, before as HANDLE) };
    drop(writer);
    let _ = done.recv_timeout(wait);
}

/// Whether stderr is the event log now.
pub fn capturing() -> bool {
    INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// The event type of a log line: tracing's level word, or `keytally: warning:` / `keytally:`
/// (a command's warning or error line), or a panic.
fn event_type(line: &str) -> REPORT_EVENT_TYPE {
    let l = line.trim_start();
    if l.starts_with("ERROR") || l.starts_with("thread '") {
        EVENTLOG_ERROR_TYPE
    } else if l.starts_with("WARN") || l.starts_with("keytally: warning") {
        EVENTLOG_WARNING_TYPE
    } else if l.starts_with("keytally:") {
        EVENTLOG_ERROR_TYPE
    } else {
        EVENTLOG_INFORMATION_TYPE
    }
}

/// A registered event source; reports nothing when Windows gave none.
struct EventSource(Option<OwnedEventSource>);

struct OwnedEventSource(HANDLE);

impl Drop for OwnedEventSource {
    fn drop(&mut self) {
        // SAFETY: the handle from RegisterEventSourceW, deregistered once.
        unsafe { DeregisterEventSource(self.0) };
    }
}

impl EventSource {
    fn open() -> Self {
        let name: Vec<u16> = SOURCE.encode_utf16().chain(Some(0)).collect();
        // SAFETY: local machine (null), a NUL-terminated name.
        let h = unsafe { RegisterEventSourceW(std::ptr::null(), name.as_ptr()) };
        EventSource((!h.is_null()).then_some(OwnedEventSource(h)))
    }

    fn report(&self, kind: REPORT_EVENT_TYPE, line: &str) {
        let Some(source) = &self.0 else { return };
        // An event's string is at most 31,839 characters.
        let text: Vec<u16> = line.encode_utf16().take(31_000).chain(Some(0)).collect();
        let strings = [text.as_ptr()];
        // SAFETY: one NUL-terminated string, no SID, no raw data. Event id 0: the message
        // file the MSI names (.NET's EventLogMessages.dll) shows "%1" for every id.
        unsafe { ReportEventW(source.0, kind, 0, 0, std::ptr::null_mut(), 1, 0, strings.as_ptr(), std::ptr::null()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_level() {
        assert_eq!(event_type("ERROR push failed: timeout"), EVENTLOG_ERROR_TYPE);
        assert_eq!(event_type(" WARN pcscd is not running"), EVENTLOG_WARNING_TYPE);
        assert_eq!(event_type(" INFO keytally Windows service running"), EVENTLOG_INFORMATION_TYPE);
        assert_eq!(event_type("DEBUG pushed"), EVENTLOG_INFORMATION_TYPE);
        assert_eq!(event_type("keytally: configuration error in C:\\ProgramData\\keytally\\config.toml: profiles: no server profile"), EVENTLOG_ERROR_TYPE);
        assert_eq!(event_type("keytally: warning: cannot read the config"), EVENTLOG_WARNING_TYPE);
        assert_eq!(event_type("thread 'push' panicked at src/pusher.rs:1:1:"), EVENTLOG_ERROR_TYPE);
    }
}
