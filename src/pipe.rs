//! The pipes between the plugin and its client tools, and the threads that
//! move bytes through them.
//!
//! pg_dump writes its output 4 KiB at a time. Read as soon as it arrives
//! (which is what a reader registered with the runtime's epoll does: every
//! write is a new edge), each of those writes costs the plugin a wake-up,
//! a system call and a trip through the scheduler, which on a small machine
//! is most of what the plugin costs. Instead, a tool's output is read in a
//! thread of its own with blocking reads: after a read that did not fill a
//! chunk, the thread sleeps for [`GATHER`] while the tool's writes gather in
//! the pipe (grown to [`PIPE_SIZE`] so that they fit), then takes them in
//! one read. Nothing waits on the pipe while the thread sleeps, so the
//! tool's writes wake nobody.
//!
//! The other way round, pg_restore reads its input 4 KiB at a time, and a
//! writer waiting for room in the pipe would be woken by each of those reads.
//! Chunks for a tool are written by a thread of their own ([`ChunkWriter`])
//! into a non-blocking pipe: when the pipe is full the thread waits until
//! there is some room, then sleeps for [`GATHER`] while more room gathers,
//! and fills it in one write.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How large the plugin asks its pipes to be: one 1 MiB chunk fits whole.
pub const PIPE_SIZE: usize = 1 << 20;

/// How long a tool's output is left to gather in its pipe after a read that
/// did not fill a chunk. At pg_dump's pace (150-300 MiB/s on one core) a
/// millisecond is 150-300 KiB, well within [`PIPE_SIZE`].
pub const GATHER: Duration = Duration::from_millis(1);

/// Grows the pipe behind `fd` to [`PIPE_SIZE`] bytes, or as close as the system
/// allows (`/proc/sys/fs/pipe-max-size`, the user's pipe quota); anything but
/// a pipe is left alone.
pub fn grow_pipe(fd: RawFd) {
    let mut size = PIPE_SIZE;
    while size >= 64 * 1024 {
        // SAFETY: F_SETPIPE_SZ on a descriptor the caller owns; a non-pipe fails with EBADF.
        let got = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size as libc::c_int) };
        if got >= 0 {
            return;
        }
        match io::Error::last_os_error().raw_os_error() {
            // Over the system's or the user's limit: try half.
            Some(libc::EPERM) | Some(libc::ENOMEM) => size /= 2,
            _ => return,
        }
    }
}

/// A new pipe for a tool's output: the end the plugin reads (blocking, never
/// registered with the runtime), and the end the tool gets as its stdout.
pub fn output_pipe() -> io::Result<(File, OwnedFd)> {
    let (reader, writer) = io::pipe()?;
    grow_pipe(reader.as_raw_fd());
    Ok((File::from(OwnedFd::from(reader)), OwnedFd::from(writer)))
}

