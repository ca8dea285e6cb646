//! One unit's thread: create the pod, wait for it, attach stdin, stream
//! the log, judge the worker's exit, delete the pod
//! (docs/kubernetes.md §5, §7). Decisions come from `core`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use serde_json::Value;

use super::api::{Api, ApiError};
use super::auth::{self, Credentials};
use super::core::{self, AfterStream, LogSession, PodWatch, WaitEnd, WaitRequest, WatchStep};
use super::{SEALED_KUBECONFIG, SEALED_PENDING_TIMEOUT, SEALED_POD};
use crate::config::WorkKubernetesCfg;
use crate::work::Unit;
use crate::work::state::{FAILED, KubeExtra, PENDING, RUNNING, SUCCEEDED};

/// Attempts and pauses of Go's retry loops (§5.4, §5.5).
const ATTACH_TRIES: u32 = 5;
const ATTACH_PAUSE: Duration = Duration::from_millis(200);
const OPEN_TRIES: u32 = 5;
const OPEN_PAUSE: Duration = Duration::from_secs(1);
const WATCH_PAUSE: Duration = Duration::from_millis(200);
/// StdoutSize reaches the status at most this often while streaming.
const SIZE_EVERY: Duration = Duration::from_millis(100);
/// A log line longer than this is written in pieces.
const MAX_LINE: usize = 1 << 20;
/// Environment override of the service-account directory (tests).
const SA_DIR_ENV: &str = "RECEPTOR_KUBE_SERVICE_ACCOUNT_DIR";

pub fn spawn(
    unit: Arc<Unit>,
    cfg: Arc<WorkKubernetesCfg>,
    sealed: BTreeMap<String, String>,
    resume: bool,
) {
    let name = format!("kube-{}", unit.id);
    let u = unit.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let result = run(&u, &cfg, &sealed, resume);
        if let Err(detail) = result {
            error!("[{}] {detail}", u.id);
            u.update(|s| {
                if !s.is_final() {
                    s.set(FAILED, detail);
                }
            });
        }
        u.notify();
    });
    if let Err(e) = spawned {
        unit.update(|s| s.set(FAILED, format!("Error starting worker: {e}")));
    }
}

/// The client and namespace for a unit.
fn connect(
    cfg: &WorkKubernetesCfg,
    sealed: &BTreeMap<String, String>,
    extra: &KubeExtra,
) -> Result<(Api, String), String> {
    let auth = cfg.auth_method.to_lowercase();
    let content = sealed.get(SEALED_KUBECONFIG).filter(|c| !c.is_empty());
    let creds: Credentials = match (auth.as_str(), content) {
        ("incluster", _) => {
            let dir = std::env::var_os(SA_DIR_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(auth::SERVICE_ACCOUNT_DIR));
            auth::in_cluster(&dir)?
        }
        (_, Some(text)) => {
            let base = (!cfg.kube_config.is_empty())
                .then(|| std::path::Path::new(&cfg.kube_config).parent())
                .flatten();
            let mut c = auth::from_kubeconfig(text, base)?;
            if c.namespace.is_none() {
                c.namespace = Some("default".into());
            }
            c
        }
        _ => {
            let path = auth::default_kubeconfig_path()
                .ok_or_else(|| "could not determine namespace".to_string())?;
            auth::from_kubeconfig_file(&path)?
        }
    };
    let ns = match (&extra.kube_namespace, &creds.namespace) {
        (n, _) if !n.is_empty() => n.clone(),
        (_, Some(n)) => n.clone(),
        _ => return Err("could not determine namespace".into()),
    };
    Ok((Api::new(creds)?, ns))
}

