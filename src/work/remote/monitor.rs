//! The monitor of a remote unit: one thread that submits it if that is
//! still to do, delivers a cancel or release, and keeps the local status
//! and stdout in step with the executor until the unit is complete here.
//!
//! `decide` is the whole policy, a pure function of a `Situation` taken
//! fresh before every step; `run` only gathers the situation, carries the
//! step out and records how it went.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::debug;

use super::Dialer;
use super::client::ClientError;
use super::{
    SubmitFailure, adopt, local_size, remote_of, results, send_cancel, send_release, submit,
};
use crate::gotime;
use crate::work::state::{FAILED, RemoteExtra, ZERO_TIME};
use crate::work::{Unit, WorkError, Workceptor};

/// Status is asked for when fetched output arrives or ends, and at least
/// this often.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// Least time between status requests while output is streaming.
const STATUS_GAP: Duration = Duration::from_millis(100);
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How the previous step went.
#[derive(Debug)]
pub enum Outcome {
    /// It worked, or nothing was tried yet.
    Fine,
    /// The executor could not be reached or gave no usable answer.
    Failed,
    /// The executor refused the submit.
    Refused(WorkError),
    /// The executor does not know the unit.
    Gone,
}

/// Everything `decide` looks at.
#[derive(Debug)]
pub struct Situation<'a> {
    pub started: bool,
    pub cancelled: bool,
    pub released: bool,
    /// The executor has been told of the cancel.
    pub cancel_delivered: bool,
    /// When a unit not yet submitted expires (its `ttl`).
    pub expires: Option<SystemTime>,
    pub is_final: bool,
    /// The output size the executor last reported.
    pub remote_size: u64,
    /// The output we have.
    pub local_size: u64,
    /// A results stream is running.
    pub fetching: bool,
    /// When status was last asked for, and whether the unit changed since.
    pub last_poll: Option<Instant>,
    pub changed: bool,
    pub last: &'a Outcome,
    /// Steps failed in a row, the last one at `failed_at`.
    pub failures: u32,
    pub failed_at: Option<Instant>,
    pub now: Instant,
    pub wall: SystemTime,
}

/// What to do next.
#[derive(Debug)]
#[cfg_attr(test, derive(PartialEq))]
pub enum Step<'a> {
    /// The unit is complete here: stop.
    Finish,
    /// Record the unit Failed for this reason, then stop.
    Fail(Why<'a>),
    /// Never submitted but released: delete it here, then stop.
    Forget,
    Submit,
    /// Tell the executor to release, then delete the unit here and stop.
    Release,
    Cancel,
    /// Start a results stream to bring the output.
    Fetch,
    /// Ask the executor for the unit's status.
    Poll,
    /// Nothing until `until`, or until the unit changes if `or_change`.
    Wait {
        until: Instant,
        or_change: bool,
    },
}

/// Why a remote unit failed; `Display` is the status Detail.
#[derive(Debug)]
pub enum Why<'a> {
    Expired(SystemTime),
    LocallyCancelled,
    Refused(&'a WorkError),
    Gone,
}

#[cfg(test)]
impl PartialEq for Why<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Expired(at) => write!(f, "Work unit expired on {}", gotime::go_stamp(*at)),
            Why::LocallyCancelled => f.write_str("Locally Cancelled"),
            Why::Refused(e) => write!(f, "Error starting worker: {e}"),
            Why::Gone => f.write_str("Remote work unit is gone"),
        }
    }
}

/// The next step for a remote unit in situation `s`.
pub fn decide<'a>(s: &Situation<'a>) -> Step<'a> {
    if !s.started {
        return before_start(s);
    }
    if s.released {
        return after_backoff(s, Step::Release);
    }
    if s.cancelled && !s.cancel_delivered && !s.is_final {
        return after_backoff(s, Step::Cancel);
    }
    if let Outcome::Gone = s.last {
        return Step::Fail(Why::Gone);
    }
    if s.is_final && s.local_size >= s.remote_size {
        return Step::Finish;
    }
    if let Some(wait) = backoff(s) {
        return wait;
    }
    // A results stream runs while the unit is incomplete here: it carries
    // output as it is written and ends when the unit does. The first one
    // starts at once (beside the first status request, if one is due), so
    // a short unit does not wait for a reply before its output can come;
    // later ones wait for status fresher than the unit's last change.
    if !s.fetching && (s.last_poll.is_none() || !s.changed) {
        return Step::Fetch;
    }
    next_poll(s)
}

