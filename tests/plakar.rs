//! Through the real Plakar: every case runs the `plakar` binary as a user
//! would, with this package installed from `make package`, against
//! throw-away clusters, and checks what the user would check: rows, owners,
//! exit statuses, messages, the files of a snapshot.
//!
//! Without a plakar binary every case is reported as ignored, never as
//! passed, and `make test` ends with a line saying so.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::caught::{kill, pg_dumps, wait_for, wait_for_blocked_tool, wait_until, Lock};
use common::cluster::{
    bin_location, give_to_server, not_owned_by, open_dir, pg18_bin, server_dir, server_identity,
};
use common::load::{assert_pgbench_consistent, pgbench_writing, receiving_wal};
use common::plakar::{self, Plakar};
use common::{
    damaged_page, databases, items, owned_source, seed, table_owner, Cluster, ClusterOptions,
    PASSWORD,
};

/// Every case, by name.
const CASES: &[(&str, fn())] = &[
    ("packaging_makes_a_package_that_plakar_installs", packaging),
    (
        "the_documented_single_database_commands_work",
        single_database,
    ),
    (
        "create_db_restores_under_the_dumps_name_or_a_new_one",
        create_db,
    ),
    (
        "create_db_refuses_an_existing_database_before_changing_it",
        create_db_existing,
    ),
    (
        "a_whole_cluster_backup_restores_into_a_fresh_cluster",
        whole_cluster,
    ),
    (
        "an_encrypted_store_works_with_its_passphrase",
        encrypted_store,
    ),
    ("a_split_backup_restores_whole_by_path_and_by_name", split),
    ("a_numbered_layout_snapshot_restores", numbered_layout),
    (
        "source_check_and_connection_failures_are_readable",
        connection_failures,
    ),
    ("a_dump_killed_half_way_commits_no_snapshot", killed_dump),
    (
        "a_failed_restore_exits_non_zero_and_names_the_file",
        failed_restore,
    ),
    ("a_15_backup_restores_into_18", fifteen_to_eighteen),
    (
        "the_postgres_user_backs_up_over_the_socket_with_peer_auth",
        peer_auth,
    ),
    (
        "physical_backup_under_load_restores_into_a_cluster_that_starts",
        physical_under_load,
    ),
    (
        "physical_backup_of_a_standby_under_load_restores_and_starts",
        physical_standby_under_load,
    ),
    (
        "logical_backup_of_a_standby_restores_row_for_row",
        logical_standby,
    ),
    (
        "physical_backup_refusals_name_cause_and_remedy",
        physical_refusals,
    ),
    (
        "physical_backup_of_an_old_or_busy_server_fails_clearly",
        physical_busy_or_old,
    ),
    (
        "physical_and_logical_snapshots_refuse_the_other_destination",
        physical_logical_mix,
    ),
    (
        "physical_restore_refuses_used_directories",
        physical_targets,
    ),
    (
        "physical_backup_with_two_tablespaces_under_load_restores_them_mapped",
        physical_tablespaces,
    ),
    (
        "an_18_cluster_whose_disks_are_lost_goes_back_with_its_tablespace_where_it_was",
        physical_tablespace_in_place,
    ),
    (
        "physical_backup_fails_on_a_damaged_page_and_names_the_file",
        physical_checksums,
    ),
    (
        "physical_backup_and_restore_need_only_the_physical_tools",
        physical_tools_alone,
    ),
    (
        "physical_restore_as_root_gives_the_files_to_the_owner",
        physical_owner,
    ),
    (
        "an_18_cluster_goes_through_a_physical_round_trip_with_the_18_tools",
        physical_eighteen,
    ),
];

fn main() {
    plakar::run_cases(CASES, "real-Plakar cases");
}

/// The source's URI as the documentation writes it, password included.
fn uri(cluster: &Cluster, db: &str) -> String {
    cluster.uri(db)
}

/// A fresh environment, a plaintext store, and a snapshot of `db` on `src`.
fn snapshot_of<'a>(pk: &'a Plakar, src: &Cluster, db: &str) -> (common::plakar::Store<'a>, String) {
    let store = pk.store("store");
    pk.source("mypg", &uri(src, db), &[]);
    let snap = store.backed_up("mypg");
    (store, snap)
}

fn packaging() {
    let ptar = plakar::package();
    let name = ptar.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(&format!("postgresql_v{}_linux_", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );
    let pk = Plakar::new();
    let list = pk.run(&["pkg", "list"]).ok();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.trim() == format!("postgresql@v{}", env!("CARGO_PKG_VERSION"))),
        "{}",
        list.output()
    );
}

