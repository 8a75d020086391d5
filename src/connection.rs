//! How to reach a PostgreSQL server: the shared connection options, the
//! plugin's own metadata connection, and the environment of every client tool.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use native_tls::{Certificate, Identity, TlsConnector};
use tempfile::NamedTempFile;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Client;
use url::Url;

use crate::options::{Kind, OptionError, Spec, Values};

/// SSL modes, as libpq names them.
pub const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The options every connector shares to reach its server: where and who.
pub static SERVER_OPTIONS: &[Spec] = &[
    Spec {
        name: "location",
        kind: Kind::Text,
        default: None,
        description: "Connection URI: `postgres://[user[:password]@]host[:port][/database]` (for a physical source `postgres+bin://`, without a database), percent-encoded.",
    },
    Spec {
        name: "host",
        kind: Kind::Text,
        default: Some("localhost"),
        description: "Server host name, address, or Unix socket directory. Overrides the URI's host.",
    },
    Spec {
        name: "port",
        kind: Kind::Integer { min: 1, max: 65535 },
        default: Some("5432"),
        description: "Server port. Overrides the URI's port.",
    },
    Spec {
        name: "username",
        kind: Kind::Text,
        default: None,
        description: "PostgreSQL user name. Overrides the URI's user; defaults to the name of the system user running Plakar.",
    },
    Spec {
        name: "password",
        kind: Kind::Secret,
        default: None,
        description: "PostgreSQL password. Overrides the URI's password. Handed to the client tools through a private password file, never on a command line or in the environment.",
    },
];

/// The database option of the logical connectors (a physical backup has none).
pub static DATABASE_OPTIONS: &[Spec] = &[Spec {
    name: "database",
    kind: Kind::Text,
    default: None,
    description: "Database name. Overrides the URI's path.",
}];

/// The options every connector shares for its client tools and TLS.
pub static CLIENT_OPTIONS: &[Spec] = &[
    Spec {
        name: "pg_bin_dir",
        kind: Kind::Text,
        default: None,
        description: "Directory of the PostgreSQL client tools (pg_dump, pg_dumpall, pg_restore, psql; pg_basebackup for a physical source). Without it they are looked up on `$PATH`, then in the usual install locations.",
    },
    Spec {
        name: "ssl_mode",
        kind: Kind::Choice(SSL_MODES),
        default: Some("prefer"),
        description: "TLS mode, as libpq's `sslmode`. The `verify-*` modes need `ssl_root_cert` or `ssl_root_cert_data`. The plugin's own connection treats `allow` as `prefer`.",
    },
    Spec {
        name: "ssl_cert",
        kind: Kind::Text,
        default: None,
        description: "Path of the client certificate (PEM).",
    },
    Spec {
        name: "ssl_key",
        kind: Kind::Text,
        default: None,
        description: "Path of the client certificate's private key (PEM, PKCS#8).",
    },
    Spec {
        name: "ssl_root_cert",
        kind: Kind::Text,
        default: None,
        description: "Path of the CA certificate(s) that sign the server's certificate (PEM).",
    },
    Spec {
        name: "ssl_cert_data",
        kind: Kind::Secret,
        default: None,
        description: "The client certificate itself (PEM text), instead of `ssl_cert`.",
    },
    Spec {
        name: "ssl_key_data",
        kind: Kind::Secret,
        default: None,
        description: "The client private key itself (PEM text), instead of `ssl_key`.",
    },
    Spec {
        name: "ssl_root_cert_data",
        kind: Kind::Secret,
        default: None,
        description: "The CA certificate(s) themselves (PEM text), instead of `ssl_root_cert`.",
    },
    Spec {
        name: "connect_timeout",
        kind: Kind::Integer { min: 1, max: 3600 },
        default: Some("10"),
        description: "Seconds to wait for the server to accept a connection before giving up.",
    },
];

/// Connection errors, worded for the user reading `plakar`'s output.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("cannot use the TLS settings: {0}")]
    Tls(String),
    #[error("cannot write a private temporary file for {what}: {source}")]
    TempFile {
        what: &'static str,
        source: std::io::Error,
    },
}

