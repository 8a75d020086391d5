//! The physical destination's side of point-in-time recovery: a base restore
//! prepared for it, and the WAL snapshots restored after it.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Open, WalRestore, Writer};
use crate::error::Error;
use crate::manifest::BackupSection;
use crate::physical::chain::{Chain, ChainError, ARCHIVE_DIR};
use crate::physical::recovery::Recovery;
use crate::protocol::connectors::Record;
use crate::protocol::destination::Results;
use crate::protocol::record::MODE_DIR;
use crate::replication::Lsn;
use crate::wal::segment::{parse_history_file_name, Segment};
use crate::wal::{PARTIAL, WAL_DIR};

/// The suffix of a WAL file being written, before it is put in place.
const INCOMING: &str = ".incoming";

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// Why a WAL file just written cannot be what its name says: a complete
/// segment is exactly one segment long, a `.partial` at most that.
pub(super) fn misfit(name: &str, len: u64, size: u64) -> Option<String> {
    if parse_history_file_name(name).is_some() {
        return None;
    }
    match name.strip_suffix(PARTIAL) {
        Some(_) if len > size => Some(format!(
            "this partial WAL segment holds {len} bytes, more than a whole segment of this server ({size} bytes)"
        )),
        None if len != size => Some(format!(
            "this WAL segment holds {len} bytes, and a complete segment of this server holds {size}"
        )),
        _ => None,
    }
}

