//! Real container runtimes for the runtime suites, each with all its state in a test directory,
//! started in the background, stopped by the pid the test started, mounts detached on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{run_with_deadline, BUSYBOX};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `tools` are installed; under CI a missing tool is a failure.
pub fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<_> = tools.iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing {missing:?}: scripts/test-deps.sh installs them");
    }
    eprintln!("SKIPPED: needs {missing:?} (run scripts/test.sh, which installs them)");
    false
}

fn stop_child(child: &mut Child, limit: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Detaches every mount under `dir`, deepest first.
pub fn detach_mounts_under(dir: &Path) {
    let dir = dir.display().to_string();
    let mut mps: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|mp| mp.starts_with(&dir))
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mp in mps {
        let _ = nix::mount::umount2(mp.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A scratch directory under `/tmp` (not a tmpfs of its own: runtimes' overlays go on it).
pub fn tmpdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap()
}

/// The content of `/opt/mark.sh` in the test images.
pub const MARK_SCRIPT: &[u8] = b"#!/bin/sh\necho marked\n";

/// A plain rootfs tarball: busybox-static, applets, `/opt/true`, `/opt/mark.sh`, `/tmp`.
pub fn rootfs_tar(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let r = dir.join("rootfs");
    for d in ["bin", "tmp", "opt"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::set_permissions(r.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    std::fs::copy(BUSYBOX, r.join("bin/busybox")).unwrap();
    for a in ["sh", "cp", "cat", "sleep", "echo", "mkdir"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    std::fs::copy(BUSYBOX, r.join("opt/true")).unwrap();
    // An image file with content of its own (an IoC target that is not the shell).
    super::write_exec(&r.join("opt/mark.sh"), MARK_SCRIPT);
    let tar = dir.join("rootfs.tar");
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(&r).arg("-cf").arg(&tar).arg(".");
    assert!(run_with_deadline(cmd, Duration::from_secs(60)).status.success());
    tar
}

/// The coverage image: the busybox rootfs of [`rootfs_tar`] plus a real dynamic loader and libc
/// (`/lib64/ld-linux-x86-64.so.2`, `/lib/x86_64-linux-gnu/libc.so.6`), a dynamic program
/// (`/opt/dyntrue`), a shell (`/opt/bash`, bash-static), an image script (`/opt/run.sh`) and the
/// fileless dropper (`/opt/memfd_exec`). Returns the rootfs directory and its tarball.
pub fn coverage_rootfs(dir: &Path) -> (PathBuf, PathBuf) {
    let tar = rootfs_tar(dir);
    let r = dir.join("rootfs");
    let canon = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let copy = |src: PathBuf, rel: &str| {
        let dst = r.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, &dst).unwrap();
        std::fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    copy(canon("/lib64/ld-linux-x86-64.so.2"), "lib64/ld-linux-x86-64.so.2");
    copy(canon("/lib/x86_64-linux-gnu/libc.so.6"), "lib/x86_64-linux-gnu/libc.so.6");
    copy(canon("/usr/bin/true"), "opt/dyntrue");
    copy(canon("/bin/bash-static"), "opt/bash");
    copy(super::memfd_exec_tool(dir), "opt/memfd_exec");
    std::fs::write(r.join("opt/run.sh"), b"echo image-run\n").unwrap();
    std::fs::remove_file(&tar).unwrap();
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(&r).arg("-cf").arg(&tar).arg(".");
    assert!(run_with_deadline(cmd, Duration::from_secs(60)).status.success());
    (r, tar)
}

pub struct Containerd {
    pub dir: PathBuf,
    child: Child,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("containerd.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
                dir.join("root").display().to_string(),
                dir.join("state").display().to_string(),
                dir.join("containerd.sock").display().to_string(),
                dir.join("containerd.sock.ttrpc").display().to_string(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd { dir: dir.to_path_buf(), child };
        let start = Instant::now();
        while !c.sock().exists() || !c.ctr(&["version"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(20), "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.sock()).args(args);
        run_with_deadline(cmd, Duration::from_secs(60))
    }

    /// Builds a one-layer OCI image from the rootfs directory `rootfs` and imports it as
    /// `name:latest`.
    pub fn build_image_from(&self, name: &str, rootfs: &Path) {
        let d = self.dir.join(format!("image-{}", name.replace('/', "_")));
        std::fs::create_dir_all(&d).unwrap();
        let mut cmd = Command::new("sh");
        cmd.current_dir(&d).arg("-ec").arg(format!(
            "umoci init --layout oci\numoci new --image oci:latest\numoci unpack --image oci:latest bundle\n\
             cp -a '{}'/. bundle/rootfs/\numoci repack --image oci:latest bundle\n\
             umoci config --image oci:latest --config.cmd /bin/sh\ntar -C oci -cf image.tar .",
            rootfs.display()
        ));
        let out = run_with_deadline(cmd, Duration::from_secs(120));
        assert!(out.status.success(), "umoci: {}", String::from_utf8_lossy(&out.stderr));
        let out = self.ctr(&["images", "import", "--base-name", name, d.join("image.tar").to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Builds a one-layer OCI image (busybox-static) with umoci and imports it as `name:latest`.
    pub fn build_image(&self, name: &str) {
        let d = self.dir.join("image");
        std::fs::create_dir_all(&d).unwrap();
        let mut cmd = Command::new("sh");
        cmd.current_dir(&d).arg("-ec").arg(format!(
            "umoci init --layout oci\numoci new --image oci:latest\numoci unpack --image oci:latest bundle\n\
             mkdir -p bundle/rootfs/bin bundle/rootfs/tmp bundle/rootfs/opt\nchmod 1777 bundle/rootfs/tmp\n\
             cp {BUSYBOX} bundle/rootfs/bin/busybox\nfor a in sh cp cat chmod echo sleep; do ln -s busybox bundle/rootfs/bin/$a; done\n\
             cp {BUSYBOX} bundle/rootfs/opt/true\nprintf '#!/bin/sh\\necho marked\\n' > bundle/rootfs/opt/mark.sh\nchmod 755 bundle/rootfs/opt/mark.sh\n\
             umoci repack --image oci:latest bundle\numoci config --image oci:latest --config.cmd /bin/sh\n\
             tar -C oci -cf image.tar ."
        ));
        let out = run_with_deadline(cmd, Duration::from_secs(120));
        assert!(out.status.success(), "umoci: {}", String::from_utf8_lossy(&out.stderr));
        let out = self.ctr(&["images", "import", "--base-name", name, d.join("image.tar").to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Containerd {
    /// Kills and deletes every task and container, in every namespace (also what a failed
    /// test left behind), so no shim outlives the test.
    fn remove_all(&self) {
        let list = |args: &[&str]| -> Vec<String> {
            String::from_utf8_lossy(&self.ctr(args).stdout).lines().map(str::to_owned).collect()
        };
        for ns in list(&["namespaces", "ls", "-q"]) {
            for t in list(&["-n", &ns, "tasks", "ls", "-q"]) {
                let _ = self.ctr(&["-n", &ns, "tasks", "kill", "-s", "KILL", &t]);
            }
            std::thread::sleep(Duration::from_millis(200));
            for t in list(&["-n", &ns, "tasks", "ls", "-q"]) {
                let _ = self.ctr(&["-n", &ns, "tasks", "rm", "-f", &t]);
            }
            if ns != "moby" {
                for c in list(&["-n", &ns, "containers", "ls", "-q"]) {
                    let _ = self.ctr(&["-n", &ns, "containers", "rm", &c]);
                }
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        stop_child(&mut self.child, Duration::from_secs(10));
        detach_mounts_under(&self.dir);
    }
}

/// dockerd on top of a test containerd.
pub struct Dockerd {
    pub dir: PathBuf,
    child: Child,
    key_existed: bool,
}

impl Dockerd {
    pub fn start(dir: &Path, containerd: &Containerd) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap();
        let key_existed = Path::new("/etc/docker/key.json").exists();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--containerd")
            .arg(containerd.sock())
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false"])
            .args(["--storage-driver", "overlay2"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { dir: dir.to_path_buf(), child, key_existed };
        let start = Instant::now();
        while !d.docker(&["version"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(30), "dockerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Imports the busybox-static rootfs as `dgtest:latest`.
    pub fn import_test_image(&self) {
        let tar = rootfs_tar(&self.dir);
        let out = self.docker(&["import", tar.to_str().unwrap(), "dgtest:latest"]);
        assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(format!("unix://{}", self.dir.join("docker.sock").display())).args(args);
        run_with_deadline(cmd, Duration::from_secs(60))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "-f", "-v", "dgtest-d1", "dgtest-d2", "dgtest-run"]);
        stop_child(&mut self.child, Duration::from_secs(15));
        detach_mounts_under(&self.dir);
        if !self.key_existed {
            let _ = std::fs::remove_file("/etc/docker/key.json");
        }
    }
}

/// Rootful podman with its storage under a test directory.
pub struct Podman {
    pub dir: PathBuf,
}

impl Podman {
    pub fn new(dir: &Path) -> Podman {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\",\"nproc=32768:32768\"]\nnetns = \"none\"\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
        )
        .unwrap();
        Podman { dir: dir.to_path_buf() }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn runroot(&self) -> PathBuf {
        self.dir.join("runroot")
    }

    /// Podman with its storage under `dir`, holding the busybox-static rootfs as
    /// `localhost/dgtest:latest`.
    pub fn with_test_image(dir: &Path) -> Podman {
        let p = Podman::new(dir);
        let tar = rootfs_tar(dir);
        let out = p.podman(&["import", tar.to_str().unwrap(), "localhost/dgtest:latest"]);
        assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
        p
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.runroot())
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "overlay", "--events-backend", "file"])
            .args(args);
        run_with_deadline(cmd, Duration::from_secs(120))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-a"]);
        detach_mounts_under(&self.dir);
    }
}

/// A real systemd-journald, started by hand in a private mount namespace whose
/// `/run/systemd/journal` (sockets) and `/run/log/journal` (volatile journal) are directories
/// of the test, so the host's journal is never touched. Stopped by pid on drop.
pub struct Journald {
    pub dir: PathBuf,
    child: Child,
}

impl Journald {
    pub fn start(dir: &Path) -> Journald {
        for d in ["sock", "journal", "persist"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::create_dir_all("/run/systemd/journal").unwrap();
        std::fs::create_dir_all("/run/log/journal").unwrap();
        let script = format!(
            "mount --bind {0}/sock /run/systemd/journal && mount --bind {0}/journal /run/log/journal && \
             {{ [ ! -d /var/log/journal ] || mount --bind {0}/persist /var/log/journal; }} && \
             exec /lib/systemd/systemd-journald",
            dir.display()
        );
        let log = std::fs::File::create(dir.join("journald.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start systemd-journald");
        let j = Journald { dir: dir.to_path_buf(), child };
        let start = Instant::now();
        while !j.socket().exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "journald did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        j
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock/socket")
    }

    /// journald's pid (`unshare` and `sh` exec it in place).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `journalctl -o json` over this journal, with extra match arguments.
    pub fn entries(&self, matches: &[&str]) -> Vec<serde_json::Value> {
        let mut cmd = Command::new("journalctl");
        cmd.arg("-D").arg(self.dir.join("journal")).args(["-o", "json", "--no-pager"]).args(matches);
        let out = run_with_deadline(cmd, Duration::from_secs(30));
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}
