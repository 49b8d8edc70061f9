//! The channel's socket, split into a half that reads and a half that writes, each watched by
//! the runtime only for what it needs.
//!
//! # Implementation notes
//!
//! tokio's `UnixStream` registers its socket for both readable and writable events,
//! edge-triggered. On a Unix stream socket every read by the peer frees buffer space, which
//! is a writable edge: so each answer the pool reads woke the worker's thread for nothing, and
//! each call the worker read woke the pool's, one wasted wake-up (a trip through `epoll_wait`)
//! per call on each side. Here the socket is registered for reading only ([`ReadHalf`]). The
//! writer ([`WriteHalf`]) writes with plain non-blocking `send`s on its own copy of the
//! descriptor and registers that copy for writable events only when a `send` finds the socket
//! full, until a `send` goes through again. Registering a socket that is already writable
//! reports it at once, so no wake-up is lost between the full `send` and the registration.
//!
//! Both halves hold descriptors of the same socket: it closes when both are dropped.
//!
//! Every `send` and `recvmsg` here passes `MSG_DONTWAIT`, so it never blocks whatever the
//! descriptor's own mode: a reader may then make the descriptor blocking, with a receive
//! timeout ([`ReadHalf::allow_waiting`]), and wait for the peer inside one `recvmsg`
//! ([`super::fds::recv_waiting`]) instead of in `epoll_wait` and then `recvmsg`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustix::net::sockopt::Timeout;
use rustix::net::SendFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Splits a connected stream socket; it is made non-blocking. Must run within a tokio runtime.
pub(crate) fn split(stream: std::os::unix::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    stream.set_nonblocking(true)?;
    let write = OwnedFd::from(stream.try_clone()?);
    let read = register(OwnedFd::from(stream), Interest::READABLE)?;
    Ok((
        ReadHalf { fd: read },
        WriteHalf {
            state: Write::Plain(write),
        },
    ))
}

/// Registers `fd` with the runtime for `interest` only.
///
/// tokio 1.54 deprecates `AsyncFd::with_interest` for its successor, an `unsafe fn` whose
/// contract is that the descriptor stays open and the same while registered; this crate
/// forbids `unsafe`. An `OwnedFd` keeps that contract by itself (it is the descriptor, closed
/// only when dropped, after the `AsyncFd` deregisters it), so the safe original is sound here.
#[allow(deprecated)]
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, interest)
}

/// The reading half: registered for readable events only.
pub(crate) struct ReadHalf {
    fd: AsyncFd<OwnedFd>,
}

impl ReadHalf {
    /// Lets reads without `MSG_DONTWAIT` wait for the peer, up to `timeout` each: the socket
    /// is made blocking (every other read and write here passes `MSG_DONTWAIT`) and given a
    /// receive timeout.
    pub(crate) fn allow_waiting(&self, timeout: Duration) -> io::Result<()> {
        let fd = self.fd.get_ref();
        rustix::net::sockopt::set_socket_timeout(fd, Timeout::Recv, Some(timeout))?;
        rustix::io::ioctl_fionbio(fd, false)?;
        Ok(())
    }

