//! Point-in-time recovery through the real Plakar: a base backup
//! (`postgres+bin://`), WAL archive runs (`postgres+wal://`) while the
//! cluster is written to, and restores to a moment with the README's
//! commands, checked as an administrator would: the rows of that moment and
//! none after it, pgbench's invariant, a server that accepts connections, and
//! a clear error with a non-zero exit for each broken chain.
//!
//! Without a plakar binary every case is reported as ignored, never as
//! passed, and `make test` ends with a line saying so.

mod common;

use std::time::Duration;

use common::caught::wait_until;
use common::load::{assert_pgbench_consistent, pgbench_sums, pgbench_writing};
use common::pitr::{create_marks, mark, restore_dir, Archive};
use common::plakar;
use common::walsnap::archive_files;
use common::{Cluster, ClusterOptions};

/// Every case, by name.
const CASES: &[(&str, fn())] = &[
    (
        "under_load_a_restore_reaches_the_moment_by_time_name_lsn_xid_or_immediate_and_the_latest",
        to_a_moment_under_load,
    ),
    ("a_run_that_is_not_committed_loses_no_wal", uncommitted_runs),
    (
        "an_invalidated_slot_fails_the_run_naming_the_broken_chain",
        invalidated_slot,
    ),
    (
        "wal_of_another_cluster_or_a_gap_is_refused_before_the_server_starts",
        broken_chains,
    ),
    (
        "a_restore_reaches_a_point_on_the_timeline_after_a_promotion",
        second_timeline,
    ),
    (
        "archiving_a_standby_follows_it_onto_its_new_timeline_when_promoted",
        standby_promoted,
    ),
    (
        "the_wal_source_refuses_a_user_without_replication",
        wal_preflight,
    ),
];

fn main() {
    plakar::run_cases(CASES, "point-in-time recovery cases");
}

/// The names in `marks`, in the order they were written.
fn marks(cluster: &Cluster) -> Vec<String> {
    cluster.rows("postgres", "SELECT name FROM marks ORDER BY at")
}

/// A cluster being archived: the table of marks, and the slot made by a first run.
fn archived_cluster() -> (Cluster, Archive) {
    archived_cluster_by(Archive::of)
}

/// [`archived_cluster`] with the archive `make` makes.
fn archived_cluster_by(make: fn(&Cluster) -> Archive) -> (Cluster, Archive) {
    let src = Cluster::start_with(ClusterOptions::archived());
    create_marks(&src);
    let archive = make(&src);
    archive
        .archive_run()
        .ok_saying(&["created the permanent replication slot \"plakar_wal\""]);
    (src, archive)
}

/// Some WAL: rows, and the segment switched.
fn write_wal(cluster: &Cluster, rows: u32) {
    cluster.sql(
        "postgres",
        &format!("CREATE TABLE IF NOT EXISTS filler (n int, pad text); INSERT INTO filler SELECT i, repeat('x', 200) FROM generate_series(1, {rows}) i"),
    );
    cluster.sql("postgres", "SELECT pg_switch_wal()");
}

/// The timeline a server is on, from its control file once checkpointed.
fn timeline(cluster: &Cluster) -> String {
    cluster.sql("postgres", "CHECKPOINT");
    cluster.sql(
        "postgres",
        "SELECT timeline_id FROM pg_control_checkpoint()",
    )
}

/// Starts the recovered directory and waits until recovery is over:
/// promoted, or paused at its target.
fn start_recovered(data: &std::path::Path) -> Cluster {
    let cluster = Cluster::adopt(data);
    wait_until(Duration::from_secs(60), "recovery to end", || {
        cluster.sql(
            "postgres",
            "SELECT NOT pg_is_in_recovery() OR pg_get_wal_replay_pause_state() = 'paused'",
        ) == "t"
    });
    cluster
}

