//! The dialer's loop shared by every backend: connect, run the session
//! until it ends, and try again with backoff until the backend stops.
//!
//! Go waits 5 s after the first failure (×1.5 per further one, at most
//! 20 s), so a relay that restarts in a second is back in the mesh only
//! 5 s later. Ours starts at half a second and doubles to the same 20 s
//! cap, with ±25 % jitter so the peers of a restarted hub do not all dial
//! in the same instant. Only a session that lasted resets the wait: a
//! peer that accepts and then rejects us at once is not redialled in a
//! tight loop.

use std::time::{Duration, Instant};

use log::{error, warn};

use super::scope::Scope;
use crate::random::IdGen;

const REDIAL_FIRST: Duration = Duration::from_millis(500);
const REDIAL_MAX: Duration = Duration::from_secs(20);
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
    while !scope.is_stopped() {
        let started = Instant::now();
        let outcome = attempt();
        if scope.is_stopped() {
            return;
        }
        match outcome {
            Attempt::Ran if !redial => {
                warn!("Backend connection exited");
                return;
            }
            Attempt::Ran => {
                if started.elapsed() >= SETTLED {
                    backoff.reset();
                }
                warn!("Backend connection exited (will retry)");
            }
            Attempt::Failed(e) if redial => warn!("Backend connection failed (will retry): {e}"),
            Attempt::Failed(e) => {
                error!("Backend connection failed: {e}");
                return;
            }
        }
        if !scope.sleep(backoff.next_wait()) {
            return;
        }
    }
}

/// Waits between attempts: doubling from [`REDIAL_FIRST`] to
/// [`REDIAL_MAX`], each drawn within ±25 %.
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

    fn next_wait(&mut self) -> Duration {
        // A factor in [0.75, 1.25), from 16 random bits.
        let factor = 0.75 + (self.rng.next_u64() & 0xffff) as f64 / 131_072.0;
        let wait = self.base.mul_f64(factor);
        self.base = (self.base * 2).min(REDIAL_MAX);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_twenty_seconds_within_a_quarter() {
        let mut b = Backoff::new(IdGen::from_seed(1));
        let bases = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0];
        for base in bases {
            let wait = b.next_wait().as_secs_f64();
            assert!(
                (base * 0.75..base * 1.25).contains(&wait),
                "{wait} not within 25 % of {base}"
            );
        }
        b.reset();
        assert!(b.next_wait() < Duration::from_millis(625));
    }

    #[test]
    fn waits_are_jittered() {
        let mut b = Backoff::new(IdGen::from_seed(2));
        let waits: Vec<Duration> = (0..8)
            .map(|_| {
                b.reset();
                b.next_wait()
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
