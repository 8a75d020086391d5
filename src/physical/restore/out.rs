//! A restored file being written: on the blocking pool, one chunk at a time
//! and one chunk behind the stream, so that the next chunk arrives while the
//! one before it is written, with one hand-off to the pool per chunk; each
//! chunk in writes of at most [`WRITE_SIZE`] bytes. The CRC-32C of what is
//! written is computed on the way, so that the restore checks each file
//! against `backup_manifest` without reading it back.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;

use prost::bytes::Bytes;
use tokio::task::JoinHandle;

/// The largest write a restored file gets: 64 KiB.
///
/// The page cache keeps a file in pieces as large as the writes that made
/// it (large folios), and the server that then works on the file eight
/// kilobytes at a time pays for it: on ext4 with Linux 6.18, a cluster
/// restored with Plakar's 1 MiB chunks written whole replayed its WAL with
/// twice the system time of the same files written 64 KiB at a time (what
/// `cp` and Plakar's own filesystem restore do), until the pages leave the
/// cache.
pub const WRITE_SIZE: usize = 64 * 1024;

/// A file being written.
pub struct FileOut {
    state: State,
    /// CRC-32C of the chunks written so far, once the last write settled.
    crc: u32,
    /// Bytes handed over so far: where the next chunk goes.
    written: u64,
    /// Start each chunk's way to disk as soon as it is written (the restore
    /// flushes at its end: this spreads the disk's work over the restore).
    write_back: bool,
}

enum State {
    Idle(File),
    Writing(JoinHandle<(File, io::Result<u32>)>),
    /// A write failed, and its error was given.
    Failed,
}

impl FileOut {
    pub fn new(file: File, write_back: bool) -> FileOut {
        FileOut {
            state: State::Idle(file),
            crc: 0,
            written: 0,
            write_back,
        }
    }

    /// Hands `chunk` over to be written after what came before it; the
    /// error of an earlier chunk's write, if it failed.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        let file = self.settle().await?;
        let (at, write_back, crc) = (self.written, self.write_back, self.crc);
        self.written += chunk.len() as u64;
        self.state = State::Writing(tokio::task::spawn_blocking(move || {
            let written = write_chunk(&file, &chunk, at, write_back)
                .map(|()| crc32c::crc32c_append(crc, &chunk));
            (file, written)
        }));
        Ok(())
    }

    /// Waits until everything handed over is written; the file, for its
    /// mode and modification time, and what was written.
    pub async fn finish(mut self) -> io::Result<(File, Written)> {
        let file = self.settle().await?;
        Ok((
            file,
            Written {
                size: self.written,
                crc: self.crc,
            },
        ))
    }

    async fn settle(&mut self) -> io::Result<File> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Idle(file) => Ok(file),
            State::Writing(writing) => match writing.await {
                Ok((file, Ok(crc))) => {
                    self.crc = crc;
                    Ok(file)
                }
                Ok((_, Err(e))) => Err(e),
                Err(e) => Err(io::Error::other(e)),
            },
            State::Failed => Err(io::Error::other("an earlier write of this file failed")),
        }
    }
}

/// What a file received: its size and the CRC-32C of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub crc: u32,
}

fn write_chunk(mut file: &File, chunk: &[u8], at: u64, write_back: bool) -> io::Result<()> {
    for piece in chunk.chunks(WRITE_SIZE) {
        file.write_all(piece)?;
    }
    if write_back {
        start_write_back(file, at, chunk.len() as u64);
    }
    Ok(())
}

/// Starts writing `len` bytes of `file` from `at` to disk, without waiting.
/// A hint only: the flush at the restore's end is what makes it durable, so
/// a failure here changes nothing.
pub fn start_write_back(file: &File, at: u64, len: u64) {
    if len == 0 {
        return;
    }
    // SAFETY: the descriptor is open for the duration of the call.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            at as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_land_in_order_and_a_failed_write_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut out = FileOut::new(File::create(&path).unwrap(), true);
        let big = vec![7u8; 3 * WRITE_SIZE + 5];
        out.write(Bytes::from(big.clone())).await.unwrap();
        out.write(Bytes::from_static(b"end")).await.unwrap();
        let (_, written) = out.finish().await.unwrap();
        let mut want = big;
        want.extend_from_slice(b"end");
        assert_eq!(
            written,
            Written {
                size: want.len() as u64,
                crc: crc32c::crc32c(&want)
            }
        );
        assert_eq!(std::fs::read(&path).unwrap(), want);

        let read_only = File::open(&path).unwrap();
        let mut out = FileOut::new(read_only, false);
        out.write(Bytes::from_static(b"x")).await.unwrap();
        assert!(out.finish().await.is_err());
    }
}
