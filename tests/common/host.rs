//! Drives the real plugin binary over stdin/stdout exactly as Plakar v1.1.0
//! does (see ../shared/PLAKAR-PROTOCOL.md): one process per connector, gRPC
//! over the two pipes, `Init`, then `Import` + `Open` with acknowledgements,
//! or `Export` with records, 1 MiB chunks and an empty end-of-file chunk.
//! Any of the four connectors, logical or physical, and on request the faults
//! of a Plakar that fails to store a file, stops acknowledging, or cuts a
//! file's content short.
//!
//! It stands in for the `plakar` program because the Go module proxy refuses
//! github.com/PlakarKorp/plakar here; see docs/testing.md.

use std::collections::{BTreeMap, HashMap};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use plakar_postgresql::protocol::connectors::{FileInfo, Record, Result as RecordResult};
use plakar_postgresql::protocol::exporter::exporter_client::ExporterClient;
use plakar_postgresql::protocol::exporter::{self, export_request::Packet, ExportRequest};
use plakar_postgresql::protocol::importer::importer_client::ImporterClient;
use plakar_postgresql::protocol::importer::{self, ImportRequest, OpenRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The plugin binary under test.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_postgresql");

/// Plakar's STREAM location flag: a source that must not be imported twice.
const STREAM: u32 = 4;

/// Go's `fs.ModeDir` bit in a record's mode.
const MODE_DIR: u32 = 0x8000_0000;

/// One of the plugin's connectors: the argument Plakar starts it with, and
/// the URI scheme Plakar names in `Init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    /// `postgresql importer`, the `postgres://` source.
    Importer,
    /// `postgresql exporter`, the `postgres://` destination.
    Exporter,
    /// `postgresql physical-importer`, the `postgres+bin://` source.
    PhysicalImporter,
    /// `postgresql physical-exporter`, the `postgres+bin:///dir` destination.
    PhysicalExporter,
}

impl Connector {
    /// The argument the plugin is started with.
    pub fn role(self) -> &'static str {
        match self {
            Connector::Importer => "importer",
            Connector::Exporter => "exporter",
            Connector::PhysicalImporter => "physical-importer",
            Connector::PhysicalExporter => "physical-exporter",
        }
    }

    /// The `proto` of `Init`: the scheme of the location the user gave.
    pub fn proto(self) -> &'static str {
        match self {
            Connector::Importer | Connector::Exporter => "postgres",
            Connector::PhysicalImporter | Connector::PhysicalExporter => "postgres+bin",
        }
    }

    fn imports(self) -> bool {
        matches!(self, Connector::Importer | Connector::PhysicalImporter)
    }
}

/// A stored snapshot: its files and their content.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Path to content, in Plakar's order.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The record the importer announced for each path, directories and links
    /// included; empty in a snapshot made by hand.
    pub records: BTreeMap<String, Record>,
}

impl Snapshot {
    /// The paths, sorted.
    pub fn paths(&self) -> Vec<&str> {
        self.files.keys().map(String::as_str).collect()
    }

