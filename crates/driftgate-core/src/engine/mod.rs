//! Pure decision logic: the facts gathered about one exec go in, a verdict comes out.
//!
//! No syscalls, no clock, no files. The daemon gathers [`Evidence`] on the hot path and this
//! module turns it into an answer for the kernel and, maybe, a finding. The rule it enforces:
//! an exec is allowed without a finding only when the bytes being executed are proven to be the
//! image's bytes, either because the executed inode *is* a lower-layer inode, or because its
//! content hash equals the image file's at the same path.

pub mod elf;
pub mod indirect;
pub mod shells;
pub mod simulate;

pub use crate::model::{
    Action, Category, Evidence, Executed, ImageAtPath, ImageCopies, Mode, RuleAction, Severity, Verdict,
};
use crate::policy::{Decision, Policy, Subject};

/// What is known about one exec when it is decided: gathered by the daemon on the hot path, or
/// read back from a recorded finding by `policy simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub evidence: Evidence,
    pub executed: Executed,
    /// The content's SHA-256 is a known IoC.
    pub ioc: bool,
    /// An added file whose content the image has at another path.
    pub image_copy: bool,
}

/// The global settings a decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The fallback when no rule matches.
    pub mode: Mode,
    /// `[ioc] block`: deny IoC matches whatever the mode.
    pub block_iocs: bool,
}

