//! `work-command` units, daemon side: launching the runner process,
//! watching it, cancelling it, and picking units up again after a restart.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, warn};

use super::forkserver::{ForkError, Launcher, Request};
use super::state::{CANCELED, CommandExtra, ExtraData, FAILED, PENDING};
use super::{Unit, WorkError};
use crate::config::WorkCommandCfg;

/// The Detail of a unit about to be handed to its runner.
pub const STARTING: &str = "Starting Worker";

/// How often a runner this process did not start is checked for life.
const ORPHAN_POLL: Duration = Duration::from_millis(250);
/// How long a process that may still become a unit's runner (see
/// `runner_alive_soon`) is given to become recognizable.
const RUNNER_GRACE: Duration = Duration::from_millis(250);
/// How long cancel waits for the runner to stop the command.
const CANCEL_WAIT: Duration = Duration::from_secs(12);

/// The params a unit runs with: the configured ones, then the runtime ones.
pub fn effective_params(cfg: &WorkCommandCfg, runtime: &str) -> Result<String, WorkError> {
    if !runtime.is_empty() && !cfg.allow_runtime_params {
        return Err(WorkError::ParamsNotAllowed);
    }
    Ok(match (cfg.params.is_empty(), runtime.is_empty()) {
        (_, true) => cfg.params.clone(),
        (true, false) => runtime.to_string(),
        (false, false) => format!("{} {runtime}", cfg.params),
    })
}

/// Starts the runner for a unit whose stdin is complete: forked by the
/// runner fork server, or exec'd when no server can make one.
pub fn start(
    unit: &Arc<Unit>,
    cfg: &WorkCommandCfg,
    log_level: &str,
    forks: &Launcher,
) -> Result<(), WorkError> {
    let params = unit
        .status()
        .command()
        .map(|c| c.params.clone())
        .unwrap_or_default();
    let req = Request {
        command: cfg.command.clone(),
        params: params.clone(),
        unitdir: unit.dir.path().to_path_buf(),
    };
    let pid = match forks.start(unit, &req, log_level) {
        Ok(pid) => pid,
        Err(ForkError::NoRunner(why)) => {
            warn!("[{}] {why}; starting the command runner by exec", unit.id);
            exec_runner(unit, &req, log_level)?
        }
        Err(e @ ForkError::Unanswered(_)) => return adopt_or_fail(unit, &e),
    };
    unit.update(|s| {
        // A fast runner may already have moved on, or even finished.
        if s.is_final() {
            return;
        }
        if s.detail == STARTING {
            s.set(PENDING, "Launching command runner");
        }
        s.extra = Some(ExtraData::Command(CommandExtra {
            pid: i64::from(pid),
            params: params.clone(),
        }));
    });
    Ok(())
}

/// After a start the fork server never answered, a runner may exist that
/// the daemon has no PID for; it records its own in its first status
/// write (`runner::claim`). Under the status lock, either that write came
/// first and the runner is watched, or this one fails the unit first and
/// the runner, seeing a final state, never runs the command.
fn adopt_or_fail(unit: &Arc<Unit>, e: &ForkError) -> Result<(), WorkError> {
    let err = WorkError::Launch(std::io::Error::other(e.to_string()));
    let mut failed = false;
    let st = unit.update(|s| {
        let pid = recorded_pid(s);
        if !s.is_final() && !runner_alive(pid, unit.dir.path()) {
            s.set(FAILED, format!("Error starting worker: {err}"));
            failed = true;
        }
    });
    if failed {
        return Err(err);
    }
    let pid = recorded_pid(&st);
    warn!(
        "[{}] {e}; watching the runner it recorded, PID {pid}",
        unit.id
    );
    watch_orphan(unit.clone(), pid);
    Ok(())
}

fn recorded_pid(s: &super::state::Status) -> u32 {
    s.command().map_or(0, |c| u32::try_from(c.pid).unwrap_or(0))
}

/// Execs a runner (`--command-runner`) and a thread that waits for it.
fn exec_runner(unit: &Arc<Unit>, req: &Request, log_level: &str) -> Result<u32, WorkError> {
    let mut cmd = Command::new(own_executable().map_err(WorkError::Launch)?);
    cmd.args(["--node", "id=worker", "--log-level", log_level])
        .args(runner_args(req))
        .stdin(Stdio::null());
    // The runner makes its own session first thing; doing it here would
    // need a pre_exec hook, which forces fork() (copying the daemon's page
    // tables) instead of posix_spawn.
    let mut child = crate::reaper::spawn(&mut cmd).map_err(WorkError::Launch)?;
    let pid = child.id();
    let watched = unit.clone();
    std::thread::Builder::new()
        .name(format!("unit-{}", unit.id))
        .spawn(move || {
            let exit = child.wait();
            runner_gone(&watched, pid, exit.map(super::runner::describe_exit));
        })
        .map_err(WorkError::Launch)?;
    Ok(pid)
}

