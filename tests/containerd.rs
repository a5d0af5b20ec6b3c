//! End to end with a real containerd + runc (Debian packages), a locally built OCI image
//! (umoci, no registry) and a container that copies a binary in and runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tools_present() -> bool {
    let missing: Vec<_> = ["containerd", "ctr", "runc", "umoci"].into_iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing {missing:?}: the test command installs them (scripts/test-deps.sh)");
    }
    eprintln!("SKIPPED: containerd test needs {missing:?} (run `make test`, which installs them)");
    false
}

/// A containerd with all its state under a test directory, stopped by pid on drop.
struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
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
        while !c.sock().exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "containerd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The socket exists slightly before the API answers.
        while !c.ctr(&["version"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(20), "containerd did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.sock()).args(args);
        run_with_deadline(cmd, Duration::from_secs(60))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Detach anything containerd left mounted under our directory (deepest first).
        let dir = self.dir.display().to_string();
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
}

/// Builds a one-layer OCI image (busybox-static) with umoci and imports it.
fn build_image(c: &Containerd, name: &str) {
    let d = c.dir.join("image");
    std::fs::create_dir_all(&d).unwrap();
    let sh = |script: &str| {
        let mut cmd = Command::new("sh");
        cmd.args(["-ec", script]).current_dir(&d);
        let out = run_with_deadline(cmd, Duration::from_secs(120));
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh(&format!(
        "umoci init --layout oci\numoci new --image oci:latest\numoci unpack --image oci:latest bundle\n\
         mkdir -p bundle/rootfs/bin bundle/rootfs/tmp bundle/rootfs/opt\nchmod 1777 bundle/rootfs/tmp\n\
         cp {BUSYBOX} bundle/rootfs/bin/busybox\nfor a in sh cp cat chmod echo; do ln -s busybox bundle/rootfs/bin/$a; done\n\
         cp {BUSYBOX} bundle/rootfs/opt/true\n\
         umoci repack --image oci:latest bundle\numoci config --image oci:latest --config.cmd /bin/sh\n\
         tar -C oci -cf image.tar ."
    ));
    let out = c.ctr(&["images", "import", "--base-name", name, d.join("image.tar").to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn containerd_container_copying_in_a_binary_is_blocked_with_its_container_id() {
    if !privileged() || !tools_present() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("dgctr-").tempdir_in("/tmp").unwrap();
    let c = Containerd::start(dir.path());
    build_image(&c, "localhost/dgtest");
    let d = Daemon::start(
        dir.path(),
        DaemonOpts { mode: "enforce", containerd_state: Some(c.state()), ..Default::default() },
    );
    let id = format!("dgtest-{}", std::process::id());
    let out = c.ctr(&[
        "run",
        "--rm",
        "localhost/dgtest:latest",
        &id,
        "/bin/sh",
        "-c",
        "/opt/true; echo image=$?; cp /bin/busybox /tmp/true; /tmp/true; echo added=$?",
    ]);
    let r = results(&out);
    assert_eq!(r.get("image"), Some(&0), "{out:?}\n{}", d.log_text());
    assert_eq!(r.get("added"), Some(&126), "{out:?}\n{}", d.log_text());
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!(f["container"]["id"], id.as_str());
    assert_eq!(f["container"]["runtime"], "containerd");
    assert_eq!(f["container"]["runtime_namespace"], "default");
    assert_eq!(
        f["container"]["rootfs"],
        c.state()
            .join("io.containerd.runtime.v2.task/default")
            .join(&id)
            .join("rootfs")
            .display()
            .to_string()
    );
    assert_eq!(f["action"], "blocked");
    assert_eq!(f["category"], "ADDED_BINARY_EXECUTED");
    assert_eq!(f["file"]["path"], "/tmp/true");
    assert_eq!(f["file"]["sha256"], sha256_file(Path::new(BUSYBOX)).as_str());
    assert_eq!(f["process"]["args"], serde_json::json!(["/tmp/true"]));
    // The container's rootfs was unmounted by containerd: the daemon lets go of it.
    assert!(d.wait_log("container rootfs unmounted", Duration::from_secs(10)), "{}", d.log_text());
}
