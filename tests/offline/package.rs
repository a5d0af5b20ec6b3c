//! The Debian package, built with cargo-deb and installed for real with dpkg, then removed
//! and purged. (The .rpm is built by cargo-generate-rpm; this machine has no rpm to install it.)
//! The Helm chart and the manifests rendered from it (`chart`).

#[path = "package/chart.rs"]
mod chart;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::runtimes::tools_present;
use crate::common::*;

/// Both tests run scripts/package.sh, which regenerates target/assets: one at a time.
static PACKAGING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sh(cmd: &str) -> std::process::Output {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]).current_dir(env!("CARGO_MANIFEST_DIR"));
    run_with_deadline(c, Duration::from_secs(600))
}

struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        let _ = sh("dpkg -P driftgate >/dev/null 2>&1");
    }
}

#[test]
fn the_deb_installs_enables_removes_and_purges() {
    if !privileged() || !tools_present(&["dpkg", "cargo-deb"]) {
        return;
    }
    if sh("dpkg -s driftgate >/dev/null 2>&1").status.success() {
        eprintln!("SKIPPED: a driftgate package is already installed on this machine; not touching it");
        assert!(std::env::var_os("CI").is_none(), "CI machines start clean");
        return;
    }
    let guard = PACKAGING.lock().unwrap_or_else(|e| e.into_inner());
    let out = sh("scripts/package.sh deb --profile dev");
    drop(guard);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deb = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/target/debian"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let _purge = Purge;
    let out = sh(&format!("dpkg -i {}", deb.display()));
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The files.
    assert!(sh("/usr/bin/driftgate --version").status.success());
    let unit = ["/lib/systemd/system/driftgate.service", "/usr/lib/systemd/system/driftgate.service"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the unit is installed");
    let out = sh(&format!("systemd-analyze verify --man=no {unit}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = std::fs::metadata("/etc/driftgate/driftgate.toml").unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&cfg.permissions()) & 0o777, 0o600);
    assert!(
        sh("/usr/bin/driftgate config check").status.success(),
        "the shipped config is valid and the default path"
    );
    assert!(Path::new("/usr/share/man/man8/driftgate.8.gz").exists());
    assert!(Path::new("/usr/share/man/man8/driftgate-findings.8.gz").exists());
    assert!(Path::new("/usr/share/bash-completion/completions/driftgate").exists());
    let state = std::fs::metadata("/var/lib/driftgate").unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&state.permissions()) & 0o777, 0o700);
    // Installing enables the service (systemd is not running here, so it is not started).
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/driftgate.service");
    assert!(wants.exists() || wants.is_symlink(), "enabled");

    // Removing keeps the configuration; purging removes it and the state.
    assert!(sh("dpkg -r driftgate").status.success());
    assert!(!Path::new("/usr/bin/driftgate").exists());
    assert!(Path::new("/etc/driftgate/driftgate.toml").exists(), "conffiles survive a remove");
    assert!(sh("dpkg -P driftgate").status.success());
    assert!(!Path::new("/etc/driftgate/driftgate.toml").exists());
    assert!(!Path::new("/var/lib/driftgate").exists(), "purge removes the state");
    assert!(!wants.is_symlink(), "purge removes the enablement");
}

#[test]
fn the_rpm_is_built_with_the_same_files() {
    if !privileged() || !tools_present(&["cargo-generate-rpm"]) {
        return;
    }
    let _guard = PACKAGING.lock().unwrap_or_else(|e| e.into_inner());
    let out = sh("scripts/package.sh rpm --profile dev");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rpm = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/target/generate-rpm"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "rpm"))
        .expect("an .rpm");
    let bytes = std::fs::read(&rpm).unwrap();
    assert_eq!(&bytes[..4], &[0xed, 0xab, 0xee, 0xdb], "RPM lead magic");
    // The payload's file list is in the header, uncompressed.
    for f in ["driftgate.service", "driftgate.toml", "driftgate-findings.8.gz", "bash-completion"] {
        assert!(bytes.windows(f.len()).any(|w| w == f.as_bytes()), "{f} in {}", rpm.display());
    }
}
