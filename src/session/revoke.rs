//! Subscriptions the server takes back (docs/PROTOCOL.md, Token lifetime
//! and Revocation): on token expiry, and when a new config or a refreshed
//! token no longer allows them.

use std::sync::Arc;

use tokio::time::Instant;

use super::authorize::Auth;
use super::{Session, deadline_after};
use crate::auth::{Identity, Mode};
use crate::config::Config;
use crate::protocol;

impl Session {
    /// The token's `exp` passed: drop every subscription.
    pub(super) fn expire(&mut self) {
        tracing::info!(session = %self.id, "token expired");
        let deadline = (self.config.auth.mode == Mode::Jwt)
            .then(|| deadline_after(Instant::now(), self.config.auth.timeout))
            .flatten();
        self.auth = Auth::None { deadline };
        self.metrics.sessions_authenticated.dec();
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        for topic in topics {
            self.revoke(&topic, "token expired");
        }
        self.client.push(protocol::expired());
    }

    /// A new config: rebind the ACL and revoke what it no longer allows.
    pub(super) fn apply_config(&mut self, config: Arc<Config>) {
        if Arc::ptr_eq(&config, &self.config) {
            return;
        }
        self.config = config;
        self.anonymous = None;
        self.requests.cap(self.config.limits.request_burst);
        if let Auth::Authenticated { claims, policy, .. } = &mut self.auth {
            // The text was written by `serde_json` from a map; should it not
            // read back, no claim is left to allow anything by.
            let identity = Identity {
                claims: serde_json::from_str(claims).unwrap_or_default(),
                expires_at: None,
            };
            *policy = self.config.acl.bind(&identity);
        }
        self.revoke_disallowed("no longer allowed by the acl");
    }

    /// Revokes every held topic the policy that applies now refuses.
    pub(super) fn revoke_disallowed(&mut self, detail: &str) {
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        let Some(policy) = self.policy() else {
            return;
        };
        let denied: Vec<String> = topics
            .into_iter()
            .filter(|t| !policy.check(t).allowed())
            .collect();
        for topic in denied {
            self.revoke(&topic, detail);
        }
    }

    fn revoke(&mut self, topic: &str, detail: &str) {
        if self.topics.remove(topic) {
            self.metrics.subscriptions.dec();
            tracing::info!(session = %self.id, topic, reason = detail, "subscription revoked");
            self.hub.unsubscribe(topic, self.client.id);
            self.client.push(protocol::revoked(topic, detail));
        }
    }
}
