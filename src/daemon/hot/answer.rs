//! Stage 4: the answer. A [`Decided`] job goes in. Out comes the kernel's answer, after
//! everything that must happen before it:
//! - the kernel layer is told about an allowed file version;
//! - the loader and refusal bookkeeping that the next open of the same thread needs;
//! - an image loader or interpreter is handed on to decide what it runs;
//! - the aggregation window and the container's recording budget;
//! - `/proc` is read (the process image changes once the exec is allowed);
//! - the rule's response is taken (a refused process must still be there to find).
//!
//! What is left to record leaves as a [`ToRecord`] for stage 5 (`record.rs`).

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use driftgate_core::engine::{Action, Category, Evidence, ImageAtPath, Verdict};
use driftgate_core::finding::{InterpreterRef, IocRef, ResponseRef};
use driftgate_core::privilege::Privilege;
use driftgate_sys::fanotify::PendingExec;
use driftgate_sys::fs::FileId;

use super::decide::Decided;
use super::facts::ProcFacts;
use super::state::{Job, Outcome, Routed, Shared};
use crate::container::Container;
use crate::sink::ContainerHandle;
use driftgate_core::aggregate::{AggKey, Aggregate};

/// Stage 4's output.
pub enum Answered {
    /// Answered; nothing to record (no finding, a repeat, or over the container's budget).
    Done,
    /// Not answered yet: handed on (an image loader's or interpreter's target, to be decided).
    Routed(Routed),
    /// Answered; the finding to record.
    Record(Box<ToRecord>),
}

/// A finding whose exec is answered: everything stage 5 needs to build and send it.
pub struct ToRecord {
    pub container: Arc<Container>,
    pub id: FileId,
    pub tid: i32,
    /// What `/proc` said before the answer.
    pub facts: ProcFacts,
    pub outcome: Outcome,
    pub category: Category,
    pub action: Action,
    pub ioc: Option<IocRef>,
    pub rule: String,
    /// Taken before the answer, under this id.
    pub finding_id: String,
    pub response: Option<ResponseRef>,
    pub interpreter: Option<InterpreterRef>,
    /// Its aggregation window, and the windows its opening closed.
    pub agg_key: AggKey,
    pub closed: Vec<Aggregate<ContainerHandle>>,
    /// The exact file decided, kept open for the evidence store.
    pub file: Option<OwnedFd>,
    /// What running the file grants: set-user-ID, set-group-ID, file capabilities.
    pub privilege: Privilege,
}

/// Maps what taking the lease found to: go on (held, or nothing to hold), or why the file's
/// bytes are not settled.
pub(super) fn pin_result(p: super::pin::Pin) -> Result<(), String> {
    use super::pin::Pin;
    match p {
        Pin::Held | Pin::Unsupported | Pin::Off => Ok(()),
        Pin::Busy => Err("not settled: the file was open for writing when it was executed".into()),
        Pin::Changed => Err("not settled: the file changed after it was checked, before it ran".into()),
    }
}