/// Deletes the unit's pod, if it has one; errors are logged.
pub fn delete_pod(
    unit: &Unit,
    cfg: &WorkKubernetesCfg,
    sealed: &BTreeMap<String, String>,
    extra: &KubeExtra,
) {
    if extra.pod_name.is_empty() {
        return;
    }
    let result = connect(cfg, sealed, extra).and_then(|(api, ns)| {
        let ns = if extra.kube_namespace.is_empty() {
            ns
        } else {
            extra.kube_namespace.clone()
        };
        match api.delete_pod(&ns, &extra.pod_name) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
    match result {
        Ok(()) => debug!("[{}] Deleted pod {}", unit.id, extra.pod_name),
        Err(e) => warn!("[{}] Error deleting pod {}: {e}", unit.id, extra.pod_name),
    }
}

fn cancelled(unit: &Unit) -> bool {
    unit.status().is_final() || !unit.dir.exists()
}

fn set_detail(unit: &Unit, state: i64, detail: &str) {
    unit.update(|s| {
        if !s.is_final() {
            s.set(state, detail);
        }
    });
}

fn run(
    unit: &Arc<Unit>,
    cfg: &WorkKubernetesCfg,
    sealed: &BTreeMap<String, String>,
    resume: bool,
) -> Result<(), String> {
    let mut extra = unit
        .status()
        .kube()
        .cloned()
        .ok_or("unit has no Kubernetes data")?;
    if !resume {
        set_detail(unit, PENDING, "Connecting to Kubernetes");
    }
    let (api, ns) = connect(cfg, sealed, &extra)?;
    let pod_text = sealed.get(SEALED_POD).map_or("", String::as_str);
    let (ns, pod, fresh) = if resume {
        let ns = extra.kube_namespace.clone();
        if ns.is_empty() {
            return Err(format!(
                "Error creating pod: pod namespace is empty for pod {}",
                extra.pod_name
            ));
        }
        let pod = retry(OPEN_TRIES, OPEN_PAUSE, || api.get_pod(&ns, &extra.pod_name))
            .map_err(|e| format!("Error getting pod {ns}/{}. Error: {e}", extra.pod_name))?;
        (ns, pod, false)
    } else {
        let (spec, pod_ns) = core::build_pod(
            &cfg.work_type,
            &extra.image,
            &extra.command,
            &extra.params,
            pod_text,
        )
        .map_err(|e| format!("Error creating pod: {e}"))?;
        let ns = pod_ns.unwrap_or(ns);
        let created = api
            .create_pod(&ns, &spec)
            .map_err(|e| format!("Error creating pod: {e}"))?;
        let name = created
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        extra.pod_name = name.clone();
        extra.kube_namespace = ns.clone();
        let st = unit.update(|s| {
            if let Some(crate::work::state::ExtraData::Kube(k)) = &mut s.extra {
                k.pod_name = name.clone();
                k.kube_namespace = ns.clone();
            }
            if !s.is_final() {
                s.set(PENDING, "Pod created");
                s.stdout_size = 0;
            }
        });
        info!("[{}] Created pod {ns}/{name}", unit.id);
        if st.is_final() {
            // Cancelled while the pod was being made.
            delete_pod(unit, cfg, sealed, &extra);
            return Ok(());
        }
        let timeout = sealed
            .get(SEALED_PENDING_TIMEOUT)
            .and_then(|t| crate::config::parse_duration(t).ok())
            .filter(|d| !d.is_zero());
        let (end, pod) = wait_for_pod(unit, &api, &ns, &name, timeout)?;
        match end {
            WaitEnd::Ready => (ns, pod, true),
            WaitEnd::Completed => {
                if let Some((code, msg)) = core::worker_exit(&pod).filter(|(c, _)| *c != 0) {
                    copy_log_once(unit, &api, &ns, &name);
                    delete_pod(unit, cfg, sealed, &extra);
                    return Err(format!(
                        "Error creating pod: container failed with exit code {code}: {msg}"
                    ));
                }
                (ns, pod, false)
            }
            WaitEnd::Failed(err) => {
                copy_log_once(unit, &api, &ns, &name);
                let detail = core::failure_detail(&err, &pod);
                delete_pod(unit, cfg, sealed, &extra);
                return Err(format!("Error creating pod: {detail}"));
            }
        }
    };
    let name = extra.pod_name.clone();
    let _ = pod;
    // Stdin, only for a pod just created and a non-empty payload.
    let stdin_path = unit.dir.stdin_path();
    let has_stdin = fresh && std::fs::metadata(&stdin_path).is_ok_and(|m| m.len() > 0);
    let attach = if has_stdin {
        set_detail(unit, PENDING, "Sending stdin to pod");
        let (u, api_ns, pod_name) = (unit.clone(), ns.clone(), name.clone());
        let api2 = connect(cfg, sealed, &extra)?.0;
        Some(std::thread::spawn(move || {
            let r = send_stdin(&u, &api2, &api_ns, &pod_name, &stdin_path);
            if r.is_ok() {
                set_detail(&u, RUNNING, "Pod Running");
            }
            r
        }))
    } else {
        set_detail(unit, RUNNING, "Pod Running");
        None
    };
    let stdout_result = stream_log(unit, &api, &ns, &name);
    let stdin_result = match attach {
        Some(h) => h
            .join()
            .unwrap_or_else(|_| Err("stdin thread panicked".into())),
        None => Ok(()),
    };
    if cancelled(unit) {
        delete_pod(unit, cfg, sealed, &extra);
        return Ok(());
    }
    let result = match (stdin_result, stdout_result) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(o)) => Err(format!("Error with pod's stdout: {o}")),
        (Err(i), Ok(())) => Err(format!("Error with pod's stdin: {i}")),
        (Err(i), Err(o)) => Err(format!("Error running pod. stdin: {i}, stdout: {o}")),
    };
    let outcome = result.and_then(|()| {
        // Go stops here and calls it Finished; we look at the worker.
        let pod = wait_for_exit(unit, &api, &ns, &name)?;
        match core::worker_exit(&pod) {
            Some((code, msg)) if code != 0 => Err(format!(
                "container failed with exit code {code}{}",
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            )),
            _ => Ok(()),
        }
    });
    delete_pod(unit, cfg, sealed, &extra);
    let size = stdout_len(unit);
    match outcome {
        Ok(()) => {
            unit.update(|s| {
                if !s.is_final() {
                    s.set(SUCCEEDED, "Finished");
                    s.stdout_size = size;
                }
            });
            Ok(())
        }
        Err(e) => {
            unit.update(|s| {
                if !s.is_final() {
                    s.set(FAILED, e.clone());
                    s.stdout_size = size;
                }
            });
            Ok(())
        }
    }
}

