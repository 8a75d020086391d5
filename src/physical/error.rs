//! What fails in a physical backup or restore, worded for the user who reads
//! it in `plakar`'s output; it becomes a gRPC status only at the edge, in
//! [`crate::protocol`], through [`Failure`].

use std::path::PathBuf;

use tonic::Code;

use crate::options::OptionError;
use crate::physical::chain::ChainError;
use crate::physical::direct::DirectError;
use crate::physical::explain;
use crate::physical::preflight::PreflightError;
use crate::physical::restore::wal::PieceError;
use crate::physical::tar::TarError;
use crate::physical::wal::WalError;
use crate::postgres::connection::{ConnectError, PgError};
use crate::postgres::tools::{ToolError, ToolFailure};
use crate::protocol::in_order::ImportOver;
use crate::protocol::source::Ended;
use crate::protocol::Failure;

/// Why a physical backup or restore cannot go on.
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
    #[error("the snapshot's WAL cannot be restored: {}; everything this restore wrote was removed. Check the snapshot with `plakar check`, and restore an earlier or a later one", damaged(.0))]
    DamagedWal(Vec<(String, FileError)>),
    /// The direct copy of the data directory failed or cannot be taken.
    #[error(transparent)]
    Direct(#[from] DirectError),
    /// A file or directory of the restore that cannot be made or given away.
    #[error(transparent)]
    File(#[from] FileError),
    /// One of the plugin's own records (`/.chain.json`, `/.tablespaces.json`)
    /// that did not arrive whole.
    #[error("the snapshot's {record} cannot be read ({source}); nothing was written")]
    OwnRecord {
        record: &'static str,
        source: FileError,
    },
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
    /// A tablespace's files whose directory `/manifest.json` does not name.
    #[error("the snapshot holds the files of tablespace {0} but its manifest.json names no directory for it; give it one with option `tablespace_mapping={0}=/absolute/dir`")]
    UnknownTablespace(String),
    /// A physical snapshot's `/.tablespaces.json` that cannot be read.
    #[error("the snapshot's /.tablespaces.json cannot be read ({0}); nothing was written")]
    BadTablespaceList(#[source] serde_json::Error),
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
    /// pg_basebackup failed, or the copy of its output: pg_basebackup's own
    /// failure first, usually the cause of a broken stream.
    #[error("{}", base_backup_failed(.failure.as_deref(), .copy.as_ref(), .user))]
    BaseBackup {
        failure: Option<Box<ToolFailure>>,
        copy: Option<CopyError>,
        /// The role it connected as, for the remedy.
        user: String,
    },
    /// The restored directory does not pass pg_verifybackup.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Plakar called `Import` a second time on a source that is read once.
    #[error("this backup's stream is read once, and Plakar asked to import it again")]
    ImportedTwice,
    /// Plakar asked for content after the stream was read.
    #[error(transparent)]
    CopyOver(#[from] ImportOver),
}

impl Failure for Error {
    fn code(&self) -> Code {
        match self {
            Error::Options(_) => Code::InvalidArgument,
            Error::Ended(_) => Code::Cancelled,
            _ => Code::FailedPrecondition,
        }
    }
}

/// Why one file of a physical restore was not written; it fails that file's
/// result, and the restore at its end.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file or directory that cannot be made or written.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `owner` cannot be given a file.
    #[error("cannot give {} to {owner}: {source}", .path.display())]
    Owner {
        path: PathBuf,
        owner: String,
        source: std::io::Error,
    },
    /// A record whose path leaves the data directory.
    #[error("{0} is not a path inside a data directory")]
    Outside(String),
    /// A piece of WAL that is not what `/.chain.json` says.
    #[error(transparent)]
    Piece(#[from] PieceError),
    /// Plakar ended the file early, in its words.
    #[error("{0}")]
    Cut(String),
}

/// `path: why; path: why`.
fn damaged(failed: &[(String, FileError)]) -> String {
    failed
        .iter()
        .map(|(path, why)| format!("{path}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why the restored directory cannot be verified, or does not pass.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A restore with `tablespace_mapping` removes `tablespace_map` from the
    /// backup's manifest, which must list it.
    #[error("backup_manifest has no entry for tablespace_map to remove")]
    NoTablespaceMapEntry,
    #[error("the restored directory has no readable PG_VERSION: {0}")]
    NoVersion(#[source] std::io::Error),
    #[error("PG_VERSION holds {0:?}, not a version")]
    BadVersion(String),
    #[error("pg_verifybackup was not found, so the restore cannot be verified; install the PostgreSQL {major} client tools or set pg_bin_dir to their directory")]
    NoVerifier { major: u32 },
    #[error("the restored directory {} does not match its backup_manifest: {failure}", .dir.display())]
    Mismatch {
        dir: PathBuf,
        #[source]
        failure: Box<ToolFailure>,
    },
    /// Files whose bytes, as written, differ from their checksum in
    /// `backup_manifest`.
    #[error("the restored directory {} does not match its backup_manifest: {}", .dir.display(), differing(.files))]
    Checksums {
        dir: PathBuf,
        files: Vec<ChecksumMismatch>,
    },
}

/// A restored file whose CRC-32C is not the one `backup_manifest` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumMismatch {
    /// Its path in the data directory, as the manifest names it.
    pub path: String,
    pub expected: String,
    pub found: String,
}

/// The files whose checksums differ, the first few named.
fn differing(files: &[ChecksumMismatch]) -> String {
    const NAMED: usize = 5;
    let mut text = match files.len() {
        1 => "1 file was restored with other bytes than it was backed up with: ".to_string(),
        n => format!("{n} files were restored with other bytes than they were backed up with: "),
    };
    let named: Vec<String> = files
        .iter()
        .take(NAMED)
        .map(|f| {
            format!(
                "{} (CRC-32C {}, backup_manifest gives {})",
                f.path, f.found, f.expected
            )
        })
        .collect();
    text.push_str(&named.join(", "));
    if files.len() > NAMED {
        text.push_str(&format!(" and {} more", files.len() - NAMED));
    }
    text.push_str(
        "; the directory is not the backup: check this disk, and restore another snapshot",
    );
    text
}

/// pg_basebackup's failure explained, then what the copy of its output says.
fn base_backup_failed(
    failure: Option<&ToolFailure>,
    copy: Option<&CopyError>,
    user: &str,
) -> String {
    match (failure, copy) {
        (Some(f), None) => explain::basebackup_failure(&f.to_string(), user),
        (Some(f), Some(c)) => format!("{}; {c}", explain::basebackup_failure(&f.to_string(), user)),
        (None, Some(c)) => c.to_string(),
        (None, None) => "pg_basebackup failed".to_string(),
    }
}

/// Why the copy of pg_basebackup's output into the snapshot stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("pg_basebackup's stream ended before the end of its archive: {0}")]
    EndedEarly(#[source] std::io::Error),
    #[error("pg_basebackup's stream ended inside a file: {0}")]
    InsideFile(#[source] std::io::Error),
    #[error("cannot read pg_basebackup's stream: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("pg_basebackup's archive holds {name} of a kind this package does not restore (tar type {kind:?})")]
    OtherKind { name: String, kind: char },
    #[error("cannot read pg_basebackup's {name}: {source}")]
    Archive {
        name: String,
        source: std::io::Error,
    },
    #[error("pg_basebackup ended before it wrote all {0} archives")]
    NotAllArchives(usize),
    #[error("cannot read pg_basebackup's backup_manifest: {0}")]
    Manifest(#[source] std::io::Error),
    #[error(
        "pg_basebackup's backup_manifest has no WAL range, so the base backup's start is unknown"
    )]
    NoWalRange,
    #[error("a tablespace was created during the backup (pg_basebackup wrote {}); run the backup again", .0.join(", "))]
    TablespaceCreated(Vec<String>),
    #[error(transparent)]
    Pipes(#[from] PipeError),
    /// Plakar ended the import.
    #[error(transparent)]
    Ended(#[from] Ended),
}

/// Why the archives' pipes could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("pg_basebackup ended before it wrote any archive")]
    Ended,
    /// pg_basebackup opened it first, as a plain file, at each attempt.
    #[error("pg_basebackup opened {name} before the plugin could make it a pipe, at each of {attempts} attempts; run the backup again")]
    Raced { name: String, attempts: u32 },
    #[error("cannot make the pipe {}: {source}", .path.display())]
    Make {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
