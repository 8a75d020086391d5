//! Streaming the WAL a run adds to its snapshot: from the permanent slot's
//! position to the position read at the start of streaming, timeline by
//! timeline, one record per stretch (a *piece*, `/wal/<timeline>-<from>-<to>`)
//! whose bytes go from the replication socket to Plakar's `Open` as they
//! come. A piece holds the WAL of one run, however many segments that is, or
//! of several quiet runs (each streams the previous one's open piece again,
//! see `chain::OPEN_BELOW`), so that a run's cost grows with the number of
//! records its snapshot carries, not with the WAL's volume.

use prost::bytes::Bytes;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::error::WalError;
use super::segment::{History, Segment};
use crate::physical::chain::Piece;
use crate::physical::error::Error;
use crate::postgres::connection::PgError;
use crate::postgres::replication::slot::SlotName;
use crate::postgres::replication::{self, Lsn, ReplicationConnection};
use crate::progress::Progress;
use crate::protocol::in_order::OpenCalls;
use crate::protocol::record::{self, Entry, EntryKind};
use crate::protocol::source::{Content, Ended, ImportRun};
use crate::protocol::CHUNK_SIZE;

/// The server's WAL segment size, in bytes.
pub async fn segment_size(admin: &Client) -> Result<u64, Error> {
    let row = admin
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )
        .await
        .map_err(|e| PgError::new("cannot read wal_segment_size", &e))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The server's clock, in UTC, as RFC 3339.
pub async fn server_clock(admin: &Client) -> Result<String, Error> {
    let row = admin
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .map_err(|e| PgError::new("cannot read the server's clock", &e))?;
    Ok(row.get(0))
}

/// The pieces from `from` to `stop`, following `history` to its timeline:
/// the first from `from` itself, each later timeline from the start of the
/// segment it switched in (its file of that segment starts with its
/// parent's bytes).
pub fn plan(history: &History, from: Lsn, stop: Lsn, size: u64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut timeline = history.timeline_of(from);
    let mut at = from;
    loop {
        let end = history.end_of(timeline).unwrap_or(stop).min(stop);
        if at < end {
            pieces.push(Piece {
                timeline,
                from: at.to_string(),
                to: end.to_string(),
            });
        }
        if end >= stop {
            return pieces;
        }
        let next = history
            .switches
            .iter()
            .position(|s| s.parent == timeline)
            .and_then(|i| history.switches.get(i + 1).map(|s| s.parent))
            .unwrap_or(history.timeline);
        at = Segment::holding(next, end, size).start(size);
        timeline = next;
    }
}

/// Why a piece could not be streamed: its WAL is gone from the server, or anything else.
pub enum StreamFailure {
    Removed(PgError),
    Other(Error),
}

impl StreamFailure {
    fn of(e: PgError) -> StreamFailure {
        if e.code() == Some(&SqlState::UNDEFINED_FILE) {
            StreamFailure::Removed(e)
        } else {
            StreamFailure::Other(WalError::Stream(e).into())
        }
    }
}

impl From<Ended> for StreamFailure {
    fn from(e: Ended) -> StreamFailure {
        StreamFailure::Other(e.into())
    }
}

/// Where the WAL comes from: the replication connection, the slot, and the
/// server's segment size.
pub struct Server<'a> {
    pub replication: &'a mut ReplicationConnection,
    pub slot: &'a SlotName,
    pub segment_size: u64,
}

/// Announces `piece` as a record made from `entry` and streams its bytes
/// to the `Open` that reads it.
pub async fn stream_piece(
    run: &mut ImportRun,
    opens: &mut OpenCalls,
    server: &mut Server<'_>,
    piece: &Piece,
    entry: Entry,
    progress: &mut Progress,
) -> Result<(), StreamFailure> {
    let (from, to) = (piece.from_lsn(), piece.to_lsn());
    let path = entry.path.clone();
    let entry = Entry {
        kind: EntryKind::File(piece.len()),
        ..entry
    };
    run.announce(record::entry_record(&entry)).await?;
    let content = opens
        .opened(run, &path, |asked| {
            format!(
                "postgresql physical source: {asked} was asked for while {path} is being sent; WAL is read in order"
            )
        })
        .await?;
    let Some(content) = content else {
        return Ok(());
    };
    // Ask from the segment's start, which the slot keeps, as PostgreSQL's
    // own clients do, and drop what precedes `from`.
    let size = server.segment_size;
    let mut stream = server
        .replication
        .start_replication(
            server.slot,
            Segment::holding(piece.timeline, from, size).start(size),
            piece.timeline,
        )
        .await
        .map_err(StreamFailure::of)?;
    let mut at = from;
    let mut reading = true;
    while at < to {
        let (start, mut bytes) = match stream.next().await.map_err(StreamFailure::of)? {
            replication::stream::Event::Data { start, bytes } => (start, bytes),
            replication::stream::Event::End(_) => {
                return Err(StreamFailure::Other(
                    WalError::Protocol(format!(
                        "ended at {at} on timeline {}, before {to}",
                        piece.timeline
                    ))
                    .into(),
                ))
            }
        };
        if start.0 + (bytes.len() as u64) <= at.0 {
            continue;
        }
        if start < at {
            let _ = bytes.split_to((at.0 - start.0) as usize);
        } else if start > at {
            return Err(StreamFailure::Other(
                WalError::Protocol(format!(
                    "sent {start} where {at} was expected on timeline {}",
                    piece.timeline
                ))
                .into(),
            ));
        }
        let take = ((to.0 - at.0) as usize).min(bytes.len());
        let piece_bytes = bytes.split_to(take);
        at = Lsn(at.0 + take as u64);
        progress.bytes += take as u64;
        if reading && !send_chunks(&content, piece_bytes).await {
            // Plakar stopped reading it; its acknowledgement says the rest.
            reading = false;
        }
    }
    stream.stop().await.map_err(StreamFailure::of)?;
    tracing::debug!("{path} sent ({} bytes from {from} to {to})", piece.len());
    Ok(())
}

/// Sends bytes in chunks Plakar takes; false once it stopped reading.
async fn send_chunks(content: &Content, mut bytes: Bytes) -> bool {
    while !bytes.is_empty() {
        let chunk = bytes.split_to(bytes.len().min(CHUNK_SIZE));
        if !content.send(chunk).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 * 1024 * 1024;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    fn piece(timeline: u32, from: &str, to: &str) -> Piece {
        Piece {
            timeline,
            from: lsn(from).to_string(),
            to: lsn(to).to_string(),
        }
    }

    #[test]
    fn a_run_streams_from_the_slot_to_its_stop() {
        let plan = plan(&History::first(), lsn("0/3000148"), lsn("0/5000060"), MB16);
        assert_eq!(plan, vec![piece(1, "0/3000148", "0/5000060")]);
    }

    #[test]
    fn a_run_follows_the_history_across_a_switch() {
        let history = History::parse(2, "1\t0/40000A8\tno recovery target specified\n").unwrap();
        let plan = plan(&history, lsn("0/3000148"), lsn("0/6000000"), MB16);
        assert_eq!(
            plan,
            vec![
                piece(1, "0/3000148", "0/40000A8"),
                piece(2, "0/4000000", "0/6000000"),
            ]
        );
        let plan = super::plan(&history, lsn("0/5000000"), lsn("0/5000000"), MB16);
        assert!(plan.is_empty());
    }
}
