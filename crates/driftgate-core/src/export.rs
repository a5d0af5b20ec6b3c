//! Findings in other systems' shapes, for SIEMs and alert routers: an OCSF Detection Finding
//! (`findings --format ocsf`, `[export] ocsf_file`) and Falco's output record (the webhook's
//! `falco` format, which Falcosidekick takes and forwards).
//!
//! Pure mappings from a [`Finding`]: what driftgate knows that the target schema has no
//! field for goes to OCSF's `unmapped` and Falco's `output_fields` under `driftgate.*`.

use serde_json::{json, Map, Value};

use crate::finding::Finding;
use crate::model::{Action, Category, Severity};

/// The OCSF schema version the mapping follows (1.4 added `is_alert`).
pub const OCSF_VERSION: &str = "1.4.0";

/// `ADDED_BINARY_EXECUTED` → `Added Binary Executed`: the finding's title, as the cloud
/// detectors name it.
pub fn title(c: Category) -> String {
    c.as_str()
        .split('_')
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(first) => first.to_string() + &cs.as_str().to_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A MITRE ATT&CK technique driftgate reports: (id, name, tactic id, tactic name).
pub fn technique(id: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match id {
        "T1105" => ("Ingress Tool Transfer", "TA0011", "Command and Control"),
        "T1106" => ("Native API", "TA0002", "Execution"),
        "T1036" => ("Masquerading", "TA0005", "Defense Evasion"),
        "T1195" => ("Supply Chain Compromise", "TA0001", "Initial Access"),
        "T1204.003" => ("User Execution: Malicious Image", "TA0002", "Execution"),
        "T1059" => ("Command and Scripting Interpreter", "TA0002", "Execution"),
        "T1059.004" => ("Command and Scripting Interpreter: Unix Shell", "TA0002", "Execution"),
        "T1620" => ("Reflective Code Loading", "TA0005", "Defense Evasion"),
        "T1574.006" => ("Hijack Execution Flow: Dynamic Linker Hijacking", "TA0005", "Defense Evasion"),
        "T1129" => ("Shared Modules", "TA0002", "Execution"),
        "T1562.001" => ("Impair Defenses: Disable or Modify Tools", "TA0005", "Defense Evasion"),
        "T1548.001" => {
            ("Abuse Elevation Control Mechanism: Setuid and Setgid", "TA0004", "Privilege Escalation")
        }
        _ => return None,
    })
}

fn epoch_ms(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Drops the keys whose value is null, so records carry only what is known.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, compact(v))).collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(compact).collect()),
        other => other,
    }
}

