//! Physical replication slots, on the plugin's own (ordinary) connection:
//! a temporary slot lives as long as that connection; a permanent one
//! outlives it and keeps WAL for a reader that comes back.

use std::fmt;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::Lsn;
use crate::postgres::connection::PgError;

/// A slot name as PostgreSQL accepts it: 1 to 63 of `a-z`, `0-9` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotName(String);

impl SlotName {
    /// Checks a name before the server sees it.
    pub fn new(name: &str) -> Result<SlotName, SlotError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(SlotName(name.to_string()))
        } else {
            Err(SlotError::BadName(name.to_string()))
        }
    }

    /// The temporary slot of this plugin process: `plakar_<pid>`.
    pub fn for_this_process() -> SlotName {
        SlotName(format!("plakar_{}", std::process::id()))
    }

    /// The name itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How safe the WAL a slot needs is (`pg_replication_slots.wal_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalStatus {
    /// Within max_wal_size.
    Reserved,
    /// Beyond max_wal_size, kept by wal_keep_size or the slot.
    Extended,
    /// Due for removal at the next checkpoint: the reader must catch up now.
    Unreserved,
    /// Removed: the slot is invalidated and can no longer be used.
    Lost,
}

impl WalStatus {
    fn parse(word: &str) -> Option<WalStatus> {
        match word {
            "reserved" => Some(WalStatus::Reserved),
            "extended" => Some(WalStatus::Extended),
            "unreserved" => Some(WalStatus::Unreserved),
            "lost" => Some(WalStatus::Lost),
            _ => None,
        }
    }
}

/// A physical slot, as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// Its name.
    pub name: SlotName,
    /// Whether it goes away with the session that made it.
    pub temporary: bool,
    /// Whether a connection streams from it now.
    pub active: bool,
    /// The oldest WAL it keeps; None while it reserves none.
    pub restart_lsn: Option<Lsn>,
    /// How safe that WAL is; None before PostgreSQL 13, or while nothing is reserved.
    pub wal_status: Option<WalStatus>,
}

impl SlotState {
    /// Whether the server invalidated the slot: the WAL it kept is gone.
    pub fn is_lost(&self) -> bool {
        self.wal_status == Some(WalStatus::Lost)
    }
}

/// A permanent slot made sure of: found, or created now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// The slot.
    pub slot: SlotState,
    /// Whether it was created by this call.
    pub created: bool,
}

/// Why a slot cannot be made, read or dropped, with the remedy.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{0:?} cannot name a replication slot: a slot name is 1 to 63 lower-case letters, digits and underscores")]
    BadName(String),
    #[error("the server has no free replication slot: raise max_replication_slots and restart the server, or drop a slot no longer used (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active)")]
    NoFreeSlot,
    #[error("replication slot \"{0}\" already exists")]
    Exists(SlotName),
    #[error("replication slot \"{name}\" exists but is {what}, not a permanent physical slot; drop it or choose another name")]
    Unsuitable { name: SlotName, what: &'static str },
    #[error("replication slot \"{0}\" is in use by a replication connection and cannot be dropped; end that connection first (its pid is pg_replication_slots.active_pid)")]
    InUse(SlotName),
    #[error("the user may not manage replication slots, which needs the REPLICATION attribute or superuser: {0}")]
    NoPrivilege(PgError),
    #[error("replication slots are not available on the server: {0}")]
    Unavailable(PgError),
    #[error("{0}")]
    Query(PgError),
}

impl SlotError {
    /// The error of a slot function, decided by its SQLSTATE.
    fn of(e: tokio_postgres::Error, name: &SlotName, doing: &'static str) -> SlotError {
        let pg = PgError::new(format!("cannot {doing} replication slot \"{name}\""), &e);
        match pg.code() {
            Some(c) if *c == SqlState::CONFIGURATION_LIMIT_EXCEEDED => SlotError::NoFreeSlot,
            Some(c) if *c == SqlState::DUPLICATE_OBJECT => SlotError::Exists(name.clone()),
            Some(c) if *c == SqlState::OBJECT_IN_USE => SlotError::InUse(name.clone()),
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => SlotError::NoPrivilege(pg),
            // wal_level=minimal or max_replication_slots=0.
            Some(c) if *c == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE => {
                SlotError::Unavailable(pg)
            }
            _ => SlotError::Query(pg),
        }
    }
}

/// Creates a temporary physical slot that reserves WAL from now on; it lives
/// as long as `client`'s session, so nothing is left behind whatever happens.
pub async fn create_temporary(client: &Client, name: &SlotName) -> Result<SlotState, SlotError> {
    create(client, name, true).await
}

/// Creates a permanent physical slot that reserves WAL from now on.
pub async fn create_permanent(client: &Client, name: &SlotName) -> Result<SlotState, SlotError> {
    create(client, name, false).await
}

