//! TLS for the plugin's own connections, as libpq's `sslmode` and
//! certificate options describe it.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use native_tls::{Certificate, Identity, TlsConnector};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use super::ConnectError;

/// A TLS mode, as libpq understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The mode of an `ssl_mode` value (checked against [`super::SSL_MODES`]).
    pub(super) fn parse(word: &str) -> SslMode {
        match word {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => SslMode::Prefer,
        }
    }

    /// The word libpq takes for `sslmode`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// TLS settings; file paths point at the user's files or at private copies of inline PEM.
#[derive(Debug, Clone)]
pub struct Tls {
    pub mode: SslMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub root_cert: Option<PathBuf>,
}

impl Tls {
    /// Whether the connector reads the user's files: a CA to check the server
    /// against, or a client certificate.
    pub(super) fn reads_files(&self) -> bool {
        self.root_cert.is_some() || (self.cert.is_some() && self.key.is_some())
    }

    /// The native-tls connector for these settings.
    fn connector(&self) -> Result<TlsConnector, ConnectError> {
        let mut builder = TlsConnector::builder();
        match self.mode {
            SslMode::VerifyFull => {}
            SslMode::VerifyCa => {
                builder.danger_accept_invalid_hostnames(true);
            }
            // libpq's require checks the CA when a root certificate is given, and nothing else.
            SslMode::Require if self.root_cert.is_some() => {
                builder.danger_accept_invalid_hostnames(true);
            }
            _ => {
                builder
                    .danger_accept_invalid_certs(true)
                    .danger_accept_invalid_hostnames(true);
            }
        }
        if let Some(root) = &self.root_cert {
            builder.disable_built_in_roots(true);
            let pem = read_file(root, "ssl_root_cert")?;
            let certs = split_pem_certificates(&pem);
            if certs.is_empty() {
                return Err(ConnectError::Tls(format!(
                    "{} holds no PEM certificate",
                    root.display()
                )));
            }
            for c in certs {
                let cert = Certificate::from_pem(c.as_bytes()).map_err(|e| {
                    ConnectError::Tls(format!(
                        "{} is not a valid certificate: {e}",
                        root.display()
                    ))
                })?;
                builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let c = read_file(cert, "ssl_cert")?;
            let k = read_file(key, "ssl_key")?;
            let identity = Identity::from_pkcs8(c.as_bytes(), k.as_bytes()).map_err(|e| {
                ConnectError::Tls(format!(
                    "the client certificate {} and key {} cannot be used (the key must be PEM, PKCS#8 \"BEGIN PRIVATE KEY\"): {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder.identity(identity);
        }
        builder
            .build()
            .map_err(|e| ConnectError::Tls(e.to_string()))
    }

    /// The connector, from the cache or built now and kept there.
    pub(super) fn cached_connector(&self, cache: &TlsCache) -> Result<TlsConnector, ConnectError> {
        match cache.0.get() {
            Some(c) => Ok(c.clone()),
            None => {
                let built = self.connector()?;
                Ok(cache.0.get_or_init(|| built).clone())
            }
        }
    }

    /// TLS for tokio-postgres that builds its connector only at a handshake.
    pub(super) fn lazy(&self, cache: Arc<TlsCache>) -> LazyTls {
        LazyTls {
            settings: self.clone(),
            cache,
        }
    }
}

/// TLS for the plugin's own connections, building its connector at the first
/// handshake. With `ssl_mode=prefer` (the default) and a server without TLS,
/// no connector is ever built: building one loads the system's trust store
/// (about 40 ms, more than the connection itself).
#[derive(Clone)]
pub(super) struct LazyTls {
    settings: Tls,
    cache: Arc<TlsCache>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> MakeTlsConnect<S> for LazyTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = postgres_native_tls::TlsStream<S>;
    type TlsConnect = LazyTlsConnect;
    type Error = BoxError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<LazyTlsConnect, BoxError> {
        Ok(LazyTlsConnect {
            tls: self.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One handshake of [`LazyTls`].
pub(super) struct LazyTlsConnect {
    tls: LazyTls,
    domain: String,
}

impl<S> TlsConnect<S> for LazyTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = postgres_native_tls::TlsStream<S>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, BoxError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = self.tls.settings.cached_connector(&self.tls.cache)?;
            let handshake = postgres_native_tls::TlsConnector::new(connector, &self.domain);
            Ok(handshake.connect(stream).await?)
        })
    }
}

/// The TLS connector, built on first use.
#[derive(Default)]
pub(super) struct TlsCache(std::sync::OnceLock<TlsConnector>);

impl fmt::Debug for TlsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCache")
    }
}

fn read_file(path: &Path, option: &str) -> Result<String, ConnectError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConnectError::Tls(format!(
            "cannot read {} (option `{option}`): {e}",
            path.display()
        ))
    })
}

fn split_pem_certificates(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .filter_map(|part| {
            let start = part.find("-----BEGIN CERTIFICATE-----")?;
            part.ends_with(END).then(|| part[start..].to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bundles_are_split() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n";
        let both = format!("{one}junk\n{one}");
        assert_eq!(split_pem_certificates(&both).len(), 2);
    }
}
