//! `drive`: plays Plakar's role against the plugin binary, for the benchmark.
//!
//! ```text
//! drive backup  --plugin PATH --out DIR   key=value...
//! drive restore --plugin PATH --from DIR  key=value...
//! ```
//!
//! It speaks to the plugin over its pipes as Plakar v1.1.0 does (the same
//! sequence as tests/common/host.rs), but streams: a backup writes each
//! record's chunks to `DIR/<percent-encoded path>` as they arrive (or counts
//! and drops them with `--out /dev/null`), a restore reads each file in 1 MiB
//! chunks. Nothing holds a whole file in memory. Each run prints one JSON line
//! on stdout: wall seconds (and, for a backup, the seconds until `Init`
//! returned), bytes per file or errors per file, the plugin's peak RSS
//! (VmHWM from /proc, read just before its pipes close) and the CPU seconds
//! the plugin process used itself, without its pg_dump or pg_restore (read
//! from /proc once it has exited, before it is reaped).

#[path = "../tests/common/pipes.rs"]
mod pipes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plakar_postgresql::protocol::connectors::{FileInfo, Record, Result as RecordResult};
use plakar_postgresql::protocol::exporter::exporter_client::ExporterClient;
use plakar_postgresql::protocol::exporter::{self, export_request::Packet, ExportRequest};
use plakar_postgresql::protocol::importer::importer_client::ImporterClient;
use plakar_postgresql::protocol::importer::{self, ImportRequest, OpenRequest};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const CHUNK: usize = 1 << 20;
const USAGE: &str = "usage: drive backup --plugin PATH --out DIR [key=value...]\n       drive restore --plugin PATH --from DIR [key=value...]";

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    command: String,
    plugin: PathBuf,
    dir: PathBuf,
    config: HashMap<String, String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or(USAGE)?;
    if command != "backup" && command != "restore" {
        return Err(USAGE.into());
    }
    let (mut plugin, mut dir, mut config) = (None, None, HashMap::new());
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--plugin" => plugin = it.next().map(PathBuf::from),
            "--out" if command == "backup" => dir = it.next().map(PathBuf::from),
            "--from" if command == "restore" => dir = it.next().map(PathBuf::from),
            _ => match arg.split_once('=') {
                Some((k, v)) => {
                    config.insert(k.to_string(), v.to_string());
                }
                None => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
            },
        }
    }
    Ok(Args {
        command,
        plugin: plugin.ok_or(USAGE)?,
        dir: dir.ok_or(USAGE)?,
        config,
    })
}

/// A snapshot path as one file name: every byte but `[A-Za-z0-9._-]` as `%XX`.
fn encode(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Starts `PLUGIN role` (its stderr goes to ours) and connects gRPC over its pipes.
async fn start(plugin: &Path, role: &str) -> Result<(Child, Channel), Error> {
    let mut child = Command::new(plugin)
        .arg(role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let channel = pipes::connect(&mut child).await?;
    Ok((child, channel))
}

/// The plugin's peak resident set size in KiB (VmHWM), while it still runs.
fn peak_rss_kib(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The CPU seconds (user, system) the plugin process itself used, not its
/// children: fields 14 and 15 of /proc/PID/stat, which a process that has
/// exited keeps until it is reaped.
fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user / tick, system / tick))
}

