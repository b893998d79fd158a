//! The Prometheus series of `GET /metrics` (README "HTTP"), one registry per gateway.
//!
//! A registry per [`Metrics`] rather than the process-global one, so several
//! gateways in one process (the integration tests) keep separate counts.
//! Labels carry only bounded values: a reason or an error code, never a
//! topic or a session id. Every family is exported from start, at 0.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Reasons a frame is dropped instead of written (`frames_dropped_total`).
pub const DROP_REASONS: [&str; 2] = ["slow_consumer", "closed"];
/// Codes counted by `auth_failures_total`.
pub const AUTH_CODES: [&str; 3] = ["invalid_token", "unauthenticated", "auth_timeout"];
/// Results counted by `recoveries_total`.
pub const RECOVERY_RESULTS: [&str; 2] = ["recovered", "not_recovered"];

pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// Sessions holding a valid token.
    pub sessions_authenticated: IntGauge,
    /// Session subscriptions, summed over sessions.
    pub subscriptions: IntGauge,
    /// Topics with at least one local subscriber (= broker subscriptions).
    pub topics: IntGauge,
    /// Messages received from the broker for a topic with local subscribers.
    pub broker_messages: IntCounter,
    /// Delivery frames written to sockets.
    pub frames_delivered: IntCounter,
    pub frames_dropped: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub config_reloads: IntCounter,
    pub config_reload_failures: IntCounter,
    pub redis_reconnects: IntCounter,
    /// From a message's arrival from the broker to its frame being written.
    pub delivery_latency: Histogram,
    /// Subscribes with `since`, by whether the range was replayed.
    pub recoveries: IntCounterVec,
    /// Messages replayed to recovering subscribers.
    pub recovered_messages: IntCounter,
    /// `gap` frames' occasions: a topic's missing range was gone.
    pub history_gaps: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric name");
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique metric");
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric name");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        let labelled = |name: &str, help: &str, label: &str, values: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            for value in values {
                vec.with_label_values(&[*value]);
            }
            vec
        };
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "topicgate_delivery_latency_seconds",
                "Time from a message's arrival from the broker to its frame being written to a socket.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(delivery_latency.clone()))
            .expect("unique metric");
        Self {
            connections: gauge("topicgate_connections", "Open WebSocket connections."),
            sessions_authenticated: gauge(
                "topicgate_sessions_authenticated",
                "Sessions holding a valid token.",
            ),
            subscriptions: gauge("topicgate_subscriptions", "Subscriptions held by sessions."),
            topics: gauge(
                "topicgate_topics",
                "Topics with local subscribers, each one broker subscription.",
            ),
            broker_messages: counter(
                "topicgate_broker_messages_total",
                "Messages received from the broker for topics with local subscribers.",
            ),
            frames_delivered: counter(
                "topicgate_frames_delivered_total",
                "Message frames written to client sockets.",
            ),
            frames_dropped: labelled(
                "topicgate_frames_dropped_total",
                "Message frames not delivered, by reason.",
                "reason",
                &DROP_REASONS,
            ),
            auth_failures: labelled(
                "topicgate_auth_failures_total",
                "Refused authorizations and requests, by error code.",
                "code",
                &AUTH_CODES,
            ),
            config_reloads: counter("topicgate_config_reloads_total", "Config reloads applied."),
            config_reload_failures: counter(
                "topicgate_config_reload_failures_total",
                "Config reloads rejected because the new file was invalid.",
            ),
            redis_reconnects: counter(
                "topicgate_redis_reconnects_total",
                "Times the Redis Pub/Sub connection was re-established.",
            ),
            recoveries: labelled(
                "topicgate_recoveries_total",
                "Subscribes with since, by whether the missed messages were replayed.",
                "result",
                &RECOVERY_RESULTS,
            ),
            recovered_messages: counter(
                "topicgate_recovered_messages_total",
                "Recorded messages replayed to recovering subscribers.",
            ),
            history_gaps: counter(
                "topicgate_history_gaps_total",
                "Times a topic's missing range was gone and its subscribers got a gap frame.",
            ),
            delivery_latency,
            registry,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(err) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %err, "cannot render metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn dropped(&self, reason: &str, frames: u64) {
        self.frames_dropped
            .with_label_values(&[reason])
            .inc_by(frames);
    }

    pub fn recovery(&self, recovered: bool) {
        let result = RECOVERY_RESULTS[usize::from(!recovered)];
        self.recoveries.with_label_values(&[result]).inc();
    }

    pub fn auth_failure(&self, code: &str) {
        self.auth_failures.with_label_values(&[code]).inc();
    }
}
