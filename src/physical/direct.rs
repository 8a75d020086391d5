//! The direct copy of a base backup: on the database host, the data
//! directory read in place, under PostgreSQL's low-level backup API
//! (`pg_backup_start` … `pg_backup_stop` on a connection held for the copy).
//!
//! Every file of the data directory and of each tablespace is announced with
//! its real metadata and read when Plakar opens it, so Plakar reads as many
//! at once as its `-cpu` allows, and stores a file whose metadata matches
//! the previous snapshot's without reading it (see [`recently_modified`] for
//! when that is not safe). What is left out is PostgreSQL's own rule
//! (`basebackup.c`, see [`Leave`]). Once Plakar has stored every file, the
//! backup is stopped, and `backup_label`, `tablespace_map`, the WAL from the
//! backup's start to its stop (read from `pg_wal`, where the temporary slot
//! `Init` took keeps it; the last segment without the zeros that end it) and
//! a `backup_manifest` in PostgreSQL's format
//! follow, so that the restore is checked by `pg_verifybackup` as a copy by
//! pg_basebackup is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::physical::backup_manifest::BackupManifest;
use crate::physical::checksums::{Keeper, Known, Seen};
use crate::physical::wal::segment::{declared_size_of, used_length, Segment, WAL_PAGE};
use crate::postgres::connection::{ConnectError, Connection, PgError, MAINTENANCE_DB};
use crate::postgres::manifest::WalRange;
use crate::postgres::replication::Lsn;
use crate::progress::Progress;
use crate::protocol::record::{self, Entry, EntryKind};
use crate::protocol::source::{Content, Ended, ImportRun};
use crate::protocol::CHUNK_SIZE;

/// A file modified less than this before the backup's start is read again
/// at the next backup, whatever its metadata (see [`recently_modified`]).
pub const MARGIN: Duration = Duration::from_secs(2);

/// PostgreSQL's page size, and the pages of one relation segment file.
const BLOCK: usize = 8192;
const RELSEG_BLOCKS: u64 = 131_072;

/// The data directory the plugin reads, as `Init` found it.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// Its path on this host.
    pub path: PathBuf,
    /// The server's major version: which tablespace directories are its own.
    pub major: u32,
    /// Whether the cluster has page checksums, and they are to be verified.
    pub verify_checksums: bool,
    /// The server's WAL segment size.
    pub segment_size: u64,
    /// Where the checksums of the files read are kept for the next copy
    /// (see [`Known`]); none without a state directory. Set by the caller,
    /// who knows the state directory.
    pub checksums: Option<PathBuf>,
}

/// Why the data directory cannot be copied directly.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("the server does not say where its data directory is ({0}); name it with option `data_dir`, or set copy=stream")]
    Unknown(PgError),
    #[error("cannot read {}: {source}; run plakar on the database host as the user that owns the data directory (often postgres) or as root, or set copy=stream to copy through pg_basebackup", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not the data directory of {target}: its system identifier is {found}, the server's is {server}; plakar runs on another host or `data_dir` names another cluster: name the right directory, or set copy=stream to copy through pg_basebackup", .path.display())]
    OtherCluster {
        path: PathBuf,
        target: String,
        found: String,
        server: String,
    },
    #[error("the server runs PostgreSQL {0}, and a direct copy needs 15 or later (pg_backup_start and pg_backup_stop); set copy=stream")]
    TooOld(u32),
    #[error("{0} is a standby, and the direct copy is taken on a primary; set copy=stream to copy the standby through pg_basebackup")]
    Standby(String),
    #[error("the server cannot be checked for a direct copy: {0}")]
    Check(PgError),
    #[error("the low-level backup API failed: {0}")]
    Api(PgError),
    #[error("WAL segment {} of the backup cannot be read: {source}; the temporary slot should have kept it, so something removed it from pg_wal: run the backup again", .path.display())]
    WalSegment {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("page checksum verification failed in file \"{}\", block {block}: the page holds {found}, its content gives {computed}. A data page does not match its checksum: the file is damaged on the server; restore it from an earlier backup, or set verify_checksums=false to copy it as it is", .path.display())]
    Checksum {
        path: PathBuf,
        block: u64,
        found: u16,
        computed: u16,
    },
    #[error("the WAL up to the backup's stop ({0}) was not written to pg_wal within a minute")]
    NotFlushed(Lsn),
    #[error("pg_backup_stop returned a position that cannot be read: {0:?}")]
    BadLsn(String),
    #[error("cannot write backup_manifest into a temporary file: {0}; make room in the temporary directory ($TMPDIR, /tmp) and run the backup again")]
    Manifest(std::io::Error),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Plakar ended the backup.
    #[error(transparent)]
    Ended(#[from] Ended),
}

