//! Remote units: work submitted here to run on another node. The controller
//! talks to the executor's `control` service over mesh streams: it submits
//! once, then keeps the local status and stdout in step until the unit is
//! final, reconnecting promptly whenever a path fails (work.md §6).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use log::{debug, error, info, warn};

use super::state::{FAILED, RemoteExtra, Status, ZERO_TIME};
use super::{Completion, SubmitRequest, Unit, WorkError, Workceptor};
use crate::gotime;
use crate::netceptor::Netceptor;
use crate::stream::{self, Stream};

const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A status reply slower than this means the path is gone: reconnect.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Status is asked for when fetched output arrives or ends, and at least
/// this often.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// Least time between status requests while output is streaming.
const STATUS_GAP: Duration = Duration::from_millis(100);
/// A results stream silent this long while the executor reports more
/// output than we have is stalled: reconnect.
const RESULTS_STALL: Duration = Duration::from_secs(2);
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The ExtraData of a new remote unit, after the submit checks.
pub fn new_extra(req: &SubmitRequest) -> Result<RemoteExtra, WorkError> {
    if !req.tls_client.is_empty() {
        return Err(WorkError::UnknownTlsConfig(req.tls_client.clone()));
    }
    if req
        .params
        .keys()
        .any(|k| k.to_lowercase().starts_with("secret_"))
    {
        return Err(WorkError::SecretsWithoutTls);
    }
    if req.sign_work {
        return Err(WorkError::NoSigningKey);
    }
    let expiration = if req.ttl.is_empty() {
        ZERO_TIME.to_string()
    } else {
        let ttl = crate::config::parse_duration(&req.ttl).map_err(WorkError::InvalidTtl)?;
        gotime::rfc3339_nano(SystemTime::now() + ttl)
    };
    Ok(RemoteExtra {
        remote_node: req.node.clone(),
        remote_work_type: req.work_type.clone(),
        remote_params: req.params.clone(),
        remote_unit_id: String::new(),
        remote_started: false,
        local_cancelled: false,
        local_released: false,
        sign_work: req.sign_work,
        tls_client: req.tls_client.clone(),
        expiration,
    })
}

/// A line-oriented session with a node's control service.
struct ControlConn {
    reader: BufReader<Stream>,
    writer: Stream,
}

impl ControlConn {
    fn open(net: &Netceptor, node: &str) -> Result<ControlConn, String> {
        let s = stream::dial(net, node, "control", DIAL_TIMEOUT)?;
        s.set_read_timeout(Some(GREETING_TIMEOUT));
        let mut conn = ControlConn {
            reader: BufReader::new(s.clone()),
            writer: s,
        };
        let greeting = conn.line()?;
        if !greeting.contains(node) {
            return Err(format!("unexpected greeting from {node}: {greeting:?}"));
        }
        conn.writer.set_read_timeout(Some(REPLY_TIMEOUT));
        Ok(conn)
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        (&self.writer)
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| e.to_string())
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn request(&mut self, line: &str) -> Result<String, String> {
        self.send(line)?;
        self.line()
    }
}

fn remote_of(unit: &Unit) -> Option<RemoteExtra> {
    unit.status().remote().cloned()
}

/// Submits now if the executor answers, else in the background.
pub fn start(w: &Arc<Workceptor>, unit: &Arc<Unit>) -> Result<Completion, WorkError> {
    match submit(w, unit) {
        Ok(()) => {
            spawn_monitor(w, unit);
            Ok(Completion::Done)
        }
        Err(Failure::Refused(e)) => Err(e),
        Err(Failure::Unreachable(e)) => {
            info!(
                "[{}] Remote node not reachable yet ({e}); will keep trying",
                unit.id
            );
            spawn_monitor(w, unit);
            Ok(Completion::Pending)
        }
    }
}

enum Failure {
    /// The executor answered with an error: retrying will not help.
    Refused(WorkError),
    /// No answer: try again later.
    Unreachable(String),
}

