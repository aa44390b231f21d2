//! The OS keyring as the credential source, through the real stack: a private D-Bus session
//! (`dbus-run-session`) with `gnome-keyring-daemon` unlocked non-interactively, the token
//! stored with `secret-tool` and with `keytally secret set`, then `keytally sync --once`
//! against the sandbox server, `status` and `doctor`. The token never appears in any output.
//! Without a session bus, for a missing entry, a locked keyring and a bus that never answers,
//! the error says so (within the deadline). Skipped, saying why, only when dbus-run-session,
//! gnome-keyring-daemon or secret-tool are not installed (tests/setup.sh installs them; on CI
//! a missing one fails the test: tests/support/skip.rs).

#![cfg(all(unix, not(target_os = "macos")))] // the freedesktop Secret Service over D-Bus

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "../support/mod.rs"]
mod support;

use support::keytally;

/// `false` (skipped, see tests/support/skip.rs) when a tool this test needs is missing.
fn tools() -> bool {
    support::require_tools(&["dbus-run-session", "gnome-keyring-daemon", "secret-tool"], "apt install dbus gnome-keyring libsecret-tools")
}

/// A private session bus with an unlocked gnome-keyring on it; ended when dropped.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    address: String,
    home: tempfile::TempDir,
}

impl Session {
    fn start() -> Session {
        let home = tempfile::tempdir().unwrap();
        let runtime = home.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        // The shell unlocks (creating) the login keyring with a password on stdin, prints the
        // bus address, then waits for its stdin to close: the session lives until then.
        let script = r#"printf %s "$1" | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 1
echo "$DBUS_SESSION_BUS_ADDRESS"
exec cat >/dev/null"#;
        let mut child = Command::new("dbus-run-session")
            .args(["--", "sh", "-c", script, "sh", "test-keyring-password"])
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let address = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default().trim().to_owned();
        let stdin = child.stdin.take();
        let session = Session { child, stdin, address, home };
        assert!(session.address.starts_with("unix:"), "the D-Bus session did not start: {:?}", session.address);
        session
    }

