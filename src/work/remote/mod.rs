//! Remote units: work submitted here to run on another node. The
//! controller talks to the executor's `control` service (`client`): it
//! submits once, then a monitor thread (`monitor`) keeps the local status
//! in step and a results stream (`results`) the stdout, until the unit is
//! final, reconnecting promptly whenever a path fails (docs/work.md §6).
//! Short requests (status, cancel, release) share kept control sessions
//! (`pool`), and between two of our nodes every session to an executor
//! is a stream on one shared connection (`stream::SharedConns`).

mod client;
mod monitor;
mod pool;
mod results;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use log::{debug, error, info, warn};

use super::state::{FAILED, RemoteExtra, Status, ZERO_TIME};
use super::{Completion, SubmitRequest, Unit, WorkError, Workceptor};
use crate::gotime;
use client::{ClientError, ControlClient, Reused, Submitted};

/// How this node reaches executors' control services: the mesh, and the
/// TLS clients a submit may name.
#[derive(Clone)]
pub struct Dialer {
    pub net: crate::netceptor::Netceptor,
    pub tls: Arc<crate::tls::Sections>,
    /// Signs the requests of units with SignWork.
    pub keys: Arc<super::signing::Keys>,
    /// Sessions kept after short requests, and the connections under
    /// them, shared by every unit.
    pub idle: Arc<IdleConns>,
}

/// Idle control sessions by executor node and TLS client name, and the
/// many-stream connections to executors that carry them.
#[derive(Default)]
pub struct IdleConns {
    sessions: Mutex<pool::Idle<(String, String), ControlClient>>,
    shared: crate::stream::SharedConns,
}

impl IdleConns {
    fn take(&self, key: &(String, String)) -> Option<ControlClient> {
        self.lock().take(key, Instant::now())
    }

