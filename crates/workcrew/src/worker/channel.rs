//! The worker's end of the channel: one receive buffer, one send buffer, one socket.
//!
//! # Implementation notes
//!
//! The receive buffer is a plain zeroed `Vec` with a window `start..end` of unread bytes, so
//! frames are decoded in place ([`crate::protocol::peek_frame`]) and payloads handed to
//! functions as borrowed slices. Each read takes everything the socket holds, up to the free
//! space (256 KiB by default; grown to fit a larger frame, shrunk back when empty). The window
//! is moved to the front only when the free space behind it runs short, so only the tail of a
//! partial frame is ever copied.
//!
//! The socket is read with `recvmsg` (see [`crate::protocol::fds`]), always: descriptors
//! passed with `CALL_FDS` queue up in arrival order, each marked with the stream offset where
//! the read that brought it ended. Descriptors ride on the first byte of their frame, so a
//! frame that ends at or after that offset is the one they came with (a `CALL_FDS` takes them)
//! or they came with no `CALL_FDS` at all (a protocol error); see [`Descriptors`].
//!
//! Between calls the serving loop may wait for the next one inside the read itself
//! ([`Channel::fill_waiting`], see [`super::serve`]): the socket is blocking with a receive
//! timeout of [`WAIT`], and every other read and write passes `MSG_DONTWAIT`
//! ([`crate::protocol::socket`]).
//!
//! Answers are appended to one send buffer and written with as few `send`s as the socket
//! takes; a short read lets tokio forget the readiness, so a pass that drained the socket
//! costs no extra `EAGAIN` system call. The socket is watched for readable events only, and
//! for writable ones only while it is full ([`crate::protocol::socket`]): the pool reading our
//! answers does not wake this worker.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::protocol::fds;
use crate::protocol::socket::{self, ReadHalf, WriteHalf};

/// The receive buffer's usual size.
const READ_BUFFER: usize = 256 * 1024;

/// The longest a read may block the thread ([`Channel::fill_waiting`]).
pub(crate) const WAIT: Duration = Duration::from_millis(10);

/// A send buffer that grew past this is given back once written.
const WRITE_BUFFER_KEEP: usize = 4 * 1024 * 1024;

pub(crate) struct Channel {
    reader: ReadHalf,
    writer: WriteHalf,
    /// Received bytes; `start..end` is not yet consumed.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// How many bytes the frame at `start` needs in all (0: unknown).
    want: usize,
    /// The stream offset of `input[start]`.
    offset: u64,
    /// Descriptors received, not yet taken by a `CALL_FDS`.
    fds: Descriptors,
    /// Where a read puts the descriptors it brings; empty between reads.
    fresh: VecDeque<OwnedFd>,
    /// Bytes to send; `written..` is not yet written.
    output: Vec<u8>,
    written: usize,
}

impl Channel {
    /// The channel over `stream`, watched for readable events only (see
    /// [`crate::protocol::socket`]).
    pub(crate) fn new(stream: UnixStream) -> io::Result<Self> {
        let (reader, writer) = socket::split(stream.into_std()?)?;
        reader.allow_waiting(WAIT)?;
        Ok(Channel {
            reader,
            writer,
            input: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            want: 0,
            offset: 0,
            fds: Descriptors::default(),
            fresh: VecDeque::new(),
            output: Vec::with_capacity(64 * 1024),
            written: 0,
        })
    }

    /// The received bytes not yet consumed.
    pub(crate) fn unread(&self) -> &[u8] {
        &self.input[self.start..self.end]
    }

    /// Marks `n` bytes at the front of [`unread`](Self::unread) as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
        self.want = 0;
    }

    /// Notes that the frame at the front needs `needed` bytes in all.
    pub(crate) fn want(&mut self, needed: usize) {
        self.want = needed;
    }

    /// The send buffer: frames are appended to it, then [`poll_flush`](Self::poll_flush)ed.
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// The received bytes, their stream offset, the send buffer and the received descriptors
    /// at once, for handling frames in place.
    pub(crate) fn split(&mut self) -> (&[u8], u64, &mut Vec<u8>, &mut Descriptors) {
        let unread = &self.input[self.start..self.end];
        (unread, self.offset, &mut self.output, &mut self.fds)
    }

    /// Whether everything queued has been written.
    pub(crate) fn flushed(&self) -> bool {
        self.written == self.output.len()
    }

    /// Reads once, as much as the socket holds and the buffer takes. `Ok(0)` is end of file.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.make_room();
        let buf = &mut self.input[self.end..];
        let read = ready!(fds::poll_recv(&self.reader, cx, buf, &mut self.fresh))?;
        Poll::Ready(Ok(self.filled(read)))
    }

    /// Like [`poll_fill`](Self::poll_fill), but waits in the read itself, blocking the thread
    /// up to [`WAIT`]: `Ok(None)` if nothing came by then.
    pub(crate) fn fill_waiting(&mut self) -> io::Result<Option<usize>> {
        self.make_room();
        let buf = &mut self.input[self.end..];
        let read = fds::recv_waiting(&self.reader, buf, &mut self.fresh)?;
        Ok(read.map(|read| self.filled(read)))
    }

    /// Accounts for a read of `n` bytes, with descriptors if `with_fds`; gives `n`.
    fn filled(&mut self, (n, with_fds): (usize, bool)) -> usize {
        self.end += n;
        if with_fds {
            let read_end = self.offset + (self.end - self.start) as u64;
            let fresh = self.fresh.drain(..).map(|fd| (read_end, fd));
            self.fds.queue.extend(fresh);
        }
        n
    }

    /// Writes the send buffer, as few system calls as the socket allows.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.output.len() {
            let n = ready!(self.writer.poll_write(cx, &self.output[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.output.clear();
        self.written = 0;
        if self.output.capacity() > WRITE_BUFFER_KEEP {
            self.output.shrink_to(READ_BUFFER);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes free space behind the unread bytes: at least a quarter of the buffer, and room
    /// for the whole frame at the front.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.input.len() > READ_BUFFER {
                self.input.truncate(READ_BUFFER);
                self.input.shrink_to_fit();
            }
        }
        let size = self.input.len();
        if size - self.end < READ_BUFFER / 4 || size - self.start < self.want {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.input.len() < self.want {
            self.input.resize(self.want, 0);
        }
        if self.end == self.input.len() {
            // A frame of unknown size filled the buffer (cannot happen with a sane `want`).
            self.input.resize(self.input.len() + READ_BUFFER, 0);
        }
    }
}

/// Received descriptors, in arrival order, each with the stream offset where the read that
/// brought it ended.
#[derive(Default)]
pub(crate) struct Descriptors {
    queue: VecDeque<(u64, OwnedFd)>,
}

impl Descriptors {
    /// The `count` descriptors of the `CALL_FDS` frame that starts at stream offset `at`, or
    /// `None` if they did not come with it.
    pub(crate) fn take(&mut self, at: u64, count: usize) -> Option<Vec<OwnedFd>> {
        let came_with_frame = self.queue.iter().take_while(|(end, _)| *end > at).count();
        if self.queue.len() < count || came_with_frame < count {
            return None;
        }
        Some(self.queue.drain(..count).map(|(_, fd)| fd).collect())
    }

    /// How many descriptors came with bytes before stream offset `end` and so with the frame
    /// ending there or an earlier one; for any frame but a `CALL_FDS` this must be 0.
    pub(crate) fn stray(&self, end: u64) -> usize {
        self.queue
            .iter()
            .take_while(|(read_end, _)| *read_end <= end)
            .count()
    }
}
