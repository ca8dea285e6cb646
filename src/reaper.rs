//! Reaping the orphans a daemon inherits as PID 1.
//!
//! In a container `receptor` is often the entrypoint, PID 1 of its PID
//! namespace, and every process orphaned there becomes its child: the
//! runners of a fork server that died, what a unit's command left behind
//! in the background. Nobody else would ever wait for them, so each would
//! stay a zombie until the container runs out of PIDs. The Go daemon
//! leaves this to tini or dumb-init; this one reaps them itself, but only
//! those no owner waits for. The children the daemon starts (the fork
//! server, exec'd runners) are waited for by the threads that started
//! them, whose exit status tells a unit its runner died; they are started
//! through [`spawn`], which registers them as owned. `clippy.toml`
//! forbids `Command::spawn`, `output` and `status` everywhere else, so a
//! new way of starting a child cannot forget it.
//!
//! When: only if the kernel hands this process orphans at all, as PID 1
//! or as a child subreaper (`PR_SET_CHILD_SUBREAPER`, which a wrapper may
//! set before it execs the daemon: exec keeps it). The daemon does not
//! make itself a subreaper: outside a container, init or the service
//! manager reaps orphans already, and adopting them would change only who
//! does.
//!
//! Why no owner loses an exit status to the reaper:
//! * [`spawn`] holds the lock of the owned set while it starts the child
//!   and registers its PID, and a reaper pass checks ownership and calls
//!   `waitpid` under the same lock. So a pass never takes a child that is
//!   started but not yet registered: by the time it holds the lock, the
//!   child is registered.
//! * An owner unregisters only once it has reaped its child (or dropped
//!   it, no longer waiting), so an owned zombie is never taken.
//! * A pass reaps only PIDs it saw as zombies whose parent is this
//!   process and that no one registered. Nobody else reaps such a zombie,
//!   so its PID cannot be reused between the scan and the `waitpid`,
//!   which therefore takes exactly the zombie that was seen.
//!
//! Passes run on SIGCHLD and after each unregistration: a zombie skipped
//! because its PID was registered (an orphan that got the PID of a child
//! whose owner had just reaped it but not yet unregistered) is taken then.
//! The scan reads every `/proc/PID/stat`, as `/proc/PID/task/*/children`
//! is not in every kernel; a container's `/proc` is short.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, OnceLock};

use log::{debug, info, warn};

use crate::procstat::{self, ProcStat};

/// The children this process waits for itself.
static OWNED: Mutex<Owned> = Mutex::new(Owned(BTreeMap::new()));
/// Wakes the reaper thread, once there is one.
static WAKE: OnceLock<UnixStream> = OnceLock::new();

/// Registered PIDs, each with its number of registrations: a PID its
/// owner has reaped but not yet unregistered may already be another
/// owned child's.
#[derive(Debug, Default)]
struct Owned(BTreeMap<u32, usize>);

impl Owned {
    fn add(&mut self, pid: u32) {
        *self.0.entry(pid).or_default() += 1;
    }

    fn remove(&mut self, pid: u32) {
        if let Some(n) = self.0.get_mut(&pid) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&pid);
            }
        }
    }

    fn contains(&self, pid: u32) -> bool {
        self.0.contains_key(&pid)
    }
}

/// The zombies a pass reaps: children of `me` that no owner waits for.
/// `me` is this process's PID as `/proc` numbers it.
fn unowned_zombies(procs: &[ProcStat], me: u32, owned: &Owned) -> Vec<u32> {
    procs
        .iter()
        .filter(|p| p.ppid == me && p.is_zombie() && !owned.contains(p.pid))
        .map(|p| p.pid)
        .collect()
}

fn lock() -> MutexGuard<'static, Owned> {
    OWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// A child process whose owner waits for it: the reaper leaves it alone
/// until [`OwnedChild::wait`] has reaped it or the handle is dropped.
#[derive(Debug)]
pub struct OwnedChild {
    child: Child,
    registered: bool,
}

/// Starts `cmd` as a child the reaper never takes (see the module
/// documentation for why registering under the lock is enough).
pub fn spawn(cmd: &mut Command) -> io::Result<OwnedChild> {
    let mut owned = lock();
    #[allow(clippy::disallowed_methods)] // the one spawn that registers
    let child = cmd.spawn()?;
    owned.add(child.id());
    Ok(OwnedChild {
        child,
        registered: true,
    })
}

impl OwnedChild {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, unless it has been reaped (its PID may be another's now).
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// Waits for the child to exit and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait();
        self.release();
        status
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.registered) {
            lock().remove(self.child.id());
            wake();
        }
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.release();
    }
}

fn wake() {
    if let Some(mut poke) = WAKE.get() {
        // Full means a pass is due anyway.
        let _ = poke.write(&[1]);
    }
}

/// Why this process inherits orphans, if it does.
fn inherits_orphans() -> Option<&'static str> {
    if std::process::id() == 1 {
        return Some("Running as PID 1");
    }
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer.
    let r = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut flag as *mut libc::c_int) };
    (r == 0 && flag != 0).then_some("Running as a child subreaper")
}

