//! The IT enrollment desk (`keytally enroll`). Keys are plugged in or tapped one after
//! another; each is shown, given an owner, tags and a status (from flags, or asked for on the
//! terminal), pushed, and reported synced or queued; the next key is accepted once this one
//! is removed. `arrivals` watches for the keys, `csv` keeps the optional log.

mod arrivals;
mod csv;

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use keytally_device::enumerate::FoundKey;
use keytally_protocol::mapping::{record_for, set_posture, ObservationContext};
use keytally_protocol::record::{DeviceRecord, Label, Owner, Owners, Status};

use crate::cli::EnrollArgs;
use crate::clients::Clients;
use crate::config::Config;
use crate::outbox::Outbox;
use crate::sync::{sync_records, SystemClock};
use arrivals::Arrivals;
use csv::append_csv;
use keytally_protocol::server_view::{listed_unique_id, ServerView};

/// Running totals, shared with the Ctrl-C handler so the summary is printed either way.
#[derive(Default)]
struct Totals {
    enrolled: AtomicU64,
    synced: AtomicU64,
    queued: AtomicU64,
}

impl Totals {
    fn summary(&self) -> String {
        format!(
            "Enrolled {} key(s): {} synced, {} queued.",
            self.enrolled.load(Ordering::SeqCst),
            self.synced.load(Ordering::SeqCst),
            self.queued.load(Ordering::SeqCst)
        )
    }
}

/// Runs the desk until `--count` keys are enrolled, the input ends or Ctrl-C (which prints
/// the summary and exits). Fails only when the async runtime cannot start or the outbox
/// cannot be opened.
pub fn run(cfg: Config, args: &EnrollArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let outbox = Outbox::open(&cfg.outbox_path(), cfg.max_pending).context("cannot open the outbox")?;
    let totals = Arc::new(Totals::default());
    summary_on_ctrl_c(Arc::clone(&totals));
    let agent_id = crate::agent_id::agent_id(&cfg.state_dir);
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut desk = Desk { cfg, outbox, args, rt: &rt, totals: Arc::clone(&totals), stdin: io::stdin().lock(), clients: Clients::default() };
    let mut arrivals = Arrivals::start(args.reader.as_deref());

    loop {
        if args.count.is_some_and(|n| totals.enrolled.load(Ordering::SeqCst) >= n) {
            break;
        }
        println!("\nWaiting for a key: plug it in or tap it on a reader... ({} enrolled so far)", totals.enrolled.load(Ordering::SeqCst));
        let arrival = arrivals.next();
        let observed = ObservationContext { agent_id, host: host.clone(), observed_at: SystemTime::now() };
        match desk.enroll(&arrival.key, &observed) {
            Ok(true) => {}
            Ok(false) => println!("Skipped."),
            Err(Quit) => break,
        }
        println!("Remove the key to continue.");
        arrivals.wait_removed(&arrival);
    }
    println!("\n{}", totals.summary());
    Ok(())
}

/// Ctrl-C prints the summary and exits, whatever the desk is waiting for (a key, the person's
/// answer, the server): a thread of its own waits for it, as the desk's runtime only runs
/// while the desk pushes.
fn summary_on_ctrl_c(totals: Arc<Totals>) {
    let spawned = std::thread::Builder::new().name("desk-ctrl-c".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            println!("\n{}", totals.summary());
            std::process::exit(0);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for Ctrl-C ({e}): it will end the desk without the summary");
    }
}

/// End of input: stop and print the summary.
struct Quit;

struct Desk<'a> {
    cfg: Config,
    outbox: Outbox,
    args: &'a EnrollArgs,
    rt: &'a tokio::runtime::Runtime,
    totals: Arc<Totals>,
    stdin: io::StdinLock<'static>,
    clients: Clients,
}

