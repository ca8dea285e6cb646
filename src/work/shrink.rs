//! Gives memory back to the system after a burst of units is released.
//!
//! glibc's malloc keeps what freed units held (status caches, stream and
//! request buffers: ~1.7 KiB per unit on a controller) in its free lists:
//! after 5,000 units held at once and released, a controller stayed at
//! 13.3 MiB where `malloc_trim` brought it to 10.2, the level of a node
//! that never held more than a few (BENCHMARKS.md, "Soak"). So once the
//! live units have fallen to half of their high-water mark, and that mark
//! was a burst, the daemon asks malloc to trim. It is rare by design: a
//! trim walks the heap, and each one halves the mark.

/// Fewer live units than this at the high-water mark is no burst.
const BURST: usize = 256;

/// The high-water mark of live units since the last trim.
#[derive(Debug, Default)]
pub struct Shrink {
    peak: usize,
}

impl Shrink {
    /// `live` units exist now; true if memory should be trimmed.
    pub fn note(&mut self, live: usize) -> bool {
        self.peak = self.peak.max(live);
        if self.peak >= BURST && live <= self.peak / 2 {
            self.peak = live;
            return true;
        }
        false
    }
}

/// Returns the free memory at the top of each malloc arena to the system.
/// musl's allocator gives pages back by itself and has no such call.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganises the allocator's free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_comes_once_a_burst_has_halved_and_not_again_until_the_next() {
        let mut s = Shrink::default();
        assert!(!(0..=BURST).any(|n| s.note(n)), "climbing");
        assert!(!s.note(BURST / 2 + 1));
        assert!(s.note(BURST / 2), "half of the mark");
        assert!(!s.note(0), "the mark is now what was left");
        assert!(!(0..=BURST * 4).any(|n| s.note(n)));
        assert!(!s.note(BURST * 2 + 1));
        assert!(s.note(BURST * 2));
    }

    #[test]
    fn small_tables_never_trim() {
        let mut s = Shrink::default();
        for n in (0..BURST).chain((0..BURST).rev()) {
            assert!(!s.note(n));
        }
    }
}