fn submit(w: &Workceptor, unit: &Unit) -> Result<(), Failure> {
    let r = remote_of(unit).ok_or(Failure::Refused(WorkError::NotRemote))?;
    let mut conn = ControlConn::open(w.net(), &r.remote_node).map_err(Failure::Unreachable)?;
    let mut req = serde_json::Map::new();
    for (k, v) in &r.remote_params {
        req.insert(k.clone(), v.clone().into());
    }
    req.insert("command".into(), "work".into());
    req.insert("subcommand".into(), "submit".into());
    req.insert("node".into(), r.remote_node.clone().into());
    req.insert("worktype".into(), r.remote_work_type.clone().into());
    req.insert("tlsclient".into(), r.tls_client.clone().into());
    let reply = conn
        .request(&serde_json::Value::Object(req).to_string())
        .map_err(Failure::Unreachable)?;
    let Some(remote_id) = unit_id_in(&reply) else {
        return Err(Failure::Refused(WorkError::BadSubmitReply(reply)));
    };
    unit.update(|s| {
        if let Some(r) = s.remote_mut() {
            r.remote_unit_id = remote_id.clone();
        }
    });
    send_stdin(unit, &conn.writer).map_err(Failure::Unreachable)?;
    conn.writer.set_read_timeout(Some(Duration::from_secs(30)));
    let result = conn.line().map_err(Failure::Unreachable)?;
    if let Some(e) = remote_error(&result) {
        return Err(Failure::Refused(WorkError::Refused(Box::new(e))));
    }
    unit.update(|s| {
        if let Some(r) = s.remote_mut() {
            r.remote_started = true;
        }
    });
    Ok(())
}

/// The unit ID in `Work unit created with ID <id>. Send stdin data and EOF.`
fn unit_id_in(line: &str) -> Option<String> {
    let rest = &line[line.find("with ID ")? + "with ID ".len()..];
    let id: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty() && rest[id.len()..].starts_with('.')).then_some(id)
}

fn send_stdin(unit: &Unit, out: &Stream) -> Result<(), String> {
    let mut stdin = File::open(unit.dir.stdin_path()).map_err(|e| e.to_string())?;
    let mut w = out;
    std::io::copy(&mut stdin, &mut w).map_err(|e| e.to_string())?;
    out.shutdown_write();
    Ok(())
}

