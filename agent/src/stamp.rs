//! Read instants of the agent's HTTP connections: each socket read that returns bytes stamps the
//! connection, so a token is timed when its bytes left the kernel, not when its request's task
//! was next scheduled.
//!
//! hyper reads the socket in the connection's own task and hands body frames to the request's task
//! through a channel; under load (a thousand streams ticking together) the request task can run
//! milliseconds after the read. [`StampedStream`] wraps the TCP stream the connector makes and
//! keeps the agent-clock instant (ns since [`crate::clock::epoch`]) of its latest read that
//! returned data. The connector attaches the stamp to every response (`Connected::extra`), and the
//! engine stamps each frame with it. The stamp only grows, and the read that delivered a frame
//! happened before the frame was handed on, so a frame's stamp lies between its bytes' read and
//! the moment the request task sees it: never early, and late only when several reads queue up.

use hyper_util::client::legacy::connect::{Connected, Connection};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The latest data-bearing read of one connection, agent-clock ns; 0 before the first.
#[derive(Debug, Clone, Default)]
pub struct ReadStamp(Arc<AtomicU64>);

impl ReadStamp {
    /// The latest read's instant (agent-clock ns), if a read returned data yet.
    pub fn last_read_ns(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            ns => Some(ns),
        }
    }

    fn mark(&self) {
        // At least 1, so that a read in the clock's first nanosecond still counts as one.
        self.0
            .fetch_max(crate::clock::mono_ns().max(1), Ordering::AcqRel);
    }
}

/// A TCP stream that stamps its [`ReadStamp`] on every read that returns bytes.
#[derive(Debug)]
pub struct StampedStream {
    inner: TcpStream,
    stamp: ReadStamp,
}

impl StampedStream {
    pub fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            stamp: ReadStamp::default(),
        }
    }
}

impl AsyncRead for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.stamp.mark();
        }
        r
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connection for StampedStream {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.stamp.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_with_data_stamps_the_connection_and_the_stamp_only_grows() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut s = StampedStream::new(client);
        let stamp = s.stamp.clone();
        assert_eq!(stamp.last_read_ns(), None, "no read yet");

        server.write_all(b"first").await.unwrap();
        let before = crate::clock::mono_ns();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        let after = crate::clock::mono_ns();
        let first = stamp.last_read_ns().expect("stamped");
        assert!(
            before <= first && first <= after,
            "{before} <= {first} <= {after}"
        );

        // Writes do not stamp; the next read does, later.
        s.write_all(b"ping").await.unwrap();
        assert_eq!(stamp.last_read_ns(), Some(first));
        server.write_all(b"second").await.unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.unwrap();
        assert!(stamp.last_read_ns().unwrap() > first);

        // The end of the stream (a read of 0 bytes) is not a read of data.
        let last = stamp.last_read_ns();
        let mut ping = [0u8; 4];
        server.read_exact(&mut ping).await.unwrap(); // unread data would make the close a reset
        drop(server);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(stamp.last_read_ns(), last);

        // The connector's view: the stamp rides along as the connection's extra.
        let c = s.connected();
        let mut ext = hyper::http::Extensions::new();
        c.get_extras(&mut ext);
        assert!(ext.get::<ReadStamp>().is_some());
    }
}
