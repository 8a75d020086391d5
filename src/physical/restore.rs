//! The physical destination: `plakar restore -to @mydata` for
//! `postgres+bin:///path/to/directory`.
//!
//! `Init` refuses a directory that is not empty or that a server runs on, and
//! an `owner` it cannot give files to. `Export` writes each file of the
//! snapshot with its mode and mtime (the directory itself 0700, as PostgreSQL
//! demands), given to `owner` when there is one, refusing a logical snapshot
//! at its first file, before anything is written; then `pg_verifybackup`
//! checks the result against the backup's own `backup_manifest`, and the call
//! ends with an error if anything failed or does not match. With a recovery
//! target, the base restore then writes the recovery settings and the WAL
//! chain's ledger (see [`super::recovery`], [`super::chain`]).
//!
//! A WAL snapshot goes into a directory restored so: its manifest is checked
//! against the chain before any of its files is written, its segments are
//! written beside the ledger in `pg_wal/plakar/` (a `.partial` padded to a
//! whole segment, never over a longer copy), and the ledger is extended.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use prost::bytes::Bytes;
use tokio::io::AsyncWriteExt;

mod wal;

use super::chain::{self, Chain};
use super::options::PhysicalDestination;
use super::tablespaces;
use crate::error::Error;
use crate::names;
use crate::protocol::connectors::Record;
use crate::protocol::destination::{Destination, Export, Results};
use crate::protocol::record::{MODE_DIR, MODE_SYMLINK};
use crate::tools::{Tool, Toolbox};
use crate::wal::WAL_DIR;

