//! Stage 3: the decision. An [`Outcome`] (what stage 2 found the file to be) and a
//! [`Question`] (whose exec it is, of what kind) go in; a [`Decided`] comes out: the IoC match,
//! the rule, the verdict. The decision itself is [`driftgate_core::engine::judge`].
//!
//! Two things only the held exec can say are asked through [`Held`]: whether the call is an
//! interpreter's `AT_EXECVE_CHECK` (from `/proc`), and whether the file to be allowed can be
//! pinned against writers (`hot/pin.rs`). The hot path answers them from the real event
//! ([`Live`]); the tests below answer them by hand, so the stage runs without root.

use std::sync::Arc;

use driftgate_core::engine::{judge, Describe, Executed, Facts, Judgement, Settings, Verdict};
use driftgate_core::index::ioc::{IocMatch, IocSet};
use driftgate_core::policy::{Decision, Policy};

use super::state::{HashState, Job, Outcome, Shared};
use crate::container::Container;

/// What the decision asks of the held exec, beyond what stage 2 found.
pub trait Held {
    /// Whether the held call is an interpreter's `AT_EXECVE_CHECK` of a script it is about
    /// to run (read from `/proc/<tid>/syscall`).
    fn execve_check(&self) -> bool;
    /// Keeps writers out of the file about to be allowed, checking that it is still the
    /// version decided. `Err` says why its bytes are not settled.
    fn pin(&self) -> Result<(), String>;
    /// What the file is when its hash cannot be trusted, for `reason`.
    fn unhashed(&self, reason: String) -> Outcome;
}

/// The exec, as the rules see it.
#[derive(Clone, Copy)]
pub struct Question<'a> {
    pub container: &'a Container,
    pub executed: Executed,
    /// The file is the exec's own (not what a loader or interpreter runs, not an open):
    /// only then can the call be an `AT_EXECVE_CHECK`.
    pub direct: bool,
    /// The thread waiting in the exec (its session is found when a rule asks for it).
    pub tid: Option<i32>,
}

/// The rules in force for one decision (each swapped whole by a reload).
pub struct Rules {
    pub iocs: Arc<IocSet>,
    pub policy: Arc<Policy>,
    pub settings: Settings,
}

/// Stage 3's output.
pub struct Decided {
    /// What the file is (decided again without its hash when pinning failed).
    pub outcome: Outcome,
    pub ioc: Option<IocMatch>,
    pub verdict: Verdict,
    pub decision: Decision,
    /// The exec was an `AT_EXECVE_CHECK`: decided as a script.
    pub execve_check: bool,
}

impl Rules {
    /// Judges `outcome` once: IoC lookup, then [`judge`].
    pub fn judge(&self, q: &Question<'_>, outcome: &Outcome) -> (Option<IocMatch>, Judgement) {
        // Known-bad content, whatever the path: checked on every decision (also a cached
        // outcome), so an IoC added by a reload applies at once.
        let ioc = outcome.sha256.and_then(|h| self.iocs.lookup(&h));
        let facts = Facts {
            evidence: outcome.evidence,
            executed: q.executed,
            ioc: ioc.is_some(),
            image_copy: !outcome.image_paths.is_empty(),
        };
        let session =
            if self.policy.needs_session() { q.tid.and_then(super::facts::session_now) } else { None };
        let subject = ExecSubject { container: q.container, outcome, session };
        (ioc, judge(&facts, &self.policy, &subject, self.settings))
    }

    /// The whole stage: judge; a finding on the exec's own file asks whether it is an
    /// `AT_EXECVE_CHECK` (a script); an allow pins the file first, and a file whose bytes are
    /// not settled is judged again without its hash.
    pub fn decide(&self, mut q: Question<'_>, mut outcome: Outcome, held: &impl Held) -> Decided {
        let mut d = self.judge(&q, &outcome);
        // Looked at only for drift, so that no other exec pays for reading the call.
        let execve_check = d.1.verdict.finding.is_some() && q.direct && held.execve_check();
        if execve_check {
            q.executed = Executed::Script;
            d = self.judge(&q, &outcome);
        }
        if d.1.verdict.allow {
            // Writers are kept out from here until the kernel denies them itself; a file
            // that is being written or has changed since it was checked is not what was
            // decided, so it is decided again without its hash.
            if let Err(reason) = held.pin() {
                outcome = held.unhashed(reason);
                d = self.judge(&q, &outcome);
            }
        }
        let (ioc, Judgement { verdict, decision }) = d;
        Decided { outcome, ioc, verdict, decision, execve_check }
    }
}

