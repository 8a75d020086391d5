//! The WAL a physical snapshot carries (`archive_wal`): its vocabulary
//! (segment and history file names, timeline ancestry), the stream that adds
//! each run's WAL to its snapshot, and the runs' local state.

pub mod error;
pub mod segment;
pub mod state;
pub mod stream;

pub use error::WalError;
pub use segment::{History, Segment};
