//! Streaming WAL from a physical slot (`START_REPLICATION ... PHYSICAL`) on
//! the plugin's own replication connection, and a timeline's history file
//! (`TIMELINE_HISTORY`).
//!
//! The stream never tells the server that WAL is flushed: a physical slot's
//! `restart_lsn` moves only with the flush position a client reports, so the
//! slot keeps every byte sent until the archiver advances it itself, once a
//! snapshot holding that WAL is committed.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::slot::SlotName;
use super::wire::{io_error, server_error, Incoming, ReplicationConnection};
use super::Lsn;
use crate::postgres::connection::PgError;

/// How often the stream tells the server it is alive, within any
/// `wal_sender_timeout` a server would sensibly use.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// What the stream brings next.
#[derive(Debug)]
pub enum Event {
    /// WAL bytes from `start` on.
    Data {
        /// The position of the first byte.
        start: Lsn,
        /// The bytes.
        bytes: Bytes,
    },
    /// The server ended the stream: the timeline ended, and the next one
    /// (if the server said) starts at the given position.
    End(Option<(u32, Lsn)>),
}

/// An open `START_REPLICATION` stream.
pub struct WalStream<'a> {
    conn: &'a mut ReplicationConnection,
    /// The position past the last byte received.
    received: Lsn,
    last_status: Instant,
    command: String,
}

impl ReplicationConnection {
    /// The history file of `timeline`: its name and its text.
    pub async fn timeline_history(&mut self, timeline: u32) -> Result<(String, String), PgError> {
        let command = format!("TIMELINE_HISTORY {timeline}");
        let rows = self.simple_query(&command).await?;
        let bad = || PgError::client(command.clone(), "the server's answer has no history file");
        let row = rows.first().ok_or_else(bad)?;
        let name = row.first().cloned().flatten().ok_or_else(bad)?;
        let text = row.get(1).cloned().flatten().ok_or_else(bad)?;
        Ok((name, text))
    }

    /// Starts streaming the WAL of `timeline` from `start`, through `slot`.
    pub async fn start_replication(
        &mut self,
        slot: &SlotName,
        start: Lsn,
        timeline: u32,
    ) -> Result<WalStream<'_>, PgError> {
        let command =
            format!("START_REPLICATION SLOT \"{slot}\" PHYSICAL {start} TIMELINE {timeline}");
        let mut out = BytesMut::new();
        frontend::query(&command, &mut out).map_err(|e| io_error(&command, e))?;
        self.send(&out).await.map_err(|e| io_error(&command, e))?;
        loop {
            match self
                .receive_incoming()
                .await
                .map_err(|e| io_error(&command, e))?
            {
                Incoming::CopyBoth => break,
                Incoming::Message(Message::ErrorResponse(body)) => {
                    let e = server_error(body.fields()).with_context(command.clone());
                    // The error is followed by ReadyForQuery; the connection stays usable.
                    let _ = self.until_ready(&command).await;
                    return Err(e);
                }
                Incoming::Message(_) => {}
            }
        }
        Ok(WalStream {
            conn: self,
            received: start,
            last_status: Instant::now(),
            command,
        })
    }

    /// Reads until ReadyForQuery; the first error the server sent, if any.
    async fn until_ready(&mut self, command: &str) -> Result<Vec<Vec<u8>>, PgError> {
        let mut failed = None;
        let mut row = Vec::new();
        loop {
            match self
                .receive_incoming()
                .await
                .map_err(|e| io_error(command, e))?
            {
                Incoming::Message(Message::ReadyForQuery(_)) => break,
                Incoming::Message(Message::ErrorResponse(body)) => {
                    failed.get_or_insert(server_error(body.fields()))
                }
                Incoming::Message(Message::DataRow(body)) => {
                    let buffer = body.buffer();
                    let mut ranges = body.ranges();
                    while let Ok(Some(r)) = fallible_iterator::FallibleIterator::next(&mut ranges) {
                        row.push(r.map(|r| buffer[r].to_vec()).unwrap_or_default());
                    }
                    continue;
                }
                _ => continue,
            };
        }
        match failed {
            Some(e) => Err(e.with_context(command.to_string())),
            None => Ok(row),
        }
    }
}

