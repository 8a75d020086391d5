//! Major versions: a PostgreSQL 15 backup restored into 18, and an 18 server
//! met with only the 15 tools at hand.

mod common;

use common::cluster::pg18_bin;
use common::host::{self, Snapshot};
use common::{items, seed, Cluster};

/// A new PostgreSQL 18 cluster with the snapshot restored by the 18 tools.
async fn restored_into_18(snapshot: &Snapshot) -> Cluster {
    let dst = Cluster::start_18();
    let bin = pg18_bin().to_str().unwrap().to_string();
    host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("pg_bin_dir", &bin),
        ],
        snapshot,
    )
    .await
    .assert_ok();
    dst
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

    let dst = restored_into_18(&snapshot).await;
    assert!(dst
        .sql("postgres", "SHOW server_version_num")
        .starts_with("18"));
    assert_eq!(items(&dst, "app"), items(&src, "app"));
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
    let dst = restored_into_18(&snapshot).await;
    assert_eq!(items(&dst, "app"), items(&src, "app"));
}
