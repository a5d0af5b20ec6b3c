//! `[export.otlp]` against a real OTLP receiver: one built from the OpenTelemetry project's
//! own definitions (PyPI `opentelemetry-proto` and `grpcio`, `tests/tools/otlp_receiver.py`,
//! its environment made by `scripts/py-env.sh otlp-receiver`), over gRPC, HTTP/protobuf and TLS.

use std::process::Command;

use super::*;
use crate::common::otlp::{attr, Receiver};

/// One drift exec in an audited container with `otlp` as the `[export.otlp]` table; the
/// finding recorded.
fn drift_with(s: &Scratch, otlp: &str) -> (Daemon, Value) {
    let tables = format!("[findings]\naggregate_window_secs = 0\n{otlp}");
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "audit",
            globs: vec![s.merged.clone()],
            extra: "cluster = \"prod-eu\"\n",
            extra_tables: &tables,
            ..Default::default()
        },
    );
    let out = s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true --flag; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 0, "{out:?}");
    let f = d.findings(1).remove(0);
    (d, f)
}

fn check_record(req: &Value, f: &Value) {
    let rl = &req["resourceLogs"][0];
    assert_eq!(attr(&rl["resource"]["attributes"], "service.name")["stringValue"], "driftgate");
    assert_eq!(attr(&rl["resource"]["attributes"], "k8s.cluster.name")["stringValue"], "prod-eu");
    let r = &rl["scopeLogs"][0]["logRecords"][0];
    assert_eq!(r["severityNumber"], "SEVERITY_NUMBER_WARN", "{r:#}");
    assert_eq!(r["severityText"], "LOW");
    let a = &r["attributes"];
    assert_eq!(attr(a, "container.id")["stringValue"], f["container"]["id"]);
    assert_eq!(attr(a, "file.path")["stringValue"], "/tmp/true");
    assert_eq!(attr(a, "process.pid")["intValue"], f["process"]["pid"].to_string());
    assert_eq!(
        attr(a, "process.command_args")["arrayValue"]["values"],
        serde_json::json!([{"stringValue": "/tmp/true"}, {"stringValue": "--flag"}])
    );
    assert_eq!(attr(a, "host.name")["stringValue"], f["node"]);
    assert_eq!(attr(a, "driftgate.category")["stringValue"], "ADDED_BINARY_EXECUTED");
    // The body is the driftgate record, as a map.
    let body = &r["body"]["kvlistValue"]["values"];
    assert_eq!(attr(body, "id")["stringValue"], f["id"], "{body:#}");
}

#[test]
fn findings_reach_a_real_otlp_receiver_over_grpc_with_headers() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path(), None);
    let s = Scratch::new();
    let otlp = format!(
        "[export.otlp]\nendpoint = \"http://127.0.0.1:{}\"\n[export.otlp.headers]\nx-tenant = \"team-a\"\n",
        rx.grpc
    );
    let (d, f) = drift_with(&s, &otlp);
    assert!(wait_until(Duration::from_secs(20), || !rx.received().is_empty()), "{}", d.log_text());
    let got = rx.wait(1);
    assert_eq!(got[0]["_via"], "grpc \"team-a\"");
    check_record(&got[0], &f);
    assert!(wait_until(Duration::from_secs(10), || d.status()["export"]["otlp_sent"] == 1));
    let text = http_free_status(&d);
    assert!(text.contains(&format!("export: OTLP to http://127.0.0.1:{} (grpc): 1 sent", rx.grpc)), "{text}");
}

#[test]
fn findings_reach_a_real_otlp_receiver_over_http_protobuf() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path(), None);
    let s = Scratch::new();
    let otlp =
        format!("[export.otlp]\nendpoint = \"http://127.0.0.1:{}\"\nprotocol = \"http/protobuf\"\n", rx.http);
    let (_d, f) = drift_with(&s, &otlp);
    let got = rx.wait(1);
    assert_eq!(got[0]["_via"], "http /v1/logs application/x-protobuf");
    check_record(&got[0], &f);
}

#[test]
fn findings_reach_a_real_otlp_receiver_over_grpc_with_tls() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "collector");
    let rx = Receiver::start(dir.path(), Some((&cert, &key)));
    let s = Scratch::new();
    let otlp = format!(
        "[export.otlp]\nendpoint = \"https://localhost:{}\"\nca_file = {:?}\n",
        rx.grpc,
        ca.display().to_string()
    );
    let (_d, f) = drift_with(&s, &otlp);
    let got = rx.wait(1);
    check_record(&got[0], &f);
}

/// `driftgate status` (text) of `d`.
fn http_free_status(d: &Daemon) -> String {
    let o = Command::new(driftgate_bin()).args(["status", "--socket"]).arg(d.socket()).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The example Collector's filelog receiver (packaging/otel-collector.yaml) against a line of
/// the OCSF file: the path it tails is the one the packaged configuration documents, and the
/// fields its json_parser takes the time and severity from are there, in the unit and with the
/// values it expects (the severity as OTLP export maps it). The Collector itself cannot be
/// installed here (no Go module proxy, no package), so its settings are checked, not run.
pub(super) fn collector_filelog_reads(line: &Value, severity: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let col = &yaml_documents(&root.join("packaging/otel-collector.yaml"))[0];
    let r = &col["receivers"]["filelog/driftgate-ocsf"];
    let path = r["include"][0].as_str().unwrap();
    let packaged = std::fs::read_to_string(root.join("packaging/driftgate.toml")).unwrap();
    assert!(packaged.contains(&format!("# ocsf_file = \"{path}\"")), "{path}");
    let pipelines = col["service"]["pipelines"].as_object().unwrap();
    assert!(pipelines
        .values()
        .any(|p| p["receivers"].as_array().unwrap().contains(&"filelog/driftgate-ocsf".into())));
    let op = &r["operators"][0];
    assert_eq!(op["type"], "json_parser");
    let field = |p: &Value| line[p.as_str().unwrap().strip_prefix("attributes.").unwrap()].clone();
    let (ts, sev) = (&op["timestamp"], &op["severity"]);
    assert_eq!((&ts["layout_type"], &ts["layout"]), (&"epoch".into(), &"ms".into()));
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t = field(&ts["parse_from"]).as_i64().expect("an integer time");
    assert!((now_ms - t).abs() < 600_000, "time {t} is not epoch milliseconds (now {now_ms})");
    let level = match severity {
        "LOW" => "warn",
        "MEDIUM" => "error",
        "HIGH" => "error3",
        _ => "fatal",
    };
    assert_eq!(sev["mapping"][level], field(&sev["parse_from"]), "{severity}: {sev}");
}
