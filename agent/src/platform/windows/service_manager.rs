//! Running under the Windows Service Control Manager (SCM): `keytally [--config PATH] [-v]
//! service [RUN FLAGS]`, the command line the MSI registers (installer/windows/keytally.wxs).
//!
//! The SCM starts `keytally.exe ... service`; this module connects to it with the
//! `windows-service` dispatcher, reports StartPending and then Running, and runs the very same
//! entry as `keytally run` (the [`RunService`] that `main` hands over) on a thread. The Stop
//! (and Shutdown) control reports StopPending with a wait hint and raises [`asked_to_stop`],
//! which the push worker awaits as it awaits SIGTERM on Unix: the worker flushes within its
//! push timeout, the loop returns, and the service reports Stopped with the loop's exit code. `keytally run` in a console stays the console mode (Ctrl-C).
//!
//! `service` is not a clap subcommand (it would show up, unusable, on Linux and macOS): main
//! calls [`run_if_started_by_it`] first, which recognizes it and parses the rest of the command
//! line as `run`.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;
use windows_service::service::{ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle};
use windows_service::{define_windows_service, service_dispatcher};

use super::event_log;
use crate::cli::{Cli, Command};
use crate::platform::{Advice, RunService};

/// `doctor`'s advice on Windows (the MSI's service; the Application event log).
pub const ADVICE: Advice = Advice {
    pcsc_service: "Smart Card service",
    start_pcsc: "attach a smart-card or NFC reader (Windows starts the Smart Card service, SCardSvr, with the first one), or run `sc start SCardSvr` from an elevated prompt",
    restart_pcsc: "from an elevated prompt: `sc stop SCardSvr` then `sc start SCardSvr`; see the System event log",
    start_service: "from an elevated prompt: `sc start keytally`; see the Application event log (source keytally)",
    ask_as_admitted: "run doctor from an elevated prompt, or as the user signed in at this machine's console",
};

/// The service name the MSI installs (`ServiceInstall Name="keytally"`).
pub const SERVICE_NAME: &str = "keytally";
const SERVICE_TYPE: ServiceType = ServiceType::OWN_PROCESS;
/// ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: the process was not started by the SCM.
const NOT_STARTED_BY_SCM: i32 = 1063;
/// How long the SCM should wait for each pending step. Stopping takes the push timeout
/// (2 s by default) plus the PC/SC wait to return; 30 s leaves room for a slow flush.
const START_HINT: Duration = Duration::from_secs(10);
const STOP_HINT: Duration = Duration::from_secs(30);
/// How long the last log lines may take to reach the Event Log before Stopped is reported.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The parsed command line and the `run` entry, handed from `main` to the service thread the
/// SCM starts.
static SERVICE: OnceLock<(Cli, RunService)> = OnceLock::new();

