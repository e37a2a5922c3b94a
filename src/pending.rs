//! The budget for sockets that have not been admitted yet (PROTOCOL.md §4).
//!
//! A socket costs a file descriptor and a task from the moment it is accepted, long before
//! anyone knows who is on the other end. If those sockets counted against the connection
//! limit, anyone could fill it with connections that never send a byte (slowloris), and
//! honest users with good tokens would be refused. So they have their own budget, and when
//! it is full a new socket **evicts a reader by its progress** (PROTOCOL.md §4): the oldest
//! one that has sent nothing at all, or when every reader has sent something, the one that
//! has sent the fewest bytes (of its head, or of its TLS handshake) for its age. An honest
//! client that keeps sending, at any pace, outranks a silent socket, so a flood of silent
//! sockets cannot keep it out however slow its link; one that drips bytes to hold a place
//! must send faster than the slowest honest client, and still finishes its head (and is
//! decided) within the handshake timeout. The descriptors held stay within the budget.
//!
//! Bytes count up to [`CREDIT`] only: an attacker that sends a large unfinished head at once
//! (up to 8 KiB, never completed) would otherwise look eight times busier than an honest
//! client that has sent its whole head. Still, bytes are cheap: sockets that each send 1 KiB
//! at once, renewed fast enough, outrank a client slower than `CREDIT × new sockets a second
//! / budget` bytes a second (README's "Holding the door" has the worst cases measured).
//!
//! Choosing costs one pass over the readers (at most the budget, 1,024 by default) per
//! eviction, and stops at the first silent one, which in a silent flood is the oldest.
//!
//! A socket whose head has arrived is being decided (authenticated); it is not evictable, but
//! it still counts, and that phase is bounded by the handshake timeout. A refused socket that
//! only lingers so its answer is not lost to a reset is evictable again, and first of all:
//! a flood of complete but refused requests must not hold the places either. When the whole
//! budget is being decided, a new socket is answered `503` at once.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The sockets not yet admitted. Cloning gives another handle to the same budget.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    inner: Arc<Mutex<Inner>>,
    max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading its head, under this id in `Inner::reading`.
    Reading(u64),
    /// Head read: counted in `Inner::deciding`.
    Deciding,
    /// Answered, draining before the close, under this id in `Inner::lingering`.
    Lingering(u64),
}

#[derive(Debug, Default)]
struct Inner {
    /// Accept order; lower ids are older.
    next_id: u64,
    /// Sockets still reading their head, oldest first.
    reading: BTreeMap<u64, Reader>,
    /// Sockets whose head has arrived and that have not finished yet.
    deciding: usize,
    /// Refused sockets lingering before their close, oldest first: evicted before readers.
    lingering: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A socket still reading its head.
#[derive(Debug)]
struct Reader {
    /// The way to evict it.
    evict: oneshot::Sender<()>,
    /// Bytes it has sent so far (see [`Counted`]).
    progress: Arc<AtomicU64>,
    accepted: Instant,
}

/// A socket's place in the budget; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    pending: Pending,
    phase: Phase,
    progress: Arc<AtomicU64>,
    /// Completes when a newer socket takes this one's place.
    pub evicted: oneshot::Receiver<()>,
}

impl Pending {
    /// A budget of `max` sockets.
    pub fn new(max: usize) -> Pending {
        Pending {
            inner: Arc::default(),
            max,
        }
    }

