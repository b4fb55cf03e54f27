//! The HTTP server: accepts connections from a [`CappedListener`] and serves
//! each with hyper's HTTP/1 connection, WebSocket upgrades included, until
//! shutdown; then drains.
//!
//! This replaces `axum::serve` because that one cannot bound how long a
//! connection may stay silent: here hyper's header-read timer runs whenever a
//! connection waits for a request head, from its opening and again after
//! each response (`[limits] header_timeout_secs`), so a socket that sends
//! nothing, or a header at one byte a second, is closed and gives its slot
//! back. Upgraded WebSockets leave hyper and are timed by their own session
//! (connect timeout, pings, idle timeout).

use crate::listener::{CappedListener, PeerAddr};
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tower_service::Service;

/// Serves `router` on `listener` until `stop` resolves, then lets every
/// connection finish its request in flight (idle keep-alive connections
/// close at once) and returns when all of them are closed.
pub async fn serve(
    mut listener: CappedListener,
    router: Router,
    header_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    // Every connection task holds a receiver: the sender sees them all go.
    let (draining_tx, draining_rx) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let router = router.clone();
        let mut draining = draining_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
                let mut router = router.clone();
                router.call(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = draining.wait_for(|d| *d) => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(draining_rx);
    let _ = draining_tx.send(true);
    draining_tx.closed().await;
}
