//! The push worker of the long-running modes (`run`, `kiosk`): a thread with its own async
//! runtime that takes records, puts them through the outbox to every server profile with a
//! short deadline, retries a backlog until it is empty, and on SIGINT/SIGTERM flushes what it
//! holds within that deadline. Nothing else in those modes talks to the network.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use keytally_protocol::mapping::rfc3339;
use keytally_protocol::record::DeviceRecord;
use keytally_protocol::server_view::views_of;
use tokio::sync::mpsc;

use crate::clients::Clients;
use crate::config::Config;
use crate::control::SyncView;
use crate::control::TrayState;
use crate::outbox::{fmt_time, Outbox};
use crate::runtime::runtime;
use crate::sync::{sync_records, SystemClock};
use crate::watch::Wake;

/// A kiosk tap to report with one line once it is synced or queued.
pub struct TapLine {
    pub reader: String,
    pub name: String,
    pub serial: Option<u32>,
    pub unique_id: String,
    /// The key's advisories as `crate::advisories::label`s; `None` when not assessed.
    pub advisories: Option<Vec<String>>,
    /// When PC/SC reported the card present.
    pub present_at: Instant,
}

/// Work for the pusher.
pub struct Job {
    pub records: Vec<DeviceRecord>,
    /// Set for kiosk taps: print the tap's line when the push is done or times out.
    pub tap: Option<TapLine>,
    /// Ask the server for these records' owner, status and tags afterwards (for the tray).
    pub lookup: bool,
}

/// Timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct PushTiming {
    /// How long a push may take before its records are reported as queued (the push
    /// goes on at the next retry).
    pub push_timeout: Duration,
    /// How often a backlog is retried (the scheduler's backoff still applies).
    pub retry_every: Duration,
    /// Say on stdout when a backlog has been delivered (kiosk); otherwise it is logged.
    pub announce_delivery: bool,
}

/// The running worker. Dropping the sender side (via [`Pusher::finish`]) ends it.
pub struct Pusher {
    tx: mpsc::UnboundedSender<Job>,
    thread: JoinHandle<()>,
    /// Raised when SIGINT/SIGTERM arrives (or the worker cannot run).
    pub stop: Arc<AtomicBool>,
    /// Woken on shutdown so a blocked PC/SC wait returns (give it to the loop's watch).
    pub wake: Wake,
}

impl Pusher {
    /// `outbox` is the process's one outbox; the worker keeps it for its lifetime. `board`,
    /// when given, gets the sync state after every push and the server's view of looked-up
    /// records.
    pub fn start(cfg: Config, outbox: Outbox, timing: PushTiming, board: Option<Arc<TrayState>>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Wake::default();
        let (s, c) = (Arc::clone(&stop), wake.clone());
        let thread = std::thread::Builder::new().name("push".into()).spawn(move || worker(cfg, outbox, rx, timing, s, c, board))?;
        Ok(Self { tx, thread, stop, wake })
    }

