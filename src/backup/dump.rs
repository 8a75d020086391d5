//! Runs one client tool and streams its stdout to Plakar in chunks.

use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;

use super::plan::{self, Planned};
use super::Backup;
use crate::progress::Progress;
use crate::protocol::importer::OpenResponse;
use crate::protocol::CHUNK_SIZE;

/// Streams the content of one record into `tx`; a failure ends the stream with an
/// error and is remembered so that the whole `Import` fails.
pub async fn stream(
    backup: Arc<Backup>,
    record: Planned,
    tx: mpsc::Sender<Result<OpenResponse, Status>>,
) {
    let _permit = backup
        .jobs
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let mut progress = Progress::start("backup", &record.path);
    match run(&backup, &record, &tx, &mut progress).await {
        Ok(()) => progress.done(),
        Err(why) => {
            let message = format!(
                "backup of {} ({}) failed: {why}",
                record.describe(),
                record.path
            );
            progress.failed(&why);
            backup.fail(message.clone());
            let _ = tx.send(Err(Status::internal(message))).await;
        }
    }
}

async fn run(
    backup: &Backup,
    record: &Planned,
    tx: &mpsc::Sender<Result<OpenResponse, Status>>,
    progress: &mut Progress,
) -> Result<(), String> {
    let (tool, args) = plan::command(&backup.config, &record.item, backup.no_role_passwords);
    let mut running = backup
        .toolbox
        .spawn(
            tool,
            &backup.config.conn,
            &args,
            Stdio::null(),
            Stdio::piped(),
        )
        .map_err(|e| e.to_string())?;
    let mut stdout = running.child.stdout.take().expect("stdout is piped");
    loop {
        let mut chunk = Vec::with_capacity(CHUNK_SIZE);
        while chunk.len() < CHUNK_SIZE {
            match stdout.read_buf(&mut chunk).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("cannot read {}'s output: {e}", tool.name())),
            }
        }
        if chunk.is_empty() {
            break;
        }
        progress.bytes += chunk.len() as u64;
        if tx.send(Ok(OpenResponse { chunk })).await.is_err() {
            // Plakar hung up: stop the tool (dropping it kills it) and say so.
            return Err("Plakar stopped reading the dump before its end".into());
        }
    }
    let outcome = running.finish().await;
    match outcome.failure() {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
