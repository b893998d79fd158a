//! The one Redis Pub/Sub connection: an actor that SUBSCRIBEs and
//! UNSUBSCRIBEs in the order the hub asks, and a pump that hands every
//! message to the hub.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};

use crate::hub::Hub;

/// What the hub asks of the actor. The hub sends these under its lock, and
/// the actor carries them out one at a time, so Redis sees the SUBSCRIBEs
/// and UNSUBSCRIBEs of a topic in the order its subscribers came and went.
pub enum Command {
    /// The topic's first local subscriber: SUBSCRIBE, then answer whether
    /// Redis confirmed it.
    Subscribe(String, oneshot::Sender<bool>),
    /// A later subscriber: answer whether the topic is held at Redis once
    /// every earlier command (its first subscriber's SUBSCRIBE) is done.
    Confirm(String, oneshot::Sender<bool>),
    /// The topic's last local subscriber left.
    Unsubscribe(String),
}

/// Opens the Pub/Sub connection.
pub async fn connect(url: &str) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let pubsub = redis::Client::open(url)?.get_async_pubsub().await?;
    Ok(pubsub.split())
}

/// Carries out the hub's commands until the hub is gone.
pub async fn run_commands(mut sink: PubSubSink, mut commands: mpsc::UnboundedReceiver<Command>) {
    // Topics Redis confirmed: what a `Confirm` answers from.
    let mut held = HashSet::new();
    while let Some(command) = commands.recv().await {
        match command {
            Command::Subscribe(topic, done) => {
                let confirmed = match sink.subscribe(&topic).await {
                    Ok(()) => held.insert(topic),
                    Err(err) => {
                        eprintln!("SUBSCRIBE {topic}: {err}");
                        false
                    }
                };
                let _ = done.send(confirmed);
            }
            Command::Confirm(topic, done) => {
                let _ = done.send(held.contains(&topic));
            }
            Command::Unsubscribe(topic) => {
                held.remove(&topic);
                if let Err(err) = sink.unsubscribe(&topic).await {
                    eprintln!("UNSUBSCRIBE {topic}: {err}");
                }
            }
        }
    }
}

/// Hands every message to the hub; returns when the connection ends.
pub async fn pump(mut messages: PubSubStream, hub: Arc<Hub>) {
    while let Some(message) = messages.next().await {
        hub.deliver(message.get_channel_name(), message.get_payload_bytes());
    }
}
