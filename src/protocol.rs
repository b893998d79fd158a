//! The wire protocol of docs/PROTOCOL.md: client requests in, server frames
//! out.
//!
//! Decoding is strict about what the protocol requires (an object with
//! non-empty `action`, `session`, `context` strings) and ignores unknown
//! fields. Every frame the server sends is built here, so the exact field
//! sets of docs/PROTOCOL.md ("Frames") live in one place.
//!
//! One file per role: `request` decodes what a client sends, `frame` builds
//! what the server sends, `error` names the reply error codes and the close
//! reasons, and `json` vets a payload before a delivery embeds it raw.

mod error;
mod frame;
mod json;
mod request;

pub use error::{Disconnect, ErrorCode};
pub use frame::{
    Frame, decode_failure, encode_delivery, expired, failure, gap, greeting, revoked, subscribed,
    success,
};
pub use request::{Action, DecodeError, Id, Request, Since, decode, validate_topic};

#[cfg(test)]
mod tests;
