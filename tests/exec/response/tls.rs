//! The webhook over TLS, against a local HTTPS server with certificates the test makes: the
//! server verified against `webhook_ca_file`, a client certificate for mutual TLS, and a
//! server whose certificate another CA signed refused (a clear log line, a counted drop).

use std::sync::Arc;

use super::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS server with `cert`/`key`, asking for a client certificate signed by `client_ca`
/// when given: each request's head, body, and whether the client showed a certificate.
fn https_server(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>, bool)>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { return };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut tls =
                rustls::StreamOwned::new(rustls::ServerConnection::new(Arc::clone(&cfg)).unwrap(), c);
            let (head, body) = answer(&mut tls, 200);
            if head.is_empty() {
                continue; // the handshake failed
            }
            let client_cert = tls.conn.peer_certificates().is_some_and(|c| !c.is_empty());
            tls.conn.send_close_notify();
            let _ = std::io::Write::flush(&mut tls);
            if tx.send((head, body, client_cert)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn https_daemon(s: &Scratch, port: u16, tls_keys: &str) -> Daemon {
    let tables = format!(
        "[findings]\naggregate_window_secs = 0\n[export]\nwebhook = \"https://localhost:{port}/hook\"\n\
         webhook_timeout_secs = 2\n{tls_keys}"
    );
    daemon_with(s, "audit", &tables)
}

#[test]
fn the_webhook_speaks_tls_verifies_the_server_and_shows_a_client_certificate() {
    if !privileged() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(pki_dir.path(), "server");
    let (client_ca, client_cert, client_key) = pki(pki_dir.path(), "client");
    let (port, rx) = https_server(&cert, &key, Some(&client_ca));
    let s = Scratch::new();
    let keys = format!(
        "webhook_ca_file = {:?}\nwebhook_client_cert = {:?}\nwebhook_client_key = {:?}\n",
        ca.display().to_string(),
        client_cert.display().to_string(),
        client_key.display().to_string()
    );
    let d = https_daemon(&s, port, &keys);
    let out = s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 0, "{out:?}");
    let f = d.findings(1);
    let (head, body, client_cert) = rx.recv_timeout(Duration::from_secs(20)).expect("a post over TLS");
    assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
    assert!(client_cert, "the client showed its certificate");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], f[0]["id"]);
    assert!(wait_until(Duration::from_secs(10), || d.status()["export"]["webhook_sent"] == 1));
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_logged_and_counted() {
    if !privileged() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki(pki_dir.path(), "trusted");
    let (_, other_cert, other_key) = pki(pki_dir.path(), "other");
    let (port, rx) = https_server(&other_cert, &other_key, None);
    let s = Scratch::new();
    let d = https_daemon(&s, port, &format!("webhook_ca_file = {:?}\n", ca.display().to_string()));
    let out = s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 0, "{out:?}");
    assert!(
        wait_until(Duration::from_secs(30), || d.status()["export"]["webhook_given_up"] == 1),
        "{}\n{}",
        d.status()["export"],
        d.log_text()
    );
    assert_eq!(d.status()["export"]["webhook_sent"], 0);
    assert!(rx.try_recv().is_err(), "nothing was posted to the untrusted server");
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("webhook post failed") && l.contains("TLS") && l.contains("certificate")),
        "{log}"
    );
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_the_start_naming_it() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "hello\n").unwrap();
    let cfg = dir.path().join("driftgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\n[spool]\ndir = {:?}\n[export]\nwebhook = \"https://localhost:1/\"\nwebhook_ca_file = {:?}\n",
            dir.path().join("state").display().to_string(),
            dir.path().join("spool").display().to_string(),
            bad.display().to_string()
        ),
    )
    .unwrap();
    let o = std::process::Command::new(driftgate_bin()).args(["run", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("export.webhook_ca_file") && err.contains("not-a-ca.pem"), "{err}");
}