fn single_database() {
    let src = owned_source();
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &src, "app");
    assert_eq!(store.snapshots(), std::slice::from_ref(&snap));
    assert_eq!(
        store.files(&snap),
        ["app.dump", "globals.sql", "manifest.json"]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/manifest.json")).expect("manifest is JSON");
    for section in ["cluster_config", "roles", "tablespaces", "databases"] {
        assert!(
            !manifest[section].is_null(),
            "{section} missing: {manifest:#}"
        );
    }
    assert_eq!(manifest["databases"][0]["name"], "app");
    assert!(store.cat(&snap, "/app.dump").starts_with(b"PGDMP"));

    // Restore into an existing database, the roles created beforehand.
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE ROLE app_owner");
    dst.sql("postgres", "CREATE DATABASE app");
    pk.destination("mypgdst", &uri(&dst, "app"), &[]);
    store
        .restore("mypgdst", &snap)
        .ok_saying(&["OK ✓ /app.dump"]);
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
}

fn create_db() {
    let src = Cluster::start();
    seed(&src, "myapp", 300);
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &src, "myapp");
    let dst = Cluster::start();

    // The documentation's command: the URI names the dump's own database.
    pk.destination("mypgdst", &uri(&dst, "myapp"), &["create_db=true"]);
    store.restore("mypgdst", &snap).ok();
    assert_eq!(items(&dst, "myapp"), items(&src, "myapp"));

    // Another name: last night's myapp restored as myapp_check, alike in encoding and locale.
    pk.destination("check", &uri(&dst, "myapp_check"), &["create_db=true"]);
    store.restore("check", &snap).ok();
    assert_eq!(items(&dst, "myapp_check"), items(&src, "myapp"));
    assert_eq!(databases(&dst), ["myapp", "myapp_check"]);
    let looks = |db: &str| {
        dst.sql(
            "postgres",
            &format!("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = '{db}'"),
        )
    };
    assert_eq!(looks("myapp_check"), looks("myapp"));
}

fn create_db_existing() {
    let src = Cluster::start();
    seed(&src, "myapp", 100);
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &src, "myapp");
    let dst = Cluster::start();
    seed(&dst, "myapp", 3);
    dst.sql(
        "myapp",
        "INSERT INTO items (id, name) VALUES (1000, 'kept')",
    );
    let before = items(&dst, "myapp");

    pk.destination("mypgdst", &uri(&dst, "myapp"), &["create_db=true"]);
    store.restore("mypgdst", &snap).fails_saying(&[
        "\"myapp\" already exists",
        "clean=true",
        "drop it first",
    ]);
    assert_eq!(
        items(&dst, "myapp"),
        before,
        "the refused restore changed the target"
    );

    // The way out it names.
    pk.destination(
        "cleaned",
        &uri(&dst, "myapp"),
        &["create_db=true", "clean=true"],
    );
    store.restore("cleaned", &snap).ok();
    assert_eq!(items(&dst, "myapp"), items(&src, "myapp"));
}

fn whole_cluster() {
    let src = owned_source();
    seed(&src, "shop", 40);
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &src, "");
    assert_eq!(store.files(&snap), ["all.sql", "manifest.json"]);

    let dst = Cluster::start();
    pk.destination("fresh", &uri(&dst, ""), &[]);
    store.restore("fresh", &snap).ok();
    assert_eq!(databases(&dst), ["app", "shop"]);
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(items(&dst, "shop"), items(&src, "shop"));
    assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
}

fn encrypted_store() {
    let src = Cluster::start();
    seed(&src, "app", 200);
    let pk = Plakar::new();
    let store = pk.encrypted_store("vault", "correct horse battery staple");
    pk.source("mypg", &uri(&src, "app"), &[]);
    let snap = store.backed_up("mypg");
    let dst = Cluster::start();
    pk.destination("mypgdst", &uri(&dst, ""), &["create_db=true"]);
    store.restore("mypgdst", &snap).ok();
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    // The store is encrypted indeed: no dump bytes lie in it in clear.
    let marker = "item 17 ";
    let found = std::process::Command::new("grep")
        .args(["-r", "-q", "-a", marker])
        .arg(pk.dir().join("vault"))
        .status()
        .unwrap();
    assert!(!found.success(), "{marker:?} found in clear in the store");
}

