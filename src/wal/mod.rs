//! Point-in-time recovery: the WAL-archiving source (`postgres+wal://`), a
//! room of its own beside `physical`, and the WAL vocabulary both it and the
//! physical destination speak.
//!
//! A WAL snapshot holds, under [`WAL_DIR`], every complete segment the
//! server wrote since the previous committed run (`/wal/<24 hex digits>`),
//! the segment still being written up to the run's stop position
//! (`/wal/<name>.partial`, not padded), the timeline history files
//! (`/wal/<TTTTTTTT>.history`), and `/manifest.json` with the system
//! identifier and the exact range; and `/receipt/<id>`, the run's receipt.

pub mod segment;

pub use segment::{History, Segment};

/// The directory of a WAL snapshot that holds the WAL files.
pub const WAL_DIR: &str = "/wal";

/// The directory of each run's receipt (see [`archive`]), which the
/// physical destination does not restore.
pub const RECEIPTS: &str = "/receipt";

/// The suffix of the segment still being written when the run stopped.
pub const PARTIAL: &str = ".partial";

pub mod archive;
pub mod error;
pub mod options;
pub mod state;

pub use archive::WalArchive;
pub use error::WalError;
