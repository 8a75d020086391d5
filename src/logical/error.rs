//! What fails in a logical backup or restore, worded for the user who reads
//! it in `plakar`'s output; it becomes a gRPC status only at the edge, in
//! [`crate::protocol`], through [`Failure`].

use std::path::PathBuf;

use tonic::Code;

use crate::logical::toc::ArchiveError;
use crate::options::OptionError;
use crate::postgres::connection::{ConnectError, PgError};
use crate::postgres::replication::standby::RecoveryConflict;
use crate::postgres::tools::{ToolError, ToolFailure};
use crate::protocol::source::Ended;
use crate::protocol::Failure;

/// Why a logical backup or restore cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration the option table refuses.
    #[error(transparent)]
    Options(#[from] OptionError),
    /// The server cannot be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server refused or failed a query.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// A client tool cannot be found or started.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Plakar ended the call first.
    #[error(transparent)]
    Ended(#[from] Ended),
    /// A dump that is not what pg_restore reads.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A standby cancelled a query of the backup to go on replaying.
    #[error(transparent)]
    RecoveryConflict(#[from] RecoveryConflict),
    /// Plakar asked for a record the backup did not announce.
    #[error("no record {0:?} in this backup")]
    NoRecord(String),
    /// A client tool failed while writing a record.
    #[error("backup of {what} ({path}) failed: {why}")]
    Dump {
        what: String,
        path: String,
        why: Box<Error>,
    },
    /// The pipe a tool writes into cannot be made or read.
    #[error("cannot {action} {tool}'s output: {source}")]
    Output {
        action: &'static str,
        tool: &'static str,
        source: std::io::Error,
    },
    /// Plakar closed an `Open` stream before its end.
    #[error("Plakar stopped reading the dump before its end")]
    StoppedReading,
    /// A restore into a database that does not exist, without create_db.
    #[error("database {database:?} does not exist on {target}; create it first, or set create_db=true to create it from the dump")]
    DatabaseMissing { database: String, target: String },
    /// A file this restore does not take, and why.
    #[error("{0}")]
    Refused(String),
    /// A client tool failed while dumping, in its own words.
    #[error(transparent)]
    ToolFailed(#[from] Box<ToolFailure>),
    /// pg_restore or psql failed, or reported errors, while restoring a file.
    #[error("{}", restore_failed(.what, *.count, .failure, *.hint))]
    RestoreFailed {
        /// What was being restored, as `database "app"`.
        what: String,
        /// The errors reported, counted by the tool or from its stderr.
        count: usize,
        /// The tool's run.
        #[source]
        failure: Box<ToolFailure>,
        /// What to do about it, when the errors are the usual ones.
        hint: Option<&'static str>,
    },
    /// A create_db restore into a database that already exists.
    #[error("database {database:?} already exists on {target}, and create_db=true restores only into a new database; set clean=true to restore into the existing one (the dump's objects are dropped and recreated), or drop it first")]
    DatabaseExists { database: String, target: String },
    /// A physical snapshot sent to the logical destination.
    #[error("{0} belongs to a physical backup (postgres+bin://), which pg_restore cannot read; nothing was restored. Restore the snapshot into a new data directory with a physical destination: plakar destination add mydata postgres+bin:///path/to/empty/directory")]
    PhysicalSnapshot(String),
    /// A file or directory that cannot be read or written.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A dump whose head does not describe its database.
    #[error(
        "the dump's table of contents does not describe its database within its first {0} MiB"
    )]
    NoDatabaseEntry(usize),
}

impl Failure for Error {
    fn code(&self) -> Code {
        match self {
            Error::Options(_) => Code::InvalidArgument,
            Error::NoRecord(_) => Code::NotFound,
            Error::Ended(_) => Code::Cancelled,
            Error::Dump { .. } => Code::Internal,
            _ => Code::FailedPrecondition,
        }
    }
}

/// `restore of database "app" failed with 2 errors: ...; ... (pg_restore
/// exited with status 1). What to do.`
fn restore_failed(what: &str, count: usize, failure: &ToolFailure, hint: Option<&str>) -> String {
    let mut message = if count > 0 {
        let mut m = format!(
            "restore of {what} failed with {count} error{}: {}",
            if count == 1 { "" } else { "s" },
            failure.errors.join("; ")
        );
        if !failure.exited_zero() {
            m.push_str(&format!(" ({})", failure.ending()));
        }
        m
    } else {
        format!("restore of {what} failed: {failure}")
    };
    if let Some(hint) = hint {
        message.push_str(". ");
        message.push_str(hint);
    }
    message
}