    /// A place for a socket just accepted, evicting a lingering socket or else the reader
    /// with the least progress if the budget is full; `None` when every place is held by a
    /// socket past its head. `sent`: whether it has sent something already (see [`sent`]).
    pub fn enter(&self, sent: bool) -> Option<Slot> {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.reading.len() + inner.deciding + inner.lingering.len() >= self.max {
            let evict = match inner.lingering.pop_first() {
                Some((_, evict)) => evict,
                None => {
                    let id = least_progress(&inner.reading, now)?;
                    inner.reading.remove(&id)?.evict
                }
            };
            // The evicted task notices at its next poll, drops its socket and ends.
            let _ = evict.send(());
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        let progress = Arc::new(AtomicU64::new(u64::from(sent)));
        let reader = Reader {
            evict,
            progress: progress.clone(),
            accepted: now,
        };
        inner.reading.insert(id, reader);
        Some(Slot {
            pending: self.clone(),
            phase: Phase::Reading(id),
            progress,
            evicted,
        })
    }

    /// Sockets counted now.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.reading.len() + inner.deciding + inner.lingering.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map is consistent after every statement, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a socket just accepted has bytes waiting already, peeked without reading them. Under
/// a flood its task may not read for a few milliseconds, long enough for the budget to cycle:
/// an honest client that sent its head with its connect must not look silent meanwhile.
pub(crate) fn sent(stream: &tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut peeked = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(stream.poll_peek(&mut cx, &mut peeked), Poll::Ready(Ok(1..)))
}

/// The most bytes that count as a reader's progress: about what an honest browser's head (or
/// TLS hello) takes.
pub(crate) const CREDIT: u64 = 1024;

/// The reader to evict: the oldest silent one, else the one with the fewest bytes (at most
/// [`CREDIT`]) for its age (compared as `bytes_a × age_b < bytes_b × age_a`, in integers).
fn least_progress(reading: &BTreeMap<u64, Reader>, now: Instant) -> Option<u64> {
    let mut least: Option<(u64, u128, u128)> = None;
    for (&id, reader) in reading {
        let bytes = u128::from(reader.progress.load(Relaxed).min(CREDIT));
        if bytes == 0 {
            return Some(id);
        }
        let age = now.saturating_duration_since(reader.accepted).as_micros().max(1);
        if least.is_none_or(|(_, least_bytes, least_age)| bytes * least_age < least_bytes * age) {
            least = Some((id, bytes, age));
        }
    }
    least.map(|(id, ..)| id)
}

impl Slot {
    /// `stream`, counting what is read from it as this socket's progress while it reads its
    /// head (the TLS handshake included, when `stream` is the TCP under it).
    pub fn counted<S>(&self, stream: S) -> Counted<S> {
        Counted {
            stream,
            progress: self.progress.clone(),
        }
    }

    /// The head has arrived: this socket can no longer be evicted. `false` if it already
    /// was (its eviction raced with the head), in which case the caller must stop.
    pub fn head_read(&mut self) -> bool {
        let Phase::Reading(id) = self.phase else { return true };
        let mut inner = self.pending.lock();
        if inner.reading.remove(&id).is_none() {
            return false;
        }
        inner.deciding += 1;
        self.phase = Phase::Deciding;
        true
    }

    /// The socket has been answered and only waits to close: evictable again, before any
    /// reader. `evicted` fires if a newer socket needs the place.
    pub fn linger(&mut self) {
        let mut inner = self.pending.lock();
        match self.phase {
            Phase::Deciding => inner.deciding -= 1,
            Phase::Reading(id) => {
                inner.reading.remove(&id);
            }
            Phase::Lingering(_) => return,
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        inner.lingering.insert(id, evict);
        self.phase = Phase::Lingering(id);
        self.evicted = evicted;
    }
}

/// A stream that counts the bytes read from it into its socket's [`Slot`] (see the module
/// docs). Writes pass through.
#[derive(Debug)]
pub(crate) struct Counted<S> {
    stream: S,
    progress: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.progress.fetch_add(read as u64, Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.pending.lock();
        match self.phase {
            Phase::Reading(id) => {
                inner.reading.remove(&id);
            }
            Phase::Deciding => inner.deciding -= 1,
            Phase::Lingering(id) => {
                inner.lingering.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_reader_makes_way_and_deciders_do_not() {
        let pending = Pending::new(2);
        let mut first = pending.enter(false).unwrap();
        let mut second = pending.enter(false).unwrap();
        let third = pending.enter(false).unwrap();
        assert!(first.evicted.try_recv().is_ok(), "the oldest reader is evicted");
        assert!(second.evicted.try_recv().is_err());
        assert!(!first.head_read(), "an evicted socket must stop");
        drop(first);
        assert_eq!(pending.len(), 2);
        assert!(second.head_read());
        let mut third = third;
        assert!(third.head_read());
        assert!(pending.enter(false).is_none(), "every place is past its head");
        drop(second);
        assert_eq!(pending.len(), 1);
        assert!(pending.enter(false).is_some());
        drop(third);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_readers_go_first_then_the_least_progress_for_its_age() {
        let pending = Pending::new(3);
        let mut slow = pending.enter(false).unwrap();
        slow.progress.store(100, Relaxed);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let mut quick = pending.enter(false).unwrap();
        quick.progress.store(100, Relaxed);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let mut silent = pending.enter(false).unwrap();
        // The youngest, but it has sent nothing.
        let mut newcomer = pending.enter(false).unwrap();
        assert!(silent.evicted.try_recv().is_ok());
        assert!(slow.evicted.try_recv().is_err() && quick.evicted.try_recv().is_err());
        // Now none is silent but the newcomer, which is the only one that is not: give it
        // bytes. 100 bytes in 3 s is less than 100 in 1 s, or 10 in 0 s.
        newcomer.progress.store(10, Relaxed);
        let _last = pending.enter(false).unwrap();
        assert!(slow.evicted.try_recv().is_ok(), "the slowest for its age goes next");
        assert!(quick.evicted.try_recv().is_err() && newcomer.evicted.try_recv().is_err());
    }

    #[test]
    fn a_lingering_refusal_makes_way_before_any_reader() {
        let pending = Pending::new(2);
        let mut refused = pending.enter(false).unwrap();
        assert!(refused.head_read());
        refused.linger();
        let mut reader = pending.enter(false).unwrap();
        let _newcomer = pending.enter(false).unwrap();
        assert!(refused.evicted.try_recv().is_ok(), "the lingering socket goes first");
        assert!(reader.evicted.try_recv().is_err());
        drop(refused);
        assert_eq!(pending.len(), 2);
    }
}
