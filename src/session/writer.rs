//! The write half of a session: drains the send queue into the socket,
//! several frames per flush, and sends the final frame and close frame
//! (docs/PROTOCOL.md, Closing).
//!
//! It is not a task of its own: the connection's one task polls it beside
//! the socket's read side and the session's timers ([`super::run`]). A
//! second task per connection would cost its own allocation (512 bytes
//! with tokio's 128-byte steps), the lock that splits the socket between
//! the two, and a wake-up of each per request.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::hub::{Next, SendQueue, clock_nanos};
use crate::metrics::Metrics;
use crate::protocol::Disconnect;

/// How long the final frame and close frame may take before the TCP
/// connection is simply dropped (slow consumers).
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most frames written per flush.
const WRITE_BATCH: u8 = 64;

/// Where the write half stands between two polls. Holds no buffer while
/// idle: `arrivals` grows on the first delivery, never before.
#[derive(Default)]
pub struct Writer {
    /// Broker arrival times of the deliveries fed since the last flush, in
    /// nanoseconds ([`crate::hub::clock_nanos`]).
    arrivals: Vec<u64>,
    /// Frames fed since the last flush.
    fed: u8,
    /// The socket failed a write: nothing more is sent.
    failed: bool,
}

impl Writer {
    /// Feeds what the queue holds into `sink`, up to [`WRITE_BATCH`]
    /// frames per flush, and flushes; the caller has registered the task's
    /// waker with the queue this poll. `Pending` once everything is written
    /// (the queue wakes the task for more) or while the socket is full
    /// (the socket wakes it); `Ready` once the socket has failed a write,
    /// after which the queue refuses frames. A close request stops the
    /// writing: the session ends and [`Writer::farewell`] sends what the
    /// reason calls for.
    pub fn poll_write<W>(
        &mut self,
        sink: &mut W,
        queue: &SendQueue,
        metrics: &Metrics,
        cx: &mut Context<'_>,
    ) -> Poll<()>
    where
        W: Sink<Message, Error = WsError> + Unpin,
    {
        if self.failed {
            return Poll::Ready(());
        }
        match self.write(Pin::new(sink), queue, metrics, cx) {
            Poll::Ready(err) => {
                tracing::debug!(error = %err, "write failed");
                // The socket is gone: refuse further frames rather than hold
                // them until the session notices.
                self.failed = true;
                queue.shut();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn write<W>(
        &mut self,
        mut sink: Pin<&mut W>,
        queue: &SendQueue,
        metrics: &Metrics,
        cx: &mut Context<'_>,
    ) -> Poll<WsError>
    where
        W: Sink<Message, Error = WsError>,
    {
        loop {
            // Whether the queue was found empty: then a flush ends the poll,
            // since a frame pushed from now on wakes the task again.
            let mut drained = false;
            if self.fed < WRITE_BATCH {
                if let Err(err) = ready!(sink.as_mut().poll_ready(cx)) {
                    return Poll::Ready(err);
                }
                if let Some(next) = queue.next() {
                    let message = match next {
                        Next::Ping => Message::Ping(Default::default()),
                        Next::Frame(outbound) => {
                            self.arrivals.extend(outbound.arrival());
                            Message::Text(outbound.frame)
                        }
                    };
                    if let Err(err) = sink.as_mut().start_send(message) {
                        return Poll::Ready(err);
                    }
                    self.fed += 1;
                    continue;
                }
                drained = true;
            }
            if self.fed == 0 {
                return Poll::Pending;
            }
            if let Err(err) = ready!(sink.as_mut().poll_flush(cx)) {
                return Poll::Ready(err);
            }
            self.fed = 0;
            let now = clock_nanos();
            metrics.frames_delivered.inc_by(self.arrivals.len() as u64);
            for arrived in self.arrivals.drain(..) {
                let latency = now.saturating_sub(arrived) as f64 / 1e9;
                metrics.delivery_latency.observe(latency);
            }
            if drained {
                return Poll::Pending;
            }
        }
    }

    /// The session is over: refuses further frames, discards what is left
    /// unsent (a slow consumer's queue included), then sends the final
    /// frame and close frame when the reason calls for them.
    pub async fn farewell<W>(&self, sink: &mut W, queue: &SendQueue, metrics: &Metrics)
    where
        W: Sink<Message, Error = WsError> + Unpin,
    {
        let (reason, left) = queue.shut();
        if left > 0 {
            let why = match reason {
                Some(Disconnect::SlowConsumer) => "slow_consumer",
                _ => "closed",
            };
            metrics.dropped(why, left);
        }
        let Some(reason) = reason.filter(|_| !self.failed) else {
            return;
        };
        if reason == Disconnect::Gone {
            // The peer's close frame was read and tungstenite queued the reply;
            // send it, so a clean close ends as 1000 rather than 1006.
            let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
            return;
        }
        let Some(code) = reason.close_code() else {
            return;
        };
        let farewell = async {
            if let Some(frame) = reason.final_frame() {
                sink.send(Message::Text(frame)).await?;
            }
            sink.send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            })))
            .await
        };
        let _ = timeout(CLOSE_TIMEOUT, farewell).await;
    }
}
