//! Plakar's PostgreSQL integration: logical backups with pg_dump and
//! pg_dumpall, restores with pg_restore and psql, served to Plakar over gRPC.
//!
//! - [`protocol`]: the wire (gRPC over stdin/stdout), nothing PostgreSQL-specific.
//! - [`options`], [`connection`], [`tools`], [`names`], [`manifest`], [`archive`]: PostgreSQL knowledge.
//! - [`pipe`]: the client tools' pipes, and the threads that move bytes through them.
//! - [`backup`] and [`restore`]: the logical connectors, each a short story.
//! - [`physical`]: the physical connectors (`postgres+bin://`).
//! - [`replication`]: replication checks, the replication connection, and slots.

pub mod archive;
pub mod backup;
pub mod connection;
pub mod manifest;
pub mod names;
pub mod options;
pub mod physical;
pub mod pipe;
pub mod progress;
pub mod protocol;
pub mod replication;
pub mod restore;
pub mod server;
pub mod session;
pub mod tools;
