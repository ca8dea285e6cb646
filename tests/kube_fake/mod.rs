//! A fake Kubernetes API server for the work-kubernetes tests: HTTPS on
//! 127.0.0.1 with its own CA, core/v1 JSON shapes, and each pod's
//! containers "run" as local processes (the image is ignored; the worker's
//! `command` + `args` are executed), so stdin and the log are real.
//!
//! Serves: `/version`; pods create (generateName; 409/422), get (404),
//! list and watch (fieldSelector on the name, resourceVersion, chunked
//! events), delete; `log` (follow, timestamps, sinceTime; a mode that cuts
//! streams mid-line); `attach` over WebSocket (v5 and v4 channel
//! protocols). Auth: bearer tokens or a client certificate from the CA,
//! else 401; listed tokens get 403.

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]
// tungstenite's handshake callback returns its (large) response type.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// What the server does differently per test.
#[derive(Clone, Debug)]
pub struct Options {
    pub git_version: String,
    /// Bearer tokens accepted.
    pub tokens: Vec<String>,
    /// Bearer tokens that authenticate but may do nothing (403).
    pub forbidden: Vec<String>,
    /// Cut each of the first `cut_streams` log streams after this many
    /// bytes (mid-line, no final chunk).
    pub cut_after: Option<usize>,
    pub cut_streams: usize,
    /// Offer v5.channel.k8s.io on attach (else only v4).
    pub v5: bool,
    /// Break the first this many watch streams right after their headers.
    pub watch_breaks: usize,
    /// How long a pod stays Pending before its worker starts.
    pub start_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            git_version: "v1.30.2".into(),
            tokens: vec!["good-token".into()],
            forbidden: vec![],
            cut_after: None,
            cut_streams: 0,
            v5: true,
            watch_breaks: 0,
            start_delay: Duration::from_millis(50),
        }
    }
}

struct Pod {
    obj: Value,
    events: Vec<(u64, &'static str, Value)>,
    stdin: Option<ChildStdin>,
    child_pid: Option<u32>,
    /// (timestamp text, unix nanos, line bytes incl. `\n` if any)
    log: Vec<(String, i128, Vec<u8>)>,
    worker_done: bool,
    deleted: bool,
}

#[derive(Default)]
pub struct Record {
    pub created: Vec<Value>,
    pub deleted: Vec<String>,
    pub attach_protocols: Vec<String>,
    pub requests: Vec<String>,
    pub log_streams: usize,
}

struct State {
    opts: Options,
    pods: Mutex<BTreeMap<String, Pod>>,
    changed: Condvar,
    rv: AtomicU64,
    names: AtomicU64,
    record: Mutex<Record>,
    cuts_left: Mutex<usize>,
    watch_breaks_left: Mutex<usize>,
    stop: AtomicBool,
}

pub struct FakeKube {
    pub port: u16,
    pub dir: PathBuf,
    state: Arc<State>,
    accept: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeKube {
    /// Starts the server; `pki` must hold `ca.crt`; `server` is its cert.
    pub fn start(dir: &Path, ca: &Path, cert: &Path, key: &Path, opts: Options) -> FakeKube {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(
            CertificateDer::pem_file_iter(ca)
                .unwrap()
                .map(Result::unwrap),
        );
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .allow_unauthenticated()
            .build()
            .unwrap();
        let tls = Arc::new(
            rustls::ServerConfig::builder()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let state = Arc::new(State {
            cuts_left: Mutex::new(opts.cut_streams),
            watch_breaks_left: Mutex::new(opts.watch_breaks),
            opts,
            pods: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            rv: AtomicU64::new(100),
            names: AtomicU64::new(0),
            record: Mutex::new(Record::default()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, tls) = (st.clone(), tls.clone());
                std::thread::spawn(move || serve(st, tls, conn));
            }
        });
        FakeKube {
            port,
            dir: dir.to_path_buf(),
            state,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        lock(&self.state.record)
    }

    /// Names of pods that exist now.
    pub fn pod_names(&self) -> Vec<String> {
        lock(&self.state.pods)
            .iter()
            .filter(|(_, p)| !p.deleted)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        for p in lock(&self.state.pods).values_mut() {
            kill(p);
        }
    }
}

fn kill(p: &mut Pod) {
    p.stdin = None;
    if let Some(pid) = p.child_pid.take() {
        // SAFETY: kill(2) on a child we spawned.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

struct Req {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    head: Vec<u8>,
}

fn read_head(s: &mut Tls) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 || head.len() > 65536 {
            return None;
        }
        head.push(b[0]);
    }
    Some(head)
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| u8::from_str_radix(&s[i + 1..i + 3], 16).ok())
            .flatten();
        if let Some(v) = hex {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse(s: &mut Tls) -> Option<Req> {
    let head = read_head(s)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unescape(k), unescape(v))
        })
        .collect();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
        head,
    })
}

