//! The WAL a snapshot carries, put back into the restored data directory's
//! `pg_wal/`, where the recovery reads it as it reads its own (the way
//! PostgreSQL's manual has a DBA put unarchived WAL back), with no copy of
//! any segment: every piece's bytes are written at their place in the
//! segment files of its timeline, over the same bytes of the base backup's
//! own segments; past the last piece of a segment it is zeros to a whole
//! segment, as PostgreSQL's own files are, so that nothing the snapshot does
//! not hold is replayed. Each segment and history file is marked archived
//! (`archive_status/NAME.done`), as pg_basebackup marks the WAL it streams,
//! so that a restored server with `archive_mode` on does not archive again
//! what its source archived. Unless `sync=false`, each write is started on
//! its way to disk at once, as the data directory's files are. The base
//! backup's own last segment, which its copy may hold without the zeros
//! that end it, is filled out to a whole segment ([`fill_out`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::physical::chain::Piece;
use crate::physical::wal::segment::{declared_size_of, is_segment_name, Segment};
use crate::postgres::replication::Lsn;

/// The directory of the restored WAL, under the data directory: PostgreSQL's
/// own, where the recovery reads each segment in place, with no copy, and
/// removes or recycles it once replayed.
pub const WAL_DIR: &str = "pg_wal";

/// Whether `local`, a path of the data directory, is a WAL segment of the
/// base backup (`/pg_wal/` and a segment's name).
pub fn is_base_segment(local: &str) -> bool {
    local.strip_prefix("/pg_wal/").is_some_and(is_segment_name)
}

/// Gives a segment of the base backup back the zeros its copy left out
/// (the direct copy stores the segment it stopped in without them): a file
/// at `path` shorter than the segment size its first page declares is
/// filled out to it with zeros through `written`, as PostgreSQL had it.
pub fn fill_out(path: &Path, written: &File) -> std::io::Result<()> {
    // `written` is open for writing only.
    let Some(size) = declared_size_of(&File::open(path)?)? else {
        return Ok(());
    };
    if written.metadata()?.len() < size {
        written.set_len(size)?;
    }
    Ok(())
}

/// Where PostgreSQL keeps its archive status files, under `pg_wal/`.
const STATUS_DIR: &str = "archive_status";

/// Why a piece of WAL cannot be put back.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("holds more than the {expected} bytes /.chain.json gives it")]
    TooLong { expected: u64 },
    #[error("holds {held} bytes where /.chain.json gives it {expected} (WAL from {from} to {to} on timeline {timeline}): the snapshot is damaged")]
    Short {
        held: u64,
        expected: u64,
        from: String,
        to: String,
        timeline: u32,
    },
}

/// A piece being written.
#[derive(Debug)]
pub struct PieceOpen {
    piece: Piece,
    at: Lsn,
}

/// The segment files of the restored WAL.
#[derive(Debug)]
pub struct WalFiles {
    dir: PathBuf,
    size: u64,
    /// The file written last, kept open.
    current: Option<(String, File)>,
    /// Every segment file written, with the end of the bytes written
    /// furthest into it.
    written: BTreeMap<String, u64>,
    /// The history files written.
    histories: Vec<String>,
    /// The base backup's timeline and the start of the segment its WAL
    /// starts in: a recovery from it reads nothing before, and a piece of an
    /// earlier base's WAL that reaches into it is written from there only,
    /// so that every segment file is whole from its first byte (pg_waldump,
    /// under pg_verifybackup, reads the segment size from any file's head).
    timeline: u32,
    from: Lsn,
    /// Start each write's way to disk at once, as the data directory's
    /// files do (see [`super::out::FileOut`]): the restore's WAL is most of
    /// what its final flush would otherwise wait for.
    write_back: bool,
}

