//! `[export.otlp]`: each finding as an OpenTelemetry log record, to a Collector's `otlp`
//! receiver (or any OTLP endpoint), over gRPC or HTTP/protobuf, with the message types of the
//! OpenTelemetry project's own protocol definitions (`opentelemetry-proto`).
//!
//! - The resource is the node: `service.name = driftgate`, `host.name`, `k8s.node.name`,
//!   `k8s.cluster.name`.
//! - The record's severity is the finding's (`SeverityNumber` WARN for LOW, ERROR for MEDIUM,
//!   ERROR3 for HIGH, FATAL for CRITICAL); its body is the driftgate record, as a map.
//! - Its attributes follow the semantic conventions where they have a name: `container.*`,
//!   `k8s.*`, `process.*`, `file.*`, `event.name`; the rest are `driftgate.*`.
//!
//! Sent through the same bounded queue, retries and counters as the webhook.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use driftgate_core::config::{Otlp, OtlpProtocol, Webhook};
use driftgate_core::finding::Finding;
use driftgate_core::model::Severity;

/// What a sender thread calls for each finding.
pub type Send = Box<dyn FnMut(&tokio::runtime::Runtime, &Finding) -> Result<(), String> + std::marker::Send>;

/// The sender for `o`, or why it cannot be made (a TLS file that cannot be used, named).
pub fn sender(o: &Otlp) -> Result<Send, String> {
    match o.protocol {
        OtlpProtocol::HttpProtobuf => {
            let tls = o.tls.as_ref().map(super::tls::client).transpose()?;
            let target = Webhook {
                url: o.endpoint.clone(),
                authority: o.authority.clone(),
                path: o.path.clone(),
                tls: o.tls.clone(),
                format: Default::default(),
                queue: o.queue,
                timeout: o.timeout,
                headers: o.headers.clone(),
            };
            Ok(Box::new(move |rt, f| {
                let body = request(f, now_ns()).encode_to_vec();
                rt.block_on(super::http::post(&target, tls.as_ref(), &body, "application/x-protobuf"))
            }))
        }
        OtlpProtocol::Grpc => {
            let endpoint = grpc_endpoint(o)?;
            let headers = o.headers.clone();
            let timeout = o.timeout;
            let mut client: Option<LogsServiceClient<tonic::transport::Channel>> = None;
            Ok(Box::new(move |rt, f| {
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => {
                        // (The timer is made inside the runtime: `timeout` needs its clock.)
                        let ch = rt
                            .block_on(async { tokio::time::timeout(timeout, endpoint.connect()).await })
                            .map_err(|_| format!("no connection within {}s", timeout.as_secs()))?
                            .map_err(|e| format!("connect: {e}{}", source_chain(&e)))?;
                        client.insert(LogsServiceClient::new(ch))
                    }
                };
                let mut req = tonic::Request::new(request(f, now_ns()));
                req.set_timeout(timeout);
                for (k, v) in &headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                        tonic::metadata::MetadataValue::try_from(v.as_str()),
                    ) {
                        req.metadata_mut().insert(k, v);
                    }
                }
                match rt.block_on(c.export(req)) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        client = None; // connect again on the next try
                        Err(format!("gRPC {:?}: {}", e.code(), e.message()))
                    }
                }
            }))
        }
    }
}

/// The gRPC endpoint, with TLS set up from the configured files (read now: an unusable one is
/// an error naming it).
fn grpc_endpoint(o: &Otlp) -> Result<tonic::transport::Endpoint, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let scheme = if o.tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{}", o.authority))
        .map_err(|e| format!("export.otlp.endpoint {}: {e}", o.endpoint))?
        .connect_timeout(o.timeout)
        .timeout(o.timeout);
    if let Some(t) = &o.tls {
        let read = |p: &std::path::Path, key: &str| {
            std::fs::read(p).map_err(|e| format!("export.otlp.{key} {}: {e}", p.display()))
        };
        let mut tls = ClientTlsConfig::new().domain_name(t.server_name.clone());
        tls = match &t.ca_file {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "ca_file")?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&t.client_cert, &t.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert, "client_cert")?, read(key, "client_key")?));
        }
        ep = ep.tls_config(tls).map_err(|e| format!("export.otlp: TLS: {e}"))?;
    }
    Ok(ep)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut s = e.source();
    while let Some(x) = s {
        out.push_str(&format!(": {x}"));
        s = x.source();
    }
    out
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The severity of a finding in OpenTelemetry's numbers, and its text.
pub fn severity(s: Severity) -> (SeverityNumber, &'static str) {
    match s {
        Severity::Low => (SeverityNumber::Warn, "LOW"),
        Severity::Medium => (SeverityNumber::Error, "MEDIUM"),
        Severity::High => (SeverityNumber::Error3, "HIGH"),
        Severity::Critical => (SeverityNumber::Fatal, "CRITICAL"),
    }
}

