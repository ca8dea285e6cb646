//! Workceptor: units of work submitted through the control service, run
//! here (`work-command`) or on another node (`remote`), persisted under
//! `<datadir>/<node>/<unit>/` so they survive restarts (docs/work.md).

pub mod command;
pub mod error;
pub mod forkserver;
pub mod kubernetes;
pub mod remote;
pub mod runner;
pub mod secrets;
pub mod shlex;
mod shrink;
pub mod signing;
pub mod state;
pub mod store;
pub mod trailer;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::config::{WorkCommandCfg, WorkKubernetesCfg};
use crate::netceptor::Netceptor;
use crate::netceptor::codec::WorkCommand;
pub use error::WorkError;
use secrets::Vault;
use state::{CommandExtra, ExtraData, PENDING, Status, StatusView};
use store::{StatusError, UnitDir};

/// The internal work type of units that run on another node.
pub const REMOTE_TYPE: &str = crate::config::REMOTE_WORK_TYPE;
/// Waits between checks while streaming results grow from the first to
/// the last while nothing changes; changes we are told about (our own
/// status writes, fetched remote output) wake the stream at once. The
/// runner is another process, so its writes are only seen by checking.
const RESULTS_POLL_FIRST: Duration = Duration::from_millis(2);
const RESULTS_POLL_MAX: Duration = Duration::from_millis(100);
const RESULTS_CHUNK: usize = 64 * 1024;
/// How long output may wait, unflushed, for the unit's end or more output
/// (see `stream_results`).
const RESULTS_HOLD: Duration = Duration::from_millis(2);

/// How far a start, cancel or release got. `Pending`: accepted, and a
/// background thread finishes it once the executor answers (Go's
/// `ErrPending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Done,
    Pending,
}

/// A unit started: how far, and (a remote unit) its monitor, which
/// begins when this is dropped; see [`remote::Watch`].
pub struct Started {
    pub completion: Completion,
    _watch: Option<remote::Watch>,
}

/// One unit of work; its directory is the source of truth.
pub struct Unit {
    pub id: String,
    pub dir: UnitDir,
    /// The last status read or written, used when the file is unreadable.
    last: Mutex<Status>,
    /// Only this process writes the status (a remote unit: no runner
    /// shares its directory; the work type tells, as no configured type
    /// may be named `remote`), so `last` is the file's content and is
    /// read instead of it; the file is still written for every change.
    sole_writer: bool,
    /// Bumped on every change a stream might wait for.
    version: Mutex<u64>,
    changed: Condvar,
    /// A remote unit's cancel has reached the executor.
    cancel_delivered: AtomicBool,
    /// A remote unit's monitor thread is running.
    monitored: AtomicBool,
}

impl Unit {
    fn new(id: String, dir: UnitDir, status: Status) -> Arc<Unit> {
        Arc::new(Unit {
            id,
            dir,
            sole_writer: status.work_type == REMOTE_TYPE,
            last: Mutex::new(status),
            version: Mutex::new(0),
            changed: Condvar::new(),
            cancel_delivered: AtomicBool::new(false),
            monitored: AtomicBool::new(false),
        })
    }

    fn last(&self) -> MutexGuard<'_, Status> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current status: from disk, unless only this process writes it.
    pub fn status(&self) -> Status {
        if self.sole_writer {
            return self.last().clone();
        }
        match self.dir.read() {
            Ok(s) => {
                *self.last() = s.clone();
                s
            }
            Err(_) => self.last().clone(),
        }
    }

    /// Changes the status on disk (under its lock) and wakes waiters.
    /// A remote unit's `change` runs with its status locked, so it must
    /// not read it.
    pub fn update(&self, change: impl FnOnce(&mut Status)) -> Status {
        let mut change = Some(change);
        self.update_with(&mut |s| {
            if let Some(c) = change.take() {
                c(s);
            }
        })
    }

