//! The direct copy of a physical backup (`copy=direct`), through the real
//! Plakar: on the database host, the data directory read in place under
//! PostgreSQL's low-level backup API, as many files at once as Plakar's
//! `-cpu`, unchanged files stored without being read; restored and checked
//! by `pg_verifybackup` as a pg_basebackup copy is.

mod common;

use common::load::{assert_pgbench_consistent, pgbench_writing};
use common::plakar::{self, Plakar};
use common::{damaged_page, databases, items, seed, Cluster, ClusterOptions};

/// Every case, by name.
const CASES: &[(&str, fn())] = &[
    (
        "a_direct_copy_under_load_restores_verified_and_consistent",
        under_load,
    ),
    (
        "a_second_direct_copy_of_an_idle_cluster_reads_almost_nothing_and_lists_every_checksum",
        unchanged,
    ),
    (
        "a_file_rewritten_with_its_old_size_and_mtime_is_read_again",
        same_tick,
    ),
    (
        "a_direct_copy_refuses_another_clusters_directory_and_a_damaged_page",
        refusals,
    ),
    (
        "a_table_dropped_while_the_copy_runs_neither_fails_it_nor_comes_back",
        dropped_during,
    ),
];

fn main() {
    plakar::run_cases(CASES, "direct-copy cases");
}

/// A cluster with page checksums, replication allowed.
fn checksummed() -> Cluster {
    Cluster::start_with(ClusterOptions {
        initdb: vec!["--data-checksums".into()],
        ..ClusterOptions::physical()
    })
}

/// The plugin's log lines about the direct copy.
fn direct_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains("direct copy") || l.contains("read directly"))
        .collect()
}

/// Files Plakar read, from the plugin's summary line.
fn files_read(output: &str) -> u64 {
    let line = direct_lines(output)
        .into_iter()
        .find(|l| l.contains("Plakar read"))
        .unwrap_or_else(|| panic!("no summary line in {output}"));
    line.split("Plakar read ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"))
}

fn under_load() {
    let src = checksummed();
    seed(&src, "app", 300);
    src.sql(
        "app",
        "CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 1000) g",
    );
    let mut load = pgbench_writing(&src, "postgres");
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &["copy=direct"]);
    let ran = store.backup("mybin").ok();
    let still = load.running();
    let said = load.stop();
    let out = ran.output();
    assert!(still, "pgbench ended during the backup: {said}\n{out}");
    assert!(
        out.contains(&format!(
            "the data directory {} is read directly",
            src.data_dir().display()
        )),
        "{out}"
    );
    assert!(
        out.contains("pg_backup_start") && out.contains("pg_backup_stop"),
        "{out}"
    );
    let snap = store.snapshots().remove(0);
    let files = store.files(&snap);
    for f in [
        "PG_VERSION",
        "backup_label",
        "backup_manifest",
        "base",
        "global",
        "pg_wal",
    ] {
        assert!(files.contains(&f.to_string()), "{f} missing from {files:?}");
    }
    for left_out in ["postmaster.pid", "postmaster.opts"] {
        assert!(
            !files.contains(&left_out.to_string()),
            "{left_out} in {files:?}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/manifest.json")).unwrap();
    assert_eq!(
        manifest["backup"]["data_directory"],
        src.data_dir().display().to_string(),
        "{manifest:#}"
    );
    assert!(manifest["wal"]["stop_lsn"].is_string(), "{manifest:#}");

    let (_restored, copy) = store.restored_and_started(&snap);
    assert_eq!(databases(&copy), databases(&src));
    assert_eq!(items(&copy, "app"), items(&src, "app"));
    assert_pgbench_consistent(&copy, "postgres");
    // An unlogged table comes back empty, as after a crash: only its init fork is copied.
    assert_eq!(copy.sql("app", "SELECT count(*) FROM scratch"), "0");
}

fn unchanged() {
    let src = checksummed();
    seed(&src, "app", 2000);
    src.sql("app", "CHECKPOINT");
    // An idle cluster: nothing written within the margin before a backup
    // (a file written just before one is read again at the next, by design).
    let past_the_margin = || std::thread::sleep(std::time::Duration::from_secs(3));
    past_the_margin();
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &["copy=direct"]);
    let first = files_read(&store.backup("mybin").ok().output());
    past_the_margin();
    let second = files_read(&store.backup("mybin").ok().output());
    assert!(first > 500, "the first backup read only {first} files");
    assert!(
        second * 10 < first,
        "the second backup of an idle cluster read {second} files of {first}"
    );
    // Its backup_manifest still gives every file a checksum: those of the
    // files carried unread are the ones the first copy computed.
    let snap = store.snapshots().remove(0);
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.cat(&snap, "/backup_manifest")).unwrap();
    let files = manifest["Files"].as_array().unwrap();
    let unsummed: Vec<&str> = files
        .iter()
        .filter(|f| f["Checksum"].as_str().is_none_or(str::is_empty))
        .filter_map(|f| f["Path"].as_str())
        .collect();
    assert!(files.len() as u64 >= first, "{} files listed", files.len());
    assert!(unsummed.is_empty(), "listed without checksum: {unsummed:?}");
    // The segment the backup stopped in, all zeros past the stop, is
    // stored without them: a page or two where the server has 16 MiB.
    let segments: Vec<String> = store
        .at(&["ls", &format!("{snap}:/pg_wal")])
        .ok()
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| name.len() == 24)
        .map(str::to_string)
        .collect();
    let last = segments
        .iter()
        .max()
        .expect("a WAL segment in the snapshot");
    let stored = store.cat(&snap, &format!("/pg_wal/{last}")).len();
    assert!(stored < SEGMENT / 16, "{last} stored with {stored} bytes");
    // And what it carried restores as it was, pg_verifybackup checking
    // every checksum and reading the WAL: every segment whole again.
    let (_restored, data) = store.restored(&snap);
    for name in &segments {
        let len = std::fs::metadata(data.join("pg_wal").join(name))
            .unwrap()
            .len();
        assert_eq!(len, SEGMENT as u64, "{name} restored with {len} bytes");
    }
    let copy = Cluster::adopt(&data);
    assert_eq!(items(&copy, "app"), items(&src, "app"));
}