    /// The socket, for a read that may wait ([`super::fds::recv_waiting`]).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Waits until the socket is readable and runs `read` on it. `read` gives its result and
    /// whether it drained the socket (a short read): then the readiness is forgotten at once,
    /// so the next read waits for the peer instead of first making a system call that would
    /// only say "nothing yet". A `WouldBlock` from `read` waits again.
    pub(crate) fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut read: impl FnMut(BorrowedFd<'_>) -> io::Result<(T, bool)>,
    ) -> Poll<io::Result<T>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            match read(guard.get_inner().as_fd()) {
                Ok((value, drained)) => {
                    if drained {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(value));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// The writing half: its own descriptor, registered for writable events only while the
/// socket is full.
pub(crate) struct WriteHalf {
    state: Write,
}

enum Write {
    /// Not registered: sends go straight to the socket.
    Plain(OwnedFd),
    /// The socket was full: registered until a send goes through.
    Waiting(AsyncFd<OwnedFd>),
    /// Registering failed; the error was returned, every later send fails.
    Broken,
}

impl WriteHalf {
    /// Writes some of `buf`; `Ok(n)` with the bytes written.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send_with(cx, |fd| {
            rustix::net::send(fd, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
                .map_err(io::Error::from)
        })
    }

    /// Writes some of `buf` now, without waiting: `WouldBlock` if the socket is full or a
    /// write already waits for room.
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.state {
            Write::Plain(fd) => {
                rustix::net::send(fd, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
                    .map_err(io::Error::from)
            }
            Write::Waiting(_) => Err(io::ErrorKind::WouldBlock.into()),
            Write::Broken => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Runs `send` on the socket until it does not find it full.
    pub(crate) fn poll_send_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut send: impl FnMut(BorrowedFd<'_>) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match &self.state {
                Write::Plain(fd) => match send(fd.as_fd()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let Write::Plain(fd) = std::mem::replace(&mut self.state, Write::Broken)
                        else {
                            unreachable!("matched as plain")
                        };
                        self.state = Write::Waiting(register(fd, Interest::WRITABLE)?);
                    }
                    done => return Poll::Ready(done),
                },
                Write::Waiting(fd) => {
                    let mut guard = ready!(fd.poll_write_ready(cx))?;
                    match send(guard.get_inner().as_fd()) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                        done => {
                            drop(guard);
                            // Room again: stop watching (deregistered before it is kept).
                            if let Write::Waiting(fd) =
                                std::mem::replace(&mut self.state, Write::Broken)
                            {
                                self.state = Write::Plain(fd.into_inner());
                            }
                            return Poll::Ready(done);
                        }
                    }
                }
                Write::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the channel's writer could not wait for room and was closed",
                    )))
                }
            }
        }
    }

    /// Writes all of `buf`.
    pub(crate) async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn read(half: &ReadHalf, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        half.poll_read_with(cx, |fd| {
            let n = rustix::io::read(fd, &mut *buf)?;
            Ok((n, n > 0 && n < buf.len()))
        })
    }

    /// A writer that fills the socket waits for room (registered for writable events), and
    /// goes on when the peer reads: every byte arrives, in order, and the writer stops
    /// watching once a send goes through.
    #[tokio::test]
    async fn a_full_socket_waits_for_room_and_loses_nothing() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (ra, mut wa) = split(a).unwrap();
        let (rb, _wb) = split(b).unwrap();
        let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        // Nobody reads yet: the socket fills and the writer waits.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut written = 0;
        while let Poll::Ready(n) = wa.poll_write(&mut cx, &sent[written..]) {
            written += n.unwrap();
            assert!(written < sent.len(), "4 MiB fit in the socket");
        }
        assert!(matches!(wa.state, Write::Waiting(_)));
        let rest = sent[written..].to_vec();
        let writer = tokio::spawn(async move {
            wa.write_all(&rest).await.unwrap();
            wa
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < sent.len() {
            let n = poll_fn(|cx| read(&rb, cx, &mut buf)).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == sent, "bytes lost or out of order");
        let wa = writer.await.unwrap();
        assert!(matches!(wa.state, Write::Plain(_)));
        drop((ra, wa));
        // Both halves of `a` are gone: `b` reads the end of file.
        let n = poll_fn(|cx| read(&rb, cx, &mut buf)).await.unwrap();
        assert_eq!(n, 0);
    }

    /// The socket stays open while either half lives.
    #[tokio::test]
    async fn the_socket_closes_when_both_halves_are_gone() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (ra, mut wa) = split(a).unwrap();
        let (rb, _wb) = split(b).unwrap();
        drop(ra);
        wa.write_all(b"still open").await.unwrap();
        let mut buf = [0u8; 64];
        let n = poll_fn(|cx| read(&rb, cx, &mut buf)).await.unwrap();
        assert_eq!(&buf[..n], b"still open");
        drop(wa);
        let n = poll_fn(|cx| read(&rb, cx, &mut buf)).await.unwrap();
        assert_eq!(n, 0);
    }
}