/// How the copy is taken, as the options and the server decide at `Init`.
pub async fn find(
    admin: &Client,
    conn: &Connection,
    data_dir: Option<&Path>,
    required: bool,
    major: u32,
    system_identifier: &str,
    verify_checksums: bool,
) -> Result<Option<DataDir>, DirectError> {
    let found = async {
        if major < 15 {
            return Err(DirectError::TooOld(major));
        }
        let standby: bool = admin
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| DirectError::Check(PgError::new("", &e)))?
            .get(0);
        if standby {
            return Err(DirectError::Standby(conn.target()));
        }
        let path = match data_dir {
            Some(dir) => dir.to_path_buf(),
            None => {
                let row = admin
                    .query_one("SHOW data_directory", &[])
                    .await
                    .map_err(|e| DirectError::Unknown(PgError::new("SHOW data_directory", &e)))?;
                PathBuf::from(row.get::<_, String>(0))
            }
        };
        let found = read_system_identifier(&path)?;
        if found != system_identifier {
            return Err(DirectError::OtherCluster {
                path,
                target: conn.target(),
                found,
                server: system_identifier.to_string(),
            });
        }
        let setting = |name: &'static str| async move {
            admin
                .query_one("SELECT setting FROM pg_settings WHERE name = $1", &[&name])
                .await
                .map(|r| r.get::<_, String>(0))
                .map_err(|e| DirectError::Check(PgError::new("", &e)))
        };
        let checksums = setting("data_checksums").await? == "on";
        let segment_size: u64 = setting("wal_segment_size")
            .await?
            .parse()
            .unwrap_or(16 * 1024 * 1024);
        Ok(DataDir {
            path,
            major,
            verify_checksums: verify_checksums && checksums,
            segment_size,
            checksums: None,
        })
    }
    .await;
    match found {
        Ok(dir) => {
            tracing::info!(
                "the data directory {} is read directly on this host, as many files at once as Plakar's -cpu allows",
                dir.path.display()
            );
            Ok(Some(dir))
        }
        Err(why) if !required => {
            tracing::info!("the copy goes through pg_basebackup's stream: {why}");
            Ok(None)
        }
        Err(why) => Err(why),
    }
}

/// The cluster's system identifier, the first field of `global/pg_control`.
fn read_system_identifier(data: &Path) -> Result<String, DirectError> {
    let path = data.join("global").join("pg_control");
    let mut first = [0u8; 8];
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut first))
        .map_err(|source| DirectError::Unreadable { path, source })?;
    Ok(u64::from_ne_bytes(first).to_string())
}

/// What PostgreSQL leaves out of a base backup (`basebackup.c`).
pub struct Leave;

impl Leave {
    /// Files left out wherever they are.
    const FILES: &'static [&'static str] = &[
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "postmaster.pid",
        "postmaster.opts",
    ];
    /// Directories of the data directory copied empty.
    const EMPTIED: &'static [&'static str] = &[
        "pg_stat_tmp",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
        "pg_wal",
    ];

    /// Whether the entry `name` of a directory is left out.
    pub fn out(name: &str) -> bool {
        Self::FILES.contains(&name)
            || name.starts_with("pg_internal.init")
            || name.starts_with("pgsql_tmp")
    }

    /// Whether the directory `relative` (from the data directory) is copied
    /// without its content; `pg_wal/archive_status` is kept, empty.
    pub fn emptied(relative: &str) -> bool {
        Self::EMPTIED.contains(&relative)
    }

    /// Whether a file of a database directory belongs to a temporary
    /// relation (`t3_16384`, `t3_16384_fsm`, `t3_16384.1`).
    pub fn temporary_relation(name: &str) -> bool {
        let Some(rest) = name.strip_prefix('t') else {
            return false;
        };
        let Some((backend, relation)) = rest.split_once('_') else {
            return false;
        };
        !backend.is_empty()
            && backend.bytes().all(|b| b.is_ascii_digit())
            && relation_name(relation).is_some()
    }
}

/// A relation file's name: its relfilenode and fork (`16384`, `16384_fsm`,
/// `16384.2`); None for anything else.
fn relation_name(name: &str) -> Option<(&str, &str)> {
    let base = name.split_once('.').map_or(name, |(b, seg)| {
        if !seg.is_empty() && seg.bytes().all(|c| c.is_ascii_digit()) {
            b
        } else {
            ""
        }
    });
    let (node, fork) = base.split_once('_').unwrap_or((base, ""));
    let ok = !node.is_empty()
        && node.bytes().all(|b| b.is_ascii_digit())
        && ["", "fsm", "vm", "init"].contains(&fork);
    ok.then_some((node, fork))
}

/// The segment number of a relation file (`16384.2` is 2).
fn segment_number(name: &str) -> u64 {
    name.split_once('.')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}