/// A password that never shows in `Debug` output.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(hidden)")
    }
}

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
    fn parse(word: &str) -> SslMode {
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
    fn reads_files(&self) -> bool {
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
}

/// TLS for the plugin's own connections, building its connector at the first
/// handshake. With `ssl_mode=prefer` (the default) and a server without TLS,
/// no connector is ever built: building one loads the system's trust store
/// (about 40 ms, more than the connection itself).
#[derive(Clone)]
struct LazyTls {
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
struct LazyTlsConnect {
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
            let cache = &self.tls.cache.0;
            let connector = match cache.get() {
                Some(c) => c.clone(),
                None => {
                    let built = self.tls.settings.connector()?;
                    cache.get_or_init(|| built).clone()
                }
            };
            let handshake = postgres_native_tls::TlsConnector::new(connector, &self.domain);
            Ok(handshake.connect(stream).await?)
        })
    }
}

/// Everything needed to reach one server, shared by the metadata connection and the tools.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Host name, address, or socket directory.
    pub host: String,
    /// TCP port (or socket suffix).
    pub port: u16,
    /// Role to connect as.
    pub user: String,
    /// The database the URI or the `database` option names, if any.
    pub database: Option<String>,
    /// TLS settings.
    pub tls: Tls,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// The user's `pg_bin_dir`.
    pub pg_bin_dir: Option<PathBuf>,
    password: Option<Password>,
    /// Private files that must live as long as the connection: the password file and inline PEM.
    files: Arc<PrivateFiles>,
    /// Built once: loading the trust store for every connection costs more than the connection.
    tls_connector: Arc<TlsCache>,
}

/// The TLS connector, built on first use.
#[derive(Default)]
struct TlsCache(std::sync::OnceLock<TlsConnector>);

impl fmt::Debug for TlsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCache")
    }
}

#[derive(Debug)]
struct PrivateFiles {
    passfile: NamedTempFile,
    _pem: Vec<NamedTempFile>,
}

impl Connection {
    /// Builds the connection from checked options: the URI first, then the options that override it.
    pub fn from_values(values: &Values) -> Result<Connection, OptionError> {
        let location = values.text("location").ok_or_else(|| {
            OptionError::Conflict(
                "option `location` is required: a URI such as postgres://user@host:5432/dbname"
                    .into(),
            )
        })?;
        let uri = parse_uri(&location)?;

        let host = if values.is_set("host") {
            values.text("host")
        } else {
            uri.host.clone().or_else(|| values.text("host"))
        }
        .unwrap_or_else(|| "localhost".into());
        let port = if values.is_set("port") {
            values.integer("port").map(|p| p as u16)
        } else {
            uri.port
                .or_else(|| values.integer("port").map(|p| p as u16))
        }
        .unwrap_or(5432);
        let user = values
            .text("username")
            .or(uri.user)
            .unwrap_or_else(system_user);
        let password = values.text("password").or(uri.password);
        if password
            .as_deref()
            .is_some_and(|p| p.contains('\n') || p.contains('\r'))
        {
            return Err(OptionError::Conflict(
                "the password cannot contain a line break".into(),
            ));
        }
        let database = if values.knows("database") {
            values.text("database")
        } else {
            None
        }
        .or(uri.database);
        if database.as_deref() == Some("") {
            return Err(OptionError::Conflict(
                "option `database` is empty; give a database name or leave the option out".into(),
            ));
        }

        let mut pem = Vec::new();
        let cert = file_or_data(values, "ssl_cert", "ssl_cert_data", &mut pem)?;
        let key = file_or_data(values, "ssl_key", "ssl_key_data", &mut pem)?;
        let root_cert = file_or_data(values, "ssl_root_cert", "ssl_root_cert_data", &mut pem)?;
        if cert.is_some() != key.is_some() {
            return Err(OptionError::Conflict(
                "a client certificate needs both `ssl_cert` (or `ssl_cert_data`) and `ssl_key` (or `ssl_key_data`)".into(),
            ));
        }
        let mode = SslMode::parse(&values.text("ssl_mode").unwrap_or_default());
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(OptionError::Conflict(format!(
                "ssl_mode={} needs the CA certificate that signed the server's: set `ssl_root_cert` or `ssl_root_cert_data`",
                mode.as_str()
            )));
        }
        if mode == SslMode::Disable && cert.is_some() {
            return Err(OptionError::Conflict(
                "a client certificate cannot be used with ssl_mode=disable".into(),
            ));
        }

        let passfile = write_private(
            "the password file",
            password
                .as_deref()
                .map(pgpass_line)
                .unwrap_or_default()
                .as_bytes(),
        )
        .map_err(|e| OptionError::Conflict(e.to_string()))?;

