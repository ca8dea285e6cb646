//! The runner fork server: one helper process per daemon that forks each
//! work-command unit's runner, so a unit costs a fork of a small
//! single-threaded process instead of an exec of the whole binary (its
//! loading, relocation and page faults) and a daemon thread waiting for
//! it (docs/work.md §4).
//!
//! The daemon starts it on the first unit start, as its own binary with
//! the hidden `--command-runner-server` directive, talking over a
//! socketpair on the server's stdin: one JSON [`Request`] line per unit
//! from the daemon, [`Reply`] lines back, the first of them `Ready` once
//! the server has passed its checks. A runner is answered with
//! `Started` before its `Exited` can be sent, as the server reaps only
//! between requests. The server exits when the daemon's end closes; its
//! runners live on in their own sessions.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use log::{error, warn};
use serde_json::Value;

use super::Unit;
use super::runner::{self, poll_in};
use crate::config::CommandRunnerCfg;
use crate::reaper::{self, OwnedChild};

/// The argument that makes a receptor process the fork server.
pub const SERVER_FLAG: &str = "--command-runner-server";
/// Longest line either side buffers; a unit's params fit easily.
const MAX_LINE: usize = 1 << 20;
/// How long a unit start waits for the server to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Start one unit's runner.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub command: String,
    pub params: String,
    pub unitdir: PathBuf,
}

#[derive(Debug, PartialEq)]
enum Reply {
    /// The server (this PID) passed its checks and takes requests.
    Ready(u32),
    /// The runner for the oldest unanswered request has this PID.
    Started(u32),
    /// fork failed for the oldest unanswered request; no runner exists.
    ForkFailed(String),
    /// A runner ended, in `describe_exit`'s words.
    Exited { pid: u32, how: String },
}

// The lines are JSON objects built and read through `serde_json::Value`,
// which the binary has anyway, rather than derived (de)serializers.

impl Request {
    fn encode(&self) -> String {
        serde_json::json!({
            "command": self.command,
            "params": self.params,
            "unitdir": self.unitdir.to_string_lossy(),
        })
        .to_string()
    }

    fn decode(line: &[u8]) -> Result<Request, String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("no {k:?} in {v}"))
        };
        Ok(Request {
            command: field("command")?,
            params: field("params")?,
            unitdir: field("unitdir")?.into(),
        })
    }
}

impl Reply {
    fn encode(&self) -> String {
        match self {
            Reply::Ready(pid) => serde_json::json!({ "Ready": pid }),
            Reply::Started(pid) => serde_json::json!({ "Started": pid }),
            Reply::ForkFailed(e) => serde_json::json!({ "ForkFailed": e }),
            Reply::Exited { pid, how } => serde_json::json!({ "Exited": pid, "how": how }),
        }
        .to_string()
    }

    fn decode(line: &[u8]) -> Result<Reply, String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let pid = |k: &str| v[k].as_u64().and_then(|p| u32::try_from(p).ok());
        if let Some(p) = pid("Ready") {
            Ok(Reply::Ready(p))
        } else if let Some(p) = pid("Started") {
            Ok(Reply::Started(p))
        } else if let Some(e) = v["ForkFailed"].as_str() {
            Ok(Reply::ForkFailed(e.to_string()))
        } else if let (Some(p), Some(how)) = (pid("Exited"), v["how"].as_str()) {
            Ok(Reply::Exited {
                pid: p,
                how: how.to_string(),
            })
        } else {
            Err("not a fork server reply".into())
        }
    }
}

/// Why a unit start through the server gave no runner PID.
#[derive(Debug)]
pub enum ForkError {
    /// Certainly no runner exists for the unit (the server could not be
    /// started or reached, or fork failed): one may be started otherwise.
    NoRunner(String),
    /// The server took the request but died or went quiet before
    /// answering: a runner may exist, so none may be started otherwise.
    Unanswered(String),
}