/// Refuses a directory that holds anything, naming a running server first.
fn check_directory(dir: &Path) -> Result<(), Error> {
    if dir.join("postmaster.pid").exists() {
        return Err(Error::DirectoryInUse(dir.to_path_buf()));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(Error::DirectoryNotEmpty(dir.to_path_buf())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            action: "read",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[tonic::async_trait]
impl Destination for PhysicalDestination {
    type Error = Error;
    type Export = Writer;

    async fn init(config: &HashMap<String, String>) -> Result<PhysicalDestination, Error> {
        let config = PhysicalDestination::parse(config)?;
        if let Some(owner) = &config.owner {
            owner.check()?;
        }
        // A directory restored for recovery takes WAL snapshots only: its
        // tablespaces are already in their mapped directories, which the same
        // destination's `tablespace_mapping` still names.
        if check_target(&config.directory)?.is_none() {
            for (key, dir) in &config.tablespace_mapping {
                check_tablespace_directory(dir, &config.directory, key, key)?;
            }
        }
        Ok(config)
    }

    fn origin(&self) -> String {
        self.directory.display().to_string()
    }

    async fn ping(&self) -> Result<(), Error> {
        check_target(&self.directory).map(|_| ())
    }

    fn export(self: Arc<Self>) -> Writer {
        Writer {
            root: self.directory.clone(),
            chain: Chain::load(&self.directory).ok().flatten(),
            config: self,
            started: false,
            directories: Vec::new(),
            own: Vec::new(),
            refused: None,
            snapshot: None,
            tablespaces: HashMap::new(),
            placed: HashMap::new(),
            wal: None,
            decided: false,
        }
    }
}

/// Refuses a tablespace's directory that holds anything, or that is inside
/// the data directory or holds it, naming the tablespace and the option that
/// gives it another.
fn check_tablespace_directory(
    dir: &Path,
    root: &Path,
    tablespace: &str,
    key: &str,
) -> Result<(), Error> {
    if dir.starts_with(root) || root.starts_with(dir) {
        return Err(Error::TablespaceOverlapsData {
            tablespace: tablespace.to_string(),
            key: key.to_string(),
            dir: dir.to_path_buf(),
            root: root.to_path_buf(),
        });
    }
    check_directory(dir).map_err(|e| match e {
        Error::DirectoryNotEmpty(dir) | Error::DirectoryInUse(dir) => {
            Error::TablespaceDirectoryNotEmpty {
                tablespace: tablespace.to_string(),
                key: key.to_string(),
                dir,
            }
        }
        other => other,
    })
}

/// A directory to restore into: absent or empty, or restored for recovery
/// (for a WAL snapshot); its chain then.
fn check_target(dir: &Path) -> Result<Option<Chain>, Error> {
    if dir.join("postmaster.pid").exists() {
        return Err(Error::DirectoryInUse(dir.to_path_buf()));
    }
    match Chain::load(dir) {
        Ok(Some(chain)) => Ok(Some(chain)),
        Ok(None) => check_directory(dir).map(|()| None),
        Err(source) => Err(Error::Io {
            action: "read",
            path: chain::ledger_path(dir),
            source,
        }),
    }
}

/// A WAL snapshot being restored.
#[derive(Debug, Default)]
pub struct WalRestore {
    /// The chain it makes, once its manifest is checked.
    extended: Option<Chain>,
    /// Why it does not go on, returned at the next record.
    refused: Option<Error>,
    /// Files written under a temporary name: final name, temporary path, length.
    staged: Vec<(String, PathBuf, u64)>,
}

/// A file being written.
pub struct Open {
    record: Record,
    file: Option<tokio::fs::File>,
    path: PathBuf,
    error: Option<String>,
}

/// One `Export` call writing a data directory.
pub struct Writer {
    config: Arc<PhysicalDestination>,
    root: PathBuf,
    /// Whether the directory was created (at the first file of a physical snapshot).
    started: bool,
    /// Directories written, with their mode and mtime, applied at the end
    /// (a directory made read-only first could not be filled).
    directories: Vec<(PathBuf, u32, Option<SystemTime>)>,
    /// The bytes of the plugin's own file being read (`/.tablespaces.json`
    /// or `/manifest.json`), which is not written into the directory.
    own: Vec<u8>,
    /// The snapshot's tablespaces by OID: name and original directory, from
    /// `/.tablespaces.json`, which Plakar sends first (path order), or from
    /// `/manifest.json` in snapshots made before that record existed.
    tablespaces: HashMap<String, (String, PathBuf)>,
    /// Why the restore does not go on, returned at the next record: found
    /// while reading `/.tablespaces.json`, before anything is written.
    refused: Option<Error>,
    /// Where each tablespace is restored, by OID.
    placed: HashMap<String, PathBuf>,
    /// `/manifest.json`, once read.
    snapshot: Option<crate::manifest::Manifest>,
    /// The chain of a directory restored for recovery.
    chain: Option<Chain>,
    /// Set once the first record says the snapshot is WAL.
    wal: Option<WalRestore>,
    /// Whether the first record after `/` has said what the snapshot is.
    decided: bool,
}

/// Whether a record belongs to a WAL snapshot: the first after `/` decides
/// (a base snapshot's `/manifest.json` comes after its data files).
fn is_wal_record(pathname: &str) -> bool {
    pathname == names::MANIFEST || names::is_wal_archive(pathname)
}

#[tonic::async_trait]
impl Export for Writer {
    type Error = Error;
    type File = Open;

    async fn begin(
        &mut self,
        record: Record,
        results: &mut Results,
    ) -> Result<Option<Open>, Error> {
        if names::is_logical(&record.pathname) {
            return Err(Error::LogicalSnapshot(record.pathname));
        }
        if record.pathname != "/" && !self.decided {
            self.decided = true;
            if is_wal_record(&record.pathname) {
                if self.chain.is_none() {
                    return Err(Error::NoRecoveryBase(self.root.clone()));
                }
                // PostgreSQL removes recovery.signal when recovery ends: WAL
                // restored then would put a server that has moved on back into recovery.
                if !self.root.join("recovery.signal").exists() {
                    return Err(Error::AlreadyRecovered(self.root.clone()));
                }
                self.sweep_incoming();
                self.wal = Some(WalRestore::default());
            } else if self.chain.is_some() {
                // A base snapshot into a directory already restored.
                return Err(Error::DirectoryNotEmpty(self.root.clone()));
            }
        }
        if self.wal.is_some() {
            return self.begin_wal(record, results).await;
        }
        if let Some(refused) = self.refused.take() {
            return Err(refused);
        }
        if let Some(oid) = tablespace_of(&record.pathname) {
            if self.placed.is_empty() {
                self.check_mapping()?;
            }
            if !self.placed.contains_key(oid) {
                // Its directory record, first of its files: refused before any is written.
                let dir = self.place(oid)?;
                self.placed.insert(oid.to_string(), dir);
            }
        }
        Ok(self.start(record, results).await)
    }

    async fn write(&mut self, open: &mut Open, chunk: Bytes) {
        if is_own_file(&open.record.pathname) {
            self.own.extend_from_slice(&chunk);
        }
        if let (Some(file), None) = (&mut open.file, &open.error) {
            if let Err(e) = file.write_all(&chunk).await {
                open.error = Some(format!("cannot write {}: {e}", open.path.display()));
                open.file = None;
            }
        }
    }

    async fn end(&mut self, open: Open, results: &mut Results) {
        self.close(open, None, results).await;
    }

    async fn cut(&mut self, open: Open, why: &str, results: &mut Results) {
        self.close(open, Some(why.to_string()), results).await;
    }

    async fn finish(&mut self, results: &mut Results) -> Result<(), Error> {
        if let Some(refused) = self.refused.take() {
            return Err(refused);
        }
        if let Some(wal) = self.wal.take() {
            return self.finish_wal(wal, results);
        }
        // Deepest first, so that a parent's mode never stops a child's.
        self.directories.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, mode, mtime) in std::mem::take(&mut self.directories) {
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
            if let (Some(t), Ok(f)) = (mtime, std::fs::File::open(&dir)) {
                let _ = f.set_modified(t);
            }
        }
        if !self.started {
            return Err(Error::NoDataDirectory);
        }
        if results.any_failed() {
            // The files that failed are the error; verifying would only repeat it.
            return Ok(());
        }
        self.relocate()?;
        verify(&self.config).await?;
        match &self.config.recovery {
            Some(recovery) => self.prepare_recovery(recovery),
            None => Ok(()),
        }
    }
}

impl Writer {
    /// Starts a record: makes a directory or a link at once, or opens a file
    /// for the content that follows.
    async fn start(&mut self, record: Record, results: &mut Results) -> Option<Open> {
        let info = record.file_info.clone().unwrap_or_default();
        let modified = info.mod_time.and_then(|t| SystemTime::try_from(t).ok());
        if record.pathname == "/" {
            results.send(&record, Ok::<(), String>(())).await;
            return None;
        }
        if is_own_file(&record.pathname) {
            // The plugin's own description of the backup: not part of the data directory.
            tracing::info!("{} is not written into the data directory", record.pathname);
            return Some(Open {
                record,
                file: None,
                path: PathBuf::new(),
                error: None,
            });
        }
        let path = match self.target(&record.pathname) {
            Ok(p) => p,
            Err(why) => {
                results.send(&record, Err(why)).await;
                return None;
            }
        };
        let top = tablespace_of(&record.pathname)
            .filter(|oid| record.pathname == format!("/pg_tblspc/{oid}"))
            .map(str::to_string);
        let made = if let Some(oid) = top {
            // The tablespace's directory, and the link PostgreSQL follows to it.
            let link = self.root.join("pg_tblspc").join(&oid);
            std::fs::create_dir_all(&path)
                .and_then(|()| std::os::unix::fs::symlink(&path, &link))
                .map_err(|e| format!("cannot create {}: {e}", path.display()))
                .and_then(|()| self.give(&link))
                .map(|()| {
                    self.directories
                        .push((path.clone(), info.mode & 0o777, modified));
                })
                .map_err(std::io::Error::other)
        } else if info.mode & MODE_DIR != 0 {
            std::fs::create_dir(&path)
                .or_else(|e| if path.is_dir() { Ok(()) } else { Err(e) })
                .map(|()| {
                    self.directories
                        .push((path.clone(), info.mode & 0o777, modified));
                })
        } else if info.mode & MODE_SYMLINK != 0 {
            std::os::unix::fs::symlink(&record.target, &path)
        } else {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))
                .and_then(|f| match &self.config.owner {
                    Some(owner) => owner.give_file(&f, &path).map(|()| f),
                    None => Ok(f),
                });
            return Some(match file {
                Ok(f) => Open {
                    record,
                    file: Some(tokio::fs::File::from_std(f)),
                    path,
                    error: None,
                },
                Err(e) => Open {
                    error: Some(e),
                    record,
                    file: None,
                    path,
                },
            });
        };
        let result = made
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
            .and_then(|()| self.give(&path));
        results.send(&record, result).await;
        None
    }

    /// Refuses a `tablespace_mapping` entry that names no tablespace of the
    /// snapshot, before any tablespace is written: a misspelt name would
    /// otherwise send that tablespace to its original directory.
    fn check_mapping(&self) -> Result<(), Error> {
        for (key, _) in &self.config.tablespace_mapping {
            let known = self
                .tablespaces
                .iter()
                .any(|(oid, (name, _))| oid == key || name == key);
            if !known {
                let mut names: Vec<String> = self
                    .tablespaces
                    .iter()
                    .map(|(oid, (name, _))| format!("{name} ({oid})"))
                    .collect();
                names.sort();
                return Err(Error::UnmappedTablespace {
                    key: key.clone(),
                    known: names.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Reads `/.tablespaces.json` and decides where every tablespace goes,
    /// refusing a directory that is not empty, or one given to two
    /// tablespaces, before the first file of the data directory is written.
    fn place_all(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let list =
            tablespaces::parse(bytes).map_err(|e| Error::BadTablespaceList(e.to_string()))?;
        self.tablespaces = list
            .into_iter()
            .map(|t| (t.oid.to_string(), (t.name, t.location)))
            .collect();
        self.check_mapping()?;
        let mut oids: Vec<String> = self.tablespaces.keys().cloned().collect();
        oids.sort();
        for oid in oids {
            let dir = self.place(&oid)?;
            if let Some((other, _)) = self.placed.iter().find(|(_, d)| **d == dir) {
                return Err(Error::SharedTablespaceDirectory {
                    dir,
                    first: self.tablespace_name(other),
                    second: self.tablespace_name(&oid),
                });
            }
            self.placed.insert(oid, dir);
        }
        Ok(())
    }

    /// A tablespace as the user knows it: `name (oid)`.
    fn tablespace_name(&self, oid: &str) -> String {
        match self.tablespaces.get(oid) {
            Some((name, _)) => format!("{name} ({oid})"),
            None => oid.to_string(),
        }
    }

    /// Where tablespace `oid` is restored: its `tablespace_mapping`, by OID or
    /// name, else its original directory; refused unless absent or empty.
    fn place(&self, oid: &str) -> Result<PathBuf, Error> {
        let known = self.tablespaces.get(oid);
        let mapped = self
            .config
            .tablespace_mapping
            .iter()
            .find(|(key, _)| key == oid || known.is_some_and(|(name, _)| name == key));
        let dir = match (mapped, known) {
            (Some((_, dir)), _) => dir.clone(),
            (None, Some((_, original))) => original.clone(),
            (None, None) => return Err(Error::UnknownTablespace(oid.to_string())),
        };
        let key = known.map_or(oid, |(name, _)| name.as_str());
        check_tablespace_directory(&dir, &self.root, &self.tablespace_name(oid), key)?;
        Ok(dir)
    }

    /// Where a record goes under the target directory; created on first use.
    /// A tablespace's files go to its directory, which `pg_tblspc/<oid>` links to.
    fn target(&mut self, pathname: &str) -> Result<PathBuf, String> {
        let relative = Path::new(pathname.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!("{pathname} is not a path inside a data directory"));
        }
        if let Some(oid) = tablespace_of(pathname) {
            let dir = self.placed.get(oid).cloned().unwrap_or_default();
            let inside = relative
                .strip_prefix(Path::new("pg_tblspc").join(oid))
                .unwrap_or(relative);
            // The directory itself without a trailing `/`: the link names it as given.
            return Ok(if inside.as_os_str().is_empty() {
                dir
            } else {
                dir.join(inside)
            });
        }
        if !self.started {
            std::fs::create_dir_all(&self.root)
                .and_then(|()| {
                    std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| format!("cannot create {}: {e}", self.root.display()))?;
            self.give(&self.root)?;
            self.started = true;
        }
        Ok(self.root.join(relative))
    }

    /// Gives a directory or link just made to `owner`, if there is one.
    fn give(&self, path: &Path) -> Result<(), String> {
        match &self.config.owner {
            Some(owner) => owner.give(path),
            None => Ok(()),
        }
    }

    /// Closes a file, gives it its mode and mtime, and answers its record.
    async fn close(&mut self, open: Open, early: Option<String>, results: &mut Results) {
        let Open {
            record,
            file,
            path,
            error,
        } = open;
        if record.pathname == tablespaces::RECORD {
            let bytes = std::mem::take(&mut self.own);
            if let Err(refused) = self.place_all(&bytes) {
                results.send(&record, Err(refused.to_string())).await;
                self.refused = Some(refused);
                return;
            }
        }
        if record.pathname == names::MANIFEST {
            let bytes = std::mem::take(&mut self.own);
            if self.tablespaces.is_empty() {
                self.tablespaces = tablespaces_in(&bytes);
            }
            self.snapshot = serde_json::from_slice(&bytes).ok();
            if self.wal.is_some() {
                self.check_wal_manifest();
            }
        }
        let mut result = match error.or(early) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if let (Some(mut file), Ok(())) = (file, &result) {
            let info = record.file_info.clone().unwrap_or_default();
            let flushed = file.flush().await;
            let std_file = file.into_std().await;
            result = flushed
                .and_then(|()| {
                    std_file.set_permissions(std::fs::Permissions::from_mode(info.mode & 0o777))
                })
                .and_then(
                    |()| match info.mod_time.and_then(|t| SystemTime::try_from(t).ok()) {
                        Some(t) => std_file.set_modified(t),
                        None => Ok(()),
                    },
                )
                .map_err(|e| format!("cannot write {}: {e}", path.display()));
        }
        if let (Some(wal), Ok(())) = (&mut self.wal, &result) {
            if record.pathname.starts_with(&format!("{WAL_DIR}/")) {
                let name = record.pathname[WAL_DIR.len() + 1..].to_string();
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let misfit = (wal.extended.as_ref())
                    .and_then(|chain| wal::misfit(&name, len, chain.segment_bytes()));
                if let Some(why) = misfit {
                    result = Err(why);
                }
                // Staged even so: a failed restore removes every staged file.
                wal.staged.push((name, path, len));
            }
        }
        results.send(&record, result).await;
    }
}

/// Whether a record is one of the plugin's own files, never written into
/// the data directory.
fn is_own_file(pathname: &str) -> bool {
    pathname == names::MANIFEST || pathname == tablespaces::RECORD
}

/// The OID of the tablespace a record belongs to: `/pg_tblspc/<oid>[/...]`.
fn tablespace_of(pathname: &str) -> Option<&str> {
    let rest = pathname.strip_prefix("/pg_tblspc/")?;
    let oid = rest.split('/').next()?;
    (!oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit())).then_some(oid)
}

/// The tablespaces `/manifest.json` names, by OID: name and directory.
fn tablespaces_in(manifest: &[u8]) -> HashMap<String, (String, PathBuf)> {
    let Ok(m) = serde_json::from_slice::<crate::manifest::Manifest>(manifest) else {
        return HashMap::new();
    };
    m.tablespaces
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| {
            let oid = t.oid?;
            (!t.location.is_empty()).then(|| (oid.to_string(), (t.name, PathBuf::from(t.location))))
        })
        .collect()
}

impl Writer {
    /// A tablespace restored away from its original directory: the links in
    /// pg_tblspc are then the truth, as after `pg_basebackup --format=plain
    /// --tablespace-mapping`, so `tablespace_map` (which names the original
    /// directories, and which the server would follow at its first start) is
    /// removed, and so is its entry in `backup_manifest`, whose checksum is
    /// computed again; every other file is verified as it was backed up.
    fn relocate(&self) -> Result<(), Error> {
        let moved = self
            .placed
            .iter()
            .any(|(oid, dir)| self.tablespaces.get(oid).map(|(_, o)| o) != Some(dir));
        let map = self.root.join("tablespace_map");
        if !moved || !map.exists() {
            return Ok(());
        }
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let manifest = self.root.join("backup_manifest");
        let text = std::fs::read_to_string(&manifest).map_err(io("read", &manifest))?;
        let rewritten = without_entry(&text, "tablespace_map").ok_or_else(|| {
            Error::Verify("backup_manifest has no entry for tablespace_map to remove".into())
        })?;
        let fresh = manifest.with_extension("new");
        std::fs::write(&fresh, rewritten).map_err(io("write", &fresh))?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))
            .map_err(io("write", &fresh))?;
        self.give(&fresh).map_err(Error::Verify)?;
        std::fs::rename(&fresh, &manifest).map_err(io("write", &manifest))?;
        std::fs::remove_file(&map).map_err(io("remove", &map))?;
        Ok(())
    }
}

/// PostgreSQL's backup manifest without one file's entry, its
/// `Manifest-Checksum` (SHA-256 of all that precedes it) computed again.
fn without_entry(manifest: &str, path: &str) -> Option<String> {
    use sha2::Digest;
    let entry = format!("{{ \"Path\": \"{path}\", ");
    let mut lines: Vec<&str> = manifest.split_inclusive('\n').collect();
    let at = lines.iter().position(|l| l.starts_with(&entry))?;
    lines.remove(at);
    let mut body = String::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("\"Manifest-Checksum\"") {
            let sum = sha2::Sha256::digest(body.as_bytes());
            let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
            body.push_str(&format!("\"Manifest-Checksum\": \"{hex}\"}}\n"));
            return Some(body);
        }
        // The last file's entry ends the list without a comma.
        if i + 1 == at && lines.get(at).is_some_and(|next| next.starts_with(']')) {
            body.push_str(&line.replacen("},", "}", 1));
        } else {
            body.push_str(line);
        }
    }
    None
}