fn split() {
    let src = owned_source();
    seed(&src, "shop", 60);
    seed(&src, "scratch", 5);
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source(
        "cluster",
        &uri(&src, ""),
        &["split_databases=true", "exclude_databases=scratch"],
    );
    let snap = store.backed_up("cluster");
    assert_eq!(
        store.files(&snap),
        [
            "app.dump",
            "globals.sql",
            "manifest.json",
            "postgres.dump",
            "shop.dump",
            "template1.dump"
        ]
    );

    // Everything, roles first, into a fresh cluster.
    let all = Cluster::start();
    pk.destination(
        "all",
        &uri(&all, ""),
        &["create_db=true", "restore_globals=true"],
    );
    store.restore("all", &snap).ok();
    assert_eq!(databases(&all), ["app", "shop"]);
    assert_eq!(items(&all, "app"), items(&src, "app"));
    assert_eq!(items(&all, "shop"), items(&src, "shop"));
    assert_eq!(table_owner(&all, "app", "items"), "app_owner");

    // One database by its path.
    let one = Cluster::start();
    pk.destination("one", &uri(&one, ""), &["create_db=true"]);
    store.restore("one", &format!("{snap}:/shop.dump")).ok();
    assert_eq!(databases(&one), ["shop"]);
    assert_eq!(items(&one, "shop"), items(&src, "shop"));

    // One database by name.
    let named = Cluster::start();
    pk.destination(
        "named",
        &uri(&named, ""),
        &["create_db=true", "databases=app", "no_owner=true"],
    );
    store.restore("named", &snap).ok();
    assert_eq!(databases(&named), ["app"]);
    assert_eq!(items(&named, "app"), items(&src, "app"));
}

fn numbered_layout() {
    let src = owned_source();
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &src, "app");
    // The other integration's layout, as files a plain directory backup stores.
    let dir = pk.dir().join("numbered");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("00000-globals.sql"),
        store.cat(&snap, "/globals.sql"),
    )
    .unwrap();
    std::fs::write(dir.join("00001-app.dump"), store.cat(&snap, "/app.dump")).unwrap();
    let before = store.snapshots();
    store.at(&["backup", dir.to_str().unwrap()]).ok();
    let numbered = store
        .snapshots()
        .into_iter()
        .find(|s| !before.contains(s))
        .expect("a new snapshot");

    let dst = Cluster::start();
    pk.destination(
        "mypgdst",
        &uri(&dst, ""),
        &["create_db=true", "restore_globals=true"],
    );
    store
        .restore("mypgdst", &numbered)
        .ok_saying(&["OK ✓ /00001-app.dump"]);
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
}

fn connection_failures() {
    let src = Cluster::start();
    seed(&src, "app", 10);
    let pk = Plakar::new();
    let store = pk.store("store");

    pk.source("good", &uri(&src, "app"), &[]);
    pk.run(&["source", "check", "good"]).ok();

    let wrong = "Wr0ng:p@ss";
    pk.source(
        "bad",
        &src.uri_without_password("postgres", "app"),
        &[&format!("password={wrong}")],
    );
    for ran in [pk.run(&["source", "check", "bad"]), store.backup("bad")] {
        let ran = ran.fails_saying(&["password authentication failed", "\"postgres\""]);
        assert!(!ran.output().contains(wrong), "{}", ran.output());
        assert!(!ran.output().contains(PASSWORD), "{}", ran.output());
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    pk.source(
        "down",
        &format!("postgres://postgres:{wrong}@127.0.0.1:{port}/app"),
        &[],
    );
    let ran = store
        .backup("down")
        .fails_saying(&["cannot connect to PostgreSQL at 127.0.0.1:", "refused"]);
    assert!(!ran.output().contains(wrong), "{}", ran.output());
    assert!(
        store.snapshots().is_empty(),
        "a failed backup left a snapshot"
    );
}

fn killed_dump() {
    let src = Cluster::start();
    seed(&src, "victim", 1000);
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mypg", &uri(&src, "victim"), &[]);
    let lock = Lock::take(&src, "victim");
    let backup = store
        .command(&["backup", "@mypg"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_blocked_tool(&src, "LOCK TABLE");
    let dumps = pg_dumps("victim");
    assert_eq!(dumps.len(), 1, "one pg_dump runs: {dumps:?}");
    kill(dumps[0]);
    drop(lock);
    let out = backup.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "plakar backup exited 0:\n{said}");
    assert!(said.contains("pg_dump was killed by signal 9"), "{said}");
    assert!(
        store.snapshots().is_empty(),
        "a snapshot was committed:\n{said}"
    );
}

fn failed_restore() {
    let src = Cluster::start();
    seed(&src, "app", 100);
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &src, "app");
    let dst = Cluster::start();
    seed(&dst, "app", 5);
    pk.destination("mypgdst", &uri(&dst, "app"), &[]);
    store.restore("mypgdst", &snap).fails_saying(&[
        "KO",
        "/app.dump",
        "restore of database \"app\" failed",
        "already exists",
    ]);

    // The same restore into an empty database succeeds, and says so with 0.
    dst.sql("postgres", "DROP DATABASE app");
    dst.sql("postgres", "CREATE DATABASE app");
    store.restore("mypgdst", &snap).ok();
    assert_eq!(items(&dst, "app"), items(&src, "app"));
}

fn fifteen_to_eighteen() {
    let src = Cluster::start();
    seed(&src, "app", 300);
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &src, "app");
    let dst = Cluster::start_18();
    pk.destination(
        "pg18",
        &uri(&dst, ""),
        &[
            "create_db=true",
            &format!("pg_bin_dir={}", pg18_bin().display()),
        ],
    );
    store.restore("pg18", &snap).ok();
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert!(dst.sql("app", "SHOW server_version").starts_with("18"));
}