    /// [`update`](Self::update), compiled once instead of once for every
    /// caller's closure.
    fn update_with(&self, change: &mut dyn FnMut(&mut Status)) -> Status {
        if self.sole_writer {
            return self.update_known(change);
        }
        let fallback = self.last().clone();
        let st = match self.dir.update(&fallback, change) {
            Ok(s) => s,
            Err(e) => {
                error!("[{}] Error updating status file: {e}", self.id);
                fallback
            }
        };
        *self.last() = st.clone();
        self.notify();
        st
    }

    /// [`update`](Self::update) for a sole writer: `last` stays locked
    /// from read to write, so concurrent changes (the monitor's, a
    /// cancel's) apply one after the other and none is lost.
    fn update_known(&self, change: &mut dyn FnMut(&mut Status)) -> Status {
        let mut last = self.last();
        match self.dir.update_known(&last, change) {
            Ok(st) => *last = st,
            Err(e) => error!("[{}] Error updating status file: {e}", self.id),
        }
        let st = last.clone();
        drop(last);
        self.notify();
        st
    }

    pub fn notify(&self) {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    fn version(&self) -> u64 {
        *self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `notify` moves past `seen` or `timeout` passes.
    fn wait_change(&self, seen: u64, timeout: Duration) {
        let guard = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if *guard == seen {
            let _ = self.changed.wait_timeout(guard, timeout);
        }
    }

    /// Streams stdout from `start` until the unit is final and everything
    /// it wrote has been written to `out`, which is flushed before each
    /// wait for more, not at the end; `framed`, in chunks (`trailer`).
    /// `gone` tells whether the client has hung up, so a stream waiting on
    /// a quiet unit does not outlive it.
    pub fn stream_results(
        &self,
        start: u64,
        framed: bool,
        out: &mut dyn Write,
        gone: &dyn Fn() -> bool,
    ) -> io::Result<()> {
        let hung_up = || io::Error::new(io::ErrorKind::BrokenPipe, "client went away");
        let file = match File::open(self.dir.stdout_path()) {
            Ok(f) => Some(f),
            Err(_) => {
                // What the caller wrote goes out before a wait that may be
                // long (a unit not started yet).
                out.flush()?;
                self.wait_for_stdout(gone).map_err(|()| hung_up())?
            }
        };
        let Some(mut file) = file else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(start))?;
        let mut offset = start;
        // Read behind room for a chunk length, so a chunk goes out in one
        // write either way.
        let mut buf = vec![0u8; trailer::LEN + RESULTS_CHUNK];
        let mut pause = RESULTS_POLL_FIRST;
        // Since when what is written waits in `out` unflushed.
        let mut held = Some(Instant::now());
        loop {
            let seen = self.version();
            let n = file.read(&mut buf[trailer::LEN..])?;
            if n > 0 {
                match framed {
                    true => out.write_all(trailer::chunk(&mut buf, n))?,
                    false => out.write_all(&buf[trailer::LEN..trailer::LEN + n])?,
                }
                held.get_or_insert_with(Instant::now);
                offset += n as u64;
                pause = RESULTS_POLL_FIRST;
                continue;
            }
            // Done, the rest stays buffered for the caller to send with
            // the stream's end.
            let st = self.status();
            if st.is_final() && offset >= u64::try_from(st.stdout_size).unwrap_or(0) {
                return Ok(());
            }
            // A unit about to end sends its last output with its end, in
            // one packet: short output waits a moment for the end, or for
            // more, before it goes out alone.
            if let Some(left) = held.and_then(|t| RESULTS_HOLD.checked_sub(t.elapsed())) {
                self.wait_change(seen, left);
                continue;
            }
            out.flush()?;
            held = None;
            if !self.dir.exists() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "unit was released"));
            }
            if gone() {
                return Err(hung_up());
            }
            self.wait_change(seen, pause);
            pause = (pause * 2).min(RESULTS_POLL_MAX);
        }
    }

    /// The stdout file once it exists; `None` if the unit ended without
    /// one; `Err` if the client hung up first.
    fn wait_for_stdout(&self, gone: &dyn Fn() -> bool) -> Result<Option<File>, ()> {
        let mut pause = RESULTS_POLL_FIRST;
        loop {
            let seen = self.version();
            if let Ok(f) = File::open(self.dir.stdout_path()) {
                return Ok(Some(f));
            }
            // A remote unit can be final here before its output arrives.
            let st = self.status();
            if (st.is_final() && st.stdout_size == 0) || !self.dir.exists() {
                return Ok(None);
            }
            if gone() {
                return Err(());
            }
            self.wait_change(seen, pause);
            pause = (pause * 2).min(RESULTS_POLL_MAX);
        }
    }
}

