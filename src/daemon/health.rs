//! Coverage that shrinks is a failure, not a counter.
//!
//! Some checks can fail to run: a system call refused by a seccomp filter, a container mount
//! that cannot be marked, a pending exec whose arguments cannot be read, `vm.memfd_noexec` that
//! cannot be set, a container that cannot be watched, the fileless recorder that cannot listen.
//! Each is recorded here. While any is current (or happened within [`WINDOW`]) the daemon is
//! **degraded**: `status` says so with the reasons, `STATUS=` starts with `DEGRADED`, the gauge
//! `driftgate_coverage_degraded` is 1, and the first occurrence of each problem is a log line at
//! error level where drift is enforced (warning where it is only audited), repeated at most once
//! a minute with a count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long one occurrence of a problem keeps the daemon degraded.
pub const WINDOW: Duration = Duration::from_secs(600);
/// At most one log line per problem kind this often (the first is always logged).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A check that could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// A container mount that could hold an executable could not be marked.
    MountNotMarked,
    /// A loader's or interpreter's pending exec could not be read (its arguments, root or cwd).
    ArgumentsUnread,
    /// A loader's or interpreter's file argument could not be looked up (other than "no such
    /// file").
    /// `vm.memfd_noexec` could not be set in a container's PID namespace.
    MemfdNoexec,
    /// An exec on a watched container filesystem could not be told to belong to a container.
    Unattributed,
}

impl Problem {
    pub const ALL: [Problem; 3] = [Problem::MountNotMarked, Problem::ArgumentsUnread, Problem::MemfdNoexec];

    pub fn as_str(self) -> &'static str {
        match self {
            Problem::MountNotMarked => "mount_not_marked",
            Problem::ArgumentsUnread => "arguments_unread",
            Problem::MemfdNoexec => "memfd_noexec_not_set",
            Problem::Unattributed => "exec_not_attributed",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Problem::MountNotMarked => "a container mount could not be marked: execs from it are not checked",
            Problem::ArgumentsUnread => {
                "what a loader's or interpreter's exec would run could not be established (its arguments, environment or a path it names could not be read or followed): decided as drift"
            }
            Problem::MemfdNoexec => {
                "vm.memfd_noexec could not be set in a container: fileless execution is not refused there"
            }
            Problem::Unattributed => {
                "an exec on a container filesystem could not be told to belong to a container: it was allowed unchecked"
            }
        }
    }
}

/// One system call the daemon needs, as tried at start-up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyscallState {
    pub call: String,
    /// `ok`, or why it is refused.
    pub state: String,
    /// What is lost (or what is done instead) while it is refused.
    pub effect: String,
    /// Whether being refused shrinks coverage (otherwise there is an equivalent way).
    pub degrades: bool,
}

impl SyscallState {
    pub fn ok(&self) -> bool {
        self.state == "ok"
    }
}

#[derive(Debug)]
struct Seen {
    count: u64,
    last: Instant,
    last_logged: Option<Instant>,
    detail: String,
}

/// The daemon's record of checks that could not run.
#[derive(Debug, Default)]
pub struct Health {
    syscalls: Mutex<Vec<SyscallState>>,
    seen: Mutex<BTreeMap<Problem, Seen>>,
    /// Drift is enforced somewhere (global mode, or a rule): problems are errors.
    enforcing: AtomicBool,
}

/// What `status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HealthStatus {
    /// `ok` or `degraded`.
    pub state: String,
    /// Why it is degraded, one line each.
    pub reasons: Vec<String>,
    /// The system calls tried at start-up.
    pub syscalls: Vec<SyscallState>,
    /// Problems since start: kind, count, seconds since the last, and its detail.
    pub problems: Vec<ProblemStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProblemStatus {
    pub kind: String,
    pub count: u64,
    pub last_secs_ago: u64,
    pub detail: String,
}

impl Health {
    pub fn new(enforcing: bool) -> Health {
        Health { enforcing: AtomicBool::new(enforcing), ..Health::default() }
    }

    pub fn set_enforcing(&self, on: bool) {
        self.enforcing.store(on, Ordering::Relaxed);
    }

