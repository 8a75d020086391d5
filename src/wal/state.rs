//! The archiver's local state, two files per slot of a server in
//! `state_dir`, named `SLOT@HOST-PORT` (a socket directory's slashes as `_`):
//!
//! - `.lock`, held for the whole run, so that two runs of one slot never
//!   overlap;
//! - `.sent`, written once a run has sent all its records: the position
//!   it stopped at, which the slot may move to once that run's snapshot is
//!   known to be committed, and the receipt record that tells it (see
//!   [`super::archive`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::WalError;
use crate::replication::slot::SlotName;

/// Where a run stopped, as `SLOT.sent` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The cluster the WAL is of.
    pub system_identifier: String,
    /// The slot it was read through.
    pub slot: String,
    /// The timeline at the stop position.
    pub timeline: u32,
    /// The position just past the last byte sent.
    pub stop_lsn: String,
    /// The run's receipt: `/receipt/<id>`, with this id as its device
    /// number and `at` (seconds since the epoch) as its mtime.
    pub receipt_id: u64,
    /// The receipt's mtime.
    pub receipt_at: u64,
}

impl Sent {
    /// The receipt record's content: what the run stopped at, for whoever reads it.
    pub fn receipt(&self) -> Vec<u8> {
        format!(
            "WAL of system {} sent through slot {} up to {} on timeline {}\n",
            self.system_identifier, self.slot, self.stop_lsn, self.timeline
        )
        .into_bytes()
    }
}

/// The state files of one slot, locked for this run.
#[derive(Debug)]
pub struct State {
    dir: PathBuf,
    /// `SLOT@HOST-PORT`, the files' name.
    name: String,
    /// Holds the lock for as long as the run lives.
    _lock: File,
}

impl State {
    /// Opens the state of `slot` on the server at `host` and `port` in `dir`
    /// (made if missing, private) and takes its lock.
    pub fn open(dir: &Path, host: &str, port: u16, slot: &SlotName) -> Result<State, WalError> {
        let name = format!("{slot}@{}-{port}", host.replace('/', "_"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| WalError::State {
                action: "create",
                path: dir.to_path_buf(),
                source,
            })?;
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| WalError::State {
                action: "open",
                path: lock_path.clone(),
                source,
            })?;
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(WalError::Busy {
                slot: slot.to_string(),
                lock: lock_path,
            });
        }
        Ok(State {
            dir: dir.to_path_buf(),
            name,
            _lock: lock,
        })
    }

    /// The file that says where the last run stopped.
    pub fn sent_path(&self) -> PathBuf {
        self.dir.join(format!("{}.sent", self.name))
    }

    /// Where the last run stopped, if it recorded it and nothing settled it since.
    pub fn sent(&self) -> Result<Option<Sent>, WalError> {
        let path = self.sent_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| WalError::BadState {
                    path,
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(WalError::State {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Records where this run stopped, atomically.
    pub fn record_sent(&self, sent: &Sent) -> Result<(), WalError> {
        let path = self.sent_path();
        let tmp = self.dir.join(format!("{}.sent.tmp", self.name));
        let bytes = serde_json::to_vec_pretty(sent).expect("serializable");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| WalError::State {
                action,
                path,
                source,
            }
        };
        std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))
    }

    /// Forgets the last run's stop position.
    pub fn clear(&self) -> Result<(), WalError> {
        let path = self.sent_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(WalError::State {
                action: "remove",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_state_is_held_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let slot = SlotName::new("s1").unwrap();
        let state = State::open(dir.path(), "db", 5432, &slot).unwrap();
        let err = State::open(dir.path(), "db", 5432, &slot)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("another WAL archive run of slot \"s1\""),
            "{err}"
        );
        assert!(err.contains("s1@db-5432.lock"), "{err}");
        let other_slot = SlotName::new("s2").unwrap();
        assert!(State::open(dir.path(), "db", 5432, &other_slot).is_ok());
        assert!(State::open(dir.path(), "db", 5433, &slot).is_ok());
        assert!(State::open(dir.path(), "/run/postgresql", 5432, &slot).is_ok());
        drop(state);
        assert!(State::open(dir.path(), "db", 5432, &slot).is_ok());
    }

    #[test]
    fn where_a_run_stopped_is_kept_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path(), "db", 5432, &SlotName::new("s").unwrap()).unwrap();
        assert_eq!(state.sent().unwrap(), None);
        let sent = Sent {
            system_identifier: "7000".into(),
            slot: "s".into(),
            timeline: 1,
            stop_lsn: "0/3000060".into(),
            receipt_id: 17,
            receipt_at: 1_700_000_000,
        };
        state.record_sent(&sent).unwrap();
        assert_eq!(state.sent().unwrap(), Some(sent.clone()));
        assert!(String::from_utf8(sent.receipt())
            .unwrap()
            .contains("up to 0/3000060"));
        state.clear().unwrap();
        assert_eq!(state.sent().unwrap(), None);
    }
}
