//! The copy of a base backup: pg_basebackup run once, its tar stream (or,
//! with tablespaces, one archive per tablespace through named pipes) read
//! member by member, each handed to Plakar as a record with its real
//! metadata: a file is announced, its bytes go from the pipe to the `Open`
//! that asks for them, and only then is the next member read, so nothing is
//! spooled.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use super::direct::{self, DataDir, Served};
use super::options::PhysicalSource;
use super::tablespaces::{self, Tablespace};
use super::tar::{self, Kind};
use crate::physical::error::{CopyError, Error, PipeError};
use crate::postgres::manifest::{Manifest, WalRange};
use crate::postgres::tools::{Outcome, Running, Tool, Toolbox};
use crate::progress::Progress;
use crate::protocol::in_order::OpenCalls;
use crate::protocol::record::{self, Entry, EntryKind};
use crate::protocol::source::{Content, ImportRun};
use crate::protocol::CHUNK_SIZE;

/// What a base backup is taken with, as `Init` found it.
pub struct BaseBackup {
    /// The source's options.
    pub config: PhysicalSource,
    /// The client tools of the server's major version.
    pub toolbox: Toolbox,
    /// The manifest as `Init` knew it.
    pub manifest: Manifest,
    /// When `Init` ran: every record of the copy carries it as its device number.
    pub started: SystemTime,
    /// The tablespaces outside the data directory, when `Init` ran.
    pub tablespaces: Vec<Tablespace>,
    /// The data directory, when it is read directly on this host.
    pub direct: Option<DataDir>,
    /// The files of a direct copy, which `Open` reads.
    pub served: Served,
}

/// One `Import` call: the copy, and the `Open` calls it serves.
pub struct Copy<'a> {
    pub run: &'a mut ImportRun,
    pub opens: OpenCalls,
    /// Where the data directory's records go: `` for `/` itself, or
    /// `/bases/<id>` in a snapshot that carries its WAL.
    pub base: String,
    /// Every record of the copy announced so far, for later runs to carry.
    pub kept: Vec<Entry>,
}

/// What a copy leaves for the snapshot's manifest.
pub struct Copied {
    /// The manifest, with the copy's WAL range.
    pub manifest: Manifest,
    /// The data directory's record, owned as its files are.
    pub root: Entry,
}

/// The bytes of PostgreSQL's own backup manifest kept to read its WAL range.
const BACKUP_MANIFEST_LIMIT: usize = 256 * 1024 * 1024;

