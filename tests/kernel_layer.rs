//! The kernel layer (BPF LSM), tried as an attacker inside a container would: every path the
//! issue found around fanotify (mounts it never sees or sees late, fileless execution,
//! libraries changed without a modify event), in enforce mode and in audit mode, with the
//! layer on (in the VM of `tests/common/vm.rs`: this machine's kernel lists BPF LSM but refuses
//! to load LSM programs) and with it off (here, on the host: the fallback and what `status`
//! says of it).
//!
//! Each scenario is one function run in both places: `vm_*` tests are `#[ignore]`d and run in
//! the VM by `kernel_layer_in_a_vm`; `fallback_*` tests run here with `[kernel] enabled = "off"`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::vm::{self, in_vm, require_vm, scaled};
use common::*;

/// The tools the VM needs, built on the host.
const VM_TOOLS: [&str; 1] = ["dgattack"];

/// A scratch container whose image has the attacker's tool (`/opt/img/dgattack`), a payload
/// (`/opt/img/bb2`: a busybox of its own content, so that a copy of it anywhere is an added
/// binary) and a shared object (`/opt/img/libsrc.so`: the host's libc).
struct Lab {
    _tools: tempfile::TempDir,
    s: Scratch,
    pins: PathBuf,
}

impl Lab {
    fn new() -> Lab {
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
    fn daemon(&self, mode: &str, layer: bool, tables: &str) -> Daemon {
        let kernel = format!(
            "[kernel]\nenabled = {:?}\npin_dir = {:?}\n{EVERY_FINDING}{tables}",
            if layer { "on" } else { "off" },
            self.pins.display().to_string()
        );
        let d = daemon_with(&self.s, mode, &kernel);
        let st = d.status();
        let state = st["kernel"]["state"].as_str().unwrap_or_default().to_owned();
        assert_eq!(state == "on", layer, "kernel layer: {state}");
        d
    }

    /// Runs `script` in the container (`setup`: host lines before it starts, `$M` the rootfs).
    fn run(&self, setup: &str, script: &str) -> String {
        let o = self.s.run_in_container_with(setup, script, scaled(Duration::from_secs(30)));
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    /// Runs `script` in a container sharing the host's PID namespace (a `hostPID` pod), in a
    /// cgroup of its own (`cgroup`, made by the caller), as a runtime would put it.
    fn run_host_pid(&self, cgroup: &Path, script: &str) -> String {
        let setup = format!("echo $$ > {}/cgroup.procs\n", cgroup.display());
        let mut cmd = container_command_in(self.s.root(), &self.s.merged, &setup, script, false);
        cmd.stdin(std::process::Stdio::null());
        let o = run_with_deadline(cmd, scaled(Duration::from_secs(30)));
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    /// Runs `args` inside the running container `b` (its mount and PID namespaces and root, as
    /// `docker exec` does).
    fn exec_in(&self, b: &Background, args: &[&str]) -> String {
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

/// The outcome of each attack, in order: each prints `payload-ran` (it ran) or `<name>=<why>`
/// (refused, or could not be set up), and the script marks where each one starts.
fn outcomes(out: &str) -> Vec<(String, String)> {
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
fn findings_for(d: &Daemon, path: &str, category: &str, action: &str) -> Vec<serde_json::Value> {
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
struct Attack<'a> {
    name: &'a str,
    setup: &'a str,
    script: &'a str,
    /// The finding's `file.path` (a `*` after it: contains it).
    path: &'a str,
    category: &'a str,
    layer: &'a str,
}

/// Runs `attacks` in one session of the container (one PID namespace, as a container has)
/// against a daemon in `mode`; `layer`: the kernel layer is on. Enforce with the layer: each
/// is refused (EPERM) with a blocked finding. Audit with the layer: each runs, with an audited
/// finding. Returns each one's outcome (for the fallback's assertions).
fn attack(lab: &Lab, d: &Daemon, mode: &str, layer: bool, attacks: &[Attack<'_>]) -> Vec<(String, String)> {
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
    got
}

fn fsmount() -> Attack<'static> {
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
const VOLUME: &str =
    "mkdir -p \"$M/vol\"\nmount -t tmpfs vol \"$M/vol\"\ncp \"$M/opt/img/bb2\" \"$M/vol/tool\"\n";
/// The same volume (set up by [`VOLUME`]).
const SAME_VOLUME: &str = "";

fn open_tree() -> Attack<'static> {
    Attack {
        name: "open-tree-exec",
        setup: VOLUME,
        script: "/opt/img/dgattack open-tree-exec /vol tool\n",
        path: "/tool",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

fn proc_fd() -> Attack<'static> {
    Attack {
        name: "proc-fd-exec",
        setup: SAME_VOLUME,
        script: "/opt/img/dgattack proc-fd-exec /vol tool\n",
        path: "/tool",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

fn fresh_tmpfs() -> Attack<'static> {
    Attack {
        name: "fresh-tmpfs",
        setup: "",
        script: "mkdir -p /fresh && mount -t tmpfs t /fresh && cp /opt/img/bb2 /fresh/x && /opt/img/dgattack exec /fresh/x fresh-tmpfs\n",
        path: "/fresh/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

fn remount_exec() -> Attack<'static> {
    Attack {
        name: "remount-exec",
        setup: "mount -o remount,noexec \"$M/dev/shm\"\n",
        script: "cp /opt/img/bb2 /dev/shm/x && mount -o remount,exec /dev/shm && /opt/img/dgattack exec /dev/shm/x remount-exec\n",
        path: "/dev/shm/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

fn userns() -> Attack<'static> {
    Attack {
        name: "userns-tmpfs-exec",
        setup: "",
        script: "/opt/img/dgattack userns-tmpfs-exec /opt/img/bb2\n",
        path: "/tmp/dgattack-mnt/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

fn escape() -> Attack<'static> {
    Attack {
        name: "escape-exec",
        setup: "",
        script: "/opt/img/dgattack escape-exec /opt/img/bb2\n",
        path: "/x",
        category: "ADDED_BINARY_EXECUTED",
        layer: "mount",
    }
}

fn shm() -> Attack<'static> {
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
fn all_mount_attacks() -> Vec<Attack<'static>> {
    vec![fsmount(), open_tree(), proc_fd(), fresh_tmpfs(), remount_exec(), userns(), escape(), shm()]
}

fn mount_attacks(mode: &str, layer: bool) -> Vec<(String, String)> {
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

#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_enforce_mount_and_shm_attacks_are_refused() {
    require_vm();
    mount_attacks("enforce", true);
}

#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_audit_mount_and_shm_attacks_are_recorded() {
    require_vm();
    mount_attacks("audit", true);
}

/// Without the kernel layer: what fanotify alone stops, and the holes `status` lists.
#[test]
fn fallback_mount_attacks_and_the_holes_status_lists() {
    if !privileged() || in_vm() {
        return;
    }
    let got = mount_attacks("enforce", false);
    let get = |n: &str| got.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap();
    // Detached mounts are not seen by fanotify at all: the hole the status names.
    assert_eq!(get("fsmount-exec"), "ran");
    assert_eq!(get("open-tree-exec"), "ran");
    let lab = Lab::new();
    let d = lab.daemon("enforce", false, "");
    let st = d.status();
    let holes: Vec<&str> =
        st["containers"][0]["holes"].as_array().unwrap().iter().filter_map(|h| h.as_str()).collect();
    assert!(holes.iter().any(|h| h.starts_with("detached mounts")), "{holes:?}");
    assert!(holes.iter().any(|h| h.starts_with("a mount made or remounted exec")), "{holes:?}");
    assert!(st["kernel"]["state"].as_str().unwrap().starts_with("off: "), "{:#?}", st["kernel"]);
}

const LIBRARIES: &str = "[libraries]\nenabled = true\n";

fn aio_map() -> Attack<'static> {
    Attack {
        name: "aio-map",
        setup: "",
        script: "echo not-a-library > /tmp/t.so && /opt/img/dgattack aio-map /tmp/t.so /opt/img/libsrc.so\n",
        path: "/tmp/t.so",
        category: "ADDED_LIBRARY_LOADED",
        layer: "upper",
    }
}

fn open_tree_map() -> Attack<'static> {
    Attack {
        name: "open-tree-map",
        setup: "mkdir -p \"$M/libvol\"\nmount -t tmpfs libvol \"$M/libvol\"\ncp \"$M/opt/img/libsrc.so\" \"$M/libvol/lib.so\"\n",
        script: "/opt/img/dgattack open-tree-map /libvol lib.so\n",
        path: "/lib.so",
        category: "ADDED_LIBRARY_LOADED",
        layer: "mount",
    }
}

/// `[libraries]` in enforce mode: a library changed after it was decided (AIO) and one loaded
/// through a detached clone are refused at the mapping; the image's own libraries, mapped or
/// made executable by `mprotect` (a mapping of an overlay file holds the layer's file), and a
/// dynamic program still run.
#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_enforce_libraries_are_verified_at_the_mapping() {
    require_vm();
    let lab = Lab::new();
    let d = lab.daemon("enforce", true, LIBRARIES);
    attack(&lab, &d, "enforce", true, &[aio_map(), open_tree_map()]);
    let out = lab.run(
        "",
        "/usr/bin/true && echo dynamic-ran\n/opt/img/dgattack map-exec /opt/img/libsrc.so\n/opt/img/dgattack mprotect-exec /opt/img/libsrc.so\n",
    );
    for want in ["dynamic-ran", "map-exec=ran", "mprotect-exec=ran"] {
        assert!(out.contains(want), "{want}: {out}\n{}", d.log_text());
    }
    // A copy of a library in the writable layer, mapped and then made executable: the mapping
    // holds overlayfs's layer file, which the program follows back to the container's file.
    let out =
        lab.run("", "cp /opt/img/libsrc.so /tmp/copy.so\n/opt/img/dgattack mprotect-exec /tmp/copy.so\n");
    assert!(!out.contains("mprotect-exec=ran"), "{out}");
}

/// In audit mode the layer does not check mappings (fanotify records library loads): nothing is
/// refused.
#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_audit_libraries_are_not_refused() {
    require_vm();
    let lab = Lab::new();
    let d = lab.daemon("audit", true, LIBRARIES);
    let got = attack(&lab, &d, "audit", false, &[aio_map(), open_tree_map()]);
    assert!(got.iter().all(|(_, o)| o == "ran"), "{got:?}");
    let out = lab.run("", "/usr/bin/true && echo dynamic-ran\n");
    assert!(out.contains("dynamic-ran"), "{out}");
}

/// A memfd made while the container was audited, executed after the switch to enforce (the
/// layer's policy changes at the reload); and one made after `vm.memfd_noexec` was lowered.
#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_memfds_from_before_enforcement_are_refused() {
    require_vm();
    let lab = Lab::new();
    let d = lab.daemon("audit", true, "");
    let out = lab.s.merged.join(".dgtest/memfd.out");
    let ready = lab.s.merged.join(".dgtest/memfd.ready");
    let b = Background::start(
        lab.s.root(),
        &lab.s.merged,
        "",
        "/opt/img/dgattack memfd-hold /opt/img/bb2 /tmp/go > /.dgtest/memfd.out 2>&1 &\nwhile ! grep -q held /.dgtest/memfd.out; do sleep 0.05; done\ntouch /.dgtest/memfd.ready\nwait\nsleep 600\n",
        &ready,
    );
    d.reload_mode("enforce");
    std::fs::write(lab.s.merged.join("tmp/go"), b"").unwrap();
    assert!(
        wait_until(scaled(Duration::from_secs(10)), || std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("memfd-hold=")),
        "{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("memfd-hold=EPERM"), "{text}\n{}", d.log_text());
    let fs = findings_for(&d, "memfd:*", "FILELESS_EXECUTION", "blocked");
    assert!(fs.iter().any(|f| f["action"] == "blocked" && f["file"]["layer"] == "memfd"), "{fs:#?}");
    // Lowering vm.memfd_noexec in the container's own namespace (refused by the kernel once it
    // is 2, or not): a memfd still does not run.
    let out = lab.exec_in(
        &b,
        &["/bin/sh", "-c", "echo 0 > /proc/sys/vm/memfd_noexec; /opt/img/dgattack memfd-exec /opt/img/bb2"],
    );
    assert!(out.contains("memfd-exec=") && !out.contains("payload-ran"), "{out}");
}

/// A `hostPID` container (the host's PID namespace) in a cgroup of its own: told by its cgroup.
#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_host_pid_containers_are_told_by_their_cgroup() {
    require_vm();
    let lab = Lab::new();
    let cg = Path::new("/sys/fs/cgroup").join(format!("dgtest-{}", std::process::id()));
    std::fs::create_dir_all(&cg).unwrap();
    let d = lab.daemon("enforce", true, "");
    let out = lab
        .run_host_pid(&cg, "/opt/img/true && echo image-ran\n/opt/img/dgattack fsmount-exec /opt/img/bb2\n");
    assert!(out.contains("image-ran"), "{out}");
    assert!(out.contains("fsmount-exec=EPERM"), "{out}\n{}", d.log_text());
    assert!(d.status()["kernel"]["cgroups"].as_u64().unwrap() >= 1, "{}", d.log_text());
    let _ = std::fs::remove_dir(&cg);
}

/// What the daemon decided still runs with the layer on: a writable-layer binary a rule allows,
/// a copied-up image binary, the image's own binaries.
#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_what_was_decided_still_runs() {
    require_vm();
    let lab = Lab::new();
    let d = lab.daemon(
        "enforce",
        true,
        &format!(
            "{LIBRARIES}[[policy.rules]]\nname = \"tools\"\naction = \"allow\"\npaths = [\"/tmp/ok/*\"]\n"
        ),
    );
    let out = lab.run(
        "",
        "mkdir -p /tmp/ok && cp /opt/img/bb2 /tmp/ok/tool && /opt/img/dgattack exec /tmp/ok/tool allowed\n\
         touch /opt/img/true && /opt/img/true && echo copied-up-ran\n/usr/bin/true && echo dynamic-ran\n\
         cp /opt/img/bb2 /tmp/drift && /opt/img/dgattack exec /tmp/drift drift\n",
    );
    assert!(out.contains("payload-ran"), "the allowed tool: {out}\n{}", d.log_text());
    assert!(out.contains("copied-up-ran") && out.contains("dynamic-ran"), "{out}");
    assert!(out.contains("drift=EPERM"), "{out}");
}

/// The daemon killed in enforce mode: the pinned program keeps refusing what is not the image's
/// (an added binary, a fresh tmpfs, a memfd) while image binaries run; the next daemon takes the
/// program over instead of attaching it a second time.
#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_the_layer_holds_while_the_daemon_is_down() {
    require_vm();
    let lab = Lab::new();
    let mut d = lab.daemon("enforce", true, "");
    let ready = lab.s.merged.join(".dgtest/up");
    let b = Background::start(lab.s.root(), &lab.s.merged, "", "touch /.dgtest/up\nsleep 600\n", &ready);
    assert!(
        wait_until(scaled(Duration::from_secs(10)), || d.status()["kernel"]["pid_namespaces"].as_u64()
            >= Some(1)),
        "{}",
        d.log_text()
    );
    d.kill();
    let down: [(&[&str], &str); 4] = [
        (&["/bin/cp", "/opt/img/bb2", "/tmp/added"], ""),
        (&["/opt/img/dgattack", "exec", "/tmp/added", "added"], "added=EPERM"),
        (&["/opt/img/dgattack", "fsmount-exec", "/opt/img/bb2"], "fsmount-exec=EPERM"),
        (&["/opt/img/dgattack", "memfd-exec", "/opt/img/bb2"], "memfd-exec="),
    ];
    for (cmd, want) in down {
        let out = lab.exec_in(&b, cmd);
        assert!(out.contains(want) && !out.contains("payload-ran"), "{cmd:?}: {out}");
    }
    let out = lab.exec_in(&b, &["/bin/busybox", "echo", "image-ran"]);
    assert!(out.contains("image-ran"), "{out}");
    // The next daemon takes the pinned program over.
    let d2 = Daemon::start_with_config(&d.config, &d.spool);
    let k = d2.status()["kernel"].clone();
    assert_eq!(k["taken_over"], true, "{k:#?}");
    let versions: Vec<_> = std::fs::read_dir(&lab.pins).unwrap().flatten().collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let links = std::fs::read_dir(versions[0].path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
        .count();
    assert_eq!(links, 3);
    // Attached once: one refused exec counts once.
    let before = k["refused"].as_u64().unwrap();
    let out = lab.exec_in(&b, &["/opt/img/dgattack", "fsmount-exec", "/opt/img/bb2"]);
    assert!(out.contains("fsmount-exec=EPERM"), "{out}");
    assert!(
        wait_until(scaled(Duration::from_secs(5)), || d2.status()["kernel"]["refused"].as_u64()
            == Some(before + 1)),
        "{:#?}",
        d2.status()["kernel"]
    );
    assert_eq!(d2.status()["kernel"]["refused"].as_u64(), Some(before + 1));
}

/// Boots the VM and runs every `vm_` test of this file there.
#[test]
fn kernel_layer_in_a_vm() {
    if in_vm() || !privileged() {
        return;
    }
    let want = count_vm_tests();
    // DGVM_FILTER runs some of them only (while working on one); the count is then not checked.
    let filter = std::env::var("DGVM_FILTER").unwrap_or_else(|_| "vm_".into());
    let run = vm::run_ignored_in_vm(&filter, &VM_TOOLS, &[], Duration::from_secs(2400));
    let tail: Vec<&str> = run.output.lines().rev().take(400).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert_eq!(run.status, Some(0), "the VM run failed:\n{}", tail.join("\n"));
    if filter == "vm_" {
        assert_eq!(run.passed(), want, "not every VM test ran:\n{}", tail.join("\n"));
    }
    assert!(run.output.contains("LSM lockdown,capability,landlock,yama,bpf"), "{}", tail.join("\n"));
}

/// The `vm_` tests of this file, counted in its source (so that one the VM did not run fails).
fn count_vm_tests() -> usize {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel_layer.rs")).unwrap();
    src.lines().filter(|l| l.trim_start().starts_with("fn vm_")).count()
}