impl std::fmt::Display for ForkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForkError::NoRunner(e) | ForkError::Unanswered(e) => f.write_str(e),
        }
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes: bytes
/// go in with `handle_bytes`, whole lines (without their newline) come
/// out of `poll_line`.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn handle_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn poll_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(end) if end <= MAX_LINE => {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                Ok(Some(line))
            }
            None if self.buf.len() <= MAX_LINE => Ok(None),
            _ => Err(io::Error::other("line too long")),
        }
    }
}

/// Reads from `from` until `lines` holds a whole line; None at its end.
fn read_line(mut from: impl Read, lines: &mut Lines) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(line) = lines.poll_line()? {
            return Ok(Some(line));
        }
        match from.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => lines.handle_bytes(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Daemon side
// ---------------------------------------------------------------------------

/// The daemon's handle: starts the server on first use, and again after
/// it died.
pub struct Launcher {
    server: Mutex<Option<Arc<Server>>>,
    /// The binary run as the server: the running one unless a test says.
    program: Option<PathBuf>,
    /// [`ANSWER_WAIT`] unless a test says.
    answer_wait: Duration,
    /// How long a new server may take to say Ready: [`ANSWER_WAIT`]
    /// always, so a test that shortens the answer wait does not also
    /// race the start of its (shell) server on a loaded machine.
    ready_wait: Duration,
}

impl Default for Launcher {
    fn default() -> Launcher {
        Launcher {
            server: Mutex::default(),
            program: None,
            answer_wait: ANSWER_WAIT,
            ready_wait: ANSWER_WAIT,
        }
    }
}

/// One running server, as the daemon sees it.
struct Server {
    /// Requests are written under this lock, in the order of `pending`.
    requests: Mutex<UnixStream>,
    pending: Mutex<VecDeque<Pending>>,
    gone: AtomicBool,
    /// Reaped only by the reader thread, after which `kill` is a no-op.
    process: Mutex<OwnedChild>,
}

/// A request waiting for its `Started` or `ForkFailed`.
struct Pending {
    unit: Arc<Unit>,
    answer: crate::reply::Replier<Result<u32, ForkError>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Launcher {
    /// Has the server fork `unit`'s runner; returns the runner's PID. The
    /// runner's exit is then reported to `command::runner_gone`.
    pub fn start(
        &self,
        unit: &Arc<Unit>,
        req: &Request,
        log_level: &str,
    ) -> Result<u32, ForkError> {
        let server = self.server(log_level).map_err(|e| {
            ForkError::NoRunner(format!("cannot start the runner fork server: {e}"))
        })?;
        let mut line = req.encode();
        line.push('\n');
        let (answer, answered) = crate::reply::pair();
        {
            let mut requests = lock(&server.requests);
            lock(&server.pending).push_back(Pending {
                unit: unit.clone(),
                answer,
            });
            match requests.write_all(line.as_bytes()) {
                Ok(()) => {}
                // Timed out: a stuck server, which may have read part of
                // the line; as for a late answer.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(stuck(&server));
                }
                // A failed write reached no live server (its end is
                // closed), so the entry just queued is never answered by
                // a fork.
                Err(e) => {
                    server.gone.store(true, Ordering::Relaxed);
                    return Err(ForkError::NoRunner(format!("runner fork server: {e}")));
                }
            }
        }
        answered
            .wait(Some(self.answer_wait))
            .unwrap_or_else(|_| Err(stuck(&server)))
    }

    fn server(&self, log_level: &str) -> io::Result<Arc<Server>> {
        let mut slot = lock(&self.server);
        if let Some(s) = slot.as_ref().filter(|s| !s.gone.load(Ordering::Relaxed)) {
            return Ok(s.clone());
        }
        let program = match &self.program {
            Some(p) => p.clone(),
            None => super::command::own_executable()?,
        };
        let server = spawn_server(&program, log_level, self.ready_wait, self.answer_wait)?;
        *slot = Some(server.clone());
        Ok(server)
    }
}

/// Stops a server that is alive but stuck: every later start would wait
/// as long. Its end closing makes the reader answer the whole queue.
fn stuck(server: &Server) -> ForkError {
    server.abandon();
    ForkError::Unanswered("the runner fork server did not answer; stopped it".into())
}

/// Execs the server, waits for its `Ready` and starts the thread that
/// reads its replies. An error leaves no server process behind.
fn spawn_server(
    program: &Path,
    log_level: &str,
    ready_wait: Duration,
    wait: Duration,
) -> io::Result<Arc<Server>> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut process = reaper::spawn(
        Command::new(program)
            .args(["--node", "id=worker", "--log-level", log_level, SERVER_FLAG])
            .stdin(Stdio::from(OwnedFd::from(theirs))),
    )?;
    let setup = await_ready(&ours, process.id(), ready_wait).and_then(|lines| {
        let requests = ours.try_clone()?;
        // A server stuck on its end must not hold a start (and the lock
        // on `requests`) longer than an answer may take.
        requests.set_write_timeout(Some(wait))?;
        Ok((lines, requests))
    });
    let (lines, requests) = match setup {
        Ok(s) => s,
        Err(e) => {
            let _ = process.kill();
            let _ = process.wait();
            return Err(e);
        }
    };
    let server = Arc::new(Server {
        requests: Mutex::new(requests),
        pending: Mutex::default(),
        gone: AtomicBool::new(false),
        process: Mutex::new(process),
    });
    let reader = server.clone();
    let spawned = std::thread::Builder::new()
        .name("runner-forks".into())
        .spawn(move || reader.read_replies(ours, lines));
    if let Err(e) = spawned {
        server.abandon();
        let _ = lock(&server.process).wait();
        return Err(e);
    }
    Ok(server)
}

