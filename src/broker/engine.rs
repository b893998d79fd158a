//! What the two Redis engines share: the broker handle ([`Handle`]), the
//! commands it sends its actor ([`Command`]), the typed errors
//! ([`BrokerError`]), the connection helpers (`link`) and the links'
//! health check (`health`).
//!
//! Each engine supplies only its topology: an actor that owns its
//! subscribing connections (one Pub/Sub connection, or one per cluster
//! master with slot routing) and a [`Publish`] path.

mod command;
mod error;
mod handle;
mod health;
mod link;

pub(crate) use command::Command;
pub use error::BrokerError;
pub(crate) use error::{from_pool, from_redis};
pub(crate) use handle::{Handle, Publish, Spawn, Waiting};
pub(crate) use health::until_silent;
pub(crate) use link::{Backoff, IO_TIMEOUT, addr_of, url_info, within};
