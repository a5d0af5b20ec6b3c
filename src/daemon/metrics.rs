//! Prometheus metrics, off by default (`[metrics] listen = "127.0.0.1:9464"` or a unix socket
//! path). One endpoint, `GET /metrics`, in the text exposition format. Written by hand (a
//! minimal HTTP/1.1 responder) because a full HTTP server stack for one read-only document
//! would be most of the daemon's dependency tree.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::status::Sources;

/// The exposition text.
pub fn render(src: &Sources) -> String {
    let s = src.snapshot();
    let mut o = String::with_capacity(4096);
    let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    counter(
        "driftgate_decisions_total",
        "Exec decisions by answer.",
        &[("{action=\"allow\"}", s.decisions.allowed), ("{action=\"deny\"}", s.decisions.denied)],
    );
    let cats: Vec<(String, u64)> =
        s.findings.iter().map(|(k, v)| (format!("{{category=\"{k}\"}}"), *v)).collect();
    let cat_refs: Vec<(&str, u64)> = cats.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    counter("driftgate_findings_total", "Findings by category (before aggregation).", &cat_refs);
    counter(
        "driftgate_hash_cache_hits_total",
        "Executed files whose hash was cached.",
        &[("", s.decisions.hash_cache_hits)],
    );
    counter("driftgate_hash_cache_misses_total", "Executed files hashed.", &[("", s.decisions.hashed)]);
    counter(
        "driftgate_image_proofs_total",
        "Execs proven to be image files (fast path), by cache.",
        &[("{cached=\"false\"}", s.decisions.image_fast), ("{cached=\"true\"}", s.decisions.image_cached)],
    );
    counter(
        "driftgate_findings_recorded_total",
        "Findings durably written to the spool.",
        &[("", s.spool.recorded)],
    );
    counter(
        "driftgate_findings_lost_total",
        "Findings not written to the spool (write errors, full queue).",
        &[("{reason=\"spool_write\"}", s.spool.write_errors), ("{reason=\"queue_full\"}", s.spool.dropped)],
    );
    counter(
        "driftgate_mount_execs_total",
        "Execs from containers' mounts other than the rootfs (volumes, tmpfs, /dev/shm).",
        &[("", s.coverage.mount_execs)],
    );
    counter(
        "driftgate_indirect_execs_total",
        "Execs of image loaders and interpreters whose argument was looked at, by outcome.",
        &[
            ("{outcome=\"looked_at\"}", s.decisions.indirect),
            ("{outcome=\"call_unreadable\"}", s.decisions.indirect_unread),
            ("{outcome=\"argument_not_found\"}", s.decisions.indirect_unresolved),
            ("{outcome=\"not_direct\"}", s.decisions.indirect_not_direct),
        ],
    );
    counter(
        "driftgate_process_exec_events_total",
        "Exec events from the kernel's process-event connector (fileless execution record).",
        &[("{result=\"read\"}", s.coverage.exec_events), ("{result=\"lost\"}", s.coverage.exec_events_lost)],
    );
    counter(
        "driftgate_container_mounts_total",
        "Container mounts beyond the rootfs, by whether they could be marked.",
        &[("{marked=\"true\"}", s.coverage.mounts_marked), ("{marked=\"false\"}", s.coverage.mounts_failed)],
    );
    counter(
        "driftgate_findings_suppressed_total",
        "Findings counted but not recorded: a container over findings.container_per_sec.",
        &[("", s.limits.findings_suppressed)],
    );
    counter(
        "driftgate_unverified_total",
        "Execs decided without their file's hash, by why.",
        &[
            ("{reason=\"budget\"}", s.limits.over_budget),
            ("{reason=\"too_big\"}", s.limits.too_big),
            ("{reason=\"timeout\"}", s.limits.hash_timeouts),
            ("{reason=\"queue_timeout\"}", s.limits.queue_timeouts),
            ("{reason=\"no_reader\"}", s.limits.hash_unavailable),
        ],
    );
    counter(
        "driftgate_writer_holds_total",
        "Allowed execs by what keeping writers out of their file did: a new hold, a renewed one, none (over the cap, no lease on that filesystem), or a file found being written or changed (decided without its hash).",
        &[
            ("{result=\"kept\"}", s.writer_hold.kept),
            ("{result=\"renewed\"}", s.writer_hold.renewed),
            ("{result=\"cut\"}", s.writer_hold.cut),
            ("{result=\"unsupported\"}", s.writer_hold.unsupported),
            ("{result=\"unsettled\"}", s.writer_hold.unsettled),
        ],
    );
    counter(
        "driftgate_reloads_total",
        "Configuration reloads.",
        &[("{result=\"ok\"}", s.reloads), ("{result=\"error\"}", s.reload_errors)],
    );
    counter(
        "driftgate_errors_total",
        "Errors by kind.",
        &[
            ("{kind=\"answer\"}", s.decisions.answer_errors),
            ("{kind=\"journald\"}", s.spool.journald_errors),
            ("{kind=\"log_dropped\"}", s.spool.log_lines_dropped),
            ("{kind=\"spool_recreated\"}", s.spool.recreated),
            ("{kind=\"implicit_allow\"}", s.implicit_allows),
        ],
    );
    let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        &mut o,
        "driftgate_containers_watched",
        "Container root filesystems marked.",
        s.containers.len() as u64,
    );
    gauge(
        &mut o,
        "driftgate_containers_unwatched",
        "Container root filesystems found but not marked (their execs are not checked); retried on every scan.",
        s.unwatched.len() as u64,
    );
    gauge(&mut o, "driftgate_events_in_flight", "Execs held and not answered yet.", s.decisions.in_flight);
    gauge(&mut o, "driftgate_spool_bytes", "Bytes in the findings spool.", s.spool.bytes);
    gauge(&mut o, "driftgate_files_held", "Allowed files writers are kept out of now.", s.writer_hold.held);
    gauge(
        &mut o,
        "driftgate_enforce_mode",
        "1 in enforce mode, 0 in audit mode.",
        u64::from(s.mode == "enforce"),
    );
    let h = &src.hot.latency;
    let _ = writeln!(
        o,
        "# HELP driftgate_decision_latency_seconds Time from reading an exec event to answering it.\n\
         # TYPE driftgate_decision_latency_seconds histogram"
    );
    // Every fourth bucket (powers of two) keeps the series count modest.
    for (i, (upper_us, cum)) in h.cumulative().into_iter().enumerate() {
        if i % 4 == 0 {
            let _ =
                writeln!(o, "driftgate_decision_latency_seconds_bucket{{le=\"{}\"}} {cum}", upper_us / 1e6);
        }
    }
    let _ = writeln!(o, "driftgate_decision_latency_seconds_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(o, "driftgate_decision_latency_seconds_sum {}", h.sum_us() as f64 / 1e6);
    let _ = writeln!(o, "driftgate_decision_latency_seconds_count {}", h.count());
    o
}