/// Waits up to `wait` for the server's `Ready`: one that refuses to run
/// (another thread, no /proc, a binary without the directive, a bad
/// configuration) exits without it, and then no runner can exist.
/// Returns the reader's buffer, which may hold more than that line.
fn await_ready(mut from: &UnixStream, pid: u32, wait: Duration) -> io::Result<Lines> {
    let mut lines = Lines::default();
    from.set_read_timeout(Some(wait))?;
    let line = read_line(&mut from, &mut lines)
        .map_err(|e| io::Error::other(format!("no ready line from the fork server: {e}")))?;
    from.set_read_timeout(None)?;
    match line.as_deref().map(Reply::decode) {
        Some(Ok(Reply::Ready(p))) if p == pid => Ok(lines),
        Some(_) => Err(io::Error::other("the fork server did not say it was ready")),
        None => Err(io::Error::other("the fork server exited at once")),
    }
}

impl Server {
    /// Routes answers to the units waiting for them and exits to
    /// `runner_gone`, until the server's end closes. Its runners still
    /// alive then are watched the way a restarted daemon watches them.
    fn read_replies(&self, mut replies: UnixStream, mut lines: Lines) {
        let mut runners: HashMap<u32, Arc<Unit>> = HashMap::new();
        loop {
            let line = match read_line(&mut replies, &mut lines) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    error!("Runner fork server: {e}");
                    break;
                }
            };
            let handled = Reply::decode(&line).and_then(|r| self.handle_reply(r, &mut runners));
            if let Err(e) = handled {
                let line = String::from_utf8_lossy(&line);
                error!("Runner fork server sent {line:?}: {e}; replacing it");
                break;
            }
        }
        self.abandon();
        // Dead before the queue is emptied: no answer can come after it.
        let mut process = lock(&self.process);
        let _ = process.wait();
        warn!("Runner fork server (PID {}) has exited", process.id());
        drop(process);
        for p in lock(&self.pending).drain(..) {
            let why = "the runner fork server exited before answering".into();
            let _ = p.answer.send(Err(ForkError::Unanswered(why)));
        }
        for (pid, unit) in runners {
            super::command::watch_orphan(unit, pid);
        }
    }

    /// Routes one reply. An answer to no request, or a second `Ready`,
    /// means the two sides disagree on the queue: no answer can be
    /// trusted after it.
    fn handle_reply(
        &self,
        reply: Reply,
        runners: &mut HashMap<u32, Arc<Unit>>,
    ) -> Result<(), String> {
        match reply {
            Reply::Ready(_) => return Err("ready twice".into()),
            Reply::Started(pid) => {
                let p = self.next_pending().ok_or("an answer to no request")?;
                runners.insert(pid, p.unit.clone());
                let _ = p.answer.send(Ok(pid));
            }
            Reply::ForkFailed(e) => {
                let p = self.next_pending().ok_or("an answer to no request")?;
                let why = format!("runner fork server: fork: {e}");
                let _ = p.answer.send(Err(ForkError::NoRunner(why)));
            }
            Reply::Exited { pid, how } => {
                if let Some(unit) = runners.remove(&pid) {
                    super::command::runner_gone(&unit, pid, Ok(how));
                }
            }
        }
        Ok(())
    }

    /// No more requests go to this server; it is killed (unless reaped).
    fn abandon(&self) {
        self.gone.store(true, Ordering::Relaxed);
        let _ = lock(&self.process).kill();
    }

    fn next_pending(&self) -> Option<Pending> {
        lock(&self.pending).pop_front()
    }
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// Runs the fork server on stdin until the daemon closes it; returns the
/// process exit code.
pub fn serve() -> i32 {
    match serve_requests() {
        Ok(()) => 0,
        Err(e) => {
            error!("Runner fork server: {e}");
            1
        }
    }
}

