//! Shared helpers for the privileged suites: scratch overlay "containers" built from
//! busybox-static, a driftgate daemon under test, and commands run inside a container's own
//! mount and PID namespaces after pivot_root.
//!
//! Safety rules (see the developers' guide): the daemon under test is configured to mark only
//! the overlays a test created (an exact-path glob; containerd discovery pointed at the test's
//! own state dir or disabled); every wait has a deadline; processes are stopped by the pid the
//! test started; mounts are detached on drop.
#![allow(dead_code)]

mod daemon;
pub mod guest;
pub mod net;
pub mod otlp;
pub mod runtimes;
pub mod vm;

pub use daemon::*;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BUSYBOX: &str = "/bin/busybox";

/// True when the privileged suites can run. Not root: skip loudly, except under CI where a
/// skip is a failure.
pub fn privileged() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        assert!(Path::new(BUSYBOX).exists(), "{BUSYBOX} missing: run `make test` (installs busybox-static)");
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("privileged tests must run as root in CI");
    }
    eprintln!("SKIPPED: privileged test needs root (fanotify permission events, overlay mounts)");
    false
}

pub fn driftgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_driftgate")
}

/// A scratch overlay container: `lower` (the image: busybox plus a few files), `upper`,
/// `work`, mounted at `merged`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub merged: PathBuf,
    pub mounted: bool,
}

impl Scratch {
    pub fn new() -> Scratch {
        Self::with_image_files(&[])
    }

