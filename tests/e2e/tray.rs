//! `keytally tray` on a real (virtual) desktop: Xvfb, a private D-Bus session bus, and
//! xfce4-panel 4.18 with only its "Status Tray" plugin, which is a StatusNotifier host and owns
//! `org.kde.StatusNotifierWatcher`. Behind the tray: the real service (`keytally run`) on its
//! own control socket, an isolated pcscd with a virtual YubiKey 5 NFC plugged in, and the
//! sandbox server holding an owner and a status for that key.
//!
//! Checked through D-Bus as the panel sees it: the item registers with the watcher; before the
//! service runs its menu says so, and it reconnects on its own once the service is up; the
//! dbusmenu (GetLayout) then lists the key with its name, serial, owner and status; clicking
//! "Sync now" (dbusmenu Event) makes the service push again; "Quit" ends the tray with exit 0
//! and the item leaves the watcher. A second tray while the first runs says so in one line and
//! exits 0, the first staying registered. Another user without a session here (nobody) is refused by
//! the service's peer-credential check, which `tray --once` reports. Without a watcher, and
//! without a session bus at all, the tray logs one line and exits 0. A screenshot of the
//! screen with the menu opened (right click on the icon) is saved as
//! `<target>/tray-test/tray.png`.

#![cfg(all(unix, not(target_os = "macos")))] // the StatusNotifierItem over D-Bus (Windows: tests/windows/smoke.sh)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

#[path = "../support/mod.rs"]
mod support;

use support::{on_path, wait_for, KEYTALLY};

const WATCHER: &str = "org.kde.StatusNotifierWatcher";
const TOOLS: [&str; 6] = ["Xvfb", "dbus-daemon", "xfce4-panel", "xdotool", "import", "convert"];

/// The panel: one panel at the top of the screen, 32 px high, holding only the systray
/// plugin (which hosts StatusNotifier items). Given through xfconf, so the panel's first-run
/// dialog never appears.
const PANEL_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-panel" version="1.0">
  <property name="configver" type="int" value="2"/>
  <property name="panels" type="array">
    <value type="int" value="1"/>
    <property name="dark-mode" type="bool" value="true"/>
    <property name="panel-1" type="empty">
      <property name="position" type="string" value="p=6;x=0;y=0"/>
      <property name="length" type="uint" value="100"/>
      <property name="position-locked" type="bool" value="true"/>
      <property name="size" type="uint" value="32"/>
      <property name="plugin-ids" type="array">
        <value type="int" value="1"/>
      </property>
    </property>
  </property>
  <property name="plugins" type="empty">
    <property name="plugin-1" type="string" value="systray">
      <property name="icon-size" type="uint" value="24"/>
    </property>
  </property>
</channel>
"#;

/// Where the screenshot and the logs go: `<target>/tray-test/`.
fn output_dir() -> PathBuf {
    // CARGO_BIN_EXE_keytally is <target>/<profile>/keytally.
    let target = Path::new(KEYTALLY).parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let dir = target.join("tray-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child in its own process group, ended (group and all) on drop.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd.process_group(0).spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child's process group.
            unsafe { kill(-(self.0.id() as i32), 15) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            unsafe { kill(-(self.0.id() as i32), 9) };
            let _ = self.0.wait();
        }
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn geteuid() -> u32;
}

/// Reads the first line a child prints on stdout (Xvfb's display number, dbus-daemon's
/// address), within `limit`.
fn first_line(child: &mut Child, limit: Duration) -> String {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit).unwrap_or_default().trim().to_string()
}