fn serve_requests() -> io::Result<()> {
    // fork() copies only the calling thread: with another thread alive, a
    // lock it held (the allocator's, the logger's) would stay locked in
    // every runner.
    if std::fs::read_dir("/proc/self/task")?.count() != 1 {
        return Err(io::Error::other("not single-threaded; refusing to fork"));
    }
    let (children, old_mask) = SigChld::open()?;
    // SAFETY: the daemon handed the socket over as stdin; only this owns it.
    let mut daemon = unsafe { UnixStream::from_raw_fd(0) };
    if !send(&mut daemon, &Reply::Ready(std::process::id())) {
        return Ok(());
    }
    let mut lines = Lines::default();
    let mut chunk = [0u8; 4096];
    loop {
        let (requests, ended) = wait_for_work(&children)?;
        if ended {
            children.drain();
            if !reap(&mut daemon) {
                return Ok(());
            }
        }
        if !requests {
            continue;
        }
        match daemon.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => lines.handle_bytes(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        while let Some(line) = lines.poll_line()? {
            if !serve_one(&line, &mut daemon, &old_mask, &children)? {
                return Ok(());
            }
        }
    }
}

/// Waits until the daemon's socket (stdin) has something or a runner
/// ended; returns which of the two (neither, if a signal cut the wait).
fn wait_for_work(children: &SigChld) -> io::Result<(bool, bool)> {
    let mut fds = [poll_in(0), poll_in(children.fd.as_raw_fd())];
    // SAFETY: fds is a valid array of two pollfd.
    if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok((fds[0].revents != 0, fds[1].revents != 0))
}

/// Forks a runner for one request line and answers it; false once the
/// daemon is gone.
fn serve_one(
    line: &[u8],
    daemon: &mut UnixStream,
    old_mask: &libc::sigset_t,
    children: &SigChld,
) -> io::Result<bool> {
    let req = Request::decode(line).map_err(|e| io::Error::other(format!("bad request: {e}")))?;
    // The daemon may have died with requests still queued here: a runner
    // forked for one would run a unit no daemon is starting.
    if hung_up(daemon) {
        return Ok(false);
    }
    let reply = match fork_runner(&req, old_mask, children) {
        Ok(pid) => Reply::Started(pid),
        Err(e) => Reply::ForkFailed(e.to_string()),
    };
    Ok(send(daemon, &reply))
}

/// Whether the daemon's end of the socket has closed.
fn hung_up(daemon: &UnixStream) -> bool {
    let mut fd = poll_in(daemon.as_raw_fd());
    // SAFETY: one valid pollfd; a zero timeout does not block.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & libc::POLLHUP != 0
}

/// Writes one reply; false once the daemon is gone.
fn send(daemon: &mut UnixStream, reply: &Reply) -> bool {
    let mut line = reply.encode();
    line.push('\n');
    daemon.write_all(line.as_bytes()).is_ok()
}

/// Reports every runner that has ended; false once the daemon is gone.
fn reap(daemon: &mut UnixStream) -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return true;
        }
        let how = runner::describe_exit(ExitStatus::from_raw(status));
        if !send(
            daemon,
            &Reply::Exited {
                pid: pid as u32,
                how,
            },
        ) {
            return false;
        }
    }
}

