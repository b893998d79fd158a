//! What goes wrong, as the client is told: reply error codes that keep the
//! connection, and the reasons the server closes it (docs/PROTOCOL.md,
//! "Errors" and "Closing").

use super::frame::{Frame, Reply, encode};

/// Error codes of replies that keep the connection (docs/PROTOCOL.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    UnknownAction,
    InvalidSession,
    InvalidToken,
    Unauthenticated,
    Forbidden,
    LimitExceeded,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidSession => "invalid_session",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnknownAction => "unknown action",
            ErrorCode::InvalidSession => "invalid session",
            ErrorCode::InvalidToken => "session unauthorized",
            ErrorCode::Unauthenticated => "session unauthenticated",
            ErrorCode::Forbidden => "context forbidden",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::Unavailable => "context unavailable",
        }
    }
}

/// Why the server closes a connection, with its close code (docs/PROTOCOL.md,
/// "Closing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The peer closed or the socket failed: nothing more is sent.
    Gone,
    TooLarge,
    AuthTimeout,
    Idle,
    SlowConsumer,
    Shutdown,
    /// Too many refused authorizations on one connection: each costs a
    /// signature check, so a client that keeps guessing is cut off.
    AuthFailures,
    /// The session failed inside the server (a bug): close 1011 with no
    /// final frame, so the client reconnects rather than waits.
    Internal,
}

impl Disconnect {
    /// The `error` code of the final frame, or `None` when nothing is sent.
    pub fn code(self) -> Option<&'static str> {
        match self {
            Disconnect::Gone => None,
            Disconnect::TooLarge => Some("too_large"),
            Disconnect::AuthTimeout => Some("auth_timeout"),
            Disconnect::Idle => Some("idle_timeout"),
            Disconnect::SlowConsumer => Some("slow_consumer"),
            Disconnect::Shutdown => Some("shutdown"),
            Disconnect::AuthFailures => Some("invalid_token"),
            Disconnect::Internal => None,
        }
    }

    /// WebSocket close code; `None` when the TCP connection is just dropped.
    pub fn close_code(self) -> Option<u16> {
        match self {
            Disconnect::Gone | Disconnect::Idle => None,
            Disconnect::TooLarge => Some(1009),
            Disconnect::AuthTimeout => Some(1008),
            Disconnect::SlowConsumer => Some(1013),
            Disconnect::Shutdown => Some(1001),
            Disconnect::AuthFailures => Some(1008),
            Disconnect::Internal => Some(1011),
        }
    }

    pub fn final_frame(self) -> Option<Frame> {
        let code = self.code()?;
        Some(encode(&Reply {
            action: "connect",
            message: "client disconnect",
            error: Some(code),
            ..Reply::default()
        }))
    }
}
