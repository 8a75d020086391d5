//! A physical snapshot that carries its WAL (`archive_wal=true`): every
//! snapshot restores on its own, to any moment from its base backup's end to
//! where its run stopped.
//!
//! A run:
//!
//! 1. finds the previous snapshot it can build on: it announces the last
//!    run's receipt, then the last committed one's. Plakar compares each
//!    record with the latest committed snapshot of the same source and stores
//!    an identical one without reading it, so a receipt that comes back
//!    unread proves which snapshot is that latest one (the *parent*). The
//!    slot then moves to where the parent stopped, never further;
//! 2. carries the parent's base backup and WAL forward: every record
//!    announced again with the metadata it had, which Plakar stores without
//!    reading. Should Plakar read one (an object it no longer has), the run
//!    fails, and the next takes a new base backup;
//! 3. takes a new base backup instead when there is no parent, when the
//!    current base is older than `base_max_age`, or when asked for
//!    (`new_base`). With a parent, the snapshot keeps the old base too, and
//!    the WAL from it: the moments between the parent's end and the new
//!    base's consistency stay reachable;
//! 4. streams the WAL from the parent's stop (or the new base's start) to
//!    the server's position, one record per timeline, then writes
//!    `/.chain.json`, `/manifest.json` and its own receipt, and records what
//!    the snapshot holds in the local state.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use super::chain::{self, Base, Chain, Piece};
use super::copy::{BaseBackup, Copy};
use super::options::{ArchiveConfig, PhysicalSource};
use crate::physical::error::{CopyError, Error};
use crate::physical::wal::error::WalError;
use crate::physical::wal::segment::{history_file_name, History, Segment};
use crate::physical::wal::state::{Kept, Saved, State, Tip};
use crate::physical::wal::stream::{self, StreamFailure};
use crate::postgres::manifest::{TimelineEnd, WalRange};
use crate::postgres::replication::slot;
use crate::postgres::replication::{Lsn, ReplicationConnection, SystemId};
use crate::progress::Progress;
use crate::protocol::record::{self, Entry, EntryKind};

/// What `Init` prepared for a run that carries its WAL.
pub struct Archiving {
    pub(super) config: ArchiveConfig,
    state: State,
    system: SystemId,
    segment_size: u64,
    /// The oldest position the slot keeps, at `Init`.
    restart: Lsn,
    /// Whether `Init` created the slot.
    created: bool,
    /// The records this run carries forward, which Plakar must not read.
    carried: Mutex<HashSet<String>>,
    /// Why this run cannot be committed, found by an `Open`.
    broken: Mutex<Option<String>>,
}

impl Archiving {
    /// Takes the state's lock and makes sure of the permanent slot.
    pub async fn prepare(
        config: &PhysicalSource,
        archive: ArchiveConfig,
        admin: &Client,
        system: SystemId,
    ) -> Result<Archiving, Error> {
        let conn = &config.conn;
        let segment_size = stream::segment_size(admin).await?;
        let state = State::open(&archive.state_dir, &conn.host, conn.port, &archive.slot)?;
        let ensured = slot::ensure_permanent(admin, &archive.slot)
            .await
            .map_err(WalError::from)?;
        let found = ensured.slot;
        if found.is_lost() {
            let archived = state
                .load()
                .ok()
                .and_then(|s| s.committed)
                .map(|t| t.chain.stop());
            return Err(WalError::SlotInvalidated {
                slot: archive.slot.to_string(),
                archived,
            }
            .into());
        }
        if found.active {
            return Err(WalError::SlotActive(archive.slot.to_string()).into());
        }
        let restart = found
            .restart_lsn
            .ok_or_else(|| WalError::SlotReservesNothing(archive.slot.to_string()))?;
        tracing::info!(
            "WAL archiving of {} (system {}, timeline {}) through slot \"{}\", which keeps WAL from {restart}",
            conn.target(),
            system.system_identifier,
            system.timeline,
            archive.slot
        );
        Ok(Archiving {
            config: archive,
            state,
            system,
            segment_size,
            restart,
            created: ensured.created,
            carried: Mutex::new(HashSet::new()),
            broken: Mutex::new(None),
        })
    }

