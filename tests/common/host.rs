//! Drives the real plugin binary over stdin/stdout exactly as Plakar v1.1.0
//! does (see ../shared/PLAKAR-PROTOCOL.md): one process per connector, gRPC
//! over the two pipes, `Init`, then `Import` + `Open` with acknowledgements,
//! or `Export` with records, 1 MiB chunks and an empty end-of-file chunk.
//!
//! It stands in for the `plakar` program because the Go module proxy refuses
//! github.com/PlakarKorp/plakar here; see README.md ("Testing").

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
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

/// A stored snapshot: its files and their content.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Path to content, in Plakar's order.
    pub files: BTreeMap<String, Vec<u8>>,
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
}

/// What a backup gave: a snapshot, or the error that kept it from being committed.
pub struct BackupRun {
    /// The snapshot, when the backup succeeded.
    pub snapshot: Result<Snapshot, String>,
    /// The record paths in the order the plugin announced them.
    pub order: Vec<String>,
    /// Everything the plugin wrote on stderr.
    pub stderr: String,
}

/// What a restore gave.
pub struct RestoreRun {
    /// One result per file: path and error text (empty on success).
    pub results: Vec<(String, String)>,
    /// An error of the whole Export call, if any.
    pub error: Option<String>,
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
}

impl Plugin {
    /// Starts `postgresql <role>` with extra environment variables.
    pub async fn start(role: &str, env: &[(&str, &str)]) -> Plugin {
        let mut cmd = Command::new(PLUGIN);
        cmd.arg(role)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
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
    pub async fn wait(mut self) -> (std::process::ExitStatus, String) {
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

/// `plakar backup`: Init, Import, Open each file, acknowledge it, Close.
pub async fn backup(config: &[(&str, &str)]) -> BackupRun {
    backup_with_env(config, &[]).await
}

/// `plakar backup` with extra environment variables for the plugin.
pub async fn backup_with_env(config: &[(&str, &str)], env: &[(&str, &str)]) -> BackupRun {
    let (run, status) = backup_inner(config, env, || {}).await;
    assert!(
        status.success(),
        "the plugin exited with {status}\n{}",
        run.stderr
    );
    run
}

/// `plakar backup` for a test that kills the plugin: how it ended is returned, not checked.
pub async fn backup_allowing_crash(
    config: &[(&str, &str)],
) -> (BackupRun, std::process::ExitStatus) {
    backup_inner(config, &[], || {}).await
}

/// `plakar backup` with `between` run after `Init` and before `Import`.
pub async fn backup_with_pause(config: &[(&str, &str)], between: impl FnOnce()) -> BackupRun {
    let (run, status) = backup_inner(config, &[], between).await;
    assert!(
        status.success(),
        "the plugin exited with {status}\n{}",
        run.stderr
    );
    run
}

async fn backup_inner(
    config: &[(&str, &str)],
    env: &[(&str, &str)],
    between: impl FnOnce(),
) -> (BackupRun, std::process::ExitStatus) {
    let plugin = Plugin::start("importer", env).await;
    let mut client = ImporterClient::new(plugin.channel.clone()).max_decoding_message_size(4 << 20);
    let mut order = Vec::new();
    let snapshot = run_backup(&mut client, config, &mut order, between).await;
    let _ = client.close(importer::CloseRequest {}).await;
    drop(client);
    let (status, stderr) = plugin.wait().await;
    (
        BackupRun {
            snapshot,
            order,
            stderr,
        },
        status,
    )
}

fn to_map(config: &[(&str, &str)]) -> HashMap<String, String> {
    config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn run_backup(
    client: &mut ImporterClient<Channel>,
    config: &[(&str, &str)],
    order: &mut Vec<String>,
    between: impl FnOnce(),
) -> Result<Snapshot, String> {
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
            proto: "postgres".into(),
            config: to_map(config),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    // A source that runs pg_dump must not be imported twice (Plakar's stream flag).
    assert_eq!(
        init.flags & 4,
        4,
        "the importer does not declare the stream flag"
    );
    assert_eq!(init.r#type, "postgresql");
    between();
    let (ack_tx, ack_rx) = mpsc::channel::<ImportRequest>(64);
    let mut records = client
        .import(ReceiverStream::new(ack_rx))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut files = BTreeMap::new();
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
            break;
        }
        let record = response.record.expect("a record or finished");
        assert!(
            record.file_info.is_some(),
            "Plakar rejects records without fileInfo: {}",
            record.pathname
        );
        order.push(record.pathname.clone());
        let mut opener = client.clone();
        let permit = workers.clone().acquire_owned().await.unwrap();
        let ack = ack_tx.clone();
        tasks.spawn(async move {
            let content = if record.has_reader {
                read_file(&mut opener, &record.pathname).await
            } else {
                Ok(Vec::new())
            };
            drop(permit);
            // Plakar acknowledges with Ok even when a file failed; it logs the error.
            let _ = ack
                .send(ImportRequest {
                    result: Some(RecordResult {
                        header: Some(record.clone()),
                        error: String::new(),
                    }),
                })
                .await;
            (record, content)
        });
        while let Some(done) = tasks.try_join_next() {
            let (record, content) = done.unwrap();
            match content {
                Ok(bytes) if record.has_reader => {
                    files.insert(record.pathname, bytes);
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "{}: {e} (Plakar would warn and commit)",
                        record.pathname
                    ))
                }
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (record, content) = done.unwrap();
        match content {
            Ok(bytes) if record.has_reader => {
                files.insert(record.pathname, bytes);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "{}: {e} (Plakar would warn and commit)",
                    record.pathname
                ))
            }
        }
    }
    drop(ack_tx);
    // After `finished`, the importer's stream ends once Plakar closes its side.
    while let Ok(Some(_)) = records.message().await {}
    Ok(Snapshot { files })
}

async fn read_file(client: &mut ImporterClient<Channel>, path: &str) -> Result<Vec<u8>, String> {
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
            }
            Ok(None) => return Ok(bytes),
            Err(s) => return Err(s.message().to_string()),
        }
    }
}