        Ok(Connection {
            host,
            port,
            user,
            database,
            tls: Tls {
                mode,
                cert,
                key,
                root_cert,
            },
            connect_timeout: Duration::from_secs(
                values.integer("connect_timeout").unwrap_or(10) as u64
            ),
            pg_bin_dir: values.text("pg_bin_dir").map(PathBuf::from),
            password: password.map(Password),
            files: Arc::new(PrivateFiles {
                passfile,
                _pem: pem,
            }),
            tls_connector: Arc::default(),
        })
    }

    /// `host:port` (or the socket directory), for messages and the manifest.
    pub fn target(&self) -> String {
        if self.host.starts_with('/') {
            format!("{} (port {})", self.host, self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens the plugin's own connection to a database, with the same settings the tools get.
    pub async fn connect(&self, database: &str) -> Result<Client, ConnectError> {
        let mut config = tokio_postgres::Config::new();
        if self.host.starts_with('/') {
            config.host_path(&self.host);
        } else {
            config.host(&self.host);
        }
        config
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("plakar-postgresql")
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.tls.mode {
                SslMode::Disable => PgSslMode::Disable,
                // tokio-postgres has no "allow"; trying TLS first reaches the same servers.
                SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
                _ => PgSslMode::Require,
            });
        if let Some(p) = &self.password {
            config.password(&p.0);
        }
        // A connector that checks the server against the user's files is built
        // now, so that a bad file is reported as such; one that checks nothing is
        // built only if the server accepts TLS (see `LazyTls`).
        if self.tls.reads_files() && self.tls_connector.0.get().is_none() {
            let built = self.tls.connector()?;
            let _ = self.tls_connector.0.set(built);
        }
        let tls = LazyTls {
            settings: self.tls.clone(),
            cache: self.tls_connector.clone(),
        };
        let target = format!(
            "{} as user \"{}\" (database \"{database}\")",
            self.target(),
            self.user
        );
        let connect = config.connect(tls);
        // connect_timeout covers the TCP connect only; a server that accepts and stays mute must time out too.
        let (client, connection) = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(ConnectError::Connect {
                    target,
                    reason: describe_pg_error(&e),
                })
            }
            Err(_) => {
                return Err(ConnectError::Connect {
                    target,
                    reason: format!(
                        "the server did not answer within {} s (connect_timeout)",
                        self.connect_timeout.as_secs()
                    ),
                })
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("metadata connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// Connects anew and runs `SELECT 1`: is the server there, and does it let us in?
    pub async fn ping(&self, database: &str) -> Result<(), String> {
        let client = self.connect(database).await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| describe_pg_error(&e))
    }

    /// The environment of a client tool: explicit settings only, so that the
    /// user's own PG* variables, service files and ~/.pgpass change nothing.
    pub fn tool_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        let mut set = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| {
            env.push((k.into(), v.as_ref().to_os_string()));
        };
        if let Some(path) = std::env::var_os("PATH") {
            set("PATH", &path);
        }
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            set("TMPDIR", &tmp);
        }
        set("LC_ALL", &"C.UTF-8");
        set("PGHOST", &self.host);
        set("PGPORT", &self.port.to_string());
        set("PGUSER", &self.user);
        set("PGPASSFILE", &self.files.passfile.path());
        set("PGSSLMODE", &self.tls.mode.as_str());
        set(
            "PGCONNECT_TIMEOUT",
            &self.connect_timeout.as_secs().to_string(),
        );
        set("PGAPPNAME", &"plakar-postgresql");
        if let Some(p) = &self.tls.cert {
            set("PGSSLCERT", p);
        }
        if let Some(p) = &self.tls.key {
            set("PGSSLKEY", p);
        }
        if let Some(p) = &self.tls.root_cert {
            set("PGSSLROOTCERT", p);
        }
        env
    }
}

/// The database every server has, which the plugin's own connection uses
/// when the one to work on may not exist (yet).
pub const MAINTENANCE_DB: &str = "postgres";