fn respond(s: &mut Tls, code: u16, body: &Value) {
    let text = body.to_string();
    let reason = match code {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    let _ = s.flush();
}

fn status_obj(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn start_chunked(s: &mut Tls) -> bool {
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .is_ok()
        && s.flush().is_ok()
}

fn chunk(s: &mut Tls, data: &[u8]) -> bool {
    if data.is_empty() {
        return true;
    }
    write!(s, "{:x}\r\n", data.len()).is_ok()
        && s.write_all(data).is_ok()
        && s.write_all(b"\r\n").is_ok()
        && s.flush().is_ok()
}

fn end_chunked(s: &mut Tls) {
    let _ = s.write_all(b"0\r\n\r\n");
    let _ = s.flush();
}

fn serve(st: Arc<State>, tls: Arc<rustls::ServerConfig>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while let Some(req) = parse(&mut s) {
        lock(&st.record)
            .requests
            .push(format!("{} {}", req.method, req.path));
        // Auth.
        let has_cert = s.conn.peer_certificates().is_some_and(|c| !c.is_empty());
        let token = req
            .headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_string);
        let ok = has_cert || token.as_ref().is_some_and(|t| st.opts.tokens.contains(t));
        if token
            .as_ref()
            .is_some_and(|t| st.opts.forbidden.contains(t))
        {
            respond(
                &mut s,
                403,
                &status_obj(
                    403,
                    "Forbidden",
                    "pods is forbidden: User \"system:serviceaccount:test:limited\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\"",
                ),
            );
            continue;
        }
        if !ok {
            respond(
                &mut s,
                401,
                &status_obj(401, "Unauthorized", "Unauthorized"),
            );
            continue;
        }
        // A server URL with a path prefix (kubeconfig `server: https://h:p/prefix`).
        let path = req.path.strip_prefix("/prefix").unwrap_or(&req.path);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["version"]) => respond(
                &mut s,
                200,
                &json!({"major": "1", "minor": "30", "gitVersion": st.opts.git_version, "platform": "linux/amd64"}),
            ),
            ("POST", ["api", "v1", "namespaces", ns, "pods"]) => create(&st, &mut s, ns, &req.body),
            ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
                let name = req
                    .query
                    .get("fieldSelector")
                    .and_then(|f| f.strip_prefix("metadata.name="))
                    .unwrap_or("")
                    .to_string();
                if req.query.get("watch").map(String::as_str) == Some("true") {
                    let rv: u64 = req
                        .query
                        .get("resourceVersion")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    watch(&st, &mut s, &key(ns, &name), rv);
                    return;
                }
                let pods = lock(&st.pods);
                let items: Vec<Value> = pods
                    .get(&key(ns, &name))
                    .filter(|p| !p.deleted)
                    .map(|p| p.obj.clone())
                    .into_iter()
                    .collect();
                let rv = st.rv.load(Ordering::SeqCst).to_string();
                drop(pods);
                respond(
                    &mut s,
                    200,
                    &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}),
                );
            }
            ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
                let pods = lock(&st.pods);
                match pods.get(&key(ns, name)).filter(|p| !p.deleted) {
                    Some(p) => {
                        let obj = p.obj.clone();
                        drop(pods);
                        respond(&mut s, 200, &obj)
                    }
                    None => {
                        drop(pods);
                        respond(
                            &mut s,
                            404,
                            &status_obj(404, "NotFound", &format!("pods \"{name}\" not found")),
                        )
                    }
                }
            }
            ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
                let mut pods = lock(&st.pods);
                match pods.get_mut(&key(ns, name)).filter(|p| !p.deleted) {
                    Some(p) => {
                        kill(p);
                        p.deleted = true;
                        let obj = p.obj.clone();
                        let rv = st.rv.fetch_add(1, Ordering::SeqCst) + 1;
                        p.events.push((rv, "DELETED", obj.clone()));
                        drop(pods);
                        st.changed.notify_all();
                        lock(&st.record).deleted.push(name.to_string());
                        respond(&mut s, 200, &obj)
                    }
                    None => {
                        drop(pods);
                        respond(
                            &mut s,
                            404,
                            &status_obj(404, "NotFound", &format!("pods \"{name}\" not found")),
                        )
                    }
                }
            }
            ("GET", ["api", "v1", "namespaces", ns, "pods", name, "log"]) => {
                logs(&st, &mut s, &key(ns, name), &req.query);
                return;
            }
            ("GET" | "POST", ["api", "v1", "namespaces", ns, "pods", name, "attach"]) => {
                attach(&st, s, &key(ns, name), req.head);
                return;
            }
            _ => respond(
                &mut s,
                404,
                &status_obj(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
        }
    }
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn now_stamp() -> (String, i128) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    // Millisecond resolution, so fast output shares timestamps.
    let nanos = (d.as_millis() as i128) * 1_000_000;
    let secs = (nanos / 1_000_000_000) as i64;
    let frac = (nanos % 1_000_000_000) as u32;
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    (text, nanos)
}

