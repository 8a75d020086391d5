//! The source connector: `plakar backup @mypg`.
//!
//! `Init` checks the options, connects, picks the client tools and plans the
//! records; `Import` announces them, manifest first, and waits until Plakar has
//! stored each one; `Open` runs the dump behind a record as Plakar reads it. A
//! dump that fails fails `Import`, so Plakar commits no snapshot.

mod dump;
pub mod options;
pub mod plan;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use prost::bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio_postgres::Client;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::connection::{server_major, PgError};
use crate::manifest::{self, BackupFacts};
use crate::protocol::importer::{
    importer_server, CloseRequest, CloseResponse, ImportRequest, ImportResponse, InitRequest,
    InitResponse, OpenRequest, OpenResponse, PingRequest, PingResponse,
};
use crate::protocol::ResponseStream;
use crate::protocol::{flags, record, CHUNK_SIZE};
use crate::session::Slot;
use crate::tools::{Kit, Toolbox};
use options::SourceConfig;
use plan::{Item, Layout, Planned};

/// A backup in progress: everything `Init` learnt.
#[derive(Debug)]
pub struct Backup {
    config: SourceConfig,
    toolbox: Toolbox,
    records: Vec<Planned>,
    manifest: Vec<u8>,
    no_role_passwords: bool,
    jobs: Semaphore,
    started: SystemTime,
    failures: Mutex<Vec<String>>,
    /// The records Plakar has opened.
    opened: Mutex<HashSet<String>>,
    /// The dump started ahead of its turn ([`dump::Started`]), by path.
    ahead: Mutex<Option<(String, Result<dump::Started, String>)>>,
}

impl Backup {
    fn fail(&self, message: String) {
        self.failures.lock().expect("not poisoned").push(message);
    }

    fn failure(&self) -> Option<String> {
        let failures = self.failures.lock().expect("not poisoned");
        (!failures.is_empty()).then(|| failures.join("; "))
    }

    /// Starts, ahead of its turn, the first record after `after` (in the order
    /// announced, which is the order Plakar opens them in) that Plakar has not
    /// opened yet, unless a dump is waiting ahead already: one dump at most
    /// runs beside the `jobs` ones, blocked on its full pipe.
    fn start_next(&self, after: Option<&str>) {
        let mut ahead = self.ahead.lock().expect("not poisoned");
        if ahead.is_some() {
            return;
        }
        let from = after
            .and_then(|p| self.records.iter().position(|r| r.path == p))
            .map_or(0, |i| i + 1);
        let next = {
            let opened = self.opened.lock().expect("not poisoned");
            self.records[from..]
                .iter()
                .find(|r| r.item != Item::Manifest && !opened.contains(&r.path))
                .cloned()
        };
        if let Some(next) = next {
            tracing::debug!("starting {} ahead of its turn", next.path);
            let started = dump::start(self, &next);
            *ahead = Some((next.path, started));
        }
    }

    /// Notes that Plakar opened `path`; the tool started ahead for it, if any.
    fn open(&self, path: &str) -> Option<Result<dump::Started, String>> {
        self.opened
            .lock()
            .expect("not poisoned")
            .insert(path.to_string());
        let mut ahead = self.ahead.lock().expect("not poisoned");
        if ahead.as_ref().is_some_and(|(p, _)| p == path) {
            ahead.take().map(|(_, started)| started)
        } else {
            None
        }
    }
}

/// The importer service.
#[derive(Debug, Default)]
pub struct Importer {
    current: Slot<Backup>,
}

/// Connects, checks the tools and plans the records.
async fn prepare(config: SourceConfig) -> Result<Backup, String> {
    let conn = &config.conn;
    let admin_db = conn.database.clone().unwrap_or_else(|| "postgres".into());
    let admin = conn.connect(&admin_db).await.map_err(|e| e.to_string())?;
    let server_major = server_major(&admin).await.map_err(|e| e.to_string())?;
    let toolbox = Toolbox::locate(conn, server_major, Kit::LOGICAL_BACKUP)
        .await
        .map_err(|e| e.to_string())?;

    // A restricted superuser (managed services) cannot read role passwords.
    let can_read_authid: bool = admin
        .query_one("SELECT has_table_privilege('pg_authid', 'SELECT')", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(false);
    let layout = Layout::of(&config);
    if !can_read_authid {
        tracing::warn!(
            "user \"{}\" cannot read pg_authid: roles are dumped with --no-role-passwords, so restored roles will have no password",
            conn.user
        );
    }

    let databases = databases(&config, &admin).await?;
    let records = plan::records(&config, &databases);
    let facts = BackupFacts {
        layout: layout.as_str(),
        database: conn.database.clone(),
        files: records.iter().map(|r| r.path.clone()).collect(),
        options: json!({
            "compress": config.compress,
            "schema_only": config.content == options::Content::SchemaOnly,
            "data_only": config.content == options::Content::DataOnly,
            "split_databases": config.split_databases,
            "exclude_databases": config.exclude_databases,
            "ssl_mode": conn.tls.mode.as_str(),
        }),
        pg_dump_version: toolbox.version.clone(),
        no_role_passwords: !can_read_authid,
    };
    let manifest = manifest::collect(conn, &admin, &databases, &facts).await;
    let manifest = serde_json::to_vec_pretty(&manifest).expect("JSON values serialise");
    Ok(Backup {
        jobs: Semaphore::new(config.jobs),
        config,
        toolbox,
        records,
        manifest,
        no_role_passwords: !can_read_authid,
        started: SystemTime::now(),
        failures: Mutex::new(Vec::new()),
        opened: Mutex::new(HashSet::new()),
        ahead: Mutex::new(None),
    })
}

/// The databases the backup covers: the one named, or every database that
/// accepts connections but those excluded.
async fn databases(config: &SourceConfig, admin: &Client) -> Result<Vec<String>, String> {
    if let Some(db) = &config.conn.database {
        return Ok(vec![db.clone()]);
    }
    let rows = admin
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| PgError::new("cannot list the databases", &e).to_string())?;
    let all: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for excluded in &config.exclude_databases {
        if !all.contains(excluded) {
            tracing::warn!("exclude_databases: there is no database {excluded:?} to leave out");
        }
    }
    Ok(all
        .into_iter()
        .filter(|d| !config.exclude_databases.contains(d))
        .collect())
}

