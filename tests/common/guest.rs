//! A real Debian booted with systemd as PID 1 (`systemd-nspawn --boot`), to test the shipped
//! unit and package the way an operator runs them. The image is a minimal Debian built by
//! `scripts/debian-image.sh` (debootstrap, cached under `target/`); the guest's root is a
//! volatile overlay (`--volatile=overlay`: nothing it writes reaches the cached image), and the
//! same image is bound read-only at `/images/debian` for the guest's own containers to use as
//! their image. Stopped by the pid the test started, waited for, and killed if it lingers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::run_with_deadline;

/// The cached Debian image (built on first use).
pub fn debian_image() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(root.join("scripts/debian-image.sh"));
    cmd.current_dir(root);
    let out = run_with_deadline(cmd, Duration::from_secs(900));
    assert!(
        out.status.success(),
        "scripts/debian-image.sh (debootstrap; scripts/test-deps.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rel = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    root.join(rel)
}

/// The .deb of this tree (`scripts/package.sh deb --profile dev`), built once per run.
pub fn deb_package() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "scripts/package.sh deb --profile dev"]).current_dir(root);
            let out = run_with_deadline(cmd, Duration::from_secs(900));
            assert!(out.status.success(), "package.sh: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::read_dir(root.join("target/debian"))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .expect("a .deb")
        })
        .clone()
}

/// A booted guest.
pub struct Guest {
    nspawn: Child,
    /// The guest's PID 1 (systemd), as the host sees it.
    pub leader: i32,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a guest boots with.
pub struct Boot<'a> {
    /// Allow fanotify through nspawn's own seccomp filter (as a host that filters system calls
    /// must).
    pub allow_fanotify: bool,
    /// Host paths bound read-only into the guest: (host, guest).
    pub binds: Vec<(PathBuf, &'a str)>,
}

impl Default for Boot<'_> {
    fn default() -> Self {
        Boot { allow_fanotify: true, binds: Vec::new() }
    }
}

impl Guest {
    pub fn boot(image: &Path, how: Boot<'_>) -> Guest {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("nspawn.log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["-q", "--boot", "--volatile=overlay", "--register=no", "--keep-unit", "--console=passive"])
            .arg(format!("--machine=dgtest-{}-{n}", std::process::id()))
            .arg("-D")
            .arg(image)
            // The process-event connector (fileless record) needs it, as on a host.
            .arg("--capability=CAP_NET_ADMIN")
            .arg(format!("--bind-ro={}:/images/debian", image.display()));
        if how.allow_fanotify {
            cmd.arg("--system-call-filter=fanotify_init fanotify_mark");
        }
        for (host, guest) in &how.binds {
            cmd.arg(format!("--bind-ro={}:{guest}", host.display()));
        }
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let nspawn = cmd.spawn().expect("systemd-nspawn (scripts/test-deps.sh installs systemd-container)");
        let mut g = Guest { leader: 0, nspawn, log, _dir: dir };
        let start = Instant::now();
        while g.leader == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "no guest init: {}", g.log_text());
            if let Ok(Some(st)) = g.nspawn.try_wait() {
                panic!("systemd-nspawn exited with {st}: {}", g.log_text());
            }
            let pid = g.nspawn.id();
            g.leader = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
                .filter(|p: &i32| {
                    std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "systemd")
                })
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Booted: systemd says running (or degraded, if some unit of the minimal image failed).
        // (systemctl answers once PID 1 has made its private socket.)
        let out = g.sh(
            "for i in $(seq 600); do [ -S /run/systemd/private ] && break; sleep 0.1; done\n\
             timeout 60 systemctl is-system-running --wait; true",
            Duration::from_secs(130),
        );
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            matches!(state.as_str(), "running" | "degraded"),
            "guest did not boot: {state:?}: {}\nnspawn: {}",
            String::from_utf8_lossy(&out.stderr),
            g.log_text()
        );
        g
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `script` with `/bin/sh` inside the guest (every namespace of its PID 1).
    pub fn sh(&self, script: &str, limit: Duration) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.leader.to_string(), "-a", "--", "/bin/sh", "-c", script]);
        cmd.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        run_with_deadline(cmd, limit)
    }

    /// [`Guest::sh`], asserting success; its stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "in the guest: {script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show driftgate -p KEY` values.
    pub fn unit(&self, key: &str) -> String {
        self.ok(&format!("systemctl show driftgate -p {key} --value")).trim().to_owned()
    }

    /// The unit's journal.
    pub fn journal(&self) -> String {
        self.sh("journalctl -u driftgate --no-pager -o cat", Duration::from_secs(30))
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        // nspawn powers the guest off on SIGTERM.
        let _ = kill(Pid::from_raw(self.nspawn.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The guest's PID 1 takes its whole PID namespace with it.
        let _ = kill(Pid::from_raw(self.leader), Signal::SIGKILL);
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
