//! TLS from a PEM certificate and key file pair (e.g. a mounted `kubernetes.io/tls` Secret's
//! `tls.crt` and `tls.key`), reloaded when the files change: handshakes after the change get the
//! new certificate, without a restart. A changed pair that does not load is logged and counted,
//! and the previous certificate stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ::aws_lc_rs::digest;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use super::ServerState;
use super::metrics::ServerMetrics;

/// How often the files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("{} holds no usable PEM private key: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("the key in {} does not belong to the certificate in {}: {reason}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot configure TLS: {0}")]
    Config(String),
}

/// Loads the pair once (failing if it does not load) and returns the acceptor for connections
/// and the reloader that keeps it current.
pub fn load(files: TlsFiles) -> Result<(TlsAcceptor, TlsReloader), TlsError> {
    let (cert_pem, key_pem) = read_pair(&files)?;
    let certified = parse_pair(&files, &cert_pem, &key_pem)?;
    let resolver = Arc::new(ReloadingResolver {
        current: RwLock::new(Arc::new(certified)),
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let reloader = TlsReloader {
        loaded: fingerprint(&cert_pem, &key_pem),
        files,
        resolver,
    };
    Ok((TlsAcceptor::from(Arc::new(config)), reloader))
}

/// Watches the files and swaps in a changed pair once it loads.
pub struct TlsReloader {
    files: TlsFiles,
    resolver: Arc<ReloadingResolver>,
    /// The last pair seen (loaded or refused), as a digest: no key bytes are kept here.
    loaded: digest::Digest,
}

impl TlsReloader {
    pub async fn run(mut self, state: Arc<ServerState>) {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let files = self.files.clone();
            let Ok(read) = tokio::task::spawn_blocking(move || read_pair(&files)).await else {
                continue;
            };
            self.check(read, &state.metrics);
        }
    }

    fn check(&mut self, read: Result<(Vec<u8>, Vec<u8>), TlsError>, metrics: &ServerMetrics) {
        let (cert_pem, key_pem) = match read {
            Ok(pair) => pair,
            // Mid-update (one file replaced, the other not yet): look again next time.
            Err(error) => {
                tracing::debug!(%error, "cannot read the TLS files");
                return;
            }
        };
        let seen = fingerprint(&cert_pem, &key_pem);
        if seen.as_ref() == self.loaded.as_ref() {
            return;
        }
        self.loaded = seen;
        match parse_pair(&self.files, &cert_pem, &key_pem) {
            Ok(certified) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(certified);
                metrics.tls_loaded();
                tracing::info!(cert = %self.files.cert.display(), "loaded a new TLS certificate");
            }
            Err(error) => {
                metrics.tls_reload_failed();
                tracing::warn!(%error, "the changed TLS files do not load; still serving the previous certificate");
            }
        }
    }
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
struct ReloadingResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        ))
    }
}

fn read_pair(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    Ok((read(&files.cert)?, read(&files.key)?))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_pair(files: &TlsFiles, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        },
        other => TlsError::Key {
            path: files.key.clone(),
            reason: other.to_string(),
        },
    })
}

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> digest::Digest {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(&(cert_pem.len() as u64).to_be_bytes());
    context.update(cert_pem);
    context.update(key_pem);
    context.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, names: &[&str]) -> TlsFiles {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, generated.cert.pem()).unwrap();
        std::fs::write(&files.key, generated.signing_key.serialize_pem()).unwrap();
        files
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("jwks-server-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_matching_pair_loads_and_a_mismatched_one_is_refused() {
        let dir = scratch("pairs");
        let files = write_pair(&dir, &["a.example"]);
        assert!(load(files.clone()).is_ok());
        let other = scratch("pairs-other");
        let other_files = write_pair(&other, &["b.example"]);
        std::fs::copy(&other_files.key, &files.key).unwrap();
        let error = load(files.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("does not belong to the certificate"),
            "{error}"
        );
        std::fs::write(&files.cert, "not pem").unwrap();
        assert!(matches!(load(files), Err(TlsError::NoCertificate { .. })));
    }

    #[test]
    fn a_changed_pair_is_swapped_in_and_a_broken_one_is_counted() {
        let dir = scratch("reload");
        let files = write_pair(&dir, &["a.example"]);
        let (_, mut reloader) = load(files.clone()).unwrap();
        let metrics = ServerMetrics::new();
        let first = reloader.resolver.current.read().unwrap().cert.clone();

        reloader.check(read_pair(&files), &metrics);
        assert_eq!(reloader.resolver.current.read().unwrap().cert, first);

        write_pair(&dir, &["b.example"]);
        reloader.check(read_pair(&files), &metrics);
        let second = reloader.resolver.current.read().unwrap().cert.clone();
        assert_ne!(second, first);

        std::fs::write(&files.key, "garbage").unwrap();
        reloader.check(read_pair(&files), &metrics);
        reloader.check(read_pair(&files), &metrics);
        assert_eq!(reloader.resolver.current.read().unwrap().cert, second);
        let text = metrics.encode(None, std::time::SystemTime::now());
        assert!(text.contains("jwks_server_tls_reloads_total 1\n"), "{text}");
        assert!(
            text.contains("jwks_server_tls_reload_failures_total 1\n"),
            "{text}"
        );
    }
}