fn peer_auth() {
    // Peer authentication only; the map lets the tests' own psql (root) in too.
    let src = Cluster::start_with(ClusterOptions {
        hba: vec!["local all all peer map=local".into()],
        files: vec![(
            "pg_ident.conf".into(),
            b"local postgres postgres\nlocal root postgres\n".to_vec(),
        )],
        ..Default::default()
    });
    seed(&src, "app", 120);
    let pk = Plakar::as_postgres();
    let store = pk.store("store");
    // No password anywhere: the system user `postgres` is the database user `postgres`.
    let socket = format!("host={}", src.socket_dir().display());
    let port = format!("port={}", src.port);
    pk.source("local", "postgres:///app", &[&socket, &port]);
    let snap = store.backed_up("local");
    assert_eq!(
        store.files(&snap),
        ["app.dump", "globals.sql", "manifest.json"]
    );
    src.sql("postgres", "CREATE DATABASE copy");
    pk.destination("copy", "postgres:///copy", &[&socket, &port]);
    store.restore("copy", &snap).ok();
    assert_eq!(items(&src, "copy"), items(&src, "app"));
}

fn physical_under_load() {
    let src = Cluster::start_with(ClusterOptions::physical());
    seed(&src, "app", 200);
    let mut load = pgbench_writing(&src, "postgres");
    let pk = Plakar::new();
    let store = pk.store("store");
    // pg_basebackup's stream; tests/direct.rs and the 18 cases take the direct copy.
    pk.source("mybin", &src.bin_uri(), &["copy=stream"]);
    let snap = store.backed_up("mybin");
    assert!(load.running(), "pgbench ended during the backup");
    load.stop();

    let files = store.files(&snap);
    for f in [
        "PG_VERSION",
        "backup_label",
        "backup_manifest",
        "base",
        "global",
        "manifest.json",
        "pg_wal",
    ] {
        assert!(files.contains(&f.to_string()), "{f} missing from {files:?}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/manifest.json")).unwrap();
    assert_eq!(manifest["backup"]["layout"], "physical");
    assert!(
        manifest["wal"]["start_lsn"].is_string() && manifest["wal"]["stop_lsn"].is_string(),
        "{manifest:#}"
    );
    assert!(
        manifest["server"]["system_identifier"].is_string(),
        "{manifest:#}"
    );
    assert!(
        !manifest["cluster_config"]["data_checksums"].is_null(),
        "{manifest:#}"
    );
    assert!(manifest["databases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "app" && d["size_bytes"].as_i64() > Some(0)));

    let (_restored, copy) = store.restored_and_started(&snap);
    let data = copy.data_dir();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(!data.join("manifest.json").exists());
    assert_eq!(databases(&copy), databases(&src));
    assert_eq!(items(&copy, "app"), items(&src, "app"));
    assert_pgbench_consistent(&copy, "postgres");
}

fn physical_standby_under_load() {
    let primary = Cluster::start_with(ClusterOptions::primary());
    seed(&primary, "app", 200);
    let mut load = pgbench_writing(&primary, "postgres");
    let standby = Cluster::standby_of(&primary, &[]);
    wait_until(
        Duration::from_secs(30),
        "the standby to replay pgbench's writes",
        || standby.sql("postgres", "SELECT count(*) FROM pgbench_history") != "0",
    );
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("standby", &standby.bin_uri(), &[]);
    let snap = store.backed_up("standby");
    assert!(load.running(), "pgbench ended during the backup");
    load.stop();

    // The manifest says the copy comes from a standby, and which timeline of the primary it follows.
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/manifest.json")).unwrap();
    let timeline = primary.sql(
        "postgres",
        "SELECT timeline_id FROM pg_control_checkpoint()",
    );
    assert_eq!(manifest["server"]["in_recovery"], true, "{manifest:#}");
    assert_eq!(
        manifest["server"]["timeline"].to_string(),
        timeline,
        "{manifest:#}"
    );
    assert_eq!(manifest["wal"]["timeline"], manifest["server"]["timeline"]);
    assert_eq!(
        manifest["server"]["system_identifier"],
        primary
            .sql(
                "postgres",
                "SELECT system_identifier::text FROM pg_control_system()"
            )
            .as_str(),
        "{manifest:#}"
    );

    let target = open_dir();
    let data = target.path().join("restored");
    pk.destination("mydata", &bin_location(&data), &[]);
    store
        .restore("mydata", &snap)
        .ok_saying(&["matches its backup_manifest", "remove standby.signal"]);
    // What the restore says: without standby.signal the copy starts as a server of its own.
    std::fs::remove_file(data.join("standby.signal")).expect("the copy holds standby.signal");
    let copy = Cluster::adopt(&data);
    assert_eq!(copy.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(databases(&copy), databases(&primary));
    assert_eq!(items(&copy, "app"), items(&primary, "app"));
    assert_pgbench_consistent(&copy, "postgres");
}

fn logical_standby() {
    let primary = Cluster::start_with(ClusterOptions::primary());
    let standby = Cluster::standby_of(&primary, &[]);
    // Made on the primary after the standby was: it reaches the standby by replay.
    seed(&primary, "app", 500);
    standby.wait_for_replay_of(&primary);
    let pk = Plakar::new();
    let (store, snap) = snapshot_of(&pk, &standby, "app");
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/manifest.json")).unwrap();
    assert_eq!(manifest["server"]["in_recovery"], true, "{manifest:#}");

    let dst = Cluster::start();
    pk.destination("mypgdst", &uri(&dst, "app"), &["create_db=true"]);
    store.restore("mypgdst", &snap).ok();
    assert_eq!(items(&dst, "app"), items(&primary, "app"));
    assert_eq!(items(&dst, "app").len(), 500);
}

fn physical_refusals() {
    let pk = Plakar::new();
    let store = pk.store("store");

    let minimal = Cluster::start_with(ClusterOptions {
        config: vec!["wal_level = minimal".into(), "max_wal_senders = 0".into()],
        ..ClusterOptions::physical()
    });
    pk.source("minimal", &minimal.bin_uri(), &[]);
    store
        .backup("minimal")
        .fails_saying(&["wal_level=minimal", "set wal_level=replica"]);

    let src = Cluster::start_with(ClusterOptions::physical());
    src.sql("postgres", "CREATE ROLE plain LOGIN PASSWORD 'plain'");
    pk.source(
        "plain",
        &format!("postgres+bin://plain:plain@127.0.0.1:{}", src.port),
        &[],
    );
    store
        .backup("plain")
        .fails_saying(&["user \"plain\"", "ALTER ROLE \"plain\" REPLICATION"]);

    let no_hba = Cluster::start();
    pk.source("nohba", &no_hba.bin_uri(), &[]);
    store
        .backup("nohba")
        .fails_saying(&["pg_hba.conf", "host replication postgres"]);
    assert!(
        store.snapshots().is_empty(),
        "a refused backup left a snapshot"
    );
}

fn physical_busy_or_old() {
    let pk = Plakar::new();
    let store = pk.store("store");

    let busy = Cluster::start_with(ClusterOptions {
        config: vec!["max_wal_senders = 1".into()],
        ..ClusterOptions::physical()
    });
    let wal = open_dir();
    let _receiver = receiving_wal(&busy, wal.path(), None);
    // pg_receivewal holds the only WAL sender.
    wait_for(
        &busy,
        "postgres",
        "SELECT count(*) FROM pg_stat_replication",
    );
    pk.source("busy", &busy.bin_uri(), &[]);
    store
        .backup("busy")
        .fails_saying(&["WAL senders", "raise max_wal_senders"]);

    let new = Cluster::start_with(ClusterOptions {
        bin: pg18_bin(),
        ..ClusterOptions::physical()
    });
    pk.source(
        "new",
        &new.bin_uri(),
        &["pg_bin_dir=/usr/lib/postgresql/15/bin"],
    );
    store
        .backup("new")
        .fails_saying(&["PostgreSQL 18", "version 15", "pg_bin_dir"]);
    assert!(
        store.snapshots().is_empty(),
        "a failed backup left a snapshot"
    );
}

fn physical_logical_mix() {
    let src = Cluster::start_with(ClusterOptions::physical());
    seed(&src, "app", 20);
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mypg", &uri(&src, "app"), &[]);
    pk.source("mybin", &src.bin_uri(), &[]);
    let logical = store.backed_up("mypg");
    let physical = store.backed_up("mybin");

    let target = open_dir();
    let data = target.path().join("data");
    pk.destination("mydata", &bin_location(&data), &[]);
    store.restore("mydata", &logical).fails_saying(&[
        "comes from a logical backup",
        "nothing was written",
        "postgres://",
    ]);
    assert!(
        !data.exists(),
        "the refused restore wrote {}",
        data.display()
    );

    let dst = Cluster::start();
    pk.destination("mypgdst", &uri(&dst, ""), &["create_db=true"]);
    store
        .restore("mypgdst", &physical)
        .fails_saying(&["belongs to a physical backup", "postgres+bin://"]);
    assert!(
        databases(&dst).is_empty(),
        "the refused restore created {:?}",
        databases(&dst)
    );
}

fn physical_targets() {
    let src = Cluster::start_with(ClusterOptions::physical());
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &[]);
    let snap = store.backed_up("mybin");

    let used = open_dir();
    std::fs::write(used.path().join("keep.txt"), "mine").unwrap();
    pk.destination("used", &bin_location(used.path()), &[]);
    store.restore("used", &snap).fails_saying(&["is not empty"]);
    assert_eq!(std::fs::read_dir(used.path()).unwrap().count(), 1);

    pk.destination("running", &bin_location(src.data_dir()), &[]);
    store
        .restore("running", &snap)
        .fails_saying(&["belongs to a running PostgreSQL server"]);
}

/// Makes tablespace `name` in a directory of its own under `place`.
fn tablespace(src: &Cluster, place: &std::path::Path, name: &str) -> std::path::PathBuf {
    let dir = server_dir(place, name);
    src.sql(
        "postgres",
        &format!("CREATE TABLESPACE {name} LOCATION '{}'", dir.display()),
    );
    dir
}

fn physical_tablespaces() {
    let src = Cluster::start_with(ClusterOptions::physical());
    let place = open_dir();
    for name in ["tables", "indexes"] {
        tablespace(&src, place.path(), name);
    }
    seed(&src, "app", 500);
    src.sql("app", "ALTER TABLE items SET TABLESPACE tables");
    src.sql(
        "app",
        "CREATE INDEX items_by_id ON items (id) TABLESPACE indexes",
    );
    let indexes_oid = src.rows(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'indexes'",
    )[0]
    .clone();
    let mut load = pgbench_writing(&src, "postgres");
    let pk = Plakar::new();
    let store = pk.store("store");
    // pg_basebackup's stream; tests/direct.rs and the 18 cases take the direct copy.
    pk.source("mybin", &src.bin_uri(), &["copy=stream"]);
    let snap = store.backed_up("mybin");
    assert!(load.running(), "pgbench ended during the backup");
    load.stop();
    assert!(store.files(&snap).contains(&"pg_tblspc".to_string()));

    // Unmapped, a tablespace goes back to its original directory, which the
    // source still uses: refused before anything is written.
    let elsewhere = open_dir();
    pk.destination(
        "original",
        &bin_location(&elsewhere.path().join("restored")),
        &[],
    );
    let before = std::fs::read_dir(place.path().join("tables"))
        .unwrap()
        .count();
    store.restore("original", &snap).fails_saying(&[
        "tablespace tables (",
        "is not empty",
        &place.path().display().to_string(),
        "option `tablespace_mapping=tables=",
    ]);
    assert!(!elsewhere.path().join("restored").exists());
    assert_eq!(
        std::fs::read_dir(place.path().join("tables"))
            .unwrap()
            .count(),
        before
    );

    // A misspelt name: refused before any tablespace is written, naming those there are.
    let misspelt = open_dir();
    pk.destination(
        "misspelt",
        &bin_location(&misspelt.path().join("restored")),
        &[&format!(
            "tablespace_mapping=tabels={}",
            misspelt.path().join("t").display()
        )],
    );
    store
        .restore("misspelt", &snap)
        .fails_saying(&["names tabels", "tables (", "indexes ("]);
    assert!(!misspelt.path().join("t").exists());

    // Both sent to one directory: refused before anything is written.
    let shared = open_dir();
    pk.destination(
        "shared",
        &bin_location(&shared.path().join("restored")),
        &[&format!(
            "tablespace_mapping=tables={0},indexes={0}",
            shared.path().join("t").display()
        )],
    );
    store.restore("shared", &snap).fails_saying(&[
        "would both be restored into",
        "indexes (",
        "tables (",
    ]);
    assert_eq!(std::fs::read_dir(shared.path()).unwrap().count(), 0);

    // One inside the data directory: refused before anything is written.
    let inside = open_dir();
    let inside_data = inside.path().join("restored");
    pk.destination(
        "inside",
        &bin_location(&inside_data),
        &[&format!(
            "tablespace_mapping=tables={}",
            inside_data.join("pg_tables").display()
        )],
    );
    store.restore("inside", &snap).fails_saying(&[
        "overlaps the data directory",
        "option `tablespace_mapping=tables=",
    ]);
    assert!(!inside_data.exists());

    // A mapped directory that holds a file: refused before anything is written.
    let target = open_dir();
    let data = target.path().join("restored");
    let crowded = open_dir();
    std::fs::write(crowded.path().join("keep.txt"), "mine").unwrap();
    let mapping = |tables: &std::path::Path, indexes: &std::path::Path| {
        format!(
            "tablespace_mapping=tables={},{indexes_oid}={}",
            tables.display(),
            indexes.display()
        )
    };
    let new_tables = target.path().join("tables");
    let new_indexes = target.path().join("indexes");
    pk.destination(
        "crowded",
        &bin_location(&data),
        &[&mapping(&new_tables, crowded.path())],
    );
    store
        .restore("crowded", &snap)
        .fails_saying(&["is not empty"]);
    assert!(!data.exists() && !new_tables.exists());

    pk.destination(
        "mydata",
        &bin_location(&data),
        &[&mapping(&new_tables, &new_indexes)],
    );
    store
        .restore("mydata", &snap)
        .ok_saying(&["matches its backup_manifest"]);
    give_to_server(&new_tables);
    give_to_server(&new_indexes);
    let copy = Cluster::adopt(&data);
    assert_eq!(
        copy.rows(
            "postgres",
            "SELECT spcname || ' ' || pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname IN ('tables', 'indexes') ORDER BY 1"
        ),
        vec![
            format!("indexes {}", new_indexes.display()),
            format!("tables {}", new_tables.display()),
        ]
    );
    assert_eq!(
        copy.rows(
            "app",
            "SELECT tablename || ' ' || tablespace FROM pg_tables WHERE tablename = 'items' UNION ALL SELECT indexname || ' ' || tablespace FROM pg_indexes WHERE indexname = 'items_by_id'"
        ),
        vec!["items tables", "items_by_id indexes"]
    );
    assert_eq!(items(&copy, "app"), items(&src, "app"));
    assert_pgbench_consistent(&copy, "postgres");
}

fn physical_tablespace_in_place() {
    // A PostgreSQL 18 server whose disks are lost, put back where it was.
    let bin = pg18_bin();
    let src = Cluster::start_with(ClusterOptions {
        bin: bin.clone(),
        ..ClusterOptions::physical()
    });
    let place = open_dir();
    let tables = tablespace(&src, place.path(), "tables");
    seed(&src, "app", 300);
    src.sql("app", "ALTER TABLE items SET TABLESPACE tables");
    let rows = items(&src, "app");
    let pg_bin_dir = format!("pg_bin_dir={}", bin.display());
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &[&pg_bin_dir]);
    let snap = store.backed_up("mybin");
    let listed: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/.tablespaces.json")).unwrap();
    assert_eq!(listed["tablespaces"][0]["name"], "tables");
    assert_eq!(
        listed["tablespaces"][0]["location"],
        tables.display().to_string()
    );

    src.stop();
    let data = src.data_dir().to_path_buf();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&tables).unwrap();
    pk.destination("mydata", &bin_location(&data), &[&pg_bin_dir]);
    store
        .restore("mydata", &snap)
        .ok_saying(&["matches its backup_manifest"]);
    // The data directory's link leads to the original directory, and the
    // plugin's own files are not in the data directory.
    assert_eq!(
        std::fs::read_link(
            data.join("pg_tblspc")
                .join(listed["tablespaces"][0]["oid"].to_string())
        )
        .unwrap(),
        tables
    );
    assert!(!data.join(".tablespaces.json").exists() && !data.join("manifest.json").exists());
    give_to_server(&tables);
    let copy = Cluster::adopt_with(&data, &bin);
    assert_eq!(
        copy.rows(
            "app",
            "SELECT pg_tablespace_location(t.oid) FROM pg_tables p JOIN pg_tablespace t ON t.spcname = p.tablespace WHERE p.tablename = 'items'"
        ),
        vec![tables.display().to_string()]
    );
    assert_eq!(items(&copy, "app"), rows);
}

