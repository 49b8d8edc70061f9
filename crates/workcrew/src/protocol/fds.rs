//! Passing file descriptors over the worker channel (`docs/protocol.md`, section 3.10).
//!
//! A `CALL_FDS` frame's descriptors travel as one `SCM_RIGHTS` control message attached to
//! the frame's first byte. [`send_with_fds`] writes the first chunk of a frame with them;
//! [`poll_recv`] reads the channel with `recvmsg`, queuing every descriptor that arrives.
//!
//! # Implementation notes
//!
//! - `rustix` does the system calls: its `recvmsg` hands received descriptors over as
//!   `OwnedFd`s, so no `unsafe` is needed (nix's yields `RawFd`s, which only `unsafe` code can
//!   own). Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`).
//! - Linux ends a `recvmsg` on a stream socket right after the bytes that carried descriptors,
//!   even when more bytes wait. So a short read with descriptors says nothing about the
//!   socket being drained; a short read without them does, and then the readiness is dropped
//!   at once, which saves the `EAGAIN` read that would otherwise end every pass.
//! - The control buffer has room for [`MAX_FDS`] descriptors. If more arrive with one read
//!   the kernel closes the excess and sets `MSG_CTRUNC`: the reader reports an error, since the
//!   queue is then out of step with the frames.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::message::MAX_FDS;

/// Bytes of control data for [`MAX_FDS`] descriptors.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// Writes the first chunk of `bytes` (at least one byte) to `stream` with `fds` attached as
/// one `SCM_RIGHTS` message, and returns how many bytes were written; the caller writes the
/// rest normally. The descriptors are duplicated into the receiver; the caller still owns
/// (and should close) its copies.
///
/// This is how a pool sends a `CALL_FDS` frame: encode the frame, send its first chunk with
/// this function, then write the rest of the bytes as usual, before any other frame.
///
/// # Errors
///
/// `InvalidInput` if `bytes` is empty or `fds` holds none or more than [`MAX_FDS`]; any
/// error of `sendmsg`.
///
/// # Cancel safety
///
/// Cancel safe: the only `.await` is the wait for the socket to become writable; nothing has
/// been sent when it is cancelled.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use bytes::BytesMut;
/// use tokio::io::AsyncWriteExt;
/// use tokio_util::codec::Encoder;
/// use workcrew::protocol::{send_with_fds, FrameCodec, Message};
///
/// let (mut pool_end, _worker_end) = tokio::net::UnixStream::pair()?;
/// let file = std::fs::File::open("/dev/null")?;
/// let call = Message::CallFds {
///     id: 1,
///     descriptors: 1,
///     function: "serve".into(),
///     payload: "null".into(),
/// };
/// let mut wire = BytesMut::new();
/// FrameCodec::default().encode(call.to_frame(), &mut wire).map_err(std::io::Error::other)?;
/// let sent = send_with_fds(&pool_end, &wire, &[file.as_fd()]).await?;
/// pool_end.write_all(&wire[sent..]).await?;
/// drop(file); // the worker has its own copy now
/// # Ok(())
/// # }
/// ```
pub async fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    check_send(bytes, fds)?;
    loop {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || sendmsg_fds(stream, bytes, fds)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => return sent,
        }
    }
}

/// `InvalidInput` unless there are 1 to [`MAX_FDS`] descriptors and at least one byte.
pub(crate) fn check_send(bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.is_empty() || fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot send {} descriptors with {} bytes: 1 to {MAX_FDS} descriptors and at least one byte",
                fds.len(),
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// One `sendmsg` of `bytes` with `fds` attached.
pub(crate) fn sendmsg_fds(
    stream: impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); CONTROL_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    Ok(sent)
}

/// Reads once from `stream` (the channel's reading half) into `buf`, queuing descriptors that
/// came with the bytes into `fds`; the bytes read (0 at end of file) and whether descriptors
/// came.
///
/// # Errors
///
/// Any error of `recvmsg`; `InvalidData` if descriptors were lost because more than
/// [`MAX_FDS`] came with one read.
pub(crate) fn poll_recv(
    stream: &super::socket::ReadHalf,
    cx: &mut Context<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> Poll<io::Result<(usize, bool)>> {
    stream.poll_read_with(cx, |fd| {
        let (n, with_fds) = recvmsg_fds(fd, buf, fds, RecvFlags::DONTWAIT)?;
        // A short read without descriptors drained the socket (see the module notes).
        Ok(((n, with_fds), n > 0 && n < buf.len() && !with_fds))
    })
}

/// Like [`poll_recv`], but waits in `recvmsg` for the bytes, as long as the socket's receive
/// timeout allows ([`super::socket::ReadHalf::allow_waiting`]): `Ok(None)` if none came by
/// then, or if a signal interrupted the wait.
///
/// # Errors
///
/// As for [`poll_recv`].
pub(crate) fn recv_waiting(
    stream: &super::socket::ReadHalf,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<Option<(usize, bool)>> {
    match recvmsg_fds(stream.fd(), buf, fds, RecvFlags::empty()) {
        Ok(read) => Ok(Some(read)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn recvmsg_fds(
    stream: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    flags: RecvFlags,
) -> io::Result<(usize, bool)> {
    let mut space = [MaybeUninit::uninit(); CONTROL_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | flags,
    )?;
    let before = fds.len();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("file descriptors lost: more than {MAX_FDS} came with one read"),
        ));
    }
    Ok((msg.bytes, fds.len() > before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn descriptors_arrive_with_the_first_chunk() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, mut y) = std::os::unix::net::UnixStream::pair().unwrap();
        let (z, _w) = std::os::unix::net::UnixStream::pair().unwrap();
        let sent = send_with_fds(&a, b"hello", &[x.as_fd(), z.as_fd()])
            .await
            .unwrap();
        assert_eq!(sent, 5);
        drop(x); // the receiver holds its own copy
        let mut buf = [0u8; 64];
        let mut fds = VecDeque::new();
        let (b, _) = super::super::socket::split(b.into_std().unwrap()).unwrap();
        let (n, with_fds) = poll_fn(|cx| poll_recv(&b, cx, &mut buf, &mut fds))
            .await
            .unwrap();
        assert_eq!((&buf[..n], with_fds, fds.len()), (&b"hello"[..], true, 2));
        let mut received = std::os::unix::net::UnixStream::from(fds.pop_front().unwrap());
        received.write_all(b"via the passed fd").unwrap();
        drop(received);
        let mut text = String::new();
        y.read_to_string(&mut text).unwrap();
        assert_eq!(text, "via the passed fd");
    }

    #[tokio::test]
    async fn nothing_to_send_is_refused() {
        let (a, _b) = UnixStream::pair().unwrap();
        let (w, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        for (bytes, n) in [(&b""[..], 1), (b"x", 0), (b"x", MAX_FDS + 1)] {
            let fds = vec![w.as_fd(); n];
            let err = send_with_fds(&a, bytes, &fds).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