impl WalStream<'_> {
    /// The next WAL bytes, or the end of the stream.
    pub async fn next(&mut self) -> Result<Event, PgError> {
        loop {
            if self.last_status.elapsed() >= STATUS_EVERY {
                self.status(false).await?;
            }
            let message = self
                .conn
                .receive_incoming()
                .await
                .map_err(|e| io_error(&self.command, e))?;
            match message {
                Incoming::Message(Message::CopyData(body)) => {
                    let mut data = body.into_bytes();
                    if data.is_empty() {
                        continue;
                    }
                    match data.get_u8() {
                        b'w' if data.len() >= 24 => {
                            let start = Lsn(data.get_u64());
                            let _wal_end = data.get_u64();
                            let _sent_at = data.get_i64();
                            if start != self.received {
                                return Err(PgError::client(
                                    self.command.clone(),
                                    format!(
                                        "the server sent WAL from {start} where {} was expected",
                                        self.received
                                    ),
                                ));
                            }
                            self.received = Lsn(start.0 + data.len() as u64);
                            return Ok(Event::Data { start, bytes: data });
                        }
                        b'k' if data.len() >= 17 => {
                            let _wal_end = data.get_u64();
                            let _sent_at = data.get_i64();
                            if data.get_u8() == 1 {
                                self.status(false).await?;
                            }
                        }
                        _ => {}
                    }
                }
                Incoming::Message(Message::CopyDone) => {
                    // The timeline ended: answer, then read where the next begins.
                    self.copy_done().await?;
                    let row = self.conn.until_ready(&self.command).await?;
                    let text =
                        |i: usize| row.get(i).map(|b| String::from_utf8_lossy(b).into_owned());
                    let next = match (text(0), text(1)) {
                        (Some(tli), Some(pos)) => tli.parse().ok().zip(pos.parse().ok()),
                        _ => None,
                    };
                    return Ok(Event::End(next));
                }
                Incoming::Message(Message::ErrorResponse(body)) => {
                    let e = server_error(body.fields()).with_context(self.command.clone());
                    let _ = self.conn.until_ready(&self.command).await;
                    return Err(e);
                }
                Incoming::Message(_) => {}
                Incoming::CopyBoth => {}
            }
        }
    }

    /// Ends the stream from this side, and waits until the server is ready
    /// for the next command.
    pub async fn stop(mut self) -> Result<(), PgError> {
        self.copy_done().await?;
        // What the server sent before it read our CopyDone, then its own.
        loop {
            match self
                .conn
                .receive_incoming()
                .await
                .map_err(|e| io_error(&self.command, e))?
            {
                Incoming::Message(Message::CopyDone) => break,
                Incoming::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(body.fields()).with_context(self.command.clone()))
                }
                Incoming::Message(Message::ReadyForQuery(_)) => return Ok(()),
                _ => {}
            }
        }
        self.conn.until_ready(&self.command).await.map(|_| ())
    }

    async fn copy_done(&mut self) -> Result<(), PgError> {
        let mut out = BytesMut::new();
        frontend::copy_done(&mut out);
        self.conn
            .send(&out)
            .await
            .map_err(|e| io_error(&self.command, e))
    }

    /// A standby status update: what was received, and nothing flushed, so
    /// the slot does not move.
    async fn status(&mut self, reply: bool) -> Result<(), PgError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or_default()
            - PG_EPOCH_MICROS;
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(self.received.0); // written
        body.put_u64(0); // flushed: InvalidXLogRecPtr, which leaves the slot alone
        body.put_u64(0); // applied
        body.put_i64(now);
        body.put_u8(u8::from(reply));
        let mut out = BytesMut::new();
        frontend::CopyData::new(body.freeze())
            .map_err(|e| io_error(&self.command, e))?
            .write(&mut out);
        self.conn
            .send(&out)
            .await
            .map_err(|e| io_error(&self.command, e))?;
        self.last_status = Instant::now();
        Ok(())
    }
}
