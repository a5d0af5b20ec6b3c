//! Stage 4: the finding. Aggregation, the per-container budget, `/proc` facts read before the
//! answer, and the hand-off to the sink thread (spool and journald).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::container::Container;
use crate::engine::{Category, Evidence};
use crate::finding::{self, Finding};
use crate::sink::ContainerHandle;
use crate::sys::fs::FileId;

use crate::daemon::hot::report::{self, FileFacts, ProcFacts};

use super::state::*;

impl Shared {
    /// How findings are recorded now.
    pub(super) fn recorder(&self) -> report::Recorder<'_> {
        report::Recorder {
            node: &self.node,
            mode: self.mode.get(),
            max_arg_bytes: self.max_arg_bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether container `c` may have one more full finding recorded now. Beyond its budget,
    /// findings are counted (for the container, in status and metrics) and a line says how
    /// many once it may record again: a flood from one container cannot fill memory, the
    /// spool or the journal, and every exec is still accounted for.
    pub(super) fn may_record(&self, c: &Container) -> bool {
        use crate::sink::ratelimit::Verdict;
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
            Ok(crate::sink::ratelimit::Verdict::Write { suppressed }) => {
                if suppressed > 0 {
                    tracing::warn!(
                        container,
                        suppressed,
                        "earlier warnings about this container were rate-limited"
                    );
                }
                log();
            }
            Ok(crate::sink::ratelimit::Verdict::Suppress) => {}
            Err(_) => log(),
        }
    }

    /// Records the first finding of an aggregation window (`prev`: aggregates of windows its
    /// opening closed, if they had repeats) and asks for the container's metadata if incomplete.
    pub(super) fn send(
        &self,
        c: &Arc<Container>,
        agg_key: &crate::sink::aggregate::AggKey,
        f: Finding,
        prev: Vec<crate::sink::aggregate::Aggregate>,
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
        use crate::engine::Action;
        let ioc = sha.and_then(|h| self.iocs.load().lookup(&h));
        let category =
            if ioc.is_some() { Category::FilelessMaliciousExecution } else { Category::FilelessExecution };
        if let Some(i) = Category::ALL.iter().position(|x| *x == category) {
            self.stats.findings[i].fetch_add(1, Ordering::Relaxed);
        }
        let agg_key = (c.generation, path.clone(), sha, category, Action::Audited);
        if self.aggregator.repeat(&agg_key, crate::util::now_rfc3339)
            || (ioc.is_none() && !self.may_record(c))
        {
            return;
        }
        let facts = ProcFacts::of_running(pid);
        let prev = self.aggregator.open(agg_key.clone());
        let file = FileFacts {
            path,
            sha256: sha,
            size,
            layer: "memfd",
            mount: None,
            image_paths: Vec::new(),
            interpreter: None,
            deleted: false,
        };
        let mut f = report::build(&self.recorder(), c, pid, facts, file, category, Action::Audited);
        f.ioc = ioc.map(|m| finding::IocRef { name: m.name, source: m.source });
        // The memfd the process runs, for the evidence store.
        let exe = self
            .findings
            .keeps_evidence()
            .then(|| std::fs::File::open(format!("/proc/{pid}/exe")).ok().map(std::os::fd::OwnedFd::from))
            .flatten();
        self.send(c, &agg_key, f, prev, exe);
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
        action: crate::engine::Action,
    ) -> Finding {
        let file = FileFacts {
            path: o.path.clone(),
            sha256: o.sha256,
            size: id.size,
            layer: match o.evidence {
                Evidence::ImageFile => "lower",
                Evidence::MountFile => "mount",
                _ => "upper",
            },
            mount: o.mount.as_deref().map(report::mount_ref),
            image_paths: o.image_paths.clone(),
            interpreter: None,
            deleted: o.deleted,
        };
        report::build(&self.recorder(), c, tid, facts, file, category, action)
    }
}