fn parse_stamp_secs(s: &str) -> Option<i128> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp() as i128 * 1_000_000_000)
}

fn bump(st: &State, p: &mut Pod, kind: &'static str) {
    let rv = st.rv.fetch_add(1, Ordering::SeqCst) + 1;
    p.obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    p.events.push((rv, kind, p.obj.clone()));
    st.changed.notify_all();
}

fn create(st: &Arc<State>, s: &mut Tls, ns: &str, body: &[u8]) {
    let Ok(mut pod) = serde_json::from_slice::<Value>(body) else {
        return respond(s, 400, &status_obj(400, "BadRequest", "bad JSON"));
    };
    lock(&st.record).created.push(pod.clone());
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if containers.is_empty() {
        return respond(
            s,
            422,
            &status_obj(
                422,
                "Invalid",
                "Pod \"\" is invalid: spec.containers: Required value",
            ),
        );
    }
    let name = match pod.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            let g = pod
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if g.is_empty() {
                return respond(
                    s,
                    422,
                    &status_obj(
                        422,
                        "Invalid",
                        "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    ),
                );
            }
            let n = st.names.fetch_add(1, Ordering::SeqCst);
            let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
            let mut x = n.wrapping_mul(2654435761) ^ u64::from(std::process::id());
            let suffix: String = (0..5)
                .map(|_| {
                    let c = alphabet[(x % alphabet.len() as u64) as usize] as char;
                    x /= alphabet.len() as u64;
                    c
                })
                .collect();
            format!("{g}{suffix}")
        }
    };
    let k = key(ns, &name);
    let mut pods = lock(&st.pods);
    if pods.get(&k).is_some_and(|p| !p.deleted) {
        drop(pods);
        return respond(
            s,
            409,
            &status_obj(
                409,
                "AlreadyExists",
                &format!("pods \"{name}\" already exists"),
            ),
        );
    }
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["uid"] = json!(format!("uid-{name}"));
    pod["status"] = json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"}]});
    let mut p = Pod {
        obj: pod.clone(),
        events: vec![],
        stdin: None,
        child_pid: None,
        log: vec![],
        worker_done: false,
        deleted: false,
    };
    bump(st, &mut p, "ADDED");
    let obj = p.obj.clone();
    pods.insert(k.clone(), p);
    drop(pods);
    respond(s, 201, &obj);
    let st = st.clone();
    std::thread::spawn(move || kubelet(st, k, containers));
}

fn container_status(name: &str, state: Value, ready: bool) -> Value {
    json!({"name": name, "state": state, "ready": ready, "restartCount": 0, "image": "x", "imageID": ""})
}