fn physical_checksums() {
    let src = Cluster::start_with(ClusterOptions {
        initdb: vec!["--data-checksums".into()],
        ..ClusterOptions::physical()
    });
    seed(&src, "app", 500);
    let file = damaged_page(&src, "app", "items");
    let pk = Plakar::new();
    let store = pk.store("store");
    // pg_basebackup's stream; tests/direct.rs and the 18 cases take the direct copy.
    pk.source("mybin", &src.bin_uri(), &["copy=stream"]);
    store.backup("mybin").fails_saying(&[
        "checksum verification failed",
        &file,
        "verify_checksums=false",
    ]);
    assert!(
        store.snapshots().is_empty(),
        "a damaged backup was committed"
    );
}

fn physical_tools_alone() {
    let src = Cluster::start_with(ClusterOptions::physical());
    seed(&src, "app", 50);
    // pg_basebackup and pg_verifybackup, and no other PostgreSQL program.
    let bin = tempfile::Builder::new().prefix("pgbin-").tempdir().unwrap();
    let installed = common::cluster::default_bin_dir();
    for tool in ["pg_basebackup", "pg_verifybackup"] {
        std::os::unix::fs::symlink(installed.join(tool), bin.path().join(tool)).unwrap();
    }
    let pg_bin_dir = format!("pg_bin_dir={}", bin.path().display());
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &[&pg_bin_dir]);
    let snap = store.backed_up("mybin");

    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/manifest.json")).unwrap();
    let version = std::process::Command::new(installed.join("pg_basebackup"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    assert!(
        version.starts_with("pg_basebackup (PostgreSQL) "),
        "{version}"
    );
    assert_eq!(
        manifest["backup"]["pg_basebackup_version"],
        version.trim(),
        "{manifest:#}"
    );

    let target = open_dir();
    let data = target.path().join("restored");
    pk.destination("mydata", &bin_location(&data), &[&pg_bin_dir]);
    store
        .restore("mydata", &snap)
        .ok_saying(&["matches its backup_manifest", "--no-parse-wal"]);
    let copy = Cluster::adopt(&data);
    assert_eq!(items(&copy, "app"), items(&src, "app"));
}

fn physical_owner() {
    let (uid, gid) = server_identity().expect("the tests run as root, to give files away");
    let src = Cluster::start_with(ClusterOptions::physical());
    seed(&src, "app", 50);
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &[]);
    let snap = store.backed_up("mybin");

    let target = open_dir();
    let data = target.path().join("restored");
    pk.destination("mydata", &bin_location(&data), &["owner=postgres"]);
    store
        .restore("mydata", &snap)
        .ok_saying(&["matches its backup_manifest"]);
    assert_eq!(
        not_owned_by(&data, uid, gid),
        Vec::<std::path::PathBuf>::new()
    );
    // pg_ctl as postgres, without a chown -R.
    let copy = Cluster::start_restored(&data);
    assert_eq!(items(&copy, "app"), items(&src, "app"));

    let nobody = target.path().join("nobody");
    pk.destination("nobody", &bin_location(&nobody), &["owner=nosuchuser"]);
    store
        .restore("nobody", &snap)
        .fails_saying(&["option `owner`", "\"nosuchuser\""]);
    assert!(
        !nobody.exists(),
        "the refused restore made {}",
        nobody.display()
    );
}