/// `plakar restore -to`: Init, Export every file in path order, Close.
pub async fn restore(config: &[(&str, &str)], snapshot: &Snapshot) -> RestoreRun {
    restore_with_env(config, snapshot, &[]).await
}

/// `plakar restore -to` with extra environment variables for the plugin.
pub async fn restore_with_env(
    config: &[(&str, &str)],
    snapshot: &Snapshot,
    env: &[(&str, &str)],
) -> RestoreRun {
    let plugin = Plugin::start("exporter", env).await;
    let mut client = ExporterClient::new(plugin.channel.clone());
    let (results, error) = match run_restore(&mut client, config, snapshot).await {
        Ok(results) => (results, None),
        Err((results, e)) => (results, Some(e)),
    };
    let _ = client.close(exporter::CloseRequest {}).await;
    drop(client);
    let stderr = plugin.shut_down().await;
    RestoreRun {
        results,
        error,
        stderr,
    }
}

type Results = Vec<(String, String)>;

async fn run_restore(
    client: &mut ExporterClient<Channel>,
    config: &[(&str, &str)],
    snapshot: &Snapshot,
) -> Result<Results, (Results, String)> {
    client
        .init(exporter::InitRequest {
            options: None,
            proto: "postgres".into(),
            config: to_map(config),
        })
        .await
        .map_err(|s| (Vec::new(), s.message().to_string()))?;
    let (tx, rx) = mpsc::channel::<ExportRequest>(4);
    let files = snapshot.files.clone();
    let sender = tokio::spawn(async move {
        let now = SystemTime::now();
        let dir = Record {
            pathname: "/".into(),
            file_info: Some(FileInfo {
                name: "/".into(),
                mode: 0x8000_0000 | 0o750,
                mod_time: Some(now.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let send = |p: Packet| ExportRequest { packet: Some(p) };
        if tx.send(send(Packet::Record(dir))).await.is_err() {
            return;
        }
        for (path, content) in files {
            let record = Record {
                has_reader: true,
                pathname: path.clone(),
                file_info: Some(FileInfo {
                    name: path.trim_start_matches('/').into(),
                    size: content.len() as i64,
                    mode: 0o640,
                    mod_time: Some(now.into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if tx.send(send(Packet::Record(record))).await.is_err() {
                return;
            }
            for chunk in content.chunks(1 << 20) {
                if tx
                    .send(send(Packet::Chunk(chunk.to_vec().into())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if tx
                .send(send(Packet::Chunk(Default::default())))
                .await
                .is_err()
            {
                return;
            }
        }
        // Dropping `tx` closes Plakar's sending side.
    });
    let mut results = Vec::new();
    let mut stream = client
        .export(ReceiverStream::new(rx))
        .await
        .map_err(|s| (Vec::new(), s.message().to_string()))?
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
                results.push((header.pathname, result.error));
            }
            Ok(None) => break,
            Err(s) => {
                sender.abort();
                return Err((results, s.message().to_string()));
            }
        }
    }
    let _ = sender.await;
    Ok(results)
}

/// `plakar source ping` / `destination ping`: Init, then `stop` runs, then Ping.
pub async fn ping_after(
    role: &str,
    config: &[(&str, &str)],
    stop: impl FnOnce(),
) -> Result<(), String> {
    let plugin = Plugin::start(role, &[]).await;
    let result = if role == "importer" {
        let mut client = ImporterClient::new(plugin.channel.clone());
        let init = importer::InitRequest {
            options: None,
            proto: "postgres".into(),
            config: to_map(config),
        };
        match client.init(init).await {
            Ok(_) => {
                stop();
                client.ping(importer::PingRequest {}).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    } else {
        let mut client = ExporterClient::new(plugin.channel.clone());
        let init = exporter::InitRequest {
            options: None,
            proto: "postgres".into(),
            config: to_map(config),
        };
        match client.init(init).await {
            Ok(_) => {
                stop();
                client.ping(exporter::PingRequest {}).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    };
    plugin.shut_down().await;
    result.map_err(|s| s.message().to_string())
}
