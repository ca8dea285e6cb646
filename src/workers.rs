//! Threads kept for reuse by the jobs that every accepted connection
//! (control socket, link, proxy), mesh control stream and remote unit
//! starts (a session, a link's reader, a unit's monitor, its results
//! fetch).
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a thread without a job waits for one before it exits.
const IDLE: Duration = Duration::from_secs(5);
/// Threads waiting at most; one more that finishes its job exits. A
/// burst (2,000 control clients evicting each other) would otherwise
/// leave as many threads waiting as it had at once, for [`IDLE`].
const MAX_IDLE: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// A waiting thread and the job handed to it. Waiting is parking, not a
/// channel receive: crossbeam's receive spins and yields the CPU a few
/// times before it sleeps, once per job here.
struct Idle {
    thread: Thread,
    job: Mutex<Option<Job>>,
}

fn idle() -> MutexGuard<'static, Vec<Arc<Idle>>> {
    static IDLE_THREADS: Mutex<Vec<Arc<Idle>>> = Mutex::new(Vec::new());
    IDLE_THREADS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `job` on a waiting thread, or on a new one if none waits. Threads
/// are named "worker" since each serves many kinds of job in its life.
pub fn spawn(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let mut waiting = idle();
    if let Some(w) = waiting.pop() {
        // Handed over before the list is unlocked: a thread whose wait
        // just ran out looks for a job under that lock before it exits.
        *lock(&w.job) = Some(Box::new(job));
        drop(waiting);
        w.thread.unpark();
        return Ok(());
    }
    drop(waiting);
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || work(Box::new(job)))
        .map(drop)
}

fn work(first: Job) {
    first();
    while let Some(next) = wait_for_job() {
        next();
    }
}

/// Offers this thread for the next job; `None` once it waited [`IDLE`]
/// for none, or at once if [`MAX_IDLE`] threads wait already.
fn wait_for_job() -> Option<Job> {
    let me = Arc::new(Idle {
        thread: std::thread::current(),
        job: Mutex::new(None),
    });
    {
        let mut list = idle();
        if list.len() >= MAX_IDLE {
            return None;
        }
        list.push(me.clone());
    }
    let deadline = Instant::now() + IDLE;
    loop {
        if let Some(job) = lock(&me.job).take() {
            return Some(job);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let mut list = idle();
            // A job handed over just now (see `spawn`).
            if let Some(job) = lock(&me.job).take() {
                return Some(job);
            }
            list.retain(|w| !Arc::ptr_eq(w, &me));
            return None;
        }
        std::thread::park_timeout(left);
    }
}

fn lock(job: &Mutex<Option<Job>>) -> MutexGuard<'_, Option<Job>> {
    job.lock().unwrap_or_else(|p| p.into_inner())
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
