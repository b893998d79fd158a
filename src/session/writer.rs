//! The write half of a session: drains the send queue into the socket,
//! several frames per flush, flushes spaced `server.write_delay_ms` apart
//! when that is set (a full batch goes at once), and sends the final frame
//! and close frame (docs/PROTOCOL.md, Closing).
//!
//! It is not a task of its own: the connection's one task polls it beside
//! the socket's read side and the session's timers ([`super::run`]). A
//! second task per connection would cost its own allocation (512 bytes
//! with tokio's 128-byte steps), the lock that splits the socket between
//! the two, and a wake-up of each per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::time::{Instant, Sleep, sleep_until, timeout};
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
/// idle: `arrivals` grows on the first delivery, never before, and the
/// write delay's timer on the first write it holds back.
#[derive(Default)]
pub struct Writer {
    /// Broker arrival times of the deliveries fed since the last flush, in
    /// nanoseconds ([`crate::hub::clock_nanos`]).
    arrivals: Vec<u64>,
    /// When the last flush ended, in nanoseconds of [`since_origin`]; 0
    /// before the first.
    last_flush: u64,
    /// Wakes the task when a held-back write may go out.
    hold: Option<Pin<Box<Sleep>>>,
    /// `server.write_delay_ms`, in microseconds: the least time between two
    /// writes to this connection; 0 writes at once.
    delay_micros: u32,
    /// Frames fed since the last flush.
    fed: u8,
    /// The socket failed a write: nothing more is sent.
    failed: bool,
}

/// The origin of [`since_origin`].
fn origin() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    Instant::from_std(*ORIGIN.get_or_init(std::time::Instant::now))
}

/// Nanoseconds since [`origin`], on tokio's clock (paused in tests), never 0.
fn since_origin() -> u64 {
    let since = Instant::now().saturating_duration_since(origin());
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl Writer {
    /// Applies `server.write_delay_ms` (docs/CONFIG.md): at most one write
    /// per `delay` to this connection, frames arriving in between going out
    /// together. A write after a quiet spell of at least `delay` is never
    /// held back.
    pub fn set_delay(&mut self, delay: Duration) {
        self.delay_micros = u32::try_from(delay.as_micros()).unwrap_or(u32::MAX);
    }

    /// Whether the flush of what was fed must wait for the write delay;
    /// registers the task's waker for its end when so.
    fn held(&mut self, cx: &mut Context<'_>) -> bool {
        if self.delay_micros == 0 || self.last_flush == 0 {
            return false;
        }
        let delay = u64::from(self.delay_micros) * 1000;
        let until = self.last_flush.saturating_add(delay);
        if since_origin() >= until {
            return false;
        }
        let at = origin() + Duration::from_nanos(until);
        let hold = self.hold.get_or_insert_with(|| Box::pin(sleep_until(at)));
        if hold.deadline() != at {
            hold.as_mut().reset(at);
        }
        hold.as_mut().poll(cx).is_pending()
    }

    /// Feeds what the queue holds into `sink`, up to [`WRITE_BATCH`]
    /// frames per flush, and flushes; the caller has registered the task's
    /// waker with the queue this poll. `Pending` once everything is written
    /// (the queue wakes the task for more), while the socket is full
    /// (the socket wakes it) or while the write delay holds what was fed
    /// (its timer wakes it); `Ready` once the socket has failed a write,
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
            // Within the write delay of the last flush, what was fed waits
            // in the socket's buffer, joined by what arrives meanwhile (up
            // to a batch), and goes out in one write when the delay ends.
            if drained && self.held(cx) {
                return Poll::Pending;
            }
            if let Err(err) = ready!(sink.as_mut().poll_flush(cx)) {
                return Poll::Ready(err);
            }
            self.fed = 0;
            if self.delay_micros > 0 {
                self.last_flush = since_origin();
            }
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
