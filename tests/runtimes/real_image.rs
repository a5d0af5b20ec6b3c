//! A real Debian image as a container's image, on the host: the cached debootstrap tree of
//! `scripts/debian-image.sh` is the lower layer (the image), with its dynamic loader, libc,
//! python3, perl, bash and dpkg. What busybox images do not show: dynamic programs (every
//! exec is two: the program and its loader), shell scripts of the image, copy-ups of real
//! binaries, and a writable layer on another filesystem than the image (overlayfs then
//! reports layer files with pseudo devices).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::guest::debian_image;
use crate::common::*;

const T: Duration = Duration::from_secs(300);

/// A container of the Debian image: its writable layer beside it (as runtimes keep it) or on a
/// tmpfs of its own. Unmounted on drop.
struct DebianContainer {
    dir: tempfile::TempDir,
    merged: PathBuf,
    tmpfs: Option<PathBuf>,
}

impl DebianContainer {
    fn new(upper_on_tmpfs: bool) -> DebianContainer {
        let image = debian_image();
        let dir = tempfile::Builder::new().prefix("dgtest-deb-").tempdir_in("/tmp").unwrap();
        let rw = if upper_on_tmpfs {
            let t = dir.path().join("t");
            std::fs::create_dir(&t).unwrap();
            nix::mount::mount(Some("tmpfs"), &t, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
                .unwrap();
            t
        } else {
            dir.path().to_path_buf()
        };
        let merged = dir.path().join("merged");
        for d in [rw.join("upper"), rw.join("work"), merged.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            image.display(),
            rw.join("upper").display(),
            rw.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .expect("mount overlay");
        let tmpfs = upper_on_tmpfs.then_some(rw);
        DebianContainer { dir, merged, tmpfs }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `script` with the image's own `/bin/sh` (dash) inside the container.
    fn run(&self, script: &str) -> std::process::Output {
        self.run_with("", script)
    }

    /// [`Self::run`] after `setup` (host shell lines, `$M` is the rootfs).
    fn run_with(&self, setup: &str, script: &str) -> std::process::Output {
        let cmd = container_command_with_shell(self.root(), &self.merged, setup, script, true, "/bin/sh");
        run_with_deadline(cmd, T)
    }

    fn daemon(&self, mode: &str, tables: &str) -> Daemon {
        Daemon::start(
            &self.root().join("d"),
            DaemonOpts { mode, globs: vec![self.merged.clone()], extra_tables: tables, ..Default::default() },
        )
    }
}

impl Drop for DebianContainer {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
        if let Some(t) = &self.tmpfs {
            let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `touch` opens the file for writing without blocking; against the daemon's hold on a file it
/// just allowed, that open fails (EAGAIN) and leaves the hold's lease being broken. The next
/// exec of the file, and of every dynamic program while it is the loader, must still run.
const TOUCH_THEN_EXEC: &str = "n=0\n\
for i in $(seq 1000); do\n\
  touch /usr/bin/ls /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n\
  /usr/bin/ls / >/dev/null || n=$((n+1))\n\
  chmod 755 /usr/bin/cat; /usr/bin/cat /dev/null || n=$((n+1))\n\
done\n\
echo refused=$n\n";

#[test]
fn touching_an_image_program_or_the_loader_right_before_it_runs_never_refuses_it() {
    if !privileged() {
        return;
    }
    let c = DebianContainer::new(false);
    let d = c.daemon("enforce", "");
    let t = std::time::Instant::now();
    let out = c.run(TOUCH_THEN_EXEC);
    println!("1,000 rounds of touch-then-exec (ls and the loader, chmod then cat) in {:?}", t.elapsed());
    assert_eq!(results(&out).get("refused"), Some(&0), "{out:?}\n{}", d.log_text());
    std::thread::sleep(Duration::from_millis(300));
    let f = read_findings(&d.spool);
    assert!(f.is_empty(), "the image's bytes after a copy-up are no finding: {f:#?}");
    let st = d.status();
    assert_eq!(st["writer_hold"]["unsettled"], 0, "{}", st["writer_hold"]);
    assert!(st["decisions"]["denied"] == 0, "{}", st["decisions"]);
    println!("writer hold: {}", st["writer_hold"]);
}

/// What a container of this image runs, and an attacker's drift, in one workload.
const DEBIAN_WORKLOAD: &str = "/usr/bin/ls / >/dev/null; echo image=$?\n\
python3 -c 'import json, ssl'; echo image_python=$?\n\
perl -MPOSIX -e 1; echo image_perl=$?\n\
sh /usr/bin/zcat --version >/dev/null; echo image_script=$?\n\
dpkg-query -W bash >/dev/null; echo image_dpkg=$?\n\
cp /usr/bin/ls /tmp/added; /tmp/added >/dev/null; echo added=$?\n\
printf 'echo pwned\\n' > /tmp/x.sh; sh /tmp/x.sh; echo script=$?\n\
echo >> /usr/bin/rgrep; /usr/bin/rgrep -q x /dev/null; echo modified=$?\n";

#[test]
fn a_writable_layer_on_another_filesystem_than_the_image_is_still_decided() {
    if !privileged() {
        return;
    }
    // Overlayfs reports the files of a layer on another filesystem with a pseudo device of
    // that layer, not the overlay's: the container is told by the overlay's fsid.
    let c = DebianContainer::new(true);
    let d = c.daemon("enforce", "");
    let out = c.run(DEBIAN_WORKLOAD);
    let r = results(&out);
    for k in ["image", "image_python", "image_perl", "image_script", "image_dpkg"] {
        assert_eq!(r.get(k), Some(&0), "{k}: {out:?}\n{}", d.log_text());
    }
    for k in ["added", "script", "modified"] {
        assert_eq!(r.get(k), Some(&126), "{k} must be refused: {out:?}\n{}", d.log_text());
    }
    let f = d.findings(3);
    let mut cats: Vec<(&str, &str)> =
        f.iter().map(|x| (x["file"]["path"].as_str().unwrap(), x["category"].as_str().unwrap())).collect();
    cats.sort();
    assert_eq!(
        cats,
        [
            ("/tmp/added", "ADDED_BINARY_EXECUTED"),
            ("/tmp/x.sh", "ADDED_SCRIPT_EXECUTED"),
            ("/usr/bin/rgrep", "MODIFIED_BINARY_EXECUTED")
        ]
    );
    let st = d.status();
    assert_eq!(st["decisions"]["not_container"], 0, "{}", st["decisions"]);
    assert_eq!(st["health"]["state"], "ok", "{:#}", st["health"]);
}

#[test]
fn the_images_own_programs_scripts_and_interpreters_raise_nothing_in_audit_mode() {
    if !privileged() {
        return;
    }
    let c = DebianContainer::new(false);
    let d = c.daemon("audit", "[findings]\naggregate_window_secs = 0\n");
    let images_own =
        DEBIAN_WORKLOAD.lines().filter(|l| l.contains("echo image")).collect::<Vec<_>>().join("\n");
    let out = c.run(&format!("{images_own}\ntouch /usr/bin/ls; /usr/bin/ls >/dev/null; echo touched=$?\n"));
    let r = results(&out);
    assert_eq!(r.len(), 6, "{out:?}");
    assert!(r.values().all(|v| *v == 0), "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_findings(&d.spool).is_empty(), "{:#?}", read_findings(&d.spool));
}

#[path = "real_image/interpreters.rs"]
mod interpreters;

#[path = "real_image/detections.rs"]
mod detections;
