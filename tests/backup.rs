//! The backup source end to end: real clusters, the real plugin binary driven
//! over its pipes, and what a user would check afterwards (the files of the
//! snapshot, the rows a restore puts back, the exact error text).

mod common;

use std::time::{Duration, Instant};

use common::caught::wait_until;
use common::host::{self, BackupRun};
use common::{ident, items, seed, Cluster, ClusterOptions, Snapshot, PASSWORD, SUPERUSER};
use plakar_postgresql::names::{self, Entry};
use serde_json::Value;

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A file of the snapshot as text.
fn text(snapshot: &Snapshot, path: &str) -> String {
    let bytes = snapshot
        .files
        .get(path)
        .unwrap_or_else(|| panic!("no {path} in {:?}", snapshot.paths()));
    String::from_utf8(bytes.clone()).unwrap_or_else(|_| panic!("{path} is not UTF-8"))
}

/// The destination options of a cluster: no database, so each dump's name is used.
fn destination(cluster: &Cluster, extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
    let mut v = vec![("location".to_string(), cluster.uri(""))];
    v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

fn borrow(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Restores a snapshot into a cluster and panics unless every file went in.
async fn restore_ok(config: &[(&str, &str)], snapshot: &Snapshot) {
    let run = host::restore(config, snapshot).await;
    run.assert_ok();
}

/// A new cluster with the snapshot of `app` restored into a database `app`,
/// globals included, row for row.
async fn restored_with_globals(src: &Cluster, snap: &Snapshot) -> Cluster {
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    restore_ok(
        &borrow(&destination(&dst, &[("restore_globals", "true")])),
        snap,
    )
    .await;
    assert_eq!(items(&dst, "app"), items(src, "app"));
    dst
}

/// A snapshot holding only some of another's files.
fn only(snapshot: &Snapshot, paths: &[&str]) -> Snapshot {
    let mut out = Snapshot::default();
    for p in paths {
        let bytes = snapshot
            .files
            .get(*p)
            .unwrap_or_else(|| panic!("no {p} in {:?}", snapshot.paths()));
        out.files.insert(p.to_string(), bytes.clone());
    }
    out
}

/// The databases a cluster has, by name.
fn databases(cluster: &Cluster) -> Vec<String> {
    cluster.rows("postgres", "SELECT datname FROM pg_database ORDER BY 1")
}

/// The lines of a pg_dumpall script that create or enter a database.
fn database_lines(script: &str) -> Vec<&str> {
    script
        .lines()
        .filter(|l| l.starts_with("\\connect") || l.starts_with("CREATE DATABASE"))
        .collect()
}

/// Whether a pg_dumpall script connects to a database: `\connect name` for
/// plain names, a quoted identifier or a `dbname='...'` string for the others.
fn enters(script: &str, db: &str) -> bool {
    let quoted = format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"));
    script.lines().any(|l| {
        l == format!("\\connect {db}")
            || l == format!("\\connect {}", ident(db))
            || (l.starts_with("\\connect ") && l.contains(&quoted))
    })
}

// 1. One database ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn one_database_by_uri_path_or_database_option_restores_row_for_row() {
    let src = Cluster::start();
    seed(&src, "app", 400);
    seed(&src, "other", 3);

    // The URI's path names the database.
    let by_uri = host::backup(&[("location", &src.uri("app"))]).await;
    let snap = by_uri.committed();
    assert_eq!(
        by_uri.order,
        ["/", "/manifest.json", "/globals.sql", "/app.dump"]
    );
    assert_eq!(
        snap.paths(),
        ["/app.dump", "/globals.sql", "/manifest.json"]
    );
    assert!(snap.files["/app.dump"].starts_with(b"PGDMP"));
    let globals = text(&snap, "/globals.sql");
    assert!(globals.contains("CREATE ROLE postgres;"), "{globals}");
    // The other database is not in it.
    assert!(!contains(&snap.files["/app.dump"], b"other"));

    // The `database` option, with or without a database in the URI, names it too.
    for location in [src.uri(""), src.uri("other")] {
        let run = host::backup(&[("location", &location), ("database", "app")]).await;
        let s = run.committed();
        assert_eq!(
            run.order,
            ["/", "/manifest.json", "/globals.sql", "/app.dump"]
        );
        assert_eq!(s.manifest()["backup"]["database"], "app");
    }

    // A database that does not exist is named in the error.
    let err = host::backup(&[("location", &src.uri("no such db"))])
        .await
        .failure();
    assert!(
        err.contains("database \"no such db\" does not exist"),
        "{err}"
    );

    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    restore_ok(&borrow(&destination(&dst, &[])), &snap).await;
    let restored = items(&dst, "app");
    assert_eq!(restored.len(), 400);
    assert_eq!(restored, items(&src, "app"));
    assert!(!databases(&dst).contains(&"other".to_string()));
}

// 2. The whole cluster in one script ----------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn whole_cluster_is_one_script_and_excluded_databases_are_left_out() {
    let src = Cluster::start();
    seed(&src, "kept_db", 20);
    seed(&src, "dropped_one", 5);
    seed(&src, "dropped two", 5);
    // A pattern character in an excluded name is taken literally.
    seed(&src, "kept*", 5);
    seed(&src, "kept_star", 5);
    // So is a dot, and case is kept.
    seed(&src, "Dropped.Three", 5);
    seed(&src, "dropped.three", 5);

    let run = host::backup(&[("location", &src.uri(""))]).await;
    let snap = run.committed();
    assert_eq!(run.order, ["/", "/manifest.json", "/all.sql"]);
    assert_eq!(snap.paths(), ["/all.sql", "/manifest.json"]);
    let all = text(&snap, "/all.sql");
    for db in [
        "kept_db",
        "dropped_one",
        "dropped two",
        "kept*",
        "kept_star",
    ] {
        assert!(
            enters(&all, db),
            "{db} missing: {:#?}",
            database_lines(&all)
        );
    }

    let run = host::backup(&[
        ("location", &src.uri("")),
        (
            "exclude_databases",
            "dropped_one, dropped two,kept*,Dropped.Three,no_such_db",
        ),
    ])
    .await;
    let snap = run.committed();
    assert_eq!(run.order, ["/", "/manifest.json", "/all.sql"]);
    let all = text(&snap, "/all.sql");
    let lines = database_lines(&all);
    assert!(!all.contains("dropped_one"), "{lines:#?}");
    assert!(!all.contains("dropped two"), "{lines:#?}");
    for db in ["kept_db", "kept_star", "dropped.three", "postgres"] {
        assert!(enters(&all, db), "{db} missing: {lines:#?}");
    }
    for db in ["kept_db", "kept_star"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("CREATE DATABASE {db} "))),
            "{lines:#?}"
        );
    }
    for db in ["dropped_one", "dropped two", "kept*", "Dropped.Three"] {
        assert!(!enters(&all, db), "{db} dumped: {lines:#?}");
    }
    assert!(
        run.stderr
            .contains("there is no database \"no_such_db\" to leave out"),
        "{}",
        run.stderr
    );
    // The manifest describes only what was dumped.
    let manifest = snap.manifest();
    let described: Vec<&str> = manifest["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(described.contains(&"kept_db") && described.contains(&"kept_star"));
    assert!(!described.contains(&"dropped_one") && !described.contains(&"kept*"));
    assert_eq!(manifest["backup"]["layout"], "cluster");

    // The script puts the kept databases back, row for row.
    let dst = Cluster::start();
    restore_ok(&borrow(&destination(&dst, &[])), &snap).await;
    assert_eq!(items(&dst, "kept_db"), items(&src, "kept_db"));
    assert_eq!(items(&dst, "kept_star"), items(&src, "kept_star"));
    let restored = databases(&dst);
    assert!(
        !restored.contains(&"dropped_one".to_string()),
        "{restored:?}"
    );
    assert!(!restored.contains(&"kept*".to_string()), "{restored:?}");
}