/// A `work submit` as the control service received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitRequest {
    pub node: String,
    pub work_type: String,
    /// Every key that is not a submit option (`params`, `secret_*`, …).
    pub params: BTreeMap<String, String>,
    pub tls_client: String,
    pub ttl: String,
    pub sign_work: bool,
}

pub struct Workceptor {
    node_id: String,
    node_dir: PathBuf,
    net: Netceptor,
    log_level: String,
    types: BTreeMap<String, WorkCommandCfg>,
    kube: BTreeMap<String, Arc<WorkKubernetesCfg>>,
    units: Mutex<BTreeMap<String, Arc<Unit>>>,
    /// TLS clients a remote submit may name.
    tls: Arc<crate::tls::Sections>,
    /// Signs remote units' requests and checks signed ones sent here.
    keys: Arc<signing::Keys>,
    /// Control connections to executors kept between remote requests.
    idle_conns: Arc<remote::IdleConns>,
    /// Forks work-command units' runners; started by the first one.
    runners: forkserver::Launcher,
    /// When releases have emptied a burst, memory goes back.
    shrink: Mutex<shrink::Shrink>,
}

impl Workceptor {
    /// Sets up the work types and picks up every unit already on disk.
    pub fn start(
        net: &Netceptor,
        datadir: &std::path::Path,
        types: &[WorkCommandCfg],
        kube: &[WorkKubernetesCfg],
        log_level: &str,
        tls: Arc<crate::tls::Sections>,
        keys: signing::Keys,
    ) -> Arc<Workceptor> {
        let w = Arc::new(Workceptor {
            tls,
            keys: Arc::new(keys),
            idle_conns: Arc::default(),
            runners: forkserver::Launcher::default(),
            shrink: Mutex::default(),
            node_id: net.node_id().to_string(),
            node_dir: datadir.join(net.node_id()),
            net: net.clone(),
            log_level: log_level.to_string(),
            types: types
                .iter()
                .map(|t| (t.work_type.clone(), t.clone()))
                .collect(),
            kube: kube
                .iter()
                .map(|k| (k.work_type.clone(), Arc::new(k.clone())))
                .collect(),
            units: Mutex::new(BTreeMap::new()),
        });
        let advertised = types
            .iter()
            .map(|t| (&t.work_type, t.verify_signature))
            .chain(kube.iter().map(|k| (&k.work_type, k.verify_signature)));
        for (work_type, secure) in advertised {
            net.add_work_command(WorkCommand {
                work_type: work_type.clone(),
                secure,
            });
        }
        w.recover();
        w
    }

    /// Makes sure `datadir/<node>` is a directory this process can
    /// create units in, so a bad datadir stops startup with one line
    /// instead of failing every later submit.
    pub fn prepare_datadir(datadir: &std::path::Path, node_id: &str) -> Result<(), String> {
        let dir = datadir.join(node_id);
        let fail = |e: io::Error| format!("node: datadir {}: {e}", datadir.display());
        // 0700 as the unit directories below it (and as Go makes them).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(fail)?;
        if !dir.is_dir() {
            return Err(fail(io::Error::other("not a directory")));
        }
        let probe = tempfile_in(&dir).map_err(fail)?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }

    pub fn net(&self) -> &Netceptor {
        &self.net
    }

