//! What a physical snapshot holds to recover the cluster, and to which
//! moments: `/.chain.json`, the first record Plakar restores (`.` sorts
//! before every name of a data directory), so that the destination checks
//! the snapshot and the recovery target before it writes anything.
//!
//! A snapshot of the archiving source holds one base backup, or two in the
//! run that takes a new one (the older then covers the moments before the
//! newer is consistent), under `/bases/<id>/`, and the WAL from the oldest
//! base's start to where the run stopped, in pieces under `/wal/`, one per
//! run and timeline, which later runs carry forward unchanged, but for the
//! last one while it is short (an *open* piece, below [`OPEN_BELOW`]): the
//! next run streams it again with its own WAL, as one record.

use serde::{Deserialize, Serialize};

use crate::physical::wal::segment::{History, Switch};
use crate::postgres::manifest::TimelineEnd;
use crate::postgres::replication::Lsn;

pub use crate::names::{BASES, CHAIN as RECORD, RECEIPTS, WAL};

/// A piece shorter than this stays open: the next run on the same base
/// streams it again with its own WAL, as one longer record, rather than add
/// a record of its own. Each record a snapshot carries costs every later run
/// one lookup in Plakar (about 0.2 ms), while streaming a piece again costs
/// its bytes, which Plakar already holds: below one default WAL segment the
/// bytes cost less, and a quiet server's day of runs adds a few records, not
/// one a run. A busy server's runs each stream more than this, and keep a
/// record each, as their own bytes cost far more than the lookups.
pub const OPEN_BELOW: u64 = 16 * 1024 * 1024;

/// The WAL and base backups a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The cluster.
    pub system_identifier: String,
    /// The server's WAL segment size, in bytes.
    pub segment_size: u64,
    /// The base backups, oldest first (one, or two in the run that took a new one).
    pub bases: Vec<Base>,
    /// The WAL, in the order it was written.
    pub pieces: Vec<Piece>,
    /// The timelines whose history file `/wal/` holds.
    pub histories: Vec<u32>,
    /// The ancestry of the timeline at the stop, oldest first.
    pub switches: Vec<TimelineEnd>,
    /// The timeline at the stop.
    pub timeline: u32,
    /// Where the WAL stops.
    pub stop_lsn: String,
    /// The server's clock just before the stop was read (RFC 3339, UTC):
    /// every transaction committed by then is in the snapshot.
    pub stopped_at: String,
}

/// One base backup of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// Its directory's name under `/bases`.
    pub id: String,
    /// The timeline it started on.
    pub timeline: u32,
    /// Where its WAL starts (the backup checkpoint's redo position).
    pub start_lsn: String,
    /// Where the copy is consistent.
    pub end_lsn: String,
    /// The server's clock when the copy started (RFC 3339, UTC).
    pub started_at: String,
    /// The server's clock once the copy ended: the first moment it reaches.
    pub ready_at: String,
}

impl Base {
    /// Where its WAL starts.
    pub fn start(&self) -> Lsn {
        self.start_lsn.parse().unwrap_or(Lsn(0))
    }
}

/// A stretch of WAL on one timeline, in one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub timeline: u32,
    /// Its first position.
    pub from: String,
    /// The position just past its last byte.
    pub to: String,
}

impl Piece {
    /// Its record path: timeline and positions in fixed-width hex, so that
    /// names sort in the order the WAL was written on each timeline.
    pub fn path(&self) -> String {
        let (from, to) = (self.from_lsn().0, self.to_lsn().0);
        format!("{WAL}/{:08X}-{from:016X}-{to:016X}", self.timeline)
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.to_lsn().0.saturating_sub(self.from_lsn().0)
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn from_lsn(&self) -> Lsn {
        self.from.parse().unwrap_or(Lsn(0))
    }

    pub fn to_lsn(&self) -> Lsn {
        self.to.parse().unwrap_or(Lsn(0))
    }
}

/// Where a recovery should stop, as far as the chain can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aim {
    /// The end of the WAL, or as soon as consistent: the newest base.
    Newest,
    /// A moment, in microseconds since the epoch (UTC).
    Time { text: String, micros: i64 },
    /// A WAL position.
    Lsn(Lsn),
    /// A target the chain cannot place (a transaction, a restore point):
    /// the oldest base, which reaches every moment of the snapshot.
    Anywhere,
}

