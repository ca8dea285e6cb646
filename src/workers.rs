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

/// A job and the name its thread goes by while it runs, as `ps -L`,
/// `top` and perf show it.
struct Job {
    name: String,
    run: Box<dyn FnOnce() + Send>,
}

impl Job {
    fn run(self) {
        (self.run)()
    }
}

/// A waiting thread and the job handed to it. Waiting is parking, not a
/// channel receive: crossbeam's receive spins and yields the CPU a few
/// times before it sleeps, once per job here.
struct Idle {
    thread: Thread,
    job: Mutex<Option<Job>>,
}

/// The threads waiting for a job. The daemon has one set
/// ([`spawn`]); a test makes its own, apart from every other test's jobs.
struct Workers {
    idle: Mutex<Vec<Arc<Idle>>>,
}

static WORKERS: Workers = Workers::new();

/// Runs `job` on a waiting thread, or on a new one if none waits; the
/// thread is called `name` while it runs the job.
pub fn spawn(name: String, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    WORKERS.spawn(name, Box::new(job))
}

impl Workers {
    const fn new() -> Self {
        Workers {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Arc<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&'static self, name: String, run: Box<dyn FnOnce() + Send>) -> io::Result<()> {
        let job = Job { name, run };
        let mut waiting = self.idle();
        if let Some(w) = waiting.pop() {
            // Handed over before the list is unlocked: a thread whose wait
            // just ran out looks for a job under that lock before it exits.
            *lock(&w.job) = Some(job);
            drop(waiting);
            w.thread.unpark();
            return Ok(());
        }
        drop(waiting);
        std::thread::Builder::new()
            .name(job.name.clone())
            .spawn(move || self.work(job))
            .map(drop)
    }

    fn work(&self, first: Job) {
        first.run();
        while let Some(next) = self.wait_for_job() {
            rename_thread(&next.name);
            next.run();
        }
    }

    /// Offers this thread for the next job; `None` once it waited
    /// [`IDLE`] for none, or at once if [`MAX_IDLE`] threads wait already.
    fn wait_for_job(&self) -> Option<Job> {
        let me = Arc::new(Idle {
            thread: std::thread::current(),
            job: Mutex::new(None),
        });
        {
            let mut list = self.idle();
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
                let mut list = self.idle();
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
}

/// The kernel's name of the calling thread (15 bytes are kept), as `ps`,
/// `top` and perf show it. std's own name for the thread (in a panic's
/// message) stays the first job's.
fn rename_thread(name: &str) {
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string, which `name`
        // is for the length of the call.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
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

    /// A pool of its own for one test.
    fn pool() -> &'static Workers {
        Box::leak(Box::new(Workers::new()))
    }

    fn waiting(pool: &Workers) -> usize {
        pool.idle().len()
    }

    /// A thread whose job ended takes the next job instead of a new
    /// thread being started for it, and goes by the new job's name.
    #[test]
    fn a_finished_worker_takes_the_next_job_and_its_name() {
        let pool = pool();
        let (tx, rx) = mpsc::channel::<(ThreadId, String)>();
        let me = || {
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            (std::thread::current().id(), comm.trim_end().to_string())
        };
        let first = tx.clone();
        let job = Box::new(move || first.send(me()).unwrap());
        pool.spawn("first-job".into(), job).unwrap();
        let (id, name) = rx.recv().unwrap();
        assert_eq!(name, "first-job");
        while waiting(pool) == 0 {
            std::thread::yield_now();
        }
        pool.spawn("next-job".into(), Box::new(move || tx.send(me()).unwrap()))
            .unwrap();
        assert_eq!(rx.recv().unwrap(), (id, "next-job".to_string()));
    }

    /// Jobs never wait for each other: a job that blocks does not keep a
    /// second one from running.
    #[test]
    fn a_blocked_job_does_not_hold_up_the_next() {
        let pool = pool();
        let (release, blocked) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<()>();
        pool.spawn("t".into(), Box::new(move || blocked.recv().unwrap()))
            .unwrap();
        pool.spawn("t".into(), Box::new(move || done_tx.send(()).unwrap()))
            .unwrap();
        done.recv().unwrap();
        release.send(()).unwrap();
    }

    /// After a burst, [`MAX_IDLE`] threads wait and the rest exit.
    #[test]
    fn only_a_few_threads_wait_after_a_burst() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Counts the burst's threads as they exit (a thread-local's
        // destructor runs then); only this test's jobs touch it.
        static EXITED: AtomicUsize = AtomicUsize::new(0);
        struct OnExit;
        impl Drop for OnExit {
            fn drop(&mut self) {
                EXITED.fetch_add(1, Ordering::SeqCst);
            }
        }
        thread_local!(static ON_EXIT: OnExit = const { OnExit });
        let pool = pool();
        let burst = MAX_IDLE + 3;
        let all = Arc::new(std::sync::Barrier::new(burst + 1));
        for _ in 0..burst {
            let all = all.clone();
            let job = move || {
                ON_EXIT.with(|_| ());
                all.wait();
            };
            pool.spawn("t".into(), Box::new(job)).unwrap();
        }
        // All of them run at once, so each is a thread of its own.
        all.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while waiting(pool) + EXITED.load(Ordering::SeqCst) < burst && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(waiting(pool), MAX_IDLE);
        assert_eq!(EXITED.load(Ordering::SeqCst), burst - MAX_IDLE);
    }
}