/// Starts the reaper thread if this process inherits orphans; says
/// whether it did. Called once, by the daemon; the thread holds nothing
/// a stop must finish and ends with the process.
pub fn start() -> io::Result<bool> {
    let Some(why) = inherits_orphans() else {
        return Ok(false);
    };
    // The scan compares parent PIDs from /proc with ours and reaps by
    // them: a /proc mounted for another PID namespace numbers differently.
    let seen = std::fs::read_link("/proc/self")?;
    let me = std::process::id();
    if seen.to_str() != Some(me.to_string().as_str()) {
        return Err(io::Error::other(format!(
            "/proc is not this PID namespace's (it calls PID {me} {})",
            seen.display()
        )));
    }
    let (wakeups, signalled) = UnixStream::pair()?;
    let poke = signalled.try_clone()?;
    poke.set_nonblocking(true)?;
    signal_hook::low_level::pipe::register(libc::SIGCHLD, signalled)?;
    let _ = WAKE.set(poke);
    // SIGCHLD goes to the reaper thread alone: a handler run on another
    // thread would cut short whatever system call it was in, and calls on
    // sockets with a timeout are never restarted. Every thread started
    // from here on inherits the block; the daemon starts the reaper
    // before any other thread, and children start with an empty mask
    // (std clears it).
    sigchld_mask(libc::SIG_BLOCK);
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            sigchld_mask(libc::SIG_UNBLOCK);
            run(wakeups, me)
        })?;
    info!("{why}: reaping orphaned processes");
    Ok(true)
}

/// Blocks or unblocks SIGCHLD for the calling thread.
fn sigchld_mask(how: libc::c_int) {
    // SAFETY: the set is initialised by sigemptyset before use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGCHLD);
        libc::pthread_sigmask(how, set.as_ptr(), std::ptr::null_mut());
    }
}

/// A pass now (orphans may be waiting from before the daemon), then one
/// per wakeup.
fn run(mut wakeups: UnixStream, me: u32) {
    let mut buf = [0u8; 64];
    loop {
        pass(me);
        match wakeups.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!("Orphan reaper stopped: {e}");
                return;
            }
        }
    }
}

/// Scans `/proc` without the lock (it may be long on a host), then reaps
/// under it each zombie seen that is still nobody's. That is as safe as a
/// scan under the lock: a zombie no owner waits for is reaped by nobody
/// but this thread, so its PID stays its own until then, and a child
/// started and registered since the scan is owned by now.
fn pass(me: u32) {
    let procs = match procstat::all() {
        Ok(p) => p,
        Err(e) => {
            warn!("Cannot look for orphaned processes to reap: {e}");
            return;
        }
    };
    let mut reaped = Vec::new();
    {
        let owned = lock();
        for pid in unowned_zombies(&procs, me, &owned) {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`; WNOHANG never blocks.
            let got = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
            if got == pid as i32 {
                reaped.push((pid, ExitStatus::from_raw(status)));
            }
        }
    }
    for (pid, how) in reaped {
        debug!("Reaped orphaned process {pid} ({how})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, state: u8, ppid: u32) -> ProcStat {
        ProcStat { pid, state, ppid }
    }

    #[test]
    fn only_unowned_zombie_children_are_reaped() {
        let procs = [
            proc(1, b'S', 0),
            proc(10, b'Z', 1),  // an orphan: reaped
            proc(11, b'Z', 1),  // the fork server, owned
            proc(12, b'S', 1),  // alive
            proc(13, b'Z', 12), // someone else's zombie
            proc(14, b'X', 1),  // being reaped right now
            proc(15, b'Z', 1),  // another orphan
        ];
        let mut owned = Owned::default();
        owned.add(11);
        assert_eq!(unowned_zombies(&procs, 1, &owned), [10, 15]);
        assert_eq!(unowned_zombies(&procs, 12, &owned), [13]);
        owned.remove(11);
        assert_eq!(unowned_zombies(&procs, 1, &owned), [10, 11, 15]);
    }

    #[test]
    fn a_pid_registered_twice_stays_owned_until_both_are_released() {
        let mut owned = Owned::default();
        owned.add(7);
        owned.add(7);
        owned.remove(7);
        assert!(owned.contains(7));
        owned.remove(7);
        assert!(!owned.contains(7));
        owned.remove(7);
        assert!(!owned.contains(7));
    }

    #[test]
    fn a_spawned_child_is_owned_until_reaped() {
        let mut child =
            spawn(Command::new("true").stdin(std::process::Stdio::null())).expect("spawn true");
        let pid = child.id();
        assert!(lock().contains(pid));
        assert!(child.wait().expect("wait").success());
        assert!(!lock().contains(pid));
        // Reaped: kill must not reach whoever has the PID now.
        assert!(child.kill().is_ok());
    }

    #[test]
    fn a_dropped_child_is_no_longer_owned() {
        let child =
            spawn(Command::new("true").stdin(std::process::Stdio::null())).expect("spawn true");
        let pid = child.id();
        drop(child);
        assert!(!lock().contains(pid));
        // SAFETY: waitpid writes only to `status`; the child is ours.
        let mut status = 0;
        assert_eq!(
            unsafe { libc::waitpid(pid as i32, &mut status, 0) },
            pid as i32
        );
    }
}