// 3. One dump per database --------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn split_databases_gives_globals_and_one_dump_per_connectable_database() {
    let src = Cluster::start();
    seed(&src, "one", 30);
    seed(&src, "two", 40);
    seed(&src, "gone", 5);
    src.sql("postgres", "CREATE DATABASE closed");
    src.sql("postgres", "ALTER DATABASE closed ALLOW_CONNECTIONS false");

    for jobs in ["2", "1"] {
        let run = host::backup(&[
            ("location", &src.uri("")),
            ("split_databases", "true"),
            ("exclude_databases", "gone"),
            ("jobs", jobs),
        ])
        .await;
        let snap = run.committed();
        assert_eq!(
            run.order,
            [
                "/",
                "/manifest.json",
                "/globals.sql",
                "/one.dump",
                "/postgres.dump",
                "/template1.dump",
                "/two.dump"
            ],
            "jobs={jobs}"
        );
        for (path, bytes) in &snap.files {
            if path.ends_with(".dump") {
                assert!(bytes.starts_with(b"PGDMP"), "{path}");
            }
        }
        assert!(text(&snap, "/globals.sql").contains("CREATE ROLE postgres;"));
        let manifest = snap.manifest();
        assert_eq!(manifest["backup"]["layout"], "split");
        assert_eq!(
            manifest["backup"]["options"]["exclude_databases"][0],
            "gone"
        );

        // Each dump restores into the database of its name.
        let dst = Cluster::start();
        dst.sql("postgres", "CREATE DATABASE one");
        dst.sql("postgres", "CREATE DATABASE two");
        restore_ok(&borrow(&destination(&dst, &[])), &snap).await;
        assert_eq!(items(&dst, "one"), items(&src, "one"));
        assert_eq!(items(&dst, "two"), items(&src, "two"));
        assert_eq!(items(&dst, "two").len(), 40);
    }

    // Without exclusions every connectable database is there, never template0.
    let run = host::backup(&[("location", &src.uri("")), ("split_databases", "true")]).await;
    let snap = run.committed();
    assert_eq!(
        snap.paths(),
        [
            "/globals.sql",
            "/gone.dump",
            "/manifest.json",
            "/one.dump",
            "/postgres.dump",
            "/template1.dump",
            "/two.dump"
        ]
    );
}

