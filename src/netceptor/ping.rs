//! Ping and traceroute over the reserved `ping` service (docs/wire.md §9).

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::node::{MAX_FORWARDING_HOPS, PROBLEM_EXPIRED, SendError};
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
    let pc = match net.bind_parked() {
        Ok(pc) => pc,
        Err(e) => return failed("", Duration::ZERO, e),
    };
    let start = Instant::now();
    let refusal = pc.send_reporting(target, "ping", Vec::new(), hops);
    let answer = wait(pc.receiver(), &refusal, start + timeout);
    let rtt = start.elapsed();
    match answer {
        Answer::Delivered(Delivery::Data { from_node, .. }) => Probe {
            from: from_node,
            rtt,
            error: None,
        },
        Answer::Delivered(Delivery::Unreachable {
            message,
            received_from,
        }) => failed(&received_from, rtt, message.problem),
        Answer::Refused(e) => failed("", rtt, e.to_string()),
        Answer::Timeout => failed("", rtt, "timeout".into()),
        Answer::Stopped => failed("", rtt, "router stopped".into()),
    }
}

enum Answer {
    Delivered(Delivery),
    Refused(SendError),
    Timeout,
    Stopped,
}

/// Waits for what comes first: a delivery or a refusal of the send. The
/// router unparks this thread (it bound the service with
/// [`Netceptor::bind_parked`]) after each, so this sleeps in one park
/// instead of crossbeam's backoff, and a reply costs one wake-up.
fn wait(rx: &Receiver<Delivery>, refusal: &Receiver<SendError>, deadline: Instant) -> Answer {
    loop {
        match rx.try_recv() {
            Ok(d) => return Answer::Delivered(d),
            Err(TryRecvError::Disconnected) => return Answer::Stopped,
            Err(TryRecvError::Empty) => {}
        }
        // Closed unused once the router has accepted the send.
        if let Ok(e) = refusal.try_recv() {
            return Answer::Refused(e);
        }
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => std::thread::park_timeout(left),
            _ => return Answer::Timeout,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netceptor::firewall::Firewall;

    #[test]
    fn a_parked_ping_wakes_for_the_echo_and_the_refusal() {
        let (net, router) = Netceptor::start("a", Duration::from_secs(30), Firewall::default());
        let echo = ping(&net, "a", MAX_FORWARDING_HOPS, PING_TIMEOUT);
        assert_eq!((echo.from.as_str(), echo.error), ("a", None));
        let refused = ping(&net, "nowhere", MAX_FORWARDING_HOPS, PING_TIMEOUT);
        assert_eq!(refused.error.as_deref(), Some("no route to node"));
        net.shutdown();
        router.join().unwrap();
    }

    #[test]
    fn a_parked_wait_ends_when_the_router_stops() {
        let (net, router) = Netceptor::start("a", Duration::from_secs(30), Firewall::default());
        let (bound_tx, bound) = crossbeam_channel::bounded(1);
        let waiter = {
            let net = net.clone();
            std::thread::spawn(move || {
                let pc = net.bind_parked().unwrap();
                let (_never, refusal) = crossbeam_channel::bounded(1);
                bound_tx.send(()).unwrap();
                // Far beyond the stop: a wait that missed it ends as a
                // timeout and fails the test instead of hanging it.
                let deadline = Instant::now() + Duration::from_secs(20);
                matches!(wait(pc.receiver(), &refusal, deadline), Answer::Stopped)
            })
        };
        bound.recv().unwrap();
        net.shutdown();
        router.join().unwrap();
        assert!(waiter.join().unwrap());
    }
}
