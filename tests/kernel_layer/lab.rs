//! The attacker's lab of `tests/kernel_layer.rs`: a scratch container with the attacker's tool,
//! the attacks (each a script line whose outcome it prints), how a run is judged, and the same
//! attacks in a Podman container.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::vm::{self, scaled};
use super::common::*;

/// The tools the VM needs, built on the host.
pub(crate) const VM_TOOLS: [&str; 1] = ["dgattack"];

/// A scratch container whose image has the attacker's tool (`/opt/img/dgattack`), a payload
/// (`/opt/img/bb2`: a busybox of its own content, so that a copy of it anywhere is an added
/// binary) and a shared object (`/opt/img/libsrc.so`: the host's libc).
pub(crate) struct Lab {
    _tools: tempfile::TempDir,
    pub(crate) s: Scratch,
    pub(crate) pins: PathBuf,
}

impl Lab {
    pub(crate) fn new() -> Lab {
        let tools = tempfile::tempdir().unwrap();
        let attack = vm::tool(tools.path(), "dgattack");
        let bb2 = tools.path().join("bb2");
        let mut bytes = std::fs::read(BUSYBOX).unwrap();
        bytes.extend_from_slice(b"kernel-layer-payload");
        std::fs::write(&bb2, bytes).unwrap();
        let libc = host_file("/lib/x86_64-linux-gnu/libc.so.6");
        let s = Scratch::with_image_files(&[
            ("/opt/img/dgattack", &attack),
            ("/opt/img/bb2", &bb2),
            ("/opt/img/libsrc.so", &libc),
            // A dynamic program: the loader maps libc and the program executable.
            (LD, &host_file(LD)),
            ("/lib/x86_64-linux-gnu/libc.so.6", &libc),
            ("/usr/bin/true", &host_file("/usr/bin/true")),
        ]);
        let pins =
            PathBuf::from(format!("/sys/fs/bpf/dgtest-{}", s.root().file_name().unwrap().to_string_lossy()));
        Lab { _tools: tools, s, pins }
    }

    /// A daemon in `mode` over this container; the kernel layer `on` (required) or `off`;
    /// `tables` appended.
    pub(crate) fn daemon(&self, mode: &str, layer: bool, tables: &str) -> Daemon {
        let kernel = format!(
            "[kernel]\nenabled = {:?}\npin_dir = {:?}\n{EVERY_FINDING}{tables}",
            if layer { "on" } else { "off" },
            self.pins.display().to_string()
        );
        let d = Daemon::start(
            self.s.root(),
            DaemonOpts {
                mode,
                globs: vec![self.s.merged.clone()],
                extra_daemon: EMULATED_DAEMON,
                extra_tables: &format!("{kernel}{EMULATED_TABLES}"),
                ..Default::default()
            },
        );
        let st = d.status();
        let state = st["kernel"]["state"].as_str().unwrap_or_default().to_owned();
        assert_eq!(state == "on", layer, "kernel layer: {state}");
        d
    }

    /// Runs `script` in the container (`setup`: host lines before it starts, `$M` the rootfs).
    pub(crate) fn run(&self, setup: &str, script: &str) -> String {
        let o = self.s.run_in_container_with(setup, script, scaled(Duration::from_secs(30)));
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    /// Runs `script` in a container sharing the host's PID namespace (a `hostPID` pod), in a
    /// cgroup of its own (`cgroup`, made by the caller), as a runtime would put it.
    pub(crate) fn run_host_pid(&self, cgroup: &Path, script: &str) -> String {
        let setup = format!("echo $$ > {}/cgroup.procs\n", cgroup.display());
        let mut cmd = container_command_in(self.s.root(), &self.s.merged, &setup, script, false);
        cmd.stdin(std::process::Stdio::null());
        let o = run_with_deadline(cmd, scaled(Duration::from_secs(30)));
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    /// A container whose process made an executable memfd and waits (for `/tmp/go` in the
    /// container) to run it; what it prints goes to the returned file.
    pub(crate) fn memfd_held(&self) -> (Background, PathBuf) {
        let out = self.s.merged.join(".dgtest/memfd.out");
        let ready = self.s.merged.join(".dgtest/memfd.ready");
        let b = Background::start(
            self.s.root(),
            &self.s.merged,
            "",
            "/opt/img/dgattack memfd-hold /opt/img/bb2 /tmp/go > /.dgtest/memfd.out 2>&1 &\n\
             while ! grep -q held /.dgtest/memfd.out; do sleep 0.05; done\ntouch /.dgtest/memfd.ready\nwait\nsleep 600\n",
            &ready,
        );
        (b, out)
    }

    /// Runs `args` inside the running container `b` (its mount and PID namespaces and root, as
    /// `docker exec` does).
    pub(crate) fn exec_in(&self, b: &Background, args: &[&str]) -> String {
        let pid = b.init_pid().expect("the container's init");
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid.to_string(), "-m", "-p", "-r", "-w", "--"]).args(args);
        cmd.stdin(std::process::Stdio::null());
        let o = run_with_deadline(cmd, scaled(Duration::from_secs(30)));
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The program stays pinned after its daemon: nothing of one test holds in the next.
        let _ = driftgate_bpf::unpin(&self.pins);
        let _ = std::fs::remove_dir(&self.pins);
    }
}

