//! Bounds on the state other nodes can make this node keep, and the
//! rate-limited lines logged when one is reached.
//!
//! Everything here is fed from the network: without bounds one peer could
//! invent any number of nodes, connections or advertisements, and every
//! node of the mesh would store and re-flood them. What is over a bound is
//! dropped (never flooded on); what is already known keeps working.

use std::time::Instant;

use log::warn;

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

/// One rate-limited log line per kind of refusal.
#[derive(Debug, Default)]
pub(super) struct Overflow {
    nodes: RateLog,
    connections: RateLog,
    ads: RateLog,
    bad_update: RateLog,
    bad_ad: RateLog,
    too_large: RateLog,
}

/// Which line to log.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    Nodes,
    Connections,
    Ads,
    BadUpdate,
    BadAd,
    TooLarge,
}

impl Overflow {
    /// Logs `what` as a warning unless one like it was logged recently.
    pub fn warn(&mut self, kind: Refusal, now: Instant, what: impl FnOnce() -> String) {
        let log = match kind {
            Refusal::Nodes => &mut self.nodes,
            Refusal::Connections => &mut self.connections,
            Refusal::Ads => &mut self.ads,
            Refusal::BadUpdate => &mut self.bad_update,
            Refusal::BadAd => &mut self.bad_ad,
            Refusal::TooLarge => &mut self.too_large,
        };
        if let Some(held) = log.allow(now) {
            warn!("{}{}", what(), ratelog::suffix(held));
        }
    }
}
