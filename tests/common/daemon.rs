//! A `driftgate run` under test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A running `driftgate run` under test, killed by pid on drop.
pub struct Daemon {
    pub child: Child,
    pub spool: PathBuf,
    pub config: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub struct DaemonOpts<'a> {
    pub mode: &'a str,
    pub globs: Vec<PathBuf>,
    pub containerd_state: Option<PathBuf>,
    /// containerd's API socket (for image names of plain ctr containers).
    pub containerd_address: Option<PathBuf>,
    pub docker_root: Option<PathBuf>,
    /// (root, runroot) of containers/storage for the `podman` and `crio` sections.
    pub podman: Option<(PathBuf, PathBuf)>,
    pub crio: Option<(PathBuf, PathBuf)>,
    pub journald_socket: Option<PathBuf>,
    /// Top-level TOML lines.
    pub extra: &'a str,
    /// Lines for the `[discovery]` table.
    pub extra_discovery: &'a str,
    /// Lines for the `[daemon]` table.
    pub extra_daemon: &'a str,
    /// Whole tables appended at the end.
    pub extra_tables: &'a str,
}

impl Default for DaemonOpts<'_> {
    fn default() -> Self {
        DaemonOpts {
            mode: "enforce",
            globs: vec![],
            containerd_state: None,
            containerd_address: None,
            docker_root: None,
            podman: None,
            crio: None,
            journald_socket: None,
            extra: "",
            extra_discovery: "",
            extra_daemon: "",
            extra_tables: "",
        }
    }
}

impl Daemon {
    pub fn start(dir: &Path, o: DaemonOpts<'_>) -> Daemon {
        let (config, spool) = Self::write_config(dir, o);
        Self::start_with_config(&config, &spool)
    }

    /// Like [`Daemon::start`], with the daemon run through `prefix` (a command that runs the
    /// rest, such as `seccomp_deny 38 437 --`).
    pub fn start_under(dir: &Path, o: DaemonOpts<'_>, prefix: &[&std::ffi::OsStr]) -> Daemon {
        let (config, spool) = Self::write_config(dir, o);
        Self::launch(Self::command(&config, &[], None, prefix), &config, &spool)
    }

    /// Runs a daemon through `prefix` that is expected to fail before it is ready: its exit
    /// status and what it printed.
    pub fn run_failing(dir: &Path, o: DaemonOpts<'_>, prefix: &[&std::ffi::OsStr]) -> std::process::Output {
        let (config, _) = Self::write_config(dir, o);
        run_with_deadline(Self::command(&config, &[], None, prefix), Duration::from_secs(20))
    }

    /// Writes the test daemon's configuration for `o` into `dir`: (config file, spool dir).
    pub fn write_config(dir: &Path, o: DaemonOpts<'_>) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let spool = dir.join("spool");
        let config = dir.join("driftgate.toml");
        let globs: Vec<String> = o.globs.iter().map(|g| format!("{:?}", g.display().to_string())).collect();
        // Every runtime the test does not own is disabled: a test daemon never watches the
        // host's containers.
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let mut containerd = match &o.containerd_state {
            // The test containerd keeps its root beside its state.
            Some(s) => format!(
                "[discovery.containerd]\nstate = {}\nroot = {}\n",
                q(s),
                q(&s.parent().unwrap().join("root"))
            ),
            None => "[discovery.containerd]\nenabled = false\n".to_owned(),
        };
        if let Some(a) = &o.containerd_address {
            containerd.push_str(&format!("address = {}\n", q(a)));
        }
        containerd.push_str(&match &o.docker_root {
            Some(d) => format!("[discovery.docker]\ndata_root = {}\n", q(d)),
            None => "[discovery.docker]\nenabled = false\n".to_owned(),
        });
        for (name, st) in [("podman", &o.podman), ("crio", &o.crio)] {
            containerd.push_str(&match st {
                Some((root, runroot)) => {
                    format!("[discovery.{name}]\nroot = {}\nrunroot = {}\n", q(root), q(runroot))
                }
                None => format!("[discovery.{name}]\nenabled = false\n"),
            });
        }
        let journald = match &o.journald_socket {
            Some(s) => format!("[journald]\nsocket = {:?}\n", s.display().to_string()),
            None => "[journald]\nenabled = false\n".to_owned(),
        };
        std::fs::write(
            &config,
            format!(
                "mode = {:?}\nnode_name = \"test-node\"\nstate_dir = {:?}\n{}\n[spool]\ndir = {:?}\n[discovery]\noverlay_globs = [{}]\nrescan_interval_secs = 1\n{}{containerd}{journald}[daemon]\nsocket = {:?}\n{}{}",
                o.mode,
                dir.join("state").display().to_string(),
                o.extra,
                spool.display().to_string(),
                globs.join(", "),
                o.extra_discovery,
                dir.join("driftgate.sock").display().to_string(),
                o.extra_daemon,
                kernel_default(o.extra_tables),
            ),
        )
        .unwrap();
        (config, spool)
    }