/// Whether `relative` is a database directory: `base/<oid>`, or a
/// tablespace's `pg_tblspc/<oid>/PG_*/<oid>`.
fn is_database_dir(relative: &str) -> bool {
    let parts: Vec<&str> = relative.split('/').collect();
    match parts.as_slice() {
        ["base", db] => db.bytes().all(|b| b.is_ascii_digit()),
        ["pg_tblspc", _, version, db] => {
            version.starts_with("PG_") && db.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// Whether a file's pages carry checksums: a relation file of a database
/// directory or of `global`.
fn is_checksummed(relative: &str) -> bool {
    let (dir, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    (dir == "global" || is_database_dir(dir)) && relation_name(name).is_some()
}

/// The rule that makes carrying unchanged files safe. Plakar stores a file
/// unread when its name, size, mode, mtime, device and inode match the
/// previous snapshot's record. A write in the same clock tick as the one
/// before it leaves size and mtime as they were, so a file read just after
/// such a write and written again in that tick would look unchanged at the
/// next backup. Only a file whose mtime is close to the start of a backup
/// can be in that case: such a file is announced with a device number of
/// this backup's own, so that Plakar reads it now and again at the next
/// backup, whatever its metadata.
pub fn recently_modified(modified: SystemTime, backup_start: SystemTime) -> bool {
    modified + MARGIN >= backup_start
}

/// A file announced, to be read when Plakar opens it. Its path is the key
/// it is kept under: one allocation per file, about a hundred bytes in all.
#[derive(Debug, Clone, Copy)]
struct Planned {
    /// The size announced: exactly that many bytes are served.
    size: u64,
    modified: SystemTime,
    /// The inode announced (0 for the backup's own files).
    ino: u64,
    /// CRC-32C of what was served, once served.
    crc: Option<u32>,
}

/// The content of a file the backup makes itself rather than reads from
/// the data directory.
#[derive(Debug, Clone)]
enum Own {
    /// `backup_label`, `tablespace_map`.
    Text(std::sync::Arc<Vec<u8>>),
    /// `backup_manifest`, in a temporary file.
    Spooled(std::sync::Arc<File>),
}

/// The files of a direct copy: what `Open` serves.
#[derive(Debug, Default)]
pub struct Served {
    /// The data directory, and the prefix of the copy's records (`` or
    /// `/bases/<id>`).
    place: Mutex<Option<(PathBuf, String)>>,
    /// By path from the data directory (`base/5/16384`), in the order
    /// `backup_manifest` lists them.
    files: Mutex<BTreeMap<Box<str>, Planned>>,
    /// The content of the backup's own files, by the same path.
    own: Mutex<HashMap<String, Own>>,
    /// Verify page checksums as the files are read.
    verify: Mutex<Option<Lsn>>,
    /// The first file that could not be served: it fails the backup (Plakar
    /// would commit a snapshot without it, warning only).
    failed: Mutex<Option<DirectError>>,
}

impl Served {
    /// Where the copy's files are, and the prefix of their records.
    fn place(&self, data: &Path, base: &str) {
        *self.place.lock().expect("not poisoned") = Some((data.to_path_buf(), base.to_string()));
    }

    /// The file a record stands for: its path from the data directory, and
    /// on this host.
    fn locate(&self, record: &str) -> Option<(String, PathBuf)> {
        let place = self.place.lock().expect("not poisoned");
        let (data, base) = place.as_ref()?;
        let relative = record.strip_prefix(base.as_str())?.strip_prefix('/')?;
        Some((relative.to_string(), data.join(relative)))
    }

    /// Whether `record` is a file of the direct copy.
    pub fn holds(&self, record: &str) -> bool {
        self.locate(record).is_some_and(|(relative, _)| {
            self.files
                .lock()
                .expect("not poisoned")
                .contains_key(relative.as_str())
        })
    }

    fn plan(&self, relative: String, planned: Planned) {
        self.files
            .lock()
            .expect("not poisoned")
            .insert(relative.into_boxed_str(), planned);
    }

    /// Plans one of the backup's own files, served from `content`.
    fn plan_own(&self, relative: String, planned: Planned, content: Own) {
        self.own
            .lock()
            .expect("not poisoned")
            .insert(relative.clone(), content);
        self.plan(relative, planned);
    }

    /// Serves a file: exactly its announced size, read as it is now (a file
    /// that shrank or vanished since it was announced is padded with zeros,
    /// the WAL replayed after restore repairs it; one that grew is cut at the
    /// announced size), its pages' checksums verified.
    pub async fn serve(&self, record: &str, content: Content) {
        let Some((relative, path)) = self.locate(record) else {
            return;
        };
        let Some(planned) = self
            .files
            .lock()
            .expect("not poisoned")
            .get(relative.as_str())
            .copied()
        else {
            return;
        };
        let own = self
            .own
            .lock()
            .expect("not poisoned")
            .get(&relative)
            .cloned();
        let verify = *self.verify.lock().expect("not poisoned");
        let served = {
            let (file, name, sending) = (path.clone(), relative.clone(), content.clone());
            tokio::task::spawn_blocking(move || {
                read_into(&file, &name, &planned, own.as_ref(), verify, &sending)
            })
            .await
            .unwrap_or_else(|e| {
                Err(DirectError::Read {
                    path,
                    source: std::io::Error::other(e),
                })
            })
        };
        match served {
            Ok(Some(crc)) => {
                if let Some(p) = self
                    .files
                    .lock()
                    .expect("not poisoned")
                    .get_mut(relative.as_str())
                {
                    p.crc = Some(crc);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("{e}");
                content.fail(e.to_string()).await;
                self.failed.lock().expect("not poisoned").get_or_insert(e);
            }
        }
    }

    /// The first file that could not be served, if any.
    fn failure(&self) -> Option<DirectError> {
        self.failed.lock().expect("not poisoned").take()
    }
}

/// Reads a planned file into `content`; its CRC-32C, or None when Plakar
/// stopped reading.
fn read_into(
    path: &Path,
    relative: &str,
    planned: &Planned,
    own: Option<&Own>,
    verify: Option<Lsn>,
    content: &Content,
) -> Result<Option<u32>, DirectError> {
    let opened = match own {
        Some(Own::Text(bytes)) => {
            for chunk in bytes.chunks(CHUNK_SIZE) {
                if !content.blocking_send(chunk.to_vec().into()) {
                    return Ok(None);
                }
            }
            return Ok(Some(crc32c::crc32c(bytes)));
        }
        Some(Own::Spooled(file)) => file.try_clone(),
        None => File::open(path),
    };
    let file = match opened {
        Ok(f) => Some(f),
        // Dropped since it was announced: its drop is in the WAL replayed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(DirectError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let checksummed = verify.filter(|_| is_checksummed(relative));
    let first_block = segment_number(relative) * RELSEG_BLOCKS;
    let mut crc = 0u32;
    let mut at = 0u64;
    while at < planned.size {
        let want = (planned.size - at).min(CHUNK_SIZE as u64) as usize;
        let mut chunk = vec![0u8; want];
        let mut got = 0;
        if let Some(f) = &file {
            while got < want {
                match f.read_at(&mut chunk[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(DirectError::Read {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
            }
        }
        if let (Some(start), Some(f)) = (checksummed, &file) {
            verify_pages(f, path, &mut chunk[..got], at, first_block, start)?;
        }
        crc = crc32c::crc32c_append(crc, &chunk);
        at += want as u64;
        if !content.blocking_send(chunk.into()) {
            return Ok(None);
        }
    }
    Ok(Some(crc))
}

/// Checks the checksum of every whole page of `chunk` (read at `offset`),
/// as pg_basebackup does: a new page, or one written since the backup
/// started (the WAL replayed repairs it), is not checked; a page that fails
/// is read again once, in case it was being written.
fn verify_pages(
    file: &std::fs::File,
    path: &Path,
    chunk: &mut [u8],
    offset: u64,
    first_block: u64,
    start: Lsn,
) -> Result<(), DirectError> {
    for (i, page) in chunk.chunks_exact_mut(BLOCK).enumerate() {
        let block = first_block + offset / BLOCK as u64 + i as u64;
        if page_ok(page, block, start) {
            continue;
        }
        let mut again = vec![0u8; BLOCK];
        let reread = file
            .read_exact_at(&mut again, offset + (i * BLOCK) as u64)
            .is_ok();
        if reread && page_ok(&again, block, start) {
            page.copy_from_slice(&again);
            continue;
        }
        let page: &[u8] = if reread { &again } else { page };
        return Err(DirectError::Checksum {
            path: path.to_path_buf(),
            block,
            found: u16::from_le_bytes([page[8], page[9]]),
            computed: page_checksum(page, block as u32),
        });
    }
    Ok(())
}

/// Whether a page passes: new, written since `start`, or its checksum right.
fn page_ok(page: &[u8], block: u64, start: Lsn) -> bool {
    let upper = u16::from_le_bytes([page[14], page[15]]);
    if upper == 0 {
        return true;
    }
    let lsn = (u64::from(u32::from_le_bytes(page[0..4].try_into().unwrap())) << 32)
        | u64::from(u32::from_le_bytes(page[4..8].try_into().unwrap()));
    if lsn >= start.0 {
        return true;
    }
    u16::from_le_bytes([page[8], page[9]]) == page_checksum(page, block as u32)
}

/// PostgreSQL's page checksum: 32 FNV-1a-like sums over the page as 32-bit
/// words, the checksum field counted as zero, mixed with the block number.
pub fn page_checksum(page: &[u8], block: u32) -> u16 {
    const N_SUMS: usize = 32;
    const FNV_PRIME: u32 = 16_777_619;
    const BASE: [u32; N_SUMS] = [
        0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2,
        0x83E13D2C, 0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C,
        0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979,
        0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
        0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
    ];
    let round = |sum: &mut u32, value: u32| {
        let tmp = *sum ^ value;
        *sum = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
    };
    let mut sums = BASE;
    for (i, word) in page.chunks_exact(4).enumerate() {
        // The checksum field, bytes 8 and 9, counts as zero.
        let mut w = [word[0], word[1], word[2], word[3]];
        if i == 2 {
            w[0] = 0;
            w[1] = 0;
        }
        round(&mut sums[i % N_SUMS], u32::from_le_bytes(w));
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            round(sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ block;
    (folded % 65535 + 1) as u16
}

/// One entry of the walk: a record to announce.
struct Found {
    relative: String,
    kind: EntryKind,
    meta: Meta,
}

/// The metadata a record gives of an entry (a `std::fs::Metadata` is three
/// times its size, and the walk keeps one per file until they are announced).
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    dev: u64,
    ino: u64,
    modified: SystemTime,
}

impl From<&std::fs::Metadata> for Meta {
    fn from(m: &std::fs::Metadata) -> Meta {
        Meta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            dev: m.dev(),
            ino: m.ino(),
            modified: m.modified().unwrap_or(UNIX_EPOCH),
        }
    }
}

/// Walks the data directory and each tablespace's directory of this major
/// version, parents before their content, leaving out what PostgreSQL
/// leaves out.
/// Each entry goes to `emit` as it is found; the walk stops early once `emit`
/// returns false (the copy has ended).
fn walk(data: &Path, major: u32, emit: &mut dyn FnMut(Found) -> bool) -> Result<(), DirectError> {
    walk_dir(data, "", major, emit)
}

fn walk_dir(
    dir: &Path,
    relative: &str,
    major: u32,
    emit: &mut dyn FnMut(Found) -> bool,
) -> Result<(), DirectError> {
    let unreadable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DirectError::Unreadable { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(unreadable(dir))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    let database = is_database_dir(relative);
    let names: Vec<String> = entries
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // The relations that have an init fork: unlogged ones.
    let unlogged: HashSet<&str> = if database {
        names
            .iter()
            .filter_map(|n| n.strip_suffix("_init"))
            .collect()
    } else {
        HashSet::new()
    };
    for (entry, name) in entries.iter().zip(&names) {
        if Leave::out(name) || (database && Leave::temporary_relation(name)) {
            continue;
        }
        // An unlogged relation is copied as its init fork alone.
        if database {
            if let Some((node, fork)) = relation_name(name) {
                if fork != "init" && unlogged.contains(node) {
                    continue;
                }
            }
        }
        let rel = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Gone since the directory was read (a dropped table).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(DirectError::Unreadable { path, source }),
        };
        let tablespace = relative == "pg_tblspc" && meta.file_type().is_symlink();
        if tablespace {
            // `pg_tblspc/<oid>` stands for the tablespace's directory of
            // this major version, which the restore links it to.
            let target = std::fs::metadata(&path).map_err(unreadable(&path))?;
            if !emit(Found {
                relative: rel.clone(),
                meta: (&target).into(),
                kind: EntryKind::Directory,
            }) {
                return Ok(());
            }
            let prefix = format!("PG_{major}_");
            for version in std::fs::read_dir(&path).map_err(unreadable(&path))? {
                let version = version.map_err(unreadable(&path))?;
                let vname = version.file_name().to_string_lossy().into_owned();
                if vname.starts_with(&prefix) {
                    let vpath = version.path();
                    let vmeta = std::fs::metadata(&vpath).map_err(unreadable(&vpath))?;
                    let vrel = format!("{rel}/{vname}");
                    if !emit(Found {
                        relative: vrel.clone(),
                        meta: (&vmeta).into(),
                        kind: EntryKind::Directory,
                    }) {
                        return Ok(());
                    }
                    walk_dir(&vpath, &vrel, major, emit)?;
                }
            }
            continue;
        }
        if meta.is_dir() || (rel == "pg_wal" && meta.file_type().is_symlink()) {
            let meta = std::fs::metadata(&path).map_err(unreadable(&path))?;
            if !emit(Found {
                relative: rel.clone(),
                meta: (&meta).into(),
                kind: EntryKind::Directory,
            }) {
                return Ok(());
            }
            if rel == "pg_wal" {
                // Kept, empty: `archive_status`, and `summaries` (17 and later).
                for kept in ["archive_status", "summaries"] {
                    let sub = path.join(kept);
                    if let Ok(m) = std::fs::metadata(&sub) {
                        if !emit(Found {
                            relative: format!("pg_wal/{kept}"),
                            meta: (&m).into(),
                            kind: EntryKind::Directory,
                        }) {
                            return Ok(());
                        }
                    }
                }
            } else if !Leave::emptied(&rel) {
                walk_dir(&path, &rel, major, emit)?;
            }
        } else if meta.is_file() {
            let size = meta.len();
            if !emit(Found {
                relative: rel,
                meta: (&meta).into(),
                kind: EntryKind::File(size),
            }) {
                return Ok(());
            }
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(unreadable(&path))?
                .to_string_lossy()
                .into_owned();
            if !emit(Found {
                relative: rel,
                meta: (&meta).into(),
                kind: EntryKind::Symlink(target),
            }) {
                return Ok(());
            }
        } else {
            tracing::warn!(
                "{} is neither a file, a directory nor a link: left out, as pg_basebackup does",
                path.display()
            );
        }
    }
    Ok(())
}

/// The record of a found entry, with its real metadata; a file modified
/// close to the backup's start gets this backup's own device number.
fn entry_of(found: &Found, record: String, started: SystemTime, own_dev: u64) -> Entry {
    let meta = &found.meta;
    let modified = meta.modified;
    let recent = matches!(found.kind, EntryKind::File(_)) && recently_modified(modified, started);
    Entry {
        path: record,
        kind: found.kind.clone(),
        perm: meta.mode & 0o777,
        modified,
        uid: u64::from(meta.uid),
        gid: u64::from(meta.gid),
        user: String::new(),
        group: String::new(),
        dev: if recent { own_dev } else { meta.dev },
        ino: meta.ino,
    }
}

/// What a direct copy leaves: the data directory's record, every record
/// announced (for later runs to carry), and the WAL range.
pub struct Taken {
    pub root: Entry,
    pub kept: Vec<Entry>,
    pub wal: WalRange,
}

/// Where a direct copy goes, and how it is taken.
pub struct Job<'a> {
    /// The records' prefix: `` for `/`, or `/bases/<id>`.
    pub base: &'a str,
    /// How to reach the server, for the connection held for the copy.
    pub conn: &'a Connection,
    /// `pg_backup_start`'s `fast`.
    pub fast_checkpoint: bool,
    /// The server's system identifier, for a version 2 `backup_manifest`.
    pub system_identifier: Option<&'a str>,
    /// Keep every record announced, for later runs to carry (`archive_wal`).
    pub keep: bool,
}

/// Copies the cluster directly from its data directory: see the module.
pub async fn copy(
    run: &mut ImportRun,
    job: &Job<'_>,
    dir: &DataDir,
    served: &Served,
) -> Result<Taken, DirectError> {
    let held = job.conn.connect(MAINTENANCE_DB).await?;
    let api = |context: &'static str| {
        move |e: tokio_postgres::Error| DirectError::Api(PgError::new(context, &e))
    };
    let major = dir.major;
    let started = SystemTime::now();
    let own_dev = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let start: String = held
        .query_one(
            "SELECT pg_backup_start($1, $2)::text",
            &[&"plakar", &job.fast_checkpoint],
        )
        .await
        .map_err(api("pg_backup_start"))?
        .get(0);
    let start_lsn: Lsn = start
        .parse()
        .map_err(|_| DirectError::BadLsn(start.clone()))?;
    *served.verify.lock().expect("not poisoned") = dir.verify_checksums.then_some(start_lsn);
    tracing::info!("backup started at {start_lsn} (pg_backup_start)");

    let progress = Progress::start("physical backup (direct)", "/");
    // The walk hands each entry over as it finds it: the list of a cluster
    // of many files is never held whole.
    let data = dir.path.clone();
    let (found_tx, mut found) = tokio::sync::mpsc::channel::<Found>(1024);
    let walking = tokio::task::spawn_blocking(move || {
        walk(&data, major, &mut |f| found_tx.blocking_send(f).is_ok())
    });
    let root_meta = std::fs::metadata(&dir.path).map_err(|source| DirectError::Unreadable {
        path: dir.path.clone(),
        source,
    })?;
    let root = entry_of(
        &Found {
            relative: String::new(),
            meta: (&root_meta).into(),
            kind: EntryKind::Directory,
        },
        if job.base.is_empty() {
            "/".into()
        } else {
            job.base.to_string()
        },
        started,
        own_dev,
    );
    let mut kept = Vec::new();
    let mut announce = async |run: &mut ImportRun, entry: Entry| -> Result<(), Ended> {
        run.announce(record::entry_record(&entry)).await?;
        if job.keep {
            kept.push(entry);
        }
        Ok(())
    };
    announce(run, root.clone()).await?;
    served.place(&dir.path, job.base);
    while let Some(f) = found.recv().await {
        let record = format!("{}/{}", job.base, f.relative);
        let entry = entry_of(&f, record, started, own_dev);
        if let EntryKind::File(size) = f.kind {
            served.plan(
                f.relative,
                Planned {
                    size,
                    modified: entry.modified,
                    ino: entry.ino,
                    crc: None,
                },
            );
        }
        announce(run, entry).await?;
    }
    walking.await.map_err(|e| DirectError::Read {
        path: dir.path.clone(),
        source: std::io::Error::other(e),
    })??;
    // Every file read before the backup stops: the WAL up to the stop
    // repairs whatever changed while they were read.
    run.settle().await?;
    if let Some(failed) = served.failure() {
        progress.failed(&failed);
        return Err(failed);
    }

    let stopped = held
        .query_one(
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)",
            &[],
        )
        .await
        .map_err(api("pg_backup_stop"))?;
    let stop: String = stopped.get(0);
    let stop_lsn: Lsn = stop
        .parse()
        .map_err(|_| DirectError::BadLsn(stop.clone()))?;
    let label: String = stopped.get(1);
    let map: Option<String> = stopped.get(2);
    tracing::info!("backup stopped at {stop_lsn} (pg_backup_stop)");
    wait_flushed(&held, stop_lsn).await?;
    let timeline = label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1);

    // The backup's own files, and the WAL from its start to its stop.
    let now = SystemTime::now();
    let own_file = |name: &str, size: u64| {
        let record = format!("{}/{name}", job.base);
        let entry = Entry {
            path: record.clone(),
            kind: EntryKind::File(size),
            perm: 0o600,
            modified: now,
            dev: own_dev,
            ino: 0,
            ..root.clone()
        };
        let planned = Planned {
            size,
            modified: now,
            ino: 0,
            crc: None,
        };
        (name.to_string(), entry, planned)
    };
    let mut own = vec![("backup_label", label.into_bytes())];
    if let Some(map) = map.filter(|m| !m.is_empty()) {
        own.push(("tablespace_map", map.into_bytes()));
    }
    for (name, text) in own {
        let (name, entry, planned) = own_file(name, text.len() as u64);
        served.plan_own(name, planned, Own::Text(std::sync::Arc::new(text)));
        announce(run, entry).await?;
    }
    let size = dir.segment_size;
    let mut segment = Segment::holding(timeline, start_lsn, size);
    let last = Segment::holding(timeline, stop_lsn, size);
    while segment.number <= last.number {
        let name = segment.file_name(size);
        let path = dir.path.join("pg_wal").join(&name);
        let meta = std::fs::metadata(&path).map_err(|source| DirectError::WalSegment {
            path: path.clone(),
            source,
        })?;
        let record = format!("{}/pg_wal/{name}", job.base);
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let stored = if segment.number == last.number {
            stored_length(&path, size, stop_lsn)
        } else {
            size
        };
        served.plan(
            format!("pg_wal/{name}"),
            Planned {
                size: stored,
                modified,
                ino: 0,
                crc: None,
            },
        );
        let entry = Entry {
            path: record,
            kind: EntryKind::File(stored),
            perm: meta.mode() & 0o777,
            modified,
            dev: own_dev,
            ino: 0,
            ..root.clone()
        };
        announce(run, entry).await?;
        segment.number += 1;
    }
    run.settle().await?;
    if let Some(failed) = served.failure() {
        progress.failed(&failed);
        return Err(failed);
    }

    // PostgreSQL's backup_manifest: each file's size and checksum, of what
    // this backup read or, for a file Plakar carried unread, of what the
    // previous copy read; and the WAL range. Every file is served by now:
    // their plans become the listing, written out as it goes.
    let files = std::mem::take(&mut *served.files.lock().expect("not poisoned"));
    let wal = WalRange {
        timeline,
        start_lsn: start_lsn.to_string(),
        stop_lsn: stop_lsn.to_string(),
    };
    let system = job
        .system_identifier
        .filter(|_| major >= 17)
        .map(String::from);
    let state = dir.checksums.clone();
    let range = wal.clone();
    let listing = tokio::task::spawn_blocking(move || {
        list(files, state.as_deref(), &range, system.as_deref())
    });
    // A panic while listing goes on up, to be reported as the internal
    // error it is rather than as a full temporary directory.
    let (manifest, size, tally) = listing
        .await
        .unwrap_or_else(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(std::io::Error::other(e)),
        })
        .map_err(DirectError::Manifest)?;
    tracing::info!(
        "direct copy: Plakar read {} files ({} MiB) and stored {} unchanged since the previous snapshot without reading them",
        tally.read,
        tally.bytes / (1024 * 1024),
        tally.carried
    );
    if tally.unsummed > 0 {
        tracing::info!(
            "{} of the files stored unread have no checksum in backup_manifest (the previous copy's checksums are not on this host, or not for these files): pg_verifybackup checks their size alone, and the next copy gives them one",
            tally.unsummed
        );
    }
    let bytes = tally.bytes;
    let (name, entry, planned) = own_file("backup_manifest", size);
    served.plan_own(name, planned, Own::Spooled(std::sync::Arc::new(manifest)));
    announce(run, entry).await?;
    run.settle().await?;
    if let Some(failed) = served.failure() {
        progress.failed(&failed);
        return Err(failed);
    }
    let mut progress = progress;
    progress.bytes = bytes;
    progress.done();
    drop(held);
    Ok(Taken { root, kept, wal })
}

/// What a copy stores of the segment the backup stopped in: the segment
/// without the zeros that end it, which the restore puts back (PostgreSQL
/// fills the rest of a segment with zeros when `pg_backup_stop` switches to
/// the next one, so an idle cluster's backup would otherwise store 16 MiB
/// of zeros, and Plakar read them, each time). Only when the segment's first
/// page declares its size, which tells the restore how far to fill it out;
/// never less than the page that holds the stop.
fn stored_length(path: &Path, size: u64, stop: Lsn) -> u64 {
    let floor = ((stop.0 % size).div_ceil(WAL_PAGE) * WAL_PAGE).max(WAL_PAGE);
    let cut = File::open(path).and_then(|f| match declared_size_of(&f)? {
        Some(declared) if declared == size => used_length(&f, size, floor),
        _ => Ok(size),
    });
    // What fails here fails again when Plakar reads the file, and is
    // reported then, naming it.
    cut.unwrap_or(size)
}

/// Waits until the server has written its WAL up to `lsn` (pg_backup_stop
/// inserts the backup's end; the WAL writer writes it out soon after).
async fn wait_flushed(held: &Client, lsn: Lsn) -> Result<(), DirectError> {
    for _ in 0..600 {
        let flushed: String = held
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await
            .map_err(|e| DirectError::Api(PgError::new("pg_current_wal_flush_lsn", &e)))?
            .get(0);
        if flushed.parse::<Lsn>().is_ok_and(|f| f >= lsn) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(DirectError::NotFlushed(lsn))
}

/// What the listing of a copy counted, for its log.
#[derive(Debug, Default)]
struct Tally {
    /// Files Plakar read, and their bytes.
    read: usize,
    bytes: u64,
    /// Files Plakar stored unread, and of those the ones without checksum.
    carried: usize,
    unsummed: usize,
}

/// Writes the `backup_manifest` of `files` (in their paths' order) into a
/// temporary file, taking the checksums of carried files from the previous
/// copy's (`state`), and keeps this copy's checksums there for the next one.
/// A checksum file that cannot be written costs the next copy its checksums
/// only, and says so.
fn list(
    files: BTreeMap<Box<str>, Planned>,
    state: Option<&Path>,
    wal: &WalRange,
    system: Option<&str>,
) -> std::io::Result<(File, u64, Tally)> {
    let mut known = state.map(Known::open).unwrap_or_default();
    let kept_badly = |path: &Path, e: std::io::Error| {
        tracing::warn!(
            "cannot keep the checksums of this copy in {}: {e}; the next copy lists the files Plakar carries unread without checksum",
            path.display()
        );
    };
    let mut keeper = state.and_then(|path| {
        Keeper::create(path)
            .map_err(|e| kept_badly(path, e))
            .ok()
            .map(|k| (k, path))
    });
    let mut manifest = BackupManifest::create(system)?;
    let mut tally = Tally::default();
    for (relative, p) in files {
        if relative.starts_with("pg_wal/") {
            continue;
        }
        let crc = if p.crc.is_some() {
            tally.read += 1;
            tally.bytes += p.size;
            p.crc
        } else {
            tally.carried += 1;
            let crc = known.get(&relative, p.size, p.modified, p.ino);
            tally.unsummed += usize::from(crc.is_none());
            crc
        };
        if let (Some((k, path)), Some(crc)) = (&mut keeper, crc) {
            if let Err(e) = k.keep(&relative, Seen::new(p.size, p.modified, p.ino, crc)) {
                kept_badly(path, e);
                keeper = None;
            }
        }
        manifest.file(&relative, p.size, p.modified, crc)?;
    }
    drop(known);
    if let Some((k, path)) = keeper {
        if let Err(e) = k.finish() {
            kept_badly(path, e);
        }
    }
    let (file, size) = manifest.finish(wal)?;
    Ok((file, size, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_postgresql_leaves_out_is_left_out() {
        for out in [
            "postmaster.pid",
            "backup_label",
            "pg_internal.init",
            "pgsql_tmp12.3",
        ] {
            assert!(Leave::out(out), "{out}");
        }
        for kept in ["PG_VERSION", "postgresql.conf", "16384", "pg_control"] {
            assert!(!Leave::out(kept), "{kept}");
        }
        for emptied in ["pg_replslot", "pg_stat_tmp", "pg_wal"] {
            assert!(Leave::emptied(emptied), "{emptied}");
        }
        assert!(!Leave::emptied("base"));
        for temp in ["t3_16384", "t12_16384_fsm", "t3_16384.1"] {
            assert!(Leave::temporary_relation(temp), "{temp}");
        }
        for not in ["16384", "t3", "tx_1", "t3_abc"] {
            assert!(!Leave::temporary_relation(not), "{not}");
        }
        assert!(is_checksummed("base/5/16384"));
        assert!(is_checksummed("base/5/16384_vm.2"));
        assert!(is_checksummed("global/1262"));
        assert!(is_checksummed("pg_tblspc/16385/PG_15_202209061/5/16386"));
        assert!(!is_checksummed("global/pg_control"));
        assert!(!is_checksummed("base/5/pg_filenode.map"));
        assert!(!is_checksummed("pg_xact/0000"));
        assert_eq!(segment_number("16384.3"), 3);
    }

    #[test]
    fn a_file_modified_close_to_the_start_is_read_again() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(recently_modified(
            start - Duration::from_millis(1500),
            start
        ));
        assert!(recently_modified(start + Duration::from_secs(5), start));
        assert!(!recently_modified(start - Duration::from_secs(3), start));
    }
}
