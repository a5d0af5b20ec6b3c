//! `driftgate status`: ask the running daemon over its root-only socket.

use std::path::PathBuf;

use super::common::CliError;

use crate::daemon::socket::query;
use crate::daemon::status::Status;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// The daemon's status socket [default: the configured one, /run/driftgate/driftgate.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the status as one JSON object (schema driftgate.status.v1)
    #[arg(long)]
    pub json: bool,
    /// Print every counter and gauge as the metrics endpoint names them (`name{label} value`),
    /// read from the status: for a node whose `[metrics]` endpoint is off
    #[arg(long, conflicts_with = "json")]
    pub metrics: bool,
    /// Print every field of the report's groups with what it counts, one per line
    /// (`/pointer value  doc`), as the daemon declares them
    #[arg(long, conflicts_with_all = ["json", "metrics"])]
    pub fields: bool,
}

pub fn run(a: StatusArgs) -> Result<(), CliError> {
    let socket = match a.socket {
        Some(s) => s,
        None => match a.config.load() {
            Ok(c) => c.socket,
            Err(e) => return Err(e),
        },
    };
    match query(&socket) {
        Ok(s) if a.json => {
            println!("{}", serde_json::to_string(&s).expect("status serializes"));
            Ok(())
        }
        Ok(s) if a.metrics => {
            print!("{}", counters(&s));
            Ok(())
        }
        Ok(s) if a.fields => {
            print!("{}", fields(&s));
            Ok(())
        }
        Ok(s) => {
            print!("{}", render(&s));
            Ok(())
        }
        Err(e) => Err(CliError::Failure(format!("no daemon answered on {}: {e}", socket.display()))),
    }
}

/// Every declared metric's samples from `s`, one `name{label="value"} value` line each.
pub fn counters(s: &Status) -> String {
    let json = serde_json::to_value(s).expect("status serializes");
    let mut o = String::new();
    for m in crate::daemon::counters::METRICS {
        for (label, v) in m.samples(s, &json) {
            let labels = m.label.map_or(String::new(), |k| format!("{{{k}=\"{label}\"}}"));
            o += &format!("{}{labels} {v}\n", m.name);
        }
    }
    o
}

/// Every field of the status groups as declared (`daemon::status::GROUPS`): its JSON pointer,
/// its value and its doc, one line each.
pub fn fields(s: &Status) -> String {
    use serde_json::Value;
    let json = serde_json::to_value(s).expect("status serializes");
    let mut o = String::new();
    for g in crate::daemon::status::GROUPS {
        for f in g.fields {
            let p = g.pointer(f.name);
            let v = match json.pointer(&p) {
                Some(Value::String(t)) => driftgate_core::util::printable(t.as_bytes()),
                Some(Value::Array(a)) => format!("[{} entries]", a.len()),
                Some(Value::Null) | None => "-".into(),
                Some(v) => v.to_string(),
            };
            let doc = f.doc.split_whitespace().collect::<Vec<_>>().join(" ");
            o += &format!("{p:<34} {v:<14} {doc}\n");
        }
    }
    o
}