fn respond(mut conn: impl Read + Write, src: &Sources) {
    let mut buf = [0u8; 2048];
    let n = conn.read(&mut buf).unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if req.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
        ("200 OK", render(src))
    } else {
        ("404 Not Found", "only GET /metrics is served\n".to_owned())
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves `GET /metrics` on `listen` (host:port, or an absolute unix socket path) until `stop`.
pub fn serve(listen: &str, src: Arc<Sources>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    enum L {
        Tcp(std::net::TcpListener),
        Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
    }
    let l = if listen.starts_with('/') {
        let p = std::path::PathBuf::from(listen);
        let _ = std::fs::remove_file(&p);
        let u = std::os::unix::net::UnixListener::bind(&p)?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
        u.set_nonblocking(true)?;
        L::Unix(u, p)
    } else {
        let t = std::net::TcpListener::bind(listen)?;
        t.set_nonblocking(true)?;
        L::Tcp(t)
    };
    std::thread::Builder::new().name("driftgate-metrics".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let served = match &l {
                L::Tcp(t) => t.accept().map(|(c, _)| {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    respond(c, &src)
                }),
                L::Unix(u, _) => u.accept().map(|(c, _)| {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    respond(c, &src)
                }),
            };
            if served.is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let L::Unix(_, p) = &l {
            let _ = std::fs::remove_file(p);
        }
    })
}