/// A unit the executor has not accepted yet.
fn before_start<'a>(s: &Situation<'a>) -> Step<'a> {
    if let Some(at) = s.expires.filter(|at| s.wall > *at) {
        return Step::Fail(Why::Expired(at));
    }
    if s.released {
        return Step::Forget;
    }
    if s.cancelled {
        return Step::Fail(Why::LocallyCancelled);
    }
    if let Outcome::Refused(e) = s.last {
        return Step::Fail(Why::Refused(e));
    }
    after_backoff(s, Step::Submit)
}

fn after_backoff<'a>(s: &Situation<'a>, step: Step<'a>) -> Step<'a> {
    backoff(s).unwrap_or(step)
}

/// A wait before trying again after failures: 250 ms, doubling to 5 s.
fn backoff<'a>(s: &Situation<'a>) -> Option<Step<'a>> {
    let failed_at = s.failed_at.filter(|_| s.failures > 0)?;
    let pause = RETRY_FIRST
        .saturating_mul(1 << (s.failures - 1).min(16))
        .min(RETRY_MAX);
    let until = failed_at + pause;
    (s.now < until).then_some(Step::Wait {
        until,
        or_change: false,
    })
}

/// Status is asked for at once when the unit changed (output arrived, the
/// stream ended), else every `STATUS_POLL`; while output streams, no more
/// often than every `STATUS_GAP`.
fn next_poll<'a>(s: &Situation<'a>) -> Step<'a> {
    let Some(at) = s.last_poll else {
        return Step::Poll;
    };
    let earliest = if s.fetching { at + STATUS_GAP } else { at };
    let latest = (at + STATUS_POLL).max(earliest);
    if s.now >= latest || (s.changed && s.now >= earliest) {
        return Step::Poll;
    }
    Step::Wait {
        until: if s.changed { earliest } else { latest },
        or_change: true,
    }
}

/// What the monitor thread carries from step to step.
struct Driver {
    last: Outcome,
    failures: u32,
    failed_at: Option<Instant>,
    last_poll: Option<Instant>,
    /// The unit's version when status was last asked for.
    polled_version: u64,
    fetching: Arc<AtomicBool>,
}

/// Drives a remote unit until it is complete here, fails, or is deleted.
pub fn run(w: &Arc<Workceptor>, unit: &Arc<Unit>) {
    let mut d = Driver {
        last: Outcome::Fine,
        failures: 0,
        failed_at: None,
        last_poll: None,
        polled_version: 0,
        fetching: Arc::new(AtomicBool::new(false)),
    };
    if remote_of(unit).is_some_and(|r| r.remote_started) {
        d.as_if_polled(unit);
    }
    while unit.dir.exists() {
        let Some(r) = remote_of(unit) else { return };
        // Taken first, so a change while we look wakes a wait below.
        let version = unit.version();
        let outcome = match decide(&d.situation(unit, &r, version)) {
            Step::Finish => return,
            Step::Fail(why) => {
                let detail = why.to_string();
                unit.update(|s| s.set(FAILED, detail));
                return;
            }
            Step::Forget => {
                let _ = w.forget(unit, true);
                return;
            }
            Step::Wait { until, or_change } => {
                let left = until.saturating_duration_since(Instant::now());
                if or_change {
                    unit.wait_change(version, left);
                } else {
                    std::thread::sleep(left);
                }
                continue;
            }
            Step::Release => match send_release(w, unit, &r) {
                Ok(()) => return,
                Err(e) => failed(unit, &e),
            },
            Step::Submit => match submit(w, unit, &r) {
                Ok(()) => {
                    d.as_if_polled(unit);
                    Outcome::Fine
                }
                Err(SubmitFailure::Refused(e)) => Outcome::Refused(e),
                Err(SubmitFailure::Unreachable(e)) => failed(unit, &e),
            },
            Step::Cancel => match send_cancel(w, &r) {
                Ok(()) => {
                    unit.cancel_delivered.store(true, Ordering::SeqCst);
                    Outcome::Fine
                }
                Err(e) => failed(unit, &e),
            },
            Step::Fetch => d.fetch(&w.dialer(), unit, &r),
            Step::Poll => d.poll(&w.dialer(), unit, &r),
        };
        d.record(outcome);
    }
}

