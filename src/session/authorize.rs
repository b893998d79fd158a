//! `authorization`: a token becomes an identity with its ACL bound once
//! (docs/PROTOCOL.md, Requests and Token lifetime).

use std::time::Duration;

use tokio::time::Instant;

use super::{Session, deadline_after};
use crate::acl::Policy;
use crate::auth::{self, Identity, KeyId, Mode};
use crate::protocol::{Disconnect, ErrorCode, Request};

/// Where the session stands with authorization.
pub(super) enum Auth {
    /// No successful authorization yet (or the token expired).
    None {
        /// jwt mode: the connection closes unless authorized by then.
        deadline: Option<Instant>,
    },
    /// A verified identity with its ACL bound once.
    Authenticated {
        /// The token's claims as compact JSON, to rebind the ACL when the
        /// config changes. Text rather than the parsed map: a `BTreeMap`
        /// keeps a 632-byte node even for three claims, on every
        /// connection, and rebinding is rare.
        claims: Box<str>,
        policy: Policy,
        /// When the token stops being valid (includes leeway).
        expires: Option<Instant>,
        /// The key that verified the token; `None` for a bypass-mode token
        /// that did not verify. A reload that no longer configures it
        /// (or switches to jwt when `None`) ends the authorization.
        key: Option<KeyId>,
    },
}

impl Session {
    pub(super) fn authorize(&mut self, request: &Request) {
        let (identity, key) = match self
            .config
            .auth
            .authorize_keyed(&request.context, auth::now())
        {
            Ok(verified) => verified,
            Err(err) => {
                tracing::info!(session = %self.id, reason = %err, "authorization refused");
                self.metrics.auth_failure("invalid_token");
                if self.requests.refuse_authorization() {
                    tracing::info!(session = %self.id, "too many refused authorizations");
                    self.client.close(Disconnect::AuthFailures);
                    return;
                }
                self.fail(request, ErrorCode::InvalidToken, &err.to_string());
                return;
            }
        };
        let policy = self.config.acl.bind(&identity);
        // An `exp` too far away for a timer never expires.
        let expires = identity.expires_at.and_then(|exp| {
            let left = exp.saturating_sub(auth::now());
            deadline_after(Instant::now(), Duration::from_secs(left))
        });
        tracing::info!(session = %self.id, sub = identity.subject().unwrap_or("-"), "session authenticated");
        if matches!(self.auth, Auth::None { .. }) {
            self.metrics.sessions_authenticated.inc();
        }
        self.auth = Auth::Authenticated {
            claims: serde_json::to_string(&identity.claims)
                .unwrap_or_default()
                .into(),
            policy,
            expires,
            key,
        };
        // A refresh keeps what the new token allows and revokes the rest.
        self.revoke_disallowed("no longer allowed by the new token");
        self.succeed(request);
    }

    /// The ACL that applies now, or `None` when the request must be refused
    /// as unauthenticated.
    pub(super) fn policy(&mut self) -> Option<&Policy> {
        match &self.auth {
            Auth::Authenticated { policy, .. } => Some(policy),
            Auth::None { .. } if self.config.auth.mode == Mode::Bypass => {
                let acl = &self.config.acl;
                Some(
                    self.anonymous
                        .get_or_insert_with(|| Box::new(acl.bind(&Identity::anonymous()))),
                )
            }
            Auth::None { .. } => None,
        }
    }
}

impl Auth {
    /// The next instant authorization changes by itself: the auth deadline
    /// before authorization, the token's expiry after.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Auth::None { deadline } => *deadline,
            Auth::Authenticated { expires, .. } => *expires,
        }
    }
}
