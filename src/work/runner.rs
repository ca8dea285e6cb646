//! The command runner: a separate process (`receptor --command-runner`)
//! that runs one unit's command and records its progress and outcome in
//! the unit's `status` file. Living in its own session, it outlives a
//! daemon restart, so the outcome is never lost (docs/work.md §4). It is
//! either exec'd by the daemon or forked by the runner fork server
//! (`super::forkserver`); both run [`run`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::error;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::shlex;
use super::state::{CANCELED, FAILED, PENDING, RUNNING, SUCCEEDED, Status};
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
            // A cancel recorded by the daemon stands.
            if s.state != CANCELED {
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
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]);
    set(PENDING, "Not started yet".into(), 0);
    if canceled(&dir) {
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
    let interrupted = watch_signals(signals.ok(), pid);
    // A cancel that saw no runner PID yet only wrote Canceled.
    if canceled(&dir) {
        interrupted.store(true, Ordering::Relaxed);
        signal(pid, libc::SIGKILL);
    }
    let (done, finished) = crossbeam_channel::bounded::<()>(0);
    let progress = report_progress(dir.clone(), base.clone(), pid, finished);
    let status = child.wait();
    drop(done);
    let _ = progress.map(|t| t.join());
    if let Ok(f) = File::open(dir.stdout_path()) {
        let _ = f.sync_all();
    }
    let size = stdout_size(&dir);
    match status {
        _ if interrupted.load(Ordering::Relaxed) => set(FAILED, "Killed".into(), size),
        Ok(s) if s.success() => set(SUCCEEDED, describe_exit(s), size),
        Ok(s) => set(FAILED, describe_exit(s), size),
        Err(e) => set(FAILED, format!("Error waiting for command: {e}"), size),
    }
    if interrupted.load(Ordering::Relaxed) {
        -1
    } else {
        0
    }
}

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

/// On SIGINT or SIGTERM: interrupt the command, then kill it if it lingers.
fn watch_signals(signals: Option<signal_hook::iterator::Signals>, pid: u32) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let Some(mut signals) = signals else {
        return flag;
    };
    let seen = flag.clone();
    let _ = std::thread::Builder::new()
        .name("runner-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                seen.store(true, Ordering::Relaxed);
                signal(pid, libc::SIGINT);
                std::thread::sleep(KILL_GRACE);
                signal(pid, libc::SIGKILL);
            }
        });
    flag
}

/// Signals the command's whole process group, so a shell's children stop
/// with it.
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; a stale PID only fails.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// Copies the stdout size into the status until `finished` disconnects.
fn report_progress(
    dir: UnitDir,
    base: Status,
    pid: u32,
    finished: crossbeam_channel::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("runner-progress".into())
        .spawn(move || {
            let mut last = -1;
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                finished.recv_timeout(PROGRESS_INTERVAL)
            {
                let size = stdout_size(&dir);
                if size != last {
                    last = size;
                    let _ = dir.update(&base, |s| {
                        if s.state == RUNNING {
                            s.detail = format!("Running: PID {pid}");
                            s.stdout_size = size;
                        }
                    });
                }
            }
        })
}
