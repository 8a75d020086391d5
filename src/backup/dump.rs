//! Runs one client tool and streams its stdout to Plakar in chunks.

use std::process::Stdio;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::plan::{self, Planned};
use super::Backup;
use crate::pipe;
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
    let (output, tool_end) = pipe::output_pipe()
        .map_err(|e| format!("cannot create a pipe for {}: {e}", tool.name()))?;
    let running = backup
        .toolbox
        .spawn(
            tool,
            &backup.config.conn,
            &args,
            Stdio::null(),
            Stdio::from(tool_end),
        )
        .map_err(|e| e.to_string())?;
    // The chunks are read in a thread of their own (see `pipe`), and handed to
    // the gRPC stream as they fill.
    let tx = tx.clone();
    let reader = tokio::task::spawn_blocking(move || {
        pipe::read_chunks(output, CHUNK_SIZE, |chunk| {
            tx.blocking_send(Ok(OpenResponse {
                chunk: chunk.into(),
            }))
            .is_ok()
        })
    });
    let read = reader
        .await
        .map_err(|e| format!("the reader of {}'s output failed: {e}", tool.name()))?;
    match read {
        Ok((bytes, stopped)) => {
            progress.bytes = bytes;
            if stopped {
                // Plakar hung up: stop the tool (dropping it kills it) and say so.
                return Err("Plakar stopped reading the dump before its end".into());
            }
        }
        Err(e) => return Err(format!("cannot read {}'s output: {e}", tool.name())),
    }
    let outcome = running.finish().await;
    match outcome.failure() {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
