//! The command runner: a separate process (`receptor --command-runner`)
//! that runs one unit's command and records its progress and outcome in
//! the unit's `status` file. Living in its own session, it outlives a
//! daemon restart, so the outcome is never lost (docs/work.md §4). It is
//! either exec'd by the daemon or forked by the runner fork server
//! (`super::forkserver`); both run [`run`].

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use log::error;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

use super::shlex;
use super::state::{
    CANCELED, CommandExtra, ExtraData, FAILED, PENDING, RUNNING, SUCCEEDED, Status,
};
use super::store::UnitDir;
use crate::config::CommandRunnerCfg;

/// How often the stdout size is copied into the status while running.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// How long a command may take to exit after SIGINT before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Runs the command to completion; returns the process exit code.
/// `cwd`: where the command runs, when not in this process's directory.
pub fn run(cfg: &CommandRunnerCfg, cwd: Option<&Path>) -> i32 {
    // Leave the daemon's session so that stopping or restarting the daemon
    // (or its terminal going away) leaves the unit running.
    // SAFETY: setsid has no memory effects; failure (already a session
    // leader) is harmless.
    unsafe {
        libc::setsid();
    }
    let dir = UnitDir::open(cfg.unit_dir.clone());
    let base = dir.read().unwrap_or_else(|_| Status::new("", None));
    let set = |state: i64, detail: String, size: i64| {
        let r = dir.update(&base, |s| {
            // This runner writes a final state only as its last write, so
            // one found here is the daemon's (a cancel, a start it gave
            // up on): it stands.
            if !s.is_final() {
                s.set(state, detail);
            }
            s.stdout_size = size.max(s.stdout_size);
            if super::state::is_final(state) {
                s.extra = None;
            }
        });
        if let Err(e) = r {
            error!("Error updating status file {}: {e}", dir.path().display());
        }
    };
    // Catch SIGINT/SIGTERM before the command exists, so a cancel that
    // comes early cannot kill us and leave the command unsupervised.
    let wakeups = Wakeups::register();
    if let Err(e) = &wakeups {
        error!("Cannot catch signals: {e}");
    }
    if !claim(&dir, &base, &cfg.params) {
        return -1;
    }
    let mut child = match spawn(cfg, &dir, cwd) {
        Ok(c) => c,
        Err(detail) => {
            set(FAILED, detail, 0);
            return 1;
        }
    };
    let pid = child.id();
    set(RUNNING, format!("Running: PID {pid}"), stdout_size(&dir));
    let mut interrupted = false;
    // A cancel that saw no runner PID yet only wrote Canceled.
    if canceled(&dir) {
        interrupted = true;
        signal(pid, libc::SIGKILL);
    }
    let status = supervise(
        &mut child,
        wakeups.as_ref().ok(),
        &dir,
        &base,
        &mut interrupted,
    );
    if let Ok(f) = File::open(dir.stdout_path()) {
        let _ = f.sync_all();
    }
    let size = stdout_size(&dir);
    match status {
        _ if interrupted => set(FAILED, "Killed".into(), size),
        Ok(s) if s.success() => set(SUCCEEDED, describe_exit(s), size),
        Ok(s) => set(FAILED, describe_exit(s), size),
        Err(e) => set(FAILED, format!("Error waiting for command: {e}"), size),
    }
    if interrupted { -1 } else { 0 }
}

/// The runner's first write: Pending, with its own PID, so a daemon that
/// never learned the PID (the fork server's answer was lost) finds it on
/// disk. False if the unit is already final: the daemon gave it up (a
/// cancel, a start it failed) before this runner could say it exists,
/// or the status cannot be written, so the command must not run. Both sides write under the status lock,
/// so one of them is first.
fn claim(dir: &UnitDir, base: &Status, params: &str) -> bool {
    let claimed = dir.update(base, |s| {
        if !s.is_final() {
            s.set(PENDING, "Not started yet");
            s.extra = Some(ExtraData::Command(CommandExtra {
                pid: i64::from(std::process::id()),
                params: params.to_string(),
            }));
        }
    });
    match claimed {
        Ok(s) => !s.is_final(),
        // Unrecorded, the runner could be neither found nor cancelled,
        // and it could not report an outcome either: better not to run.
        Err(e) => {
            error!("Error updating status file {}: {e}", dir.path().display());
            false
        }
    }
}

// The runner process, not the daemon: no reaper here.
#[allow(clippy::disallowed_methods)]
fn spawn(
    cfg: &CommandRunnerCfg,
    dir: &UnitDir,
    cwd: Option<&Path>,
) -> Result<std::process::Child, String> {
    let args = shlex::split(&cfg.params).map_err(|e| format!("Error parsing params: {e}"))?;
    let stdin =
        File::open(dir.stdin_path()).map_err(|e| format!("Error opening stdin file: {e}"))?;
    let stdout = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.stdout_path())
        .map_err(|e| format!("Error opening stdout file: {e}"))?;
    let stderr = stdout
        .try_clone()
        .map_err(|e| format!("Error opening stdout file: {e}"))?;
    let mut cmd = Command::new(&cfg.command);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    cmd.args(args)
        .process_group(0)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| exec_error(&cfg.command, &e))
}

