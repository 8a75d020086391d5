//! The WAL-archiving source: `plakar backup @mywal` for `postgres+wal://`.
//!
//! Each run stores the WAL the server wrote since the last committed run:
//!
//! 1. `Init` checks that the server allows replication (the physical
//!    source's checks), takes the slot's local lock and makes sure of the
//!    permanent slot, refusing one the server invalidated.
//! 2. `Import` first settles the previous run: the slot moves to where that
//!    run stopped only if its snapshot is known to be committed (below).
//!    Then it reads the server's clock and position, and streams from the
//!    start of the segment the slot keeps up to that position, timeline by
//!    timeline: each segment a record, its bytes passed from the socket to
//!    Plakar's `Open` as they come, the last one `.partial`; then the history
//!    files, `/manifest.json`, and this run's receipt.
//!
//! How a run knows the previous snapshot was committed, when Plakar tells an
//! importer nothing about earlier snapshots: every run stores a small record
//! `/receipt/<id>` whose metadata (size, mtime, device number) no other run
//! uses, and keeps it in `SLOT.sent`. The next run announces that same record
//! again, first. Plakar compares each record with the latest committed
//! snapshot of the same source, and stores an identical one without reading
//! it; so the receipt comes back unread exactly when the previous run's
//! snapshot is committed and is the latest of this source. Only then does
//! the slot move, to where that run stopped. Otherwise the slot stays, and
//! this run sends that WAL again (Plakar deduplicates it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::bytes::Bytes;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::error::WalError;
use super::options::WalSource;
use super::segment::{history_file_name, History, Segment};
use super::state::{Sent, State};
use super::{PARTIAL, RECEIPTS, WAL_DIR};
use crate::connection::{PgError, MAINTENANCE_DB};
use crate::error::Error;
use crate::manifest::{self, Manifest, WalFacts, WalRange};
use crate::progress::Progress;
use crate::protocol::in_order::{OpenCalls, OpenQueue};
use crate::protocol::record::{self, Entry, EntryKind};
use crate::protocol::source::{Content, Ended, ImportRun, Source};
use crate::protocol::CHUNK_SIZE;
use crate::replication::slot::{self, SlotName};
use crate::replication::{self, Lsn, ReplicationConnection, SystemId};

/// A WAL archive run: what `Init` learnt and holds.
pub struct WalArchive {
    config: WalSource,
    admin: Client,
    state: State,
    system: SystemId,
    segment_size: u64,
    /// The oldest position the slot keeps.
    restart: Lsn,
    /// Whether this run created the slot.
    created: bool,
    manifest: Manifest,
    /// The `Open` calls, served by the stream in `import`.
    opens: OpenQueue,
    started: SystemTime,
}

impl std::fmt::Debug for WalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalArchive")
            .field("target", &self.config.conn.target())
            .field("slot", &self.config.slot)
            .finish()
    }
}

/// One stretch of WAL to stream: a timeline, from the start of a segment to
/// a position (a switch to the next timeline, or where the run stops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stretch {
    timeline: u32,
    from: Lsn,
    to: Lsn,
}

