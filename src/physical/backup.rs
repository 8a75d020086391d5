//! The physical source: `plakar backup @mybin` for `postgres+bin://`.
//!
//! `Init` checks, before anything is copied, what a base backup needs (see
//! `preflight`), and takes a temporary replication slot so that the WAL the
//! copy needs cannot be recycled before it is fetched. `Import` runs
//! pg_basebackup once, its tar stream on a pipe, and hands each member to
//! Plakar as a record with its real metadata: a file is announced, its bytes go
//! from the pipe to the `Open` that asks for them, and only then is the next
//! member read, so nothing is spooled. `/manifest.json` comes last, once the
//! stop position is known.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::options::PhysicalSource;
use super::tar::{self, Kind};
use super::{explain, preflight};
use crate::connection::server_major;
use crate::manifest;
use crate::progress::Progress;
use crate::protocol::importer::{
    importer_server, CloseRequest, CloseResponse, ImportRequest, ImportResponse, InitRequest,
    InitResponse, OpenRequest, OpenResponse, PingRequest, PingResponse,
};
use crate::protocol::record::{self, Entry, EntryKind};
use crate::protocol::{flags, ResponseStream, CHUNK_SIZE};
use crate::restore::order::MAINTENANCE_DB;
use crate::session::Slot;
use crate::tools::{Kit, Tool, Toolbox};

/// An `Open` call waiting for its file's bytes.
struct OpenCall {
    path: String,
    tx: mpsc::Sender<Result<OpenResponse, Status>>,
}

/// A physical backup in progress: what `Init` learnt and holds.
pub struct PhysicalBackup {
    config: PhysicalSource,
    toolbox: Toolbox,
    /// Holds the temporary replication slot for as long as it lives.
    _admin: Client,
    /// The manifest as `Init` knew it.
    manifest: serde_json::Map<String, Value>,
    opens_tx: mpsc::Sender<OpenCall>,
    opens_rx: Mutex<Option<mpsc::Receiver<OpenCall>>>,
    started: SystemTime,
}

impl std::fmt::Debug for PhysicalBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalBackup")
            .field("target", &self.config.conn.target())
            .finish()
    }
}

/// The physical importer service.
#[derive(Debug, Default)]
pub struct PhysicalImporter {
    current: Slot<PhysicalBackup>,
}

async fn prepare(config: PhysicalSource) -> Result<PhysicalBackup, String> {
    let conn = &config.conn;
    let admin = conn
        .connect(MAINTENANCE_DB)
        .await
        .map_err(|e| e.to_string())?;
    let major = server_major(&admin).await.map_err(|e| e.to_string())?;
    let toolbox = Toolbox::locate(conn, major, Kit::PHYSICAL_BACKUP)
        .await
        .map_err(|e| e.to_string())?;
    preflight::check(&admin, conn)
        .await
        .map_err(|e| e.to_string())?;
    let slot = preflight::reserve_wal(&admin)
        .await
        .map_err(|e| e.to_string())?;
    let backup = json!({
        "layout": "physical",
        "options": {
            "checkpoint": if config.fast_checkpoint { "fast" } else { "spread" },
            "max_rate": config.max_rate,
            "verify_checksums": config.verify_checksums,
            "ssl_mode": conn.tls.mode.as_str(),
        },
        "pg_basebackup_version": toolbox.version_of(Tool::PgBasebackup),
        "replication_slot": slot.as_str(),
    });
    let manifest = manifest::physical(conn, &admin, backup).await;
    let (opens_tx, opens_rx) = mpsc::channel(4);
    Ok(PhysicalBackup {
        config,
        toolbox,
        _admin: admin,
        manifest,
        opens_tx,
        opens_rx: Mutex::new(Some(opens_rx)),
        started: SystemTime::now(),
    })
}

