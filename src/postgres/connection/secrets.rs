//! Secrets: the password, which never shows in `Debug` output, and the
//! private files (the password file, inline PEM) handed to the client tools.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use tempfile::NamedTempFile;

use super::ConnectError;
use crate::options::{OptionError, Values};

/// A password that never shows in `Debug` output.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub(crate) fn new(password: String) -> Password {
        Password(password)
    }

    /// The password itself, for the plugin's own connections.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(hidden)")
    }
}

/// Private files that must live as long as the connection: the password file and inline PEM.
#[derive(Debug)]
pub(super) struct PrivateFiles {
    pub(super) passfile: NamedTempFile,
    pub(super) _pem: Vec<NamedTempFile>,
}

/// One `~/.pgpass`-style line matching every server, with `\` and `:` escaped.
pub(super) fn pgpass_line(password: &str) -> String {
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

/// The path of a file option, or of a private copy of its inline-PEM twin.
pub(super) fn file_or_data(
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
