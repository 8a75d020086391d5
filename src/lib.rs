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
//! - [`logical`]: the logical connectors (`postgres://`): pg_dump and
//!   pg_dumpall in, pg_restore and psql out.
//! - [`physical`]: the physical connectors (`postgres+bin://`), with the WAL
//!   a snapshot carries for point-in-time recovery (`archive_wal`) and its
//!   restore to a moment.
//! - [`postgres`]: what both kinds know of PostgreSQL: the connection, the
//!   replication protocol and slots, the client tools, `/manifest.json`.
//! - [`options`], [`names`], [`pipe`], [`progress`]: the option tables, the
//!   snapshot's record names, the pipes bytes move through, the progress
//!   lines; nothing PostgreSQL-specific.
//!
//! A module imports only what stands below it in this list; each room has
//! its own error type, turned into a gRPC status at the edge.

pub mod connectors;
pub mod logical;
pub mod names;
pub mod options;
pub mod physical;
pub mod pipe;
pub mod postgres;
pub mod progress;
pub mod protocol;
