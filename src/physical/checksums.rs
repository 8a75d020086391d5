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

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Lines, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The first line of the file: what it is, and its format's version. The
/// lines after it are in the byte order of their paths.
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
/// in the data directory (`base/5/16384`), read while this copy's files are
/// listed in the same order: one line is held at a time, however many files.
#[derive(Default)]
pub struct Known {
    lines: Option<Lines<BufReader<File>>>,
    /// The first line not yet passed.
    ahead: Option<(String, Seen)>,
}

impl Known {
    /// Opens `path`; an absent, unreadable or foreign file gives none (the
    /// carried files are then listed without checksum), and says why.
    pub fn open(path: &Path) -> Known {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Known::default(),
            Err(e) => {
                tracing::warn!(
                    "cannot read the checksums of the previous direct copy ({}): {e}; files Plakar carries unread are listed in backup_manifest without checksum",
                    path.display()
                );
                return Known::default();
            }
        };
        let mut lines = BufReader::new(file).lines();
        if !matches!(lines.next(), Some(Ok(ref first)) if first == HEADER) {
            tracing::warn!(
                "{} is not a checksum file of this plugin; files Plakar carries unread are listed in backup_manifest without checksum",
                path.display()
            );
            return Known::default();
        }
        Known {
            lines: Some(lines),
            ahead: None,
        }
    }

    /// The checksum of `relative`, if it was computed on the file as it is.
    /// Paths are asked in their byte order, as the file keeps them: a path
    /// asked out of that order finds none (never a wrong one).
    pub fn get(
        &mut self,
        relative: &str,
        size: u64,
        modified: SystemTime,
        ino: u64,
    ) -> Option<u32> {
        loop {
            match &self.ahead {
                None => self.ahead = Some(self.next_line()?),
                Some((path, seen)) => match path.as_str().cmp(relative) {
                    std::cmp::Ordering::Less => self.ahead = None,
                    std::cmp::Ordering::Equal => {
                        return (seen.size == size
                            && seen.modified == nanos(modified)
                            && seen.ino == ino)
                            .then_some(seen.crc)
                    }
                    std::cmp::Ordering::Greater => return None,
                },
            }
        }
    }

    /// The next line that reads; none at the end or on a read error.
    fn next_line(&mut self) -> Option<(String, Seen)> {
        let lines = self.lines.as_mut()?;
        for line in lines.by_ref() {
            match line {
                Ok(line) => {
                    if let Some(parsed) = parse_line(&line) {
                        return Some(parsed);
                    }
                }
                Err(_) => break,
            }
        }
        self.lines = None;
        None
    }
}

/// This copy's checksums, written as its files are listed (in the byte
/// order of their paths) into a new file of a name of its own, which takes
/// the old one's place once complete: a crash leaves the old or the new, and
/// two copies of one cluster at once never write into the same file.
pub struct Keeper {
    out: BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl Keeper {
    /// Starts the new file beside `path`.
    pub fn create(path: &Path) -> std::io::Result<Keeper> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir)?;
        let mut prefix = path.file_name().unwrap_or_default().to_os_string();
        prefix.push(".");
        let fresh = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".new")
            .tempfile_in(dir)?;
        let mut keeper = Keeper {
            out: BufWriter::new(fresh),
            path: path.to_path_buf(),
        };
        writeln!(keeper.out, "{HEADER}")?;
        Ok(keeper)
    }

    /// Keeps the checksum of `relative`, which sorts after the paths kept
    /// before it.
    pub fn keep(&mut self, relative: &str, s: Seen) -> std::io::Result<()> {
        writeln!(
            self.out,
            "{:08x} {} {} {} {relative}",
            s.crc, s.size, s.modified, s.ino
        )
    }

    /// Puts the new file in place of the old one. Dropped unfinished, the
    /// new file is removed.
    pub fn finish(self) -> std::io::Result<()> {
        let fresh = self.out.into_inner().map_err(|e| e.into_error())?;
        fresh.as_file().sync_all()?;
        fresh.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
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

    fn kept(path: &Path, files: &[(&str, Seen)]) {
        let mut keeper = Keeper::create(path).unwrap();
        for (relative, seen) in files {
            keeper.keep(relative, *seen).unwrap();
        }
        keeper.finish().unwrap();
    }

    #[test]
    fn a_checksum_is_given_back_only_for_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/direct-1.crc");
        let when = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let seen = Seen::new(8192, when, 42, 0xdead_beef);
        kept(
            &path,
            &[
                ("base/5/16384", seen),
                ("base/5/16390", seen),
                ("pg_tblspc/1/PG 15/x", seen),
            ],
        );
        let mut known = Known::open(&path);
        assert_eq!(known.get("base/5/16384", 16384, when, 42), None, "grown");
        assert_eq!(
            known.get("base/5/16384", 8192, when + Duration::from_nanos(1), 42),
            None,
            "touched"
        );
        assert_eq!(known.get("base/5/16384", 8192, when, 43), None, "replaced");
        assert_eq!(known.get("base/5/16384", 8192, when, 42), Some(0xdead_beef));
        assert_eq!(known.get("base/5/16385", 8192, when, 42), None, "another");
        assert_eq!(
            known.get("pg_tblspc/1/PG 15/x", 8192, when, 42),
            Some(0xdead_beef)
        );
        // Asked out of order: none, never another file's.
        assert_eq!(known.get("base/5/16390", 8192, when, 42), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("state")).unwrap().count(),
            1
        );
    }

    #[test]
    fn an_absent_or_foreign_file_gives_no_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut absent = Known::open(&dir.path().join("absent.crc"));
        assert_eq!(absent.get("base/5/1", 0, UNIX_EPOCH, 0), None);
        let foreign = dir.path().join("foreign.crc");
        std::fs::write(&foreign, "deadbeef 0 0 0 base/5/1\n").unwrap();
        assert_eq!(
            Known::open(&foreign).get("base/5/1", 0, UNIX_EPOCH, 0),
            None
        );
    }

    #[test]
    fn an_unfinished_file_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("direct-1.crc");
        let seen = Seen::new(1, UNIX_EPOCH, 1, 7);
        kept(&path, &[("base/5/1", seen)]);
        let mut keeper = Keeper::create(&path).unwrap();
        keeper.keep("base/5/2", seen).unwrap();
        drop(keeper);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the old file"
        );
        assert_eq!(
            Known::open(&path).get("base/5/1", 1, UNIX_EPOCH, 1),
            Some(7)
        );
    }
}
