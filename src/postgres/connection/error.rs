//! Errors of the plugin's own connections: PostgreSQL's, with its SQLSTATE,
//! DETAIL and HINT kept, and the failures to connect at all.

use std::borrow::Cow;
use std::fmt;

use tokio_postgres::error::SqlState;

/// An error from PostgreSQL, or from the client library talking to it, with
/// what the plugin was doing. The SQLSTATE is there to decide on; the text
/// is for the user. Boxed, so that results carrying it stay small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError(Box<Fields>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    context: Cow<'static, str>,
    code: Option<SqlState>,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl PgError {
    /// The error of a query or connection, with what the plugin was doing
    /// ("cannot read the server version"; empty when the enclosing error says it).
    pub fn new(context: impl Into<Cow<'static, str>>, e: &tokio_postgres::Error) -> PgError {
        match e.as_db_error() {
            Some(db) => PgError(Box::new(Fields {
                context: context.into(),
                code: Some(db.code().clone()),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            })),
            None => PgError::client(context, chain(e)),
        }
    }

    /// A failure of the client side (a dropped connection, a protocol
    /// error), which has no SQLSTATE.
    pub fn client(context: impl Into<Cow<'static, str>>, message: impl Into<String>) -> PgError {
        PgError(Box::new(Fields {
            context: context.into(),
            code: None,
            message: message.into(),
            detail: None,
            hint: None,
        }))
    }

    /// An error the server sent, from its fields (SQLSTATE `code` as text).
    pub fn server(
        context: impl Into<Cow<'static, str>>,
        code: &str,
        message: impl Into<String>,
        detail: Option<String>,
        hint: Option<String>,
    ) -> PgError {
        PgError(Box::new(Fields {
            context: context.into(),
            code: (!code.is_empty()).then(|| SqlState::from_code(code)),
            message: message.into(),
            detail,
            hint,
        }))
    }

    /// The same error, said to happen while doing `context`.
    pub fn with_context(mut self, context: impl Into<Cow<'static, str>>) -> PgError {
        self.0.context = context.into();
        self
    }

    /// The server's SQLSTATE; None for the client's own failures.
    pub fn code(&self) -> Option<&SqlState> {
        self.0.code.as_ref()
    }

    /// Whether the server reported this SQLSTATE.
    pub fn is(&self, code: &SqlState) -> bool {
        self.code() == Some(code)
    }

    /// What the plugin was doing; empty when the enclosing error says it.
    pub fn context(&self) -> &str {
        &self.0.context
    }

    /// The server's primary message, or the client library's description.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The server's DETAIL, if any.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// The server's HINT, if any.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        PgError::new("", &e)
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.context().is_empty() {
            write!(f, "{}: ", self.context())?;
        }
        f.write_str(self.message())?;
        if let Some(detail) = self.detail() {
            write!(f, " ({detail})")?;
        }
        if let Some(hint) = self.hint() {
            write!(f, " HINT: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgError {}

/// A client error with its causes, which tokio-postgres keeps apart
/// ("error connecting to server: Connection refused (os error 111)").
fn chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Connection errors, worded for the user reading `plakar`'s output.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect { target: String, source: PgError },
    #[error("cannot connect to PostgreSQL at {target}: the server did not answer within {seconds} s (connect_timeout)")]
    Timeout { target: String, seconds: u64 },
    #[error("cannot use the TLS settings: {0}")]
    Tls(String),
    #[error("cannot write a private temporary file for {what}: {source}")]
    TempFile {
        what: &'static str,
        source: std::io::Error,
    },
}

impl ConnectError {
    /// The server's SQLSTATE when the server refused the connection.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            ConnectError::Connect { source, .. } => source.code(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_detail_and_hint_are_kept_and_shown() {
        let e = PgError::server(
            "cannot create database \"app\"",
            "42501",
            "permission denied to create database",
            Some("Only roles with the CREATEDB attribute may create databases.".into()),
            Some("Ask a superuser for it.".into()),
        );
        assert!(e.is(&SqlState::INSUFFICIENT_PRIVILEGE));
        assert_eq!(
            e.to_string(),
            "cannot create database \"app\": permission denied to create database (Only roles with the CREATEDB attribute may create databases.) HINT: Ask a superuser for it."
        );
        let bare = PgError::client("", "connection closed");
        assert_eq!(bare.code(), None);
        assert_eq!(bare.to_string(), "connection closed");
        assert_eq!(
            bare.with_context("cannot list the roles").to_string(),
            "cannot list the roles: connection closed"
        );
    }

    #[test]
    fn a_refused_connection_keeps_its_sqlstate() {
        let e = ConnectError::Connect {
            target: "h:1".into(),
            source: PgError::server("", "28000", "no pg_hba.conf entry for host", None, None),
        };
        assert_eq!(
            e.code(),
            Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
        );
        assert_eq!(
            e.to_string(),
            "cannot connect to PostgreSQL at h:1: no pg_hba.conf entry for host"
        );
    }
}