    /// Refuses an `Open` of a record this run carries forward: its bytes are
    /// in no file here. The run then fails, and the next one takes a new base.
    pub fn refuse(&self, path: &str) -> Option<String> {
        if !self.carried.lock().expect("not poisoned").contains(path) {
            return None;
        }
        let why = format!(
            "Plakar asked to read {path}, which this run carries forward from the previous snapshot without its bytes (the store no longer has it as it was, or the previous snapshot is not what this run took it for); this run is not committed, and the next one takes a new base backup"
        );
        self.broken
            .lock()
            .expect("not poisoned")
            .get_or_insert(why.clone());
        self.forget();
        Some(why)
    }

    /// Why this run must not be committed, if an `Open` said so.
    pub fn failure(&self) -> Option<String> {
        let why = self.broken.lock().expect("not poisoned").clone();
        if why.is_some() {
            // The run may have written its state after the refusal.
            self.forget();
        }
        why
    }

    fn forget(&self) {
        if let Err(e) = self.state.forget() {
            tracing::error!("{e}");
        }
    }
}

/// A directory or file of the snapshot's own, with metadata that never
/// changes, so that Plakar finds it unchanged from run to run.
fn fixed(path: &str, kind: EntryKind) -> Entry {
    Entry {
        perm: if kind == EntryKind::Directory {
            0o700
        } else {
            0o600
        },
        path: path.to_string(),
        kind,
        modified: UNIX_EPOCH,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        dev: 0,
        ino: 0,
    }
}

/// What a run does with the parent's base backup.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Carries it forward and adds the WAL since.
    Carry,
    /// Takes a new one, and keeps the parent's with its WAL beside it in
    /// this snapshot, so that the moments until the new one is consistent
    /// stay reachable.
    Renew(String),
    /// Takes a new one alone: the WAL since the parent cannot be had.
    Fresh(String),
}

