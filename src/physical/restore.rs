//! The physical destination: `plakar restore -to @mydata` for
//! `postgres+bin:///path/to/directory`.
//!
//! `Init` refuses a directory that is not empty or that a server runs on, and
//! an `owner` it cannot give files to. `Export` writes each file of the
//! snapshot with its mode and mtime (the directory itself 0700, as PostgreSQL
//! demands), given to `owner` when there is one, refusing a logical snapshot
//! at its first file, before anything is written; then the result is checked
//! against the backup's own `backup_manifest` (`restore/verify.rs`), and the call
//! ends with an error if anything failed or does not match. With a recovery
//! target, the base restore then writes the recovery settings and the WAL
//! chain's ledger (see [`super::recovery`], [`super::chain`]).
//!
//! A snapshot that carries its WAL (`archive_wal`) starts with
//! `/.chain.json`: before anything is written, the destination checks that
//! the snapshot reaches the recovery target and that its WAL runs without a
//! hole from the base backup it picks, then writes that base's files, skips
//! the other base's (a run that took a new one holds two), and puts the WAL
//! in `pg_wal/` (see [`wal`]), with the recovery settings that replay it at
//! `pg_ctl start`. A damaged piece of WAL removes everything written.
//! Unless `sync=false`, the restored files are flushed to disk before the
//! restore reports success.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use prost::bytes::Bytes;

mod out;
mod verify;
pub mod wal;

use out::FileOut;

use super::chain::{self, Aim, Chain};
use super::options::PhysicalDestination;
use super::recovery::{Recovery, Target};
use super::tablespaces;
use crate::names;
use crate::physical::error::{Error, FileError, VerifyError};
use crate::physical::wal::segment::parse_history_file_name;
use crate::protocol::connectors::Record;
use crate::protocol::destination::{Destination, Export, Results};
use crate::protocol::record::{MODE_DIR, MODE_SYMLINK};