    /// A scratch container whose image also has `files` (path in the image, host file to copy),
    /// executable.
    pub fn with_image_files(files: &[(&str, &Path)]) -> Scratch {
        let dir = tempfile::Builder::new().prefix("dgtest-").tempdir_in("/tmp").unwrap();
        let root = dir.path();
        let lower = root.join("lower");
        for d in ["bin", "opt/img", "tmp", "etc", "proc", "dev", ".dgtest"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::set_permissions(lower.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cp", "cat", "chmod", "touch", "rm", "mv", "ln", "mkdir", "echo", "printf", "sleep", "seq",
            "sync", "mount", "umount", "mknod", "test", "[",
        ] {
            std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).unwrap();
        }
        // Image binaries that are not the shell: busybox runs the applet named like argv[0].
        std::fs::copy(BUSYBOX, lower.join("opt/img/true")).unwrap();
        std::fs::copy(BUSYBOX, lower.join("opt/img/false")).unwrap();
        write_exec(&lower.join("opt/img/script.sh"), b"#!/bin/sh\necho image-script\n");
        for (rel, src) in files {
            let dst = lower.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(src, &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let mut s = Scratch { merged: root.join("merged"), dir, mounted: false };
        s.mount();
        s
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn lower(&self) -> PathBuf {
        self.root().join("lower")
    }

    pub fn upper(&self) -> PathBuf {
        self.root().join("upper")
    }

    pub fn mount(&mut self) {
        let r = self.root();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            r.join("lower").display(),
            r.join("upper").display(),
            r.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &self.merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .expect("mount overlay");
        self.mounted = true;
    }

    pub fn umount(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
            self.mounted = false;
        }
    }

    pub fn dev(&self) -> u64 {
        nix::sys::stat::stat(&self.merged).unwrap().st_dev
    }

    /// Runs `script` with busybox sh inside the container: new mount and PID namespaces,
    /// pivot_root into the overlay. Returns the output once it exits (killed after `limit`).
    pub fn run_in_container(&self, script: &str, limit: Duration) -> Output {
        run_in_container(self.root(), &self.merged, script, limit)
    }

    /// [`run_in_container_with`] in this container.
    pub fn run_in_container_with(&self, setup: &str, script: &str, limit: Duration) -> Output {
        run_in_container_with(self.root(), &self.merged, setup, script, limit)
    }
}

/// [`Scratch::run_in_container`] for an overlay mounted at `merged`, with helper files in `root`.
pub fn run_in_container(root: &Path, merged: &Path, script: &str, limit: Duration) -> Output {
    run_in_container_with(root, merged, "", script, limit)
}

/// Like [`run_in_container`], with `setup` (host shell lines, `$M` is the rootfs) run in the
/// container's new mount namespace before `pivot_root`: where a runtime makes volumes and
/// tmpfs mounts. As with a real runtime, every mount is in place before the container's first
/// exec: `/proc`, a tmpfs `/dev` (exec allowed, as Docker's) with `/dev/null` and a tmpfs
/// `/dev/shm`, then whatever `setup` adds. The workload starts as `sh -c "<script>"`, as many
/// entrypoints do (a script file handed to the image's shell would itself be drift).
pub fn run_in_container_with(
    root: &Path,
    merged: &Path,
    setup: &str,
    script: &str,
    limit: Duration,
) -> Output {
    let mut cmd = container_command(root, merged, setup, script);
    cmd.stdin(Stdio::null());
    run_with_deadline(cmd, limit)
}

/// The command that runs `script` in a container (see [`run_in_container_with`]).
pub fn container_command(root: &Path, merged: &Path, setup: &str, script: &str) -> Command {
    container_command_in(root, merged, setup, script, true)
}

/// [`container_command`], in a PID namespace of its own or (`own_pid_ns` false) sharing the
/// host's, like a `hostPID` pod.
pub fn container_command_in(
    root: &Path,
    merged: &Path,
    setup: &str,
    script: &str,
    own_pid_ns: bool,
) -> Command {
    container_command_with_shell(root, merged, setup, script, own_pid_ns, "/bin/busybox sh")
}

/// [`container_command_in`], with `shell` (the image's own, as a command line) running the
/// workload inline.
pub fn container_command_with_shell(
    root: &Path,
    merged: &Path,
    setup: &str,
    script: &str,
    own_pid_ns: bool,
    shell: &str,
) -> Command {
    let dg = merged.join(".dgtest");
    std::fs::create_dir_all(&dg).unwrap();
    let n = SCRIPT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = format!("run{n}.sh");
    std::fs::write(dg.join(&run), script).unwrap();
    let enter = root.join(format!("enter{n}.sh"));
    std::fs::write(
        &enter,
        format!(
            "set -e\nM=\"$1\"\nmount --bind \"$M\" \"$M\"\nmount -t proc proc \"$M/proc\"\n\
             mount -t tmpfs -o mode=755 dev \"$M/dev\"\nmknod -m 666 \"$M/dev/null\" c 1 3\n\
             ln -s /proc/self/fd \"$M/dev/fd\"\nln -s /proc/self/fd/0 \"$M/dev/stdin\"\n\
             mkdir \"$M/dev/shm\"\nmount -t tmpfs -o mode=1777 shm \"$M/dev/shm\"\n{setup}\n\
             cd \"$M\"\nmkdir -p .oldroot\npivot_root . .oldroot\n\
             exec {shell} -c 'umount -l /.oldroot; rmdir /.oldroot; cd /; exec {shell} -c \"$(cat /.dgtest/{run})\"'\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("unshare");
    cmd.arg("--mount");
    if own_pid_ns {
        cmd.args(["--pid", "--fork"]);
    }
    cmd.args(["--propagation", "private", "sh"]).arg(&enter).arg(merged);
    cmd
}

static SCRIPT_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Scratch {
    fn drop(&mut self) {
        self.umount();
    }
}

pub fn write_exec(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs a command in its own process group; kills the group if it outlives `limit`.
pub fn run_with_deadline(cmd: Command, limit: Duration) -> Output {
    try_run_with_deadline(cmd, limit).expect("spawn")
}

/// Like [`run_with_deadline`], but a failed exec is returned, not a panic.
pub fn try_run_with_deadline(mut cmd: Command, limit: Duration) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let done = Arc::new(Mutex::new(false));
    let d2 = Arc::clone(&done);
    let killer = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if *d2.lock().unwrap() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        true
    });
    let out = child.wait_with_output().expect("wait");
    *done.lock().unwrap() = true;
    let timed_out = killer.join().unwrap();
    assert!(!timed_out, "command timed out after {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out)
}

/// The bin directory of the Python environment `name` made by `scripts/py-env.sh` (tools
/// from PyPI that are not driftgate's own: an OTLP receiver, Helm).
pub fn python_env(name: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(root.join("scripts/py-env.sh"));
    cmd.arg(name);
    let out = run_with_deadline(cmd, Duration::from_secs(600));
    assert!(out.status.success(), "scripts/py-env.sh {name}: {}", String::from_utf8_lossy(&out.stderr));
    root.join(String::from_utf8_lossy(&out.stdout).trim())
}

/// A YAML file read as JSON (PyYAML, from `scripts/py-env.sh helm`): its documents.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let py =
        "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let mut cmd = Command::new(python_env("helm").join("python3"));
    cmd.args(["-c", py]).arg(path);
    let out = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A CA and a certificate it signed for `localhost`: (CA PEM, leaf chain PEM, leaf key PEM).
pub fn pki(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `name=rc` lines printed by container scripts.
pub fn results(out: &Output) -> std::collections::HashMap<String, i32> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.trim().to_owned(), v.trim().parse().ok()?)))
        .collect()
}

