//! Why a WAL archive run cannot go on, each with its cause and remedy.

use std::path::PathBuf;

use crate::postgres::connection::PgError;
use crate::postgres::replication::slot::SlotError;
use crate::postgres::replication::Lsn;

/// A WAL archive run's failure.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("another archiving run of slot \"{slot}\" holds {}; runs of one slot must not overlap: wait for it to end, or give each source its own slot", .lock.display())]
    Busy { slot: String, lock: PathBuf },
    #[error("cannot {action} the archiving state file {}: {source}", .path.display())]
    State {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the archiving state file {} cannot be read ({why}); remove it: the next run then takes a new base backup", .path.display())]
    BadState { path: PathBuf, why: String },
    #[error("the replication slot of WAL archiving: {0}")]
    Slot(#[from] SlotError),
    #[error("replication slot \"{slot}\" was invalidated by the server (wal_status lost): WAL it kept was removed before it was archived, so the chain of archived WAL is broken{}. A point-in-time restore cannot pass that position: drop the slot (SELECT pg_drop_replication_slot('{slot}')): the next run creates it again and takes a new base backup; archive more often, or raise max_slot_wal_keep_size, so that it does not happen again", .archived.map(|l| format!(" after {l}, where the last committed run stopped")).unwrap_or_default())]
    SlotInvalidated { slot: String, archived: Option<Lsn> },
    #[error("replication slot \"{0}\" is in use by another replication connection (a run still under way, or a standby using the same slot); give this source its own slot")]
    SlotActive(String),
    #[error("replication slot \"{0}\" reserves no WAL (it was created without reserving any), so it cannot keep the WAL between runs; drop it (SELECT pg_drop_replication_slot('{0}')) so that the next run creates it again")]
    SlotReservesNothing(String),
    #[error("the server no longer has the WAL from {from} on timeline {timeline}: the chain of archived WAL is broken there; drop the slot (SELECT pg_drop_replication_slot('{slot}')): the next run creates it again and takes a new base backup: {source}")]
    WalRemoved {
        slot: String,
        from: Lsn,
        timeline: u32,
        source: PgError,
    },
    #[error("streaming WAL from the server failed: {0}")]
    Stream(PgError),
    #[error("the server's WAL stream {0}")]
    Protocol(String),
}
