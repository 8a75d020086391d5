//! The WAL chain of a data directory restored for point-in-time recovery:
//! `pg_wal/plakar/chain.json`, written by the base restore and extended by
//! each WAL snapshot restored after it. It says which cluster the base is of,
//! and how far the WAL restored so far reaches on each timeline without a
//! hole; a WAL snapshot that is of another cluster, or that would leave a
//! hole, is refused before any of its files is written, so the server never
//! finds the hole half-way through its recovery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{TimelineEnd, WalFacts};
use crate::replication::Lsn;
use crate::wal::segment::{History, Segment, Switch};

/// The directory of the archived WAL, under the data directory: PostgreSQL
/// ignores what pg_wal's subdirectories hold, and so do pg_basebackup and
/// pg_verifybackup.
pub const ARCHIVE_DIR: &str = "pg_wal/plakar";

/// The ledger's file name, in [`ARCHIVE_DIR`].
pub const LEDGER: &str = "chain.json";

/// What a data directory restored for recovery holds of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The cluster of the base backup.
    pub system_identifier: String,
    /// The base backup's timeline and WAL range.
    pub base_timeline: u32,
    /// Where the base backup's WAL starts.
    pub base_start_lsn: String,
    /// Where it stops: the WAL from there on must come from WAL snapshots.
    pub base_stop_lsn: String,
    /// The WAL segment size, once a WAL snapshot has said it.
    #[serde(default)]
    pub segment_size: Option<u64>,
    /// How far the WAL reaches without a hole, by timeline.
    pub reach: BTreeMap<u32, String>,
    /// The longest ancestry known of each timeline.
    #[serde(default)]
    pub histories: BTreeMap<u32, Vec<TimelineEnd>>,
    /// The bytes held of each segment file in the archive (a segment that was
    /// still being written when its snapshot was taken holds fewer).
    #[serde(default)]
    pub held: BTreeMap<String, u64>,
    /// The latest `stopped_at` of the WAL snapshots restored.
    #[serde(default)]
    pub stopped_at: Option<String>,
}

/// Why a WAL snapshot does not continue the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("this WAL snapshot is of another cluster (system identifier {theirs}) than the base backup restored here ({ours}); nothing was written. Restore the WAL snapshots of the base backup's own cluster")]
    OtherCluster { ours: String, theirs: String },
    #[error("the WAL from {from} to {to} on timeline {timeline} is in no WAL snapshot restored here, so this snapshot (whose WAL starts at {to}) does not continue the chain; nothing was written. Restore the WAL snapshots taken before this one first, oldest first; if none holds that WAL, the chain is broken at {from} and no recovery from this base backup can pass it")]
    Gap { timeline: u32, from: Lsn, to: Lsn },
    #[error("the WAL of timeline {timeline} does not descend from timeline {base} of the base backup restored here (no history links them); nothing was written")]
    Unrelated { timeline: u32, base: u32 },
    #[error("the WAL snapshot's manifest is not readable: {0}")]
    BadManifest(String),
}

/// PostgreSQL's default WAL segment size (initdb --wal-segsize=16).
const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

