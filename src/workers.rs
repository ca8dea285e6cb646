//! Threads kept for reuse by the short jobs that every control
//! connection, mesh control stream and remote unit starts (a session, a
//! unit's monitor, its results fetch).
//!
//! A new thread costs more CPU on this path than the job itself often
//! does (clone, stack mapping and its first page faults, exit and unmap:
//! about 9 % of a controller's CPU per remote unit, BENCHMARKS.md "Work
//! units"), so a thread that finished its job waits a while for the next
//! one instead of exiting. A job is handed over only to a thread already
//! waiting (a rendezvous); when none is, a new one is started, so jobs
//! never queue behind each other and a long job (a monitor lasting as
//! long as its unit) holds up nobody.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

/// How long a thread without a job waits for one before it exits.
const IDLE: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send>;

fn handoff() -> &'static (Sender<Job>, Receiver<Job>) {
    static HANDOFF: OnceLock<(Sender<Job>, Receiver<Job>)> = OnceLock::new();
    HANDOFF.get_or_init(|| bounded(0))
}

/// Runs `job` on a waiting thread, or on a new one if none waits. Threads
/// are named "worker" since each serves many kinds of job in its life.
pub fn spawn(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let (tx, rx) = handoff();
    let job = match tx.try_send(Box::new(job)) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
    };
    let rx = rx.clone();
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            job();
            while let Ok(next) = rx.recv_timeout(IDLE) {
                next();
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread::ThreadId;

    /// A thread whose job ended takes the next job instead of a new
    /// thread being started for it.
    #[test]
    fn a_finished_worker_takes_the_next_job() {
        let (tx, rx) = mpsc::channel::<ThreadId>();
        let first = tx.clone();
        spawn(move || first.send(std::thread::current().id()).unwrap()).unwrap();
        let id = rx.recv().unwrap();
        // Wait until some worker waits for a job (other tests share them).
        let mut again = None;
        for _ in 0..1000 {
            let tx = tx.clone();
            spawn(move || tx.send(std::thread::current().id()).unwrap()).unwrap();
            let next = rx.recv().unwrap();
            if next == id {
                again = Some(next);
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(again, Some(id));
    }

    /// Jobs never wait for each other: a job that blocks does not keep a
    /// second one from running.
    #[test]
    fn a_blocked_job_does_not_hold_up_the_next() {
        let (release, blocked) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<()>();
        spawn(move || blocked.recv().unwrap()).unwrap();
        spawn(move || done_tx.send(()).unwrap()).unwrap();
        done.recv().unwrap();
        release.send(()).unwrap();
    }
}
