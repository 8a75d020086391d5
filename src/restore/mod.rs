//! The destination connector: `plakar restore -to @mypgdst`.
//!
//! `Init` checks the options and connects; `Export` receives the snapshot's
//! files in name order and, for each, decides what to do (`order`), runs the
//! tool that restores it (`apply`), and answers with the file's result. Dumps
//! that need the roles of a later `/globals.sql` are held in private temporary
//! files until it has been applied.

mod apply;
pub mod options;
pub mod order;

use std::sync::Arc;

use serde_json::Value;
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::connection::{describe_pg_error, server_major};
use crate::names;
use crate::progress::Progress;
use crate::protocol::connectors::{Record, Result as RecordResult};
use crate::protocol::exporter::export_request::Packet;
use crate::protocol::exporter::{
    exporter_server, CloseRequest, CloseResponse, ExportRequest, ExportResponse, InitRequest,
    InitResponse, PingRequest, PingResponse,
};
use crate::protocol::ResponseStream;
use crate::session::Slot;
use crate::tools::{Tool, Toolbox};
use apply::{Feed, RoleFilter};
use options::DestinationConfig;
use order::Action;

/// A restore in progress: what `Init` learnt.
#[derive(Debug)]
pub struct Restore {
    config: DestinationConfig,
    toolbox: Toolbox,
    server_major: u32,
    /// The plugin's own connection, to the database named by `admin_db`.
    admin: Client,
    admin_db: String,
}

/// The exporter service.
#[derive(Debug, Default)]
pub struct Exporter {
    current: Slot<Restore>,
}

async fn prepare(config: DestinationConfig) -> Result<Restore, String> {
    let conn = &config.conn;
    let first = if config.create_db {
        conn.database.clone().unwrap_or_else(|| "postgres".into())
    } else {
        "postgres".into()
    };
    let admin = conn.connect(&first).await.map_err(|e| e.to_string())?;
    let server_major = server_major(&admin).await?;
    let toolbox = Toolbox::locate(conn, server_major, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Restore {
        config,
        toolbox,
        server_major,
        admin,
        admin_db: first,
    })
}