/// The arguments that make a receptor process the runner for `req`;
/// `runner_alive` knows it by them.
pub(super) fn runner_args(req: &Request) -> [String; 4] {
    [
        "--command-runner".into(),
        format!("command={}", req.command),
        format!("params={}", req.params),
        format!("unitdir={}", req.unitdir.display()),
    ]
}

/// The running binary. `/proc/self/exe` still runs it after a package
/// upgrade has replaced or deleted the file, where its path would not.
pub(super) fn own_executable() -> std::io::Result<std::path::PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot find own executable: {e}")))
}

/// After the runner exits, its final status must be on disk; if not, it
/// died without writing it.
pub(super) fn runner_gone(unit: &Unit, pid: u32, exit: std::io::Result<String>) {
    let st = unit.status();
    if !st.is_final() {
        let how = exit.unwrap_or_else(|e| e.to_string());
        error!(
            "[{}] Command runner (PID {pid}) ended without a result: {how}",
            unit.id
        );
        unit.update(|s| {
            s.set(FAILED, format!("Command runner exited unexpectedly: {how}"));
            s.stdout_size = stdout_len(unit);
            s.extra = None;
        });
    }
    unit.notify();
}

fn stdout_len(unit: &Unit) -> i64 {
    std::fs::metadata(unit.dir.stdout_path()).map_or(0, |m| m.len() as i64)
}

/// Picks up a unit found on disk at startup.
pub fn restart(unit: &Arc<Unit>) {
    let st = unit.status();
    if st.is_final() {
        return;
    }
    let pid = st.command().map_or(0, |c| c.pid);
    if st.state == PENDING && pid == 0 {
        unit.update(|s| s.set(FAILED, "Pending at restart"));
        return;
    }
    let pid = u32::try_from(pid).unwrap_or(0);
    if !runner_alive_soon(pid, unit.dir.path(), RUNNER_GRACE) {
        lost(unit, pid);
        return;
    }
    debug!("[{}] Resuming watch of command runner PID {pid}", unit.id);
    watch_orphan(unit.clone(), pid);
}

/// Watches a runner this process cannot wait for (it did not start it,
/// or the fork server that did has died) until it is gone.
pub(super) fn watch_orphan(unit: Arc<Unit>, pid: u32) {
    let watched = unit.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("unit-{}", unit.id))
        .spawn(move || {
            while runner_alive_soon(pid, watched.dir.path(), RUNNER_GRACE) {
                watched.notify();
                std::thread::sleep(ORPHAN_POLL);
            }
            if !watched.status().is_final() {
                lost(&watched, pid);
            }
            watched.notify();
        });
    if let Err(e) = spawned {
        error!("[{}] Cannot watch command runner: {e}", unit.id);
    }
}

/// The runner vanished without recording an outcome (it died with the
/// daemon or the machine): the unit failed. Go leaves it Running forever.
fn lost(unit: &Unit, pid: u32) {
    warn!(
        "[{}] Command runner PID {pid} is gone; marking the unit failed",
        unit.id
    );
    unit.update(|s| {
        if !s.is_final() {
            s.set(
                FAILED,
                format!(
                    "Command runner (PID {pid}) is gone: it stopped while receptor was not running"
                ),
            );
            // The runner's last progress report may predate the output it
            // wrote before dying; the file is the truth.
            s.stdout_size = stdout_len(unit);
            s.extra = None;
        }
    });
}

/// Whether `pid` is still this unit's runner: alive (not a zombie) and
/// either running `--command-runner` for this unit directory or forked by
/// the fork server and working in this unit directory, so a reused PID is
/// not mistaken for it.
pub fn runner_alive(pid: u32, unit_dir: &Path) -> bool {
    let Some(cmdline) = live_cmdline(pid) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let want = format!("unitdir={}", unit_dir.display());
    let execd = args.contains(&&b"--command-runner"[..]) && args.contains(&want.as_bytes());
    execd || super::forkserver::is_forked_runner(pid, &args, unit_dir)
}

