//! Major versions: a PostgreSQL 15 backup restored into 18, an 18 server
//! met with only the 15 tools at hand, and the planner statistics an 18
//! backup carries.

mod common;

use common::cluster::pg18_bin;
use common::host::{self, Snapshot};
use common::{items, seed, Cluster, ClusterOptions};

/// A new PostgreSQL 18 cluster with the snapshot restored by the 18 tools,
/// and the plugin's log. Autovacuum is off: whatever statistics the copy
/// has, the restore gave it.
async fn restored_into_18(snapshot: &Snapshot) -> (Cluster, String) {
    let dst = Cluster::start_with(ClusterOptions {
        bin: pg18_bin(),
        config: vec!["autovacuum = off".into()],
        ..Default::default()
    });
    let bin = pg18_bin().to_str().unwrap().to_string();
    let run = host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("pg_bin_dir", &bin),
        ],
        snapshot,
    )
    .await;
    run.assert_ok();
    (dst, run.stderr)
}

/// The planner statistics of `items`, column by column.
fn items_statistics(cluster: &Cluster) -> Vec<String> {
    cluster.rows(
        "app",
        "SELECT attname || ' ' || null_frac || ' ' || n_distinct || ' ' || coalesce(histogram_bounds::text, most_common_vals::text, '-')
         FROM pg_stats WHERE schemaname = 'public' AND tablename = 'items' ORDER BY attname",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_15_backup_restores_into_18_with_the_18_tools() {
    let src = Cluster::start();
    seed(&src, "app", 300);
    let run = host::backup(&[("location", &src.uri("app"))]).await;
    let snapshot = run.committed();
    assert_eq!(
        snapshot.manifest()["server"]["version_num"]
            .as_i64()
            .unwrap()
            / 10000,
        15
    );

    let (dst, log) = restored_into_18(&snapshot).await;
    assert!(dst
        .sql("postgres", "SHOW server_version_num")
        .starts_with("18"));
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    // pg_dump 15 dumps no statistics: the restore analyzes, as it always did.
    assert!(log.contains("analyzed database \"app\""), "{log}");
    assert_eq!(items_statistics(&dst).len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_18_server_needs_18_tools_and_says_so() {
    let src = Cluster::start_18();
    seed(&src, "app", 100);
    // Only the PostgreSQL 15 tools are on $PATH and in the usual locations.
    let run = host::backup(&[("location", &src.uri("app"))]).await;
    match run.snapshot {
        Err(err) => {
            assert!(
                err.contains("the server runs PostgreSQL 18")
                    && err.contains("install the PostgreSQL 18 client tools"),
                "{err}"
            );
            assert!(err.contains("pg_bin_dir"), "{err}");
        }
        Ok(snapshot) => {
            // Where an 18 install exists in a usual location, the plugin uses it.
            assert!(run.stderr.contains("client tools in"), "{}", run.stderr);
            assert!(snapshot.files["/app.dump"].starts_with(b"PGDMP"));
        }
    }

    let bin = pg18_bin().to_str().unwrap().to_string();
    let run = host::backup(&[("location", &src.uri("app")), ("pg_bin_dir", &bin)]).await;
    let snapshot = run.committed();
    assert!(snapshot.manifest()["pg_dump_version"]
        .as_str()
        .unwrap()
        .contains("18."));
    let (dst, _) = restored_into_18(&snapshot).await;
    assert_eq!(items(&dst, "app"), items(&src, "app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_18_backup_carries_its_statistics_and_the_restore_needs_no_analyze() {
    let src = Cluster::start_18();
    seed(&src, "app", 300);
    src.sql("app", "ANALYZE items");
    let bin = pg18_bin().to_str().unwrap().to_string();
    let run = host::backup(&[("location", &src.uri("app")), ("pg_bin_dir", &bin)]).await;
    let snapshot = run.committed();
    assert!(
        run.stderr.contains("pg_dump --statistics"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot.manifest()["backup"]["options"]["statistics"], true);

    let (dst, log) = restored_into_18(&snapshot).await;
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert!(
        log.contains("database \"app\": the dump carries its planner statistics")
            && log.contains("ANALYZE skipped"),
        "{log}"
    );
    assert!(!log.contains("analyzed database"), "{log}");
    // Nothing analyzed the copy, and its planner has the source's statistics.
    assert_eq!(
        dst.sql(
            "app",
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'items' AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"
        ),
        "0"
    );
    let restored = items_statistics(&dst);
    assert_eq!(restored.len(), 7, "{restored:?}");
    assert_eq!(restored, items_statistics(&src));
    assert_eq!(
        dst.sql(
            "app",
            "SELECT reltuples FROM pg_class WHERE relname = 'items'"
        ),
        "300"
    );

    // With statistics=false the dump has none, and the restore analyzes.
    let run = host::backup(&[
        ("location", &src.uri("app")),
        ("pg_bin_dir", &bin),
        ("statistics", "false"),
    ])
    .await;
    let snapshot = run.committed();
    assert_eq!(
        snapshot.manifest()["backup"]["options"]["statistics"],
        false
    );
    let (dst, log) = restored_into_18(&snapshot).await;
    assert!(log.contains("analyzed database \"app\""), "{log}");
    assert!(!log.contains("ANALYZE skipped"), "{log}");
    assert_eq!(items_statistics(&dst).len(), 7);
}