fn ocsf_severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// The finding as an OCSF Detection Finding (class 2004, activity Create), with the Container
/// and Host profiles: the process (and its parents), the file with its SHA-256, the container
/// and its image, the pod as the resource, MITRE ATT&CK in `finding_info.attacks`.
pub fn ocsf(f: &Finding) -> Value {
    let (severity_id, severity) = ocsf_severity(f.severity);
    // The security_control profile: a refused exec is Denied/Blocked; an audited one ran and
    // was seen, which OCSF pairs as Observed/Detected.
    let (action_id, action, disposition_id, disposition) = match f.action {
        Action::Blocked => (2, "Denied", 2, "Blocked"),
        Action::Audited => (3, "Observed", 15, "Detected"),
    };
    let time = epoch_ms(&f.time);
    let sha = f.file.sha256.as_ref();
    let file = json!({
        "name": f.file.path.rsplit('/').next(),
        "path": f.file.path,
        "size": f.file.size,
        "type_id": 1,
        "type": "Regular File",
        "hashes": sha.map(|h| vec![json!({"algorithm_id": 3, "algorithm": "SHA-256", "value": h})]),
    });
    let parent = f.process.ancestors.first().map(|a| {
        json!({
            "pid": a.pid,
            "name": a.comm,
            "cmd_line": a.args.as_ref().map(|x| x.join(" ")),
            "file": a.exe.as_ref().map(|e| exe_file(e)),
        })
    });
    let parent = parent.or_else(|| {
        f.process
            .parent
            .as_ref()
            .map(|p| json!({"pid": p.pid, "name": p.comm, "file": p.exe.as_ref().map(|e| exe_file(e))}))
    });
    let c = &f.container;
    // OCSF's pod UUID is a UUID; a runtime's other pod ids stay in `unmapped`.
    let pod_uuid = c.pod_uid.as_ref().filter(|u| is_uuid(u));
    let container = json!({
        "uid": c.id,
        "name": c.name,
        "runtime": c.runtime,
        // The image's uid is its digest; without one, the reference names it.
        "image": c.image.as_ref().map(|i| json!({"name": i, "uid": c.image_digest.as_ref().unwrap_or(i)})),
        "pod_uuid": pod_uuid,
        "orchestrator": c.pod_name.as_ref().map(|_| "Kubernetes"),
        "labels": (!c.labels.is_empty()).then(|| c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()),
    });
    let process = json!({
        "pid": f.process.pid,
        "tid": f.process.tid,
        "name": f.process.comm,
        "cmd_line": f.process.args.as_ref().map(|a| a.join(" ")),
        "working_directory": f.process.cwd,
        "namespace_pid": f.process.container_pid,
        "file": f.process.exe.as_ref().map(|e| exe_file(e)),
        "user": f.process.uid.map(|u| json!({"uid": u.to_string()})),
        "session": f.process.tty.as_ref().map(|t| json!({"terminal": t})),
        "parent_process": parent,
        "container": container,
        "ancestry": (!f.process.ancestors.is_empty()).then(|| {
            f.process
                .ancestors
                .iter()
                .map(|a| json!({"pid": a.pid, "name": a.comm, "path": a.exe, "cmd_line": a.args.as_ref().map(|x| x.join(" "))}))
                .collect::<Vec<_>>()
        }),
    });
    let mut resources = vec![json!({
        "type": if c.pod_name.is_some() { "Pod" } else { "Container" },
        "uid": c.pod_uid.clone().unwrap_or_else(|| c.id.clone()),
        "name": c.pod_name.clone().or_else(|| c.name.clone()),
        "namespace": c.pod_namespace,
    })];
    if let Some(cluster) = &f.cluster {
        resources.push(json!({"type": "Cluster", "name": cluster}));
    }
    let attacks: Vec<Value> = f
        .mitre
        .iter()
        .map(|id| {
            let (name, tactic_uid, tactic) = technique(id).unwrap_or(("", "", ""));
            let mut a = json!({"technique": {"uid": id, "name": (!name.is_empty()).then_some(name)}});
            if !tactic_uid.is_empty() {
                a["tactic"] = json!({"uid": tactic_uid, "name": tactic});
            }
            a
        })
        .collect();
    let title = title(f.category);
    // A readable line: a name with a newline or a terminal escape must not split or fake it.
    let message = format!(
        "{} in container {}: {} ({})",
        title,
        p(c.name.as_deref().unwrap_or(&c.id)),
        p(&f.file.path),
        f.action.as_str()
    );
    let mut observables =
        vec![json!({"name": "file.path", "type_id": 7, "type": "File Name", "value": f.file.path})];
    if let Some(h) = sha {
        observables.push(json!({"name": "file.hashes[0].value", "type_id": 8, "type": "Hash", "value": h}));
    }
    observables.push(json!({"name": "device.hostname", "type_id": 1, "type": "Hostname", "value": f.node}));
    if let Some(u) = &f.url {
        observables.push(json!({"name": "evidences[0].url.url_string", "type_id": 6, "type": "URL String", "value": u.found}));
        observables.push(
            json!({"name": "evidences[0].url.hostname", "type_id": 1, "type": "Hostname", "value": u.host}),
        );
    }
    compact(json!({
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "time": time,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "is_alert": true,
        "count": f.count,
        "message": message,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": f.id,
            "original_time": f.time,
            "profiles": ["security_control", "container", "host"],
            "product": {"name": "driftgate", "vendor_name": "driftgate", "version": env!("CARGO_PKG_VERSION")},
        },
        "finding_info": {
            "uid": f.id,
            "title": title,
            "desc": message,
            "types": [f.category.as_str()],
            "analytic": {"name": f.category.as_str(), "type_id": 1, "type": "Rule", "uid": f.rule},
            "attacks": attacks,
            "first_seen_time": f.first_seen.as_deref().and_then(epoch_ms).or(time),
            "last_seen_time": f.last_seen.as_deref().and_then(epoch_ms).or(time),
            "created_time": time,
            "src_url": f.virustotal,
        },
        "device": {"hostname": f.node, "type_id": 1, "type": "Server"},
        "actor": {"process": process.clone()},
        "resources": resources,
        "evidences": [{
            "process": process,
            "file": file,
            "container": container,
            "src_endpoint": f.network.as_ref().map(|n| json!({"ip": n.local_address, "port": n.local_port})),
            "dst_endpoint": f.network.as_ref().map(|n| json!({"ip": n.remote_address, "port": n.remote_port})),
            "url": f.url.as_ref().map(|u| json!({"url_string": u.found, "hostname": u.host})),
        }],
        "observables": observables,
        "unmapped": {
            "driftgate": {
                "schema": f.schema,
                "category": f.category.as_str(),
                "mode": f.mode.as_str(),
                "file_layer": f.file.layer,
                "mount": f.file.mount,
                "interpreter": f.file.interpreter,
                "deleted": f.file.deleted.then_some(true),
                "file_setuid": f.file.setuid.then_some(true),
                "file_setgid": f.file.setgid.then_some(true),
                "file_capabilities": (!f.file.capabilities.is_empty()).then_some(&f.file.capabilities),
                "image_paths": (!f.file.image_paths.is_empty()).then_some(&f.file.image_paths),
                "ioc": f.ioc,
                "rule": f.rule,
                "reason": f.reason,
                "evidence": f.evidence,
                "response": f.response,
                "container_pid": f.process.container_pid,
                "session": f.process.session,
                "cluster": f.cluster,
                "args_redacted": f.process.args_redacted.then_some(true),
                "pod_uid": c.pod_uid.as_ref().filter(|_| pod_uuid.is_none()),
                "runtime_namespace": c.runtime_namespace,
            }
        },
    }))
}

