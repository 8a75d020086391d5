//! The WAL-archiving source's options (`plakar source add NAME postgres+wal://...`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use crate::connection::{Connection, CLIENT_OPTIONS, SERVER_OPTIONS};
use crate::options::{Kind, OptionError, Spec, Table};
use crate::replication::slot::SlotName;

/// The slot a source uses when the user names none.
pub const DEFAULT_SLOT: &str = "plakar_wal";

static ARCHIVE_OPTIONS: &[Spec] = &[
    Spec {
        name: "slot",
        kind: Kind::Text,
        default: Some(DEFAULT_SLOT),
        description: "The permanent physical replication slot that keeps the server's WAL until a committed snapshot holds it; created by the first run. One slot per store: two stores archiving through one slot would each miss what the other stored.",
    },
    Spec {
        name: "state_dir",
        kind: Kind::Text,
        default: None,
        description: "The local directory of the runs' state, two files per slot and server: `SLOT@HOST-PORT.lock`, held while a run lasts, and `SLOT@HOST-PORT.sent`, where the last run stopped and its receipt. Default: `$XDG_STATE_HOME/plakar-postgresql`, or `~/.local/state/plakar-postgresql`. Losing it loses no WAL: the next run sends again what the slot keeps.",
    },
];

/// Every option of the WAL-archiving source.
pub static WAL_SOURCE_OPTIONS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "WAL source",
        &[SERVER_OPTIONS, CLIENT_OPTIONS, ARCHIVE_OPTIONS],
    )
});

/// The WAL-archiving source configuration, checked.
#[derive(Debug)]
pub struct WalSource {
    /// How to reach the server.
    pub conn: Connection,
    /// The permanent slot.
    pub slot: SlotName,
    /// Where the run's state lives.
    pub state_dir: PathBuf,
}

impl WalSource {
    /// Checks the configuration Plakar hands to `Init`.
    pub fn parse(config: &HashMap<String, String>) -> Result<WalSource, OptionError> {
        let values = WAL_SOURCE_OPTIONS.parse(config)?;
        let conn = Connection::from_values(&values)?;
        if let Some(db) = &conn.database {
            return Err(OptionError::Conflict(format!(
                "WAL archiving streams the whole cluster's WAL, so the URI names no database; remove /{db} from `location`"
            )));
        }
        let raw = values.text("slot").unwrap_or_else(|| DEFAULT_SLOT.into());
        let slot = SlotName::new(&raw).map_err(|_| OptionError::Invalid {
            key: "slot",
            value: format!("{raw:?}"),
            accepted: "1 to 63 lower-case letters, digits and underscores".into(),
        })?;
        let state_dir = match values.text("state_dir") {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    return Err(OptionError::Invalid {
                        key: "state_dir",
                        value: format!("{:?}", dir.display().to_string()),
                        accepted: "an absolute directory path".into(),
                    });
                }
                dir
            }
            None => default_state_dir().ok_or_else(|| {
                OptionError::Conflict(
                    "neither XDG_STATE_HOME nor HOME is set, so the WAL source has no default state_dir; set the option `state_dir`".into(),
                )
            })?,
        };
        Ok(WalSource {
            conn,
            slot,
            state_dir,
        })
    }
}

/// `$XDG_STATE_HOME/plakar-postgresql`, or `~/.local/state/plakar-postgresql`.
fn default_state_dir() -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    nonempty("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("plakar-postgresql"))
}