/// The stretches from `from` to `stop`, following `history` to its timeline.
fn plan(history: &History, from: Lsn, stop: Lsn, size: u64) -> Vec<Stretch> {
    let mut stretches = Vec::new();
    let mut timeline = history.timeline_of(from);
    let mut at = Segment::holding(timeline, from, size).start(size);
    loop {
        let end = history.end_of(timeline).unwrap_or(stop).min(stop);
        if at < end {
            stretches.push(Stretch {
                timeline,
                from: at,
                to: end,
            });
        }
        if end >= stop {
            return stretches;
        }
        // The next timeline's file of the switch's segment starts with the
        // same bytes as its parent's, so it is read from that segment's start.
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

async fn prepare(config: WalSource) -> Result<WalArchive, Error> {
    let conn = &config.conn;
    let admin = conn.connect(MAINTENANCE_DB).await?;
    replication::check_server(&admin, &conn.user)
        .await
        .map_err(crate::physical::preflight::PreflightError::from)?;
    let system = replication::probe(conn)
        .await
        .map_err(crate::physical::preflight::PreflightError::from)?;
    let segment_size = segment_size(&admin).await?;
    let state = State::open(&config.state_dir, &conn.host, conn.port, &config.slot)?;
    let ensured = slot::ensure_permanent(&admin, &config.slot)
        .await
        .map_err(WalError::from)?;
    let found = ensured.slot;
    if found.is_lost() {
        let archived = state
            .sent()
            .ok()
            .flatten()
            .and_then(|s| s.stop_lsn.parse().ok());
        return Err(WalError::SlotInvalidated {
            slot: config.slot.to_string(),
            archived,
        }
        .into());
    }
    if found.active {
        return Err(WalError::SlotActive(config.slot.to_string()).into());
    }
    let restart = found
        .restart_lsn
        .ok_or_else(|| WalError::SlotReservesNothing(config.slot.to_string()))?;
    let facts = WalFacts {
        slot: config.slot.to_string(),
        segment_size,
        ranges: Vec::new(),
        histories: Vec::new(),
        switches: Vec::new(),
        stopped_at: String::new(),
        ssl_mode: conn.tls.mode.as_str().into(),
    };
    let mut manifest = manifest::wal(conn, &admin, facts).await;
    manifest.server.system_identifier = Some(system.system_identifier.clone());
    manifest.server.timeline = Some(system.timeline);
    tracing::info!(
        "WAL archiving of {} (system {}, timeline {}) through slot \"{}\", which keeps WAL from {restart}",
        conn.target(),
        system.system_identifier,
        system.timeline,
        config.slot
    );
    Ok(WalArchive {
        config,
        admin,
        state,
        system,
        segment_size,
        restart,
        created: ensured.created,
        manifest,
        opens: OpenQueue::default(),
        started: SystemTime::now(),
    })
}

/// The server's WAL segment size, in bytes.
async fn segment_size(admin: &Client) -> Result<u64, Error> {
    let row = admin
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )
        .await
        .map_err(|e| PgError::new("cannot read wal_segment_size", &e))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Moves the slot to where a confirmed run stopped.
async fn advance(admin: &Client, state: &State, slot: &SlotName, sent: &Sent) -> Result<(), Error> {
    let to: Lsn = sent
        .stop_lsn
        .parse()
        .map_err(|e: replication::BadLsn| WalError::BadState {
            path: state.sent_path(),
            why: e.to_string(),
        })?;
    let at = slot::advance(admin, slot, to)
        .await
        .map_err(WalError::from)?;
    tracing::info!(
        "replication slot \"{slot}\" moved to {}: the WAL before it is in a committed snapshot",
        at.unwrap_or(to)
    );
    Ok(())
}

#[tonic::async_trait]
impl Source for WalArchive {
    type Error = Error;

    async fn init(config: &HashMap<String, String>) -> Result<WalArchive, Error> {
        prepare(WalSource::parse(config)?).await
    }

    fn origin(&self) -> String {
        // Its own origin, so that the latest snapshot of this source is a WAL
        // snapshot of this slot (see the receipt above).
        format!(
            "{} WAL slot {}",
            self.config.conn.target(),
            self.config.slot
        )
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(self.config.conn.ping(MAINTENANCE_DB).await?)
    }

    async fn import(self: Arc<Self>, run: &mut ImportRun) -> Result<(), Error> {
        let opens = self.opens.take().ok_or(Error::ImportedTwice)?;
        Archive { run, opens }
            .archive(&self)
            .await
            .inspect_err(|why| tracing::error!("WAL archiving failed: {why}"))
    }

    async fn open(self: Arc<Self>, path: String, content: Content) -> Result<(), Error> {
        // The stream in `import` serves it, in the order the WAL comes.
        self.opens
            .hand_over(path, content)
            .await
            .map_err(Error::CopyOver)
    }
}

/// One `Import` call: the stream, and the `Open` calls it serves.
struct Archive<'a> {
    run: &'a mut ImportRun,
    opens: OpenCalls,
}

/// The segment being passed to Plakar.
struct Current {
    segment: Segment,
    path: String,
    /// Where it stops: its end, or the stretch's.
    end: Lsn,
    /// The `Open` call reading it; None once Plakar stored it unread.
    content: Option<Content>,
}

impl Archive<'_> {
    /// The run: position and clock, history files, the WAL, the manifest.
    async fn archive(&mut self, wal: &WalArchive) -> Result<(), Error> {
        let dev = wal
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let entry = |path: &str, kind: EntryKind| Entry {
            path: path.to_string(),
            kind,
            perm: if path == "/" || path == WAL_DIR || path == RECEIPTS {
                0o700
            } else {
                0o600
            },
            modified: SystemTime::now(),
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            dev,
        };
        self.run
            .announce(record::entry_record(&entry("/", EntryKind::Directory)))
            .await?;
        self.run
            .announce(record::entry_record(&entry(RECEIPTS, EntryKind::Directory)))
            .await?;
        let restart = self.settle_previous(wal).await?;

        let mut replication = ReplicationConnection::open(&wal.config.conn).await?;
        // The clock first, then the position: whatever committed before that
        // moment is flushed at or before the position read after it.
        let stopped_at = server_clock(&wal.admin).await?;
        let now = replication
            .identify_system()
            .await
            .map_err(WalError::Stream)?;
        if now.system_identifier != wal.system.system_identifier {
            return Err(WalError::Protocol(format!(
                "answered for another cluster (system {}) than at the start of the run ({})",
                now.system_identifier, wal.system.system_identifier
            ))
            .into());
        }
        let stop = now.xlogpos;
        self.run
            .announce(record::entry_record(&entry(WAL_DIR, EntryKind::Directory)))
            .await?;

        // The history files, from the server, oldest first.
        let mut history = History::first();
        let mut histories = Vec::new();
        for timeline in 2..=now.timeline {
            let (name, text) = replication
                .timeline_history(timeline)
                .await
                .map_err(WalError::Stream)?;
            if name != history_file_name(timeline) {
                return Err(WalError::Protocol(format!(
                    "named the history of timeline {timeline} {name:?}"
                ))
                .into());
            }
            if timeline == now.timeline {
                history = History::parse(timeline, &text)
                    .map_err(|e| WalError::Protocol(e.to_string()))?;
            }
            let path = format!("{WAL_DIR}/{name}");
            let bytes = text.into_bytes();
            self.run
                .announce(record::entry_record(&entry(
                    &path,
                    EntryKind::File(bytes.len() as u64),
                )))
                .await?;
            if let Some(call) = self.opened(&path).await? {
                call.send_all(&bytes).await;
            }
            histories.push(timeline);
        }

        // Where to start: the slot's segment; a slot made on a later timeline
        // starts at the switch into it, if the server still has that WAL.
        let size = wal.segment_size;
        let mut from = restart;
        if wal.created {
            if let Some(switch) = history.switches.last() {
                from = from.min(switch.switch);
            }
        }
        let mut stretches = plan(&history, from, stop, size);
        let mut progress = Progress::start("WAL archive", WAL_DIR);
        let mut ranges: Vec<WalRange> = Vec::new();
        let mut first = true;
        while let Some(stretch) = (!stretches.is_empty()).then(|| stretches.remove(0)) {
            match self
                .stream(&mut replication, wal, stretch, &entry, &mut progress)
                .await
            {
                Ok(()) => {}
                Err(StreamFailure::Removed(e)) if first && from < restart => {
                    // The switch's WAL is gone: start where the slot starts.
                    tracing::warn!(
                        "the server no longer has the WAL from {} on timeline {}, where it switched timelines ({}); archiving starts at {}, so a restore cannot cross that switch from an earlier base backup",
                        stretch.from,
                        stretch.timeline,
                        e,
                        restart
                    );
                    from = restart;
                    stretches = plan(&history, from, stop, size);
                    continue;
                }
                Err(StreamFailure::Removed(e)) => {
                    return Err(WalError::WalRemoved {
                        from: stretch.from,
                        timeline: stretch.timeline,
                        source: e,
                    }
                    .into())
                }
                Err(StreamFailure::Other(e)) => return Err(e),
            }
            first = false;
            match ranges.last_mut() {
                Some(last) if last.timeline == stretch.timeline => {
                    last.stop_lsn = stretch.to.to_string()
                }
                _ => ranges.push(WalRange {
                    timeline: stretch.timeline,
                    start_lsn: stretch.from.to_string(),
                    stop_lsn: stretch.to.to_string(),
                }),
            }
        }
        replication.close().await;
        progress.done();

        let mut manifest = wal.manifest.clone();
        manifest.server.timeline = Some(now.timeline);
        if let manifest::BackupSection::Wal(facts) = &mut manifest.backup {
            facts.ranges = ranges.clone();
            facts.histories = histories;
            facts.switches = history
                .switches
                .iter()
                .map(|s| manifest::TimelineEnd {
                    timeline: s.parent,
                    end_lsn: s.switch.to_string(),
                })
                .collect();
            facts.stopped_at = stopped_at;
        }
        manifest.wal = ranges.last().cloned().or(Some(WalRange {
            timeline: now.timeline,
            start_lsn: stop.to_string(),
            stop_lsn: stop.to_string(),
        }));
        let bytes = manifest.to_json();
        self.run
            .announce(record::entry_record(&entry(
                crate::names::MANIFEST,
                EntryKind::File(bytes.len() as u64),
            )))
            .await?;
        if let Some(call) = self.opened(crate::names::MANIFEST).await? {
            call.send_all(&bytes).await;
        }
        let sent = Sent {
            system_identifier: wal.system.system_identifier.clone(),
            slot: wal.config.slot.to_string(),
            timeline: now.timeline,
            stop_lsn: stop.to_string(),
            receipt_id: dev,
            receipt_at: wal
                .started
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        };
        self.receipt(&sent).await?;
        wal.state.record_sent(&sent)?;
        tracing::info!(
            "WAL archived up to {stop} on timeline {}; the next run moves the slot there once it finds this snapshot committed",
            now.timeline
        );
        Ok(())
    }

    /// Announces a run's receipt and serves it if Plakar reads it; whether
    /// Plakar stored it unread, from the latest committed snapshot.
    async fn receipt(&mut self, sent: &Sent) -> Result<bool, Error> {
        let bytes = sent.receipt();
        let path = format!("{RECEIPTS}/{}", sent.receipt_id);
        let entry = Entry {
            path: path.clone(),
            kind: EntryKind::File(bytes.len() as u64),
            perm: 0o600,
            modified: UNIX_EPOCH + std::time::Duration::from_secs(sent.receipt_at),
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            dev: sent.receipt_id,
        };
        self.run.announce(record::entry_record(&entry)).await?;
        match self.opened(&path).await? {
            Some(content) => {
                content.send_all(&bytes).await;
                Ok(false)
            }
            None => Ok(!self.run.refused(&path)),
        }
    }

    /// Moves the slot to where the previous run stopped if its snapshot is
    /// committed (its receipt comes back unread); the position the slot
    /// keeps WAL from afterwards.
    async fn settle_previous(&mut self, wal: &WalArchive) -> Result<Lsn, Error> {
        let slot = &wal.config.slot;
        let Some(previous) = wal.state.sent()? else {
            return Ok(wal.restart);
        };
        if previous.system_identifier != wal.system.system_identifier
            || previous.slot != slot.as_str()
        {
            tracing::warn!(
                "{} is of another cluster or slot (system {}, slot {}); it is ignored",
                wal.state.sent_path().display(),
                previous.system_identifier,
                previous.slot
            );
            wal.state.clear()?;
            return Ok(wal.restart);
        }
        if !self.receipt(&previous).await? {
            tracing::warn!(
                "the previous run's snapshot (WAL up to {}) is not the latest committed snapshot of this source, so replication slot \"{slot}\" stays at {} and its WAL is sent again. After a failed or interrupted run this is expected; if it happens at every run, check that `plakar backup` runs without `-cache no`, and that nothing else backs up this source into the store",
                previous.stop_lsn,
                wal.restart
            );
            return Ok(wal.restart);
        }
        advance(&wal.admin, &wal.state, slot, &previous).await?;
        let moved = slot::inspect(&wal.admin, slot)
            .await
            .map_err(WalError::from)?
            .and_then(|s| s.restart_lsn)
            .unwrap_or(wal.restart);
        Ok(moved)
    }

    /// Streams one stretch, segment by segment, into records.
    async fn stream(
        &mut self,
        replication: &mut ReplicationConnection,
        wal: &WalArchive,
        stretch: Stretch,
        entry: &impl Fn(&str, EntryKind) -> Entry,
        progress: &mut Progress,
    ) -> Result<(), StreamFailure> {
        let size = wal.segment_size;
        let mut stream = replication
            .start_replication(&wal.config.slot, stretch.from, stretch.timeline)
            .await
            .map_err(StreamFailure::of)?;
        let mut current: Option<Current> = None;
        let mut at = stretch.from;
        while at < stretch.to {
            let (start, mut bytes) = match stream.next().await.map_err(StreamFailure::of)? {
                replication::stream::Event::Data { start, bytes } => (start, bytes),
                replication::stream::Event::End(_) => {
                    return Err(StreamFailure::Other(
                        WalError::Protocol(format!(
                            "ended at {at} on timeline {}, before {}",
                            stretch.timeline, stretch.to
                        ))
                        .into(),
                    ))
                }
            };
            debug_assert_eq!(start, at);
            while !bytes.is_empty() && at < stretch.to {
                if current.is_none() {
                    let segment = Segment::holding(stretch.timeline, at, size);
                    let end = segment.end(size).min(stretch.to);
                    let name = segment.file_name(size);
                    let path = if end < segment.end(size) {
                        format!("{WAL_DIR}/{name}{PARTIAL}")
                    } else {
                        format!("{WAL_DIR}/{name}")
                    };
                    let length = end.0 - segment.start(size).0;
                    self.run
                        .announce(record::entry_record(&entry(&path, EntryKind::File(length))))
                        .await
                        .map_err(|e| StreamFailure::Other(e.into()))?;
                    let content = self
                        .opened(&path)
                        .await
                        .map_err(|e| StreamFailure::Other(e.into()))?;
                    current = Some(Current {
                        segment,
                        path,
                        end,
                        content,
                    });
                }
                let seg = current.as_mut().expect("set above");
                let take = ((seg.end.0 - at.0) as usize).min(bytes.len());
                let piece = bytes.split_to(take);
                at = Lsn(at.0 + take as u64);
                progress.bytes += take as u64;
                if let Some(content) = &seg.content {
                    if !send_chunks(content, piece).await {
                        // Plakar stopped reading it; its acknowledgement says the rest.
                        seg.content = None;
                    }
                }
                if at >= seg.end {
                    tracing::debug!("{} sent ({})", seg.path, seg.segment);
                    current = None;
                }
            }
        }
        stream.stop().await.map_err(StreamFailure::of)?;
        Ok(())
    }

    /// Waits until Plakar opens the record just announced; None when it
    /// stored it without reading it.
    async fn opened(&mut self, path: &str) -> Result<Option<Content>, Ended> {
        self.opens
            .opened(self.run, path, |asked| {
                format!(
                    "postgresql WAL source: {asked} was asked for while {path} is being sent; WAL is read in order"
                )
            })
            .await
    }
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

/// Why a stretch could not be streamed: its WAL is gone from the server, or anything else.
enum StreamFailure {
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

/// The server's clock, in UTC, as RFC 3339.
async fn server_clock(admin: &Client) -> Result<String, Error> {
    let row = admin
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .map_err(|e| PgError::new("cannot read the server's clock", &e))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 * 1024 * 1024;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    #[test]
    fn a_run_streams_from_the_slots_segment_to_its_stop() {
        let plan = plan(&History::first(), lsn("0/3000148"), lsn("0/5000060"), MB16);
        assert_eq!(
            plan,
            vec![Stretch {
                timeline: 1,
                from: lsn("0/3000000"),
                to: lsn("0/5000060")
            }]
        );
    }

    #[test]
    fn a_run_follows_the_history_across_a_switch() {
        let history = History::parse(2, "1\t0/40000A8\tno recovery target specified\n").unwrap();
        let plan = plan(&history, lsn("0/3000148"), lsn("0/6000000"), MB16);
        assert_eq!(
            plan,
            vec![
                Stretch {
                    timeline: 1,
                    from: lsn("0/3000000"),
                    to: lsn("0/40000A8")
                },
                Stretch {
                    timeline: 2,
                    from: lsn("0/4000000"),
                    to: lsn("0/6000000")
                },
            ]
        );
        let plan = super::plan(&history, lsn("0/5000000"), lsn("0/5000000"), MB16);
        assert!(plan.is_empty());
    }
}