    fn put(&self, key: (String, String), conn: ControlClient) {
        self.lock().put(key, conn, Instant::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, pool::Idle<(String, String), ControlClient>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Dialer {
    /// Runs a short request (`status`, `cancel`, `release`) for `r` on a
    /// kept connection to its executor, else on a new one, and keeps the
    /// connection for the next request (`pool::run_kept`).
    fn request<T>(
        &self,
        r: &RemoteExtra,
        call: impl Fn(&mut ControlClient) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let key = (r.remote_node.clone(), r.tls_client.clone());
        // Without a route a dial fails at once; a kept connection would
        // instead wait out its reply timeout.
        let kept = match self.net.has_route(&r.remote_node) {
            true => self.idle.take(&key).map(|mut conn| {
                self.sign_for(&mut conn, r);
                conn
            }),
            false => None,
        };
        let (reply, keep) = pool::run_kept(kept, || self.connect(r), call);
        if let Some(conn) = keep {
            self.idle.put(key, conn);
        }
        reply
    }

    /// The control service of `r`'s executor, with `r`'s TLS client.
    fn connect(&self, r: &RemoteExtra) -> Result<ControlClient, ClientError> {
        let tls = self.tls_client(r)?;
        let tls = tls.as_ref().map(|(name, t)| (*name, t));
        let mut client = ControlClient::connect(&self.net, &self.idle.shared, &r.remote_node, tls)?;
        self.sign_for(&mut client, r);
        Ok(client)
    }

    /// Submits `r`'s unit with the stdin in file `stdin` (see
    /// [`ControlClient::submit`]). A kept connection found gone before
    /// the executor said a word is dropped and the submit dialed again,
    /// so it costs a dial and never a failed step. Any other failure is
    /// not retried here: the submit went out whole before any reply, so
    /// the executor may have the unit running already.
    fn submit(
        &self,
        r: &RemoteExtra,
        secrets: &BTreeMap<String, String>,
        stdin: &Path,
    ) -> Result<Submitted, ClientError> {
        let (mut conn, Reused(reused)) = self.open(r)?;
        let done = conn.submit(r, secrets, &mut File::open(stdin)?);
        if !(reused && done.unheard) {
            return Ok(done);
        }
        if let Err(e) = &done.started {
            debug!("Kept control connection to {} failed: {e}", r.remote_node);
        }
        conn.forget_connection(&self.idle.shared);
        let (mut conn, _) = self.open(r)?;
        Ok(conn.submit(r, secrets, &mut File::open(stdin)?))
    }

    /// The results stream of `r`'s unit from `start` (see
    /// [`ControlClient::results`]). To one of our nodes the request goes
    /// out with the stream's opening instead of after the greeting, as a
    /// submit's does: a round trip fewer. A kept connection that fails
    /// before the stream begins is dropped, and the stream opened again
    /// the way [`ControlClient::connect`] opens one: greeted, so a second
    /// dead connection is dropped too and a new one dialed.
    pub(super) fn results(
        &self,
        r: &RemoteExtra,
        start: u64,
        stall: std::time::Duration,
    ) -> Result<client::Results, ClientError> {
        let (conn, Reused(reused)) = self.open(r)?;
        let shared = &self.idle.shared;
        let forget = reused.then(|| conn.forgetter());
        match conn.results(&r.remote_unit_id, start, stall) {
            Err(ClientError::Link(e)) if let Some(forget) = forget => {
                debug!("Kept control connection to {} failed: {e}", r.remote_node);
                forget(shared);
                self.connect(r)?.results(&r.remote_unit_id, start, stall)
            }
            done => done,
        }
    }

    /// The control service of `r`'s executor for a submit or a results
    /// stream (see [`ControlClient::open`]).
    fn open(&self, r: &RemoteExtra) -> Result<(ControlClient, Reused), ClientError> {
        let tls = self.tls_client(r)?;
        let tls = tls.as_ref().map(|(name, t)| (*name, t));
        let (mut client, reused) =
            ControlClient::open(&self.net, &self.idle.shared, &r.remote_node, tls)?;
        self.sign_for(&mut client, r);
        Ok((client, reused))
    }

    /// The TLS client `r` names, if any, with its name.
    fn tls_client<'a>(
        &self,
        r: &'a RemoteExtra,
    ) -> Result<Option<(&'a str, Arc<crate::tls::ClientTls>)>, ClientError> {
        match r.tls_client.as_str() {
            "" => Ok(None),
            name => self
                .tls
                .client(name)
                .map(|t| Some((name, t)))
                .map_err(|e| ClientError::Link(e.to_string())),
        }
    }

    /// Signs `conn`'s requests as `r` asks, whichever unit used it before.
    fn sign_for(&self, conn: &mut ControlClient, r: &RemoteExtra) {
        conn.sign_with(
            r.sign_work
                .then(|| (self.keys.clone(), r.remote_node.as_str())),
        );
    }

    /// Whether a submit may name TLS client `name`.
    pub fn knows_tls_client(&self, name: &str) -> bool {
        self.tls.client(name).is_ok()
    }
}

/// The ExtraData of a new remote unit, after the submit checks;
/// `known_tls` says whether a TLS client name is configured.
pub fn new_extra(
    req: &SubmitRequest,
    known_tls: impl Fn(&str) -> bool,
) -> Result<RemoteExtra, WorkError> {
    if !req.tls_client.is_empty() && !known_tls(&req.tls_client) {
        return Err(WorkError::UnknownTlsConfig(req.tls_client.clone()));
    }
    let has_secrets = req
        .params
        .keys()
        .any(|k| k.to_lowercase().starts_with("secret_"));
    if has_secrets && req.tls_client.is_empty() {
        return Err(WorkError::SecretsWithoutTls);
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

fn remote_of(unit: &Unit) -> Option<RemoteExtra> {
    unit.status().remote().cloned()
}

/// Takes the executor's state, detail and output size as ours.
fn adopt(unit: &Unit, remote: &Status) {
    unit.update(|s| {
        s.state = remote.state;
        s.detail = remote.detail.clone();
        s.stdout_size = remote.stdout_size;
    });
}

fn local_size(unit: &Unit) -> u64 {
    std::fs::metadata(unit.dir.stdout_path()).map_or(0, |m| m.len())
}

/// Submits now if the executor answers, else in the background; the
/// unit's monitor starts when the [`Watch`] is dropped.
pub fn start(w: &Arc<Workceptor>, unit: &Arc<Unit>) -> Result<(Completion, Watch), WorkError> {
    let r = remote_of(unit).ok_or(WorkError::NotRemote)?;
    let completion = match submit(w, unit, &r) {
        Ok(()) => Completion::Done,
        Err(SubmitFailure::Refused(e)) => return Err(e),
        Err(SubmitFailure::Unreachable(e)) => {
            info!(
                "[{}] Remote node not reachable yet ({e}); will keep trying",
                unit.id
            );
            Completion::Pending
        }
    };
    let watch = Watch {
        w: w.clone(),
        unit: unit.clone(),
    };
    Ok((completion, watch))
}

/// A started remote unit's monitor, begun when this is dropped. The
/// submitting session drops it after writing its reply: begun before,
/// the monitor's new thread and its results stream run ahead of the
/// reply on a busy machine (the threads a waker wakes preempt it).
pub struct Watch {
    w: Arc<Workceptor>,
    unit: Arc<Unit>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        spawn_monitor(&self.w, &self.unit);
    }
}

/// Creates the unit on the executor and sends its stdin, recording the
/// executor's unit ID and whether it started in one status write.
fn submit(w: &Workceptor, unit: &Unit, r: &RemoteExtra) -> Result<(), SubmitFailure> {
    let secrets = w.unit_secrets(unit).map_err(SubmitFailure::Refused)?;
    let done = w.dialer().submit(r, &secrets, &unit.dir.stdin_path())?;
    if let Some(remote_id) = &done.id {
        let started = done.started.is_ok();
        unit.update(|s| {
            if let Some(r) = s.remote_mut() {
                r.remote_unit_id = remote_id.clone();
                r.remote_started = started;
            }
        });
    }
    done.started?;
    // The executor has them now; this node needs them no more.
    super::secrets::Vault::forget(unit.dir.path());
    Ok(())
}

/// How a submit failed.
enum SubmitFailure {
    /// The executor answered and will not run the unit: its start error.
    Refused(WorkError),
    /// The executor could not be reached: try again later.
    Unreachable(ClientError),
}

impl From<ClientError> for SubmitFailure {
    fn from(e: ClientError) -> SubmitFailure {
        match e {
            ClientError::Refused(e) => SubmitFailure::Refused(WorkError::Refused(Box::new(e))),
            ClientError::Unexpected(line) => {
                SubmitFailure::Refused(WorkError::BadSubmitReply(line))
            }
            ClientError::Sign(e) => SubmitFailure::Refused(WorkError::Signing(e)),
            link @ ClientError::Link(_) => SubmitFailure::Unreachable(link),
        }
    }
}

/// Tells the executor to cancel.
fn send_cancel(w: &Workceptor, r: &RemoteExtra) -> Result<(), ClientError> {
    already_gone_is_done(w.dialer().request(r, |c| c.cancel(&r.remote_unit_id)))
}

/// Tells the executor to release, then deletes the unit here.
fn send_release(w: &Workceptor, unit: &Unit, r: &RemoteExtra) -> Result<(), ClientError> {
    already_gone_is_done(w.dialer().request(r, |c| c.release(&r.remote_unit_id)))?;
    // Forced, it cannot fail.
    let _ = w.forget(unit, true);
    Ok(())
}

/// A unit the executor no longer knows is as cancelled or released as it
/// gets.
fn already_gone_is_done(reply: Result<(), ClientError>) -> Result<(), ClientError> {
    match reply {
        Err(ClientError::Refused(WorkError::UnknownUnit(_))) => Ok(()),
        other => other,
    }
}

/// Starts the unit's monitor unless one is running already.
fn spawn_monitor(w: &Arc<Workceptor>, unit: &Arc<Unit>) {
    if unit.monitored.swap(true, Ordering::SeqCst) {
        return;
    }
    let (w, watched) = (w.clone(), unit.clone());
    let started = crate::workers::spawn(format!("remote-{}", unit.id), move || {
        loop {
            monitor::run(&w, &watched);
            watched.monitored.store(false, Ordering::SeqCst);
            // A cancel or release may have come in as the loop ended.
            if !more_to_deliver(&watched) || watched.monitored.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    });
    if let Err(e) = started {
        unit.monitored.store(false, Ordering::SeqCst);
        error!("Cannot start remote unit monitor: {e}");
    }
}

fn more_to_deliver(unit: &Unit) -> bool {
    unit.dir.exists()
        && remote_of(unit).is_some_and(|r| {
            r.local_released
                || (r.local_cancelled
                    && !unit.cancel_delivered.load(Ordering::SeqCst)
                    && !unit.status().is_final())
        })
}

fn mark(unit: &Unit, cancel: bool, release: bool) {
    unit.update(|s| {
        if let Some(r) = s.remote_mut() {
            r.local_cancelled |= cancel;
            r.local_released |= release;
        }
    });
}

/// Cancels on the executor; `Pending` if it is not reachable now, and the
/// monitor keeps trying.
pub fn cancel(w: &Arc<Workceptor>, unit: &Arc<Unit>) -> Result<Completion, WorkError> {
    mark(unit, true, false);
    let r = remote_of(unit).ok_or(WorkError::NotRemote)?;
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
    let r = remote_of(unit).ok_or(WorkError::NotRemote)?;
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
    fn submit_checks() {
        let mut req = SubmitRequest {
            node: "n2".into(),
            work_type: "demo".into(),
            ..SubmitRequest::default()
        };
        let r = new_extra(&req, |_| false).unwrap();
        assert_eq!(r.expiration, ZERO_TIME);
        assert!(!r.remote_started);
        req.ttl = "10s".into();
        assert_ne!(new_extra(&req, |_| false).unwrap().expiration, ZERO_TIME);
        req.tls_client = "nosuch".into();
        assert_eq!(
            new_extra(&req, |_| false).unwrap_err().to_string(),
            "unknown TLS config nosuch"
        );
        req.tls_client.clear();
        req.params.insert("secret_x".into(), "y".into());
        assert!(matches!(
            new_extra(&req, |_| false),
            Err(WorkError::SecretsWithoutTls)
        ));
    }

    #[test]
    fn submit_refusals_keep_go_wording() {
        let refusal = |e: ClientError| match SubmitFailure::from(e) {
            SubmitFailure::Refused(e) => Some(e.to_string()),
            SubmitFailure::Unreachable(_) => None,
        };
        assert_eq!(
            refusal(ClientError::Refused(WorkError::UnknownType("nope".into()))),
            Some("remote error: unknown work type nope".into())
        );
        assert_eq!(
            refusal(ClientError::Unexpected(
                "ERROR: unknown work type nope".into()
            )),
            Some("could not parse response: ERROR: unknown work type nope".into())
        );
        assert_eq!(refusal(ClientError::Link("no route to node".into())), None);
    }
}