fn retry<T>(
    tries: u32,
    pause: Duration,
    mut f: impl FnMut() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut last = None;
    for i in 0..tries {
        match f() {
            Ok(v) => return Ok(v),
            // An answer that will not change: no point asking again.
            Err(
                e @ ApiError::Status {
                    code: 401 | 403 | 404,
                    ..
                },
            ) => return Err(e),
            Err(e) => last = Some(e),
        }
        if i + 1 < tries {
            std::thread::sleep(pause);
        }
    }
    Err(last.unwrap_or(ApiError::Transport("no attempt".into())))
}

/// List, then watch from the list's resourceVersion, until the pod is
/// ready or done (the steps are `core::PodWatch`'s).
fn wait_for_pod(
    unit: &Unit,
    api: &Api,
    ns: &str,
    name: &str,
    timeout: Option<Duration>,
) -> Result<(WaitEnd, Value), String> {
    let mut watch = PodWatch::new(Instant::now(), timeout);
    let get_err = |e: ApiError| format!("Error creating pod: {e}");
    let done = |end: WaitEnd, w: &PodWatch| Ok((end, w.last_pod().clone()));
    loop {
        if let Some(end) = watch.handle_timeout(Instant::now()) {
            return done(end, &watch);
        }
        if cancelled(unit) {
            return Err("Error creating pod: cancelled".into());
        }
        let (rv, remaining) = match watch.poll_request(Instant::now()) {
            WaitRequest::List => {
                let list = api.list_pod(ns, name).map_err(get_err)?;
                if let Some(end) = watch.handle_list(&list) {
                    return done(end, &watch);
                }
                continue;
            }
            WaitRequest::Watch {
                resource_version,
                timeout,
            } => (resource_version, timeout),
        };
        let stream = match api.watch_pod(ns, name, &rv, remaining) {
            Ok(s) => s,
            Err(
                e @ ApiError::Status {
                    code: 401 | 403, ..
                },
            ) => return Err(get_err(e)),
            Err(e) => {
                debug!("[{}] watch of pod {name} failed: {e}", unit.id);
                watch.handle_watch_refused();
                std::thread::sleep(WATCH_PAUSE);
                continue;
            }
        };
        let mut lines = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            debug!("[{}] pod {name}: {} event", unit.id, event["type"]);
            match watch.handle_event(&event) {
                WatchStep::Next => {}
                WatchStep::Relist => break,
                WatchStep::End(end) => return done(end, &watch),
            }
        }
        std::thread::sleep(WATCH_PAUSE);
    }
}