/// The policy's view of an exec, built only when some rule needs it: the daemon's (from the
/// container and the outcome, which costs allocations) and `simulate`'s (from a finding).
pub trait Describe {
    fn describe<R>(&self, f: impl FnOnce(&Subject<'_>) -> R) -> R;
}

/// A decision and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub decision: Decision,
}

/// **The** decision: which rule applies (first match, else the global mode), what it does with
/// these facts (image copies, allow), then the verdict (IoC matches are never allowed). The
/// daemon and `policy simulate` both decide through here.
pub fn judge(facts: &Facts, policy: &Policy, subject: &impl Describe, settings: Settings) -> Judgement {
    let decision = if policy.rules.is_empty() {
        // No rules (the default): the mode decides, and no subject needs building.
        policy.fallback(settings.mode)
    } else {
        subject.describe(|s| policy.decide(s, settings.mode))
    };
    let verdict = decide_scoped(
        decision.action_for(facts.evidence, facts.image_copy),
        facts.evidence,
        facts.executed,
        facts.ioc,
        settings.block_iocs,
    );
    Judgement { verdict, decision }
}

/// Decides one exec under the action a policy rule (or the global mode) chose. `allow` lets
/// drift through without a finding; a known-bad hash is still recorded (and blocked with
/// `block_iocs`): a rule that allows a path does not vouch for malware found there.
fn decide_scoped(
    action: RuleAction,
    evidence: Evidence,
    executed: Executed,
    ioc: bool,
    block_iocs: bool,
) -> Verdict {
    let mode = match action {
        RuleAction::Enforce => Mode::Enforce,
        RuleAction::Audit => Mode::Audit,
        RuleAction::Allow if ioc => Mode::Audit,
        RuleAction::Allow => return Verdict::ALLOW,
    };
    let kind = Kinds::of(executed);
    if ioc {
        let category = match evidence {
            Evidence::NotAContainer | Evidence::NotRegular => return Verdict::ALLOW,
            Evidence::ImageFile | Evidence::UpperFile(ImageAtPath::SameContent) => kind.builtin_bad,
            Evidence::UpperFile(ImageAtPath::Absent | ImageAtPath::LookupFailed)
            | Evidence::MountFile
            | Evidence::Unverifiable => kind.added_bad,
            Evidence::UpperFile(ImageAtPath::DifferentContent | ImageAtPath::PresentUncompared) => {
                kind.modified_bad
            }
        };
        return if mode == Mode::Enforce || block_iocs {
            Verdict { allow: false, finding: Some((category, Action::Blocked)) }
        } else {
            Verdict { allow: true, finding: Some((category, Action::Audited)) }
        };
    }
    let category = match evidence {
        Evidence::NotAContainer | Evidence::NotRegular | Evidence::ImageFile => return Verdict::ALLOW,
        Evidence::UpperFile(ImageAtPath::SameContent) => return Verdict::ALLOW,
        Evidence::UpperFile(ImageAtPath::Absent | ImageAtPath::LookupFailed)
        | Evidence::MountFile
        | Evidence::Unverifiable => kind.added,
        Evidence::UpperFile(ImageAtPath::DifferentContent | ImageAtPath::PresentUncompared) => kind.modified,
    };
    match mode {
        Mode::Audit => Verdict { allow: true, finding: Some((category, Action::Audited)) },
        Mode::Enforce => Verdict { allow: false, finding: Some((category, Action::Blocked)) },
    }
}

/// The categories of one kind of thing run (a program, a script, a library).
struct Kinds {
    added: Category,
    modified: Category,
    added_bad: Category,
    modified_bad: Category,
    builtin_bad: Category,
}

impl Kinds {
    fn of(executed: Executed) -> Kinds {
        use Category::*;
        match executed {
            Executed::Binary => Kinds {
                added: AddedBinaryExecuted,
                modified: ModifiedBinaryExecuted,
                added_bad: AddedMaliciousBinaryExecuted,
                modified_bad: ModifiedMaliciousBinaryExecuted,
                builtin_bad: BuiltinMaliciousBinaryExecuted,
            },
            // Which image content a script was compared with decides nothing: any known-bad
            // script is one category.
            Executed::Script => Kinds {
                added: AddedScriptExecuted,
                modified: ModifiedScriptExecuted,
                added_bad: MaliciousScriptExecuted,
                modified_bad: MaliciousScriptExecuted,
                builtin_bad: MaliciousScriptExecuted,
            },
            Executed::Library => Kinds {
                added: AddedLibraryLoaded,
                modified: ModifiedLibraryLoaded,
                added_bad: AddedMaliciousLibraryLoaded,
                modified_bad: ModifiedMaliciousLibraryLoaded,
                builtin_bad: BuiltinMaliciousLibraryLoaded,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Category::*;
    use Evidence::*;
    use Executed::*;
    use ImageAtPath::*;
    use Mode::*;

    /// The verdict table alone, for a binary under the global mode.
    fn decide(mode: Mode, evidence: Evidence) -> Verdict {
        decide_scoped(mode.into(), evidence, Binary, false, false)
    }

    /// A subject for `judge`: the fields the rules below look at.
    struct At(&'static str, Option<&'static str>);

    impl Describe for At {
        fn describe<R>(&self, f: impl FnOnce(&Subject<'_>) -> R) -> R {
            f(&Subject {
                runtime: "containerd",
                path: self.0,
                namespace: self.1,
                mount: Some("/"),
                ..Default::default()
            })
        }
    }

    #[test]
    fn judge_applies_rules_then_the_verdict_table() {
        use crate::policy::{RawRule, Rule};
        let rule = |i, action, f: &dyn Fn(&mut RawRule)| {
            let mut r = RawRule { action: Some(action), ..Default::default() };
            f(&mut r);
            Rule::compile(i, &r).unwrap()
        };
        let policy = Policy {
            rules: vec![
                rule(0, RuleAction::Allow, &|r| r.paths = vec!["/opt/jit/*".into()]),
                rule(1, RuleAction::Enforce, &|r| r.namespaces = vec!["prod".into()]),
                rule(2, RuleAction::Audit, &|r| r.image_copies = Some(ImageCopies::Allow)),
            ],
            image_copies: ImageCopies::Report,
        };
        let fact = |evidence, ioc, image_copy| Facts { evidence, executed: Binary, ioc, image_copy };
        let audit = Settings { mode: Audit, block_iocs: false };
        let enforce = Settings { mode: Enforce, block_iocs: false };
        let audited = |c| Verdict { allow: true, finding: Some((c, Audited)) };
        let blocked = |c| Verdict { allow: false, finding: Some((c, Blocked)) };
        let added = UpperFile(Absent);
        #[rustfmt::skip]
        let table: &[(Facts, At, Settings, Verdict, &str)] = &[
            // An allow rule: drift passes silently, known malware does not.
            (fact(added, false, false), At("/opt/jit/a", None), enforce, Verdict::ALLOW, "1"),
            (fact(added, true, false), At("/opt/jit/a", None), enforce, audited(AddedMaliciousBinaryExecuted), "1"),
            (fact(added, true, false), At("/opt/jit/a", None), Settings { block_iocs: true, ..audit }, blocked(AddedMaliciousBinaryExecuted), "1"),
            // An enforce rule in an audit-mode node.
            (fact(added, false, false), At("/tmp/x", Some("prod")), audit, blocked(AddedBinaryExecuted), "2"),
            (fact(ImageFile, false, false), At("/bin/sh", Some("prod")), audit, Verdict::ALLOW, "2"),
            // image_copies = allow on the last rule (which matches everything).
            (fact(added, false, true), At("/tmp/sh", None), enforce, Verdict::ALLOW, "3"),
            (fact(UpperFile(DifferentContent), false, true), At("/bin/sh", None), enforce, audited(ModifiedBinaryExecuted), "3"),
            (fact(MountFile, false, false), At("/data/x", None), enforce, audited(AddedBinaryExecuted), "3"),
        ];
        for (facts, at, settings, want, rule) in table {
            let j = judge(facts, &policy, at, *settings);
            assert_eq!((j.verdict, j.decision.rule.as_str()), (*want, *rule), "{facts:?} at {}", at.0);
        }
        // No rules: the global mode, and no subject is built.
        struct Never;
        impl Describe for Never {
            fn describe<R>(&self, _: impl FnOnce(&Subject<'_>) -> R) -> R {
                panic!("no rule needs a subject")
            }
        }
        let none = Policy::default();
        let j = judge(&fact(added, false, false), &none, &Never, enforce);
        assert_eq!((j.verdict, j.decision.rule.as_str()), (blocked(AddedBinaryExecuted), "global"));
        assert_eq!(judge(&fact(added, false, false), &none, &Never, audit).verdict, decide(Audit, added));
    }

    #[test]
    fn shared_objects_opened_have_the_library_categories() {
        let (a, e) = (RuleAction::Audit, RuleAction::Enforce);
        let audited = |c| Verdict { allow: true, finding: Some((c, Audited)) };
        let blocked = |c| Verdict { allow: false, finding: Some((c, Blocked)) };
        #[rustfmt::skip]
        let table: &[(RuleAction, Evidence, bool, bool, Verdict)] = &[
            (e, UpperFile(Absent), false, false, blocked(AddedLibraryLoaded)),
            (a, UpperFile(Absent), false, false, audited(AddedLibraryLoaded)),
            (e, MountFile, false, false, blocked(AddedLibraryLoaded)),
            (a, UpperFile(DifferentContent), false, false, audited(ModifiedLibraryLoaded)),
            (e, UpperFile(PresentUncompared), false, false, blocked(ModifiedLibraryLoaded)),
            // A copy-up of the image's own library (chmod, touch) and the image's library itself.
            (e, UpperFile(SameContent), false, false, Verdict::ALLOW),
            (e, ImageFile, false, false, Verdict::ALLOW),
            (a, MountFile, true, false, audited(AddedMaliciousLibraryLoaded)),
            (a, UpperFile(DifferentContent), true, true, blocked(ModifiedMaliciousLibraryLoaded)),
            (a, ImageFile, true, false, audited(BuiltinMaliciousLibraryLoaded)),
            (e, UpperFile(SameContent), true, false, blocked(BuiltinMaliciousLibraryLoaded)),
            // An allow rule (a plugin directory) lets drift through, never known malware.
            (RuleAction::Allow, MountFile, false, false, Verdict::ALLOW),
            (RuleAction::Allow, MountFile, true, false, audited(AddedMaliciousLibraryLoaded)),
        ];
        for &(action, ev, ioc, block, want) in table {
            assert_eq!(decide_scoped(action, ev, Library, ioc, block), want, "{action:?} {ev:?} ioc={ioc}");
        }
        assert!(AddedLibraryLoaded.is_library() && !AddedBinaryExecuted.is_library());
        assert_eq!(AddedLibraryLoaded.severity(), Severity::Medium);
        assert_eq!(BuiltinMaliciousLibraryLoaded.severity(), Severity::Critical);
        assert_eq!(
            Category::parse("MODIFIED_MALICIOUS_LIBRARY_LOADED"),
            Some(ModifiedMaliciousLibraryLoaded)
        );
    }

    #[test]
    fn decision_table() {
        let allow = Verdict::ALLOW;
        let audited = |c| Verdict { allow: true, finding: Some((c, Audited)) };
        let blocked = |c| Verdict { allow: false, finding: Some((c, Blocked)) };
        let table: &[(Mode, Evidence, Verdict)] = &[
            (Audit, NotAContainer, allow),
            (Enforce, NotAContainer, allow),
            (Enforce, NotRegular, allow),
            (Audit, ImageFile, allow),
            (Enforce, ImageFile, allow),
            (Audit, UpperFile(SameContent), allow),
            (Enforce, UpperFile(SameContent), allow),
            (Audit, UpperFile(Absent), audited(AddedBinaryExecuted)),
            (Enforce, UpperFile(Absent), blocked(AddedBinaryExecuted)),
            (Audit, UpperFile(LookupFailed), audited(AddedBinaryExecuted)),
            (Enforce, UpperFile(LookupFailed), blocked(AddedBinaryExecuted)),
            (Audit, UpperFile(DifferentContent), audited(ModifiedBinaryExecuted)),
            (Enforce, UpperFile(DifferentContent), blocked(ModifiedBinaryExecuted)),
            (Audit, UpperFile(PresentUncompared), audited(ModifiedBinaryExecuted)),
            (Enforce, UpperFile(PresentUncompared), blocked(ModifiedBinaryExecuted)),
            (Audit, MountFile, audited(AddedBinaryExecuted)),
            (Enforce, MountFile, blocked(AddedBinaryExecuted)),
        ];
        for &(mode, ev, want) in table {
            assert_eq!(decide(mode, ev), want, "mode {mode:?}, evidence {ev:?}");
        }
    }

    #[test]
    fn scripts_given_to_image_interpreters_have_their_own_categories() {
        use RuleAction::{Allow, Audit as A, Enforce as E};
        let audited = |c| Verdict { allow: true, finding: Some((c, Audited)) };
        let blocked = |c| Verdict { allow: false, finding: Some((c, Blocked)) };
        let table: &[(RuleAction, Evidence, bool, bool, Verdict)] = &[
            (E, ImageFile, false, false, Verdict::ALLOW),
            (E, UpperFile(SameContent), false, false, Verdict::ALLOW),
            (E, UpperFile(Absent), false, false, blocked(AddedScriptExecuted)),
            (A, UpperFile(Absent), false, false, audited(AddedScriptExecuted)),
            (E, MountFile, false, false, blocked(AddedScriptExecuted)),
            (E, UpperFile(DifferentContent), false, false, blocked(ModifiedScriptExecuted)),
            (A, UpperFile(LookupFailed), false, false, audited(AddedScriptExecuted)),
            (A, UpperFile(Absent), true, false, audited(MaliciousScriptExecuted)),
            (A, ImageFile, true, true, blocked(MaliciousScriptExecuted)),
            (Allow, MountFile, false, false, Verdict::ALLOW),
            (Allow, MountFile, true, false, audited(MaliciousScriptExecuted)),
        ];
        for &(action, ev, ioc, block, want) in table {
            assert_eq!(decide_scoped(action, ev, Script, ioc, block), want, "{action:?} {ev:?} ioc={ioc}");
        }
        assert_eq!(AddedScriptExecuted.severity(), Severity::Low);
        assert_eq!(ModifiedScriptExecuted.severity(), Severity::Medium);
        assert_eq!(MaliciousScriptExecuted.severity(), Severity::Critical);
        assert_eq!(FilelessExecution.severity(), Severity::High);
        assert_eq!(FilelessExecution.as_str(), "FILELESS_EXECUTION");
        assert!(AddedScriptExecuted.is_script() && !AddedBinaryExecuted.is_script());
    }

    #[test]
    fn allow_rules_let_drift_through_but_not_known_malware() {
        assert_eq!(decide_scoped(RuleAction::Allow, UpperFile(Absent), Binary, false, false), Verdict::ALLOW);
        assert_eq!(
            decide_scoped(RuleAction::Allow, UpperFile(Absent), Binary, true, false),
            Verdict { allow: true, finding: Some((AddedMaliciousBinaryExecuted, Audited)) }
        );
        assert!(!decide_scoped(RuleAction::Allow, UpperFile(Absent), Binary, true, true).allow);
        assert_eq!(
            decide_scoped(RuleAction::Enforce, UpperFile(Absent), Binary, false, false),
            decide(Enforce, UpperFile(Absent))
        );
        assert_eq!(
            decide_scoped(RuleAction::Audit, UpperFile(DifferentContent), Binary, false, false),
            decide(Audit, UpperFile(DifferentContent))
        );
    }

    #[test]
    fn ioc_matches_are_critical_and_blockable_in_audit_mode() {
        let table: &[(Mode, Evidence, bool, Verdict)] = &[
            (
                Audit,
                UpperFile(Absent),
                false,
                Verdict { allow: true, finding: Some((AddedMaliciousBinaryExecuted, Audited)) },
            ),
            (
                Audit,
                UpperFile(Absent),
                true,
                Verdict { allow: false, finding: Some((AddedMaliciousBinaryExecuted, Blocked)) },
            ),
            (
                Enforce,
                UpperFile(Absent),
                false,
                Verdict { allow: false, finding: Some((AddedMaliciousBinaryExecuted, Blocked)) },
            ),
            (
                Audit,
                UpperFile(DifferentContent),
                true,
                Verdict { allow: false, finding: Some((ModifiedMaliciousBinaryExecuted, Blocked)) },
            ),
            (
                Audit,
                UpperFile(SameContent),
                false,
                Verdict { allow: true, finding: Some((BuiltinMaliciousBinaryExecuted, Audited)) },
            ),
            (
                Enforce,
                ImageFile,
                false,
                Verdict { allow: false, finding: Some((BuiltinMaliciousBinaryExecuted, Blocked)) },
            ),
            (Enforce, NotAContainer, true, Verdict::ALLOW),
        ];
        for &(mode, ev, block, want) in table {
            assert_eq!(
                decide_scoped(mode.into(), ev, Binary, true, block),
                want,
                "{mode:?} {ev:?} block={block}"
            );
        }
        for c in
            [AddedMaliciousBinaryExecuted, ModifiedMaliciousBinaryExecuted, BuiltinMaliciousBinaryExecuted]
        {
            assert_eq!(c.severity(), Severity::Critical);
        }
        assert_eq!(
            decide_scoped(Audit.into(), UpperFile(Absent), Binary, false, true),
            decide(Audit, UpperFile(Absent))
        );
    }

    #[test]
    fn categories_have_contract_names_and_severities() {
        assert_eq!(AddedBinaryExecuted.as_str(), "ADDED_BINARY_EXECUTED");
        assert_eq!(AddedBinaryExecuted.severity(), Severity::Low);
        assert_eq!(ModifiedBinaryExecuted.as_str(), "MODIFIED_BINARY_EXECUTED");
        assert_eq!(ModifiedBinaryExecuted.severity(), Severity::Medium);
        let ids: std::collections::HashSet<&str> = Category::ALL.iter().map(|c| c.message_id()).collect();
        assert_eq!(ids.len(), Category::ALL.len(), "message ids are distinct");
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert_eq!(c.message_id().len(), 32);
            assert!(c.message_id().bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(serde_json::to_string(&AddedBinaryExecuted).unwrap(), "\"ADDED_BINARY_EXECUTED\"");
        assert_eq!(serde_json::to_string(&Blocked).unwrap(), "\"blocked\"");
    }

    #[test]
    fn mode_parses_only_known_names() {
        assert_eq!("audit".parse::<Mode>(), Ok(Audit));
        assert_eq!("enforce".parse::<Mode>(), Ok(Enforce));
        assert!("Enforce".parse::<Mode>().is_err());
    }
}