    /// `cmd` with this session's bus and home.
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address).env("HOME", self.home.path()).env("XDG_RUNTIME_DIR", self.home.path().join("run"))
    }

    /// Stores `value` under service=keytally username=`user` with secret-tool.
    fn secret_tool_store(&self, user: &str, value: &str) {
        let mut c = Command::new("secret-tool");
        self.env(&mut c).args(["store", "--label=keytally test", "service", "keytally", "username", user]);
        let out = run(&mut c, Some(value), Duration::from_secs(20));
        assert!(out.status.success(), "secret-tool store: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Locks the login collection (what a screen lock or a timeout does).
    fn lock(&self) {
        let mut c = Command::new("dbus-send");
        self.env(&mut c).args([
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ]);
        let out = run(&mut c, None, Duration::from_secs(20));
        assert!(out.status.success(), "dbus-send Lock: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` with `input` on stdin; kills it after `limit`.
fn run(cmd: &mut Command, input: Option<&str>, limit: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

struct Outputs {
    all: String,
}

impl Outputs {
    fn new() -> Self {
        Outputs { all: String::new() }
    }
    /// Keeps both streams for the "never printed" check and returns them.
    fn keep(&mut self, out: &Output) -> (String, String) {
        let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        self.all.push_str(&o);
        self.all.push_str(&e);
        eprintln!("stdout: {o}\nstderr: {e}");
        (o, e)
    }
}

fn write_config(dir: &Path, server: &str, user: &str) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("state_dir = {:?}\n[profiles.prod]\nserver = {server:?}\ntoken_keyring = {{ service = \"keytally\", user = {user:?} }}\n", dir.join("state")),
    )
    .unwrap();
    config
}

fn records(dir: &Path, uid: &str) -> String {
    let f = dir.join(format!("records-{uid}.json"));
    std::fs::write(&f, serde_json::to_string(&json!([{"yubikey": {"uniqueId": uid, "firmwareVersion": "5.7.2"}}])).unwrap()).unwrap();
    f.to_str().unwrap().to_owned()
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn sync_status_and_doctor_take_the_token_from_the_keyring() {
    if !tools() {
        return;
    }
    let sb = support::sandbox();
    let (_, key) = sb.create_api_key("keyring");
    let session = Session::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sb.devices_base(), "prod");
    let mut outs = Outputs::new();

    // Stored by another tool (secret-tool, as an admin would), read by keytally.
    session.secret_tool_store("prod", &key);
    let out = run(session.env(&mut keytally(&config, &["-vvv", "sync", "--once", "--records", &records(dir.path(), "5001")])), None, LIMIT);
    outs.keep(&out);
    assert_eq!(out.status.code(), Some(0), "sync with the keyring token");
    assert_eq!(sb.store().device("5001").unwrap()["yubikey"]["uniqueId"], "5001", "the server got the record");

    let out = run(session.env(&mut keytally(&config, &["status"])), None, LIMIT);
    let (stdout, _) = outs.keep(&out);
    assert!(stdout.contains("credential:   api-token from keyring keytally/prod, no expiry stated in the token"), "{stdout}");
    let out = run(session.env(&mut keytally(&config, &["status", "--json"])), None, LIMIT);
    let (stdout, _) = outs.keep(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["profiles"][0]["credential"]["source"], "keyring keytally/prod");
    let out = run(session.env(&mut keytally(&config, &["doctor"])), None, LIMIT);
    let (stdout, _) = outs.keep(&out);
    let line = stdout.lines().find(|l| l.contains("credential prod:")).unwrap_or_default();
    assert!(line.starts_with("ok") && line.contains("from keyring keytally/prod"), "{stdout}");

    // A wrong token put in with `keytally secret set` (stdin, not a terminal) is the one sent:
    // the server refuses it and the record stays queued.
    let out = run(session.env(&mut keytally(&config, &["secret", "set", "--profile", "prod"])), Some("not-the-key\n"), LIMIT);
    let (stdout, _) = outs.keep(&out);
    assert!(out.status.success() && stdout.contains("stored the API token for profile prod in keyring entry keytally/prod"), "{stdout}");
    let out = run(session.env(&mut keytally(&config, &["sync", "--once", "--records", &records(dir.path(), "5002")])), None, LIMIT);
    outs.keep(&out);
    assert_eq!(out.status.code(), Some(3), "a refused token leaves the record queued");
    assert!(sb.store().device("5002").is_none());

    // The right one again, through `secret set`; `secret check` sees it; the queued record goes.
    let out = run(session.env(&mut keytally(&config, &["secret", "set", "--profile", "prod"])), Some(&format!("{key}\n")), LIMIT);
    outs.keep(&out);
    assert!(out.status.success());
    let out = run(session.env(&mut keytally(&config, &["secret", "check", "--profile", "prod"])), None, LIMIT);
    let (stdout, _) = outs.keep(&out);
    assert!(out.status.success() && stdout.contains("holds the API token") && stdout.contains("value not shown"), "{stdout}");
    // The refusal set a backoff, but the credential in the keyring is no longer the refused
    // one: it is tried at once (keytally keeps only a fingerprint of the refused one).
    let out = run(session.env(&mut keytally(&config, &["-vvv", "sync", "--once", "--records", &records(dir.path(), "5003")])), None, LIMIT);
    outs.keep(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(sb.store().device("5003").is_some());

    // What secret-tool reads back is what `secret set` stored (one item, replaced in place).
    let mut c = Command::new("secret-tool");
    session.env(&mut c).args(["lookup", "service", "keytally", "username", "prod"]);
    assert_eq!(String::from_utf8_lossy(&run(&mut c, None, LIMIT).stdout), key);

    assert!(!outs.all.contains(key.as_str()), "the token appeared in keytally's output");
    assert!(!outs.all.contains("not-the-key"), "the wrong token appeared in keytally's output");
}

#[test]
fn clear_errors_without_a_session_for_a_missing_entry_a_locked_keyring_and_a_silent_bus() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The server is never reached: every case fails at the credential.
    let config = write_config(dir.path(), "http://127.0.0.1:9/api", "prod");
    let mut outs = Outputs::new();

    // No session bus at all.
    let nowhere = format!("unix:path={}", dir.path().join("no-bus").display());
    let out = run(keytally(&config, &["secret", "check", "--profile", "prod"]).env("DBUS_SESSION_BUS_ADDRESS", &nowhere), None, LIMIT);
    let (_, stderr) = outs.keep(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no D-Bus session / Secret Service not available") && stderr.contains("LoadCredential="), "{stderr}");
    let out = run(
        keytally(&config, &["sync", "--once", "--records", &records(dir.path(), "6001")]).env("DBUS_SESSION_BUS_ADDRESS", &nowhere),
        None,
        LIMIT,
    );
    let (_, stderr) = outs.keep(&out);
    assert_eq!(out.status.code(), Some(3), "the record stays queued");
    assert!(stderr.contains("profile prod: no D-Bus session / Secret Service not available"), "{stderr}");
    let out = run(keytally(&config, &["status"]).env("DBUS_SESSION_BUS_ADDRESS", &nowhere), None, LIMIT);
    let (stdout, _) = outs.keep(&out);
    assert!(stdout.contains("credential:   unusable: no D-Bus session"), "{stdout}");

    // A bus that accepts the connection and never answers: given up at the deadline.
    let silent = dir.path().join("silent-bus");
    let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let (stop, stopped) = mpsc::channel::<()>();
    let hold = std::thread::spawn(move || {
        let conn = listener.accept();
        let _ = stopped.recv_timeout(Duration::from_secs(30));
        drop(conn);
    });
    let started = Instant::now();
    let out = run(
        keytally(&config, &["secret", "check", "--profile", "prod"]).env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}", silent.display())),
        None,
        LIMIT,
    );
    let (_, stderr) = outs.keep(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("the keyring did not answer within 10s (entry keytally/prod)"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    drop(stop);
    hold.join().unwrap();

    let session = Session::start();
    // A missing entry.
    let out = run(session.env(&mut keytally(&config, &["secret", "check", "--profile", "prod"])), None, LIMIT);
    let (_, stderr) = outs.keep(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no entry keytally/prod in the keyring") && stderr.contains("keytally secret set"), "{stderr}");
    let out = run(session.env(&mut keytally(&config, &["doctor"])), None, LIMIT);
    let (stdout, _) = outs.keep(&out);
    let line = stdout.lines().find(|l| l.contains("credential prod:")).unwrap_or_default();
    assert!(line.starts_with("FAIL") && line.contains("no entry keytally/prod") && line.contains("keytally secret set --profile prod"), "{stdout}");

    // Nothing on stdin: refused, nothing stored.
    let out = run(session.env(&mut keytally(&config, &["secret", "set", "--profile", "prod"])), Some("\n"), LIMIT);
    let (_, stderr) = outs.keep(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("nothing on standard input"), "{stderr}");

    // A locked keyring.
    session.secret_tool_store("prod", "locked-away-token");
    session.lock();
    let out = run(session.env(&mut keytally(&config, &["secret", "check", "--profile", "prod"])), None, LIMIT);
    let (_, stderr) = outs.keep(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("the keyring is locked (entry keytally/prod)"), "{stderr}");

    // A profile that names no keyring entry.
    let file_config = dir.path().join("file.toml");
    std::fs::write(&file_config, "[profiles.prod]\nserver = \"https://e.example/api\"\ntoken_file = \"/nonexistent\"\n").unwrap();
    let out = run(session.env(&mut keytally(&file_config, &["secret", "check", "--profile", "prod"])), None, LIMIT);
    let (_, stderr) = outs.keep(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("does not read its secret from the keyring") && stderr.contains("token_keyring"), "{stderr}");

    assert!(!outs.all.contains("locked-away-token"));
}
