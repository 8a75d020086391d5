//! One gRPC connection over the process's stdin and stdout, as Plakar runs plugins.
//!
//! At start-up the two descriptors are moved out of the way: fd 0 becomes
//! /dev/null and fd 1 a copy of stderr, so that no stray print and no child
//! process can ever write a byte into the gRPC stream or read from it.
//!
//! Both pipes are grown to [`PIPE_SIZE`] when the system allows it, and
//! HTTP/2 frames are written with one vectored write each (frame header and
//! payload together), so that a 1 MiB message costs a few system calls and
//! wake-ups on each side instead of hundreds.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{self, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tonic::transport::server::{Connected, Router};

use crate::pipe::{grow_pipe, PIPE_SIZE};

/// The gRPC connection: reads from the original stdin, writes to the original stdout.
pub struct StdioConn {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    eof: Option<oneshot::Sender<()>>,
}

impl StdioConn {
    /// Takes over fds 0 and 1; `eof` fires when Plakar closes the plugin's stdin.
    pub fn take_over(eof: oneshot::Sender<()>) -> io::Result<StdioConn> {
        let input = move_aside(0, "/dev/null")?;
        let output = move_aside(1, "/dev/stderr")?;
        grow_pipe(input.as_raw_fd());
        grow_pipe(output.as_raw_fd());
        Ok(StdioConn {
            reader: reader(input)?,
            writer: writer(output)?,
            eof: Some(eof),
        })
    }
}

/// Duplicates `fd` to a close-on-exec descriptor, then points `fd` at `replacement`.
fn move_aside(fd: RawFd, replacement: &str) -> io::Result<OwnedFd> {
    // SAFETY: plain descriptor calls; every result is checked before use.
    unsafe {
        let copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(copy);
        let target = if replacement == "/dev/stderr" {
            libc::dup(2)
        } else {
            let path = std::ffi::CString::new(replacement).expect("no NUL in path");
            libc::open(path.as_ptr(), libc::O_RDWR)
        };
        if target < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::dup2(target, fd) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(target);
        Ok(owned)
    }
}

fn reader(fd: OwnedFd) -> io::Result<Pin<Box<dyn AsyncRead + Send>>> {
    let file = std::fs::File::from(fd);
    let clone = file.try_clone()?;
    // A pipe can be polled by the reactor; anything else goes through blocking reads.
    // The HTTP/2 codec reads 8 KiB at a time: a buffer of the pipe's size
    // takes what Plakar has written in one read instead.
    match pipe::Receiver::from_file(file) {
        Ok(rx) => Ok(Box::pin(BufReader::with_capacity(PIPE_SIZE, rx))),
        Err(_) => Ok(Box::pin(tokio::fs::File::from_std(clone))),
    }
}

fn writer(fd: OwnedFd) -> io::Result<Pin<Box<dyn AsyncWrite + Send>>> {
    let file = std::fs::File::from(fd);
    let clone = file.try_clone()?;
    match pipe::Sender::from_file(file) {
        Ok(tx) => Ok(Box::pin(tx)),
        Err(_) => Ok(Box::pin(tokio::fs::File::from_std(clone))),
    }
}

impl AsyncRead for StdioConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = self.reader.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            if buf.filled().len() == before && buf.remaining() > 0 {
                if let Some(eof) = self.eof.take() {
                    let _ = eof.send(());
                }
            }
        }
        res
    }
}

impl AsyncWrite for StdioConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.writer.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

impl Connected for StdioConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Serves the router over stdin/stdout until Plakar closes stdin.
pub async fn serve(router: Router) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (eof_tx, eof_rx) = oneshot::channel();
    let conn = StdioConn::take_over(eof_tx)?;
    // The one connection, then nothing: an ended stream would shut the server down at once.
    let incoming = stream::once(async move { Ok::<_, io::Error>(conn) }).chain(stream::pending());
    router
        .serve_with_incoming_shutdown(incoming, async {
            let _ = eof_rx.await;
        })
        .await?;
    Ok(())
}