/// Under emulation (the VM) a hash takes seconds: decisions get the time they need rather than
/// the stall timeout ending the daemon, and layers are not indexed meanwhile (hashed at exec).
pub(crate) const EMULATED_DAEMON: &str = "stall_timeout_secs = 300\n";
pub(crate) const EMULATED_TABLES: &str = "[index]\nenabled = false\n";

/// The outcome of each attack, in order: each prints `payload-ran` (it ran) or `<name>=<why>`
/// (refused, or could not be set up), and the script marks where each one starts.
pub(crate) fn outcomes(out: &str) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = Vec::new();
    for l in out.lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("attack:") {
            got.push((name.to_owned(), String::new()));
        } else if let Some(last) = got.last_mut() {
            if !last.1.is_empty() {
                continue;
            }
            if l == "payload-ran" {
                last.1 = "ran".into();
            } else if let Some(v) = l.strip_prefix(&format!("{}=", last.0)) {
                last.1 = v.to_owned();
            }
        }
    }
    got
}

/// The findings whose file path is `path` (or contains it, with a `*` after it), once one of `category` and `action` is there
/// (or the wait is over).
pub(crate) fn findings_for(d: &Daemon, path: &str, category: &str, action: &str) -> Vec<serde_json::Value> {
    let mut fs = Vec::new();
    wait_until(scaled(Duration::from_secs(10)), || {
        fs = read_findings(&d.spool)
            .into_iter()
            .filter(|f| {
                f["file"]["path"].as_str().is_some_and(|p| match path.strip_suffix('*') {
                    Some(part) => p.contains(part),
                    None => p == path,
                })
            })
            .collect();
        fs.iter().any(|f| f["category"] == category && f["action"] == action)
    });
    fs
}

/// One attack: `script` (in the container) whose line `name=` says what happened, the path
/// that names its finding, and what is expected of it.
pub(crate) struct Attack<'a> {
    pub(crate) name: &'a str,
    pub(crate) setup: &'a str,
    pub(crate) script: &'a str,
    /// The finding's `file.path` (a `*` after it: contains it).
    pub(crate) path: &'a str,
    pub(crate) category: &'a str,
    pub(crate) layer: &'a str,
}