fn to_a_moment_under_load() {
    let (src, archive) = archived_cluster();
    let mut load = pgbench_writing(&src, "postgres");
    let base = archive.base_backup();
    archive.archived();
    std::thread::sleep(Duration::from_secs(1));
    archive.archived();

    mark(&src, "before");
    let t1 = mark(&src, "t1");
    let t1_xid = src.sql("postgres", "SELECT xmin FROM marks WHERE name = 't1'");
    let t1_lsn = src.sql("postgres", "SELECT pg_current_wal_insert_lsn()");
    src.sql("postgres", "SELECT pg_create_restore_point('t1')");
    std::thread::sleep(Duration::from_millis(500));
    mark(&src, "after");
    archive.archived();
    std::thread::sleep(Duration::from_secs(1));
    archive.archived();
    mark(&src, "last");
    let (_, _, _, _, history_before_last) = pgbench_sums(&src, "postgres");
    archive.archived();
    assert!(load.running(), "pgbench ended during the archive runs");
    load.stop();

    let t1_and_before: &[&str] = &["before", "t1"];
    for (what, target, expected) in [
        (
            "by time",
            format!("recovery_target_time={t1}"),
            t1_and_before,
        ),
        (
            "by name",
            "recovery_target_name=t1".to_string(),
            t1_and_before,
        ),
        (
            "by LSN",
            format!("recovery_target_lsn={t1_lsn}"),
            t1_and_before,
        ),
        (
            "by xid",
            format!("recovery_target_xid={t1_xid}"),
            t1_and_before,
        ),
        // Consistent as of the base backup's end, before any mark.
        ("immediate", "recovery_target=immediate".to_string(), &[]),
    ] {
        let (_dir, data) = restore_dir();
        archive
            .restore(&data, &base, &[&target, "recovery_target_action=promote"])
            .ok();
        let copy = start_recovered(&data);
        assert_eq!(marks(&copy), expected, "restored {what}");
        assert_pgbench_consistent(&copy, "postgres");
        assert_eq!(copy.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    }

    let (_dir, data) = restore_dir();
    archive
        .restore(&data, &base, &["recovery_target=latest"])
        .ok();
    let copy = start_recovered(&data);
    assert_eq!(marks(&copy), ["before", "t1", "after", "last"]);
    let (_, _, _, _, history) = pgbench_sums(&copy, "postgres");
    assert!(
        history >= history_before_last,
        "{history} pgbench transactions restored, {history_before_last} committed before the last run"
    );
    assert_pgbench_consistent(&copy, "postgres");
}

fn uncommitted_runs() {
    // As `postgres`, so that a store closed to writes fails it.
    let (src, archive) = archived_cluster_by(Archive::as_postgres);
    let base = archive.base_backup();
    mark(&src, "one");
    write_wal(&src, 20_000);

    // Plakar killed once the plugin has sent everything, before or while it commits.
    let state = archive.pk.dir().join("state/plakar-postgresql");
    let sent = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sent"))
        .expect("the first run recorded where it stopped");
    let before = std::fs::metadata(&sent).unwrap().modified().unwrap();
    let mut run = archive
        .store()
        .command(&["backup", "-tag", "wal", "-no-progress", "@mywal"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the run to send its records",
        || {
            std::fs::metadata(&sent)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > before)
        },
    );
    run.kill().unwrap();
    run.wait().unwrap();

    mark(&src, "two");
    write_wal(&src, 20_000);
    // A store that fails at commit: its states directory closed to writes.
    let store = archive.store();
    let states = archive.pk.dir().join("store/states");
    assert!(states.is_dir(), "the store keeps its states in {states:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&states, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let failed = archive.archive_run();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&states, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let _ = store;
    failed.fails_saying(&[]);

    mark(&src, "three");
    archive
        .archive_run()
        .ok_saying(&["stays at", "its WAL is sent again"]);
    archive.archived();

    let (_dir, data) = restore_dir();
    archive
        .restore(&data, &base, &["recovery_target=latest"])
        .ok();
    let copy = start_recovered(&data);
    assert_eq!(marks(&copy), ["one", "two", "three"]);
    assert_eq!(copy.sql("postgres", "SELECT count(*) FROM filler"), "40000");
}

fn invalidated_slot() {
    let mut options = ClusterOptions::archived();
    options.config.push("max_slot_wal_keep_size = 16MB".into());
    options.config.push("wal_keep_size = 0".into());
    let src = Cluster::start_with(options);
    let archive = Archive::of(&src);
    archive.archived();
    archive.archived();
    for _ in 0..4 {
        write_wal(&src, 20_000);
    }
    src.sql("postgres", "CHECKPOINT");
    wait_until(
        Duration::from_secs(30),
        "the slot to be invalidated",
        || {
            src.sql(
                "postgres",
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'plakar_wal'",
            ) == "lost"
        },
    );
    archive.archive_run().fails_saying(&[
        "replication slot \"plakar_wal\" was invalidated by the server",
        "the chain of archived WAL is broken after",
        "take a new base backup",
        "pg_drop_replication_slot('plakar_wal')",
    ]);
}

fn broken_chains() {
    let (src, archive) = archived_cluster();
    let base = archive.base_backup();
    mark(&src, "one");
    archive.archived();
    write_wal(&src, 20_000);
    let skipped = archive.archived();
    write_wal(&src, 20_000);
    let after_gap = archive.archived();

    // A gap: the middle snapshot is left out.
    let (_dir, data) = restore_dir();
    let gapped = archive.destination(&data);
    archive
        .restore_base(&gapped, &base, &["recovery_target=latest"])
        .ok();
    let earlier: Vec<String> = archive
        .store()
        .snapshots()
        .into_iter()
        .filter(|s| *s != skipped && *s != after_gap && *s != base)
        .collect();
    for snap in earlier.iter().rev() {
        archive.store().restore(&gapped, snap).ok();
    }
    let held_before = archive_files(&data);
    archive
        .store()
        .restore(&gapped, &after_gap)
        .fails_saying(&["is in no WAL snapshot restored here", "nothing was written"]);
    assert_eq!(
        archive_files(&data),
        held_before,
        "the refused snapshot wrote files"
    );

    // A target the WAL never reaches: the server stops, and says why.
    let tomorrow = src.sql("postgres", "SELECT (now() + interval '1 day')::text");
    let (_dir3, data3) = restore_dir();
    archive
        .restore(
            &data3,
            &base,
            &[&format!("recovery_target_time={tomorrow}")],
        )
        .ok();
    let log = Cluster::stopping_by_itself(&data3);
    assert!(
        log.contains("recovery ended before configured recovery target was reached"),
        "{log}"
    );

    // Another cluster's WAL, into a directory recovering this one.
    let other = Cluster::start_with(ClusterOptions::archived());
    archive.pk.source("otherwal", &other.wal_uri(), &[]);
    archive
        .store()
        .at(&["backup", "-tag", "wal", "@otherwal"])
        .ok();
    let foreign = archive.store().snapshots()[0].clone();
    let (_dir2, data2) = restore_dir();
    let other_dir = archive.destination(&data2);
    archive
        .restore_base(&other_dir, &base, &["recovery_target=latest"])
        .ok();
    let held_before = archive_files(&data2);
    archive
        .store()
        .restore(&other_dir, &foreign)
        .fails_saying(&[
            "this WAL snapshot is of another cluster",
            "nothing was written",
        ]);
    assert_eq!(archive_files(&data2), held_before);

    // A WAL snapshot where no base backup was restored for recovery.
    let (_dir3, empty) = restore_dir();
    let nowhere = archive.destination(&empty);
    archive
        .store()
        .restore(&nowhere, &after_gap)
        .fails_saying(&["holds no base backup restored for point-in-time recovery"]);
    assert!(!empty.exists());

    // A WAL snapshot sent to the logical destination.
    archive.pk.destination("mypgdst", &src.uri("postgres"), &[]);
    archive
        .store()
        .restore("mypgdst", &after_gap)
        .fails_saying(&["belongs to a WAL snapshot (postgres+wal://)"]);
}

fn second_timeline() {
    let (src, archive) = archived_cluster();
    let base = archive.base_backup();
    mark(&src, "one");
    src.sql("postgres", "SELECT pg_create_restore_point('fork')");
    mark(&src, "two");
    archive.archived();

    // A point-in-time restore, promoted: timeline 2, archived from then on.
    let (_dir, data) = restore_dir();
    archive
        .restore(
            &data,
            &base,
            &[
                "recovery_target_name=fork",
                "recovery_target_action=promote",
            ],
        )
        .ok();
    let promoted = start_recovered(&data);
    assert_eq!(marks(&promoted), ["one"]);
    assert_eq!(timeline(&promoted), "2");
    archive.pk.source("newwal", &promoted.wal_uri(), &[]);
    let run = |source: &str| {
        archive
            .store()
            .at(&[
                "backup",
                "-tag",
                "wal",
                "-no-progress",
                &format!("@{source}"),
            ])
            .ok()
    };
    run("newwal");
    mark(&promoted, "three");
    promoted.sql("postgres", "SELECT pg_create_restore_point('on2')");
    mark(&promoted, "four");
    run("newwal");
    let files = archive
        .store()
        .at(&[
            "ls",
            "-recursive",
            &format!("{}:/wal", archive.store().snapshots()[0]),
        ])
        .ok()
        .stdout;
    assert!(files.contains("00000002.history"), "{files}");

    let (_dir2, again) = restore_dir();
    archive
        .restore(
            &again,
            &base,
            &["recovery_target_name=on2", "recovery_target_action=promote"],
        )
        .ok();
    let copy = start_recovered(&again);
    assert_eq!(marks(&copy), ["one", "three"]);
    assert_eq!(timeline(&copy), "3");
}

fn standby_promoted() {
    let mut options = ClusterOptions::primary();
    options.config.push("synchronous_commit = on".into());
    let primary = Cluster::start_with(options);
    create_marks(&primary);
    let standby = Cluster::standby_of(&primary, &[]);
    let archive = Archive::of_two(&primary, &standby);
    archive
        .archive_run()
        .ok_saying(&["created the permanent replication slot \"plakar_wal\""]);
    let base = archive.base_backup();
    mark(&primary, "one");
    write_wal(&primary, 10_000);
    standby.wait_for_replay_of(&primary);
    archive.archived();

    // Failover: the standby becomes the primary, on timeline 2.
    assert_eq!(standby.sql("postgres", "SELECT pg_promote()"), "t");
    mark(&standby, "two");
    let after = archive.archived();
    let manifest: serde_json::Value =
        serde_json::from_slice(&archive.store().cat(&after, "/manifest.json")).unwrap();
    assert_eq!(manifest["server"]["timeline"], 2, "{manifest:#}");
    assert_eq!(manifest["backup"]["histories"], serde_json::json!([2]));
    let ranges = manifest["backup"]["ranges"].as_array().unwrap();
    assert_eq!(ranges.last().unwrap()["timeline"], 2, "{manifest:#}");
    archive.store().cat(&after, "/wal/00000002.history");

    let (_dir, data) = restore_dir();
    archive
        .restore(&data, &base, &["recovery_target=latest"])
        .ok();
    let copy = start_recovered(&data);
    assert_eq!(marks(&copy), ["one", "two"]);
    assert_eq!(copy.sql("postgres", "SELECT count(*) FROM filler"), "10000");
}

fn wal_preflight() {
    let src = Cluster::start_with(ClusterOptions::archived());
    src.sql(
        "postgres",
        "CREATE ROLE plain LOGIN PASSWORD 'plain-secret'",
    );
    let pk = plakar::Plakar::new();
    let store = pk.store("store");
    let location =
        src.uri_without_password("plain", "")
            .replacen("postgres://", "postgres+wal://", 1);
    pk.source("mywal", &location, &["password=plain-secret"]);
    let ran = store.backup("mywal").fails_saying(&[
        "user \"plain\" may not open a replication connection",
        "ALTER ROLE \"plain\" REPLICATION",
    ]);
    assert!(!ran.output().contains("plain-secret"));
    assert_eq!(
        src.sql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}
