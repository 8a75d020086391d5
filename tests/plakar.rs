//! Through the real Plakar: every case runs the `plakar` binary as a user
//! would, with this package installed from `make package`, against
//! throw-away clusters, and checks what the user would check: rows, owners,
//! exit statuses, messages, the files of a snapshot.
//!
//! Without a plakar binary every case is reported as ignored, never as
//! passed, and `make test` ends with a line saying so.

mod common;

use std::process::Stdio;

use common::caught::{kill, pg_dumps, wait_for_blocked_tool, Lock};
use common::cluster::pg18_bin;
use common::plakar::{self, Plakar};
use common::{
    databases, items, owned_source, seed, table_owner, Cluster, ClusterOptions, PASSWORD,
};
use libtest_mimic::{Arguments, Failed, Trial};

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
];

fn main() {
    let args = Arguments::from_args();
    let found = plakar::find();
    let trials = CASES
        .iter()
        .map(|&(name, case)| {
            Trial::test(name, move || {
                std::panic::catch_unwind(case).map_err(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the case panicked".into());
                    Failed::from(message)
                })
            })
            .with_ignored_flag(found.is_none())
        })
        .collect();
    if found.is_none() {
        let line = format!(
            "REAL PLAKAR NOT RUN: {} real-Plakar cases did not run: no plakar binary in {}",
            CASES.len(),
            plakar::LOOKED_IN
        );
        eprintln!("{line}");
        // make test repeats it after every other test binary's output.
        let marker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plakar-not-run");
        let _ = std::fs::write(marker, format!("{line}\n"));
    }
    libtest_mimic::run(&args, trials).exit();
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
    let restored = store.restore("mypgdst", &snap).ok();
    assert!(
        restored.output().contains("OK ✓ /app.dump"),
        "{}",
        restored.output()
    );
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
    let ran = store.restore("mypgdst", &numbered).ok();
    assert!(
        ran.output().contains("OK ✓ /00001-app.dump"),
        "{}",
        ran.output()
    );
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
