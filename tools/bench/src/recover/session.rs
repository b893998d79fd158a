//! One history client across its connections: connect with `since`,
//! account for every frame, abort like a dropped network.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::{STOP, Shared, reached};
use crate::client::{self, SetupError, Ws};
use crate::stats::{scan_delivery, scan_string};
use crate::track::{Outcome, Position, Tracker, scan_position, scan_recovered};

/// One client across its connections.
pub struct Client {
    pub topic: String,
    pub topic_index: usize,
    pub token: String,
    pub source: Option<IpAddr>,
    pub tracker: Tracker,
    pub position: Option<Position>,
    /// After a `recovered:true` reply: the reply's offset, the end of the
    /// replay.
    pub replay_until: Option<u64>,
    /// Bench-clock time the last subscribe reply arrived, in ns.
    pub reply_at_ns: u64,
    pub complete: bool,
}

impl Client {
    /// Connects, authorizes and subscribes, with `since` when recovering
    /// and a position is known.
    pub async fn connect(&mut self, shared: &Shared) -> Result<Ws, SetupError> {
        let (mut ws, session) = client::open(&shared.target, self.source).await?;
        client::request(&mut ws, "authorization", &session, &self.token, "session").await?;
        let since = match (&self.position, shared.recover) {
            (Some(p), true) => format!(
                r#","since":{{"epoch":"{}","offset":{}}}"#,
                p.epoch, p.offset
            ),
            _ => String::new(),
        };
        let text = format!(
            r#"{{"action":"subscribe","session":"{session}","context":"{}"{since}}}"#,
            self.topic
        );
        ws.send(Message::text(text))
            .await
            .map_err(|e| SetupError::new("subscribe", e))?;
        loop {
            let frame = client::next_text(&mut ws).await?;
            if frame.starts_with(r#"{"action":"subscribe""#) {
                if let Some(code) = scan_string(&frame, "error") {
                    return Err(SetupError::new("subscribe", code));
                }
                self.on_reply(&frame, shared);
                return Ok(ws);
            }
            self.on_frame(&frame, shared);
        }
    }

    fn on_reply(&mut self, frame: &str, shared: &Shared) {
        let counters = &shared.counters;
        let recovered = scan_recovered(frame);
        self.replay_until = None;
        self.reply_at_ns = shared.epoch.elapsed().as_nanos() as u64;
        match recovered {
            Some(true) => {
                counters.recovered.fetch_add(1, Relaxed);
                self.replay_until = scan_position(frame).map(|p| p.offset);
            }
            Some(false) => {
                counters.not_recovered.fetch_add(1, Relaxed);
            }
            None => {
                counters.plain_subscribes.fetch_add(1, Relaxed);
            }
        }
        // After recovered:true the replay moves the position; otherwise
        // the client goes on from the reply's position.
        if recovered != Some(true)
            && let Some(p) = scan_position(frame)
        {
            self.advance(p);
        }
    }

    fn advance(&mut self, p: Position) {
        match &self.position {
            Some(q) if q.epoch == p.epoch && q.offset >= p.offset => {}
            Some(q) if q.epoch != p.epoch => {
                self.tracker.restart_offsets();
                self.position = Some(p);
            }
            _ => self.position = Some(p),
        }
    }

    fn on_frame(&mut self, frame: &str, shared: &Shared) {
        let counters = &shared.counters;
        if frame.starts_with(r#"{"action":"message""#) {
            let now = shared.epoch.elapsed().as_nanos() as u64;
            let Some((seq, sent)) = scan_delivery(frame) else {
                // The warm-up message, replayed to a client recovering from
                // the first position, lands here too.
                shared.stats.unparsed.fetch_add(1, Relaxed);
                return;
            };
            let position = scan_position(frame);
            let offset = position.as_ref().map(|p| p.offset);
            let outcome = self.tracker.record(seq, offset);
            if matches!(outcome, Outcome::New | Outcome::OutOfOrder) {
                counters.unique.fetch_add(1, Relaxed);
                let latency = now.saturating_sub(sent);
                match (self.replay_until, offset) {
                    (Some(end), Some(o)) if o <= end => {
                        counters.replayed.fetch_add(1, Relaxed);
                        shared.replay.record(latency);
                        shared
                            .replay_after_reply
                            .record(now.saturating_sub(self.reply_at_ns));
                    }
                    _ => shared.stats.latency.record(latency),
                }
                shared.stats.received.fetch_add(1, Relaxed);
            }
            if let Some(p) = position {
                self.advance(p);
            }
            let goal = shared.goals[self.topic_index].load(Relaxed);
            if goal > 0 && !self.complete && self.tracker.unique >= goal {
                self.complete = true;
                counters.completed.fetch_add(1, Relaxed);
                let start = shared.reconnect_at_ns.load(Relaxed);
                shared.completion.record(now.saturating_sub(start));
            }
        } else if frame.starts_with(r#"{"action":"gap""#) {
            counters.gaps.fetch_add(1, Relaxed);
            if let Some(p) = scan_position(frame) {
                self.advance(p);
            }
        } else if let Some(code) = scan_string(frame, "error") {
            shared.stats.error(format!("server error frame: {code}"));
        }
    }

    /// Reads until `until` resolves (its output) or the server ends the
    /// connection (`None`, counted by reason).
    pub async fn read<T>(
        &mut self,
        ws: &mut Ws,
        shared: &Shared,
        until: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(until);
        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str(), shared),
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| u16::from(f.code)).unwrap_or(0);
                        if code == 1013 {
                            shared.counters.slow_consumer_closes.fetch_add(1, Relaxed);
                        }
                        shared.counters.server_closes.fetch_add(1, Relaxed);
                        shared.stats.error(format!("closed by server: {code}"));
                        return None;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        shared.stats.error(format!("read error: {e}"));
                        return None;
                    }
                    None => {
                        shared.stats.error("closed by server: eof");
                        return None;
                    }
                },
                out = &mut until => return Some(out),
            }
        }
    }

    /// Reconnects after `shared.reconnect_delay`, retrying failures, until
    /// connected or `stop` flips (then `None`).
    pub async fn reconnect(
        &mut self,
        shared: &Shared,
        stop: &mut watch::Receiver<u8>,
    ) -> Option<Ws> {
        loop {
            tokio::select! {
                _ = sleep(shared.reconnect_delay) => {}
                _ = reached(stop, STOP) => return None,
            }
            match timeout(shared.setup_timeout, self.connect(shared)).await {
                Ok(Ok(ws)) => {
                    shared.counters.reconnects.fetch_add(1, Relaxed);
                    return Some(ws);
                }
                Ok(Err(err)) => shared.stats.error(format!("reconnect {}", err.0)),
                Err(_) => shared.stats.error("reconnect: timed out"),
            }
            shared.counters.reconnect_failures.fetch_add(1, Relaxed);
        }
    }
}

/// Aborts the TCP connection (RST, no close handshake): what a dropped
/// network looks like to the gateway.
pub fn abort(ws: Ws) {
    let _ = ws.get_ref().set_zero_linger();
    drop(ws);
}
