//! The HTTP listener, capped at `[limits] max_connections` open connections
//! (upgraded WebSockets included: the slot goes with the connection). Over
//! the cap the relay stops accepting; new connections wait in the kernel's
//! backlog until one closes, instead of costing memory and file descriptors.
//!
//! One address may hold at most `[limits] max_connections_per_ip` of them
//! (trusted proxies excepted: behind one, every client has its address); a
//! connection over that is closed as soon as it is accepted. Every accepted
//! socket gets `TCP_NODELAY`: the relay's frames and answers are small, and
//! Nagle's algorithm would hold each one back for the peer's delayed ACK.

use crate::proxy::TrustedProxies;
use axum::serve::Listener;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    per_ip: Option<PerIp>,
}

/// Open connections by peer address. Locked only to count, never across an
/// `.await`.
#[derive(Clone)]
struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    trusted: TrustedProxies,
}

impl PerIp {
    /// A count for `ip`, or None when `ip` already holds its maximum.
    fn enter(&self, ip: IpAddr) -> Option<IpSlot> {
        if self.trusted.contains(ip) {
            return Some(IpSlot(None));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot(Some((self.clone(), ip))))
    }
}

/// One connection's place in its address's count, given back on drop.
struct IpSlot(Option<(PerIp, IpAddr)>);

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = &self.0 {
            let mut open = per_ip.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(ip);
                }
            }
        }
    }
}

impl CappedListener {
    /// `max_per_ip` 0: no per-address limit.
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        max_per_ip: usize,
        trusted: TrustedProxies,
    ) -> CappedListener {
        CappedListener {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            per_ip: (max_per_ip > 0).then(|| PerIp {
                max: max_per_ip,
                open: Arc::new(Mutex::new(HashMap::new())),
                trusted,
            }),
        }
    }
}

/// A connection holding its slots until it closes.
pub struct CappedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    _ip_slot: Option<IpSlot>,
}

/// The peer address of a connection (the TCP peer: with a trusted proxy in
/// front, see [`crate::proxy`] for the client's own).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Never closed, so acquiring only waits.
        let slot = loop {
            if let Ok(slot) = self.slots.clone().acquire_owned().await {
                break slot;
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let ip_slot = match &self.per_ip {
                        None => None,
                        Some(per_ip) => match per_ip.enter(addr.ip()) {
                            Some(s) => Some(s),
                            None => {
                                tracing::debug!(peer = %addr, "over [limits] max_connections_per_ip; closed");
                                continue;
                            }
                        },
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(peer = %addr, error = %e, "cannot set TCP_NODELAY");
                    }
                    return (
                        CappedStream {
                            stream,
                            _slot: slot,
                            _ip_slot: ip_slot,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    let transient = matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    );
                    if !transient {
                        // Out of file descriptors, most likely: let some close.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