#[tonic::async_trait]
impl importer_server::Importer for PhysicalImporter {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let config = PhysicalSource::parse(&request.into_inner().config)
            .map_err(|e| Status::invalid_argument(format!("postgresql physical source: {e}")))?;
        let origin = config.conn.target();
        let backup = prepare(config)
            .await
            .map_err(|e| Status::failed_precondition(format!("postgresql physical source: {e}")))?;
        tracing::info!(
            "physical backup of {} with {}",
            backup.config.conn.target(),
            backup.toolbox.version
        );
        self.current.set(backup);
        Ok(Response::new(InitResponse {
            origin,
            r#type: "postgresql".into(),
            root: "/".into(),
            flags: flags::STREAM,
        }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let backup = self.current.get()?;
        backup
            .config
            .conn
            .ping(MAINTENANCE_DB)
            .await
            .map_err(|e| Status::unavailable(format!("postgresql physical source: {e}")))?;
        Ok(Response::new(PingResponse {}))
    }

    type ImportStream = ResponseStream<ImportResponse>;

    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let backup = self.current.get()?;
        let opens = backup
            .opens_rx
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| Status::failed_precondition("a physical backup is imported once"))?;
        let (tx, rx) = mpsc::channel(16);
        let mut run = Run {
            acks: request.into_inner(),
            opens,
            tx,
            pending: HashSet::new(),
            failures: Vec::new(),
        };
        tokio::spawn(async move {
            let result = run.backup(&backup).await;
            run.finish(result).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type OpenStream = ResponseStream<OpenResponse>;

    async fn open(
        &self,
        request: Request<OpenRequest>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let backup = self.current.get()?;
        let path = request
            .into_inner()
            .record
            .map(|r| r.pathname)
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(4);
        backup
            .opens_tx
            .send(OpenCall { path, tx })
            .await
            .map_err(|_| Status::failed_precondition("the physical backup is over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close(&self, _: Request<CloseRequest>) -> Result<Response<CloseResponse>, Status> {
        self.current.clear();
        Ok(Response::new(CloseResponse {}))
    }
}

/// One `Import` call.
struct Run {
    acks: Streaming<ImportRequest>,
    opens: mpsc::Receiver<OpenCall>,
    tx: mpsc::Sender<Result<ImportResponse, Status>>,
    /// Records announced and not yet acknowledged.
    pending: HashSet<String>,
    /// What Plakar could not store.
    failures: Vec<String>,
}

/// The bytes of PostgreSQL's own backup manifest kept to read its WAL range.
const BACKUP_MANIFEST_LIMIT: usize = 256 * 1024 * 1024;

impl Run {
    /// Copies the cluster: pg_basebackup's stream member by member, then the manifest.
    async fn backup(&mut self, backup: &PhysicalBackup) -> Result<(), String> {
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
        let root = Entry {
            path: "/".into(),
            kind: EntryKind::Directory,
            perm: 0o700,
            modified: backup.started,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            dev,
        };
        self.announce(record::entry_record(&root)).await?;

        let args = basebackup_args(&backup.config);
        let mut running = backup
            .toolbox
            .spawn(
                Tool::PgBasebackup,
                &backup.config.conn,
                &args,
                std::process::Stdio::null(),
                std::process::Stdio::piped(),
            )
            .map_err(|e| e.to_string())?;
        let stdout = running.child.stdout.take().expect("stdout is piped");
        let mut stream = BufReader::with_capacity(CHUNK_SIZE, stdout);
        let mut progress = Progress::start("physical backup", "/");
        let mut backup_manifest = Vec::new();
        let copied = self
            .copy_members(&mut stream, dev, &mut progress, &mut backup_manifest)
            .await;
        if copied.is_ok() {
            // The second zero block and whatever padding follows.
            let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
        }
        drop(stream);
        let outcome = running.finish().await;
        let user = &backup.config.conn.user;
        // pg_basebackup's own failure is usually the cause of a broken stream,
        // so it comes first; a stream we stopped reading explains the rest.
        let failed = match (outcome.failure(), copied) {
            (None, Ok(())) => None,
            (Some(why), Ok(())) => Some(explain::basebackup_failure(&why, user)),
            (None, Err(copy)) => Some(copy),
            (Some(why), Err(copy)) => Some(format!(
                "{}; {copy}",
                explain::basebackup_failure(&why, user)
            )),
        };
        if let Some(why) = failed {
            progress.failed(&why);
            return Err(why);
        }
        progress.done();

        let mut manifest = backup.manifest.clone();
        manifest.insert("wal".into(), wal_range(&backup_manifest));
        let bytes = serde_json::to_vec_pretty(&Value::Object(manifest)).expect("JSON serialises");
        let entry = Entry {
            path: crate::names::MANIFEST.into(),
            kind: EntryKind::File(bytes.len() as u64),
            perm: 0o600,
            modified: SystemTime::now(),
            ..root
        };
        self.announce(record::entry_record(&entry)).await?;
        let mut content = &bytes[..];
        self.serve(&entry.path, bytes.len() as u64, &mut content, None)
            .await
    }

    /// Reads the tar members and hands each to Plakar.
    async fn copy_members(
        &mut self,
        stream: &mut (impl AsyncRead + Unpin),
        dev: u64,
        progress: &mut Progress,
        backup_manifest: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut block = [0u8; tar::BLOCK];
        loop {
            stream.read_exact(&mut block).await.map_err(|e| {
                format!("pg_basebackup's stream ended before the end of its archive: {e}")
            })?;
            let Some(header) = tar::parse(&block).map_err(|e| e.to_string())? else {
                return Ok(());
            };
            let kind = match header.kind {
                Kind::File => EntryKind::File(header.size),
                Kind::Directory => EntryKind::Directory,
                Kind::Symlink => EntryKind::Symlink(header.link.clone()),
                Kind::Other(t) => {
                    return Err(format!(
                        "pg_basebackup's archive holds {} of a kind this package does not restore (tar type {:?})",
                        header.name, t as char
                    ))
                }
            };
            let entry = Entry {
                path: format!("/{}", header.name),
                kind,
                perm: header.mode & 0o777,
                modified: UNIX_EPOCH + Duration::from_secs(header.mtime.max(0) as u64),
                uid: header.uid,
                gid: header.gid,
                user: header.uname.clone(),
                group: header.gname.clone(),
                dev,
            };
            self.announce(record::entry_record(&entry)).await?;
            if header.kind == Kind::File {
                let keep = (entry.path == "/backup_manifest").then_some(&mut *backup_manifest);
                let mut content = (&mut *stream).take(header.size);
                self.serve(&entry.path, header.size, &mut content, keep)
                    .await?;
                // Whatever Plakar did not read (it stored the file without opening it).
                tokio::io::copy(&mut content, &mut tokio::io::sink())
                    .await
                    .map_err(|e| format!("cannot read pg_basebackup's stream: {e}"))?;
                let mut padding = (&mut *stream).take(header.padding());
                tokio::io::copy(&mut padding, &mut tokio::io::sink())
                    .await
                    .map_err(|e| format!("cannot read pg_basebackup's stream: {e}"))?;
                progress.bytes += header.size;
            }
        }
    }

    /// Sends a record to Plakar and remembers to wait for its acknowledgement.
    async fn announce(
        &mut self,
        record: crate::protocol::connectors::Record,
    ) -> Result<(), String> {
        self.pending.insert(record.pathname.clone());
        let msg = ImportResponse {
            record: Some(record),
            finished: false,
        };
        self.tx
            .send(Ok(msg))
            .await
            .map_err(|_| "Plakar ended the backup".to_string())
    }

    /// Waits until Plakar opens the file just announced, and streams `size`
    /// bytes of `content` to it; or until Plakar acknowledges it unopened.
    async fn serve(
        &mut self,
        path: &str,
        size: u64,
        content: &mut (impl AsyncRead + Unpin),
        mut keep: Option<&mut Vec<u8>>,
    ) -> Result<(), String> {
        loop {
            tokio::select! {
                call = self.opens.recv() => {
                    let Some(call) = call else {
                        return Err("Plakar ended the backup".into());
                    };
                    if call.path != path {
                        let _ = call.tx.send(Err(Status::failed_precondition(format!(
                            "postgresql physical source: {} was asked for while {path} is being copied; the files of a base backup are read in order",
                            call.path
                        )))).await;
                        continue;
                    }
                    return stream_to(call.tx, size, content, keep.as_deref_mut()).await;
                }
                ack = self.acks.message() => {
                    match ack {
                        Ok(Some(ImportRequest { result: Some(result) })) => {
                            let acked = result.header.map(|h| h.pathname).unwrap_or_default();
                            self.pending.remove(&acked);
                            if !result.error.is_empty() {
                                self.failures.push(format!("Plakar could not store {acked}: {}", result.error));
                            }
                            if acked == path {
                                return Ok(());
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return Err("Plakar ended the backup before storing every file".into()),
                    }
                }
            }
        }
    }

    /// Ends the `Import` call: `finished` once every record is stored, or the error instead.
    async fn finish(mut self, result: Result<(), String>) {
        let mut result = result;
        while result.is_ok() && !self.pending.is_empty() {
            match self.acks.message().await {
                Ok(Some(ImportRequest { result: Some(ack) })) => {
                    let path = ack.header.map(|h| h.pathname).unwrap_or_default();
                    self.pending.remove(&path);
                    if !ack.error.is_empty() {
                        self.failures
                            .push(format!("Plakar could not store {path}: {}", ack.error));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    result = Err("Plakar ended the backup before storing every file".into())
                }
            }
        }
        if result.is_ok() && !self.failures.is_empty() {
            result = Err(self.failures.join("; "));
        }
        match result {
            Ok(()) => {
                let done = ImportResponse {
                    record: None,
                    finished: true,
                };
                if self.tx.send(Ok(done)).await.is_ok() {
                    while let Ok(Some(_)) = self.acks.message().await {}
                }
            }
            Err(why) => {
                tracing::error!("physical backup failed: {why}");
                let _ = self
                    .tx
                    .send(Err(Status::aborted(format!(
                        "postgresql physical source: the backup is incomplete and was not committed: {why}"
                    ))))
                    .await;
            }
        }
    }
}

/// Streams `size` bytes to an `Open` call in chunks, keeping a copy when asked.
async fn stream_to(
    tx: mpsc::Sender<Result<OpenResponse, Status>>,
    size: u64,
    content: &mut (impl AsyncRead + Unpin),
    mut keep: Option<&mut Vec<u8>>,
) -> Result<(), String> {
    let mut left = size;
    while left > 0 {
        let want = left.min(CHUNK_SIZE as u64) as usize;
        let mut chunk = vec![0u8; want];
        content
            .read_exact(&mut chunk)
            .await
            .map_err(|e| format!("pg_basebackup's stream ended inside a file: {e}"))?;
        left -= want as u64;
        if let Some(k) = keep.as_deref_mut() {
            if k.len() + chunk.len() <= BACKUP_MANIFEST_LIMIT {
                k.extend_from_slice(&chunk);
            }
        }
        if tx
            .send(Ok(OpenResponse {
                chunk: chunk.into(),
            }))
            .await
            .is_err()
        {
            // Plakar stopped reading this file; its acknowledgement says the rest.
            return Ok(());
        }
    }
    Ok(())
}

/// pg_basebackup's arguments: the whole cluster as one tar stream on stdout,
/// with the WAL it needs and PostgreSQL's own manifest inside.
fn basebackup_args(config: &PhysicalSource) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--pgdata=-".into(),
        "--format=tar".into(),
        "--wal-method=fetch".into(),
        "--no-password".into(),
        "--label=plakar".into(),
    ];
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

/// The WAL range of the copy, from PostgreSQL's own `backup_manifest`.
fn wal_range(backup_manifest: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(backup_manifest).unwrap_or(Value::Null);
    match parsed["WAL-Ranges"].as_array().and_then(|r| r.first()) {
        Some(range) => json!({
            "timeline": range["Timeline"],
            "start_lsn": range["Start-LSN"],
            "stop_lsn": range["End-LSN"],
        }),
        None => {
            tracing::warn!("backup_manifest has no WAL range; the manifest leaves it out");
            Value::Null
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_range_comes_from_postgresqls_manifest() {
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" } ]}"#;
        assert_eq!(
            wal_range(m),
            json!({"timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000100"})
        );
        assert_eq!(wal_range(b"not json"), Value::Null);
    }
}
