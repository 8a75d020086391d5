//! Faults: servers that go away, tools and the plugin killed, a full disk,
//! a Plakar that cannot store a file or stops acknowledging.
//! A dump is caught in the act (`common::caught`), so every fault lands while
//! the dump is surely running.

mod common;

use std::time::Duration;

use common::caught::{kill, parent, pg_dumps, processes, wait_for_blocked_tool, wait_until, Lock};
use common::host::{self, Backup, PLUGIN};
use common::{seed, Cluster};

/// A backup of `db` whose dump is caught waiting on a lock, held until dropped.
fn caught_backup(src: &Cluster, db: &str) -> (Lock, tokio::task::JoinHandle<host::BackupRun>) {
    let lock = Lock::take(src, db);
    let location = src.uri(db);
    let backup = tokio::spawn(async move { host::backup(&[("location", &location)]).await });
    wait_for_blocked_tool(src, "LOCK TABLE");
    (lock, backup)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_going_away_mid_dump_fails_the_backup() {
    let src = Cluster::start();
    seed(&src, "app", 1000);
    let (lock, backup) = caught_backup(&src, "app");
    src.stop();
    drop(lock);
    let run = backup.await.unwrap();
    let err = run
        .snapshot
        .expect_err("a backup whose server went away must not be committed");
    assert!(
        err.contains("backup of database \"app\" (/app.dump) failed: pg_dump exited with status 1"),
        "{err}"
    );
    assert!(
        err.contains("the backup is incomplete and was not committed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_pg_dump_fails_the_backup() {
    let src = Cluster::start();
    seed(&src, "victim", 1000);
    let (_lock, backup) = caught_backup(&src, "victim");
    let pids = pg_dumps("victim");
    assert_eq!(pids.len(), 1, "one pg_dump runs: {pids:?}");
    kill(pids[0]);
    let run = backup.await.unwrap();
    let err = run
        .snapshot
        .expect_err("a killed dump must not be committed");
    assert!(err.contains("database \"victim\""), "{err}");
    assert!(err.contains("pg_dump was killed by signal 9"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_plugin_leaves_no_dump_behind() {
    let src = Cluster::start();
    seed(&src, "orphan", 1000);
    let _lock = Lock::take(&src, "orphan");
    let location = src.uri("orphan");
    let backup =
        tokio::spawn(async move { host::backup_allowing_crash(&[("location", &location)]).await });
    wait_for_blocked_tool(&src, "LOCK TABLE");
    let dumps = pg_dumps("orphan");
    assert_eq!(dumps.len(), 1);
    // This test's plugin only: other tests run theirs at the same time.
    let plugin = parent(dumps[0]);
    assert!(
        processes(PLUGIN, "importer").contains(&plugin),
        "pg_dump's parent is not the plugin"
    );
    kill(plugin);
    let (run, status) = backup.await.unwrap();
    assert!(!status.success());
    assert!(
        run.snapshot.is_err(),
        "a backup whose plugin died must fail"
    );
    // The kernel kills the plugin's tools with it (PR_SET_PDEATHSIG).
    wait_until(
        Duration::from_secs(5),
        "pg_dump to die with the plugin",
        || pg_dumps("orphan").is_empty(),
    );
    // And the server is fine for the next backup.
    drop(_lock);
    let again = host::backup(&[("location", &src.uri("orphan"))]).await;
    assert!(again.snapshot.is_ok(), "{:?}", again.snapshot.err());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_going_away_mid_restore_fails_the_file() {
    let src = Cluster::start();
    seed(&src, "app", 1000);
    let snapshot = host::snapshot_of(&[("location", &src.uri("app"))]).await;

    let dst = Cluster::start();
    seed(&dst, "app", 10);
    let lock = Lock::take(&dst, "app");
    let location = dst.uri("app");
    let snap = snapshot.clone();
    // clean=true makes pg_restore drop `items` first, where it waits on the lock.
    let restore = tokio::spawn(async move {
        host::restore(&[("location", &location), ("clean", "true")], &snap).await
    });
    wait_for_blocked_tool(&dst, "");
    dst.stop();
    drop(lock);
    let run = restore.await.unwrap();
    let err = run.error_of("/app.dump");
    assert!(err.contains("restore of database \"app\" failed"), "{err}");
    assert!(
        run.stderr.contains("restore /app.dump: failed"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("restore /app.dump: done"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_a_spooled_restore_and_removes_the_copy() {
    let src = Cluster::start();
    seed(&src, "app", 20000);
    let snapshot = host::snapshot_of(&[("location", &src.uri("app"))]).await;
    assert!(
        snapshot.files["/app.dump"].len() > 2 << 20,
        "the dump must not fit the small disk"
    );

    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().to_str().unwrap().to_string();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", &small])
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs needs root");
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());

    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    // The dump, which sorts before /globals.sql, waits for it in a copy.
    let run = host::restore_with_env(
        &[
            ("location", &dst.uri("app")),
            ("jobs", "2"),
            ("restore_globals", "true"),
        ],
        &snapshot,
        &[("TMPDIR", &small)],
    )
    .await;
    let err = run.error_of("/app.dump");
    assert!(err.contains("cannot write a temporary copy in"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    assert_eq!(
        dst.sql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'items'"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_plakar_cannot_store_fails_the_backup_by_name() {
    let src = Cluster::start();
    seed(&src, "app", 100);
    Backup::logical(&[("location", &src.uri("app"))])
        .failing_to_store("/app.dump", "no space left on device")
        .run()
        .await
        .fails_saying(&[
            "Plakar could not store /app.dump: no space left on device",
            "the backup is incomplete and was not committed",
        ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plakar_that_stops_acknowledging_fails_the_backup() {
    let src = Cluster::start();
    seed(&src, "app", 100);
    Backup::logical(&[("location", &src.uri("app"))])
        .ending_acks_at("/globals.sql")
        .run()
        .await
        .fails_saying(&[
            "Plakar ended the backup before storing",
            "/globals.sql",
            "not committed",
        ]);
}

/// A physical source that archives its WAL, run once, with complete
/// segments written since.
struct Archived {
    src: Cluster,
    state: tempfile::TempDir,
    /// Where the slot keeps WAL from.
    kept: String,
}

/// Any WAL piece of a snapshot.
const PIECE: &str = "/wal/00000001-*";

impl Archived {
    async fn new() -> Archived {
        let src = Cluster::start_with(common::ClusterOptions::archived());
        let state = tempfile::tempdir().unwrap();
        let mut archived = Archived {
            src,
            state,
            kept: String::new(),
        };
        let owned = archived.config();
        let config: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Backup::physical(&config).run().await.committed();
        more_wal(&archived.src);
        archived.kept = slot_start(&archived.src);
        archived
    }

    /// The source's configuration: its location and state directory.
    fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("location", self.src.bin_uri()),
            ("archive_wal", "true".into()),
            ("state_dir", self.state.path().display().to_string()),
        ]
    }
}

/// Where the archiving slot keeps WAL from.
fn slot_start(src: &Cluster) -> String {
    src.sql(
        "postgres",
        "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'plakar_wal'",
    )
}

/// WAL in complete segments: rows, and the segment switched twice.
fn more_wal(src: &Cluster) {
    src.sql(
        "postgres",
        "CREATE TABLE IF NOT EXISTS filler (n int, pad text); INSERT INTO filler SELECT i, repeat('x', 300) FROM generate_series(1, 30000) i; SELECT pg_switch_wal()",
    );
    src.sql(
        "postgres",
        "INSERT INTO filler VALUES (0, 'y'); SELECT pg_switch_wal()",
    );
}

/// The snapshot's WAL pieces, by path.
fn pieces(snapshot: &common::host::Snapshot) -> Vec<(String, usize)> {
    snapshot
        .files
        .iter()
        .filter(|(p, _)| p.starts_with("/wal/00000001-"))
        .map(|(p, c)| (p.clone(), c.len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wal_stream_cut_mid_piece_fails_the_run_and_the_slot_keeps_that_wal() {
    let archived = Archived::new().await;
    let (src, kept) = (&archived.src, archived.kept.clone());
    let owned = archived.config();
    let config: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let run = Backup::physical(&config)
        .holding(PIECE, || {
            src.sql(
                "postgres",
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'plakar_wal'",
            );
        })
        .run()
        .await;
    let err = run
        .snapshot
        .expect_err("a run whose stream was cut must not be committed");
    assert!(
        err.contains("streaming WAL from the server failed"),
        "{err}"
    );
    assert!(!run.finished);
    assert_eq!(
        slot_start(src),
        kept,
        "the slot moved past WAL no snapshot holds"
    );

    let again = Backup::physical(&config).run().await.committed();
    let held = pieces(&again);
    assert!(!held.is_empty(), "{:?}", again.paths());
    let chain: serde_json::Value = serde_json::from_slice(&again.files["/.chain.json"]).unwrap();
    let whole: u64 = chain["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let lsn = |s: &str| {
                let (h, l) = s.split_once('/').unwrap();
                (u64::from_str_radix(h, 16).unwrap() << 32) + u64::from_str_radix(l, 16).unwrap()
            };
            lsn(p["to"].as_str().unwrap()) - lsn(p["from"].as_str().unwrap())
        })
        .sum();
    assert_eq!(
        held.iter().map(|(_, n)| *n as u64).sum::<u64>(),
        whole,
        "every piece holds the bytes /.chain.json gives it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_piece_plakar_cannot_store_fails_the_run_and_is_sent_again() {
    let archived = Archived::new().await;
    let (src, kept) = (&archived.src, archived.kept.clone());
    let owned = archived.config();
    let config: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let run = Backup::physical(&config)
        .failing_to_store(PIECE, "disk full")
        .run()
        .await;
    let err = run.snapshot.expect_err("an unstored piece fails the run");
    assert!(
        err.contains("Plakar could not store /wal/00000001-") && err.contains(": disk full"),
        "{err}"
    );
    assert_eq!(slot_start(src), kept);

    let again = Backup::physical(&config).run().await;
    assert!(!pieces(&again.committed()).is_empty());
    // The host's Plakar has no cache: no receipt ever comes back unread,
    // so the slot stays, and the run takes a new base backup and says why.
    assert!(
        again.stderr.contains("stays where it is")
            && again.stderr.contains("takes a new base backup"),
        "{}",
        again.stderr
    );
    assert_eq!(slot_start(src), kept);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_carries_the_previous_snapshot_forward_unread_and_fails_if_plakar_must_read_it() {
    let archived = Archived::new().await;
    let owned = archived.config();
    let config: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The host's first run had no parent: a new base. The next, with the
    // previous snapshot as Plakar's cache knows it, carries it forward.
    let first = Backup::physical(&config).run().await;
    let first = first.committed();
    // The base's WAL ends on the segment switch of pg_backup_stop(): a piece
    // of a segment or more, closed.
    let [(base_wal, len)] = &pieces(&first)[..] else {
        panic!("{:?}", first.paths())
    };
    assert!(*len >= 16 << 20, "{base_wal}: {len} bytes");
    let second = Backup::physical(&config).after(&first).run().await;
    assert!(
        second.stderr.contains("moved to") && second.stderr.contains("carries forward base backup"),
        "{}",
        second.stderr
    );
    let second = second.committed();
    let chain = |s: &common::host::Snapshot| -> serde_json::Value {
        serde_json::from_slice(&s.files["/.chain.json"]).unwrap()
    };
    assert_eq!(chain(&second)["bases"], chain(&first)["bases"]);
    assert!(
        second.files.contains_key(base_wal),
        "{base_wal} was not carried"
    );
    // The second run's own WAL, a commit, is short: the third streams it
    // again with its own, as one record that starts with the same bytes.
    let [_, (open, _)] = &pieces(&second)[..] else {
        panic!("{:?}", second.paths())
    };
    let third = Backup::physical(&config).after(&second).run().await;
    assert!(
        third.stderr.contains("which it streams again"),
        "{}",
        third.stderr
    );
    let third = third.committed();
    let [(carried, _), (longer, _)] = &pieces(&third)[..] else {
        panic!("{:?}", third.paths())
    };
    assert_eq!(carried, base_wal);
    assert_ne!(longer, open);
    assert_eq!(
        open[..31],
        longer[..31],
        "both start where the second run's WAL does"
    );
    assert!(third.files[longer].starts_with(&second.files[open]));

    // The store lost the base's PG_VERSION: Plakar reads it, and the run fails.
    let base = chain(&third)["bases"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lost = format!("/bases/{base}/PG_VERSION");
    let run = Backup::physical(&config)
        .after(&third)
        .losing(&lost)
        .run()
        .await;
    let err = run
        .snapshot
        .expect_err("a run that cannot serve a record must fail");
    assert!(
        err.contains(&format!(
            "Plakar asked to read {lost}, which this run carries forward"
        )),
        "{err}"
    );
    assert!(!run.finished);
    // The next run, whatever the cache says, takes a new base.
    let next = Backup::physical(&config).after(&third).run().await;
    assert!(
        next.stderr.contains("this run takes a new base backup"),
        "{}",
        next.stderr
    );
    assert_ne!(chain(&next.committed())["bases"][0]["id"], base.as_str());
}
