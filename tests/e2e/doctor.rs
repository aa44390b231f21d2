//! `keytally doctor` against the sandbox server: a good credential gives ok lines for the
//! server and the credential; a wrong client secret, an unreachable server and a group-readable
//! secret file each give a FAIL line with a fix and exit code 1. pcscd and the udev rules
//! depend on the machine, so only their lines' presence is checked.

#![cfg(unix)] // Unix sockets, file modes and signals (the Windows side runs under Wine: tests/windows/)

use std::os::unix::fs::PermissionsExt;

#[path = "../support/mod.rs"]
mod support;

struct Out {
    code: i32,
    stdout: String,
}

fn doctor(config: &std::path::Path, envs: &[(&str, &str)]) -> Out {
    let out = support::keytally(config, &["doctor"]).envs(envs.iter().copied()).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    eprintln!("{stdout}");
    Out { code: out.status.code().unwrap(), stdout }
}

fn line<'a>(out: &'a Out, prefix: &str) -> &'a str {
    out.stdout.lines().find(|l| l[6..].starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in\n{}", out.stdout))
}

#[test]
fn doctor_reports_server_credential_and_secret_file() {
    let sb = support::sandbox();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    support::write_private(&secret, "sandbox-client-secret");
    let config = dir.path().join("config.toml");
    let write_config = |server: &str| {
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\n[profiles.sandbox]\nserver = {server:?}\nclient_id = \"keytally\"\nclient_secret_file = {secret:?}\ntoken_url = {token:?}\n",
                state = dir.path().join("state"),
                token = sb.token_url(),
            ),
        )
        .unwrap()
    };
    write_config(&sb.devices_base());

    let good = doctor(&config, &[]);
    assert!(line(&good, "config:").starts_with("ok"));
    assert!(line(&good, "server sandbox:").starts_with("ok"));
    assert!(line(&good, "credential sandbox:").starts_with("ok"));
    assert!(line(&good, &format!("secret {}:", secret.display())).starts_with("ok"));
    line(&good, "pcscd:");
    line(&good, "udev rules:");
    // Every non-ok line has a fix, and the exit code follows the FAIL lines.
    for l in good.stdout.lines().filter(|l| l.starts_with("FAIL") || l.starts_with("WARN")) {
        assert!(l.contains("-> fix: "), "{l}");
    }
    assert_eq!(good.code, i32::from(good.stdout.lines().any(|l| l.starts_with("FAIL"))));

    std::fs::write(&secret, "wrong-secret").unwrap();
    let bad = doctor(&config, &[]);
    let l = line(&bad, "credential sandbox:");
    assert!(l.starts_with("FAIL") && l.contains("-> fix: ") && !l.contains("wrong-secret"), "{l}");
    assert_eq!(bad.code, 1);

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let open = doctor(&config, &[]);
    let l = line(&open, &format!("secret {}:", secret.display()));
    assert!(l.starts_with("FAIL") && l.contains("chmod 600"), "{l}");
    assert_eq!(open.code, 1);

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&secret, "sandbox-client-secret").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/api", listener.local_addr().unwrap());
    drop(listener);
    write_config(&dead);
    let down = doctor(&config, &[]);
    let l = line(&down, "server sandbox:");
    assert!(l.starts_with("FAIL") && l.contains("-> fix: "), "{l}");
    assert_eq!(down.code, 1);

    std::fs::write(&config, "[sync\n").unwrap();
    let broken = doctor(&config, &[]);
    assert!(line(&broken, "config:").starts_with("FAIL"));
    assert_eq!(broken.code, 1);
}

#[test]
fn doctor_sees_a_running_pcscd() {
    let Some(lab) = support::lab() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let envs = lab.env();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = doctor(&config, &envs);
    let l = line(&out, "pcscd:");
    assert!(l.starts_with("ok") && l.contains("reader(s)"), "{l}");
    // No server profile: a FAIL with a fix, so exit 1.
    let l = line(&out, "config:");
    assert!(l.starts_with("FAIL") && l.contains("no server profile") && l.contains("-> fix: "), "{l}");
    assert_eq!(out.code, 1);
}