/// "Runs" the pod: the worker container as a local process.
fn kubelet(st: Arc<State>, k: String, containers: Vec<Value>) {
    std::thread::sleep(st.opts.start_delay);
    let worker = containers
        .iter()
        .find(|c| c["name"] == "worker")
        .cloned()
        .unwrap_or(json!({}));
    let others: Vec<String> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|n| *n != "worker")
        .map(str::to_string)
        .collect();
    let image_has = |what: &str| {
        containers
            .iter()
            .any(|c| c["image"].as_str().is_some_and(|i| i.contains(what)))
    };
    if image_has("unschedulable") {
        // Stays Pending: no node fits, no further events.
        let mut pods = lock(&st.pods);
        let Some(p) = pods.get_mut(&k) else { return };
        p.obj["status"] = json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient cpu."}]});
        bump(&st, p, "MODIFIED");
        return;
    }
    if image_has("pullbackoff") {
        // Never starts; the kubelet reports the back-off again and again.
        for _ in 0..100 {
            let mut pods = lock(&st.pods);
            let Some(p) = pods.get_mut(&k).filter(|p| !p.deleted) else {
                return;
            };
            p.obj["status"] = json!({"phase": "Pending", "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "ContainersReady", "status": "False"}],
                "containerStatuses": [container_status("worker", json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"pullbackoff\""}}), false)]});
            bump(&st, p, "MODIFIED");
            drop(pods);
            std::thread::sleep(Duration::from_millis(100));
        }
        return;
    }
    let mut argv: Vec<String> = Vec::new();
    for f in ["command", "args"] {
        if let Some(a) = worker[f].as_array() {
            argv.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)));
        }
    }
    let env: Vec<(String, String)> = worker["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or("").to_string(),
                        v["value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if argv.is_empty() {
        argv = vec!["true".into()];
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.stdin(if worker["stdin"] == true {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child: Child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let mut pods = lock(&st.pods);
            if let Some(p) = pods.get_mut(&k) {
                p.obj["status"] = json!({"phase": "Failed", "conditions": [], "containerStatuses": [
                    container_status("worker", json!({"terminated": {"exitCode": 128, "reason": "StartError", "message": e.to_string()}}), false)]});
                p.worker_done = true;
                bump(&st, p, "MODIFIED");
            }
            return;
        }
    };
    let mut out = child.stdout.take().unwrap();
    {
        let mut pods = lock(&st.pods);
        let Some(p) = pods.get_mut(&k) else { return };
        if p.deleted {
            let _ = child.kill();
            return;
        }
        p.stdin = child.stdin.take();
        p.child_pid = Some(child.id());
        let mut statuses = vec![container_status(
            "worker",
            json!({"running": {"startedAt": now_stamp().0}}),
            true,
        )];
        statuses.extend(
            others
                .iter()
                .map(|n| container_status(n, json!({"running": {}}), true)),
        );
        p.obj["status"] = json!({"phase": "Running", "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": statuses});
        bump(&st, p, "MODIFIED");
    }
    // The container runtime: each line gets its timestamp when read.
    let mut partial = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = out.read(&mut buf).unwrap_or(0);
        let mut pods = lock(&st.pods);
        let Some(p) = pods.get_mut(&k) else { break };
        if n == 0 {
            if !partial.is_empty() {
                let (t, ns) = now_stamp();
                p.log.push((t, ns, std::mem::take(&mut partial)));
            }
            break;
        }
        let (t, ns) = now_stamp();
        for &b in &buf[..n] {
            partial.push(b);
            if b == b'\n' {
                p.log.push((t.clone(), ns, std::mem::take(&mut partial)));
            }
        }
        drop(pods);
        st.changed.notify_all();
    }
    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(137);
    let mut pods = lock(&st.pods);
    let Some(p) = pods.get_mut(&k) else { return };
    p.stdin = None;
    p.child_pid = None;
    p.worker_done = true;
    if p.deleted {
        st.changed.notify_all();
        return;
    }
    let term = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                     "message": if code == 0 { "" } else { "worker failed" }}});
    let mut statuses = vec![container_status("worker", term, false)];
    statuses.extend(
        others
            .iter()
            .map(|n| container_status(n, json!({"running": {}}), true)),
    );
    // With sidecars still running, the pod stays Running.
    let phase = if !others.is_empty() {
        "Running"
    } else if code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    p.obj["status"] = json!({"phase": phase, "conditions": [
        {"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
        "containerStatuses": statuses});
    bump(&st, p, "MODIFIED");
}

fn watch(st: &State, s: &mut Tls, k: &str, since: u64) {
    if !start_chunked(s) {
        return;
    }
    {
        let mut left = lock(&st.watch_breaks_left);
        if *left > 0 {
            *left -= 1;
            let _ = s.get_ref().shutdown(Shutdown::Both);
            return;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = since;
    loop {
        let pods = lock(&st.pods);
        let mut out = Vec::new();
        let mut gone = false;
        if let Some(p) = pods.get(k) {
            for (rv, kind, obj) in &p.events {
                if *rv > sent {
                    out.push(json!({"type": kind, "object": obj}).to_string() + "\n");
                    sent = *rv;
                    gone |= *kind == "DELETED";
                }
            }
        }
        if out.is_empty() {
            if Instant::now() >= deadline || st.stop.load(Ordering::SeqCst) {
                drop(pods);
                end_chunked(s);
                return;
            }
            let _ = st.changed.wait_timeout(pods, Duration::from_millis(200));
            continue;
        }
        drop(pods);
        for line in out {
            if !chunk(s, line.as_bytes()) {
                return;
            }
        }
        if gone {
            end_chunked(s);
            return;
        }
    }
}

fn logs(st: &State, s: &mut Tls, k: &str, q: &BTreeMap<String, String>) {
    let timestamps = q.get("timestamps").map(String::as_str) == Some("true");
    let follow = q.get("follow").map(String::as_str) == Some("true");
    let since = q
        .get("sinceTime")
        .filter(|t| !t.is_empty())
        .and_then(|t| parse_stamp_secs(t));
    {
        let pods = lock(&st.pods);
        if pods.get(k).is_none_or(|p| p.deleted) {
            drop(pods);
            let name = k.split('/').nth(1).unwrap_or("");
            return respond(
                s,
                404,
                &status_obj(404, "NotFound", &format!("pods \"{name}\" not found")),
            );
        }
    }
    {
        let pods = lock(&st.pods);
        let waiting = pods.get(k).and_then(|p| {
            let cs = p.obj.pointer("/status/containerStatuses")?.as_array()?;
            let w = cs.iter().find(|c| c["name"] == "worker")?;
            w.pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if let Some(reason) = waiting {
            drop(pods);
            let name = k.split('/').nth(1).unwrap_or("");
            let msg =
                format!("container \"worker\" in pod \"{name}\" is waiting to start: {reason}");
            return respond(s, 400, &status_obj(400, "BadRequest", &msg));
        }
    }
    lock(&st.record).log_streams += 1;
    let cut = {
        let mut left = lock(&st.cuts_left);
        if *left > 0 && st.opts.cut_after.is_some() {
            *left -= 1;
            st.opts.cut_after
        } else {
            None
        }
    };
    if !start_chunked(s) {
        return;
    }
    let mut next = 0;
    let mut written = 0usize;
    loop {
        let pods = lock(&st.pods);
        let Some(p) = pods.get(k) else { break };
        let mut out = Vec::new();
        while next < p.log.len() {
            let (t, nanos, line) = &p.log[next];
            next += 1;
            if since.is_some_and(|s| *nanos < s) {
                continue;
            }
            if timestamps {
                out.extend_from_slice(t.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line);
            if out.len() > 256 * 1024 {
                break;
            }
        }
        let finished = (p.worker_done || p.deleted) && next >= p.log.len();
        if out.is_empty() {
            if finished || !follow {
                drop(pods);
                end_chunked(s);
                return;
            }
            let _ = st.changed.wait_timeout(pods, Duration::from_millis(200));
            continue;
        }
        drop(pods);
        if let Some(limit) = cut.filter(|l| written + out.len() >= *l) {
            {
                let n = limit - written;
                let _ = chunk(s, &out[..n]);
                // Cut: no final chunk, just gone.
                let _ = s.get_ref().shutdown(Shutdown::Both);
                return;
            }
        }
        written += out.len();
        if !chunk(s, &out) {
            return;
        }
    }
    end_chunked(s);
}

/// Replays the request head tungstenite has to read again.
struct Prefixed {
    head: std::io::Cursor<Vec<u8>>,
    inner: Tls,
}

impl Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn attach(st: &State, s: Tls, k: &str, head: Vec<u8>) {
    let offered_v5 = Arc::new(Mutex::new(String::new()));
    let chosen = offered_v5.clone();
    let v5 = st.opts.v5;
    let stream = Prefixed {
        head: std::io::Cursor::new(head),
        inner: s,
    };
    let cb = move |req: &tungstenite::handshake::server::Request,
                   mut resp: tungstenite::handshake::server::Response| {
        let offered = req
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let pick = if v5 && offered.contains("v5.channel.k8s.io") {
            "v5.channel.k8s.io"
        } else {
            "v4.channel.k8s.io"
        };
        *lock(&chosen) = pick.to_string();
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", pick.parse().unwrap());
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, cb) else {
        return;
    };
    let proto = lock(&offered_v5).clone();
    lock(&st.record).attach_protocols.push(proto);
    let mut stdin = lock(&st.pods).get_mut(k).and_then(|p| p.stdin.take());
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) if !b.is_empty() => match b[0] {
                0 => {
                    if let Some(i) = stdin.as_mut() {
                        let _ = i.write_all(&b[1..]);
                    }
                }
                255 if b.get(1) == Some(&0) => stdin = None,
                _ => {}
            },
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(stdin);
    let _ = ws.close(None);
    let _ = ws.flush();
}

/// Reads a kubeconfig-able PEM file as base64 for `*-data` fields.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Unused-import guard for BufRead in some test builds.
pub fn _lines(r: impl Read) -> usize {
    BufReader::new(r).lines().count()
}
