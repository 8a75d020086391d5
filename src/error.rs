//! The errors of every connector, each worded for the user who reads it in
//! `plakar`'s output; they become a gRPC status only in [`crate::protocol`].

use std::path::PathBuf;

use tonic::Code;

use crate::connection::{ConnectError, PgError};
use crate::options::OptionError;
use crate::physical::chain::ChainError;
use crate::physical::preflight::PreflightError;
use crate::physical::wal::WalError;
use crate::protocol::source::Ended;
use crate::protocol::Failure;
use crate::replication::standby::RecoveryConflict;
use crate::toc::ArchiveError;
use crate::tools::ToolError;

/// Why a backup or a restore cannot go on.
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
    /// The server or the role cannot take a physical backup.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// A client tool cannot be found or started.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Plakar ended the call first.
    #[error(transparent)]
    Ended(#[from] Ended),
    /// A dump that is not what pg_restore reads.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A WAL archive run failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A snapshot that cannot recover as asked.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Recovery options for a snapshot that holds no WAL beyond its base.
    #[error("option `{0}` asks for point-in-time recovery, but this snapshot holds only its base backup (its source did not archive WAL: set archive_wal=true on the physical source); nothing was written. Restore it without recovery options, or restore a snapshot of a source that archives its WAL")]
    NoWalInSnapshot(String),
    /// A piece of the snapshot's WAL that is not what `/.chain.json` says.
    #[error("the snapshot's WAL cannot be restored: {0}; everything this restore wrote was removed. Check the snapshot with `plakar check`, and restore an earlier or a later one")]
    DamagedWal(String),
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
    /// A client tool failed, in its own words (a child process has no SQLSTATE to give).
    #[error("{0}")]
    ToolFailed(String),
    /// A create_db restore into a database that already exists.
    #[error("database {database:?} already exists on {target}, and create_db=true restores only into a new database; set clean=true to restore into the existing one (the dump's objects are dropped and recreated), or drop it first")]
    DatabaseExists { database: String, target: String },
    /// A physical snapshot sent to the logical destination.
    #[error("{0} belongs to a physical backup (postgres+bin://), which pg_restore cannot read; nothing was restored. Restore the snapshot into a new data directory with a physical destination: plakar destination add mydata postgres+bin:///path/to/empty/directory")]
    PhysicalSnapshot(String),
    /// A logical snapshot sent to the physical destination.
    #[error("{0} comes from a logical backup (pg_dump), not a data directory; nothing was written. Restore the snapshot with a postgres:// destination: plakar destination add mypgdst postgres://user@host/")]
    LogicalSnapshot(String),
    /// The physical destination's directory is in use.
    #[error("{} belongs to a running PostgreSQL server (it has a postmaster.pid); restore into a new, empty directory", .0.display())]
    DirectoryInUse(PathBuf),
    /// The physical destination's directory holds files.
    #[error("{} is not empty; a physical restore writes a whole data directory and overwrites nothing: name a new or empty directory", .0.display())]
    DirectoryNotEmpty(PathBuf),
    /// `owner` names another user, and only root can give files away.
    #[error("option `owner={owner}` needs root: only root can give files to another user, and this restore runs as {running}; run plakar as root (or as {owner} itself), or leave `owner` out and give the directory to {owner} afterwards with chown -R")]
    OwnerNeedsRoot { owner: String, running: String },
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
    /// A tablespace's files whose directory `/manifest.json` does not name.
    #[error("the snapshot holds the files of tablespace {0} but its manifest.json names no directory for it; give it one with option `tablespace_mapping={0}=/absolute/dir`")]
    UnknownTablespace(String),
    /// A physical snapshot's `/.tablespaces.json` that cannot be read.
    #[error("the snapshot's /.tablespaces.json cannot be read ({0}); nothing was written")]
    BadTablespaceList(String),
    /// A tablespace's directory that holds files.
    #[error("tablespace {tablespace} would be restored into {}, which is not empty; a physical restore overwrites nothing: give it a new or empty directory with option `tablespace_mapping={key}=/absolute/dir`", .dir.display())]
    TablespaceDirectoryNotEmpty {
        /// The tablespace, as `name (oid)`.
        tablespace: String,
        /// Its name, for the option's example.
        key: String,
        /// The directory.
        dir: PathBuf,
    },
    /// A tablespace's directory inside the data directory, or holding it.
    #[error("tablespace {tablespace} would be restored into {}, which overlaps the data directory {}; give it a directory of its own, outside it, with option `tablespace_mapping={key}=/absolute/dir`", .dir.display(), .root.display())]
    TablespaceOverlapsData {
        /// The tablespace, as `name (oid)`, or the mapping's key.
        tablespace: String,
        /// Its name, for the option's example.
        key: String,
        /// The tablespace's directory.
        dir: PathBuf,
        /// The data directory.
        root: PathBuf,
    },
    /// Two tablespaces restored into one directory.
    #[error("tablespaces {first} and {second} would both be restored into {}; give each a directory of its own with option `tablespace_mapping`; nothing was written", .dir.display())]
    SharedTablespaceDirectory {
        /// The directory.
        dir: PathBuf,
        /// One tablespace, as `name (oid)`.
        first: String,
        /// The other.
        second: String,
    },
    /// `tablespace_mapping` names a tablespace the snapshot does not hold.
    #[error("option `tablespace_mapping` names {key}, which is no tablespace of this snapshot (it holds: {known}); name each by its name or OID")]
    UnmappedTablespace {
        /// The name or OID given.
        key: String,
        /// The snapshot's tablespaces, as `name (oid)`.
        known: String,
    },
    /// A physical snapshot without its data directory.
    #[error("the snapshot holds no data directory file")]
    NoDataDirectory,
    /// pg_basebackup or its stream failed.
    #[error("{0}")]
    BaseBackup(String),
    /// The restored directory does not pass pg_verifybackup.
    #[error("{0}")]
    Verify(String),
    /// Plakar called `Import` a second time on a source that is read once.
    #[error("this backup's stream is read once, and Plakar asked to import it again")]
    ImportedTwice,
    /// Plakar asked for content after the stream was read.
    #[error("{0} was asked for after the backup's stream was read to its end")]
    CopyOver(String),
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
