//! How routing grows with the mesh: the sans-IO nodes wired together in
//! memory (src/netceptor/node/sim.rs), no sockets, no threads.
//!
//!     cargo bench --features sim --bench mesh_sim -- [SIZE ...] [random|hub]
//!
//! For each size (default 100, 1000, 5000) and each shape (random graph of
//! degree 3-6; AWX-like hub and spoke; `random` or `hub` runs only that
//! one), every link opens at once; the run measures until every node
//! routes to every other: routing messages and bytes sent, CPU time, and
//! the live heap (all node state) per node, once converged and at its
//! peak while converging (messages queued). Then
//! the busiest node dies and the same is measured until the rest route
//! around it; then it restarts (a new epoch) and its links come back, and
//! the same is measured until every node routes to every other again.
//! Time is virtual (timer rounds); CPU time is real.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use receptor::netceptor::node::sim::{Sim, Traffic, topology};

/// Counts live heap bytes, so node state can be weighed, and the most
/// that was live at once (messages queued in a mass start come on top).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// CPU time of this process (the simulation is single-threaded).
fn cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What one phase (converging, or reconverging) cost.
struct Phase {
    virtual_time: Option<Duration>,
    traffic: Traffic,
    cpu: Duration,
}

fn phase(sim: &mut Sim, dead: &[usize]) -> Phase {
    let (sent, began) = (sim.sent, cpu());
    let virtual_time = sim.run_until(Duration::from_secs(120), |s| s.converged(dead));
    let after = sim.sent;
    Phase {
        virtual_time,
        traffic: Traffic {
            routing_msgs: after.routing_msgs - sent.routing_msgs,
            routing_bytes: after.routing_bytes - sent.routing_bytes,
            other_msgs: after.other_msgs - sent.other_msgs,
            other_bytes: after.other_bytes - sent.other_bytes,
        },
        cpu: cpu() - began,
    }
}

fn shown(t: Option<Duration>) -> String {
    t.map_or("never".into(), |t| format!("{:.1} s", t.as_secs_f64()))
}

fn row(shape: &str, n: usize, links: &[(usize, usize)]) {
    let names: Vec<String> = (0..n).map(|i| format!("node{i}")).collect();
    let heap_before = LIVE.load(Ordering::Relaxed);
    PEAK.store(heap_before, Ordering::Relaxed);
    let mut sim = Sim::new(&names);
    sim.connect_all(links);
    let up = phase(&mut sim, &[]);
    let per_node = (LIVE.load(Ordering::Relaxed) - heap_before) / n;
    let peak_per_node = (PEAK.load(Ordering::Relaxed) - heap_before) / n;
    let hub = topology::busiest(n, links);
    sim.kill_idx(hub);
    let down = phase(&mut sim, &[hub]);
    sim.connect_all(&topology::links_of(hub, links));
    let again = phase(&mut sim, &[]);
    let t = up.traffic;
    println!(
        "| {shape} | {n} | {} | {} | {} | {:.1} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {:.0} | {} | {} | {:.0} |",
        links.len(),
        shown(up.virtual_time),
        t.routing_msgs,
        t.routing_msgs as f64 / n as f64,
        t.routing_bytes / t.routing_msgs.max(1),
        up.cpu.as_secs_f64() * 1e6 / n as f64,
        per_node as f64 / 1024.0,
        peak_per_node as f64 / 1024.0,
        shown(down.virtual_time),
        down.traffic.routing_msgs,
        down.cpu.as_secs_f64() * 1e6 / n as f64,
        shown(again.virtual_time),
        again.traffic.routing_msgs,
        again.cpu.as_secs_f64() * 1e6 / n as f64,
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let shape = |name: &str| args.iter().any(|a| a == name);
    let (random, hub) = match (shape("random"), shape("hub")) {
        (false, false) => (true, true),
        only => only,
    };
    let sizes: Vec<usize> = args
        .iter()
        .filter(|a| !["random", "hub"].contains(&a.as_str()))
        .map(|a| {
            a.parse()
                .expect("sizes are node counts, shapes random or hub")
        })
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 5000]
    } else {
        sizes
    };
    println!(
        "| shape | nodes | links | converged after | routing msgs | msgs/node | bytes/update | CPU µs/node | heap KiB/node | peak heap KiB/node | hub dies: reconverged after | routing msgs | CPU µs/node | hub back: reconverged after | routing msgs | CPU µs/node |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        if random {
            row("random 3-6", n, &topology::random(n, n as u64));
        }
        if hub {
            row("hub and spoke", n, &topology::hub_and_spoke(n));
        }
    }
}
