//! Point-in-time recovery in the physical destination through the project's
//! host: a base snapshot restored with a recovery target, then WAL snapshots
//! made by hand from the source's own `pg_wal` (tests/common/walsnap.rs),
//! each in its own restore as `plakar restore` sends one snapshot per
//! command. The server started on the result recovers to the target; a WAL
//! snapshot of another cluster, one that leaves a hole, one with no base
//! restored for it, and options that contradict each other are refused with
//! their reasons and write nothing. The same scenarios through real plakar
//! and the real WAL source are in tests/recovery.rs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::caught::wait_until;
use common::cluster::{bin_location, not_owned_by, open_dir, server_identity};
use common::host::{self, Restore, Snapshot};
use common::pitr::{create_marks, mark};
use common::walsnap::{
    archive_files, of_another_cluster, position, segment_start, system_identifier, wal_snapshot,
    SEGMENT_SIZE,
};
use common::{Cluster, ClusterOptions};
use plakar_postgresql::replication::Lsn;

/// A source, its base snapshot, and two WAL snapshots taken after it: the
/// first ends at a segment switch and holds marks `a` (then the restore
/// point `after_a`) and `b`; the second holds `c` and ends in a `.partial`.
struct Chain {
    src: Cluster,
    base: Snapshot,
    base_stop: Lsn,
    first: Snapshot,
    first_stop: Lsn,
    second: Snapshot,
    second_stop: Lsn,
}

