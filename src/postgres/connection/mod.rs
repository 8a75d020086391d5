//! How to reach a PostgreSQL server: the shared connection options, the
//! plugin's own metadata connection, and (in `env`) the environment of every
//! client tool.
//!
//! - `uri`: the `location` URI's parts.
//! - `tls`: `ssl_mode` and the certificates.
//! - `secrets`: the password and the private files that carry it and inline PEM.
//! - `env`: the environment of the client tools.
//! - `error`: [`PgError`] (PostgreSQL's errors, SQLSTATE kept) and [`ConnectError`].

mod env;
mod error;
mod secrets;
mod tls;
mod uri;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::Client;

use crate::options::{Kind, OptionError, Spec, Values};
use secrets::{file_or_data, pgpass_line, PrivateFiles};
use tls::TlsCache;
use uri::parse_uri;

pub use error::{ConnectError, PgError};
pub use secrets::{write_private, Password};
pub use tls::{SslMode, Tls};

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

/// Where a connector that runs PostgreSQL client tools finds them.
pub static TOOL_OPTIONS: &[Spec] = &[
    Spec {
        name: "pg_bin_dir",
        kind: Kind::Text,
        default: None,
        description: "Directory of the PostgreSQL client tools the connector runs: pg_dump and pg_dumpall for a logical source, pg_restore and psql for a logical destination, pg_basebackup alone for a physical source. Without it they are looked up on `$PATH`, then in the usual install locations.",
    },
];

/// The options every connector shares for TLS and the connection timeout.
pub static CLIENT_OPTIONS: &[Spec] = &[
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
            pg_bin_dir: values
                .knows("pg_bin_dir")
                .then(|| values.text("pg_bin_dir").map(PathBuf::from))
                .flatten(),
            password: password.map(Password::new),
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
        if let Some(p) = self.password() {
            config.password(p);
        }
        // A connector that checks the server against the user's files is built
        // now, so that a bad file is reported as such; one that checks nothing is
        // built only if the server accepts TLS (see `tls::LazyTls`).
        if self.tls.reads_files() {
            self.tls_connector()?;
        }
        let tls = self.tls.lazy(self.tls_connector.clone());
        let target = self.target_as(&format!("database \"{database}\""));
        let connect = config.connect(tls);
        // connect_timeout covers the TCP connect only; a server that accepts and stays mute must time out too.
        let (client, connection) = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(ConnectError::Connect {
                    target,
                    source: PgError::new("", &e),
                })
            }
            Err(_) => {
                return Err(ConnectError::Timeout {
                    target,
                    seconds: self.connect_timeout.as_secs(),
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
    pub async fn ping(&self, database: &str) -> Result<(), ConnectError> {
        let client = self.connect(database).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| ConnectError::Connect {
                target: self.target_as(&format!("database \"{database}\"")),
                source: PgError::new("", &e),
            })
    }

    /// The target as connection errors name it: where, as whom, and `what` for.
    pub(crate) fn target_as(&self, what: &str) -> String {
        format!("{} as user \"{}\" ({what})", self.target(), self.user)
    }

    /// The password, for the plugin's own connections only: the tools read it
    /// from the password file, never from argv or their environment.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_ref().map(Password::expose)
    }

    /// The TLS connector of these settings, built at the first call and kept.
    pub(crate) fn tls_connector(&self) -> Result<native_tls::TlsConnector, ConnectError> {
        self.tls.cached_connector(&self.tls_connector)
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
pub async fn server_major(client: &Client) -> Result<u32, PgError> {
    let num: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| PgError::new("cannot read the server version", &e))?
        .get(0);
    Ok((num / 10000) as u32)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Table;

    fn connection(pairs: &[(&str, &str)]) -> Result<Connection, OptionError> {
        let table = Table::new(
            "source",
            &[
                SERVER_OPTIONS,
                DATABASE_OPTIONS,
                TOOL_OPTIONS,
                CLIENT_OPTIONS,
            ],
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
        assert_eq!(c.password().unwrap(), "p@ss:w/o%rd");
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
        assert_eq!(c.password().unwrap(), "q");
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
}