/// Checks the restored directory with pg_verifybackup against its `backup_manifest`.
async fn verify(config: &PhysicalDestination) -> Result<(), Error> {
    let dir = &config.directory;
    let version = std::fs::read_to_string(dir.join("PG_VERSION")).map_err(|e| {
        Error::Verify(format!(
            "the restored directory has no readable PG_VERSION: {e}"
        ))
    })?;
    let major: u32 = version
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            Error::Verify(format!(
                "PG_VERSION holds {:?}, not a version",
                version.trim()
            ))
        })?;
    let pg_bin_dir = config.pg_bin_dir.as_deref();
    let mut args: Vec<OsString> = vec!["--quiet".into()];
    // pg_waldump must read the WAL of its own major version; without one, the
    // files are verified and the WAL is only checked to be present.
    let toolbox = match Toolbox::of_major(pg_bin_dir, major, Tool::PgVerifybackup).await {
        Some(tb)
            if tb
                .path(Tool::PgVerifybackup)
                .with_file_name("pg_waldump")
                .is_file() =>
        {
            tb
        }
        found => {
            let tb = match found {
                Some(tb) => tb,
                None => newest_verifier(pg_bin_dir).await.ok_or_else(|| {
                    Error::Verify(format!(
                        "pg_verifybackup was not found, so the restore cannot be verified; install the PostgreSQL {major} client tools or set pg_bin_dir to their directory"
                    ))
                })?,
            };
            tracing::warn!(
                "no pg_waldump of PostgreSQL {major} here: the WAL in pg_wal is not parsed (pg_verifybackup --no-parse-wal), only the files are verified"
            );
            args.push("--no-parse-wal".into());
            tb
        }
    };
    args.push(dir.as_os_str().to_os_string());
    let outcome = toolbox
        .spawn_local(Tool::PgVerifybackup, &args)?
        .finish()
        .await;
    match outcome.failure() {
        None => {
            tracing::info!(
                "pg_verifybackup: {} matches its backup_manifest; start it with: pg_ctl -D {} start",
                dir.display(),
                dir.display()
            );
            if dir.join("standby.signal").exists() {
                tracing::info!(
                    "{} is the copy of a standby and holds its standby.signal: started as it is, it is a standby again, replaying from the primary that primary_conninfo names; remove standby.signal first to start it as a server of its own",
                    dir.display()
                );
            }
            Ok(())
        }
        Some(why) => Err(Error::Verify(format!(
            "the restored directory {} does not match its backup_manifest: {why}",
            dir.display()
        ))),
    }
}