/// A new pipe for a tool's input: the end the plugin writes (non-blocking, for
/// a [`PipeSink`]), and the end the tool gets as its stdin.
pub fn input_pipe() -> io::Result<(File, OwnedFd)> {
    let (reader, writer) = io::pipe()?;
    grow_pipe(writer.as_raw_fd());
    let writer = File::from(OwnedFd::from(writer));
    set_nonblocking(&writer)?;
    Ok((writer, OwnedFd::from(reader)))
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: plain flag calls on a descriptor we own; results are checked.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads `input` to its end in chunks of `chunk_size` bytes (the last one
/// shorter), handing each to `send`, which returns false to stop early.
/// Runs in a thread of its own: reads block. Returns the bytes read, and
/// whether `send` refused a chunk.
pub fn read_chunks(
    mut input: File,
    chunk_size: usize,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> io::Result<(u64, bool)> {
    let mut total = 0u64;
    let mut chunk: Vec<u8> = Vec::with_capacity(chunk_size);
    loop {
        let n = read_into_spare(&mut input, &mut chunk)?;
        total += n as u64;
        if n == 0 || chunk.len() == chunk_size {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_size));
            if !full.is_empty() && !send(full) {
                return Ok((total, true));
            }
            if n == 0 {
                return Ok((total, false));
            }
        } else {
            std::thread::sleep(GATHER);
        }
    }
}

/// One `read` into the unused capacity of `buf`, retried on EINTR.
fn read_into_spare(input: &mut File, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    if spare.is_empty() {
        return Ok(0);
    }
    loop {
        // SAFETY: the kernel writes at most `spare.len()` bytes into memory
        // that `buf` owns and does not otherwise use; exactly the `n` bytes it
        // reports are then marked as initialised.
        let n = unsafe { libc::read(input.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n >= 0 {
            let n = n as usize;
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Where a [`ChunkWriter`]'s thread puts the chunks.
pub trait ChunkSink: Send + 'static {
    /// What the sink hands back at the end.
    type Done: Send + 'static;
    /// Writes one chunk whole.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Completes the writing (the file is closed when the sink is dropped).
    fn finish(self) -> io::Result<Self::Done>;
}

/// The write end of a tool's input pipe ([`input_pipe`]), written as
/// described in the module's documentation.
#[derive(Debug)]
pub struct PipeSink(pub File);

impl ChunkSink for PipeSink {
    type Done = ();

    fn write(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            match self.0.write(chunk) {
                Ok(n) => chunk = &chunk[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_for_room(&self.0)?;
                    std::thread::sleep(GATHER);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits until the pipe has room for a write (or its reader is gone).
fn wait_for_room(pipe: &File) -> io::Result<()> {
    let mut fd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, waited for without a time limit.
        if unsafe { libc::poll(&mut fd, 1, -1) } >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Chunks written by a thread of their own into a [`ChunkSink`], a couple of
/// chunks ahead of the caller at most.
#[derive(Debug)]
pub struct ChunkWriter<D> {
    tx: mpsc::Sender<Bytes>,
    thread: JoinHandle<io::Result<D>>,
}

impl<D: Send + 'static> ChunkWriter<D> {
    /// Starts the thread.
    pub fn start<S: ChunkSink<Done = D>>(mut sink: S) -> ChunkWriter<D> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(2);
        let thread = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                sink.write(&chunk)?;
            }
            sink.finish()
        });
        ChunkWriter { tx, thread }
    }

    /// Hands a chunk over; false once the sink has failed (see [`Self::finish`]
    /// for why).
    pub async fn write(&mut self, chunk: Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Waits until every chunk is written and the sink finished.
    pub async fn finish(self) -> io::Result<D> {
        drop(self.tx);
        self.thread.await.map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn chunks_are_full_but_the_last_and_nothing_is_lost() {
        let (reader, writer) = output_pipe().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(writer);
            // Small writes, as pg_dump makes them.
            for piece in data.chunks(4096) {
                w.write_all(piece).unwrap();
            }
        });
        let mut chunks = Vec::new();
        let (total, stopped) = read_chunks(reader, 65536, |c| {
            chunks.push(c);
            true
        })
        .unwrap();
        writer.join().unwrap();
        assert!(!stopped);
        assert_eq!(total, 300_000);
        let (last, full) = chunks.split_last().unwrap();
        assert!(full.iter().all(|c| c.len() == 65536));
        assert_eq!(last.len(), 300_000 % 65536);
        assert_eq!(chunks.concat(), expected);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_writer_fills_the_pipe_as_its_reader_drains_it() {
        let (writer, reader) = input_pipe().unwrap();
        // A slow reader, 4 KiB at a time, as pg_restore reads.
        let reader = std::thread::spawn(move || {
            let mut r = File::from(reader);
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = std::io::Read::read(&mut r, &mut buf).unwrap();
                if n == 0 {
                    return all;
                }
                all.extend_from_slice(&buf[..n]);
            }
        });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = ChunkWriter::start(PipeSink(writer));
        for chunk in data.chunks(1 << 20) {
            assert!(w.write(Bytes::copy_from_slice(chunk)).await);
        }
        w.finish().await.unwrap();
        assert_eq!(reader.join().unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_reader_that_goes_away_fails_the_writer() {
        let (writer, reader) = input_pipe().unwrap();
        drop(reader);
        let mut w = ChunkWriter::start(PipeSink(writer));
        let mut accepted = 0;
        while w.write(Bytes::from(vec![1u8; 1 << 20])).await {
            accepted += 1;
            assert!(accepted < 10, "the writer never noticed");
        }
        let err = w.finish().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_refused_chunk_stops_the_reading() {
        let (reader, writer) = output_pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(writer);
            let _ = w.write_all(&[7u8; 200_000]);
        });
        let mut seen = 0;
        let (_, stopped) = read_chunks(reader, 65536, |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert!(stopped);
        assert_eq!(seen, 1);
        writer.join().unwrap();
    }
}