impl Shared {
    /// Answers the kernel, counting the answer and its latency.
    pub fn answer(&self, ev: PendingExec, allow: bool) {
        if allow {
            self.stats.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
        }
        let received = ev.received;
        let res = ev.answer(allow);
        self.stats.latency.record(received.elapsed());
        if let Err(e) = res {
            self.stats.answer_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "could not answer exec event");
        }
    }

    /// Leases the event's file before it is allowed, checking that it is still version `id`,
    /// and holds it (`hot/pin.rs`). `Err` says why its bytes are not settled.
    pub fn pin_event(&self, ev: &PendingExec, id: &FileId) -> Result<(), String> {
        pin_result(self.holder.pin(ev.fd(), id))
    }

    /// Leases and holds the file a job decides (the event's, or what a loader or interpreter runs).
    pub(super) fn pin_job(&self, job: &Job) -> Result<(), String> {
        pin_result(self.holder.pin(job.file_fd(), &job.id))
    }

    /// The whole stage: see the module's documentation.
    pub(super) fn answer_decided(&self, job: Job, d: Decided) -> Answered {
        let Decided { outcome, ioc, verdict, decision, .. } = d;
        self.before_answer(&job, &outcome, verdict);
        let Some((category, action)) = verdict.finding else {
            if job.open.is_some() {
                // A copy-up with the image's bytes: harmless until it is written again.
                if verdict.allow && outcome.evidence == Evidence::UpperFile(ImageAtPath::SameContent) {
                    self.ignore_opens(&job.ev);
                }
            } else if verdict.allow && !outcome.kind.is_plain() && job.target.is_none() {
                // The image's own loader or interpreter (copied up): decide what it runs.
                return Answered::Routed(self.indirect(job.ev, &job.container, outcome.kind, &outcome.path));
            }
            self.answer(job.ev, verdict.allow);
            return Answered::Done;
        };
        if let Some(i) = Category::ALL.iter().position(|c| *c == category) {
            self.stats.findings[i].fetch_add(1, Ordering::Relaxed);
        }
        // A deleted file's exec is its own window: running a binary with no name left is worth
        // a record of its own.
        let mut agg_path = outcome.path.clone();
        if outcome.deleted {
            agg_path.extend_from_slice(b" (deleted)");
        }
        let agg_key = (job.container.generation, agg_path, outcome.sha256, category, action);
        // Known malware is recorded whatever the container's budget: a flood of drift can
        // hold back only drift.
        if self.aggregator.repeat(&agg_key, driftgate_core::util::now_rfc3339)
            || (ioc.is_none() && !self.may_record(&job.container))
        {
            // Counted in the open window's aggregate (or the container's suppressed findings):
            // no /proc reads, no sink work.
            if let (false, Some(r)) = (verdict.allow, decision.response) {
                self.respond_unrecorded(r, &job.container.id(), job.ev.tid());
            }
            self.answer(job.ev, verdict.allow);
            return Answered::Done;
        }
        // Read what /proc says about the exec before answering: after "allow" the process
        // image is replaced, and a short program may be gone.
        let tid = job.ev.tid();
        // An open is made by a process that runs its program already.
        let mut facts =
            if job.open.is_some() { ProcFacts::of_running(tid) } else { ProcFacts::of_pending_exec(tid) };
        if !verdict.allow {
            facts.read_ancestors(self.max_arg_bytes.load(Ordering::Relaxed));
        }
        // The mode and capabilities of the version decided (the event's fd closes with the
        // answer): a drift file that raises privilege is worse than one that does not.
        let fd = job.file_fd();
        let privilege = driftgate_sys::fs::fstat_fd(fd)
            .map(|st| Privilege::of(st.st_mode, driftgate_sys::fs::file_capabilities(fd).as_deref()))
            .unwrap_or_default();
        // The window opens before the answer: a loop's next exec of the same file can come as
        // soon as this one is answered, and is a repeat even if this finding is not built yet.
        let closed = self.aggregator.open(agg_key.clone());
        // The evidence copy reads the exact inode decided, after the answer: keep it open, and
        // (an allowed file is leased already) lease a refused one, so that a writer waits
        // until the copy is taken (the lease lives as long as this open file does).
        // Nothing was run from a file to keep when what would run is not known.
        let file = if self.findings.keeps_evidence() && outcome.evidence != Evidence::Unverifiable {
            if !verdict.allow {
                let _ = self.pin_job(&job);
            }
            job.file_fd().try_clone_to_owned().ok()
        } else {
            None
        };
        // A response is taken before the refusal is answered: a container being frozen runs
        // no further instruction of the refused process (the freeze takes it on its way back
        // from the exec), and the process is certainly still there to find the cgroup from.
        let finding_id = crate::sink::new_finding_id();
        let response = match (verdict.allow, decision.response) {
            (false, Some(r)) => Some(self.respond(r, &job.container.id(), tid, &finding_id)),
            _ => None,
        };
        self.answer(job.ev, verdict.allow);
        Answered::Record(Box::new(ToRecord {
            container: job.container,
            id: job.id,
            tid,
            facts,
            interpreter: job.target.map(|t| t.interpreter),
            outcome,
            category,
            action,
            ioc: ioc.map(|m| IocRef { name: m.name, source: m.source }),
            rule: decision.rule,
            finding_id,
            response,
            agg_key,
            closed,
            file,
            privilege,
        }))
    }

    /// What must be in place before any answer: the kernel layer lets an allowed version run,
    /// and the same thread's next open of the file is known for what it is.
    fn before_answer(&self, job: &Job, outcome: &Outcome, verdict: Verdict) {
        if verdict.allow {
            // The kernel layer lets this version of the file run and map as code from now on
            // (before the answer: the exec's own check comes right after it).
            self.namespaces.kernel().allow(&job.container, &job.id, job.mount.is_some());
        }
        let unverifiable = outcome.evidence == Evidence::Unverifiable;
        if !verdict.allow && job.open.is_none() && self.libraries.marked && !unverifiable {
            if let Ok(mut m) = self.refused_execs.lock() {
                m.insert((job.ev.tid(), job.id), std::time::Instant::now());
            }
        }
        if verdict.allow && self.libraries.marked && job.target.is_some() && !unverifiable {
            // Answered next; the loader then opens the program it was asked to run, and the
            // interpreter its script: decided here, not again at that open.
            if let Ok(mut m) = self.loader_runs.lock() {
                m.insert((job.ev.tid(), job.id), std::time::Instant::now());
            }
        }
    }
}
