//! TLS for the webhook (`https://`): rustls, verifying the server against the system's roots
//! (`rustls-native-certs`) or the CA bundle `export.webhook_ca_file`, with an optional client
//! certificate for mutual TLS. Built once, at start-up: a file that cannot be used is an error
//! naming it, before anything is sent.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use driftgate_core::config::WebhookTls;

/// A connector for one webhook: its client configuration and the name its server must have.
#[derive(Clone)]
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
}

/// The webhook's TLS client, or why it cannot be made (naming the file or setting).
pub fn client(t: &WebhookTls) -> Result<Tls, String> {
    // ring: builds with a C compiler alone (aws-lc-rs needs cmake); the classical key
    // exchanges it has are what the webhooks here speak.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_file {
        Some(ca) => {
            let certs = certs(ca, "export.webhook_ca_file")?;
            for c in certs {
                roots.add(c).map_err(|e| format!("export.webhook_ca_file {}: {e}", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err("https webhook: no CA certificates on this system (install ca-certificates, or set export.webhook_ca_file)".into());
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "export.webhook_client_cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("export.webhook_client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("export.webhook_client_cert {}: {e}", cert.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    let server_name = ServerName::try_from(t.server_name.clone())
        .map_err(|e| format!("export.webhook: {:?} is not a server name: {e}", t.server_name))?;
    Ok(Tls { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name })
}

/// The certificates of a PEM file; an error names it when it has none or cannot be read.
fn certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}
