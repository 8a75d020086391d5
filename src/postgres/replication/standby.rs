//! Reading from a hot standby: the standby replays the primary's changes, and
//! when a change would remove rows a query still reads (or lock a table it
//! reads), replay waits at most `max_standby_streaming_delay`, then cancels
//! the query. A long dump on a standby is such a query; its failure is told
//! apart here and worded with its remedies.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::postgres::connection::PgError;

/// A query of the backup that the standby cancelled to go on replaying the
/// primary's changes (a recovery conflict), with what the server said.
#[derive(Debug, thiserror::Error)]
#[error("{said}. The standby cancelled the backup's query to replay changes from the primary (a recovery conflict). Run the backup again; to keep it from happening, on the standby set max_standby_streaming_delay to longer than a backup takes (-1 waits for ever, letting replay fall behind meanwhile), or hot_standby_feedback=on (the primary then keeps the rows the standby's queries still read, at the cost of bloat there), and reload it (SELECT pg_reload_conf())")]
pub struct RecoveryConflict {
    said: String,
}

impl RecoveryConflict {
    /// The failure of a client tool (pg_dump, pg_dumpall), when its words say
    /// that a recovery conflict ended it.
    ///
    /// A tool's stderr carries PostgreSQL's message but not its SQLSTATE
    /// (40001 for a cancelled statement, the same for a session ended while
    /// idle in its transaction), so this is the one place that reads the
    /// server's words as text; the plugin's own connections decide on the
    /// SQLSTATE ([`RecoveryConflict::of_query`]).
    pub fn in_tool_failure(said: &str) -> Option<RecoveryConflict> {
        // "canceling statement due to conflict with recovery", or
        // "terminating connection due to conflict with recovery".
        said.contains("due to conflict with recovery")
            .then(|| RecoveryConflict { said: said.into() })
    }

    /// An error of the plugin's own connection, when the server is a standby
    /// and the SQLSTATE is that of a recovery conflict (40001, which on a
    /// primary is a serialization failure of its own).
    pub fn of_query(e: &PgError, in_recovery: bool) -> Option<RecoveryConflict> {
        (in_recovery && e.is(&SqlState::T_R_SERIALIZATION_FAILURE)).then(|| RecoveryConflict {
            said: e.to_string(),
        })
    }
}

/// Whether the server is a standby, replaying WAL (`pg_is_in_recovery()`).
pub async fn in_recovery(client: &Client) -> Result<bool, PgError> {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map(|row| row.get(0))
        .map_err(|e| PgError::new("cannot ask whether the server is a standby", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_cancelled_by_replay_names_the_remedies() {
        let said = "pg_dump exited with status 1: pg_dump: error: Dumping the contents of table \"big\" failed: PQgetCopyData() failed.; pg_dump: detail: Error message from server: ERROR:  canceling statement due to conflict with recovery";
        let conflict = RecoveryConflict::in_tool_failure(said).unwrap().to_string();
        assert!(conflict.starts_with(said), "{conflict}");
        for remedy in ["max_standby_streaming_delay", "hot_standby_feedback=on"] {
            assert!(conflict.contains(remedy), "{conflict}");
        }
        assert!(RecoveryConflict::in_tool_failure(
            "psql: FATAL:  terminating connection due to conflict with recovery"
        )
        .is_some());
        assert!(RecoveryConflict::in_tool_failure(
            "pg_dump exited with status 1: server closed the connection unexpectedly"
        )
        .is_none());
    }

    #[test]
    fn the_plugins_own_queries_are_judged_by_sqlstate_on_a_standby_only() {
        let cancelled = PgError::server(
            "cannot list the databases",
            "40001",
            "canceling statement due to conflict with recovery",
            Some("User query might have needed to see row versions that must be removed.".into()),
            None,
        );
        let conflict = RecoveryConflict::of_query(&cancelled, true)
            .unwrap()
            .to_string();
        assert!(
            conflict.starts_with("cannot list the databases: canceling statement"),
            "{conflict}"
        );
        assert!(
            conflict.contains("max_standby_streaming_delay"),
            "{conflict}"
        );
        // On a primary, 40001 is a serialization failure, not a conflict with replay.
        assert!(RecoveryConflict::of_query(&cancelled, false).is_none());
        let other = PgError::server(
            "",
            "57014",
            "canceling statement due to user request",
            None,
            None,
        );
        assert!(RecoveryConflict::of_query(&other, true).is_none());
    }
}
