//! HTTPS: a rustls server configuration (TLS 1.2 and 1.3 only) from PEM files.

use anyhow::Context;
use bulkhead_core::config::TlsFiles;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("BULKHEAD_TLS_CERT: cannot read {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "BULKHEAD_TLS_CERT: {} is not a PEM certificate chain",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "BULKHEAD_TLS_CERT: {} holds no certificate",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "BULKHEAD_TLS_KEY: {} holds no readable PEM private key",
            files.key.display()
        )
    })?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("BULKHEAD_TLS_CERT/BULKHEAD_TLS_KEY: the key does not match the certificate")
}
