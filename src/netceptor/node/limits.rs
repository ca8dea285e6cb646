//! Bounds on the state other nodes can make this node keep, and the
//! rate-limited lines logged when one is reached.
//!
//! Everything here is fed from the network: without bounds one peer could
//! invent any number of nodes, connections or advertisements, and every
//! node of the mesh would store and re-flood them. What is over a bound is
//! dropped (never flooded on); what is already known keeps working.

use std::time::Instant;

use crate::ratelog::{self, RateLog};

/// The bounds, from the `node` directive (docs/config.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Other nodes known from routing updates (`maxnodes`).
    pub max_nodes: usize,
    /// Connections in the table of connection costs, all nodes together
    /// (`maxconnections`).
    pub max_connections: usize,
    /// Service advertisements of other nodes (`maxadvertisements`).
    pub max_ads: usize,
}

impl Limits {
    pub const DEFAULT_MAX_NODES: usize = 10_000;
    pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
    pub const DEFAULT_MAX_ADS: usize = 20_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nodes: Self::DEFAULT_MAX_NODES,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_ads: Self::DEFAULT_MAX_ADS,
        }
    }
}

/// Which line to log: each kind has its own rate limit.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    Nodes,
    Connections,
    Ads,
    BadUpdate,
    BadAd,
    TooLarge,
    /// A frame that does not decode, or of an unknown type.
    Undecodable,
    /// A data message naming a node hash we do not know.
    UnknownHash,
    /// A data message to forward to a node with no route.
    NoRoute,
    /// An unreachable message, received or malformed.
    Unreachable,
    /// A routing update with a cost that is no positive number.
    BadCost,
}

const KINDS: usize = Refusal::BadCost as usize + 1;

/// One rate-limited log line per kind of refusal.
#[derive(Debug, Default)]
pub(super) struct Overflow {
    logs: [RateLog; KINDS],
}

impl Overflow {
    /// Logs `what` as a warning unless one like it was logged recently.
    pub fn warn(&mut self, kind: Refusal, now: Instant, what: impl FnOnce() -> String) {
        self.log(kind, log::Level::Warn, now, what);
    }

    /// Logs `what` at `level` unless one like it was logged recently.
    pub fn log(
        &mut self,
        kind: Refusal,
        level: log::Level,
        now: Instant,
        what: impl FnOnce() -> String,
    ) {
        if !log::log_enabled!(level) {
            return;
        }
        if let Some(held) = self.logs[kind as usize].allow(now) {
            log::log!(level, "{}{}", what(), ratelog::suffix(held));
        }
    }
}
