//! The HTTP/1.1 accept loop.
//!
//! `axum::serve` answers HTTP/1 and HTTP/2 on the same port, so it reads the
//! first 24 bytes of every connection alone to tell them apart. hyper's read
//! buffer then takes those 24 bytes first, and its next reserve doubles the
//! buffer to 16 KiB: with ten thousand slow ESP32 downloads that is most of
//! the server's memory (measured with heaptrack under `ota-sim bench slow`).
//! Devices speak HTTP/1.1 (ESP-IDF's client has no HTTP/2), and a TLS proxy
//! in front may speak HTTP/2 to clients, so this loop serves HTTP/1.1 only,
//! through hyper's own HTTP/1 connection: 8 KiB of read buffer each.

use std::convert::Infallible;
use std::pin::pin;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::net::IdleTimeoutListener;

/// Serves `router` on `listener` until `stopping` is cancelled, then lets
/// every connection finish its in-flight request and returns once all have
/// closed. Each request carries the connection as `ConnectInfo<Connection>`.
pub async fn serve_http1(mut listener: IdleTimeoutListener, router: Router, stopping: CancellationToken) {
    // Connections hold a receiver of `closed` and watch `signal`: dropping
    // `signal_tx` asks them to finish, and `closed_tx.closed()` resolves when
    // the last one has gone.
    let (signal_tx, signal_rx) = watch::channel(());
    let (closed_tx, closed_rx) = watch::channel(());
    loop {
        let (io, connection) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.cancelled() => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(connection.clone()));
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {})) }
        });
        let mut signal = signal_rx.clone();
        let closed = closed_rx.clone();
        tokio::spawn(async move {
            let mut conn = pin!(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades()
            );
            let mut asked_to_finish = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = signal.changed(), if !asked_to_finish => {
                        asked_to_finish = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(closed);
        });
    }
    drop(listener);
    drop(signal_rx);
    drop(signal_tx);
    drop(closed_rx);
    closed_tx.closed().await;
}