/// Runs `keytally tray` to its end (at most `limit`): the output and how long it took.
fn run_tray_to_end(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("keytally tray did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    (Output { status, stdout, stderr }, t.elapsed())
}

/// Exit 0 quickly, nothing on stdout, one line on stderr containing each of `expect`.
fn assert_one_line_clean_exit(out: &Output, took: Duration, expect: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("keytally tray: exit {:?} after {took:?}: {}", out.status.code(), stderr.trim());
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(expect.iter().all(|e| stderr.contains(e)), "{expect:?}: {stderr}");
    assert!(out.stdout.is_empty());
    assert!(took < Duration::from_secs(6), "{took:?}");
}

/// The centre of the pixels of `colour` ("#RRGGBB") in the panel strip (the top 32 rows).
fn icon_centre(png: &Path, colour: &str) -> Option<(u32, u32)> {
    let txt = Command::new("convert").arg(png).args(["-crop", "640x32+0+0", "txt:-"]).output().ok()?;
    let (mut n, mut sx, mut sy) = (0u32, 0u32, 0u32);
    // Lines look like "12,7: (46,160,67)  #2EA043  srgb(46,160,67)".
    for line in String::from_utf8_lossy(&txt.stdout).lines() {
        if !line.to_uppercase().contains(colour) {
            continue;
        }
        let (x, y) = line.split(':').next()?.split_once(',')?;
        n += 1;
        sx += x.trim().parse::<u32>().ok()?;
        sy += y.trim().parse::<u32>().ok()?;
    }
    (n >= 20).then(|| (sx / n, sy / n))
}

/// One menu entry of a dbusmenu layout.
#[derive(Debug, Clone)]
struct MenuEntry {
    id: i32,
    label: String,
    enabled: bool,
}

/// A dbusmenu layout node: id, properties, children (each a variant holding a node).
type LayoutNode = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);

/// GetLayout(0, -1, []) on the item's menu: its entries, depth first.
fn menu_entries(bus: &zbus::blocking::Connection, dest: &str, menu_path: &str) -> Vec<MenuEntry> {
    let proxy = zbus::blocking::Proxy::new(bus, dest.to_string(), menu_path.to_string(), "com.canonical.dbusmenu").unwrap();
    let (_rev, root): (u32, LayoutNode) =
        proxy.call("GetLayout", &(0i32, -1i32, Vec::<String>::new())).unwrap();
    let mut out = Vec::new();
    for child in &root.2 {
        walk(child, &mut out);
    }
    out
}

fn walk(node: &Value<'_>, out: &mut Vec<MenuEntry>) {
    let node = match node {
        Value::Value(inner) => inner.as_ref(),
        v => v,
    };
    let Value::Structure(s) = node else { panic!("a layout node that is not a structure: {node:?}") };
    let [Value::I32(id), Value::Dict(props), Value::Array(children)] = s.fields() else {
        panic!("unexpected layout node {s:?}")
    };
    let props: HashMap<String, OwnedValue> = props.try_clone().unwrap().try_into().unwrap();
    let label = props.get("label").and_then(|v| String::try_from(v.try_clone().unwrap()).ok()).unwrap_or_default();
    let enabled = props.get("enabled").and_then(|v| bool::try_from(v.try_clone().unwrap()).ok()).unwrap_or(true);
    if props.get("type").and_then(|v| String::try_from(v.try_clone().unwrap()).ok()).as_deref() != Some("separator") {
        out.push(MenuEntry { id: *id, label, enabled });
    }
    for c in children.iter() {
        walk(c, out);
    }
}

/// The watcher's registered items ("busname/objectpath").
fn registered_items(bus: &zbus::blocking::Connection) -> Vec<String> {
    let Ok(watcher) = zbus::blocking::Proxy::new(bus, WATCHER, "/StatusNotifierWatcher", WATCHER) else { return vec![] };
    watcher.get_property::<Vec<String>>("RegisteredStatusNotifierItems").unwrap_or_default()
}

/// dbusmenu `Event(id, "clicked", 0, 0)`, as a host sends when the item is clicked.
fn click(bus: &zbus::blocking::Connection, dest: &str, menu_path: &str, id: i32) -> zbus::Result<()> {
    let proxy = zbus::blocking::Proxy::new(bus, dest.to_string(), menu_path.to_string(), "com.canonical.dbusmenu")?;
    proxy.call_method("Event", &(id, "clicked", Value::I32(0), 0u32)).map(|_| ())
}

