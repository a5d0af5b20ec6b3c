//! Stage 5: the finding. An answered exec's [`ToRecord`] becomes a [`Finding`] (`facts.rs`
//! builds it from what `/proc` said before the answer) and goes to the sink thread (spool,
//! journald, exports). Also here: the per-container recording budget, and the findings about
//! uses that are already over (fileless execution, the kernel layer's reports, tampering).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::container::Container;
use crate::sink::ContainerHandle;
use driftgate_core::engine::{Category, Evidence};
use driftgate_core::finding::{self, Finding};
use driftgate_sys::fs::FileId;

use crate::daemon::hot::facts::{self, FileFacts, ProcFacts};

use super::answer::ToRecord;
use super::state::{Outcome, Shared};

/// What the kernel layer reported, as a finding needs it.
pub struct KernelReport {
    /// An exec (else an executable mapping).
    pub exec: bool,
    /// A memfd or shared memory.
    pub fileless: bool,
    pub refused: bool,
    /// The process that used the file.
    pub pid: i32,
    pub path: Vec<u8>,
    pub sha256: Option<[u8; 32]>,
    pub size: u64,
    /// `upper`, `mount` or `memfd`.
    pub layer: &'static str,
    pub mount: Option<finding::MountRef>,
    pub reason: String,
}

