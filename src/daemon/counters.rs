//! Every metric family the daemon exports: its name, help text, kind and label. The samples
//! of most come from the status report's groups (`status.rs`), where each counter is declared
//! once with the family and label value that export it; the rest are worked out from the
//! whole report. Metrics are read from the same snapshot `status` shows, and neither can have
//! a counter the other lacks (the tests below check both ways). `metrics.rs` encodes this
//! table; nothing else names a metric.

use serde_json::Value;

use super::status::{Status, GROUPS};

/// Counter (monotonic; the encoder adds `_total`) or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Where a metric's samples come from.
pub enum Source {
    /// The status fields declared with this family (`=> "family" "label value"` in a
    /// `status_group!`), each the sample of one label value (`""` without a label).
    Groups,
    /// Each entry of the status object at this pointer: its key is the label value.
    Map(&'static str),
    /// Worked out from the whole report (lengths, states), with the status fields it reads.
    Derived(fn(&Status) -> Vec<(String, f64)>, &'static [&'static str]),
}

pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub label: Option<&'static str>,
    pub source: Source,
}

impl Metric {
    /// The samples (label value, value) from a status report and its JSON.
    pub fn samples(&self, s: &Status, json: &Value) -> Vec<(String, f64)> {
        let num = |p: &str| json.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
        match &self.source {
            Source::Groups => self.fields().into_iter().map(|(l, p)| (l.to_owned(), num(&p))).collect(),
            Source::Map(p) => json
                .pointer(p)
                .and_then(Value::as_object)
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0))).collect())
                .unwrap_or_default(),
            Source::Derived(f, _) => f(s),
        }
    }

    /// The status fields declared with this family: (label value, JSON pointer).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        GROUPS
            .iter()
            .flat_map(|g| g.fields.iter().map(move |f| (g, f)))
            .filter_map(|(g, f)| {
                f.metric.filter(|(m, _)| *m == self.name).map(|(_, l)| (l, g.pointer(f.name)))
            })
            .collect()
    }

    /// The status fields (JSON pointers) it reads.
    pub fn reads(&self) -> Vec<String> {
        match &self.source {
            Source::Groups => self.fields().into_iter().map(|(_, p)| p).collect(),
            Source::Map(p) => vec![(*p).to_owned()],
            Source::Derived(_, ps) => ps.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

const fn counter(
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    source: Source,
) -> Metric {
    Metric { name, help, kind: Kind::Counter, label, source }
}

const fn gauge(
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    source: Source,
) -> Metric {
    Metric { name, help, kind: Kind::Gauge, label, source }
}

fn one(v: bool) -> f64 {
    f64::from(u8::from(v))
}

/// The metrics, in the order they are exported (the latency histogram follows them).
pub static METRICS: &[Metric] = &[
    counter(
        "driftgate_decisions_total",
        "Exec decisions by answer.",
        Some("action"),
        Source::Groups,
    ),
    counter(
        "driftgate_findings_total",
        "Findings by category (before aggregation).",
        Some("category"),
        Source::Map("/findings"),
    ),
    counter(
        "driftgate_hash_cache_hits_total",
        "Executed files whose hash was cached.",
        None,
        Source::Groups,
    ),
    counter("driftgate_hash_cache_misses_total", "Executed files hashed.", None, Source::Groups),
    counter(
        "driftgate_image_proofs_total",
        "Execs proven to be image files (fast path), by cache.",
        Some("cached"),
        Source::Groups,
    ),
    counter(
        "driftgate_findings_recorded_total",
        "Findings durably written to the spool.",
        None,
        Source::Groups,
    ),
    counter(
        "driftgate_findings_lost_total",
        "Findings not written to the spool (write errors, full queue).",
        Some("reason"),
        Source::Groups,
    ),
    counter(
        "driftgate_mount_execs_total",
        "Execs from containers' mounts other than the rootfs (volumes, tmpfs, /dev/shm).",
        None,
        Source::Groups,
    ),
    counter(
        "driftgate_open_events_total",
        "Open events ([libraries]) by how they were settled: harmless inodes ignored from then on, shared objects decided, an exec's own open, the daemon's own, files being written, interpreter code decided, compiled Python caching an image source.",
        Some("outcome"),
        Source::Groups,
    ),
    counter(
        "driftgate_evidence_total",
        "Findings' files by what the evidence store did with them: stored, already stored, too big, lost (changed before the copy, errors, queue full), evicted.",
        Some("outcome"),
        Source::Groups,
    ),
    gauge("driftgate_evidence_bytes", "Bytes in the evidence store.", None, Source::Groups),
    counter(
        "driftgate_webhook_total",
        "Findings and tries of the [export] webhook: sent, failed tries, given up after the last try, dropped (queue full).",
        Some("outcome"),
        Source::Groups,
    ),
    counter(
        "driftgate_otlp_total",
        "Findings and tries of [export.otlp]: sent, failed tries, given up after the last try, dropped (queue full).",
        Some("outcome"),
        Source::Groups,
    ),
    gauge(
        "driftgate_frozen_containers",
        "Containers frozen by a rule's response and not thawed.",
        None,
        Source::Derived(|s| vec![(String::new(), s.frozen.len() as f64)], &["/frozen"]),
    ),
    counter(
        "driftgate_open_events_read_total",
        "Open events read from the kernel ([libraries]); warm containers should add almost none.",
        None,
        Source::Groups,
    ),
    counter(
        "driftgate_indirect_execs_total",
        "Execs of image loaders and interpreters whose argument was looked at, by outcome.",
        Some("outcome"),
        Source::Groups,
    ),
    counter(
        "driftgate_url_checks_total",
        "Execs whose arguments were matched against the IoC lists' URLs and domains, by outcome.",
        Some("outcome"),
        Source::Groups,
    ),
    counter(
        "driftgate_process_exec_events_total",
        "Exec events from the kernel's process-event connector (fileless execution record).",
        Some("result"),
        Source::Groups,
    ),
    counter(
        "driftgate_container_mounts_total",
        "Container mounts beyond the rootfs, by whether they could be marked.",
        Some("marked"),
        Source::Groups,
    ),
    counter(
        "driftgate_findings_suppressed_total",
        "Findings counted but not recorded: a container over findings.container_per_sec.",
        None,
        Source::Groups,
    ),
    counter(
        "driftgate_unverified_total",
        "Execs decided without their file's hash, by why.",
        Some("reason"),
        Source::Groups,
    ),
    counter(
        "driftgate_writer_holds_total",
        "Allowed execs by what keeping writers out of their file did: a new hold, a renewed one, none (over the cap, no lease on that filesystem), or a file found being written or changed (decided without its hash).",
        Some("result"),
        Source::Groups,
    ),
    counter(
        "driftgate_reloads_total",
        "Configuration reloads.",
        Some("result"),
        Source::Groups,
    ),
    counter(
        "driftgate_errors_total",
        "Errors by kind.",
        Some("kind"),
        Source::Groups,
    ),
    gauge(
        "driftgate_containers_watched",
        "Container root filesystems marked.",
        None,
        Source::Derived(|s| vec![(String::new(), s.containers.len() as f64)], &["/containers"]),
    ),
    gauge(
        "driftgate_containers_unwatched",
        "Container root filesystems found but not marked (their execs are not checked); retried on every scan.",
        None,
        Source::Derived(|s| vec![(String::new(), s.unwatched.len() as f64)], &["/unwatched"]),
    ),
    gauge("driftgate_events_in_flight", "Execs held and not answered yet.", None, Source::Groups),
    gauge(
        "driftgate_decisions_stalled_seconds",
        "Seconds decisions have made no progress while execs were held (0 while they progress); the watchdog ends the daemon at stall_timeout, and the kernel then lets the held execs through.",
        None,
        Source::Derived(|s| vec![(String::new(), s.daemon.stalled_ms as f64 / 1000.0)], &["/stalled_ms"]),
    ),
    gauge("driftgate_spool_bytes", "Bytes in the findings spool.", None, Source::Groups),
    gauge(
        "driftgate_files_held",
        "Allowed files writers are kept out of now.",
        None,
        Source::Groups,
    ),
    gauge(
        "driftgate_coverage_degraded",
        "1 while some check cannot run (driftgate status: health.reasons): a refused system call, an unwatched container, an unmarked mount, an unreadable exec, an unset vm.memfd_noexec, a problem within the last 10 minutes.",
        None,
        Source::Derived(|s| vec![(String::new(), one(s.health.state == "degraded"))], &["/health/state"]),
    ),
    counter(
        "driftgate_coverage_problems_total",
        "Checks that could not run, by kind.",
        Some("kind"),
        Source::Derived(
            |s| {
                super::health::Problem::ALL
                    .iter()
                    .map(|p| {
                        let n = s.health.problems.iter().find(|x| x.kind == p.as_str()).map_or(0, |x| x.count);
                        (p.as_str().to_owned(), n as f64)
                    })
                    .collect()
            },
            &["/health/problems"],
        ),
    ),
    gauge(
        "driftgate_syscall_refused",
        "1 for a system call refused here (a seccomp filter, a missing capability, an old kernel), as tried at start-up.",
        Some("call"),
        Source::Derived(
            |s| s.health.syscalls.iter().map(|c| (c.call.clone(), one(!c.ok()))).collect(),
            &["/health/syscalls"],
        ),
    ),
    gauge(
        "driftgate_kernel_layer",
        "1 while the BPF LSM layer verifies at the moment of use (driftgate status: kernel.state says why not).",
        None,
        Source::Derived(|s| vec![(String::new(), one(s.kernel.state == "on"))], &["/kernel/state"]),
    ),
    gauge(
        "driftgate_containers_guarded",
        "Watched containers by the layers that guard them.",
        Some("guard"),
        Source::Derived(
            |s| {
                ["kernel+fanotify", "fanotify"]
                    .iter()
                    .map(|g| (g.to_string(), s.containers.iter().filter(|c| c.guard.guard == *g).count() as f64))
                    .collect()
            },
            &["/containers"],
        ),
    ),
    gauge(
        "driftgate_containers_with_hole",
        "Watched containers with each hole that remains (what is not checked at the moment of use).",
        Some("hole"),
        Source::Derived(
            |s| {
                super::kernel::status::HOLES
                    .iter()
                    .map(|(text, key)| {
                        let n = s.containers.iter().filter(|c| c.guard.holes.iter().any(|h| h == text)).count();
                        (key.to_string(), n as f64)
                    })
                    .collect()
            },
            &["/containers"],
        ),
    ),
    counter(
        "driftgate_kernel_uses_total",
        "Uses the BPF LSM layer checked, refused, reported, and reports lost.",
        Some("outcome"),
        Source::Groups,
    ),
    counter(
        "driftgate_exec_events_total",
        "Exec events read from the kernel (each held until answered), and those from no watched container (answered at once).",
        Some("container"),
        Source::Groups,
    ),
    counter(
        "driftgate_memfd_execs_total",
        "Execs of memfds (fileless) the daemon decided.",
        None,
        Source::Groups,
    ),
    gauge(
        "driftgate_mount_namespaces",
        "Container mount namespaces known (their mounts marked).",
        None,
        Source::Groups,
    ),
    gauge("driftgate_evidence_files", "Files in the evidence store.", None, Source::Groups),
    counter(
        "driftgate_ocsf_file_total",
        "Findings appended to the [export] OCSF file, and those that could not be.",
        Some("outcome"),
        Source::Groups,
    ),
    gauge(
        "driftgate_export_queued",
        "Findings waiting in each export's queue.",
        Some("export"),
        Source::Groups,
    ),
    gauge(
        "driftgate_kernel_map_entries",
        "Entries in the BPF LSM layer's maps: container root filesystems, PID namespaces, cgroups, mounts, and file versions decided.",
        Some("map"),
        Source::Groups,
    ),
    counter(
        "driftgate_kernel_reports_total",
        "Reports read from the BPF LSM layer, and those about no container the daemon knows.",
        Some("attributed"),
        Source::Groups,
    ),
    counter(
        "driftgate_libraries_rechecked_total",
        "Ignored inodes switched back on because their file may have changed ([libraries]).",
        None,
        Source::Groups,
    ),
    gauge(
        "driftgate_hash_readers_busy",
        "Hashing readers busy now (one stuck on a file that never returns its data stays busy).",
        None,
        Source::Groups,
    ),
    gauge("driftgate_spool_segments", "Segment files in the findings spool.", None, Source::Groups),
    counter(
        "driftgate_spool_segments_deleted_total",
        "Spool segments deleted by retention (max_bytes, max_age).",
        None,
        Source::Groups,
    ),
    counter(
        "driftgate_journal_suppressed_total",
        "Findings not written to the journal by its per-container rate limit (all are in the spool).",
        None,
        Source::Groups,
    ),
    gauge(
        "driftgate_enforce_mode",
        "1 in enforce mode, 0 in audit mode.",
        None,
        Source::Derived(|s| vec![(String::new(), one(s.mode == "enforce"))], &["/mode"]),
    ),
    gauge(
        "driftgate_index_layers",
        "Layers by what the index knows of them: indexed on this node, imported manifests available, layers of watched containers using one, waiting to be indexed.",
        Some("state"),
        Source::Groups,
    ),
    counter("driftgate_index_files_total", "Files indexed on this node.", None, Source::Groups),
    counter("driftgate_index_bytes_total", "Bytes hashed to index layers on this node.", None, Source::Groups),
    counter(
        "driftgate_index_layer_events_total",
        "Layers found changed on disk since they were indexed (then indexed again), and layers that could not be indexed.",
        Some("event"),
        Source::Groups,
    ),
    counter(
        "driftgate_manifest_hashes_total",
        "Image-file hashes taken from layer manifests on the hot path instead of reading the file.",
        None,
        Source::Groups,
    ),
];

/// The one metric that is not read from the status report: the decision-latency histogram
/// (its buckets are the hot path's own; `status` shows its percentiles, `/latency_us`).
pub const LATENCY: (&str, &str) =
    ("driftgate_decision_latency_seconds", "Time from reading an exec event to answering it.");

/// Numbers in the status report that are not metrics, and why: identity, configuration and
/// limits rather than counts, or shown there in another form.
pub const STATUS_ONLY: &[(&str, &str)] = &[
    ("/pid", "the daemon's identity"),
    ("/uptime_secs", "process_start_time is the scraper's"),
    ("/latency_us", "the latency histogram's percentiles"),
    ("/limits/nofile", "a limit, not a count"),
    ("/limits/pending_limit", "a limit, not a count"),
    ("/evidence/max_total_bytes", "a setting"),
    ("/writer_hold/hold_ms", "a setting"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON pointers of the numbers in `v` (not inside lists: per-container and per-problem
    /// entries are reported through their metrics' own derivations).
    fn numbers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Number(_) => out.push(at),
            Value::Object(o) => {
                for (k, x) in o {
                    numbers(x, format!("{at}/{k}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_metric_reads_what_status_has_and_every_status_count_is_a_metric() {
        let status = Status { index: Some(Default::default()), ..Default::default() };
        let json = serde_json::to_value(&status).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for m in METRICS {
            assert!(names.insert(m.name), "{} declared twice", m.name);
            assert!(m.name.starts_with("driftgate_") && !m.help.is_empty());
            assert_eq!(m.kind == Kind::Counter, m.name.ends_with("_total"), "{}", m.name);
            for p in m.reads() {
                assert!(json.pointer(&p).is_some(), "{} reads {p}, which status does not have", m.name);
            }
            let samples = m.samples(&status, &json);
            if m.label.is_none() {
                assert_eq!(samples.len(), 1, "{}", m.name);
            }
        }
        let read: Vec<String> = METRICS.iter().flat_map(|m| m.reads()).collect();
        let mut leaves = Vec::new();
        numbers(&json, String::new(), &mut leaves);
        let missing: Vec<&String> = leaves
            .iter()
            .filter(|l| {
                let covered = |p: &str| l.as_str() == p || l.starts_with(&format!("{p}/"));
                !read.iter().any(|p| covered(p)) && !STATUS_ONLY.iter().any(|(p, _)| covered(p))
            })
            .collect();
        assert!(missing.is_empty(), "status counts that no metric exports (declare them in METRICS, or in STATUS_ONLY with why): {missing:?}");
    }

    #[test]
    fn every_declared_counter_names_a_family_that_takes_it_once() {
        let mut seen = std::collections::BTreeSet::new();
        for g in GROUPS {
            for f in g.fields {
                assert!(!f.doc.trim().is_empty(), "{}: say what it counts", g.pointer(f.name));
                let Some((family, label)) = f.metric else { continue };
                let m = METRICS.iter().find(|m| m.name == family);
                let m =
                    m.unwrap_or_else(|| panic!("{} names {family}, which METRICS lacks", g.pointer(f.name)));
                assert!(matches!(m.source, Source::Groups), "{family} is not read from the groups");
                assert_eq!(
                    m.label.is_some(),
                    !label.is_empty(),
                    "{}: label {label:?} of {family}",
                    g.pointer(f.name)
                );
                assert!(seen.insert((family, label)), "{family}{{{label}}} is declared twice");
            }
        }
        for m in METRICS.iter().filter(|m| matches!(m.source, Source::Groups)) {
            assert!(!m.fields().is_empty(), "{} has no status field declared with it", m.name);
        }
    }
}
