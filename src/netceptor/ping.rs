//! Ping and traceroute over the reserved `ping` service (docs/wire.md §9).

use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::node::{MAX_FORWARDING_HOPS, PROBLEM_EXPIRED};
use super::router::{Delivery, Netceptor};

pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one probe. `from` is empty when nobody answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub from: String,
    pub rtt: Duration,
    pub error: Option<String>,
}

/// Sends one empty datagram to `target:ping` with a hop budget and waits for
/// the echo or an unreachable report.
pub fn ping(net: &Netceptor, target: &str, hops: u8, timeout: Duration) -> Probe {
    let failed = |from: &str, rtt, e: String| Probe {
        from: from.to_string(),
        rtt,
        error: Some(e),
    };
    let pc = match net.bind(None, None) {
        Ok(pc) => pc,
        Err(e) => return failed("", Duration::ZERO, e),
    };
    let start = Instant::now();
    if let Err(e) = pc.send_checked(target, "ping", Vec::new(), hops) {
        return failed("", start.elapsed(), e.to_string());
    }
    match pc.receiver().recv_timeout(timeout) {
        Ok(Delivery::Data { from_node, .. }) => Probe {
            from: from_node,
            rtt: start.elapsed(),
            error: None,
        },
        Ok(Delivery::Unreachable {
            message,
            received_from,
        }) => failed(&received_from, start.elapsed(), message.problem),
        Err(RecvTimeoutError::Timeout) => failed("", start.elapsed(), "timeout".into()),
        Err(RecvTimeoutError::Disconnected) => failed("", start.elapsed(), "router stopped".into()),
    }
}

/// Probes with hop budgets 0, 1, 2, … until the target answers or a hop
/// fails with anything but an expired budget.
pub fn traceroute(net: &Netceptor, target: &str) -> Vec<Probe> {
    let mut hops = Vec::new();
    for budget in 0..=MAX_FORWARDING_HOPS {
        let probe = ping(net, target, budget, PING_TIMEOUT);
        let expired = probe.error.as_deref() == Some(PROBLEM_EXPIRED);
        let done = !expired;
        hops.push(Probe {
            error: probe.error.filter(|e| e != PROBLEM_EXPIRED),
            ..probe
        });
        if done {
            break;
        }
    }
    hops
}