impl Copy<'_> {
    /// Copies the cluster: pg_basebackup's stream member by member, then the manifest.
    pub async fn backup(&mut self, backup: &BaseBackup) -> Result<(), Error> {
        let copied = self.copy_base(backup).await?;
        self.own_file(
            crate::names::MANIFEST,
            &copied.manifest.to_json(),
            &copied.root,
        )
        .await
        .map(drop)
    }

    /// Announces a record of the copy, kept for later runs.
    async fn put(&mut self, entry: &Entry) -> Result<(), crate::protocol::source::Ended> {
        self.kept.push(entry.clone());
        self.run.announce(record::entry_record(entry)).await
    }

    /// Copies the cluster under [`Copy::base`]: pg_basebackup's stream member
    /// by member, and the list of tablespaces.
    pub async fn copy_base(&mut self, backup: &BaseBackup) -> Result<Copied, Error> {
        if let Some(dir) = &backup.direct {
            let job = direct::Job {
                base: &self.base,
                conn: &backup.config.conn,
                fast_checkpoint: backup.config.fast_checkpoint,
                system_identifier: backup.manifest.server.system_identifier.as_deref(),
                keep: backup.config.archive.is_some(),
            };
            let taken = direct::copy(self.run, &job, dir, &backup.served).await?;
            self.kept.extend(taken.kept);
            let mut manifest = backup.manifest.clone();
            manifest.wal = Some(taken.wal);
            self.tablespace_list(backup, &taken.root).await?;
            return Ok(Copied {
                manifest,
                root: taken.root,
            });
        }
        // Every record of this backup carries its start in `dev`: Plakar's cache
        // then never takes a file's content from an earlier snapshot on the
        // strength of its size and mtime, which cannot prove a PostgreSQL file
        // unchanged (a write in the same second keeps both). Unchanged content
        // is still deduplicated, chunk by chunk.
        let dev = backup
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        // `/` stands for the data directory, and is announced with the owner
        // of the stream's first member (see `copy_members`).
        let mut root = Root {
            entry: Entry {
                path: if self.base.is_empty() {
                    "/".into()
                } else {
                    self.base.clone()
                },
                kind: EntryKind::Directory,
                perm: 0o700,
                modified: backup.started,
                uid: 0,
                gid: 0,
                user: String::new(),
                group: String::new(),
                dev,
                ino: 0,
            },
            announced: false,
        };

        let mut progress = Progress::start("physical backup", "/");
        let mut backup_manifest = Vec::new();
        let (copied, outcome) = if backup.tablespaces.is_empty() {
            self.copy_stream(backup, &mut root, &mut progress, &mut backup_manifest)
                .await?
        } else {
            self.copy_archives(backup, &mut root, &mut progress, &mut backup_manifest)
                .await?
        };
        let user = &backup.config.conn.user;
        // pg_basebackup's own failure is usually the cause of a broken stream,
        // so it comes first; a stream we stopped reading explains the rest.
        let failure = outcome.and_then(|o| o.failed()).map(Box::new);
        if failure.is_some() || copied.is_err() {
            let failed = Error::BaseBackup {
                failure,
                copy: copied.err(),
                user: user.clone(),
            };
            progress.failed(failed.to_string());
            return Err(failed);
        }
        progress.done();
        if !root.announced {
            self.put(&root.entry.clone()).await?;
        }

        let mut manifest = backup.manifest.clone();
        manifest.wal = WalRange::from_backup_manifest(&backup_manifest);
        if manifest.wal.is_none() {
            tracing::warn!("backup_manifest has no WAL range; the manifest leaves it out");
        }
        self.tablespace_list(backup, &root.entry).await?;
        Ok(Copied {
            manifest,
            root: root.entry,
        })
    }

    /// `/.tablespaces.json`, when the cluster has tablespaces.
    async fn tablespace_list(&mut self, backup: &BaseBackup, root: &Entry) -> Result<(), Error> {
        if !backup.tablespaces.is_empty() {
            let list = tablespaces::to_json(&backup.tablespaces);
            let path = format!("{}{}", self.base, tablespaces::RECORD);
            let entry = self.own_file(&path, &list, root).await?;
            self.kept.push(entry);
        }
        Ok(())
    }

    /// Announces and serves a file of the plugin's own, owned like `/`; its record.
    pub async fn own_file(
        &mut self,
        path: &str,
        bytes: &[u8],
        root: &Entry,
    ) -> Result<Entry, Error> {
        let entry = Entry {
            path: path.into(),
            kind: EntryKind::File(bytes.len() as u64),
            perm: 0o600,
            modified: SystemTime::now(),
            ..root.clone()
        };
        self.run.announce(record::entry_record(&entry)).await?;
        let mut content = bytes;
        self.serve(&entry.path, bytes.len() as u64, &mut content, None)
            .await
            .map_err(|copy| Error::BaseBackup {
                failure: None,
                copy: Some(copy),
                user: String::new(),
            })?;
        Ok(entry)
    }

    /// A cluster without tablespaces: one tar stream on pg_basebackup's stdout,
    /// with `backup_manifest` as its last member.
    async fn copy_stream(
        &mut self,
        backup: &BaseBackup,
        root: &mut Root,
        progress: &mut Progress,
        backup_manifest: &mut Vec<u8>,
    ) -> Result<(Result<(), CopyError>, Option<Outcome>), Error> {
        let mut running = start_basebackup(backup, None)?;
        let stdout = running.child.stdout.take().expect("stdout is piped");
        let mut stream = BufReader::with_capacity(CHUNK_SIZE, stdout);
        let copied = self
            .copy_members(&mut stream, "", root, progress, backup_manifest)
            .await;
        if copied.is_ok() {
            // The second zero block and whatever padding follows.
            let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
        }
        drop(stream);
        Ok((copied, Some(running.finish().await)))
    }

    /// A cluster with tablespaces: pg_basebackup writes one tar per tablespace
    /// and one for the data directory into a directory, which must be empty
    /// when it starts, so each archive is a named pipe made in a private
    /// directory as soon as pg_basebackup has created it (it connects and
    /// has the server checkpoint before it opens the first). Nothing is
    /// written to disk: each archive is read as pg_basebackup writes it, in the
    /// order it opens them (the tablespaces, then the data directory), and
    /// `backup_manifest`, which it writes before it closes the last archive, is
    /// read alongside into memory.
    async fn copy_archives(
        &mut self,
        backup: &BaseBackup,
        root: &mut Root,
        progress: &mut Progress,
        backup_manifest: &mut Vec<u8>,
    ) -> Result<(Result<(), CopyError>, Option<Outcome>), Error> {
        let private = tempfile::Builder::new()
            .prefix("plakar-postgresql-")
            .tempdir()
            .map_err(|source| Error::Io {
                action: "create",
                path: std::env::temp_dir(),
                source,
            })?;
        let mut tars: Vec<String> = backup
            .tablespaces
            .iter()
            .map(|t| format!("{}.tar", t.oid))
            .collect();
        tars.push("base.tar".into());
        let manifest_pipe = "backup_manifest.tmp";
        let pipes: Vec<&str> = tars
            .iter()
            .map(String::as_str)
            .chain([manifest_pipe])
            .collect();
        let (mut running, out, piped) = start_into_pipes(backup, private.path(), &pipes).await?;
        if let Err(why) = piped {
            // Ended by itself, its own words say why; else it waits for pipes
            // that will never be read, and its end, by our hand, says nothing.
            let ended = matches!(running.child.try_wait(), Ok(Some(_)));
            if !ended {
                let _ = running.child.start_kill();
            }
            let outcome = running.finish().await;
            return Ok((Err(why), ended.then_some(outcome)));
        }

        let copied = async {
            let (opened_tx, mut opened) = mpsc::unbounded_channel();
            for name in &tars {
                let (path, name, tx) = (out.join(name), name.clone(), opened_tx.clone());
                // Opening a pipe to read waits for its writer.
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send((name, std::fs::File::open(path)));
                });
            }
            drop(opened_tx);
            let manifest_path = out.join(manifest_pipe);
            let manifest = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                std::fs::File::open(manifest_path)
                    .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
                    .map(|_| bytes)
            });
            let mut left = tars.len();
            let mut failed = None;
            while left > 0 {
                let next = tokio::select! {
                    biased;
                    next = opened.recv() => next,
                    _ = running.child.wait() => None,
                };
                let Some((name, file)) = next else { break };
                left -= 1;
                let file = match file {
                    Ok(f) => f,
                    Err(e) => {
                        failed = Some(CopyError::Archive { name, source: e });
                        break;
                    }
                };
                let prefix = match name.strip_suffix(".tar") {
                    Some("base") | None => String::new(),
                    Some(oid) => format!("/pg_tblspc/{oid}"),
                };
                let mut stream =
                    BufReader::with_capacity(CHUNK_SIZE, tokio::fs::File::from_std(file));
                if let Err(e) = self
                    .copy_members(&mut stream, &prefix, root, progress, backup_manifest)
                    .await
                {
                    failed = Some(e);
                    break;
                }
                let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
            }
            // Readers still waiting for a writer (pg_basebackup failed): a
            // writer that comes and goes ends their wait.
            for name in tars.iter().map(String::as_str).chain([manifest_pipe]) {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(out.join(name));
            }
            let manifest = manifest.await;
            if let Some(why) = failed {
                return Err(why);
            }
            if left > 0 {
                // pg_basebackup ended early: its own words, first, say why.
                return Err(CopyError::NotAllArchives(tars.len()));
            }
            let bytes = match manifest {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => return Err(CopyError::Manifest(e)),
                Err(e) => return Err(CopyError::Manifest(std::io::Error::other(e))),
            };
            // A tablespace created since `Init` has an archive nobody read.
            let strays: Vec<String> = std::fs::read_dir(&out)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| {
                            !tars.contains(n) && n != manifest_pipe && n != "backup_manifest"
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !strays.is_empty() {
                return Err(CopyError::TablespaceCreated(strays));
            }
            let entry = Entry {
                path: format!("{}/backup_manifest", self.base),
                kind: EntryKind::File(bytes.len() as u64),
                perm: 0o600,
                modified: SystemTime::now(),
                ..root.entry.clone()
            };
            self.put(&entry).await?;
            let mut content = &bytes[..];
            self.serve(&entry.path, bytes.len() as u64, &mut content, None)
                .await?;
            *backup_manifest = bytes;
            Ok(())
        }
        .await;
        if copied.is_err() {
            // A pg_basebackup left waiting on a pipe nobody reads would never end.
            if tokio::time::timeout(Duration::from_secs(5), running.child.wait())
                .await
                .is_err()
            {
                let _ = running.child.start_kill();
            }
        }
        let outcome = running.finish().await;
        drop(private);
        Ok((copied, Some(outcome)))
    }

    /// Reads the tar members and hands each to Plakar, `/` before the first.
    async fn copy_members(
        &mut self,
        stream: &mut (impl AsyncRead + Unpin),
        prefix: &str,
        root: &mut Root,
        progress: &mut Progress,
        backup_manifest: &mut Vec<u8>,
    ) -> Result<(), CopyError> {
        let mut block = [0u8; tar::BLOCK];
        // A tablespace's archive holds what is under its directory, not the
        // directory itself, which `/pg_tblspc/<oid>` then stands for.
        let mut top_announced = prefix.is_empty();
        loop {
            stream
                .read_exact(&mut block)
                .await
                .map_err(CopyError::EndedEarly)?;
            let Some(header) = tar::parse(&block)? else {
                return Ok(());
            };
            let kind = match header.kind {
                Kind::File => EntryKind::File(header.size),
                Kind::Directory => EntryKind::Directory,
                Kind::Symlink => EntryKind::Symlink(header.link.clone()),
                Kind::Other(t) => {
                    return Err(CopyError::OtherKind {
                        name: header.name,
                        kind: t as char,
                    })
                }
            };
            let mut entry = Entry {
                path: format!("{}{prefix}{}", self.base, record_path(&header.name)),
                kind,
                perm: header.mode & 0o777,
                modified: UNIX_EPOCH + Duration::from_secs(header.mtime.max(0) as u64),
                uid: header.uid,
                gid: header.gid,
                user: header.uname.clone(),
                group: header.gname.clone(),
                dev: root.entry.dev,
                ino: 0,
            };
            if !root.announced {
                // Every member but backup_manifest comes from the server: its
                // files, which must belong to its user, or files it makes as
                // that user (backup_label, sent first). So the first member
                // names the data directory's owner, which `/` then shows.
                root.entry.uid = entry.uid;
                root.entry.gid = entry.gid;
                root.entry.user = entry.user.clone();
                root.entry.group = entry.group.clone();
                self.put(&root.entry.clone()).await?;
                root.announced = true;
            }
            if !top_announced {
                let top = Entry {
                    path: format!("{}{prefix}", self.base),
                    kind: EntryKind::Directory,
                    perm: 0o700,
                    ..entry.clone()
                };
                self.put(&top).await?;
                top_announced = true;
            }
            let backup_manifest_path = format!("{}/backup_manifest", self.base);
            if entry.path == backup_manifest_path {
                // pg_basebackup adds it itself, with made-up ids (2048:1024):
                // given the data directory's owner, it looks like the file it is.
                entry.uid = root.entry.uid;
                entry.gid = root.entry.gid;
                entry.user = root.entry.user.clone();
                entry.group = root.entry.group.clone();
            }
            self.put(&entry).await?;
            if header.kind == Kind::File {
                let keep = (entry.path == backup_manifest_path).then_some(&mut *backup_manifest);
                let mut content = (&mut *stream).take(header.size);
                self.serve(&entry.path, header.size, &mut content, keep)
                    .await?;
                // Whatever Plakar did not read (it stored the file without opening it).
                tokio::io::copy(&mut content, &mut tokio::io::sink())
                    .await
                    .map_err(CopyError::Read)?;
                let mut padding = (&mut *stream).take(header.padding());
                tokio::io::copy(&mut padding, &mut tokio::io::sink())
                    .await
                    .map_err(CopyError::Read)?;
                progress.bytes += header.size;
            }
        }
    }

    /// Waits until Plakar opens the file just announced, and streams `size`
    /// bytes of `content` to it; or until Plakar stores it unopened.
    async fn serve(
        &mut self,
        path: &str,
        size: u64,
        content: &mut (impl AsyncRead + Unpin),
        keep: Option<&mut Vec<u8>>,
    ) -> Result<(), CopyError> {
        let opened = self
            .opens
            .opened(self.run, path, |asked| {
                format!(
                    "postgresql physical source: {asked} was asked for while {path} is being copied; the files of a base backup are read in order"
                )
            })
            .await?;
        match opened {
            Some(call) => stream_to(&call, size, content, keep).await,
            None => Ok(()),
        }
    }
}

