//! The destination connector: `plakar restore -to @mypgdst`.
//!
//! `Init` checks the options and connects; `Export` receives the snapshot's
//! files in name order and, for each, decides what to do (`order`), runs the
//! tool that restores it (`apply`), and answers with the file's result. Dumps
//! that need the roles of a later `/globals.sql` are held in private temporary
//! files until it has been applied. When every result is sent, a restore in
//! which anything failed ends `Export` with an error naming the failed files,
//! which is what makes `plakar restore` exit non-zero.

mod apply;
pub mod options;
pub mod order;

use std::collections::HashMap;
use std::sync::Arc;

use prost::bytes::Bytes;
use tempfile::NamedTempFile;
use tokio_postgres::Client;

use crate::logical::error::Error;
use crate::logical::toc::{self, ArchiveError, DatabaseOptions};
use crate::names;
use crate::pipe::{ChunkSink, ChunkWriter};
use crate::postgres::connection::{quote_ident, server_major, PgError, MAINTENANCE_DB};
use crate::postgres::manifest::Manifest;
use crate::postgres::tools::{Kit, Tool, Toolbox, STATISTICS_MAJOR};
use crate::progress::Progress;
use crate::protocol::connectors::Record;
use crate::protocol::destination::{Destination, Export, Results};
use apply::{Feed, RoleFilter};
use options::DestinationConfig;
use order::{Action, Create, Seen};

/// A restore in progress: what `Init` learnt.
#[derive(Debug)]
pub struct Restore {
    config: DestinationConfig,
    toolbox: Toolbox,
    server_major: u32,
    /// The plugin's own connection, to the maintenance database.
    admin: Client,
    /// Whether `jobs` spools dumps for `pg_restore --jobs` ([`order::parallel_restore`]).
    parallel: bool,
}