    /// The secret params sealed with `unit`, if any.
    fn unit_secrets(&self, unit: &Unit) -> Result<BTreeMap<String, String>, WorkError> {
        if !unit.dir.path().join(secrets::SECRETS_FILE).exists() {
            return Ok(BTreeMap::new());
        }
        let vault = Vault::open(&self.node_dir).map_err(|e| WorkError::Secrets(e.to_string()))?;
        vault
            .unseal(unit.dir.path())
            .map_err(|e| WorkError::Secrets(e.to_string()))
    }

    /// How remote units reach their executors.
    pub fn dialer(&self) -> remote::Dialer {
        remote::Dialer {
            net: self.net.clone(),
            tls: self.tls.clone(),
            keys: self.keys.clone(),
            idle: self.idle_conns.clone(),
        }
    }

    fn units(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Unit>>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every unit directory; corrupt ones are reported and skipped.
    fn recover(self: &Arc<Self>) {
        for id in store::list_unit_ids(&self.node_dir) {
            let dir = UnitDir::open(self.node_dir.join(&id));
            let st = match dir.read() {
                Ok(s) => s,
                Err(StatusError::Missing) => {
                    warn!("Skipping unit {id}: it has no status file");
                    continue;
                }
                Err(e) => {
                    error!("Skipping unit {id}: {e}");
                    continue;
                }
            };
            let unit = Unit::new(id.clone(), dir, st.clone());
            self.units().insert(id.clone(), unit.clone());
            if st.work_type == REMOTE_TYPE {
                remote::restart(self, &unit);
            } else if self.types.contains_key(&st.work_type) {
                command::restart(&unit);
            } else if let Some(k) = self.kube.get(&st.work_type) {
                kubernetes::restart(&unit, k, self.unit_secrets(&unit).unwrap_or_default());
            }
            info!(
                "[{id}] Recovered unit ({}, {})",
                st.work_type,
                state::state_name(st.state)
            );
        }
    }

    fn is_local(&self, node: &str) -> bool {
        crate::netceptor::addr::resolve(node, &self.node_id) == self.node_id
    }

    /// Checks the request and makes the unit (docs/work.md §3 steps 1–2).
    pub fn allocate(&self, req: &SubmitRequest) -> Result<Arc<Unit>, WorkError> {
        let mut sealed = BTreeMap::new();
        let (work_type, extra) = if self.is_local(&req.node) {
            if !req.ttl.is_empty() {
                return Err(WorkError::TtlForLocal);
            }
            if let Some(k) = self.kube.get(&req.work_type) {
                let (extra, kube_sealed) =
                    kubernetes::allocate(k, &req.params).map_err(WorkError::Kube)?;
                sealed = kube_sealed;
                (req.work_type.clone(), ExtraData::Kube(extra))
            } else {
                let cfg = self
                    .types
                    .get(&req.work_type)
                    .ok_or_else(|| WorkError::UnknownType(req.work_type.clone()))?;
                let runtime = req.params.get("params").map_or("", String::as_str);
                let params = command::effective_params(cfg, runtime)?;
                (
                    req.work_type.clone(),
                    ExtraData::Command(CommandExtra { pid: 0, params }),
                )
            }
        } else {
            // A unit for a node no node can be would stay Pending forever.
            crate::netceptor::names::check_node_id(&req.node).map_err(|e| {
                WorkError::BadNode(format!(
                    "node {} {e}",
                    crate::netceptor::names::shown(&req.node)
                ))
            })?;
            let extra = remote::new_extra(req, |n| self.tls.client(n).is_ok())?;
            self.check_can_sign(req)?;
            (REMOTE_TYPE.to_string(), ExtraData::Remote(extra))
        };
        let (id, dir) = UnitDir::create(&self.node_dir).map_err(WorkError::CreateDir)?;
        let (extra, mut secrets) = secrets::split(extra);
        secrets.append(&mut sealed);
        let status = Status::new(&work_type, Some(extra));
        let stored = dir
            .write(&status)
            .map_err(WorkError::WriteStatus)
            .and_then(|()| {
                if secrets.is_empty() {
                    return Ok(());
                }
                let vault =
                    Vault::open(&self.node_dir).map_err(|e| WorkError::Secrets(e.to_string()))?;
                vault
                    .seal(dir.path(), &secrets)
                    .map_err(|e| WorkError::Secrets(e.to_string()))
            });
        if let Err(e) = stored {
            let _ = dir.remove();
            return Err(e);
        }
        let unit = Unit::new(id.clone(), dir, status);
        self.units().insert(id, unit.clone());
        Ok(unit)
    }

    /// A signed remote unit needs a key to sign with. Go finds out only
    /// when the submit is sent, leaving a failed unit; this refuses it
    /// before a unit exists, with Go's text.
    fn check_can_sign(&self, req: &SubmitRequest) -> Result<(), WorkError> {
        if !req.sign_work {
            return Ok(());
        }
        let Some(signer) = &self.keys.signer else {
            return Err(WorkError::Signing(signing::SignError::NoKey));
        };
        let ttl = crate::config::parse_duration(&req.ttl).ok();
        if ttl.is_some_and(|ttl| ttl > signer.lifetime) {
            warn!("json web token expires before ttl");
        }
        Ok(())
    }

    /// Go's `processSignature` for a submit: the receiving node judges by
    /// the work type asked of it (a local type's `verifysignature`, or the
    /// request's own `signwork` for the type `remote`).
    pub fn check_submit_signature(
        &self,
        req: &SubmitRequest,
        signature: &str,
        from_unix: bool,
    ) -> Result<(), WorkError> {
        let expected = self.expects_signature(&req.work_type, req.sign_work);
        self.check_signature(expected, signature, from_unix)
    }

    /// Go's `processSignature` for cancel, release and results on a unit:
    /// judged by its work type, or a remote unit's SignWork.
    pub fn check_unit_signature(
        &self,
        unit: &Unit,
        signature: &str,
        from_unix: bool,
    ) -> Result<(), WorkError> {
        let st = unit.status();
        let sign_work = st.remote().is_some_and(|r| r.sign_work);
        let expected = self.expects_signature(&st.work_type, sign_work);
        self.check_signature(expected, signature, from_unix)
    }

    fn expects_signature(&self, work_type: &str, sign_work: bool) -> bool {
        if work_type == REMOTE_TYPE {
            return sign_work;
        }
        let command = self.types.get(work_type).map(|t| t.verify_signature);
        let kube = self.kube.get(work_type).map(|k| k.verify_signature);
        command.or(kube).unwrap_or(false)
    }

    fn check_signature(
        &self,
        expected: bool,
        signature: &str,
        from_unix: bool,
    ) -> Result<(), WorkError> {
        let now = std::time::SystemTime::now();
        self.keys
            .check(expected, signature, from_unix, &self.node_id, now)
            .map_err(WorkError::Signature)
    }

    /// Opens the unit's stdin file for the submitter to fill.
    pub fn open_stdin(&self, unit: &Unit) -> io::Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(unit.dir.stdin_path())?;
        unit.update(|s| {
            if !s.is_final() {
                s.set(PENDING, "Waiting for Input Data");
            }
        });
        Ok(f)
    }

