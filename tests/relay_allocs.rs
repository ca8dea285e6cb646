//! A relay forwards a data frame without allocating: the frame's buffer
//! goes on as it came, and the node IDs stay hashes and interned IDs. The
//! nodes run in the in-memory simulator (`--features sim`); a counting
//! allocator weighs what one more relay on the path adds per frame.
//! (Cargo.toml builds it only with `sim`; tests/run.sh runs it so.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use receptor::netceptor::node::MAX_FORWARDING_HOPS;
use receptor::netceptor::node::sim::Sim;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const FRAMES: usize = 1000;

/// Allocations per frame sent from the first node of a line of `len`
/// to a service on the last, everything counted: the sender's, each
/// relay's, the receiver's and the simulator's.
fn allocations_per_frame(len: usize) -> usize {
    let names: Vec<String> = (0..len).map(|i| format!("n{i}")).collect();
    let mut sim = Sim::new(&names);
    for pair in names.windows(2) {
        sim.connect(&pair[0], &pair[1], 1.0);
    }
    sim.run_for(Duration::from_secs(2));
    let (first, last) = (&names[0], &names[len - 1]);
    let from = sim.service(first, "source");
    sim.service(last, "sink");
    sim.delivered.reserve(FRAMES);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..FRAMES {
        sim.send(first, from, last, "sink", &[7; 1200], MAX_FORWARDING_HOPS)
            .unwrap();
    }
    let spent = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(sim.delivered.len(), FRAMES, "every frame arrives");
    (spent + FRAMES / 2) / FRAMES
}

#[test]
fn a_relay_allocates_nothing_per_frame() {
    let (two_hops, three_hops) = (allocations_per_frame(3), allocations_per_frame(4));
    // The simulator hands each frame on as it was sent, without a copy:
    // one more relay adds nothing at all.
    assert_eq!(three_hops, two_hops);
}
