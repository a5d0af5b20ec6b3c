//! Scoped policy: rules in the configuration, first match wins, each matching on any of
//! Kubernetes namespace, pod name, container name, image reference, runtime, file path (globs),
//! the mount the file is on (mountpoint globs; `/` for the rootfs) and SHA-256, and setting the
//! action for matching execs: `allow` (no finding), `audit` or
//! `enforce`. The global `mode` is the fallback. Pure: facts in, the deciding rule out.
//!
//! Detections beyond drift (`REVERSE_SHELL`, `UNEXPECTED_CHILD_SHELL`) are decided the same
//! way by the first rule that sets `detections`; they are audited when none matches. Rules can
//! also match on the process's session (`sessions = ["exec"]`: a `kubectl exec`, `docker
//! exec` or `nsenter` session; `["init"]`: the container's own processes) and, for a shell,
//! on the program that started it (`shells`, globs on its path or name).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::model::{Evidence, ImageAtPath, Mode};
pub use crate::model::{ImageCopies, RuleAction};

/// One rule as written in TOML (`[[policy.rules]]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    /// What to do with drift this rule matches; a rule may set only `detections`.
    pub action: Option<RuleAction>,
    /// What to do with the detections beyond drift on execs this rule matches.
    pub detections: Option<RuleAction>,
    /// `init` and/or `exec`: the session the process runs in.
    #[serde(default)]
    pub sessions: Vec<String>,
    /// For shells: the programs that started them (globs on the path, or on the name when
    /// the pattern has no `/`). A rule with `shells` matches only shells.
    #[serde(default)]
    pub shells: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub pods: Vec<String>,
    #[serde(default)]
    pub containers: Vec<String>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub runtimes: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub sha256: Vec<String>,
    /// Mountpoints in the container (globs): the mount the executed file (or script) is on.
    /// Files of the rootfs are on `/`.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Overrides `[policy] image_copies` for the execs this rule matches.
    pub image_copies: Option<ImageCopies>,
    /// What to do to the container after an exec this rule matched was blocked.
    pub response: Option<Response>,
}

/// A response to a blocked exec, taken after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Freeze the container's cgroup: its processes stop where they are, for the responder.
    Freeze,
}

impl Response {
    pub fn as_str(self) -> &'static str {
        match self {
            Response::Freeze => "freeze",
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name, or its 1-based index in the file.
    pub name: String,
    /// For drift; `None`: the rule is about detections only.
    pub action: Option<RuleAction>,
    pub detections: Option<RuleAction>,
    sessions: Vec<String>,
    shells: Option<(GlobSet, GlobSet)>,
    namespaces: Option<GlobSet>,
    pods: Option<GlobSet>,
    containers: Option<GlobSet>,
    images: Option<GlobSet>,
    runtimes: Vec<String>,
    paths: Option<GlobSet>,
    sha256: Vec<String>,
    mounts: Option<GlobSet>,
    image_copies: Option<ImageCopies>,
    pub response: Option<Response>,
}

/// Facts about one exec a rule can match on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
    pub container: Option<&'a str>,
    /// The container id: `containers` globs match the name or the id.
    pub container_id: Option<&'a str>,
    pub image: Option<&'a str>,
    pub runtime: &'a str,
    pub path: &'a str,
    pub sha256: Option<&'a str>,
    /// The mountpoint (in the container) of the mount the file is on; `/` for the rootfs.
    pub mount: Option<&'a str>,
    /// `init` or `exec`; `None` when not known (or not asked: no rule needs it).
    pub session: Option<&'a str>,
    /// For the exec of a shell: the program of the process that starts it (its parent's).
    pub shell_parent: Option<&'a str>,
}

/// The sessions a rule can name.
pub const SESSIONS: [&str; 2] = ["init", "exec"];

fn globs(field: &str, pats: &[String], path_like: bool) -> Result<Option<GlobSet>, RuleError> {
    if pats.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for (i, p) in pats.iter().enumerate() {
        let g = GlobBuilder::new(p)
            .literal_separator(path_like)
            .build()
            .map_err(|e| RuleError::new(format!("{field}[{i}]"), e))?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| RuleError::new(field, e))
}

