//! The connection's one task between the greeting and the close: a loop
//! over what wakes it (a frame from the peer, frames to write, the
//! session's timer, a config change or the shutdown, a close request),
//! writing queued frames before anything else.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use futures_util::{Sink, Stream, StreamExt};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes, error::CapacityError};

use super::authorize::Auth;
use super::writer::Writer;
use super::{Session, later};
use crate::protocol::Disconnect;

/// What woke the connection's task.
enum Event {
    /// A frame from the peer, the end of its stream, or a read error.
    Read(Option<Result<Message, WsError>>),
    /// The session's one timer.
    Timer,
    /// The config or the shutdown signal changed.
    Notice,
    /// The close was asked for (by the hub, a request, or cleanup).
    Close(Disconnect),
    /// The socket failed a write.
    WriteFailed,
}

impl Session {
    /// The connection's life between the greeting and the close: one loop
    /// over what wakes the task, writing queued frames before anything
    /// else. Returns why the connection must close.
    pub(super) async fn serve<S>(&mut self, socket: &mut S, writer: &mut Writer) -> Disconnect
    where
        S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    {
        let queue = self.client.queue().clone();
        let metrics = self.metrics.clone();
        let idle_timeout = self.config.server.idle_timeout;
        let mut last_seen = Instant::now();
        // Heartbeat (docs/PROTOCOL.md, Closing): a ping every third of the
        // idle timeout, queued for the writer; any frame, pongs included,
        // proves the peer alive.
        let mut ping_at = later(last_seen, idle_timeout / 3);
        // Created before the channels are read: a change after the read
        // still wakes it.
        let mut notice = pin!(self.notices.clone().notified_owned());
        writer.set_delay(self.config.server.write_delay);
        if *self.shutdown.borrow_and_update() {
            return Disconnect::Shutdown;
        }
        // One timer for the heartbeat and all three deadlines keeps a
        // single `Sleep` per connection, reset only when the deadline
        // moves. The auth deadline exists only before authorization and the
        // token's expiry only after, so at most one of them is pending.
        let next = |session: &Session, last_seen: Instant, ping_at: Instant| {
            let idle_at = later(last_seen, idle_timeout);
            session
                .auth
                .deadline()
                .map_or(idle_at, |at| at.min(idle_at))
                .min(ping_at)
        };
        let mut timer = pin!(sleep_until(next(self, last_seen, ping_at)));
        loop {
            let event = poll_fn(|cx| {
                queue.register(cx.waker());
                if writer.poll_write(socket, &queue, &metrics, cx).is_ready() {
                    return Poll::Ready(Event::WriteFailed);
                }
                if let Some(reason) = queue.closing() {
                    return Poll::Ready(Event::Close(reason));
                }
                // A wake-up for frames to write polls nothing else: the
                // socket's read side, the timer and the notice are polled
                // with the queue as their waker, which marks them stirred.
                if !queue.take_stirred() {
                    return Poll::Pending;
                }
                let stirred = Waker::from(queue.clone());
                let mut cx = Context::from_waker(&stirred);
                let event = if notice.as_mut().poll(&mut cx).is_ready() {
                    Event::Notice
                } else if timer.as_mut().poll(&mut cx).is_ready() {
                    Event::Timer
                } else {
                    match socket.poll_next_unpin(&mut cx) {
                        Poll::Ready(message) => Event::Read(message),
                        Poll::Pending => return Poll::Pending,
                    }
                };
                // The others may be ready too: look again after this one.
                queue.stir();
                Poll::Ready(event)
            })
            .await;
            match event {
                Event::Read(message) => {
                    last_seen = Instant::now();
                    match message {
                        None | Some(Ok(Message::Close(_))) => return Disconnect::Gone,
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                            return Disconnect::TooLarge;
                        }
                        Some(Err(_)) => return Disconnect::Gone,
                        // Boxed: requests are rare, and their future would
                        // otherwise enlarge every idle connection's task.
                        Some(Ok(Message::Text(text))) => {
                            Box::pin(self.request(text, socket, writer)).await;
                        }
                        Some(Ok(Message::Binary(_))) => self.refuse_binary(),
                        Some(Ok(_)) => {}
                    }
                    // A request may have closed the connection (too many
                    // refused authorizations): stop reading at once.
                    if let Some(reason) = queue.closing() {
                        return reason;
                    }
                }
                Event::Timer => {
                    let now = Instant::now();
                    if now >= ping_at {
                        queue.ping();
                        ping_at = later(now, idle_timeout / 3);
                    }
                    match self.auth {
                        Auth::None { deadline: Some(at) } if now >= at => {
                            self.metrics.auth_failure("auth_timeout");
                            return Disconnect::AuthTimeout;
                        }
                        Auth::Authenticated {
                            expires: Some(at), ..
                        } if now >= at => {
                            self.expire();
                        }
                        _ if now >= later(last_seen, idle_timeout) => return Disconnect::Idle,
                        _ => {}
                    }
                }
                Event::Notice => {
                    notice.set(self.notices.clone().notified_owned());
                    if *self.shutdown.borrow() || self.shutdown.has_changed().is_err() {
                        return Disconnect::Shutdown;
                    }
                    if self.updates.has_changed().unwrap_or(false) {
                        let config = self.updates.borrow_and_update().clone();
                        self.apply_config(config);
                        writer.set_delay(self.config.server.write_delay);
                    }
                }
                Event::Close(reason) => return reason,
                Event::WriteFailed => return Disconnect::Gone,
            }
            let at = next(self, last_seen, ping_at);
            // A timer that fired is reset even to the same deadline: an
            // elapsed `Sleep` stays ready.
            if at != timer.deadline() || timer.is_elapsed() {
                timer.as_mut().reset(at);
                // A reset timer is registered by its next poll.
                queue.stir();
            }
        }
    }

    /// Handles one request. Queued frames keep going out while it runs (a
    /// subscribe waits for the broker); a failed socket is noticed after it.
    async fn request<S>(&mut self, text: Utf8Bytes, socket: &mut S, writer: &mut Writer)
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        let queue = self.client.queue().clone();
        let metrics = self.metrics.clone();
        let mut request = pin!(self.handle_text(&text));
        poll_fn(|cx| {
            queue.register(cx.waker());
            let _ = writer.poll_write(socket, &queue, &metrics, cx);
            request.as_mut().poll(cx)
        })
        .await;
    }
}
