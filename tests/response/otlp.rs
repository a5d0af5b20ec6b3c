//! `[export.otlp]` against a real OTLP receiver: one built from the OpenTelemetry project's
//! own definitions (PyPI `opentelemetry-proto` and `grpcio`, `tests/tools/otlp_receiver.py`,
//! its environment made by `scripts/otlp-receiver-env.sh`), over gRPC, HTTP/protobuf and TLS.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::*;

/// The receiver, stopped by its pid when dropped.
struct Receiver {
    child: Child,
    out: PathBuf,
    grpc: u16,
    http: u16,
}

impl Receiver {
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Receiver {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let env = run_with_deadline(
            Command::new(root.join("scripts/otlp-receiver-env.sh")),
            Duration::from_secs(600),
        );
        assert!(
            env.status.success(),
            "scripts/otlp-receiver-env.sh: {}",
            String::from_utf8_lossy(&env.stderr)
        );
        let python = root.join(String::from_utf8_lossy(&env.stdout).trim());
        let out = dir.join("received.jsonl");
        let mut cmd = Command::new(python);
        cmd.arg(root.join("tests/tools/otlp_receiver.py")).arg(&out);
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ports: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("receiver: {e}: {line:?}"));
        Receiver {
            child,
            out,
            grpc: ports["grpc"].as_u64().unwrap() as u16,
            http: ports["http"].as_u64().unwrap() as u16,
        }
    }

    /// The requests received so far.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait(&self, n: usize) -> Vec<Value> {
        assert!(wait_until(Duration::from_secs(20), || self.received().len() >= n), "{:?}", self.received());
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attribute `key` of an OTLP record (protobuf JSON: `{"key", "value": {"stringValue"}}`).
fn attr<'a>(list: &'a Value, key: &str) -> &'a Value {
    list.as_array().and_then(|a| a.iter().find(|kv| kv["key"] == key)).map_or(&Value::Null, |kv| &kv["value"])
}

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
    let (ca, cert, key) = super::tls::pki(dir.path(), "collector");
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
