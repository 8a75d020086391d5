//! The restore destination end to end: real snapshots from real backups (or
//! built by hand from their bytes), restored by the real plugin binary into
//! throw-away clusters, and checked row for row against the source.

mod common;

use std::path::Path;

use common::host::{self, snapshot_of, RestoreRun, Snapshot};
use common::{databases, items, notes_read_by_owner, owned_source, seed, table_owner, Cluster};

/// Every row of a table, in key order, as text.
fn rows(cluster: &Cluster, db: &str, table: &str, key: &str) -> Vec<String> {
    cluster.rows(db, &format!("SELECT t::text FROM {table} t ORDER BY {key}"))
}

/// The tables of a database as `schema.table`, sorted.
fn tables(cluster: &Cluster, db: &str) -> Vec<String> {
    cluster.rows(
        db,
        "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
}

/// Panics unless the file's result is an error holding every word, and the
/// restore as a whole ended with an error that names the file (so that
/// `plakar restore` exits non-zero).
fn assert_error(run: &RestoreRun, path: &str, words: &[&str]) {
    let err = run.error_of(path);
    assert!(
        !err.is_empty(),
        "{path} was restored without error\n{}",
        run.stderr
    );
    for w in words {
        assert!(err.contains(w), "{path}: {w:?} missing from: {err}");
    }
    let call = run
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("{path} failed, yet the restore ended without an error: {err}"));
    assert!(
        call.contains(path),
        "{path} missing from the restore's error: {call}"
    );
}

/// Panics unless these files' results are all successes.
fn assert_ok_files(run: &RestoreRun, paths: &[&str]) {
    for p in paths {
        assert_eq!(run.error_of(p), "", "{p}\n{}", run.stderr);
    }
}

/// The plugin's temporary files left in a directory.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("plakar-postgresql-"))
        .collect()
}

// 1. One database: into an existing one, a new one, or a missing one.

