//! Stage 3: the decision. IoC lookup, then [`driftgate_core::engine::judge`] (rules, mode, verdict);
//! before an allow, the file is pinned against writers (`hot/pin.rs`); then the
//! answer to the kernel.

use std::sync::atomic::Ordering;

use driftgate_core::engine::{judge, Category, Describe, Facts, Judgement, Mode, Settings, Verdict};
use driftgate_core::finding::{self};
use driftgate_sys::fanotify::PendingExec;
use driftgate_sys::fs::FileId;

use crate::daemon::hot::facts::ProcFacts;

use super::state::{HashState, Job, Outcome, Routed, Shared};

/// Maps what taking the lease found to: go on (held, or nothing to hold), or why the file's
/// bytes are not settled.
pub(super) fn pin_result(p: crate::daemon::hot::pin::Pin) -> Result<(), String> {
    use crate::daemon::hot::pin::Pin;
    match p {
        Pin::Held | Pin::Unsupported | Pin::Off => Ok(()),
        Pin::Busy => Err("not settled: the file was open for writing when it was executed".into()),
        Pin::Changed => Err("not settled: the file changed after it was checked, before it ran".into()),
    }
}

pub(super) fn log_slow(job: &Job, v: &Verdict) {
    tracing::debug!(
        container = %job.container.identity.id,
        allow = v.allow,
        finding = ?v.finding.map(|f| f.0),
        micros = job.received.elapsed().as_micros() as u64,
        "slow-path decision"
    );
}

/// An exec as the policy sees it, built only when some rule needs it.
pub(super) struct ExecSubject<'a> {
    pub(super) job: &'a Job,
    pub(super) outcome: &'a Outcome,
}

impl Describe for ExecSubject<'_> {
    fn describe<R>(&self, f: impl FnOnce(&driftgate_core::policy::Subject<'_>) -> R) -> R {
        let c = &self.job.container;
        let m = c.meta.load();
        let id = m.id.clone().unwrap_or_else(|| c.identity.id.clone());
        let path = String::from_utf8_lossy(&self.outcome.path);
        let sha = self.outcome.sha256.map(driftgate_core::util::hex);
        let mount = self.outcome.mount.as_ref().map(|m| String::from_utf8_lossy(&m.mountpoint));
        f(&driftgate_core::policy::Subject {
            namespace: m.pod_namespace.as_deref(),
            pod: m.pod_name.as_deref(),
            container: Some(m.name.as_deref().unwrap_or(&id)),
            container_id: Some(&id),
            image: m.image.as_deref(),
            runtime: m.runtime.unwrap_or(c.identity.runtime),
            path: &path,
            sha256: sha.as_deref(),
            mount: Some(mount.as_deref().unwrap_or("/")),
        })
    }
}

impl Shared {
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

    /// The decision on `job` given its outcome: IoC match, the policy rule, the verdict.
    pub(super) fn verdict_for(
        &self,
        job: &Job,
        outcome: &Outcome,
        mode: Mode,
    ) -> (Option<driftgate_core::index::ioc::IocMatch>, Judgement) {
        // Known-bad content, whatever the path: checked on every decision (also a cached
        // outcome), so an IoC added by a reload applies at once.
        let ioc = outcome.sha256.and_then(|h| self.iocs.load().lookup(&h));
        let facts = Facts {
            evidence: outcome.evidence,
            executed: job.executed(),
            ioc: ioc.is_some(),
            image_copy: !outcome.image_paths.is_empty(),
        };
        let settings = Settings { mode, block_iocs: self.block_iocs.load(Ordering::Relaxed) };
        (ioc, judge(&facts, &self.policy.load(), &ExecSubject { job, outcome }, settings))
    }