/// Why a run takes a new base backup rather than carry the current one.
fn plan(archiving: &Archiving, parent: Option<&Tip>, now: SystemTime) -> Plan {
    let Some(parent) = parent else {
        return Plan::Fresh("no earlier snapshot of this source is known to be committed (a first run, a state directory lost or on another machine, `-cache no`, or the latest snapshot removed)".into());
    };
    if archiving.created {
        return Plan::Fresh(format!(
            "replication slot \"{}\" was created by this run, so the WAL since the previous snapshot may be gone",
            archiving.config.slot
        ));
    }
    if parent.chain.stop() < archiving.restart {
        return Plan::Fresh(format!(
            "replication slot \"{}\" starts at {}, past {}, where the previous snapshot stops",
            archiving.config.slot, archiving.restart, parent.chain.stop_lsn
        ));
    }
    if parent.chain.bases.is_empty() {
        return Plan::Fresh("the previous snapshot holds no base backup".into());
    }
    if archiving.config.new_base {
        return Plan::Renew("new_base=true asks for one".into());
    }
    let age = parent.base_age(now);
    if age >= archiving.config.base_max_age {
        return Plan::Renew(format!(
            "the base backup is {} old (base_max_age {})",
            human(age),
            human(archiving.config.base_max_age)
        ));
    }
    Plan::Carry
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The run.
pub(super) async fn run(
    copy: &mut Copy<'_>,
    backup: &BaseBackup,
    admin: &Client,
    archiving: &Archiving,
) -> Result<(), Error> {
    let started = SystemTime::now();
    let run_id = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    for dir in ["/", chain::RECEIPTS] {
        copy.run
            .announce(record::entry_record(&fixed(dir, EntryKind::Directory)))
            .await?;
    }
    let mut saved = match archiving.state.load() {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!("{e}; this run takes a new base backup");
            Saved::default()
        }
    };
    let parent = settle(copy, admin, archiving, &mut saved).await?;
    let plan = plan(archiving, parent.as_ref(), started);

    // What the snapshot carries forward from its parent.
    let mut bases: Vec<Base> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut records: Vec<Kept> = Vec::new();
    let mut base_started = 0;
    let mut from: Option<Lsn> = None;
    if let (Some(parent), Plan::Carry | Plan::Renew(_)) = (&parent, &plan) {
        let newest = parent.chain.bases.last().cloned();
        if let Some(newest) = newest {
            let start: Lsn = newest.start_lsn.parse().unwrap_or(Lsn(0));
            let prefix = format!("{}/{}", chain::BASES, newest.id);
            // The open piece is streamed again with this run's WAL, while
            // the slot still keeps it (it moved no further once committed).
            let reopened = parent.chain.open_piece().filter(|open| {
                plan == Plan::Carry
                    && open.timeline == archiving.system.timeline
                    && open.from_lsn() >= archiving.restart
            });
            pieces = parent
                .chain
                .pieces
                .iter()
                .filter(|p| p.to_lsn() > start && Some(*p) != reopened)
                .cloned()
                .collect();
            let paths: HashSet<String> = pieces.iter().map(Piece::path).collect();
            records = parent
                .records
                .iter()
                .filter(|r| {
                    r.path == prefix
                        || r.path.starts_with(&format!("{prefix}/"))
                        || paths.contains(&r.path)
                })
                .cloned()
                .collect();
            bases.push(newest);
            base_started = parent.base_started;
            from = Some(reopened.map_or_else(|| parent.chain.stop(), Piece::from_lsn));
        }
    }
    match &plan {
        Plan::Renew(why) => tracing::info!(
            "this run takes a new base backup ({why}), and keeps the current one in its snapshot for the moments until the new one is consistent"
        ),
        Plan::Fresh(why) => tracing::info!("this run takes a new base backup: {why}"),
        Plan::Carry => tracing::info!(
            "this run carries forward base backup {} and the WAL up to {}, and adds the WAL since{}",
            bases.last().map(|b| b.id.as_str()).unwrap_or("?"),
            from.map(|l| l.to_string()).unwrap_or_default(),
            match (&parent, from) {
                (Some(p), Some(f)) if f < p.chain.stop() => format!(
                    " as one record with the last run's {} bytes, which it streams again",
                    p.chain.stop().0 - f.0
                ),
                _ => String::new(),
            }
        ),
    }
    for dir in [chain::BASES, chain::WAL] {
        copy.run
            .announce(record::entry_record(&fixed(dir, EntryKind::Directory)))
            .await?;
    }
    {
        let mut carried = archiving.carried.lock().expect("not poisoned");
        carried.extend(records.iter().map(|r| r.path.clone()));
    }
    for kept in &records {
        copy.run
            .announce(record::entry_record(&kept.entry()))
            .await?;
    }

    // A new base backup, under a directory of its own.
    if plan != Plan::Carry {
        let started_at = stream::server_clock(admin).await?;
        let id: String = started_at
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        copy.base = format!("{}/{id}", chain::BASES);
        copy.kept.clear();
        let copied = copy.copy_base(backup).await?;
        let ready_at = stream::server_clock(admin).await?;
        let range = copied
            .manifest
            .wal
            .clone()
            .ok_or_else(|| Error::BaseBackup {
                failure: None,
                copy: Some(CopyError::NoWalRange),
                user: String::new(),
            })?;
        let base = Base {
            id,
            timeline: range.timeline,
            start_lsn: range.start_lsn.clone(),
            end_lsn: range.stop_lsn.clone(),
            started_at,
            ready_at,
        };
        if from.is_none() {
            // From its segment's first byte: a segment file is whole from its start.
            let start: Lsn = base.start_lsn.parse().unwrap_or(archiving.restart);
            let size = archiving.segment_size;
            from = Some(Segment::holding(base.timeline, start, size).start(size));
        }
        records.extend(copy.kept.iter().map(Kept::from));
        base_started = started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        bases.push(base);
    }
    let from = from.unwrap_or(archiving.restart);

    // The WAL since.
    let conn = &backup.config.conn;
    let mut replication = ReplicationConnection::open(conn).await?;
    let stopped_at = stream::server_clock(admin).await?;
    if backup.manifest.server.in_recovery != Some(true) {
        mark_end(admin).await;
    }
    let now = replication
        .identify_system()
        .await
        .map_err(WalError::Stream)?;
    if now.system_identifier != archiving.system.system_identifier {
        return Err(WalError::Protocol(format!(
            "answered for another cluster (system {}) than at the start of the run ({})",
            now.system_identifier, archiving.system.system_identifier
        ))
        .into());
    }
    let stop = now.xlogpos;
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
            history =
                History::parse(timeline, &text).map_err(|e| WalError::Protocol(e.to_string()))?;
        }
        let path = format!("{}/{name}", chain::WAL);
        let bytes = text.into_bytes();
        copy.own_file(&path, &bytes, &fixed(&path, EntryKind::File(0)))
            .await?;
        histories.push(timeline);
    }
    let mut progress = Progress::start("WAL archive", chain::WAL);
    let size = archiving.segment_size;
    for piece in stream::plan(&history, from, stop, size) {
        let entry = Entry {
            path: piece.path(),
            kind: EntryKind::File(piece.len()),
            perm: 0o600,
            modified: started,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            dev: run_id,
            ino: 0,
        };
        let mut server = stream::Server {
            replication: &mut replication,
            slot: &archiving.config.slot,
            segment_size: size,
        };
        let streamed = stream::stream_piece(
            copy.run,
            &mut copy.opens,
            &mut server,
            &piece,
            entry.clone(),
            &mut progress,
        )
        .await;
        match streamed {
            Ok(()) => {}
            Err(StreamFailure::Removed(e)) => {
                progress.failed(&e);
                return Err(WalError::WalRemoved {
                    slot: archiving.config.slot.to_string(),
                    from: piece.from_lsn(),
                    timeline: piece.timeline,
                    source: e,
                }
                .into());
            }
            Err(StreamFailure::Other(e)) => {
                progress.failed(&e);
                return Err(e);
            }
        }
        records.push(Kept::from(&entry));
        pieces.push(piece);
    }
    replication.close().await;
    progress.done();

    let chain = Chain {
        system_identifier: archiving.system.system_identifier.clone(),
        segment_size: size,
        bases,
        pieces,
        histories,
        switches: history
            .switches
            .iter()
            .map(|s| TimelineEnd {
                timeline: s.parent,
                end_lsn: s.switch.to_string(),
            })
            .collect(),
        timeline: now.timeline,
        stop_lsn: stop.to_string(),
        stopped_at,
    };
    if let Some(oldest) = chain.bases.first() {
        chain.check_continuous(oldest).map_err(|e| {
            WalError::Protocol(format!("left a snapshot that would not restore: {e}"))
        })?;
    }
    let file = |path: &str, len: usize| Entry {
        modified: started,
        dev: run_id,
        ..fixed(path, EntryKind::File(len as u64))
    };
    let bytes = chain.to_json();
    copy.own_file(chain::RECORD, &bytes, &file(chain::RECORD, bytes.len()))
        .await?;
    let mut manifest = backup.manifest.clone();
    manifest.wal = chain.bases.first().map(|b| WalRange {
        timeline: b.timeline,
        start_lsn: b.start_lsn.clone(),
        stop_lsn: chain.stop_lsn.clone(),
    });
    let bytes = manifest.to_json();
    copy.own_file(
        crate::names::MANIFEST,
        &bytes,
        &file(crate::names::MANIFEST, bytes.len()),
    )
    .await?;

    let tip = Tip {
        receipt_id: run_id,
        receipt_at: started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        chain,
        base_started,
        records,
    };
    receipt(copy, &tip).await?;
    saved.sent = Some(tip);
    archiving.state.save(&saved)?;
    tracing::info!(
        "WAL archived up to {stop} on timeline {}; the next run moves the slot there once it finds this snapshot committed",
        now.timeline
    );
    Ok(())
}

