//! Point-in-time recovery through the real Plakar: one physical source that
//! archives its WAL (`archive_wal=true`), runs as cron makes them while the
//! cluster is written to, and restores of one snapshot to a moment with the
//! README's one command, checked as an administrator would: the rows of that
//! moment and none after it, pgbench's invariant, a server that accepts
//! connections, and a clear error with a non-zero exit for what a snapshot
//! cannot do.
//!
//! Without a plakar binary every case is reported as ignored, never as
//! passed, and `make test` ends with a line saying so.

mod common;

use std::process::Command;
use std::time::Duration;

use common::caught::wait_until;
use common::cluster::give_to_server;
use common::load::{assert_pgbench_consistent, pgbench_sums, pgbench_writing};
use common::pitr::{create_marks, mark, marks, restore_dir, Archive};
use common::plakar;
use common::{Cluster, ClusterOptions};

/// Every case, by name.
const CASES: &[(&str, fn())] = &[
    (
        "under_load_one_restore_of_the_latest_snapshot_reaches_the_moment_before_a_bad_delete_or_the_end",
        to_a_moment_under_load,
    ),
    (
        "a_killed_run_a_failed_commit_a_run_without_cache_and_a_removed_snapshot_lose_no_wal",
        interrupted_runs,
    ),
    (
        "after_a_thinning_prune_every_kept_snapshot_checks_and_restores_on_its_own",
        retention,
    ),
    (
        "a_moment_between_the_last_run_on_a_base_and_the_next_base_restores_row_for_row",
        around_a_new_base,
    ),
    (
        "quiet_runs_share_one_record_of_wal_and_each_snapshot_still_restores_on_its_own",
        quiet_runs,
    ),
    (
        "a_target_outside_the_snapshot_is_refused_with_nothing_written",
        outside_targets,
    ),
    (
        "a_promoted_copy_archived_as_a_new_source_restores_along_its_timeline",
        second_timeline,
    ),
    (
        "archiving_a_standby_follows_it_onto_its_new_timeline_when_promoted",
        standby_promoted,
    ),
    (
        "an_invalidated_slot_fails_the_run_naming_the_broken_chain",
        invalidated_slot,
    ),
    (
        "archiving_refuses_a_user_without_replication_before_making_a_slot",
        preflight,
    ),
    (
        "a_restore_flushes_its_files_to_disk_before_it_reports_success",
        durable,
    ),
    (
        "a_recovered_copy_reads_its_wal_in_place_and_archives_none_of_it_again",
        wal_in_place,
    ),
];

fn main() {
    plakar::run_cases(CASES, "point-in-time recovery cases");
}

/// A cluster being archived: the table of marks, and a first run, which
/// makes the slot and takes the base backup.
fn archived_cluster() -> (Cluster, Archive) {
    archived_cluster_by(Archive::of)
}