impl Writer {
    /// After a verified base restore: the recovery settings, `recovery.signal`,
    /// the archive directory and the chain's ledger.
    pub(super) fn prepare_recovery(&self, recovery: &Recovery) -> Result<(), Error> {
        let manifest = self
            .snapshot
            .as_ref()
            .ok_or(Error::NoRecoveryFacts("the server"))?;
        let system = manifest
            .server
            .system_identifier
            .as_deref()
            .ok_or(Error::NoRecoveryFacts("the system identifier"))?;
        let range = manifest
            .wal
            .as_ref()
            .ok_or(Error::NoRecoveryFacts("the WAL range"))?;
        let lsn = |text: &str| -> Result<Lsn, Error> {
            text.parse()
                .map_err(|_| Error::NoRecoveryFacts("a readable WAL range"))
        };
        let chain = Chain::of_base(
            system,
            range.timeline,
            lsn(&range.start_lsn)?,
            lsn(&range.stop_lsn)?,
        );
        let archive = self.root.join(ARCHIVE_DIR);
        std::fs::create_dir_all(&archive).map_err(io("create", &archive))?;
        std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o700))
            .map_err(io("create", &archive))?;
        recovery
            .write(&self.root)
            .map_err(io("write", &self.root))?;
        let ledger = chain.save(&self.root).map_err(io("write", &archive))?;
        for path in [
            archive.clone(),
            ledger,
            self.root.join("recovery.signal"),
            self.root.join("postgresql.auto.conf"),
        ] {
            self.give(&path).map_err(Error::Verify)?;
        }
        let target: Vec<String> = recovery
            .settings()
            .iter()
            .skip(1)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let target = if target.is_empty() {
            "recovery_target=latest".to_string()
        } else {
            target.join(", ")
        };
        tracing::info!(
            "{} is ready for point-in-time recovery ({target}): restore into it the WAL snapshots taken since this base backup, oldest first, then start it with: pg_ctl -D {} start",
            self.root.display(),
            self.root.display()
        );
        Ok(())
    }

    /// Removes the files an earlier WAL restore left staged when it was cut
    /// short (Plakar stopped before the end): never put in place, never read.
    pub(super) fn sweep_incoming(&self) {
        let archive = self.root.join(ARCHIVE_DIR);
        let Ok(entries) = std::fs::read_dir(&archive) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(INCOMING) {
                tracing::info!("removing {name}, left by a WAL restore that did not end");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// A record of a WAL snapshot.
    pub(super) async fn begin_wal(
        &mut self,
        record: Record,
        results: &mut Results,
    ) -> Result<Option<Open>, Error> {
        let wal = self.wal.as_mut().expect("a WAL snapshot");
        if let Some(refused) = wal.refused.take() {
            return Err(refused);
        }
        let path = &record.pathname;
        let is_dir = record
            .file_info
            .as_ref()
            .is_some_and(|i| i.mode & MODE_DIR != 0);
        let inside = path.strip_prefix(&format!("{WAL_DIR}/"));
        if path == "/" || is_dir || inside.is_none() {
            // `/`, `/wal`, the receipts, the manifest: nothing of the data directory.
            if path == WAL_DIR || inside.is_some() {
                let archive = self.root.join(ARCHIVE_DIR);
                if let Err(e) = std::fs::create_dir_all(&archive) {
                    results
                        .send(
                            &record,
                            Err(format!("cannot create {}: {e}", archive.display())),
                        )
                        .await;
                    return Ok(None);
                }
            }
            if is_dir || path == "/" {
                results.send(&record, Ok::<(), String>(())).await;
                return Ok(None);
            }
            return Ok(Some(Open {
                record,
                file: None,
                path: PathBuf::new(),
                error: None,
            }));
        }
        let name = inside.unwrap_or_default().to_string();
        let Some(size) = wal.extended.as_ref().map(Chain::segment_bytes) else {
            return Err(Error::WalBeforeManifest(record.pathname));
        };
        // Only PostgreSQL's own names: a segment (perhaps `.partial`) or a history file.
        let segment = name.strip_suffix(PARTIAL).unwrap_or(&name);
        let bad =
            Segment::parse(segment, size).is_none() && parse_history_file_name(&name).is_none();
        let staged = self
            .root
            .join(ARCHIVE_DIR)
            .join(format!(".{name}{INCOMING}"));
        let file = if bad {
            Err(format!(
                "{path} is not a WAL file name (a segment such as 000000010000000000000003, or a history file such as 00000002.history)"
            ))
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&staged)
                .map_err(|e| format!("cannot create {}: {e}", staged.display()))
        };
        Ok(Some(match file {
            Ok(f) => Open {
                record,
                file: Some(tokio::fs::File::from_std(f)),
                path: staged,
                error: None,
            },
            Err(e) => Open {
                record,
                file: None,
                path: staged,
                error: Some(e),
            },
        }))
    }

    /// Checks the WAL snapshot's manifest against the chain; a refusal is
    /// returned at the next record, before any WAL file is written.
    pub(super) fn check_wal_manifest(&mut self) {
        let checked = match (&self.snapshot, &self.chain) {
            (Some(manifest), Some(chain)) => match &manifest.backup {
                BackupSection::Wal(facts) => chain
                    .extended_by(
                        manifest.server.system_identifier.as_deref().unwrap_or(""),
                        facts,
                    )
                    .map_err(Error::from),
                other => Err(ChainError::BadManifest(format!(
                    "its layout is {}, not wal",
                    other.layout()
                ))
                .into()),
            },
            _ => Err(ChainError::BadManifest("it is not a manifest of this package".into()).into()),
        };
        let wal = self.wal.as_mut().expect("a WAL snapshot");
        match checked {
            Ok(chain) => wal.extended = Some(chain),
            Err(e) => wal.refused = Some(e),
        }
    }

    /// Puts the WAL files in place and extends the ledger; or removes them all.
    pub(super) fn finish_wal(&mut self, wal: WalRestore, results: &Results) -> Result<(), Error> {
        let discard = |staged: &[(String, PathBuf, u64)]| {
            for (_, path, _) in staged {
                let _ = std::fs::remove_file(path);
            }
        };
        if let Some(refused) = wal.refused {
            discard(&wal.staged);
            return Err(refused);
        }
        let Some(mut chain) = wal.extended else {
            discard(&wal.staged);
            return Err(
                ChainError::BadManifest("the snapshot has no /manifest.json".into()).into(),
            );
        };
        if results.any_failed() {
            discard(&wal.staged);
            return Ok(());
        }
        let size = chain.segment_bytes();
        let archive = self.root.join(ARCHIVE_DIR);
        for (name, staged, len) in &wal.staged {
            let (name, len) = match name.strip_suffix(PARTIAL) {
                Some(segment) => {
                    // PostgreSQL reads whole segments: the rest is zeros, where
                    // its recovery sees the end of the WAL.
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(staged)
                        .and_then(|f| f.set_len(size))
                        .map_err(io("write", staged))?;
                    (segment.to_string(), *len)
                }
                None => (name.clone(), *len),
            };
            if chain.held.get(&name).is_some_and(|held| *held >= len) {
                let _ = std::fs::remove_file(staged);
                continue;
            }
            let target = archive.join(&name);
            std::fs::rename(staged, &target).map_err(io("write", &target))?;
            self.give(&target).map_err(Error::Verify)?;
            chain.held.insert(name, len);
        }
        let ledger = chain.save(&self.root).map_err(io("write", &archive))?;
        self.give(&ledger).map_err(Error::Verify)?;
        if let Some(recovery) = &self.config.recovery {
            recovery
                .write(&self.root)
                .map_err(io("write", &self.root))?;
            for path in [
                self.root.join("recovery.signal"),
                self.root.join("postgresql.auto.conf"),
            ] {
                self.give(&path).map_err(Error::Verify)?;
            }
        }
        self.chain = Some(chain.clone());
        let (timeline, reach) = chain.furthest();
        tracing::info!(
            "the WAL restored in {} now reaches {reach} on timeline {timeline} (everything committed before {} on the server); restore the next WAL snapshot, or start the server: pg_ctl -D {} start",
            archive.display(),
            chain.stopped_at.as_deref().unwrap_or("?"),
            self.root.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::misfit;

    const MB16: u64 = 16 * 1024 * 1024;

    #[test]
    fn a_segment_must_be_as_long_as_the_servers_segments() {
        assert_eq!(misfit("000000010000000000000003", MB16, MB16), None);
        assert!(misfit("000000010000000000000003", MB16 - 1, MB16)
            .unwrap()
            .contains("holds 16777215 bytes"));
        assert_eq!(misfit("000000010000000000000003.partial", 8192, MB16), None);
        assert!(misfit("000000010000000000000003.partial", MB16 + 1, MB16).is_some());
        assert_eq!(misfit("00000002.history", 42, MB16), None);
    }
}