/// Connects to the maintenance database (never to one that may not exist
/// yet), finds the tools, and refuses a `create_db` target that exists.
async fn prepare(config: DestinationConfig) -> Result<Restore, Error> {
    let conn = &config.conn;
    let admin = conn.connect(MAINTENANCE_DB).await?;
    let server_major = server_major(&admin).await?;
    let toolbox = Toolbox::locate(conn, server_major, Kit::LOGICAL_RESTORE).await?;
    tracing::info!(
        "restoring into {} (PostgreSQL {server_major}) with {}",
        conn.target(),
        toolbox.version
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if toolbox.has_statistics() && server_major < STATISTICS_MAJOR {
        tracing::info!(
            "PostgreSQL {server_major} cannot take planner statistics: pg_restore runs with --no-statistics, and the restored databases are analyzed"
        );
    }
    let parallel = order::parallel_restore(&config, cpus).unwrap_or_else(|why| {
        tracing::info!("jobs={}: {why}", config.jobs.unwrap_or(1));
        false
    });
    let restore = Restore {
        config,
        toolbox,
        server_major,
        admin,
        parallel,
    };
    if let Some(target) = order::create_target(&restore.config) {
        if restore.database_exists(target).await? && !restore.config.clean {
            return Err(restore.already_exists(target));
        }
    }
    Ok(restore)
}

impl Restore {
    /// Whether a database exists on the target.
    async fn database_exists(&self, database: &str) -> Result<bool, Error> {
        Ok(self
            .admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .map(|row| row.is_some())
            .map_err(|e| PgError::new("cannot look up the databases", &e))?)
    }

    /// Whether pg_restore restores the planner statistics a dump carries:
    /// tools and server of PostgreSQL 18 or later, and the whole of each
    /// table (a data-only restore leaves them out, a table selection those
    /// of the indexes).
    fn restores_statistics(&self) -> bool {
        self.toolbox.has_statistics()
            && self.server_major >= STATISTICS_MAJOR
            && !self.config.data_only
            && self.config.tables.is_empty()
    }

    /// pg_restore's arguments for one dump, `--no-statistics` added where
    /// the server cannot take them (pg_restore 18 into an older server).
    fn pg_restore_args(
        &self,
        connect_to: &str,
        create: bool,
        file: Option<&std::path::Path>,
    ) -> Vec<std::ffi::OsString> {
        let mut args = apply::pg_restore_args(&self.config, connect_to, create, file);
        if self.toolbox.has_statistics() && self.server_major < STATISTICS_MAJOR {
            args.insert(1, "--no-statistics".into());
        }
        args
    }

    /// The refusal of a `create_db` restore into a database that exists.
    fn already_exists(&self, database: &str) -> Error {
        Error::DatabaseExists {
            database: database.to_string(),
            target: self.config.conn.target(),
        }
    }
}

#[tonic::async_trait]
impl Destination for Restore {
    type Error = Error;
    type Export = Session;

    async fn init(config: &HashMap<String, String>) -> Result<Restore, Error> {
        prepare(DestinationConfig::parse(config)?).await
    }

    fn origin(&self) -> String {
        self.config.conn.target()
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(self.config.conn.ping(MAINTENANCE_DB).await?)
    }

    fn export(self: Arc<Self>) -> Session {
        Session {
            restore: self,
            seen: Seen::default(),
            held: Vec::new(),
        }
    }
}

/// Where a file's content goes while it arrives.
enum Sink {
    /// Nowhere: the result is already known.
    Discard(Result<(), Error>),
    /// Into memory (the manifest).
    Memory(Vec<u8>),
    /// Into a tool's stdin.
    Tool(Box<Feed>),
    /// Into memory until the dump's DATABASE entry has been read, to create
    /// the renamed database before pg_restore starts (`Create::Renamed`).
    Head(Vec<u8>),
    /// Into a private temporary file, written by a thread of its own.
    Spool(ChunkWriter<usize>, NamedTempFile),
    /// Nowhere, because writing the spool failed.
    SpoolFailed(Error),
}

/// The file being received.
pub struct Current {
    record: Record,
    action: Action,
    sink: Sink,
    progress: Progress,
    /// Whether a dump carries its planner statistics, read from its head as it goes by.
    statistics: toc::StatisticsProbe,
}

/// A dump waiting for `/globals.sql`.
struct Held {
    record: Record,
    action: Action,
    file: NamedTempFile,
    progress: Progress,
    statistics: bool,
}

/// One `Export` call.
pub struct Session {
    restore: Arc<Restore>,
    seen: Seen,
    held: Vec<Held>,
}

#[tonic::async_trait]
impl Export for Session {
    type Error = Error;
    type File = Current;

    async fn begin(&mut self, record: Record, _: &mut Results) -> Result<Option<Current>, Error> {
        if names::is_data_directory(&record.pathname) {
            // Before anything of it is written: its first file says what it is.
            return Err(Error::PhysicalSnapshot(record.pathname));
        }
        Ok(Some(self.start(record).await))
    }

    async fn write(&mut self, file: &mut Current, chunk: Bytes) {
        self.write_chunk(file, chunk).await;
    }

    async fn end(&mut self, file: Current, results: &mut Results) {
        self.finish_file(file, results).await;
    }

    async fn cut(&mut self, file: Current, why: &str, results: &mut Results) {
        // Dropping the file's sink kills its tool and removes its copy.
        results.send(&file.record, Err(why)).await;
    }

    async fn finish(&mut self, results: &mut Results) -> Result<(), Error> {
        if !self.held.is_empty() {
            tracing::warn!(
                "restore_globals=true but the snapshot has no /globals.sql; restoring the held dumps without it"
            );
            self.release_held(results).await;
        }
        Ok(())
    }
}

impl Session {
    /// Decides what to do with a new file and opens its sink.
    async fn start(&mut self, record: Record) -> Current {
        let progress = Progress::start("restore", &record.pathname);
        let is_dir = crate::protocol::record::is_dir(&record);
        let action = match names::classify(&record.pathname) {
            _ if is_dir => Action::Nothing,
            Ok(entry) => order::action(
                &self.restore.config,
                &entry,
                self.seen,
                self.restore.parallel,
            ),
            Err(unknown) => Action::Refuse(unknown.to_string()),
        };
        if let Action::Dump { restored, .. } = &action {
            if order::create_target(&self.restore.config) == Some(restored.as_str()) {
                self.seen.target_produced = true;
            }
        }
        let action = self
            .resolve(action)
            .await
            .unwrap_or_else(|e| Action::Refuse(e.to_string()));
        let sink = self.open_sink(&action).await;
        Current {
            record,
            action,
            sink,
            progress,
            statistics: toc::StatisticsProbe::new(),
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
            Action::Refuse(why) => Sink::Discard(Err(Error::Refused(why.clone()))),
            Action::ReadManifest => Sink::Memory(Vec::new()),
            Action::Script { database, .. } => {
                let args = apply::psql_args(&r.config, database);
                let existing = self.existing_roles().await;
                let filter = RoleFilter::new(existing.iter().map(String::as_str));
                match Feed::start(&r.toolbox, Tool::Psql, conn, &args, Some(filter)) {
                    Ok(feed) => Sink::Tool(Box::new(feed)),
                    Err(e) => Sink::Discard(Err(e.into())),
                }
            }
            Action::Dump { spool: true, .. } => match spool_file() {
                Ok((file, path)) => Sink::Spool(ChunkWriter::start(SpoolSink::new(file)), path),
                Err(e) => Sink::Discard(Err(e)),
            },
            Action::Dump {
                create: Create::Renamed,
                ..
            } => Sink::Head(Vec::new()),
            Action::Dump {
                connect_to, create, ..
            } => {
                let args = r.pg_restore_args(connect_to, *create == Create::FromDump, None);
                match Feed::start(&r.toolbox, Tool::PgRestore, conn, &args, None) {
                    Ok(feed) => Sink::Tool(Box::new(feed)),
                    Err(e) => Sink::Discard(Err(e.into())),
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
                    "{}",
                    PgError::new("cannot list the roles on the target", &e)
                );
                Vec::new()
            }
        };
        roles.push(r.config.conn.user.clone());
        roles
    }

    /// Checks a dump's target database before anything runs: the database to
    /// restore into must exist, and one to create must not (with `clean`, an
    /// existing one is restored into instead).
    async fn resolve(&self, mut action: Action) -> Result<Action, Error> {
        let Action::Dump {
            connect_to,
            restored,
            create,
            ..
        } = &mut action
        else {
            return Ok(action);
        };
        let r = &self.restore;
        match create {
            Create::No if r.database_exists(connect_to).await? => {}
            Create::No => {
                return Err(Error::DatabaseMissing {
                    database: connect_to.clone(),
                    target: r.config.conn.target(),
                })
            }
            Create::FromDump | Create::Renamed if !r.database_exists(restored).await? => {}
            Create::FromDump | Create::Renamed if r.config.clean => {
                tracing::info!("database {restored:?} exists: restoring into it with clean=true");
                *connect_to = restored.clone();
                *create = Create::No;
            }
            Create::FromDump | Create::Renamed => return Err(r.already_exists(restored)),
        }
        Ok(action)
    }

    /// With `Create::Renamed`, once the head of the dump names its database's
    /// encoding and locale: creates the database like it and starts pg_restore
    /// on everything received so far. None while more of the head is needed.
    async fn start_renamed(
        &self,
        action: &Action,
        head: &mut Vec<u8>,
        at_end: bool,
    ) -> Option<Sink> {
        let options = match database_options(head, at_end) {
            Ok(None) => return None,
            Ok(Some(options)) => options,
            Err(why) => return Some(Sink::Discard(Err(why))),
        };
        if let Err(why) = self.create_renamed(action, &options).await {
            return Some(Sink::Discard(Err(why)));
        }
        let r = &self.restore;
        let Action::Dump { connect_to, .. } = action else {
            unreachable!("only dumps are renamed")
        };
        let args = r.pg_restore_args(connect_to, false, None);
        let mut feed = match Feed::start(&r.toolbox, Tool::PgRestore, &r.config.conn, &args, None) {
            Ok(feed) => feed,
            Err(e) => return Some(Sink::Discard(Err(e.into()))),
        };
        feed.write(Bytes::from(std::mem::take(head))).await;
        Some(Sink::Tool(Box::new(feed)))
    }

    /// `CREATE DATABASE` under the destination's name, like the dump's own database.
    async fn create_renamed(
        &self,
        action: &Action,
        options: &DatabaseOptions,
    ) -> Result<(), Error> {
        let Action::Dump {
            source, restored, ..
        } = action
        else {
            unreachable!("only dumps are renamed")
        };
        let sql = options.create_statement(&quote_ident(restored));
        self.restore
            .admin
            .simple_query(&sql)
            .await
            .map_err(|e| PgError::new(format!("cannot create database {restored:?}"), &e))?;
        tracing::info!("created database {restored:?} like the dump's {source:?}: {sql}");
        Ok(())
    }

    /// Finishes a file whose content has fully arrived.
    async fn finish_file(&mut self, file: Current, results: &mut Results) {
        let Current {
            record,
            action,
            sink,
            progress,
            mut statistics,
        } = file;
        let statistics = matches!(action, Action::Dump { .. }) && statistics.carries_statistics();
        let result = match sink {
            Sink::Discard(result) => result,
            Sink::SpoolFailed(why) => Err(why),
            Sink::Head(mut head) => match self.start_renamed(&action, &mut head, true).await {
                Some(Sink::Tool(feed)) => self.finish_feed(*feed, &action, statistics).await,
                Some(Sink::Discard(result)) => result,
                _ => unreachable!("at the end the head is complete or refused"),
            },
            Sink::Memory(bytes) => {
                read_manifest(&bytes, self.restore.server_major);
                Ok(())
            }
            Sink::Tool(feed) => self.finish_feed(*feed, &action, statistics).await,
            Sink::Spool(writer, path) => {
                let written = writer.finish().await;
                if let Ok(offsets) = &written {
                    tracing::debug!(
                        "{}: temporary copy written, with the data offsets of {offsets} entries",
                        record.pathname
                    );
                }
                if let Err(e) = written {
                    Err(spool_error(&path, e))
                } else if matches!(action, Action::Dump { hold: true, .. })
                    && !self.seen.globals_applied
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
                        statistics,
                    });
                    return;
                } else {
                    self.restore_spooled(&action, path.path(), statistics).await
                }
            }
        };
        match &result {
            Ok(()) => progress.done(),
            Err(why) => progress.failed(why),
        }
        results.send(&record, result).await;
        if let Action::Script { globals: true, .. } = action {
            self.seen.globals_applied = true;
            self.release_held(results).await;
        }
    }

    /// Closes a tool's input, judges what it said, and analyzes after a success.
    async fn finish_feed(
        &self,
        feed: Feed,
        action: &Action,
        statistics: bool,
    ) -> Result<(), Error> {
        let outcome = feed.finish().await;
        let result = apply::judge(&outcome, &describe(action));
        if result.is_ok() {
            self.after_success(action, statistics).await;
        }
        result
    }

    /// Restores the dumps that waited for the globals, in the order they came.
    async fn release_held(&mut self, results: &mut Results) {
        for held in std::mem::take(&mut self.held) {
            let result = self
                .restore_spooled(&held.action, held.file.path(), held.statistics)
                .await;
            match &result {
                Ok(()) => held.progress.done(),
                Err(why) => held.progress.failed(why),
            }
            results.send(&held.record, result).await;
            // The temporary copy is removed here, as `held.file` is dropped.
        }
    }

    async fn restore_spooled(
        &self,
        action: &Action,
        path: &std::path::Path,
        statistics: bool,
    ) -> Result<(), Error> {
        let Action::Dump {
            connect_to, create, ..
        } = action
        else {
            unreachable!("only dumps are spooled")
        };
        let r = &self.restore;
        if *create == Create::Renamed {
            let options = read_database_options(path).await?;
            self.create_renamed(action, &options).await?;
        }
        let args = r.pg_restore_args(connect_to, *create == Create::FromDump, Some(path));
        let running = r.toolbox.spawn(
            Tool::PgRestore,
            &r.config.conn,
            &args,
            std::process::Stdio::null(),
            std::process::Stdio::null(),
        )?;
        let outcome = running.finish().await;
        let result = apply::judge(&outcome, &describe(action));
        if result.is_ok() {
            self.after_success(action, statistics).await;
        }
        result
    }

    /// ANALYZE what was restored, so that the planner has statistics at once,
    /// unless the dump carried its own (`statistics`) and pg_restore restored them.
    async fn after_success(&self, action: &Action, statistics: bool) {
        let config = &self.restore.config;
        if !config.analyze || config.schema_only {
            return;
        }
        if statistics && self.restore.restores_statistics() {
            tracing::info!(
                "{}: the dump carries its planner statistics (pg_dump --statistics) and pg_restore restored them: ANALYZE skipped",
                describe(action)
            );
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
                    .map_err(|e| PgError::from(e).to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => tracing::info!("analyzed database {db:?}"),
                Err(e) => tracing::warn!("ANALYZE of database {db:?} failed: {e}"),
            }
        }
    }
}

