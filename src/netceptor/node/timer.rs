//! The node's timers: one variant each and a table of deadlines, so the
//! next wake-up is simply the earliest armed entry.

use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// Send our routing update soon after a change.
    Flood,
    /// Recompute routes soon after a change (and daily regardless).
    Recompute,
    /// Advertise our services again.
    Ads,
    /// Send our routing update even with no change (keeps links alive).
    PeriodicUpdate,
    /// Close connections that have been silent too long.
    IdleCheck,
    /// Forget old routing update IDs.
    SeenSweep,
    /// Send new peers the next routing updates and advertisements they
    /// have not had yet.
    Share,
}

impl Timer {
    const ALL: [Timer; 7] = [
        Timer::Flood,
        Timer::Recompute,
        Timer::Ads,
        Timer::PeriodicUpdate,
        Timer::IdleCheck,
        Timer::SeenSweep,
        Timer::Share,
    ];
}

#[derive(Debug, Default)]
pub(super) struct TimerTable {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Arms `timer` for `at` unless it is already due sooner.
    pub fn set_no_later(&mut self, timer: Timer, at: Instant) {
        let slot = &mut self.deadlines[timer as usize];
        *slot = Some(slot.map_or(at, |t| t.min(at)));
    }

    /// Arms `timer` for `at` unless it is already armed.
    pub fn set_if_idle(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize].get_or_insert(at);
    }

    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the timers due at `now`, in table order.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Timer> {
        Timer::ALL
            .into_iter()
            .filter(|t| {
                let slot = &mut self.deadlines[*t as usize];
                let due = slot.is_some_and(|at| at <= now);
                if due {
                    *slot = None;
                }
                due
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_deadline_wins_and_expired_timers_disarm() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::Ads, t0 + Duration::from_secs(60));
        table.set_if_idle(Timer::Flood, t0 + Duration::from_millis(100));
        table.set_if_idle(Timer::Flood, t0 + Duration::from_secs(9));
        table.set_no_later(Timer::Recompute, t0 + Duration::from_secs(5));
        table.set_no_later(Timer::Recompute, t0 + Duration::from_secs(1));
        assert_eq!(table.next(), Some(t0 + Duration::from_millis(100)));
        let due = table.take_expired(t0 + Duration::from_secs(2));
        assert_eq!(due, vec![Timer::Flood, Timer::Recompute]);
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(60)));
        assert!(table.take_expired(t0 + Duration::from_secs(2)).is_empty());
    }
}
