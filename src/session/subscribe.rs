//! `subscribe` and `unsubscribe` (docs/PROTOCOL.md, Requests): checked
//! against the session's policy, then held at the hub, which answers a
//! subscribe with the topic's position and replays from its `since`
//! (docs/PROTOCOL.md, "Positions and recovery").

use super::Session;
use crate::acl::Decision;
use crate::hub::Join;
use crate::protocol::{self, ErrorCode, Request};

impl Session {
    /// Checks the topic and authorization shared by subscribe and unsubscribe.
    fn admit(&mut self, request: &Request) -> Option<Decision> {
        if let Err(detail) = protocol::validate_topic(&request.context) {
            self.fail(request, ErrorCode::BadRequest, &detail);
            return None;
        }
        match self.policy() {
            Some(policy) => Some(policy.check(&request.context)),
            None => {
                self.metrics.auth_failure("unauthenticated");
                self.fail(
                    request,
                    ErrorCode::Unauthenticated,
                    "send a successful authorization first",
                );
                None
            }
        }
    }

    pub(super) async fn subscribe(&mut self, request: &Request) {
        let Some(decision) = self.admit(request) else {
            return;
        };
        let topic = &request.context;
        if !decision.allowed() {
            let detail = match decision {
                Decision::Deny(Some(rule)) => format!("acl rule {rule} denies topic {topic}"),
                _ => format!("no rule allows topic {topic}"),
            };
            self.fail(request, ErrorCode::Forbidden, &detail);
            return;
        }
        if self.topics.contains(topic) {
            self.succeed(request);
            return;
        }
        let max = self.config.limits.max_subscriptions;
        if self.topics.len() >= max {
            let detail = format!("at most {max} subscriptions per session");
            self.fail(request, ErrorCode::LimitExceeded, &detail);
            return;
        }
        let join = Join {
            id: request.id.as_ref(),
            since: request.since.as_ref(),
        };
        match self.hub.subscribe(topic, &self.client, join).await {
            Ok(()) => {
                self.topics.insert(topic);
                self.metrics.subscriptions.inc();
            }
            Err(err) => {
                tracing::warn!(session = %self.id, error = %err, "subscribe unavailable");
                self.fail(request, ErrorCode::Unavailable, &err.to_string());
            }
        }
    }

    pub(super) fn unsubscribe(&mut self, request: &Request) {
        if self.admit(request).is_none() {
            return;
        }
        if self.topics.remove(&request.context) {
            self.metrics.subscriptions.dec();
            self.hub.unsubscribe(&request.context, self.client.id);
        }
        self.succeed(request);
    }
}