    /// Starts a unit whose stdin is complete. `Pending`: accepted but not
    /// started yet (a remote node not reachable yet).
    pub fn start_unit(self: &Arc<Self>, unit: &Arc<Unit>) -> Result<Started, WorkError> {
        let st = unit.update(|s| {
            if !s.is_final() {
                s.set(PENDING, command::STARTING);
            }
        });
        if st.is_final() {
            return Err(WorkError::AlreadyFinal(state::state_name(st.state)));
        }
        let done = |()| Started {
            completion: Completion::Done,
            _watch: None,
        };
        let started = if st.work_type == REMOTE_TYPE {
            remote::start(self, unit).map(|(completion, watch)| Started {
                completion,
                _watch: Some(watch),
            })
        } else if let Some(k) = self.kube.get(&st.work_type) {
            self.unit_secrets(unit)
                .map(|sealed| kubernetes::start(unit, k, sealed))
                .map(done)
        } else {
            match self.types.get(&st.work_type) {
                Some(cfg) => command::start(unit, cfg, &self.log_level, &self.runners).map(done),
                None => Err(WorkError::UnknownType(st.work_type.clone())),
            }
        };
        if let Err(e) = &started {
            unit.update(|s| s.set(state::FAILED, format!("Error starting worker: {e}")));
        }
        started
    }

