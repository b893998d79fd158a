//! The write half of a session: drains the send queue into the socket,
//! several frames per flush, and sends the final frame and close frame
//! (docs/PROTOCOL.md, Closing).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::hub::SendQueue;
use crate::metrics::Metrics;
use crate::protocol::Disconnect;

/// How long the final frame and close frame may take before the TCP
/// connection is simply dropped (slow consumers).
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most frames written per flush.
const WRITE_BATCH: usize = 64;

/// Drains the queue into the socket until the session closes, then sends the
/// final frame and close frame when the reason calls for them. Heartbeat
/// pings come through the queue too: the reader owns the timers.
///
/// Holds no buffer or timer of its own while idle: each wake takes up to
/// [`WRITE_BATCH`] frames from the queue, feeding each straight into the
/// sink, so an idle connection pays only for this future. `arrivals` grows
/// on the first delivery, never before.
///
/// Not an `async fn`, which would keep its arguments twice in the future:
/// this one is spawned per connection, and its size is pinned by a test.
#[expect(
    clippy::manual_async_fn,
    reason = "the async block holds the arguments once"
)]
pub(super) fn write_loop<W>(
    mut sink: W,
    queue: Arc<SendQueue>,
    metrics: Arc<Metrics>,
) -> impl Future<Output = W> + Send
where
    W: Sink<Message, Error = WsError> + Unpin + Send,
{
    async move {
        // Broker arrival times of the deliveries written since the last flush.
        let mut arrivals: Vec<Instant> = Vec::new();
        loop {
            if !queue.ready().await {
                break;
            }
            let write = async {
                if queue.take_ping() {
                    sink.feed(Message::Ping(Default::default())).await?;
                }
                let mut fed = 0;
                while fed < WRITE_BATCH {
                    let Some(outbound) = queue.pop() else { break };
                    arrivals.extend(outbound.arrived());
                    sink.feed(Message::Text(outbound.frame)).await?;
                    fed += 1;
                }
                sink.flush().await
            };
            let written = tokio::select! {
                _ = queue.closing_requested() => break,
                written = write => written,
            };
            if written.is_err() {
                // The socket is gone: refuse further frames rather than hold
                // them until the session notices.
                queue.shut();
                return sink;
            }
            let now = Instant::now();
            metrics.frames_delivered.inc_by(arrivals.len() as u64);
            for arrived in arrivals.drain(..) {
                let latency = now.saturating_duration_since(arrived);
                metrics.delivery_latency.observe(latency.as_secs_f64());
            }
        }
        // A slow consumer's queue is discarded unsent, as is anything left.
        let (reason, left) = queue.shut();
        if left > 0 {
            let why = match reason {
                Some(Disconnect::SlowConsumer) => "slow_consumer",
                _ => "closed",
            };
            metrics.dropped(why, left);
        }
        drop(queue);
        let Some(reason) = reason else { return sink };
        if reason == Disconnect::Gone {
            // The peer's close frame was read and tungstenite queued the reply;
            // send it, so a clean close ends as 1000 rather than 1006.
            let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
            return sink;
        }
        let Some(code) = reason.close_code() else {
            return sink;
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
        sink
    }
}