/// Why a snapshot cannot recover as asked.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("/.chain.json cannot be read: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("the snapshot holds no base backup")]
    NoBase,
    #[error("the snapshot's WAL has a hole from {from} (timeline {timeline}) to the next piece it holds, so base backup {base} cannot recover past {from}; nothing was written. Restore an earlier or later snapshot")]
    Gap {
        base: String,
        timeline: u32,
        from: Lsn,
    },
    #[error("recovery_target_time {target} is after the last moment this snapshot holds ({covered}); nothing was written. Restore a later snapshot (`plakar ls` lists them by date)")]
    TimeAfter { target: String, covered: String },
    #[error("recovery_target_time {target} is before the first moment this snapshot reaches ({covered}); nothing was written. Restore an earlier snapshot, one whose base backup was taken before that moment")]
    TimeBefore { target: String, covered: String },
    #[error("recovery_target_lsn {target} is past the end of this snapshot's WAL ({stop}); nothing was written. Restore a later snapshot")]
    LsnAfter { target: Lsn, stop: Lsn },
    #[error("recovery_target_lsn {target} is before the position where this snapshot's base backup is consistent ({end}); nothing was written. Restore an earlier snapshot")]
    LsnBefore { target: Lsn, end: Lsn },
}

impl Chain {
    /// Reads the record.
    pub fn from_json(bytes: &[u8]) -> Result<Chain, ChainError> {
        serde_json::from_slice(bytes).map_err(ChainError::Unreadable)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("serializable");
        bytes.push(b'\n');
        bytes
    }

    /// The history of the timeline at the stop.
    pub fn history(&self) -> History {
        History {
            timeline: self.timeline,
            switches: self
                .switches
                .iter()
                .filter_map(|s| {
                    Some(Switch {
                        parent: s.timeline,
                        switch: s.end_lsn.parse().ok()?,
                    })
                })
                .collect(),
        }
    }

    pub fn stop(&self) -> Lsn {
        self.stop_lsn.parse().unwrap_or(Lsn(0))
    }

    /// The piece the next run streams again with its own WAL: the last one,
    /// if it ends at the stop on the stop's timeline and is shorter than
    /// [`OPEN_BELOW`].
    pub fn open_piece(&self) -> Option<&Piece> {
        self.pieces.last().filter(|p| {
            p.timeline == self.timeline && p.to_lsn() == self.stop() && p.len() < OPEN_BELOW
        })
    }

    /// Where the slot may move once this snapshot is committed: the start
    /// of its open piece, which the next run streams again, or the stop.
    pub fn slot_point(&self) -> Lsn {
        self.open_piece()
            .map(Piece::from_lsn)
            .unwrap_or_else(|| self.stop())
    }

    /// The moments the snapshot covers, as the user reads them.
    pub fn covered(&self) -> String {
        match self.bases.first() {
            Some(oldest) => format!("from {} to {}", oldest.ready_at, self.stopped_at),
            None => format!("up to {}", self.stopped_at),
        }
    }

    /// Checks that the WAL runs without a hole from `base`'s start to the stop,
    /// along the timelines that lead to the stop's.
    pub fn check_continuous(&self, base: &Base) -> Result<(), ChainError> {
        let history = self.history();
        let mut pieces: Vec<&Piece> = self.pieces.iter().collect();
        pieces.sort_by_key(|p| (p.from_lsn(), p.timeline));
        let mut reach = base.start();
        let stop = self.stop();
        for piece in pieces {
            if reach >= stop {
                break;
            }
            if piece.from_lsn() > reach {
                break;
            }
            if piece.to_lsn() > reach && piece.timeline == history.timeline_of(reach) {
                // A timeline's WAL past its switch is not on the way to the stop's.
                let end = history.end_of(piece.timeline).unwrap_or(Lsn(u64::MAX));
                reach = piece.to_lsn().min(end);
            }
        }
        if reach < stop {
            return Err(ChainError::Gap {
                base: base.id.clone(),
                timeline: history.timeline_of(reach),
                from: reach,
            });
        }
        Ok(())
    }

