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

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

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