/// [`Held`] for a job of the running daemon: the real event, `/proc` and the pin holder.
pub struct Live<'a> {
    pub shared: &'a Shared,
    pub job: &'a Job,
}

impl Held for Live<'_> {
    fn execve_check(&self) -> bool {
        driftgate_sys::proc::pending_execve_check(self.job.ev.tid())
    }

    fn pin(&self) -> Result<(), String> {
        self.shared.pin_job(self.job)
    }

    fn unhashed(&self, reason: String) -> Outcome {
        self.shared.outcome_for(self.job, HashState::Missing(reason))
    }
}

impl Shared {
    /// The rules in force now.
    pub(super) fn rules(&self) -> Rules {
        use std::sync::atomic::Ordering;
        Rules {
            iocs: self.iocs.load_full(),
            policy: self.policy.load_full(),
            settings: Settings { mode: self.mode.get(), block_iocs: self.block_iocs.load(Ordering::Relaxed) },
        }
    }
}

impl Job {
    /// The job as the rules see it.
    pub(super) fn question(&self) -> Question<'_> {
        Question {
            container: &self.container,
            executed: self.executed(),
            direct: self.target.is_none() && self.open.is_none(),
            tid: Some(self.ev.tid()),
        }
    }
}

/// An exec as the policy sees it, built only when some rule needs it.
struct ExecSubject<'a> {
    container: &'a Container,
    outcome: &'a Outcome,
    /// Found only when a rule matches on sessions.
    session: Option<&'static str>,
}

