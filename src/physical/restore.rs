//! The physical destination: `plakar restore -to @mydata` for
//! `postgres+bin:///path/to/directory`.
//!
//! `Init` refuses a directory that is not empty or that a server runs on.
//! `Export` writes each file of the snapshot with its mode and mtime (the
//! directory itself 0700, as PostgreSQL demands), refusing a logical snapshot
//! at its first file, before anything is written; then `pg_verifybackup`
//! checks the result against the backup's own `backup_manifest`, and the call
//! ends with an error if anything failed or does not match.

use std::ffi::OsString;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::options::PhysicalDestination;
use crate::names;
use crate::protocol::connectors::{Record, Result as RecordResult};
use crate::protocol::exporter::export_request::Packet;
use crate::protocol::exporter::{
    exporter_server, CloseRequest, CloseResponse, ExportRequest, ExportResponse, InitRequest,
    InitResponse, PingRequest, PingResponse,
};
use crate::protocol::record::{MODE_DIR, MODE_SYMLINK};
use crate::protocol::ResponseStream;
use crate::session::Slot;
use crate::tools::{Tool, Toolbox};

/// The physical exporter service.
#[derive(Debug, Default)]
pub struct PhysicalExporter {
    current: Slot<PhysicalDestination>,
}

/// Refuses a directory that holds anything, naming a running server first.
fn check_directory(dir: &Path) -> Result<(), String> {
    if dir.join("postmaster.pid").exists() {
        return Err(format!(
            "{} belongs to a running PostgreSQL server (it has a postmaster.pid); restore into a new, empty directory",
            dir.display()
        ));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(format!(
                "{} is not empty; a physical restore writes a whole data directory and overwrites nothing: name a new or empty directory",
                dir.display()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

#[tonic::async_trait]
impl exporter_server::Exporter for PhysicalExporter {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let config = PhysicalDestination::parse(&request.into_inner().config).map_err(|e| {
            Status::invalid_argument(format!("postgresql physical destination: {e}"))
        })?;
        check_directory(&config.directory).map_err(|e| {
            Status::failed_precondition(format!("postgresql physical destination: {e}"))
        })?;
        let origin = config.directory.display().to_string();
        self.current.set(config);
        Ok(Response::new(InitResponse {
            origin,
            r#type: "postgresql".into(),
            root: "/".into(),
            flags: 0,
        }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let config = self.current.get()?;
        check_directory(&config.directory)
            .map_err(|e| Status::unavailable(format!("postgresql physical destination: {e}")))?;
        Ok(Response::new(PingResponse {}))
    }

    type ExportStream = ResponseStream<ExportResponse>;

    async fn export(
        &self,
        request: Request<Streaming<ExportRequest>>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let config = self.current.get()?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut writer = Writer {
                root: config.directory.clone(),
                started: false,
                directories: Vec::new(),
                failed: Vec::new(),
                tx,
            };
            let result = writer.run(inbound).await;
            let result = match result {
                Ok(()) if writer.failed.is_empty() => verify(&config).await,
                Ok(()) => Err(format!(
                    "{} file(s) could not be written: {}",
                    writer.failed.len(),
                    writer.failed.join(" | ")
                )),
                Err(e) => Err(e),
            };
            if let Err(why) = result {
                tracing::error!("{why}");
                let _ = writer
                    .tx
                    .send(Err(Status::aborted(format!(
                        "postgresql physical destination: {why}"
                    ))))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close(&self, _: Request<CloseRequest>) -> Result<Response<CloseResponse>, Status> {
        self.current.clear();
        Ok(Response::new(CloseResponse {}))
    }
}

/// A file being written.
struct Open {
    record: Record,
    file: Option<tokio::fs::File>,
    path: PathBuf,
    error: Option<String>,
}

/// One `Export` call writing a data directory.
struct Writer {
    root: PathBuf,
    /// Whether the directory was created (at the first file of a physical snapshot).
    started: bool,
    /// Directories written, with their mode and mtime, applied at the end
    /// (a directory made read-only first could not be filled).
    directories: Vec<(PathBuf, u32, Option<SystemTime>)>,
    failed: Vec<String>,
    tx: mpsc::Sender<Result<ExportResponse, Status>>,
}

impl Writer {
    async fn run(&mut self, mut inbound: Streaming<ExportRequest>) -> Result<(), String> {
        let mut current: Option<Open> = None;
        loop {
            let packet = match inbound.message().await {
                Ok(Some(ExportRequest { packet: Some(p) })) => p,
                Ok(Some(ExportRequest { packet: None })) => continue,
                Ok(None) => break,
                Err(status) => {
                    return Err(format!("the restore was interrupted: {}", status.message()))
                }
            };
            match packet {
                Packet::Record(record) => {
                    if let Some(open) = current.take() {
                        self.finish(open, Some("its content ended early".into()))
                            .await;
                    }
                    if names::is_logical(&record.pathname) {
                        let refusal = format!(
                            "{} comes from a logical backup (pg_dump), not a data directory; nothing was written. Restore the snapshot with a postgres:// destination: plakar destination add mypgdst postgres://user@host/",
                            record.pathname
                        );
                        tracing::error!("postgresql physical destination: {refusal}");
                        crate::restore::drain(inbound).await;
                        return Err(refusal);
                    }
                    if let Some(open) = self.begin(record).await {
                        current = Some(open);
                    }
                }
                Packet::Chunk(chunk) if chunk.is_empty() => {
                    if let Some(open) = current.take() {
                        self.finish(open, None).await;
                    }
                }
                Packet::Chunk(chunk) => {
                    if let Some(open) = &mut current {
                        if let (Some(file), None) = (&mut open.file, &open.error) {
                            if let Err(e) = file.write_all(&chunk).await {
                                open.error =
                                    Some(format!("cannot write {}: {e}", open.path.display()));
                                open.file = None;
                            }
                        }
                    }
                }
            }
        }
        if let Some(open) = current.take() {
            self.finish(
                open,
                Some("Plakar ended the restore before the end of this file".into()),
            )
            .await;
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
            return Err("the snapshot holds no data directory file".into());
        }
        Ok(())
    }

    /// Starts a record: makes a directory or a link at once, or opens a file
    /// for the content that follows.
    async fn begin(&mut self, record: Record) -> Option<Open> {
        let info = record.file_info.clone().unwrap_or_default();
        let modified = info.mod_time.and_then(|t| SystemTime::try_from(t).ok());
        if record.pathname == "/" {
            self.reply(&record, Ok(())).await;
            return None;
        }
        if record.pathname == names::MANIFEST {
            // The plugin's own description of the backup: not part of the data directory.
            tracing::info!("{} is not written into the data directory", names::MANIFEST);
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
                self.reply(&record, Err(why)).await;
                return None;
            }
        };
        let made = if info.mode & MODE_DIR != 0 {
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
                .open(&path);
            return Some(match file {
                Ok(f) => Open {
                    record,
                    file: Some(tokio::fs::File::from_std(f)),
                    path,
                    error: None,
                },
                Err(e) => Open {
                    error: Some(format!("cannot create {}: {e}", path.display())),
                    record,
                    file: None,
                    path,
                },
            });
        };
        let result = made.map_err(|e| format!("cannot create {}: {e}", path.display()));
        self.reply(&record, result).await;
        None
    }

    /// Where a record goes under the target directory; created on first use.
    fn target(&mut self, pathname: &str) -> Result<PathBuf, String> {
        let relative = Path::new(pathname.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!("{pathname} is not a path inside a data directory"));
        }
        if !self.started {
            std::fs::create_dir_all(&self.root)
                .and_then(|()| {
                    std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| format!("cannot create {}: {e}", self.root.display()))?;
            self.started = true;
        }
        Ok(self.root.join(relative))
    }

    /// Closes a file, gives it its mode and mtime, and answers its record.
    async fn finish(&mut self, open: Open, early: Option<String>) {
        let Open {
            record,
            file,
            path,
            error,
        } = open;
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
        self.reply(&record, result).await;
    }

    async fn reply(&mut self, record: &Record, result: Result<(), String>) {
        let error = match result {
            Ok(()) => String::new(),
            Err(e) => {
                let message = format!("postgresql physical destination: {}: {e}", record.pathname);
                tracing::error!("{message}");
                self.failed.push(format!("{}: {e}", record.pathname));
                message
            }
        };
        let _ = self
            .tx
            .send(Ok(ExportResponse {
                result: Some(RecordResult {
                    header: Some(record.clone()),
                    error,
                }),
            }))
            .await;
    }
}

/// Checks the restored directory with pg_verifybackup against its `backup_manifest`.
async fn verify(config: &PhysicalDestination) -> Result<(), String> {
    let dir = &config.directory;
    let version = std::fs::read_to_string(dir.join("PG_VERSION"))
        .map_err(|e| format!("the restored directory has no readable PG_VERSION: {e}"))?;
    let major: u32 = version
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("PG_VERSION holds {:?}, not a version", version.trim()))?;
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
                    format!(
                        "pg_verifybackup was not found, so the restore cannot be verified; install the PostgreSQL {major} client tools or set pg_bin_dir to their directory"
                    )
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
        .spawn_local(Tool::PgVerifybackup, &args)
        .map_err(|e| e.to_string())?
        .finish()
        .await;
    match outcome.failure() {
        None => {
            tracing::info!(
                "pg_verifybackup: {} matches its backup_manifest; start it with: pg_ctl -D {} start",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Some(why) => Err(format!(
            "the restored directory {} does not match its backup_manifest: {why}",
            dir.display()
        )),
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
