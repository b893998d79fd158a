//! A connection's bounded send queue and its close signal, in one small
//! allocation.
//!
//! Every connection has one, so its idle cost is paid per connection: a
//! `tokio::mpsc` channel allocates its first block of 32 slots up front
//! (1.3 KB) next to a cache-padded channel header, and a `watch` channel as
//! the close signal adds a few hundred bytes more. Here the frames live in a
//! `VecDeque` that allocates on the first frame, and the close reason sits
//! beside them under the same lock.
//!
//! One task serves a connection, reading and writing both, so one waker
//! stands for it here: a frame into an empty queue, a ping or a close
//! request wakes it. The queue is also the waker the task hands its socket's
//! read side, its timer and its notices ([`Wake`]): their wake-ups set a
//! flag first, so a wake-up for frames to write polls none of them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

use super::Outbound;
use crate::protocol::Disconnect;

/// Why [`SendQueue::push`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// `limits.send_queue` frames, or `limits.send_queue_bytes` bytes, are
    /// already waiting: a slow consumer.
    Full,
    /// The writer has stopped; nothing more will be sent.
    Shut,
}

/// Frames waiting for the connection's writer, and why it must close.
/// Many producers (the hub, the session), one consumer (the connection's
/// task, writing).
pub struct SendQueue {
    /// A std mutex: every critical section is a push, a pop or a flag, never
    /// held across an await.
    state: Mutex<State>,
    /// Most frames waiting at once (`limits.send_queue`).
    capacity: usize,
    /// Most bytes of frames waiting at once (`limits.send_queue_bytes`):
    /// the frame bound alone lets one client pin `send_queue` large frames.
    max_bytes: usize,
    /// The connection's task, woken when a frame arrives in an empty
    /// queue, or a ping or the close is requested. The task registers
    /// before it looks at the queue, so no wake-up falls between its check
    /// and its wait.
    task: AtomicWaker,
    /// Something other than the queue woke the task (the socket's read
    /// side, the session's timer, a notice): those must be polled.
    stirred: AtomicBool,
}

/// What the writer takes from the queue next.
pub enum Next {
    /// A heartbeat ping, ahead of waiting frames.
    Ping,
    /// The oldest waiting frame.
    Frame(Outbound),
}

struct State {
    /// Waiting frames, oldest first; no allocation until the first one.
    frames: VecDeque<Outbound>,
    /// Text bytes of `frames`. Shared delivery bytes count once per queue:
    /// the bound is on what this client holds up.
    bytes: usize,
    /// A heartbeat ping is due; sent ahead of the waiting frames.
    ping: bool,
    /// The first close reason asked for; later ones are ignored.
    closing: Option<Disconnect>,
    /// The writer has stopped taking frames: pushes are refused.
    shut: bool,
}

impl SendQueue {
    /// A queue bounded in frames only.
    pub fn new(capacity: usize) -> Self {
        Self::with_byte_limit(capacity, usize::MAX)
    }