/// Whether `s` is a UUID in its text form (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A program's file, as OCSF names it.
fn exe_file(path: &str) -> Value {
    json!({"path": path, "name": path.rsplit('/').next(), "type_id": 1, "type": "Regular File"})
}

/// Falco's priority for a severity.
pub fn falco_priority(s: Severity) -> &'static str {
    match s {
        Severity::Low => "Notice",
        Severity::Medium => "Warning",
        Severity::High => "Error",
        Severity::Critical => "Critical",
    }
}

/// `s` for a one-line text: control characters escaped ([`crate::util::printable`]).
fn p(s: &str) -> String {
    crate::util::printable(s.as_bytes())
}

/// The finding as Falco writes an alert (`json_output`): `output`, `priority`, `rule`, `time`,
/// `output_fields` (Falco's field names where there is one), `source`, `tags`, `hostname`. A
/// Falcosidekick takes it on its `/` endpoint.
pub fn falco(f: &Finding) -> Value {
    let c = &f.container;
    let priority = falco_priority(f.severity);
    let rule = title(f.category);
    let cmdline = f.process.args.as_ref().map(|a| a.join(" "));
    // One line for line-oriented consumers: every name the container chose is escaped here
    // (the raw bytes stay in `output_fields`).
    let na = |v: Option<&str>| p(v.unwrap_or("<NA>"));
    let output = format!(
        "{} {} ({}): {} (container_id={} container_name={} image={} k8s_ns={} k8s_pod={} proc_pid={} cmdline={} sha256={})",
        f.time,
        rule,
        f.action.as_str(),
        p(&f.file.path),
        p(&c.id),
        na(c.name.as_deref()),
        na(c.image.as_deref()),
        na(c.pod_namespace.as_deref()),
        na(c.pod_name.as_deref()),
        f.process.pid,
        na(cmdline.as_deref()),
        na(f.file.sha256.as_deref()),
    );
    let mut tags: Vec<String> = vec!["driftgate".into(), "container".into(), "process".into()];
    tags.extend(f.mitre.iter().map(|m| format!("mitre_{m}")));
    compact(json!({
        "uuid": f.id,
        "output": output,
        "priority": priority,
        "rule": rule,
        "time": f.time,
        "source": "driftgate",
        "hostname": f.node,
        "tags": tags,
        "output_fields": {
            "evt.time.iso8601": f.time,
            "container.id": c.id,
            "container.name": c.name,
            "container.image.repository": c.image,
            "container.image.digest": c.image_digest,
            "k8s.ns.name": c.pod_namespace,
            "k8s.cluster.name": f.cluster,
            "k8s.pod.name": c.pod_name,
            "k8s.pod.uid": c.pod_uid,
            "proc.pid": f.process.pid,
            "proc.vpid": f.process.container_pid,
            "proc.ppid": f.process.ppid,
            "proc.name": f.process.comm,
            "proc.exepath": f.process.exe,
            "proc.cmdline": cmdline,
            "proc.cwd": f.process.cwd,
            "proc.pname": f.process.parent.as_ref().and_then(|p| p.comm.clone()),
            "user.uid": f.process.uid,
            "fd.name": f.file.path,
            "driftgate.finding_id": f.id,
            "driftgate.category": f.category.as_str(),
            "driftgate.action": f.action.as_str(),
            "driftgate.mode": f.mode.as_str(),
            "driftgate.sha256": f.file.sha256,
            "driftgate.file_layer": f.file.layer,
            "driftgate.session": f.process.session,
            "fd.l4proto": f.network.as_ref().map(|n| n.protocol.clone()),
            "fd.lip": f.network.as_ref().map(|n| n.local_address.clone()),
            "fd.lport": f.network.as_ref().map(|n| n.local_port),
            "fd.rip": f.network.as_ref().map(|n| n.remote_address.clone()),
            "fd.rport": f.network.as_ref().map(|n| n.remote_port),
            "driftgate.url": f.url.as_ref().map(|u| u.found.clone()),
            "driftgate.url.indicator": f.url.as_ref().map(|u| u.indicator.clone()),
            "driftgate.tty": f.process.tty,
            "driftgate.file_setuid": f.file.setuid.then_some(true),
            "driftgate.file_setgid": f.file.setgid.then_some(true),
            "driftgate.file_capabilities": (!f.file.capabilities.is_empty()).then(|| f.file.capabilities.join(",")),
            "driftgate.virustotal": f.virustotal,
            "driftgate.rule": f.rule,
            "driftgate.count": f.count,
            "driftgate.evidence_stored": f.evidence.as_ref().map(|e| e.stored),
            "driftgate.response": f.response.as_ref().map(|r| format!("{}:{}", r.action, if r.ok { "ok" } else { "failed" })),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{AncestorRef, EvidenceRef};

    fn sample() -> Finding {
        let mut f = Finding::example("0192a-1");
        f.time = "2026-12-01T10:00:00.5Z".into();
        f.category = Category::AddedMaliciousBinaryExecuted;
        f.severity = Severity::Critical;
        f.action = Action::Blocked;
        f.container.id = "c0ffee".into();
        f.container.name = Some("web".into());
        f.container.image = Some("shop:1".into());
        f.container.pod_namespace = Some("prod".into());
        f.container.pod_name = Some("web-1".into());
        f.process.pid = 42;
        f.process.comm = Some("sh".into());
        f.process.args = Some(vec!["/tmp/xmrig".into(), "-o".into(), "pool".into()]);
        f.process.ancestors = vec![AncestorRef {
            pid: 7,
            comm: Some("bash".into()),
            exe: Some("/bin/bash".into()),
            ..Default::default()
        }];
        f.file.path = "/tmp/xmrig".into();
        f.file.sha256 = Some("ab".repeat(32));
        f.file.layer = "upper".into();
        f.mitre = vec!["T1105".into(), "T1106".into()];
        f.evidence = Some(EvidenceRef { sha256: Some("ab".repeat(32)), stored: true, reason: None });
        f
    }

    #[test]
    fn titles_read_like_the_cloud_findings() {
        assert_eq!(title(Category::AddedBinaryExecuted), "Added Binary Executed");
        assert_eq!(title(Category::BuiltinMaliciousLibraryLoaded), "Builtin Malicious Library Loaded");
    }

    #[test]
    fn every_reported_technique_has_a_name_and_tactic() {
        for c in Category::ALL {
            for id in c.mitre() {
                assert!(technique(id).is_some(), "{id} of {c:?}");
            }
        }
    }

    #[test]
    fn an_ocsf_detection_finding_carries_process_file_container_and_attacks() {
        let v = ocsf(&sample());
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["category_uid"], 2);
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
        assert_eq!(v["time"], 1_796_119_200_500_i64);
        assert_eq!(v["severity_id"], 5);
        assert_eq!(v["action_id"], 2);
        assert_eq!(v["disposition"], "Blocked");
        assert_eq!(v["finding_info"]["uid"], "0192a-1");
        assert_eq!(v["finding_info"]["title"], "Added Malicious Binary Executed");
        assert_eq!(v["finding_info"]["attacks"][0]["technique"]["uid"], "T1105");
        assert_eq!(v["finding_info"]["attacks"][0]["tactic"]["name"], "Command and Control");
        let e = &v["evidences"][0];
        assert_eq!(e["file"]["hashes"][0]["algorithm_id"], 3);
        assert_eq!(e["file"]["hashes"][0]["value"], "ab".repeat(32));
        assert_eq!(e["file"]["name"], "xmrig");
        assert_eq!(e["process"]["cmd_line"], "/tmp/xmrig -o pool");
        assert_eq!(e["process"]["parent_process"]["pid"], 7);
        assert_eq!(e["container"]["image"]["name"], "shop:1");
        assert_eq!(v["actor"]["process"]["container"]["image"]["name"], "shop:1");
        assert_eq!(v["resources"][0]["type"], "Pod");
        assert_eq!(v["resources"][0]["namespace"], "prod");
        assert_eq!(v["unmapped"]["driftgate"]["evidence"]["stored"], true);
        assert_eq!(v["metadata"]["profiles"], json!(["security_control", "container", "host"]));
        // Unknowns are left out, not null.
        assert!(e["container"].get("pod_uuid").is_none());
        let audited = ocsf(&Finding { action: Action::Audited, ..sample() });
        assert_eq!((&audited["action"], &audited["action_id"]), (&json!("Observed"), &json!(3)));
        assert_eq!(audited["disposition_id"], 15);
    }

    /// The OCSF 1.4.0 Detection Finding schema (`tests/data/ocsf/README.md` says where from).
    fn ocsf_schema() -> jsonschema::Validator {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/ocsf/detection_finding-1.4.0.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    }

    /// Every schema error of `v`, as `path: message`.
    pub(crate) fn ocsf_errors(validator: &jsonschema::Validator, v: &Value) -> Vec<String> {
        validator.iter_errors(v).map(|e| format!("{}: {e}", e.instance_path())).collect()
    }

    #[test]
    fn every_shape_of_finding_is_a_valid_ocsf_detection_finding() {
        let validator = ocsf_schema();
        let mut cases = vec![("blocked", sample())];
        cases.push(("audited", Finding { action: Action::Audited, ..sample() }));
        // What failed before: no image digest, a pod id that is not a UUID, a parent from the
        // ancestors walk and one from the process table, a cluster, a file of no known kind.
        let mut f = sample();
        f.container.image_digest = None;
        f.container.pod_uid = Some("not-a-uuid".into());
        f.cluster = Some("prod-eu".into());
        cases.push(("no digest, odd pod id, cluster", f));
        let mut f = sample();
        f.container.pod_uid = Some("0b3f5a8e-2c4d-4e6f-8a1b-3c5d7e9f1a2b".into());
        f.process.ancestors.clear();
        f.process.parent = Some(crate::finding::ParentRef {
            pid: 3,
            comm: Some("containerd-shim".into()),
            exe: Some("/usr/bin/containerd-shim-runc-v2".into()),
        });
        cases.push(("parent from the process table", f));
        let mut f = Finding::example("x");
        f.file.layer = "unknown".into();
        f.file.sha256 = None;
        f.reason = Some("not verifiable: its argument list could not be read".into());
        cases.push(("unverifiable, minimal", f));
        for (name, f) in cases {
            let v = ocsf(&f);
            assert_eq!(ocsf_errors(&validator, &v), Vec::<String>::new(), "{name}: {v:#}");
            assert!(v["actor"]["process"].get("lineage").is_none(), "lineage is deprecated: {name}");
            if f.process.ancestors.is_empty() {
                continue;
            }
            assert_eq!(v["actor"]["process"]["ancestry"][0]["pid"], f.process.ancestors[0].pid, "{name}");
        }
        // The validator refuses what OCSF does: the mapping before this one (a top-level
        // container, an image without its uid, a pod id that is not a UUID).
        let mut old = ocsf(&sample());
        old["container"] = json!({"uid": "c0ffee", "image": {"name": "shop:1"}});
        old["evidences"][0]["container"]["pod_uuid"] = json!("pod-7");
        assert_eq!(ocsf_errors(&validator, &old).len(), 2, "{:?}", ocsf_errors(&validator, &old));
        let v = ocsf(&Finding { cluster: Some("prod-eu".into()), ..sample() });
        assert_eq!(v["resources"][1], json!({"type": "Cluster", "name": "prod-eu"}));
        assert_eq!(v["unmapped"]["driftgate"]["cluster"], "prod-eu");
        // A pod id that is not a UUID is kept, where OCSF has no pattern for it.
        let v = ocsf(&Finding {
            container: crate::finding::ContainerRef { pod_uid: Some("pod-7".into()), ..sample().container },
            ..sample()
        });
        assert_eq!(v["unmapped"]["driftgate"]["pod_uid"], "pod-7");
        assert!(v["evidences"][0]["container"].get("pod_uuid").is_none());
    }

    #[test]
    fn a_falco_record_has_the_fields_falcosidekick_reads() {
        let v = falco(&sample());
        for k in ["output", "priority", "rule", "time", "output_fields"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["priority"], "Critical");
        assert_eq!(v["rule"], "Added Malicious Binary Executed");
        assert_eq!(v["output_fields"]["container.id"], "c0ffee");
        assert_eq!(v["output_fields"]["k8s.ns.name"], "prod");
        assert_eq!(v["output_fields"]["proc.cmdline"], "/tmp/xmrig -o pool");
        assert!(v["output"].as_str().unwrap().contains("/tmp/xmrig"));
        assert!(v["tags"].as_array().unwrap().contains(&"mitre_T1105".into()));
    }

    #[test]
    fn human_readable_lines_escape_what_the_container_named_and_structured_fields_keep_it() {
        let mut f = sample();
        f.file.path = "/tmp/x\nFORGED line\r\u{1b}[2J".into();
        f.process.args = Some(vec!["/tmp/x\n".into(), "--token\n".into()]);
        f.container.name = Some("web\n1".into());
        let v = falco(&f);
        let out = v["output"].as_str().unwrap();
        assert!(!out.chars().any(char::is_control), "{out:?}");
        assert!(
            out.contains("/tmp/x\\nFORGED line\\r\\u{1b}[2J") && out.contains("container_name=web\\n1"),
            "{out}"
        );
        assert_eq!(v["output_fields"]["fd.name"], f.file.path, "raw in the structured field");
        let o = ocsf(&f);
        assert!(!o["message"].as_str().unwrap().chars().any(char::is_control), "{}", o["message"]);
        assert_eq!(o["evidences"][0]["file"]["path"], f.file.path);
    }
}
