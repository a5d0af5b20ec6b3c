//! The listeners a configuration measures: none, the floor, driftgate, fapolicyd; each a
//! process of its own, stopped with SIGTERM.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::{setup, BenchError};
use crate::fixture::Containers;
use driftgate_core::engine::Mode;
use driftgate_sys::fanotify::PermGroup;
use driftgate_sys::fs::open_dir_readable;

/// What a configuration listens with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ListenerKind {
    None,
    Floor,
    /// The daemon, with layer indexing on or off, and an IoC set of this many generated
    /// hashes (none: 0).
    Driftgate {
        mode: Mode,
        index: bool,
        iocs: usize,
        /// A rule that allows the trusted volume at /vol.
        allow_vol: bool,
        /// The kernel layer (BPF LSM) where the kernel has it (`[kernel] enabled = "auto"`), or
        /// off: the `*-kernel-off` configurations measure it side by side.
        kernel: bool,
        /// `[libraries]` on (opens decided): the `*-libraries` configurations.
        libraries: bool,
    },
    Fapolicyd,
}

impl ListenerKind {
    /// The daemon as installed: default configuration.
    pub(crate) const fn driftgate(mode: Mode) -> ListenerKind {
        ListenerKind::Driftgate {
            mode,
            index: true,
            iocs: 0,
            allow_vol: false,
            kernel: true,
            libraries: false,
        }
    }

    /// The same configuration with the kernel layer off.
    pub(crate) const fn without_kernel_layer(self) -> ListenerKind {
        match self {
            ListenerKind::Driftgate { mode, index, iocs, allow_vol, libraries, .. } => {
                ListenerKind::Driftgate { mode, index, iocs, allow_vol, kernel: false, libraries }
            }
            other => other,
        }
    }

    /// The same configuration with `[libraries]` on.
    pub(crate) const fn with_libraries(self) -> ListenerKind {
        match self {
            ListenerKind::Driftgate { mode, index, iocs, allow_vol, kernel, .. } => {
                ListenerKind::Driftgate { mode, index, iocs, allow_vol, kernel, libraries: true }
            }
            other => other,
        }
    }
}

/// Where the benchmark's daemons keep the kernel layer's maps (removed when it ends).
pub(crate) const BENCH_PIN_DIR: &str = "/sys/fs/bpf/driftgate-bench";

/// A daemon configuration (see [`ListenerKind::Driftgate`]).
pub(crate) struct Daemon {
    pub(crate) mode: Mode,
    pub(crate) index: bool,
    pub(crate) iocs: usize,
    pub(crate) allow_vol: bool,
    pub(crate) kernel: bool,
    pub(crate) libraries: bool,
}

/// A running listener.
pub(crate) enum Listener {
    None,
    Process { child: Child, name: &'static str, binds: Vec<PathBuf> },
}

impl Listener {
    pub(crate) fn start(
        kind: ListenerKind,
        c: &Containers,
        driftgate: &Path,
        extra: &str,
    ) -> Result<Listener, BenchError> {
        match kind {
            ListenerKind::None => Ok(Listener::None),
            ListenerKind::Floor => {
                // A process of its own, started like driftgate: same scheduling, same CPU pin.
                let log_path = c.root().join("floor.log");
                let log = std::fs::File::create(&log_path).map_err(setup("floor log"))?;
                let child = driftgate_sys::process::unblock_signals_in_child(&mut Command::new(driftgate))
                    .args(["bench", "floor"])
                    .args(c.merged.iter().flat_map(|m| [std::ffi::OsStr::new("--mark"), m.as_os_str()]))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(setup("start floor listener"))?;
                let l = Listener::Process { child, name: "floor", binds: Vec::new() };
                l.wait_log(&log_path, "floor ready")?;
                Ok(l)
            }
            ListenerKind::Driftgate { mode, index, iocs, allow_vol, kernel, libraries } => Self::driftgate(
                Daemon { mode, index, iocs, allow_vol, kernel, libraries },
                c,
                driftgate,
                extra,
            ),
            ListenerKind::Fapolicyd => fapolicyd::start(c),
        }
    }