/// Runs `attacks` in one session of the container (one PID namespace, as a container has)
/// against a daemon in `mode`; `layer`: the kernel layer is on. Enforce with the layer: each
/// is refused (EPERM) with a blocked finding. Audit with the layer: each runs, with an audited
/// finding, and every report is attributed to the container. Returns each one's outcome (for the fallback's assertions).
pub(crate) fn attack(
    lab: &Lab,
    d: &Daemon,
    mode: &str,
    layer: bool,
    attacks: &[Attack<'_>],
) -> Vec<(String, String)> {
    let setup: String = attacks.iter().map(|a| a.setup).collect();
    let script: String = attacks.iter().map(|a| format!("echo attack:{}\n{}", a.name, a.script)).collect();
    let out = lab.run(&setup, &script);
    let got = outcomes(&out);
    assert_eq!(got.len(), attacks.len(), "{out}");
    for (a, (name, o)) in attacks.iter().zip(&got) {
        assert_eq!(name, a.name);
        if !layer {
            continue;
        }
        let action = if mode == "enforce" { "blocked" } else { "audited" };
        let want = if mode == "enforce" { "EPERM" } else { "ran" };
        assert_eq!(o, want, "{}: {out}\n{}", a.name, d.log_text());
        let fs = findings_for(d, a.path, a.category, action);
        let f =
            fs.iter().find(|f| f["category"] == a.category && f["action"] == action).unwrap_or_else(|| {
                panic!(
                    "{}: no {} {action} finding for {}: {fs:#?}\n{out}\n{}",
                    a.name,
                    a.category,
                    a.path,
                    d.log_text()
                )
            });
        assert_eq!(f["file"]["layer"], a.layer, "{}: {f:#?}", a.name);
    }
    if layer {
        // Each report named its container, even one about a task that had already exited
        // in a PID namespace nested in the container's.
        let k = d.status()["kernel"].clone();
        assert_eq!(k["unattributed"], 0, "{k:#?}");
    }
    got
}

pub(crate) fn fsmount() -> Attack<'static> {
    Attack {
        name: "fsmount-exec",
        setup: "",
        script: "/opt/img/dgattack fsmount-exec /opt/img/bb2\n",
        path: "/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

/// A volume (a tmpfs with a binary on it, marked) and a detached clone of it.
pub(crate) const VOLUME: &str =
    "mkdir -p \"$M/vol\"\nmount -t tmpfs vol \"$M/vol\"\ncp \"$M/opt/img/bb2\" \"$M/vol/tool\"\n";
/// The same volume (set up by [`VOLUME`]).
pub(crate) const SAME_VOLUME: &str = "";

pub(crate) fn open_tree() -> Attack<'static> {
    Attack {
        name: "open-tree-exec",
        setup: VOLUME,
        script: "/opt/img/dgattack open-tree-exec /vol tool\n",
        path: "/tool",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

pub(crate) fn proc_fd() -> Attack<'static> {
    Attack {
        name: "proc-fd-exec",
        setup: SAME_VOLUME,
        script: "/opt/img/dgattack proc-fd-exec /vol tool\n",
        path: "/tool",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

pub(crate) fn fresh_tmpfs() -> Attack<'static> {
    Attack {
        name: "fresh-tmpfs",
        setup: "",
        script: "mkdir -p /fresh && mount -t tmpfs t /fresh && cp /opt/img/bb2 /fresh/x && /opt/img/dgattack exec /fresh/x fresh-tmpfs\n",
        path: "/fresh/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

pub(crate) fn remount_exec() -> Attack<'static> {
    Attack {
        name: "remount-exec",
        setup: "mount -o remount,noexec \"$M/dev/shm\"\n",
        script: "cp /opt/img/bb2 /dev/shm/x && mount -o remount,exec /dev/shm && /opt/img/dgattack exec /dev/shm/x remount-exec\n",
        path: "/dev/shm/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

pub(crate) fn userns() -> Attack<'static> {
    Attack {
        name: "userns-tmpfs-exec",
        setup: "",
        script: "/opt/img/dgattack userns-tmpfs-exec /opt/img/bb2\n",
        path: "/tmp/dgattack-mnt/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

pub(crate) fn escape() -> Attack<'static> {
    Attack {
        name: "escape-exec",
        setup: "",
        script: "/opt/img/dgattack escape-exec /opt/img/bb2\n",
        path: "/escaped",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

pub(crate) fn pivot() -> Attack<'static> {
    Attack {
        name: "pivot-exec",
        setup: "",
        script: "/opt/img/dgattack pivot-exec /opt/img/bb2\n",
        path: "/pivoted",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

pub(crate) fn shm() -> Attack<'static> {
    Attack {
        name: "shm-exec",
        setup: "",
        script: "/opt/img/dgattack shm-exec /opt/img/bb2\n",
        path: "SYSV*",
        category: "FILELESS_EXECUTION",
        layer: "memfd",
    }
}

/// Every attack on mounts and shared memory, against one daemon.
pub(crate) fn all_mount_attacks() -> Vec<Attack<'static>> {
    vec![fsmount(), open_tree(), proc_fd(), fresh_tmpfs(), remount_exec(), userns(), escape(), pivot(), shm()]
}

pub(crate) fn mount_attacks(mode: &str, layer: bool) -> Vec<(String, String)> {
    let lab = Lab::new();
    let d = lab.daemon(mode, layer, "");
    let got = attack(&lab, &d, mode, layer, &all_mount_attacks());
    // Nothing the image has was refused meanwhile.
    let out = lab.run("", "/opt/img/true && echo image-ran\n");
    assert!(out.contains("image-ran"), "{out}");
    let st = d.status();
    let c = &st["containers"][0];
    if layer {
        assert_eq!(c["guard"], "kernel+fanotify", "{c:#?}");
        assert!(
            st["kernel"]["refused"].as_u64().unwrap() >= u64::from(mode == "enforce"),
            "{:#?}",
            st["kernel"]
        );
    } else {
        assert_eq!(c["guard"], "fanotify", "{c:#?}");
    }
    got
}

pub(crate) const LIBRARIES: &str = "[libraries]\nenabled = true\n";

pub(crate) fn aio_map() -> Attack<'static> {
    Attack {
        name: "aio-map",
        setup: "",
        script: "echo not-a-library > /tmp/t.so && /opt/img/dgattack aio-map /tmp/t.so /opt/img/libsrc.so\n",
        path: "/tmp/t.so",
        category: "ADDED_LIBRARY_LOADED",
        layer: "upper",
    }
}

pub(crate) fn open_tree_map() -> Attack<'static> {
    Attack {
        name: "open-tree-map",
        setup: "mkdir -p \"$M/libvol\"\nmount -t tmpfs libvol \"$M/libvol\"\ncp \"$M/opt/img/libsrc.so\" \"$M/libvol/lib.so\"\n",
        script: "/opt/img/dgattack open-tree-map /libvol lib.so\n",
        path: "/lib.so",
        category: "ADDED_LIBRARY_LOADED",
        layer: "mount",
    }
}

/// The attacks in a real runtime's container: Podman with `--cap-add SYS_ADMIN` (which its
/// default seccomp profile then lets mount, `open_tree` and `fsmount`), enforce and audit; the
/// attacks include a user namespace made inside (`unshare -Urm`, with a PID namespace and a
/// chroot). Podman mounts `/dev/shm` noexec itself. `mapped`: the container itself runs in a
/// user namespace (`--uidmap`, its layers through idmapped mounts).
pub(crate) fn podman_attacks(mode: &str, mapped: bool) {
    let lab = Lab::new();
    let dir = lab.s.root().join("podman");
    let p = runtimes::Podman::new(&dir);
    let tar = dir.join("image.tar");
    let mut cmd = std::process::Command::new("tar");
    cmd.arg("-C").arg(lab.s.lower()).arg("-cf").arg(&tar).arg(".");
    assert!(run_with_deadline(cmd, scaled(Duration::from_secs(60))).status.success());
    let out = p.podman(&["import", tar.to_str().unwrap(), "localhost/dgattack:latest"]);
    assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
    let kernel = format!(
        "[kernel]\nenabled = \"on\"\npin_dir = {:?}\n{EVERY_FINDING}",
        lab.pins.display().to_string()
    );
    let d = Daemon::start(
        &lab.s.root().join("daemon"),
        DaemonOpts {
            mode,
            podman: Some((p.root(), p.runroot())),
            extra_tables: &kernel,
            ..Default::default()
        },
    );
    let mut attacks =
        vec![fsmount(), open_tree(), proc_fd(), fresh_tmpfs(), userns(), escape(), pivot(), shm()];
    if mapped {
        // /proc/self/map_files needs CAP_SYS_ADMIN in the host's user namespace: procfs
        // refuses the SysV segment's exec itself there, before any LSM is asked.
        attacks.retain(|a| a.name != "shm-exec");
    }
    let script: String =
        attacks.iter().map(|a| format!("echo attack:{}\n{}", a.name, a.script)).collect::<String>().replace(
            "/opt/img/dgattack open-tree-exec",
            "cp /opt/img/bb2 /vol/tool && /opt/img/dgattack open-tree-exec",
        );
    let mut args = vec![
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "--mount",
        "type=tmpfs,destination=/vol,tmpfs-mode=1777",
    ];
    if mapped {
        args.extend(["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"]);
    }
    args.extend(["localhost/dgattack:latest", "/bin/sh", "-c", &script]);
    let o = p.podman(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let got = outcomes(&out);
    assert_eq!(got.len(), attacks.len(), "{out}\n{}", d.log_text());
    let (want, action) = if mode == "enforce" { ("EPERM", "blocked") } else { ("ran", "audited") };
    for (a, (name, o)) in attacks.iter().zip(&got) {
        assert_eq!((name.as_str(), o.as_str()), (a.name, want), "{out}\n{}", d.log_text());
        let fs = findings_for(&d, a.path, a.category, action);
        let f = fs.iter().find(|f| f["category"] == a.category && f["action"] == action);
        let f = f.unwrap_or_else(|| panic!("{}: no {action} finding: {fs:#?}\n{}", a.name, d.log_text()));
        assert_eq!(f["container"]["runtime"], "podman", "{f:#?}");
    }
    let st = d.status();
    let c = st["containers"].as_array().unwrap().iter().find(|c| c["runtime"] == "podman").cloned();
    // The container is gone (--rm) by now; while it ran, the kernel layer counted what it did.
    assert!(c.is_none() || c.unwrap()["guard"] == "kernel+fanotify");
    // Some attacks may be refused by fanotify too once their mount is marked; the detached ones
    // only ever by the program.
    assert!(st["kernel"]["reported"].as_u64().unwrap() >= 3, "{:#?}", st["kernel"]);
}