/// PostgreSQL's default WAL segment size, that of the test clusters.
const SEGMENT: usize = 16 << 20;

fn same_tick() {
    use std::os::unix::fs::MetadataExt;
    let src = checksummed();
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &["copy=direct"]);
    // A file of the data directory the server does not rewrite by itself.
    let conf = src.data_dir().join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replacen("# - Memory -", "# - MEMORY -", 1)).unwrap();
    let before = std::fs::metadata(&conf).unwrap();
    store.backup("mybin").ok();
    // Written again after the backup read it, same size, mtime put back: what
    // a write in the same clock tick as the one before the backup looks like.
    std::fs::write(&conf, text.replacen("# - Memory -", "# - memory -", 1)).unwrap();
    let times = [
        libc::timespec {
            tv_sec: before.atime(),
            tv_nsec: before.atime_nsec(),
        },
        libc::timespec {
            tv_sec: before.mtime(),
            tv_nsec: before.mtime_nsec(),
        },
    ];
    let c = std::ffi::CString::new(conf.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let after = std::fs::metadata(&conf).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );
    store.backup("mybin").ok();
    let snap = store.snapshots().remove(0);
    let stored = String::from_utf8(store.cat(&snap, "/postgresql.conf")).unwrap();
    assert!(
        stored.contains("# - memory -"),
        "the second backup kept the first one's postgresql.conf"
    );
}

fn refusals() {
    let src = checksummed();
    let other = checksummed();
    let pk = Plakar::new();
    let store = pk.store("store");
    // Another cluster's directory: the system identifiers differ.
    pk.source(
        "wrong",
        &src.bin_uri(),
        &[
            "copy=direct",
            &format!("data_dir={}", other.data_dir().display()),
        ],
    );
    store.backup("wrong").fails_saying(&[
        "is not the data directory of",
        "system identifier",
        "copy=stream",
    ]);
    // With copy=auto, the same falls back to pg_basebackup's stream, and says why.
    pk.source(
        "auto",
        &src.bin_uri(),
        &[&format!("data_dir={}", other.data_dir().display())],
    );
    store.backup("auto").ok_saying(&[
        "the copy goes through pg_basebackup's stream",
        "system identifier",
    ]);
    // A damaged page fails the backup and names its file.
    seed(&src, "app", 500);
    let file = damaged_page(&src, "app", "items");
    pk.source("mybin", &src.bin_uri(), &["copy=direct"]);
    let before = store.snapshots().len();
    store.backup("mybin").fails_saying(&[
        "checksum verification failed",
        &file,
        "verify_checksums=false",
    ]);
    assert_eq!(
        store.snapshots().len(),
        before,
        "a damaged backup was committed"
    );
}

fn dropped_during() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let src = checksummed();
    seed(&src, "app", 100);
    // A large table first, so that Plakar is still reading when the other goes.
    src.sql(
        "app",
        "CREATE TABLE big AS SELECT g, repeat('x', 400) AS pad FROM generate_series(1, 300000) g",
    );
    src.sql(
        "app",
        "CREATE TABLE dropme AS SELECT g FROM generate_series(1, 200000) g",
    );
    let dropped = src.sql("app", "SELECT pg_relation_filepath('dropme')");
    src.sql("app", "CHECKPOINT");
    let pk = Plakar::new();
    let store = pk.store("store");
    pk.source("mybin", &src.bin_uri(), &["copy=direct"]);
    let mut child = store
        .command(&["backup", "@mybin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut said = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("pg_backup_start") {
            break;
        }
    }
    // Once the walk has announced it, before Plakar reaches it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    src.sql("app", "DROP TABLE dropme");
    src.sql("app", "CHECKPOINT");
    for line in lines {
        said.push_str(&line.unwrap());
        said.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the backup failed:\n{said}");
    assert!(
        !src.data_dir().join(&dropped).exists(),
        "{dropped} is still there"
    );

    let snap = store.snapshots().remove(0);
    let stored = store.cat(&snap, &format!("/{dropped}"));
    if stored.iter().all(|b| *b == 0) {
        eprintln!(
            "{dropped} was gone when Plakar read it: stored as zeros, {} bytes",
            stored.len()
        );
    }
    let (_restored, copy) = store.restored_and_started(&snap);
    assert_eq!(copy.sql("app", "SELECT to_regclass('dropme') IS NULL"), "t");
    assert!(
        !copy.data_dir().join(&dropped).exists(),
        "the replayed DROP left {dropped}"
    );
    assert_eq!(copy.sql("app", "SELECT count(*) FROM big"), "300000");
    assert_eq!(items(&copy, "app"), items(&src, "app"));
}
