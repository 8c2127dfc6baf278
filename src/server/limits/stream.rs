//! A connection's byte stream with the write and idle timeouts, recording its progress for the
//! connection cap.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::ConnectionLimits;
use super::cap::Activity;

/// A stream whose reads and writes fail with [`io::ErrorKind::TimedOut`] once a write has waited
/// for the peer longer than the write timeout, or once no byte has moved either way for the
/// idle timeout while a read waits. Wrap the TCP stream (below TLS), so that TLS records count
/// too.
pub struct WatchedStream<S> {
    inner: S,
    activity: Arc<Activity>,
    epoch: Instant,
    idle_timeout: Duration,
    write_timeout: Duration,
    last_progress: Instant,
    /// The last read found nothing to read.
    read_waiting: bool,
    /// Since when writes have been refused (the peer's window is full).
    write_blocked_since: Option<Instant>,
    /// Wakes the connection at the nearest deadline; created on the first wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> WatchedStream<S> {
    pub(super) fn new(
        inner: S,
        limits: &ConnectionLimits,
        activity: Arc<Activity>,
        epoch: Instant,
    ) -> WatchedStream<S> {
        WatchedStream {
            inner,
            activity,
            epoch,
            idle_timeout: limits.idle_timeout,
            write_timeout: limits.write_timeout,
            last_progress: Instant::now(),
            read_waiting: false,
            write_blocked_since: None,
            timer: None,
        }
    }

    fn progressed(&mut self) {
        let now = Instant::now();
        self.last_progress = now;
        self.activity.progressed(now.duration_since(self.epoch));
    }

    /// The inner stream is not ready: wait (with the timer armed for the nearest deadline), or
    /// fail once a deadline has passed.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let write_deadline = self
            .write_blocked_since
            .map(|since| since + self.write_timeout);
        let idle_deadline = self
            .read_waiting
            .then(|| self.last_progress + self.idle_timeout);
        let deadline = match (write_deadline, idle_deadline) {
            (Some(write), Some(idle)) => write.min(idle),
            (write, idle) => match write.or(idle) {
                Some(deadline) => deadline,
                None => return Poll::Pending,
            },
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let reason = match write_deadline {
            Some(write) if write <= deadline => "the peer took no byte of a write in time",
            _ => "no byte moved either way in time",
        };
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)))
    }

    /// Records a write's outcome; waits or times out when it is not ready. A flush or shutdown
    /// that is ready moves no byte (on TCP it is always ready), so only accepted bytes count as
    /// `progress` and unblock writing.
    fn wrote<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
        progress: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(Ok(value)) => {
                if progress(&value) {
                    self.write_blocked_since = None;
                    self.progressed();
                }
                Poll::Ready(Ok(value))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                self.write_blocked_since.get_or_insert_with(Instant::now);
                self.wait(cx)
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_waiting = false;
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.read_waiting = true;
                this.wait(cx)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, result, |written| *written > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, result, |written| *written > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(cx, result, |()| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.wrote(cx, result, |()| false)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    use super::*;
    use crate::server::limits::{ConnectionCap, Slot};

    /// Bounds every wait in these tests.
    const DEADLINE: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(300);

    /// A watched stream with the given timeouts, its peer, and its slot.
    async fn watched(
        idle_timeout: Duration,
        write_timeout: Duration,
    ) -> (WatchedStream<DuplexStream>, DuplexStream, Slot) {
        let limits = ConnectionLimits {
            max_connections: 1,
            header_read_timeout: DEADLINE,
            idle_timeout,
            write_timeout,
            max_request_head_bytes: 8 * 1024,
        };
        let slot = ConnectionCap::new(1).admit().await;
        let (near, far) = tokio::io::duplex(64);
        (slot.watch(near, &limits), far, slot)
    }

    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        let (mut stream, _peer, _slot) = watched(DEADLINE * 10, SHORT).await;
        let started = Instant::now();
        let error = tokio::time::timeout(DEADLINE, stream.write_all(&[0; 1024]))
            .await
            .expect("the write ends before the deadline")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= SHORT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_peer_that_reads_slowly_is_not_cut_off() {
        let (mut stream, mut peer, _slot) = watched(DEADLINE * 10, SHORT).await;
        let reader = tokio::spawn(async move {
            // A slow but steady reader: 64 bytes every 50 ms, well within the write timeout.
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            let mut read = 0;
            let mut buffer = [0; 64];
            while read < 1024 {
                pace.tick().await;
                read += peer.read(&mut buffer).await.unwrap();
            }
        });
        let started = Instant::now();
        tokio::time::timeout(DEADLINE, stream.write_all(&[0; 1024]))
            .await
            .expect("the write ends before the deadline")
            .unwrap();
        assert!(started.elapsed() > SHORT, "the write never had to wait");
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_times_out_when_idle() {
        let (mut stream, _peer, _slot) = watched(SHORT, DEADLINE * 10).await;
        let started = Instant::now();
        let error = tokio::time::timeout(DEADLINE, stream.read(&mut [0; 16]))
            .await
            .expect("the read ends before the deadline")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= SHORT, "{:?}", started.elapsed());
    }
}