impl Desk<'_> {
    /// Shows the key, asks for what the flags did not give, pushes. `Ok(false)`: skipped.
    fn enroll(&mut self, key: &FoundKey, observed: &ObservationContext) -> Result<bool, Quit> {
        let k = &key.key;
        let serial = k.info.serial.map_or_else(|| "none".to_string(), |s| s.to_string());
        println!(
            "Found: {}  serial {}  firmware {}  {}  via {} ({})",
            k.name,
            serial,
            k.info.version_name(),
            k.info.form_factor.display_name(),
            k.transport.as_str().to_uppercase(),
            key.reader
        );
        let mut record = record_for(k, Some(&key.reader), observed);
        set_posture(&mut record, key.posture.as_ref().map(|p| &p.posture));
        println!("Advisories: {}", crate::advisories::summary(crate::advisories::labels(&record).as_deref(), ", "));
        if let Some(read) = &key.posture {
            println!("Posture:");
            for line in crate::posture::lines(&read.posture) {
                println!("  {line}");
            }
            let place = if key.atr.is_empty() { crate::posture::place_words(None, Some(&key.reader)) } else { crate::posture::place_words(Some(&key.reader), None) };
            for line in crate::posture::warning_lines(&place, read) {
                eprintln!("{line}");
            }
        }

        if let Some(owner) = self.enrolled_owner(&record.yubikey.unique_id) {
            println!("! This key is already enrolled to {owner}.");
            if !self.ask("Overwrite its owner? [y/N]: ")?.trim().eq_ignore_ascii_case("y") {
                return Ok(false);
            }
        }
        let email = match &self.args.owner {
            Some(o) => o.clone(),
            None => loop {
                let answer = self.ask("Owner email: ")?;
                let answer = answer.trim();
                if is_email(answer) {
                    break answer.to_string();
                }
                println!("  \"{answer}\" is not an email address.");
            },
        };
        let tags = match &self.args.tags {
            Some(t) => t.clone(),
            None => self.ask("Tags (comma-separated, empty for none): ")?.trim().to_string(),
        };
        let status = match &self.args.status {
            Some(s) => s.clone(),
            None => {
                let s = self.ask("Status [Active]: ")?;
                if s.trim().is_empty() {
                    "Active".to_string()
                } else {
                    s.trim().to_string()
                }
            }
        };
        assign(&mut record, &email, &tags, &status);
        let (cfg, outbox, clients) = (&self.cfg, &mut self.outbox, &mut self.clients);
        let pushed = self.rt.block_on(async {
            tokio::time::timeout(self.args.push_timeout, sync_records(cfg, outbox, clients, std::slice::from_ref(&record), &SystemClock)).await
        });
        let synced = matches!(pushed, Ok(Ok(_))) && !self.outbox.is_pending(&record.yubikey.unique_id).unwrap_or(true);
        let state = if synced { "synced" } else { "queued (it will be pushed when the server answers)" };
        println!("Enrolled {} ({}) to {email}: {state}", k.name, serial);
        self.totals.enrolled.fetch_add(1, Ordering::SeqCst);
        if synced {
            self.totals.synced.fetch_add(1, Ordering::SeqCst);
        } else {
            self.totals.queued.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(path) = &self.args.csv {
            if let Err(e) = append_csv(path, &record, &email, &tags, &status, if synced { "synced" } else { "queued" }) {
                eprintln!("keytally: cannot write {}: {e}", path.display());
            }
        }
        Ok(true)
    }

    fn ask(&mut self, prompt: &str) -> Result<String, Quit> {
        print!("{prompt}");
        let _ = io::stdout().flush();
        let mut line = String::new();
        match self.stdin.read_line(&mut line) {
            Ok(0) | Err(_) => Err(Quit),
            Ok(_) => Ok(line),
        }
    }

    /// The owner the server has for this key, if any (asked of every profile, briefly, with
    /// the desk's one client per profile: no new connection or OAuth2 token per key).
    fn enrolled_owner(&mut self, unique_id: &str) -> Option<String> {
        for p in &self.cfg.profiles {
            let Ok(client) = self.clients.get(&self.cfg, p) else { continue };
            let listed = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), client.list_all(500, 100_000)).await });
            let Ok(Ok(devices)) = listed else {
                println!("  (could not ask {} whether this key is enrolled)", p.name);
                continue;
            };
            // An owner only suggested by a workstation agent is not an enrollment.
            let owner = devices.iter().find(|d| listed_unique_id(d) == Some(unique_id)).and_then(|d| ServerView::of(d).owner);
            if owner.is_some() {
                return owner;
            }
        }
        None
    }
}

fn is_email(s: &str) -> bool {
    let mut parts = s.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(user), Some(domain), None) if !user.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace))
}

/// Puts the owner, tags and status into the record.
fn assign(record: &mut DeviceRecord, email: &str, tags: &str, status: &str) {
    record.owners = Owners::one(Owner::with_email(email));
    record.tags = tags.split(',').map(str::trim).filter(|t| !t.is_empty()).map(Label::named).collect();
    record.status = Some(Status::named(status));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(is_email("alice@example.com"));
        assert!(!is_email("alice"));
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@example.com"));
        assert!(!is_email("a@b@example.com"));
    }
}
