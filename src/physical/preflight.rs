//! What a base backup needs from the server and the role, checked before
//! anything is copied, each failure worded with its cause and its remedy.

use std::ffi::OsString;
use std::process::Stdio;

use tokio_postgres::Client;

use crate::connection::{describe_pg_error, Connection};
use crate::tools::{Tool, Toolbox};

/// Why a physical backup cannot start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the server runs with wal_level=minimal, which keeps too little WAL for a base backup; set wal_level=replica (and max_wal_senders above 0) in postgresql.conf and restart the server")]
    WalLevelMinimal,
    #[error("user \"{0}\" may not take a base backup: it has neither the REPLICATION attribute nor superuser; run ALTER ROLE \"{0}\" REPLICATION as a superuser, or connect as a user that has it")]
    NoReplication(String),
    #[error("max_wal_senders is 0 on the server, so it accepts no replication connection; set max_wal_senders to at least 2 in postgresql.conf and restart the server")]
    NoWalSenders,
    #[error("all the WAL senders of the server (max_wal_senders) are in use by standbys or other backups; raise max_wal_senders and restart the server, or try again when one has disconnected")]
    WalSendersBusy,
    #[error("pg_hba.conf on the server has no line that lets user \"{0}\" make a replication connection from this host; add one such as `host replication {0} <this host's address>/32 scram-sha-256` and reload the server (SELECT pg_reload_conf())")]
    NoHbaLine(String),
    #[error("the cluster has tablespaces outside its data directory ({0}), which the physical backup of this package does not copy; back those databases up with the logical postgres:// source, or move their objects to pg_default")]
    Tablespaces(String),
    #[error("cannot reserve the WAL of the backup with a temporary replication slot: {0}; the server needs a free slot (raise max_replication_slots and restart it)")]
    NoSlot(String),
    #[error("the server cannot be checked: {0}")]
    Query(String),
    #[error("the replication connection failed: {0}")]
    Replication(String),
}

/// Runs every check that can be made before the copy.
pub async fn check(admin: &Client, conn: &Connection, toolbox: &Toolbox) -> Result<(), String> {
    settings(admin, conn).await.map_err(|r| r.to_string())?;
    replication_connection(conn, toolbox)
        .await
        .map_err(|r| r.to_string())
}

async fn settings(admin: &Client, conn: &Connection) -> Result<(), Refusal> {
    let q = |e: tokio_postgres::Error| Refusal::Query(describe_pg_error(&e));
    let row = admin
        .query_one(
            "SELECT current_setting('wal_level'),
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*)::int FROM pg_stat_replication),
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(q)?;
    let (wal_level, max_senders, busy, may): (String, i32, i32, Option<bool>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if wal_level == "minimal" {
        return Err(Refusal::WalLevelMinimal);
    }
    if may != Some(true) {
        return Err(Refusal::NoReplication(conn.user.clone()));
    }
    if max_senders == 0 {
        return Err(Refusal::NoWalSenders);
    }
    if busy >= max_senders {
        return Err(Refusal::WalSendersBusy);
    }
    let rows = admin
        .query(
            "SELECT spcname::text || ' at ' || pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1",
            &[],
        )
        .await
        .map_err(q)?;
    if !rows.is_empty() {
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        return Err(Refusal::Tablespaces(names.join(", ")));
    }
    Ok(())
}

/// Opens a replication connection as pg_basebackup will (pg_hba.conf's
/// `replication` lines, a free WAL sender) and asks the server who it is.
async fn replication_connection(conn: &Connection, toolbox: &Toolbox) -> Result<(), Refusal> {
    let args: Vec<OsString> = vec![
        "--no-psqlrc".into(),
        "--no-password".into(),
        "--tuples-only".into(),
        "--command=IDENTIFY_SYSTEM".into(),
        "--dbname=dbname=replication replication=true".into(),
    ];
    let running = toolbox
        .spawn(Tool::Psql, conn, &args, Stdio::null(), Stdio::null())
        .map_err(|e| Refusal::Replication(e.to_string()))?;
    let outcome = running.finish().await;
    match outcome.failure() {
        None => Ok(()),
        Some(why) => Err(classify(&why, &conn.user)),
    }
}

/// The refusal a replication failure's own words point to.
fn classify(why: &str, user: &str) -> Refusal {
    if why.contains("no pg_hba.conf entry for replication connection") {
        Refusal::NoHbaLine(user.to_string())
    } else if why.contains("exceeds max_wal_senders")
        || why.contains("remaining connection slots are reserved")
    {
        Refusal::WalSendersBusy
    } else if why.contains("must be superuser or replication role")
        || why.contains("permission denied to start WAL sender")
    {
        Refusal::NoReplication(user.to_string())
    } else {
        Refusal::Replication(why.to_string())
    }
}

/// Takes a temporary physical replication slot that reserves WAL from now on;
/// it lives as long as the plugin's own connection, so nothing is left behind.
pub async fn reserve_wal(admin: &Client) -> Result<String, String> {
    let name = format!("plakar_{}", std::process::id());
    admin
        .query_one(
            "SELECT slot_name::text FROM pg_create_physical_replication_slot($1, true, true)",
            &[&name],
        )
        .await
        .map(|_| name)
        .map_err(|e| Refusal::NoSlot(describe_pg_error(&e)).to_string())
}

/// pg_basebackup's failure, with the remedy when its words name a known cause.
pub fn explain_basebackup_failure(why: &str) -> String {
    if why.contains("checksum verification failed") {
        return format!(
            "{why}. A data page does not match its checksum: the file named above is damaged on the server; restore it from an earlier backup, or set verify_checksums=false to copy it as it is"
        );
    }
    match classify(why, "") {
        Refusal::Replication(_) => format!("pg_basebackup failed: {why}"),
        known => format!("{why}. {known}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_failures_name_their_remedy() {
        let hba = classify("psql: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  no pg_hba.conf entry for replication connection from host \"127.0.0.1\", user \"bk\", no encryption", "bk");
        assert!(hba.to_string().contains("host replication bk"));
        let busy = classify(
            "FATAL:  number of requested standby connections exceeds max_wal_senders (currently 1)",
            "bk",
        );
        assert!(busy.to_string().contains("raise max_wal_senders"));
        let role = classify(
            "FATAL:  must be superuser or replication role to start walsender",
            "bk",
        );
        assert!(role.to_string().contains("ALTER ROLE \"bk\" REPLICATION"));
        assert!(explain_basebackup_failure("pg_basebackup: WARNING:  checksum verification failed in file \"./base/5/16384\", block 0").contains("verify_checksums=false"));
    }
}
