//! A backend connection as the router sees it: whole messages go out, and
//! it can be closed. Each backend (TCP today; UDP and WebSocket next)
//! implements [`Link`] in `src/backends/`, so the router never knows what
//! carries its messages and a new transport touches only the backends.
//!
//! The router calls `queue` for every message of one batch of work, then
//! `flush` once, so a transport can hand a whole batch to the kernel in
//! one call (a stream socket) or send each message as it comes (datagrams).

use std::fmt;

/// Why a link did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The connection is gone; nothing more can be sent on it.
    Closed,
    /// Too much is already waiting: this message is dropped (mesh data is
    /// datagrams, and QUIC recovers the loss), the link stays up.
    Congested,
    /// The message cannot be carried by this transport at all.
    TooLarge(usize),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Closed => f.write_str("connection closed"),
            LinkError::Congested => f.write_str("connection is congested"),
            LinkError::TooLarge(n) => write!(f, "message of {n} bytes exceeds 65535"),
        }
    }
}

impl std::error::Error for LinkError {}

pub trait Link: Send {
    /// Adds one whole message to what the next `flush` sends. An error
    /// drops only this message, except `Closed`.
    fn queue(&mut self, msg: &[u8]) -> Result<(), LinkError>;
    /// Hands over everything queued since the last flush, in order.
    fn flush(&mut self) -> Result<(), LinkError>;
    /// Bytes handed over but not yet written to the connection, for
    /// pacing bulk sends (a new peer's advertisements) by the link.
    fn backlog(&self) -> usize {
        0
    }
    /// No more messages: what was queued is still sent, then the
    /// connection closes (which ends the backend's reader too).
    fn close(self: Box<Self>);
}