    /// The manifest, parsed.
    pub fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&self.files["/manifest.json"]).expect("manifest is JSON")
    }

    /// What `plakar restore` sends, in its order: a depth-first walk from `/`,
    /// each directory's entries sorted by name, every file with its content.
    /// A file's record is the importer's (its size that of the content), or
    /// made up for a snapshot made by hand.
    fn walk(&self) -> Vec<(Record, Option<Vec<u8>>)> {
        let now = SystemTime::now();
        let mut entries = BTreeMap::new();
        let root = self.records.get("/").cloned().unwrap_or_else(|| Record {
            pathname: "/".into(),
            file_info: Some(FileInfo {
                name: "/".into(),
                mode: MODE_DIR | 0o750,
                mod_time: Some(now.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        entries.insert(Vec::new(), (root, None));
        for (path, record) in &self.records {
            if !record.has_reader && path != "/" {
                entries.insert(components(path), (record.clone(), None));
            }
        }
        for (path, content) in &self.files {
            let mut record = self.records.get(path).cloned().unwrap_or_else(|| Record {
                pathname: path.clone(),
                file_info: Some(FileInfo {
                    name: path.trim_start_matches('/').into(),
                    mode: 0o640,
                    mod_time: Some(now.into()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            record.has_reader = true;
            if let Some(info) = &mut record.file_info {
                info.size = content.len() as i64;
            }
            entries.insert(components(path), (record, Some(content.clone())));
        }
        entries.into_values().collect()
    }
}

/// A path's names, by which a depth-first walk sorts.
fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a backup gave: a snapshot, or the error that kept it from being committed.
pub struct BackupRun {
    /// The snapshot, when the backup succeeded.
    pub snapshot: Result<Snapshot, String>,
    /// The record paths in the order the plugin announced them.
    pub order: Vec<String>,
    /// Whether the plugin sent `finished`, which lets Plakar commit.
    pub finished: bool,
    /// Everything the plugin wrote on stderr.
    pub stderr: String,
}

impl BackupRun {
    /// The snapshot of a backup that must have succeeded; panics with the plugin's words.
    pub fn committed(&self) -> Snapshot {
        match &self.snapshot {
            Ok(s) => s.clone(),
            Err(e) => panic!(
                "the backup failed: {e}\n--- plugin stderr ---\n{}",
                self.stderr
            ),
        }
    }

    /// The error of a backup that must have failed without `finished`
    /// (so that Plakar commits nothing), holding every word.
    pub fn fails_saying(&self, words: &[&str]) -> String {
        let err = self.failure();
        assert!(!self.finished, "the importer sent `finished`: {err}");
        for w in words {
            assert!(err.contains(w), "{w:?} missing from the error: {err}");
        }
        err
    }

    /// The error of a backup that must have failed; panics with its files if it was committed.
    pub fn failure(&self) -> String {
        match &self.snapshot {
            Ok(s) => panic!("the backup succeeded: {:?}\n{}", s.paths(), self.stderr),
            Err(e) => e.clone(),
        }
    }
}

/// What a restore gave.
pub struct RestoreRun {
    /// One result per file: path and error text (empty on success).
    pub results: Vec<(String, String)>,
    /// An error of the whole Export call, if any.
    pub error: Option<String>,
    /// Every record the host sent, in order.
    pub sent: Vec<Record>,
    /// The record each result echoed, in the order the results came.
    pub headers: Vec<Record>,
    /// Everything the plugin wrote on stderr.
    pub stderr: String,
}

impl RestoreRun {
    /// The error reported for a path ("" on success); panics if it got no result.
    pub fn error_of(&self, path: &str) -> &str {
        self.results
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, e)| e.as_str())
            .unwrap_or_else(|| panic!("no result for {path}: {:?}", self.results))
    }

    /// Panics unless every file was restored.
    pub fn assert_ok(&self) {
        assert!(
            self.error.is_none(),
            "export failed: {:?}\n{}",
            self.error,
            self.stderr
        );
        for (path, err) in &self.results {
            assert!(
                err.is_empty(),
                "{path}: {err}\n--- plugin stderr ---\n{}",
                self.stderr
            );
        }
    }
}

/// A running plugin process with a gRPC channel on its pipes.
pub struct Plugin {
    child: Child,
    channel: Channel,
    stderr: Arc<Mutex<String>>,
    stderr_task: tokio::task::JoinHandle<()>,
    /// The copy of the binary another user runs, kept while it runs.
    _copy: Option<tempfile::TempDir>,
}

impl Plugin {
    /// Starts `postgresql <role>` for a connector, with extra environment variables.
    pub async fn start(connector: Connector, env: &[(&str, &str)]) -> Plugin {
        Plugin::start_as(connector, env, None).await
    }

    /// [`Plugin::start`] as another system user (uid, gid), from a copy of the
    /// binary that user can reach wherever the build lives.
    pub async fn start_as(
        connector: Connector,
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Plugin {
        let copy = user.map(|_| {
            let dir = super::cluster::open_dir();
            std::fs::copy(PLUGIN, dir.path().join("postgresql")).expect("a copy of the plugin");
            dir
        });
        let binary = match &copy {
            Some(dir) => dir.path().join("postgresql"),
            None => PLUGIN.into(),
        };
        let mut cmd = Command::new(binary);
        cmd.arg(connector.role())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid).current_dir("/");
        }
        let mut child = cmd.spawn().expect("the plugin starts");
        let channel = super::pipes::connect(&mut child)
            .await
            .expect("gRPC over the plugin's pipes");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr_task = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[plugin] {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Plugin {
            child,
            channel,
            stderr,
            stderr_task,
            _copy: copy,
        }
    }

    /// The process id, to look at it from outside.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Closes the pipes as Plakar does and checks that the plugin exits 0 on its own.
    pub async fn shut_down(self) -> String {
        let (status, stderr) = self.wait().await;
        assert!(
            status.success(),
            "the plugin exited with {status}\n{stderr}"
        );
        stderr
    }

    /// Closes the pipes and returns how the plugin ended, whatever it was.
    pub async fn wait(mut self) -> (ExitStatus, String) {
        drop(self.channel);
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the plugin exits once its pipes are closed")
            .unwrap();
        let _ = self.stderr_task.await;
        let stderr = self.stderr.lock().unwrap().clone();
        (status, stderr)
    }
}

/// `plakar backup` through the logical importer: Init, Import, Open each file, acknowledge it, Close.
pub async fn backup(config: &[(&str, &str)]) -> BackupRun {
    Backup::logical(config).run().await
}

/// `plakar backup` through the physical importer (`postgres+bin://`).
pub async fn physical_backup(config: &[(&str, &str)]) -> BackupRun {
    Backup::physical(config).run().await
}

/// The snapshot of a logical backup that must succeed; panics with the plugin's words.
pub async fn snapshot_of(config: &[(&str, &str)]) -> Snapshot {
    backup(config).await.committed()
}

/// `plakar backup` with extra environment variables for the plugin.
pub async fn backup_with_env(config: &[(&str, &str)], env: &[(&str, &str)]) -> BackupRun {
    Backup::logical(config).env(env).run().await
}

/// `plakar backup` for a test that kills the plugin: how it ended is returned, not checked.
pub async fn backup_allowing_crash(config: &[(&str, &str)]) -> (BackupRun, ExitStatus) {
    Backup::logical(config).run_allowing_crash().await
}

/// `plakar backup` with `between` run after `Init` and before `Import`.
pub async fn backup_with_pause<'a>(
    config: &'a [(&'a str, &'a str)],
    between: impl FnOnce() + Send + 'a,
) -> BackupRun {
    Backup::logical(config).pausing(between).run().await
}

/// A backup as the host plays it: which importer, and what Plakar does wrong.
pub struct Backup<'a> {
    connector: Connector,
    config: &'a [(&'a str, &'a str)],
    env: &'a [(&'a str, &'a str)],
    between: Option<Box<dyn FnOnce() + Send + 'a>>,
    /// A file Plakar stops reading after its first chunk while a closure runs.
    hold: Option<(String, Box<dyn FnOnce() + Send + 'a>)>,
    faults: Faults,
    /// The latest committed snapshot of the source, as Plakar's cache knows it.
    parent: Option<&'a Snapshot>,
}

/// How the host's Plakar misbehaves in a backup.
#[derive(Clone, Default)]
struct Faults {
    /// A path acknowledged with this error, as when the store fails to write it.
    store_error: Option<(String, String)>,
    /// A path at which Plakar ends its side of `Import` instead of acknowledging it.
    end_acks_at: Option<String>,
    /// Paths whose objects the store lost: read again even when unchanged.
    lost: Vec<String>,
}

impl<'a> Backup<'a> {
    /// A backup through the logical importer (`postgres://`).
    pub fn logical(config: &'a [(&'a str, &'a str)]) -> Backup<'a> {
        Backup {
            connector: Connector::Importer,
            config,
            env: &[],
            between: None,
            hold: None,
            faults: Faults::default(),
            parent: None,
        }
    }

    /// A backup through the physical importer (`postgres+bin://`).
    pub fn physical(config: &'a [(&'a str, &'a str)]) -> Backup<'a> {
        Backup {
            connector: Connector::PhysicalImporter,
            ..Backup::logical(config)
        }
    }

    /// Plays Plakar's cache with `parent` as the latest committed snapshot of
    /// the source: a file whose record is identical to the parent's is
    /// stored without being read, as `plakar backup` does, but for `lost`
    /// (objects the store no longer has), which it reads.
    pub fn after(mut self, parent: &'a Snapshot) -> Backup<'a> {
        self.parent = Some(parent);
        self
    }

    /// Extra environment variables for the plugin.
    pub fn env(mut self, env: &'a [(&'a str, &'a str)]) -> Backup<'a> {
        self.env = env;
        self
    }

    /// Runs `between` after `Init` and before `Import`.
    pub fn pausing(mut self, between: impl FnOnce() + Send + 'a) -> Backup<'a> {
        self.between = Some(Box::new(between));
        self
    }

    /// Plakar reads the first chunk of `path`, then runs `during` and reads
    /// the rest only once it returns: the tool behind the file is caught in
    /// the middle of its stream, blocked on a full pipe.
    pub fn holding(mut self, path: &str, during: impl FnOnce() + Send + 'a) -> Backup<'a> {
        self.hold = Some((path.to_string(), Box::new(during)));
        self
    }

    /// With [`Backup::after`]: the store lost the objects of `path` (a final
    /// `*` for a prefix), so Plakar reads it even though it is unchanged.
    pub fn losing(mut self, path: &str) -> Backup<'a> {
        self.faults.lost.push(path.to_string());
        self
    }

    /// Acknowledges `path` with `error`, as when the store fails to write it.
    pub fn failing_to_store(mut self, path: &str, error: &str) -> Backup<'a> {
        self.faults.store_error = Some((path.to_string(), error.to_string()));
        self
    }

    /// Plakar ends its side of `Import` where it would acknowledge `path`,
    /// and stores nothing more.
    pub fn ending_acks_at(mut self, path: &str) -> Backup<'a> {
        self.faults.end_acks_at = Some(path.to_string());
        self
    }

    /// Runs the backup and checks that the plugin then exits 0.
    pub async fn run(self) -> BackupRun {
        let (run, status) = self.run_allowing_crash().await;
        assert!(
            status.success(),
            "the plugin exited with {status}\n{}",
            run.stderr
        );
        run
    }

    /// Runs the backup; how the plugin ended is returned, not checked.
    pub async fn run_allowing_crash(self) -> (BackupRun, ExitStatus) {
        let plugin = Plugin::start(self.connector, self.env).await;
        let mut client =
            ImporterClient::new(plugin.channel.clone()).max_decoding_message_size(4 << 20);
        let mut order = Vec::new();
        let mut finished = false;
        let snapshot = run_backup(&mut client, self, &mut order, &mut finished).await;
        let _ = client.close(importer::CloseRequest {}).await;
        drop(client);
        let (status, stderr) = plugin.wait().await;
        (
            BackupRun {
                snapshot,
                order,
                finished,
                stderr,
            },
            status,
        )
    }
}

fn to_map(config: &[(&str, &str)]) -> HashMap<String, String> {
    config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The host's side of `Import`: acknowledgements until Plakar ends it.
type Acks = Arc<Mutex<Option<mpsc::Sender<ImportRequest>>>>;

async fn run_backup(
    client: &mut ImporterClient<Channel>,
    mut plan: Backup<'_>,
    order: &mut Vec<String>,
    finished: &mut bool,
) -> Result<Snapshot, String> {
    let connector = plan.connector;
    let init = client
        .init(importer::InitRequest {
            options: Some(importer::Options {
                hostname: "test".into(),
                os: "linux".into(),
                arch: "amd64".into(),
                cwd: "/".into(),
                maxconcurrency: 2,
                excludes: vec![],
                noxattr: true,
            }),
            proto: connector.proto().into(),
            config: to_map(plan.config),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    // A source that runs pg_dump or pg_basebackup must not be imported twice.
    assert_eq!(
        init.flags & STREAM,
        STREAM,
        "the {} does not declare the stream flag",
        connector.role()
    );
    assert_eq!(init.r#type, "postgresql");
    if let Some(between) = plan.between {
        between();
    }
    let (ack_tx, ack_rx) = mpsc::channel::<ImportRequest>(64);
    let acks: Acks = Arc::new(Mutex::new(Some(ack_tx)));
    let mut records = client
        .import(ReceiverStream::new(ack_rx))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut snapshot = Snapshot::default();
    // A file Plakar could not read: it would warn and commit, unless Import fails.
    let mut unread = Vec::new();
    // Like Plakar: each record is stored (its content read through Open) by a
    // worker, then acknowledged; at most two at once.
    let workers = Arc::new(tokio::sync::Semaphore::new(2));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let response = match records.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("the importer ended without `finished`".into()),
            Err(status) => {
                tasks.abort_all();
                return Err(status.message().to_string());
            }
        };
        if response.finished {
            *finished = true;
            break;
        }
        let record = response.record.expect("a record or finished");
        assert!(
            record.file_info.is_some(),
            "Plakar rejects records without fileInfo: {}",
            record.pathname
        );
        order.push(record.pathname.clone());
        let mut stored = record.clone();
        stored.pathname = stored_path(&record);
        snapshot.records.insert(stored.pathname.clone(), stored);
        if acks.lock().unwrap().is_none() {
            // A Plakar that ended its side stores nothing more.
            continue;
        }
        if plan
            .hold
            .as_ref()
            .is_some_and(|(p, _)| names(p, &record.pathname))
        {
            let (_, during) = plan.hold.take().expect("just seen");
            let content = read_file_held(&mut client.clone(), &record.pathname, during).await;
            acknowledge(&acks, &plan.faults, &record).await;
            keep((record, content), &mut snapshot, &mut unread);
            continue;
        }
        if let Some(content) = plan
            .parent
            .filter(|_| record.has_reader)
            .filter(|p| p.records.get(&stored_path(&record)) == Some(&record))
            .and_then(|p| p.files.get(&stored_path(&record)))
            .filter(|_| !plan.faults.lost.iter().any(|l| names(l, &record.pathname)))
        {
            // Unchanged since the parent: stored without `Open`.
            acknowledge(&acks, &plan.faults, &record).await;
            keep((record, Ok(content.clone())), &mut snapshot, &mut unread);
            continue;
        }
        let mut opener = client.clone();
        let permit = workers.clone().acquire_owned().await.unwrap();
        let acks = acks.clone();
        let faults = plan.faults.clone();
        tasks.spawn(async move {
            let content = if record.has_reader {
                read_file(&mut opener, &record.pathname).await
            } else {
                Ok(Vec::new())
            };
            drop(permit);
            acknowledge(&acks, &faults, &record).await;
            (record, content)
        });
        while let Some(done) = tasks.try_join_next() {
            keep(done.unwrap(), &mut snapshot, &mut unread);
        }
    }
    while let Some(done) = tasks.join_next().await {
        keep(done.unwrap(), &mut snapshot, &mut unread);
    }
    acks.lock().unwrap().take();
    // After `finished`, the importer's stream ends once Plakar closes its side.
    while let Ok(Some(_)) = records.message().await {}
    match unread.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(snapshot),
    }
}

/// Whether a fault's path names a record: the same path, or with a final
/// `*`, any path it starts (a WAL piece, whose name holds its positions).
fn names(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// The path under which Plakar keeps a record: its parent directory's
/// path, cleaned, joined with the record's name (so `/./a/b` is `/a/b`).
fn stored_path(record: &Record) -> String {
    let names = components(&record.pathname);
    let names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|c| *c != ".")
        .collect();
    let Some((_, parents)) = names.split_last() else {
        return "/".into();
    };
    let name = record
        .file_info
        .as_ref()
        .map(|i| i.name.as_str())
        .unwrap_or_default();
    format!("/{}", [parents, &[name]].concat().join("/"))
}

/// Acknowledges a stored record, as Plakar does: with Ok even when its
/// content failed (Plakar logs that), unless a fault says otherwise.
async fn acknowledge(acks: &Acks, faults: &Faults, record: &Record) {
    if faults.end_acks_at.as_deref() == Some(record.pathname.as_str()) {
        acks.lock().unwrap().take();
        return;
    }
    let error = match &faults.store_error {
        Some((path, error)) if names(path, &record.pathname) => error.clone(),
        _ => String::new(),
    };
    let sender = acks.lock().unwrap().clone();
    if let Some(sender) = sender {
        let _ = sender
            .send(ImportRequest {
                result: Some(RecordResult {
                    header: Some(record.clone()),
                    error,
                }),
            })
            .await;
    }
}

/// Keeps a worker's file in the snapshot, or its error.
fn keep(
    (record, content): (Record, Result<Vec<u8>, String>),
    snapshot: &mut Snapshot,
    unread: &mut Vec<String>,
) {
    match content {
        Ok(bytes) if record.has_reader => {
            snapshot.files.insert(stored_path(&record), bytes);
        }
        Ok(_) => {}
        Err(e) => unread.push(format!(
            "{}: {e} (Plakar would warn and commit)",
            record.pathname
        )),
    }
}

async fn read_file(client: &mut ImporterClient<Channel>, path: &str) -> Result<Vec<u8>, String> {
    read_file_held(client, path, || {}).await
}

/// Reads a file through `Open`, running `during` after its first chunk.
async fn read_file_held(
    client: &mut ImporterClient<Channel>,
    path: &str,
    during: impl FnOnce(),
) -> Result<Vec<u8>, String> {
    let mut during = Some(during);
    let mut stream = client
        .open(OpenRequest {
            record: Some(Record {
                pathname: path.to_string(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut bytes = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(r)) => {
                assert!(!r.chunk.is_empty(), "Plakar rejects empty chunks");
                assert!(r.chunk.len() <= 4 << 20);
                bytes.extend_from_slice(&r.chunk);
                if let Some(during) = during.take() {
                    during();
                }
            }
            Ok(None) => return Ok(bytes),
            Err(s) => return Err(s.message().to_string()),
        }
    }
}

/// `plakar restore -to` through the logical exporter: Init, Export every file in Plakar's order, Close.
pub async fn restore(config: &[(&str, &str)], snapshot: &Snapshot) -> RestoreRun {
    Restore::logical(config, snapshot).run().await
}

/// `plakar restore -to` through the physical exporter (`postgres+bin:///dir`).
pub async fn physical_restore(config: &[(&str, &str)], snapshot: &Snapshot) -> RestoreRun {
    Restore::physical(config, snapshot).run().await
}

/// `plakar restore -to` with extra environment variables for the plugin.
pub async fn restore_with_env(
    config: &[(&str, &str)],
    snapshot: &Snapshot,
    env: &[(&str, &str)],
) -> RestoreRun {
    Restore::logical(config, snapshot).env(env).run().await
}

/// A restore as the host plays it: which exporter, and what Plakar does wrong.
pub struct Restore<'a> {
    connector: Connector,
    config: &'a [(&'a str, &'a str)],
    snapshot: &'a Snapshot,
    env: &'a [(&'a str, &'a str)],
    cut_short: Option<String>,
    user: Option<(u32, u32)>,
}

impl<'a> Restore<'a> {
    /// A restore through the logical exporter (`postgres://`).
    pub fn logical(config: &'a [(&'a str, &'a str)], snapshot: &'a Snapshot) -> Restore<'a> {
        Restore {
            connector: Connector::Exporter,
            config,
            snapshot,
            env: &[],
            cut_short: None,
            user: None,
        }
    }

    /// A restore through the physical exporter (`postgres+bin:///dir`).
    pub fn physical(config: &'a [(&'a str, &'a str)], snapshot: &'a Snapshot) -> Restore<'a> {
        Restore {
            connector: Connector::PhysicalExporter,
            ..Restore::logical(config, snapshot)
        }
    }

    /// Extra environment variables for the plugin.
    pub fn env(mut self, env: &'a [(&'a str, &'a str)]) -> Restore<'a> {
        self.env = env;
        self
    }

    /// Runs the plugin as someone other than root: as `postgres` when the
    /// tests run as root, else as the user running them.
    pub fn not_as_root(mut self) -> Restore<'a> {
        self.user = super::cluster::server_identity();
        self
    }

    /// Plakar sends only the first half of `path`'s content, and then the
    /// next record without the empty chunk that ends a file.
    pub fn cutting_short(mut self, path: &str) -> Restore<'a> {
        self.cut_short = Some(path.to_string());
        self
    }

    /// Runs the restore and checks that the plugin then exits 0.
    pub async fn run(self) -> RestoreRun {
        let plugin = Plugin::start_as(self.connector, self.env, self.user).await;
        let mut client = ExporterClient::new(plugin.channel.clone());
        let wire = Wire::default();
        let error = run_restore(&mut client, &self, &wire).await.err();
        let _ = client.close(exporter::CloseRequest {}).await;
        drop(client);
        let stderr = plugin.shut_down().await;
        RestoreRun {
            results: taken(&wire.results),
            error,
            sent: taken(&wire.sent),
            headers: taken(&wire.headers),
            stderr,
        }
    }
}

fn taken<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().unwrap())
}

/// What went over the wire in a restore, both ways.
#[derive(Default)]
struct Wire {
    results: Mutex<Vec<(String, String)>>,
    sent: Arc<Mutex<Vec<Record>>>,
    headers: Mutex<Vec<Record>>,
}

async fn run_restore(
    client: &mut ExporterClient<Channel>,
    plan: &Restore<'_>,
    wire: &Wire,
) -> Result<(), String> {
    client
        .init(exporter::InitRequest {
            options: None,
            proto: plan.connector.proto().into(),
            config: to_map(plan.config),
        })
        .await
        .map_err(|s| s.message().to_string())?;
    let (tx, rx) = mpsc::channel::<ExportRequest>(4);
    let walk = plan.snapshot.walk();
    let cut_short = plan.cut_short.clone();
    let sent = wire.sent.clone();
    let sender = tokio::spawn(async move {
        let send = |p: Packet| ExportRequest { packet: Some(p) };
        for (record, content) in walk {
            let cut = cut_short.as_deref() == Some(record.pathname.as_str());
            sent.lock().unwrap().push(record.clone());
            if tx.send(send(Packet::Record(record))).await.is_err() {
                return;
            }
            let Some(content) = content else { continue };
            let content = if cut {
                &content[..content.len() / 2]
            } else {
                &content[..]
            };
            for chunk in content.chunks(1 << 20) {
                if tx
                    .send(send(Packet::Chunk(chunk.to_vec().into())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !cut
                && tx
                    .send(send(Packet::Chunk(Default::default())))
                    .await
                    .is_err()
            {
                return;
            }
        }
        // Dropping `tx` closes Plakar's sending side.
    });
    let mut stream = client
        .export(ReceiverStream::new(rx))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(r)) => {
                let result = r.result.expect("Plakar aborts on a reply without a result");
                let header = result
                    .header
                    .expect("Plakar aborts on a result without its record");
                assert!(
                    header.file_info.is_some(),
                    "Plakar aborts on a header without fileInfo"
                );
                wire.results
                    .lock()
                    .unwrap()
                    .push((header.pathname.clone(), result.error));
                wire.headers.lock().unwrap().push(header);
            }
            Ok(None) => break,
            Err(s) => {
                sender.abort();
                return Err(s.message().to_string());
            }
        }
    }
    let _ = sender.await;
    Ok(())
}

/// `plakar source ping` / `destination ping`: Init, then `stop` runs, then Ping.
pub async fn ping_after(
    connector: Connector,
    config: &[(&str, &str)],
    stop: impl FnOnce(),
) -> Result<(), String> {
    let plugin = Plugin::start(connector, &[]).await;
    // The importer and the exporter have the same calls, in two packages.
    macro_rules! init_then_ping {
        ($client:ident, $package:ident) => {{
            let mut client = $client::new(plugin.channel.clone());
            let init = $package::InitRequest {
                options: None,
                proto: connector.proto().into(),
                config: to_map(config),
            };
            match client.init(init).await {
                Ok(_) => {
                    stop();
                    client.ping($package::PingRequest {}).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        }};
    }
    let result = if connector.imports() {
        init_then_ping!(ImporterClient, importer)
    } else {
        init_then_ping!(ExporterClient, exporter)
    };
    plugin.shut_down().await;
    result.map_err(|s| s.message().to_string())
}