/// Go's wording for a command that cannot be started.
fn exec_error(command: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound && !command.contains('/') {
        format!("exec: \"{command}\": executable file not found in $PATH")
    } else {
        format!("fork/exec {command}: {e}")
    }
}

/// Go's `ProcessState.String()`: `exit status 3`, `signal: killed`.
pub fn describe_exit(s: ExitStatus) -> String {
    if let Some(code) = s.code() {
        return format!("exit status {code}");
    }
    let sig = s.signal().unwrap_or(0);
    let name = match sig {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGABRT => "aborted",
        libc::SIGKILL => "killed",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGPIPE => "broken pipe",
        libc::SIGTERM => "terminated",
        _ => return format!("signal: signal {sig}"),
    };
    format!("signal: {name}")
}

fn canceled(dir: &UnitDir) -> bool {
    dir.read().is_ok_and(|s| s.state == CANCELED)
}

fn stdout_size(dir: &UnitDir) -> i64 {
    std::fs::metadata(dir.stdout_path()).map_or(0, |m| m.len() as i64)
}

/// SIGINT/SIGTERM and SIGCHLD as bytes on two sockets, written by signal
/// handlers: the runner waits for them with poll, in its one thread, and
/// blocks no signal (the tests check its SigBlk). Handlers, unlike
/// ignored signals, do not survive into the command's exec; its mask
/// `Command::spawn` clears anyway.
struct Wakeups {
    stop: UnixStream,
    exited: UnixStream,
}

impl Wakeups {
    fn register() -> std::io::Result<Wakeups> {
        let (stop, stop_writer) = UnixStream::pair()?;
        let (exited, exited_writer) = UnixStream::pair()?;
        stop.set_nonblocking(true)?;
        exited.set_nonblocking(true)?;
        for sig in [SIGINT, SIGTERM] {
            signal_hook::low_level::pipe::register(sig, stop_writer.try_clone()?)?;
        }
        signal_hook::low_level::pipe::register(SIGCHLD, exited_writer)?;
        Ok(Wakeups { stop, exited })
    }

    /// Waits for a signal or until `timeout`; true if SIGINT or SIGTERM
    /// came.
    fn wait(&self, timeout: Duration) -> bool {
        let mut fds = [&self.stop, &self.exited].map(|s| poll_in(s.as_raw_fd()));
        // Rounded up, so a wait shorter than 1 ms does not spin.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of two pollfd; EINTR only wakes us.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 2, ms);
        }
        let stopped = drain(&self.stop);
        drain(&self.exited);
        stopped
    }
}

/// A pollfd waiting for `fd` to be readable.
pub(super) fn poll_in(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Reads what is waiting on a non-blocking descriptor; true if anything
/// was. The buffer holds whole signalfd records (128 bytes each), as a
/// signalfd refuses shorter reads.
pub(super) fn drain(mut s: impl Read) -> bool {
    let mut buf = [0u8; 512];
    let mut any = false;
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {
        any = true;
    }
    any
}

/// Waits for the command in this one thread: wakes on its SIGCHLD, on
/// SIGINT/SIGTERM (interrupt the command, then kill it if it lingers past
/// `KILL_GRACE`) and every `PROGRESS_INTERVAL` (copy the stdout size into
/// the status).
fn supervise(
    child: &mut Child,
    wakeups: Option<&Wakeups>,
    dir: &UnitDir,
    base: &Status,
    interrupted: &mut bool,
) -> std::io::Result<ExitStatus> {
    let pid = child.id();
    let mut reported = -1;
    let mut progress_at = Instant::now() + PROGRESS_INTERVAL;
    let mut kill_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= progress_at {
            report_progress(dir, base, pid, &mut reported);
            progress_at = now + PROGRESS_INTERVAL;
        }
        if kill_at.is_some_and(|t| now >= t) {
            signal(pid, libc::SIGKILL);
            kill_at = None;
        }
        let wake = kill_at.map_or(progress_at, |t| t.min(progress_at));
        let timeout = wake.saturating_duration_since(now);
        // Without handlers, only the progress deadline wakes us.
        let stop = wakeups.is_some_and(|w| w.wait(timeout));
        if wakeups.is_none() {
            std::thread::sleep(timeout);
        }
        if stop && !*interrupted {
            *interrupted = true;
            signal(pid, libc::SIGINT);
            kill_at = Some(Instant::now() + KILL_GRACE);
        }
    }
}

/// Signals the command's whole process group, so a shell's children stop
/// with it.
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; a stale PID only fails.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// Copies the stdout size into the status if it changed.
fn report_progress(dir: &UnitDir, base: &Status, pid: u32, reported: &mut i64) {
    let size = stdout_size(dir);
    if size == *reported {
        return;
    }
    *reported = size;
    let _ = dir.update(base, |s| {
        if s.state == RUNNING {
            s.detail = format!("Running: PID {pid}");
            s.stdout_size = size;
        }
    });
}
