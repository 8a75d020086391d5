//! Backing up from a hot standby, where what plakar cannot provoke goes
//! through the project's host: a dump that the standby cancels to go on
//! replaying the primary's changes (a recovery conflict), caught in the
//! middle of its stream so that the conflict surely lands while it reads;
//! and a standby whose primary does not write full pages.

mod common;

use std::time::Duration;

use common::caught::{wait_for, wait_until};
use common::host::Backup;
use common::{pairs, Cluster, ClusterOptions};

/// A standby that cancels a conflicting query at once (no delay, no
/// feedback to the primary), and logs when replay waits on one that cannot
/// take the cancel yet.
fn impatient_standby(primary: &Cluster) -> Cluster {
    Cluster::standby_of(
        primary,
        &[
            "max_standby_streaming_delay = 0",
            "hot_standby_feedback = off",
            "log_recovery_conflict_waits = on",
            "deadlock_timeout = 100ms",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_cancelled_by_a_recovery_conflict_names_the_remedies() {
    let primary = Cluster::start_with(ClusterOptions::primary());
    primary.sql("postgres", "CREATE DATABASE app");
    // 2,000 rows of 96 KiB each: small on disk (the values compress), 190 MiB
    // through COPY, far more than the pipes and sockets between the server
    // and the host hold, so pg_dump's COPY is still running when the host holds.
    primary.sql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY, body text);
         INSERT INTO big SELECT i, repeat(md5(i::text), 3072) FROM generate_series(1, 2000) i;",
    );
    let standby = impatient_standby(&primary);
    standby.wait_for_replay_of(&primary);

    let source = vec![("location", standby.uri("app"))];
    let run = Backup::logical(&pairs(&source))
        .holding("/app.dump", || {
            // pg_dump's COPY on the standby waits for the host to read on, its snapshot held.
            wait_for(
                &standby,
                "app",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'plakar-postgresql' AND query LIKE 'COPY public.big %' AND wait_event = 'ClientWrite'",
            );
            // Rows that snapshot still sees, removed on the primary: replaying
            // their removal conflicts with the dump.
            primary.sql("app", "DELETE FROM big WHERE id % 2 = 0");
            primary.sql("app", "VACUUM big");
            // The standby cancels the dump at once, or, when its backend is
            // blocked on a full socket, as soon as it can write again: either
            // way its log says the conflict hit.
            wait_until(
                Duration::from_secs(60),
                "the standby's replay to meet the dump",
                || {
                    let log = standby.log();
                    log.contains("conflict with recovery")
                        || log.contains("recovery still waiting after")
                },
            );
        })
        .run()
        .await;
    run.fails_saying(&[
        "/app.dump",
        "canceling statement due to conflict with recovery",
        "max_standby_streaming_delay",
        "hot_standby_feedback=on",
        "pg_reload_conf()",
    ]);
    // Replay went on once the dump was cancelled.
    standby.wait_for_replay_of(&primary);
    assert_eq!(standby.sql("app", "SELECT count(*) FROM big"), "1000");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_of_a_primary_without_full_page_writes_is_refused_with_the_remedy() {
    // The test clusters' default: full_page_writes = off.
    let primary = Cluster::start_with(ClusterOptions::physical());
    let standby = Cluster::standby_of(&primary, &[]);
    let source = vec![("location", standby.bin_uri())];
    Backup::physical(&pairs(&source))
        .run()
        .await
        .fails_saying(&["full_page_writes", "CHECKPOINT", "primary"]);
}