#[tonic::async_trait]
impl exporter_server::Exporter for Exporter {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let config = DestinationConfig::parse(&request.into_inner().config)
            .map_err(|e| Status::invalid_argument(format!("postgresql destination: {e}")))?;
        let origin = config.conn.target();
        let restore = prepare(config)
            .await
            .map_err(|e| Status::failed_precondition(format!("postgresql destination: {e}")))?;
        tracing::info!(
            "restoring into {} (PostgreSQL {}) with {}",
            restore.config.conn.target(),
            restore.server_major,
            restore.toolbox.version
        );
        self.current.set(restore);
        Ok(Response::new(InitResponse {
            origin,
            r#type: "postgresql".into(),
            root: "/".into(),
            flags: 0,
        }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let restore = self.current.get()?;
        restore
            .config
            .conn
            .ping(&restore.admin_db)
            .await
            .map_err(|e| Status::unavailable(format!("postgresql destination: {e}")))?;
        Ok(Response::new(PingResponse {}))
    }

    type ExportStream = ResponseStream<ExportResponse>;

    async fn export(
        &self,
        request: Request<Streaming<ExportRequest>>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let restore = self.current.get()?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut session = Session {
                restore,
                tx,
                globals_applied: false,
                held: Vec::new(),
            };
            session.run(inbound).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close(&self, _: Request<CloseRequest>) -> Result<Response<CloseResponse>, Status> {
        self.current.clear();
        Ok(Response::new(CloseResponse {}))
    }
}

/// Where a file's content goes while it arrives.
enum Sink {
    /// Nowhere: the result is already known.
    Discard(Result<(), String>),
    /// Into memory (the manifest).
    Memory(Vec<u8>),
    /// Into a tool's stdin.
    Tool(Feed),
    /// Into a private temporary file.
    Spool(tokio::fs::File, NamedTempFile),
    /// Nowhere, because writing the spool failed.
    SpoolFailed(String),
}

/// The file being received.
struct Current {
    record: Record,
    action: Action,
    sink: Sink,
    progress: Progress,
}

/// A dump waiting for `/globals.sql`.
struct Held {
    record: Record,
    action: Action,
    file: NamedTempFile,
    progress: Progress,
}

/// One `Export` call.
struct Session {
    restore: Arc<Restore>,
    tx: mpsc::Sender<Result<ExportResponse, Status>>,
    globals_applied: bool,
    held: Vec<Held>,
}

impl Session {
    async fn run(&mut self, mut inbound: Streaming<ExportRequest>) {
        let mut current: Option<Current> = None;
        loop {
            let packet = match inbound.message().await {
                Ok(Some(ExportRequest { packet: Some(p) })) => p,
                Ok(Some(ExportRequest { packet: None })) => continue,
                Ok(None) => break,
                Err(status) => {
                    // Plakar went away: whatever was running is killed when dropped.
                    tracing::error!("restore interrupted: {}", status.message());
                    return;
                }
            };
            match packet {
                Packet::Record(record) => {
                    if let Some(unfinished) = current.take() {
                        self.reply(&unfinished.record, Err("its content ended early".into()))
                            .await;
                    }
                    let has_content = record.has_reader;
                    let file = self.begin(record).await;
                    if has_content {
                        current = Some(file);
                    } else {
                        self.end(file).await;
                    }
                }
                Packet::Chunk(chunk) if chunk.is_empty() => match current.take() {
                    Some(file) => self.end(file).await,
                    None => tracing::warn!("an end-of-file marker came without a file"),
                },
                Packet::Chunk(chunk) => match &mut current {
                    Some(file) => write(file, &chunk).await,
                    None => tracing::warn!("content came without a file; ignored"),
                },
            }
        }
        if let Some(unfinished) = current.take() {
            self.reply(
                &unfinished.record,
                Err("Plakar ended the restore before the end of this file".into()),
            )
            .await;
        }
        if !self.held.is_empty() {
            tracing::warn!(
                "restore_globals=true but the snapshot has no /globals.sql; restoring the held dumps without it"
            );
            self.release_held().await;
        }
    }

    /// Sends one file's result; Plakar needs the record, file info included, echoed back.
    async fn reply(&self, record: &Record, result: Result<(), String>) {
        let error = match result {
            Ok(()) => String::new(),
            Err(e) => {
                let message = format!("postgresql destination: {}: {e}", record.pathname);
                tracing::error!("{message}");
                message
            }
        };
        let response = ExportResponse {
            result: Some(RecordResult {
                header: Some(record.clone()),
                error,
            }),
        };
        let _ = self.tx.send(Ok(response)).await;
    }

    /// Decides what to do with a new file and opens its sink.
    async fn begin(&mut self, record: Record) -> Current {
        let progress = Progress::start("restore", &record.pathname);
        let is_dir = crate::protocol::record::is_dir(&record);
        let action = match names::classify(&record.pathname) {
            _ if is_dir => Action::Nothing,
            Ok(entry) => order::action(&self.restore.config, &entry, self.globals_applied),
            Err(unknown) => Action::Refuse(unknown.to_string()),
        };
        let sink = self.open_sink(&action).await;
        Current {
            record,
            action,
            sink,
            progress,
        }
    }

    async fn open_sink(&self, action: &Action) -> Sink {
        let r = &self.restore;
        let conn = &r.config.conn;
        match action {
            Action::Nothing => Sink::Discard(Ok(())),
            Action::Skip(why) => {
                tracing::info!("skipped: {why}");
                Sink::Discard(Ok(()))
            }
            Action::Refuse(why) => Sink::Discard(Err(why.clone())),
            Action::ReadManifest => Sink::Memory(Vec::new()),
            Action::Script { database, .. } => {
                let args = apply::psql_args(&r.config, database);
                let existing = self.existing_roles().await;
                let filter = RoleFilter::new(existing.iter().map(String::as_str));
                match Feed::start(&r.toolbox, Tool::Psql, conn, &args, Some(filter)) {
                    Ok(feed) => Sink::Tool(feed),
                    Err(e) => Sink::Discard(Err(e.to_string())),
                }
            }
            Action::Dump {
                connect_to,
                create,
                spool,
                ..
            } => {
                if let Err(why) = self.check_target(connect_to).await {
                    return Sink::Discard(Err(why));
                }
                if *spool {
                    return match spool_file() {
                        Ok(pair) => Sink::Spool(pair.0, pair.1),
                        Err(e) => Sink::Discard(Err(e)),
                    };
                }
                let args = apply::pg_restore_args(&r.config, connect_to, *create, None);
                match Feed::start(&r.toolbox, Tool::PgRestore, conn, &args, None) {
                    Ok(feed) => Sink::Tool(feed),
                    Err(e) => Sink::Discard(Err(e.to_string())),
                }
            }
        }
    }

    /// The roles on the target, the connecting user included even when they
    /// cannot be listed.
    async fn existing_roles(&self) -> Vec<String> {
        let r = &self.restore;
        let mut roles = match r
            .admin
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await
        {
            Ok(rows) => rows.iter().map(|row| row.get(0)).collect(),
            Err(e) => {
                tracing::warn!(
                    "cannot list the roles on the target: {}",
                    describe_pg_error(&e)
                );
                Vec::new()
            }
        };
        roles.push(r.config.conn.user.clone());
        roles
    }

    /// Fails early, with the remedy, when the database to connect to is missing.
    async fn check_target(&self, database: &str) -> Result<(), String> {
        let exists = self
            .restore
            .admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .map_err(|e| {
                format!(
                    "cannot check the target database: {}",
                    describe_pg_error(&e)
                )
            })?
            .is_some();
        if exists {
            return Ok(());
        }
        Err(if self.restore.config.create_db {
            format!(
                "database {database:?}, where pg_restore --create connects first, does not exist on {}; set `database` to an existing database (postgres by default)",
                self.restore.config.conn.target()
            )
        } else {
            format!(
                "database {database:?} does not exist on {}; create it first, or set create_db=true to create it from the dump",
                self.restore.config.conn.target()
            )
        })
    }

    /// Finishes a file whose content has fully arrived.
    async fn end(&mut self, file: Current) {
        let Current {
            record,
            action,
            sink,
            progress,
        } = file;
        let result = match sink {
            Sink::Discard(result) => result,
            Sink::SpoolFailed(why) => Err(why),
            Sink::Memory(bytes) => {
                read_manifest(&bytes, self.restore.server_major);
                Ok(())
            }
            Sink::Tool(feed) => {
                let outcome = feed.finish().await;
                let result = apply::judge(&outcome, &describe(&action));
                if result.is_ok() {
                    self.after_success(&action).await;
                }
                result
            }
            Sink::Spool(mut file, path) => {
                if let Err(e) = file.flush().await {
                    Err(format!("cannot write the temporary copy: {e}"))
                } else if matches!(action, Action::Dump { hold: true, .. }) && !self.globals_applied
                {
                    tracing::info!(
                        "{} held until /globals.sql has been applied",
                        record.pathname
                    );
                    self.held.push(Held {
                        record,
                        action,
                        file: path,
                        progress,
                    });
                    return;
                } else {
                    self.restore_spooled(&action, path.path()).await
                }
            }
        };
        match &result {
            Ok(()) => progress.done(),
            Err(why) => progress.failed(why),
        }
        self.reply(&record, result).await;
        if let Action::Script { globals: true, .. } = action {
            self.globals_applied = true;
            self.release_held().await;
        }
    }

    /// Restores the dumps that waited for the globals, in the order they came.
    async fn release_held(&mut self) {
        for held in std::mem::take(&mut self.held) {
            let result = self.restore_spooled(&held.action, held.file.path()).await;
            match &result {
                Ok(()) => held.progress.done(),
                Err(why) => held.progress.failed(why),
            }
            self.reply(&held.record, result).await;
            // The temporary copy is removed here, as `held.file` is dropped.
        }
    }

    async fn restore_spooled(&self, action: &Action, path: &std::path::Path) -> Result<(), String> {
        let Action::Dump {
            connect_to, create, ..
        } = action
        else {
            unreachable!("only dumps are spooled")
        };
        let r = &self.restore;
        let args = apply::pg_restore_args(&r.config, connect_to, *create, Some(path));
        let running = r
            .toolbox
            .spawn(
                Tool::PgRestore,
                &r.config.conn,
                &args,
                std::process::Stdio::null(),
                std::process::Stdio::null(),
            )
            .map_err(|e| e.to_string())?;
        let outcome = running.finish().await;
        let result = apply::judge(&outcome, &describe(action));
        if result.is_ok() {
            self.after_success(action).await;
        }
        result
    }

    /// ANALYZE what was restored, so that the planner has statistics at once.
    async fn after_success(&self, action: &Action) {
        let config = &self.restore.config;
        if !config.analyze || config.schema_only {
            return;
        }
        let databases = match action {
            Action::Dump { restored, .. } => vec![restored.clone()],
            Action::Script { globals: false, .. } => match self
                .restore
                .admin
                .query(
                    "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                    &[],
                )
                .await
            {
                Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        };
        for db in databases {
            let result = match config.conn.connect(&db).await {
                Ok(client) => client
                    .simple_query("ANALYZE")
                    .await
                    .map(|_| ())
                    .map_err(|e| describe_pg_error(&e)),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => tracing::info!("analyzed database {db:?}"),
                Err(e) => tracing::warn!("ANALYZE of database {db:?} failed: {e}"),
            }
        }
    }
}

/// Passes one chunk to the file's sink.
async fn write(file: &mut Current, chunk: &[u8]) {
    file.progress.bytes += chunk.len() as u64;
    match &mut file.sink {
        Sink::Discard(_) | Sink::SpoolFailed(_) => {}
        Sink::Memory(bytes) => {
            // A manifest is small; anything huge is not one of ours.
            if bytes.len() < 64 * 1024 * 1024 {
                bytes.extend_from_slice(chunk);
            }
        }
        Sink::Tool(feed) => feed.write(chunk).await,
        Sink::Spool(out, path) => {
            if let Err(e) = out.write_all(chunk).await {
                let why = format!(
                    "cannot write a temporary copy in {}: {e}",
                    path.path()
                        .parent()
                        .unwrap_or(std::path::Path::new("/"))
                        .display()
                );
                // Dropping the sink removes the partial copy at once.
                file.sink = Sink::SpoolFailed(why);
            }
        }
    }
}

/// A new private temporary file, open for async writes.
fn spool_file() -> Result<(tokio::fs::File, NamedTempFile), String> {
    let path = tempfile::Builder::new()
        .prefix("plakar-postgresql-")
        .suffix(".dump")
        .tempfile()
        .map_err(|e| format!("cannot create a temporary copy: {e}"))?;
    let std_file = path
        .reopen()
        .map_err(|e| format!("cannot open the temporary copy: {e}"))?;
    Ok((tokio::fs::File::from_std(std_file), path))
}

fn describe(action: &Action) -> String {
    match action {
        Action::Script { globals: true, .. } => "the roles and tablespaces (globals)".into(),
        Action::Script { .. } => "the whole cluster".into(),
        Action::Dump {
            source, restored, ..
        } if source == restored => format!("database {source:?}"),
        Action::Dump {
            source, restored, ..
        } => format!("database {source:?} into {restored:?}"),
        _ => "the file".into(),
    }
}

/// Logs what the snapshot says of itself, and warns about a downgrade.
fn read_manifest(bytes: &[u8], target_major: u32) {
    let manifest: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(
                "/manifest.json is not valid JSON ({e}); the restore goes on without it"
            );
            return;
        }
    };
    let version = manifest["server"]["version"].as_str().unwrap_or("unknown");
    let layout = manifest["backup"]["layout"].as_str().unwrap_or("unknown");
    let created = manifest["created_at"].as_str().unwrap_or("an unknown time");
    tracing::info!(
        "snapshot taken at {created} of PostgreSQL {version} ({layout} layout), restored into PostgreSQL {target_major}"
    );
    if let Some(num) = manifest["server"]["version_num"].as_i64() {
        let source_major = (num / 10000) as u32;
        if source_major > target_major {
            tracing::warn!(
                "the snapshot comes from PostgreSQL {source_major} but the target runs PostgreSQL {target_major}: restoring into an older server may fail"
            );
        }
    }
}