/// Starts the unit's monitor unless one is running already.
fn spawn_monitor(w: &Arc<Workceptor>, unit: &Arc<Unit>) {
    if unit.monitored.swap(true, Ordering::SeqCst) {
        return;
    }
    let (w, watched) = (w.clone(), unit.clone());
    let started = std::thread::Builder::new()
        .name(format!("remote-{}", unit.id))
        .spawn(move || {
            loop {
                monitor(&w, &watched);
                watched.monitored.store(false, Ordering::SeqCst);
                // A cancel or release may have come in as the loop ended.
                let more = watched.dir.exists()
                    && remote_of(&watched).is_some_and(|r| {
                        r.local_released
                            || (r.local_cancelled
                                && !watched.cancel_delivered.load(Ordering::SeqCst)
                                && !watched.status().is_final())
                    });
                if !more || watched.monitored.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        });
    if let Err(e) = started {
        unit.monitored.store(false, Ordering::SeqCst);
        error!("Cannot start remote unit monitor: {e}");
    }
}

/// Drives a remote unit to its end: submits if needed, honours a pending
/// cancel or release, and keeps status and stdout in step.
fn monitor(w: &Arc<Workceptor>, unit: &Arc<Unit>) {
    let mut backoff = RETRY_FIRST;
    let fetching = Arc::new(AtomicBool::new(false));
    while unit.dir.exists() {
        let Some(r) = remote_of(unit) else { return };
        let outcome = if !r.remote_started {
            start_late(w, unit, &r)
        } else if r.local_released {
            send_release(w, unit, &r).map(|()| Done::Stop)
        } else if r.local_cancelled
            && !unit.status().is_final()
            && !unit.cancel_delivered.load(Ordering::SeqCst)
        {
            send_cancel(w, &r).map(|()| {
                unit.cancel_delivered.store(true, Ordering::SeqCst);
                Done::Continue
            })
        } else {
            follow(w, unit, &r, &fetching)
        };
        match outcome {
            Ok(Done::Stop) => return,
            Ok(Done::Continue) => backoff = RETRY_FIRST,
            Err(e) => {
                debug!("[{}] Remote unit: {e}; retrying", unit.id);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

enum Done {
    Stop,
    Continue,
}

/// A submit that could not reach the executor at first.
fn start_late(w: &Workceptor, unit: &Unit, r: &RemoteExtra) -> Result<Done, String> {
    if expired(r) {
        let at = gotime::parse_rfc3339(&r.expiration).unwrap_or_default();
        let when = gotime::unix_nanos_to_system_time(at);
        unit.update(|s| {
            s.set(
                FAILED,
                format!("Work unit expired on {}", gotime::go_stamp(when)),
            )
        });
        return Ok(Done::Stop);
    }
    if r.local_released {
        w.forget(unit, true).ok();
        return Ok(Done::Stop);
    }
    if r.local_cancelled {
        unit.update(|s| s.set(FAILED, "Locally Cancelled"));
        return Ok(Done::Stop);
    }
    match submit(w, unit) {
        Ok(()) => Ok(Done::Continue),
        Err(Failure::Refused(e)) => {
            unit.update(|s| s.set(FAILED, format!("Error starting worker: {e}")));
            Ok(Done::Stop)
        }
        Err(Failure::Unreachable(e)) => Err(e),
    }
}

fn expired(r: &RemoteExtra) -> bool {
    let Some(at) = gotime::parse_rfc3339(&r.expiration) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    r.expiration != ZERO_TIME && now > at
}

/// Follows the executor's status while a results stream carries the
/// output. `Stop` once the unit is complete here; `Continue` when a new
/// cancel or release needs sending.
fn follow(
    w: &Workceptor,
    unit: &Arc<Unit>,
    r: &RemoteExtra,
    fetching: &Arc<AtomicBool>,
) -> Result<Done, String> {
    let mut conn = ControlConn::open(w.net(), &r.remote_node)?;
    loop {
        let reply = conn.request(&format!("work status {}", r.remote_unit_id))?;
        if let Some(err) = remote_error(&reply) {
            if let WorkError::UnknownUnit(_) = err {
                let current = remote_of(unit);
                if current.is_some_and(|c| c.local_released) {
                    return Ok(Done::Continue);
                }
                unit.update(|s| s.set(FAILED, "Remote work unit is gone"));
                return Ok(Done::Stop);
            }
            return Err(format!("remote status error: {err}"));
        }
        let remote: Status =
            serde_json::from_str(&reply).map_err(|e| format!("bad status reply: {e}"))?;
        let st = unit.update(|s| {
            s.state = remote.state;
            s.detail = remote.detail.clone();
            s.stdout_size = remote.stdout_size;
        });
        let local = local_size(unit);
        if st.is_final() && local >= st.stdout_size as u64 {
            return Ok(Done::Stop);
        }
        // A results stream runs whenever the unit is not complete here: it
        // carries output as it is written and ends when the unit does.
        let seen = unit.version();
        if !fetching.swap(true, Ordering::SeqCst) {
            spawn_fetcher(w, unit, r, fetching.clone());
        }
        // A new cancel or release is the monitor's to send.
        let now = remote_of(unit).unwrap_or_else(|| r.clone());
        let undelivered_cancel =
            now.local_cancelled && !unit.cancel_delivered.load(Ordering::SeqCst);
        if undelivered_cancel || now.local_released {
            return Ok(Done::Continue);
        }
        unit.wait_change(seen, STATUS_POLL);
        // Output arriving wakes us per chunk; ask for status at most every
        // STATUS_GAP while the stream runs, at once when it has ended.
        let quiet_until = std::time::Instant::now() + STATUS_GAP;
        while fetching.load(Ordering::SeqCst) {
            let left = quiet_until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            unit.wait_change(unit.version(), left);
        }
    }
}

fn local_size(unit: &Unit) -> u64 {
    std::fs::metadata(unit.dir.stdout_path()).map_or(0, |m| m.len())
}

fn spawn_fetcher(w: &Workceptor, unit: &Arc<Unit>, r: &RemoteExtra, busy: Arc<AtomicBool>) {
    let (unit, r, net) = (unit.clone(), r.clone(), w.net().clone());
    let started = std::thread::Builder::new()
        .name(format!("results-{}", unit.id))
        .spawn(move || {
            let before = local_size(&unit);
            if let Err(e) = fetch(&net, &unit, &r) {
                debug!("[{}] Results stream ended: {e}", unit.id);
            }
            // A stream that brought nothing must not be redialled at once:
            // the status loop would spin on it.
            if local_size(&unit) == before {
                std::thread::sleep(RETRY_FIRST);
            }
            busy.store(false, Ordering::SeqCst);
            unit.notify();
        });
    if let Err(e) = started {
        error!("Cannot start results fetcher: {e}");
    }
}

/// Appends the executor's stdout from our current size until its stream
/// ends, or until it stalls while more output is known to exist.
fn fetch(net: &Netceptor, unit: &Unit, r: &RemoteExtra) -> Result<(), String> {
    let start = local_size(unit);
    let mut conn = ControlConn::open(net, &r.remote_node)?;
    let req = serde_json::json!({
        "command": "work", "subcommand": "results",
        "unitid": r.remote_unit_id, "startpos": start,
    });
    let line = conn.request(&req.to_string())?;
    if !line.contains("Streaming results") {
        return Err(format!("unexpected results reply: {line}"));
    }
    conn.writer.shutdown_write();
    conn.writer.set_read_timeout(Some(RESULTS_STALL));
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(unit.dir.stdout_path())
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                unit.notify();
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                let behind = local_size(unit) < unit.status().stdout_size as u64;
                if behind {
                    return Err("results stream stalled".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn send_unit_command(w: &Workceptor, r: &RemoteExtra, subcommand: &str) -> Result<(), String> {
    let mut conn = ControlConn::open(w.net(), &r.remote_node)?;
    conn.writer.set_read_timeout(Some(Duration::from_secs(30)));
    let req = serde_json::json!({"command": "work", "subcommand": subcommand, "unitid": r.remote_unit_id});
    let reply = conn.request(&req.to_string())?;
    match remote_error(&reply) {
        // Already gone there is as good as cancelled or released.
        None | Some(WorkError::UnknownUnit(_)) => Ok(()),
        Some(e) => Err(e.to_string()),
    }
}

/// The error in an `ERROR: <text>` reply line.
fn remote_error(reply: &str) -> Option<WorkError> {
    reply.strip_prefix("ERROR: ").map(WorkError::from_remote)
}

fn send_cancel(w: &Workceptor, r: &RemoteExtra) -> Result<(), String> {
    send_unit_command(w, r, "cancel")
}

fn send_release(w: &Arc<Workceptor>, unit: &Unit, r: &RemoteExtra) -> Result<(), String> {
    send_unit_command(w, r, "release")?;
    w.forget(unit, true).map_err(|e| e.to_string())
}

fn mark(unit: &Unit, cancel: bool, release: bool) {
    unit.update(|s| {
        if let Some(r) = s.remote_mut() {
            r.local_cancelled |= cancel;
            r.local_released |= release;
        }
    });
}

/// Cancels on the executor. `Ok(false)`: not reachable now, the monitor
/// keeps trying.
pub fn cancel(w: &Arc<Workceptor>, unit: &Arc<Unit>) -> Result<Completion, WorkError> {
    mark(unit, true, false);
    let Some(r) = remote_of(unit) else {
        return Err(WorkError::NotRemote);
    };
    if !r.remote_started {
        unit.update(|s| s.set(FAILED, "Locally Cancelled"));
        return Ok(Completion::Done);
    }
    match send_cancel(w, &r) {
        Ok(()) => {
            unit.cancel_delivered.store(true, Ordering::SeqCst);
            unit.notify();
            Ok(Completion::Done)
        }
        Err(e) => {
            warn!("[{}] Cancel not delivered yet: {e}", unit.id);
            spawn_monitor(w, unit);
            Ok(Completion::Pending)
        }
    }
}

/// Releases on the executor, then here. `force` gives up on the executor
/// after one try.
pub fn release(
    w: &Arc<Workceptor>,
    unit: &Arc<Unit>,
    force: bool,
) -> Result<Completion, WorkError> {
    mark(unit, true, true);
    let Some(r) = remote_of(unit) else {
        return Err(WorkError::NotRemote);
    };
    if !r.remote_started {
        w.forget(unit, true)?;
        return Ok(Completion::Done);
    }
    match send_release(w, unit, &r) {
        Ok(()) => Ok(Completion::Done),
        Err(e) if force => {
            warn!(
                "[{}] Released locally; the executor was not told: {e}",
                unit.id
            );
            w.forget(unit, true)?;
            Ok(Completion::Done)
        }
        Err(e) => {
            warn!("[{}] Release not delivered yet: {e}", unit.id);
            spawn_monitor(w, unit);
            Ok(Completion::Pending)
        }
    }
}

/// Picks a remote unit up after a restart.
pub fn restart(w: &Arc<Workceptor>, unit: &Arc<Unit>) {
    let st = unit.status();
    let Some(r) = st.remote() else { return };
    if !r.remote_started && !r.local_released {
        if !st.is_final() {
            unit.update(|s| {
                s.set(
                    FAILED,
                    "Failed to restart: remote work had not previously started",
                )
            });
        }
        return;
    }
    let local_done = st.is_final() && local_size(unit) >= st.stdout_size as u64;
    if local_done && !r.local_released {
        return;
    }
    spawn_monitor(w, unit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_id_from_the_id_line() {
        assert_eq!(
            unit_id_in("Work unit created with ID j4bLSmVp. Send stdin data and EOF."),
            Some("j4bLSmVp".into())
        );
        assert_eq!(unit_id_in("ERROR: unknown work type nope"), None);
        assert_eq!(unit_id_in("with ID . x"), None);
    }

    #[test]
    fn submit_checks() {
        let mut req = SubmitRequest {
            node: "n2".into(),
            work_type: "demo".into(),
            ..SubmitRequest::default()
        };
        let r = new_extra(&req).unwrap();
        assert_eq!(r.expiration, ZERO_TIME);
        assert!(!r.remote_started);
        req.ttl = "10s".into();
        assert_ne!(new_extra(&req).unwrap().expiration, ZERO_TIME);
        req.tls_client = "nosuch".into();
        assert_eq!(
            new_extra(&req).unwrap_err().to_string(),
            "unknown TLS config nosuch"
        );
        req.tls_client.clear();
        req.params.insert("secret_x".into(), "y".into());
        assert!(matches!(new_extra(&req), Err(WorkError::SecretsWithoutTls)));
    }

    #[test]
    fn expiry() {
        let mut r = new_extra(&SubmitRequest {
            node: "n".into(),
            ..SubmitRequest::default()
        })
        .unwrap();
        assert!(!expired(&r));
        r.expiration = "2000-01-01T00:00:00Z".into();
        assert!(expired(&r));
    }
}