    /// Marks a submit that failed while reading stdin.
    pub fn input_failed(&self, unit: &Unit, err: &io::Error) {
        unit.update(|s| s.set(state::FAILED, format!("Error reading input data: {err}")));
    }

    pub fn find(&self, id: &str) -> Result<Arc<Unit>, WorkError> {
        self.units()
            .get(id)
            .cloned()
            .ok_or_else(|| WorkError::UnknownUnit(id.to_string()))
    }

    /// The status object a `work status` reply carries.
    pub fn status_reply(&self, id: &str) -> Result<String, WorkError> {
        let st = self.find(id)?.status();
        Ok(to_json(&self.view(&st)))
    }

    fn view<'a>(&self, st: &'a Status) -> StatusView<'a> {
        st.view(
            st.work_type == REMOTE_TYPE
                || self.types.contains_key(&st.work_type)
                || self.kube.contains_key(&st.work_type),
        )
    }

    /// `{"<id>": status, …}` for every unit, or just the one asked for;
    /// sorted by ID, as Go marshals a map.
    pub fn list_reply(&self, id: Option<&str>) -> Result<String, WorkError> {
        let units: Vec<Arc<Unit>> = match id {
            Some(id) => vec![self.find(id)?],
            None => self.units().values().cloned().collect(),
        };
        let statuses: Vec<(&str, Status)> =
            units.iter().map(|u| (u.id.as_str(), u.status())).collect();
        let views: BTreeMap<&str, StatusView> = statuses
            .iter()
            .map(|(id, st)| (*id, self.view(st)))
            .collect();
        Ok(to_json(&views))
    }

    /// Cancels a unit (here, or on its executor).
    pub fn cancel(self: &Arc<Self>, id: &str) -> Result<Completion, WorkError> {
        let unit = self.find(id)?;
        if unit.status().work_type == REMOTE_TYPE {
            return remote::cancel(self, &unit);
        }
        if let Some(k) = self.kube.get(&unit.status().work_type) {
            kubernetes::cancel(&unit, k, &self.unit_secrets(&unit).unwrap_or_default());
            return Ok(Completion::Done);
        }
        command::cancel(&unit);
        Ok(Completion::Done)
    }

    /// Releases a unit: cancels it and deletes it (here and, for remote
    /// units, on the executor). `force` deletes locally whatever happens.
    pub fn release(self: &Arc<Self>, id: &str, force: bool) -> Result<Completion, WorkError> {
        let unit = self.find(id)?;
        if unit.status().work_type == REMOTE_TYPE {
            return remote::release(self, &unit, force);
        }
        if let Some(k) = self.kube.get(&unit.status().work_type) {
            // Deletes the pod even of a finished unit (Go leaves it).
            kubernetes::cancel(&unit, k, &self.unit_secrets(&unit).unwrap_or_default());
        } else if !unit.status().is_final() {
            command::cancel(&unit);
        }
        self.forget(&unit, force)?;
        Ok(Completion::Done)
    }

    /// Deletes a unit's directory and drops it from the table.
    fn forget(&self, unit: &Unit, force: bool) -> Result<(), WorkError> {
        let mut result = unit.dir.remove();
        for _ in 0..2 {
            if result.is_ok() || force {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            result = unit.dir.remove();
        }
        let live = {
            let mut units = self.units();
            units.remove(&unit.id);
            units.len()
        };
        if self
            .shrink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(live)
        {
            shrink::trim();
        }
        unit.notify();
        match result {
            Err(e) if !force => Err(WorkError::RemoveDir(e)),
            _ => Ok(()),
        }
    }
}