    /// A queue bounded in frames and in bytes. A frame larger than
    /// `max_bytes` is still taken into an empty queue, so no message is too
    /// large to deliver to a client that keeps up.
    pub fn with_byte_limit(capacity: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                ping: false,
                closing: None,
                shut: false,
            }),
            capacity,
            max_bytes,
            task: AtomicWaker::new(),
            stirred: AtomicBool::new(true),
        }
    }

    /// Most frames waiting at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole, even on a panic.
        crate::sync::lock(&self.state)
    }

    /// Queues a frame without waiting.
    pub fn push(&self, outbound: Outbound) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.shut {
            return Err(PushError::Shut);
        }
        let len = outbound.frame.len();
        let over_bytes =
            !state.frames.is_empty() && state.bytes.saturating_add(len) > self.max_bytes;
        if state.frames.len() >= self.capacity || over_bytes {
            return Err(PushError::Full);
        }
        state.bytes += len;
        state.frames.push_back(outbound);
        // The task drains until the queue is empty before it waits, so
        // only the first frame into an empty queue needs to wake it; after
        // the lock, which the task takes next.
        let first = state.frames.len() == 1;
        drop(state);
        if first {
            self.task.wake();
        }
        Ok(())
    }

    /// Asks the writer to send a ping. It takes no room in the queue: a
    /// client that falls behind is cut by the queue bound, not the heartbeat.
    pub fn ping(&self) {
        let mut state = self.lock();
        if !state.ping {
            state.ping = true;
            self.task.wake();
        }
    }

    /// Asks the connection to stop for `reason`, unless a reason was
    /// already given.
    pub fn close(&self, reason: Disconnect) {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.closing = Some(reason);
            self.task.wake();
        }
    }

    /// The close reason, once asked for.
    pub fn closing(&self) -> Option<Disconnect> {
        self.lock().closing
    }

    /// For the connection's task, once per poll: `waker` is woken by the
    /// next push, ping or close, and by [`Wake`].
    pub fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// Whether the socket, the timer or a notice woke the task since the
    /// last call (or [`SendQueue::stir`]); clears the flag.
    pub fn take_stirred(&self) -> bool {
        self.stirred.swap(false, Ordering::AcqRel)
    }

    /// Marks the socket, timer and notices as due a poll, as their waker
    /// does: after a reset timer, or when one of them was ready and the
    /// others may be too.
    pub fn stir(&self) {
        self.stirred.store(true, Ordering::Release);
    }

    /// For the writer: a due ping, else the oldest frame, in one lock;
    /// `None` when nothing waits or the close was asked for (it wins over
    /// waiting frames).
    pub fn next(&self) -> Option<Next> {
        let mut state = self.lock();
        if state.closing.is_some() {
            return None;
        }
        if std::mem::take(&mut state.ping) {
            return Some(Next::Ping);
        }
        Self::pop_locked(&mut state).map(Next::Frame)
    }

    /// The oldest waiting frame. A queue emptied by a reply gives its room
    /// back: replies come in short bursts (the greeting, a subscribe) and
    /// then the connection may idle for hours; deliveries keep it, since
    /// more follow.
    pub fn pop(&self) -> Option<Outbound> {
        Self::pop_locked(&mut self.lock())
    }

    fn pop_locked(state: &mut State) -> Option<Outbound> {
        let outbound = state.frames.pop_front()?;
        state.bytes -= outbound.frame.len();
        if state.frames.is_empty() && outbound.arrived == 0 {
            state.frames = VecDeque::new();
        }
        Some(outbound)
    }

    /// For the writer when it stops: refuses further pushes and discards
    /// what is left. Returns the close reason and how many deliveries (not
    /// replies) were discarded.
    pub fn shut(&self) -> (Option<Disconnect>, u64) {
        let (reason, left) = {
            let mut state = self.lock();
            state.shut = true;
            state.bytes = 0;
            (state.closing, std::mem::take(&mut state.frames))
        };
        let deliveries = left.iter().filter(|o| o.arrival().is_some()).count();
        (reason, deliveries as u64)
    }
}

/// The waker of the connection's socket read side, timer and notices.
impl Wake for SendQueue {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.stir();
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::Frame;

    fn reply() -> Outbound {
        Outbound::reply(Frame::from_static("{}"))
    }

    #[test]
    fn a_full_queue_refuses_until_a_frame_is_taken() {
        let queue = SendQueue::new(2);
        assert_eq!(queue.push(reply()), Ok(()));
        assert_eq!(queue.push(reply()), Ok(()));
        assert_eq!(queue.push(reply()), Err(PushError::Full));
        assert!(queue.pop().is_some());
        assert_eq!(queue.push(reply()), Ok(()));
    }

    #[test]
    fn a_queue_over_its_byte_bound_refuses_until_bytes_are_taken() {
        let queue = SendQueue::with_byte_limit(100, 10);
        let frame = |text: &'static str| Outbound::reply(Frame::from_static(text));
        assert_eq!(queue.push(frame("123456")), Ok(()));
        assert_eq!(queue.push(frame("1234")), Ok(()));
        assert_eq!(queue.push(frame("1")), Err(PushError::Full));
        assert!(queue.pop().is_some());
        assert_eq!(queue.push(frame("123456")), Ok(()));
    }