/// Whether the process has exited and waits to be reaped (state `Z`).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Closes the pipes, waits for the plugin to exit, and returns the CPU
/// seconds (user, system) it used, read before it is reaped.
async fn finish(mut child: Child, channel: Channel) -> Result<Option<(f64, f64)>, Error> {
    drop(channel);
    let pid = child.id();
    let mut cpu = None;
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_zombie(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cpu = cpu_seconds(pid);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    if !status.success() {
        return Err(format!("the plugin exited with {status}").into());
    }
    Ok(cpu)
}

async fn backup(args: &Args) -> Result<serde_json::Value, Error> {
    let started = Instant::now();
    let discard = args.dir == Path::new("/dev/null");
    if !discard {
        tokio::fs::create_dir_all(&args.dir).await?;
    }
    let (child, channel) = start(&args.plugin, "importer").await?;
    let mut client = ImporterClient::new(channel.clone()).max_decoding_message_size(4 << 20);
    let mut init_seconds = None;
    let outcome = run_backup(&mut client, args, discard, started, &mut init_seconds).await;
    let peak = peak_rss_kib(&child);
    let _ = client.close(importer::CloseRequest {}).await;
    drop(client);
    let exit = finish(child, channel).await;
    let wall = started.elapsed().as_secs_f64();
    let (files, error) = match outcome {
        Ok(files) => (files, None),
        Err((files, e)) => (files, Some(e)),
    };
    let (cpu, exit) = split_exit(exit);
    let error = error.or(exit);
    Ok(json!({
        "command": "backup",
        "wall_seconds": wall,
        "init_seconds": init_seconds,
        "cpu_user_seconds": cpu.map(|c| c.0),
        "cpu_system_seconds": cpu.map(|c| c.1),
        "bytes": files,
        "total_bytes": files.values().sum::<u64>(),
        "peak_rss_kib": peak,
        "error": error,
    }))
}

/// The plugin's CPU seconds, and the error of its exit, if any.
fn split_exit(exit: Result<Option<(f64, f64)>, Error>) -> (Option<(f64, f64)>, Option<String>) {
    match exit {
        Ok(cpu) => (cpu, None),
        Err(e) => (None, Some(e.to_string())),
    }
}

type Sizes = BTreeMap<String, u64>;

async fn run_backup(
    client: &mut ImporterClient<Channel>,
    args: &Args,
    discard: bool,
    started: Instant,
    init_seconds: &mut Option<f64>,
) -> Result<Sizes, (Sizes, String)> {
    let mut sizes = Sizes::new();
    let status = |s: tonic::Status| s.message().to_string();
    client
        .init(importer::InitRequest {
            options: Some(importer::Options {
                hostname: "bench".into(),
                os: "linux".into(),
                arch: "amd64".into(),
                cwd: "/".into(),
                maxconcurrency: 2,
                excludes: vec![],
                noxattr: true,
            }),
            proto: "postgres".into(),
            config: args.config.clone(),
        })
        .await
        .map_err(|s| (Sizes::new(), status(s)))?;
    // From the plugin's start to the end of Init: connecting, planning, the manifest.
    *init_seconds = Some(started.elapsed().as_secs_f64());
    let (ack_tx, ack_rx) = mpsc::channel::<ImportRequest>(64);
    let mut records = client
        .import(ReceiverStream::new(ack_rx))
        .await
        .map_err(|s| (Sizes::new(), status(s)))?
        .into_inner();
    // Like Plakar: each record is stored by a worker, at most two at once, then acknowledged.
    let workers = Arc::new(Semaphore::new(2));
    let mut tasks = tokio::task::JoinSet::new();
    let mut failure = None;
    loop {
        let response = match records.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                failure = Some("the importer ended without `finished`".to_string());
                break;
            }
            Err(s) => {
                failure = Some(status(s));
                break;
            }
        };
        if response.finished {
            break;
        }
        let Some(record) = response.record else {
            failure = Some("a response with neither record nor finished".into());
            break;
        };
        if !record.has_reader {
            let _ = ack_tx.send(ack(record)).await;
            continue;
        }
        let mut opener = client.clone();
        let permit = workers.clone().acquire_owned().await.expect("never closed");
        let acks = ack_tx.clone();
        let target = (!discard).then(|| args.dir.join(encode(&record.pathname)));
        tasks.spawn(async move {
            let stored = store(&mut opener, &record.pathname, target.as_deref()).await;
            drop(permit);
            let _ = acks.send(ack(record.clone())).await;
            (record.pathname, stored)
        });
        while let Some(done) = tasks.try_join_next() {
            collect(done, &mut sizes, &mut failure);
        }
    }
    if failure.is_some() {
        tasks.abort_all();
    }
    while let Some(done) = tasks.join_next().await {
        collect(done, &mut sizes, &mut failure);
    }
    drop(ack_tx);
    if failure.is_none() {
        while let Ok(Some(_)) = records.message().await {}
    }
    match failure {
        None => Ok(sizes),
        Some(e) => Err((sizes, e)),
    }
}

fn ack(record: Record) -> ImportRequest {
    ImportRequest {
        result: Some(RecordResult {
            header: Some(record),
            error: String::new(),
        }),
    }
}

type Stored = Result<(String, Result<u64, String>), tokio::task::JoinError>;

fn collect(done: Stored, sizes: &mut Sizes, failure: &mut Option<String>) {
    match done {
        Ok((path, Ok(n))) => {
            sizes.insert(path, n);
        }
        Ok((path, Err(e))) => {
            failure.get_or_insert(format!("{path}: {e}"));
        }
        Err(e) if e.is_cancelled() => {}
        Err(e) => {
            failure.get_or_insert(e.to_string());
        }
    }
}

/// Reads one record through `Open`, writing each chunk as it comes.
async fn store(
    client: &mut ImporterClient<Channel>,
    path: &str,
    target: Option<&Path>,
) -> Result<u64, String> {
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
    let mut file = match target {
        Some(p) => Some(
            tokio::fs::File::create(p)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let mut total = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(r)) => {
                if r.chunk.is_empty() {
                    return Err("an empty chunk (Plakar rejects them)".into());
                }
                total += r.chunk.len() as u64;
                if let Some(f) = file.as_mut() {
                    f.write_all(&r.chunk).await.map_err(|e| e.to_string())?;
                }
            }
            Ok(None) => break,
            Err(s) => return Err(s.message().to_string()),
        }
    }
    if let Some(mut f) = file {
        f.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(total)
}