/// After the log ends: the pod with the worker terminated (a few quick
/// checks; the kubelet reports the exit just after the log closes).
fn wait_for_exit(unit: &Unit, api: &Api, ns: &str, name: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pod = retry(OPEN_TRIES, OPEN_PAUSE, || api.get_pod(ns, name))
            .map_err(|e| format!("Error getting pod {ns}/{name}. Error: {e}"))?;
        if core::worker_exit(&pod).is_some() || Instant::now() >= deadline || cancelled(unit) {
            return Ok(pod);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_stdin(
    unit: &Unit,
    api: &Api,
    ns: &str,
    name: &str,
    path: &std::path::Path,
) -> Result<(), String> {
    let mut last = String::new();
    for i in 0..ATTACH_TRIES {
        let mut f = File::open(path).map_err(|e| format!("Error opening stdin file: {e}"))?;
        match api.attach(ns, name, &mut f) {
            Ok(proto) => {
                info!(
                    "[{}] Sent stdin to pod {ns}/{name} over attach ({})",
                    unit.id,
                    if proto.is_empty() {
                        "no subprotocol"
                    } else {
                        &proto
                    }
                );
                return Ok(());
            }
            Err(e) => {
                debug!("[{}] attach attempt {} failed: {e}", unit.id, i + 1);
                last = e;
            }
        }
        std::thread::sleep(ATTACH_PAUSE);
    }
    let detail = format!("Error streaming stdin to pod {ns}/{name}. Error: {last}");
    unit.update(|s| {
        if !s.is_final() {
            s.set(FAILED, detail.clone());
        }
    });
    Err(last)
}

fn stdout_len(unit: &Unit) -> i64 {
    std::fs::metadata(unit.dir.stdout_path()).map_or(0, |m| m.len() as i64)
}

/// The stdout file as Go opens it: create, write, no truncate; from 0.
fn open_stdout(unit: &Unit) -> Result<File, String> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(unit.dir.stdout_path())
        .map_err(|e| format!("Error opening stdout file: {e}"))?;
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(f)
}

/// Writes output and keeps StdoutSize in the status current.
struct Stdout<'a> {
    unit: &'a Unit,
    file: File,
    written: u64,
    reported: Instant,
    reported_size: u64,
}

impl Stdout<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .map_err(|e| format!("writing stdout: {e}"))?;
        self.written += bytes.len() as u64;
        if self.reported.elapsed() >= SIZE_EVERY {
            self.report();
        }
        Ok(())
    }

    /// No more output is at hand: the status catches up before we block.
    fn caught_up(&mut self) {
        if self.reported_size != self.written {
            self.report();
        }
    }

    fn report(&mut self) {
        self.reported_size = self.written;
        let size = self.written as i64;
        self.unit.update(|s| {
            if !s.is_final() {
                s.stdout_size = size;
            }
        });
        self.reported = Instant::now();
    }
}