#[tokio::test(flavor = "multi_thread")]
async fn a_database_restores_into_an_existing_or_new_database() {
    let src = Cluster::start();
    seed(&src, "app", 400);
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;

    let dst = Cluster::start();
    // Into an existing database of another name: `location` names the target.
    dst.sql("postgres", "CREATE DATABASE copy");
    let run = host::restore(&[("location", &dst.uri("copy"))], &snapshot).await;
    run.assert_ok();
    assert_eq!(items(&dst, "copy"), items(&src, "app"));
    assert!(!databases(&dst).contains(&"app".to_string()));

    // Into a new database, created from the dump's own metadata.
    let run = host::restore(
        &[("location", &dst.uri("")), ("create_db", "true")],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(items(&dst, "app"), items(&src, "app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_target_database_fails_at_once_and_names_create_db() {
    let src = Cluster::start();
    seed(&src, "app", 10);
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;

    let dst = Cluster::start();
    let started = std::time::Instant::now();
    let run = host::restore(&[("location", &dst.uri("app"))], &snapshot).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_error(
        &run,
        "/app.dump",
        &["/app.dump", "\"app\"", "does not exist", "create_db=true"],
    );
    // The other files are fine: the globals are merely skipped.
    assert_ok_files(&run, &["/", "/manifest.json", "/globals.sql"]);
    assert!(databases(&dst).is_empty());
}

// 2. Roles that exist only in the globals.

#[tokio::test(flavor = "multi_thread")]
async fn restore_globals_creates_the_owner_before_the_dump_that_sorts_first() {
    let src = owned_source();
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;
    // The dump comes before the roles it needs.
    assert_eq!(
        snapshot.paths(),
        ["/app.dump", "/globals.sql", "/manifest.json"]
    );

    let dst = Cluster::start();
    let run = host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("restore_globals", "true"),
        ],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
    assert_eq!(table_owner(&dst, "app", "notes"), "app_owner");
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "notes", "id"),
        rows(&src, "app", "notes", "id")
    );
    assert_eq!(
        dst.sql(
            "postgres",
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_owner'"
        ),
        "t"
    );
    // Every file was answered once, the held dump included.
    let mut answered: Vec<&str> = run.results.iter().map(|(p, _)| p.as_str()).collect();
    answered.sort();
    assert_eq!(
        answered,
        ["/", "/app.dump", "/globals.sql", "/manifest.json"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_globals_accepts_roles_that_already_exist() {
    let src = owned_source();
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;

    // The target has the role already (a second restore, or a shared cluster).
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE ROLE app_owner NOLOGIN");
    for exit_on_error in ["false", "true"] {
        dst.sql("postgres", "DROP DATABASE IF EXISTS app");
        let run = host::restore(
            &[
                ("location", &dst.uri("")),
                ("create_db", "true"),
                ("restore_globals", "true"),
                ("exit_on_error", exit_on_error),
            ],
            &snapshot,
        )
        .await;
        run.assert_ok();
        assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
        assert_eq!(items(&dst, "app"), items(&src, "app"));
        // The role's attributes and password come from the globals all the same.
        assert_eq!(notes_read_by_owner(&dst), "50");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_roles_name_restore_globals_or_no_owner() {
    let src = owned_source();
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;

    let dst = Cluster::start();
    let run = host::restore(
        &[("location", &dst.uri("")), ("create_db", "true")],
        &snapshot,
    )
    .await;
    assert_error(
        &run,
        "/app.dump",
        &["app_owner", "restore_globals=true", "no_owner=true"],
    );

    let dst = Cluster::start();
    let run = host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("no_owner", "true"),
        ],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(table_owner(&dst, "app", "items"), "postgres");
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "notes", "id"),
        rows(&src, "app", "notes", "id")
    );
}

// 3. A whole cluster in one script.

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_cluster_script_brings_back_every_database_role_and_row() {
    let src = owned_source();
    seed(&src, "shop", 120);
    src.sql(
        "postgres",
        "CREATE ROLE reader NOLOGIN; GRANT app_owner TO reader;",
    );
    let snapshot = snapshot_of(&[("location", &src.uri(""))]).await;
    assert!(
        snapshot.files.contains_key("/all.sql"),
        "{:?}",
        snapshot.paths()
    );

    let dst = Cluster::start();
    let run = host::restore(&[("location", &dst.uri(""))], &snapshot).await;
    run.assert_ok();
    assert_eq!(databases(&dst), ["app", "shop"]);
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "notes", "id"),
        rows(&src, "app", "notes", "id")
    );
    assert_eq!(items(&dst, "shop"), items(&src, "shop"));
    let roles =
        "SELECT rolname || ' ' || rolcanlogin FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1";
    assert_eq!(dst.rows("postgres", roles), src.rows("postgres", roles));
    assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
    // The role's password came along: it can log in.
    assert_eq!(notes_read_by_owner(&dst), "50");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_cluster_script_refuses_options_it_cannot_honour() {
    let src = Cluster::start();
    seed(&src, "app", 20);
    let snapshot = snapshot_of(&[("location", &src.uri(""))]).await;

    let dst = Cluster::start();
    for (key, value) in [
        ("schema_only", "true"),
        ("no_owner", "true"),
        ("schemas", "public"),
        ("tables", "items"),
    ] {
        let run = host::restore(&[("location", &dst.uri("")), (key, value)], &snapshot).await;
        assert_error(&run, "/all.sql", &["/all.sql", key, "split_databases=true"]);
        assert!(databases(&dst).is_empty(), "{key}: something was restored");
    }
}

// 4. A split snapshot, restored in part.

/// A cluster with three databases; `app` has a second schema.
fn split_source() -> Cluster {
    let src = Cluster::start();
    seed(&src, "app", 200);
    seed(&src, "shop", 80);
    seed(&src, "other", 30);
    src.sql(
        "app",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders (id int PRIMARY KEY, item int, qty int);
         INSERT INTO sales.orders SELECT i, i % 50, i % 7 FROM generate_series(1, 90) i;
         CREATE TABLE public.extra (k text PRIMARY KEY);
         INSERT INTO public.extra VALUES ('a'), ('b');",
    );
    src
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_snapshot_restores_only_the_listed_databases() {
    let src = split_source();
    let snapshot = snapshot_of(&[("location", &src.uri("")), ("split_databases", "true")]).await;
    for p in ["/app.dump", "/shop.dump", "/other.dump", "/globals.sql"] {
        assert!(
            snapshot.files.contains_key(p),
            "{p}: {:?}",
            snapshot.paths()
        );
    }

    let dst = Cluster::start();
    let run = host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("databases", "app,shop"),
        ],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(databases(&dst), ["app", "shop"]);
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "sales.orders", "id"),
        rows(&src, "app", "sales.orders", "id")
    );
    assert_eq!(items(&dst, "shop"), items(&src, "shop"));
    assert!(
        run.stderr
            .contains("\"other\" is not in the `databases` option"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_snapshot_restores_only_the_listed_schemas_and_tables() {
    let src = split_source();
    let snapshot = snapshot_of(&[("location", &src.uri("")), ("split_databases", "true")]).await;

    // schemas=: pg_restore -n creates no schema, so into a new database the
    // error says what to do ...
    let dst = Cluster::start();
    let run = host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("databases", "app"),
            ("schemas", "sales"),
        ],
        &snapshot,
    )
    .await;
    assert_error(
        &run,
        "/app.dump",
        &[
            "schema \"sales\" does not exist",
            "`schemas`",
            "create them",
        ],
    );

    // ... and into a database that has the schema, only that schema's objects come back.
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    dst.sql("app", "CREATE SCHEMA sales");
    let run = host::restore(
        &[
            ("location", &dst.uri("app")),
            ("databases", "app"),
            ("schemas", "sales"),
        ],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(databases(&dst), ["app"]);
    assert_eq!(tables(&dst, "app"), ["sales.orders"]);
    assert_eq!(
        rows(&dst, "app", "sales.orders", "id"),
        rows(&src, "app", "sales.orders", "id")
    );

    // tables=: only public.items and public.extra, into an existing database.
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    let run = host::restore(
        &[
            ("location", &dst.uri("app")),
            ("databases", "app"),
            ("tables", "items,extra"),
        ],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(tables(&dst, "app"), ["public.extra", "public.items"]);
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "extra", "k"),
        rows(&src, "app", "extra", "k")
    );
    assert_eq!(databases(&dst), ["app"]);

    // A qualified name: only sales.orders.
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    dst.sql("app", "CREATE SCHEMA sales");
    let run = host::restore(
        &[
            ("location", &dst.uri("app")),
            ("databases", "app"),
            ("tables", "sales.orders"),
        ],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(tables(&dst, "app"), ["sales.orders"]);
    assert_eq!(
        rows(&dst, "app", "sales.orders", "id"),
        rows(&src, "app", "sales.orders", "id")
    );
}

// 5. clean=true over a changed database.

#[tokio::test(flavor = "multi_thread")]
async fn clean_gives_back_exactly_the_source_rows() {
    let src = Cluster::start();
    seed(&src, "app", 300);
    src.sql(
        "app",
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 40) i;",
    );
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;

    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    host::restore(&[("location", &dst.uri("app"))], &snapshot)
        .await
        .assert_ok();
    dst.sql(
        "app",
        "DELETE FROM items WHERE id % 3 = 0;
         UPDATE items SET name = 'changed', price = 0 WHERE id % 5 = 0;
         INSERT INTO items (id, name) SELECT i, 'extra' FROM generate_series(1001, 1100) i;
         DELETE FROM notes WHERE id > 20;
         INSERT INTO notes VALUES (999, 'extra');",
    );
    assert_ne!(items(&dst, "app"), items(&src, "app"));

    let run = host::restore(
        &[("location", &dst.uri("app")), ("clean", "true")],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "notes", "id"),
        rows(&src, "app", "notes", "id")
    );
}

