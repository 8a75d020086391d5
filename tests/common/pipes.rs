//! A gRPC channel over a plugin's stdin and stdout, as Plakar opens one.
//! Shared by the tests' host and by `examples/drive`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tonic::transport::{Channel, Endpoint};

/// The plugin's two pipes as one byte stream for the HTTP/2 client.
struct Pipes {
    out: ChildStdout,
    inp: ChildStdin,
}

impl AsyncRead for Pipes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.out).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inp).poll_shutdown(cx)
    }
}

/// Takes a started plugin's stdin and stdout (both piped) and speaks HTTP/2 over them.
pub async fn connect(child: &mut Child) -> Result<Channel, tonic::transport::Error> {
    let pipes = Pipes {
        out: child.stdout.take().expect("the plugin's stdout is piped"),
        inp: child.stdin.take().expect("the plugin's stdin is piped"),
    };
    let mut once = Some(pipes);
    Endpoint::from_static("http://127.0.0.1:0")
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect_with_connector(tower::service_fn(move |_| {
            let io = once.take().map(TokioIo::new);
            async move { io.ok_or_else(|| io::Error::other("the plugin's pipes were used already")) }
        }))
        .await
}