/// [`runner_alive`], allowing a runner just forked one `grace` to become
/// recognizable: until it has entered its unit directory (or exec'd) it is
/// a copy of the fork server, matching neither test. Only a process that
/// may still become one is waited for, so units whose runners are gone
/// (after a reboot, say) are judged at once.
fn runner_alive_soon(pid: u32, unit_dir: &Path, grace: Duration) -> bool {
    let deadline = std::time::Instant::now() + grace;
    loop {
        if runner_alive(pid, unit_dir) {
            return true;
        }
        if !may_become_runner(pid) || std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` is a live process that may yet become a recognizable
/// runner: one with the fork server's command line, or one whose command
/// line is empty because it is in the middle of an exec (a forked runner
/// that cannot enter its directory execs `--command-runner`). A kernel
/// thread's command line is empty too, but it has no executable.
fn may_become_runner(pid: u32) -> bool {
    live_cmdline(pid).is_some_and(|c| {
        let execing = c.is_empty() && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok();
        execing
            || c.split(|&b| b == 0)
                .any(|a| a == super::forkserver::SERVER_FLAG.as_bytes())
    })
}

/// The command line of `pid`, if it is a live process (not a zombie).
fn live_cmdline(pid: u32) -> Option<Vec<u8>> {
    if pid == 0 || crate::procstat::ProcStat::read(pid)?.is_dead() {
        return None;
    }
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

/// Interrupts the runner (which stops the command) and records Canceled.
pub fn cancel(unit: &Unit) {
    // Canceled goes on disk first: the runner's own last write then keeps
    // it, so no one watching sees a passing "Killed" failure instead.
    let st = unit.update(|s| s.set(CANCELED, "Canceled"));
    let pid = recorded_pid(&st);
    if runner_alive(pid, unit.dir.path()) {
        // SAFETY: kill(2) has no memory effects.
        unsafe {
            libc::kill(pid as i32, libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + CANCEL_WAIT;
        while runner_alive(pid, unit.dir.path()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    unit.update(|s| {
        s.set(CANCELED, "Canceled");
        s.extra = None;
    });
    unit.notify();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(params: &str, allow: bool) -> WorkCommandCfg {
        WorkCommandCfg {
            work_type: "t".into(),
            command: "sh".into(),
            params: params.into(),
            allow_runtime_params: allow,
            verify_signature: false,
        }
    }

    #[test]
    fn params_combine_like_go() {
        let params = |base: &str, allow: bool, runtime: &str| {
            effective_params(&cfg(base, allow), runtime).map_err(|e| e.to_string())
        };
        assert_eq!(params("-c x", false, ""), Ok("-c x".into()));
        assert_eq!(
            params("-c x", false, "y"),
            Err("extra params provided but not allowed".into())
        );
        assert_eq!(params("a", true, "b c"), Ok("a b c".into()));
        assert_eq!(params("", true, "b"), Ok("b".into()));
    }

    /// A stand-in for a runner just forked: a process with the fork
    /// server's flag in its command line that enters `dir` only when
    /// `go` appears (sh keeps its own command line across `cd`). Its
    /// output goes nowhere, so a `sleep` it leaves behind holds nothing
    /// of the test harness open.
    #[allow(clippy::disallowed_methods)] // a test's stand-in process
    fn forked_copy(dir: &Path, go: &Path) -> std::process::Child {
        let script = format!(
            "while [ ! -e '{}' ]; do sleep 0.01; done; cd '{}' && while :; do sleep 0.05; done",
            go.display(),
            dir.display()
        );
        Command::new("sh")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .args(["-c", &script, super::super::forkserver::SERVER_FLAG])
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_runner_not_yet_in_its_directory_gets_a_grace() {
        let tmp = std::env::temp_dir().join(format!(
            "receptor-grace-{}",
            crate::random::alphanumeric(10)
        ));
        let dir = tmp.join("unit");
        std::fs::create_dir_all(&dir).unwrap();
        let go = tmp.join("go");
        let mut child = forked_copy(&dir, &go);
        let pid = child.id();
        // A failed assertion must not leave the copy looping (it would
        // hold the test harness's output open).
        struct Reap(u32);
        impl Drop for Reap {
            fn drop(&mut self) {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            }
        }
        let reap = Reap(pid);
        // Not yet recognizable, and still not after a grace in which it
        // stays where it is: a copy that never settles is not the runner.
        assert!(!runner_alive(pid, &dir));
        assert!(may_become_runner(pid));
        assert!(!runner_alive_soon(pid, &dir, Duration::from_millis(50)));
        std::fs::write(&go, b"").unwrap();
        assert!(runner_alive_soon(pid, &dir, Duration::from_secs(10)));
        drop(reap);
        child.wait().unwrap();
        // Gone, so no grace is waited for.
        assert!(!may_become_runner(pid));
        assert!(!runner_alive_soon(pid, &dir, Duration::from_secs(10)));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn our_own_process_is_not_a_runner() {
        assert!(!runner_alive(std::process::id(), Path::new("/nowhere")));
        assert!(!runner_alive(0, Path::new("/nowhere")));
        // PID 2 is kthreadd outside a PID namespace: an empty command
        // line, but no exec under way.
        assert!(!may_become_runner(2));
    }
}