/// The record `/`: the data directory, owned like the files it holds.
struct Root {
    entry: Entry,
    /// Whether it was sent (before the first member, which says who owns it).
    announced: bool,
}

/// Streams `size` bytes to an `Open` call in chunks, keeping a copy when asked.
async fn stream_to(
    tx: &Content,
    size: u64,
    content: &mut (impl AsyncRead + Unpin),
    mut keep: Option<&mut Vec<u8>>,
) -> Result<(), CopyError> {
    let mut left = size;
    while left > 0 {
        let want = left.min(CHUNK_SIZE as u64) as usize;
        let mut chunk = vec![0u8; want];
        content
            .read_exact(&mut chunk)
            .await
            .map_err(CopyError::InsideFile)?;
        left -= want as u64;
        if let Some(k) = keep.as_deref_mut() {
            if k.len() + chunk.len() <= BACKUP_MANIFEST_LIMIT {
                k.extend_from_slice(&chunk);
            }
        }
        if !tx.send(chunk.into()).await {
            // Plakar stopped reading this file; its acknowledgement says the rest.
            return Ok(());
        }
    }
    Ok(())
}

/// How many times pg_basebackup is started when it opens an archive before
/// the plugin has made it a pipe.
const PIPE_ATTEMPTS: u32 = 3;