pub fn render(s: &Status) -> String {
    use driftgate_core::util::printable;
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.0}"));
    let mut o = format!(
        "driftgate {} (pid {}), mode {}, node {}, up {}s since {}\n",
        s.version, s.pid, s.mode, s.node, s.uptime_secs, s.started
    );
    o += &format!("health: {}\n", if s.health.state.is_empty() { "ok" } else { &s.health.state });
    for r in &s.health.reasons {
        o += &format!("  DEGRADED: {}\n", printable(r.as_bytes()));
    }
    for c in s.health.syscalls.iter().filter(|c| !c.ok()) {
        o += &format!("  {} refused: {}; {}\n", c.call, printable(c.state.as_bytes()), c.effect);
    }
    o += &format!(
        "decisions: {} exec events, {} allowed, {} denied, {} in flight, {} answers failed, {} allowed by an error path; image proofs {} (+{} cached), hashed {}, hash-cache hits {}, not a container {}\n",
        s.decisions.events,
        s.decisions.allowed,
        s.decisions.denied,
        s.decisions.in_flight,
        s.decisions.answer_errors,
        s.daemon.implicit_allows,
        s.decisions.image_fast,
        s.decisions.image_cached,
        s.decisions.hashed,
        s.decisions.hash_cache_hits,
        s.decisions.not_container
    );
    o += &format!(
        "loaders and interpreters: {} execs looked at ({} call unreadable, {} argument not found, {} not invoked directly, {} unverifiable: decided as drift)\n",
        s.decisions.indirect,
        s.decisions.indirect_unread,
        s.decisions.indirect_unresolved,
        s.decisions.indirect_not_direct,
        s.decisions.indirect_unverifiable
    );
    o += &format!(
        "URL and domain indicators: {} execs' arguments looked at ({} call unreadable: not checked)\n",
        s.decisions.url_checks, s.decisions.url_unread
    );
    o += &format!(
        "decision latency (us): p50 {} p90 {} p99 {} p99.9 {} over {} decisions\n",
        opt(s.latency_us.p50),
        opt(s.latency_us.p90),
        opt(s.latency_us.p99),
        opt(s.latency_us.p999),
        s.latency_us.count
    );
    o += "findings:";
    for (k, v) in &s.findings {
        o += &format!(" {k}={v}");
    }
    o += "\n";
    o += &format!(
        "spool {}: {} bytes in {} segments; {} recorded, {} write errors (lost), {} dropped, {} segments deleted by retention\n",
        s.spool.dir, s.spool.bytes, s.spool.segments, s.spool.recorded, s.spool.write_errors, s.spool.dropped, s.spool.deleted_segments
    );
    o += &format!(
        "journal: {} findings not taken by journald (all in the spool), {} rate-limited; {} log lines dropped; spool directory re-made {} times\n",
        s.spool.journald_errors, s.spool.journal_suppressed, s.spool.log_lines_dropped, s.spool.recreated
    );
    o += &format!(
        "IoC entries: {}; indexed layers: {}; reloads: {} ({} failed)\n",
        s.ioc_entries.map_or("-".into(), |v| v.to_string()),
        s.indexed_layers.map_or("-".into(), |v| v.to_string()),
        s.daemon.reloads,
        s.daemon.reload_errors
    );
    if s.daemon.stalled_ms > 0 {
        o += &format!(
            "decisions STALLED for {} ms with execs held (the watchdog ends the daemon at stall_timeout)\n",
            s.daemon.stalled_ms
        );
    }
    if let Some(i) = &s.index {
        o += &format!(
            "layer index: {} layers indexed on this node ({} files, {} MB hashed), {} imported layers in use of {} available, {} pending, {} changed on disk, {} failed; {} image hashes from manifests\n",
            i.node_layers,
            i.indexed_files,
            i.indexed_bytes / 1_000_000,
            i.imported_matched,
            i.imported_available,
            i.pending,
            i.changed,
            i.failures,
            i.manifest_hashes
        );
    }
    let l = &s.limits;
    o += &format!(
        "limits: {} open files, {} execs may wait for hashing; decided without a hash: {} over budget, {} too big, {} too slow to read, {} waited too long in the queue, {} no reader ({} readers busy), {} layer lookups failed; {} findings counted not recorded; {} event read errors\n",
        l.nofile, l.pending_limit, l.over_budget, l.too_big, l.hash_timeouts, l.queue_timeouts, l.hash_unavailable, l.readers_busy,
        l.lookup_errors, l.findings_suppressed, l.read_errors
    );
    let w = &s.writer_hold;
    o += &format!(
        "writers held off: {} ms after each allowed exec; {} files held now ({} leased, {} renewed, {} over the cap, {} without a lease); {} execs found being written; {} breaks left by writers that gave up cleared\n",
        w.hold_ms, w.held, w.kept, w.renewed, w.cut, w.unsupported, w.unsettled, w.breaks_cleared
    );
    let cv = &s.coverage;
    o += &format!(
        "mounts beyond the rootfs: {}; {} namespaces, {} mounts marked, {} could not be marked; {} execs from them\n",
        if cv.mounts_enabled { "watched" } else { "not watched ([mounts] enabled = false)" },
        cv.mount_namespaces,
        cv.mounts_marked,
        cv.mounts_failed,
        cv.mount_execs
    );
    o += &format!(
        "fileless execution: vm.memfd_noexec={} in containers; process-event connector {} ({} execs seen, {} lost, {} from a memfd)\n",
        cv.memfd_noexec, cv.fileless_audit, cv.exec_events, cv.exec_events_lost, cv.memfd_execs
    );
    let lb = &s.libraries;
    o += &format!(
        "libraries: {}; {} open events, {} inodes ignored from then on ({} refused), {} shared objects decided, {} an exec's own, {} the daemon's own, {} being written, {} by a refused exec's thread, {} let through over the budget, {} interpreter code decided, {} Python caches of image sources; {} ignored inodes checked again\n",
        match (lb.marked, lb.enabled) {
            (true, true) => "decided",
            (true, false) => "let through ([libraries] enabled = false, reloaded)",
            _ => "not watched ([libraries] enabled = false)",
        },
        lb.open_events,
        lb.ignore_marks,
        lb.ignore_errors,
        lb.decided,
        lb.by_exec,
        lb.by_daemon,
        lb.being_written,
        lb.after_refused_exec,
        lb.over_budget,
        lb.code_decided,
        lb.code_cache,
        lb.rechecked
    );
    let k = &s.kernel;
    o += &format!(
        "kernel layer (BPF LSM): {}; {} uses checked, {} refused, {} reported, {} reports lost; {} reports read ({} of no known container); maps: {} root filesystems, {} PID namespaces, {} cgroups, {} mounts, {} file versions allowed\n",
        if k.state.is_empty() { "-" } else { &k.state },
        k.checked,
        k.refused,
        k.reported,
        k.lost,
        k.events,
        k.unattributed,
        k.rootfs,
        k.pid_namespaces,
        k.cgroups,
        k.mounts,
        k.files_allowed
    );
    let ev = &s.evidence;
    o += &if ev.enabled {
        format!(
            "evidence: {} copies, {} of {} bytes in {}; {} stored, {} already stored, {} too big, {} lost, {} evicted\n",
            ev.files, ev.bytes, ev.max_total_bytes, ev.dir, ev.stored, ev.already_stored, ev.too_big, ev.lost, ev.evicted
        )
    } else {
        format!("evidence: off (no copies kept; {})\n", ev.dir)
    };
    let x = &s.export;
    if let Some(f) = &x.ocsf_file {
        o += &format!("export: OCSF to {f}: {} written, {} errors\n", x.ocsf_written, x.ocsf_errors);
    }
    if let Some(w) = &x.webhook {
        o += &format!(
            "export: webhook {w} ({}): {} sent, {} failed tries, {} given up, {} dropped (queue full), {} queued\n",
            x.webhook_format.as_deref().unwrap_or("driftgate"),
            x.webhook_sent,
            x.webhook_failures,
            x.webhook_given_up,
            x.webhook_dropped,
            x.webhook_queued
        );
    }
    if let Some(endpoint) = &x.otlp {
        o += &format!(
            "export: OTLP to {endpoint}: {} sent, {} failed tries, {} given up, {} dropped (queue full), {} queued\n",
            x.otlp_sent, x.otlp_failures, x.otlp_given_up, x.otlp_dropped, x.otlp_queued
        );
    }
    for f in &s.frozen {
        o += &format!(
            "FROZEN: container {} (cgroup {}) since {} after finding {}; `driftgate thaw {}` undoes it\n",
            printable(f.id.as_bytes()),
            f.cgroup,
            f.since,
            f.finding,
            printable(f.id.as_bytes())
        );
    }
    if !s.unwatched.is_empty() {
        o += &format!("containers NOT watched (execs in them are not checked): {}\n", s.unwatched.len());
        for u in &s.unwatched {
            o += &format!(
                "  {:<12} {:<14} {}: {}\n",
                u.runtime,
                printable(u.id.as_bytes()).chars().take(12).collect::<String>(),
                printable(u.rootfs.as_bytes()),
                printable(u.error.as_bytes())
            );
        }
    }
    o += &format!("containers watched: {}\n", s.containers.len());
    if !s.containers.is_empty() {
        o += &format!(
            "  {:<12} {:<14} {:<24} {:<28} {:<7} SINCE\n",
            "RUNTIME", "ID", "NAME", "IMAGE", "INDEXED"
        );
        for c in &s.containers {
            let id: String = printable(c.id.as_bytes()).chars().take(12).collect();
            o += &format!(
                "  {:<12} {:<14} {:<24} {:<28} {:<7} {}\n",
                c.runtime,
                id,
                c.name.as_deref().map(|n| printable(n.as_bytes())).unwrap_or_else(|| "-".into()),
                c.image.as_deref().map(|n| printable(n.as_bytes())).unwrap_or_else(|| "-".into()),
                format!("{}/{}", c.indexed_layers, c.layers),
                c.since
            );
            if c.mount_namespaces == 0 && cv.mounts_enabled {
                o += "      mounts: namespace not found yet (no process of the container seen)\n";
            }
            if !c.memfd_noexec.is_empty() {
                o += &format!("      vm.memfd_noexec: {}\n", c.memfd_noexec.join(", "));
            }
            for m in &c.mounts {
                o += &format!(
                    "      mount {} ({}, {}): {}\n",
                    printable(m.mountpoint.as_bytes()),
                    m.fstype,
                    printable(m.source.as_bytes()),
                    m.state
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Gives every number in `v` (not inside lists) its own value, remembering where it went.
    fn number_all(v: &mut Value, at: String, next: &mut u64, out: &mut Vec<(String, u64)>) {
        match v {
            Value::Number(_) => {
                *next += 1;
                *v = Value::from(*next);
                out.push((at, *next));
            }
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    number_all(x, format!("{at}/{k}"), next, out);
                }
            }
            _ => {}
        }
    }

    /// Numbers the text shows in another form, and the form.
    const SHOWN_OTHERWISE: &[(&str, &str)] = &[("/index/indexed_bytes", "in MB")];

    #[test]
    fn fields_lists_every_declared_field_with_its_value_and_doc() {
        let s = Status { index: Some(Default::default()), ..Default::default() };
        let text = fields(&s);
        let declared: usize = crate::daemon::status::GROUPS.iter().map(|g| g.fields.len()).sum();
        assert_eq!(text.lines().count(), declared, "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("/decisions/denied ") && l.ends_with("Execs refused.")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("/reloads ")),
            "top-level fields have no group in their pointer"
        );
    }

    /// With `daemon::counters`' test (every status count is a metric, every metric reads the
    /// status), a count added to the status reaches the metrics and this text, or a test fails.
    #[test]
    fn the_text_shows_every_number_of_the_status() {
        let mut s = Status {
            index: Some(Default::default()),
            ioc_entries: Some(0),
            indexed_layers: Some(0),
            ..Default::default()
        };
        s.evidence.enabled = true;
        s.export.ocsf_file = Some("/var/log/driftgate/ocsf.json".into());
        s.export.webhook = Some("https://siem.example/in".into());
        s.export.otlp = Some("https://collector:4317 (grpc)".into());
        s.latency_us.p50 = Some(0.0);
        s.latency_us.p90 = Some(0.0);
        s.latency_us.p99 = Some(0.0);
        s.latency_us.p999 = Some(0.0);
        s.findings.insert("ADDED_BINARY_EXECUTED".into(), 0);
        let mut json = serde_json::to_value(&s).unwrap();
        // Six digits each: no value is part of another.
        let (mut next, mut numbers) = (100_000, Vec::new());
        number_all(&mut json, String::new(), &mut next, &mut numbers);
        let s: Status = serde_json::from_value(json).unwrap();
        let text = render(&s);
        let missing: Vec<&String> = numbers
            .iter()
            .filter(|(p, v)| !text.contains(&v.to_string()) && !SHOWN_OTHERWISE.iter().any(|(x, _)| x == p))
            .map(|(p, _)| p)
            .collect();
        assert!(missing.is_empty(), "status numbers the text does not show: {missing:?}\n{text}");
    }
}