/// Reply views have string keys only, so encoding them cannot fail.
fn to_json(view: &impl serde::Serialize) -> String {
    serde_json::to_string(view).unwrap_or_else(|_| "null".into())
}

/// Creates and closes an empty file in `dir`, proving units can be written.
fn tempfile_in(dir: &std::path::Path) -> io::Result<PathBuf> {
    let path = dir.join(format!(".probe-{}", std::process::id()));
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote unit's status is kept in memory and written through:
    /// concurrent changes all land, in memory and in the file.
    #[test]
    fn a_sole_writers_concurrent_updates_all_land_on_disk() {
        let root =
            std::env::temp_dir().join(format!("receptor-unit-{}", crate::random::alphanumeric(10)));
        let (id, dir) = UnitDir::create(&root).unwrap();
        let status = Status::new(REMOTE_TYPE, None);
        dir.write(&status).unwrap();
        let unit = Unit::new(id, dir, status);
        let bump = |unit: Arc<Unit>| {
            std::thread::spawn(move || {
                for _ in 0..100 {
                    unit.update(|s| s.stdout_size += 1);
                }
            })
        };
        let threads = [bump(unit.clone()), bump(unit.clone())];
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(unit.status().stdout_size, 200);
        assert_eq!(unit.dir.read().unwrap().stdout_size, 200);
        // The copy in memory is the status: a file changed behind the
        // unit's back is neither read nor kept.
        let mut behind = unit.status();
        behind.stdout_size = 5;
        unit.dir.write(&behind).unwrap();
        assert_eq!(unit.status().stdout_size, 200);
        unit.update(|s| s.stdout_size += 1);
        assert_eq!(unit.dir.read().unwrap().stdout_size, 201);
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Records what is written and whether it was flushed.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        flushed: usize,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushed = self.bytes.len();
            Ok(())
        }
    }

    fn unit_with_stdout(out: &[u8], state: i64) -> (PathBuf, Arc<Unit>) {
        let root =
            std::env::temp_dir().join(format!("receptor-unit-{}", crate::random::alphanumeric(10)));
        let (id, dir) = UnitDir::create(&root).unwrap();
        std::fs::write(dir.stdout_path(), out).unwrap();
        let mut status = Status::new(REMOTE_TYPE, None);
        status.set(state, "x");
        status.stdout_size = out.len() as i64;
        dir.write(&status).unwrap();
        (root, Unit::new(id, dir, status))
    }

    /// A finished unit's output is written, framed if asked, and left
    /// unflushed for the caller to send with the stream's end.
    #[test]
    fn a_finished_units_results_are_left_for_the_end() {
        let (root, unit) = unit_with_stdout(b"hello", state::SUCCEEDED);
        for (framed, want) in [
            (false, b"hello".to_vec()),
            (true, b"\0\0\0\x05hello".to_vec()),
        ] {
            let mut out = Recorder::default();
            unit.stream_results(0, framed, &mut out, &|| false).unwrap();
            assert_eq!(out.bytes, want);
            assert_eq!(out.flushed, 0, "nothing flushed before the end");
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A running unit's output is held a moment for the unit's end, then
    /// flushed; the end still comes whenever the unit ends.
    #[test]
    fn a_running_units_output_waits_a_moment_then_goes_out() {
        let (root, unit) = unit_with_stdout(b"partial", state::RUNNING);
        let ender = {
            let unit = unit.clone();
            std::thread::spawn(move || {
                std::thread::sleep(RESULTS_HOLD * 10);
                unit.update(|s| s.set(state::SUCCEEDED, "done"));
            })
        };
        let mut out = Recorder::default();
        unit.stream_results(2, false, &mut out, &|| false).unwrap();
        ender.join().unwrap();
        assert_eq!(out.bytes, b"rtial");
        assert_eq!(out.flushed, 5, "flushed while the unit ran on");
        std::fs::remove_dir_all(root).unwrap();
    }
}
