//! Logical backups (`postgres://`): pg_dump and pg_dumpall streamed into the
//! snapshot by the source, and restored with pg_restore and psql by the
//! destination.
//!
//! - [`backup`]: the source, what it dumps and in what order.
//! - [`restore`]: the destination, how each dump is applied.
//! - [`toc`]: reading the table of contents at the head of a custom-format
//!   dump, which both sides need.

pub mod backup;
pub mod error;
pub mod restore;
pub mod toc;