impl Rule {
    /// Compiles rule number `index` (0-based); errors name the field.
    pub fn compile(index: usize, raw: &RawRule) -> Result<Rule, RuleError> {
        let action = raw.action;
        if action.is_none() && raw.detections.is_none() {
            return Err(RuleError::new(
                "action",
                "`action` is required (allow, audit or enforce), or `detections` for a rule about detections only",
            ));
        }
        for (i, v) in raw.sessions.iter().enumerate() {
            if !SESSIONS.contains(&v.as_str()) {
                return Err(RuleError::new(
                    format!("sessions[{i}]"),
                    format!("{v:?} is not a session (init or exec)"),
                ));
            }
        }
        let shells = match (globs("shells", &raw.shells, true)?, raw.shells.is_empty()) {
            (Some(paths), false) => {
                let names: Vec<String> = raw.shells.iter().filter(|p| !p.contains('/')).cloned().collect();
                Some((paths, globs("shells", &names, true)?.unwrap_or_else(GlobSet::empty)))
            }
            _ => None,
        };
        let mut sha256 = Vec::new();
        for (i, h) in raw.sha256.iter().enumerate() {
            if crate::util::parse_sha256(h.as_bytes()).is_none() {
                return Err(RuleError::new(format!("sha256[{i}]"), format!("{h:?} is not a SHA-256")));
            }
            sha256.push(h.to_ascii_lowercase());
        }
        let rule = Rule {
            name: raw.name.clone().unwrap_or_else(|| (index + 1).to_string()),
            action,
            detections: raw.detections,
            sessions: raw.sessions.clone(),
            shells,
            namespaces: globs("namespaces", &raw.namespaces, false)?,
            pods: globs("pods", &raw.pods, false)?,
            containers: globs("containers", &raw.containers, false)?,
            images: globs("images", &raw.images, false)?,
            runtimes: raw.runtimes.clone(),
            paths: globs("paths", &raw.paths, true)?,
            sha256,
            mounts: globs("mounts", &raw.mounts, true)?,
            image_copies: raw.image_copies,
            response: raw.response,
        };
        if rule.response.is_some() && matches!(action, None | Some(RuleAction::Allow)) {
            return Err(RuleError::new("response", "a rule that allows never blocks: a response needs action = \"enforce\" or \"audit\" (IoC blocks)"));
        }
        Ok(rule)
    }

    /// Every matcher the rule sets must match (a list matches if any entry does); a matcher on
    /// a fact that is unknown (no namespace, no image) does not match.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let glob = |set: &Option<GlobSet>, v: Option<&str>| {
            set.as_ref().is_none_or(|g| v.is_some_and(|v| g.is_match(v)))
        };
        glob(&self.namespaces, s.namespace)
            && glob(&self.pods, s.pod)
            && (glob(&self.containers, s.container)
                || (self.containers.is_some() && glob(&self.containers, s.container_id)))
            && glob(&self.images, s.image)
            && glob(&self.paths, Some(s.path))
            && glob(&self.mounts, s.mount)
            && (self.runtimes.is_empty() || self.runtimes.iter().any(|r| r == s.runtime))
            && (self.sha256.is_empty() || s.sha256.is_some_and(|h| self.sha256.iter().any(|r| r == h)))
            && (self.sessions.is_empty() || s.session.is_some_and(|v| self.sessions.iter().any(|r| r == v)))
            && self.shells.as_ref().is_none_or(|(paths, names)| {
                s.shell_parent
                    .is_some_and(|p| paths.is_match(p) || names.is_match(p.rsplit('/').next().unwrap_or(p)))
            })
    }
}

/// A rule that does not compile: the field (`paths[2]`, `action`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

impl RuleError {
    fn new(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        RuleError { field: field.into(), message: message.to_string() }
    }
}

/// The rules, in order.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<Rule>,
    /// `[policy] image_copies`: the default for image content found at another path.
    pub image_copies: ImageCopies,
}

/// Which rule decided, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: RuleAction,
    /// The rule's name, or `global` for the fallback mode.
    pub rule: String,
    pub image_copies: ImageCopies,
    /// The rule's response to a blocked exec.
    pub response: Option<Response>,
}

/// What the first rule that sets `detections` says, or `audit` by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionDecision {
    pub action: RuleAction,
    /// The rule's name, or `detection` for the default.
    pub rule: String,
}

impl Decision {
    /// The action for an exec with `evidence`: the rule's, except that an added file whose
    /// content the image has at other paths (`image_copy`) is allowed when `image_copies` says so.
    pub fn action_for(&self, evidence: Evidence, image_copy: bool) -> RuleAction {
        let copy_allowed = self.image_copies == ImageCopies::Allow
            && image_copy
            && matches!(evidence, Evidence::UpperFile(ImageAtPath::Absent) | Evidence::MountFile);
        if copy_allowed {
            RuleAction::Allow
        } else {
            self.action
        }
    }
}

impl Policy {
    pub fn decide(&self, s: &Subject<'_>, fallback: Mode) -> Decision {
        match self.rules.iter().find_map(|r| r.action.filter(|_| r.matches(s)).map(|a| (r, a))) {
            Some((r, action)) => Decision {
                action,
                rule: r.name.clone(),
                image_copies: r.image_copies.unwrap_or(self.image_copies),
                response: r.response,
            },
            None => self.fallback(fallback),
        }
    }