// 4. Options ----------------------------------------------------------------------

const MARKER: &str = "needle-row-text-0123456789";

fn seed_with_marker(cluster: &Cluster) {
    seed(cluster, "app", 3000);
    cluster.sql(
        "app",
        &format!("UPDATE items SET name = '{MARKER}' WHERE id = 1234"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dumps_are_uncompressed_unless_compress_is_true() {
    let src = Cluster::start();
    seed_with_marker(&src);

    let plain = host::snapshot_of(&[("location", &src.uri("app"))]).await;
    let plain_dump = &plain.files["/app.dump"];
    assert!(contains(plain_dump, MARKER.as_bytes()));
    assert_eq!(plain.manifest()["backup"]["options"]["compress"], false);
    let explicit = host::snapshot_of(&[("location", &src.uri("app")), ("compress", "false")]).await;
    assert!(contains(&explicit.files["/app.dump"], MARKER.as_bytes()));

    let packed = host::snapshot_of(&[("location", &src.uri("app")), ("compress", "true")]).await;
    let packed_dump = &packed.files["/app.dump"];
    assert!(packed_dump.starts_with(b"PGDMP"));
    assert!(!contains(packed_dump, MARKER.as_bytes()));
    assert!(
        packed_dump.len() * 2 < plain_dump.len(),
        "compressed {} bytes, plain {}",
        packed_dump.len(),
        plain_dump.len()
    );
    assert_eq!(packed.manifest()["backup"]["options"]["compress"], true);

    // Both restore row for row.
    for snap in [&plain, &packed] {
        let dst = Cluster::start();
        dst.sql("postgres", "CREATE DATABASE app");
        restore_ok(&borrow(&destination(&dst, &[])), snap).await;
        assert_eq!(items(&dst, "app"), items(&src, "app"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_only_and_data_only_split_the_dump_in_two() {
    let src = Cluster::start();
    seed_with_marker(&src);

    let schema = host::snapshot_of(&[("location", &src.uri("app")), ("schema_only", "true")]).await;
    assert!(!contains(&schema.files["/app.dump"], MARKER.as_bytes()));
    assert!(contains(
        &schema.files["/app.dump"],
        b"CREATE TABLE public.items"
    ));
    let data = host::snapshot_of(&[("location", &src.uri("app")), ("data_only", "true")]).await;
    assert!(contains(&data.files["/app.dump"], MARKER.as_bytes()));
    assert!(!contains(&data.files["/app.dump"], b"CREATE TABLE"));

    // The schema alone gives an empty table.
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    restore_ok(&borrow(&destination(&dst, &[])), &schema).await;
    assert_eq!(dst.sql("app", "SELECT count(*) FROM items"), "0");
    assert_eq!(
        dst.rows(
            "app",
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position"
        ),
        ["id", "name", "price", "tags", "doc", "raw", "at"]
    );
    // The data then fills it, row for row.
    restore_ok(&borrow(&destination(&dst, &[])), &data).await;
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        dst.sql(
            "app",
            &format!("SELECT id FROM items WHERE name = '{MARKER}'")
        ),
        "1234"
    );

    // The data alone cannot make the table.
    let bare = Cluster::start();
    bare.sql("postgres", "CREATE DATABASE app");
    let run = host::restore(&borrow(&destination(&bare, &[])), &data).await;
    assert!(
        run.error.is_some() || run.results.iter().any(|(_, e)| !e.is_empty()),
        "a data-only dump restored into an empty database: {:?}",
        run.results
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_options_override_the_uri() {
    let src = Cluster::start();
    seed(&src, "app", 50);
    let port = src.port.to_string();

    // Every part of the URI is wrong; the options put each right.
    let run = host::backup(&[
        (
            "location",
            "postgres://nobody:wrong-pass@nonexistent.invalid:1/app",
        ),
        ("host", "127.0.0.1"),
        ("port", &port),
        ("username", "postgres"),
        ("password", PASSWORD),
    ])
    .await;
    let snap = run.committed();
    assert_eq!(
        run.order,
        ["/", "/manifest.json", "/globals.sql", "/app.dump"]
    );
    let server = &snap.manifest()["server"];
    assert_eq!(server["host"], "127.0.0.1");
    assert_eq!(server["port"], src.port);
    assert!(!run.stderr.contains("wrong-pass") && !run.stderr.contains(PASSWORD));

    // Only the port is wrong in the URI.
    let wrong_port = src.uri("app").replace(&format!(":{}/", src.port), ":1/");
    assert_ne!(wrong_port, src.uri("app"));
    let run = host::backup(&[("location", &wrong_port), ("port", &port)]).await;
    run.committed();
    let err = host::backup(&[("location", &wrong_port)]).await.failure();
    assert!(
        err.contains("cannot connect to PostgreSQL at 127.0.0.1:1"),
        "{err}"
    );

    // The password only as an option: the tools get it too (pg_dump would fail without).
    let run = host::backup(&[
        ("location", &src.uri_without_password("postgres", "app")),
        ("password", PASSWORD),
    ])
    .await;
    let snap = run.committed();
    assert!(!run.stderr.contains(PASSWORD));
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    restore_ok(&borrow(&destination(&dst, &[])), &snap).await;
    assert_eq!(items(&dst, "app"), items(&src, "app"));

    // Without any password it fails with the server's words.
    let err = host::backup(&[("location", &src.uri_without_password("postgres", "app"))])
        .await
        .failure();
    assert!(
        err.contains("password") && err.contains("postgres"),
        "{err}"
    );
}

// 5. Validation ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn every_invalid_configuration_is_refused_before_anything_runs() {
    let src = Cluster::start();
    seed(&src, "app", 5);
    let db = src.uri("app");
    let all = src.uri("");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("location", &db), ("colour", "red")],
            "postgresql source: unknown option `colour`; the source accepts: location, host, port, username, password, database, pg_bin_dir, ssl_mode, ssl_cert, ssl_key, ssl_root_cert, ssl_cert_data, ssl_key_data, ssl_root_cert_data, connect_timeout, compress, schema_only, data_only, split_databases, exclude_databases, jobs, statistics",
        ),
        (
            vec![("location", &db), ("compress", "maybe")],
            "postgresql source: option `compress` has the invalid value \"maybe\"; accepted: true or false",
        ),
        (
            vec![("location", &db), ("port", "99999")],
            "postgresql source: option `port` has the invalid value \"99999\"; accepted: a whole number from 1 to 65535",
        ),
        (
            vec![("location", &db), ("ssl_mode", "sometimes")],
            "postgresql source: option `ssl_mode` has the invalid value \"sometimes\"; accepted: one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            vec![("location", &all), ("jobs", "0")],
            "postgresql source: option `jobs` has the invalid value \"0\"; accepted: a whole number from 1 to 64",
        ),
        (
            vec![("location", &db), ("schema_only", "true"), ("data_only", "yes")],
            "postgresql source: options `schema_only` and `data_only` cannot both be true; set at most one of them",
        ),
        (
            vec![("location", &db), ("split_databases", "true")],
            "postgresql source: option `split_databases` applies to whole-cluster backups, but database \"app\" is named; remove `split_databases`, or name no database in `location` and `database`",
        ),
        (
            vec![("location", &all), ("database", "app"), ("split_databases", "true")],
            "postgresql source: option `split_databases` applies to whole-cluster backups, but database \"app\" is named; remove `split_databases`, or name no database in `location` and `database`",
        ),
        (
            vec![("location", &db), ("exclude_databases", "x")],
            "postgresql source: option `exclude_databases` applies to whole-cluster backups, but database \"app\" is named; remove `exclude_databases`, or name no database in `location` and `database`",
        ),
        (
            vec![("database", "app"), ("port", "5432")],
            "postgresql source: option `location` is required: a URI such as postgres://user@host:5432/dbname",
        ),
        (
            vec![("location", "mysql://root@127.0.0.1/app")],
            "postgresql source: option `location` is not a valid PostgreSQL URI (the scheme is \"mysql\"); expected postgres://[user[:password]@]host[:port][/database]",
        ),
    ];
    for (config, expected) in cases {
        let run = host::backup(&config).await;
        let err = run.failure();
        assert_eq!(err, expected, "config {config:?}");
        assert!(run.order.is_empty(), "{config:?} announced {:?}", run.order);
        assert!(
            !run.stderr.contains("started") && !run.stderr.contains("pg_dump"),
            "{config:?} ran something:\n{}",
            run.stderr
        );
        assert!(!err.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    }
    // Nothing connected to the server either.
    assert_eq!(
        src.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'plakar-postgresql'"
        ),
        "0"
    );
}

// 6. Database names with any character ------------------------------------------------

const ODD_NAMES: &[(&str, &str)] = &[
    ("my app", "/my app.dump"),
    ("a-b=c", "/a-b=c.dump"),
    ("it's \"q\"", "/it's \"q\".dump"),
    ("a/b", "/a%2Fb.dump"),
    ("-leading", "/-leading.dump"),
    ("café", "/café.dump"),
    ("50%", "/50%25.dump"),
    ("back\\slash", "/back%5Cslash.dump"),
    ("12345-x", "/%312345-x.dump"),
];

/// Creates a database of that name with a table whose rows say which database they are in.
fn seed_named(cluster: &Cluster, name: &str, n: u32) {
    seed(cluster, name, n);
    let lit = name.replace('\'', "''");
    cluster.sql(
        name,
        &format!("UPDATE items SET name = name || ' in {lit}'"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_with_any_name_are_backed_up_and_restored_under_that_name() {
    let src = Cluster::start();
    for (i, (name, _)) in ODD_NAMES.iter().enumerate() {
        seed_named(&src, name, 10 + i as u32);
    }

    let dst = Cluster::start();
    for (i, (name, path)) in ODD_NAMES.iter().enumerate() {
        // Half by the URI's (percent-encoded) path, half by the `database` option.
        let location = src.uri(if i % 2 == 0 { name } else { "" });
        let mut config = vec![("location", location.as_str())];
        if i % 2 == 1 {
            config.push(("database", name));
        }
        let run = host::backup(&config).await;
        let snap = run.committed();
        assert_eq!(
            run.order,
            ["/", "/manifest.json", "/globals.sql", path],
            "{name:?}"
        );
        assert_eq!(path.matches('/').count(), 1, "{path}");
        assert_eq!(names::classify(path), Ok(Entry::Database(name.to_string())));
        assert_eq!(snap.manifest()["backup"]["database"], *name);
        assert_eq!(snap.manifest()["databases"][0]["name"], *name);

        // Restored with no database named: the name comes from the record.
        let config = destination(&dst, &[("create_db", "true")]);
        restore_ok(&borrow(&config), &only(&snap, &[path])).await;
        assert!(databases(&dst).contains(&name.to_string()), "{name:?}");
        assert_eq!(items(&dst, name), items(&src, name), "{name:?}");
        assert_eq!(items(&dst, name).len(), 10 + i);
    }

    // The same names in one split backup.
    let run = host::backup(&[("location", &src.uri("")), ("split_databases", "true")]).await;
    let snap = run.committed();
    for (_, path) in ODD_NAMES {
        assert!(
            run.order.contains(&path.to_string()),
            "{path} not in {:?}",
            run.order
        );
        assert!(snap.files[*path].starts_with(b"PGDMP"), "{path}");
    }
    for path in &run.order[1..] {
        assert_eq!(path.matches('/').count(), 1, "{path}");
        assert!(names::classify(path).is_ok(), "{path}");
    }
    let dst = Cluster::start();
    let paths: Vec<&str> = ODD_NAMES.iter().map(|(_, p)| *p).collect();
    let config = destination(&dst, &[("create_db", "true")]);
    restore_ok(&borrow(&config), &only(&snap, &paths)).await;
    for (name, _) in ODD_NAMES {
        assert_eq!(items(&dst, name), items(&src, name), "{name:?}");
    }
    // And into databases created beforehand, without create_db.
    let pre = Cluster::start();
    for (name, _) in ODD_NAMES {
        pre.sql("postgres", &format!("CREATE DATABASE {}", ident(name)));
    }
    restore_ok(&borrow(&destination(&pre, &[])), &only(&snap, &paths)).await;
    for (name, _) in ODD_NAMES {
        assert_eq!(items(&pre, name), items(&src, name), "{name:?}");
    }
}

// 7. A role that cannot read pg_authid ----------------------------------------------

/// Backs up `app` as another role, with its password given as an option.
async fn backup_as(src: &Cluster, role: &str, password: &str) -> BackupRun {
    host::backup(&[
        ("location", &src.uri_without_password(role, "app")),
        ("password", password),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_without_pg_authid_access_backs_up_without_password_hashes() {
    let src = Cluster::start();
    seed(&src, "app", 60);
    // A role that may read the database's tables, and no catalogue beyond what
    // everyone may: pg_authid is out of its reach, as on managed services.
    src.sql(
        "postgres",
        "CREATE ROLE reader LOGIN PASSWORD 'reader-secret'",
    );
    src.sql(
        "postgres",
        "CREATE ROLE app_user LOGIN PASSWORD 'user-secret'",
    );
    src.sql(
        "app",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader",
    );

    let run = backup_as(&src, "reader", "reader-secret").await;
    let snap = run.committed();
    assert_eq!(
        run.order,
        ["/", "/manifest.json", "/globals.sql", "/app.dump"]
    );
    let globals = text(&snap, "/globals.sql");
    assert!(globals.contains("CREATE ROLE app_user;"), "{globals}");
    assert!(globals.contains("CREATE ROLE reader;"), "{globals}");
    assert!(!globals.contains("SCRAM-SHA-256$"), "{globals}");
    assert!(!globals.contains("PASSWORD"), "{globals}");
    assert!(
        run.stderr.contains(
            "user \"reader\" cannot read pg_authid: roles are dumped with --no-role-passwords, so restored roles will have no password"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(snap.manifest()["backup"]["no_role_passwords"], true);
    for (path, bytes) in &snap.files {
        assert!(!contains(bytes, b"reader-secret"), "{path}");
        assert!(!contains(bytes, b"user-secret"), "{path}");
    }
    assert!(!run.stderr.contains("reader-secret"));

    // The dump is complete all the same, and the roles come back without passwords.
    let dst = restored_with_globals(&src, &snap).await;
    assert_eq!(
        dst.rows(
            "postgres",
            "SELECT rolname || ' ' || (rolpassword IS NULL) FROM pg_authid WHERE rolname IN ('app_user', 'reader') ORDER BY 1"
        ),
        ["app_user true", "reader true"]
    );

    // pg_read_all_data may read every table, pg_authid included: such a role
    // backs up any database, and its globals keep the hashes, as a superuser's.
    src.sql(
        "postgres",
        "CREATE ROLE all_reader LOGIN PASSWORD 'all-secret' IN ROLE pg_read_all_data",
    );
    for (role, password) in [("all_reader", "all-secret"), ("postgres", PASSWORD)] {
        let run = backup_as(&src, role, password).await;
        let snap = run.committed();
        assert!(
            text(&snap, "/globals.sql").contains("SCRAM-SHA-256$"),
            "{role}"
        );
        assert!(
            !run.stderr.contains("cannot read pg_authid"),
            "{}",
            run.stderr
        );
        assert_eq!(snap.manifest()["backup"]["no_role_passwords"], false);
        let dst = restored_with_globals(&src, &snap).await;
        assert_eq!(
            dst.sql(
                "postgres",
                "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'app_user'"
            ),
            "t"
        );
    }
}

// 8. A dump that dies half-way ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_killed_half_way_fails_the_backup_and_commits_nothing() {
    let src = Cluster::start();
    seed(&src, "big db", 10);
    // Enough rows that the COPY lasts long enough to be caught.
    let started = Instant::now();
    src.sql(
        "big db",
        "CREATE UNLOGGED TABLE filler (id int, pad text);
         INSERT INTO filler SELECT i, repeat(md5(i::text), 56) FROM generate_series(1, 120000) i",
    );
    eprintln!("filler table made in {:?}", started.elapsed());

    // Ends the dump's COPY as soon as it is seen.
    let mut terminate = src.psql_command(
        SUPERUSER,
        PASSWORD,
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'plakar-postgresql' AND query ILIKE 'COPY%'",
    );
    let killer = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(30), "the dump's COPY", || {
            let out = terminate.output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "t")
        })
    });
    // At debug level the plugin logs every line pg_dump writes, for a failing run's report.
    let debug = [(
        "PLAKAR_POSTGRESQL_LOG",
        "debug,h2=info,hyper=info,tonic=info,tower=info",
    )];
    let run = host::backup_with_env(&[("location", &src.uri("big db"))], &debug).await;
    killer.await.expect("the COPY was seen and ended");
    let err = run.failure();
    eprintln!("backup error: {err}");
    assert!(err.contains("database \"big db\""), "{err}");
    assert!(err.contains("/big db.dump"), "{err}");
    assert!(err.contains("pg_dump exited with status 1"), "{err}");
    // pg_dump's own error and the reason it got: the server's FATAL message,
    // or only the dropped connection when the backend was killed mid-send.
    assert!(
        err.contains("pg_dump: error: Dumping the contents of table \"filler\" failed"),
        "{err}"
    );
    assert!(
        err.contains("pg_dump: detail: Error message from server: ")
            && (err.contains("terminating connection due to administrator command")
                || err.contains("server closed the connection unexpectedly")),
        "{err}"
    );
    assert!(err.contains("not committed"), "{err}");
    assert!(
        run.stderr.contains("backup /big db.dump: failed"),
        "{}",
        run.stderr
    );
    // The plugin left no session behind (closing ones may take a moment to go).
    wait_until(
        Duration::from_secs(5),
        "the plugin's sessions to end",
        || {
            src.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'plakar-postgresql'",
        ) == "0"
        },
    );
}

// 9. The manifest ------------------------------------------------------------------------

/// Every key of a JSON value, at any depth.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_describes_the_source_cluster_without_secrets() {
    let src = Cluster::start_with(ClusterOptions {
        config: vec![
            "archive_mode = on".into(),
            "archive_command = '/bin/true archive-secret-token'".into(),
        ],
        ..ClusterOptions::default()
    });
    seed(&src, "app", 321);
    src.sql(
        "postgres",
        "CREATE ROLE readers NOLOGIN;
         CREATE ROLE app_owner LOGIN PASSWORD 'owner-secret' CONNECTION LIMIT 7 IN ROLE readers",
    );
    src.sql("app", "ANALYZE items");

    let run = host::backup(&[("location", &src.uri("app"))]).await;
    let snap = run.committed();
    let raw = text(&snap, "/manifest.json");
    let m = snap.manifest();

    assert_eq!(m["format_version"], 1);
    assert_eq!(m["plugin"]["name"], "postgresql");
    assert_eq!(m["plugin"]["version"], env!("CARGO_PKG_VERSION"));
    let version_num: i64 = src
        .sql("postgres", "SHOW server_version_num")
        .parse()
        .unwrap();
    assert_eq!(m["server"]["version_num"], version_num);
    assert_eq!(
        m["server"]["version"],
        src.sql("postgres", "SHOW server_version")
    );
    assert_eq!(m["server"]["in_recovery"], false);
    assert_eq!(
        m["server"]["system_identifier"],
        src.sql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()"
        )
    );
    assert!(m["pg_dump_version"]
        .as_str()
        .unwrap()
        .starts_with("pg_dump (PostgreSQL) "));
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));

    let backup = &m["backup"];
    assert_eq!(backup["layout"], "database");
    assert_eq!(backup["database"], "app");
    assert_eq!(
        backup["files"],
        serde_json::json!(["/manifest.json", "/globals.sql", "/app.dump"])
    );
    assert_eq!(backup["options"]["schema_only"], false);
    assert_eq!(backup["options"]["ssl_mode"], "prefer");

    let config = m["cluster_config"].as_object().unwrap();
    for key in [
        "data_directory",
        "timezone",
        "max_connections",
        "wal_level",
        "server_encoding",
        "data_checksums",
        "block_size",
        "wal_block_size",
        "shared_preload_libraries",
        "lc_collate",
        "lc_ctype",
        "archive_mode",
    ] {
        assert!(
            config.contains_key(key),
            "cluster_config has no {key}: {config:?}"
        );
    }
    assert_eq!(config["timezone"], src.sql("postgres", "SHOW timezone"));
    assert_eq!(config["max_connections"], "50");
    assert_eq!(config["server_encoding"], "UTF8");
    assert_eq!(config["archive_mode"], "on");
    assert_eq!(config["archive_command_set"], Value::Bool(true));
    assert!(!config.contains_key("archive_command"));
    assert!(!raw.contains("archive-secret-token"), "{raw}");

    let roles = m["roles"].as_array().unwrap();
    let role = |name: &str| {
        roles
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no role {name} in {roles:?}"))
    };
    assert_eq!(role("postgres")["superuser"], true);
    assert_eq!(role("postgres")["can_login"], true);
    let owner = role("app_owner");
    assert_eq!(owner["member_of"], serde_json::json!(["readers"]));
    assert_eq!(owner["can_login"], true);
    assert_eq!(owner["superuser"], false);
    assert_eq!(owner["connection_limit"], 7);
    assert_eq!(role("readers")["can_login"], false);

    let mut all_keys = Vec::new();
    keys(&m, &mut all_keys);
    // Only the flag saying that passwords were left out of the globals.
    for k in all_keys.iter().filter(|k| *k != "no_role_passwords") {
        let k = k.to_ascii_lowercase();
        assert!(
            !k.contains("password") && !k.contains("hash") && !k.contains("secret"),
            "the manifest has a key {k:?}"
        );
    }
    assert!(!raw.contains("SCRAM-SHA-256"), "{raw}");
    assert!(!raw.contains("owner-secret"));

    let dbs = m["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1);
    let app = &dbs[0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["owner"], "postgres");
    assert_eq!(app["encoding"], "UTF8");
    assert!(app["size_bytes"].as_i64().unwrap() > 0);
    assert!(app["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "public"));
    let relations = app["relations"].as_array().unwrap();
    let table = relations
        .iter()
        .find(|r| r["name"] == "items")
        .unwrap_or_else(|| panic!("no items in {relations:?}"));
    assert_eq!(table["schema"], "public");
    assert_eq!(table["kind"], "table");
    assert_eq!(table["owner"], "postgres");
    let count: i64 = src
        .sql("app", "SELECT count(*) FROM items")
        .parse()
        .unwrap();
    assert_eq!(count, 321);
    assert_eq!(table["estimated_rows"], count);
    let columns: Vec<&str> = table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["id", "name", "price", "tags", "doc", "raw", "at"]);
    let id = &table["columns"][0];
    assert_eq!(id["type"], "integer");
    assert_eq!(id["not_null"], true);
    assert_eq!(table["columns"][2]["type"], "numeric(10,2)");
    let pk = table["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "primary_key")
        .unwrap_or_else(|| panic!("no primary key: {table}"));
    assert_eq!(pk["name"], "items_pkey");
    assert_eq!(pk["definition"], "PRIMARY KEY (id)");
    let index = table["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "items_pkey")
        .unwrap_or_else(|| panic!("no primary key index: {table}"));
    assert!(
        index["definition"]
            .as_str()
            .unwrap()
            .starts_with("CREATE UNIQUE INDEX items_pkey ON public.items"),
        "{index}"
    );

    // The cluster's password is nowhere: not in the manifest, the snapshot, or the logs.
    let encoded = common::cluster::encode(PASSWORD);
    for secret in [PASSWORD, encoded.as_str(), "owner-secret"] {
        for (path, bytes) in &snap.files {
            assert!(!contains(bytes, secret.as_bytes()), "{secret:?} in {path}");
        }
        assert!(!run.stderr.contains(secret), "{secret:?} in stderr");
    }
}

// 10. The user's environment --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_client_tools_ignore_the_users_environment() {
    let src = Cluster::start();
    seed(&src, "app", 70);
    let dir = tempfile::tempdir().unwrap();
    let service_file = dir.path().join("pg_service.conf");
    std::fs::write(&service_file, "[nope]\nhost=nonexistent.invalid\nport=1\n").unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(&passfile, "*:*:*:*:wrong\n").unwrap();
    let env = [
        ("PGDATABASE", "nonexistent"),
        ("PGOPTIONS", "-c default_transaction_read_only=x"),
        ("PGSERVICE", "nope"),
        ("PGSERVICEFILE", service_file.to_str().unwrap()),
        ("PGHOST", "nonexistent.invalid"),
        ("PGPORT", "1"),
        ("PGUSER", "nobody"),
        ("PGPASSWORD", "wrong"),
        ("PGPASSFILE", passfile.to_str().unwrap()),
        ("PGSSLMODE", "verify-full"),
        ("PGAPPNAME", "someone-else"),
        ("PGCLIENTENCODING", "LATIN1"),
    ];

    let run = host::backup_with_env(&[("location", &src.uri("app"))], &env).await;
    let snap = run.committed();
    assert_eq!(
        run.order,
        ["/", "/manifest.json", "/globals.sql", "/app.dump"]
    );
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    restore_ok(&borrow(&destination(&dst, &[])), &snap).await;
    assert_eq!(items(&dst, "app"), items(&src, "app"));

    // pg_dumpall, which connects to several databases, too.
    let run = host::backup_with_env(&[("location", &src.uri(""))], &env).await;
    let snap = run.committed();
    let all = text(&snap, "/all.sql");
    assert!(all.contains("\\connect app"), "{all}");
    // The script is UTF-8, whatever PGCLIENTENCODING says.
    assert!(all.contains("SET client_encoding = 'UTF8';"));
    assert!(all.contains("item 1 é"), "the rows are not UTF-8");

    let run = host::backup_with_env(
        &[("location", &src.uri("")), ("split_databases", "true")],
        &env,
    )
    .await;
    let snap = run.committed();
    assert!(snap.files.contains_key("/app.dump"));
}