impl Session {
    /// Passes one chunk to the file's sink.
    async fn write_chunk(&self, file: &mut Current, chunk: Bytes) {
        file.progress.bytes += chunk.len() as u64;
        if matches!(file.action, Action::Dump { .. }) {
            file.statistics.feed(&chunk);
        }
        match &mut file.sink {
            Sink::Discard(_) | Sink::SpoolFailed(_) => {}
            Sink::Head(head) => {
                head.extend_from_slice(&chunk);
                if let Some(next) = self.start_renamed(&file.action, head, false).await {
                    file.sink = next;
                }
            }
            Sink::Memory(bytes) => {
                // A manifest is small; anything huge is not one of ours.
                if bytes.len() < 64 * 1024 * 1024 {
                    bytes.extend_from_slice(&chunk);
                }
            }
            Sink::Tool(feed) => feed.write(chunk).await,
            Sink::Spool(writer, _) => {
                if !writer.write(chunk).await {
                    let Sink::Spool(writer, path) =
                        std::mem::replace(&mut file.sink, Sink::Discard(Ok(())))
                    else {
                        unreachable!("matched above")
                    };
                    let why = match writer.finish().await {
                        Err(e) => spool_error(&path, e),
                        Ok(_) => spool_error(
                            &path,
                            std::io::Error::other("the copy stopped taking data"),
                        ),
                    };
                    // Dropping the path removes the partial copy at once.
                    drop(path);
                    file.sink = Sink::SpoolFailed(why);
                }
            }
        }
    }
}

