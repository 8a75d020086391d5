//! Runs one client tool and streams its stdout to Plakar in chunks.
//!
//! A dump can be started ahead of its turn ([`Started`]): the tool connects,
//! reads the catalogs and fills its pipe while the previous file streams, so
//! that its start-up (80 ms for pg_dump on a small database) is not spent
//! between two files. It waits, blocked on its full pipe, until Plakar reads
//! its record; it is killed if Plakar never does.

use std::fs::File;
use std::process::Stdio;
use std::sync::Arc;

use super::plan::{self, Planned};
use super::Backup;
use crate::logical::error::Error;
use crate::pipe;
use crate::postgres::replication::standby::RecoveryConflict;
use crate::postgres::tools::{Running, Tool};
use crate::progress::Progress;
use crate::protocol::source::Content;
use crate::protocol::CHUNK_SIZE;

/// A tool started for a record, writing into a pipe nobody reads yet.
#[derive(Debug)]
pub struct Started {
    tool: Tool,
    running: Running,
    output: File,
}

/// Starts the tool behind a record, its stdout into a pipe of our own.
pub fn start(backup: &Backup, record: &Planned) -> Result<Started, Error> {
    let (tool, args) = plan::command(
        &backup.config,
        &record.item,
        backup.no_role_passwords,
        backup.statistics,
    );
    let (output, tool_end) = pipe::output_pipe().map_err(|source| Error::Output {
        action: "create a pipe for",
        tool: tool.name(),
        source,
    })?;
    let running = backup.toolbox.spawn(
        tool,
        &backup.config.conn,
        &args,
        Stdio::null(),
        Stdio::from(tool_end),
    )?;
    Ok(Started {
        tool,
        running,
        output,
    })
}

/// Streams the content of one record, from the tool started ahead for it if
/// there is one; a failure ends the stream with an error and is remembered
/// so that the whole backup fails.
pub async fn stream(
    backup: Arc<Backup>,
    record: Planned,
    ahead: Option<Result<Started, Error>>,
    content: Content,
) -> Result<(), Error> {
    let _permit = backup
        .jobs
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let mut progress = Progress::start("backup", &record.path);
    let started = ahead.unwrap_or_else(|| start(&backup, &record));
    match run(started, content, &mut progress).await {
        Ok(()) => {
            progress.done();
            Ok(())
        }
        Err(why) => {
            progress.failed(&why);
            let error = Error::Dump {
                what: record.describe(),
                path: record.path,
                why: Box::new(why),
            };
            backup.fail(error.to_string());
            Err(error)
        }
    }
}

async fn run(
    started: Result<Started, Error>,
    content: Content,
    progress: &mut Progress,
) -> Result<(), Error> {
    let Started {
        tool,
        running,
        output,
    } = started?;
    // The chunks are read in a thread of their own (see `pipe`), and handed to
    // the gRPC stream as they fill.
    let reader = tokio::task::spawn_blocking(move || {
        pipe::read_chunks(output, CHUNK_SIZE, |chunk| {
            content.blocking_send(chunk.into())
        })
    });
    let unreadable = |source| Error::Output {
        action: "read",
        tool: tool.name(),
        source,
    };
    let read = reader
        .await
        .map_err(|e| unreadable(std::io::Error::other(e)))?;
    match read {
        Ok((bytes, stopped)) => {
            progress.bytes = bytes;
            if stopped {
                // Plakar hung up: stop the tool (dropping it kills it) and say so.
                return Err(Error::StoppedReading);
            }
        }
        Err(e) => return Err(unreadable(e)),
    }
    let outcome = running.finish().await;
    match outcome.failed() {
        Some(failure) => Err(
            match RecoveryConflict::in_tool_failure(&failure.to_string()) {
                Some(conflict) => conflict.into(),
                None => Box::new(failure).into(),
            },
        ),
        None => Ok(()),
    }
}