#[test]
fn tray_on_a_virtual_desktop() {
    if !support::require_tools(&TOOLS, "apt install xvfb dbus-daemon xfce4-panel xdotool imagemagick") {
        return;
    }
    let Some(lab) = support::lab() else { return };
    let started = Instant::now();
    let out = output_dir();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let xml_dir = h.join("config/xfce4/xfconf/xfce-perchannel-xml");
    std::fs::create_dir_all(&xml_dir).unwrap();
    std::fs::write(xml_dir.join("xfce4-panel.xml"), PANEL_XML).unwrap();
    let runtime = h.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // The desktop session's environment (dbus-daemon hands it to the services it starts,
    // e.g. xfconfd, which reads the panel's configuration from XDG_CONFIG_HOME).
    let desktop_env = |cmd: &mut Command| {
        cmd.env("HOME", h)
            .env("XDG_CONFIG_HOME", h.join("config"))
            .env("XDG_CACHE_HOME", h.join("cache"))
            .env("XDG_DATA_HOME", h.join("data"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("SESSION_MANAGER")
            .env_remove("WAYLAND_DISPLAY");
    };

    // Xvfb picks a free display and says which.
    let mut xvfb = Proc::spawn(
        Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "640x240x24", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let display = format!(":{}", first_line(&mut xvfb.0, Duration::from_secs(10)));
    assert!(display.len() > 1, "Xvfb did not report a display");
    let mut dbus_cmd = Command::new("dbus-daemon");
    dbus_cmd.args(["--session", "--nofork", "--print-address=1"]).env("DISPLAY", &display).stdout(Stdio::piped()).stderr(Stdio::null());
    desktop_env(&mut dbus_cmd);
    let mut dbus = Proc::spawn(&mut dbus_cmd);
    let address = first_line(&mut dbus.0, Duration::from_secs(10));
    assert!(address.starts_with("unix:"), "dbus-daemon did not report an address: {address:?}");
    let bus = zbus::blocking::connection::Builder::address(address.as_str()).unwrap().build().unwrap();
    // The control socket where another user can reach it too (for the refusal below).
    let sock_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sock_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let socket = sock_dir.path().join("control.sock");
    let tray_cmd = || {
        let mut c = Command::new(KEYTALLY);
        c.arg("tray")
            .env("DISPLAY", &display)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("KEYTALLY_CONTROL_SOCKET", &socket)
            .env("RUST_LOG", "debug,zbus=warn");
        c
    };

    // (1) A session bus but no tray host yet: one line, exit 0.
    let (o, took) = run_tray_to_end(&mut tray_cmd(), Duration::from_secs(10));
    assert_one_line_clean_exit(&o, took, &["no StatusNotifier host", "no org.kde.StatusNotifierWatcher"]);
    // (2) No session bus and no display at all: the same.
    let no_bus = tempfile::tempdir().unwrap();
    let (o, took) = run_tray_to_end(
        tray_cmd().env_remove("DBUS_SESSION_BUS_ADDRESS").env_remove("DISPLAY").env("XDG_RUNTIME_DIR", no_bus.path()),
        Duration::from_secs(10),
    );
    assert_one_line_clean_exit(&o, took, &["no StatusNotifier host", "no D-Bus session bus"]);

    // The panel, and its StatusNotifier host.
    let mut panel_cmd = Command::new("xfce4-panel");
    panel_cmd
        .arg("--disable-wm-check")
        .env("DISPLAY", &display)
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(out.join("panel.log")).unwrap());
    desktop_env(&mut panel_cmd);
    let _panel = Proc::spawn(&mut panel_cmd);
    wait_for("the panel's StatusNotifierWatcher with a host", Duration::from_secs(20), || {
        let w = zbus::blocking::Proxy::new(&bus, WATCHER, "/StatusNotifierWatcher", WATCHER).ok()?;
        w.get_property::<bool>("IsStatusNotifierHostRegistered").ok().filter(|&b| b)
    });

    // (3) The tray before the service: registered, "not running", Sync now disabled.
    let tray_log = out.join("tray.log");
    let mut tray =
        Proc::spawn(tray_cmd().stdout(Stdio::null()).stderr(std::fs::File::create(&tray_log).unwrap()));
    let item = wait_for("the tray item registered with the watcher", Duration::from_secs(10), || {
        registered_items(&bus).into_iter().find(|i| i.contains(&format!("-{}-", tray.pid())))
    });
    println!("registered: {item}");
    let (dest, path) = item.split_once('/').map(|(d, p)| (d.to_string(), format!("/{p}"))).unwrap();
    // Uncached: ksni announces a new title with NewTitle, not PropertiesChanged.
    let sni: zbus::blocking::Proxy = zbus::blocking::proxy::Builder::new(&bus)
        .destination(dest.clone())
        .unwrap()
        .path(path.clone())
        .unwrap()
        .interface("org.kde.StatusNotifierItem")
        .unwrap()
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .unwrap();
    let menu_path = sni.get_property::<OwnedObjectPath>("Menu").unwrap().to_string();
    let menu_with = |label: &str, limit: Duration| {
        let t = Instant::now();
        loop {
            let e = menu_entries(&bus, &dest, &menu_path);
            if e.iter().any(|e| e.label == label) {
                return e;
            }
            let labels: Vec<_> = e.iter().map(|e| e.label.as_str()).collect();
            assert!(t.elapsed() < limit, "no {label:?} in the tray's menu within {limit:?}; it shows {labels:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let entries = menu_with("keytally service not running", Duration::from_secs(10));
    let sync = entries.iter().find(|e| e.label == "Sync now").expect("a Sync now item");
    assert!(!sync.enabled, "Sync now is disabled without a service");

    // (3b) A second tray in the same session (same runtime directory): one line, exit 0, no
    // second item; the first stays registered. (`tray --once` below needs no claim.)
    let (o, took) = run_tray_to_end(&mut tray_cmd(), Duration::from_secs(10));
    assert_one_line_clean_exit(&o, took, &["a keytally tray is already running in this session"]);
    assert_eq!(registered_items(&bus), vec![item.clone()], "only the first tray is registered");
    assert!(tray.0.try_wait().unwrap().is_none(), "the first tray still runs");

    // The service, with a virtual YubiKey 5 NFC plugged in and the sandbox server knowing
    // its owner and status.
    let sb = support::sandbox();
    let assigned = json!({
        "yubikey": {"uniqueId": "12345678", "serialNumber": "12345678", "name": "YubiKey 5 NFC"},
        "owners": {"count": 1, "items": [{"name": "Alice", "email": "alice@example.com"}]},
        "status": {"name": "Active"},
        "tags": [{"name": "desk"}]
    });
    sb.store().upsert("12345678", &assigned, None, 0).unwrap();
    let card = support::insert_preset(&lab, "yk5nfc");
    let state = tempfile::tempdir().unwrap();
    let (_, api_key) = sb.create_api_key("tray-test");
    let _service = Proc::spawn(
        Command::new(KEYTALLY)
            .args(["run", "--retry-every", "1s"])
            .envs(lab.env())
            .env("KEYTALLY_SERVER", sb.devices_base())
            .env("KEYTALLY_TOKEN", &api_key)
            .env("KEYTALLY_STATE_DIR", state.path())
            .env("KEYTALLY_CONTROL_SOCKET", &socket)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out.join("service.log")).unwrap()),
    );

    // (4) The tray reconnects by itself and lists the key with the server's owner and status.
    // (A 5.4.3 key: with its advisories' ids.)
    let want = "YubiKey 5 NFC · 12345678 · alice@example.com · Active · advisories YSA-2024-02, YSA-2024-03, YSA-2025-02";
    let entries = menu_with(want, Duration::from_secs(20));
    let labels: Vec<&str> = entries.iter().map(|e| e.label.as_str()).collect();
    println!("menu: {labels:#?}");
    assert!(labels[0].starts_with("keytally — "), "{labels:?}");
    assert!(labels.iter().any(|l| l.starts_with("Last sync: ")), "{labels:?}");
    let title: String = sni.get_property("Title").unwrap();
    assert!(title.starts_with("keytally: 1 key, "), "{title}");
    // `keytally tray --once` prints the same menu.
    let once = Command::new(KEYTALLY).args(["tray", "--once"]).env("KEYTALLY_CONTROL_SOCKET", &socket).output().unwrap();
    assert!(once.status.success(), "{once:?}");
    let once_text = String::from_utf8(once.stdout).unwrap();
    println!("keytally tray --once:\n{once_text}");
    assert!(once_text.lines().any(|l| l == want), "{once_text}");

    // Another user, with no session on this machine (nobody): the service refuses it after
    // checking the peer's credentials, and the tray says so in one line, exit 1.
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        support::skip_part_unprivileged("the refusal of another user needs root to run the tray as nobody");
    } else if !on_path("setpriv") {
        support::skip_part("the refusal of another user: setpriv is not installed (apt install util-linux)");
    } else {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", KEYTALLY, "tray", "--once"])
            .env("KEYTALLY_CONTROL_SOCKET", &socket)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        println!("as nobody: exit {:?}: {}", o.status.code(), stderr.trim());
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("refused") && stderr.contains("uid 65534"), "{stderr}");
        assert!(o.stdout.is_empty());
    }

    // (5) The screenshot, with the menu opened by a right click on the icon. The icon is
    // found on screen by its colour (green: synced, nothing to act on), drawn by the panel.
    let shot = out.join("tray.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = |to: &Path| {
        let s = Command::new("import").args(["-window", "root"]).arg(to).env("DISPLAY", &display).status().unwrap();
        assert!(s.success() && to.metadata().map(|m| m.len()).unwrap_or(0) > 1000, "no screenshot at {}", to.display());
    };
    let (x, y) = wait_for("the green key icon in the panel", Duration::from_secs(10), || {
        let before = out.join("panel.png");
        screenshot(&before);
        icon_centre(&before, "#2EA043")
    });
    println!("icon at {x},{y}");
    let xdotool = |args: &[&str]| {
        let s = Command::new("xdotool").args(args).env("DISPLAY", &display).status().unwrap();
        assert!(s.success(), "xdotool {args:?}");
    };
    xdotool(&["mousemove", &x.to_string(), &y.to_string(), "click", "3"]);
    std::thread::sleep(Duration::from_millis(1500));
    screenshot(&shot);
    xdotool(&["key", "Escape"]);
    println!("screenshot: {}", shot.display());

    // (6) Sync now: the service pushes again (an unchanged record: the server sees the PUT
    // and replays it by its idempotency key, so count requests, not applied PUTs).
    std::thread::sleep(Duration::from_millis(500));
    let requests = sb.device_request_count();
    let sync = entries.iter().find(|e| e.label == "Sync now").unwrap();
    assert!(sync.enabled);
    click(&bus, &dest, &menu_path, sync.id).unwrap();
    wait_for("a push after Sync now", Duration::from_secs(10), || (sb.device_request_count() > requests).then_some(()));

    // (7) Quit: exit 0, and the item leaves the watcher.
    let quit = entries.iter().find(|e| e.label == "Quit").unwrap();
    // The tray may leave the bus before its reply to this very call (NoReply): fine.
    let _ = click(&bus, &dest, &menu_path, quit.id);
    let status = wait_for("the tray to quit", Duration::from_secs(5), || tray.0.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    wait_for("the item to leave the watcher", Duration::from_secs(5), || (!registered_items(&bus).contains(&item)).then_some(()));
    let log = std::fs::read_to_string(&tray_log).unwrap();
    assert!(log.contains("connected to the service") && log.contains("sync requested"), "{log}");

    drop(card);
    println!("tray test: {:?}; output in {}", started.elapsed(), out.display());
}