    /// Decides `job` from its outcome: IoC check, policy, answer, finding.
    pub fn finish(&self, mut job: Job, mut outcome: Outcome) -> Routed {
        let mode = self.mode.get();
        let mut d = self.verdict_for(&job, &outcome, mode);
        // Drift asked about with AT_EXECVE_CHECK is a script an interpreter is about to run:
        // looked at only for a finding, so that no other exec pays for reading the call.
        if d.1.verdict.finding.is_some()
            && job.target.is_none()
            && job.open.is_none()
            && driftgate_sys::proc::pending_execve_check(job.ev.tid())
        {
            job.execve_check = true;
            d = self.verdict_for(&job, &outcome, mode);
        }
        if d.1.verdict.allow {
            // Writers are kept out from here until the kernel denies them itself; a file
            // that is being written or has changed since it was checked is not what was
            // decided, so it is decided again without its hash.
            if let Err(reason) = self.pin_job(&job) {
                outcome = self.outcome_for(&job, HashState::Missing(reason));
                d = self.verdict_for(&job, &outcome, mode);
            }
        }
        let (ioc, Judgement { verdict, decision }) = d;
        log_slow(&job, &verdict);
        if verdict.allow {
            // The kernel layer lets this version of the file run and map as code from now on
            // (before the answer: the exec's own check comes right after it).
            self.namespaces.kernel().allow(&job.container, &job.id, job.mount.is_some());
        }
        let unverifiable = outcome.evidence == driftgate_core::engine::Evidence::Unverifiable;
        if !verdict.allow && job.open.is_none() && self.libraries.marked && !unverifiable {
            if let Ok(mut m) = self.refused_execs.lock() {
                m.insert((job.ev.tid(), job.id), std::time::Instant::now());
            }
        }
        if verdict.allow
            && self.libraries.marked
            && job.target.is_some()
            && outcome.evidence != driftgate_core::engine::Evidence::Unverifiable
        {
            // Answered below; the loader then opens the program it was asked to run, and the
            // interpreter its script: decided here, not again at that open.
            if let Ok(mut m) = self.loader_runs.lock() {
                m.insert((job.ev.tid(), job.id), std::time::Instant::now());
            }
        }
        let Some((category, action)) = verdict.finding else {
            if job.open.is_some() {
                // A copy-up with the image's bytes: harmless until it is written again.
                if verdict.allow
                    && outcome.evidence
                        == driftgate_core::engine::Evidence::UpperFile(
                            driftgate_core::engine::ImageAtPath::SameContent,
                        )
                {
                    self.ignore_opens(&job.ev);
                }
            } else if verdict.allow && !outcome.kind.is_plain() && job.target.is_none() {
                // The image's own loader or interpreter (copied up): decide what it runs.
                return self.indirect(job.ev, &job.container, outcome.kind, &outcome.path);
            }
            self.answer(job.ev, verdict.allow);
            return Routed::Done;
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
            return Routed::Done;
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
        // The window opens before the answer: a loop's next exec of the same file can come as
        // soon as this one is answered, and is a repeat even if this finding is not built yet.
        let prev = self.aggregator.open(agg_key.clone());
        // The evidence copy reads the exact inode decided, after the answer: keep it open, and
        // (an allowed file is leased already) lease a refused one, so that a writer waits
        // until the copy is taken (the lease lives as long as this open file does).
        // Nothing was run from a file to keep when what would run is not known.
        let file = if self.findings.keeps_evidence() && !unverifiable {
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
        let finding_id = uuid::Uuid::now_v7().to_string();
        let response = match (verdict.allow, decision.response) {
            (false, Some(r)) => Some(self.respond(r, &job.container.id(), tid, &finding_id)),
            _ => None,
        };
        self.answer(job.ev, verdict.allow);
        let interpreter = job.target.as_ref().map(|t| t.interpreter.clone());
        let mut f = self.build_finding(&job.container, &job.id, tid, facts, &outcome, category, action);
        f.file.interpreter = interpreter;
        f.reason = outcome.reason.clone();
        f.ioc = ioc.map(|m| finding::IocRef { name: m.name, source: m.source });
        f.rule = Some(decision.rule.clone());
        f.id = finding_id;
        f.response = response;
        self.send(&job.container, &agg_key, f, prev, file);
        Routed::Done
    }
}