    /// Records the result of trying a system call; a refusal is said at once.
    pub fn syscall(&self, call: &str, result: Result<(), String>, effect: &str, degrades: bool) {
        let state = match &result {
            Ok(()) => "ok".to_owned(),
            Err(why) => why.clone(),
        };
        if let Err(why) = &result {
            if degrades && self.enforcing.load(Ordering::Relaxed) {
                tracing::error!(call, effect, "{why}");
            } else {
                tracing::warn!(call, effect, "{why}");
            }
        }
        if let Ok(mut s) = self.syscalls.lock() {
            s.retain(|x| x.call != call);
            s.push(SyscallState { call: call.to_owned(), state, effect: effect.to_owned(), degrades });
        }
    }

    /// Records one occurrence of `p`, with what happened (`detail`, built only when logged or
    /// first seen).
    pub fn note(&self, p: Problem, detail: impl FnOnce() -> String) {
        let Ok(mut seen) = self.seen.lock() else { return };
        let now = Instant::now();
        let s = seen.entry(p).or_insert_with(|| Seen {
            count: 0,
            last: now,
            last_logged: None,
            detail: String::new(),
        });
        s.count += 1;
        s.last = now;
        if s.last_logged.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        s.detail = detail();
        s.last_logged = Some(now);
        let (kind, what, count, detail) = (p.as_str(), p.what(), s.count, s.detail.as_str());
        if self.enforcing.load(Ordering::Relaxed) {
            tracing::error!(kind, count, detail, "coverage degraded: {what}");
        } else {
            tracing::warn!(kind, count, detail, "coverage degraded: {what}");
        }
    }

    /// Occurrences of `p` since start.
    pub fn count(&self, p: Problem) -> u64 {
        self.seen.lock().ok().and_then(|s| s.get(&p).map(|x| x.count)).unwrap_or(0)
    }

    /// The report, with `current` (conditions that hold now, found by the caller: unwatched
    /// containers, unmarked mounts, a recorder that cannot listen) added to the reasons.
    pub fn report(&self, current: Vec<String>) -> HealthStatus {
        let syscalls = self.syscalls.lock().map(|s| s.clone()).unwrap_or_default();
        let mut reasons: Vec<String> = syscalls
            .iter()
            .filter(|s| s.degrades && !s.ok())
            .map(|s| format!("{}: {} ({})", s.call, s.state, s.effect))
            .collect();
        reasons.extend(current);
        let mut problems = Vec::new();
        if let Ok(seen) = self.seen.lock() {
            for (p, s) in seen.iter() {
                let ago = s.last.elapsed();
                if ago < WINDOW {
                    reasons.push(format!(
                        "{} ({}x, last {}s ago): {}",
                        p.what(),
                        s.count,
                        ago.as_secs(),
                        s.detail
                    ));
                }
                problems.push(ProblemStatus {
                    kind: p.as_str().to_owned(),
                    count: s.count,
                    last_secs_ago: ago.as_secs(),
                    detail: s.detail.clone(),
                });
            }
        }
        let state = if reasons.is_empty() { "ok" } else { "degraded" };
        HealthStatus { state: state.to_owned(), reasons, syscalls, problems }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_or_a_refused_call_that_degrades_makes_the_report_degraded() {
        let h = Health::new(true);
        assert_eq!(h.report(vec![]).state, "ok");
        h.syscall("openat2", Err("refused".into()), "lookups walk one component at a time", false);
        assert_eq!(h.report(vec![]).state, "ok", "an equivalent way is not a degradation");
        assert_eq!(h.report(vec!["container x unwatched".into()]).state, "degraded");
        h.note(Problem::ArgumentsUnread, || "pid 7".into());
        h.note(Problem::ArgumentsUnread, || unreachable!("logged once a minute"));
        let r = h.report(vec![]);
        assert_eq!(r.state, "degraded");
        assert_eq!(r.problems[0].count, 2);
        assert!(r.reasons[0].contains("pid 7"), "{r:?}");
        h.syscall("process_vm_readv", Err("refused".into()), "arguments unread", true);
        assert_eq!(h.report(vec![]).reasons.len(), 2);
    }
}