impl Chain {
    /// The WAL segment size, as a WAL snapshot said it, else PostgreSQL's default.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE)
    }

    /// The chain of a base backup of `system_identifier`, whose WAL is `timeline`, `start`..`stop`.
    pub fn of_base(system_identifier: &str, timeline: u32, start: Lsn, stop: Lsn) -> Chain {
        Chain {
            system_identifier: system_identifier.to_string(),
            base_timeline: timeline,
            base_start_lsn: start.to_string(),
            base_stop_lsn: stop.to_string(),
            segment_size: None,
            reach: BTreeMap::from([(timeline, stop.to_string())]),
            histories: BTreeMap::new(),
            held: BTreeMap::new(),
            stopped_at: None,
        }
    }

    /// Reads the ledger of `data`, if the directory was restored for recovery.
    pub fn load(data: &Path) -> std::io::Result<Option<Chain>> {
        match std::fs::read(ledger_path(data)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the ledger, atomically.
    pub fn save(&self, data: &Path) -> std::io::Result<PathBuf> {
        let path = ledger_path(data);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serializable"))?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    fn reach_of(&self, timeline: u32) -> Option<Lsn> {
        self.reach.get(&timeline).and_then(|l| l.parse().ok())
    }

    /// Where the WAL of `timeline` can start for the chain to go on, if the
    /// chain reaches it: its reach, or the start of the segment of its
    /// switch from a timeline the chain reaches up to that segment.
    fn entry_point(&self, timeline: u32, history: &History, size: u64) -> Result<Lsn, ChainError> {
        if let Some(reach) = self.reach_of(timeline) {
            return Ok(reach);
        }
        let switches = &history.switches;
        // The switch whose next timeline is this one.
        let at = switches
            .iter()
            .enumerate()
            .find(|(i, _)| switches.get(i + 1).map_or(history.timeline, |n| n.parent) == timeline);
        let Some((_, Switch { parent, switch })) = at else {
            return Err(ChainError::Unrelated {
                timeline,
                base: self.base_timeline,
            });
        };
        let start = Segment::holding(timeline, *switch, size).start(size);
        let parent_reach = self.entry_point(*parent, history, size)?;
        let parent_reach = self.reach_of(*parent).unwrap_or(parent_reach);
        if parent_reach < start {
            return Err(ChainError::Gap {
                timeline: *parent,
                from: parent_reach,
                to: start,
            });
        }
        Ok(start)
    }

    /// Checks that a WAL snapshot continues the chain, and returns the chain
    /// it makes; `self` is left as it is.
    pub fn extended_by(
        &self,
        system_identifier: &str,
        facts: &WalFacts,
    ) -> Result<Chain, ChainError> {
        if system_identifier != self.system_identifier {
            return Err(ChainError::OtherCluster {
                ours: self.system_identifier.clone(),
                theirs: system_identifier.to_string(),
            });
        }
        let size = facts.segment_size;
        let newest = facts
            .ranges
            .last()
            .map_or(self.base_timeline, |r| r.timeline);
        let mut switches: Vec<Switch> = Vec::new();
        for end in &facts.switches {
            let switch = end
                .end_lsn
                .parse()
                .map_err(|e: crate::replication::BadLsn| ChainError::BadManifest(e.to_string()))?;
            switches.push(Switch {
                parent: end.timeline,
                switch,
            });
        }
        // The switches are the ancestry of the server's timeline, the last range's.
        let history = History {
            timeline: newest,
            switches,
        };
        let mut next = self.clone();
        next.segment_size = Some(size);
        for range in &facts.ranges {
            let start: Lsn = range
                .start_lsn
                .parse()
                .map_err(|e: crate::replication::BadLsn| ChainError::BadManifest(e.to_string()))?;
            let stop: Lsn = range
                .stop_lsn
                .parse()
                .map_err(|e: crate::replication::BadLsn| ChainError::BadManifest(e.to_string()))?;
            let known = next.history_for(range.timeline, &history);
            let entry = next.entry_point(range.timeline, &known, size)?;
            if start > entry {
                return Err(ChainError::Gap {
                    timeline: range.timeline,
                    from: entry,
                    to: start,
                });
            }
            let reach = next.reach_of(range.timeline).unwrap_or(entry).max(stop);
            next.reach.insert(range.timeline, reach.to_string());
        }
        if !facts.switches.is_empty() {
            let longest = next.histories.get(&history.timeline).map_or(0, Vec::len);
            if facts.switches.len() > longest {
                next.histories
                    .insert(history.timeline, facts.switches.clone());
            }
        }
        if next.stopped_at.as_deref() < Some(facts.stopped_at.as_str()) {
            next.stopped_at = Some(facts.stopped_at.clone());
        }
        Ok(next)
    }

    /// The ancestry to judge `timeline` by: the snapshot's, or a longer one
    /// restored before that leads to it.
    fn history_for(&self, timeline: u32, snapshot: &History) -> History {
        if snapshot.leads_from(timeline) {
            return snapshot.clone();
        }
        self.histories
            .iter()
            .map(|(t, ends)| History {
                timeline: *t,
                switches: ends
                    .iter()
                    .filter_map(|e| {
                        Some(Switch {
                            parent: e.timeline,
                            switch: e.end_lsn.parse().ok()?,
                        })
                    })
                    .collect(),
            })
            .find(|h| h.leads_from(timeline))
            .unwrap_or_else(|| snapshot.clone())
    }

    /// How far the chain reaches on its newest timeline, for the log.
    pub fn furthest(&self) -> (u32, String) {
        self.reach
            .iter()
            .next_back()
            .map(|(t, l)| (*t, l.clone()))
            .unwrap_or((self.base_timeline, self.base_stop_lsn.clone()))
    }
}

/// The ledger's path in a data directory.
pub fn ledger_path(data: &Path) -> PathBuf {
    data.join(ARCHIVE_DIR).join(LEDGER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::WalRange;

    const MB16: u64 = 16 * 1024 * 1024;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    fn facts(ranges: &[(u32, &str, &str)], switches: &[(u32, &str)]) -> WalFacts {
        WalFacts {
            slot: "plakar_wal".into(),
            segment_size: MB16,
            ranges: ranges
                .iter()
                .map(|(t, a, b)| WalRange {
                    timeline: *t,
                    start_lsn: a.to_string(),
                    stop_lsn: b.to_string(),
                })
                .collect(),
            histories: Vec::new(),
            switches: switches
                .iter()
                .map(|(t, l)| TimelineEnd {
                    timeline: *t,
                    end_lsn: l.to_string(),
                })
                .collect(),
            stopped_at: "2026-12-02T14:00:00.000000Z".into(),
            ssl_mode: "prefer".into(),
        }
    }

    fn base() -> Chain {
        Chain::of_base("7001", 1, lsn("0/5000028"), lsn("0/5000138"))
    }

    #[test]
    fn snapshots_that_follow_each_other_extend_the_chain() {
        let chain = base()
            .extended_by("7001", &facts(&[(1, "0/4000000", "0/7000060")], &[]))
            .unwrap();
        assert_eq!(chain.reach[&1], "0/7000060");
        let chain = chain
            .extended_by("7001", &facts(&[(1, "0/7000000", "0/9000000")], &[]))
            .unwrap();
        assert_eq!(chain.furthest(), (1, "0/9000000".to_string()));
        // An older snapshot restored again changes nothing.
        let again = chain
            .extended_by("7001", &facts(&[(1, "0/4000000", "0/7000060")], &[]))
            .unwrap();
        assert_eq!(again.reach, chain.reach);
    }

    #[test]
    fn a_hole_or_another_cluster_is_refused_naming_what_is_missing() {
        let err = base()
            .extended_by("7001", &facts(&[(1, "0/8000000", "0/9000000")], &[]))
            .unwrap_err();
        assert_eq!(
            err,
            ChainError::Gap {
                timeline: 1,
                from: lsn("0/5000138"),
                to: lsn("0/8000000")
            }
        );
        assert!(err.to_string().starts_with(
            "the WAL from 0/5000138 to 0/8000000 on timeline 1 is in no WAL snapshot restored here"
        ));
        let err = base()
            .extended_by("9999", &facts(&[(1, "0/5000000", "0/9000000")], &[]))
            .unwrap_err();
        assert!(err
            .to_string()
            .contains("another cluster (system identifier 9999)"));
    }

    #[test]
    fn a_later_timeline_continues_the_chain_from_its_switch() {
        let chain = base()
            .extended_by("7001", &facts(&[(1, "0/5000000", "0/6000100")], &[]))
            .unwrap();
        // Timeline 2 began at 0/6000080, in the segment from 0/6000000.
        let two = facts(&[(2, "0/6000000", "0/8000000")], &[(1, "0/6000080")]);
        let chain = chain.extended_by("7001", &two).unwrap();
        assert_eq!(chain.reach[&2], "0/8000000");
        assert_eq!(chain.histories[&2].len(), 1);
        // Timeline 3 from 2 at 0/7800000, its first snapshot from the switch's segment.
        let three = facts(
            &[(3, "0/7000000", "0/9000000")],
            &[(1, "0/6000080"), (2, "0/7800000")],
        );
        assert_eq!(
            chain.extended_by("7001", &three).unwrap().reach[&3],
            "0/9000000"
        );
        // A timeline whose parent the chain does not reach up to the switch.
        let short = base();
        let err = short.extended_by("7001", &two).unwrap_err();
        assert_eq!(
            err,
            ChainError::Gap {
                timeline: 1,
                from: lsn("0/5000138"),
                to: lsn("0/6000000")
            }
        );
        let stray = facts(&[(5, "0/6000000", "0/8000000")], &[]);
        assert!(matches!(
            chain.extended_by("7001", &stray),
            Err(ChainError::Unrelated { timeline: 5, .. })
        ));
    }
}