impl Driver {
    fn situation(&self, unit: &Unit, r: &RemoteExtra, version: u64) -> Situation<'_> {
        let st = unit.status();
        Situation {
            started: r.remote_started,
            cancelled: r.local_cancelled,
            released: r.local_released,
            cancel_delivered: unit.cancel_delivered.load(Ordering::SeqCst),
            expires: expiry(r),
            is_final: st.is_final(),
            remote_size: u64::try_from(st.stdout_size).unwrap_or(0),
            local_size: local_size(unit),
            fetching: self.fetching.load(Ordering::SeqCst),
            last_poll: self.last_poll,
            changed: version != self.polled_version,
            last: &self.last,
            failures: self.failures,
            failed_at: self.failed_at,
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Takes the unit's status as fresh as a reply to a status request
    /// now: that of a unit just submitted (the executor answered it had
    /// started), or of one found started at a restart. The first request
    /// then waits for news (output, the end of the results stream) or
    /// the regular poll instead of going out at once, when all it could
    /// say is that the unit is running: one request fewer per unit.
    fn as_if_polled(&mut self, unit: &Unit) {
        self.last_poll = Some(Instant::now());
        self.polled_version = unit.version();
    }

    fn record(&mut self, outcome: Outcome) {
        if let Outcome::Failed = outcome {
            self.failures += 1;
            self.failed_at = Some(Instant::now());
        } else {
            self.failures = 0;
        }
        self.last = outcome;
    }

    /// Asks for the executor's status and copies it into ours.
    fn poll(&mut self, dialer: &Dialer, unit: &Unit, r: &RemoteExtra) -> Outcome {
        self.last_poll = Some(Instant::now());
        match dialer.request(r, |c| c.status(&r.remote_unit_id)) {
            Ok(remote) => {
                adopt(unit, &remote);
                self.polled_version = unit.version();
                Outcome::Fine
            }
            Err(ClientError::Refused(WorkError::UnknownUnit(_))) => Outcome::Gone,
            Err(e) => failed(unit, &e),
        }
    }

    /// Starts a results stream in its own thread; `fetching` is set until
    /// it ends.
    fn fetch(&self, dialer: &Dialer, unit: &Arc<Unit>, r: &RemoteExtra) -> Outcome {
        self.fetching.store(true, Ordering::SeqCst);
        results::spawn_fetcher(dialer, unit, r, self.fetching.clone());
        Outcome::Fine
    }
}

fn failed(unit: &Unit, e: &impl fmt::Display) -> Outcome {
    debug!("[{}] Remote unit: {e}; retrying", unit.id);
    Outcome::Failed
}

/// When the unit expires, if it has a `ttl`.
fn expiry(r: &RemoteExtra) -> Option<SystemTime> {
    if r.expiration == ZERO_TIME {
        return None;
    }
    gotime::parse_rfc3339(&r.expiration).map(gotime::unix_nanos_to_system_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINE: Outcome = Outcome::Fine;

    /// A started unit, running, just polled, with all output here.
    fn running(now: Instant) -> Situation<'static> {
        Situation {
            started: true,
            cancelled: false,
            released: false,
            cancel_delivered: false,
            expires: None,
            is_final: false,
            remote_size: 10,
            local_size: 10,
            fetching: true,
            last_poll: Some(now),
            changed: false,
            last: &FINE,
            failures: 0,
            failed_at: None,
            now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        }
    }

    #[test]
    fn steps_for_situations() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let wall = running(t0).wall;
        let failed = Outcome::Failed;
        let gone = Outcome::Gone;
        let refused = Outcome::Refused(WorkError::UnknownType("nope".into()));
        let refusal = WorkError::UnknownType("nope".into());
        let table: Vec<(&str, Situation, Step)> = vec![
            (
                "not submitted: submit",
                Situation {
                    started: false,
                    last_poll: None,
                    ..running(t0)
                },
                Step::Submit,
            ),
            (
                "not submitted, past its ttl: expire",
                Situation {
                    started: false,
                    expires: Some(wall - ms(1)),
                    ..running(t0)
                },
                Step::Fail(Why::Expired(wall - ms(1))),
            ),
            (
                "not submitted, ttl ahead: submit",
                Situation {
                    started: false,
                    expires: Some(wall + ms(1)),
                    ..running(t0)
                },
                Step::Submit,
            ),
            (
                "not submitted, released: forget",
                Situation {
                    started: false,
                    released: true,
                    cancelled: true,
                    ..running(t0)
                },
                Step::Forget,
            ),
            (
                "not submitted, cancelled: fail locally",
                Situation {
                    started: false,
                    cancelled: true,
                    ..running(t0)
                },
                Step::Fail(Why::LocallyCancelled),
            ),
            (
                "submit refused: fail with the executor's words",
                Situation {
                    started: false,
                    last: &refused,
                    ..running(t0)
                },
                Step::Fail(Why::Refused(&refusal)),
            ),
            (
                "submit unreachable: back off",
                Situation {
                    started: false,
                    last: &failed,
                    failures: 1,
                    failed_at: Some(t0),
                    ..running(t0)
                },
                Step::Wait {
                    until: t0 + ms(250),
                    or_change: false,
                },
            ),
            (
                "backoff over: submit again",
                Situation {
                    started: false,
                    last: &failed,
                    failures: 1,
                    failed_at: Some(t0),
                    now: t0 + ms(250),
                    ..running(t0)
                },
                Step::Submit,
            ),
            (
                "backoff doubles and stops at 5 s",
                Situation {
                    last: &failed,
                    failures: 9,
                    failed_at: Some(t0),
                    ..running(t0)
                },
                Step::Wait {
                    until: t0 + ms(5000),
                    or_change: false,
                },
            ),
            (
                "released: release",
                Situation {
                    released: true,
                    cancelled: true,
                    ..running(t0)
                },
                Step::Release,
            ),
            (
                "released while the executor is unreachable: back off first",
                Situation {
                    released: true,
                    last: &failed,
                    failures: 2,
                    failed_at: Some(t0),
                    ..running(t0)
                },
                Step::Wait {
                    until: t0 + ms(500),
                    or_change: false,
                },
            ),
            (
                "cancel not delivered: cancel",
                Situation {
                    cancelled: true,
                    ..running(t0)
                },
                Step::Cancel,
            ),
            (
                "cancel delivered: keep following",
                Situation {
                    cancelled: true,
                    cancel_delivered: true,
                    ..running(t0)
                },
                Step::Wait {
                    until: t0 + ms(1000),
                    or_change: true,
                },
            ),
            (
                "cancelled after it finished: nothing to cancel",
                Situation {
                    cancelled: true,
                    is_final: true,
                    ..running(t0)
                },
                Step::Finish,
            ),
            (
                "gone on the executor: fail",
                Situation {
                    last: &gone,
                    ..running(t0)
                },
                Step::Fail(Why::Gone),
            ),
            (
                "gone while releasing: release (it is already gone there)",
                Situation {
                    released: true,
                    last: &gone,
                    ..running(t0)
                },
                Step::Release,
            ),
            (
                "final with all output: finish",
                Situation {
                    is_final: true,
                    ..running(t0)
                },
                Step::Finish,
            ),
            (
                "final, output missing, no stream: fetch",
                Situation {
                    is_final: true,
                    local_size: 4,
                    fetching: false,
                    ..running(t0)
                },
                Step::Fetch,
            ),
            (
                "never polled: fetch, and poll beside it",
                Situation {
                    last_poll: None,
                    fetching: false,
                    changed: true,
                    ..running(t0)
                },
                Step::Fetch,
            ),
            (
                "never polled, fetching: poll",
                Situation {
                    last_poll: None,
                    changed: true,
                    ..running(t0)
                },
                Step::Poll,
            ),
            (
                "streaming, output arrived: wait out the gap",
                Situation {
                    changed: true,
                    now: t0 + ms(40),
                    ..running(t0)
                },
                Step::Wait {
                    until: t0 + ms(100),
                    or_change: true,
                },
            ),
            (
                "streaming, output arrived after the gap: poll",
                Situation {
                    changed: true,
                    now: t0 + ms(100),
                    ..running(t0)
                },
                Step::Poll,
            ),
            (
                "stream ended: poll at once",
                Situation {
                    changed: true,
                    fetching: false,
                    now: t0 + ms(1),
                    ..running(t0)
                },
                Step::Poll,
            ),
            (
                "polled since, still incomplete: fetch again",
                Situation {
                    fetching: false,
                    now: t0 + ms(1),
                    ..running(t0)
                },
                Step::Fetch,
            ),
            (
                "quiet: poll once a second",
                Situation {
                    now: t0 + ms(1000),
                    ..running(t0)
                },
                Step::Poll,
            ),
        ];
        for (name, situation, want) in table {
            assert_eq!(decide(&situation), want, "{name}");
        }
    }

    #[test]
    fn failure_details_are_the_status_texts() {
        let refused = WorkError::Refused(Box::new(WorkError::UnknownType("x".into())));
        assert_eq!(
            Why::Refused(&refused).to_string(),
            "Error starting worker: remote error: unknown work type x"
        );
        assert_eq!(Why::Gone.to_string(), "Remote work unit is gone");
        assert!(
            Why::Expired(SystemTime::UNIX_EPOCH)
                .to_string()
                .starts_with("Work unit expired on ")
        );
    }

    #[test]
    fn expiry() {
        let mut r = super::super::new_extra(
            &crate::work::SubmitRequest {
                node: "n".into(),
                ..Default::default()
            },
            |_| false,
        )
        .unwrap();
        assert_eq!(super::expiry(&r), None);
        r.expiration = "2000-01-01T00:00:00Z".into();
        assert_eq!(
            super::expiry(&r),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800))
        );
    }
}