fn text(v: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) })
}

fn int(v: i64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::IntValue(v)) })
}

fn strings(v: &[String]) -> Option<AnyValue> {
    let values =
        v.iter().map(|s| AnyValue { value: Some(any_value::Value::StringValue(s.clone())) }).collect();
    Some(AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values })) })
}

/// A flag that is there only when set.
fn set(v: bool) -> Option<AnyValue> {
    v.then_some(AnyValue { value: Some(any_value::Value::BoolValue(true)) })
}

fn kv(key: &str, value: Option<AnyValue>) -> Option<KeyValue> {
    value.map(|v| KeyValue { key: key.into(), value: Some(v), ..Default::default() })
}

/// A JSON value as an OpenTelemetry value (objects become maps; nulls are left out).
fn any(v: &serde_json::Value) -> Option<AnyValue> {
    use serde_json::Value as J;
    let value = match v {
        J::Null => return None,
        J::Bool(b) => any_value::Value::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
        },
        J::String(s) => any_value::Value::StringValue(s.clone()),
        J::Array(a) => {
            any_value::Value::ArrayValue(ArrayValue { values: a.iter().filter_map(any).collect() })
        }
        J::Object(m) => any_value::Value::KvlistValue(KeyValueList {
            values: m.iter().filter_map(|(k, v)| kv(k, any(v))).collect(),
        }),
    };
    Some(AnyValue { value: Some(value) })
}

fn unix_ns(rfc3339: &str) -> u64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| t.unix_timestamp_nanos().max(0) as u64)
}

