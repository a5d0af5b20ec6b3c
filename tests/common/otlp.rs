//! A real OTLP receiver for the tests: one built from the OpenTelemetry project's own
//! definitions (PyPI `opentelemetry-proto` and `grpcio`, `tests/tools/otlp_receiver.py`, its
//! environment made by `scripts/py-env.sh otlp-receiver`), on 127.0.0.1 over gRPC and
//! HTTP/protobuf, optionally TLS.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{python_env, wait_until};

/// The receiver, stopped by its pid when dropped.
pub struct Receiver {
    child: Child,
    out: PathBuf,
    pub grpc: u16,
    pub http: u16,
}

impl Receiver {
    pub fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Receiver {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = python_env("otlp-receiver").join("python3");
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
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn wait(&self, n: usize) -> Vec<Value> {
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
pub fn attr<'a>(list: &'a Value, key: &str) -> &'a Value {
    list.as_array().and_then(|a| a.iter().find(|kv| kv["key"] == key)).map_or(&Value::Null, |kv| &kv["value"])
}
