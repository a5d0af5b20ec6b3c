//! The kernel-layer VM: Debian's own kernel (booted with `lsm=...,bpf`, as a node would be) under
//! QEMU (`scripts/kernel-vm.sh`), for what the build machine's kernel will not run: it lists
//! BPF LSM as active but refuses to load LSM programs. A suite's VM tests are `#[ignore]`d
//! tests of its own binary; one ordinary test boots the VM and runs them there, with the same
//! helpers (scratch overlay containers, the daemon under test), the test binary and driftgate
//! copied in at their own paths, the static tools prebuilt under [`VM_TOOLS`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Set (to `1`) in the VM.
pub const IN_VM: &str = "DRIFTGATE_IN_VM";
/// Where the VM has the static tools of `tests/tools/`.
pub const VM_TOOLS: &str = "/opt/dgvm";

pub fn in_vm() -> bool {
    std::env::var_os(IN_VM).is_some()
}

/// `d`, or longer in the VM (software emulation runs several times slower).
pub fn scaled(d: Duration) -> Duration {
    if in_vm() {
        d * 6
    } else {
        d
    }
}

/// `tests/tools/<name>.c`, static: prebuilt in the VM, built into `dir` elsewhere.
pub fn tool(dir: &Path, name: &str) -> PathBuf {
    if in_vm() {
        Path::new(VM_TOOLS).join(name)
    } else {
        super::static_tool(dir, name)
    }
}

/// For a VM test run outside the VM (`cargo test -- --ignored`): says where it runs.
pub fn require_vm() {
    assert!(
        in_vm(),
        "this test runs in the kernel-layer VM: run the suite's ordinary test that boots it (tests/kernel_layer.rs: kernel_layer_in_a_vm)"
    );
}

/// What a VM run printed, and the test binary's exit status there.
pub struct VmRun {
    pub output: String,
    pub status: Option<i32>,
}

impl VmRun {
    /// `N passed` of the test harness's summary line.
    pub fn passed(&self) -> usize {
        self.output
            .lines()
            .filter_map(|l| l.strip_prefix("test result: "))
            .filter_map(|l| l.split("; ").find_map(|p| p.strip_suffix(" passed")))
            .filter_map(|n| n.trim_start_matches(|c: char| !c.is_ascii_digit()).parse::<usize>().ok())
            .sum()
    }
}

/// Boots the VM and runs this test binary's ignored tests whose names contain `filter`, one at
/// a time, with `env`; the tools named are built static and put under [`VM_TOOLS`].
pub fn run_ignored_in_vm(filter: &str, tools: &[&str], env: &[(&str, &str)], limit: Duration) -> VmRun {
    let dir = tempfile::Builder::new().prefix("dgvm-").tempdir_in("/tmp").unwrap();
    let d = dir.path();
    let exe = std::env::current_exe().unwrap();
    let driftgate = PathBuf::from(super::driftgate_bin());
    for bin in [&exe, &driftgate] {
        let dst = d.join(bin.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        // Without debug info: the VM's root file system is in its memory.
        let o = Command::new("strip").arg("-g").arg("-o").arg(&dst).arg(bin).output().unwrap();
        assert!(o.status.success(), "strip {}: {o:?}", bin.display());
    }
    std::fs::create_dir_all(d.join("usr/bin")).unwrap();
    std::fs::copy(super::BUSYBOX, d.join("usr/bin/busybox")).unwrap();
    let tools_dir = d.join(VM_TOOLS.trim_start_matches('/'));
    std::fs::create_dir_all(&tools_dir).unwrap();
    for t in tools {
        super::static_tool(&tools_dir, t);
    }
    // The initramfs is the rootfs mount, which pivot_root cannot leave: the test runs under a
    // bind mount of it moved over it (as switch_root does), where the scratch containers'
    // pivot_root works. /tmp becomes a tmpfs, with what the initramfs put there (the test
    // binary, when the tree is under /tmp) moved into it.
    let envs: String = env.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
    let init = "#!/bin/sh\nmkdir -p /newroot\nmount --bind / /newroot\ncd /newroot\nmount --move . /\nexec chroot . /init2\n";
    let init2 = format!(
        "#!/bin/sh\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         mkdir -p /dev/pts /dev/shm\nmount -t devpts devpts /dev/pts\nmount -t tmpfs shm /dev/shm\n\
         mount -t securityfs none /sys/kernel/security\nmount -t bpf bpf /sys/fs/bpf\n\
         mount -t cgroup2 none /sys/fs/cgroup\nmkdir -p /.dgvm-tmp\nmount --bind /tmp /.dgvm-tmp\n\
         mount -t tmpfs tmpfs /tmp\ncp -a /.dgvm-tmp/. /tmp/\nchmod 1777 /tmp\nrm -rf /.dgvm-tmp/*\numount /.dgvm-tmp\n\
         mount -t tmpfs tmpfs /run\n\
         for m in /usr/lib/driftgate-vm/overlay.ko*; do insmod \"$m\"; done\n\
         hostname dgvm\necho \"DGVM-KERNEL $(uname -r) LSM $(cat /sys/kernel/security/lsm)\"\n\
         {envs}export {IN_VM}=1 RUST_BACKTRACE=1\ncd {cwd}\n\
         {exe} --ignored --test-threads=1 --nocapture {filter} 2>&1\n\
         echo \"DGVM-EXIT $?\"\necho o >/proc/sysrq-trigger\nsleep 30\n",
        cwd = env!("CARGO_MANIFEST_DIR"),
        exe = exe.display(),
    );
    std::fs::write(d.join("init"), init).unwrap();
    std::fs::write(d.join("init2"), init2).unwrap();
    for f in ["init", "init2"] {
        super::write_exec(&d.join(f), std::fs::read(d.join(f)).unwrap().as_slice());
    }
    std::fs::create_dir_all(d.join(env!("CARGO_MANIFEST_DIR").trim_start_matches('/'))).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kernel-vm.sh");
    let mut cmd = Command::new(script);
    cmd.arg("run").arg(d).arg(limit.as_secs().to_string());
    let o = super::run_with_deadline(cmd, limit + Duration::from_secs(60));
    let output = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let status =
        output.lines().find_map(|l| l.trim().strip_prefix("DGVM-EXIT ").and_then(|n| n.trim().parse().ok()));
    VmRun { output, status }
}