async fn restore(args: &Args) -> Result<serde_json::Value, Error> {
    let mut paths = BTreeMap::new();
    for entry in std::fs::read_dir(&args.dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = decode(&name).ok_or_else(|| format!("not a percent-encoded path: {name}"))?;
        paths.insert(path, (entry.path(), entry.metadata()?.len()));
    }
    let total_bytes: u64 = paths.values().map(|(_, size)| size).sum();
    let started = Instant::now();
    let (child, channel) = start(&args.plugin, "exporter").await?;
    let mut client = ExporterClient::new(channel.clone());
    let outcome = run_restore(&mut client, args, paths).await;
    let peak = peak_rss_kib(&child);
    let _ = client.close(exporter::CloseRequest {}).await;
    drop(client);
    let exit = finish(child, channel).await;
    let wall = started.elapsed().as_secs_f64();
    let (results, error) = match outcome {
        Ok(r) => (r, None),
        Err((r, e)) => (r, Some(e)),
    };
    let (cpu, exit) = split_exit(exit);
    let error = error.or(exit);
    let failed = results.values().filter(|e| !e.is_empty()).count();
    Ok(json!({
        "command": "restore",
        "wall_seconds": wall,
        "bytes": total_bytes,
        "cpu_user_seconds": cpu.map(|c| c.0),
        "cpu_system_seconds": cpu.map(|c| c.1),
        "errors": results,
        "failed_files": failed,
        "peak_rss_kib": peak,
        "error": error,
    }))
}

type Results = BTreeMap<String, String>;

async fn run_restore(
    client: &mut ExporterClient<Channel>,
    args: &Args,
    paths: BTreeMap<String, (PathBuf, u64)>,
) -> Result<Results, (Results, String)> {
    client
        .init(exporter::InitRequest {
            options: None,
            proto: "postgres".into(),
            config: args.config.clone(),
        })
        .await
        .map_err(|s| (Results::new(), s.message().to_string()))?;
    let (tx, rx) = mpsc::channel::<ExportRequest>(4);
    let sender = tokio::spawn(send_files(tx, paths));
    let mut results = Results::new();
    let mut stream = client
        .export(ReceiverStream::new(rx))
        .await
        .map_err(|s| (Results::new(), s.message().to_string()))?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(r)) => {
                if let Some(RecordResult {
                    header: Some(h),
                    error,
                }) = r.result
                {
                    results.insert(h.pathname, error);
                }
            }
            Ok(None) => break,
            Err(s) => {
                sender.abort();
                return Err((results, s.message().to_string()));
            }
        }
    }
    match sender.await {
        Ok(Ok(())) => Ok(results),
        Ok(Err(e)) => Err((results, e)),
        Err(e) => Err((results, e.to_string())),
    }
}

/// Sends the root, then each file in path order: record, 1 MiB chunks, an empty end chunk.
async fn send_files(
    tx: mpsc::Sender<ExportRequest>,
    paths: BTreeMap<String, (PathBuf, u64)>,
) -> Result<(), String> {
    let now = SystemTime::now();
    let send = |p: Packet| ExportRequest { packet: Some(p) };
    let root = Record {
        pathname: "/".into(),
        file_info: Some(FileInfo {
            name: "/".into(),
            mode: 0x8000_0000 | 0o750,
            mod_time: Some(now.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A closed channel means the plugin ended the call; its status says why.
    if tx.send(send(Packet::Record(root))).await.is_err() {
        return Ok(());
    }
    for (path, (file, size)) in paths {
        let record = Record {
            has_reader: true,
            pathname: path.clone(),
            file_info: Some(FileInfo {
                name: path.trim_start_matches('/').into(),
                size: size as i64,
                mode: 0o640,
                mod_time: Some(now.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        if tx.send(send(Packet::Record(record))).await.is_err() {
            return Ok(());
        }
        let mut f = tokio::fs::File::open(&file)
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            while chunk.len() < CHUNK {
                let n = (&mut f)
                    .take((CHUNK - chunk.len()) as u64)
                    .read_to_end(&mut chunk)
                    .await
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                if n == 0 {
                    break;
                }
            }
            if chunk.is_empty() {
                break;
            }
            if tx.send(send(Packet::Chunk(chunk.into()))).await.is_err() {
                return Ok(());
            }
        }
        if tx
            .send(send(Packet::Chunk(Default::default())))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = if args.command == "backup" {
        backup(&args).await
    } else {
        restore(&args).await
    };
    match report {
        Ok(value) => {
            let ok = value["error"].is_null() && value["failed_files"].as_u64().unwrap_or(0) == 0;
            println!("{value}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("drive: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in ["/manifest.json", "/a/b.dump", "/50%.dump", "/é x.dump"] {
            let e = encode(p);
            assert!(!e.contains('/'));
            assert_eq!(decode(&e).as_deref(), Some(p));
        }
    }
}
