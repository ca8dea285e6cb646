//! Log lines that a peer or client could trigger at will, a few per
//! interval at most, so a flood cannot fill the disk. Time is passed in.

use std::time::{Duration, Instant};

/// The interval over which lines are counted.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Lines of one kind written per interval, at most.
pub const DEFAULT_BURST: u32 = 10;

/// One kind of log line: it may be written when [`RateLog::allow`] says so.
#[derive(Debug, Clone)]
pub struct RateLog {
    interval: Duration,
    burst: u32,
    window_end: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog::new(DEFAULT_INTERVAL, DEFAULT_BURST)
    }
}

impl RateLog {
    /// At most `burst` lines per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Self {
        RateLog {
            interval,
            burst: burst.max(1),
            window_end: None,
            written: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the line may be written now, `n` being how many were
    /// held back before it; `None` when it must be held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.window_end {
            Some(end) if now < end => {
                if self.written >= self.burst {
                    self.suppressed += 1;
                    return None;
                }
                self.written += 1;
            }
            _ => {
                self.window_end = Some(now + self.interval);
                self.written = 1;
            }
        }
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `" (n more like this not shown)"`, or nothing for 0.
pub fn suffix(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more like this not shown)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_interval_counting_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = RateLog::new(s(10), 2);
        assert_eq!(log.allow(t0), Some(0));
        assert_eq!(log.allow(t0 + s(1)), Some(0));
        assert_eq!(log.allow(t0 + s(2)), None);
        assert_eq!(log.allow(t0 + s(9)), None);
        assert_eq!(log.allow(t0 + s(10)), Some(2));
        assert_eq!(log.allow(t0 + s(11)), Some(0));
        assert_eq!(log.allow(t0 + s(12)), None);
        assert_eq!(suffix(0), "");
        assert_eq!(suffix(3), " (3 more like this not shown)");
    }
}
