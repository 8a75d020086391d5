//! The archiving source's local state, two files per slot of a server in
//! `state_dir`, named `SLOT@HOST-PORT` (a socket directory's slashes as `_`):
//!
//! - `.lock`, held for the whole run, so that two runs of one source never
//!   overlap;
//! - `.json`, what the last runs' snapshots hold: the last run's (`sent`,
//!   not yet known to be committed) and the last one known to be committed
//!   (`committed`), each with its receipt, its chain, and every record a
//!   later run carries forward with the same metadata, so that Plakar stores
//!   it again without reading it (see [`super::archive`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::WalError;
use crate::physical::chain::Chain;
use crate::postgres::replication::slot::SlotName;
use crate::protocol::record::{Entry, EntryKind};

/// A record as the state keeps it, to announce it again unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub path: String,
    /// `file`, `dir` or `link`.
    pub kind: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    pub perm: u32,
    pub mtime_s: u64,
    pub mtime_ns: u32,
    pub uid: u64,
    pub gid: u64,
    pub user: String,
    pub group: String,
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
}

impl From<&Entry> for Kept {
    fn from(e: &Entry) -> Kept {
        let since = e.modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (kind, size, target) = match &e.kind {
            EntryKind::File(size) => ("file", *size, String::new()),
            EntryKind::Directory => ("dir", 0, String::new()),
            EntryKind::Symlink(target) => ("link", 0, target.clone()),
        };
        Kept {
            path: e.path.clone(),
            kind: kind.into(),
            size,
            target,
            perm: e.perm,
            mtime_s: since.as_secs(),
            mtime_ns: since.subsec_nanos(),
            uid: e.uid,
            gid: e.gid,
            user: e.user.clone(),
            group: e.group.clone(),
            dev: e.dev,
            ino: e.ino,
        }
    }
}

impl Kept {
    /// The entry, as it was announced.
    pub fn entry(&self) -> Entry {
        Entry {
            path: self.path.clone(),
            kind: match self.kind.as_str() {
                "dir" => EntryKind::Directory,
                "link" => EntryKind::Symlink(self.target.clone()),
                _ => EntryKind::File(self.size),
            },
            perm: self.perm,
            modified: UNIX_EPOCH + Duration::new(self.mtime_s, self.mtime_ns),
            uid: self.uid,
            gid: self.gid,
            user: self.user.clone(),
            group: self.group.clone(),
            dev: self.dev,
            ino: self.ino,
        }
    }
}

/// What one run's snapshot holds, as the next runs need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// The receipt `/receipt/<id>`: its device number, and its mtime in
    /// seconds since the epoch; no other run uses the same.
    pub receipt_id: u64,
    pub receipt_at: u64,
    /// The snapshot's chain: bases, WAL pieces, where it stops.
    pub chain: Chain,
    /// When its newest base backup started, in seconds since the epoch.
    pub base_started: u64,
    /// Every record a later run carries forward (bases, WAL, directories).
    pub records: Vec<Kept>,
}

impl Tip {
    /// The receipt record's content: what the run stopped at, for whoever reads it.
    pub fn receipt(&self) -> Vec<u8> {
        format!(
            "WAL of system {} up to {} on timeline {}\n",
            self.chain.system_identifier, self.chain.stop_lsn, self.chain.timeline
        )
        .into_bytes()
    }

    /// The receipt's record.
    pub fn receipt_entry(&self) -> Entry {
        let bytes = self.receipt();
        Entry {
            path: format!("{}/{}", crate::physical::chain::RECEIPTS, self.receipt_id),
            kind: EntryKind::File(bytes.len() as u64),
            perm: 0o600,
            modified: UNIX_EPOCH + Duration::from_secs(self.receipt_at),
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            dev: self.receipt_id,
            ino: 0,
        }
    }

    /// The newest base's age at `now`.
    pub fn base_age(&self, now: SystemTime) -> Duration {
        let started = UNIX_EPOCH + Duration::from_secs(self.base_started);
        now.duration_since(started).unwrap_or_default()
    }
}

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The last run's snapshot, until a run finds it committed.
    pub sent: Option<Tip>,
    /// The last snapshot a run found committed.
    pub committed: Option<Tip>,
}

/// The state files of one source, locked for this run.
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

    /// The file that says what the last runs' snapshots hold.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.name))
    }

    /// What the last runs left; nothing on a first run.
    pub fn load(&self) -> Result<Saved, WalError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WalError::BadState {
                path,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(source) => Err(WalError::State {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Writes it, atomically and durably.
    pub fn save(&self, saved: &Saved) -> Result<(), WalError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{}.json.tmp", self.name));
        let bytes = serde_json::to_vec(saved).expect("serializable");
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
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &self.dir))
    }

    /// Forgets every snapshot: the next run takes a new base backup.
    pub fn forget(&self) -> Result<(), WalError> {
        self.save(&Saved::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_state_is_held_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let slot = SlotName::new("s1").unwrap();
        let state = State::open(dir.path(), "db", 5432, &slot).unwrap();
        let err = State::open(dir.path(), "db", 5432, &slot)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("another archiving run of slot \"s1\""),
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
    fn records_come_back_with_the_metadata_they_were_announced_with() {
        let entry = Entry {
            path: "/bases/x/base/1/1259".into(),
            kind: EntryKind::File(8192),
            perm: 0o600,
            modified: UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            uid: 100,
            gid: 101,
            user: "postgres".into(),
            group: "postgres".into(),
            dev: 42,
            ino: 7,
        };
        let back = Kept::from(&entry).entry();
        assert_eq!(
            crate::protocol::record::entry_record(&back),
            crate::protocol::record::entry_record(&entry)
        );
        let link = Entry {
            kind: EntryKind::Symlink("/srv/ts".into()),
            ..entry
        };
        assert_eq!(Kept::from(&link).entry().kind, link.kind);
    }

    #[test]
    fn what_the_runs_left_is_kept_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path(), "db", 5432, &SlotName::new("s").unwrap()).unwrap();
        assert_eq!(state.load().unwrap(), Saved::default());
        let saved = Saved {
            sent: None,
            committed: None,
        };
        state.save(&saved).unwrap();
        assert_eq!(state.load().unwrap(), saved);
        std::fs::write(state.path(), b"{").unwrap();
        let err = state.load().unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
        state.forget().unwrap();
        assert_eq!(state.load().unwrap(), Saved::default());
    }
}
