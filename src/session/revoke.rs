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
        self.end_authorization("token expired");
    }

    /// The authorization no longer holds (`reason`): every subscription is
    /// revoked, the client is told its session expired, and in jwt mode the
    /// auth deadline starts.
    fn end_authorization(&mut self, reason: &str) {
        tracing::info!(session = %self.id, reason, "authorization ended");
        self.auth = Auth::None {
            deadline: self.auth_deadline(),
        };
        self.metrics.sessions_authenticated.dec();
        self.revoke_all(reason);
        self.client.push(protocol::expired());
    }

    /// When an unauthenticated session must have authorized by, from now.
    fn auth_deadline(&self) -> Option<Instant> {
        (self.config.auth.mode == Mode::Jwt)
            .then(|| deadline_after(Instant::now(), self.config.auth.timeout))
            .flatten()
    }

    fn revoke_all(&mut self, detail: &str) {
        for topic in self.topics.to_vec() {
            self.revoke(&topic, detail);
        }
    }

    /// A new config: rebind the ACL and revoke what it no longer allows.
    /// In jwt mode a session whose token was verified by a key no longer
    /// configured, or not verified at all (bypass), must authorize again
    /// (docs/PROTOCOL.md, "Token lifetime").
    pub(super) fn apply_config(&mut self, config: Arc<Config>) {
        if Arc::ptr_eq(&config, &self.config) {
            return;
        }
        self.config = config;
        self.anonymous = None;
        self.requests.cap(self.config.limits.request_burst);
        let jwt = self.config.auth.mode == Mode::Jwt;
        match &mut self.auth {
            Auth::Authenticated { key, .. }
                if jwt && !key.is_some_and(|key| self.config.auth.has_key(key)) =>
            {
                let reason = match key {
                    Some(_) => "token key no longer configured",
                    None => "authorization required",
                };
                self.end_authorization(reason);
                return;
            }
            Auth::None { deadline: None } if jwt => {
                // Anonymous bypass subscriptions end with bypass.
                self.auth = Auth::None {
                    deadline: self.auth_deadline(),
                };
                self.revoke_all("authorization required");
                return;
            }
            Auth::None { deadline } if !jwt => *deadline = None,
            _ => {}
        }
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
        let topics = self.topics.to_vec();
        let Some(policy) = self.policy() else {
            return;
        };
        let denied: Vec<Box<str>> = topics
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
