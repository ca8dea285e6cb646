//! The dialer's loop shared by every backend: connect, run the session
//! until it ends, and try again with backoff (docs/wire.md §2.1): 5 s after
//! a failure, ×1.5 per further failure, at most 20 s; a session that ran
//! resets the wait.

use std::time::Duration;

use log::{error, warn};

const REDIAL_FIRST: Duration = Duration::from_secs(5);
const REDIAL_MAX: Duration = Duration::from_secs(20);

/// What one attempt did.
pub enum Attempt {
    /// A session ran and has ended.
    Ran,
    /// No session could be set up; the text says why.
    Failed(String),
}

/// Runs `attempt` until it fails or ends with `redial` off, or forever.
pub fn run(redial: bool, mut attempt: impl FnMut() -> Attempt) {
    let mut backoff = REDIAL_FIRST;
    loop {
        match attempt() {
            Attempt::Ran => {
                backoff = REDIAL_FIRST;
                if !redial {
                    warn!("Backend connection exited");
                    return;
                }
                warn!("Backend connection exited (will retry)");
            }
            Attempt::Failed(e) if redial => warn!("Backend connection failed (will retry): {e}"),
            Attempt::Failed(e) => {
                error!("Backend connection failed: {e}");
                return;
            }
        }
        std::thread::sleep(backoff);
        backoff = next_backoff(backoff);
    }
}

fn next_backoff(current: Duration) -> Duration {
    current.mul_f64(1.5).min(REDIAL_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_half_up_to_twenty_seconds() {
        let mut waits = vec![REDIAL_FIRST];
        for _ in 0..5 {
            waits.push(next_backoff(*waits.last().unwrap()));
        }
        let secs: Vec<f64> = waits.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [5.0, 7.5, 11.25, 16.875, 20.0, 20.0]);
    }

    #[test]
    fn without_redial_one_attempt_is_made() {
        let mut tries = 0;
        run(false, || {
            tries += 1;
            Attempt::Failed("refused".into())
        });
        assert_eq!(tries, 1);
    }
}
