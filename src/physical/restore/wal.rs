//! The WAL a snapshot carries, put back into the restored data directory's
//! `pg_wal/plakar/`, from which the recovery settings' `restore_command`
//! copies each file PostgreSQL asks for: every piece's bytes are written at
//! their place in the segment files of its timeline, the history files as
//! they are; the segment still being written when the run stopped is padded
//! with zeros to a whole segment, as PostgreSQL's own files are. Unless
//! `sync=false`, each write is started on its way to disk at once, as the
//! data directory's files are.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::physical::chain::Piece;
use crate::physical::wal::segment::Segment;
use crate::postgres::replication::Lsn;

pub use crate::physical::recovery::ARCHIVE_DIR;

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
    /// Every segment file written.
    written: BTreeSet<String>,
    /// Start each write's way to disk at once, as the data directory's
    /// files do (see [`super::out::FileOut`]): the restore's WAL is most of
    /// what its final flush would otherwise wait for.
    write_back: bool,
}

impl WalFiles {
    pub fn new(data: &Path, segment_size: u64, write_back: bool) -> WalFiles {
        WalFiles {
            dir: data.join(ARCHIVE_DIR),
            size: segment_size,
            current: None,
            written: BTreeSet::new(),
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
                if self.written.insert(name.clone()) {
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

    /// Pads every segment file to a whole segment, as PostgreSQL's files are.
    pub fn finish(&mut self) -> Result<(), PieceError> {
        self.current = None;
        for name in &self.written {
            let path = self.dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    if f.metadata()?.len() < self.size {
                        f.set_len(self.size)?;
                    }
                    Ok(())
                })
                .map_err(|source| PieceError::Write { path, source })?;
        }
        Ok(())
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
        std::fs::create_dir_all(data.path().join(ARCHIVE_DIR)).unwrap();
        let mut files = WalFiles::new(data.path(), SIZE, true);
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
    }

    #[test]
    fn a_piece_cut_short_or_too_long_is_refused() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join(ARCHIVE_DIR)).unwrap();
        let mut files = WalFiles::new(data.path(), SIZE, true);
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
}