/// Findings as JSON values, through the real CLI.
pub fn read_findings(spool: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(driftgate_bin())
        .args(["findings", "--json", "--spool-dir"])
        .arg(spool)
        .output()
        .unwrap();
    assert!(out.status.success(), "findings failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON finding"))
        .collect()
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(p).unwrap();
    let h = sha2::Sha256::digest(&data);
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Detaches a mount the test made, when dropped.
pub struct DetachOnDrop(pub PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A daemon in `mode` watching the scratch container `s` (and nothing else).
pub fn daemon(s: &Scratch, mode: &str) -> Daemon {
    Daemon::start(s.root(), DaemonOpts { mode, globs: vec![s.merged.clone()], ..Default::default() })
}

/// A daemon in `mode` watching `s`, with configuration `tables` appended.
pub fn daemon_with(s: &Scratch, mode: &str, tables: &str) -> Daemon {
    Daemon::start(
        s.root(),
        DaemonOpts { mode, globs: vec![s.merged.clone()], extra_tables: tables, ..Default::default() },
    )
}

/// The schema errors of an OCSF event against OCSF 1.4.0's Detection Finding
/// (`tests/data/ocsf/`), as `path: message`.
pub fn ocsf_errors(v: &serde_json::Value) -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ocsf/detection_finding-1.4.0.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator.iter_errors(v).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// No aggregation: every exec is its own finding.
pub const EVERY_FINDING: &str = "[findings]\naggregate_window_secs = 0\n";

/// A daemon in audit mode over `s` that records every exec as its own finding (no
/// aggregation), for tests that count findings.
pub fn audit_every_finding(s: &Scratch) -> Daemon {
    daemon_with(s, "audit", EVERY_FINDING)
}

/// A container running in the background (for tests that act on it from outside while it
/// runs), killed with its process group on drop.
pub struct Background {
    pub child: Child,
}

impl Background {
    /// Starts `script` in the container (see [`run_in_container_with`]) and waits until it has
    /// created `ready` (a path inside the container's rootfs, as seen from the host).
    pub fn start(root: &Path, merged: &Path, setup: &str, script: &str, ready: &Path) -> Background {
        let mut cmd = container_command(root, merged, setup, script);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        let child = cmd.spawn().expect("start container");
        let b = Background { child };
        let start = Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "container did not get ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        b
    }

    /// The pid of the container's shell (its init), found as the only child of `unshare`.
    pub fn init_pid(&self) -> Option<i32> {
        let kids =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.child.id(), self.child.id()))
                .ok()?;
        kids.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Waits until `f` holds, up to `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The fileless dropper of `tests/tools/memfd_exec.c`, built static (the scratch containers
/// have no libc) into `dir`.
pub fn memfd_exec_tool(dir: &Path) -> PathBuf {
    static_tool(dir, "memfd_exec")
}

/// `tests/tools/<name>.c`, built static (the scratch containers have no libc) into `dir`.
pub fn static_tool(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/tools/{name}.c"));
    let mut cmd = Command::new("gcc");
    cmd.args(["-static", "-O2", "-o"]).arg(&out).arg(&src);
    let o = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(o.status.success(), "gcc -static (scripts/test-deps.sh installs gcc and libc6-dev): {o:?}");
    out
}

/// A scratch container whose image has the fileless dropper (`/opt/img/memfd_exec`) and a
/// busybox of its own content (`/opt/img/bb2`: not the image's shell, so an IoC for it matches
/// nothing else).
pub fn fileless_container() -> (tempfile::TempDir, Scratch, PathBuf) {
    let tools = tempfile::tempdir().unwrap();
    let tool = memfd_exec_tool(tools.path());
    let bb2 = tools.path().join("bb2");
    let mut bytes = std::fs::read(BUSYBOX).unwrap();
    bytes.extend_from_slice(b"distinct");
    std::fs::write(&bb2, bytes).unwrap();
    let s = Scratch::with_image_files(&[("/opt/img/memfd_exec", &tool), ("/opt/img/bb2", &bb2)]);
    (tools, s, tool)
}

/// Runs `/opt/img/bb2 sleep 0.5` from a memfd in a [`fileless_container`]; prints `memfd=<rc>`.
pub const FILELESS: &str = "/opt/img/memfd_exec /opt/img/bb2 sleep 0.5; echo memfd=$?\n";

pub fn sha256_bytes(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub const LD: &str = "/lib64/ld-linux-x86-64.so.2";

pub fn host_file(p: &str) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{p}: {e} (run scripts/test-deps.sh)"))
}

/// A scratch container whose image has the loader, libc, a dynamic program (`/usr/bin/true`),
/// bash-static (`/opt/img/bash`) and scripts (`/opt/img/runme.sh`, `runme2.sh`, `img-script.sh`).
pub fn loader_image() -> (tempfile::TempDir, Scratch) {
    let files = tempfile::tempdir().unwrap();
    let script = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let runme = script("runme.sh", "echo image-run\n");
    let runme2 = script("runme2.sh", "echo image-run-2\n");
    let shebang = script("img-script.sh", "#!/opt/img/bash\necho image-script \"$1\"\n");
    let (ld, libc, dyn_true, bash) = (
        host_file(LD),
        host_file("/lib/x86_64-linux-gnu/libc.so.6"),
        host_file("/usr/bin/true"),
        host_file("/bin/bash-static"),
    );
    let s = Scratch::with_image_files(&[
        (LD, &ld),
        ("/lib/x86_64-linux-gnu/libc.so.6", &libc),
        ("/usr/bin/true", &dyn_true),
        ("/opt/img/bash", &bash),
        ("/opt/img/runme.sh", &runme),
        ("/opt/img/runme2.sh", &runme2),
        ("/opt/img/img-script.sh", &shebang),
    ]);
    (files, s)
}

/// A `GET` of `path` over the unix socket `sock` (the metrics endpoint): the whole response.
pub fn http_get_unix(sock: &Path, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    body
}