#[tonic::async_trait]
impl importer_server::Importer for Importer {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let config = SourceConfig::parse(&request.into_inner().config)
            .map_err(|e| Status::invalid_argument(format!("postgresql source: {e}")))?;
        let origin = config.conn.target();
        let backup = prepare(config)
            .await
            .map_err(|e| Status::failed_precondition(format!("postgresql source: {e}")))?;
        tracing::info!(
            "backing up {} with {}: {}",
            backup.config.conn.target(),
            backup.toolbox.version,
            backup
                .records
                .iter()
                .map(|r| r.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
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
        let conn = &backup.config.conn;
        let db = conn.database.clone().unwrap_or_else(|| "postgres".into());
        conn.ping(&db)
            .await
            .map_err(|e| Status::unavailable(format!("postgresql source: {e}")))?;
        Ok(Response::new(PingResponse {}))
    }

    type ImportStream = ResponseStream<ImportResponse>;

    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let backup = self.current.get()?;
        let mut acks = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        // Plakar opens the manifest first: meanwhile the first tool starts.
        backup.start_next(None);
        tokio::spawn(async move {
            let mut pending: Vec<String> = Vec::new();
            let mut announce = vec![record::root_record(backup.started)];
            for r in &backup.records {
                let size = match r.item {
                    Item::Manifest => backup.manifest.len() as i64,
                    _ => 0,
                };
                announce.push(record::file_record(&r.path, size, backup.started));
                pending.push(r.path.clone());
            }
            for rec in announce {
                let msg = ImportResponse {
                    record: Some(rec),
                    finished: false,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            // Plakar acknowledges each record once it has stored it, and only then is
            // its dump known to be complete. `finished` is sent only after every
            // acknowledgement: a failure must end the stream instead of `finished`,
            // or Plakar may commit the snapshot regardless.
            while !pending.is_empty() {
                match acks.message().await {
                    Ok(Some(ImportRequest {
                        result: Some(result),
                    })) => {
                        let path = result.header.map(|h| h.pathname).unwrap_or_default();
                        pending.retain(|p| *p != path);
                        if !result.error.is_empty() {
                            backup.fail(format!("Plakar could not store {path}: {}", result.error));
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            if !pending.is_empty() && backup.failure().is_none() {
                backup.fail(format!(
                    "Plakar ended the backup before storing {}",
                    pending.join(", ")
                ));
            }
            if let Some(message) = backup.failure() {
                let _ = tx
                    .send(Err(Status::aborted(format!(
                        "postgresql source: the backup is incomplete and was not committed: {message}"
                    ))))
                    .await;
                return;
            }
            let done = ImportResponse {
                record: None,
                finished: true,
            };
            if tx.send(Ok(done)).await.is_err() {
                return;
            }
            // Read what is left until Plakar closes its side, then end with OK.
            while let Ok(Some(_)) = acks.message().await {}
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
        let planned = backup
            .records
            .iter()
            .find(|r| r.path == path)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "postgresql source: no record {path:?} in this backup"
                ))
            })?;
        let (tx, rx) = mpsc::channel(4);
        if planned.item == Item::Manifest {
            tokio::spawn(async move {
                for chunk in backup.manifest.chunks(CHUNK_SIZE) {
                    let chunk = Bytes::copy_from_slice(chunk);
                    if tx.send(Ok(OpenResponse { chunk })).await.is_err() {
                        break;
                    }
                }
            });
        } else {
            let ahead = backup.open(&planned.path);
            backup.start_next(Some(&planned.path));
            tokio::spawn(dump::stream(backup, planned, ahead, tx));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close(&self, _: Request<CloseRequest>) -> Result<Response<CloseResponse>, Status> {
        self.current.clear();
        Ok(Response::new(CloseResponse {}))
    }
}