/// When the command line's subcommand is `install-config` (the MSI's custom action): runs it
/// ([`super::install`]). When it is `service`: starts logging (`init_logging` with the
/// `-v` count), runs `run` as the Windows service and returns its exit code. Otherwise
/// `None`, and `main` goes on as usual.
pub fn run_if_started_by_it(run: RunService, init_logging: fn(u8)) -> Option<ExitCode> {
    let all: Vec<OsString> = std::env::args_os().collect();
    // The MSI's custom action (installer/windows/keytally.wxs), not a clap subcommand either.
    if all.get(1).and_then(|a| a.to_str()) == Some("install-config") {
        let rest: Vec<String> = all[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        return Some(super::install::run(&rest));
    }
    let args = as_run_args(all)?;
    // `service` takes the flags of `run`; clap prints usage errors and exits.
    let cli = Cli::parse_from(args);
    // The log goes to the Event Log (the lines journald gets on Linux), set up before logging
    // so tracing's lines go there too; undone below if the SCM did not start us.
    event_log::capture_stderr();
    init_logging(cli.verbose);
    if SERVICE.set((cli, run)).is_err() {
        return Some(ExitCode::FAILURE);
    }
    // Blocks until the service has stopped.
    let started = service_dispatcher::start(SERVICE_NAME, ffi_service_main);
    event_log::flush(FLUSH_WAIT);
    match started {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(NOT_STARTED_BY_SCM) => {
            eprintln!(
                "keytally: `keytally service` is run by the Windows Service Control Manager \
                 (sc.exe start {SERVICE_NAME}); in a console, use `keytally run`"
            );
            Some(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("keytally: cannot connect to the Service Control Manager: {e}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// `[global flags] service [flags]` → the same line with `run` in place of `service`; `None`
/// when the subcommand is something else. Global flags: `-v`/`--verbose` (repeatable) and
/// `--config PATH` / `--config=PATH`.
fn as_run_args(mut args: Vec<OsString>) -> Option<Vec<OsString>> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_str()?;
        if a == "--config" {
            i += 2;
        } else if a.starts_with("--config=") || a == "--verbose" || (a.starts_with('-') && !a.starts_with("--") && a[1..].chars().all(|c| c == 'v')) {
            i += 1;
        } else if a == "service" {
            args[i] = OsString::from("run");
            return Some(args);
        } else {
            return None;
        }
    }
    None
}

define_windows_service!(ffi_service_main, service_main);

/// Called by the dispatcher on its own thread once the SCM has started the service.
fn service_main(_scm_args: Vec<OsString>) {
    if let Err(e) = run_service() {
        tracing::error!("Windows service: {e}");
    }
}

fn run_service() -> windows_service::Result<()> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            // Sticky at once, before anything can fail: the loop sees it whenever it gets to
            // wait (even if the SCM sent it while the service was still starting), and the
            // status loop below reports StopPending. The status loop may be gone already.
            request_stop();
            let _ = stop_tx.send(());
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = service_control_handler::register(SERVICE_NAME, handler)?;
    // From here on a failed status report is logged and never ends this function early: an
    // early return left the loop running with nobody to tell it to stop (seen under Wine: `sc
    // stop` answered STOP_PENDING, then the service was RUNNING and ignored every later stop).
    report(&status, ServiceState::StartPending, ServiceControlAccept::empty(), 0, 1, START_HINT);

    let Some((Cli { config, command: Command::Run(args), .. }, run)) = SERVICE.get() else {
        // run_if_started_by_it always sets a `run` command line before starting the dispatcher.
        report(&status, ServiceState::Stopped, ServiceControlAccept::empty(), 1, 0, Duration::ZERO);
        return Ok(());
    };
    let (done_tx, done_rx) = mpsc::channel::<ExitCode>();
    let spawned = std::thread::Builder::new().name("service".into()).spawn(move || {
        let code = run(config.as_deref(), args);
        let _ = done_tx.send(code);
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the service thread: {e}");
        report(&status, ServiceState::Stopped, ServiceControlAccept::empty(), 1, 0, Duration::ZERO);
        return Ok(());
    }
    // A stop that came while starting (Wine delivers Stop in StartPending) is not overwritten
    // by Running: the stop below reports StopPending instead.
    if !stop_requested() {
        report(&status, ServiceState::Running, ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN, 0, 0, Duration::ZERO);
        tracing::info!("keytally Windows service running");
    }

    // Wait for a Stop control or for the loop to end by itself (bad config: exit 2).
    let code = loop {
        if stop_rx.recv_timeout(Duration::from_millis(500)).is_ok() || stop_requested() {
            tracing::info!("stop requested by the Service Control Manager");
            report(&status, ServiceState::StopPending, ServiceControlAccept::empty(), 0, 1, STOP_HINT);
            // Every second, tell the SCM the stop is still progressing (a new checkpoint), for
            // at most STOP_HINT: then report Stopped anyway; the process exits with main.
            let mut checkpoint = 1;
            let deadline = std::time::Instant::now() + STOP_HINT;
            break loop {
                match done_rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(code) => break code,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break ExitCode::FAILURE,
                    Err(mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() >= deadline => {
                        tracing::warn!("the service loop did not end within {STOP_HINT:?} of the stop request");
                        break ExitCode::FAILURE;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        checkpoint += 1;
                        report(&status, ServiceState::StopPending, ServiceControlAccept::empty(), 0, checkpoint, STOP_HINT);
                    }
                }
            };
        }
        match done_rx.try_recv() {
            Ok(code) => break code,
            Err(mpsc::TryRecvError::Disconnected) => break ExitCode::FAILURE,
            Err(mpsc::TryRecvError::Empty) => {}
        }
    };
    // ExitCode does not expose its value: 0, 2 (bad or empty configuration) or 1. A non-zero
    // code is reported as service-specific, which the MSI's failure actions treat as a failure.
    let exit = if code == ExitCode::SUCCESS {
        0
    } else if code == ExitCode::from(2) {
        2
    } else {
        1
    };
    tracing::info!("keytally Windows service stopped (exit code {exit})");
    // The loop's last lines (a configuration error, say) are in the Event Log before the SCM
    // hears Stopped and may end the process.
    event_log::flush(FLUSH_WAIT);
    report(&status, ServiceState::Stopped, ServiceControlAccept::empty(), exit, 0, Duration::ZERO);
    Ok(())
}

/// Tells the SCM the service's state; a failure is logged (the caller goes on: the stop must
/// still reach the loop, and Stopped must still be tried).
fn report(status: &ServiceStatusHandle, state: ServiceState, accept: ServiceControlAccept, exit: u32, checkpoint: u32, wait_hint: Duration) {
    let exit_code = if exit == 0 { ServiceExitCode::Win32(0) } else { ServiceExitCode::ServiceSpecific(exit) };
    let reported = status.set_service_status(ServiceStatus {
        service_type: SERVICE_TYPE,
        current_state: state,
        controls_accepted: accept,
        exit_code,
        checkpoint,
        wait_hint,
        process_id: None,
    });
    if let Err(e) = reported {
        tracing::warn!("cannot report {state:?} to the Service Control Manager: {e}");
    }
}

/// The SCM's Stop (or Shutdown) control, sticky: once raised it stays raised for the process.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Wakes whoever awaits [`asked_to_stop`] when [`STOPPING`] is raised.
static STOP_REQUEST: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn request_stop() {
    STOPPING.store(true, Ordering::SeqCst);
    STOP_REQUEST.notify_waiters();
}

fn stop_requested() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Resolves when the SCM has asked the service to stop, however long ago (Ctrl-C in a console
/// is tokio's `ctrl_c`). Any number of waiters, any number of times.
pub async fn asked_to_stop() {
    let notified = STOP_REQUEST.notified();
    tokio::pin!(notified);
    // Registered before the flag is read: a request between the two still wakes this waiter.
    notified.as_mut().enable();
    if stop_requested() {
        return;
    }
    notified.await
}

/// As the service, log lines go to the Event Log, which stamps them (no timestamps, no
/// colours, as under journald); in a console, lines are stamped.
pub fn stamps_log_lines() -> bool {
    event_log::capturing()
}

#[cfg(test)]
mod tests {
    use super::as_run_args;
    use std::ffi::OsString;

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn service_becomes_run_after_global_flags() {
        assert_eq!(as_run_args(v(&["k", "--config", "C:\\p\\c.toml", "service"])), Some(v(&["k", "--config", "C:\\p\\c.toml", "run"])));
        assert_eq!(
            as_run_args(v(&["k", "-vv", "--config=x", "service", "--push-timeout", "3s"])),
            Some(v(&["k", "-vv", "--config=x", "run", "--push-timeout", "3s"]))
        );
        assert_eq!(as_run_args(v(&["k", "service"])), Some(v(&["k", "run"])));
    }

    #[test]
    fn other_commands_are_left_alone() {
        assert_eq!(as_run_args(v(&["k", "run"])), None);
        assert_eq!(as_run_args(v(&["k", "--config", "service", "run"])), None);
        assert_eq!(as_run_args(v(&["k", "scan", "service"])), None);
        assert_eq!(as_run_args(v(&["k"])), None);
    }
}