// 6. Parallel restores from a temporary copy.

/// A database `app` with two tables, an extra index and a large object, and
/// its snapshot.
async fn parallel_source() -> (Cluster, Snapshot) {
    let src = Cluster::start();
    seed(&src, "app", 3000);
    src.sql(
        "app",
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, repeat('n', i % 100) FROM generate_series(1, 2000) i;
         CREATE INDEX ON items (name);
         SELECT lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));",
    );
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;
    (src, snapshot)
}

/// Panics unless `dst`'s `app` holds what `src`'s does.
fn assert_same_app(src: &Cluster, dst: &Cluster) {
    assert_eq!(items(dst, "app"), items(src, "app"));
    assert_eq!(
        rows(dst, "app", "notes", "id"),
        rows(src, "app", "notes", "id")
    );
    assert_eq!(
        dst.sql(
            "app",
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'items'"
        ),
        "2"
    );
    assert_eq!(
        dst.sql("app", "SELECT count(*) FROM pg_largeobject_metadata"),
        "1"
    );
}

/// The command line of the first pg_restore the plugin started.
fn pg_restore_line(run: &RestoreRun) -> &str {
    run.stderr
        .lines()
        .find(|l| l.contains("started pg_restore"))
        .unwrap_or_else(|| panic!("{}", run.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_gets_the_data_offsets_and_is_restored_in_parallel_then_removed() {
    let (src, snapshot) = parallel_source().await;
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    let tmp = tempfile::tempdir().unwrap();
    // With restore_globals the dump, which sorts before /globals.sql, waits
    // in a copy whatever the machine; jobs then restores it in parallel.
    let run = host::restore_with_env(
        &[
            ("location", &dst.uri("app")),
            ("jobs", "2"),
            ("restore_globals", "true"),
        ],
        &snapshot,
        &[
            ("TMPDIR", tmp.path().to_str().unwrap()),
            ("PLAKAR_POSTGRESQL_LOG", "debug"),
        ],
    )
    .await;
    run.assert_ok();
    // pg_restore read a copy in TMPDIR, in parallel.
    let started = pg_restore_line(&run);
    assert!(started.contains("--jobs=2"), "{started}");
    assert!(
        started.contains(&format!("{}/plakar-postgresql-", tmp.path().display())),
        "{started}"
    );
    // The copy recorded where the data of items, notes and the large object is.
    assert!(
        run.stderr
            .contains("/app.dump: temporary copy written, with the data offsets of 3 entries"),
        "{}",
        run.stderr
    );
    assert_same_app(&src, &dst);
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_copy_a_dump_only_where_a_parallel_restore_can_win() {
    let (src, snapshot) = parallel_source().await;
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    let tmp = tempfile::tempdir().unwrap();
    let run = host::restore_with_env(
        &[("location", &dst.uri("app")), ("jobs", "2")],
        &snapshot,
        &[
            ("TMPDIR", tmp.path().to_str().unwrap()),
            ("PLAKAR_POSTGRESQL_LOG", "debug"),
        ],
    )
    .await;
    run.assert_ok();
    let started = pg_restore_line(&run);
    let cpus = std::thread::available_parallelism().unwrap().get();
    if cpus <= 2 {
        // The server shares this machine's CPUs: the dump streams, as without jobs.
        assert!(
            run.stderr
                .contains("jobs=2: the server runs on this machine")
                && run.stderr.contains("the dump is streamed"),
            "{}",
            run.stderr
        );
        assert!(!started.contains("--jobs"), "{started}");
        assert!(!started.contains("plakar-postgresql-"), "{started}");
    } else {
        assert!(started.contains("--jobs=2"), "{started}");
        assert!(
            started.contains(&format!("{}/plakar-postgresql-", tmp.path().display())),
            "{started}"
        );
    }
    assert_same_app(&src, &dst);
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[test]
fn filled_in_offsets_are_those_pg_dump_records_in_a_file() {
    use common::load::{client, succeed};
    use plakar_postgresql::logical::toc::{self, K_OFFSET_POS_NOT_SET, K_OFFSET_POS_SET};
    use std::process::Stdio;

    let src = Cluster::start();
    seed(&src, "app", 5000);
    src.sql(
        "app",
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, repeat('n', i % 100) FROM generate_series(1, 2000) i;
         CREATE TABLE empty (id int);
         SELECT lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));
         SELECT lo_from_bytea(0, decode(repeat('cd', 70000), 'hex'));",
    );
    let dir = tempfile::tempdir().unwrap();
    let pg_dump = |out: Stdio, extra: &[&str]| {
        let mut cmd = client(&src, "pg_dump");
        cmd.args(["-Fc", "-Z0"]).args(extra).arg("app").stdout(out);
        cmd
    };
    // Into a file, which pg_dump can seek: it records the data offsets.
    let to_file = dir.path().join("file.dump");
    let status = pg_dump(Stdio::null(), &["-f", to_file.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    // Into a pipe, as under plakar backup: it cannot.
    let piped = pg_dump(Stdio::piped(), &[]).output().unwrap();
    assert!(piped.status.success());
    let to_pipe = dir.path().join("pipe.dump");
    std::fs::write(&to_pipe, &piped.stdout).unwrap();

    let slots = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        toc::offset_slots(&bytes).unwrap().unwrap().1
    };
    let expected = slots(&to_file);
    let with_data = expected
        .iter()
        .filter(|s| s.flag == K_OFFSET_POS_SET)
        .count();
    // items, notes, empty, and the large objects' block.
    assert_eq!(with_data, 4, "{expected:?}");
    let before = slots(&to_pipe);
    assert_eq!(
        before
            .iter()
            .filter(|s| s.flag == K_OFFSET_POS_NOT_SET)
            .count(),
        with_data
    );
    assert_ne!(before, expected);

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&to_pipe)
        .unwrap();
    assert_eq!(toc::fill_in_offsets(&file).unwrap(), with_data);
    assert_eq!(slots(&to_pipe), expected);

    // And pg_restore reads the filled-in copy, in parallel.
    src.sql("postgres", "CREATE DATABASE copy");
    succeed(
        client(&src, "pg_restore").args(["-j", "2", "-d", "copy", to_pipe.to_str().unwrap()]),
        "pg_restore of the filled-in copy",
    );
    assert_eq!(items(&src, "copy"), items(&src, "app"));
}

// 7. exit_on_error, both ways.

/// A source whose database `app` has `alpha` (which the target will already
/// have, differently) and `zeta`, restored after it.
async fn conflict_snapshot() -> (Cluster, Snapshot) {
    let src = Cluster::start();
    src.sql("postgres", "CREATE DATABASE app");
    src.sql(
        "app",
        "CREATE TABLE alpha (id int PRIMARY KEY, label text);
         INSERT INTO alpha SELECT i, 'a' || i FROM generate_series(1, 20) i;
         CREATE TABLE zeta (id int PRIMARY KEY, label text);
         INSERT INTO zeta SELECT i, 'z' || i FROM generate_series(1, 30) i;",
    );
    let snapshot = snapshot_of(&[("location", &src.uri("app"))]).await;
    (src, snapshot)
}

/// A target database `app` with its own, different `alpha`.
fn conflicting_target() -> Cluster {
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    dst.sql(
        "app",
        "CREATE TABLE alpha (other_column date); INSERT INTO alpha VALUES ('2020-01-01');",
    );
    dst
}

#[tokio::test(flavor = "multi_thread")]
async fn without_exit_on_error_a_conflict_is_reported_and_the_rest_restored() {
    let (src, snapshot) = conflict_snapshot().await;
    let dst = conflicting_target();
    let run = host::restore(&[("location", &dst.uri("app"))], &snapshot).await;
    assert_error(
        &run,
        "/app.dump",
        &["database \"app\"", "errors", "already exists"],
    );
    let err = run.error_of("/app.dump");
    let count: usize = err
        .split(" failed with ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no error count in: {err}"));
    assert!(count >= 2, "{err}");
    // The later table came back whole; the conflicting one kept its own content.
    assert_eq!(
        rows(&dst, "app", "zeta", "id"),
        rows(&src, "app", "zeta", "id")
    );
    assert_eq!(
        dst.rows("app", "SELECT t::text FROM alpha t"),
        ["(2020-01-01)"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_on_error_stops_at_the_first_error() {
    let (_src, snapshot) = conflict_snapshot().await;
    let dst = conflicting_target();
    let run = host::restore(
        &[("location", &dst.uri("app")), ("exit_on_error", "true")],
        &snapshot,
    )
    .await;
    assert_error(&run, "/app.dump", &["database \"app\"", "already exists"]);
    assert_eq!(tables(&dst, "app"), ["public.alpha"]);
}

// 8. The numbered layout of the other integration.

#[tokio::test(flavor = "multi_thread")]
async fn the_numbered_layout_restores_like_the_normal_one() {
    let src = owned_source();
    let normal = snapshot_of(&[("location", &src.uri("app"))]).await;
    let mut numbered = Snapshot::default();
    numbered.files.insert(
        "/00000-globals.sql".into(),
        normal.files["/globals.sql"].clone(),
    );
    numbered
        .files
        .insert("/00001-app.dump".into(), normal.files["/app.dump"].clone());
    numbered
        .files
        .insert("/notes.txt".into(), b"restore me with care\n".to_vec());

    let dst = Cluster::start();
    let run = host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("restore_globals", "true"),
        ],
        &numbered,
    )
    .await;
    assert_ok_files(&run, &["/", "/00000-globals.sql", "/00001-app.dump"]);
    assert_error(&run, "/notes.txt", &["/notes.txt", "not a file"]);
    assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "notes", "id"),
        rows(&src, "app", "notes", "id")
    );
}

// 9. Files that are not dumps, and single transactions.

#[tokio::test(flavor = "multi_thread")]
async fn records_that_are_not_valid_dumps_fail_clearly() {
    let src = Cluster::start();
    seed(&src, "app", 2000);
    let good = snapshot_of(&[("location", &src.uri("app"))]).await;
    let dump = good.files["/app.dump"].clone();

    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    for (what, bytes, words) in [
        (
            "garbage",
            b"this is not a PostgreSQL dump at all\n".repeat(100),
            "custom format",
        ),
        ("empty", Vec::new(), "custom format"),
        ("truncated", dump[..dump.len() / 2].to_vec(), "truncated"),
        ("header only", dump[..5].to_vec(), "truncated"),
    ] {
        let mut snapshot = Snapshot::default();
        snapshot.files.insert("/app.dump".into(), bytes);
        let run = host::restore(&[("location", &dst.uri("app"))], &snapshot).await;
        let err = run.error_of("/app.dump");
        let call = run.error.as_deref().unwrap_or_default();
        assert!(
            call.contains("/app.dump"),
            "{what}: the restore ended with {call:?}"
        );
        assert!(!err.is_empty(), "{what}: restored without error");
        for w in ["/app.dump", "database \"app\"", "pg_restore", words] {
            assert!(err.contains(w), "{what}: {w:?} missing from: {err}");
        }
        dst.sql("app", "DROP TABLE IF EXISTS items");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_transaction_leaves_the_target_as_it_was_after_a_failure() {
    let src = Cluster::start();
    seed(&src, "app", 3000);
    src.sql(
        "app",
        "CREATE TABLE alpha (id int PRIMARY KEY, label text);
         CREATE TABLE zeta (id int PRIMARY KEY, label text);
         INSERT INTO zeta SELECT i, 'z' || i FROM generate_series(1, 30) i;",
    );
    let good = snapshot_of(&[("location", &src.uri("app"))]).await;
    let dump = good.files["/app.dump"].clone();

    // A target with content of its own, and a scratch database beside it.
    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    dst.sql("postgres", "CREATE DATABASE scratch");
    dst.sql(
        "app",
        "CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep SELECT generate_series(1, 5);",
    );
    // Every table of `app` with its rows.
    let state = |dst: &Cluster| {
        tables(dst, "app")
            .into_iter()
            .map(|t| {
                let rows = rows(dst, "app", &t, "1");
                (t, rows)
            })
            .collect::<Vec<_>>()
    };
    let original = state(&dst);

    // A dump cut in its data: without single_transaction its tables stay behind ...
    let mut truncated = Snapshot::default();
    truncated
        .files
        .insert("/app.dump".into(), dump[..dump.len() * 3 / 4].to_vec());
    let run = host::restore(&[("location", &dst.uri("scratch"))], &truncated).await;
    assert_error(&run, "/app.dump", &["into \"scratch\"", "truncated"]);
    assert!(
        tables(&dst, "scratch").contains(&"public.items".to_string()),
        "the cut falls after the tables were created"
    );

    // ... and with it, nothing does.
    let run = host::restore(
        &[
            ("location", &dst.uri("app")),
            ("single_transaction", "true"),
        ],
        &truncated,
    )
    .await;
    assert_error(&run, "/app.dump", &["database \"app\"", "truncated"]);
    assert_eq!(state(&dst), original);

    // A conflicting object, with exit_on_error as well: the tables created
    // before it (alpha, items) are rolled back.
    dst.sql(
        "app",
        "CREATE TABLE zeta (other_column date); INSERT INTO zeta VALUES ('2020-01-01');",
    );
    let original = state(&dst);
    // A conflicting object, with exit_on_error as well.
    let run = host::restore(
        &[
            ("location", &dst.uri("app")),
            ("single_transaction", "true"),
            ("exit_on_error", "true"),
        ],
        &good,
    )
    .await;
    assert_error(&run, "/app.dump", &["database \"app\"", "already exists"]);
    assert_eq!(state(&dst), original);

    // Without the conflict, the same dump restores whole.
    dst.sql("app", "DROP TABLE zeta");
    let run = host::restore(
        &[
            ("location", &dst.uri("app")),
            ("single_transaction", "true"),
        ],
        &good,
    )
    .await;
    run.assert_ok();
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(
        rows(&dst, "app", "zeta", "id"),
        rows(&src, "app", "zeta", "id")
    );
}

// 10. Held dumps leave nothing behind.

#[tokio::test(flavor = "multi_thread")]
async fn held_dumps_leave_no_temporary_file() {
    let src = owned_source();
    seed(&src, "shop", 50);
    src.sql("shop", "ALTER TABLE items OWNER TO app_owner");
    let split = snapshot_of(&[("location", &src.uri("")), ("split_databases", "true")]).await;

    // Two dumps held until /globals.sql, one (shop) restored after it.
    let dst = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let env = [("TMPDIR", tmp.path().to_str().unwrap())];
    let run = host::restore_with_env(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("restore_globals", "true"),
            ("databases", "app,shop"),
        ],
        &split,
        &env,
    )
    .await;
    run.assert_ok();
    assert!(
        run.stderr
            .contains("/app.dump held until /globals.sql has been applied"),
        "{}",
        run.stderr
    );
    assert_eq!(table_owner(&dst, "app", "items"), "app_owner");
    assert_eq!(table_owner(&dst, "shop", "items"), "app_owner");
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(items(&dst, "shop"), items(&src, "shop"));
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());

    // A held dump whose restore fails, and one whose globals never come.
    let single = snapshot_of(&[("location", &src.uri("app"))]).await;
    let mut without_globals = Snapshot::default();
    without_globals
        .files
        .insert("/app.dump".into(), single.files["/app.dump"].clone());
    let dst = Cluster::start();
    let run = host::restore_with_env(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("restore_globals", "true"),
        ],
        &without_globals,
        &env,
    )
    .await;
    assert_error(&run, "/app.dump", &["app_owner"]);
    assert!(
        run.stderr.contains("the snapshot has no /globals.sql"),
        "{}",
        run.stderr
    );
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_snapshot_restores_whole_into_a_fresh_cluster() {
    let src = owned_source();
    seed(&src, "shop", 80);
    src.sql(
        "postgres",
        "CREATE TABLE kept_in_postgres (id int PRIMARY KEY); INSERT INTO kept_in_postgres SELECT generate_series(1, 7);",
    );
    let snapshot = snapshot_of(&[("location", &src.uri("")), ("split_databases", "true")]).await;

    let dst = Cluster::start();
    let run = host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("restore_globals", "true"),
        ],
        &snapshot,
    )
    .await;
    run.assert_ok();
    assert_eq!(databases(&dst), ["app", "shop"]);
    assert_eq!(items(&dst, "app"), items(&src, "app"));
    assert_eq!(items(&dst, "shop"), items(&src, "shop"));
    assert_eq!(
        rows(&dst, "postgres", "kept_in_postgres", "id"),
        rows(&src, "postgres", "kept_in_postgres", "id")
    );
}