    pub fn start_with_config(config: &Path, spool: &Path) -> Daemon {
        Self::start_with_env(config, spool, &[])
    }

    pub fn start_with_env(config: &Path, spool: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::start_limited(config, spool, env, None)
    }

    /// Starts the daemon with `env` and, if given, `RLIMIT_NOFILE` soft and hard at `nofile`.
    pub fn start_limited(config: &Path, spool: &Path, env: &[(&str, &str)], nofile: Option<u64>) -> Daemon {
        Self::launch(Self::command(config, env, nofile, &[]), config, spool)
    }

    fn command(
        config: &Path,
        env: &[(&str, &str)],
        nofile: Option<u64>,
        prefix: &[&std::ffi::OsStr],
    ) -> Command {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(driftgate_bin());
                c
            }
            None => Command::new(driftgate_bin()),
        };
        cmd.envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(config)
            .env("DRIFTGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            driftgate_sys::process::limit_nofile_in_child(&mut cmd, n);
        }
        cmd
    }

    fn launch(mut cmd: Command, config: &Path, spool: &Path) -> Daemon {
        let mut child = cmd.spawn().expect("start driftgate");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                if line.contains("driftgate ready") {
                    let _ = tx.send(());
                }
                l2.lock().unwrap().push(line);
            }
        });
        let mut d = Daemon { child, spool: spool.to_path_buf(), config: config.to_path_buf(), log };
        if rx.recv_timeout(super::vm::scaled(Duration::from_secs(20))).is_err() {
            let log = d.log_text();
            d.kill();
            panic!("driftgate did not become ready:\n{log}");
        }
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn socket(&self) -> PathBuf {
        self.config.parent().unwrap().join("driftgate.sock")
    }

    /// `driftgate status --json` from this daemon.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(driftgate_bin())
            .args(["status", "--json", "--socket"])
            .arg(self.socket())
            .output()
            .unwrap();
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Switches the running daemon to `mode` through its configuration file and a reload.
    pub fn reload_mode(&self, mode: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("mode = "), "{first}");
        std::fs::write(&self.config, text.replacen(first, &format!("mode = {mode:?}"), 1)).unwrap();
        let before = self.log_text().matches("configuration reloaded").count();
        self.signal(nix::sys::signal::Signal::SIGHUP);
        assert!(
            wait_until(super::vm::scaled(Duration::from_secs(10)), || self
                .log_text()
                .matches("configuration reloaded")
                .count()
                > before),
            "no reload: {}",
            self.log_text()
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for exit; returns the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Findings from the spool, waiting until at least `n` are there.
    pub fn findings(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let v = read_findings(&self.spool);
            if v.len() >= n || start.elapsed() > super::vm::scaled(Duration::from_secs(10)) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Superblock devices the daemon's fanotify groups have marks on.
    pub fn marked_devs(&self) -> Vec<u64> {
        let mut devs = Vec::new();
        let fddir = format!("/proc/{}/fd", self.pid());
        for ent in std::fs::read_dir(&fddir).unwrap().flatten() {
            let target = std::fs::read_link(ent.path()).unwrap_or_default();
            if target.to_string_lossy() != "anon_inode:[fanotify]" {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{}/fdinfo/{}",
                self.pid(),
                ent.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            devs.extend(driftgate_sys::fanotify::parse_fdinfo_sdevs(&info));
        }
        devs
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tables`, with the kernel layer off unless they say otherwise: the suites of fanotify's own
/// paths test those (tests/kernel_layer.rs tests the layer, on and off), on every kernel.
fn kernel_default(tables: &str) -> String {
    if tables.contains("[kernel]") {
        tables.to_owned()
    } else {
        format!("{tables}\n[kernel]\nenabled = \"off\"\n")
    }
}
