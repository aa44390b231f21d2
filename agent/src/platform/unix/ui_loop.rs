//! The tray's main-thread loop on Linux and the BSDs: nothing to pump (the StatusNotifierItem
//! lives on D-Bus threads), so the loop is a wait on the tray's events; a stop request is
//! SIGTERM or SIGINT. One tray per user: an exclusive `flock` on `tray.lock` in the user's
//! runtime directory, which dies with the process.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

/// Wakes the loop after an event was sent (a no-op here: the loop waits on the channel).
#[derive(Debug, Clone, Copy)]
pub struct Waker;

impl Waker {
    /// A waker for the calling thread's loop.
    pub fn for_this_thread() -> Waker {
        Waker
    }

    pub fn wake(&self) {}
}

/// Runs `handle` on every event until it returns false or every sender is gone.
pub fn run<E, F: FnMut(E) -> bool>(events: &Receiver<E>, mut handle: F) {
    for e in events.iter() {
        if !handle(e) {
            return;
        }
    }
}

/// Calls `stop` on SIGTERM or SIGINT (once), from a thread of its own.
pub fn on_stop_request(stop: Box<dyn Fn() + Send + Sync>) {
    let _ = std::thread::Builder::new().name("tray-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        let signalled = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return false;
            };
            tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => true,
            }
        });
        if signalled {
            stop();
        }
    });
}

/// Nothing to leave: a tray started by the session has no terminal of its own.
pub fn leave_console() {}

/// This tray's claim to be the user's only one: an exclusive lock on `tray.lock`, held while
/// this lives (the kernel drops it when the process ends, however it ends).
#[derive(Debug)]
pub struct SingleInstance {
    _lock: File,
}

/// Where the lock lives: `$XDG_RUNTIME_DIR/keytally/` (where the user's control socket goes
/// too), else, with no runtime directory, a folder of this user's own in the temporary folder
/// (`/tmp/keytally-UID/`).
fn lock_dir(runtime_dir: Option<OsString>) -> PathBuf {
    match runtime_dir.filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("keytally"),
        // SAFETY: geteuid has no preconditions.
        None => std::env::temp_dir().join(format!("keytally-{}", unsafe { libc::geteuid() })),
    }
}

/// Claims the user's single tray: `Ok(None)` when another tray of this user holds it, `Err`
/// when no claim can be made here (the folder is not this user's, or cannot be written).
pub fn claim_single_instance() -> io::Result<Option<SingleInstance>> {
    claim_in(&lock_dir(std::env::var_os("XDG_RUNTIME_DIR")))
}

fn claim_in(dir: &Path) -> io::Result<Option<SingleInstance>> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        return Err(io::Error::other(format!("{} is not a folder of this user's", dir.display())));
    }
    let path = dir.join("tray.lock");
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    // SAFETY: a descriptor this function owns.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Ok(None),
            _ => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
    }
    // Who holds it, for a person looking (nothing reads it back).
    let _ = lock.set_len(0).and_then(|()| writeln!(lock, "{}", std::process::id()));
    Ok(Some(SingleInstance { _lock: lock }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second claim is refused while the first is held, and succeeds once it is dropped.
    #[test]
    fn one_claim_at_a_time() {
        let runtime = tempfile::tempdir().unwrap();
        let dir = lock_dir(Some(runtime.path().into()));
        assert_eq!(dir, runtime.path().join("keytally"));
        let first = claim_in(&dir).unwrap().expect("the first claim");
        assert!(dir.join("tray.lock").exists());
        // flock locks belong to the open file, so a second open in this process is refused
        // as another process's would be.
        assert!(claim_in(&dir).unwrap().is_none(), "a second claim while the first is held");
        drop(first);
        assert!(claim_in(&dir).unwrap().is_some(), "a claim after the first was dropped");
    }

    /// Without a runtime directory: the user's own folder in the temporary folder.
    #[test]
    fn without_a_runtime_directory() {
        for unset in [None, Some(OsString::new())] {
            let dir = lock_dir(unset);
            assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
            // SAFETY: geteuid has no preconditions.
            assert!(dir.ends_with(format!("keytally-{}", unsafe { libc::geteuid() })), "{}", dir.display());
        }
    }
}