/// Starts pg_basebackup into a new directory under `private`, and makes each
/// archive a named pipe there as soon as pg_basebackup has created the
/// directory (it connects, and has the server checkpoint, before it opens the
/// first). Should it win that race, it is stopped, before anything was read,
/// and started again. The directory, and whether the pipes are there.
async fn start_into_pipes(
    backup: &BaseBackup,
    private: &Path,
    pipes: &[&str],
) -> Result<(Running, std::path::PathBuf, Result<(), CopyError>), Error> {
    let mut attempt = 1;
    loop {
        let out = private.join(format!("archives-{attempt}"));
        let mut running = start_basebackup(backup, Some(&out))?;
        match make_pipes(&mut running, &out, pipes).await {
            Err(PipeError::Raced { name, .. }) if attempt < PIPE_ATTEMPTS => {
                tracing::warn!(
                    "pg_basebackup opened {name} before the plugin made it a pipe; starting pg_basebackup again (attempt {} of {PIPE_ATTEMPTS})",
                    attempt + 1
                );
                let _ = running.child.start_kill();
                let _ = running.finish().await;
                attempt += 1;
            }
            made => return Ok((running, out, made.map_err(CopyError::from))),
        }
    }
}

/// Waits for pg_basebackup to create `out`, then makes the pipes in it.
async fn make_pipes(running: &mut Running, out: &Path, pipes: &[&str]) -> Result<(), PipeError> {
    // pg_basebackup makes the directory once it has checked it is absent.
    while !out.is_dir() {
        if let Ok(Some(_)) = running.child.try_wait() {
            if out.is_dir() {
                break;
            }
            return Err(PipeError::Ended);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for name in pipes {
        let path = out.join(name);
        make_pipe(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => PipeError::Raced {
                name: name.to_string(),
                attempts: PIPE_ATTEMPTS,
            },
            _ => PipeError::Make {
                path: path.clone(),
                source: e,
            },
        })?;
    }
    Ok(())
}

/// Makes a named pipe only the plugin's user can open.
fn make_pipe(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `name` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts pg_basebackup: its one tar on a pipe of stdout, or with `out` its
/// archives into that directory (the pipes the copy makes there).
fn start_basebackup(backup: &BaseBackup, out: Option<&Path>) -> Result<Running, Error> {
    let stdout = match out {
        None => std::process::Stdio::piped(),
        Some(_) => std::process::Stdio::null(),
    };
    Ok(backup.toolbox.spawn(
        Tool::PgBasebackup,
        &backup.config.conn,
        &basebackup_args(&backup.config, out),
        std::process::Stdio::null(),
        stdout,
    )?)
}

/// The record path of a tar member: pg_basebackup names some members `./x`,
/// which a path from `/` must not keep.
fn record_path(member: &str) -> String {
    let parts: Vec<&str> = member
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// pg_basebackup's arguments: the whole cluster as one tar stream on stdout,
/// with the WAL it needs and PostgreSQL's own manifest inside.
fn basebackup_args(config: &PhysicalSource, dir: Option<&Path>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = match dir {
        None => vec!["--pgdata=-".into()],
        // The archives are pipes: nothing to sync, and opening them to sync would wait.
        Some(dir) => {
            let mut pgdata = std::ffi::OsString::from("--pgdata=");
            pgdata.push(dir);
            vec![pgdata, "--no-sync".into()]
        }
    };
    args.extend::<[std::ffi::OsString; 4]>([
        "--format=tar".into(),
        "--wal-method=fetch".into(),
        "--no-password".into(),
        "--label=plakar".into(),
    ]);
    args.push(
        if config.fast_checkpoint {
            "--checkpoint=fast"
        } else {
            "--checkpoint=spread"
        }
        .into(),
    );
    if let Some(rate) = &config.max_rate {
        args.push(format!("--max-rate={rate}").into());
    }
    if !config.verify_checksums {
        args.push("--no-verify-checksums".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_become_clean_record_paths() {
        assert_eq!(
            record_path("./pg_wal/archive_status"),
            "/pg_wal/archive_status"
        );
        assert_eq!(record_path("base/1/"), "/base/1");
        assert_eq!(record_path("PG_VERSION"), "/PG_VERSION");
    }
}
