//! Physical backups (`postgres+bin://`): a whole cluster's files, one record
//! per file of the data directory, read in place on the database host
//! ([`direct`]) or through pg_basebackup's stream ([`copy`]), restored into a
//! new data directory and verified with pg_verifybackup; with `archive_wal`,
//! every snapshot also carries the WAL since its base backup ([`wal`],
//! [`archive`], [`chain`]) and restores to any moment of it ([`recovery`]).
//! A room of its own beside [`crate::logical`], sharing what
//! [`crate::postgres`] knows.

pub mod archive;
pub mod backup;
pub mod backup_manifest;
pub mod chain;
pub mod checksums;
pub mod copy;
pub mod direct;
pub mod error;
mod explain;
pub mod options;
pub mod owner;
pub mod preflight;
pub mod recovery;
pub mod restore;
pub mod tablespaces;
mod tar;
pub mod wal;

pub use backup::PhysicalBackup;
pub use options::PhysicalDestination;