/// A SQL identifier, always quoted, so that any name is taken as it is.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection string naming only a database, safe for any name: the value
/// is quoted, so it is never read as an option, a URI or a `key=value` list.
pub fn dbname_conninfo(database: &str) -> String {
    format!(
        "dbname='{}'",
        database.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// The major version of the server a client is connected to.
pub async fn server_major(client: &Client) -> Result<u32, String> {
    let num: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| format!("cannot read the server version: {}", describe_pg_error(&e)))?
        .get(0);
    Ok((num / 10000) as u32)
}

/// Explains a tokio-postgres error with the server's own words when it sent any.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The parts of a `postgres://` URI, percent-decoded.
#[derive(Debug, Default, PartialEq, Eq)]
struct UriParts {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
}

fn parse_uri(location: &str) -> Result<UriParts, OptionError> {
    let bad = |why: &str| {
        OptionError::Conflict(format!(
            "option `location` is not a valid PostgreSQL URI ({why}); expected postgres://[user[:password]@]host[:port][/database]"
        ))
    };
    let url = Url::parse(location).map_err(|e| bad(&e.to_string()))?;
    if !["postgres", "postgresql", "postgres+bin"].contains(&url.scheme()) {
        return Err(bad(&format!("the scheme is {:?}", url.scheme())));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "query parameters are not read; use the options ssl_mode, connect_timeout, ... instead",
        ));
    }
    if has_dot_segment(location) {
        return Err(bad(
            "a path part `.` or `..` would be dropped, leaving another database or none; give such a name with the option `database`",
        ));
    }
    let decode = |s: &str| -> Result<String, OptionError> {
        percent_decode(s).ok_or_else(|| bad("a percent-encoded part is not valid UTF-8"))
    };
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            Some(decode(h)?)
        }
        _ => None,
    };
    let user = if url.username().is_empty() {
        None
    } else {
        Some(decode(url.username())?)
    };
    let password = url.password().map(decode).transpose()?;
    let path = url.path();
    let path = path.strip_prefix('/').unwrap_or(path);
    let database = if path.is_empty() {
        None
    } else {
        Some(decode(path)?)
    };
    if url.port() == Some(0) {
        return Err(bad("port 0 is not a port a server listens on"));
    }
    Ok(UriParts {
        host,
        port: url.port(),
        user,
        password,
        database,
    })
}

/// Whether a URI's path has a `.` or `..` segment (percent-encoded or not),
/// which URL parsing silently resolves away: `postgres://h/..` would name no database.
fn has_dot_segment(location: &str) -> bool {
    // What the URL parser reads: outer spaces and controls trimmed, tabs and line breaks dropped.
    let cleaned: String = location
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some((_, rest)) = cleaned.split_once(':') else {
        return false;
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("", |i| &authority_and_path[i..]),
        None => rest,
    };
    // A path that does not start with `/` is opaque and kept as written.
    path.starts_with('/')
        && path.split('/').any(|segment| {
            matches!(
                segment.to_ascii_lowercase().as_str(),
                "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"
            )
        })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The name of the system user running the plugin: libpq's default role name.
fn system_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            if let Ok(name) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str() {
                return name.to_string();
            }
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "postgres".into())
}

/// One `~/.pgpass`-style line matching every server, with `\` and `:` escaped.
fn pgpass_line(password: &str) -> String {
    format!(
        "*:*:*:*:{}\n",
        password.replace('\\', "\\\\").replace(':', "\\:")
    )
}

/// Writes bytes to a new file readable by this user only (tempfile creates it 0600).
pub fn write_private(what: &'static str, bytes: &[u8]) -> Result<NamedTempFile, ConnectError> {
    let mut file = tempfile::Builder::new()
        .prefix("plakar-postgresql-")
        .tempfile()
        .map_err(|source| ConnectError::TempFile { what, source })?;
    file.write_all(bytes)
        .and_then(|_| file.flush())
        .map_err(|source| ConnectError::TempFile { what, source })?;
    Ok(file)
}