/// Why writing a temporary copy failed, naming its directory.
fn spool_error(path: &NamedTempFile, source: std::io::Error) -> Error {
    Error::Io {
        action: "write a temporary copy in",
        path: path
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .to_path_buf(),
        source,
    }
}

/// A temporary copy of a dump: written in 1 MiB writes, and given the data
/// offsets pg_dump leaves out when it writes to a pipe (as it always does
/// under `plakar backup`), so that each `pg_restore --jobs` worker can seek
/// straight to its table's data instead of reading through the copy.
struct SpoolSink {
    file: std::fs::File,
    scanner: toc::OffsetScanner,
}

impl SpoolSink {
    fn new(file: std::fs::File) -> SpoolSink {
        SpoolSink {
            file,
            scanner: toc::OffsetScanner::new(),
        }
    }
}

impl ChunkSink for SpoolSink {
    /// How many entries got their data offset.
    type Done = usize;

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.scanner.feed(chunk);
        self.file.write_all(chunk)
    }

    fn finish(mut self) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let patches = self.scanner.patches();
        for (position, bytes) in &patches {
            self.file.write_all_at(bytes, *position)?;
        }
        Ok(patches.len())
    }
}

/// How much of a dump is read, at most, to find its DATABASE entry (one of the first).
const HEAD_LIMIT: usize = 64 * 1024 * 1024;

