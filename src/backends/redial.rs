//! The dialer's loop shared by every backend: connect, run the session
//! until it ends, and try again with backoff until the backend stops.
//!
//! Go waits 5 s after the first failure (×1.5 per further one, at most
//! 20 s), so a relay that restarts is back in the mesh up to 20 s later.
//! Ours starts at half a second and doubles, with ±25 % jitter so the
//! peers of a restarted hub do not all dial in the same instant. While the
//! peer is absent (the dial fails) the wait stops growing at 2 s: a failed
//! connect costs next to nothing, and a relay that comes back after any
//! outage is in the mesh again within about 2 s. A peer that accepts and
//! then drops us (it rejects our ID or cost) is present and unwilling:
//! there the wait grows to Go's 20 s, and only a session that lasted
//! resets it. Failure lines are rate-limited, since they now come often.

use std::time::{Duration, Instant};

use log::{error, warn};

use super::scope::Scope;
use crate::random::IdGen;
use crate::ratelog::{self, RateLog};

const REDIAL_FIRST: Duration = Duration::from_millis(500);
/// The longest wait while dials fail.
const REDIAL_MAX_ABSENT: Duration = Duration::from_secs(2);
/// The longest wait after sessions that ended at once.
const REDIAL_MAX: Duration = Duration::from_secs(20);
/// Failure lines per dialer and minute, at most.
const FAILURE_LINES: u32 = 6;
/// A session shorter than this counts as a failure for the backoff.
const SETTLED: Duration = Duration::from_secs(10);

/// What one attempt did.
pub enum Attempt {
    /// A session ran and has ended.
    Ran,
    /// No session could be set up; the text says why.
    Failed(String),
}

/// Runs `attempt` until the backend stops, or until the first session or
/// failure when `redial` is off.
pub fn run(redial: bool, scope: &Scope, mut attempt: impl FnMut() -> Attempt) {
    let mut backoff = Backoff::new(IdGen::from_os());
    let mut failures = RateLog::new(Duration::from_secs(60), FAILURE_LINES);
    while !scope.is_stopped() {
        let started = Instant::now();
        let outcome = attempt();
        if scope.is_stopped() {
            return;
        }
        let cap = match outcome {
            Attempt::Ran if !redial => {
                warn!("Backend connection exited");
                return;
            }
            Attempt::Ran => {
                if started.elapsed() >= SETTLED {
                    backoff.reset();
                }
                warn!("Backend connection exited (will retry)");
                REDIAL_MAX
            }
            Attempt::Failed(e) if redial => {
                if let Some(held) = failures.allow(Instant::now()) {
                    let more = ratelog::suffix(held);
                    warn!("Backend connection failed (will retry): {e}{more}");
                }
                REDIAL_MAX_ABSENT
            }
            Attempt::Failed(e) => {
                error!("Backend connection failed: {e}");
                return;
            }
        };
        if !scope.sleep(backoff.next_wait(cap)) {
            return;
        }
    }
}

/// Waits between attempts: doubling from [`REDIAL_FIRST`] up to a cap,
/// each drawn within ±25 %.
struct Backoff {
    base: Duration,
    rng: IdGen,
}

impl Backoff {
    fn new(rng: IdGen) -> Backoff {
        Backoff {
            base: REDIAL_FIRST,
            rng,
        }
    }

    fn reset(&mut self) {
        self.base = REDIAL_FIRST;
    }

    fn next_wait(&mut self, cap: Duration) -> Duration {
        self.base = self.base.min(cap);
        // A factor in [0.75, 1.25), from 16 random bits.
        let factor = 0.75 + (self.rng.next_u64() & 0xffff) as f64 / 131_072.0;
        let wait = self.base.mul_f64(factor);
        self.base = (self.base * 2).min(cap);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_waits(b: &mut Backoff, cap: Duration, bases: &[f64]) {
        for base in bases {
            let wait = b.next_wait(cap).as_secs_f64();
            assert!(
                (base * 0.75..base * 1.25).contains(&wait),
                "{wait} not within 25 % of {base}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_within_a_quarter() {
        let mut b = Backoff::new(IdGen::from_seed(1));
        let rejected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0];
        assert_waits(&mut b, REDIAL_MAX, &rejected);
        b.reset();
        assert!(b.next_wait(REDIAL_MAX) < Duration::from_millis(625));
    }

    #[test]
    fn an_absent_peer_is_tried_every_two_seconds_at_most() {
        let mut b = Backoff::new(IdGen::from_seed(3));
        assert_waits(&mut b, REDIAL_MAX_ABSENT, &[0.5, 1.0, 2.0, 2.0, 2.0]);
        // After long waits for a rejecting peer, its absence shortens them.
        assert_waits(&mut b, REDIAL_MAX, &[2.0, 4.0, 8.0]);
        assert_waits(&mut b, REDIAL_MAX_ABSENT, &[2.0]);
    }

    #[test]
    fn waits_are_jittered() {
        let mut b = Backoff::new(IdGen::from_seed(2));
        let waits: Vec<Duration> = (0..8)
            .map(|_| {
                b.reset();
                b.next_wait(REDIAL_MAX)
            })
            .collect();
        assert!(waits.windows(2).any(|w| w[0] != w[1]), "{waits:?}");
    }

    #[test]
    fn without_redial_one_attempt_is_made() {
        let mut tries = 0;
        run(false, &Scope::new(), || {
            tries += 1;
            Attempt::Failed("refused".into())
        });
        assert_eq!(tries, 1);
    }

    #[test]
    fn a_stopped_backend_makes_no_attempt() {
        let mut tries = 0;
        let scope = Scope::new();
        let (net, router) =
            crate::netceptor::Netceptor::start("redial-test", SETTLED * 3, Default::default());
        scope.stop(&net);
        run(true, &scope, || {
            tries += 1;
            Attempt::Ran
        });
        assert_eq!(tries, 0);
        net.shutdown();
        router.join().unwrap();
    }
}
