//! The tray's main-thread loop on Windows: tray-icon's notification-area icon is a hidden
//! window of the thread that made it, so that thread must pump its Win32 messages
//! (`GetMessageW` / `DispatchMessageW`; the menu's clicks arrive that way). Other threads hand
//! the loop an event by sending it on the channel and then posting a message to the thread
//! ([`Waker::wake`]), which ends the wait; the loop drains the channel after every message.
//! A stop request is Ctrl+C, Ctrl+Break or the console closing (when there is a console), or a
//! message to the loop's own hidden top-level window: WM_CLOSE (`taskkill` without /f) or the
//! session ending (logoff; the Restart Manager closing the tray so that an MSI upgrade or
//! uninstall can replace keytally.exe: WM_QUERYENDSESSION / WM_ENDSESSION). The tray registers
//! for restart (`RegisterApplicationRestart`, "tray", not after a reboot), so the Restart
//! Manager starts it again after an upgrade. One tray per session: the named mutex
//! `Local\keytally-tray` (the session's own namespace), held for the tray's life; Windows
//! closes the handle when the process ends, however it ends.

use std::sync::OnceLock;

use crossbeam_channel::Receiver;
use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, HANDLE, HWND, LPARAM, LRESULT, WPARAM};
use windows_sys::Win32::System::Console::{FreeConsole, GetConsoleProcessList, SetConsoleCtrlHandler};
use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::System::Recovery::{RegisterApplicationRestart, RESTART_NO_REBOOT};
use windows_sys::Win32::System::Threading::{CreateMutexW, GetCurrentThreadId};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    CreateWindowExW, DefWindowProcW, DispatchMessageW, GetMessageW, PeekMessageW, PostThreadMessageW, RegisterClassW, TranslateMessage, MSG,
    PM_NOREMOVE, WM_APP, WM_CLOSE, WM_ENDSESSION, WM_QUERYENDSESSION, WNDCLASSW, WS_OVERLAPPED,
};

/// The thread message that only wakes the loop.
const WM_WAKE: u32 = WM_APP + 0x4b;

/// Wakes a thread's loop: posts [`WM_WAKE`] to it.
#[derive(Debug, Clone, Copy)]
pub struct Waker {
    thread: u32,
}

impl Waker {
    /// A waker for the calling thread's loop (which gets its message queue now, so a wake
    /// posted before the loop starts is not lost).
    pub fn for_this_thread() -> Waker {
        // SAFETY: MSG is plain data; PeekMessageW only makes the queue (PM_NOREMOVE).
        unsafe {
            let mut msg: MSG = std::mem::zeroed();
            PeekMessageW(&mut msg, std::ptr::null_mut(), 0, 0, PM_NOREMOVE);
        }
        // SAFETY: no arguments.
        Waker { thread: unsafe { GetCurrentThreadId() } }
    }

    pub fn wake(&self) {
        // SAFETY: no pointers; fails harmlessly when the thread is gone.
        unsafe { PostThreadMessageW(self.thread, WM_WAKE, 0, 0) };
    }
}

/// Pumps this thread's messages and runs `handle` on every event, until it returns false,
/// or WM_QUIT.
pub fn run<E, F: FnMut(E) -> bool>(events: &Receiver<E>, mut handle: F) {
    loop {
        while let Ok(e) = events.try_recv() {
            if !handle(e) {
                return;
            }
        }
        // SAFETY: MSG is plain data, filled by GetMessageW.
        let mut msg: MSG = unsafe { std::mem::zeroed() };
        // SAFETY: `msg` is writable; null window: every message of this thread.
        let r = unsafe { GetMessageW(&mut msg, std::ptr::null_mut(), 0, 0) };
        if r == 0 || r == -1 {
            return;
        }
        if msg.hwnd.is_null() && msg.message == WM_WAKE {
            continue;
        }
        // A close posted to any of this thread's windows (taskkill without /f posts one to
        // each) is a stop request, not dispatched: tray-icon's own window would be destroyed by
        // it, and the icon left behind, no longer removable.
        if msg.message == WM_CLOSE {
            if let Some(stop) = STOP.get() {
                stop();
            }
            continue;
        }
        // SAFETY: a message just taken from the queue.
        unsafe {
            TranslateMessage(&msg);
            DispatchMessageW(&msg);
        }
    }
}

static STOP: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

unsafe extern "system" fn on_console_event(_event: u32) -> i32 {
    // Ctrl+C, Ctrl+Break, the console closing, logoff and shutdown (for a process with a
    // console): ask the loop to end; TRUE: handled.
    match STOP.get() {
        Some(stop) => {
            stop();
            1
        }
        None => 0,
    }
}

/// The hidden window's messages: a close or the session's end asks the loop to stop.
unsafe extern "system" fn on_window_message(hwnd: HWND, msg: u32, wparam: WPARAM, lparam: LPARAM) -> LRESULT {
    match msg {
        // Yes, the session may end (or the Restart Manager may close us).
        WM_QUERYENDSESSION => 1,
        WM_ENDSESSION if wparam != 0 => {
            if let Some(stop) = STOP.get() {
                stop();
            }
            0
        }
        // Not destroyed here: the loop ends and the process exits, removing the icon first.
        WM_CLOSE => {
            if let Some(stop) = STOP.get() {
                stop();
            }
            0
        }
        // SAFETY: the default handling, with the message as given.
        _ => unsafe { DefWindowProcW(hwnd, msg, wparam, lparam) },
    }
}