    pub(crate) fn driftgate(
        d: Daemon,
        c: &Containers,
        driftgate: &Path,
        extra: &str,
    ) -> Result<Listener, BenchError> {
        let Daemon { mode, index, iocs, allow_vol, kernel, libraries } = d;
        let root = c.root();
        let name = format!(
            "{}-{}-{iocs}-{allow_vol}-{kernel}-{libraries}",
            mode.as_str(),
            if index { "index" } else { "bare" }
        );
        let cfg = root.join(format!("driftgate-{name}.toml"));
        // Each configuration has its own state: an index persisted by another does
        // not help this one.
        let state = root.join(format!("state-{name}"));
        let mut knowledge = format!("[index]\nenabled = {index}\n");
        if iocs > 0 {
            let feed = root.join(format!("feed-{iocs}.txt"));
            if !feed.exists() {
                super::ioc::write_feed(&feed, iocs).map_err(setup("write IoC feed"))?;
            }
            knowledge.push_str(&format!("[ioc]\npaths = [{:?}]\n", feed.display().to_string()));
        }
        if allow_vol {
            knowledge
                .push_str("[[policy.rules]]\nname = \"tools\"\naction = \"allow\"\nmounts = [\"/vol\"]\n");
        }
        if libraries {
            knowledge.push_str("[libraries]\nenabled = true\n");
        }
        // The kernel layer is never left pinned by a benchmark: it would go on checking execs in
        // the configurations measured after this one.
        knowledge.push_str(&format!(
            "[kernel]\nenabled = {:?}\npersist = false\npin_dir = {:?}\n",
            if kernel { "auto" } else { "off" },
            BENCH_PIN_DIR
        ));
        let base = format!(
            "mode = {:?}\nstate_dir = {:?}\n[spool]\ndir = {:?}\n[discovery]\noverlay_globs = [{:?}]\n\
             [discovery.containerd]\nenabled = false\n[discovery.docker]\nenabled = false\n\
             [discovery.podman]\nenabled = false\n[discovery.crio]\nenabled = false\n\
             [journald]\nenabled = false\n[daemon]\nsocket = {:?}\n{knowledge}",
            mode.as_str(),
            state.display().to_string(),
            root.join("spool").display().to_string(),
            c.glob(),
            root.join("driftgate.sock").display().to_string(),
        );
        std::fs::write(&cfg, with_extra(&base, extra)?).map_err(setup("write config"))?;
        let log_path = root.join("driftgate.log");
        let log = std::fs::File::create(&log_path).map_err(setup("daemon log"))?;
        let child = driftgate_sys::process::unblock_signals_in_child(&mut Command::new(driftgate))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("DRIFTGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(setup("start driftgate"))?;
        let l = Listener::Process { child, name: "driftgate", binds: Vec::new() };
        l.wait_log(&log_path, "driftgate ready")?;
        if index {
            // Measured with the image's layers indexed (and the IoC set loaded).
            l.wait_log(&log_path, "layer indexed")?;
        }
        if iocs > 0 {
            l.wait_log(&log_path, "IoC set loaded")?;
        }
        Ok(l)
    }

    pub(crate) fn wait_log(&self, log_path: &Path, needle: &str) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(log_path) {
                let _ = f.read_to_string(&mut text);
            }
            if text.contains(needle) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::Setup(format!("listener not ready: {text}")));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn pid(&self) -> Option<i32> {
        match self {
            Listener::Process { child, .. } => Some(child.id() as i32),
            _ => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        match self {
            Listener::None => {}
            Listener::Process { child, name, binds } => {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
                let start = Instant::now();
                let mut stopped = false;
                while start.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = child.try_wait() {
                        stopped = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !stopped {
                    eprintln!("bench: {name} did not stop on SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                }
                // Bind mounts made in the benchmark's private mount namespace.
                for b in binds.drain(..) {
                    let _ = nix::mount::umount2(&b, nix::mount::MntFlags::MNT_DETACH);
                }
                // The kernel layer's maps (its program went with the daemon: not persisted).
                if *name == "driftgate" {
                    let _ = std::fs::remove_dir_all(BENCH_PIN_DIR);
                }
            }
        }
    }
}

/// The `floor` listener, run as its own process (`driftgate bench floor --mark DIR...`) so it
/// is started, scheduled and pinned exactly like driftgate and fapolicyd: marks the
/// filesystems of `dirs`, allows every exec, until SIGTERM or SIGINT. Prints `floor ready` on
/// stderr once marked.
pub fn floor(dirs: &[PathBuf]) -> Result<(), BenchError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(setup("sigprocmask"))?;
    let sig = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(setup("signalfd"))?;
    let group = PermGroup::new().map_err(setup("fanotify_init"))?;
    for m in dirs {
        let dirfd = open_dir_readable(m).map_err(setup("open merged"))?;
        group.mark_filesystem(dirfd.as_fd()).map_err(setup("fanotify_mark"))?;
    }
    eprintln!("floor ready");
    loop {
        let mut fds =
            [PollFd::new(group.as_fd(), PollFlags::POLLIN), PollFd::new(sig.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::NONE);
        while let Ok(evs) = group.read() {
            if evs.is_empty() {
                break;
            }
            for ev in evs {
                let _ = ev.answer(true);
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(());
        }
    }
}

/// The benchmark's configuration with the user's (`--daemon-toml`) merged in: the user's keys
/// win, tables merge key by key, and arrays of tables (`[[policy.rules]]`) are appended.
pub fn with_extra(base: &str, extra: &str) -> Result<String, BenchError> {
    if extra.trim().is_empty() {
        return Ok(base.to_string());
    }
    let mut b: toml::Table = base.parse().map_err(|e| BenchError::Setup(format!("bench config: {e}")))?;
    let x: toml::Table = extra.parse().map_err(|e| BenchError::Setup(format!("--daemon-toml: {e}")))?;
    merge_toml(&mut b, x);
    toml::to_string(&b).map_err(|e| BenchError::Setup(format!("bench config: {e}")))
}

fn merge_toml(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_toml(a, b),
            (Some(toml::Value::Array(a)), toml::Value::Array(b))
                if a.iter().chain(b.iter()).all(|v| v.is_table()) =>
            {
                a.extend(b)
            }
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

pub fn fapolicyd_path() -> Option<PathBuf> {
    ["/usr/sbin/fapolicyd", "/sbin/fapolicyd", "/usr/bin/fapolicyd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Debian's fapolicyd with allow-all rules, as a comparison listener.
pub(crate) mod fapolicyd {
    use super::*;

    /// fapolicyd marks every overlay mount it sees. The benchmark therefore moves itself into
    /// a private mount namespace first: fapolicyd, started from there, sees copies of the
    /// host's mounts whose marks only catch execs made through those copies, that is, the
    /// benchmark's own. Its configuration directories are bind-mounted over in that namespace
    /// so the host's (possibly default, deny-everything) configuration is never used.
    pub(crate) fn isolate_if(needed: bool) -> Result<Option<()>, BenchError> {
        if !needed {
            return Ok(None);
        }
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(setup("unshare(CLONE_NEWNS)"))?;
        nix::mount::mount::<str, str, str, str>(
            None,
            "/",
            None,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None,
        )
        .map_err(setup("make / private"))?;
        Ok(Some(()))
    }

    pub(crate) fn start(c: &Containers) -> Result<Listener, BenchError> {
        let exe = fapolicyd_path().ok_or_else(|| BenchError::Setup("fapolicyd is not installed".into()))?;
        let root = c.root().join("fapolicyd");
        let etc = root.join("etc");
        let lib = root.join("lib");
        let run = root.join("run");
        for d in [&etc, &etc.join("rules.d"), &etc.join("trust.d"), &lib, &run] {
            std::fs::create_dir_all(d).map_err(setup("mkdir"))?;
        }
        std::fs::write(
            etc.join("fapolicyd.conf"),
            "permissive = 0\nnice_val = 14\nq_size = 800\nuid = 0\ngid = 0\ndo_stat_report = 0\n\
             detailed_report = 0\ndb_max_size = 50\nsubj_cache_size = 1549\nobj_cache_size = 8191\n\
             watch_fs = overlay\ntrust = file\nintegrity = none\nsyslog_format = rule,dec,perm,auid,pid,exe,:,path,ftype,trust\n\
             rpm_sha256_only = 0\nallow_filesystem_mark = 0\n",
        )
        .map_err(setup("write fapolicyd.conf"))?;
        std::fs::write(etc.join("rules.d/10-allow.rules"), "allow perm=any all : all\n")
            .map_err(setup("rules"))?;
        std::fs::write(etc.join("compiled.rules"), "allow perm=any all : all\n").map_err(setup("rules"))?;
        std::fs::write(etc.join("fapolicyd.trust"), "").map_err(setup("trust"))?;
        std::fs::write(etc.join("fapolicyd-filter.conf"), "").map_err(setup("filter"))?;
        for (src, dst) in [(&etc, "/etc/fapolicyd"), (&lib, "/var/lib/fapolicyd"), (&run, "/run/fapolicyd")] {
            std::fs::create_dir_all(dst).map_err(setup("mkdir"))?;
            nix::mount::mount::<Path, str, str, str>(
                Some(src),
                dst,
                None,
                nix::mount::MsFlags::MS_BIND,
                None,
            )
            .map_err(setup("bind fapolicyd dirs"))?;
        }
        let log_path = root.join("fapolicyd.log");
        let log = std::fs::File::create(&log_path).map_err(setup("fapolicyd log"))?;
        let child = driftgate_sys::process::unblock_signals_in_child(&mut Command::new(exe))
            .arg("--debug-deny")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(setup("log"))?)
            .stderr(log)
            .spawn()
            .map_err(setup("start fapolicyd"))?;
        let l = Listener::Process {
            child,
            name: "fapolicyd",
            binds: ["/etc/fapolicyd", "/var/lib/fapolicyd", "/run/fapolicyd"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        };
        l.wait_log(&log_path, "Starting to listen for events")?;
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_settings_merge_into_the_benchmarks_configuration() {
        let base = "mode = \"enforce\"\n[daemon]\nsocket = \"/s\"\n[[policy.rules]]\naction = \"allow\"\nmounts = [\"/vol\"]\n";
        let extra = "[daemon]\nwriter_hold_ms = 0\n[[policy.rules]]\naction = \"audit\"\npaths = [\"/x\"]\n";
        let merged: toml::Table = with_extra(base, extra).unwrap().parse().unwrap();
        let c = driftgate_core::config::Config::from_toml(&toml::to_string(&merged).unwrap(), None);
        assert!(c.is_ok(), "{c:?}");
        assert_eq!(merged["daemon"]["socket"].as_str(), Some("/s"));
        assert_eq!(merged["daemon"]["writer_hold_ms"].as_integer(), Some(0));
        assert_eq!(merged["policy"]["rules"].as_array().unwrap().len(), 2);
        assert!(
            matches!(with_extra(base, "[daemon"), Err(BenchError::Setup(m)) if m.contains("--daemon-toml"))
        );
    }
}
