//! The Helm chart (packaging/helm/driftgate), checked with the tools a cluster's pipeline uses:
//! Helm itself (`helm lint --strict`, `helm template`, the chart's values schema) and
//! kubernetes-validate (Kubernetes' own OpenAPI schemas, strict: no unknown fields), both from
//! PyPI through `scripts/py-env.sh helm`. The Prometheus Operator's kinds have no schema there,
//! so their structure is checked here, on the rendered YAML read back (PyYAML, from the same
//! environment). The configuration the chart renders is checked by `driftgate config check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const CHART: &str = "packaging/helm/driftgate";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tools() -> PathBuf {
    python_env("helm")
}

fn run(bin: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin);
    c.args(args).current_dir(root());
    run_with_deadline(c, Duration::from_secs(120))
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` with `args`: the YAML text.
fn render(args: &[&str]) -> String {
    let mut all = vec!["template", "dg", CHART, "--namespace", "sec"];
    all.extend_from_slice(args);
    ok(&run(&tools().join("helm"), &all), &format!("helm {all:?}"))
}

/// The rendered documents, read back by PyYAML.
fn documents(yaml: &str, dir: &Path) -> Vec<Value> {
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    yaml_documents(&file)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

/// kubernetes-validate, strict, on `yaml`.
fn validate(yaml: &str, dir: &Path, name: &str) -> Output {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    run(&tools().join("kubernetes-validate"), &["--strict", file.to_str().unwrap()])
}

/// The ConfigMap's driftgate.toml passes `driftgate config check` (with `env`).
fn config_checks(docs: &[Value], dir: &Path, env: &[(&str, &str)]) -> String {
    let toml = kind(docs, "ConfigMap")["data"]["driftgate.toml"].as_str().unwrap().to_owned();
    let file = dir.join("driftgate.toml");
    std::fs::write(&file, &toml).unwrap();
    let mut c = Command::new(driftgate_bin());
    c.args(["config", "check", "--config", file.to_str().unwrap()]).envs(env.iter().copied());
    let out = run_with_deadline(c, Duration::from_secs(30));
    ok(&out, &format!("driftgate config check on the rendered configuration:\n{toml}"));
    toml
}

fn container(ds: &Value) -> &Value {
    &ds["spec"]["template"]["spec"]["containers"][0]
}

/// The agent's pod as the daemon needs it, whatever the values.
fn check_daemonset(docs: &[Value]) {
    let ds = kind(docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!((pod["hostPID"].as_bool(), pod["hostNetwork"].as_bool()), (Some(true), Some(true)));
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], kind(docs, "ServiceAccount")["metadata"]["name"]);
    assert!(pod["tolerations"].as_array().unwrap().iter().any(|t| t["operator"] == "Exists"), "every node");
    let c = container(ds);
    assert_eq!(c["securityContext"]["privileged"], true);
    assert_eq!(c["args"], serde_json::json!(["run", "--config", "/etc/driftgate/driftgate.toml"]));
    // The config is the ConfigMap's directory mount: Kubernetes updates it (a subPath mount
    // it never updates), and the daemon sees the `..data` swap and reloads.
    let mounts = c["volumeMounts"].as_array().unwrap();
    let config = mounts.iter().find(|m| m["mountPath"] == "/etc/driftgate").expect("config mount");
    assert!(config.get("subPath").is_none(), "{config}");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == config["name"]).unwrap();
    assert_eq!(volume["configMap"]["name"], kind(docs, "ConfigMap")["metadata"]["name"]);
    // New container rootfs mounts propagate into the agent's mount namespace.
    for path in ["/run/containerd", "/var/lib/containerd", "/var/lib/docker", "/var/lib/containers"] {
        let m =
            mounts.iter().find(|m| m["mountPath"] == path).unwrap_or_else(|| panic!("{path} not mounted"));
        assert_eq!(m["mountPropagation"], "HostToContainer", "{m}");
    }
    // The Service (and so the ServiceMonitor) finds the agents, on the port they serve.
    let svc = kind(docs, "Service");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects {k}={v}");
    }
    let port = &c["ports"].as_array().unwrap()[0];
    assert_eq!(
        (&port["name"], &svc["spec"]["ports"][0]["targetPort"]),
        (&"metrics".into(), &"metrics".into())
    );
}

/// Metric names the daemon exports (declared in src/daemon/counters.rs).
fn exported_metrics() -> std::collections::BTreeSet<String> {
    let mut names: std::collections::BTreeSet<String> =
        driftgate::daemon::counters::METRICS.iter().map(|m| m.name.to_owned()).collect();
    names.insert(driftgate::daemon::counters::LATENCY.0.to_owned());
    names
}

#[test]
fn the_chart_lints_renders_and_validates_with_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    ok(&run(&tools().join("helm"), &["lint", "--strict", CHART]), "helm lint --strict");
    let yaml = render(&[]);
    ok(&validate(&yaml, dir.path(), "default.yaml"), "kubernetes-validate --strict (defaults)");
    let docs = documents(&yaml, dir.path());
    let kinds: std::collections::BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"].into(), "{kinds:?}");
    check_daemonset(&docs);
    // No role is bound: the agent reads nothing from the API.
    assert!(!kinds.iter().any(|k| k.contains("Role")));
    // A config change is reloaded in place, not rolled out as a restart.
    let annotations = &kind(&docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"];
    assert!(annotations.get("checksum/config").is_none(), "{annotations}");
    let toml = config_checks(&docs, dir.path(), &[]);
    assert!(toml.contains("mode = \"audit\"") && toml.contains("max_bytes = 1073741824\n"), "{toml}");

    // The validator can fail: a DaemonSet with a field Kubernetes does not have.
    let broken = yaml.replacen("hostPID: true", "hostPID: true\n      hostPIDs: true", 1);
    assert!(
        !validate(&broken, dir.path(), "broken.yaml").status.success(),
        "kubernetes-validate passed a broken DaemonSet"
    );
}

#[test]
fn a_fleets_values_render_tls_secrets_redaction_and_the_prometheus_operators_resources() {
    let dir = tempfile::tempdir().unwrap();
    let values = "tests/data/helm/fleet-values.yaml";
    ok(&run(&tools().join("helm"), &["lint", "--strict", CHART, "-f", values]), "helm lint --strict (fleet)");
    let yaml = render(&["-f", values]);
    // Kubernetes' kinds are valid; the operator's have no schema there (a warning, not a pass).
    ok(&validate(&yaml, dir.path(), "fleet.yaml"), "kubernetes-validate --strict (fleet)");
    let docs = documents(&yaml, dir.path());
    check_daemonset(&docs);
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds);
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "driftgate-otlp-token");
    assert_eq!(pod["nodeSelector"]["node-role.kubernetes.io/hardened"], "true");
    let tls = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").expect("tls volume");
    assert_eq!(tls["secret"]["secretName"], "driftgate-otlp-tls");
    assert!(c["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == "/etc/driftgate-tls"));
    let checksum = &ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"];
    assert!(checksum.as_str().is_some_and(|s| s.len() == 64), "restartOnConfigChange: {checksum}");

    // The configuration validates; the header's token comes from the agent's environment.
    let toml = config_checks(&docs, dir.path(), &[("OTLP_TOKEN", "t")]);
    for want in [
        "cluster = \"prod-eu\"",
        "mode = \"enforce\"",
        "max_secs = 2.5",
        "workers = 4",
        "queue = 8192",
        "\"*TOKEN*\"",
    ] {
        assert!(toml.contains(want), "{want} not in\n{toml}");
    }
    let mut c = Command::new(driftgate_bin());
    c.args(["config", "check", "--config", dir.path().join("driftgate.toml").to_str().unwrap()])
        .env_remove("OTLP_TOKEN");
    let out = run_with_deadline(c, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("warning: `export.otlp.headers.authorization`: the environment variable OTLP_TOKEN is not set here"), "{out:?}");

    // The ServiceMonitor scrapes the Service's port; the rules alert on what the issue names,
    // with metrics the daemon exports.
    let sm = kind(&docs, "ServiceMonitor");
    let svc = kind(&docs, "Service");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v);
    }
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let rules: Vec<&Value> =
        kind(&docs, "PrometheusRule")["spec"]["groups"][0]["rules"].as_array().unwrap().iter().collect();
    let expr = |alert: &str| {
        rules.iter().find(|r| r["alert"] == alert).unwrap_or_else(|| panic!("no {alert}"))["expr"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(expr("DriftgateContainersUnwatched"), "driftgate_containers_unwatched > 0");
    assert!(expr("DriftgateFindingsDropped").contains("driftgate_otlp_total{outcome=~\"dropped|given_up\"}"));
    assert!(expr("DriftgateDecisionsStalled").contains("driftgate_decisions_stalled_seconds"));
    assert_eq!(expr("DriftgateDown"), "up{job=\"dg-driftgate-metrics\"} == 0");
    let exported = exported_metrics();
    for r in &rules {
        let e = r["expr"].as_str().unwrap();
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("driftgate_"))
        {
            assert!(exported.contains(name), "{} names {name}, which driftgate does not export", r["alert"]);
        }
    }
    // Prometheus' own template syntax reaches the rules untouched by Helm's.
    let summary = rules.iter().find(|r| r["alert"] == "DriftgateContainersUnwatched").unwrap()["annotations"]
        ["summary"]
        .as_str();
    assert_eq!(
        summary,
        Some("{{ $value }} containers on {{ $labels.node }} are not watched (driftgate status lists why)")
    );
}

#[test]
fn values_the_chart_does_not_take_are_refused_by_its_schema() {
    for (set, why) in [
        ("config.mode=block", "config.mode"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
        ("serviceMonitor.interval=often", "serviceMonitor.interval"),
        ("hostPaths.dockerRoot=relative/path", "hostPaths.dockerRoot"),
    ] {
        let out = run(&tools().join("helm"), &["template", "dg", CHART, "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "--set {set}: {err}");
    }
}

#[test]
fn the_plain_manifests_are_the_charts_current_rendering() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(root().join("scripts/render-kubernetes.sh"));
    c.arg(dir.path());
    ok(&run_with_deadline(c, Duration::from_secs(600)), "scripts/render-kubernetes.sh");
    for f in ["daemonset.yaml", "monitoring.yaml"] {
        let fresh = std::fs::read_to_string(dir.path().join(f)).unwrap();
        let shipped = std::fs::read_to_string(root().join("packaging/kubernetes").join(f)).unwrap();
        assert!(
            fresh == shipped,
            "packaging/kubernetes/{f} is not the chart's rendering: run scripts/render-kubernetes.sh"
        );
    }
    let yaml = std::fs::read_to_string(root().join("packaging/kubernetes/daemonset.yaml")).unwrap();
    ok(
        &validate(&yaml, dir.path(), "daemonset.yaml"),
        "kubernetes-validate --strict packaging/kubernetes/daemonset.yaml",
    );
}
