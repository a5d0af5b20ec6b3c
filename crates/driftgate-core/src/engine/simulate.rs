//! `policy simulate`: what a candidate policy would have done with recorded findings, decided
//! by the same [`super::judge`] as the daemon's.

use super::{judge, Action, Category, Describe, Evidence, Executed, Facts, ImageAtPath, Mode, Settings};
use crate::finding::Finding;
use crate::policy::{Policy, Subject};

/// What a candidate policy would have done with recorded findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub blocked: u64,
    pub audited: u64,
    pub allowed: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Simulation {
    /// Per (namespace, image): what the candidate would do.
    pub rows: Vec<SimRow>,
    pub total: Counts,
    /// Execs whose outcome differs from what was recorded.
    pub changed: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimRow {
    pub namespace: String,
    pub image: String,
    pub counts: Counts,
}

/// Replays findings (each standing for `count` execs) against `policy` with fallback `mode`.
pub fn simulate(findings: &[Finding], policy: &Policy, mode: Mode, block_iocs: bool) -> Simulation {
    let mut rows: std::collections::BTreeMap<(String, String), Counts> = Default::default();
    let mut sim = Simulation::default();
    let settings = Settings { mode, block_iocs };
    for f in findings {
        let Some(facts) = facts_of(f) else { continue };
        let v = judge(&facts, policy, &Recorded(f), settings).verdict;
        let n = f.count.max(1);
        let c = &f.container;
        let key = (
            c.pod_namespace.clone().unwrap_or_else(|| "-".into()),
            c.image.clone().unwrap_or_else(|| "-".into()),
        );
        let row = rows.entry(key).or_default();
        let (slot, total) = match v.finding {
            None => (&mut row.allowed, &mut sim.total.allowed),
            Some((_, Action::Blocked)) => (&mut row.blocked, &mut sim.total.blocked),
            Some((_, Action::Audited)) => (&mut row.audited, &mut sim.total.audited),
        };
        *slot += n;
        *total += n;
        // Recorded: blocked or audited. Candidate: blocked, audited, or allowed without a finding.
        if v.finding.map(|(_, a)| a) != Some(f.action) {
            sim.changed += n;
        }
    }
    sim.rows =
        rows.into_iter().map(|((namespace, image), counts)| SimRow { namespace, image, counts }).collect();
    sim
}

/// The facts a finding records about its exec; `None` for what no policy decides.
fn facts_of(f: &Finding) -> Option<Facts> {
    let added = match f.file.layer.as_str() {
        "mount" => Evidence::MountFile,
        "unknown" => Evidence::Unverifiable,
        _ => Evidence::UpperFile(ImageAtPath::Absent),
    };
    let modified = Evidence::UpperFile(ImageAtPath::DifferentContent);
    let builtin = if f.file.layer == "lower" {
        Evidence::ImageFile
    } else {
        Evidence::UpperFile(ImageAtPath::SameContent)
    };
    let (evidence, ioc) = match f.category {
        Category::AddedBinaryExecuted | Category::AddedScriptExecuted | Category::AddedLibraryLoaded => {
            (added, false)
        }
        Category::ModifiedBinaryExecuted
        | Category::ModifiedScriptExecuted
        | Category::ModifiedLibraryLoaded => (modified, false),
        Category::AddedMaliciousBinaryExecuted | Category::AddedMaliciousLibraryLoaded => (added, true),
        Category::ModifiedMaliciousBinaryExecuted | Category::ModifiedMaliciousLibraryLoaded => {
            (modified, true)
        }
        Category::BuiltinMaliciousBinaryExecuted | Category::BuiltinMaliciousLibraryLoaded => (builtin, true),
        // Which image content the script was compared with is not recorded: the kind of
        // file decides whether an allow rule applies, and an IoC match is never allowed.
        Category::MaliciousScriptExecuted => (added, true),
        // Recorded after the fact: no policy decided them and none can block them.
        Category::FilelessExecution | Category::FilelessMaliciousExecution | Category::ProtectionTampered => {
            return None
        }
        // Decided by the rules' `detections`, from facts (the session, the parent) that a
        // finding of another category does not carry: not simulated.
        Category::ReverseShell
        | Category::UnexpectedChildShell
        | Category::MaliciousUrlObserved
        | Category::PrivilegedProgramExecuted => return None,
    };
    let executed = if f.category.is_script() {
        Executed::Script
    } else if f.category.is_library() {
        Executed::Library
    } else {
        Executed::Binary
    };
    Some(Facts { evidence, executed, ioc, image_copy: !f.file.image_paths.is_empty() })
}

/// A recorded finding as the policy sees it.
struct Recorded<'a>(&'a Finding);

impl Describe for Recorded<'_> {
    fn describe<R>(&self, f: impl FnOnce(&Subject<'_>) -> R) -> R {
        let r = self.0;
        let c = &r.container;
        f(&Subject {
            namespace: c.pod_namespace.as_deref(),
            pod: c.pod_name.as_deref(),
            container: Some(c.name.as_deref().unwrap_or(&c.id)),
            container_id: Some(&c.id),
            image: c.image.as_deref(),
            runtime: &c.runtime,
            path: &r.file.path,
            sha256: r.file.sha256.as_deref(),
            mount: Some(r.file.mount.as_ref().map_or("/", |m| m.mountpoint.as_str())),
            session: r.process.session.as_deref(),
            shell_parent: None,
        })
    }
}
