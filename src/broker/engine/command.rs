//! What a broker handle asks of its actor, in order.

use tokio::sync::oneshot;

use super::BrokerError;
use crate::config::Redis;

/// Where the actor answers a subscribe.
pub(crate) type Reply = oneshot::Sender<Result<(), BrokerError>>;

/// One request to an engine's actor. The actor takes them in order, so an
/// UNSUBSCRIBE and a later SUBSCRIBE of the same topic reach Redis in that
/// order.
pub(crate) enum Command {
    /// Hold `topic`; answer once Redis confirms it.
    Subscribe(String, Reply),
    /// Let go of `topic`.
    Unsubscribe(String),
    /// Move to new `[redis]` settings without losing a subscription.
    Reconfigure(Redis),
}