/// [`archived_cluster`] with the archive `make` makes.
fn archived_cluster_by(make: fn(&Cluster) -> Archive) -> (Cluster, Archive) {
    let src = Cluster::start_with(ClusterOptions::archived());
    create_marks(&src);
    let archive = make(&src);
    archive.run().ok_saying(&[
        "created the permanent replication slot \"plakar_wal\"",
        "this run takes a new base backup",
    ]);
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

/// Restores `snapshot` into a new directory with `options` and starts it.
fn recovered(archive: &Archive, snapshot: &str, options: &[&str]) -> (tempfile::TempDir, Cluster) {
    let (dir, data) = restore_dir();
    archive
        .restore(&data, snapshot, options)
        .ok_saying(&["matches its backup_manifest"]);
    (dir, start_recovered(&data))
}

fn to_a_moment_under_load() {
    let (src, archive) = archived_cluster();
    let mut load = pgbench_writing(&src, "postgres");
    // A base backup that holds pgbench's tables, for `immediate`.
    archive.archived_with(&["new_base=true"]);
    std::thread::sleep(Duration::from_secs(1));
    archive.archived();

    mark(&src, "before");
    let t1 = mark(&src, "t1");
    let t1_xid = src.sql("postgres", "SELECT xmin FROM marks WHERE name = 't1'");
    let t1_lsn = src.sql("postgres", "SELECT pg_current_wal_insert_lsn()");
    src.sql("postgres", "SELECT pg_create_restore_point('t1')");
    std::thread::sleep(Duration::from_millis(500));
    // The mistake to undo.
    src.sql("postgres", "DELETE FROM marks");
    mark(&src, "after");
    archive.archived();
    std::thread::sleep(Duration::from_secs(1));
    mark(&src, "last");
    let (_, _, _, _, history_before_last) = pgbench_sums(&src, "postgres");
    let latest = archive.archived();
    assert!(load.running(), "pgbench ended during the runs");
    load.stop();
    assert_eq!(
        archive.chain(&latest)["bases"].as_array().unwrap().len(),
        1,
        "the latest snapshot carries its one base backup"
    );

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
        let (_dir, copy) = recovered(
            &archive,
            &latest,
            &[&target, "recovery_target_action=promote"],
        );
        assert_eq!(marks(&copy), expected, "restored {what}");
        assert_pgbench_consistent(&copy, "postgres");
        assert_eq!(copy.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    }

    // No option: the end of the snapshot's WAL.
    let (_dir, copy) = recovered(&archive, &latest, &[]);
    assert_eq!(marks(&copy), ["after", "last"]);
    let (_, _, _, _, history) = pgbench_sums(&copy, "postgres");
    assert!(
        history >= history_before_last,
        "{history} pgbench transactions restored, {history_before_last} committed before the last run"
    );
    assert_pgbench_consistent(&copy, "postgres");
    assert_eq!(copy.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
}

fn interrupted_runs() {
    // As `postgres`, so that a store closed to writes fails its commit.
    let (src, archive) = archived_cluster_by(Archive::as_postgres);
    mark(&src, "one");
    write_wal(&src, 20_000);

    // Plakar killed once the plugin has sent everything, before or while it commits.
    let state_dir = archive.pk.dir().join("state/plakar-postgresql");
    let state = std::fs::read_dir(&state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("the first run recorded what its snapshot holds");
    let before = std::fs::metadata(&state).unwrap().modified().unwrap();
    let mut run = archive
        .store()
        .command(&["backup", "-no-progress", "@mypg"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the run to send its records",
        || {
            std::fs::metadata(&state)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > before)
        },
    );
    run.kill().unwrap();
    run.wait().unwrap();

    mark(&src, "two");
    write_wal(&src, 20_000);
    // A store that fails at commit: its states directory closed to writes.
    let states = archive.pk.dir().join("store/states");
    assert!(states.is_dir(), "the store keeps its states in {states:?}");
    let close = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&states, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    close(0o500);
    let failed = archive.run();
    close(0o700);
    failed.fails_saying(&[]);

    mark(&src, "three");
    archive.run().ok_saying(&[
        "replication slot \"plakar_wal\" stays where it is",
        "builds on the last committed snapshot",
    ]);

    // Plakar's cache off: nothing proves the parent, so a new base.
    mark(&src, "four");
    archive
        .store()
        .at(&["backup", "-no-progress", "-cache", "no", "@mypg"])
        .ok_saying(&["this run takes a new base backup", "no earlier snapshot"]);

    // The latest snapshot removed: the next run builds on what is left.
    let latest = archive.latest();
    archive.store().at(&["rm", &latest]).ok();
    mark(&src, "five");
    let last = archive.archived();

    let (_dir, copy) = recovered(&archive, &last, &[]);
    assert_eq!(marks(&copy), ["one", "two", "three", "four", "five"]);
    assert_eq!(copy.sql("postgres", "SELECT count(*) FROM filler"), "40000");
}

fn retention() {
    let (src, archive) = archived_cluster();
    let mut moments = Vec::new();
    for (i, new_base) in [false, false, true, false, false].into_iter().enumerate() {
        let name = format!("m{i}");
        moments.push((name.clone(), mark(&src, &name)));
        write_wal(&src, 2_000);
        let options: &[&str] = if new_base { &["new_base=true"] } else { &[] };
        archive.archived_with(options);
    }
    let all = archive.store().snapshots();
    // One a minute: the others of this minute go.
    archive
        .store()
        .at(&["prune", "-minutes", "2", "-per-minute", "1", "-apply"])
        .ok();
    archive.store().at(&["maintenance"]).ok();
    let kept = archive.store().snapshots();
    assert!(
        kept.len() < all.len() && !kept.is_empty(),
        "the prune kept {kept:?} of {all:?}"
    );
    for snapshot in &kept {
        archive.store().at(&["check", snapshot]).ok();
        let chain = archive.chain(snapshot);
        let stopped_at = chain["stopped_at"].as_str().unwrap().to_string();
        // The marks committed before this snapshot's run.
        let held: Vec<&(String, String)> = moments
            .iter()
            .filter(|(_, at)| {
                src.sql(
                    "postgres",
                    &format!("SELECT '{at}'::timestamptz < '{stopped_at}'::timestamptz"),
                ) == "t"
            })
            .collect();
        let names: Vec<String> = held.iter().map(|(n, _)| n.clone()).collect();
        let (_dir, copy) = recovered(&archive, snapshot, &[]);
        assert_eq!(marks(&copy), names, "the latest of {snapshot}");
        // A moment inside it, after its base backup is consistent.
        let ready = chain["bases"][0]["ready_at"].as_str().unwrap().to_string();
        let inside = held.iter().rev().nth(1).filter(|(_, at)| {
            src.sql(
                "postgres",
                &format!("SELECT '{at}'::timestamptz > '{ready}'::timestamptz"),
            ) == "t"
        });
        if let Some((_, at)) = inside {
            let (_dir, copy) = recovered(
                &archive,
                snapshot,
                &[
                    &format!("recovery_target_time={at}"),
                    "recovery_target_action=promote",
                ],
            );
            assert_eq!(marks(&copy), names[..names.len() - 1], "{snapshot} to {at}");
        }
    }
}

fn around_a_new_base() {
    let (src, archive) = archived_cluster();
    mark(&src, "a");
    archive.archived();
    // After the last run on the old base, before the new base starts.
    let gap = mark(&src, "gap");
    std::thread::sleep(Duration::from_millis(200));
    let renewing = archive.archived_with(&["new_base=true"]);
    mark(&src, "after");
    let chain = archive.chain(&renewing);
    let bases = chain["bases"].as_array().unwrap();
    assert_eq!(bases.len(), 2, "the run that renews keeps both: {chain:#}");

    let (dir, data) = restore_dir();
    archive
        .restore(
            &data,
            &renewing,
            &[
                &format!("recovery_target_time={gap}"),
                "recovery_target_action=promote",
            ],
        )
        .ok_saying(&[&format!(
            "restoring base backup {}",
            bases[0]["id"].as_str().unwrap()
        )]);
    let copy = start_recovered(&data);
    assert_eq!(marks(&copy), ["a", "gap"]);
    drop((copy, dir));

    // The next run carries the new base alone.
    let next = archive.archived();
    assert_eq!(archive.chain(&next)["bases"].as_array().unwrap().len(), 1);
    let (_dir, copy) = recovered(&archive, &next, &[]);
    assert_eq!(marks(&copy), ["a", "gap", "after"]);
    let (_dir, data) = restore_dir();
    archive
        .restore(&data, &next, &[&format!("recovery_target_time={gap}")])
        .fails_saying(&[
            "is before the first moment this snapshot reaches",
            "nothing was written",
        ]);
    assert!(!data.exists(), "a refused restore wrote {data:?}");
}

fn quiet_runs() {
    let (src, archive) = archived_cluster();
    mark(&src, "a");
    let first = archive.archived();
    let a_done = src.sql("postgres", "SELECT clock_timestamp()::text");
    std::thread::sleep(Duration::from_millis(200));
    mark(&src, "b");
    // A few KiB of WAL since: the run streams the last one's short piece
    // again with its own, as one record.
    archive.run().ok_saying(&["which it streams again"]);
    let second = archive.latest();
    let pieces = |s: &str| archive.chain(s)["pieces"].as_array().unwrap().clone();
    let (before, after) = (pieces(&first), pieces(&second));
    assert_eq!(before.len(), after.len(), "{before:?} then {after:?}");
    assert_eq!(
        before.last().unwrap()["from"],
        after.last().unwrap()["from"]
    );
    archive.store().at(&["check", &second]).ok();

    let (_dir, copy) = recovered(&archive, &second, &[]);
    assert_eq!(marks(&copy), ["a", "b"]);
    let (_dir, copy) = recovered(
        &archive,
        &second,
        &[
            &format!("recovery_target_time={a_done}"),
            "recovery_target_action=promote",
        ],
    );
    assert_eq!(marks(&copy), ["a"]);
    // The first snapshot keeps the shorter record, and restores on its own.
    let (_dir, copy) = recovered(&archive, &first, &[]);
    assert_eq!(marks(&copy), ["a"]);
}

fn outside_targets() {
    let (src, archive) = archived_cluster();
    mark(&src, "one");
    let snapshot = archive.archived();
    let tomorrow = src.sql("postgres", "SELECT (now() + interval '1 day')::text");
    for (target, words) in [
        (
            format!("recovery_target_time={tomorrow}"),
            "is after the last moment this snapshot holds (from ",
        ),
        (
            "recovery_target_lsn=FF/0".to_string(),
            "is past the end of this snapshot's WAL",
        ),
    ] {
        let (_dir, data) = restore_dir();
        archive
            .restore(&data, &snapshot, &[&target])
            .fails_saying(&[words, "nothing was written"]);
        assert!(!data.exists(), "a refused restore wrote {data:?}");
    }
    // The logical destination refuses it before anything is restored.
    archive.pk.destination("mypgdst", &src.uri("postgres"), &[]);
    archive
        .store()
        .restore("mypgdst", &snapshot)
        .fails_saying(&["belongs to a physical backup"]);
}

fn second_timeline() {
    let (src, archive) = archived_cluster();
    mark(&src, "one");
    src.sql("postgres", "SELECT pg_create_restore_point('fork')");
    mark(&src, "two");
    let snapshot = archive.archived();

    // A point-in-time restore, promoted: timeline 2, archived as a source of its own.
    let (_dir, promoted) = recovered(
        &archive,
        &snapshot,
        &[
            "recovery_target_name=fork",
            "recovery_target_action=promote",
        ],
    );
    assert_eq!(marks(&promoted), ["one"]);
    assert_eq!(timeline(&promoted), "2");
    archive
        .pk
        .source("newpg", &promoted.bin_uri(), &["archive_wal=true"]);
    archive.run_source("newpg", &[]).ok();
    mark(&promoted, "three");
    promoted.sql("postgres", "SELECT pg_create_restore_point('on2')");
    mark(&promoted, "four");
    archive.run_source("newpg", &[]).ok();
    let latest = archive.latest();
    let chain = archive.chain(&latest);
    assert_eq!(chain["timeline"], 2, "{chain:#}");
    archive.store().cat(&latest, "/wal/00000002.history");

    let (_dir2, copy) = recovered(
        &archive,
        &latest,
        &["recovery_target_name=on2", "recovery_target_action=promote"],
    );
    assert_eq!(marks(&copy), ["one", "three"]);
    assert_eq!(timeline(&copy), "3");
}

fn standby_promoted() {
    let mut options = ClusterOptions::primary();
    options.config.push("synchronous_commit = on".into());
    let primary = Cluster::start_with(options);
    create_marks(&primary);
    let standby = Cluster::standby_of(&primary, &[]);
    standby.wait_for_replay_of(&primary);
    let archive = Archive::of(&standby);
    archive.run().ok_saying(&[
        "created the permanent replication slot \"plakar_wal\"",
        "is a standby",
    ]);
    mark(&primary, "one");
    write_wal(&primary, 10_000);
    standby.wait_for_replay_of(&primary);
    archive.archived();

    // Failover: the standby becomes the primary, on timeline 2.
    assert_eq!(standby.sql("postgres", "SELECT pg_promote()"), "t");
    mark(&standby, "two");
    let after = archive.archived();
    let chain = archive.chain(&after);
    assert_eq!(chain["timeline"], 2, "{chain:#}");
    assert_eq!(chain["histories"], serde_json::json!([2]));
    let pieces = chain["pieces"].as_array().unwrap();
    assert_eq!(pieces.last().unwrap()["timeline"], 2, "{chain:#}");
    archive.store().cat(&after, "/wal/00000002.history");

    let (_dir, copy) = recovered(&archive, &after, &[]);
    assert_eq!(marks(&copy), ["one", "two"]);
    assert_eq!(copy.sql("postgres", "SELECT count(*) FROM filler"), "10000");
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
    archive.run().fails_saying(&[
        "replication slot \"plakar_wal\" was invalidated by the server",
        "the chain of archived WAL is broken after",
        "pg_drop_replication_slot('plakar_wal')",
        "takes a new base backup",
    ]);
}

fn preflight() {
    let src = Cluster::start_with(ClusterOptions::archived());
    src.sql(
        "postgres",
        "CREATE ROLE plain LOGIN PASSWORD 'plain-secret'",
    );
    let pk = plakar::Plakar::new();
    let store = pk.store("store");
    let location =
        src.uri_without_password("plain", "")
            .replacen("postgres://", "postgres+bin://", 1);
    pk.source(
        "mypg",
        &location,
        &["password=plain-secret", "archive_wal=true"],
    );
    let ran = store.backup("mypg").fails_saying(&[
        "user \"plain\" may not open a replication connection",
        "ALTER ROLE \"plain\" REPLICATION",
    ]);
    assert!(!ran.output().contains("plain-secret"));
    assert_eq!(
        src.sql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

/// `syncfs` calls of a `plakar restore` and of the plugin it starts, counted
/// with `strace -f`.
fn syncfs_calls(
    archive: &Archive,
    data: &std::path::Path,
    snapshot: &str,
    options: &[&str],
) -> usize {
    let destination = archive.destination(data);
    let target = format!("@{destination}");
    let mut args = vec!["restore", "-to", target.as_str()];
    for o in options {
        args.extend(["-o", *o]);
    }
    args.push(snapshot);
    let plain = archive.store().command(&args);
    let trace = archive.pk.dir().join(format!("strace-{destination}"));
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-qq", "-e", "trace=syncfs", "-o"])
        .arg(&trace)
        .arg(plain.get_program())
        .args(plain.get_args())
        .env_clear()
        .stdin(std::process::Stdio::null());
    for (key, value) in plain.get_envs() {
        if let Some(value) = value {
            traced.env(key, value);
        }
    }
    if let Some(dir) = plain.get_current_dir() {
        traced.current_dir(dir);
    }
    let out = traced
        .output()
        .expect("strace runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "the restore failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        // strace -f splits a call another thread interrupts into
        // `syncfs(3 <unfinished ...>` and `<... syncfs resumed>) = 0`.
        .filter(|l| {
            (l.contains("syncfs(") || l.contains("<... syncfs resumed>")) && l.contains("= 0")
        })
        .count()
}

fn durable() {
    let (_src, archive) = archived_cluster();
    let snapshot = archive.archived();
    let (_dir, data) = restore_dir();
    let synced = syncfs_calls(&archive, &data, &snapshot, &[]);
    assert!(synced >= 1, "no syncfs before the restore reported success");
    let (_dir2, data2) = restore_dir();
    let unsynced = syncfs_calls(&archive, &data2, &snapshot, &["sync=false"]);
    assert_eq!(unsynced, 0, "sync=false flushed anyway");
}

/// The restored WAL is in pg_wal itself, marked archived: a copy whose
/// `archive_mode` is on archives its own new timeline, and nothing of the
/// source's WAL again (an archive shared with the source would refuse it,
/// or be overwritten).
fn wal_in_place() {
    let (src, archive) = archived_cluster();
    write_wal(&src, 20_000);
    archive.archived();
    write_wal(&src, 20_000);
    mark(&src, "a");
    let snapshot = archive.archived();

    let (dir, data) = restore_dir();
    archive
        .restore(&data, &snapshot, &[])
        .ok_saying(&["matches its backup_manifest"]);
    assert!(!data.join("pg_wal/plakar").exists());
    let conf = data.join("postgresql.auto.conf");
    let settings = std::fs::read_to_string(&conf).unwrap();
    assert!(settings.contains("restore_command = 'false'"), "{settings}");
    let archived_to = dir.path().join("archive");
    std::fs::create_dir(&archived_to).unwrap();
    give_to_server(&archived_to);
    std::fs::write(
        &conf,
        format!(
            "{settings}archive_mode = on\narchive_command = 'cp %p {}/%f'\n",
            archived_to.display()
        ),
    )
    .unwrap();
    let copy = start_recovered(&data);
    assert_eq!(marks(&copy), ["a"]);

    // A checkpoint removes the replayed segments, a switch gives the
    // archiver one of the new timeline's; once that one is archived, so is
    // whatever the copy queued before it.
    copy.sql("postgres", "CHECKPOINT");
    let switched = copy.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    assert!(switched.starts_with("00000002"), "{switched}");
    wait_until(
        Duration::from_secs(60),
        "the switched segment archived",
        || archived_to.join(&switched).exists(),
    );
    let mut archived: Vec<String> = std::fs::read_dir(&archived_to)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    archived.sort();
    assert!(
        archived.iter().all(|name| name.starts_with("00000002")),
        "the copy archived the source's WAL again: {archived:?}"
    );
}
