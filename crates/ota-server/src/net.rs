//! Connections that are closed when they stop making progress.
//!
//! A request timeout would cut off a slow ESP32 in the middle of a
//! download. Instead, each connection's reads and writes are watched: while
//! bytes move, it lives; when a read or a write has been waiting for
//! `idle_timeout` with no byte moving either way, it is closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep, sleep_until};

/// A listener whose connections close when idle.
pub struct IdleTimeoutListener {
    inner: TcpListener,
    idle_timeout: Duration,
}

impl IdleTimeoutListener {
    pub fn new(inner: TcpListener, idle_timeout: Duration) -> Self {
        Self { inner, idle_timeout }
    }
}

impl axum::serve::Listener for IdleTimeoutListener {
    type Io = IdleTimeoutStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    stream.set_nodelay(true).ok();
                    return (IdleTimeoutStream::new(stream, self.idle_timeout), addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TCP stream whose pending reads and writes fail once the connection
/// has moved no byte, in either direction, for the idle timeout.
pub struct IdleTimeoutStream {
    inner: TcpStream,
    timeout: Duration,
    last_progress: Instant,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Pin<Box<Sleep>>,
}

impl IdleTimeoutStream {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            timeout,
            last_progress: now,
            read_deadline: Box::pin(sleep_until(now + timeout)),
            write_deadline: Box::pin(sleep_until(now + timeout)),
        }
    }
}

/// Passes on a finished operation (noting the progress); while it is
/// pending, waits for the idle deadline, which moves whenever any byte moves.
fn watch<T>(
    cx: &mut Context<'_>,
    timeout: Duration,
    last_progress: &mut Instant,
    deadline: &mut Pin<Box<Sleep>>,
    op: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if let Poll::Ready(result) = op {
        *last_progress = Instant::now();
        return Poll::Ready(result);
    }
    let due = *last_progress + timeout;
    if deadline.deadline() != due {
        deadline.as_mut().reset(due);
    }
    ready!(deadline.as_mut().poll(cx));
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "connection idle for too long",
    )))
}

impl AsyncRead for IdleTimeoutStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let op = Pin::new(&mut this.inner).poll_read(cx, buf);
        watch(cx, this.timeout, &mut this.last_progress, &mut this.read_deadline, op)
    }
}

impl AsyncWrite for IdleTimeoutStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let op = Pin::new(&mut this.inner).poll_write(cx, buf);
        watch(cx, this.timeout, &mut this.last_progress, &mut this.write_deadline, op)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let op = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        watch(cx, this.timeout, &mut this.last_progress, &mut this.write_deadline, op)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