fn file_or_data(
    values: &Values,
    file_key: &'static str,
    data_key: &'static str,
    keep: &mut Vec<NamedTempFile>,
) -> Result<Option<PathBuf>, OptionError> {
    match (values.text(file_key), values.text(data_key)) {
        (Some(_), Some(_)) => Err(OptionError::Conflict(format!(
            "options `{file_key}` and `{data_key}` cannot both be set; give the file's path or its contents, not both"
        ))),
        (Some(path), None) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(OptionError::Conflict(format!(
                    "option `{file_key}`: {} is not a readable file",
                    path.display()
                )));
            }
            Ok(Some(path))
        }
        (None, Some(pem)) => {
            if !pem.contains("-----BEGIN ") {
                return Err(OptionError::Conflict(format!(
                    "option `{data_key}` does not hold PEM text (a \"-----BEGIN ...\" block)"
                )));
            }
            let file = write_private(data_key, pem.as_bytes())
                .map_err(|e| OptionError::Conflict(e.to_string()))?;
            let path = file.path().to_path_buf();
            keep.push(file);
            Ok(Some(path))
        }
        (None, None) => Ok(None),
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
    use crate::options::Table;

    fn connection(pairs: &[(&str, &str)]) -> Result<Connection, OptionError> {
        let table = Table::new(
            "source",
            &[SERVER_OPTIONS, DATABASE_OPTIONS, CLIENT_OPTIONS],
        );
        let config = crate::options::config_map(pairs);
        Connection::from_values(&table.parse(&config)?)
    }

    #[test]
    fn uri_parts_are_percent_decoded() {
        let c = connection(&[(
            "location",
            "postgres://b%C3%A9a:p%40ss%3Aw%2Fo%25rd@db.example.com:6543/my%20db",
        )])
        .unwrap();
        assert_eq!(c.host, "db.example.com");
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "béa");
        assert_eq!(c.password.as_ref().unwrap().0, "p@ss:w/o%rd");
        assert_eq!(c.database.as_deref(), Some("my db"));
    }

    #[test]
    fn options_override_the_uri() {
        let c = connection(&[
            ("location", "postgres://u:p@h:1/db"),
            ("host", "other"),
            ("port", "2"),
            ("username", "v"),
            ("password", "q"),
            ("database", "x"),
        ])
        .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("other", 2, "v")
        );
        assert_eq!(c.password.unwrap().0, "q");
        assert_eq!(c.database.as_deref(), Some("x"));
    }

    #[test]
    fn defaults_fill_what_the_uri_leaves_out() {
        let c = connection(&[("location", "postgres://")]).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("localhost", 5432));
        assert_eq!(c.database, None);
        assert!(!c.user.is_empty());
    }

    #[test]
    fn bad_uris_are_refused_with_the_expected_form() {
        for bad in [
            "mysql://h/db",
            "not a uri",
            "postgres://h/db?sslmode=require",
        ] {
            let err = connection(&[("location", bad)]).unwrap_err().to_string();
            assert!(err.contains("option `location`"), "{err}");
        }
        let err = connection(&[]).unwrap_err().to_string();
        assert!(err.contains("`location` is required"), "{err}");
    }

    #[test]
    fn dot_segments_are_refused_not_dropped() {
        // The URL parser resolves these away, which would silently name no database.
        for bad in [
            "postgres://h/.",
            "postgres://h/..",
            "postgres://h/%2e",
            "postgres://h/%2E%2e",
            "postgres://u:p@h:1/app/..",
            "postgres://h/./app",
            "postgres://h/.\t.",
        ] {
            let err = connection(&[("location", bad)]).unwrap_err().to_string();
            assert!(
                err.contains("option `location`") && err.contains("`database`"),
                "{bad:?}: {err}"
            );
        }
        for good in [
            "postgres://h/...",
            "postgres://h/a%2F..",
            "postgres://h/.x",
            "postgres://",
        ] {
            assert!(connection(&[("location", good)]).is_ok(), "{good:?}");
        }
        let c = connection(&[("location", "postgres://h/"), ("database", "..")]).unwrap();
        assert_eq!(c.database.as_deref(), Some(".."));
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let err = connection(&[("location", "postgres://h/"), ("ssl_mode", "verify-full")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssl_root_cert"), "{err}");
    }

    #[test]
    fn file_and_inline_pem_are_exclusive() {
        let err = connection(&[
            ("location", "postgres://h/"),
            ("ssl_root_cert", "/etc/hostname"),
            ("ssl_root_cert_data", "-----BEGIN CERTIFICATE-----"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`ssl_root_cert` and `ssl_root_cert_data`"),
            "{err}"
        );
    }

    #[test]
    fn password_file_escapes_and_stays_private() {
        use std::os::unix::fs::PermissionsExt;
        let c = connection(&[("location", "postgres://u@h/"), ("password", "a:b\\c")]).unwrap();
        let path = c.files.passfile.path().to_path_buf();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "*:*:*:*:a\\:b\\\\c\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let env = c.tool_env();
        assert!(env
            .iter()
            .all(|(_, v)| !v.to_string_lossy().contains("a:b")));
        assert!(!format!("{c:?}").contains("a:b"));
        drop(c);
        assert!(!path.exists(), "the password file outlived the connection");
    }

    #[test]
    fn dbname_conninfo_quotes_everything() {
        assert_eq!(dbname_conninfo("a b"), "dbname='a b'");
        assert_eq!(dbname_conninfo("it's\\"), "dbname='it\\'s\\\\'");
        assert_eq!(dbname_conninfo("host=x"), "dbname='host=x'");
    }

    #[test]
    fn pem_bundles_are_split() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n";
        let both = format!("{one}junk\n{one}");
        assert_eq!(split_pem_certificates(&both).len(), 2);
    }
}