    /// The base backup a recovery to `aim` starts from, once the chain is
    /// known to reach it from there.
    pub fn base_for(&self, aim: &Aim) -> Result<&Base, ChainError> {
        let newest = self.bases.last().ok_or(ChainError::NoBase)?;
        let oldest = self.bases.first().ok_or(ChainError::NoBase)?;
        let base = match aim {
            Aim::Newest => newest,
            Aim::Anywhere => oldest,
            Aim::Time { text, micros } => {
                let after = |at: &str| moment(at).is_some_and(|m| m > *micros);
                if moment(&self.stopped_at).is_some_and(|stop| *micros > stop) {
                    return Err(ChainError::TimeAfter {
                        target: text.clone(),
                        covered: self.covered(),
                    });
                }
                self.bases
                    .iter()
                    .rev()
                    .find(|b| !after(&b.ready_at))
                    .ok_or_else(|| ChainError::TimeBefore {
                        target: text.clone(),
                        covered: self.covered(),
                    })?
            }
            Aim::Lsn(target) => {
                if *target > self.stop() {
                    return Err(ChainError::LsnAfter {
                        target: *target,
                        stop: self.stop(),
                    });
                }
                let end = |b: &Base| b.end_lsn.parse().unwrap_or(Lsn(u64::MAX));
                self.bases
                    .iter()
                    .rev()
                    .find(|b| end(b) <= *target)
                    .ok_or_else(|| ChainError::LsnBefore {
                        target: *target,
                        end: end(oldest),
                    })?
            }
        };
        self.check_continuous(base)?;
        Ok(base)
    }
}