/// Calls `stop` on Ctrl+C, Ctrl+Break or the console closing, on WM_CLOSE to the calling
/// thread's hidden window (made here: call this on the loop's thread) and at the session's
/// end; registers the tray for restart by the Restart Manager. Once per process.
pub fn on_stop_request(stop: Box<dyn Fn() + Send + Sync>) {
    if STOP.set(stop).is_err() {
        return;
    }
    // SAFETY: a handler with the right signature, for the life of the process.
    unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) };
    let class: Vec<u16> = "keytally-tray-session".encode_utf16().chain(Some(0)).collect();
    // SAFETY: this module's instance; a class with a valid window procedure and a
    // NUL-terminated name that lives through the calls (Windows copies it).
    unsafe {
        let instance = GetModuleHandleW(std::ptr::null());
        let mut wc: WNDCLASSW = std::mem::zeroed();
        wc.lpfnWndProc = Some(on_window_message);
        wc.hInstance = instance;
        wc.lpszClassName = class.as_ptr();
        RegisterClassW(&wc);
        // A top-level window, never shown: the session's end and WM_CLOSE are sent to those.
        let hwnd = CreateWindowExW(
            0,
            class.as_ptr(),
            class.as_ptr(),
            WS_OVERLAPPED,
            0,
            0,
            0,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            instance,
            std::ptr::null(),
        );
        if hwnd.is_null() {
            tracing::warn!("tray: no window for the session's end: {}", std::io::Error::last_os_error());
        }
    }
    // Restarted after the Restart Manager closed it (an upgrade) or after a crash; not after a
    // reboot, where the Run value starts it at logon.
    let args: Vec<u16> = "tray".encode_utf16().chain(Some(0)).collect();
    // SAFETY: a NUL-terminated command line (the arguments after the program).
    unsafe { RegisterApplicationRestart(args.as_ptr(), RESTART_NO_REBOOT) };
}

/// Leaves the console when this process is the only one on it: `keytally tray` started at
/// logon (the MSI's Run value) gets a console window of its own, being a console program;
/// this closes it. Started from a terminal, the tray stays attached to it.
pub fn leave_console() {
    let mut pids = [0u32; 2];
    // SAFETY: `pids` is writable for its length.
    if unsafe { GetConsoleProcessList(pids.as_mut_ptr(), pids.len() as u32) } == 1 {
        // SAFETY: no arguments.
        unsafe { FreeConsole() };
    }
}

/// The single-instance mutex's name: in `Local\`, the session's namespace, so every logged-on
/// user (console, RDP, fast user switching) has a tray of their own.
const INSTANCE_MUTEX: &str = "Local\\keytally-tray";

/// This tray's claim to be the session's only one: a handle on the named mutex, closed on
/// drop (and by Windows when the process ends).
#[derive(Debug)]
pub struct SingleInstance {
    mutex: HANDLE,
}

impl Drop for SingleInstance {
    fn drop(&mut self) {
        // SAFETY: a handle this value owns, closed once.
        unsafe { CloseHandle(self.mutex) };
    }
}

/// Claims the session's single tray: `Ok(None)` when another tray in this session holds it,
/// `Err` when the mutex cannot be made.
pub fn claim_single_instance() -> std::io::Result<Option<SingleInstance>> {
    let name: Vec<u16> = INSTANCE_MUTEX.encode_utf16().chain(Some(0)).collect();
    // SAFETY: default security, not owned (its existence is the claim), a NUL-terminated name.
    let mutex = unsafe { CreateMutexW(std::ptr::null(), 0, name.as_ptr()) };
    // SAFETY: no arguments; read at once, before any other call.
    let error = unsafe { GetLastError() };
    if mutex.is_null() {
        // Made by another tray with a security descriptor this process may not open (an
        // elevated one): taken all the same.
        if error == ERROR_ACCESS_DENIED {
            return Ok(None);
        }
        return Err(std::io::Error::from_raw_os_error(error as i32));
    }
    if error == ERROR_ALREADY_EXISTS {
        // SAFETY: the handle just opened, closed once.
        unsafe { CloseHandle(mutex) };
        return Ok(None);
    }
    Ok(Some(SingleInstance { mutex }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Events sent from other threads reach the loop through the message queue, in order,
    /// and the loop ends when the handler says so.
    #[test]
    fn events_from_other_threads_wake_the_loop() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = Waker::for_this_thread();
        std::thread::spawn(move || {
            for i in 0..5 {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(i).unwrap();
                waker.wake();
            }
        });
        let mut got = Vec::new();
        run(&rx, |i| {
            got.push(i);
            i < 4
        });
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// A second claim in the same session is refused while the first is held (the mutex
    /// exists), and succeeds once the first handle is closed.
    #[test]
    fn one_claim_per_session() {
        let Some(first) = claim_single_instance().unwrap() else {
            eprintln!("a keytally tray runs in this session already: not tested here");
            return;
        };
        assert!(claim_single_instance().unwrap().is_none(), "a second claim while the first is held");
        drop(first);
        assert!(claim_single_instance().unwrap().is_some(), "a claim after the first was dropped");
    }
}
