//! The upgraded connection as the WebSocket protocol layer reads it: hyper's upgraded IO, with an
//! optional read budget for sockets that have not authenticated yet.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How many bytes the connection may still read before the client has authenticated.
///
/// Shared by the connection's reader (which stops at zero) and the first-message loop (which
/// closes the socket then, and lifts the budget once the client has authenticated).
#[derive(Debug)]
pub(crate) struct ReadBudget {
    left: AtomicUsize,
    exhausted: AtomicBool,
}

impl ReadBudget {
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            left: AtomicUsize::new(bytes),
            exhausted: AtomicBool::new(false),
        }
    }

    /// How many bytes may be read now: `None` for no limit.
    pub(crate) fn left(&self) -> Option<usize> {
        match self.left.load(Ordering::Acquire) {
            usize::MAX => None,
            left => Some(left),
        }
    }

    /// Counts `n` bytes read.
    pub(crate) fn spend(&self, n: usize) {
        let left = self.left.load(Ordering::Acquire);
        if left != usize::MAX {
            self.left.store(left.saturating_sub(n), Ordering::Release);
        }
    }

    /// The reader wanted more than the budget allows.
    pub(crate) fn exhaust(&self) {
        self.exhausted.store(true, Ordering::Release);
    }

    pub(crate) fn is_exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Acquire)
    }

    pub(crate) fn lift(&self) {
        self.left.store(usize::MAX, Ordering::Release);
    }
}

/// hyper's upgraded connection; reads stop (pending, never woken by the budget) once `budget`
/// is spent, so an unauthenticated client cannot make the protocol layer buffer more than it.
pub(crate) struct Io {
    inner: TokioIo<Upgraded>,
    budget: Option<Arc<ReadBudget>>,
}

impl Io {
    pub(crate) fn new(upgraded: Upgraded, budget: Option<Arc<ReadBudget>>) -> Self {
        Self {
            inner: TokioIo::new(upgraded),
            budget,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(budget) = this.budget.as_deref() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let Some(left) = budget.left() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if left == 0 {
            // The first-message loop sees this in the same poll and closes the socket.
            budget.exhaust();
            return Poll::Pending;
        }
        // Never read past the budget: through a small buffer of our own when `buf` is larger.
        let mut chunk = [0u8; 1024];
        let want = left.min(buf.remaining()).min(chunk.len());
        let mut limited = ReadBuf::new(&mut chunk[..want]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let read = limited.filled();
        buf.put_slice(read);
        budget.spend(read.len());
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_down_and_lifts() {
        let budget = ReadBudget::new(10);
        assert_eq!(budget.left(), Some(10));
        budget.spend(4);
        assert_eq!(budget.left(), Some(6));
        budget.spend(100);
        assert_eq!(budget.left(), Some(0));
        assert!(!budget.is_exhausted());
        budget.exhaust();
        assert!(budget.is_exhausted());
        budget.lift();
        assert_eq!(budget.left(), None);
        budget.spend(1);
        assert_eq!(budget.left(), None);
    }
}