    /// Hands records over; false when the worker has stopped.
    pub fn send(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Lets the worker flush what it holds and waits for it.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn worker(
    cfg: Config,
    mut outbox: Outbox,
    mut rx: mpsc::UnboundedReceiver<Job>,
    timing: PushTiming,
    stop: Arc<AtomicBool>,
    wake: Wake,
    board: Option<Arc<TrayState>>,
) {
    let Ok(rt) = runtime() else {
        stop.store(true, Ordering::SeqCst);
        return;
    };
    // One client per profile for the worker's lifetime: kept-alive connections, one token.
    let mut clients = Clients::default();
    rt.block_on(async move {
        let shutdown = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = crate::platform::service_manager::asked_to_stop() => {}
            }
        };
        tokio::pin!(shutdown);
        let mut backlog = pending_count(&outbox) > 0;
        if let Some(board) = &board {
            publish_sync_state(&cfg, &outbox, &mut clients, board).await;
        }
        loop {
            // Idle means no timer at all: the next wake-up is a job, a signal or a backlog retry.
            let retry = async {
                if backlog {
                    tokio::time::sleep(timing.retry_every).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                job = rx.recv() => {
                    let Some(job) = job else { break };
                    let result = tokio::time::timeout(timing.push_timeout, sync_records(&cfg, &mut outbox, &mut clients, &job.records, &SystemClock)).await;
                    if let Ok(Err(e)) = &result {
                        tracing::warn!("push failed: {e:#}");
                    }
                    backlog = pending_count(&outbox) > 0;
                    match job.tap {
                        Some(tap) => {
                            let state = if result.is_ok_and(|r| r.is_ok()) && !is_pending(&outbox, &tap.unique_id) { "synced" } else { "queued" };
                            let serial = tap.serial.map_or_else(|| "no serial".to_string(), |s| format!("serial {s}"));
                            println!(
                                "{}  {}  {}  {}  {}{} ({} ms)",
                                rfc3339(SystemTime::now()),
                                tap.reader,
                                tap.name,
                                serial,
                                crate::advisories::tap_words(tap.advisories.as_deref()),
                                state,
                                tap.present_at.elapsed().as_millis()
                            );
                        }
                        None => tracing::info!(records = job.records.len(), backlog, "pushed"),
                    }
                    if let Some(board) = &board {
                        if job.lookup && board.has_watchers() {
                            look_up(&cfg, &mut clients, &job.records, board, timing.push_timeout).await;
                        }
                        publish_sync_state(&cfg, &outbox, &mut clients, board).await;
                    }
                }
                () = retry => {
                    match tokio::time::timeout(timing.push_timeout, sync_records(&cfg, &mut outbox, &mut clients, &[], &SystemClock)).await {
                        Ok(Ok(s)) if s.remaining == 0 => {
                            backlog = false;
                            if timing.announce_delivery {
                                println!("{}  queued records delivered", rfc3339(SystemTime::now()));
                            } else {
                                tracing::info!("queued records delivered");
                            }
                        }
                        _ => backlog = pending_count(&outbox) > 0,
                    }
                    if let Some(board) = &board {
                        publish_sync_state(&cfg, &outbox, &mut clients, board).await;
                    }
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        wake.now_and_again();
        // Records read but not yet pushed are in the channel: put them in the outbox and
        // give the server one short chance; what does not make it stays queued.
        let mut left = Vec::new();
        while let Ok(job) = rx.try_recv() {
            left.extend(job.records);
        }
        if !left.is_empty() || backlog {
            let _ = tokio::time::timeout(timing.push_timeout, sync_records(&cfg, &mut outbox, &mut clients, &left, &SystemClock)).await;
        }
    });
}

/// The sync state over every profile, and what the user should act on, for the tray.
async fn publish_sync_state(cfg: &Config, outbox: &Outbox, clients: &mut Clients, board: &TrayState) {
    let mut sync = SyncView { state: "ok".into(), pending: outbox.depth(None).unwrap_or(0), ..SyncView::default() };
    let mut warnings = Vec::new();
    let mut last_success = None;
    let mut last_error: Option<(u64, String)> = None;
    for p in &cfg.profiles {
        let st = outbox.sync_state(&p.name).unwrap_or_default();
        let described = crate::sync::describe(&st);
        if described == "credential rejected" || (described == "backing off" && sync.state == "ok") {
            sync.state = described.to_string();
        }
        if st.credential_rejected {
            warnings.push(format!("The server ({}) rejected keytally's credential: ask IT to renew it", p.name));
        }
        last_success = last_success.max(st.last_success_at);
        if let (Some(at), Some(e)) = (st.last_error_at, st.last_error) {
            if last_error.as_ref().is_none_or(|(t, _)| at > *t) {
                last_error = Some((at, e));
            }
        }
        if let Ok(client) = clients.get(cfg, p) {
            if let Some(w) = client.auth().info(SystemTime::now()).await.expiry_warning {
                warnings.push(w);
            }
        }
    }
    // An error older than the last success is history, not the state.
    sync.last_error = last_error.filter(|(at, _)| last_success.is_none_or(|s| *at > s)).map(|(_, e)| e);
    sync.last_success_at = last_success.map(fmt_time);
    if let Ok(q) = outbox.quarantined() {
        if !q.is_empty() {
            warnings.push(format!("{} record(s) were refused by the server; see `keytally status`", q.len()));
        }
    }
    board.set_sync(sync, warnings);
}

/// Asks the server for the owner, status and tags of `records` (the first profile that
/// answers; one listing, bounded in size and time).
async fn look_up(cfg: &Config, clients: &mut Clients, records: &[DeviceRecord], board: &TrayState, deadline: Duration) {
    let wanted: std::collections::HashSet<&str> = records.iter().map(|r| r.yubikey.unique_id.as_str()).collect();
    if wanted.is_empty() {
        return;
    }
    for p in &cfg.profiles {
        let Ok(client) = clients.get(cfg, p) else { continue };
        match tokio::time::timeout(deadline, client.list_all(500, 20_000)).await {
            Ok(Ok(devices)) => {
                board.set_server_views(views_of(&devices, |uid| wanted.contains(uid)));
                return;
            }
            Ok(Err(e)) => tracing::info!("profile {}: cannot list devices for the tray: {e}", p.name),
            Err(_) => tracing::info!("profile {}: listing devices for the tray timed out", p.name),
        }
    }
}

fn pending_count(outbox: &Outbox) -> u64 {
    outbox.depth(None).unwrap_or(0)
}

fn is_pending(outbox: &Outbox, unique_id: &str) -> bool {
    outbox.is_pending(unique_id).unwrap_or(true)
}