/// Commits a transaction after the run's clock reading, flushed before
/// the stop position is read: PostgreSQL stops a recovery to a time at the
/// first commit past it, so every moment up to `stopped_at` then has one to
/// stop at. A transaction must write WAL for its commit to be flushed at
/// once (one that only takes an xid is flushed lazily), hence the message.
async fn mark_end(admin: &Client) {
    let marked = admin
        .batch_execute(
            "SET synchronous_commit TO on; BEGIN; SELECT pg_catalog.pg_logical_emit_message(true, 'plakar', 'end of an archiving run'); COMMIT; RESET synchronous_commit",
        )
        .await;
    if let Err(e) = marked {
        tracing::warn!("cannot mark the end of the run with a commit: {e}");
    }
}

/// Announces a run's receipt and serves it if Plakar reads it; whether
/// Plakar stored it unread, from the latest committed snapshot.
async fn receipt(copy: &mut Copy<'_>, tip: &Tip) -> Result<bool, Error> {
    let entry = tip.receipt_entry();
    let bytes = tip.receipt();
    copy.run.announce(record::entry_record(&entry)).await?;
    let path = entry.path.clone();
    let opened = copy
        .opens
        .opened(copy.run, &path, |asked| {
            format!("postgresql physical source: {asked} was asked for while {path} is being sent")
        })
        .await?;
    match opened {
        Some(content) => {
            content.send_all(&bytes).await;
            Ok(false)
        }
        None => Ok(!copy.run.refused(&path)),
    }
}

