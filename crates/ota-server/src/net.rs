//! Connections that are closed when they stop making progress.
//!
//! A request timeout would cut off a slow ESP32 in the middle of a
//! download. Instead each connection is watched for progress:
//! - waiting for a request (keep-alive, or slow headers): closed after
//!   `idle_timeout` without a byte;
//! - receiving a request body: the body fails after `idle_timeout` without
//!   data (`RequestBodyTimeoutLayer` in the router);
//! - sending a response: closed after `idle_timeout` in which the client
//!   took no byte.
//!
//! The time a handler spends working (hashing a file, waiting for the
//! database) is never counted. When the server stops, connections still
//! open after the grace period are failed through a [`CancellationToken`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What the requests on a connection share with it: the peer's address,
/// how many of its requests are being handled, and how to wake the
/// connection's reader when the last one is done.
#[derive(Debug, Clone)]
pub struct Connection {
    pub remote: SocketAddr,
    handling: Arc<Handling>,
}

#[derive(Debug, Default)]
struct Handling {
    in_flight: AtomicUsize,
    reader: AtomicWaker,
}

impl Connection {
    fn new(remote: SocketAddr) -> Self {
        Self {
            remote,
            handling: Arc::default(),
        }
    }

    /// Marks a request as being handled until the guard is dropped.
    pub fn begin_request(&self) -> RequestInFlight {
        self.handling.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestInFlight(Arc::clone(&self.handling))
    }

    /// Whether a handler is working; if so, the reader is woken when it is done.
    fn is_handling(&self, reader: &Waker) -> bool {
        self.handling.reader.register(reader);
        self.handling.in_flight.load(Ordering::Acquire) > 0
    }
}

/// A request being handled; see [`Connection::begin_request`].
pub struct RequestInFlight(Arc<Handling>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The reader stopped watching the clock while the handler worked; let it start again.
            self.0.reader.wake();
        }
    }
}

/// A listener whose connections close when idle or when `closing` is cancelled.
pub struct IdleTimeoutListener {
    inner: TcpListener,
    idle_timeout: Duration,
    closing: CancellationToken,
}

impl IdleTimeoutListener {
    pub fn new(inner: TcpListener, idle_timeout: Duration, closing: CancellationToken) -> Self {
        Self {
            inner,
            idle_timeout,
            closing,
        }
    }
}

impl axum::serve::Listener for IdleTimeoutListener {
    type Io = IdleTimeoutStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => {
                    stream.set_nodelay(true).ok();
                    let connection = Connection::new(remote);
                    let io = IdleTimeoutStream::new(stream, self.idle_timeout, connection.clone(), &self.closing);
                    return (io, connection);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Connection> {
        self.inner.local_addr().map(Connection::new)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// A TCP stream whose pending reads and writes fail once the connection
/// has moved no byte, in either direction, for the idle timeout (reads only
/// while no request is being handled), or once the server closes it.
pub struct IdleTimeoutStream {
    inner: TcpStream,
    timeout: Duration,
    connection: Connection,
    last_progress: Instant,
    was_handling: bool,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Pin<Box<Sleep>>,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl IdleTimeoutStream {
    fn new(inner: TcpStream, timeout: Duration, connection: Connection, closing: &CancellationToken) -> Self {
        let now = Instant::now();
        Self {
            inner,
            timeout,
            connection,
            last_progress: now,
            was_handling: false,
            read_deadline: Box::pin(sleep_until(now + timeout)),
            write_deadline: Box::pin(sleep_until(now + timeout)),
            closing: Box::pin(closing.clone().cancelled_owned()),
        }
    }

    /// Passes on a finished operation (noting the progress); while it is
    /// pending, waits for the idle deadline, which moves whenever any byte moves.
    fn watch<T>(&mut self, cx: &mut Context<'_>, direction: Direction, op: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(result) = op {
            self.last_progress = Instant::now();
            return Poll::Ready(result);
        }
        if self.closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server is stopping",
            )));
        }
        // While a handler works, hyper keeps a read pending only to notice a
        // hang-up; the request body has its own idle timeout. The clock
        // starts again when the handler is done.
        if direction == Direction::Read {
            if self.connection.is_handling(cx.waker()) {
                self.was_handling = true;
                return Poll::Pending;
            }
            if std::mem::take(&mut self.was_handling) {
                self.last_progress = Instant::now();
            }
        }
        let due = self.last_progress + self.timeout;
        let deadline = match direction {
            Direction::Read => &mut self.read_deadline,
            Direction::Write => &mut self.write_deadline,
        };
        if deadline.deadline() != due {
            deadline.as_mut().reset(due);
        }
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection idle for too long",
        )))
    }
}

impl AsyncRead for IdleTimeoutStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let op = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(cx, Direction::Read, op)
    }
}

impl AsyncWrite for IdleTimeoutStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let op = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, Direction::Write, op)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let op = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, Direction::Write, op)
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