async fn chain() -> Chain {
    let mut options = ClusterOptions::archived();
    // The segments stay in pg_wal for the snapshots to be read from.
    options.config.push("wal_keep_size = '1GB'".into());
    let src = Cluster::start_with(options);
    create_marks(&src);
    let base = host::physical_backup(&[("location", &src.bin_uri())])
        .await
        .committed();
    let base_stop: Lsn = base.manifest()["wal"]["stop_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    mark(&src, "a");
    src.sql("postgres", "SELECT pg_create_restore_point('after_a')");
    mark(&src, "b");
    src.sql("postgres", "SELECT pg_switch_wal()");
    // Every segment before the one now written is complete.
    let first_stop = segment_start(position(&src, "pg_current_wal_lsn()"));
    let first = wal_snapshot(&src, segment_start(base_stop), first_stop);

    mark(&src, "c");
    src.sql("postgres", "CHECKPOINT");
    let second_stop = position(&src, "pg_current_wal_flush_lsn()");
    let second = wal_snapshot(&src, first_stop, second_stop);
    assert!(
        second.paths().iter().any(|p| p.ends_with(".partial")),
        "{:?}",
        second.paths()
    );
    Chain {
        src,
        base,
        base_stop,
        first,
        first_stop,
        second,
        second_stop,
    }
}

/// Starts the recovered directory (its files already the server's) and
/// waits until it is promoted.
fn start_promoted(data: &Path) -> Cluster {
    let cluster = Cluster::start_restored(data);
    wait_until(Duration::from_secs(60), "the promotion", || {
        cluster.sql("postgres", "SELECT NOT pg_is_in_recovery()") == "t"
    });
    cluster
}

fn marks(cluster: &Cluster) -> Vec<String> {
    cluster.rows("postgres", "SELECT name FROM marks ORDER BY name")
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_snapshots_restored_after_the_base_recover_to_a_restore_point_or_to_the_latest() {
    let chain = chain().await;
    let target = open_dir();
    let owner = server_identity().map(|_| "postgres");

    // To the restore point: `a` and not `b`, the files the server's.
    let data = target.path().join("to_a_name");
    let location = bin_location(&data);
    let mut config = vec![
        ("location", location.as_str()),
        ("recovery_target_name", "after_a"),
        ("recovery_target_action", "promote"),
    ];
    if let Some(owner) = owner {
        config.push(("owner", owner));
    }
    let run = host::physical_restore(&config, &chain.base).await;
    run.assert_ok();
    assert!(
        run.stderr
            .contains("is ready for point-in-time recovery (recovery_target_name=after_a"),
        "{}",
        run.stderr
    );
    let conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains("restore_command = 'cp pg_wal/plakar/%f \"%p\"'\nrecovery_target_name = 'after_a'\nrecovery_target_action = 'promote'\n"),
        "{conf}"
    );
    assert!(data.join("recovery.signal").exists());
    assert_eq!(archive_files(&data), ["chain.json"]);
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("pg_wal/plakar/chain.json")).unwrap())
            .unwrap();
    assert_eq!(ledger["system_identifier"], system_identifier(&chain.src));
    assert_eq!(ledger["reach"]["1"], chain.base_stop.to_string());

    // The same destination's options, with a tablespace_mapping to a
    // directory that is not empty: a WAL restore writes no tablespace.
    let busy = target.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep"), "mine").unwrap();
    let mapping = format!("fast={}", busy.display());
    let mut wal_config = config.clone();
    wal_config.push(("tablespace_mapping", mapping.as_str()));
    for (snapshot, stop) in [
        (&chain.first, chain.first_stop),
        (&chain.second, chain.second_stop),
    ] {
        let run = host::physical_restore(&wal_config, snapshot).await;
        run.assert_ok();
        assert!(
            run.stderr
                .contains(&format!("now reaches {stop} on timeline 1")),
            "{}",
            run.stderr
        );
    }
    // The complete segments under their names, the partial one padded under
    // the segment's own name, and the ledger.
    let partial = Lsn(chain.second_stop.0 / SEGMENT_SIZE * SEGMENT_SIZE);
    let mut expected: Vec<String> = chain
        .first
        .paths()
        .iter()
        .chain(chain.second.paths().iter())
        .filter_map(|p| p.strip_prefix("/wal/"))
        .map(|n| n.trim_end_matches(".partial").to_string())
        .collect();
    expected.push("chain.json".into());
    expected.sort();
    expected.dedup();
    assert_eq!(archive_files(&data), expected);
    let padded = data.join("pg_wal/plakar").join(
        plakar_postgresql::wal::Segment::holding(1, partial, SEGMENT_SIZE).file_name(SEGMENT_SIZE),
    );
    assert_eq!(std::fs::metadata(&padded).unwrap().len(), SEGMENT_SIZE);
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("pg_wal/plakar/chain.json")).unwrap())
            .unwrap();
    assert_eq!(ledger["reach"]["1"], chain.second_stop.to_string());
    if let Some((uid, gid)) = server_identity() {
        assert_eq!(
            not_owned_by(&data, uid, gid),
            Vec::<std::path::PathBuf>::new()
        );
    }
    let recovered = start_promoted(&data);
    assert_eq!(marks(&recovered), ["a"]);
    drop(recovered);

    // Recovery is over there: a WAL snapshot no longer goes in.
    let run = host::physical_restore(&config, &chain.second).await;
    let err = run.error.as_deref().expect("refused");
    assert!(err.contains("has already recovered"), "{err}");
    assert!(!data.join("recovery.signal").exists());

    // To the latest: every mark, `c` from the partial segment.
    let data = target.path().join("to_the_latest");
    let location = bin_location(&data);
    let mut config = vec![
        ("location", location.as_str()),
        ("recovery_target", "latest"),
    ];
    if let Some(owner) = owner {
        config.push(("owner", owner));
    }
    host::physical_restore(&config, &chain.base)
        .await
        .assert_ok();
    for snapshot in [&chain.first, &chain.second] {
        host::physical_restore(&config, snapshot).await.assert_ok();
    }
    let recovered = start_promoted(&data);
    assert_eq!(marks(&recovered), ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wal_snapshot_of_another_cluster_with_a_hole_a_short_segment_or_without_its_base_is_refused_writing_nothing(
) {
    let chain = chain().await;
    let target = open_dir();

    // No base restored for recovery: an absent directory stays absent.
    let absent = target.path().join("absent");
    let location = bin_location(&absent);
    let config = [
        ("location", location.as_str()),
        ("recovery_target", "latest"),
    ];
    let run = host::physical_restore(&config, &chain.first).await;
    let err = run.error.as_deref().expect("refused");
    assert!(
        err.contains("holds no base backup restored for point-in-time recovery"),
        "{err}"
    );
    assert!(
        !absent.exists(),
        "the refused restore made {}",
        absent.display()
    );

    let data = target.path().join("data");
    let location = bin_location(&data);
    let config = [
        ("location", location.as_str()),
        ("recovery_target", "latest"),
    ];
    host::physical_restore(&config, &chain.base)
        .await
        .assert_ok();
    let ledger = std::fs::read(data.join("pg_wal/plakar/chain.json")).unwrap();
    let unchanged = |what: &str| {
        assert_eq!(archive_files(&data), ["chain.json"], "after {what}");
        assert_eq!(
            std::fs::read(data.join("pg_wal/plakar/chain.json")).unwrap(),
            ledger,
            "the ledger after {what}"
        );
    };

    // Another cluster's WAL.
    let ours = system_identifier(&chain.src);
    let other = of_another_cluster(&chain.first, "7000000000000000001");
    let run = host::physical_restore(&config, &other).await;
    let err = run.error.as_deref().expect("refused");
    assert!(
        err.contains(&format!(
            "this WAL snapshot is of another cluster (system identifier 7000000000000000001) than the base backup restored here ({ours}); nothing was written"
        )),
        "{err}"
    );
    assert!(
        run.results
            .iter()
            .all(|(p, e)| !p.starts_with("/wal/") || !e.is_empty()),
        "{:?}",
        run.results
    );
    unchanged("another cluster's WAL");

    // The second snapshot without the first: the hole is named.
    let run = host::physical_restore(&config, &chain.second).await;
    let err = run.error.as_deref().expect("refused");
    assert!(
        err.contains(&format!(
            "the WAL from {} to {} on timeline 1 is in no WAL snapshot restored here",
            chain.base_stop, chain.first_stop
        )),
        "{err}"
    );
    unchanged("a hole");

    // A base snapshot into the directory restored for recovery.
    let run = host::physical_restore(&config, &chain.base).await;
    let err = run.error.as_deref().expect("refused");
    assert!(err.contains("is not empty"), "{err}");
    unchanged("a second base");

    // A complete segment cut short: that file fails, and none is put in place.
    let mut short = chain.first.clone();
    let segment = short
        .paths()
        .into_iter()
        .find(|p| p.starts_with("/wal/") && !p.ends_with(".partial") && !p.ends_with(".history"))
        .expect("a complete segment")
        .to_string();
    short.files.get_mut(&segment).unwrap().truncate(8192);
    let run = host::physical_restore(&config, &short).await;
    assert!(
        run.error_of(&segment)
            .contains("this WAL segment holds 8192 bytes, and a complete segment of this server holds 16777216"),
        "{:?}",
        run.results
    );
    unchanged("a segment cut short");

    // The snapshots in their order are taken, and what a restore cut short
    // left staged is swept away.
    let stray = data.join("pg_wal/plakar/.000000010000000000000009.incoming");
    std::fs::write(&stray, b"cut short").unwrap();
    for snapshot in [&chain.first, &chain.second] {
        host::physical_restore(&config, snapshot).await.assert_ok();
    }
    assert!(!stray.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_options_that_contradict_each_other_are_refused_at_init() {
    let target = open_dir();
    let data = target.path().join("data");
    let location = bin_location(&data);
    for (options, words) in [
        (
            vec![("recovery_target_lsn", "0/3000000"), ("recovery_target_name", "x")],
            "options `recovery_target_lsn` and `recovery_target_name` are two recovery targets",
        ),
        (
            vec![("recovery_target_lsn", "3000000")],
            "option `recovery_target_lsn` has the invalid value \"3000000\"; accepted: a WAL position such as 16/B374D848",
        ),
        (
            vec![("recovery_target_action", "promote")],
            "option `recovery_target_action` needs a recovery target",
        ),
    ] {
        let mut config = vec![("location", location.as_str())];
        config.extend(options);
        let run = Restore::physical(&config, &Snapshot::default()).run().await;
        let err = run.error.as_deref().expect("refused");
        assert!(err.contains(words), "{config:?}: {err}");
        assert!(run.results.is_empty());
    }
    assert!(!data.exists());
}
