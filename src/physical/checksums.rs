//! The checksums of the files a direct copy read, kept on this host
//! (`state_dir`, `direct-<system identifier>.crc`), so that the next copy's
//! `backup_manifest` gives a checksum for the files Plakar stores again
//! without reading them.
//!
//! A checksum is reused only for a file whose path, size, modification time
//! and inode are those it was computed with: the metadata Plakar compares
//! before it carries a file unread, so a checksum is reused exactly where the
//! bytes it was computed on are. A file written close to a backup's start is
//! read again at the next one whatever its metadata (see
//! [`super::direct::recently_modified`]), and so gets a fresh checksum too.
//! Losing the file loses nothing but those checksums: the next manifest lists
//! the carried files with their size alone, and the copy after it has them
//! all again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The first line of the file: what it is, and its format's version.
const HEADER: &str = "plakar-postgresql direct-copy checksums 1";

/// A file as it was when its checksum was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    /// Modification time, in nanoseconds since the epoch.
    pub modified: u128,
    pub ino: u64,
    /// CRC-32C of its content.
    pub crc: u32,
}

impl Seen {
    pub fn new(size: u64, modified: SystemTime, ino: u64, crc: u32) -> Seen {
        Seen {
            size,
            modified: nanos(modified),
            ino,
            crc,
        }
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// The checksums the previous direct copy of a cluster computed, by path
/// in the data directory (`base/5/16384`).
#[derive(Debug, Default)]
pub struct Known {
    by_path: HashMap<String, Seen>,
}

impl Known {
    /// Reads `path`; an absent, unreadable or foreign file gives none (the
    /// carried files are then listed without checksum), and says why.
    pub fn load(path: &Path) -> Known {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Known::default(),
            Err(e) => {
                tracing::warn!(
                    "cannot read the checksums of the previous direct copy ({}): {e}; files Plakar carries unread are listed in backup_manifest without checksum",
                    path.display()
                );
                return Known::default();
            }
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            tracing::warn!(
                "{} is not a checksum file of this plugin; files Plakar carries unread are listed in backup_manifest without checksum",
                path.display()
            );
            return Known::default();
        }
        let by_path = lines.filter_map(parse_line).collect();
        Known { by_path }
    }

    /// The checksum of `relative`, if it was computed on the file as it is.
    pub fn get(&self, relative: &str, size: u64, modified: SystemTime, ino: u64) -> Option<u32> {
        self.by_path
            .get(relative)
            .filter(|s| s.size == size && s.modified == nanos(modified) && s.ino == ino)
            .map(|s| s.crc)
    }

    /// Writes the checksums of `files` to `path`, in place of what it held
    /// (a new file renamed over it, so a crash leaves the old or the new).
    pub fn save<'a>(
        path: &Path,
        files: impl Iterator<Item = (&'a str, Seen)>,
    ) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let fresh = temporary(path);
        let written = (|| {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&fresh)?);
            writeln!(out, "{HEADER}")?;
            for (relative, s) in files {
                writeln!(
                    out,
                    "{:08x} {} {} {} {relative}",
                    s.crc, s.size, s.modified, s.ino
                )?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&fresh, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&fresh);
        }
        written
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// `crc size modified ino path`; the path last, as it may hold spaces.
fn parse_line(line: &str) -> Option<(String, Seen)> {
    let mut fields = line.splitn(5, ' ');
    let crc = u32::from_str_radix(fields.next()?, 16).ok()?;
    let size = fields.next()?.parse().ok()?;
    let modified = fields.next()?.parse().ok()?;
    let ino = fields.next()?.parse().ok()?;
    let relative = fields.next().filter(|p| !p.is_empty())?;
    Some((
        relative.to_string(),
        Seen {
            size,
            modified,
            ino,
            crc,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_checksum_is_given_back_only_for_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/direct-1.crc");
        let when = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let seen = Seen::new(8192, when, 42, 0xdead_beef);
        Known::save(
            &path,
            [("base/5/16384", seen), ("pg_tblspc/1/PG 15/x", seen)].into_iter(),
        )
        .unwrap();
        let known = Known::load(&path);
        assert_eq!(known.get("base/5/16384", 8192, when, 42), Some(0xdead_beef));
        assert_eq!(
            known.get("pg_tblspc/1/PG 15/x", 8192, when, 42),
            Some(0xdead_beef)
        );
        assert_eq!(known.get("base/5/16384", 16384, when, 42), None, "grown");
        assert_eq!(
            known.get("base/5/16384", 8192, when + Duration::from_nanos(1), 42),
            None,
            "touched"
        );
        assert_eq!(known.get("base/5/16384", 8192, when, 43), None, "replaced");
        assert_eq!(known.get("base/5/16385", 8192, when, 42), None, "another");
    }

    #[test]
    fn an_absent_or_foreign_file_gives_no_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let absent = Known::load(&dir.path().join("absent.crc"));
        assert_eq!(absent.get("base/5/1", 0, UNIX_EPOCH, 0), None);
        let foreign = dir.path().join("foreign.crc");
        std::fs::write(&foreign, "deadbeef 0 0 0 base/5/1\n").unwrap();
        assert_eq!(
            Known::load(&foreign).get("base/5/1", 0, UNIX_EPOCH, 0),
            None
        );
    }
}
