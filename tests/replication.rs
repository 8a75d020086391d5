//! Replication against real clusters: the plugin's own replication
//! connection (authentication, TLS, refusals named by SQLSTATE) and physical
//! slots (create, inspect, drop; temporary, permanent, lost).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::caught;
use common::load::receiving_wal;
use common::{Cluster, ClusterOptions};
use plakar_postgresql::physical::options::PhysicalSource;
use plakar_postgresql::postgres::connection::Connection;
use plakar_postgresql::postgres::replication::slot::{self, SlotError, SlotName, WalStatus};
use plakar_postgresql::postgres::replication::{self, Refusal, ReplicationConnection};
use tokio_postgres::Client;

/// The connection a physical source with these options would use.
fn connection(location: &str, extra: &[(&str, &str)]) -> Connection {
    let mut config: HashMap<String, String> = HashMap::new();
    config.insert("location".into(), location.into());
    for (k, v) in extra {
        config.insert(k.to_string(), v.to_string());
    }
    PhysicalSource::parse(&config)
        .unwrap_or_else(|e| panic!("{e}"))
        .conn
}

async fn admin(cluster: &Cluster) -> Client {
    connection(&cluster.bin_uri(), &[])
        .connect("postgres")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until `sql` answers `want` on the cluster, for up to 30 s.
fn wait_for(cluster: &Cluster, sql: &str, want: &str) {
    caught::wait_until(Duration::from_secs(30), sql, || {
        cluster.sql("postgres", sql) == want
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_identifies_the_server_over_tcp_and_the_socket() {
    let cluster = Cluster::start_with(ClusterOptions::physical());
    let want = cluster.sql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    let over_tcp = replication::probe(&connection(&cluster.bin_uri(), &[]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(over_tcp.system_identifier, want);
    assert_eq!(over_tcp.timeline, 1);
    assert!(over_tcp.xlogpos.0 > 0);

    let socket = cluster.socket_dir().display().to_string();
    let over_socket = replication::probe(&connection(&cluster.bin_uri(), &[("host", &socket)]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(over_socket.system_identifier, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_speaks_md5_and_a_missing_password_is_named() {
    const MD5_PASSWORD: &str = "md5 p@ss:w/rd é";
    let cluster = Cluster::with_md5_role("old_bk", MD5_PASSWORD, "REPLICATION", "replication");
    let location = format!("postgres+bin://old_bk@127.0.0.1:{}", cluster.port);
    replication::probe(&connection(&location, &[("password", MD5_PASSWORD)]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let err = replication::probe(&connection(&location, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("asks for a password and none was given"),
        "{err}"
    );
    let wrong = replication::probe(&connection(&location, &[("password", "wrong")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("password authentication failed for user \"old_bk\""),
        "{wrong}"
    );
    assert!(!wrong.contains("wrong"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_uses_tls_when_the_server_demands_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-keyout", "server.key"])
        .args(["-out", "server.crt"])
        .current_dir(dir.path())
        .output()
        .expect("openssl is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let cluster = Cluster::start_with(ClusterOptions {
        config: vec![
            "ssl = on".into(),
            "ssl_cert_file = 'server.crt'".into(),
            "ssl_key_file = 'server.key'".into(),
        ],
        hba: vec![
            "local all all scram-sha-256".into(),
            "host all all 127.0.0.1/32 scram-sha-256".into(),
            "hostssl replication all 127.0.0.1/32 scram-sha-256".into(),
        ],
        files: vec![
            ("server.crt".into(), read("server.crt")),
            ("server.key".into(), read("server.key")),
        ],
        ..Default::default()
    });
    for mode in ["prefer", "require"] {
        replication::probe(&connection(&cluster.bin_uri(), &[("ssl_mode", mode)]))
            .await
            .unwrap_or_else(|e| panic!("ssl_mode={mode}: {e}"));
    }
    // Without TLS there is no `replication` line that matches.
    let plain = replication::probe(&connection(&cluster.bin_uri(), &[("ssl_mode", "disable")]))
        .await
        .unwrap_err();
    assert!(matches!(plain, Refusal::NoHbaLine(_)), "{plain}");

    let no_tls = Cluster::start_with(ClusterOptions::physical());
    let err = replication::probe(&connection(&no_tls.bin_uri(), &[("ssl_mode", "require")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not accept TLS, which ssl_mode=require demands"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_named_from_the_servers_sqlstate() {
    // No `replication` line in pg_hba.conf: 28000.
    let no_hba = Cluster::start();
    let err = replication::probe(&connection(&no_hba.bin_uri(), &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, Refusal::NoHbaLine(_)), "{err}");
    assert!(
        err.to_string().contains("host replication postgres"),
        "{err}"
    );

    // A role without REPLICATION: 42501.
    let cluster = Cluster::start_with(ClusterOptions {
        config: vec!["max_wal_senders = 1".into()],
        ..ClusterOptions::physical()
    });
    cluster.sql("postgres", "CREATE ROLE plain LOGIN PASSWORD 'plain'");
    let plain = connection(
        &format!("postgres+bin://plain:plain@127.0.0.1:{}", cluster.port),
        &[],
    );
    let err = replication::probe(&plain).await.unwrap_err();
    assert!(matches!(err, Refusal::NoReplication(_)), "{err}");
    assert!(err.to_string().contains("ALTER ROLE \"plain\" REPLICATION"));
    // The same verdict from the role check on the ordinary connection.
    let plain_admin = plain.connect("postgres").await.unwrap();
    let err = replication::check_server(&plain_admin, "plain")
        .await
        .unwrap_err();
    assert!(matches!(err, Refusal::NoReplication(_)), "{err}");

    // The only WAL sender taken, by a replication connection of our own: 53300.
    let superuser = connection(&cluster.bin_uri(), &[]);
    let held = ReplicationConnection::open(&superuser)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = replication::probe(&superuser).await.unwrap_err();
    assert!(matches!(err, Refusal::WalSendersBusy), "{err}");
    held.close().await;
    wait_for(
        &cluster,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'",
        "0",
    );
    replication::probe(&superuser)
        .await
        .unwrap_or_else(|e| panic!("once the sender is free: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_slot_is_created_once_inspected_and_dropped() {
    let cluster = Cluster::start_with(ClusterOptions::physical());
    let admin = admin(&cluster).await;
    let name = SlotName::new("plakar_archive_main").unwrap();

    let first = slot::ensure_permanent(&admin, &name).await.unwrap();
    assert!(first.created);
    assert!(!first.slot.temporary);
    assert!(first.slot.restart_lsn.is_some(), "{first:?}");
    assert_eq!(
        cluster.sql(
            "postgres",
            "SELECT slot_type || ' ' || temporary || ' ' || restart_lsn FROM pg_replication_slots WHERE slot_name = 'plakar_archive_main'"
        ),
        format!("physical false {}", first.slot.restart_lsn.unwrap())
    );

    // A second plugin, on a connection of its own, finds it and says so.
    let again = slot::ensure_permanent(&self::admin(&cluster).await, &name)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.slot.restart_lsn, first.slot.restart_lsn);
    assert_eq!(again.slot.wal_status, Some(WalStatus::Reserved));
    assert!(!again.slot.is_lost());
    drop(admin);

    let admin = self::admin(&cluster).await;
    let seen = slot::inspect(&admin, &name)
        .await
        .unwrap()
        .expect("it outlived its session");
    assert!(!seen.active && !seen.temporary);
    let err = slot::create_permanent(&admin, &name).await.unwrap_err();
    assert!(matches!(err, SlotError::Exists(_)), "{err}");

    assert!(slot::drop_slot(&admin, &name).await.unwrap());
    assert_eq!(
        cluster.sql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert!(
        !slot::drop_slot(&admin, &name).await.unwrap(),
        "dropped twice"
    );
    assert_eq!(slot::inspect(&admin, &name).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_temporary_slot_goes_with_its_session_and_blocks_the_name() {
    let cluster = Cluster::start_with(ClusterOptions::physical());
    let holder = admin(&cluster).await;
    let name = SlotName::for_this_process();
    let made = slot::create_temporary(&holder, &name).await.unwrap();
    assert!(made.temporary && made.restart_lsn.is_some(), "{made:?}");
    assert_eq!(
        cluster.sql("postgres", "SELECT temporary FROM pg_replication_slots"),
        "t"
    );

    let other = admin(&cluster).await;
    let err = slot::ensure_permanent(&other, &name).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("temporary slot of another session"),
        "{err}"
    );

    drop(holder);
    wait_for(&cluster, "SELECT count(*) FROM pg_replication_slots", "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn slot_failures_name_their_cause() {
    let cluster = Cluster::start_with(ClusterOptions {
        config: vec!["max_replication_slots = 1".into()],
        ..ClusterOptions::physical()
    });
    let admin = admin(&cluster).await;
    let taken = SlotName::new("taken").unwrap();
    slot::create_permanent(&admin, &taken).await.unwrap();
    let err = slot::create_permanent(&admin, &SlotName::new("second").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, SlotError::NoFreeSlot), "{err}");
    assert!(err.to_string().contains("raise max_replication_slots"));

    // A reader streaming from the slot holds it.
    let wal = tempfile::Builder::new().prefix("pgwal-").tempdir().unwrap();
    let _receiver = receiving_wal(&cluster, wal.path(), Some("taken"));
    wait_for(
        &cluster,
        "SELECT active FROM pg_replication_slots WHERE slot_name = 'taken'",
        "t",
    );
    let err = slot::drop_slot(&admin, &taken).await.unwrap_err();
    assert!(matches!(err, SlotError::InUse(_)), "{err}");
    assert!(slot::inspect(&admin, &taken).await.unwrap().unwrap().active);

    let minimal = Cluster::start_with(ClusterOptions {
        config: vec!["wal_level = minimal".into(), "max_wal_senders = 0".into()],
        ..Default::default()
    });
    let err = slot::create_temporary(&self::admin(&minimal).await, &taken)
        .await
        .unwrap_err();
    assert!(matches!(err, SlotError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("wal_level"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_whose_wal_was_removed_is_lost() {
    let cluster = Cluster::start_with(ClusterOptions {
        config: vec!["max_slot_wal_keep_size = 1MB".into()],
        ..ClusterOptions::physical()
    });
    let admin = admin(&cluster).await;
    let name = SlotName::new("left_behind").unwrap();
    slot::ensure_permanent(&admin, &name).await.unwrap();
    cluster.sql("postgres", "CREATE TABLE filler (t text)");
    let mut state = slot::inspect(&admin, &name).await.unwrap().unwrap();
    for _ in 0..10 {
        if state.is_lost() {
            break;
        }
        cluster.sql(
            "postgres",
            "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000); SELECT pg_switch_wal(); CHECKPOINT;",
        );
        state = slot::inspect(&admin, &name).await.unwrap().unwrap();
    }
    assert!(state.is_lost(), "{state:?}");
    assert_eq!(state.wal_status, Some(WalStatus::Lost));
    assert!(slot::drop_slot(&admin, &name).await.unwrap());
}
