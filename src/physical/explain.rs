//! pg_basebackup's failures, explained from its stderr. A tool's stderr
//! carries PostgreSQL's words but not its SQLSTATE, so this is the one place
//! that reads them as text; the plugin's own connections decide on SQLSTATE
//! (see [`crate::postgres::replication::probe`]).

use crate::postgres::replication::Refusal;

/// pg_basebackup's failure, with the remedy when its words name a known cause.
pub fn basebackup_failure(why: &str, user: &str) -> String {
    if why.contains("checksum verification failed") {
        return format!(
            "{why}. A data page does not match its checksum: the file named above is damaged on the server; restore it from an earlier backup, or set verify_checksums=false to copy it as it is"
        );
    }
    // From a standby only: its primary wrote WAL without full pages since the
    // restartpoint the copy would start from, or while it ran.
    if why.contains("generated with full_page_writes=off was replayed") {
        return format!(
            "{why}. The server is a standby whose primary writes WAL without full-page writes, from which no consistent copy can be made on the standby: set full_page_writes=on on the primary, run CHECKPOINT there, and back up again"
        );
    }
    match cause(why, user) {
        Some(known) => format!("{why}. {known}"),
        None => format!("pg_basebackup failed: {why}"),
    }
}

/// The refusal the server's words, as pg_basebackup prints them, point to.
fn cause(why: &str, user: &str) -> Option<Refusal> {
    if why.contains("no pg_hba.conf entry for replication connection") {
        Some(Refusal::NoHbaLine(user.to_string()))
    } else if why.contains("exceeds max_wal_senders")
        || why.contains("remaining connection slots are reserved")
    {
        Some(Refusal::WalSendersBusy)
    } else if why.contains("must be superuser or replication role")
        || why.contains("permission denied to start WAL sender")
    {
        Some(Refusal::NoReplication(user.to_string()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_basebackups_words_name_their_remedy() {
        let hba = basebackup_failure("pg_basebackup: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  no pg_hba.conf entry for replication connection from host \"127.0.0.1\", user \"bk\", no encryption", "bk");
        assert!(hba.contains("host replication bk"), "{hba}");
        let busy = basebackup_failure(
            "FATAL:  number of requested standby connections exceeds max_wal_senders (currently 1)",
            "bk",
        );
        assert!(busy.contains("raise max_wal_senders"), "{busy}");
        let role = basebackup_failure(
            "FATAL:  must be superuser or replication role to start walsender",
            "bk",
        );
        assert!(role.contains("ALTER ROLE \"bk\" REPLICATION"), "{role}");
        assert!(basebackup_failure("pg_basebackup: WARNING:  checksum verification failed in file \"./base/5/16384\", block 0", "bk").contains("verify_checksums=false"));
        let standby = basebackup_failure("pg_basebackup exited with status 1: pg_basebackup: error: could not initiate base backup: ERROR:  WAL generated with full_page_writes=off was replayed since last restartpoint", "bk");
        assert!(
            standby.contains("set full_page_writes=on on the primary, run CHECKPOINT there"),
            "{standby}"
        );
        assert_eq!(
            basebackup_failure("pg_basebackup exited with status 1: disk full", "bk"),
            "pg_basebackup failed: pg_basebackup exited with status 1: disk full"
        );
    }
}