/// Microseconds since the epoch of a timestamp with an explicit zone, as
/// PostgreSQL prints them or a user types them: `2026-12-02 14:03:11+00`,
/// `2026-12-02T14:03:11.123456Z`, `... +05:30`, `... UTC`. None for anything
/// else (a time without a zone depends on the restored server's settings).
pub fn moment(text: &str) -> Option<i64> {
    let t = text.trim();
    let b = t.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 16 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute) = (num(11..13)?, num(14..16)?);
    if b[13] != b':' {
        return None;
    }
    let mut at = 16;
    let mut second = 0;
    let mut micros = 0;
    if b.get(at) == Some(&b':') {
        second = num(at + 1..at + 3)?;
        at += 3;
        if b.get(at) == Some(&b'.') {
            let digits = t[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let frac = &t[at + 1..at + 1 + digits.min(6)];
            micros = frac.parse::<i64>().ok()? * 10_i64.pow(6 - frac.len() as u32);
            at += 1 + digits;
        }
    }
    let zone = t[at..].trim();
    let offset = match zone {
        "Z" | "UTC" | "+00" | "-00" | "+00:00" | "-00:00" => 0,
        z if z.len() >= 3 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 2 && digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            let h: i64 = digits[..2].parse().ok()?;
            let m: i64 = if digits.len() == 4 {
                digits[2..].parse().ok()?
            } else {
                0
            };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(timeline: u32, from: &str, to: &str) -> Piece {
        Piece {
            timeline,
            from: from.into(),
            to: to.into(),
        }
    }

    fn base(id: &str, start: &str, end: &str, ready_at: &str) -> Base {
        Base {
            id: id.into(),
            timeline: 1,
            start_lsn: start.into(),
            end_lsn: end.into(),
            started_at: ready_at.into(),
            ready_at: ready_at.into(),
        }
    }

    fn chain(bases: Vec<Base>, pieces: Vec<Piece>, stop: &str) -> Chain {
        Chain {
            system_identifier: "7".into(),
            segment_size: 16 << 20,
            bases,
            pieces,
            histories: vec![],
            switches: vec![],
            timeline: 1,
            stop_lsn: stop.into(),
            stopped_at: "2026-12-04T10:00:00.000000Z".into(),
        }
    }

    #[test]
    fn moments_read_with_their_zone_only() {
        let utc = moment("2026-12-04 10:00:00+00").unwrap();
        assert_eq!(moment("2026-12-04T10:00:00.000000Z"), Some(utc));
        assert_eq!(moment("2026-12-04 11:30:00+01:30"), Some(utc));
        assert_eq!(moment("2026-12-04 10:00:00.5 UTC"), Some(utc + 500_000));
        assert_eq!(moment("1970-01-01 00:00:01+00"), Some(1_000_000));
        assert_eq!(moment("2026-12-04 10:00:00"), None);
        assert_eq!(moment("yesterday"), None);
    }

    #[test]
    fn pieces_sort_by_timeline_then_position() {
        let a = piece(1, "0/3000000", "0/5000060").path();
        let b = piece(1, "0/5000060", "1/0").path();
        let c = piece(2, "0/4000000", "0/4000100").path();
        assert_eq!(a, "/wal/00000001-0000000003000000-0000000005000060");
        assert!(a < b && b < c);
    }

    #[test]
    fn the_wal_must_run_from_the_base_to_the_stop() {
        let b = base("a", "0/2000028", "0/2000100", "2026-12-04T09:00:00Z");
        let whole = chain(
            vec![b.clone()],
            vec![
                piece(1, "0/2000000", "0/3000060"),
                piece(1, "0/3000000", "0/5000000"),
            ],
            "0/5000000",
        );
        assert!(whole.check_continuous(&b).is_ok());
        let holed = chain(
            vec![b.clone()],
            vec![
                piece(1, "0/2000000", "0/3000060"),
                piece(1, "0/4000000", "0/5000000"),
            ],
            "0/5000000",
        );
        let err = holed.check_continuous(&b).unwrap_err();
        assert!(err.to_string().contains("hole from 0/3000060"), "{err}");
    }

    #[test]
    fn a_short_last_piece_stays_open_and_holds_the_slot_at_its_start() {
        let b = base("a", "0/2000028", "0/2000100", "2026-12-04T09:00:00Z");
        let mut c = chain(
            vec![b],
            vec![
                piece(1, "0/2000000", "0/3000060"),
                piece(1, "0/3000060", "0/3100000"),
            ],
            "0/3100000",
        );
        assert_eq!(c.open_piece(), Some(&piece(1, "0/3000060", "0/3100000")));
        assert_eq!(c.slot_point(), Lsn(0x300_0060));
        // A piece of a segment's size or more is closed: the slot may go to the stop.
        c.pieces[1] = piece(1, "0/3000060", "0/4000060");
        c.stop_lsn = "0/4000060".into();
        assert_eq!(c.open_piece(), None);
        assert_eq!(c.slot_point(), Lsn(0x400_0060));
        // So is one of a timeline the stop is no longer on.
        c.pieces[1] = piece(1, "0/3000060", "0/3100000");
        c.stop_lsn = "0/3100000".into();
        c.timeline = 2;
        assert_eq!(c.open_piece(), None);
    }

    #[test]
    fn the_wal_follows_a_switch_of_timeline() {
        let b = base("a", "0/2000028", "0/2000100", "2026-12-04T09:00:00Z");
        let mut c = chain(
            vec![b.clone()],
            vec![
                piece(1, "0/2000000", "0/40000A8"),
                piece(2, "0/4000000", "0/6000000"),
            ],
            "0/6000000",
        );
        c.timeline = 2;
        c.switches = vec![TimelineEnd {
            timeline: 1,
            end_lsn: "0/40000A8".into(),
        }];
        assert!(c.check_continuous(&b).is_ok());
        // Timeline 1 past the switch is not on the way to 2.
        c.pieces = vec![piece(1, "0/2000000", "0/6000000")];
        assert!(c.check_continuous(&b).is_err());
    }

    #[test]
    fn a_target_picks_the_newest_base_that_reaches_it_and_nothing_outside() {
        let old = base("old", "0/2000028", "0/2000100", "2026-12-04T08:00:00Z");
        let new = base("new", "0/8000028", "0/8000100", "2026-12-04T09:30:00Z");
        let c = chain(
            vec![old, new],
            vec![piece(1, "0/2000000", "0/9000000")],
            "0/9000000",
        );
        let at = |t: &str| Aim::Time {
            text: t.into(),
            micros: moment(t).unwrap(),
        };
        assert_eq!(c.base_for(&at("2026-12-04 09:00:00+00")).unwrap().id, "old");
        assert_eq!(c.base_for(&at("2026-12-04 09:45:00+00")).unwrap().id, "new");
        assert_eq!(c.base_for(&Aim::Newest).unwrap().id, "new");
        assert_eq!(c.base_for(&Aim::Anywhere).unwrap().id, "old");
        let late = c.base_for(&at("2026-12-04 10:00:01+00")).unwrap_err();
        assert!(
            late.to_string()
                .contains("from 2026-12-04T08:00:00Z to 2026-12-04T10:00:00"),
            "{late}"
        );
        let early = c.base_for(&at("2026-12-04 07:00:00+00")).unwrap_err();
        assert!(matches!(early, ChainError::TimeBefore { .. }));
        assert_eq!(
            c.base_for(&Aim::Lsn("0/8000200".parse().unwrap()))
                .unwrap()
                .id,
            "new"
        );
        assert_eq!(
            c.base_for(&Aim::Lsn("0/3000000".parse().unwrap()))
                .unwrap()
                .id,
            "old"
        );
        assert!(matches!(
            c.base_for(&Aim::Lsn("0/9000001".parse().unwrap())),
            Err(ChainError::LsnAfter { .. })
        ));
        assert!(matches!(
            c.base_for(&Aim::Lsn("0/2000000".parse().unwrap())),
            Err(ChainError::LsnBefore { .. })
        ));
    }
}
