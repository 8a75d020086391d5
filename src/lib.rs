//! Plakar's PostgreSQL integration: logical backups (pg_dump and pg_dumpall,
//! restored with pg_restore and psql) and physical ones (pg_basebackup,
//! restored into a data directory checked by pg_verifybackup), each served to
//! Plakar over gRPC by a connector.
//!
//! - [`protocol`]: the wire (gRPC over stdin/stdout), and the two sides every
//!   connector shares: a [`protocol::source::Source`] announces records and
//!   serves their content, a [`protocol::destination::Destination`] takes files.
//!   Nothing PostgreSQL-specific.
//! - [`connectors`]: the table of connectors, each served by
//!   [`protocol::server`].
//! - [`backup`] and [`restore`]: the logical connectors (`postgres://`).
//! - [`physical`]: the physical connectors (`postgres+bin://`), with the WAL
//!   a snapshot carries for point-in-time recovery (`archive_wal`) and its
//!   restore to a moment.
//! - [`replication`]: replication checks, the replication connection, and slots.
//! - [`options`], [`connection`], [`tools`], [`names`], [`manifest`], [`toc`] (a dump's table of contents):
//!   PostgreSQL knowledge the connectors share; [`pipe`] moves bytes through the
//!   client tools' pipes; [`error`] is what fails, worded for the user.

pub mod backup;
pub mod connection;
pub mod connectors;
pub mod error;
pub mod manifest;
pub mod names;
pub mod options;
pub mod physical;
pub mod pipe;
pub mod progress;
pub mod protocol;
pub mod replication;
pub mod restore;
pub mod toc;
pub mod tools;
