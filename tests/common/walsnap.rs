//! WAL snapshots made by hand from a real cluster's `pg_wal`, with the
//! records the WAL source writes (`/manifest.json` of layout `wal`,
//! `/wal/<segment>` for each complete segment, `/wal/<segment>.partial` cut
//! at the stop position), so that the physical destination's WAL restores
//! run through the project's host without the source or real Plakar.

use plakar_postgresql::manifest::{
    BackupSection, Manifest, Plugin, Server, WalFacts, WalRange, FORMAT_VERSION,
};
use plakar_postgresql::replication::Lsn;
use plakar_postgresql::wal::Segment;

use super::host::Snapshot;
use super::Cluster;

/// The segment size of the test clusters (initdb's default).
pub const SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A position the server reports, such as `pg_current_wal_lsn()`.
pub fn position(cluster: &Cluster, expression: &str) -> Lsn {
    cluster
        .sql("postgres", &format!("SELECT {expression}"))
        .parse()
        .expect("a WAL position")
}

/// The start of the segment holding `lsn`.
pub fn segment_start(lsn: Lsn) -> Lsn {
    Segment::holding(1, lsn, SEGMENT_SIZE).start(SEGMENT_SIZE)
}

/// The cluster's system identifier.
pub fn system_identifier(cluster: &Cluster) -> String {
    cluster.sql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )
}

/// The server's clock, as the WAL source's `stopped_at` has it.
pub fn server_clock(cluster: &Cluster) -> String {
    cluster.sql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

/// A WAL snapshot of timeline 1 from `start` (a segment's first byte) to
/// `stop`, read from the cluster's `pg_wal`: its segments must still be
/// there (`wal_keep_size`) and written up to `stop` (after a `CHECKPOINT`
/// or `pg_switch_wal()`).
pub fn wal_snapshot(cluster: &Cluster, start: Lsn, stop: Lsn) -> Snapshot {
    assert_eq!(start, segment_start(start), "a range starts at a segment");
    let pg_wal = cluster.data_dir().join("pg_wal");
    let mut snapshot = Snapshot::default();
    let first = Segment::holding(1, start, SEGMENT_SIZE);
    let mut segment = first;
    while segment.end(SEGMENT_SIZE) <= stop {
        let name = segment.file_name(SEGMENT_SIZE);
        let bytes = std::fs::read(pg_wal.join(&name)).unwrap();
        assert_eq!(bytes.len() as u64, SEGMENT_SIZE, "{name}");
        snapshot.files.insert(format!("/wal/{name}"), bytes);
        segment.number += 1;
    }
    let cut = stop.0 - segment.start(SEGMENT_SIZE).0;
    if cut > 0 {
        let name = segment.file_name(SEGMENT_SIZE);
        let mut bytes = std::fs::read(pg_wal.join(&name)).unwrap();
        bytes.truncate(cut as usize);
        snapshot.files.insert(format!("/wal/{name}.partial"), bytes);
    }
    let range = WalRange {
        timeline: 1,
        start_lsn: start.to_string(),
        stop_lsn: stop.to_string(),
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        plugin: Plugin::this(),
        created_at: None,
        server: Server {
            host: "127.0.0.1".into(),
            port: cluster.port,
            version: None,
            version_num: None,
            system_identifier: Some(system_identifier(cluster)),
            in_recovery: Some(false),
            timeline: Some(1),
        },
        pg_dump_version: None,
        backup: BackupSection::Wal(WalFacts {
            slot: "plakar_wal".into(),
            segment_size: SEGMENT_SIZE,
            ranges: vec![range.clone()],
            histories: Vec::new(),
            switches: Vec::new(),
            stopped_at: server_clock(cluster),
            ssl_mode: "prefer".into(),
        }),
        cluster_config: None,
        roles: None,
        tablespaces: None,
        databases: None,
        wal: Some(range),
    };
    snapshot.files.insert(
        "/manifest.json".into(),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    );
    snapshot
}

/// The same snapshot, said to be of the cluster `system_identifier`.
pub fn of_another_cluster(snapshot: &Snapshot, system_identifier: &str) -> Snapshot {
    let mut other = snapshot.clone();
    let mut manifest: Manifest = serde_json::from_slice(&snapshot.files["/manifest.json"]).unwrap();
    manifest.server.system_identifier = Some(system_identifier.to_string());
    other.files.insert(
        "/manifest.json".into(),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    );
    other
}

/// The names in a restored directory's `pg_wal/plakar`, sorted.
pub fn archive_files(data: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("pg_wal/plakar"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
