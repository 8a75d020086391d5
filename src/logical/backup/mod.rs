//! The source connector: `plakar backup @mypg`.
//!
//! `Init` checks the options, connects, picks the client tools and plans the
//! records; `Import` announces them, manifest first; `Open` runs the dump
//! behind a record as Plakar reads it. A dump that fails fails the backup
//! ([`Source::failure`]), so Plakar commits no snapshot.

mod dump;
pub mod options;
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Semaphore;
use tokio_postgres::Client;

use crate::logical::error::Error;
use crate::postgres::connection::{server_major, PgError};
use crate::postgres::manifest::{self, LogicalFacts, LogicalOptions};
use crate::postgres::replication::standby::{self, RecoveryConflict};
use crate::postgres::tools::{Kit, Toolbox};
use crate::protocol::record;
use crate::protocol::source::{Content, ImportRun, Source};
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
    /// Whether the dumps carry the planner statistics (`pg_dump --statistics`).
    statistics: bool,
    jobs: Semaphore,
    started: SystemTime,
    failures: Mutex<Vec<String>>,
    /// The records Plakar has opened.
    opened: Mutex<HashSet<String>>,
    /// The dump started ahead of its turn ([`dump::Started`]), by path.
    ahead: Mutex<Option<(String, Result<dump::Started, Error>)>>,
}

impl Backup {
    fn fail(&self, message: String) {
        self.failures.lock().expect("not poisoned").push(message);
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
    fn mark_opened(&self, path: &str) -> Option<Result<dump::Started, Error>> {
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

/// Connects, checks the tools and plans the records.
async fn prepare(config: SourceConfig) -> Result<Backup, Error> {
    let conn = &config.conn;
    let admin_db = conn.database.clone().unwrap_or_else(|| "postgres".into());
    let admin = conn.connect(&admin_db).await?;
    let server_major = server_major(&admin).await?;
    let toolbox = Toolbox::locate(conn, server_major, Kit::LOGICAL_BACKUP).await?;
    // On a standby, replay may cancel the plugin's own queries as it does the dumps.
    let in_recovery = standby::in_recovery(&admin).await?;

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

    let full = config.content == options::Content::Everything;
    let statistics = config.statistics && full && toolbox.has_statistics();
    if statistics {
        tracing::info!("the dumps carry the planner statistics (pg_dump --statistics)");
    } else if config.statistics && full {
        tracing::debug!(
            "pg_dump {} cannot dump the planner statistics (18 and later can): a restore will ANALYZE",
            toolbox.major
        );
    }

    let databases = databases(&config, &admin, in_recovery).await?;
    let records = plan::records(&config, &databases);
    let paths: Vec<&str> = records.iter().map(|r| r.path.as_str()).collect();
    tracing::info!(
        "backing up {} with {}: {}",
        conn.target(),
        toolbox.version,
        paths.join(", ")
    );
    let facts = LogicalFacts {
        database: conn.database.clone(),
        files: records.iter().map(|r| r.path.clone()).collect(),
        options: LogicalOptions {
            compress: config.compress,
            schema_only: config.content == options::Content::SchemaOnly,
            data_only: config.content == options::Content::DataOnly,
            split_databases: config.split_databases,
            exclude_databases: config.exclude_databases.clone(),
            ssl_mode: conn.tls.mode.as_str().into(),
            statistics,
        },
        no_role_passwords: !can_read_authid,
    };
    let backup = layout.section(facts);
    let pg_dump_version = toolbox.version.clone();
    let manifest = manifest::collect(conn, &admin, &databases, pg_dump_version, backup)
        .await
        .to_json();
    Ok(Backup {
        jobs: Semaphore::new(config.jobs),
        config,
        toolbox,
        records,
        manifest,
        no_role_passwords: !can_read_authid,
        statistics,
        started: SystemTime::now(),
        failures: Mutex::new(Vec::new()),
        opened: Mutex::new(HashSet::new()),
        ahead: Mutex::new(None),
    })
}

/// The databases the backup covers: the one named, or every database that
/// accepts connections but those excluded.
async fn databases(
    config: &SourceConfig,
    admin: &Client,
    in_recovery: bool,
) -> Result<Vec<String>, Error> {
    if let Some(db) = &config.conn.database {
        return Ok(vec![db.clone()]);
    }
    let rows = admin
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| query_failed(PgError::new("cannot list the databases", &e), in_recovery))?;
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

/// A failure of the plugin's own query: on a standby, replay may have cancelled it.
fn query_failed(e: PgError, in_recovery: bool) -> Error {
    match RecoveryConflict::of_query(&e, in_recovery) {
        Some(conflict) => conflict.into(),
        None => e.into(),
    }
}

#[tonic::async_trait]
impl Source for Backup {
    type Error = Error;

    async fn init(config: &HashMap<String, String>) -> Result<Backup, Error> {
        prepare(SourceConfig::parse(config)?).await
    }

    fn origin(&self) -> String {
        self.config.conn.target()
    }

    async fn ping(&self) -> Result<(), Error> {
        let conn = &self.config.conn;
        let db = conn.database.clone().unwrap_or_else(|| "postgres".into());
        Ok(conn.ping(&db).await?)
    }

    async fn import(self: Arc<Self>, run: &mut ImportRun) -> Result<(), Error> {
        // Plakar opens the manifest first: meanwhile the first tool starts.
        self.start_next(None);
        run.announce(record::root_record(self.started)).await?;
        for r in &self.records {
            let size = match r.item {
                Item::Manifest => self.manifest.len() as i64,
                _ => 0,
            };
            run.announce(record::file_record(&r.path, size, self.started))
                .await?;
        }
        Ok(())
    }

    async fn open(self: Arc<Self>, path: String, content: Content) -> Result<(), Error> {
        let planned = self
            .records
            .iter()
            .find(|r| r.path == path)
            .cloned()
            .ok_or(Error::NoRecord(path))?;
        if planned.item == Item::Manifest {
            content.send_all(&self.manifest).await;
            return Ok(());
        }
        let ahead = self.mark_opened(&planned.path);
        self.start_next(Some(&planned.path));
        dump::stream(self, planned, ahead, content).await
    }

    fn failure(&self) -> Option<String> {
        let failures = self.failures.lock().expect("not poisoned");
        (!failures.is_empty()).then(|| failures.join("; "))
    }
}