/// One finding as an OTLP logs request (one resource, one scope, one record).
pub fn request(f: &Finding, observed_ns: u64) -> ExportLogsServiceRequest {
    let c = &f.container;
    let p = &f.process;
    let (severity_number, severity_text) = severity(f.severity);
    let attributes: Vec<KeyValue> = [
        kv("event.name", text("driftgate.finding")),
        kv("container.id", text(&c.id)),
        kv("container.name", c.name.as_deref().and_then(text)),
        kv("container.runtime", text(&c.runtime)),
        kv("container.image.name", c.image.as_deref().and_then(text)),
        kv("container.image.id", c.image_digest.as_deref().and_then(text)),
        kv("k8s.pod.name", c.pod_name.as_deref().and_then(text)),
        kv("k8s.pod.uid", c.pod_uid.as_deref().and_then(text)),
        kv("k8s.namespace.name", c.pod_namespace.as_deref().and_then(text)),
        kv("k8s.cluster.name", f.cluster.as_deref().and_then(text)),
        kv("process.pid", int(p.pid as i64)),
        kv("process.parent_pid", p.ppid.map(|x| x as i64).and_then(int)),
        kv("process.executable.path", p.exe.as_deref().and_then(text)),
        kv("process.command_args", p.args.as_deref().and_then(strings)),
        kv("process.working_directory", p.cwd.as_deref().and_then(text)),
        kv("process.user.id", p.uid.map(i64::from).and_then(int)),
        kv("driftgate.process.session", p.session.as_deref().and_then(text)),
        kv("driftgate.process.tty", p.tty.as_deref().and_then(text)),
        kv("network.transport", f.network.as_ref().and_then(|n| text(&n.protocol))),
        kv("network.local.address", f.network.as_ref().and_then(|n| text(&n.local_address))),
        kv("network.local.port", f.network.as_ref().and_then(|n| int(i64::from(n.local_port)))),
        kv("network.peer.address", f.network.as_ref().and_then(|n| text(&n.remote_address))),
        kv("network.peer.port", f.network.as_ref().and_then(|n| int(i64::from(n.remote_port)))),
        kv("url.full", f.url.as_ref().and_then(|u| text(&u.found))),
        kv("driftgate.url.indicator", f.url.as_ref().and_then(|u| text(&u.indicator))),
        kv("file.path", text(&f.file.path)),
        kv("file.name", text(f.file.path.rsplit('/').next().unwrap_or_default())),
        kv("file.size", int(f.file.size as i64)),
        kv("host.name", text(&f.node)),
        kv("driftgate.finding.id", text(&f.id)),
        kv("driftgate.category", text(f.category.as_str())),
        kv("driftgate.action", text(f.action.as_str())),
        kv("driftgate.mode", text(f.mode.as_str())),
        kv("driftgate.rule", f.rule.as_deref().and_then(text)),
        kv("driftgate.file.sha256", f.file.sha256.as_deref().and_then(text)),
        kv("driftgate.file.layer", text(&f.file.layer)),
        kv("driftgate.file.setuid", set(f.file.setuid)),
        kv("driftgate.file.setgid", set(f.file.setgid)),
        kv(
            "driftgate.file.capabilities",
            (!f.file.capabilities.is_empty()).then(|| strings(&f.file.capabilities)).flatten(),
        ),
        kv("driftgate.mitre", strings(&f.mitre)),
        kv("driftgate.reason", f.reason.as_deref().and_then(text)),
        kv("driftgate.ioc.name", f.ioc.as_ref().and_then(|i| i.name.clone()).and_then(text)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let record = LogRecord {
        time_unix_nano: unix_ns(&f.time),
        observed_time_unix_nano: observed_ns,
        severity_number: severity_number as i32,
        severity_text: severity_text.into(),
        body: serde_json::to_value(f).ok().as_ref().and_then(any),
        attributes,
        ..Default::default()
    };
    let resource = Resource {
        attributes: [
            kv("service.name", text("driftgate")),
            kv("service.version", text(env!("CARGO_PKG_VERSION"))),
            kv("host.name", text(&f.node)),
            kv("k8s.node.name", text(&f.node)),
            kv("k8s.cluster.name", f.cluster.as_deref().and_then(text)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "driftgate".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope),
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_is_one_log_record_with_semantic_attributes_and_its_record_in_the_body() {
        let mut f = Finding::example("0192-x");
        f.cluster = Some("prod-eu".into());
        f.process.args = Some(vec!["/tmp/x".into(), "-o".into()]);
        let req = request(&f, 7);
        let rl = &req.resource_logs[0];
        let res: Vec<&str> =
            rl.resource.as_ref().unwrap().attributes.iter().map(|k| k.key.as_str()).collect();
        assert!(res.contains(&"service.name") && res.contains(&"k8s.cluster.name"), "{res:?}");
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.observed_time_unix_nano, 7);
        assert_eq!(r.severity_number, severity(f.severity).0 as i32);
        let attr = |k: &str| r.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone());
        assert_eq!(attr("container.id"), text(&f.container.id));
        assert_eq!(attr("process.command_args"), strings(&["/tmp/x".to_string(), "-o".to_string()]));
        assert_eq!(attr("file.path"), text(&f.file.path));
        assert_eq!(attr("driftgate.finding.id"), text("0192-x"));
        let Some(any_value::Value::KvlistValue(body)) = r.body.as_ref().and_then(|b| b.value.clone()) else {
            panic!("the body is the record, as a map")
        };
        assert!(body.values.iter().any(|kv| kv.key == "category"));
        assert_eq!(attr("driftgate.file.setuid"), None, "a flag is there only when set");
        // It round-trips through the wire encoding.
        let bytes = req.encode_to_vec();
        assert_eq!(ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap(), req);
    }

    #[test]
    fn what_a_file_grants_is_in_the_attributes() {
        let mut f = Finding::example("0192-y");
        f.file.setuid = true;
        f.file.capabilities = vec!["cap_net_raw".into()];
        let req = request(&f, 7);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        let attr = |k: &str| r.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone());
        assert_eq!(attr("driftgate.file.setuid"), set(true));
        assert_eq!(attr("driftgate.file.setgid"), None);
        assert_eq!(attr("driftgate.file.capabilities"), strings(&["cap_net_raw".to_string()]));
    }
}