impl Describe for ExecSubject<'_> {
    fn describe<R>(&self, f: impl FnOnce(&driftgate_core::policy::Subject<'_>) -> R) -> R {
        let path = String::from_utf8_lossy(&self.outcome.path);
        let sha = self.outcome.sha256.map(driftgate_core::util::hex);
        let mount = self.outcome.mount.as_ref().map(|m| String::from_utf8_lossy(&m.mountpoint));
        let exec = driftgate_core::policy::Subject {
            path: &path,
            sha256: sha.as_deref(),
            mount: Some(mount.as_deref().unwrap_or("/")),
            session: self.session,
            ..Default::default()
        };
        self.container.describe(exec, f)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use driftgate_core::config::Config;
    use driftgate_core::engine::{Action, Category, Evidence, ImageAtPath};

    use super::*;

    /// A held exec answered by hand; counts what the stage asked.
    struct Fake {
        execve_check: bool,
        pin: Result<(), String>,
        asked_check: Cell<u32>,
        pinned: Cell<u32>,
    }

    impl Fake {
        fn new(execve_check: bool, pin: Result<(), String>) -> Fake {
            Fake { execve_check, pin, asked_check: Cell::new(0), pinned: Cell::new(0) }
        }
    }

    impl Held for Fake {
        fn execve_check(&self) -> bool {
            self.asked_check.set(self.asked_check.get() + 1);
            self.execve_check
        }
        fn pin(&self) -> Result<(), String> {
            self.pinned.set(self.pinned.get() + 1);
            self.pin.clone()
        }
        fn unhashed(&self, reason: String) -> Outcome {
            Outcome {
                reason: Some(reason),
                ..Outcome::new(Evidence::UpperFile(ImageAtPath::Absent), b"/x".to_vec(), None)
            }
        }
    }

    fn container() -> Container {
        Container::for_test(crate::container::Identity {
            id: "abc".into(),
            runtime: "containerd",
            runtime_namespace: Some("k8s.io".into()),
            storage: None,
        })
    }

    fn rules(config: &str, iocs: &[[u8; 32]]) -> Rules {
        let c = Config::from_toml(config, None).unwrap();
        let entries = iocs.iter().map(|h| (*h, None)).collect();
        Rules {
            iocs: Arc::new(IocSet::build(vec![("test".into(), entries)])),
            policy: Arc::new(c.policy.clone()),
            settings: Settings { mode: c.mode, block_iocs: c.ioc_block },
        }
    }

    fn added(sha: Option<[u8; 32]>) -> Outcome {
        Outcome::new(Evidence::UpperFile(ImageAtPath::Absent), b"/tmp/tool".to_vec(), sha)
    }

    fn image_copy() -> Outcome {
        Outcome::new(Evidence::UpperFile(ImageAtPath::SameContent), b"/bin/sh".to_vec(), Some([1; 32]))
    }

    fn q(c: &Container) -> Question<'_> {
        Question { container: c, executed: Executed::Binary, direct: true, tid: None }
    }

    #[test]
    fn an_added_binary_is_refused_in_enforce_mode_and_nothing_is_pinned() {
        let c = container();
        let held = Fake::new(false, Ok(()));
        let d = rules("mode = \"enforce\"\n", &[]).decide(q(&c), added(Some([2; 32])), &held);
        assert!(!d.verdict.allow);
        assert_eq!(d.verdict.finding, Some((Category::AddedBinaryExecuted, Action::Blocked)));
        assert_eq!((held.asked_check.get(), held.pinned.get(), d.execve_check), (1, 0, false));
        assert_eq!(d.decision.rule, "global");
    }

    #[test]
    fn an_execve_check_is_decided_as_a_script_and_only_drift_asks() {
        let c = container();
        let held = Fake::new(true, Ok(()));
        let d = rules("mode = \"audit\"\n", &[]).decide(q(&c), added(Some([2; 32])), &held);
        assert!(d.execve_check && d.verdict.allow);
        assert_eq!(d.verdict.finding, Some((Category::AddedScriptExecuted, Action::Audited)));
        // The image's own bytes raise no finding, so the call is never read.
        let held = Fake::new(true, Ok(()));
        let d = rules("mode = \"enforce\"\n", &[]).decide(q(&c), image_copy(), &held);
        assert!(d.verdict.allow && d.verdict.finding.is_none() && !d.execve_check);
        assert_eq!((held.asked_check.get(), held.pinned.get()), (0, 1));
        // Nor is it for a loader's or an interpreter's target.
        let held = Fake::new(true, Ok(()));
        let indirect = Question { direct: false, ..q(&c) };
        let d = rules("mode = \"audit\"\n", &[]).decide(indirect, added(None), &held);
        assert!(!d.execve_check);
        assert_eq!(held.asked_check.get(), 0);
    }

    #[test]
    fn a_file_that_cannot_be_pinned_is_decided_again_without_its_hash() {
        let c = container();
        let held = Fake::new(false, Err("not settled: the file was open for writing".into()));
        let d = rules("mode = \"enforce\"\n", &[]).decide(q(&c), image_copy(), &held);
        assert!(!d.verdict.allow, "the image's bytes, unsettled, are not the image's");
        assert_eq!(d.outcome.sha256, None);
        assert_eq!(d.outcome.reason.as_deref(), Some("not settled: the file was open for writing"));
    }

    #[test]
    fn an_ioc_is_matched_whatever_the_path_and_blocked_when_asked() {
        let c = container();
        let bad = [7u8; 32];
        let held = Fake::new(false, Ok(()));
        let d =
            rules("mode = \"audit\"\n[ioc]\nblock = true\n", &[bad]).decide(q(&c), added(Some(bad)), &held);
        assert!(d.ioc.is_some() && !d.verdict.allow);
        let d = rules("mode = \"audit\"\n", &[bad]).decide(q(&c), added(Some(bad)), &held);
        assert!(d.ioc.is_some() && d.verdict.allow && d.verdict.finding.is_some());
    }

    #[test]
    fn a_rule_scoped_to_the_path_decides_before_the_mode() {
        let c = container();
        let held = Fake::new(false, Ok(()));
        let cfg = "mode = \"enforce\"\n[[policy.rules]]\nname = \"tools\"\npaths = [\"/tmp/**\"]\naction = \"audit\"\n";
        let d = rules(cfg, &[]).decide(q(&c), added(None), &held);
        assert_eq!(d.decision.rule, "tools");
        assert!(d.verdict.allow);
    }
}