    #[test]
    fn a_frame_larger_than_the_byte_bound_fits_an_empty_queue_only() {
        let queue = SendQueue::with_byte_limit(100, 4);
        let big = || Outbound::reply(Frame::from_static("0123456789"));
        assert_eq!(queue.push(big()), Ok(()));
        assert_eq!(queue.push(big()), Err(PushError::Full));
        assert!(queue.pop().is_some());
        assert_eq!(queue.push(big()), Ok(()));
    }

    #[test]
    fn a_queue_emptied_by_a_reply_gives_its_room_back() {
        let queue = SendQueue::new(4);
        let now = tokio::time::Instant::now();
        queue
            .push(Outbound::delivery(Frame::from_static("{}"), now))
            .expect("room");
        assert!(queue.pop().is_some());
        assert!(queue.lock().frames.capacity() > 0, "deliveries keep it");
        queue.push(reply()).expect("room");
        assert!(queue.pop().is_some());
        assert_eq!(queue.lock().frames.capacity(), 0);
    }

    #[test]
    fn the_first_close_reason_wins() {
        let queue = SendQueue::new(2);
        queue.close(Disconnect::SlowConsumer);
        queue.close(Disconnect::Shutdown);
        assert_eq!(queue.closing(), Some(Disconnect::SlowConsumer));
    }

    #[test]
    fn a_shut_queue_refuses_and_counts_discarded_deliveries() {
        let queue = SendQueue::new(4);
        let now = tokio::time::Instant::now();
        queue.push(reply()).expect("room");
        queue
            .push(Outbound::delivery(Frame::from_static("{}"), now))
            .expect("room");
        queue.close(Disconnect::Idle);
        assert_eq!(queue.shut(), (Some(Disconnect::Idle), 1));
        assert_eq!(queue.push(reply()), Err(PushError::Shut));
        assert!(queue.pop().is_none());
    }

    /// A waker that records whether it was woken.
    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Flag {
        fn woken(&self) -> bool {
            self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn a_waiting_task_is_woken_by_a_frame_and_by_the_close() {
        let queue = SendQueue::new(4);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());

        queue.register(&waker);
        queue.push(reply()).expect("room");
        assert!(flag.woken());
        queue.register(&waker);
        queue.push(reply()).expect("room");
        assert!(
            !flag.woken(),
            "only the first frame into an empty queue wakes"
        );
        assert!(queue.next().is_some());
        assert!(queue.next().is_some());
        assert!(queue.next().is_none());

        queue.close(Disconnect::Shutdown);
        assert!(flag.woken());
        assert_eq!(queue.closing(), Some(Disconnect::Shutdown));
    }

    #[test]
    fn a_ping_wakes_the_task_once_and_takes_no_room() {
        let queue = SendQueue::new(1);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        queue.register(&waker);
        queue.ping();
        assert!(flag.woken());
        queue.register(&waker);
        queue.ping();
        assert!(!flag.woken(), "a ping already due does not wake again");
        assert_eq!(queue.push(reply()), Ok(()));
        assert!(
            matches!(queue.next(), Some(Next::Ping)),
            "the ping goes first"
        );
        assert!(matches!(queue.next(), Some(Next::Frame(_))));
        assert!(queue.next().is_none());
    }

    #[test]
    fn a_wake_through_the_queue_stirs_and_wakes_the_task() {
        let queue = Arc::new(SendQueue::new(4));
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        assert!(
            queue.take_stirred(),
            "a new connection polls everything once"
        );
        assert!(!queue.take_stirred());
        queue.register(&waker);
        Waker::from(queue.clone()).wake();
        assert!(flag.woken());
        assert!(queue.take_stirred());
        queue.register(&waker);
        queue.push(reply()).expect("room");
        assert!(flag.woken());
        assert!(!queue.take_stirred(), "a frame does not stir");
    }

    #[test]
    fn the_close_wins_over_waiting_frames() {
        let queue = SendQueue::new(4);
        queue.push(reply()).expect("room");
        queue.close(Disconnect::SlowConsumer);
        assert!(queue.next().is_none(), "nothing more is written");
        assert_eq!(queue.closing(), Some(Disconnect::SlowConsumer));
    }
}
