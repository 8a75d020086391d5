//! The physical connectors (`postgres+bin://`) through the project's own
//! host, for what the real Plakar cannot be made to do: fail to store one
//! file, stop acknowledging, cut a file's content short; and the exact wire
//! of a restore. What a user sees through plakar is in tests/plakar.rs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::cluster::{bin_location, give_to_server, open_dir, server_dir};
use common::host::{self, Backup, Connector, Restore, Snapshot};
use common::load::{succeed, tool};
use common::{items, seed, Cluster, ClusterOptions};

/// A cluster that allows base backups, with a database `app` of `rows` rows.
fn physical_source(rows: u32) -> Cluster {
    let src = Cluster::start_with(ClusterOptions::physical());
    seed(&src, "app", rows);
    src
}

/// The snapshot of a physical backup of the whole cluster, which must succeed.
async fn physical_snapshot(src: &Cluster) -> Snapshot {
    host::physical_backup(&[("location", &src.bin_uri())])
        .await
        .committed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_physical_snapshot_restores_into_a_directory_that_verifies_and_starts() {
    let src = physical_source(200);
    let snapshot = physical_snapshot(&src).await;
    for path in [
        "/PG_VERSION",
        "/backup_label",
        "/backup_manifest",
        "/manifest.json",
    ] {
        assert!(snapshot.files.contains_key(path), "{path} missing");
    }
    assert_eq!(snapshot.manifest()["backup"]["layout"], "physical");

    let target = open_dir();
    let data = target.path().join("restored");
    let run = host::physical_restore(&[("location", &bin_location(&data))], &snapshot).await;
    run.assert_ok();
    assert!(
        run.stderr.contains("matches its backup_manifest"),
        "{}",
        run.stderr
    );
    // The wire: one result per record, in the order sent, each echoing its
    // record whole (fileInfo included); so a directory is answered as it comes,
    // before anything it holds.
    assert_eq!(run.headers.len(), run.sent.len());
    for (sent, echoed) in run.sent.iter().zip(&run.headers) {
        assert_eq!(echoed, sent, "the result for {}", sent.pathname);
    }
    let directories = run
        .sent
        .iter()
        .filter(|r| r.file_info.as_ref().unwrap().mode & 0x8000_0000 != 0)
        .count();
    assert!(directories > 3, "only {directories} directories were sent");

    // The checksums were compared as the files were written, not read back.
    assert!(
        !run.stderr.contains("reads every restored file again"),
        "{}",
        run.stderr
    );
    succeed(
        Command::new(tool("pg_verifybackup")).arg(&data),
        "pg_verifybackup of the restored directory",
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(!data.join("manifest.json").exists());
    let copy = Cluster::adopt(&data);
    assert_eq!(items(&copy, "app"), items(&src, "app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_basebackup_that_opens_an_archive_before_its_pipe_is_made_is_started_again() {
    let src = physical_source(200);
    let place = open_dir();
    let tables = server_dir(place.path(), "tables");
    src.sql(
        "postgres",
        &format!("CREATE TABLESPACE tables LOCATION '{}'", tables.display()),
    );
    src.sql("app", "ALTER TABLE items SET TABLESPACE tables");
    // A pg_basebackup that, once, makes its directory with base.tar already in
    // it as a plain file, as if it had opened it before the plugin made the pipe.
    let bin = open_dir();
    let wrapper = bin.path().join("pg_basebackup");
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/bin/sh
for arg; do case "$arg" in --pgdata=*) out="${{arg#--pgdata=}}";; esac; done
if [ -n "$out" ] && [ "$out" != "-" ] && [ ! -e "$0.raced" ]; then
  : > "$0.raced"
  mkdir "$out.new" && : > "$out.new/base.tar" && mv "$out.new" "$out"
  exec sleep 30
fi
exec {} "$@"
"#,
            tool("pg_basebackup").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let run = host::physical_backup(&[
        ("location", &src.bin_uri()),
        ("pg_bin_dir", &bin.path().display().to_string()),
        ("copy", "stream"),
    ])
    .await;
    assert!(bin.path().join("pg_basebackup.raced").exists());
    assert!(
        run.stderr
            .contains("opened base.tar before the plugin made it a pipe")
            && run
                .stderr
                .contains("starting pg_basebackup again (attempt 2 of 3)"),
        "{}",
        run.stderr
    );
    let snapshot = run.committed();
    let target = open_dir();
    let data = target.path().join("restored");
    let mapping = format!("tables={}", target.path().join("tables").display());
    host::physical_restore(
        &[
            ("location", &bin_location(&data)),
            ("tablespace_mapping", &mapping),
        ],
        &snapshot,
    )
    .await
    .assert_ok();
    give_to_server(&target.path().join("tables"));
    let copy = Cluster::adopt(&data);
    assert_eq!(items(&copy, "app"), items(&src, "app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_of_a_physical_snapshot_belongs_to_the_data_directorys_owner() {
    use std::os::unix::fs::MetadataExt;
    let src = physical_source(1);
    let snapshot = physical_snapshot(&src).await;
    let owner = |path: &str| {
        let info = snapshot.records[path].file_info.clone().unwrap();
        (info.uid, info.gid, info.username, info.groupname)
    };
    let data = std::fs::metadata(src.data_dir()).unwrap();
    let server = owner("/PG_VERSION");
    assert_eq!((server.0, server.1), (data.uid() as u64, data.gid() as u64));
    // The records pg_basebackup or the plugin make up look like the rest:
    // `/`, `/backup_manifest`, `/manifest.json`, and every other one.
    for path in snapshot.records.keys() {
        assert_eq!(owner(path), server, "the owner of {path}");
    }
    for path in ["/", "/backup_manifest", "/manifest.json"] {
        assert!(snapshot.records.contains_key(path), "no record {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn giving_the_restored_files_to_another_user_needs_root() {
    let target = open_dir();
    let data = target.path().join("data");
    let location = bin_location(&data);
    let config = [("location", location.as_str()), ("owner", "root")];
    // The plugin runs as `postgres` (or as the user running the tests), and
    // is asked to give the files to root.
    let run = Restore::physical(&config, &Snapshot::default())
        .not_as_root()
        .run()
        .await;
    let err = run.error.as_deref().expect("the restore is refused");
    for words in [
        "option `owner=root` needs root",
        "run plakar as root",
        "chown -R",
    ] {
        assert!(err.contains(words), "{words:?} missing: {err}");
    }
    assert!(run.results.is_empty(), "{:?}", run.results);
    assert!(
        !data.exists(),
        "the refused restore made {}",
        data.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_plakar_cannot_store_fails_the_physical_backup_by_name() {
    let src = physical_source(50);
    Backup::physical(&[("location", &src.bin_uri())])
        .failing_to_store("/global/pg_control", "no space left on device")
        .run()
        .await
        .fails_saying(&[
            "Plakar could not store /global/pg_control: no space left on device",
            "the backup is incomplete and was not committed",
        ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plakar_that_stops_acknowledging_fails_the_physical_backup() {
    let src = physical_source(50);
    // pg_basebackup's stream: every record announced before any is waited for.
    Backup::physical(&[("location", &src.bin_uri()), ("copy", "stream")])
        .ending_acks_at("/PG_VERSION")
        .run()
        .await
        .fails_saying(&["Plakar ended the backup before storing /", "not committed"]);
}

/// The first WAL segment of a snapshot taken through pg_basebackup's
/// stream, which carries whole segments: a file of many chunks (the direct
/// copy stores the segment it stops in without its zeros).
fn wal_segment(snapshot: &Snapshot) -> String {
    let path = snapshot
        .paths()
        .into_iter()
        .find(|p| p.starts_with("/pg_wal/0"))
        .unwrap_or_else(|| panic!("no WAL segment in {:?}", snapshot.paths()))
        .to_string();
    assert!(snapshot.files[&path].len() > 2 << 20, "{path} is small");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_whose_content_ends_early_fails_the_physical_restore_by_name() {
    let src = physical_source(50);
    let snapshot = host::physical_backup(&[("location", &src.bin_uri()), ("copy", "stream")])
        .await
        .committed();
    let cut = wal_segment(&snapshot);

    let target = open_dir();
    let data = target.path().join("restored");
    let location = bin_location(&data);
    let config = [("location", location.as_str())];
    // The plugin is checked to exit 0 once Plakar closes the pipes.
    let run = Restore::physical(&config, &snapshot)
        .cutting_short(&cut)
        .run()
        .await;
    let err = run.error_of(&cut);
    assert!(err.contains(&cut), "{err}");
    assert!(err.contains("its content ended early"), "{err}");
    let call = run
        .error
        .as_deref()
        .expect("the restore ends with an error");
    assert!(call.contains("the restore failed for 1 file:"), "{call}");
    assert!(
        call.contains(&format!("{cut}: its content ended early")),
        "{call}"
    );
    // Every other record, those after the cut one included, got its own result.
    assert_eq!(run.results.len(), run.sent.len());
    for (path, error) in &run.results {
        assert!(path == &cut || error.is_empty(), "{path}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_restored_with_other_bytes_than_backed_up_fails_the_restore_by_name() {
    let src = physical_source(200);
    // Both copies: the direct copy's backup_manifest, and pg_basebackup's.
    for copy in ["direct", "stream"] {
        let mut snapshot = host::physical_backup(&[("location", &src.bin_uri()), ("copy", copy)])
            .await
            .committed();
        // A damaged store: one byte of the largest relation file changed,
        // its size kept, so that only its checksum can tell.
        let damaged = snapshot
            .paths()
            .into_iter()
            .filter(|p| p.starts_with("/base/"))
            .max_by_key(|p| snapshot.files[*p].len())
            .expect("a relation file")
            .to_string();
        let content = snapshot.files.get_mut(&damaged).unwrap();
        let middle = content.len() / 2;
        content[middle] ^= 0xff;

        let target = open_dir();
        let data = target.path().join("restored");
        let run = host::physical_restore(&[("location", &bin_location(&data))], &snapshot).await;
        let failure = run.error.clone().expect("the restore fails");
        let relative = damaged.trim_start_matches('/');
        assert!(
            failure.contains("does not match its backup_manifest")
                && failure
                    .contains("1 file was restored with other bytes than it was backed up with")
                && failure.contains(&format!("{relative} (CRC-32C ")),
            "copy={copy}: {failure}"
        );
        // Every file was written: only the check at the end tells.
        for (path, error) in &run.results {
            assert!(error.is_empty(), "copy={copy}: {path}: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logical_snapshot_is_refused_by_the_physical_destination_before_anything_is_written() {
    let src = Cluster::start();
    seed(&src, "app", 20);
    let snapshot = host::snapshot_of(&[("location", &src.uri("app"))]).await;

    let target = open_dir();
    let absent = target.path().join("data");
    let empty = target.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for dir in [&absent, &empty] {
        let run = host::physical_restore(&[("location", &bin_location(dir))], &snapshot).await;
        let err = run.error.as_deref().expect("the restore is refused");
        for words in [
            "comes from a logical backup",
            "nothing was written",
            "postgres://",
        ] {
            assert!(err.contains(words), "{words:?} missing: {err}");
        }
        assert!(
            run.results.iter().all(|(p, e)| p == "/" || !e.is_empty()),
            "a file was restored: {:?}",
            run.results
        );
    }
    assert!(
        !absent.exists(),
        "the refused restore made {}",
        absent.display()
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_says_whether_the_physical_connectors_can_work() {
    let src = physical_source(1);
    let source = [("location", src.bin_uri())];
    let source = common::pairs(&source);
    host::ping_after(Connector::PhysicalImporter, &source, || {})
        .await
        .unwrap();

    let target = open_dir();
    let dir = target.path().join("data");
    let destination = [("location", bin_location(&dir))];
    let destination = common::pairs(&destination);
    host::ping_after(Connector::PhysicalExporter, &destination, || {})
        .await
        .unwrap();
    let err = host::ping_after(Connector::PhysicalExporter, &destination, || {
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    })
    .await
    .unwrap_err();
    assert!(
        err.starts_with("postgresql physical destination: ") && err.contains("is not empty"),
        "{err}"
    );

    let err = host::ping_after(Connector::PhysicalImporter, &source, || src.stop())
        .await
        .unwrap_err();
    assert!(
        err.starts_with("postgresql physical source: cannot connect to PostgreSQL at 127.0.0.1:"),
        "{err}"
    );
}

/// A source that archives its WAL, run once through the host: its snapshot,
/// and the state directory it keeps.
async fn archiving_snapshot(src: &Cluster) -> (Snapshot, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let snapshot = host::physical_backup(&[
        ("location", &src.bin_uri()),
        ("archive_wal", "true"),
        ("state_dir", &state.path().display().to_string()),
    ])
    .await
    .committed();
    (snapshot, state)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_that_carries_its_wal_restores_to_its_end_and_starts() {
    let src = physical_source(100);
    src.sql("app", "SELECT pg_switch_wal()");
    let (snapshot, _state) = archiving_snapshot(&src).await;
    let chain: serde_json::Value = serde_json::from_slice(&snapshot.files["/.chain.json"]).unwrap();
    let base = chain["bases"][0]["id"].as_str().unwrap().to_string();
    for path in ["PG_VERSION", "backup_label", "backup_manifest"] {
        let path = format!("/bases/{base}/{path}");
        assert!(snapshot.files.contains_key(&path), "{path} missing");
    }
    assert!(snapshot
        .paths()
        .iter()
        .any(|p| p.starts_with("/wal/00000001-")));

    let target = open_dir();
    let data = target.path().join("restored");
    let run = host::physical_restore(&[("location", &bin_location(&data))], &snapshot).await;
    run.assert_ok();
    assert!(
        run.stderr.contains("ready for point-in-time recovery"),
        "{}",
        run.stderr
    );
    for own in ["manifest.json", ".chain.json", "bases", "wal", "receipt"] {
        assert!(
            !data.join(own).exists(),
            "{own} was written into the data directory"
        );
    }
    assert!(data.join("recovery.signal").exists());
    // The WAL is in pg_wal itself, whole segments marked archived, as
    // pg_basebackup leaves the WAL it streams; no copy of it anywhere else.
    let segments: Vec<(String, u64)> = std::fs::read_dir(data.join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().len() == 24)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().len())
        })
        .collect();
    assert!(segments.len() > 1, "{segments:?}");
    for (name, len) in &segments {
        assert_eq!(*len, 16 * 1024 * 1024, "{name}");
        let done = data.join(format!("pg_wal/archive_status/{name}.done"));
        assert!(done.is_file(), "{} missing", done.display());
    }
    assert!(!data.join("pg_wal/plakar").exists());
    let conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("restore_command = 'false'"), "{conf}");
    let copy = Cluster::adopt(&data);
    assert_eq!(items(&copy, "app"), items(&src, "app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_piece_of_wal_cut_short_fails_the_restore_and_leaves_nothing() {
    let src = physical_source(100);
    let (mut snapshot, _state) = archiving_snapshot(&src).await;
    let piece = snapshot
        .paths()
        .into_iter()
        .find(|p| p.starts_with("/wal/00000001-"))
        .expect("a piece of WAL")
        .to_string();
    // A damaged store: the piece shorter than /.chain.json says.
    let content = snapshot.files.get_mut(&piece).unwrap();
    content.truncate(content.len() / 2);

    let target = open_dir();
    let data = target.path().join("restored");
    let run = host::physical_restore(&[("location", &bin_location(&data))], &snapshot).await;
    let error = run.error_of(&piece).to_string();
    assert!(error.contains("where /.chain.json gives it"), "{error}");
    let failure = run.error.clone().expect("the restore fails");
    assert!(
        failure.contains("the snapshot's WAL cannot be restored")
            && failure.contains("everything this restore wrote was removed"),
        "{failure}"
    );
    assert!(!data.exists(), "the failed restore left {data:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_options_for_a_snapshot_without_wal_are_refused_before_anything_is_written() {
    let src = physical_source(10);
    let snapshot = physical_snapshot(&src).await;
    let target = open_dir();
    let data = target.path().join("restored");
    let run = host::physical_restore(
        &[
            ("location", &bin_location(&data)),
            ("recovery_target", "latest"),
        ],
        &snapshot,
    )
    .await;
    let failure = run.error.clone().expect("the restore is refused");
    assert!(
        failure.contains("option `recovery_target` asks for point-in-time recovery")
            && failure.contains("archive_wal=true"),
        "{failure}"
    );
    assert!(!data.exists());
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