impl Shared {
    /// How findings are recorded now.
    pub(super) fn recorder(&self) -> facts::Recorder<'_> {
        facts::Recorder {
            node: &self.node,
            cluster: self.cluster.as_deref(),
            mode: self.mode.get(),
            max_arg_bytes: self.max_arg_bytes.load(Ordering::Relaxed),
            redact: self.redact.load_full(),
        }
    }

    /// Whether container `c` may have one more full finding recorded now. Beyond its budget,
    /// findings are counted (for the container, in status and metrics) and a line says how
    /// many once it may record again: a flood from one container cannot fill memory, the
    /// spool or the journal, and every exec is still accounted for.
    pub(super) fn may_record(&self, c: &Container) -> bool {
        use driftgate_core::ratelimit::Verdict;
        let key = c.generation.to_string();
        let verdict = self.record_limiter.lock().map(|mut l| l.check(&key, Instant::now()));
        match verdict {
            Ok(Verdict::Write { suppressed }) => {
                if suppressed > 0 {
                    tracing::warn!(
                        container = %c.id(),
                        suppressed,
                        "findings of this container were counted, not recorded (findings.container_per_sec)"
                    );
                }
                true
            }
            Ok(Verdict::Suppress) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                c.findings_suppressed.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => true,
        }
    }

    /// Logs a line about a container through the per-container rate limit, with a count of the
    /// lines held back.
    pub(super) fn container_warning(&self, container: &str, log: impl FnOnce()) {
        let verdict = self.log_limiter.lock().map(|mut l| l.check(container, Instant::now()));
        match verdict {
            Ok(driftgate_core::ratelimit::Verdict::Write { suppressed }) => {
                if suppressed > 0 {
                    tracing::warn!(
                        container,
                        suppressed,
                        "earlier warnings about this container were rate-limited"
                    );
                }
                log();
            }
            Ok(driftgate_core::ratelimit::Verdict::Suppress) => {}
            Err(_) => log(),
        }
    }

    /// Records the first finding of an aggregation window (`prev`: aggregates of windows its
    /// opening closed, if they had repeats) and asks for the container's metadata if incomplete.
    pub(super) fn send(
        &self,
        c: &Arc<Container>,
        agg_key: &driftgate_core::aggregate::AggKey,
        f: Finding,
        prev: Vec<driftgate_core::aggregate::Aggregate<ContainerHandle>>,
        file: Option<std::os::fd::OwnedFd>,
    ) {
        self.aggregator.set_first(agg_key, &f, Some(Arc::clone(c) as ContainerHandle));
        for (prev, pc) in prev {
            self.findings.send_for(prev, pc);
        }
        if !c.meta.load().complete {
            // The container is running, so its runtime has written everything by now.
            if let Some(tx) = &self.meta_refresh {
                let _ = tx.try_send(Arc::clone(c));
            }
        }
        self.findings.send_with_file(f, Some(Arc::clone(c) as ContainerHandle), file);
    }

    /// Records a finding outside a decision (process `pid` of container `c`, described by what
    /// `read` says of it now: [`ProcFacts::of_running`] for a use that is over): counted,
    /// aggregated like any finding, and within the container's budget unless `budgeted` is
    /// false (an IoC match, a tampering). `fill` adds what the caller knows; `evidence` is
    /// asked for the file only when a copy will be kept.
    #[allow(clippy::too_many_arguments)]
    fn record_after_the_fact(
        &self,
        c: &Arc<Container>,
        pid: i32,
        read: fn(i32) -> ProcFacts,
        file: FileFacts,
        category: Category,
        action: driftgate_core::engine::Action,
        budgeted: bool,
        fill: impl FnOnce(&mut Finding),
        evidence: impl FnOnce() -> Option<std::os::fd::OwnedFd>,
    ) {
        if let Some(i) = Category::ALL.iter().position(|x| *x == category) {
            self.stats.findings[i].fetch_add(1, Ordering::Relaxed);
        }
        let agg_key = (c.generation, file.path.clone(), file.sha256, category, action);
        if self.aggregator.repeat(&agg_key, driftgate_core::util::now_rfc3339)
            || (budgeted && !self.may_record(c))
        {
            return;
        }
        let facts = read(pid);
        let prev = self.aggregator.open(agg_key.clone());
        let mut f = facts::build(&self.recorder(), c, pid, facts, file, category, action);
        fill(&mut f);
        let file = if self.findings.keeps_evidence() { evidence() } else { None };
        self.send(c, &agg_key, f, prev, file);
    }

    /// The IoC entry a hash matches, as a finding names it.
    fn ioc_of(&self, sha: Option<[u8; 32]>) -> Option<finding::IocRef> {
        sha.and_then(|h| self.iocs.load().lookup(&h))
            .map(|m| finding::IocRef { name: m.name, source: m.source })
    }

    /// Records fileless execution seen after the fact (process `pid` of container `c` runs a
    /// program from a memfd): never blocked (it already runs), aggregated like any finding.
    pub fn record_fileless(
        &self,
        c: &Arc<Container>,
        pid: i32,
        path: Vec<u8>,
        sha: Option<[u8; 32]>,
        size: u64,
    ) {
        let ioc = self.ioc_of(sha);
        let category =
            if ioc.is_some() { Category::FilelessMaliciousExecution } else { Category::FilelessExecution };
        let file = FileFacts::plain(path, sha, size, "memfd", None);
        let budgeted = ioc.is_none();
        // The memfd the process runs, for the evidence store.
        let exe = || std::fs::File::open(format!("/proc/{pid}/exe")).ok().map(std::os::fd::OwnedFd::from);
        let fill = |f: &mut Finding| f.ioc = ioc;
        self.record_after_the_fact(
            c,
            pid,
            ProcFacts::of_running,
            file,
            category,
            driftgate_core::engine::Action::Audited,
            budgeted,
            fill,
            exe,
        );
    }

    /// Records what the kernel layer reported ([`crate::daemon::kernel`]): a use it refused in
    /// an enforced container, or one fanotify cannot see in an audited one. The task's exec or
    /// mapping is over: the process is described as it runs now. `file`: the file, when the
    /// task still had it open (for the evidence store).
    pub fn record_kernel(&self, c: &Arc<Container>, r: KernelReport, file: Option<std::os::fd::OwnedFd>) {
        use driftgate_core::engine::Action;
        let ioc = self.ioc_of(r.sha256);
        let category = match (r.fileless, r.exec, ioc.is_some()) {
            (true, _, false) => Category::FilelessExecution,
            (true, _, true) => Category::FilelessMaliciousExecution,
            (false, true, false) => Category::AddedBinaryExecuted,
            (false, true, true) => Category::AddedMaliciousBinaryExecuted,
            (false, false, false) => Category::AddedLibraryLoaded,
            (false, false, true) => Category::AddedMaliciousLibraryLoaded,
        };
        let action = if r.refused { Action::Blocked } else { Action::Audited };
        let facts = FileFacts::plain(r.path, r.sha256, r.size, r.layer, r.mount);
        let budgeted = ioc.is_none();
        let reason = r.reason;
        let fill = |f: &mut Finding| {
            f.reason = Some(reason);
            f.ioc = ioc;
            f.rule = Some("kernel".into());
        };
        self.record_after_the_fact(
            c,
            r.pid,
            ProcFacts::of_running,
            facts,
            category,
            action,
            budgeted,
            fill,
            || file,
        );
    }

    /// Records a detection beyond drift (`REVERSE_SHELL`, `UNEXPECTED_CHILD_SHELL`,
    /// `MALICIOUS_URL_OBSERVED`): thread `tid` of container `c` is about to run the file at
    /// `path`; `action` is what rule `rule` said (`detection`: the default, audit). Within the
    /// container's budget like any finding; `fill` adds what the detection found.
    #[allow(clippy::too_many_arguments)]
    pub fn record_detection(
        &self,
        c: &Arc<Container>,
        tid: i32,
        path: &[u8],
        category: Category,
        action: driftgate_core::engine::Action,
        rule: &str,
        fill: impl FnOnce(&mut Finding),
    ) {
        let file = FileFacts::plain(path.to_vec(), None, 0, "lower", None);
        let fill = |f: &mut Finding| {
            f.rule = Some(rule.to_owned());
            fill(f);
        };
        // The pending call's arguments: the program's own (`sh -i`, `curl URL`).
        let read = ProcFacts::of_pending_exec;
        self.record_after_the_fact(c, tid, read, file, category, action, true, fill, || None);
    }

    /// Records that `vm.memfd_noexec` was found lowered to `value` in a PID namespace of
    /// container `c` (seen through its process `pid`), and set again: `PROTECTION_TAMPERED`,
    /// recorded whatever the container's budget.
    pub fn record_tampered(&self, c: &Arc<Container>, pid: i32, value: u8) {
        let file = FileFacts::plain(b"/proc/sys/vm/memfd_noexec".to_vec(), None, 0, "sysctl", None);
        let fill = |f: &mut Finding| {
            f.reason = Some(format!(
                "vm.memfd_noexec was lowered to {value} inside the container's PID namespace (memfds executable again); driftgate set it to 2 again"
            ))
        };
        let action = driftgate_core::engine::Action::Audited;
        let read = ProcFacts::of_running;
        self.record_after_the_fact(
            c,
            pid,
            read,
            file,
            Category::ProtectionTampered,
            action,
            false,
            fill,
            || None,
        );
    }

    /// Stage 5 for an answered exec: builds its finding and sends it.
    pub(super) fn record(&self, r: ToRecord) {
        let ToRecord { container, id, tid, facts, outcome, category, action, ioc, rule, finding_id, .. } = r;
        let mut f = self.build_finding(&container, &id, tid, facts, &outcome, category, action);
        f.file.interpreter = r.interpreter;
        f.reason = outcome.reason;
        f.ioc = ioc;
        f.rule = Some(rule);
        f.id = finding_id;
        f.response = r.response;
        if r.privilege.any() {
            // Drift that runs with more privilege than its caller: T1548.001, and at least HIGH.
            f.severity = f.severity.max(driftgate_core::model::Severity::High);
            f.mitre.push("T1548.001".into());
            f.file.setuid = r.privilege.setuid;
            f.file.setgid = r.privilege.setgid;
            f.file.capabilities = r.privilege.capabilities;
        }
        self.send(&container, &r.agg_key, f, r.closed, r.file);
    }

    /// The finding for a decided exec, with what /proc said about it before the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build_finding(
        &self,
        c: &Container,
        id: &FileId,
        tid: i32,
        facts: ProcFacts,
        o: &Outcome,
        category: Category,
        action: driftgate_core::engine::Action,
    ) -> Finding {
        let file = FileFacts {
            path: o.path.clone(),
            sha256: o.sha256,
            size: id.size,
            layer: match o.evidence {
                Evidence::ImageFile => "lower",
                Evidence::MountFile => "mount",
                Evidence::Unverifiable => "unknown",
                _ => "upper",
            },
            mount: o.mount.as_deref().map(facts::mount_ref),
            image_paths: o.image_paths.clone(),
            interpreter: None,
            deleted: o.deleted,
        };
        facts::build(&self.recorder(), c, tid, facts, file, category, action)
    }
}