/// Failed-wait path: the log so far, once, no reconnect.
fn copy_log_once(unit: &Unit, api: &Api, ns: &str, name: &str) {
    let Ok(file) = open_stdout(unit) else { return };
    let mut out = Stdout {
        unit,
        file,
        written: 0,
        reported: Instant::now(),
        reported_size: 0,
    };
    // Not followed (Go follows): a pod that failed to start may never
    // end its log, and only what is there is wanted.
    if let Ok(mut s) = api.logs(ns, name, false, false, None) {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || out.write(&buf[..n]).is_err() {
                break;
            }
        }
    }
    out.report();
}

/// Reconnect mode or legacy (§5.5 "Choosing the mode").
fn reconnect_mode(api: &Api) -> bool {
    match std::env::var("RECEPTOR_KUBE_SUPPORT_RECONNECT") {
        Ok(v) => matches!(v.as_str(), "enabled" | "auto"),
        Err(_) => match api.version() {
            Ok(v) => core::supports_reconnect(&v),
            Err(_) => false,
        },
    }
}

fn stream_log(unit: &Unit, api: &Api, ns: &str, name: &str) -> Result<(), String> {
    let file = open_stdout(unit)?;
    let mut out = Stdout {
        unit,
        file,
        written: 0,
        reported: Instant::now(),
        reported_size: 0,
    };
    let reconnect = reconnect_mode(api);
    info!(
        "[{}] Streaming the log of pod {ns}/{name} ({} mode)",
        unit.id,
        if reconnect { "reconnect" } else { "legacy" }
    );
    let result = if reconnect {
        stream_with_reconnect(unit, api, ns, name, &mut out)
    } else {
        let mut s = retry(OPEN_TRIES, OPEN_PAUSE, || {
            api.logs(ns, name, true, false, None)
        })
        .map_err(|e| format!("Error opening log stream for pod {ns}/{name}. Error: {e}"))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    out.write(&buf[..n])?;
                    out.caught_up();
                }
                Err(e) => break Err(e.to_string()),
            }
        }
    };
    let _ = out.file.sync_data();
    out.report();
    result
}

fn stream_with_reconnect(
    unit: &Unit,
    api: &Api,
    ns: &str,
    name: &str,
    out: &mut Stdout,
) -> Result<(), String> {
    let mut session = LogSession::default();
    loop {
        if cancelled(unit) {
            return Ok(());
        }
        let pod = retry(OPEN_TRIES, OPEN_PAUSE, || api.get_pod(ns, name))
            .map_err(|e| format!("Error getting pod {ns}/{name}. Error: {e}"))?;
        let since = session.handle_open(core::worker_exit(&pod).is_some());
        let stream = retry(OPEN_TRIES, OPEN_PAUSE, || {
            api.logs(ns, name, true, true, since.as_deref())
        })
        .map_err(|e| format!("Error opening log stream for pod {ns}/{name}. Error: {e}"))?;
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line = Vec::new();
        let end = loop {
            line.clear();
            let got = (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line);
            match got {
                Ok(0) => break Ok(()),
                Ok(_) if line.ends_with(b"\n") || line.len() >= MAX_LINE => {
                    if let Some(msg) = session.handle_line(&line) {
                        out.write(msg)?;
                    }
                    if reader.buffer().is_empty() {
                        out.caught_up();
                    }
                }
                Ok(_) => {
                    if let Some(msg) = session.handle_partial(&line) {
                        out.write(msg)?;
                    }
                    break Ok(());
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        if let Err(e) = &end {
            debug!(
                "[{}] log stream of {name} broke after {} bytes in all: {e}",
                unit.id, out.written
            );
        }
        match session.handle_end(end.is_ok()) {
            AfterStream::Done => return Ok(()),
            AfterStream::Reopen(pause) => std::thread::sleep(pause),
            AfterStream::Fail => return end,
        }
    }
}
