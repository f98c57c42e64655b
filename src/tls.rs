//! TLS for the gRPC listener (rustls with ring): a certificate and key, and optionally the CA
//! whose client certificates are required (mTLS). Read at start-up and again on reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the listener's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// With it, clients must present a certificate signed by this CA.
    pub client_ca_file: Option<PathBuf>,
}

/// What is wrong with TLS material, naming the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct TlsError {
    /// `cert_file`, `key_file` or `client_ca_file`.
    pub file: &'static str,
    pub problem: String,
}

impl TlsFiles {
    /// A rustls server configuration speaking HTTP/2 (what gRPC needs).
    pub fn load(&self) -> Result<rustls::ServerConfig, TlsError> {
        let certs = certificates("cert_file", &self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| TlsError {
            file: "key_file",
            problem: format!("no private key read from {}: {e}", self.key_file.display()),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                file: "cert_file",
                problem: e.to_string(),
            })?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates("client_ca_file", path)? {
                    roots.add(cert).map_err(|e| TlsError {
                        file: "client_ca_file",
                        problem: format!("{}: {e}", path.display()),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError {
                            file: "client_ca_file",
                            problem: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError {
            file: "key_file",
            problem: format!("the key does not fit the certificate: {e}"),
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn certificates(file: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |p: String| TlsError { file, problem: p };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(problem(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}
