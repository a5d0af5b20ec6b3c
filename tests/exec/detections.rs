//! Detections beyond drift, from the same held exec: what running a drift file grants
//! (set-user-ID, set-group-ID, file capabilities: MITRE T1548.001).

use std::time::Duration;

use super::response::{dg, stderr};
use crate::common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn by_path<'a>(findings: &'a [Value], path: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["file"]["path"] == path)
        .unwrap_or_else(|| panic!("no finding for {path}: {findings:#?}"))
}

fn has_t1548(f: &Value) -> bool {
    f["mitre"].as_array().unwrap().iter().any(|t| t == "T1548.001")
}

/// Drift that would run set-user-ID, set-group-ID or with file capabilities is refused like any
/// drift, and its finding says what it would have been granted, at HIGH; plain drift stays
/// LOW and says nothing of privilege.
#[test]
fn drift_that_raises_privilege_says_what_it_grants_at_high_severity() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "enforce", EVERY_FINDING);
    // The capability is set from the host, through the overlay (busybox has no setcap).
    let out = s.run_in_container("mkdir /tmp/cap && cp /opt/img/true /tmp/cap/true\necho ok=0\n", T);
    assert_eq!(results(&out)["ok"], 0, "{out:?}");
    let capped = s.merged.join("tmp/cap/true");
    let o = std::process::Command::new("setcap")
        .arg("cap_net_raw,cap_sys_admin+ep")
        .arg(&capped)
        .output()
        .unwrap();
    assert!(o.status.success(), "setcap: {}", String::from_utf8_lossy(&o.stderr));
    let out = s.run_in_container(
        "mkdir /tmp/uid /tmp/gid /tmp/plain\n\
         cp /opt/img/true /tmp/uid/true && chmod 4755 /tmp/uid/true && /tmp/uid/true; echo suid=$?\n\
         cp /opt/img/true /tmp/gid/true && chmod 2755 /tmp/gid/true && /tmp/gid/true; echo sgid=$?\n\
         /tmp/cap/true; echo cap=$?\n\
         cp /opt/img/true /tmp/plain/true && /tmp/plain/true; echo plain=$?\n",
        T,
    );
    let r = results(&out);
    for k in ["suid", "sgid", "cap", "plain"] {
        assert_eq!(r[k], 126, "{k} refused: {out:?}");
    }
    let f = d.findings(4);
    let su = by_path(&f, "/tmp/uid/true");
    assert_eq!(
        (su["severity"].as_str(), su["file"]["setuid"].as_bool()),
        (Some("HIGH"), Some(true)),
        "{su:#}"
    );
    assert!(su["file"].get("setgid").is_none() && has_t1548(su), "{su:#}");
    let sg = by_path(&f, "/tmp/gid/true");
    assert_eq!(
        (sg["severity"].as_str(), sg["file"]["setgid"].as_bool()),
        (Some("HIGH"), Some(true)),
        "{sg:#}"
    );
    let cap = by_path(&f, "/tmp/cap/true");
    assert_eq!(cap["file"]["capabilities"], serde_json::json!(["cap_net_raw", "cap_sys_admin"]), "{cap:#}");
    assert_eq!(cap["severity"], "HIGH");
    let plain = by_path(&f, "/tmp/plain/true");
    assert_eq!(plain["severity"], "LOW", "{plain:#}");
    assert!(plain["file"].get("setuid").is_none() && plain["file"].get("capabilities").is_none());
    assert!(!has_t1548(plain));
    // The exports carry it: OCSF (validated) and Falco.
    let spool = d.spool.to_str().unwrap();
    let o = dg(&["findings", "--spool-dir", spool, "--format", "ocsf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ocsf: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let e = ocsf.iter().find(|e| e["unmapped"]["driftgate"]["file_setuid"] == true).expect("setuid in OCSF");
    assert!(ocsf_errors(e).is_empty(), "{:?}", ocsf_errors(e));
    let attacks = e["finding_info"]["attacks"].as_array().unwrap();
    assert!(
        attacks.iter().any(|a| a["technique"]["uid"] == "T1548.001" && a["tactic"]["uid"] == "TA0004"),
        "{e:#}"
    );
    let o = dg(&["findings", "--spool-dir", spool, "--format", "falco"]);
    let falco = String::from_utf8_lossy(&o.stdout);
    assert!(falco.contains("\"driftgate.file_capabilities\":\"cap_net_raw,cap_sys_admin\""), "{falco}");
}

/// In audit mode the same drift runs, and is recorded at HIGH. (The image's `true` is busybox,
/// which runs the applet its name says: each copy keeps the name `true`.)
#[test]
fn audited_setuid_drift_runs_and_is_recorded_at_high_severity() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "audit", EVERY_FINDING);
    let out = s.run_in_container(
        "mkdir /tmp/uid && cp /opt/img/true /tmp/uid/true && chmod 4755 /tmp/uid/true && /tmp/uid/true; echo suid=$?\n",
        T,
    );
    assert_eq!(results(&out)["suid"], 0, "ran: {out:?}");
    let f = d.findings(1);
    let su = by_path(&f, "/tmp/uid/true");
    assert_eq!((su["action"].as_str(), su["severity"].as_str()), (Some("audited"), Some("HIGH")), "{su:#}");
    assert_eq!(su["file"]["setuid"], true);
}