impl WalFiles {
    pub fn new(
        data: &Path,
        segment_size: u64,
        write_back: bool,
        (timeline, start): (u32, Lsn),
    ) -> WalFiles {
        WalFiles {
            dir: data.join(WAL_DIR),
            size: segment_size,
            current: None,
            written: BTreeMap::new(),
            histories: Vec::new(),
            timeline,
            from: Segment::holding(timeline, start, segment_size).start(segment_size),
            write_back,
        }
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts writing `piece`.
    pub fn open(&mut self, piece: Piece) -> PieceOpen {
        PieceOpen {
            at: piece.from_lsn(),
            piece,
        }
    }

    /// Writes the next bytes of a piece; the files made, for their owner.
    pub fn write(
        &mut self,
        open: &mut PieceOpen,
        mut bytes: &[u8],
    ) -> Result<Vec<PathBuf>, PieceError> {
        let mut made = Vec::new();
        let to = open.piece.to_lsn();
        while !bytes.is_empty() {
            if open.at >= to {
                return Err(PieceError::TooLong {
                    expected: open.piece.len(),
                });
            }
            // What this base's recovery never reads is counted, not written.
            let unread = if open.piece.timeline < self.timeline {
                to
            } else {
                self.from.min(to)
            };
            if open.at < unread {
                let skip = ((unread.0 - open.at.0) as usize).min(bytes.len());
                bytes = &bytes[skip..];
                open.at = Lsn(open.at.0 + skip as u64);
                continue;
            }
            let segment = Segment::holding(open.piece.timeline, open.at, self.size);
            let name = segment.file_name(self.size);
            let offset = open.at.0 - segment.start(self.size).0;
            let room = (segment.end(self.size).0.min(to.0) - open.at.0) as usize;
            let take = room.min(bytes.len());
            if self.current.as_ref().map(|(n, _)| n) != Some(&name) {
                let path = self.dir.join(&name);
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|source| PieceError::Write {
                        path: path.clone(),
                        source,
                    })?;
                if !self.written.contains_key(&name) {
                    self.written.insert(name.clone(), 0);
                    made.push(path);
                }
                self.current = Some((name.clone(), file));
            }
            let (_, file) = self.current.as_ref().expect("just opened");
            file.write_all_at(&bytes[..take], offset)
                .map_err(|source| PieceError::Write {
                    path: self.dir.join(&name),
                    source,
                })?;
            if self.write_back {
                super::out::start_write_back(file, offset, take as u64);
            }
            let end = self.written.get_mut(&name).expect("noted when opened");
            *end = (*end).max(offset + take as u64);
            bytes = &bytes[take..];
            open.at = Lsn(open.at.0 + take as u64);
        }
        Ok(made)
    }

    /// The end of a piece: whether it held all its bytes.
    pub fn end(&mut self, open: PieceOpen) -> Result<(), PieceError> {
        let held = open.at.0 - open.piece.from_lsn().0;
        if held != open.piece.len() {
            return Err(PieceError::Short {
                held,
                expected: open.piece.len(),
                from: open.piece.from,
                to: open.piece.to,
                timeline: open.piece.timeline,
            });
        }
        Ok(())
    }

    /// Notes a history file written into `pg_wal/`, to be marked archived.
    pub fn history(&mut self, name: &str) {
        self.histories.push(name.to_string());
    }