/// The `CREATE DATABASE` options of the dump's own database, from the head of
/// its archive; None while more bytes are needed.
fn database_options(head: &[u8], at_end: bool) -> Result<Option<DatabaseOptions>, Error> {
    match toc::find_entry(head, |e| e.desc == "DATABASE") {
        Ok(Some(Some(entry))) => Ok(Some(DatabaseOptions::from_definition(
            entry.defn.as_deref().unwrap_or_default(),
        )?)),
        Ok(Some(None)) => {
            tracing::warn!(
                "the dump does not describe its database (a data-only or partial dump): the new database gets the server's default encoding and locale"
            );
            Ok(Some(DatabaseOptions {
                options: vec![("TEMPLATE".into(), "template0".into())],
            }))
        }
        Ok(None) if at_end && head.len() < 5 => Err(ArchiveError::NotCustom.into()),
        Ok(None) if at_end => Err(ArchiveError::Truncated.into()),
        Ok(None) if head.len() > HEAD_LIMIT => Err(Error::NoDatabaseEntry(HEAD_LIMIT >> 20)),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// [`database_options`] of a spooled copy.
async fn read_database_options(path: &std::path::Path) -> Result<DatabaseOptions, Error> {
    use tokio::io::AsyncReadExt;
    let unreadable = |source| Error::Io {
        action: "read the temporary copy",
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut head = Vec::new();
    loop {
        let read = (&mut file)
            .take(1 << 20)
            .read_to_end(&mut head)
            .await
            .map_err(unreadable)?;
        if let Some(options) = database_options(&head, read == 0)? {
            return Ok(options);
        }
    }
}

/// A new private temporary file, open for writing.
fn spool_file() -> Result<(std::fs::File, NamedTempFile), Error> {
    let path = tempfile::Builder::new()
        .prefix("plakar-postgresql-")
        .suffix(".dump")
        .tempfile()
        .map_err(|source| Error::Io {
            action: "create a temporary copy in",
            path: std::env::temp_dir(),
            source,
        })?;
    let file = path.reopen().map_err(|source| Error::Io {
        action: "open",
        path: path.path().to_path_buf(),
        source,
    })?;
    Ok((file, path))
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
    let manifest = match Manifest::from_json(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(
                "{} cannot be read ({e}); the restore goes on without it",
                names::MANIFEST
            );
            return;
        }
    };
    let version = manifest.server.version.as_deref().unwrap_or("unknown");
    let layout = manifest.backup.layout();
    let created = manifest.created_at.as_deref().unwrap_or("an unknown time");
    tracing::info!(
        "snapshot taken at {created} of PostgreSQL {version} ({layout} layout), restored into PostgreSQL {target_major}"
    );
    if let Some(source_major) = manifest.server.major() {
        if source_major > target_major {
            tracing::warn!(
                "the snapshot comes from PostgreSQL {source_major} but the target runs PostgreSQL {target_major}: restoring into an older server may fail"
            );
        }
    }
}
