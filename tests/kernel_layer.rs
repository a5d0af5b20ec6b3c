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
#[path = "kernel_layer/lab.rs"]
mod lab;

use std::path::Path;
use std::time::Duration;

use common::vm::{self, in_vm, require_vm, scaled};
use common::*;
use lab::*;

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
    // A remount to exec and a new tmpfs are marked as the container's mount table changes
    // (its mountinfo polls on remounts too): once marked, their files are decided.
    let out = lab.run(
        "mount -o remount,noexec \"$M/dev/shm\"\n",
        "cp /opt/img/bb2 /dev/shm/x && mount -o remount,exec /dev/shm && sleep 0.5 && /opt/img/dgattack exec /dev/shm/x remounted\n\
         mkdir -p /fresh && mount -t tmpfs t /fresh && cp /opt/img/bb2 /fresh/x && sleep 0.5 && /opt/img/dgattack exec /fresh/x fresh\n",
    );
    assert!(out.contains("remounted=EPERM"), "{out}\n{}", d.log_text());
    assert!(out.contains("fresh=EPERM"), "{out}\n{}", d.log_text());
    assert!(d.log_text().contains("marked as its mount table changed"), "{}", d.log_text());
}

/// Without the kernel layer, a memfd made while the container was audited runs after the switch
/// to enforce (vm.memfd_noexec applies to new memfds only): the recorder keeps listening for
/// such containers and records it.
#[test]
fn fallback_memfds_from_before_enforcement_are_recorded() {
    if !privileged() || in_vm() {
        return;
    }
    let lab = Lab::new();
    let d = lab.daemon("audit", false, "");
    let (_b, out) = lab.memfd_held();
    d.reload_mode("enforce");
    // The next scan sets vm.memfd_noexec = 2 in the container's namespace.
    assert!(
        wait_until(Duration::from_secs(10), || d.status()["containers"][0]["memfd_noexec"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == "2"))),
        "{}",
        d.log_text()
    );
    std::fs::write(lab.s.merged.join("tmp/go"), b"").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("payload-ran")),
        "{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    let fs = findings_for(&d, "memfd:*", "FILELESS_EXECUTION", "audited");
    assert!(fs.iter().any(|f| f["category"] == "FILELESS_EXECUTION"), "{fs:#?}\n{}", d.log_text());
    assert_eq!(d.status()["coverage"]["fileless_audit"], "listening");
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
    let (b, out) = lab.memfd_held();
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
/// a copied-up image file (a script: small enough to hash at once under emulation), the
/// image's own binaries.
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
         touch /opt/img/script.sh && /opt/img/script.sh && echo copied-up-ran\n/usr/bin/true && echo dynamic-ran\n\
         cp /opt/img/bb2 /tmp/drift && /opt/img/dgattack exec /tmp/drift drift\n",
    );
    assert!(out.contains("payload-ran"), "the allowed tool: {out}\n{}", d.log_text());
    assert!(
        out.contains("copied-up-ran") && out.contains("dynamic-ran"),
        "{out}\n{}\n{:#?}",
        d.log_text(),
        read_findings(&d.spool)
    );
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

#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_podman_enforce_with_cap_sys_admin() {
    require_vm();
    podman_attacks("enforce", false);
}

#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_podman_audit_with_cap_sys_admin() {
    require_vm();
    podman_attacks("audit", false);
}

#[test]
#[ignore = "runs in the kernel-layer VM (kernel_layer_in_a_vm)"]
fn vm_podman_enforce_in_a_user_namespace() {
    require_vm();
    podman_attacks("enforce", true);
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
    println!("{}", tail.join("\n"));
    if filter == "vm_" {
        assert_eq!(run.passed(), want, "not every VM test ran:\n{}", tail.join("\n"));
    } else {
        assert!(run.passed() >= 1, "no VM test ran:\n{}", tail.join("\n"));
    }
    assert!(run.output.contains("LSM lockdown,capability,landlock,yama,bpf"), "{}", tail.join("\n"));
}

/// The `vm_` tests of this file, counted in its source (so that one the VM did not run fails).
fn count_vm_tests() -> usize {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel_layer.rs")).unwrap();
    src.lines().filter(|l| l.trim_start().starts_with("fn vm_")).count()
}
