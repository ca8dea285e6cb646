//! Why a dial failed. The texts are the ones control clients and logs
//! have always shown, so replies stay comparable with Go nodes.

use std::fmt;

use quinn_proto::{ConnectError, ConnectionError, WriteError};

use super::conn::describe;

/// Why [`dial`](super::dial) or [`dial_over`](super::dial_over) gave no
/// stream.
#[derive(Debug)]
pub enum DialError {
    /// The mesh knows no route to the node; nothing was sent.
    NoRoute,
    /// The node or service name is one nothing can have; holds why.
    BadName(String),
    /// No ephemeral service could be bound for the dial.
    Bind(String),
    /// The TLS client settings could not be built.
    Tls(String),
    /// quinn refused to start the connection.
    Connect(ConnectError),
    /// The endpoint thread could not be started.
    Spawn(std::io::Error),
    /// The mesh reported the target unreachable (e.g. `service unknown`).
    Unreachable {
        node: String,
        service: String,
        problem: String,
    },
    /// The handshake did not finish within the dial timeout.
    Timeout,
    /// The connection ended before the stream opened.
    Handshake(ConnectionError),
    /// Our TLS client refused the server's certificate; Go's words for why.
    Certificate(String),
    /// The peer's transport parameters allow no bidirectional stream.
    NoStreams,
    /// A shared connection already carries as many streams as the peer
    /// allows at once; another connection may carry this one.
    Full,
    /// A shared connection is closing or gone (failed, idle, lingered
    /// out): it opens no more streams.
    Closed,
    /// The stream hello could not be written.
    Hello(WriteError),
    /// The mesh service under the dial was closed.
    MeshClosed,
    /// The endpoint thread of a new dial ended without an answer.
    Stopped,
    /// The dial this one waited for, to the same target, failed; its
    /// error's text.
    Joined(String),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::NoRoute => f.write_str("no route to node"),
            DialError::Bind(e) | DialError::Tls(e) | DialError::BadName(e) => f.write_str(e),
            DialError::Joined(e) => f.write_str(e),
            DialError::Connect(e) => write!(f, "{e}"),
            DialError::Spawn(e) => write!(f, "{e}"),
            DialError::Unreachable {
                node,
                service,
                problem,
            } => write!(
                f,
                "remote service {service} to node {node} is unreachable: {problem}"
            ),
            DialError::Timeout => f.write_str("timeout: handshake did not complete in time"),
            DialError::Handshake(e) => f.write_str(&describe(e).1),
            DialError::Certificate(why) => f.write_str(why),
            DialError::NoStreams => f.write_str("peer allows no streams"),
            DialError::Full => f.write_str("connection carries all the streams it may"),
            DialError::Closed => f.write_str("connection closed"),
            DialError::Hello(e) => write!(f, "cannot write stream hello: {e}"),
            DialError::MeshClosed => f.write_str("mesh service closed"),
            DialError::Stopped => f.write_str("stream driver stopped"),
        }
    }
}

impl std::error::Error for DialError {}

/// Callers that report errors as text (the control protocol) keep doing so.
impl From<DialError> for String {
    fn from(e: DialError) -> String {
        e.to_string()
    }
}