async fn create(client: &Client, name: &SlotName, temporary: bool) -> Result<SlotState, SlotError> {
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_physical_replication_slot($1, true, $2)",
            &[&name.as_str(), &temporary],
        )
        .await
        .map_err(|e| SlotError::of(e, name, "create"))?;
    let lsn: Option<String> = row.get(0);
    Ok(SlotState {
        name: name.clone(),
        temporary,
        active: false,
        restart_lsn: lsn.and_then(|l| l.parse().ok()),
        wal_status: Some(WalStatus::Reserved),
    })
}

/// Makes sure a permanent physical slot exists: creates it if missing, and
/// says so in the log. A slot of the name that is logical or temporary is refused.
pub async fn ensure_permanent(client: &Client, name: &SlotName) -> Result<Ensured, SlotError> {
    let existing = match inspect(client, name).await? {
        Some(found) => found,
        None => match create_permanent(client, name).await {
            Ok(slot) => {
                tracing::info!(
                    "created the permanent replication slot \"{name}\", which keeps WAL from {}",
                    slot.restart_lsn
                        .map_or_else(|| "now".to_string(), |l| l.to_string())
                );
                return Ok(Ensured {
                    slot,
                    created: true,
                });
            }
            // Another process made it between the two statements.
            Err(SlotError::Exists(_)) => inspect(client, name)
                .await?
                .ok_or_else(|| SlotError::Exists(name.clone()))?,
            Err(e) => return Err(e),
        },
    };
    if existing.temporary {
        return Err(SlotError::Unsuitable {
            name: name.clone(),
            what: "a temporary slot of another session",
        });
    }
    Ok(Ensured {
        slot: existing,
        created: false,
    })
}

/// The slot of this name, if there is one; a logical slot of the name is refused.
pub async fn inspect(client: &Client, name: &SlotName) -> Result<Option<SlotState>, SlotError> {
    // wal_status is read through to_jsonb: servers before 13 have no such column.
    let row = client
        .query_opt(
            "SELECT slot_type::text, temporary, active, restart_lsn::text, to_jsonb(s) ->> 'wal_status'
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&name.as_str()],
        )
        .await
        .map_err(|e| SlotError::of(e, name, "read"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let kind: String = row.get(0);
    if kind != "physical" {
        return Err(SlotError::Unsuitable {
            name: name.clone(),
            what: "a logical slot",
        });
    }
    let restart_lsn: Option<String> = row.get(3);
    let wal_status: Option<String> = row.get(4);
    Ok(Some(SlotState {
        name: name.clone(),
        temporary: row.get(1),
        active: row.get(2),
        restart_lsn: restart_lsn.and_then(|l| l.parse().ok()),
        wal_status: wal_status.as_deref().and_then(WalStatus::parse),
    }))
}

/// Moves a physical slot's `restart_lsn` forward to `to`, freeing the WAL
/// before it; the position it is at afterwards.
pub async fn advance(client: &Client, name: &SlotName, to: Lsn) -> Result<Option<Lsn>, SlotError> {
    let row = client
        .query_one(
            "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&name.as_str(), &to.to_string()],
        )
        .await
        .map_err(|e| SlotError::of(e, name, "advance"))?;
    let at: Option<String> = row.get(0);
    Ok(at.and_then(|l| l.parse().ok()))
}

/// Drops a slot, freeing the WAL it kept; false when there was none.
pub async fn drop_slot(client: &Client, name: &SlotName) -> Result<bool, SlotError> {
    match client
        .execute("SELECT pg_drop_replication_slot($1)", &[&name.as_str()])
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(false),
        Err(e) => Err(SlotError::of(e, name, "drop")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_checked_before_the_server_sees_them() {
        assert!(SlotName::new("plakar_main_1").is_ok());
        assert!(SlotName::new(&"a".repeat(63)).is_ok());
        for bad in ["", "Upper", "with-dash", "sp ace", "é", &"a".repeat(64)] {
            let err = SlotName::new(bad).unwrap_err().to_string();
            assert!(
                err.contains("cannot name a replication slot"),
                "{bad:?}: {err}"
            );
        }
        assert!(SlotName::for_this_process().as_str().starts_with("plakar_"));
    }

    #[test]
    fn a_lost_slot_is_one_whose_wal_is_gone() {
        let mut state = SlotState {
            name: SlotName::new("s").unwrap(),
            temporary: false,
            active: false,
            restart_lsn: None,
            wal_status: WalStatus::parse("lost"),
        };
        assert!(state.is_lost());
        state.wal_status = WalStatus::parse("unreserved");
        assert!(!state.is_lost());
        assert_eq!(WalStatus::parse("what"), None);
    }
}
