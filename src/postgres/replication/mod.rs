//! Replication knowledge: what the server and the role must allow before WAL
//! can be streamed or a base backup taken, the replication connection itself,
//! replication slots, and what reading from a standby brings. The physical
//! source uses it, the logical one for standbys; a WAL-archiving source will
//! share it.
//!
//! - [`check_server`]: `wal_level`, the role's `REPLICATION`, free WAL senders.
//! - [`probe`]: opens a replication connection as pg_basebackup will, and
//!   names the cause of a refusal from its SQLSTATE.
//! - [`wire`]: the replication connection (tokio-postgres cannot open one).
//! - [`slot`]: physical slots, temporary or permanent: create, inspect, drop.
//! - [`standby`]: queries a standby cancels to go on replaying (recovery
//!   conflicts), and their remedies.

pub mod slot;
pub mod standby;
pub mod stream;
pub mod wire;

use std::fmt;
use std::str::FromStr;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::postgres::connection::{ConnectError, Connection, PgError};
pub use wire::{ReplicationConnection, SystemId};

/// Why the server or the role does not allow replication, with the remedy.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the server runs with wal_level=minimal, which keeps too little WAL for a base backup; set wal_level=replica (and max_wal_senders above 0) in postgresql.conf and restart the server")]
    WalLevelMinimal,
    #[error("user \"{0}\" may not open a replication connection, which a base backup and WAL archiving need: it has neither the REPLICATION attribute nor superuser; run ALTER ROLE \"{0}\" REPLICATION as a superuser, or connect as a user that has it")]
    NoReplication(String),
    #[error("max_wal_senders is 0 on the server, so it accepts no replication connection; set max_wal_senders to at least 2 in postgresql.conf and restart the server")]
    NoWalSenders,
    #[error("all the WAL senders of the server (max_wal_senders) are in use by standbys or other backups; raise max_wal_senders and restart the server, or try again when one has disconnected")]
    WalSendersBusy,
    #[error("pg_hba.conf on the server has no line that lets user \"{0}\" make a replication connection from this host; add one such as `host replication {0} <this host's address>/32 scram-sha-256` and reload the server (SELECT pg_reload_conf())")]
    NoHbaLine(String),
    #[error("the server cannot be checked: {0}")]
    Query(PgError),
    #[error("the replication connection failed: {0}")]
    Connect(ConnectError),
    #[error("the replication connection failed: {0}")]
    Protocol(PgError),
}

impl Refusal {
    /// The refusal a replication connection's SQLSTATE points to, if it is one
    /// with a known remedy. The role's own connection got through, so a
    /// missing authorization is the `replication` line of pg_hba.conf.
    pub fn from_code(code: &SqlState, user: &str) -> Option<Refusal> {
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            Some(Refusal::NoHbaLine(user.to_string()))
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            Some(Refusal::WalSendersBusy)
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            Some(Refusal::NoReplication(user.to_string()))
        } else {
            None
        }
    }
}

/// Checks on the plugin's own connection that the server and the role allow
/// replication: `wal_level`, the role's attributes, a free WAL sender.
pub async fn check_server(admin: &Client, user: &str) -> Result<(), Refusal> {
    let row = admin
        .query_one(
            "SELECT current_setting('wal_level'),
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*)::int FROM pg_stat_replication),
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(|e| Refusal::Query(PgError::new("", &e)))?;
    let (wal_level, max_senders, busy, may): (String, i32, i32, Option<bool>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if wal_level == "minimal" {
        return Err(Refusal::WalLevelMinimal);
    }
    if may != Some(true) {
        return Err(Refusal::NoReplication(user.to_string()));
    }
    if max_senders == 0 {
        return Err(Refusal::NoWalSenders);
    }
    if busy >= max_senders {
        return Err(Refusal::WalSendersBusy);
    }
    Ok(())
}

/// Opens a replication connection as pg_basebackup will (pg_hba.conf's
/// `replication` lines, a free WAL sender, the role's right to start one)
/// and asks the server who it is.
pub async fn probe(conn: &Connection) -> Result<SystemId, Refusal> {
    let mut replication = ReplicationConnection::open(conn).await.map_err(|e| {
        match e
            .code()
            .and_then(|code| Refusal::from_code(code, &conn.user))
        {
            Some(known) => known,
            None => Refusal::Connect(e),
        }
    })?;
    let system = replication.identify_system().await.map_err(|e| {
        match e
            .code()
            .and_then(|code| Refusal::from_code(code, &conn.user))
        {
            Some(known) => known,
            None => Refusal::Protocol(e),
        }
    })?;
    replication.close().await;
    Ok(system)
}

/// A position in the WAL, as PostgreSQL writes it: `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A text that is not a WAL position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a WAL position (such as 16/B374D848)")]
pub struct BadLsn(pub String);

impl FromStr for Lsn {
    type Err = BadLsn;

    fn from_str(s: &str) -> Result<Lsn, BadLsn> {
        let bad = || BadLsn(s.to_string());
        let (high, low) = s.split_once('/').ok_or_else(bad)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_positions_read_and_print_as_postgresql_writes_them() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("0/2000028".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
        for bad in ["", "16", "16/", "x/1", "1/2/3", "100000000/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sqlstates_name_their_remedy() {
        let hba = Refusal::from_code(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "bk");
        assert!(hba.unwrap().to_string().contains("host replication bk"));
        let busy = Refusal::from_code(&SqlState::TOO_MANY_CONNECTIONS, "bk");
        assert!(busy.unwrap().to_string().contains("raise max_wal_senders"));
        let role = Refusal::from_code(&SqlState::INSUFFICIENT_PRIVILEGE, "bk");
        assert!(role
            .unwrap()
            .to_string()
            .contains("ALTER ROLE \"bk\" REPLICATION"));
        assert!(Refusal::from_code(&SqlState::INVALID_PASSWORD, "bk").is_none());
    }
}
