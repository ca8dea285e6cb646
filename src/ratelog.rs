//! Log lines that a peer or client could trigger at will, at most once
//! per interval, so a flood cannot fill the disk. Time is passed in.

use std::time::{Duration, Instant};

/// How often a rate-limited line may appear.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of log line: it may be written when [`RateLog::allow`] says so.
#[derive(Debug, Clone)]
pub struct RateLog {
    interval: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog::new(DEFAULT_INTERVAL)
    }
}

impl RateLog {
    pub fn new(interval: Duration) -> Self {
        RateLog {
            interval,
            next: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the line may be written now, `n` being how many were
    /// held back since the last one; `None` when it must be held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.interval);
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
    fn one_line_per_interval_counting_the_rest() {
        let t0 = Instant::now();
        let mut log = RateLog::new(Duration::from_secs(10));
        assert_eq!(log.allow(t0), Some(0));
        assert_eq!(log.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(log.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(log.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(suffix(0), "");
        assert_eq!(suffix(3), " (3 more like this not shown)");
    }
}