/// Finds the parent: the last run's snapshot, or the last committed one,
/// whichever Plakar proves to be the latest committed snapshot of this
/// source; moves the slot to where the last run stopped once it is proven.
async fn settle(
    copy: &mut Copy<'_>,
    admin: &Client,
    archiving: &Archiving,
    saved: &mut Saved,
) -> Result<Option<Tip>, Error> {
    let slot = &archiving.config.slot;
    let ours = |t: &Tip| t.chain.system_identifier == archiving.system.system_identifier;
    if let Some(sent) = saved.sent.clone().filter(ours) {
        if receipt(copy, &sent).await? {
            let to = sent.chain.slot_point();
            let at = slot::advance(admin, slot, to)
                .await
                .map_err(WalError::from)?;
            tracing::info!(
                "replication slot \"{slot}\" moved to {}: the WAL before it is in a committed snapshot",
                at.unwrap_or(to)
            );
            saved.committed = Some(sent.clone());
            saved.sent = None;
            archiving.state.save(saved)?;
            return Ok(Some(sent));
        }
        tracing::warn!(
            "the last run's snapshot (WAL up to {}) is not the latest committed snapshot of this source: that run failed or was interrupted, or its snapshot was removed; replication slot \"{slot}\" stays where it is",
            sent.chain.stop_lsn
        );
    }
    let committed = saved.committed.clone().filter(ours);
    if let Some(committed) = committed {
        if saved.sent.as_ref().map(|s| s.receipt_id) != Some(committed.receipt_id)
            && receipt(copy, &committed).await?
        {
            tracing::info!(
                "this run builds on the last committed snapshot (WAL up to {}), and sends again the WAL since",
                committed.chain.stop_lsn
            );
            return Ok(Some(committed));
        }
    }
    if saved.sent.is_some() || saved.committed.is_some() {
        tracing::warn!(
            "no snapshot this source's state knows of is the latest committed one in the store; if this happens at every run, check that `plakar backup` runs without `-cache no`, and that nothing else backs up this source into the store"
        );
    }
    Ok(None)
}
