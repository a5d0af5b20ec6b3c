//! The watchdog: pings systemd while decisions progress, keeps `STATUS=` current, feeds the
//! sentinel, and ends a stalled daemon so the kernel releases the execs it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::daemon::status;
use driftgate_core::config::SharedConfig;
use driftgate_sys::fanotify::PermGroup;

pub(super) fn status_line(s: &status::Status) -> String {
    let degraded = match s.health.reasons.as_slice() {
        [] => String::new(),
        [one] => format!("DEGRADED: {} | ", driftgate_core::util::printable(one.as_bytes())),
        [one, rest @ ..] => {
            format!(
                "DEGRADED: {} (+{} more: driftgate status) | ",
                driftgate_core::util::printable(one.as_bytes()),
                rest.len()
            )
        }
    };
    format!(
        "{degraded}mode={} containers={} decisions={} denied={} findings={} p99={}us",
        s.mode,
        s.containers.len(),
        s.decisions.allowed + s.decisions.denied,
        s.decisions.denied,
        s.findings.values().sum::<u64>(),
        s.latency_us.p99.map_or("-".into(), |v| format!("{v:.0}")),
    )
}

/// Pings systemd's watchdog only while decisions make progress, updates `STATUS=`, and ends
/// the daemon when an exec has been held for `stall` with no decision made meanwhile: exiting
/// closes the fanotify fd, the kernel allows what was held, and systemd restarts the daemon.
pub(super) fn spawn_watchdog(
    group: Arc<PermGroup>,
    sources: Arc<status::Sources>,
    stopping: Arc<AtomicBool>,
    cfg: SharedConfig,
    sentinel: Option<Arc<driftgate_sys::sentinel::Sentinel>>,
) -> std::io::Result<JoinHandle<()>> {
    // WATCHDOG_USEC from systemd: ping at half of it (at most every TICK).
    let systemd_period = sd_notify::watchdog_enabled();
    let ping_every = systemd_period.map(|d| (d / 2).max(TICK));
    std::thread::Builder::new().name("driftgate-watchdog".into()).spawn(move || {
        let hot = Arc::clone(&sources.hot);
        let answered = || hot.allowed.load(Ordering::Relaxed) + hot.denied.load(Ordering::Relaxed);
        let mut last_answered = answered();
        let mut last_reads = hot.reads.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        let mut last_ping = Instant::now();
        let mut last_status = Instant::now();
        let mut last_refresh = Instant::now();
        while !stopping.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            if last_refresh.elapsed() >= Duration::from_secs(1) {
                last_refresh = Instant::now();
                sources.shared.budget.refresh(hot.in_flight(), sources.shared.holder.held() as u64);
            }
            // Progress: execs read are being answered, and execs queued in the kernel are being
            // read (a decision thread stuck before it counts an event shows as the second).
            let now_answered = answered();
            let in_flight = hot.in_flight();
            let reads = hot.reads.load(Ordering::Relaxed);
            let queued = group.queued_bytes().unwrap_or(0);
            let progressing =
                (in_flight == 0 || now_answered != last_answered) && (queued == 0 || reads != last_reads);
            last_answered = now_answered;
            last_reads = reads;
            if progressing {
                last_progress = Instant::now();
                hot.stalled_ms.store(0, Ordering::Relaxed);
                if let Some(s) = &sentinel {
                    s.beat();
                }
                if ping_every.is_some_and(|p| last_ping.elapsed() >= p) {
                    last_ping = Instant::now();
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            } else {
                // Just before the sentinel would (it kills at the stall timeout since the last
                // beat): an exit with a status and a log line says more than SIGKILL.
                let stall = cfg.load().stall_timeout;
                let stalled = last_progress.elapsed();
                hot.stalled_ms.store(stalled.as_millis() as u64, Ordering::Relaxed);
                if stalled + TICK >= stall {
                    // Where each thread waits: what a responder (and a bug report) needs to
                    // find the cause of a stall, which the exit itself erases.
                    let threads = threads_report();
                    tracing::error!(
                        in_flight,
                        queued_bytes = queued,
                        stalled_ms = stalled.as_millis() as u64,
                        threads = %threads.join(" | "),
                        "decisions stalled; exiting so the kernel releases the held execs"
                    );
                    let msg = format!(
                        "driftgate: decisions stalled; exiting so the kernel releases the held execs\n{}",
                        threads.iter().map(|t| format!("  thread {t}\n")).collect::<String>()
                    );
                    driftgate_sys::process::exit_now(crate::exit::STALLED, &msg);
                }
            }
            if last_status.elapsed() >= Duration::from_secs(5) {
                last_status = Instant::now();
                let _ =
                    sd_notify::notify(&[sd_notify::NotifyState::Status(&status_line(&sources.snapshot()))]);
            }
        }
    })
}

/// Each thread of the daemon: its id, name and state, the kernel function it waits in, and
/// the top of its kernel stack (readable by root).
fn threads_report() -> Vec<String> {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    let mut out: Vec<String> = dir
        .flatten()
        .map(|e| {
            let p = e.path();
            let state = read(p.join("status"))
                .lines()
                .find_map(|l| l.strip_prefix("State:").map(|s| s.trim().to_owned()))
                .unwrap_or_default();
            // `[<0>] do_sys_poll+0x2a1/0x520` -> `do_sys_poll`.
            let stack: Vec<String> = read(p.join("stack"))
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .map(|f| f.split('+').next().unwrap_or(f).to_owned())
                .take(8)
                .collect();
            format!(
                "{} {} ({state}) wchan={} stack={}",
                e.file_name().to_string_lossy(),
                read(p.join("comm")).trim(),
                read(p.join("wchan")).trim(),
                stack.join("<")
            )
        })
        .collect();
    out.sort();
    out
}

/// How often the watchdog looks at progress.
const TICK: Duration = Duration::from_millis(250);
