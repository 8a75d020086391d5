//! The plugin as Plakar sees it: argv, the stdio gRPC transport, a first
//! backup and restore, and readable errors.

mod common;

use std::process::Command;

use common::host::{self, Connector, PLUGIN};
use common::{items, seed, Cluster};

#[test]
fn version_and_help_go_to_stdout() {
    let out = Command::new(PLUGIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("postgresql {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(PLUGIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("plakar source add"), "{help}");
    assert!(help.contains("importer") && help.contains("exporter"));
}

#[test]
fn other_arguments_are_a_usage_error() {
    for args in [
        vec![],
        vec!["backup"],
        vec!["importer", "extra"],
        vec!["--verbose"],
    ] {
        let out = Command::new(PLUGIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("usage: postgresql importer"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_goes_through_backup_and_restore_row_for_row() {
    let src = Cluster::start();
    seed(&src, "app", 500);
    let run = host::backup(&[("location", &src.uri("app"))]).await;
    let snapshot = run.committed();
    assert_eq!(
        run.order,
        ["/", "/manifest.json", "/globals.sql", "/app.dump"]
    );
    assert_eq!(
        snapshot.paths(),
        ["/app.dump", "/globals.sql", "/manifest.json"]
    );
    assert!(snapshot.files["/app.dump"].starts_with(b"PGDMP"));
    assert!(
        run.stderr.contains("backup /app.dump: done"),
        "{}",
        run.stderr
    );

    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    let restored = host::restore(&[("location", &dst.uri("app"))], &snapshot).await;
    restored.assert_ok();
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert!(
        restored.stderr.contains("restore /app.dump: done"),
        "{}",
        restored.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_a_readable_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let location = format!("postgres://postgres:pw@127.0.0.1:{port}/app");
    let run = host::backup(&[("location", &location)]).await;
    let err = run.snapshot.unwrap_err();
    assert!(
        err.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("postgresql source"), "{err}");
    let restored = host::restore(&[("location", &location)], &Default::default()).await;
    let err = restored.error.unwrap();
    assert!(err.contains("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_a_readable_error() {
    let src = Cluster::start();
    let location = format!(
        "postgres://postgres:wrong-secret@127.0.0.1:{}/postgres",
        src.port
    );
    let run = host::backup(&[("location", &location)]).await;
    let err = run.snapshot.unwrap_err();
    assert!(
        err.contains("password authentication failed for user \"postgres\""),
        "{err}"
    );
    assert!(!err.contains("wrong-secret") && !run.stderr.contains("wrong-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_says_whether_the_server_is_there() {
    let cluster = Cluster::start();
    let location = cluster.uri("postgres");
    for connector in [Connector::Importer, Connector::Exporter] {
        host::ping_after(connector, &[("location", &location)], || {})
            .await
            .unwrap_or_else(|e| panic!("{connector:?}: {e}"));
    }
    let err = host::ping_after(Connector::Importer, &[("location", &location)], || {
        cluster.stop()
    })
    .await
    .unwrap_err();
    assert!(
        err.starts_with("postgresql source: cannot connect to PostgreSQL at 127.0.0.1:"),
        "{err}"
    );
}