    /// Makes every segment file whole, zeros past its last piece's end (a
    /// base backup's own copy of the segment may hold WAL written after
    /// the snapshot's end, or a recycled segment's old bytes), and marks
    /// every file archived; the files it made, for their owner.
    pub fn finish(&mut self) -> Result<Vec<PathBuf>, PieceError> {
        self.current = None;
        let write = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PieceError::Write { path, source }
        };
        for (name, end) in &self.written {
            let path = self.dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    if *end < self.size {
                        f.set_len(*end)?;
                    }
                    f.set_len(self.size)
                })
                .map_err(write(&path))?;
        }
        let status = self.dir.join(STATUS_DIR);
        let mut made = Vec::new();
        if !status.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&status)
                .map_err(write(&status))?;
            made.push(status.clone());
        }
        for name in self.written.keys().chain(&self.histories) {
            let done = status.join(format!("{name}.done"));
            if !done.exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&done)
                    .map_err(write(&done))?;
                made.push(done);
            }
        }
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 1024 * 1024;

    fn piece(timeline: u32, from: u64, to: u64) -> Piece {
        Piece {
            timeline,
            from: Lsn(from).to_string(),
            to: Lsn(to).to_string(),
        }
    }

    #[test]
    fn pieces_land_at_their_place_in_whole_segments() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join(WAL_DIR)).unwrap();
        let mut files = WalFiles::new(data.path(), SIZE, true, (1, Lsn(0)));
        // One piece across a segment boundary, then the next run's.
        let first = piece(1, SIZE + 10, 2 * SIZE + 5);
        let mut open = files.open(first.clone());
        let bytes: Vec<u8> = (0..first.len()).map(|i| (i % 251) as u8 + 1).collect();
        files.write(&mut open, &bytes[..100]).unwrap();
        files.write(&mut open, &bytes[100..]).unwrap();
        files.end(open).unwrap();
        let second = piece(1, 2 * SIZE + 5, 2 * SIZE + 9);
        let mut open = files.open(second);
        files.write(&mut open, b"wxyz").unwrap();
        files.end(open).unwrap();
        files.finish().unwrap();
        let one = std::fs::read(files.dir().join("000000010000000000000001")).unwrap();
        let two = std::fs::read(files.dir().join("000000010000000000000002")).unwrap();
        assert_eq!((one.len() as u64, two.len() as u64), (SIZE, SIZE));
        assert_eq!(&one[10..110], &bytes[..100]);
        assert_eq!(&two[..5], &bytes[bytes.len() - 5..]);
        assert_eq!(&two[5..9], b"wxyz");
        assert!(two[9..].iter().all(|b| *b == 0));
        let status = files.dir().join("archive_status");
        for name in ["000000010000000000000001", "000000010000000000000002"] {
            assert!(status.join(format!("{name}.done")).is_file(), "{name}");
        }
    }

    #[test]
    fn the_base_backups_own_segment_keeps_what_comes_before_and_loses_what_comes_after() {
        let data = tempfile::tempdir().unwrap();
        let wal = data.path().join(WAL_DIR);
        std::fs::create_dir_all(&wal).unwrap();
        // The base's copy: WAL before the chain's start, and bytes after its end
        // (written on the server after the run stopped, or a recycled segment's).
        let name = "000000020000000000000001";
        std::fs::write(wal.join(name), vec![7u8; SIZE as usize]).unwrap();
        let mut files = WalFiles::new(data.path(), SIZE, false, (2, Lsn(SIZE + 100)));
        let mut open = files.open(piece(2, SIZE + 100, SIZE + 200));
        files.write(&mut open, &[1; 100]).unwrap();
        files.end(open).unwrap();
        files.history("00000002.history");
        let made = files.finish().unwrap();
        let segment = std::fs::read(wal.join(name)).unwrap();
        assert_eq!(segment.len() as u64, SIZE);
        assert!(segment[..100].iter().all(|b| *b == 7));
        assert!(segment[100..200].iter().all(|b| *b == 1));
        assert!(segment[200..].iter().all(|b| *b == 0));
        let status = wal.join("archive_status");
        assert_eq!(
            made,
            vec![
                status.clone(),
                status.join(format!("{name}.done")),
                status.join("00000002.history.done"),
            ]
        );
    }

    #[test]
    fn wal_before_the_base_backups_first_segment_is_not_written() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join(WAL_DIR)).unwrap();
        // The base starts in segment 3 of timeline 2; a busy run's piece
        // began in segment 2, and timeline 1 ended before.
        let mut files = WalFiles::new(data.path(), SIZE, false, (2, Lsn(3 * SIZE + 40)));
        let old = piece(1, SIZE, 2 * SIZE);
        let mut open = files.open(old.clone());
        files
            .write(&mut open, &vec![1; old.len() as usize])
            .unwrap();
        files.end(open).unwrap();
        let straddling = piece(2, 2 * SIZE + 10, 3 * SIZE + 20);
        let mut open = files.open(straddling.clone());
        let bytes = vec![2; straddling.len() as usize];
        files.write(&mut open, &bytes[..100]).unwrap();
        files.write(&mut open, &bytes[100..]).unwrap();
        files.end(open).unwrap();
        files.finish().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(files.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["000000020000000000000003", "archive_status"]);
        let three = std::fs::read(files.dir().join("000000020000000000000003")).unwrap();
        assert!(three[..20].iter().all(|b| *b == 2));
        assert!(three[20..].iter().all(|b| *b == 0));
        // Cut short is still cut short, written or not.
        let mut open = files.open(piece(1, 0, 8192));
        files.write(&mut open, &[1; 100]).unwrap();
        assert!(files.end(open).is_err());
    }

    #[test]
    fn a_piece_cut_short_or_too_long_is_refused() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join(WAL_DIR)).unwrap();
        let mut files = WalFiles::new(data.path(), SIZE, true, (1, Lsn(0)));
        let mut open = files.open(piece(1, 0, 8192));
        files.write(&mut open, &[1; 100]).unwrap();
        let err = files.end(open).unwrap_err().to_string();
        assert!(
            err.contains("holds 100 bytes where /.chain.json gives it 8192"),
            "{err}"
        );
        let mut open = files.open(piece(1, 0, 10));
        assert!(files.write(&mut open, &[1; 11]).is_err());
    }

    #[test]
    fn the_base_backups_last_segment_gets_its_zeros_back() {
        use crate::physical::wal::segment::first_page;
        let data = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = data.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            fill_out(&path, &file).unwrap();
            std::fs::read(&path).unwrap()
        };
        let mut head = first_page(16 << 20);
        head.extend_from_slice(&[7; 100]);
        let filled = write("000000010000000000000003", &head);
        assert_eq!(filled.len(), 16 << 20);
        assert_eq!(filled[..head.len()], head[..]);
        assert!(filled[head.len()..].iter().all(|b| *b == 0));
        // A file that declares no segment size, or holds more, is left as it is.
        assert_eq!(write("000000010000000000000004", &[7; 100]).len(), 100);
        let mut longer = first_page(1 << 20);
        longer.resize(2 << 20, 7);
        assert_eq!(write("000000010000000000000005", &longer).len(), 2 << 20);
        assert!(is_base_segment("/pg_wal/000000010000000000000003"));
        for not in [
            "/pg_wal/00000002.history",
            "/pg_wal/archive_status/000000010000000000000003.done",
            "/base/000000010000000000000003",
            "/pg_wal/000000010000000000000003.partial",
        ] {
            assert!(!is_base_segment(not), "{not}");
        }
    }
}
