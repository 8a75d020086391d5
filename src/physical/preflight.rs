//! What a base backup needs from the server and the role, checked before
//! anything is copied, each failure worded with its cause and its remedy:
//! replication allowed (see [`crate::postgres::replication`]); and the tablespaces
//! outside the data directory, whose archives the copy must expect.

use tokio_postgres::Client;

use super::tablespaces::Tablespace;
use crate::postgres::connection::{Connection, PgError};
use crate::postgres::replication::slot::{self, SlotName};
use crate::postgres::replication::{self, Refusal, SystemId};

/// Why a physical backup cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Replication(#[from] Refusal),
    #[error("the server cannot be checked: {0}")]
    Query(PgError),
    #[error("cannot reserve the WAL of the backup with a temporary replication slot: {0}")]
    NoSlot(slot::SlotError),
}

/// Runs every check that can be made before the copy: the server's settings
/// and the role on the plugin's connection, then a replication connection,
/// which says who the server is (on a standby, the timeline it replays).
pub async fn check(admin: &Client, conn: &Connection) -> Result<SystemId, PreflightError> {
    replication::check_server(admin, &conn.user).await?;
    Ok(replication::probe(conn).await?)
}

/// The tablespaces outside the data directory: pg_basebackup writes one
/// archive for each, named after its OID.
pub async fn tablespaces(admin: &Client) -> Result<Vec<Tablespace>, PreflightError> {
    let rows = admin
        .query(
            "SELECT oid, spcname::text, pg_tablespace_location(oid)::text FROM pg_tablespace
             WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| PreflightError::Query(PgError::new("", &e)))?;
    Ok(rows
        .iter()
        .map(|r| Tablespace {
            oid: r.get(0),
            name: r.get(1),
            location: r.get::<_, String>(2).into(),
        })
        .collect())
}

/// Takes a temporary physical replication slot that reserves WAL from now on;
/// it lives as long as the plugin's own connection, so nothing is left behind.
pub async fn reserve_wal(admin: &Client) -> Result<SlotName, PreflightError> {
    let name = SlotName::for_this_process();
    slot::create_temporary(admin, &name)
        .await
        .map(|created| created.name)
        .map_err(PreflightError::NoSlot)
}