/// SIGCHLD as a readable descriptor, so one poll waits for requests and
/// for runners ending alike.
struct SigChld {
    fd: File,
}

impl SigChld {
    /// Blocks SIGCHLD (as signalfd needs); returns the mask to restore.
    fn open() -> io::Result<(SigChld, libc::sigset_t)> {
        // SAFETY: the sigset calls only write the sets given; signalfd
        // returns a new descriptor or -1.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, libc::SIGCHLD);
            if libc::sigprocmask(libc::SIG_BLOCK, &mask, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((
                SigChld {
                    fd: File::from(OwnedFd::from_raw_fd(fd)),
                },
                old,
            ))
        }
    }

    /// Consumes the pending notifications; waitpid finds who ended.
    fn drain(&self) {
        runner::drain(&self.fd);
    }
}

/// Forks a runner for `req`. The child becomes the runner and exits; it
/// never returns from here.
fn fork_runner(req: &Request, old_mask: &libc::sigset_t, children: &SigChld) -> io::Result<u32> {
    // SAFETY: this process is single-threaded (checked at start), so the
    // child is a consistent copy and may allocate, log and spawn.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => become_runner(req, old_mask, children),
        pid => Ok(pid as u32),
    }
}

fn become_runner(req: &Request, old_mask: &libc::sigset_t, children: &SigChld) -> ! {
    // SAFETY: restores the signal mask the server started with and closes
    // a descriptor only the server reads; no Rust owner of it runs again.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
        libc::close(children.fd.as_raw_fd());
    }
    // The daemon's socket must not live on in a runner: the daemon would
    // not see the server's end close when the server dies. The exec'd
    // runner's stdin is /dev/null too.
    match File::open("/dev/null") {
        // SAFETY: dup2 onto 0 replaces the socket; `null` closes itself.
        Ok(null) => unsafe {
            libc::dup2(null.as_raw_fd(), 0);
        },
        // SAFETY: as above.
        Err(_) => unsafe {
            libc::close(0);
        },
    }
    let cwd = std::env::current_dir().ok();
    let unit_dir = std::path::absolute(&req.unitdir).unwrap_or_else(|_| req.unitdir.clone());
    // Its command line is the server's, so a restarted daemon knows this
    // runner by its working directory (`command::runner_alive`); the
    // command still runs where the daemon runs.
    let entered = cwd.is_some() && std::env::set_current_dir(&unit_dir).is_ok();
    if !entered {
        // Unknowable by its directory, it becomes the exec'd kind of
        // runner, known by its command line (the command then runs in
        // this directory, as in the daemon's).
        let e = exec_runner(req);
        warn!(
            "Runner for {} cannot enter its unit directory nor exec ({e}); a restarted \
             receptor will not recognize it",
            unit_dir.display()
        );
    }
    let cfg = CommandRunnerCfg {
        command: req.command.clone(),
        params: req.params.clone(),
        unit_dir,
    };
    let code = runner::run(&cfg, cwd.as_deref().filter(|_| entered));
    std::process::exit(code)
}

