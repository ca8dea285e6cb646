//! A one-value reply from another thread, for a caller that waits for
//! it: the router's answer to `has_route`, a stream driver's new stream,
//! the fork server's `Started`.
//!
//! The caller spins a few microseconds (an answer from a thread running
//! on the other core comes about that fast), then parks, and the
//! answering thread unparks it. A crossbeam
//! receive instead spins and then yields the CPU a few times before it
//! sleeps; a yielding thread stays runnable, so the threads its request
//! wakes (the router, a driver, the link threads of both nodes) run ahead
//! of it, and it gets its answer only after all of them: on a busy core a
//! submit's stream open waited out a whole mesh round trip so
//! (BENCHMARKS.md, "Work units").

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Where the answer goes; dropping it unanswered tells the waiter so.
pub struct Replier<T> {
    slot: Arc<Slot<T>>,
}

/// The caller's end. Not `Send`: only the thread that made the pair is
/// unparked by the answer.
pub struct Waiter<T> {
    slot: Arc<Slot<T>>,
    _this_thread: PhantomData<*const ()>,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    /// Set once the state left `Waiting`, for the waiter to spin on
    /// without taking the lock.
    settled: AtomicBool,
    waiter: Thread,
}

/// Doubling rounds of spinning before the waiter parks, as the router's
/// own wait does (`netceptor::router`).
const SPIN_ROUNDS: u32 = 7;

enum State<T> {
    Waiting,
    Answered(T),
    /// The replier was dropped without answering.
    Abandoned,
    /// The waiter took the answer or stopped waiting.
    Done,
}

/// Why no answer came.
#[derive(Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// The replier was dropped unanswered.
    Abandoned,
    /// The wait's time ran out first.
    Timeout,
}

/// A reply pair whose waiter is the calling thread.
pub fn pair<T>() -> (Replier<T>, Waiter<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Waiting),
        settled: AtomicBool::new(false),
        waiter: std::thread::current(),
    });
    let waiter = Waiter {
        slot: slot.clone(),
        _this_thread: PhantomData,
    };
    (Replier { slot }, waiter)
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the wait with `end` unless it ended already; wakes the waiter.
    fn settle(&self, end: State<T>) -> Result<(), T> {
        let mut st = self.lock();
        if !matches!(*st, State::Waiting) {
            return match end {
                State::Answered(v) => Err(v),
                _ => Ok(()),
            };
        }
        *st = end;
        self.settled.store(true, Ordering::Release);
        drop(st);
        self.waiter.unpark();
        Ok(())
    }

    /// Spins briefly until the wait is settled. Never yields: a yielding
    /// thread lets the threads its request woke run first.
    fn spin(&self) {
        for round in 0..SPIN_ROUNDS {
            if self.settled.load(Ordering::Acquire) {
                return;
            }
            for _ in 0..1 << round {
                std::hint::spin_loop();
            }
        }
    }
}

impl<T> Replier<T> {
    /// Answers; gives the value back if the waiter stopped waiting.
    pub fn send(self, value: T) -> Result<(), T> {
        self.slot.settle(State::Answered(value))
    }
}

impl<T> std::fmt::Debug for Replier<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replier")
    }
}

impl<T> Drop for Replier<T> {
    fn drop(&mut self) {
        let _ = self.slot.settle(State::Abandoned);
    }
}

impl<T> Waiter<T> {
    /// The answer if it came, without waiting: `None` while none did.
    #[cfg(test)]
    pub fn try_take(&self) -> Option<Result<T, NoAnswer>> {
        let mut st = self.slot.lock();
        match std::mem::replace(&mut *st, State::Done) {
            State::Answered(v) => Some(Ok(v)),
            State::Abandoned => Some(Err(NoAnswer::Abandoned)),
            State::Done => Some(Err(NoAnswer::Abandoned)),
            State::Waiting => {
                *st = State::Waiting;
                None
            }
        }
    }

    /// Waits for the answer, at most `timeout` (`None`: as long as it
    /// takes).
    pub fn wait(self, timeout: Option<Duration>) -> Result<T, NoAnswer> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.slot.spin();
        loop {
            let mut st = self.slot.lock();
            match std::mem::replace(&mut *st, State::Done) {
                State::Answered(v) => return Ok(v),
                // Done: `try_take` already took what there was.
                State::Abandoned | State::Done => return Err(NoAnswer::Abandoned),
                State::Waiting => {}
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(NoAnswer::Timeout);
            }
            *st = State::Waiting;
            drop(st);
            // An unpark between the unlock and here makes the park return
            // at once; a spurious return just looks again.
            match left {
                Some(left) => std::thread::park_timeout(left),
                None => std::thread::park(),
            }
        }
    }
}

/// A waiter gone (its wait over, or never waited) leaves the slot done:
/// a late answer goes back to its sender.
impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        *self.slot.lock() = State::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_from_another_thread_arrives() {
        let (replier, waiter) = pair();
        let t = std::thread::spawn(move || replier.send(7));
        assert_eq!(waiter.wait(None), Ok(7));
        assert_eq!(t.join().unwrap(), Ok(()));
    }

    #[test]
    fn an_answer_sent_before_the_wait_is_kept() {
        let (replier, waiter) = pair();
        replier.send("yes").unwrap();
        assert_eq!(waiter.wait(Some(Duration::ZERO)), Ok("yes"));
    }

    #[test]
    fn try_take_sees_nothing_then_the_answer_once() {
        let (replier, waiter) = pair();
        assert!(waiter.try_take().is_none());
        replier.send(5).unwrap();
        assert_eq!(waiter.try_take(), Some(Ok(5)));
        assert_eq!(waiter.try_take(), Some(Err(NoAnswer::Abandoned)));
    }

    #[test]
    fn a_dropped_replier_ends_the_wait() {
        let (replier, waiter) = pair::<u8>();
        std::thread::spawn(move || drop(replier));
        assert_eq!(waiter.wait(None), Err(NoAnswer::Abandoned));
    }

    #[test]
    fn no_answer_times_out_and_a_late_one_comes_back() {
        let (replier, waiter) = pair();
        assert_eq!(waiter.wait(Some(Duration::ZERO)), Err(NoAnswer::Timeout));
        assert_eq!(replier.send(3), Err(3));
    }

    #[test]
    fn a_dropped_waiter_returns_the_answer() {
        let (replier, waiter) = pair();
        drop(waiter);
        assert_eq!(replier.send(1), Err(1));
    }
}
