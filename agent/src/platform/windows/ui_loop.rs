//! The tray's main-thread loop on Windows: tray-icon's notification-area icon is a hidden
//! window of the thread that made it, so that thread must pump its Win32 messages
//! (`GetMessageW` / `DispatchMessageW`; the menu's clicks arrive that way). Other threads hand
//! the loop an event by sending it on the channel and then posting a message to the thread
//! ([`Waker::wake`]), which ends the wait; the loop drains the channel after every message.
//! A stop request is Ctrl+C, Ctrl+Break or the console closing (when there is a console).

use std::sync::OnceLock;

use crossbeam_channel::Receiver;
use windows_sys::Win32::System::Console::{FreeConsole, GetConsoleProcessList, SetConsoleCtrlHandler};
use windows_sys::Win32::System::Threading::GetCurrentThreadId;
use windows_sys::Win32::UI::WindowsAndMessaging::{
    DispatchMessageW, GetMessageW, PeekMessageW, PostThreadMessageW, TranslateMessage, MSG, PM_NOREMOVE, WM_APP,
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

/// Calls `stop` on Ctrl+C, Ctrl+Break or the console closing (once set, for good).
pub fn on_stop_request(stop: Box<dyn Fn() + Send + Sync>) {
    if STOP.set(stop).is_ok() {
        // SAFETY: a handler with the right signature, for the life of the process.
        unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) };
    }
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
}