/// An I/O failure on `path`, as the user reads it: what was being done, where.
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

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
        check_directory(&config.directory)?;
        for (key, dir) in &config.tablespace_mapping {
            check_tablespace_directory(dir, &config.directory, key, key)?;
        }
        Ok(config)
    }

    fn origin(&self) -> String {
        self.directory.display().to_string()
    }

    async fn ping(&self) -> Result<(), Error> {
        check_directory(&self.directory)
    }

    fn export(self: Arc<Self>) -> Writer {
        Writer {
            root: self.directory.clone(),
            root_existed: self.directory.exists(),
            config: self,
            started: false,
            directories: Vec::new(),
            own: Vec::new(),
            refused: None,
            snapshot: None,
            tablespaces: HashMap::new(),
            placed: HashMap::new(),
            pitr: None,
            decided: false,
            wal_failed: Vec::new(),
            sums: verify::Sums::new(),
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

/// A file being written.
pub struct Open {
    /// The record as Plakar sent it, echoed back in its result.
    record: Record,
    /// Its path in the data directory's terms (`/base/1/1259`), empty for a
    /// record that is not written.
    local: String,
    file: Option<FileOut>,
    path: PathBuf,
    error: Option<FileError>,
    /// A piece of the snapshot's WAL.
    piece: Option<wal::PieceOpen>,
}

/// A snapshot that carries its WAL, being restored.
#[derive(Debug)]
pub struct Pitr {
    /// What `/.chain.json` says.
    chain: Chain,
    /// The records of the base backup restored: `/bases/<id>`.
    base: String,
    /// The recovery it is restored for.
    recovery: Recovery,
    /// The WAL's segment files.
    wal: wal::WalFiles,
}

/// One `Export` call writing a data directory.
pub struct Writer {
    config: Arc<PhysicalDestination>,
    root: PathBuf,
    /// Whether the directory was there, empty, before the restore.
    root_existed: bool,
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
    snapshot: Option<crate::postgres::manifest::Manifest>,
    /// A snapshot that carries its WAL, once `/.chain.json` is read.
    pitr: Option<Pitr>,
    /// Whether the first record after `/` has said what the snapshot is.
    decided: bool,
    /// The WAL records that failed: the restore then removes what it wrote.
    wal_failed: Vec<(String, FileError)>,
    /// What each file of the data directory received, checked against
    /// `backup_manifest` at the end.
    sums: verify::Sums,
}

/// Where a record of a snapshot that carries its WAL goes.
enum Place {
    /// Into the data directory, at this path.
    Data(String),
    /// Into `pg_wal/`: a piece, or a history file (its name).
    Piece(chain::Piece),
    History(String),
    /// Nowhere (the other base backup, the receipts, the directories).
    Skip,
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
            if record.pathname != chain::RECORD {
                if let Some(recovery) = &self.config.recovery {
                    return Err(Error::NoWalInSnapshot(recovery.option().to_string()));
                }
            }
        }
        if record.pathname == chain::RECORD {
            return Ok(Some(self.own(record, chain::RECORD)));
        }
        let local = match &self.pitr {
            None => record.pathname.clone(),
            Some(pitr) => match place(pitr, &record.pathname) {
                Place::Data(local) => local,
                Place::Skip => {
                    if record.has_reader {
                        return Ok(Some(self.own(record, "")));
                    }
                    results.send(&record, Ok::<(), String>(())).await;
                    return Ok(None);
                }
                Place::History(name) => return Ok(Some(self.history(record, &name).await)),
                Place::Piece(piece) => return Ok(Some(self.piece(record, piece).await)),
            },
        };
        if let Some(refused) = self.refused.take() {
            return Err(refused);
        }
        if let Some(oid) = tablespace_of(&local) {
            if self.placed.is_empty() {
                self.check_mapping()?;
            }
            if !self.placed.contains_key(oid) {
                // Its directory record, first of its files: refused before any is written.
                let dir = self.place(oid)?;
                self.placed.insert(oid.to_string(), dir);
            }
        }
        Ok(self.start(record, &local, results).await)
    }

    async fn write(&mut self, open: &mut Open, chunk: Bytes) {
        if let Some(piece) = &mut open.piece {
            if open.error.is_none() {
                let pitr = self.pitr.as_mut().expect("a piece belongs to a chain");
                match pitr.wal.write(piece, &chunk) {
                    Ok(made) => {
                        for path in made {
                            if let Err(e) = self.give(&path) {
                                open.error = Some(e);
                            }
                        }
                    }
                    Err(e) => open.error = Some(e.into()),
                }
            }
            return;
        }
        if is_own_file(&open.local) {
            self.own.extend_from_slice(&chunk);
        }
        if let (Some(file), None) = (&mut open.file, &open.error) {
            if let Err(e) = file.write(chunk).await {
                open.error = Some(FileError::Io {
                    action: "write",
                    path: open.path.clone(),
                    source: e,
                });
                open.file = None;
            }
        }
    }

    async fn end(&mut self, open: Open, results: &mut Results) {
        self.close(open, None, results).await;
    }

    async fn cut(&mut self, open: Open, why: &str, results: &mut Results) {
        self.close(open, Some(FileError::Cut(why.to_string())), results)
            .await;
    }

    async fn finish(&mut self, results: &mut Results) -> Result<(), Error> {
        if let Some(refused) = self.refused.take() {
            return Err(refused);
        }
        if !self.wal_failed.is_empty() {
            self.remove_written();
            return Err(Error::DamagedWal(std::mem::take(&mut self.wal_failed)));
        }
        if let Some(pitr) = &mut self.pitr {
            match pitr.wal.finish() {
                Ok(made) => {
                    for path in made {
                        self.give(&path)?;
                    }
                }
                Err(why) => {
                    self.wal_failed.push((wal::WAL_DIR.to_string(), why.into()));
                    self.remove_written();
                    return Err(Error::DamagedWal(std::mem::take(&mut self.wal_failed)));
                }
            }
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
        verify::verify(&self.config, &self.sums).await?;
        if let Some(pitr) = &self.pitr {
            self.prepare_recovery(pitr)?;
        }
        if self.config.sync {
            self.sync()?;
        }
        Ok(())
    }
}

impl Writer {
    /// A record read, not written: the plugin's own files, and what a
    /// restore skips.
    fn own(&self, record: Record, local: &str) -> Open {
        Open {
            record,
            local: local.to_string(),
            file: None,
            path: PathBuf::new(),
            error: None,
            piece: None,
        }
    }

    /// A new file, private, given to `owner` if there is one.
    fn create_file(&self, path: &Path) -> Result<std::fs::File, FileError> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| FileError::Io {
                action: "create",
                path: path.to_path_buf(),
                source,
            })
            .and_then(|f| match &self.config.owner {
                Some(owner) => owner.give_file(&f, path).map(|()| f),
                None => Ok(f),
            })
    }

    /// `pg_wal/`, made on first use and given to `owner` if the base
    /// backup did not bring it.
    fn wal_dir(&self) -> Result<PathBuf, FileError> {
        let dir = self.root.join(wal::WAL_DIR);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|source| FileError::Io {
                    action: "create",
                    path: dir.clone(),
                    source,
                })?;
            self.give(&dir)?;
        }
        Ok(dir)
    }

    /// A timeline's history file, written as it is into `pg_wal/`, over the
    /// base backup's copy of it if it has one.
    async fn history(&mut self, record: Record, name: &str) -> Open {
        if let Some(pitr) = &mut self.pitr {
            pitr.wal.history(name);
        }
        let made = self.wal_dir().and_then(|dir| {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            self.create_file(&path).map(|f| (f, path))
        });
        match made {
            Ok((f, path)) => Open {
                file: Some(FileOut::new(f, self.config.sync)),
                path,
                ..self.own(record, "")
            },
            Err(e) => Open {
                error: Some(e),
                ..self.own(record, "")
            },
        }
    }

    /// A piece of the WAL, written at its place in the segment files.
    async fn piece(&mut self, record: Record, piece: chain::Piece) -> Open {
        let dir = self.wal_dir();
        let pitr = self.pitr.as_mut().expect("a piece belongs to a chain");
        let open = pitr.wal.open(piece);
        Open {
            error: dir.err(),
            piece: Some(open),
            ..self.own(record, "")
        }
    }

    /// Reads `/.chain.json`: picks the base backup for the recovery asked
    /// (`latest` when none is), and checks that the snapshot reaches it.
    fn read_chain(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let chain = Chain::from_json(bytes)?;
        let recovery = self
            .config
            .recovery
            .clone()
            .unwrap_or_else(Recovery::latest);
        let aim = match &recovery.target {
            Target::Latest | Target::Immediate => Aim::Newest,
            Target::Time(text) => match chain::moment(text) {
                Some(micros) => Aim::Time {
                    text: text.clone(),
                    micros,
                },
                None => {
                    tracing::warn!(
                        "recovery_target_time {text} has no time zone, so whether this snapshot reaches it is left to PostgreSQL (it covers {})",
                        chain.covered()
                    );
                    Aim::Anywhere
                }
            },
            Target::Lsn(lsn) => Aim::Lsn(*lsn),
            Target::Xid(_) | Target::Name(_) => Aim::Anywhere,
        };
        let base = chain.base_for(&aim)?.clone();
        tracing::info!(
            "the snapshot covers {}: restoring base backup {} (consistent at {} on timeline {}) and its WAL to {} on timeline {}",
            chain.covered(),
            base.id,
            base.end_lsn,
            base.timeline,
            chain.stop_lsn,
            chain.timeline
        );
        let wal = wal::WalFiles::new(
            &self.root,
            chain.segment_size,
            self.config.sync,
            (base.timeline, base.start()),
        );
        self.pitr = Some(Pitr {
            base: format!("{}/{}", chain::BASES, base.id),
            chain,
            recovery,
            wal,
        });
        Ok(())
    }

    /// Removes what a failed restore wrote: the directory it filled (or its
    /// content, when it was there, empty, before) and the tablespaces'.
    fn remove_written(&self) {
        for dir in self.placed.values() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.root_existed {
            if let Ok(entries) = std::fs::read_dir(&self.root) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() && !path.is_symlink() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
        tracing::warn!(
            "the restore failed: what it wrote into {} was removed",
            self.root.display()
        );
    }

    /// The recovery settings and `recovery.signal`, so that `pg_ctl start`
    /// replays the WAL in `pg_wal/` to the target.
    fn prepare_recovery(&self, pitr: &Pitr) -> Result<(), Error> {
        let wal = self.wal_dir()?;
        pitr.recovery
            .write(&self.root)
            .map_err(io("write", &self.root))?;
        for path in [
            wal,
            self.root.join("recovery.signal"),
            self.root.join("postgresql.auto.conf"),
        ] {
            self.give(&path)?;
        }
        let target: Vec<String> = pitr
            .recovery
            .settings()
            .iter()
            .skip(1)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let target = if target.is_empty() {
            format!("the end of the snapshot's WAL, {}", pitr.chain.stopped_at)
        } else {
            target.join(", ")
        };
        tracing::info!(
            "{} is ready for point-in-time recovery to {target}: start it with: pg_ctl -D {} start",
            self.root.display(),
            self.root.display()
        );
        Ok(())
    }

    /// Flushes what was written to disk: one `syncfs` per file system of
    /// the data directory and of each tablespace.
    fn sync(&self) -> Result<(), Error> {
        use std::os::unix::io::AsRawFd;
        let mut dirs = vec![self.root.clone()];
        dirs.extend(self.placed.values().cloned());
        for dir in dirs {
            let flushed = std::fs::File::open(&dir).and_then(|d| {
                // SAFETY: the descriptor is open for the duration of the call.
                if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
            flushed.map_err(|source| Error::Io {
                action: "flush",
                path: dir,
                source,
            })?;
        }
        Ok(())
    }

    /// Starts a record: makes a directory or a link at once, or opens a file
    /// for the content that follows.
    async fn start(&mut self, record: Record, local: &str, results: &mut Results) -> Option<Open> {
        let info = record.file_info.clone().unwrap_or_default();
        let modified = info.mod_time.and_then(|t| SystemTime::try_from(t).ok());
        if local == "/" {
            results.send(&record, Ok::<(), String>(())).await;
            return None;
        }
        if is_own_file(local) {
            // The plugin's own description of the backup: not part of the data directory.
            tracing::info!("{} is not written into the data directory", record.pathname);
            return Some(self.own(record, local));
        }
        let path = match self.target(local) {
            Ok(p) => p,
            Err(why) => {
                results.send(&record, Err(why)).await;
                return None;
            }
        };
        let top = tablespace_of(local)
            .filter(|oid| local == format!("/pg_tblspc/{oid}"))
            .map(str::to_string);
        let cannot_create = |source| FileError::Io {
            action: "create",
            path: path.clone(),
            source,
        };
        let made = if let Some(oid) = top {
            // The tablespace's directory, and the link PostgreSQL follows to it.
            let link = self.root.join("pg_tblspc").join(&oid);
            std::fs::create_dir_all(&path)
                .and_then(|()| std::os::unix::fs::symlink(&path, &link))
                .map_err(cannot_create)
                .and_then(|()| self.give(&link))
                .map(|()| {
                    self.directories
                        .push((path.clone(), info.mode & 0o777, modified));
                })
        } else if info.mode & MODE_DIR != 0 {
            std::fs::create_dir(&path)
                .or_else(|e| if path.is_dir() { Ok(()) } else { Err(e) })
                .map(|()| {
                    self.directories
                        .push((path.clone(), info.mode & 0o777, modified));
                })
                .map_err(cannot_create)
        } else if info.mode & MODE_SYMLINK != 0 {
            std::os::unix::fs::symlink(&record.target, &path).map_err(cannot_create)
        } else {
            let file = self.create_file(&path);
            let local = local.to_string();
            return Some(match file {
                Ok(f) => Open {
                    record,
                    local,
                    file: Some(FileOut::new(f, self.config.sync)),
                    path,
                    error: None,
                    piece: None,
                },
                Err(e) => Open {
                    error: Some(e),
                    record,
                    local,
                    file: None,
                    path,
                    piece: None,
                },
            });
        };
        let result = made.and_then(|()| self.give(&path));
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
        let list = tablespaces::parse(bytes).map_err(Error::BadTablespaceList)?;
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
    fn target(&mut self, pathname: &str) -> Result<PathBuf, FileError> {
        let relative = Path::new(pathname.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(FileError::Outside(pathname.to_string()));
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
                .map_err(|source| FileError::Io {
                    action: "create",
                    path: self.root.clone(),
                    source,
                })?;
            self.give(&self.root)?;
            self.started = true;
        }
        Ok(self.root.join(relative))
    }

    /// Gives a directory or link just made to `owner`, if there is one.
    fn give(&self, path: &Path) -> Result<(), FileError> {
        match &self.config.owner {
            Some(owner) => owner.give(path),
            None => Ok(()),
        }
    }

    /// Closes a file, gives it its mode and mtime, and answers its record.
    async fn close(&mut self, open: Open, early: Option<FileError>, results: &mut Results) {
        let Open {
            record,
            local,
            file,
            path,
            error,
            piece,
        } = open;
        if let Some(piece) = piece {
            let ended = match (error.or(early), self.pitr.as_mut()) {
                (Some(e), _) => Err(e),
                (None, Some(pitr)) => pitr.wal.end(piece).map_err(FileError::from),
                (None, None) => Ok(()),
            };
            match ended {
                Ok(()) => results.send(&record, Ok::<(), FileError>(())).await,
                Err(why) => {
                    results.send(&record, Err(&why)).await;
                    self.wal_failed.push((record.pathname.clone(), why));
                }
            }
            return;
        }
        if local == chain::RECORD {
            let bytes = std::mem::take(&mut self.own);
            let read = error.or(early).map_or_else(
                || self.read_chain(&bytes),
                |source| {
                    Err(Error::OwnRecord {
                        record: chain::RECORD,
                        source,
                    })
                },
            );
            match read {
                Ok(()) => results.send(&record, Ok::<(), String>(())).await,
                Err(refused) => {
                    results.send(&record, Err(refused.to_string())).await;
                    self.refused = Some(refused);
                }
            }
            return;
        }
        if local == tablespaces::RECORD {
            let bytes = std::mem::take(&mut self.own);
            if let Err(refused) = self.place_all(&bytes) {
                results.send(&record, Err(refused.to_string())).await;
                self.refused = Some(refused);
                return;
            }
        }
        if local == names::MANIFEST {
            let bytes = std::mem::take(&mut self.own);
            if self.tablespaces.is_empty() {
                self.tablespaces = tablespaces_in(&bytes);
            }
            self.snapshot = serde_json::from_slice(&bytes).ok();
        }
        let mut result = match error.or(early) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if let (Some(file), Ok(())) = (file, &result) {
            let info = record.file_info.clone().unwrap_or_default();
            result = file
                .finish()
                .await
                .and_then(|(std_file, written)| {
                    if wal::is_base_segment(&local) {
                        // Changed after its checksum; backup_manifest lists no WAL.
                        wal::fill_out(&path, &std_file)?;
                    } else if let Some(relative) = local.strip_prefix('/') {
                        self.sums.insert(relative.into(), written);
                    }
                    std_file.set_permissions(std::fs::Permissions::from_mode(info.mode & 0o777))?;
                    match info.mod_time.and_then(|t| SystemTime::try_from(t).ok()) {
                        Some(t) => std_file.set_modified(t),
                        None => Ok(()),
                    }
                })
                .map_err(|source| FileError::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                });
        }
        results.send(&record, result).await;
    }
}

/// Where a record of a snapshot that carries its WAL goes.
fn place(pitr: &Pitr, pathname: &str) -> Place {
    if pathname == pitr.base {
        return Place::Data("/".into());
    }
    if let Some(rest) = pathname
        .strip_prefix(pitr.base.as_str())
        .filter(|rest| rest.starts_with('/'))
    {
        return Place::Data(rest.to_string());
    }
    if let Some(name) = pathname.strip_prefix(&format!("{}/", chain::WAL)) {
        if let Some(piece) = pitr.chain.pieces.iter().find(|p| p.path() == pathname) {
            return Place::Piece(piece.clone());
        }
        if parse_history_file_name(name).is_some() {
            return Place::History(name.to_string());
        }
        return Place::Skip;
    }
    if pathname == names::MANIFEST {
        return Place::Data(pathname.to_string());
    }
    Place::Skip
}

/// Whether a record is one of the plugin's own files, never written into
/// the data directory.
fn is_own_file(pathname: &str) -> bool {
    pathname == names::MANIFEST || pathname == tablespaces::RECORD || pathname == chain::RECORD
}

/// The OID of the tablespace a record belongs to: `/pg_tblspc/<oid>[/...]`.
fn tablespace_of(pathname: &str) -> Option<&str> {
    let rest = pathname.strip_prefix("/pg_tblspc/")?;
    let oid = rest.split('/').next()?;
    (!oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit())).then_some(oid)
}

/// The tablespaces `/manifest.json` names, by OID: name and directory.
fn tablespaces_in(manifest: &[u8]) -> HashMap<String, (String, PathBuf)> {
    let Ok(m) = serde_json::from_slice::<crate::postgres::manifest::Manifest>(manifest) else {
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
        let manifest = self.root.join("backup_manifest");
        let text = std::fs::read_to_string(&manifest).map_err(io("read", &manifest))?;
        let rewritten = without_entry(&text, "tablespace_map")
            .ok_or(Error::Verify(VerifyError::NoTablespaceMapEntry))?;
        let fresh = manifest.with_extension("new");
        std::fs::write(&fresh, rewritten).map_err(io("write", &fresh))?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))
            .map_err(io("write", &fresh))?;
        self.give(&fresh)?;
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