    /// What to do with a detection beyond drift (a reverse shell, an unexpected shell) on the
    /// exec `s`: the first rule with `detections` that matches, else audit.
    pub fn detection(&self, s: &Subject<'_>) -> DetectionDecision {
        match self.rules.iter().find_map(|r| r.detections.filter(|_| r.matches(s)).map(|a| (r, a))) {
            Some((r, action)) => DetectionDecision { action, rule: r.name.clone() },
            None => DetectionDecision { action: RuleAction::Audit, rule: "detection".into() },
        }
    }

    /// Whether some rule matches on the session, which then must be found for every exec the
    /// rules see.
    pub fn needs_session(&self) -> bool {
        self.rules.iter().any(|r| !r.sessions.is_empty())
    }

    /// The decision when no rule matches: the global mode.
    pub fn fallback(&self, mode: Mode) -> Decision {
        Decision {
            action: mode.into(),
            rule: "global".into(),
            image_copies: self.image_copies,
            response: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(i: usize, f: impl FnOnce(&mut RawRule)) -> Rule {
        let mut r = RawRule::default();
        f(&mut r);
        Rule::compile(i, &r).unwrap()
    }

    #[test]
    fn first_match_wins_and_the_global_mode_is_the_fallback() {
        let p = Policy {
            rules: vec![
                rule(0, |r| {
                    r.name = Some("jit".into());
                    r.action = Some(RuleAction::Allow);
                    r.images = vec!["registry.example/app:*".into()];
                    r.paths = vec!["/var/cache/jit/*".into()];
                }),
                rule(1, |r| {
                    r.action = Some(RuleAction::Enforce);
                    r.namespaces = vec!["payments-*".into()];
                    r.image_copies = Some(ImageCopies::Allow);
                }),
            ],
            image_copies: ImageCopies::Report,
        };
        let base = Subject { runtime: "containerd", path: "/tmp/x", ..Default::default() };
        let jit = Subject { image: Some("registry.example/app:1.2"), path: "/var/cache/jit/a1", ..base };
        assert_eq!(
            p.decide(&jit, Mode::Audit),
            Decision {
                action: RuleAction::Allow,
                rule: "jit".into(),
                image_copies: ImageCopies::Report,
                response: None
            }
        );
        let deeper = Subject { path: "/var/cache/jit/sub/a1", ..jit };
        assert_eq!(p.decide(&deeper, Mode::Audit).rule, "global", "* does not cross / in paths");
        let pay = Subject { namespace: Some("payments-eu"), ..base };
        assert_eq!(
            p.decide(&pay, Mode::Audit),
            Decision {
                action: RuleAction::Enforce,
                rule: "2".into(),
                image_copies: ImageCopies::Allow,
                response: None
            }
        );
        assert_eq!(
            p.decide(&base, Mode::Audit),
            Decision {
                action: RuleAction::Audit,
                rule: "global".into(),
                image_copies: ImageCopies::Report,
                response: None
            }
        );
        assert_eq!(p.decide(&base, Mode::Enforce).action, RuleAction::Enforce);
    }

    #[test]
    fn every_matcher_must_match_and_unknown_facts_do_not() {
        let r = rule(0, |r| {
            r.action = Some(RuleAction::Audit);
            r.runtimes = vec!["docker".into(), "podman".into()];
            r.containers = vec!["web*".into()];
            r.sha256 = vec!["AB".repeat(32)];
        });
        let s = Subject {
            runtime: "docker",
            container: Some("web-1"),
            path: "/x",
            sha256: Some(&"ab".repeat(32)),
            ..Default::default()
        };
        assert!(r.matches(&s));
        assert!(!r.matches(&Subject { runtime: "containerd", ..s }));
        assert!(!r.matches(&Subject { container: None, ..s }), "unknown name");
        assert!(!r.matches(&Subject { sha256: None, ..s }));
        let pods = rule(0, |r| {
            r.action = Some(RuleAction::Audit);
            r.pods = vec!["api-*".into()];
        });
        assert!(!pods.matches(&s));
    }

    #[test]
    fn mounts_match_the_mountpoint_of_the_file_and_the_rootfs_is_slash() {
        let r = rule(0, |r| {
            r.action = Some(RuleAction::Allow);
            r.mounts = vec!["/opt/tools".into(), "/data/*".into()];
        });
        let s = Subject {
            runtime: "docker",
            path: "/opt/tools/x",
            mount: Some("/opt/tools"),
            ..Default::default()
        };
        assert!(r.matches(&s));
        assert!(r.matches(&Subject { mount: Some("/data/a"), ..s }));
        assert!(!r.matches(&Subject { mount: Some("/data/a/b"), ..s }), "* does not cross /");
        assert!(!r.matches(&Subject { mount: Some("/"), ..s }), "a rootfs file");
        assert!(!r.matches(&Subject { mount: None, ..s }));
        let root = rule(0, |r| {
            r.action = Some(RuleAction::Enforce);
            r.mounts = vec!["/".into()];
        });
        assert!(root.matches(&Subject { mount: Some("/"), ..s }));
        let e = Rule::compile(
            0,
            &RawRule { action: Some(RuleAction::Audit), mounts: vec!["/x/[".into()], ..Default::default() },
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("mounts[0]"), "{e}");
    }

    #[test]
    fn image_copies_allow_only_added_files_the_image_has_elsewhere() {
        let d = Decision {
            action: RuleAction::Enforce,
            rule: "r".into(),
            image_copies: ImageCopies::Allow,
            response: None,
        };
        let added = Evidence::UpperFile(ImageAtPath::Absent);
        assert_eq!(d.action_for(added, true), RuleAction::Allow);
        assert_eq!(d.action_for(added, false), RuleAction::Enforce);
        assert_eq!(
            d.action_for(Evidence::UpperFile(ImageAtPath::DifferentContent), true),
            RuleAction::Enforce
        );
        assert_eq!(d.action_for(Evidence::MountFile, true), RuleAction::Allow, "a copy on a volume");
        let report = Decision { image_copies: ImageCopies::Report, ..d };
        assert_eq!(report.action_for(added, true), RuleAction::Enforce);
    }

    #[test]
    fn bad_rules_name_the_field() {
        let e = Rule::compile(0, &RawRule::default()).unwrap_err().to_string();
        assert!(e.contains("action"), "{e}");
        let e = Rule::compile(
            0,
            &RawRule { action: Some(RuleAction::Audit), paths: vec!["/a/[".into()], ..Default::default() },
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("paths[0]"), "{e}");
        let e = Rule::compile(
            0,
            &RawRule { action: Some(RuleAction::Audit), sha256: vec!["abc".into()], ..Default::default() },
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("sha256[0]"), "{e}");
    }

    #[test]
    fn detections_take_the_first_rule_that_sets_them_and_scope_on_sessions_and_shell_parents() {
        let p = Policy {
            rules: vec![
                rule(0, |r| {
                    r.name = Some("debug".into());
                    r.sessions = vec!["exec".into()];
                    r.action = Some(RuleAction::Audit);
                    r.detections = Some(RuleAction::Allow);
                }),
                rule(1, |r| {
                    r.name = Some("web".into());
                    r.shells = vec!["nginx".into(), "/usr/local/bin/*".into()];
                    r.detections = Some(RuleAction::Enforce);
                }),
            ],
            image_copies: ImageCopies::Report,
        };
        let base = Subject { runtime: "docker", path: "/bin/sh", ..Default::default() };
        let d = |s: &Subject<'_>| p.detection(s);
        assert_eq!(d(&base), DetectionDecision { action: RuleAction::Audit, rule: "detection".into() });
        let exec = Subject { session: Some("exec"), shell_parent: Some("/usr/sbin/nginx"), ..base };
        assert_eq!(d(&exec).rule, "debug", "first match");
        let init = Subject { session: Some("init"), ..exec };
        assert_eq!(d(&init).action, RuleAction::Enforce, "by the parent's name");
        let local = Subject { shell_parent: Some("/usr/local/bin/app"), ..init };
        assert_eq!(d(&local).rule, "web", "by its path");
        let deeper = Subject { shell_parent: Some("/usr/local/bin/x/app"), ..init };
        assert_eq!(d(&deeper).rule, "detection", "* does not cross /");
        assert_eq!(d(&Subject { shell_parent: None, ..init }).rule, "detection", "not a shell");
        // Drift is decided by the rules that set `action` only.
        assert_eq!(p.decide(&init, Mode::Enforce).rule, "global");
        assert_eq!(p.decide(&exec, Mode::Enforce).action, RuleAction::Audit);
        assert!(p.needs_session());
        assert!(!Policy { rules: vec![p.rules[1].clone()], ..Default::default() }.needs_session());
        let e = Rule::compile(
            0,
            &RawRule {
                detections: Some(RuleAction::Audit),
                sessions: vec!["ssh".into()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("sessions[0]") && e.contains("init or exec"), "{e}");
        let e = Rule::compile(
            0,
            &RawRule {
                detections: Some(RuleAction::Enforce),
                response: Some(Response::Freeze),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("response"), "{e}");
    }
}
