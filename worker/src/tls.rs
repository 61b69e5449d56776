//! TLS for cluster links (`storm sweep --listen … --tls-cert C --tls-key K`, `storm worker --connect … --tls-ca A`):
//! the coordinator proves it holds the key of a certificate that the worker hosts' CA file vouches for, and
//! every byte between them (the cookie handshake, job specs, results) is encrypted. Workers are not
//! asked for certificates: they still prove themselves with the cookie, now inside the encrypted channel.
//!
//! The coordinator runs the handshakes in its own listener (`storm_coordinator::listener`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The coordinator's certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a worker host trusts: a CA (or the coordinator's self-signed certificate) in a PEM file, and the
/// name the coordinator's certificate must carry (default: the host part of `--connect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub server_name: Option<String>,
}

/// The aws-lc-rs provider ractor_cluster builds rustls with, named rather than found: with a second provider
/// in the build (another crate enabling `ring`), rustls's process default would be ambiguous and its
/// builder would panic.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The acceptor for the coordinator's listener.
pub fn acceptor(files: &ServerFiles) -> Result<TlsAcceptor, String> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} and {} do not make a TLS identity: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connector a worker host dials the coordinator with, and the server name it checks.
pub fn connector(
    files: &ClientFiles,
    connect: &str,
) -> Result<(TlsConnector, ServerName<'static>), String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(&files.ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", files.ca.display()))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match &files.server_name {
        Some(n) => n.clone(),
        None => host_part(connect).to_string(),
    };
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| format!("`{name}` is not a TLS server name: {e} (set --tls-server-name)"))?;
    Ok((TlsConnector::from(Arc::new(config)), server_name))
}

/// `host` of `host:port` (`[v6]:port` → `v6`).
fn host_part(connect: &str) -> &str {
    let host = connect.rsplit_once(':').map_or(connect, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host_of_connect() {
        assert_eq!(host_part("node0:7070"), "node0");
        assert_eq!(host_part("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_part("[::1]:7070"), "::1");
        assert_eq!(host_part("node0"), "node0");
    }

    #[test]
    fn unreadable_or_empty_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = ClientFiles {
            ca: empty.clone(),
            server_name: None,
        };
        let err = connector(&files, "h:1").err().unwrap();
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let missing = ServerFiles {
            cert: dir.path().join("nope.pem"),
            key: empty,
        };
        let err = acceptor(&missing).err().unwrap();
        assert!(err.contains("nope.pem"), "{err}");
    }
}