/// Replaces this process with `--command-runner` for `req`, on the
/// server's own arguments; returns only if exec fails.
fn exec_runner(req: &Request) -> io::Error {
    use std::os::unix::process::CommandExt;
    let program = match super::command::own_executable() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let ours = std::env::args_os()
        .skip(1)
        .filter(|a| a.as_encoded_bytes() != SERVER_FLAG.as_bytes());
    Command::new(program)
        .args(ours)
        .args(super::command::runner_args(req))
        .exec()
}

/// Whether `pid` is a runner the fork server made for `unit_dir`.
pub fn is_forked_runner(pid: u32, args: &[&[u8]], unit_dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if !args.contains(&SERVER_FLAG.as_bytes()) {
        return false;
    }
    let (Ok(cwd), Ok(dir)) = (
        std::fs::metadata(format!("/proc/{pid}/cwd")),
        std::fs::metadata(unit_dir),
    ) else {
        return false;
    };
    (cwd.dev(), cwd.ino()) == (dir.dev(), dir.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::state::Status;
    use crate::work::store::UnitDir;

    #[test]
    fn lines_round_trip_and_look_like_this() {
        let req = Request {
            command: "sh".into(),
            params: "-c 'echo \"a\nb\"'".into(),
            unitdir: "/var/lib/receptor/n1/AbCd1234".into(),
        };
        let line = req.encode();
        assert_eq!(
            line,
            r#"{"command":"sh","params":"-c 'echo \"a\nb\"'","unitdir":"/var/lib/receptor/n1/AbCd1234"}"#
        );
        assert_eq!(Request::decode(line.as_bytes()), Ok(req));
        let replies = [
            (Reply::Ready(7), r#"{"Ready":7}"#),
            (Reply::Started(42), r#"{"Started":42}"#),
            (
                Reply::ForkFailed("EAGAIN".into()),
                r#"{"ForkFailed":"EAGAIN"}"#,
            ),
            (
                Reply::Exited {
                    pid: 42,
                    how: "signal: killed".into(),
                },
                r#"{"Exited":42,"how":"signal: killed"}"#,
            ),
        ];
        for (reply, text) in replies {
            assert_eq!(reply.encode(), text);
            assert_eq!(Reply::decode(text.as_bytes()), Ok(reply));
        }
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(Request::decode(br#"{"command":"sh","params":""}"#).is_err());
        assert!(Request::decode(b"not json").is_err());
        assert!(Reply::decode(br#"{"Started":-1}"#).is_err());
        assert!(Reply::decode(br#"{"Exited":7}"#).is_err());
        assert!(Reply::decode(b"[]").is_err());
    }

    /// A unit in a fresh directory and a request to run `true` for it.
    fn unit_and_request(name: &str) -> (Arc<Unit>, Request) {
        let dir = std::env::temp_dir().join(format!("forkserver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("unit dir");
        let unit = Unit::new(
            "u".into(),
            UnitDir::open(dir.clone()),
            Status::new("t", None),
        );
        let req = Request {
            command: "true".into(),
            params: String::new(),
            unitdir: dir,
        };
        (unit, req)
    }

    /// A stand-in for the server: a shell script running `body` with the
    /// daemon's socket on stdin.
    /// A launcher whose server says Ready and then never answers, with
    /// a short answer wait.
    fn silent_launcher(dir: &Path) -> Launcher {
        Launcher {
            program: Some(fake_server(dir, &format!("{READY}\nexec sleep 60"))),
            answer_wait: Duration::from_millis(100),
            ..Launcher::default()
        }
    }

    fn fake_server(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-server");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        path
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The fake server's `Ready` line, with its PID.
    const READY: &str = r#"printf '{"Ready":%d}\n' $$ >&0"#;

    #[test]
    fn lines_come_whole_from_every_split_of_the_input() {
        let input = b"{\"a\":1}\n\n{\"bb\":22}\nrest";
        let want: [&[u8]; 3] = [br#"{"a":1}"#, b"", br#"{"bb":22}"#];
        for cut in 0..=input.len() {
            let mut lines = Lines::default();
            let mut got = Vec::new();
            for (i, part) in [&input[..cut], &input[cut..]].into_iter().enumerate() {
                lines.handle_bytes(part);
                while let Some(line) = lines.poll_line().expect("short lines") {
                    got.push(line);
                }
                if i == 0 {
                    let complete = part.iter().filter(|&&b| b == b'\n').count();
                    assert_eq!(got.len(), complete, "after {cut} bytes");
                }
            }
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(lines.buf, b"rest");
        }
    }

    #[test]
    fn a_line_past_the_cap_is_refused_with_or_without_its_end() {
        let mut lines = Lines::default();
        lines.handle_bytes(&vec![b'x'; MAX_LINE]);
        assert!(matches!(lines.poll_line(), Ok(None)));
        lines.handle_bytes(b"\n");
        assert_eq!(
            lines.poll_line().expect("at the cap").map(|l| l.len()),
            Some(MAX_LINE)
        );
        lines.handle_bytes(&vec![b'x'; MAX_LINE + 1]);
        assert!(lines.poll_line().is_err());
        let mut ended = Lines::default();
        ended.handle_bytes(&vec![b'x'; MAX_LINE + 1]);
        ended.handle_bytes(b"\n");
        assert!(ended.poll_line().is_err());
    }

    /// A server that refuses to run exits before its `Ready`: no runner
    /// can exist, so the unit may be started by exec.
    #[test]
    fn a_server_that_exits_at_once_leaves_no_runner() {
        let (unit, req) = unit_and_request("exits");
        let launcher = Launcher {
            program: Some("/bin/true".into()),
            ..Launcher::default()
        };
        let started = launcher.start(&unit, &req, "error");
        match &started {
            Err(ForkError::NoRunner(e)) => assert!(e.contains("exited at once"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(lock(&launcher.server).is_none());
        let _ = std::fs::remove_dir_all(&req.unitdir);
    }

    #[test]
    fn an_answer_to_no_request_replaces_the_server() {
        let (_, req) = unit_and_request("unasked");
        let body = format!("{READY}\necho '{{\"Started\":5}}' >&0\nexec sleep 60");
        let launcher = Launcher {
            program: Some(fake_server(&req.unitdir, &body)),
            ..Launcher::default()
        };
        let server = launcher.server("error").expect("server");
        let pid = lock(&server.process).id();
        assert!(wait_for(|| server.gone.load(Ordering::Relaxed)), "kept");
        assert!(wait_for(|| !alive(pid)), "server {pid} still runs");
        let _ = std::fs::remove_dir_all(&req.unitdir);
    }

    /// A server that reads nothing fills the socket: the start gives up
    /// after the answer wait instead of blocking with the requests lock.
    #[test]
    fn a_server_that_reads_nothing_does_not_block_a_start() {
        let (unit, mut req) = unit_and_request("unread");
        req.params = "x".repeat(MAX_LINE / 2);
        let launcher = Arc::new(silent_launcher(&req.unitdir));
        let (done, finished) = crossbeam_channel::bounded(1);
        let starter = launcher.clone();
        let unitdir = req.unitdir.clone();
        std::thread::spawn(move || {
            let _ = done.send(starter.start(&unit, &req, "error"));
        });
        let started = finished.recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(started, Ok(Err(ForkError::Unanswered(_)))),
            "{started:?}"
        );
        let stuck = lock(&launcher.server).clone().expect("a server");
        let pid = lock(&stuck.process).id();
        assert!(wait_for(|| !alive(pid)), "stuck server {pid} still runs");
        let _ = std::fs::remove_dir_all(&unitdir);
    }

    /// A start whose answer was lost: the unit fails, unless its runner
    /// recorded itself, which is then watched like an orphan.
    #[test]
    #[allow(clippy::disallowed_methods)] // a fake runner the test starts itself
    fn an_unanswered_start_fails_the_unit_unless_its_runner_said_it_exists() {
        use crate::config::WorkCommandCfg;
        use crate::work::state::{CommandExtra, ExtraData, FAILED};
        let cfg = WorkCommandCfg {
            work_type: "t".into(),
            command: "true".into(),
            params: String::new(),
            allow_runtime_params: false,
            verify_signature: false,
        };
        let (unit, req) = unit_and_request("lost-answer");
        let launcher = silent_launcher(&req.unitdir);
        let started = super::super::command::start(&unit, &cfg, "error", &launcher);
        assert!(started.is_err());
        let st = unit.status();
        assert_eq!(st.state, FAILED);
        assert!(st.detail.contains("did not answer"), "{}", st.detail);
        let first_dir = req.unitdir.clone();

        let (unit, req) = unit_and_request("recorded");
        // Known as a runner by its command line, as an exec'd one is.
        let mut runner = Command::new("sh")
            .args(["-c", "read x", "--command-runner"])
            .arg(format!("unitdir={}", req.unitdir.display()))
            .stdin(Stdio::piped())
            .spawn()
            .expect("fake runner");
        unit.update(|s| {
            s.extra = Some(ExtraData::Command(CommandExtra {
                pid: i64::from(runner.id()),
                params: String::new(),
            }))
        });
        let launcher = Launcher {
            program: launcher.program.clone(),
            answer_wait: Duration::from_millis(100),
            ..Launcher::default()
        };
        super::super::command::start(&unit, &cfg, "error", &launcher).expect("adopted");
        assert!(!unit.status().is_final(), "{:?}", unit.status());
        drop(runner.stdin.take());
        let _ = runner.wait();
        assert!(
            wait_for(|| unit.status().state == FAILED),
            "{:?}",
            unit.status()
        );
        assert!(unit.status().detail.contains("is gone"));
        let _ = std::fs::remove_dir_all(&req.unitdir);
        let _ = std::fs::remove_dir_all(&first_dir);
    }

    #[test]
    fn a_stuck_server_is_stopped_and_replaced() {
        let (unit, req) = unit_and_request("stuck");
        let launcher = silent_launcher(&req.unitdir);
        let started = launcher.start(&unit, &req, "error");
        assert!(
            matches!(started, Err(ForkError::Unanswered(_))),
            "{started:?}"
        );
        let stuck = lock(&launcher.server).clone().expect("a server");
        let pid = lock(&stuck.process).id();
        assert!(stuck.gone.load(Ordering::Relaxed));
        assert!(wait_for(|| !alive(pid)), "stuck server {pid} still runs");
        let _ = launcher.start(&unit, &req, "error");
        let next = lock(&launcher.server).clone().expect("a server");
        assert_ne!(lock(&next.process).id(), pid, "no new server");
        let _ = std::fs::remove_dir_all(&req.unitdir);
    }

    #[test]
    fn a_server_that_cannot_start_leaves_no_runner() {
        let launcher = Launcher {
            program: Some("/nonexistent/receptor".into()),
            ..Launcher::default()
        };
        let (unit, req) = unit_and_request("nonexistent");
        match launcher.start(&unit, &req, "error") {
            Err(ForkError::NoRunner(e)) => {
                assert!(
                    e.starts_with("cannot start the runner fork server: "),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_server_refuses_to_fork_beside_another_thread() {
        let (stop, parked) = crossbeam_channel::bounded::<()>(0);
        let other = std::thread::spawn(move || parked.recv());
        let refused = serve_requests().expect_err("served with two threads");
        assert_eq!(refused.to_string(), "not single-threaded; refusing to fork");
        drop(stop);
        let _ = other.join();
    }
}