/// Any pg_verifybackup (PostgreSQL 13 and later), newest first.
async fn newest_verifier(pg_bin_dir: Option<&Path>) -> Option<Toolbox> {
    for major in (13..=30).rev() {
        if let Some(tb) = Toolbox::of_major(pg_bin_dir, major, Tool::PgVerifybackup).await {
            return Some(tb);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// The checksum pg_verifybackup expects: SHA-256 of all before its line.
    fn checksum_holds(manifest: &str) -> bool {
        let at = manifest.find("\"Manifest-Checksum\"").unwrap();
        let sum = sha2::Sha256::digest(&manifest.as_bytes()[..at]);
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        manifest[at..].contains(&hex)
    }

    #[test]
    fn an_entry_leaves_the_manifest_with_its_checksum_computed_again() {
        let files = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Path\": \"backup_label\", \"Size\": 1 },\n{ \"Path\": \"tablespace_map\", \"Size\": 42 },\n{ \"Path\": \"PG_VERSION\", \"Size\": 3 }\n],\n\"WAL-Ranges\": [\n],\n";
        let manifest = format!("{files}\"Manifest-Checksum\": \"00\"}}\n");
        let without = without_entry(&manifest, "tablespace_map").unwrap();
        assert!(!without.contains("tablespace_map") && without.contains("PG_VERSION"));
        assert!(checksum_holds(&without), "{without}");
        // The last entry: the one before it loses its comma.
        let last = without_entry(&manifest, "PG_VERSION").unwrap();
        assert!(last.contains("\"Size\": 42 }\n],"), "{last}");
        assert!(checksum_holds(&last));
        assert!(without_entry(&manifest, "nothing").is_none());
    }

    #[test]
    fn tablespace_records_are_named_by_their_oid() {
        assert_eq!(tablespace_of("/pg_tblspc/16384"), Some("16384"));
        assert_eq!(tablespace_of("/pg_tblspc/16384/PG_15_1/5/1"), Some("16384"));
        assert_eq!(tablespace_of("/pg_tblspc"), None);
        assert_eq!(tablespace_of("/base/5/1"), None);
    }
}