fn physical_eighteen() {
    let bin = pg18_bin();
    let src = Cluster::start_with(ClusterOptions {
        bin: bin.clone(),
        ..ClusterOptions::physical()
    });
    seed(&src, "app", 200);
    // The 18 tools for all of it: pg_basebackup, pg_verifybackup, pg_waldump.
    let pg_bin_dir = format!("pg_bin_dir={}", bin.display());
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &[&pg_bin_dir]);
    let snap = store.backed_up("mybin");
    assert_eq!(store.cat(&snap, "/PG_VERSION"), b"18\n");
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/manifest.json")).unwrap();
    assert_eq!(
        manifest["server"]["version_num"].as_i64().unwrap() / 10000,
        18
    );
    assert!(
        manifest["backup"]["pg_basebackup_version"]
            .as_str()
            .unwrap()
            .starts_with("pg_basebackup (PostgreSQL) 18."),
        "{manifest:#}"
    );

    // PostgreSQL 18's own manifest: version 2, naming the cluster it was taken of.
    let pg_manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/backup_manifest")).unwrap();
    assert_eq!(pg_manifest["PostgreSQL-Backup-Manifest-Version"], 2);
    assert_eq!(
        pg_manifest["System-Identifier"]
            .as_u64()
            .unwrap()
            .to_string(),
        manifest["server"]["system_identifier"].as_str().unwrap()
    );

    let target = open_dir();
    let data = target.path().join("restored");
    pk.destination("mydata", &bin_location(&data), &[&pg_bin_dir]);
    let restored = store
        .restore("mydata", &snap)
        .ok_saying(&["matches its backup_manifest"]);
    // pg_waldump 18 parsed the WAL: nothing was only checked to be present.
    assert!(
        !restored.output().contains("--no-parse-wal"),
        "{}",
        restored.output()
    );
    // The WAL summaries' directory (PostgreSQL 17 and later) is restored, empty.
    assert!(data.join("pg_wal/summaries").is_dir());
    let copy = Cluster::adopt_with(&data, &bin);
    assert!(copy
        .sql("postgres", "SHOW server_version")
        .starts_with("18"));
    assert_eq!(databases(&copy), databases(&src));
    assert_eq!(items(&copy, "app"), items(&src, "app"));
}
